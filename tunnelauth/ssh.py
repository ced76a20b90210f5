"""The SSH edge: destinations, ~/.ssh/config, host-key policy, hop-by-hop connect.

The only module that touches asyncssh's connection API; it translates asyncssh and
OS errors into tunnelauth's error tree, naming the hop that failed.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from tunnelauth import _internals, handshake, preconnect
from tunnelauth._asyncssh import asyncssh
from asyncssh.config import SSHClientConfig  # noqa: I001 - after _asyncssh
from tunnelauth.destination import (
    DEFAULT_PORT,
    PER_HOP,
    Endpoint,
    SshSettings,
    check_login,
    check_option,
    parse_jumps,
    parse_port,
)
from tunnelauth._compat import TIMEOUTS, timeout
from tunnelauth.errors import (
    AuthFailed,
    ConnectFailed,
    HostKeyError,
    TunnelauthError,
    UsageError,
)

CONNECT_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 5.0
KEEPALIVE_COUNT_MAX = 3
MAX_HOPS = 16
# GCM first: it is markedly faster than chacha20 in asyncssh (AES-NI through OpenSSL).
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)

@dataclass(frozen=True)
class Hop:
    name: str  # what the user called it, for messages
    host: str
    port: int
    user: str
    identities: tuple[str, ...]
    identities_only: bool
    known_hosts: tuple[Path, ...]
    accept_new: bool
    proxy_command: str | None
    connect_timeout: float
    keepalive_interval: float
    keepalive_count_max: int

    def __str__(self) -> str:
        where = f"{self.user}@{self.host}" + (f":{self.port}" if self.port != DEFAULT_PORT else "")
        return where if self.name in (self.host, where) else f"{self.name} ({where})"


class _Config(SSHClientConfig):
    # asyncssh does not keep StrictHostKeyChecking; we want to honour it from the file too.
    _handlers = _internals.config_handlers({"stricthostkeychecking": ("StrictHostKeyChecking", "_set_string")})


def _config_paths(settings: SshSettings) -> list[Path]:
    if settings.config_file is not None:
        if not settings.config_file.is_file():
            raise UsageError(f"-F {settings.config_file}: no such file")
        return [settings.config_file]
    default = Path("~/.ssh/config").expanduser()
    return [default] if os.access(default, os.R_OK) else []


def _load(endpoint: Endpoint, settings: SshSettings, user: str | None, port: int | None,
          opts: Mapping[str, str]) -> dict[str, object]:
    """Evaluate the ssh config for one hop, with -o options in front of it.

    The config keeps the first value it sees, as OpenSSH does, so -o options written first
    win over the file, and `Match host`, `%h` and friends see them too.
    """
    paths = _config_paths(settings)
    stamp = tuple((str(p), *_stat(p)) for p in paths)
    local = (getpass.getuser(), os.environ.get("HOME", ""))  # what %u, %d and Match localuser see
    return dict(_evaluate(endpoint.host, stamp, local, user, port, tuple(opts.items())))


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=256)
def _evaluate(host: str, stamp: tuple[tuple[object, ...], ...], local: tuple[str, str], user: str | None,
              port: int | None, opts: tuple[tuple[str, str], ...]) -> dict[str, object]:
    # Cached: a fleet's destinations share their jump hosts, whose evaluation is the same each
    # time (the files' mtimes and sizes are in the key, should one change meanwhile).
    paths = [Path(str(entry[0])) for entry in stamp]
    args = (local[0], user if user else (), host, port if port else ())
    try:
        with tempfile.TemporaryDirectory(prefix="tunnelauth-") as tmp:
            if opts:
                override = Path(tmp) / "options"
                override.write_text("".join(f"{key} {value}\n" for key, value in opts))
                paths = [override, *paths]
            config = _internals.load_config(_Config, paths, False, *args)
            if config.has_match_final():
                config = _internals.load_config(_Config, paths, True, *args)
    except (OSError, asyncssh.Error, ValueError) as exc:
        raise UsageError(f"ssh config: {exc}") from exc
    return _internals.config_options(config)


def _strict(value: str, accept_new: bool) -> bool:
    value = value.strip().lower()
    if value in ("yes", "ask"):
        return accept_new
    if value in ("accept-new", "no", "off"):
        # "no" is treated as accept-new: a changed key is refused in every mode.
        return True
    raise UsageError(f"StrictHostKeyChecking {value!r} is not yes, accept-new or no")


def _number(value: object, what: str) -> float:
    if value is None:
        return 0.0
    try:
        number = float(str(value))
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{what} {value!r} must be a number of seconds, 0 or more")
    return number


def _hop(endpoint: Endpoint, settings: SshSettings, *, final: bool) -> tuple[Hop, str | None]:
    opts = {k: v for k, v in settings.options.items() if final or k in PER_HOP}
    for key, value in opts.items():
        check_option(key, value)
    user = endpoint.user or (settings.login if final else None)
    port = endpoint.port or (settings.port if final else None)
    cfg = _load(endpoint, settings, user, port, opts)
    host = str(cfg.get("Hostname") or endpoint.host)
    user = check_login(str(cfg.get("User") or getpass.getuser()), "user")
    port = parse_port(str(cfg.get("Port") or DEFAULT_PORT), f"port of {endpoint}")
    identities = [*settings.identities, *(str(p) for p in (cfg.get("IdentityFile") or []))]  # type: ignore[union-attr]
    identities = [str(Path(p).expanduser()) for p in identities]
    known_files = [str(p) for p in (cfg.get("UserKnownHostsFile") or ["~/.ssh/known_hosts"])]  # type: ignore[union-attr]
    proxy = str(cfg["ProxyCommand"]) if cfg.get("ProxyCommand") else None
    jump = str(cfg["ProxyJump"]) if cfg.get("ProxyJump") else None
    hop = Hop(
        name=str(endpoint),
        host=host,
        port=port,
        user=user,
        identities=tuple(dict.fromkeys(identities)),
        identities_only=bool(cfg.get("IdentitiesOnly")),
        known_hosts=tuple(Path(f).expanduser() for f in known_files),
        accept_new=_strict(str(cfg.get("StrictHostKeyChecking") or "yes"), settings.accept_new),
        proxy_command=proxy,
        connect_timeout=_number(cfg.get("ConnectTimeout"), "ConnectTimeout") or CONNECT_TIMEOUT,
        keepalive_interval=_number(cfg.get("ServerAliveInterval"), "ServerAliveInterval") or KEEPALIVE_INTERVAL,
        keepalive_count_max=int(_number(cfg.get("ServerAliveCountMax"), "ServerAliveCountMax")) or KEEPALIVE_COUNT_MAX,
    )
    return hop, jump


def plan(destination: Endpoint, jumps: tuple[Endpoint, ...] | None, settings: SshSettings) -> list[Hop]:
    """The hops to connect, first to last. `jumps` from -J overrides the config's ProxyJump."""

    def chain(endpoint: Endpoint, via: tuple[Endpoint, ...] | None, final: bool, depth: int) -> list[Hop]:
        if depth > MAX_HOPS:
            raise UsageError(f"ProxyJump chain through {endpoint} is longer than {MAX_HOPS} hops (a loop?)")
        hop, config_jump = _hop(endpoint, settings, final=final)
        if via is None:
            via = parse_jumps(config_jump) if config_jump else ()
        if not via:
            return [hop]
        head = chain(via[-1], via[:-1] or None, False, depth + 1)
        return [*head, hop]

    return chain(destination, jumps, True, 0)


