# The remote supervisor. tunnelauth sends this file's text to the target and runs it with the
# target's python3; it is never imported locally. Standard library only, Python 3.6+.
#
# Why it exists: without a PTY a remote process outlives a dropped SSH connection, and sshd
# ignores signal requests for some logins. The supervisor starts the login command in its own
# process group and kills that group when tunnelauth says so, when the channel closes (EOF on
# stdin), or when heartbeats stop arriving for longer than the SSH keepalive window (a cut link
# sends no EOF). It multiplexes the command's stdout and stderr into frames on its own stdout,
# so its own reports (listener up, exit status, token file) can never be confused with the
# command's output. docs/protocol.md describes the protocol at length.
#
# Nothing secret is ever in a command line: this code travels in argv (it is public), its
# configuration (command, environment, HERMES_HOME) arrives as the first line on stdin, and with
# --as-user the environment goes on to the command through a pipe (STUB), not sudo's argv.
#
# Frames out:  <kind><length>:<payload>   kinds: T (hello, first), o e (command stdout/stderr),
#              L (port listening), x (exit status, last), n (command not found),
#              f (token file: JSON), S (cannot become --as-user: JSON),
#              H (no heartbeat for <seconds>: the command was stopped, x follows)
# Lines in:    C<base64 JSON> (the configuration; first line, exactly once),
#              h (heartbeat), i<base64> (bytes for the command's stdin), c (close its stdin),
#              w<port> (report when 127.0.0.1/::1:<port> is LISTENing), k (kill now)
# Ports in loopback URLs of the command's output are watched without being asked: their L frame
# then goes out before the output that names them, saving tunnelauth a round trip to ask.
# Once the command's own process has exited, its output is read until it pauses for DRAIN
# seconds (DRAIN_MAX at most): a helper it left in another session (setsid) may hold the
# pipes open for ever.
import base64
import json
import os
import re
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

OUT = 1
IN = 0
MAX_CONFIG = 4 << 20  # bytes of the configuration line
CONFIG_WAIT = 60.0  # seconds to wait for it
DRAIN = 0.5  # once the command's process exited: stop reading after this long without output
DRAIN_MAX = 5.0  # ... or after this long in all (a helper that keeps writing)
DEAD_AFTER = 30.0  # when the configuration names no death window
# With --as-user: runs as that user (sudo -u USER ... python3 -c STUB MODE PATH ARGS...), reads
# "<length>:<JSON env>" from its stdin, and execs the command with that environment added; in
# pty mode ("t") its stdin becomes the terminal afterwards. The values never touch a command line.
STUB = r"""
import json, os, sys
n = b""
while not n.endswith(b":"):
    c = os.read(0, 1)
    if not c or len(n) > 12:
        sys.exit(125)
    n += c
left = int(n[:-1])
data = b""
while len(data) < left:
    c = os.read(0, left - len(data))
    if not c:
        sys.exit(125)
    data += c
env = dict(os.environ)
env.update(json.loads(data.decode()))
if sys.argv[1] == "t":
    fd = os.open(os.ttyname(1) if os.isatty(1) else "/dev/tty", os.O_RDWR)
    os.dup2(fd, 0)
    os.close(fd)
try:
    os.execve(sys.argv[2], sys.argv[2:], env)
except OSError as exc:
    sys.stderr.write("tunnelauth: cannot run %s: %s\n" % (sys.argv[2], exc.strerror))
    sys.exit(126)
"""
# Finds python3 for the --as-user user (sudo's secure_path), then runs STUB ("$0").
STUB_BOOT = (
    'for p in python3 python; do command -v "$p" >/dev/null 2>&1 && '
    'exec "$p" -I -S -c "$0" "$@"; done; '
    'echo "tunnelauth: no python3 for this user" >&2; exit 127'
)
# 127.0.0.1:P, localhost:P, [::1]:P, also URL-encoded (a redirect_uri parameter).
LOOPBACK_PORT = re.compile(
    rb"(?:127\.0\.0\.1|localhost|\[::1\]|%5B%3A%3A1%5D)(?::|%3A)(\d{1,5})(?!\d)", re.I
)


class ChannelGone(Exception):
    pass


