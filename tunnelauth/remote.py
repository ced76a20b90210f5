"""The remote half: the command line that starts the supervisor, and its frame protocol.

Pure: building strings and decoding bytes. The supervisor itself is tunnelauth/agent.py.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shlex
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

from tunnelauth.errors import RemoteSetupError, UsageError

HEARTBEAT = 1.0  # seconds between heartbeats to the supervisor
DEAD_MARGIN = 3.0  # the supervisor waits this much longer than tunnelauth's own keepalive does
MAX_FRAME = 1 << 20
# Linux's MAX_ARG_STRLEN: one argument or one KEY=VALUE of an exec, with its NUL. The command's
# arguments and its environment reach it through execve on the target, so this is their limit.
MAX_ARG = 128 * 1024
# What tunnelauth adds to one exec in all: well under the usual 2 MiB ARG_MAX (a quarter of an
# 8 MiB stack), which also holds the remote's own environment.
MAX_ARGS_TOTAL = 1024 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.IGNORECASE)
# Runs under whatever login shell the user has, so it holds no single quote or backslash.
# -I -S: the supervisor needs only the standard library; skipping site-packages (and PYTHON*
# variables) saves tens of milliseconds before hermes starts, and nothing there can interfere.
_BOOT = (
    'for p in python3 python; do command -v "$p" >/dev/null 2>&1 && exec "$p" -I -S -c '
    '"import base64,sys,zlib;exec(zlib.decompress(base64.b64decode(sys.argv[1])))" "$@"; done; '
    'echo "tunnelauth: no python3 on the remote host (needed to supervise the login)" >&2; exit 127'
)


def parse_env(items: list[str], local: Mapping[str, str] | None = None) -> dict[str, str]:
    """--remote-env KEY=VALUE items, validated here so nothing odd reaches the remote.

    A bare KEY takes its value from tunnelauth's own environment (`local`), so a secret need
    not appear in tunnelauth's command line either."""
    local = os.environ if local is None else local
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep and _ENV_NAME.fullmatch(key) and key in local:
            value = local[key]
        elif not sep or not _ENV_NAME.fullmatch(key):
            raise UsageError(
                f"--remote-env {item!r} is not KEY=VALUE (or the name of a variable set here) "
                f"with a valid variable name",
                hint="names are letters, digits and _, not starting with a digit",
            )
        if "\0" in value:
            raise UsageError(f"--remote-env {key}: the value holds a NUL byte")
        env[key] = value
    return env


def check_sizes(command: tuple[str, ...], env: Mapping[str, str]) -> None:
    """Refuse, before connecting, what the target's execve would refuse (E2BIG)."""
    total = 0
    for key, value in env.items():
        size = len(key.encode()) + 1 + len(value.encode()) + 1
        if size > MAX_ARG:
            raise UsageError(
                f"--remote-env {key}: the value is {size - len(key) - 2} bytes; a remote "
                f"environment entry can hold at most {MAX_ARG - len(key) - 2}",
                hint="pass large data in a file on the target and its path in the variable",
            )
        total += size
    for arg in command:
        size = len(arg.encode()) + 1
        if size > MAX_ARG:
            raise UsageError(
                f"an argument of the remote command is {size - 1} bytes; at most "
                f"{MAX_ARG - 1} fit in one argument"
            )
        total += size
    if total > MAX_ARGS_TOTAL:
        raise UsageError(
            f"the remote command and --remote-env values add up to {total} bytes; at most "
            f"{MAX_ARGS_TOTAL} are passed on",
            hint="pass large data in a file on the target and its path in a variable",
        )


def dead_after(keepalive_interval: float, keepalive_count_max: int) -> float:
    """How long the supervisor waits without a heartbeat before it stops the command.

    tunnelauth's own SSH keepalive gives up on a silent hop after interval x (count_max + 1)
    seconds (the keepalive window plus the interval in which the first probe goes out); the
    supervisor waits that long plus a margin, so any stall the connection survives, the login
    survives too, and a connection tunnelauth gave up on leaves nothing running.
    """
    return keepalive_interval * (keepalive_count_max + 1) + HEARTBEAT + DEAD_MARGIN


def check_user(user: str) -> str:
    if not _USER.fullmatch(user) or len(user) > 32:
        raise UsageError(f"--as-user {user!r} is not a valid user name")
    return user


@dataclass(frozen=True)
class RemoteSpec:
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    as_user: str | None = None
    token_check: bool = False
    dead_after: float = 30.0
    pty: bool = False
    size: tuple[int, int] | None = None  # columns, rows


AGENT_LIBS = ("listeners",)  # the remote_lib modules agent.py uses


def _agent_source() -> bytes:
    return resources.files("tunnelauth").joinpath("agent.py").read_bytes()


