"""The laptop's end of the remote supervisor's protocol (the supervisor is tunnelauth/agent.py).

The one place on the laptop that knows the protocol's letters (agent.py's header is the
supervisor's side of the same protocol):

    lines in, one per write:  C<base64 JSON>   the configuration, first (config_line)
                              h                heartbeat (without one for dead_after s: kill)
                              i<base64>        bytes for the command's stdin
                              c                close the command's stdin
                              w<port>          report when 127.0.0.1/::1:<port> LISTENs
                              k                kill the command's process group now
    frames out:               <kind><length>:<payload>, after the hello T18:tunnelauth-agent 1
                              o e   the command's stdout / stderr      -> Output
                              L     "<port> <address>" listening       -> Listening
                              x     exit status                        -> Exited
                              f     token file (JSON)                  -> TokenInfo
                              n     command not found (JSON)           -> CommandNotFound
                              S     cannot become --as-user (JSON)     -> CannotBecomeUser
                              H     no heartbeat for N s: it stopped   -> Stalled
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

from tunnelauth import remote
from tunnelauth.errors import TunnelauthError
from tunnelauth.text import strip_ansi
from tunnelauth.transport import RemoteProcess

STDERR_TAIL = 20


@dataclass(frozen=True)
class Output:
    """Bytes the command wrote to its stdout or stderr ("stdout" | "stderr")."""

    stream: str
    data: bytes


@dataclass(frozen=True)
class Listening:
    """Something on the target LISTENs on port; address is where ('' when not said)."""

    port: int
    address: str


@dataclass(frozen=True)
class Exited:
    status: int


@dataclass(frozen=True)
class TokenInfo:
    """The token file after a successful login: path, mode, size, or error."""

    info: dict[str, object]


@dataclass(frozen=True)
class CommandNotFound:
    """info: command, looked (where), and error when it was found but would not start."""

    info: dict[str, object]


@dataclass(frozen=True)
class CannotBecomeUser:
    """info: user, error (--as-user could not sudo to them)."""

    info: dict[str, object]


@dataclass(frozen=True)
class Stalled:
    """No heartbeat reached the supervisor for `seconds`: it stopped the command."""

    seconds: float


Frame = Output | Listening | Exited | TokenInfo | CommandNotFound | CannotBecomeUser | Stalled

_STREAMS = {"o": "stdout", "e": "stderr"}


def decode(kind: str, payload: bytes) -> Frame | None:
    """One frame as a typed value; None for the hello and for kinds this side does not know."""
    if kind in _STREAMS:
        return Output(_STREAMS[kind], payload)
    if kind == "L":
        port, _, address = payload.decode().partition(" ")
        return Listening(int(port), address)
    if kind == "x":
        return Exited(int(payload))
    if kind == "f":
        return TokenInfo(json.loads(payload))
    if kind == "n":
        return CommandNotFound(json.loads(payload))
    if kind == "S":
        return CannotBecomeUser(json.loads(payload))
    if kind == "H":
        return Stalled(float(payload))
    return None


HEARTBEAT_LINE = b"h\n"
CLOSE_INPUT_LINE = b"c\n"
KILL_LINE = b"k\n"


def input_line(data: bytes) -> bytes:
    return remote.stdin_line(data)


def watch_line(port: int) -> bytes:
    return f"w{int(port)}\n".encode()


def configuration(spec: remote.RemoteSpec) -> bytes:
    """The first line the supervisor reads: what to run, with which environment. It travels
    inside the channel (Connection.start's `first`), never in a command line."""
    return remote.config_line(spec)


class SupervisorChannel:
    """The supervisor running on the target: send it lines, read its frames.

    Writes never raise: a channel that is gone shows up as the end of the frames (or a
    ConnectionLost from reading), and the methods return False.
    """

    def __init__(self, proc: RemoteProcess) -> None:
        self.proc = proc
        self._decoder = remote.FrameDecoder()
        self._pending: deque[Frame] = deque()
        self.stderr_tail: list[str] = []  # the supervisor's own stderr (a missing python3, say)

    # -- lines in -------------------------------------------------------------------------

    def heartbeat(self) -> bool:
        return self._send(HEARTBEAT_LINE)

    def send_input(self, data: bytes) -> bool:
        """Bytes for the command's stdin."""
        return self._send(input_line(data))

    def close_input(self) -> bool:
        return self._send(CLOSE_INPUT_LINE)

    def watch(self, port: int) -> bool:
        """Ask for a Listening frame once something LISTENs on the target's loopback port."""
        return self._send(watch_line(port))

    def kill(self) -> bool:
        """Stop the command (its whole process group) now."""
        return self._send(KILL_LINE)

    def _send(self, line: bytes) -> bool:
        try:
            self.proc.stdin.write(line)
        except (TunnelauthError, OSError):
            return False
        return True

    # -- frames out -----------------------------------------------------------------------

    async def next(self) -> Frame | None:
        """The next frame; None once the supervisor's stdout ended.

        Raises the transport's errors (ConnectionLost, ChannelFailed) and RemoteSetupError for
        a malformed frame."""
        while not self._pending:
            data = await self.proc.stdout.read(65536)
            if not data:
                return None
            for kind, payload in self._decoder.feed(data):
                frame = decode(kind, payload)
                if frame is not None:
                    self._pending.append(frame)
        return self._pending.popleft()

    def __aiter__(self) -> SupervisorChannel:
        return self

    async def __anext__(self) -> Frame:
        frame = await self.next()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def read_stderr(self) -> None:
        """Keep the last lines of the supervisor's own stderr, until it ends."""
        while True:
            data = await self.proc.stderr.read(4096)
            if not data:
                return
            text = strip_ansi(data.decode(errors="replace"))
            self.stderr_tail = (self.stderr_tail + text.splitlines())[-STDERR_TAIL:]

    # -- its end --------------------------------------------------------------------------

    async def wait_closed(self) -> None:
        await self.proc.wait_closed()

    def close(self) -> None:
        self.proc.close()
