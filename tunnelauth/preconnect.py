"""Connect to the first hop while Python is still importing asyncssh.

A login spends about 0.2 s importing asyncssh and cryptography before it can send a packet.
The first hop's TCP handshake, its sshd's start-up and the version exchange need none of that,
so a thread does them meanwhile: it connects, sends our version line, and hands the socket to
ssh.connect_hop, which then finds the server's version and key-exchange offer already waiting.
That takes two round trips off the critical path (0.3 s at 150 ms).

Only when the first hop is plain to see without asyncssh: Host blocks with HostName, Port,
ProxyJump, in ~/.ssh/config and the system file with their Includes. A config with Match,
ProxyCommand or %-tokens, or an -o that changes where the connection goes, gets no head start. ssh.connect_hop uses the socket only if the
real evaluation (asyncssh's) names the same host and port; otherwise it is closed unused, so a
wrong guess costs one idle TCP connection to a host from the user's own command or config.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import threading
from concurrent.futures import Future
from pathlib import Path

from tunnelauth import __version__, _internals
from tunnelauth.destination import (
    DEFAULT_PORT,
    OPTION_KEYS,
    Endpoint,
    SshSettings,
    check_option,
    parse_jumps,
)
from tunnelauth.errors import UsageError

# Every connection announces this version (asyncssh's client_version), so the line sent here
# is byte for byte the one asyncssh hashes into the key exchange.
CLIENT_VERSION = f"tunnelauth_{__version__}"
BANNER = f"SSH-2.0-{CLIENT_VERSION}\r\n".encode()
_GIVE_UP = 120.0  # the caller's own ConnectTimeout governs; this only bounds the thread
_MAX_DEPTH = 16
_WHERE = ("HostName", "Port", "ProxyJump", "ProxyCommand")
_UNSURE = {"match", "canonicalizehostname", "proxycommand"}
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
_CHECKED = {key.lower(): key for key in OPTION_KEYS if key != "HostName"}  # HostName: "%" is ours


class _Attempt:
    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.result: Future[socket.socket] = Future()
        # Running from the start: a waiter that gives up (asyncio.wrap_future cancels what it
        # wraps) cannot cancel it, so the thread can always settle it and it never raises
        # CancelledError at whoever looks later.
        self.result.set_running_or_notify_cancel()
        self._lock = threading.Lock()
        self._abandoned = False
        threading.Thread(target=self._connect, name="tunnelauth-preconnect", daemon=True).start()

    def _connect(self) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=_GIVE_UP)
        except OSError as exc:
            self.result.set_exception(exc)
            return
        except UnicodeError:  # the idna codec: a label longer than 63 characters, or empty
            self.result.set_exception(
                OSError(
                    "not a host name that can be looked up (a dot-separated part is empty or "
                    "longer than 63 characters)"
                )
            )
            return
        except Exception as exc:  # noqa: BLE001 - whatever it is, the real connect reports it
            self.result.set_exception(OSError(f"{type(exc).__name__}: {exc}"))
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(BANNER)
        except OSError as exc:
            sock.close()
            self.result.set_exception(exc)
            return
        with self._lock:
            if self._abandoned:
                sock.close()
                self.result.set_exception(OSError("the head-start connection was not needed"))
            else:
                self.result.set_result(sock)

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            if self.result.done() and self.result.exception() is None:
                self.result.result().close()


_pending: _Attempt | None = None


def start(destination: Endpoint, jumps: tuple[Endpoint, ...] | None, settings: SshSettings) -> None:
    """Begin connecting to the first hop, if it can be known without asyncssh."""
    global _pending
    discard()
    address = first_hop(destination, jumps, settings)
    if address is not None:
        _pending = _Attempt(*address)


async def take(host: str, port: int) -> socket.socket | None:
    """The head-start connection, if one was started for exactly host:port (any other is
    closed); raises the OSError or ValueError (UnicodeError) its connect raised, as a connect
    of our own would have, so the caller's one translation names it."""
    import asyncio

    global _pending
    attempt, _pending = _pending, None
    if attempt is None:
        return None
    if attempt.address != (host, port) or not _internals.usable("version_sent_early"):
        attempt.abandon()
        return None
    try:
        return await asyncio.wrap_future(attempt.result)
    except BaseException:  # failed, timed out or cancelled: a socket connected later is closed
        attempt.abandon()
        raise


