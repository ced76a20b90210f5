"""The forwarding check: tunnelauth's own throwaway listener on the target's 127.0.0.1,
fetched through an SSH channel with httpx. hermes's ports are never touched."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Iterable

from tunnelauth._asyncssh import asyncssh

from tunnelauth._compat import TIMEOUTS, timeout
from tunnelauth.doctor import commands
from tunnelauth.doctor.model import Outcome, Status
from tunnelauth.doctor.verdicts import listeners
from tunnelauth.localport import LOOPBACK

STARTUP = 10.0  # for the listener to print its port (python3 starting on a slow host)
FETCH = 10.0
STOP = 5.0  # the listener exits at once when its stdin closes
CHUNK = 65536

Reader = asyncio.StreamReader | asyncssh.SSHReader[bytes]
Writer = asyncio.StreamWriter | asyncssh.SSHWriter[bytes]


async def check(conn: asyncssh.SSHClientConnection, destination: str, avoid: Iterable[int]) -> Outcome:
    token = secrets.token_urlsafe(18)
    proc = await conn.create_process(commands.listener_command(token, avoid), encoding=None)
    port: int | None = None
    try:
        outcome, port = await _through(conn, proc, destination, token)
    finally:
        stopped = await _stop(proc)
    if not stopped:
        return Outcome(Status.FAIL, f"the test listener on {destination} did not stop within {STOP:g} s")
    if port is not None:
        table = await conn.run(commands.socket_table_command(), check=False, encoding="utf-8")
        if port in listeners(str(table.stdout or "")):
            return Outcome(Status.FAIL, f"the test listener's port {port} still LISTENs on {destination}")
    return outcome


async def _through(conn: asyncssh.SSHClientConnection, proc: asyncssh.SSHClientProcess[bytes],
                   destination: str, token: str) -> tuple[Outcome, int | None]:
    async with timeout(STARTUP):
        line = await proc.stdout.readline()
    if not line.strip().isdigit():
        why = await _stderr(proc)  # read to its end: the listener has exited
        commands.check_python(proc.exit_status, why, destination)
        why = why or "it printed no port"
        return Outcome(Status.FAIL, f"could not start a test listener on {destination}: {why}"), None
    port = int(line)
    try:
        reader, writer = await conn.open_connection(LOOPBACK, port, encoding=None)
    except asyncssh.ChannelOpenError as exc:
        if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
            # A login still gets through by relaying over an exec channel, but a bastion setup
            # that CI checks is meant to forward: this is the one thing to fix there.
            return Outcome(Status.FAIL, f"forwarding refused by the target's sshd ({exc.reason}): allow "
                                        "it there (AllowTcpForwarding yes or local); until then a "
                                        "login has to relay the callback through an exec channel"), port
        return Outcome(Status.FAIL, f"cannot forward to 127.0.0.1:{port} on {destination}: {exc.reason}"), port
    import httpx  # slow to import; only the doctor needs it

    try:
        body = await _fetch(reader, writer)
    except (httpx.HTTPError, OSError, asyncssh.Error) as exc:
        return Outcome(Status.FAIL, f"the tunnel to 127.0.0.1:{port} on {destination} opened, but "
                                    f"the test request failed: {exc or type(exc).__name__}"), port
    finally:
        writer.close()
    if body != token:
        return Outcome(Status.FAIL, f"127.0.0.1:{port} on {destination} answered through the tunnel, "
                                    "but not with the test listener's token"), port
    return Outcome(Status.PASS, f"a test listener on {destination}'s 127.0.0.1:{port} answered through "
                                "the tunnel; it is gone again"), port


async def _fetch(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> str:
    """GET through a one-connection local forward on 127.0.0.1:<ephemeral> (the channel is
    already open, so a refusal was reported above and cannot hide as an empty reply)."""
    import httpx

    pipes: list[asyncio.Task[None]] = []

    async def accept(local_reader: asyncio.StreamReader, local_writer: asyncio.StreamWriter) -> None:
        if pipes:  # the channel carries one connection: httpx's, nobody else's
            local_writer.close()
            return
        pipes.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await asyncio.gather(_pipe(local_reader, writer), _pipe(reader, local_writer),
                                 return_exceptions=True)
        finally:
            local_writer.close()

    server = await asyncio.start_server(accept, LOOPBACK, 0, family=socket.AF_INET)
    try:
        port = server.sockets[0].getsockname()[1]
        # Plain http to our own loopback listener: no TLS anywhere, so no CA bundle to load
        # (verify=True would read it: 40 ms of CPU per check, on every target of a fleet).
        async with httpx.AsyncClient(trust_env=False, timeout=FETCH, verify=False) as client:
            response = await client.get(f"http://{LOOPBACK}:{port}/tunnelauth-doctor")
        return response.text
    finally:
        server.close()
        writer.close()
        if pipes:
            await asyncio.wait(pipes, timeout=2)


async def _pipe(reader: Reader, writer: Writer) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _stderr(proc: asyncssh.SSHClientProcess[bytes]) -> str:
    try:
        async with timeout(3):
            text = (await proc.stderr.read()).decode(errors="replace")
            await proc.wait_closed()  # so that exit_status is known
    except (*TIMEOUTS, asyncssh.Error, OSError):
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def _stop(proc: asyncssh.SSHClientProcess[bytes]) -> bool:
    """Close the listener's stdin (it exits on EOF) and wait for its exit status, which sshd
    sends only once the process is gone."""
    try:
        proc.stdin.write_eof()
    except (asyncssh.Error, OSError):
        pass
    try:
        async with timeout(STOP):
            await proc.wait_closed()
    except TIMEOUTS:
        proc.close()
        return False
    return proc.exit_status is not None or proc.exit_signal is not None
