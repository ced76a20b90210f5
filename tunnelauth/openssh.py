"""The user's own OpenSSH as the transport (`--ssh openssh`).

tunnelauth drives the system `ssh` binary: one master connection (ControlMaster) that ssh
authenticates in the user's terminal exactly as it always does (every prompt, every config
keyword: it is ssh doing it), started in a private directory (mode 0700); the remote process
and every forwarded connection are multiplexed sessions on it; the master is closed at the
end. A master the user already has for the destination (their ControlPath, alive according to
`ssh -O check`) is reused instead, and never stopped or changed.

Forwarded connections are stdio channels (`ssh -W` through the master), one per browser
connection, behind tunnelauth's own loopback listener (forward.py), rather than `-O forward`
listeners inside the master: a listener of tunnelauth's own dies with tunnelauth, even with
SIGKILL, so a reused master is never left with a forward the user did not ask for.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunnelauth._compat import TIMEOUTS, timeout
from tunnelauth.destination import Endpoint, SshSettings
from tunnelauth.errors import (
    AuthFailed,
    ConnectFailed,
    ConnectionLost,
    HostKeyError,
    TunnelauthError,
    UsageError,
)
from tunnelauth.transport import (
    ChannelRefused,
    ForwardingRefused,
    Reader,
    RemoteProcess,
    Writer,
)

BINARY_VAR = "TUNNELAUTH_SSH_BINARY"  # another `ssh` than the PATH's (a wrapper, say)
READY_POLL = 0.02  # how often to look for the master's control socket while it authenticates
CLOSE_GRACE = 3.0
RUN_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0
# Runs the master ($2...) and stops it when tunnelauth's end of stdin closes, which the kernel
# does for us even when tunnelauth is killed with SIGKILL; then removes the private directory
# ($1). No master, and no control socket, outlives its login. (An asynchronous list's stdin is
# /dev/null in sh, hence the copy of it in fd 3; Ctrl-C is tunnelauth's to handle.)
_WATCHDOG = (
    'trap "" INT; d=$1; shift; exec 3<&0; "$@" </dev/null 3<&- & p=$!; '
    '{ cat <&3 >/dev/null; kill -TERM "$p"; } >/dev/null 2>&1 & '
    'exec 3<&-; wait "$p"; s=$?; rm -rf -- "$d"; exit "$s"'
)
_CONFIRMED = "mux_client_request_stdio_fwd: master session id:"
_CONNECTION = re.compile(r"^\S+ \d+ (?P<host>\S+) (?P<port>\d+)$")


@dataclass(frozen=True)
class Target:
    """How to reach the destination with `ssh`: the destination and the options before it,
    as the user gave them to tunnelauth (ssh reads its config files itself)."""

    destination: str
    args: tuple[str, ...]
    label: str
    ssh: str = "ssh"
    via: str | None = None  # -J, for messages (a ProxyJump in the config is ssh's own business)

    def argv(self, *extra: str) -> list[str]:
        return [self.ssh, *extra, *self.args, "--", self.destination]

    def require(self) -> Target:
        if not self.ssh:
            raise UsageError(
                f"--ssh openssh needs the `{os.environ.get(BINARY_VAR, 'ssh')}` "
                "command, and it is not on the PATH",
                hint="install OpenSSH's client, or use the default --ssh asyncssh",
            )
        return self


def target(endpoint: Endpoint, jumps: Sequence[Endpoint] | None, settings: SshSettings) -> Target:
    """The ssh command line for the same destination, hops and options tunnelauth was given."""
    ssh = shutil.which(os.environ.get(BINARY_VAR, "ssh")) or ""  # "": none (see require())
    args: list[str] = []
    if settings.config_file is not None:
        args += ["-F", str(settings.config_file)]
    if jumps is not None:
        args += ["-J", ",".join(str(hop) for hop in jumps) or "none"]
    port = endpoint.port or settings.port
    if port:
        args += ["-p", str(port)]
    if settings.login and not endpoint.user:
        args += ["-l", settings.login]
    for identity in settings.identities:
        args += ["-i", identity]
    for key, value in settings.options.items():
        args += ["-o", f"{key}={value}"]
    if settings.accept_new:
        args += ["-o", "StrictHostKeyChecking=accept-new"]
    destination = f"{endpoint.user}@{endpoint.host}" if endpoint.user else endpoint.host
    via = ",".join(str(hop) for hop in jumps) if jumps else None
    return Target(destination=destination, args=tuple(args), label=str(endpoint), ssh=ssh, via=via)


async def _exec(argv: Sequence[str], **kwargs: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*argv, **kwargs)  # type: ignore[arg-type]


async def _output(argv: Sequence[str], limit: float = RUN_TIMEOUT) -> tuple[int, str, str]:
    proc = await _exec(
        argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with timeout(limit):
            out, err = await proc.communicate()
    except TIMEOUTS:
        proc.kill()
        await proc.wait()
        return 124, "", "timed out"
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def control_path(target: Target) -> str | None:
    """The ControlPath the user's config gives the destination (tokens expanded by ssh)."""
    status, out, _ = await _output([target.ssh, "-G", *target.args, "--", target.destination])
    if status != 0:
        return None
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "controlpath" and value and value != "none":
            return value
    return None


