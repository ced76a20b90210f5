"""The narrow interface between the login policies (flow) and an SSH connection.

Two transports implement it: asyncssh (ssh.py, the default) and the user's own OpenSSH
(openssh.py, `--ssh openssh`). The policies only ever see these four operations: open a
channel to a port on the target's loopback, start the remote process, run a short command,
and close; plus which hop dropped when a connection is lost.
"""

from __future__ import annotations

import os
from typing import Protocol

from tunnelauth.errors import (  # what the interface raises, from the one exception tree
    ChannelFailed,
    ChannelRefused,
    ConnectionLost,
    ForwardingRefused,
    StreamLost,
)

__all__ = [
    "ChannelFailed",
    "ChannelRefused",
    "Connection",
    "ConnectionLost",
    "ForwardingRefused",
    "Reader",
    "RemoteProcess",
    "StreamLost",
    "Writer",
    "choose",
]

TRANSPORTS = ("asyncssh", "openssh")
ENV_VAR = "TUNNELAUTH_SSH"


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...


class RemoteProcess(Protocol):
    """A command running on the target: its three streams, and its end."""

    @property
    def stdin(self) -> Writer: ...
    @property
    def stdout(self) -> Reader: ...
    @property
    def stderr(self) -> Reader: ...
    async def wait_closed(self) -> None: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """An authenticated path to the destination, through every hop."""

    @property
    def destination(self) -> str: ...

    async def open_channel(self, host: str, port: int) -> tuple[Reader, Writer]:
        """A TCP connection from the target to host:port (a loopback address of the target).
        Raises ForwardingRefused or ChannelRefused, or ConnectionLost."""
        ...

    async def start(self, command: str, first: bytes = b"") -> RemoteProcess:
        """Start `command` through the remote login shell, with pipes (no terminal); `first`
        is its first stdin, sent as early as the transport can (behind the exec request)."""
        ...

    async def run(self, command: str) -> str:
        """Run a short command to its end; its stdout (empty when it failed)."""
        ...

    def dropped(self) -> str | None:
        """Where the path broke (a hop's name), or None while it is up."""
        ...

    async def close(self) -> None: ...


def choose(option: str | None) -> str:
    """The transport from --ssh, else $TUNNELAUTH_SSH, else asyncssh."""
    from tunnelauth.errors import UsageError

    value = (option or os.environ.get(ENV_VAR) or "asyncssh").strip().lower()
    if value not in TRANSPORTS:
        where = "--ssh" if option else ENV_VAR
        raise UsageError(f"{where} {value!r} is not one of: {', '.join(TRANSPORTS)}")
    return value