@functools.cache
def _pack(source: bytes, libs: tuple[str, ...] = ()) -> str:
    """base64(zlib(the sources of `libs` from remote_lib, then `source`)); compressed once per
    run, not once per target of a doctor fleet."""
    lib = resources.files("tunnelauth.remote_lib")
    parts = [lib.joinpath(f"{name}.py").read_bytes() for name in libs]
    return base64.b64encode(zlib.compress(b"\n".join([*parts, source]), 9)).decode()


def _python(source: bytes, *args: str, libs: tuple[str, ...] = ()) -> str:
    """A shell command that runs `source` with the remote's python3, after the remote_lib
    modules named in `libs`; the code travels as base64 (zlib), so no shell ever reads it,
    and every argument is quoted. sys.argv[1] is the code, the arguments follow."""
    return shlex.join(["sh", "-c", _BOOT, "sh", _pack(source, libs), *args])


def command_line() -> str:
    """What the remote login shell runs to start the supervisor: its code and nothing else.
    The configuration follows as the first line on its stdin (config_line)."""
    return _python(_agent_source(), libs=AGENT_LIBS)


def config_line(spec: RemoteSpec) -> bytes:
    """The first line tunnelauth sends the supervisor: what to run, with which environment.
    It travels inside the channel, never in a command line a local user of the target can read."""
    config = {
        "command": list(spec.command),
        "env": dict(spec.env),
        "as_user": spec.as_user,
        "token_check": spec.token_check,
        "dead_after": spec.dead_after,
        "pty": spec.pty,
        "size": list(spec.size) if spec.size else None,
    }
    return b"C" + base64.b64encode(json.dumps(config).encode()) + b"\n"


# A TCP pump: stdin -> 127.0.0.1:port -> stdout. Used when sshd forbids forwarding; exec is
# still allowed, so the browser's callback reaches the same listener through it.
_RELAY = b"""
import os, select, socket, sys
sock = socket.create_connection((sys.argv[-2], int(sys.argv[-1])), timeout=10)
sock.settimeout(None)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reading = True
while True:
    ready = select.select([sock] + ([0] if reading else []), [], [])[0]
    if 0 in ready:
        data = os.read(0, 65536)
        if data:
            sock.sendall(data)
        else:
            reading = False
            sock.shutdown(socket.SHUT_WR)
    if sock in ready:
        data = sock.recv(65536)
        if not data:
            break
        os.write(1, data)
"""


def relay_command(host: str, port: int) -> str:
    return _python(_RELAY, host, str(int(port)))


def stdin_line(data: bytes) -> bytes:
    return b"i" + base64.b64encode(data) + b"\n"


HELLO = b"T18:tunnelauth-agent 1"


class FrameDecoder:
    """Splits the supervisor's stdout into (kind, payload) frames.

    Anything before the hello frame (a chatty .bashrc, say) is kept as `preamble` and
    otherwise ignored.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self.preamble = b""

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buffer += data
        frames: list[tuple[str, bytes]] = []
        if not self._started:
            at = self._buffer.find(HELLO)
            if at < 0:
                keep = len(HELLO) - 1
                if len(self._buffer) > keep:
                    self.preamble = (self.preamble + self._buffer[:-keep])[-4096:]
                    self._buffer = self._buffer[-keep:]
                return frames
            self.preamble = (self.preamble + self._buffer[:at])[-4096:]
            self._buffer = self._buffer[at:]
            self._started = True
        while self._buffer:
            colon = self._buffer.find(b":", 1, 12)
            if colon < 0:
                if len(self._buffer) >= 12:
                    raise RemoteSetupError("the remote supervisor sent a malformed frame")
                break
            kind, length = chr(self._buffer[0]), self._buffer[1:colon]
            if not length.isdigit() or int(length) > MAX_FRAME:
                raise RemoteSetupError("the remote supervisor sent a malformed frame")
            end = colon + 1 + int(length)
            if len(self._buffer) < end:
                break
            frames.append((kind, self._buffer[colon + 1 : end]))
            self._buffer = self._buffer[end:]
        return frames


_BIND_FAILED = re.compile(
    r"(?:bind|listen)\b.*?(?:127\.0\.0\.1|localhost|\[?::1\]?):(?P<port>\d{1,5}).*Address already in use",
    re.IGNORECASE,
)
_SS_USER = re.compile(r'\(\("(?P<name>[^"]+)",pid=(?P<pid>\d+)')


def busy_port(message: str) -> int | None:
    """The port of a 'could not bind ... Address already in use' failure, if that is what it is."""
    match = _BIND_FAILED.search(message)
    return int(match["port"]) if match else None


def port_holder_command(port: int) -> str:
    return f"ss -Hltnp 'sport = :{int(port)}' 2>/dev/null"


def parse_port_holder(ss_output: str) -> str | None:
    """'python3 (pid 123)' from `ss -ltnp` output, when ss could see the process."""
    match = _SS_USER.search(ss_output)
    return f"{match['name']} (pid {match['pid']})" if match else None