def _known_hosts(hop: Hop) -> asyncssh.SSHKnownHosts:
    text = ""
    for path in (*hop.known_hosts, Path("/etc/ssh/ssh_known_hosts")):
        try:
            text += path.read_text() + "\n"
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise HostKeyError(f"cannot read known hosts file {path}: {exc}") from exc
    try:
        return asyncssh.import_known_hosts(text)
    except ValueError:
        # Like OpenSSH, a line it cannot read is skipped rather than fatal.
        return asyncssh.import_known_hosts("".join(line + "\n" for line in text.splitlines() if _readable(line)))


def _readable(line: str) -> bool:
    try:
        asyncssh.import_known_hosts(line)
    except ValueError:
        return False
    return True


class _HostKeyPolicy(asyncssh.SSHClient):
    """Sees every key that known_hosts did not vouch for, so the error can name it; and starts
    each connection's auth early (handshake.py)."""

    def __init__(self, hop: Hop, known: asyncssh.SSHKnownHosts) -> None:
        self.hop = hop
        self.known = known
        self.offered: asyncssh.SSHKey | None = None
        self.changed = False
        self.banner_sent = False  # the connection came from preconnect, version line and all

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        if self.banner_sent:
            handshake.version_already_sent(conn)
        handshake.pipeline_auth(conn)
        handshake.skip_cbc_padding(conn)

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = key
        matched = self.known.match(host, addr, port if port != DEFAULT_PORT else None)
        self.changed = bool(matched[0] or matched[1])
        if self.changed or not self.hop.accept_new:
            return False
        _remember(self.hop, key)
        return True