def discard() -> None:
    """Close a head-start connection nobody took. Never raises."""
    global _pending
    if _pending is not None:
        _pending.abandon()
        _pending = None


# -- where the first hop is, read from the ssh config the way OpenSSH does (first value wins) ----


def first_hop(
    destination: Endpoint, jumps: tuple[Endpoint, ...] | None, settings: SshSettings
) -> tuple[str, int] | None:
    """The host and port of ssh.plan()'s first hop, when plain to see; else None."""
    if any(key in settings.options for key in _WHERE):
        return None
    blocks = _read(settings)
    if blocks is None:
        return None
    endpoint, final = (jumps[0], False) if jumps else (destination, True)
    direct = jumps == ()  # -J none: the destination itself, whatever the config says
    for _ in range(_MAX_DEPTH):
        values = _lookup(blocks, endpoint.host)
        jump = values.get("proxyjump", "none")
        if jump.lower() != "none" and not direct:
            try:
                endpoint, final = parse_jumps(jump)[0], False
            except (UsageError, IndexError):
                return None
            continue
        host = values.get("hostname", endpoint.host)
        port_text = str(
            endpoint.port or (settings.port if final else None) or values.get("port", DEFAULT_PORT)
        )
        if "%" in host or not port_text.isdigit():
            return None
        return host, int(port_text)
    return None


def _read(settings: SshSettings) -> list[tuple[list[str], dict[str, str]]] | None:
    """The config's Host blocks: (patterns, first value of each keyword). None if unsure.

    The files ssh.plan() reads: -F alone, else ~/.ssh/config then /etc/ssh/ssh_config, with
    their Includes (plain paths and globs; a %-token or ~user makes it unsure)."""
    if settings.config_file is not None:
        paths = [settings.config_file]
    else:
        paths = [
            p for p in (Path("~/.ssh/config").expanduser(), SYSTEM_CONFIG) if os.access(p, os.R_OK)
        ]
    blocks: list[tuple[list[str], dict[str, str]]] = [(["*"], {})]
    for path in paths:
        if not _parse(path, blocks, 0):
            return None
    return blocks


def _parse(path: Path, blocks: list[tuple[list[str], dict[str, str]]], depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"(\w+)\s*(?:=\s*|\s+)(.*)", line)
        if not match:
            return False
        key, value = match.group(1).lower(), match.group(2).strip()
        if key in _UNSURE:
            return False
        if key == "include":
            for included in _included(value):
                if included is None or not _parse(included, blocks, depth + 1):
                    return False
            blocks.append((["*"], {}))  # asyncssh matches every host again after an Include
            continue
        if key == "host":
            if "/" in value:  # a CIDR pattern: asyncssh matches it against the address
                return False
            blocks.append((value.split(), {}))
            continue
        try:
            words = shlex.split(value, comments=True)
            value = " ".join(words)
            if key in _CHECKED:
                # A value ssh.plan() will refuse: no connection before that error.
                check_option(_CHECKED[key], value)
        except (ValueError, UsageError):
            return False
        blocks[-1][1].setdefault(key, value)
    return True


def _included(value: str) -> list[Path | None]:
    """The files of an Include line, as asyncssh finds them; [None] when unsure."""
    import glob

    found: list[Path | None] = []
    try:
        patterns = shlex.split(value)
    except ValueError:
        return [None]
    for written in patterns:
        if "%" in written or (written.startswith("~") and not written.startswith("~/")):
            return [None]
        pattern = os.path.expanduser(written)
        if not os.path.isabs(pattern):
            pattern = str(Path("~/.ssh").expanduser() / pattern)  # asyncssh's base, every file
        found.extend(Path(p) for p in glob.glob(pattern) if os.path.isfile(p))
    return found


def _lookup(blocks: list[tuple[list[str], dict[str, str]]], host: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for patterns, block in blocks:
        if _matches(patterns, host):
            for key, value in block.items():
                values.setdefault(key, value)
    return values


def _matches(patterns: list[str], host: str) -> bool:
    """asyncssh's Host matching: * and ?, case as written, ! excludes."""
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lstrip("!")
        )
        if re.fullmatch(regex, host):
            if negated:
                return False
            hit = True
    return hit
