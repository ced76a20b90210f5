"""Opening URLs on the laptop, and deciding which URLs the remote may have opened at all.

The rule: the browser opens only what the person would approve on seeing it. So a URL is
opened only when the text shown is byte for byte the URL opened (nothing had to be made
inert), when its host is one of the provider's (or named with --allow-host), and only the
first of its kind: one authorize and one verification URL per login; for `run`, one authorize
URL per callback port and MAX_RUN_OPENS in all. Everything else is shown, not opened; past
MAX_SHOWN URLs nothing more is shown either, so a flood cannot bury the screen.
"""

from __future__ import annotations

import webbrowser
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tunnelauth.errors import LoginFailed
from tunnelauth.text import is_inert

MAX_RUN_OPENS = 4  # `run`: browser launches per run (one per callback port)
MAX_SHOWN = 5  # URLs shown per login or run, opened or not


class UnsafeUrl(LoginFailed):
    """A URL the remote printed that tunnelauth refuses to open."""


def host_of(url: str) -> str:
    """The URL's host, lower-case; raise UnsafeUrl for URLs never to open."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise UnsafeUrl("the remote printed a malformed URL; not opening it") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"refusing to open a {parts.scheme or 'scheme-less'}: URL from the remote")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeUrl("refusing to open a URL with embedded credentials from the remote")
    if not host:
        raise UnsafeUrl("refusing to open a URL without a host from the remote")
    return host


def needs_cleaning(url: str) -> bool:
    """True when what a terminal shows of url could differ from what a browser gets."""
    return not is_inert(url) or any(c.isspace() for c in url)


def vet(url: str, known_hosts: tuple[str, ...], allowed: tuple[str, ...]) -> str | None:
    """None when url may be opened; else the one-line reason it is only shown.
    Raises UnsafeUrl for URLs never to open (not http(s), credentials, no host)."""
    host = host_of(url)
    if needs_cleaning(url):
        return (
            "the URL holds control characters or spaces (shown escaped); not opening it, "
            "as the browser would get something other than what you see"
        )
    if not known_hosts or host in allowed:
        return None
    if any(host == k or host.endswith("." + k) for k in known_hosts):
        return None
    expected = ", ".join(known_hosts)
    return (
        f"the URL is on {host}, not on {expected}: not opening it; check it before approving "
        f"(--allow-host {host} opens it)"
    )


@dataclass(frozen=True)
class Decision:
    show: bool
    open: bool
    host: str
    warning: str | None = None


@dataclass
class Policy:
    """What to do with each URL the remote prints during one login (or one `run`)."""

    known_hosts: tuple[str, ...]  # the provider's; empty for `run`
    allowed: tuple[str, ...] = ()
    running: bool = False
    seen: set[int] = field(default_factory=set)  # hashes: a flood of long URLs is not kept
    opened: dict[str, int] = field(default_factory=dict)  # purpose -> browser launches
    ports: set[object] = field(default_factory=set)  # `run`: callback ports already opened for
    shown: int = 0

    def decided(self, url: str) -> bool:
        return hash(url) in self.seen

    def decide(self, url: str, purpose: str, port: int | None = None) -> Decision | None:
        """None for a URL seen before (nothing to do again)."""
        if hash(url) in self.seen:
            return None
        self.seen.add(hash(url))
        host = host_of(url)
        warning = vet(url, self.known_hosts, self.allowed)
        if warning is None and not self._may_open(purpose, port):
            warning = (
                f"not opening another {purpose} URL: one was opened already"
                if not self.running
                else f"not opening another URL: `run` opens at most {MAX_RUN_OPENS}, "
                "one per callback port"
            )
        self.shown += 1
        if self.shown > MAX_SHOWN:
            if self.shown == MAX_SHOWN + 1:
                return Decision(
                    show=False,
                    open=False,
                    host=host,
                    warning=(
                        f"the remote printed more than {MAX_SHOWN} URLs; "
                        "not showing or opening any more"
                    ),
                )
            return Decision(show=False, open=False, host=host)
        if warning is None:
            self.opened[purpose] = self.opened.get(purpose, 0) + 1
            self.ports.add(port)
        return Decision(show=True, open=warning is None, host=host, warning=warning)

    def _may_open(self, purpose: str, port: int | None) -> bool:
        if self.running:
            fresh = port is None or port not in self.ports
            return fresh and sum(self.opened.values()) < MAX_RUN_OPENS
        return self.opened.get(purpose, 0) < 1


def open_url(url: str) -> bool:
    """Blocking: run in a thread. Honours $BROWSER like Python's webbrowser does."""
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
