"""supervisor.py: the laptop's end of the protocol, against the real supervisor (agent.py) run
here with `sh -c`, as a login shell on the target would run it."""

from __future__ import annotations

import asyncio
import base64
import socket
import sys

import pytest

from tunnelauth import remote, supervisor
from tunnelauth._compat import timeout
from tunnelauth.errors import RemoteSetupError


class LocalProcess:
    """The supervisor started on this machine, in transport.RemoteProcess's shape."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    async def wait_closed(self) -> None:
        await self.proc.wait()

    def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()


async def start(*command: str) -> supervisor.SupervisorChannel:
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        remote.command_line(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(supervisor.configuration(remote.RemoteSpec(command=command)))
    return supervisor.SupervisorChannel(LocalProcess(proc))


async def frames(channel: supervisor.SupervisorChannel) -> list[supervisor.Frame]:
    seen = []
    async with timeout(20):
        async for frame in channel:
            seen.append(frame)
    await channel.wait_closed()
    return seen


def output(seen: list[supervisor.Frame], stream: str) -> bytes:
    return b"".join(f.data for f in seen if isinstance(f, supervisor.Output) and f.stream == stream)


def test_output_and_exit_status_come_back_as_typed_frames() -> None:
    seen = asyncio.run(
        frames_of(
            sys.executable,
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
        )
    )
    assert output(seen, "stdout") == b"out\n" and output(seen, "stderr") == b"err\n"
    assert seen[-1] == supervisor.Exited(3)


async def frames_of(*command: str) -> list[supervisor.Frame]:
    channel = await start(*command)
    channel.heartbeat()
    return await frames(channel)


def test_input_reaches_the_command_and_closing_it_ends_the_input() -> None:
    async def go() -> list[supervisor.Frame]:
        channel = await start("cat")
        assert channel.send_input(b"one\n") and channel.send_input(b"\x00two\n")
        assert channel.close_input()
        return await frames(channel)

    seen = asyncio.run(go())
    assert output(seen, "stdout") == b"one\n\x00two\n" and seen[-1] == supervisor.Exited(0)


def test_a_watched_port_is_reported_listening_and_kill_stops_the_command() -> None:
    async def go(port: int) -> list[supervisor.Frame]:
        channel = await start(sys.executable, "-c", "import time; time.sleep(60)")
        assert channel.watch(port)
        async with timeout(20):
            first = await channel.next()
        assert channel.kill()
        return [first, *(await frames(channel))] if first else []

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        seen = asyncio.run(go(port))
    assert seen[0] == supervisor.Listening(port, "127.0.0.1")
    assert seen[-1] == supervisor.Exited(128 + 15)  # SIGTERM to its process group


def test_a_missing_command_is_its_own_frame() -> None:
    seen = asyncio.run(frames_of("no-such-command-for-tunnelauth"))
    assert isinstance(seen[0], supervisor.CommandNotFound)
    assert seen[0].info["command"] == "no-such-command-for-tunnelauth"


def frame(kind: str, payload: bytes) -> bytes:
    return kind.encode() + str(len(payload)).encode() + b":" + payload


class Chunks:
    """A stdout that hands out the given pieces, one per read, then EOF."""

    def __init__(self, data: bytes, size: int) -> None:
        self.pieces = [data[i : i + size] for i in range(0, len(data), size)]

    async def read(self, n: int = -1) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


class Fed:
    def __init__(self, stdout: Chunks) -> None:
        self.stdout = stdout


def decoded(data: bytes, size: int) -> list[supervisor.Frame]:
    async def go() -> list[supervisor.Frame]:
        return [f async for f in supervisor.SupervisorChannel(Fed(Chunks(data, size)))]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_frames_split_anywhere_after_a_chatty_shell_are_decoded() -> None:
    stream = (
        b"Welcome! (a .bashrc that prints)\n"
        + remote.HELLO
        + frame("o", b"abc")
        + frame("e", b"x:y")
        + frame("L", b"56121 ::1")
        + frame("Z", b"a kind from a newer agent")
        + frame("f", b'{"path": "x"}')
        + frame("x", b"0")
    )
    expected = [
        supervisor.Output("stdout", b"abc"),
        supervisor.Output("stderr", b"x:y"),
        supervisor.Listening(56121, "::1"),
        supervisor.TokenInfo({"path": "x"}),
        supervisor.Exited(0),
    ]
    for size in (1, 2, 5, 7, len(stream)):
        assert decoded(stream, size) == expected, size


def test_a_malformed_frame_is_an_error() -> None:
    with pytest.raises(RemoteSetupError, match="malformed frame"):
        decoded(remote.HELLO + b"oXYZ:abc" + b"." * 20, 64)


def test_lines_are_the_protocols() -> None:
    assert supervisor.input_line(b"\x00a\n") == b"i" + base64.b64encode(b"\x00a\n") + b"\n"
    assert supervisor.watch_line(43827) == b"w43827\n"
    assert (supervisor.HEARTBEAT_LINE, supervisor.CLOSE_INPUT_LINE, supervisor.KILL_LINE) == (
        b"h\n",
        b"c\n",
        b"k\n",
    )
