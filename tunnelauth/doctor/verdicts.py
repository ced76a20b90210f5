"""From what the target reported to pass/warn/fail and a one-line reason. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from tunnelauth.doctor.model import Outcome, Status
from tunnelauth.providers import Flow, Provider
from tunnelauth.remote_lib.listeners import LOOPBACK_OR_ANY, tcp_listeners

MAX_ARGS = 80


def blocking(found: Mapping[int, Iterable[str]]) -> dict[int, set[str]]:
    """port -> the loopback/wildcard addresses among those LISTENing on it (remote_lib's
    listeners, read on the target or here)."""
    kept = {port: set(addresses) & LOOPBACK_OR_ANY for port, addresses in found.items()}
    return {port: addresses for port, addresses in kept.items() if addresses}


def listeners(table: str) -> dict[int, set[str]]:
    """port -> loopback/wildcard addresses LISTENing on it, from /proc/net/tcp{,6} text."""
    return blocking(tcp_listeners(table))


def port_verdict(
    provider: Provider,
    port: int,
    destination: str,
    *,
    laptop_busy: str | None,
    target: set[str] | None,
    flow: Flow | None,
) -> Outcome:
    """laptop_busy: why the laptop's port is taken (None: free); target: addresses listening
    on the port there (None: unknown); flow: what this hermes uses (None: unknown)."""
    if laptop_busy:
        return Outcome(Status.FAIL, f"{laptop_busy}; a login stops before connecting (exit 3)")
    if target is None:
        return Outcome(
            Status.WARN,
            f"free on this machine; could not read {destination}'s socket table (/proc/net/tcp)",
        )
    if not target:
        return Outcome(Status.PASS, f"free on this machine and on {destination}")
    where = ", ".join(
        f"{address}:{port}" if ":" not in address else f"[{address}]:{port}"
        for address in sorted(target)
    )
    taken = f"port {port} is taken on {destination} (LISTEN on {where})"
    if flow is Flow.DEVICE:
        return Outcome(
            Status.PASS,
            f"{taken}, but hermes there uses device code for "
            f"{provider.name}: no callback port needed",
        )
    if provider.moves_port:  # hermes binds elsewhere and tunnelauth follows; Spotify never moves
        return Outcome(
            Status.WARN,
            f"{taken}; hermes will move the {provider.name} callback to "
            "another port, which tunnelauth follows",
        )
    return Outcome(
        Status.FAIL,
        f"{taken}; hermes cannot move the {provider.name} callback, so "
        "a login fails: stop that listener",
    )


def token_verdict(info: Mapping[str, object]) -> Outcome:
    """The token directory as the user who will hold the tokens saw it (see probe.py)."""
    user = str(info.get("user") or "?")
    if info.get("sudo"):
        return Outcome(
            Status.FAIL, f"cannot act as {user} through `sudo -n -u {user}`: {info['sudo']}", user
        )
    where = str(info.get("dir"))
    if info.get("error"):
        return Outcome(Status.FAIL, f"{where}: {info['error']}", user)
    if not info.get("exists"):
        if info.get("creatable"):
            return Outcome(Status.PASS, f"{where} does not exist yet; {user} can create it", user)
        return Outcome(
            Status.FAIL,
            f"{where} does not exist and {user} cannot create it "
            f"({info.get('parent')} is not writable for {user})",
            user,
        )
    if not info.get("is_dir"):
        return Outcome(Status.FAIL, f"{where} is not a directory", user)
    if not info.get("writable"):
        return Outcome(Status.FAIL, f"{where} is not writable for {user}", user)
    token_file = f"{where}/auth.json"
    if info.get("file_exists") and not info.get("file_rw"):
        return Outcome(Status.FAIL, f"{token_file} is not readable and writable for {user}", user)
    problems = []
    dir_mode = _int(info.get("dir_mode"))
    if dir_mode & 0o077:
        problems.append(f"{where} has mode {dir_mode:o} (should be 700: chmod 700 {where})")
    if not info.get("dir_owned"):
        problems.append(f"{where} is not owned by {user}")
    if info.get("file_exists"):
        file_mode = _int(info.get("file_mode"))
        if file_mode & 0o077:
            problems.append(f"{token_file} has mode {file_mode:o} (should be 600)")
        if not info.get("file_owned"):
            problems.append(f"{token_file} is not owned by {user}")
    if problems:
        return Outcome(Status.WARN, "; ".join(problems), user)
    held = "auth.json mode 600" if info.get("file_exists") else "no auth.json yet"
    return Outcome(Status.PASS, f"{where} (mode 700, {held}) for {user}", user)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _short(args: str) -> str:
    args = " ".join(args.split())
    return args if len(args) <= MAX_ARGS else args[: MAX_ARGS - 1] + "…"


def gateway_verdict(token_user: str, info: Mapping[str, Sequence[Mapping[str, object]]]) -> Outcome:
    """Warn when a hermes gateway runs as someone else than the user who will hold the tokens:
    it reads its own user's ~/.hermes, so it would never see this login's tokens."""
    runners = [
        (str(p["user"]), f"pid {p['pid']}: {_short(str(p['args']))}")
        for p in info.get("processes", ())
    ]
    runners += [
        (str(u["user"]), f"systemd unit {u['unit']}, {u['state']}") for u in info.get("units", ())
    ]
    if not runners:
        return Outcome(Status.PASS, "no hermes gateway process or service found")
    others = [(user, what) for user, what in runners if user != token_user]
    if others:
        user, what = others[0]
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        return Outcome(
            Status.WARN,
            f"a hermes gateway runs as {user} ({what}){more}, but the tokens "
            f"would be {token_user}'s: log in with --as-user {user} so the "
            "gateway finds them",
        )
    return Outcome(
        Status.PASS, f"hermes gateway runs as {token_user}, who holds the tokens ({runners[0][1]})"
    )
