"""What the user typed about SSH: destinations, -J hops, -o options, validated.

Pure (no asyncssh), so the command line can check its input, and start connecting to the first
hop (preconnect.py), before the SSH library is even imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tunnelauth.errors import UsageError

DEFAULT_PORT = 22

# -o keys we check ourselves, in OpenSSH's spelling. Those in PER_HOP apply to every hop.
OPTION_KEYS = (
    "HostName",
    "User",
    "Port",
    "IdentityFile",
    "IdentitiesOnly",
    "ProxyJump",
    "ProxyCommand",
    "UserKnownHostsFile",
    "StrictHostKeyChecking",
    "ConnectTimeout",
    "ServerAliveInterval",
    "ServerAliveCountMax",
)
# Every other keyword ssh_config(5) (OpenSSH 9) knows: -o accepts it as ssh does, and the config
# evaluation decides what it means (docs/ssh-setup.md lists what is honoured).
OTHER_KEYS = (
    "AddKeysToAgent",
    "AddressFamily",
    "BatchMode",
    "BindAddress",
    "BindInterface",
    "CanonicalDomains",
    "CanonicalizeFallbackLocal",
    "CanonicalizeHostname",
    "CanonicalizeMaxDots",
    "CanonicalizePermittedCNAMEs",
    "CASignatureAlgorithms",
    "CertificateFile",
    "ChannelTimeout",
    "CheckHostIP",
    "Ciphers",
    "ClearAllForwardings",
    "Compression",
    "ConnectionAttempts",
    "ControlMaster",
    "ControlPath",
    "ControlPersist",
    "DynamicForward",
    "EnableEscapeCommandline",
    "EnableSSHKeySign",
    "EscapeChar",
    "ExitOnForwardFailure",
    "FingerprintHash",
    "ForkAfterAuthentication",
    "ForwardAgent",
    "ForwardX11",
    "ForwardX11Timeout",
    "ForwardX11Trusted",
    "GatewayPorts",
    "GlobalKnownHostsFile",
    "GSSAPIAuthentication",
    "GSSAPIDelegateCredentials",
    "GSSAPIKeyExchange",
    "HashKnownHosts",
    "HostbasedAcceptedAlgorithms",
    "HostbasedAuthentication",
    "HostKeyAlgorithms",
    "HostKeyAlias",
    "IdentityAgent",
    "IgnoreUnknown",
    "IPQoS",
    "KbdInteractiveAuthentication",
    "KbdInteractiveDevices",
    "KexAlgorithms",
    "KnownHostsCommand",
    "LocalCommand",
    "LocalForward",
    "LogLevel",
    "LogVerbose",
    "MACs",
    "NoHostAuthenticationForLocalhost",
    "NumberOfPasswordPrompts",
    "ObscureKeystrokeTiming",
    "PasswordAuthentication",
    "PermitLocalCommand",
    "PermitRemoteOpen",
    "PKCS11Provider",
    "PreferredAuthentications",
    "ProxyUseFdpass",
    "PubkeyAcceptedAlgorithms",
    "PubkeyAcceptedKeyTypes",
    "PubkeyAuthentication",
    "RekeyLimit",
    "RemoteCommand",
    "RemoteForward",
    "RequestTTY",
    "RequiredRSASize",
    "RevokedHostKeys",
    "SecurityKeyProvider",
    "SendEnv",
    "ServerAliveCountMax",
    "SessionType",
    "SetEnv",
    "StdinNull",
    "StreamLocalBindMask",
    "StreamLocalBindUnlink",
    "SyslogFacility",
    "Tag",
    "TCPKeepAlive",
    "Tunnel",
    "TunnelDevice",
    "UpdateHostKeys",
    "VerifyHostKeyDNS",
    "VisualHostKey",
    "XAuthLocation",
    "ChallengeResponseAuthentication",
)
PER_HOP = frozenset(
    {
        "IdentityFile",
        "IdentitiesOnly",
        "UserKnownHostsFile",
        "StrictHostKeyChecking",
        "ConnectTimeout",
        "ServerAliveInterval",
        "ServerAliveCountMax",
        "IdentityAgent",
        "CertificateFile",
        "GlobalKnownHostsFile",
        "HashKnownHosts",
        "BatchMode",
        "PreferredAuthentications",
        "PasswordAuthentication",
        "KbdInteractiveAuthentication",
        "PubkeyAuthentication",
        "NumberOfPasswordPrompts",
        "AddressFamily",
    }
)
_KEYS = {key.lower(): key for key in (*OPTION_KEYS, *OTHER_KEYS)}
# A name, or an IPv6 address with an optional zone (fe80::1%eth0, as ssh takes it).
_HOSTNAME = re.compile(r"[A-Za-z0-9_.%-]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]*")
_DIGITS = re.compile(r"[0-9]{1,5}")
STRICT_VALUES = ("yes", "ask", "accept-new", "no", "off")
_INTEGER_KEYS = {
    "ConnectTimeout": "seconds",
    "ServerAliveInterval": "seconds",
    "ServerAliveCountMax": "probes",
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port else text


def check_login(user: str, what: str) -> str:
    """A remote user name: it may reach a ProxyCommand's %r, so nothing a shell would read."""
    if not _USER.fullmatch(user):
        raise UsageError(f"{what} {user!r} is not a valid user name")
    return user