def _remember(hop: Hop, key: asyncssh.SSHKey) -> None:
    path = hop.known_hosts[0]
    name = hop.host if hop.port == DEFAULT_PORT else f"[{hop.host}]:{hop.port}"
    algo, blob = key.export_public_key("openssh").decode().split()[:2]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        lead = b""
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            lead = b"" if handle.read(1) == b"\n" else b"\n"  # never glue onto a last line
        handle.write(lead + f"{name} {algo} {blob}\n".encode())


def _host_key_error(hop: Hop, policy: _HostKeyPolicy) -> HostKeyError:
    key = policy.offered
    fingerprint = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}" if key else "unknown key"
    if policy.changed:
        return HostKeyError(
            f"HOST KEY CHANGED for {hop}: it now offers {fingerprint}, which is not the key in "
            f"{hop.known_hosts[0]}; refusing to connect",
            hint=f"if the change is expected, remove the old key with: ssh-keygen -R {_kh_name(hop)}",
        )
    return HostKeyError(
        f"host key of {hop} is not known: {fingerprint}",
        hint=f"check the fingerprint, then rerun with --accept-new (or: ssh-keyscan -p {hop.port} "
        f"{hop.host} >> {hop.known_hosts[0]})",
    )


def _kh_name(hop: Hop) -> str:
    return hop.host if hop.port == DEFAULT_PORT else f"'[{hop.host}]:{hop.port}'"


def _client_keys(hop: Hop) -> object:
    if not hop.identities:
        return ()
    existing = [p for p in hop.identities if os.path.exists(p)]
    if not existing:
        return () if not hop.identities_only else []
    return existing


def _translate(hop: Hop, exc: BaseException, policy: _HostKeyPolicy) -> TunnelauthError:
    if isinstance(exc, asyncssh.HostKeyNotVerifiable) or (
        isinstance(exc, asyncssh.DisconnectError) and policy.offered is not None
    ):
        return _host_key_error(hop, policy)
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthFailed(f"{hop} refused authentication as {hop.user!r}",
                          hint="check the key (-i) and the user (-l or user@host)")
    if isinstance(exc, TIMEOUTS):
        return ConnectFailed(f"cannot reach {hop}: no answer within {hop.connect_timeout:g} s")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return ConnectFailed(f"cannot reach {hop} from the previous hop: {exc.reason}")
    if isinstance(exc, asyncssh.Error):
        return ConnectFailed(f"cannot connect to {hop}: {exc.reason}")
    if isinstance(exc, OSError):
        return ConnectFailed(f"cannot reach {hop}: {exc.strerror or exc}")
    return ConnectFailed(f"cannot connect to {hop}: {exc}")


@dataclass
class Chain:
    """The connections of a hop-by-hop login, first hop first."""

    hops: list[Hop]
    conns: list[asyncssh.SSHClientConnection]

    @property
    def last(self) -> asyncssh.SSHClientConnection:
        return self.conns[-1]

    def dropped(self) -> Hop | None:
        """The first hop whose connection is gone: where a chain broke."""
        for hop, conn in zip(self.hops, self.conns):
            if conn.is_closed():
                return hop
        return None


async def connect(
    hops: list[Hop],
    stack: AsyncExitStack,
    on_hop: Callable[[Hop], None] = lambda hop: None,
) -> Chain:
    """Connect hop by hop, each through the previous one, all with the same policy.

    Every connection is closed by `stack`, last hop first.
    """
    chain = Chain(hops=list(hops), conns=[])
    conn: asyncssh.SSHClientConnection | None = None
    for hop in hops:
        on_hop(hop)
        conn = await connect_hop(hop, conn)
        stack.push_async_callback(_close, conn)
        chain.conns.append(conn)
    return chain


