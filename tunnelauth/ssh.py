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
import socket
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from tunnelauth import _internals, handshake, preconnect
from tunnelauth._asyncssh import asyncssh

# isort: split
# After _asyncssh, which imports asyncssh without its slow library lookup.
from asyncssh.config import SSHClientConfig, SSHConfig

from tunnelauth._compat import TIMEOUTS, timeout
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
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
GLOBAL_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))
PASSWORD_TRIES = 3  # OpenSSH's NumberOfPasswordPrompts default, also for passphrases
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
    # How known_hosts names this host: HostKeyAlias as given, else host or [host]:port.
    known_name: str = ""
    global_known_hosts: tuple[Path, ...] = GLOBAL_KNOWN_HOSTS
    hash_known_hosts: bool = False
    # The whole evaluated ssh_config of this hop (asyncssh's object), handed to asyncssh so it
    # configures keys, certificates, agent, algorithms... as ssh would. Hops compare by what it
    # says (`evaluated`), so destinations behind one bastion share its connection.
    config: SSHClientConfig | None = field(default=None, repr=False, compare=False)
    evaluated: str = field(default="", repr=False)

    def __str__(self) -> str:
        where = f"{self.user}@{self.host}" + (f":{self.port}" if self.port != DEFAULT_PORT else "")
        return where if self.name in (self.host, where) else f"{self.name} ({where})"


class _Config(SSHClientConfig):
    """asyncssh's evaluation of ssh_config, with the keywords tunnelauth's host-key policy needs
    kept too, and %-tokens expanded where OpenSSH expands them."""

    def _match_expanding(self, option: str, args: list[str]) -> None:
        # OpenSSH expands %h, %n, %p, %r, %u... in `Match exec`; asyncssh runs it verbatim.
        for i, arg in enumerate(args[:-1]):
            if arg.lower() == "exec":
                saved = dict(self._tokens)
                try:
                    self._set_tokens()
                    args[i + 1] = self._expand_val(args[i + 1])
                finally:
                    self._tokens = saved
        SSHConfig._match(self, option, args)

    # asyncssh does not keep these; tunnelauth's policy reads them. Guarded (_internals): with a
    # changed table, asyncssh's own is used as it is.
    _handlers = _internals.config_handlers(
        {
            "stricthostkeychecking": ("StrictHostKeyChecking", "_set_string"),
            "hashknownhosts": ("HashKnownHosts", "_set_bool"),
            "batchmode": ("BatchMode", "_set_bool"),
            "numberofpasswordprompts": ("NumberOfPasswordPrompts", "_set_int"),
        }
    )
    if _internals.usable("config_handlers"):
        _handlers["match"] = ("Match", _match_expanding)
    _percent_expand = set(getattr(SSHClientConfig, "_percent_expand", ())) | {
        "UserKnownHostsFile",
        "GlobalKnownHostsFile",
    }


def _config_paths(settings: SshSettings) -> list[Path]:
    """Like ssh: -F alone (`-F /dev/null`: none), else ~/.ssh/config then the system file."""
    if settings.config_file is not None:
        if not os.path.exists(settings.config_file) or os.path.isdir(settings.config_file):
            raise UsageError(f"-F {settings.config_file}: no such file")
        return [settings.config_file]
    default = Path("~/.ssh/config").expanduser()
    return [p for p in (default, SYSTEM_CONFIG) if os.access(p, os.R_OK)]


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _load_config(
    endpoint: Endpoint,
    settings: SshSettings,
    user: str | None,
    port: int | None,
    opts: Mapping[str, str],
) -> _Config:
    paths = _config_paths(settings)
    stamp = tuple((str(p), *_stat(p)) for p in paths)
    local = (getpass.getuser(), os.environ.get("HOME", ""))
    return _evaluate(endpoint.host, stamp, local, user, port, tuple(opts.items()))


