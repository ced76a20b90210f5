"""One exception tree; each class carries the exit code the CLI uses.

TunnelauthError                 1  (base; not raised itself)
├── LoginFailed                 1  the remote login command reported failure
├── UsageError                  2  bad arguments, caught before connecting
├── LocalPortBusy               3  the callback port is taken on the laptop
├── HostKeyError                4  unknown or changed host key on some hop
├── ConnectFailed               5  a hop could not be reached
├── AuthFailed                  6  a hop refused our credentials
├── RemoteSetupError            7  remote side unusable: hermes/python missing,
│   │                              forwarding refused, remote port busy
│   └── ChannelRefused          7  the target refused a channel (`reason`: its words)
│   │   └── ForwardingRefused   7  ... because its sshd forbids forwarding
│   └── ChannelFailed           7  a channel failed while the connection lived on
├── LoginTimeout                8  --timeout expired
├── ConnectionLost              9  a hop dropped during the login
│   └── StreamLost              9  ... under a remote process or channel (`reason`)
├── Interrupted               130  Ctrl-C
└── Terminated                143  SIGTERM
"""

from __future__ import annotations


class TunnelauthError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class LoginFailed(TunnelauthError):
    exit_code = 1


class UsageError(TunnelauthError):
    exit_code = 2


class LocalPortBusy(TunnelauthError):
    exit_code = 3


class HostKeyError(TunnelauthError):
    exit_code = 4


class ConnectFailed(TunnelauthError):
    exit_code = 5


class AuthFailed(TunnelauthError):
    exit_code = 6


class RemoteSetupError(TunnelauthError):
    exit_code = 7


class ChannelRefused(RemoteSetupError):
    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class ForwardingRefused(ChannelRefused):
    pass


class ChannelFailed(RemoteSetupError):
    def __init__(self, reason: str = "") -> None:
        super().__init__(f"a channel failed{f' ({reason})' if reason else ''}")
        self.reason = reason


class LoginTimeout(TunnelauthError):
    exit_code = 8


class ConnectionLost(TunnelauthError):
    exit_code = 9


class StreamLost(ConnectionLost):
    def __init__(self, reason: str = "") -> None:
        super().__init__(f"the connection was lost{f' ({reason})' if reason else ''}")
        self.reason = reason


class Interrupted(TunnelauthError):
    exit_code = 130


class Terminated(TunnelauthError):
    exit_code = 143


EXIT_CODES: dict[int, str] = {
    0: "logged in",
    LoginFailed.exit_code: "the remote login failed (hermes's own error is shown)",
    UsageError.exit_code: "bad arguments; nothing was contacted",
    LocalPortBusy.exit_code: "the callback port is taken on this machine",
    HostKeyError.exit_code: "a host key is unknown or has changed",
    ConnectFailed.exit_code: "a hop could not be reached",
    AuthFailed.exit_code: "a hop refused authentication",
    RemoteSetupError.exit_code: "the remote side is not usable (hermes missing, forwarding refused, port busy)",
    LoginTimeout.exit_code: "--timeout expired",
    ConnectionLost.exit_code: "the connection dropped during the login",
    Interrupted.exit_code: "interrupted (Ctrl-C)",
    Terminated.exit_code: "terminated (SIGTERM)",
}