async def _close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    try:
        async with timeout(2):
            await conn.wait_closed()
    except TIMEOUTS:
        conn.abort()


# -- shared connections ------------------------------------------------------------------------


async def connect_hop(hop: Hop, via: asyncssh.SSHClientConnection | None) -> asyncssh.SSHClientConnection:
    """One hop, through `via` (None: directly), with connect()'s policy and error translation.

    The caller owns the connection and must close it.
    """
    policy = _HostKeyPolicy(hop, _known_hosts(hop))
    try:
        async with timeout(hop.connect_timeout):
            sock = None
            if via is None and hop.proxy_command is None:
                sock = await preconnect.take(hop.host, hop.port)
            policy.banner_sent = sock is not None
            return await asyncssh.connect(
                hop.host,
                hop.port,
                sock=sock,
                client_version=preconnect.CLIENT_VERSION,
                tunnel=via,
                proxy_command=hop.proxy_command if via is None else None,
                config=None,
                username=hop.user,
                known_hosts=policy.known,
                client_factory=lambda: policy,
                client_keys=_client_keys(hop),
                agent_path=None if hop.identities_only else (),
                password_auth=False,
                kbdint_auth=False,
                keepalive_interval=hop.keepalive_interval,
                keepalive_count_max=hop.keepalive_count_max,
                encryption_algs=CIPHERS,
                connect_timeout=hop.connect_timeout,
            )
    except (OSError, asyncssh.Error, *TIMEOUTS, ValueError) as exc:
        raise _translate(hop, exc, policy) from exc


class SharedConnections:
    """One connection per hop-chain prefix, so destinations behind the same jump hosts share
    them (a fleet check logs in to a bastion once, not once per target).

    Keyed by the tuple of Hops up to and including the hop; a failed connect is remembered
    too, so every destination behind a dead bastion gets the same error at once.
    """

    def __init__(self) -> None:
        self._tasks: dict[tuple[Hop, ...], asyncio.Task[asyncssh.SSHClientConnection]] = {}

    async def get(self, chain: tuple[Hop, ...]) -> tuple[asyncssh.SSHClientConnection, bool]:
        """The connection to chain[-1] through the others; True when it already existed
        (or was being opened) for another caller."""
        task = self._tasks.get(chain)
        shared = task is not None
        if task is None:
            task = asyncio.ensure_future(self._open(chain))
            self._tasks[chain] = task
        # shield: one caller giving up must not cancel a connect other callers wait for.
        return await asyncio.shield(task), shared

    async def _open(self, chain: tuple[Hop, ...]) -> asyncssh.SSHClientConnection:
        via = (await self.get(chain[:-1]))[0] if len(chain) > 1 else None
        return await connect_hop(chain[-1], via)

    async def close(self) -> None:
        """Close every connection, deepest first; cancel connects still under way."""
        for chain in sorted(self._tasks, key=len, reverse=True):
            task = self._tasks.pop(chain)
            if not task.done():
                task.cancel()
            # gather also retrieves a failed connect's error, so asyncio does not log it.
            (conn,) = await asyncio.gather(task, return_exceptions=True)
            if not isinstance(conn, BaseException):
                await _close(conn)


# -- errors on an open connection --------------------------------------------------------------
# asyncssh's errors after connecting (a forward's channel, an exec channel, a dropped link) are
# translated here too: forward, flow and the doctor catch CHANNEL_ERRORS and ask channel_error
# what happened, instead of reading asyncssh's error codes themselves.

CHANNEL_ERRORS: tuple[type[BaseException], ...] = (asyncssh.Error, OSError)


def error_reason(exc: BaseException) -> str:
    """asyncssh's or the system's own words for `exc`, on one line."""
    if isinstance(exc, asyncssh.Error):
        text = exc.reason
    elif isinstance(exc, OSError):
        text = exc.strerror or str(exc)
    else:
        text = str(exc)
    return " ".join(str(text or type(exc).__name__).split())


