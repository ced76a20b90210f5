"""A local port forward over the SSH connection, bound to loopback only.

asyncssh's own forward_local_port hides a refused channel as a bare EOF; forwarding each
accepted connection ourselves lets us say *why* a callback did not get through, and fall
back to a relay through an exec channel when the target's sshd forbids forwarding.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Union

from tunnelauth import remote
from tunnelauth._asyncssh import asyncssh
from tunnelauth.localport import LOOPBACK, busy_error

CHUNK = 65536
LOOPBACK6 = "::1"

_Reader = Union[asyncio.StreamReader, "asyncssh.SSHReader[bytes]"]
_Writer = Union[asyncio.StreamWriter, "asyncssh.SSHWriter[bytes]"]
_End = Union[asyncio.BaseTransport, "asyncssh.SSHWriter[bytes]", "asyncssh.SSHClientProcess[bytes]"]


class Forward:
    """127.0.0.1:port on the laptop -> the same port on the target's loopback (same number:
    the provider checks redirect_uri, so the port is never remapped)."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        port: int,
        on_error: Callable[[int, asyncssh.ChannelOpenError], None],
        on_relay: Callable[[int, str], None] = lambda port, why: None,
        *,
        remote_host: str = LOOPBACK,
        also_ipv6: bool = False,
    ) -> None:
        self.port = port
        self.remote_host = remote_host  # may change once we learn where the remote listens
        self.relay = False  # set once the target refused a forwarding channel
        self._conn = conn
        self._on_error = on_error
        self._on_relay = on_relay
        self._also_ipv6 = also_ipv6
        self._servers: list[asyncio.Server] = []
        self._pipes: dict[asyncio.Task[None], list[_End]] = {}

    async def start(self) -> None:
        try:
            self._servers.append(
                await asyncio.start_server(
                    self._accept, LOOPBACK, self.port, reuse_address=True, family=socket.AF_INET
                )
            )
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise busy_error(self.port) from exc
            raise
        if self._also_ipv6:
            # Browsers differ in which of localhost's addresses they try first.
            try:
                self._servers.append(
                    await asyncio.start_server(
                        self._accept,
                        LOOPBACK6,
                        self.port,
                        reuse_address=True,
                        family=socket.AF_INET6,
                    )
                )
            except OSError:
                pass  # no IPv6 loopback here: 127.0.0.1 alone will do

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
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
        ends: list[_End] = [writer.transport]
        self._pipes[task] = ends
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # A callback is a small request and a small response: Nagle would only add delay.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self.relay:
                await self._forward(reader, writer, ends)
            if self.relay:
                await self._relay(reader, writer, ends)
        finally:
            del self._pipes[task]
            writer.close()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ends: list[_End]
    ) -> None:
        try:
            remote_reader, remote_writer = await self._conn.open_connection(
                self.remote_host, self.port
            )
        except asyncssh.ChannelOpenError as exc:
            if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                self.relay = True
                self._on_relay(self.port, exc.reason)
            else:
                self._on_error(self.port, exc)
            return
        except (asyncssh.Error, OSError):
            return
        ends.append(remote_writer)
        await _both_ways(reader, writer, remote_reader, remote_writer)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ends: list[_End]
    ) -> None:
        """The same bytes through a short-lived exec channel that connects on the target."""
        try:
            proc = await self._conn.create_process(
                remote.relay_command(self.remote_host, self.port), encoding=None
            )
        except (asyncssh.Error, OSError):
            return
        ends.append(proc)
        await _both_ways(reader, writer, proc.stdout, proc.stdin)


async def _both_ways(
    reader: _Reader, writer: _Writer, remote_reader: _Reader, remote_writer: _Writer
) -> None:
    try:
        # Either direction may fail when the other side hangs up; both simply end.
        await asyncio.gather(
            _pipe(reader, remote_writer), _pipe(remote_reader, writer), return_exceptions=True
        )
    finally:
        remote_writer.close()


async def _pipe(reader: _Reader, writer: _Writer) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
