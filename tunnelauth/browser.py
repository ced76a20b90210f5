"""Opening URLs on the laptop, and deciding which URLs may be opened at all."""

from __future__ import annotations

import webbrowser
from urllib.parse import urlsplit

from tunnelauth.errors import LoginFailed


class UnsafeUrl(LoginFailed):
    """A URL the remote printed that tunnelauth refuses to open."""


def vet(url: str, known_hosts: tuple[str, ...], allowed: tuple[str, ...]) -> str | None:
    """Raise UnsafeUrl for URLs never to open; return a warning for unexpected hosts."""
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
    if host in allowed or any(host == k or host.endswith("." + k) for k in known_hosts):
        return None
    expected = ", ".join(known_hosts) or "a known provider host"
    return f"the URL is on {host}, not on {expected}; check it before approving (--allow-host {host} silences this)"


def open_url(url: str) -> bool:
    """Blocking: run in a thread. Honours $BROWSER like Python's webbrowser does."""
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