@functools.lru_cache(maxsize=256)
def _evaluate(
    host: str,
    stamp: tuple[tuple[object, ...], ...],
    local: tuple[str, str],
    user: str | None,
    port: int | None,
    opts: tuple[tuple[str, str], ...],
) -> _Config:
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
            config: _Config = _internals.load_config(_Config, paths, False, *args)
            if config.has_match_final():
                config = _internals.load_config(_Config, paths, True, *args)
    except (OSError, asyncssh.Error, ValueError) as exc:
        text = str(exc)
        if opts:
            text = text.replace(str(Path(tmp) / "options"), "-o")
        raise UsageError(f"ssh config: {text}") from exc
    return config


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
    config = _load_config(endpoint, settings, user, port, opts)
    cfg = _internals.config_options(config)  # the resolved values
    host = str(cfg.get("Hostname") or endpoint.host)
    user = check_login(str(cfg.get("User") or getpass.getuser()), "user")
    port = parse_port(str(cfg.get("Port") or DEFAULT_PORT), f"port of {endpoint}")
    identities = [*settings.identities, *_strings(cfg.get("IdentityFile"))]
    identities = [str(Path(p).expanduser()) for p in identities]
    user_default = ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]
    known_files = _strings(cfg.get("UserKnownHostsFile") or user_default)
    global_files = _strings(cfg.get("GlobalKnownHostsFile") or GLOBAL_KNOWN_HOSTS)
    if any(f.lower() == "none" for f in known_files):
        raise UsageError(
            f"UserKnownHostsFile none for {endpoint} would skip host-key checks",
            hint="tunnelauth always checks; name a file, or use --accept-new",
        )
    alias = str(cfg["HostKeyAlias"]) if cfg.get("HostKeyAlias") else None
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
        keepalive_interval=_number(cfg.get("ServerAliveInterval"), "ServerAliveInterval")
        or KEEPALIVE_INTERVAL,
        keepalive_count_max=int(_number(cfg.get("ServerAliveCountMax"), "ServerAliveCountMax"))
        or KEEPALIVE_COUNT_MAX,
        known_name=alias or (host if port == DEFAULT_PORT else f"[{host}]:{port}"),
        global_known_hosts=tuple(Path(f).expanduser() for f in global_files if f.lower() != "none"),
        hash_known_hosts=bool(cfg.get("HashKnownHosts")),
        config=config,
        evaluated=repr(sorted(cfg.items())),
    )
    return hop, jump


def plan(
    destination: Endpoint, jumps: tuple[Endpoint, ...] | None, settings: SshSettings
) -> list[Hop]:
    """The hops to connect, first to last. `jumps` from -J overrides the config's ProxyJump."""

    def chain(
        endpoint: Endpoint, via: tuple[Endpoint, ...] | None, final: bool, depth: int
    ) -> list[Hop]:
        if depth > MAX_HOPS:
            raise UsageError(
                f"ProxyJump chain through {endpoint} is longer than {MAX_HOPS} hops (a loop?)"
            )
        hop, config_jump = _hop(endpoint, settings, final=final)
        if via is None:
            via = parse_jumps(config_jump) if config_jump else ()
        if not via:
            return [hop]
        head = chain(via[-1], via[:-1] or None, False, depth + 1)
        return [*head, hop]

    return chain(destination, jumps, True, 0)


def _known_hosts(hop: Hop) -> asyncssh.SSHKnownHosts:
    return _import_known(_known_text((*hop.known_hosts, *hop.global_known_hosts)))


def _known_text(paths: tuple[Path, ...]) -> str:
    text = ""
    for path in paths:
        try:
            text += path.read_text() + "\n"
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise HostKeyError(f"cannot read known hosts file {path}: {exc}") from exc
    return text


def _import_known(text: str) -> asyncssh.SSHKnownHosts:
    try:
        return asyncssh.import_known_hosts(text)
    except ValueError:
        # Like OpenSSH, a line it cannot read is skipped rather than fatal.
        return asyncssh.import_known_hosts(
            "".join(line + "\n" for line in text.splitlines() if _readable(line))
        )


def _readable(line: str) -> bool:
    try:
        asyncssh.import_known_hosts(line)
    except ValueError:
        return False
    return True


