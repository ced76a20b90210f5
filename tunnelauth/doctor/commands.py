"""The command lines the doctor runs on the target. Pure: building strings.

Everything runs under `sh -c` (the login shell may be csh or fish) and every program text
travels base64-encoded, so no quoting of the login shell can change it, and no program text
(such as the probe's own "hermes"/"gateway" strings) shows in `ps`.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Iterable, Mapping
from importlib import resources

from tunnelauth import remote
from tunnelauth.errors import RemoteSetupError

MARK = "tunnelauth-doctor "  # what the probe's answer line starts with
# Marker arguments: `ps` shows which tunnelauth process this is (tests look for them).
LISTENER_TAG = "tunnelauth-doctor-listener"
PROBE_TAG = "tunnelauth-doctor-probe"
LISTENER_LIFE = 10  # seconds the throwaway listener waits for its one request
PROBE_LIBS = ("listeners",)  # the remote_lib modules probe.py uses
NO_PYTHON = 127  # remote._BOOT's exit status when the target has no python3
SOCKET_TABLE = "cat /proc/net/tcp 2>/dev/null; cat /proc/net/tcp6 2>/dev/null; true"

# Binds 127.0.0.1:0 (never one of `avoid`, hermes's callback ports), prints the port, answers
# ONE HTTP request with the token from argv, and exits; it also exits when its stdin closes
# (tunnelauth is done or gone) and after LISTENER_LIFE seconds whatever happens.
LISTENER = """\
import os, select, socket, sys, time
token = sys.argv[3].encode()
avoid = set(int(p) for p in sys.argv[5:])
deadline = time.time() + float(sys.argv[4])
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    if s.getsockname()[1] not in avoid:
        break
    s.close()
s.listen(1)
sys.stdout.write("%d\\n" % s.getsockname()[1])
sys.stdout.flush()
def wait(sock):
    while True:
        left = deadline - time.time()
        if left <= 0:
            sys.exit(3)
        ready = select.select([sock, 0], [], [], left)[0]
        if 0 in ready and not os.read(0, 4096):
            sys.exit(4)
        if sock in ready:
            return
wait(s)
c = s.accept()[0]
s.close()
request = b""
while b"\\r\\n\\r\\n" not in request and len(request) < 65536:
    wait(c)
    data = c.recv(4096)
    if not data:
        break
    request += data
c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %d\\r\\n"
          b"Connection: close\\r\\n\\r\\n%s" % (len(token), token))
c.close()
"""


def listener_command(token: str, avoid: Iterable[int], life: float = LISTENER_LIFE) -> str:
    return remote._python(LISTENER.encode(), LISTENER_TAG, token, f"{life:g}", *map(str, avoid))


def probe_command() -> str:
    """The probe's command line: its code and agent.py's, nothing else. What it is to answer,
    with which environment, follows as the first line on its stdin (probe_config_line)."""
    probe = resources.files("tunnelauth.doctor").joinpath("probe.py").read_bytes()
    agent = remote._pack(remote._agent_source(), remote.AGENT_LIBS)
    return remote._python(probe, PROBE_TAG, agent, libs=PROBE_LIBS)


def probe_config_line(modes: Iterable[str], config: Mapping[str, object]) -> str:
    """The first line the probe reads, answering each of `modes` (probe.py: hermes, tokens,
    gateway, sockets). It travels inside the channel: --remote-env values and HERMES_HOME are
    in no command line a local user of the target can read."""
    # "boot": how the probe starts itself again as another user (sh -c BOOT... code tag agent).
    boot = [remote._BOOT, "sh"]
    payload = base64.b64encode(json.dumps({**config, "modes": list(modes), "boot": boot}).encode())
    return f"C{payload.decode()}\n"


def socket_table_command() -> str:
    return shlex.join(["sh", "-c", SOCKET_TABLE])


def probe_answer(stdout: str) -> dict[str, object] | None:
    """The probe's JSON answer; None when it never got to print one."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            try:
                answer = json.loads(line[len(MARK) :])
            except ValueError:
                return None
            return answer if isinstance(answer, dict) else None
    return None


class NoPython(RemoteSetupError):
    """The target has no python3: the listener and the probes cannot run (nor can a login)."""


def check_python(exit_status: int | None, last_error: str, destination: str) -> None:
    if exit_status == NO_PYTHON and "no python3" in last_error:
        raise NoPython(f"no python3 on {destination} (the doctor and the login need it)")
