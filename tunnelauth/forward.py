"""Local port forwards over the connection (transport.Connection), bound to loopback only.

asyncssh's own forward_local_port hides a refused channel as a bare EOF; forwarding each
accepted connection ourselves lets us say *why* a callback did not get through, and fall
back to a relay through an exec channel when the target's sshd forbids forwarding. Forwards
is the set of them a login keeps, with what the target told us about its listeners.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Protocol

from tunnelauth import remote
from tunnelauth.errors import TunnelauthError
from tunnelauth.localport import LOOPBACK, busy_error
from tunnelauth.transport import (
    ChannelRefused,
    Connection,
    ForwardingRefused,
    Reader,
    RemoteProcess,
    Writer,
)

CHUNK = 65536
LOOPBACK6 = "::1"

_Reader = asyncio.StreamReader | Reader
_Writer = asyncio.StreamWriter | Writer


class _Closable(Protocol):
    def close(self) -> None: ...


_End = asyncio.BaseTransport | _Closable | RemoteProcess


class Forward:
    """127.0.0.1:port on the laptop -> the same port on the target's loopback (same number:
    the provider checks redirect_uri, so a login's port is never remapped; the doctor's test
    forward passes local_port=0 and reads `local_port` after start)."""

    def __init__(
        self,
        conn: Connection,
        port: int,
        on_error: Callable[[int, ChannelRefused], None],
        on_relay: Callable[[int, str], None] = lambda port, why: None,
        *,
        remote_host: str = LOOPBACK,
        also_ipv6: bool = False,
        local_port: int | None = None,
    ) -> None:
        self.port = port
        self.local_port = port if local_port is None else local_port
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
                    self._accept,
                    LOOPBACK,
                    self.local_port,
                    reuse_address=True,
                    family=socket.AF_INET,
                )
            )
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise busy_error(self.local_port) from exc
            raise
        self.local_port = self._servers[0].sockets[0].getsockname()[1]
        if self._also_ipv6:
            # Browsers differ in which of localhost's addresses they try first.
            try:
                self._servers.append(
                    await asyncio.start_server(
                        self._accept,
                        LOOPBACK6,
                        self.local_port,
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
            remote_reader, remote_writer = await self._conn.open_channel(
                self.remote_host, self.port
            )
        except ForwardingRefused as exc:
            self.relay = True
            self._on_relay(self.port, exc.reason)
            return
        except ChannelRefused as exc:
            self._on_error(self.port, exc)
            return
        except (TunnelauthError, OSError):
            return
        ends.append(remote_writer)
        await _both_ways(reader, writer, remote_reader, remote_writer)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ends: list[_End]
    ) -> None:
        """The same bytes through a short-lived exec channel that connects on the target."""
        try:
            proc = await self._conn.start(remote.relay_command(self.remote_host, self.port))
        except (TunnelauthError, OSError):
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


class Forwards:
    """The forwards of one login, by port, and what the target said about its listeners."""

    def __init__(
        self,
        conn: Connection,
        on_error: Callable[[int, ChannelRefused], None],
        on_relay: Callable[[int, str], None],
    ) -> None:
        self._conn = conn
        self._on_error = on_error
        self._on_relay = on_relay
        self.by_port: dict[int, Forward] = {}
        self.listening: set[int] = set()  # ports the target said something LISTENs on
        self.ipv6_only: set[int] = set()  # ports the target listens on at ::1 only

    def __contains__(self, port: object) -> bool:
        return port in self.by_port

    def __bool__(self) -> bool:
        return bool(self.by_port)

    def ports(self) -> list[int]:
        return sorted(self.by_port)

    def listens(self, port: int, address: str = "") -> None:
        """The target listens on port (at address, when the supervisor saw where)."""
        self.listening.add(port)
        if address == LOOPBACK6:
            # It listens on IPv6 loopback only: the forward must connect there.
            self.ipv6_only.add(port)
            if port in self.by_port:
                self.by_port[port].remote_host = LOOPBACK6

    async def add(self, port: int, also_ipv6: bool = False) -> Forward:
        forward = Forward(self._conn, port, self._on_error, self._on_relay, also_ipv6=also_ipv6)
        if port in self.ipv6_only:  # the supervisor saw the listener before the URL
            forward.remote_host = LOOPBACK6
        await forward.start()
        self.by_port[port] = forward
        return forward

    async def close(self, port: int) -> None:
        await self.by_port.pop(port).close()

    async def close_all(self) -> None:
        for port in list(self.by_port):
            await self.close(port)