def _lookup_name(hop: Hop) -> tuple[str, int | None]:
    """The name and port known_hosts is searched with: HostKeyAlias alone, as OpenSSH does."""
    if not hop.known_name or hop.known_name == _plain_name(hop):
        return hop.host, (hop.port if hop.port != DEFAULT_PORT else None)
    return hop.known_name, None


def _plain_name(hop: Hop) -> str:
    return hop.host if hop.port == DEFAULT_PORT else f"[{hop.host}]:{hop.port}"


def _known_name(hop: Hop) -> str:
    return hop.known_name or _plain_name(hop)


def _matching(known: asyncssh.SSHKnownHosts, hop: Hop) -> tuple[list, list, list]:  # type: ignore[type-arg]
    name, port = _lookup_name(hop)
    found = known.match(name, "", port)
    return list(found[0]), list(found[1]), list(found[2])


Ask = Callable[[str, bool], "str | None"]
Tell = Callable[[str], None]


class _HostKeyPolicy(asyncssh.SSHClient):
    """tunnelauth's host-key policy and the prompts of a hop's authentication; sees every key
    known_hosts did not vouch for, so the error can name it; starts each connection's auth
    early (handshake.py)."""

    def __init__(self, hop: Hop, known: asyncssh.SSHKnownHosts, prompts: _Prompts) -> None:
        self.hop = hop
        self.known = known
        self.trusted, self.cas, self.revoked = _matching(known, hop)
        self.prompts = prompts
        self.offered: asyncssh.SSHKey | None = None
        self.changed = False
        self.recorded = False
        self.cert: object = None
        self.banner_sent = False  # the connection came from preconnect, version line and all
        self.conn: asyncssh.SSHClientConnection | None = None
        self.wanted: list[str] = []  # methods the server asked for that nobody could answer
        self.partial = False
        self.keys_offered = False
        self.no_agent = False
        self.locked: list[str] = []
        self._kbdint_rounds = 0
        self._passwords = 0

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        if self.banner_sent:
            handshake.version_already_sent(conn)
        handshake.pipeline_auth(conn)
        handshake.skip_cbc_padding(conn)
        handshake.watch_host_certificate(conn, self)
        handshake.watch_keys(conn, self, self.prompts.tell)
        if self.no_agent:
            # asyncssh turns "no agent" into "" and then reads SSH_AUTH_SOCK after all.
            handshake.no_agent(conn)

    # -- host keys ------------------------------------------------------------------------

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.offered = key
        self.changed = bool(self.trusted or self.cas)
        if self.changed or not self.hop.accept_new:
            return False
        self._record(key)
        return True

    def validate_host_ca_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        # A host certificate from a CA known_hosts does not name: like OpenSSH, judge the
        # plain key inside it (and record that, not the CA, on first contact).
        cert = self.cert
        plain = getattr(cert, "key", None)
        if plain is None:
            return False
        self.offered = plain
        self.changed = bool(self.trusted or self.cas)
        if plain in self.trusted:
            return True
        if self.changed or not self.hop.accept_new:
            return False
        try:
            cert.validate(asyncssh.public_key.CERT_TYPE_HOST, host)  # type: ignore[attr-defined]
        except ValueError:
            return False
        self._record(plain)
        return True

    def _record(self, key: asyncssh.SSHKey) -> None:
        _remember(self.hop, key)
        self.recorded = True
        self.prompts.tell(
            f"Permanently added '{_known_name(self.hop)}' "
            f"({_key_type(key)}) to the list of known hosts "
            f"({self.hop.known_hosts[0]})."
        )

    # -- authentication ---------------------------------------------------------------------

    def _methods(self) -> list[str]:
        methods = getattr(self.conn, "_auth_methods", None) or []
        return [m.decode() if isinstance(m, bytes) else str(m) for m in methods]

    def _second_factor(self) -> None:
        # After an accepted key, sshd's remaining methods (AuthenticationMethods) lack publickey.
        if self.keys_offered and "publickey" not in self._methods():
            self.partial = True

    async def public_key_auth_requested(self) -> asyncssh.SSHKey | None:
        # Encrypted keys without their .pub: asked for only once every other key failed.
        while self.locked:
            path = self.locked.pop(0)
            key: asyncssh.SSHKey | None = await handshake.unlock_file(path, self.prompts)
            if key is not None:
                return key
        return None

    def kbdint_auth_requested(self) -> str | None:
        self._second_factor()
        if not self.prompts.available():
            self.wanted.append("keyboard-interactive")
            return None
        return ""

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        self._kbdint_rounds += 1
        if self._kbdint_rounds > 32:  # a server that never stops asking
            return None
        header = "\n".join(part for part in (name, instructions) if part)
        if header:
            self.prompts.tell(inert(header))
        answers = []
        for prompt, echo in prompts:
            answer = await self.prompts.ask(inert(prompt), not echo)
            if answer is None:
                self.wanted.append("keyboard-interactive")
                return None
            answers.append(answer)
        return answers

    async def password_auth_requested(self) -> str | None:
        self._second_factor()
        self._passwords += 1
        if self._passwords > self.prompts.tries:
            return None
        if not self.prompts.available():
            self.wanted.append("password")
            return None
        answer = await self.prompts.ask(f"{self.hop.user}@{self.hop.host}'s password: ", True)
        if answer is None:
            self.wanted.append("password")
        return answer


