"""What a login came to: its facts (exit status, events seen, token file) in, a result or an
error out. Pure: no I/O; the messages a person reads at the end are all written here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tunnelauth import parse, remote
from tunnelauth.errors import ConnectionLost, LoginFailed, RemoteSetupError, TunnelauthError


@dataclass(frozen=True)
class LoginResult:
    provider: str
    destination: str
    label: str | None
    token_file: str | None
    token_mode: int | None
    exit_status: int = 0  # the remote command's, for `run`


@dataclass(frozen=True)
class LoginFacts:
    """What the hermes login policy saw by the time the remote command ended."""

    provider: str  # hermes's id for it
    destination: str
    exit_status: int | None
    success: parse.Success | None = None
    failures: Sequence[str] = ()  # hermes's own failure messages, last two distinct
    hermes_errors: Sequence[str] = ()  # the last lines hermes wrote to its stderr
    token_path: str | None = None  # from hermes's output
    token_info: Mapping[str, object] = field(default_factory=dict)  # the supervisor's check


@dataclass(frozen=True)
class Succeeded:
    result: LoginResult
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortBusy:
    """hermes could not bind its callback port on the target: ask the target who holds it
    (port_busy() turns the answer into the error)."""

    port: int


Outcome = Succeeded | PortBusy | LoginFailed


def classify(facts: LoginFacts) -> Outcome:
    status = facts.exit_status
    if status == 0 and facts.success is not None:
        info = facts.token_info
        path = str(info.get("path") or facts.token_path or "") or None
        mode = info.get("mode")
        warnings: list[str] = []
        if info.get("error"):
            warnings.append(f"hermes reported success but {path} is not there ({info['error']})")
        elif isinstance(mode, int) and mode & 0o077:
            warnings.append(f"{path} has mode {mode:o}; it should be 600")
        return Succeeded(
            LoginResult(
                provider=facts.provider,
                destination=facts.destination,
                label=facts.success.label,
                token_file=path,
                token_mode=mode if isinstance(mode, int) else None,
            ),
            tuple(warnings),
        )
    reason = "; ".join(facts.failures) or (facts.hermes_errors[-1] if facts.hermes_errors else None)
    busy = remote.busy_port(reason or "")
    if busy is not None:
        return PortBusy(busy)
    if status == 0:
        return LoginFailed(
            f"hermes exited without reporting a login{': ' + reason if reason else ''}"
        )
    return LoginFailed(f"hermes failed: {reason or 'no message'} (exit status {status})")


def run_result(destination: str, exit_status: int | None) -> LoginResult:
    """`tunnelauth run`: the command's own exit status is the result."""
    return LoginResult(
        provider="",
        destination=destination,
        label=None,
        token_file=None,
        token_mode=None,
        exit_status=exit_status or 0,
    )


def port_busy(port: int, destination: str, holder: str | None) -> RemoteSetupError:
    by = f"by {holder}" if holder else "by a process this login cannot see"
    return RemoteSetupError(
        f"port {port} on {destination}'s 127.0.0.1 is taken {by}, and hermes "
        f"cannot move its callback elsewhere",
        hint="stop that process (an earlier login?) and run tunnelauth again",
    )


def not_found(info: Mapping[str, object], destination: str, hint: str) -> RemoteSetupError:
    looked = info.get("looked")
    places = [str(place) for place in looked] if isinstance(looked, list) else []
    return RemoteSetupError(
        f"{info['command']} was not found on {destination}; looked in " + ", ".join(places),
        hint=hint,
    )


def cannot_become(info: Mapping[str, object], destination: str) -> RemoteSetupError:
    return RemoteSetupError(
        f"cannot run hermes as {info['user']} on {destination}: {info['error']}",
        hint="--as-user needs `sudo -n -u USER` to work without a password there",
    )


def lost(
    destination: str,
    dropped: str | None,
    connection_lost: bool,
    reason: str,
    stderr_tail: Sequence[str],
) -> TunnelauthError:
    """The remote side ended before the command's exit status arrived.

    dropped: the hop whose connection is gone, if one is; connection_lost: the transport said
    the connection was lost; reason: the peer's words, if any."""
    if dropped is not None or connection_lost:
        where = dropped or destination
        why = f" ({reason})" if reason else ""
        return ConnectionLost(
            f"lost the connection to {where} during the login{why}; the remote hermes stops by itself",
            hint="check that hop and run tunnelauth again",
        )
    tail = " ".join(line.strip() for line in stderr_tail[-2:] if line.strip())
    return RemoteSetupError(
        f"the remote side of the login stopped unexpectedly on {destination}"
        + (f": {tail}" if tail else "")
    )


def stalled(destination: str, seconds: float) -> ConnectionLost:
    """The supervisor heard no heartbeat for `seconds` and stopped the command."""
    return ConnectionLost(
        f"nothing reached {destination} for more than {seconds:g} s (a stalled link, or this "
        "machine suspended, past the SSH keepalive window); the remote command was stopped",
        hint="check the network; raise ServerAliveInterval/ServerAliveCountMax on slow links",
    )