async def batch_login(target: Target, limit: float = 30.0) -> TunnelauthError | None:
    """Whether ssh logs in to the destination without asking anyone (`doctor`): None, or why not."""
    status, _, err = await _output([*target.argv("-o", "BatchMode=yes", "-T"), "true"], limit)
    if status == 0:
        return None
    return classify(err.splitlines(), target.label, status)


def _escape(path: str) -> str:
    return path.replace("%", "%%")  # ssh expands %-tokens in -S


class _Process:
    """An `ssh` session process with asyncssh's process shape (stdin/stdout/stderr, close)."""

    def __init__(self, proc: asyncio.subprocess.Process, on_exit: Callable[[int], None]) -> None:
        self._proc = proc
        self._on_exit = on_exit
        assert proc.stdin and proc.stdout and proc.stderr
        self.stdin: Writer = proc.stdin
        self.stdout: Reader = proc.stdout
        self.stderr: Reader = proc.stderr

    async def wait_closed(self) -> None:
        self._on_exit(await self._proc.wait())

    def close(self) -> None:
        if self._proc.returncode is None:
            if not self._proc.stdin.is_closing():  # type: ignore[union-attr]
                self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.terminate()
            except ProcessLookupError:
                pass


class _ChannelWriter:
    """The browser's side of an `ssh -W` channel: writes go to ssh's stdin; closing it ends
    the ssh process too."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        assert proc.stdin is not None
        self._stdin = proc.stdin

    def write(self, data: bytes) -> None:
        self._stdin.write(data)

    async def drain(self) -> None:
        await self._stdin.drain()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._stdin.close()

    def close(self) -> None:
        if not self._stdin.is_closing():
            self._stdin.close()
        if self._proc.returncode is None:
            try:
                self._proc.terminate()
            except ProcessLookupError:
                pass


class OpenSshConnection:
    """A ControlMaster connection to the destination: started here, or the user's own."""

    def __init__(
        self,
        target: Target,
        control: str,
        *,
        master: asyncio.subprocess.Process | None,
        directory: str | None,
        on_message: Callable[[str], None],
    ) -> None:
        self.target = target
        self.control = control
        self.reused = master is None
        self._master = master
        self._directory = directory
        self._on_message = on_message
        self._lost = False
        self._forwarding: bool | None = None  # learnt when a channel first fails
        self._stderr: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._drains: set[asyncio.Future[None]] = set()  # ssh -W's stderr, read and dropped

    @property
    def destination(self) -> str:
        return self.target.label

    # -- opening and closing ----------------------------------------------------------------

    @classmethod
    async def reuse(cls, target: Target) -> OpenSshConnection | None:
        """The user's own master for the destination (its ControlPath, alive), or None."""
        if not target.ssh:
            return None
        path = await control_path(target)
        if path and _is_socket(path) and await _alive(target, path):
            return cls(target, path, master=None, directory=None, on_message=lambda text: None)
        return None

    @classmethod
    async def open(
        cls,
        target: Target,
        *,
        reuse: bool = True,
        on_message: Callable[[str], None] = lambda text: None,
    ) -> OpenSshConnection:
        if reuse:
            reused = await cls.reuse(target)
            if reused is not None:
                return reused
        directory = tempfile.mkdtemp(prefix="tunnelauth-ssh-")
        os.chmod(directory, 0o700)
        control = os.path.join(directory, "master")
        try:
            master = await _exec(
                [
                    "sh",
                    "-c",
                    _WATCHDOG,
                    "sh",
                    directory,
                    *target.argv(
                        "-M",
                        "-N",
                        "-S",
                        _escape(control),
                        "-o",
                        "ControlPersist=no",
                        "-o",
                        "RequestTTY=no",
                        "-o",
                        "RemoteCommand=none",
                    ),
                ],
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise ConnectFailed(
                f"cannot start ssh for {target.label}: {exc.strerror or exc}"
            ) from exc
        conn = cls(target, control, master=master, directory=directory, on_message=on_message)
        conn._reader = asyncio.ensure_future(conn._read_master())
        try:
            await conn._ready()
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _read_master(self) -> None:
        assert self._master is not None and self._master.stderr is not None
        while line := await self._master.stderr.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text.strip():
                self._stderr = [*self._stderr, text][-20:]
                self._on_message(text)

    async def _ready(self) -> None:
        """Wait until ssh has authenticated (its control socket exists) or has given up."""
        assert self._master is not None
        while not _is_socket(self.control):
            if self._master.returncode is not None:
                if self._reader is not None:
                    await self._reader  # every line ssh wrote before it exited
                raise classify(self._stderr, self.target.label, self._master.returncode)
            await asyncio.sleep(READY_POLL)

    async def close(self) -> None:
        """Stop a master we started (a reused one is left exactly as it was)."""
        master = self._master
        if master is not None and master.returncode is None:
            assert master.stdin is not None
            master.stdin.close()  # the watchdog stops ssh
            try:
                async with timeout(CLOSE_GRACE):
                    await master.wait()
            except TIMEOUTS:
                master.kill()
                await master.wait()
        for task in [*self._drains, *([self._reader] if self._reader else [])]:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def dropped(self) -> str | None:
        if self._lost or (self._master is not None and self._master.returncode is not None):
            return self.target.label
        return None

    # -- sessions and channels on the master ------------------------------------------------

    def _mux(self, *extra: str) -> list[str]:
        # Only the master's socket: should it be gone, ProxyCommand=false makes the client fail
        # at once instead of opening (and authenticating) a connection of its own.
        return [
            self.target.ssh,
            "-F",
            "/dev/null",
            "-S",
            _escape(self.control),
            "-o",
            "ControlMaster=no",
            "-o",
            "ProxyCommand=false",
            "-o",
            "BatchMode=yes",
            *extra,
            "--",
            self.target.destination,
        ]

    def _exited(self, status: int) -> None:
        if status == 255 and not _is_socket(self.control):
            self._lost = True

    async def start(self, command: str, first: bytes = b"") -> RemoteProcess:
        try:
            proc = await _exec(
                [*self._mux("-T"), command],
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ConnectionLost(f"cannot start ssh: {exc.strerror or exc}") from exc
        if first:
            assert proc.stdin is not None
            proc.stdin.write(first)  # ssh sends it as soon as the session is open
        return _Process(proc, self._exited)

    async def run(self, command: str) -> str:
        status, out, _ = await _output([*self._mux("-T"), command])
        return out if status == 0 else ""

    async def open_channel(self, host: str, port: int) -> tuple[Reader, Writer]:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        proc = await _exec(
            self._mux("-v", "-W", address),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        if await _confirmed(proc.stderr):
            # The rest of ssh's -v chatter is not ours to show; it must not fill the pipe.
            drain = asyncio.ensure_future(_discard(proc.stderr))
            writer = _ChannelWriter(proc)
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
            return proc.stdout, writer
        await proc.wait()
        self._exited(proc.returncode or 0)
        if self._lost:
            raise ConnectionLost(f"lost the connection to {self.target.label}")
        if not await self._forwarding_allowed():
            reason = "the target's sshd refuses forwarding channels"
            raise ForwardingRefused(f"forwarding to {address}: {reason}", reason=reason)
        reason = "nothing accepted the connection there"
        raise ChannelRefused(f"forwarding to {address}: {reason}", reason=reason)

    async def _forwarding_allowed(self) -> bool:
        """Whether sshd lets channels through at all: a channel to sshd's own address (taken
        from $SSH_CONNECTION) that answers with its banner. Asked once, only after a failure."""
        if self._forwarding is None:
            match = _CONNECTION.match((await self.run('echo "$SSH_CONNECTION"')).strip())
            self._forwarding = False
            if match:
                host, port = match["host"], match["port"]
                address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                _status, out, _ = await _output(self._mux("-W", address), PROBE_TIMEOUT)
                self._forwarding = out.startswith("SSH-")
        return self._forwarding


async def _confirmed(stderr: asyncio.StreamReader) -> bool:
    while line := await stderr.readline():
        if _CONFIRMED in line.decode(errors="replace"):
            return True
    return False


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def _alive(target: Target, path: str) -> bool:
    status, _, _ = await _output(
        [
            target.ssh,
            "-F",
            "/dev/null",
            "-S",
            _escape(path),
            "-O",
            "check",
            "--",
            target.destination,
        ],
        PROBE_TIMEOUT,
    )
    return status == 0


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


_AUTH = re.compile(r"Permission denied \((?P<methods>[^)]*)\)")
_HOST_KEY = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "no matching host key type",
    "Host key for",
    "No .* host key is known",
)
_UNREACHABLE = (
    "Could not resolve hostname",
    "Name or service not known",
    "Connection timed out",
    "Connection refused",
    "No route to host",
    "Network is unreachable",
    "kex_exchange_identification",
    "Connection closed by",
    "Connection reset",
    "banner exchange",
    "Operation timed out",
)


def classify(lines: Sequence[str], label: str, status: int) -> TunnelauthError:
    """ssh's own last words, as tunnelauth's error with the right exit code."""
    text = "\n".join(lines)
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    said = f": ssh says {last!r}" if last else f" (ssh exited with status {status})"
    auth = _AUTH.search(text)
    if auth:
        return AuthFailed(
            f"{label} refused authentication (it offered {auth['methods']})",
            hint="run `ssh` to the same destination to see every attempt (ssh -v)",
        )
    if any(re.search(pattern, text, re.IGNORECASE) for pattern in _HOST_KEY):
        return HostKeyError(
            f"the host key of a hop to {label} was refused{said}",
            hint="check the key; --accept-new records a host seen for the first time",
        )
    if any(pattern.lower() in text.lower() for pattern in _UNREACHABLE):
        return ConnectFailed(f"cannot reach {label}{said}")
    return ConnectFailed(f"ssh could not connect to {label}{said}")
