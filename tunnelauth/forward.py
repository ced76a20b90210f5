"""A local port forward over the SSH connection, bound to loopback only.

asyncssh's own forward_local_port hides a refused channel as a bare EOF; forwarding each
accepted connection ourselves lets us say *why* a callback did not get through.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

import asyncssh

from tunnelauth.localport import LOOPBACK, busy_error

CHUNK = 65536


class Forward:
    """127.0.0.1:port on the laptop -> 127.0.0.1:port on the target (same number: the
    provider checks redirect_uri, so the port is never remapped)."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        port: int,
        on_error: Callable[[int, asyncssh.ChannelOpenError], None],
        remote_host: str = LOOPBACK,
    ) -> None:
        self.port = port
        self._conn = conn
        self._on_error = on_error
        self._remote_host = remote_host
        self._server: asyncio.Server | None = None
        self._pipes: dict[asyncio.Task[None], list[asyncio.BaseTransport | asyncssh.SSHWriter[bytes]]] = {}

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._accept, LOOPBACK, self.port, reuse_address=True, family=socket.AF_INET
            )
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise busy_error(self.port) from exc
            raise

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        # Closing the sockets ends the pipes; cancelling the handler tasks instead would
        # make asyncio's stream machinery log their cancellation as an error.
        for ends in self._pipes.values():
            for end in ends:
                end.close()
        if self._pipes:
            await asyncio.wait(list(self._pipes), timeout=2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        ends: list[asyncio.BaseTransport | asyncssh.SSHWriter[bytes]] = [writer.transport]
        self._pipes[task] = ends
        try:
            await self._serve(reader, writer, ends)
        finally:
            del self._pipes[task]
            writer.close()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ends: list[asyncio.BaseTransport | asyncssh.SSHWriter[bytes]],
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # A callback is a small request and a small response: Nagle would only add delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            remote_reader, remote_writer = await self._conn.open_connection(self._remote_host, self.port)
        except asyncssh.ChannelOpenError as exc:
            self._on_error(self.port, exc)
            return
        except (asyncssh.Error, OSError):
            return
        ends.append(remote_writer)
        try:
            # Either direction may fail when the other side hangs up; both simply end.
            await asyncio.gather(
                _pipe(reader, remote_writer), _pipe(remote_reader, writer), return_exceptions=True
            )
        finally:
            remote_writer.close()


async def _pipe(reader: asyncio.StreamReader | asyncssh.SSHReader[bytes],
                writer: asyncio.StreamWriter | asyncssh.SSHWriter[bytes]) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