def channel_error(exc: BaseException, what: str) -> TunnelauthError:
    """`exc`, raised while opening or using `what` ("forwarding to 127.0.0.1:8080"), as a
    tunnelauth error: ForwardingRefused when the target's sshd forbids forwarding, ChannelRefused
    for any other refused channel, ConnectionLost for the rest."""
    from tunnelauth.errors import ChannelRefused, ConnectionLost, ForwardingRefused

    reason = error_reason(exc)
    if isinstance(exc, asyncssh.ChannelOpenError):
        if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
            return ForwardingRefused(f"{what}: forbidden by the target's sshd ({reason})", reason=reason)
        return ChannelRefused(f"{what}: refused by the target ({reason})", reason=reason)
    return ConnectionLost(f"{what}: {reason}")


# -- the transport.Connection over asyncssh ------------------------------------------------------
# Everything below implements tunnelauth/transport.py's narrow interface, so that flow, forward
# and the supervisor channel never see asyncssh: its errors are translated here, once.


def _stream_error(exc: BaseException) -> TunnelauthError:
    from tunnelauth.errors import ChannelFailed, StreamLost

    if isinstance(exc, asyncssh.ConnectionLost):
        return StreamLost(error_reason(exc))
    return ChannelFailed(error_reason(exc) if isinstance(exc, asyncssh.Error) else "")


class _Reader:
    def __init__(self, reader: asyncssh.SSHReader[bytes]) -> None:
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._reader.read(n)
        except (asyncssh.Error, OSError) as exc:
            raise _stream_error(exc) from exc


class _Writer:
    def __init__(self, writer: asyncssh.SSHWriter[bytes]) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
        except (asyncssh.Error, OSError) as exc:
            raise _stream_error(exc) from exc

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (asyncssh.Error, OSError) as exc:
            raise _stream_error(exc) from exc

    def can_write_eof(self) -> bool:
        return self._writer.can_write_eof()

    def write_eof(self) -> None:
        try:
            self._writer.write_eof()
        except (asyncssh.Error, OSError) as exc:
            raise _stream_error(exc) from exc

    def close(self) -> None:
        self._writer.close()


class _Process:
    """An exec channel's process with tunnelauth's errors (transport.RemoteProcess)."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self._proc = proc
        self.stdin = _Writer(proc.stdin)
        self.stdout = _Reader(proc.stdout)
        self.stderr = _Reader(proc.stderr)

    async def wait_closed(self) -> None:
        try:
            await self._proc.wait_closed()
        except (asyncssh.Error, OSError) as exc:
            raise _stream_error(exc) from exc

    def close(self) -> None:
        self._proc.close()


class AsyncsshConnection:
    """transport.Connection over a Chain: channels and processes on its last hop."""

    def __init__(self, chain: Chain, *, name: str | None = None, owned: bool = True) -> None:
        self.chain = chain
        self._conn = chain.last
        self._name = name or str(chain.hops[-1])
        self._owned = owned

    @classmethod
    def over(cls, conn: asyncssh.SSHClientConnection, hop: Hop | None, name: str) -> AsyncsshConnection:
        """One connection that someone else owns and closes (the doctor's shared ones)."""
        return cls(Chain(hops=[hop] if hop else [], conns=[conn]), name=name, owned=False)

    @property
    def destination(self) -> str:
        return self._name

    async def open_channel(self, host: str, port: int) -> tuple[_Reader, _Writer]:
        try:
            reader, writer = await self._conn.open_connection(host, port)
        except asyncssh.ChannelOpenError as exc:
            raise channel_error(exc, f"forwarding to {host}:{port}") from exc
        except (asyncssh.Error, OSError) as exc:
            raise _stream_error(exc) from exc
        return _Reader(reader), _Writer(writer)

    async def start(self, command: str) -> _Process:
        try:
            return _Process(await self._conn.create_process(command, encoding=None))
        except (asyncssh.Error, OSError) as exc:
            raise _stream_error(exc) from exc

    async def run(self, command: str) -> str:
        try:
            done = await self._conn.run(command, check=False)
        except (asyncssh.Error, OSError):
            return ""
        return str(done.stdout or "") if done.exit_status == 0 else ""

    def dropped(self) -> str | None:
        if not self.chain.hops:
            return self._name if self._conn.is_closed() else None
        hop = self.chain.dropped()
        return str(hop) if hop is not None else None

    async def close(self) -> None:
        if self._owned:
            for conn in reversed(self.chain.conns):
                await _close(conn)