def _key_type(key: asyncssh.SSHKey) -> str:
    algorithm = key.get_algorithm()
    return {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA"}.get(
        algorithm, "ECDSA" if algorithm.startswith("ecdsa-") else algorithm.upper()
    )


def inert(text: str) -> str:
    """Remote text made safe for a terminal: no control characters but tab and newline,
    no C1, no bidi controls."""
    return "".join(
        c
        if c in "\t\n"
        or (
            c.isprintable()
            and not 0x80 <= ord(c) <= 0x9F
            and c not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
        )
        else "?"
        for c in text
    )


class _Prompts:
    """Asks a person (through the reporter's ask, in a thread) or SSH_ASKPASS, as OpenSSH would."""

    def __init__(
        self, ask: Ask | None, tell: Tell | None, tries: int = PASSWORD_TRIES, batch: bool = False
    ) -> None:
        self._ask = ask
        self.tell: Tell = tell or (lambda text: None)
        self.tries = tries
        self.batch = batch
        self.askpass = _askpass_program()
        self.missed: list[str] = []  # what could not be asked: no terminal, no askpass
        self._tty = _has_tty()

    def why_not(self) -> str:
        if self.batch:
            return "BatchMode is on, so nothing is asked"
        if self._ask is None:
            return "this command never prompts"
        return "no terminal to ask"

    def available(self) -> bool:
        if self.batch:
            return False
        return self.askpass is not None or (self._ask is not None and self._tty)

    async def ask(self, prompt: str, secret: bool) -> str | None:
        if self.batch:
            return None
        if self.askpass is not None:
            return await _in_daemon_thread(_run_askpass, self.askpass, prompt, secret)
        if self._ask is None or not self._tty:
            return None
        return await _in_daemon_thread(self._ask, prompt, secret)