def parse_port(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text) or not 0 < int(text) < 65536:
        raise UsageError(f"{what}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def parse_endpoint(text: str, what: str = "destination") -> Endpoint:
    """`[user@]host[:port]`, `[user@][v6addr]:port` or `ssh://[user@]host[:port]`."""
    raw = text.strip()
    if raw.startswith("ssh://"):
        raw = raw[len("ssh://") :].rstrip("/")
    user: str | None = None
    if "@" in raw:
        user, raw = raw.rsplit("@", 1)
        if not _USER.fullmatch(user):
            raise UsageError(f"{what} {text!r}: {user!r} is not a valid user name")
    port: int | None = None
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"{what} {text!r} is malformed", hint="use [user@]host[:port]")
        if rest:
            port = parse_port(rest[1:], f"{what} {text!r}")
    elif raw.count(":") == 1:
        raw, port_text = raw.split(":")
        host = raw
        port = parse_port(port_text, f"{what} {text!r}")
    else:
        host = raw
    if not host or not _HOSTNAME.fullmatch(host) or host.startswith("-"):
        raise UsageError(f"{what} {text!r} is not a host name", hint="use [user@]host[:port]")
    return Endpoint(host=host, user=user, port=port)


def parse_jumps(text: str) -> tuple[Endpoint, ...]:
    """OpenSSH's -J: a comma-separated list of hops, or `none`."""
    if text.strip().lower() == "none":
        return ()
    parts = text.split(",")
    if any(not part.strip() for part in parts):
        raise UsageError(f"-J {text!r} has an empty hop", hint="use -J host1[,host2...]")
    return tuple(parse_endpoint(part, "jump host") for part in parts)


def parse_option(text: str) -> tuple[str, str]:
    """An `-o Key=Value` (or `Key Value`) in OpenSSH's syntax."""
    key, sep, value = text.partition("=")
    if not sep and " " not in text.strip() and text.strip().lower() not in _KEYS:
        raise UsageError(f"-o {text!r}: missing '=' after the keyword", hint="write -o Key=Value")
    if not sep:
        key, _, value = text.strip().partition(" ")
    canonical = _KEYS.get(key.strip().lower())
    if canonical is None:
        raise UsageError(
            f"-o {text!r}: unsupported option {key.strip()!r}",
            hint="-o takes the keywords of ssh_config(5)",
        )
    value = value.strip()
    if not value:
        raise UsageError(f"-o {text!r}: missing value")
    check_option(canonical, value)
    return canonical, value


def first_wins(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """ssh's -o semantics: the first value given for a keyword is the one used."""
    options: dict[str, str] = {}
    for key, value in pairs:
        options.setdefault(key, value)
    return options


def check_option(canonical: str, value: str) -> None:
    """Refuse -o values that are malformed or would weaken the host-key policy."""
    if any(c in value for c in "\n\r\0"):
        raise UsageError(f"-o {canonical}: the value holds a line break or NUL")
    if canonical == "User":
        check_login(value, "-o User")
    if canonical == "HostName" and not _HOSTNAME.fullmatch(value):
        raise UsageError(f"-o HostName {value!r} is not a host name")
    if canonical in _INTEGER_KEYS and not _DIGITS.fullmatch(value):
        raise UsageError(
            f"-o {canonical} {value!r} is not a whole number of {_INTEGER_KEYS[canonical]}"
        )
    if canonical == "Port":
        parse_port(value, "-o Port")
    if canonical == "StrictHostKeyChecking" and value.strip().lower() not in STRICT_VALUES:
        raise UsageError(f"StrictHostKeyChecking {value!r} is not yes, accept-new or no")
    if canonical == "UserKnownHostsFile" and "none" in value.lower().split():
        raise UsageError(
            f"-o UserKnownHostsFile {value} would skip host-key checks",
            hint="tunnelauth always checks; name a file, or use --accept-new",
        )


@dataclass(frozen=True)
class SshSettings:
    """What the command line says about SSH; the config file fills in the rest."""

    config_file: Path | None = None  # -F; None means ~/.ssh/config when it exists
    identities: tuple[str, ...] = ()  # -i
    login: str | None = None  # -l
    port: int | None = None  # -p
    options: Mapping[str, str] = field(default_factory=dict)  # -o, canonical keys
    accept_new: bool = False