def frame(kind, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    data = kind.encode() + str(len(payload)).encode() + b":" + payload
    while data:
        try:
            data = data[os.write(OUT, data) :]
        except BlockingIOError:
            select.select([], [OUT], [], 1)
        except OSError:
            raise ChannelGone() from None


def home_of(user):
    if not user:
        return os.path.expanduser("~")
    import pwd

    return pwd.getpwnam(user).pw_dir


def candidates(home):
    yield from (
        home + "/.local/bin/hermes",
        home + "/.hermes/venv/bin/hermes",
        home + "/.hermes/hermes-agent/venv/bin/hermes",
        home + "/.local/share/pipx/venvs/hermes-agent/bin/hermes",
        home + "/.local/pipx/venvs/hermes-agent/bin/hermes",
        home + "/.local/share/uv/tools/hermes-agent/bin/hermes",
        "/usr/local/bin/hermes",
        "/opt/hermes/bin/hermes",
    )


def login_shell_which(name):
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        out = (
            subprocess.run(
                [shell, "-lc", "command -v -- " + shlex.quote(name)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=5,
                check=False,
            )
            .stdout.decode(errors="replace")
            .strip()
            .splitlines()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out[-1] if out and out[-1].startswith("/") else None


def as_user(user, argv, timeout=10, data=None):
    """Run argv as user through sudo -n, `data` on its stdin; (returncode, stdout, stderr)."""
    try:
        done = subprocess.run(
            ["sudo", "-n", "-H", "-u", user, "--", *argv],
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, "", str(exc)
    return (
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def find_command(name, home, user=None):
    if user:
        # Look as that user: their PATH, their login shell, their home (often 0700 to us).
        if "/" in name:
            return name if as_user(user, ["test", "-x", name])[0] == 0 else None
        import pwd

        shell = pwd.getpwnam(user).pw_shell or "/bin/sh"
        rc, out, _ = as_user(user, [shell, "-lc", "command -v -- " + shlex.quote(name)])
        lines = out.strip().splitlines()
        if rc == 0 and lines and lines[-1].startswith("/"):
            return lines[-1]
        if name == "hermes":
            for path in candidates(home):
                if as_user(user, ["test", "-x", path])[0] == 0:
                    return path
        return None
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    found = shutil.which(name) or login_shell_which(name)
    if found:
        return found
    if name == "hermes":
        for path in candidates(home):
            if os.access(path, os.X_OK):
                return path
    return None


def listening(port):
    """The address something LISTENs on at port ('127.0.0.1', '::1', ...), or None.
    tcp_listeners and read_tcp_tables: remote_lib/listeners.py, sent in front of this file."""
    tables = read_tcp_tables()  # type: ignore[name-defined]  # noqa: F821
    found = tcp_listeners(tables, port).get(port, ())  # type: ignore[name-defined]  # noqa: F821
    # An IPv4 listener is what a plain 127.0.0.1 forward reaches; prefer it when both exist.
    for address in ("127.0.0.1", "0.0.0.0", "::", "::1"):
        if address in found:
            return address
    return min(found) if found else None


# Stats HERMES_HOME and its auth.json as the --as-user user; the path comes on stdin, so it
# is in no command line. Prints "<mode> <size> <dir mode>" (octal, decimal, octal).
STAT = """import os, sys
h = sys.stdin.read()
try:
    a = os.stat(os.path.join(h, "auth.json"))
    d = os.stat(h)
except OSError as exc:
    sys.exit(exc.strerror)
print("%o %d %o" % (a.st_mode & 0o7777, a.st_size, d.st_mode & 0o7777))
"""


def token_file(user, home_env):
    home = home_env or os.path.join(home_of(user), ".hermes")
    path = os.path.join(home, "auth.json")
    info = {"path": path}  # type: dict[str, object]
    if user:
        rc, out, err = as_user(user, ["/bin/sh", "-c", STUB_BOOT, STAT], data=home.encode())
        if rc != 0:
            info["error"] = (err.strip().splitlines() or ["cannot stat"])[-1]
            return info
        mode, size, dir_mode = out.split()[:3]
        info.update(mode=int(mode, 8), size=int(size), dir_mode=int(dir_mode, 8))
        return info
    try:
        st = os.stat(path)
        info.update(mode=stat.S_IMODE(st.st_mode), size=st.st_size, mtime=st.st_mtime)
        info["dir_mode"] = stat.S_IMODE(os.stat(home).st_mode)
    except OSError as exc:
        info["error"] = exc.strerror
    return info


class PtyChild(object):
    """A Popen look-alike whose stdin/stdout are both the master side of a pseudo-terminal."""

    def __init__(self, proc, master):
        self.proc = proc
        self.pid = proc.pid
        self.master = master
        self.stdin = self
        self.stdout = self
        self.stderr = None
        self.setup = None  # type: object  # the --as-user STUB's stdin pipe (via_pipe)

    def fileno(self):
        return self.master

    def write(self, data):
        os.write(self.master, data)

    def flush(self):
        pass

    def close(self):
        os.write(self.master, b"\x04")  # end of input, as a person's Ctrl-D

    def poll(self):
        return self.proc.poll()

    def wait(self):
        return self.proc.wait()


def start_in_pty(argv, env, cwd, size, via_pipe=False):
    """The command on a new pseudo-terminal. via_pipe: its stdin is a pipe at first (the
    --as-user STUB reads its environment there, then takes the terminal as stdin)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    if size:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))

    def controlling_tty():
        fcntl.ioctl(1, termios.TIOCSCTTY, 0)

    env = dict(env)
    env.setdefault("TERM", "xterm-256color")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if via_pipe else slave,
        stdout=slave,
        stderr=slave,
        env=env,
        # preexec_fn: the supervisor starts no threads; it makes the pty the child's terminal.
        cwd=cwd,
        start_new_session=True,
        preexec_fn=controlling_tty,  # noqa: PLW1509
    )
    os.close(slave)
    child = PtyChild(proc, master)
    child.setup = proc.stdin
    return child


def read_config():
    """The configuration line (C<base64 JSON>) and whatever came after it; None if the
    channel closed or nothing came within CONFIG_WAIT."""
    data = b""
    deadline = time.time() + CONFIG_WAIT
    while b"\n" not in data:
        left = deadline - time.time()
        if left <= 0 or len(data) > MAX_CONFIG or not select.select([IN], [], [], left)[0]:
            return None, b""
        chunk = os.read(IN, 65536)
        if not chunk:
            return None, b""
        data += chunk
    line, rest = data.split(b"\n", 1)
    if line[:1] != b"C":
        return None, b""
    return json.loads(base64.b64decode(line[1:]).decode()), rest


def main():
    frame("T", "tunnelauth-agent 1")
    try:
        config, rest = read_config()
        if config is None:
            return 125
        return supervise(config, rest)
    except ChannelGone:
        return 141


def hand_over(pipe, env):
    """Write the environment to the STUB (--as-user); it reads exactly this and execs."""
    data = json.dumps(env).encode()
    try:
        pipe.write(str(len(data)).encode() + b":" + data)
        pipe.flush()
    except OSError:
        pass  # sudo or the stub failed: its exit status and stderr tell


def supervise(config, rest=b""):
    user = config.get("as_user")
    try:
        home = home_of(user)
    except KeyError:
        frame("S", json.dumps({"user": user, "error": "no such user"}))
        return 127
    if user:
        rc, _, err = as_user(user, ["true"])
        if rc != 0:
            frame(
                "S",
                json.dumps(
                    {"user": user, "error": (err.strip().splitlines() or ["sudo failed"])[-1]}
                ),
            )
            return 127
    name = config["command"][0]
    path = find_command(name, home, user)
    if path is None:
        looked = ["$PATH", "the login shell's PATH"] + (
            list(candidates(home)) if name == "hermes" else []
        )
        frame("n", json.dumps({"command": name, "looked": looked}))
        return 127
    added = dict(config.get("env", {}))
    added["PYTHONUNBUFFERED"] = "1"
    env = dict(os.environ)
    env.update(added)
    argv = [path, *config["command"][1:]]
    pty_mode = bool(config.get("pty"))
    if user:
        # Not `sudo ... env K=V cmd`: that puts the values in a command line anyone can read.
        argv = [
            "sudo",
            "-n",
            "-H",
            "-u",
            user,
            "--",
            "/bin/sh",
            "-c",
            STUB_BOOT,
            STUB,
            "t" if pty_mode else "p",
            *argv,
        ]
        env = dict(os.environ)
    cwd = home if os.access(home, os.X_OK) else "/"
    try:
        if pty_mode:
            child = start_in_pty(argv, env, cwd, config.get("size"), via_pipe=bool(user))
        else:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
                cwd=cwd,
            )
    except OSError as exc:
        frame("n", json.dumps({"command": name, "looked": [path], "error": exc.strerror}))
        return 127
    if user:
        if pty_mode:
            hand_over(child.setup, added)
            child.setup.close()
        else:
            hand_over(child.stdin, added)

    def kill(*_):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(child.pid, sig)
            except OSError:
                return
            deadline = time.time() + 1.5
            while time.time() < deadline:
                if child.poll() is not None:
                    try:
                        os.killpg(child.pid, 0)
                    except OSError:
                        return
                time.sleep(0.05)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: (kill(), os._exit(128 + 15)))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    try:
        return pump(config, child, kill, user, rest)
    finally:
        kill()


def report_listening(watch, reported):
    for port in sorted(watch):
        address = listening(port)
        if address:
            del watch[port]
            reported.add(port)
            frame("L", "%d %s" % (port, address))


def pump(config, child, kill, user, pending=b""):
    dead_after = float(config.get("dead_after") or DEAD_AFTER)
    last = time.time()
    watch = {}  # type: dict[int, float]  # port -> when it was first watched
    reported = set()  # type: set[int]
    tail = b""  # the end of the previous output chunk: a URL may be split between reads
    streams = {child.stdout.fileno(): "o"}
    if child.stderr is not None:
        streams[child.stderr.fileno()] = "e"
    stdin_open = True
    exited = None  # when the command's own process was seen gone
    heard = time.time()  # when its output last said something

    def obey(data):
        lines = data.split(b"\n")
        for line in lines[:-1]:
            if line[:1] == b"i" and child.stdin:
                try:
                    child.stdin.write(base64.b64decode(line[1:]))
                    child.stdin.flush()
                except (OSError, ValueError):
                    pass
            elif line == b"c" and child.stdin:
                try:
                    child.stdin.close()
                except OSError:
                    pass
                if not isinstance(child, PtyChild):
                    child.stdin = None
            elif line[:1] == b"w" and line[1:].isdigit():
                port = int(line[1:])
                if port not in reported:
                    watch.setdefault(port, time.time())
            elif line == b"k":
                kill()
        return lines[-1]

    pending = obey(pending)
    while streams:
        fds = list(streams) + ([IN] if stdin_open else [])
        now = time.time()
        if exited is None and child.poll() is not None:
            exited = now
        if exited is not None and (now - max(exited, heard) > DRAIN or now - exited > DRAIN_MAX):
            break  # something outside its process group holds the output open: stop reading
        # Poll a fresh watch often (a login waits on it), an old one gently.
        wait = 0.5 if not watch else 0.01 if now - max(watch.values()) < 2 else 0.1
        if exited is not None:
            wait = 0.05
        ready = select.select(fds, [], [], wait)[0]
        for fd in ready:
            if fd == IN:
                data = os.read(IN, 65536)
                if not data:
                    # The channel is gone: tunnelauth closed it or died.
                    kill()
                    stdin_open = False
                    continue
                last = time.time()
                pending = obey(pending + data)
            else:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""  # a pty master reads EIO once the child side is gone
                if data:
                    heard = time.time()
                    for match in LOOPBACK_PORT.finditer(tail + data):
                        port = int(match.group(1))
                        if 0 < port < 65536 and port not in reported:
                            watch.setdefault(port, time.time())
                    tail = data[-40:]
                    report_listening(watch, reported)
                    frame(streams[fd], data)
                else:
                    del streams[fd]
        report_listening(watch, reported)
        if stdin_open and time.time() - last > dead_after:
            # Heartbeats stopped for longer than the SSH keepalive window: tunnelauth has given
            # up on this connection too, though no EOF arrived (a cut link sends none).
            kill()
            stdin_open = False
            frame("H", "%g" % dead_after)
    rc = child.wait()
    kill()
    status = rc if rc >= 0 else 128 - rc
    if status == 0 and config.get("token_check"):
        frame("f", json.dumps(token_file(user, config.get("env", {}).get("HERMES_HOME"))))
    frame("x", str(status))
    return status


if __name__ == "__main__":
    sys.exit(main())
