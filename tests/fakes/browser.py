#!/usr/bin/env python3
"""A headless stand-in for the laptop's browser, used as ``$BROWSER`` in tests.

Usage:  browser.py URL        (Python's ``webbrowser`` runs ``$BROWSER <url>``)

Fetches URL with urllib (standard library only), following redirects -- including
the redirect to ``http://127.0.0.1:PORT/...``, which in the tests reaches hermes's
callback listener through the SSH forward.  Proxies from the environment are
ignored, so ``http_proxy`` can never divert a loopback request.

Environment:
  FAKE_BROWSER_LOG      file to append one JSON line per run to:
                        {"ts", "pid", "url" (as opened, query removed), "status",
                         "final" (host:port/path, never the query), "hops", "error",
                         "mode", "elapsed"}
  FAKE_BROWSER_DELAY    seconds (float) to sleep before fetching
  FAKE_BROWSER_MODE     "deny": append ``&mock_error=access_denied`` to the URL
                        (the mock provider then answers as if the user refused)
  FAKE_BROWSER_TIMEOUT  total time budget in seconds (default 20)
  FAKE_BROWSER_LOOPBACK the laptop's loopback address when the laptop and the target share
                        one machine (tests/test_flow.py): a redirect to 127.0.0.1 goes there

Exit status: 0 if the final response status is < 400, 1 if it is >= 400 or the
fetch failed (connection refused, timeout, ...), 2 on bad usage, 3 if the URL
is not http(s).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin, urlsplit

MAX_HOPS = 10


def _where(url: str) -> str:
    """host:port/path of a URL -- never the query or fragment (it can hold a code)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}{parts.path or '/'}"
    except ValueError:
        return "?"


def _opened(url: str) -> str:
    """The URL as opened, without its query string (state, code challenges...)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
    except ValueError:
        return "?"


def _log(record: dict) -> None:
    path = os.environ.get("FAKE_BROWSER_LOG")
    if not path:
        return
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Let 3xx responses through so the loop below follows them itself
    (it needs to count hops and record where it ended)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# No proxies from the environment: a proxy must never divert a loopback request.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def _fetch_once(url: str, deadline: float):
    """One GET with urllib, redirects not followed.  Returns (status, location)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("browser time budget exhausted")
    req = urllib.request.Request(
        url,
        method="GET",
        headers={
            "User-Agent": "tunnelauth-fake-browser/1.0",
            "Accept": "text/html,application/json;q=0.9,*/*;q=0.8",
            "Connection": "close",
        },
    )
    try:
        resp = _OPENER.open(req, timeout=remaining)
    except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx
        try:
            exc.read()
        except OSError:
            pass
        location = exc.headers.get("Location") if exc.headers is not None else None
        exc.close()
        return exc.code, location
    with resp:
        resp.read()  # read the page like a browser would (the socket timeout still applies)
        return resp.status, resp.headers.get("Location")


def _laptop_loopback(url: str) -> str:
    address = os.environ.get("FAKE_BROWSER_LOOPBACK", "").strip()
    parts = urlsplit(url)
    if not address or parts.hostname != "127.0.0.1":
        return url
    return parts._replace(netloc=parts.netloc.replace("127.0.0.1", address, 1)).geturl()


def main(argv: list) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: browser.py URL\n")
        return 2
    url = argv[1].strip()
    started = time.monotonic()
    mode = os.environ.get("FAKE_BROWSER_MODE", "").strip().lower()
    record = {
        "ts": round(time.time(), 3),
        "pid": os.getpid(),
        "url": _opened(url),
        "mode": mode or None,
    }

    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        record.update(status=None, final=None, error="refused: not an http(s) URL", hops=0)
        _log(record)
        sys.stderr.write("fake browser: refusing a non-http(s) URL\n")
        return 3

    try:
        budget = float(os.environ.get("FAKE_BROWSER_TIMEOUT", "20") or 20)
    except ValueError:
        budget = 20.0
    deadline = started + budget
    try:
        delay = float(os.environ.get("FAKE_BROWSER_DELAY", "0") or 0)
    except ValueError:
        delay = 0.0
    if delay > 0:
        time.sleep(delay)
        deadline += delay

    if mode == "deny":
        url += ("&" if "?" in url else "?") + "mock_error=access_denied"

    status = None
    error = None
    current = url
    hops = 0
    try:
        while True:
            status, location = _fetch_once(current, deadline)
            if status in (301, 302, 303, 307, 308) and location:
                hops += 1
                if hops > MAX_HOPS:
                    error = "too many redirects"
                    break
                nxt = urljoin(current, location)
                if urlsplit(nxt).scheme not in ("http", "https"):
                    error = "redirect to a non-http(s) URL"
                    break
                current = _laptop_loopback(nxt)
                continue
            break
    except (OSError, http.client.HTTPException, TimeoutError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, (socket.timeout, TimeoutError)):
            error = "timeout"
        elif isinstance(reason, OSError) and reason.errno:
            error = f"{type(reason).__name__} [Errno {reason.errno}]"
        else:
            error = type(reason).__name__
        status = None

    record.update(
        status=status,
        final=_where(current),
        hops=hops,
        error=error,
        elapsed=round(time.monotonic() - started, 3),
    )
    _log(record)
    if status is not None and status < 400 and error is None:
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