async def _in_daemon_thread(fn: Callable[..., str | None], *args: object) -> str | None:
    """A blocking prompt, in a daemon thread: a prompt nobody answers must not keep tunnelauth
    alive after Ctrl-C or a timeout (asyncio.to_thread's executor would be waited for)."""
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()

    def settle(result: str | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            outcome: tuple[str | None, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # noqa: BLE001 - handed over to the awaiting task
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the login is over and its loop closed: nobody waits any more
            pass

    threading.Thread(target=work, name="tunnelauth-prompt", daemon=True).start()
    return await future


def _has_tty() -> bool:
    import sys

    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _askpass_program() -> str | None:
    """SSH_ASKPASS as OpenSSH uses it: force always; prefer when DISPLAY is set; by default
    only without a terminal and with DISPLAY set; never: not at all."""
    require = os.environ.get("SSH_ASKPASS_REQUIRE", "").lower()
    program = os.environ.get("SSH_ASKPASS") or "/usr/bin/ssh-askpass"
    display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if require == "never":
        return None
    if require == "force":
        use = True
    elif require == "prefer":
        use = display
    else:
        use = display and not _has_tty()
    return program if use and os.access(program, os.X_OK) else None


def _run_askpass(program: str, prompt: str, secret: bool) -> str | None:
    import subprocess

    env = dict(os.environ)
    if not secret:
        env["SSH_ASKPASS_PROMPT"] = "none"
    try:
        done = subprocess.run(
            [program, prompt],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            check=False,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode(errors="replace").rstrip("\r\n")


def _remember(hop: Hop, key: asyncssh.SSHKey) -> None:
    path = hop.known_hosts[0]
    name = _known_name(hop)
    if hop.hash_known_hosts:
        name = _hashed(name)
    algo, blob = key.export_public_key("openssh").decode().split()[:2]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        lead = b""
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            lead = b"" if handle.read(1) == b"\n" else b"\n"  # never glue onto a last line
        handle.write(lead + f"{name} {algo} {blob}\n".encode())


def _hashed(name: str) -> str:
    """OpenSSH's HashKnownHosts form: |1|salt|HMAC-SHA1(salt, name)."""
    import base64
    import hashlib
    import hmac

    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _where_known(hop: Hop) -> Path:
    """The known_hosts file that holds the key the host no longer offers."""
    for path in (*hop.known_hosts, *hop.global_known_hosts):
        try:
            found = _matching(_import_known(_known_text((path,))), hop)
        except HostKeyError:
            continue
        if found[0] or found[1]:
            return path
    return hop.known_hosts[0]


def _host_key_error(hop: Hop, policy: _HostKeyPolicy) -> HostKeyError:
    key = policy.offered
    fingerprint = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}" if key else "unknown key"
    if policy.changed:
        path = _where_known(hop)
        return HostKeyError(
            f"HOST KEY CHANGED for {hop}: it now offers {fingerprint}, which is not the key in "
            f"{path}; refusing to connect",
            hint="if the change is expected, remove the old key with: "
            f"ssh-keygen -R {_kh_name(hop)}"
            + (f" -f {path}" if path != Path("~/.ssh/known_hosts").expanduser() else ""),
        )
    return HostKeyError(
        f"host key of {hop} is not known: {fingerprint}",
        hint=f"check the fingerprint, then rerun with --accept-new (or: ssh-keyscan -p {hop.port} "
        f"{hop.host} >> {hop.known_hosts[0]})",
    )


def _no_common_type(hop: Hop, policy: _HostKeyPolicy) -> HostKeyError:
    types = sorted({_key_type(k) for k in policy.trusted}) or ["certificates"]
    path = _where_known(hop)
    return HostKeyError(
        f"{hop} offers no host key of the type known_hosts holds for it ({', '.join(types)}, in "
        f"{path}); refusing to connect, as ssh does",
        hint="if the host's keys really changed, remove the old key with: "
        f"ssh-keygen -R {_kh_name(hop)}"
        + (f" -f {path}" if path != Path("~/.ssh/known_hosts").expanduser() else ""),
    )


def _kh_name(hop: Hop) -> str:
    name = _known_name(hop)
    return f"'{name}'" if name.startswith("[") else name


def _client_keys(hop: Hop, prompts: _Prompts) -> tuple[list[object], list[str]]:
    """The keys to offer besides the agent's: -i and IdentityFile in order, the default files
    when there are none. An encrypted one asks for its passphrase only when the server would
    take it (handshake.unlock_on_sign); one without its public half beside it comes last, after
    the others failed, as ssh asks for it (the second list: _HostKeyPolicy.public_key_auth_requested)."""
    certs = [str(Path(c).expanduser()) for c in _strings(_options(hop).get("CertificateFile"))]
    keys: list[object] = []
    locked: list[str] = []
    for path in hop.identities or _default_identities():
        if not os.path.exists(path):
            continue
        try:
            # A callable passphrase is documented (asyncssh calls it with the path); the
            # annotation names only str and bytes.
            loaded = asyncssh.load_keypairs([path], _never, certs)  # type: ignore[arg-type]
        except _Encrypted:
            locked.append(path)
            continue
        except (OSError, ValueError):
            continue  # a public key alone (its private half in the agent), or unreadable
        for key in loaded:
            handshake.unlock_on_sign(key, path, prompts)
        keys.extend(loaded)
    return keys, locked


class _Encrypted(ValueError):
    pass


def _default_identities() -> tuple[str, ...]:
    home = Path("~/.ssh").expanduser()
    return tuple(
        str(home / name)
        for name in (
            "id_rsa",
            "id_ecdsa",
            "id_ecdsa_sk",
            "id_ed25519",
            "id_ed25519_sk",
            "id_xmss",
            "id_dsa",
        )
    )


def _never(path: str) -> None:
    raise _Encrypted(f"{path} is encrypted")


def _agent_identities(hop: Hop) -> list[bytes] | None:
    """With IdentitiesOnly, only the agent's keys that -i/IdentityFile name (a .pub will do)."""
    if not hop.identities_only:
        return None
    found: list[bytes] = []
    for path in hop.identities or _default_identities():
        for candidate in (path, path + ".pub", path + "-cert.pub"):
            try:
                found.append(asyncssh.read_public_key(candidate).public_data)
            except (OSError, ValueError):
                continue
    return found


def _agent_path(hop: Hop) -> str | None:
    opts = _options(hop)
    if "IdentityAgent" not in opts:
        return os.environ.get("SSH_AUTH_SOCK") or None
    agent = str(opts["IdentityAgent"] or "none")  # asyncssh keeps `none` as None
    if agent.lower() == "none":
        return None
    if agent == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK") or None
    if agent.startswith("$"):
        return os.environ.get(agent[1:]) or None
    return str(Path(agent).expanduser())


def _strings(value: object) -> list[str]:
    """A list-valued ssh_config option as asyncssh keeps it (a list, None when unset), as str."""
    return [str(item) for item in cast("Iterable[object]", value or ())]


def _options(hop: Hop) -> dict[str, object]:
    config = hop.config
    return getattr(config, "_options", {}) if config is not None else {}


def _seed(hop: Hop) -> asyncssh.SSHClientConnectionOptions | None:
    """asyncssh options whose config is this hop's cached evaluation: asyncssh then reads every
    keyword it knows from it (certificates, algorithms, PreferredAuthentications...) without
    parsing the files again. Built without __init__, which would load keys and the agent."""
    if hop.config is None:
        return None
    seed = object.__new__(asyncssh.SSHClientConnectionOptions)
    seed.kwargs = {}
    seed.config = hop.config
    return seed


def _translate(hop: Hop, exc: BaseException, policy: _HostKeyPolicy) -> TunnelauthError:
    if isinstance(exc, asyncssh.HostKeyNotVerifiable) and "revoked" in str(exc.reason).lower():
        return HostKeyError(
            f"host key of {hop} is revoked in known_hosts ({exc.reason}); refusing to connect"
        )
    if isinstance(exc, asyncssh.HostKeyNotVerifiable) or (
        # the server hung up after seeing us refuse its key (a key we recorded is no refusal)
        isinstance(exc, asyncssh.DisconnectError)
        and policy.offered is not None
        and not policy.recorded
        and not isinstance(exc, asyncssh.PermissionDenied)
    ):
        return _host_key_error(hop, policy)
    if (
        isinstance(exc, (OSError, asyncssh.Error))
        and not isinstance(exc, asyncssh.PermissionDenied)
        and policy.offered is None
        and (policy.trusted or policy.cas)
        and _during_kex(policy)
    ):
        # asyncssh offers only the host-key types known_hosts holds (as ssh puts them first);
        # a server without any of them ends the key exchange, as sshd does for ssh.
        return _no_common_type(hop, policy)
    if isinstance(exc, asyncssh.PermissionDenied):
        return _auth_error(hop, policy)
    if isinstance(exc, TIMEOUTS):
        return ConnectFailed(f"cannot reach {hop}: no answer within {hop.connect_timeout:g} s")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return ConnectFailed(f"cannot reach {hop} from the previous hop: {exc.reason}")
    if isinstance(exc, asyncssh.Error):
        return ConnectFailed(f"cannot connect to {hop}: {exc.reason}")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"cannot resolve {hop.host} ({hop}): {exc.strerror or exc}")
    if isinstance(exc, OSError):
        return ConnectFailed(f"cannot reach {hop}: {exc.strerror or exc}")
    if isinstance(exc, UnicodeError):
        return ConnectFailed(f"cannot resolve {hop.host} ({hop}): not a valid host name")
    return ConnectFailed(f"cannot connect to {hop}: {exc}")


def _during_kex(policy: _HostKeyPolicy) -> bool:
    conn = policy.conn
    return (
        conn is not None
        and bool(getattr(conn, "_server_version", b""))
        and not getattr(conn, "_session_id", None)
    )


def _auth_error(hop: Hop, policy: _HostKeyPolicy) -> AuthFailed:
    offered = ", ".join(policy._methods()) or "none"
    wanted = list(dict.fromkeys(policy.wanted))
    if wanted and not policy.prompts.available():
        what = " or ".join(wanted)
        if policy.partial:
            text = (
                f"{hop} accepted the key but also wants {what} (a second factor); "
                f"{policy.prompts.why_not()}"
            )
        else:
            text = f"{hop} wants {what} for {hop.user!r}; {policy.prompts.why_not()}"
        return AuthFailed(
            text,
            hint="run it in a terminal, or set SSH_ASKPASS "
            "(with SSH_ASKPASS_REQUIRE=force without a display)",
        )
    missed = list(dict.fromkeys(policy.prompts.missed))
    if missed:
        return AuthFailed(
            f"{hop} refused authentication as {hop.user!r}: "
            f"{policy.prompts.why_not()} for {' or '.join(missed)} "
            f"(it accepts: {offered})",
            hint="run it in a terminal, add the key to ssh-agent, or set SSH_ASKPASS "
            "(with SSH_ASKPASS_REQUIRE=force without a display)",
        )
    if policy.partial:
        return AuthFailed(
            f"{hop} accepted the key but refused the second factor (it still wants: {offered})"
        )
    lacks = _asyncssh_lacks(hop, policy)
    return AuthFailed(
        f"{hop} refused authentication as {hop.user!r} (it accepts: {offered})",
        hint=f"tunnelauth's asyncssh cannot do {lacks} here, your own ssh can: "
        "rerun with --ssh openssh"
        if lacks
        else "check the key (-i, IdentityFile, the agent) and the user (-l or user@host)",
    )


def _asyncssh_lacks(hop: Hop, policy: _HostKeyPolicy) -> str | None:
    """A way to authenticate this hop offers or the config asks for that asyncssh cannot use
    on this machine (its optional gssapi / python-pkcs11 packages are missing)."""
    from asyncssh import gss, pkcs11

    get = getattr(hop.config, "get", None) or (lambda name: None)
    offered = policy._methods()
    if not gss.gss_available and (
        get("GSSAPIAuthentication") or any(m.startswith("gssapi") for m in offered)
    ):
        return "GSSAPI (Kerberos) authentication"
    if not pkcs11.pkcs11_available and get("PKCS11Provider"):
        return "a PKCS#11 token (PKCS11Provider)"
    return None


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
        for hop, conn in zip(self.hops, self.conns, strict=False):
            if conn.is_closed():
                return hop
        return None


async def connect(
    hops: list[Hop],
    stack: AsyncExitStack,
    on_hop: Callable[[Hop], None] = lambda hop: None,
    ask: Ask | None = None,
    tell: Tell | None = None,
) -> Chain:
    """Connect hop by hop, each through the previous one, all with the same policy.

    Every connection is closed by `stack`, last hop first.
    """
    chain = Chain(hops=list(hops), conns=[])
    conn: asyncssh.SSHClientConnection | None = None
    for hop in hops:
        on_hop(hop)
        conn = await connect_hop(hop, conn, ask, tell)
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


async def connect_hop(
    hop: Hop,
    via: asyncssh.SSHClientConnection | None,
    ask: Ask | None = None,
    tell: Tell | None = None,
) -> asyncssh.SSHClientConnection:
    """One hop, through `via` (None: directly), with connect()'s policy and error translation.

    `ask(prompt, secret)` (blocking; None: nobody to ask) answers passphrases, passwords and
    keyboard-interactive prompts; `tell` shows one line. The caller owns the connection.
    """
    opts = _options(hop)
    prompts = _Prompts(
        ask,
        tell,
        int(str(opts.get("NumberOfPasswordPrompts") or PASSWORD_TRIES)),
        bool(opts.get("BatchMode")),
    )
    policy = _HostKeyPolicy(hop, _known_hosts(hop), prompts)
    extra: dict[str, object] = {}
    if "Ciphers" not in opts:
        extra["encryption_algs"] = CIPHERS
    try:
        async with timeout(hop.connect_timeout):
            sock = None
            if via is None and hop.proxy_command is None:
                sock = await preconnect.take(hop.host, hop.port)
            policy.banner_sent = sock is not None
            client_keys, policy.locked = await asyncio.to_thread(_client_keys, hop, prompts)
            agent_ids = _agent_identities(hop)
            # IdentitiesOnly naming no key the agent could hold: the agent offers nothing.
            agent = _agent_path(hop) if agent_ids != [] else None
            policy.no_agent = agent is None
            return await asyncssh.connect(
                hop.host,
                hop.port,
                sock=sock,
                options=_seed(hop),
                config=() if hop.config is not None else None,
                client_version=preconnect.CLIENT_VERSION,
                tunnel=via,
                proxy_command=hop.proxy_command if via is None else None,
                username=hop.user,
                known_hosts=(policy.trusted, policy.cas, policy.revoked),
                client_factory=lambda: policy,
                client_keys=client_keys,
                agent_path=agent,
                agent_identities=agent_ids,
                keepalive_interval=hop.keepalive_interval,
                keepalive_count_max=hop.keepalive_count_max,
                connect_timeout=hop.connect_timeout,
                # tunnelauth runs its own command: RemoteCommand, RequestTTY, SetEnv, SendEnv
                # and X11 from the config are not for it (docs/ssh-setup.md).
                command=None,
                request_pty=False,
                env=None,
                send_env=None,
                x11_forwarding=False,
                # asyncssh's canonicalization re-reads the files, which the seed has not got.
                canonicalize_hostname=False,
                **extra,
            )
    except (OSError, asyncssh.Error, *TIMEOUTS, ValueError, UnicodeError) as exc:
        raise _translate(hop, exc, policy) from exc


class SharedConnections:
    """One connection per hop-chain prefix, so destinations behind the same jump hosts share
    them (a fleet check logs in to a bastion once, not once per target).

    Keyed by the tuple of Hops up to and including the hop; a failed connect is remembered
    too, so every destination behind a dead bastion gets the same error at once.
    """

    def __init__(self, ask: Ask | None = None, tell: Tell | None = None) -> None:
        self._ask = ask
        self._tell = tell
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
        if self._ask is None and self._tell is None:
            return await connect_hop(chain[-1], via)
        return await connect_hop(chain[-1], via, self._ask, self._tell)

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
            return ForwardingRefused(
                f"{what}: forbidden by the target's sshd ({reason})", reason=reason
            )
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
    def over(
        cls, conn: asyncssh.SSHClientConnection, hop: Hop | None, name: str
    ) -> AsyncsshConnection:
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

    async def start(self, command: str, first: bytes = b"") -> _Process:
        try:
            if first and _internals.usable("data_with_exec"):
                return _Process(await handshake.start_with_data(self._conn, command, first))
            process = await self._conn.create_process(command, encoding=None)
            if first:
                process.stdin.write(first)
            return _Process(process)
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
