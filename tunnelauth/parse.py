"""Remote output in, typed events out. Pure: no I/O, never blocks.

The parser is fed raw bytes as they arrive from each stream (stdout, stderr) and
returns the events that the completed lines (and a pending prompt) imply. It decides
from the text alone, so it follows whatever the remote release prints.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from tunnelauth.providers import COMMON_FAILURES, Provider
from tunnelauth.text import strip_ansi

# A line longer than this is cut; the rest of it is skipped up to the next newline, so a
# hostile remote cannot grow our memory without bound.
MAX_LINE = 64 * 1024
# A prompt is a partial line at the end of what has arrived; only short ones are prompts.
MAX_PROMPT = 200

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class Line(Event):
    """Every complete remote line, ANSI-stripped, for verbose display."""

    text: str
    stream: str


@dataclass(frozen=True)
class AuthorizeUrl(Event):
    """An OAuth authorize URL for the user's browser."""

    url: str
    redirect_port: int | None  # set when redirect_uri is a loopback http URL
    redirect_host: str | None = None


@dataclass(frozen=True)
class CallbackPort(Event):
    """The remote's callback port. listening=True only when the remote says it is bound."""

    port: int
    listening: bool
    source: str  # "waiting" | "redirect_uri" | "hint"
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class VerificationUrl(Event):
    url: str


@dataclass(frozen=True)
class UserCode(Event):
    code: str


@dataclass(frozen=True)
class Prompt(Event):
    text: str
    secret: bool


@dataclass(frozen=True)
class Success(Event):
    label: str | None


@dataclass(frozen=True)
class TokenFile(Event):
    path: str


@dataclass(frozen=True)
class Failure(Event):
    message: str


_URL = re.compile(r"https?://[^\s\"'<>`]+")
_WAITING = re.compile(
    r"Waiting for callback on (?P<url>http://(?P<host>127\.0\.0\.1|localhost|\[::1\]):(?P<port>\d{1,5})\S*)"
)
_HINT = re.compile(
    r"\bssh\s+(?:-\S+\s+)*-L\s*(?P<lport>\d{1,5}):(?P<host>127\.0\.0\.1|localhost|\[::1\]):(?P<port>\d{1,5})\b"
)
_REDIRECT_LINE = re.compile(r"^Redirect URI: (?P<url>http://\S+)$")
_DEVICE_OPEN = re.compile(r"^\s*\d\.\s+Open:\s+(?P<url>https?://\S+)\s*$")
_DEVICE_CODE = re.compile(r"^\s*\d\.\s+If prompted, enter code:\s+(?P<code>\S+)\s*$")
_OPEN_NEXT = re.compile(r"^\s*\d\.\s+Open this URL in your browser:\s*$")
_CODE_NEXT = re.compile(r"^\s*\d\.\s+Enter this code:\s*$")
_TOKEN_FILE = re.compile(r"^\s*Auth state: (?P<path>\S.*?)\s*$")
_USER_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{3,31}$")
_PROMPTS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"Authorization code: ?$"), True),
    (re.compile(r"Callback URL: ?$"), True),
    (re.compile(r"Spotify Client ID: ?$"), False),
    (re.compile(r"Import these credentials\?.*\]: ?$"), False),
)


# A secret's name: the usual OAuth parameters, and any key that names a token, secret or
# password (JSON "accessToken", "x_api_key", ...). It may follow "%3F"/"%26" (URL-encoded ? &).
_SECRET_NAME = (
    r"(?:(?<=%[0-9A-Fa-f]{2})|(?<![A-Za-z0-9]))"
    r"(?:[A-Za-z_-]*(?:token|secret|password|passwd|api_?key)[A-Za-z_-]*"
    r"|code(?:_verifier|_challenge)?|state|nonce|device_code|assertion|otp)"
)
_QUOTE = r"(?:\\?[\"']|%22|%27)"
_GAP = r"(?:\s|%20|\+)*"
# Its value, plain or URL-encoded: up to a space, & , ; quote or brace, raw or as %XX.
_SECRET_VALUE = r"(?:%(?![2][0267Cc]|3[Bb]|7[Dd])[0-9A-Fa-f]{2}|[^\s&\"',;{}\[\]\\%<>])+"
_SECRET = re.compile(
    rf"(?P<key>{_SECRET_NAME}{_QUOTE}?{_GAP}(?:[=:]|%3[DdAa]){_GAP}{_QUOTE}?)"
    rf"(?P<value>{_SECRET_VALUE})",
    re.IGNORECASE,
)
_BEARER = re.compile(
    r"(?P<key>\b(?:Bearer|Basic)(?:\s|%20|\+)+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE
)


def redact(text: str) -> str:
    """Hide the values of OAuth secrets (code=, state=, tokens, passwords) in a line shown at -v,
    plain, in JSON or URL-encoded; the names stay, so the line keeps its shape."""
    text = _SECRET.sub(lambda m: m["key"] + "[hidden]", text)
    return _BEARER.sub(lambda m: m["key"] + "[hidden]", text)


def loopback_port(url: str) -> tuple[str, int] | None:
    """(host, port) of an http URL on a loopback host, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or port is None or not 0 < port < 65536:
        return None
    if host in LOOPBACK_HOSTS or f"[{host}]" in LOOPBACK_HOSTS:
        return ("[::1]" if host == "::1" else host), port
    return None


def authorize_url(url: str, *, any_loopback_redirect: bool = False) -> AuthorizeUrl | None:
    """An OAuth authorization request: http(s), with client_id and a response_type or redirect_uri.

    Whether it may be opened (scheme, host) is the browser module's decision, not the parser's.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    query = parse_qs(parts.query)
    redirect = query.get("redirect_uri", [""])[0]
    found = loopback_port(unquote(redirect)) if redirect else None
    oauth = "client_id" in query and bool({"redirect_uri", "response_type"} & query.keys())
    if not oauth and not (any_loopback_redirect and found and parts.scheme == "https"):
        return None
    if found is None:
        return AuthorizeUrl(url=url, redirect_port=None)
    return AuthorizeUrl(url=url, redirect_port=found[1], redirect_host=found[0])


class _Stream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.skipping = False  # inside an over-long line, dropping text until its newline
        self.expect: str | None = None  # "url" or "code": the next non-blank line carries it
        self.prompted = ""  # last prompt text reported, so it is reported once


class Parser:
    """Incremental parser for one remote login command's output."""

    def __init__(
        self,
        provider: Provider | None = None,
        *,
        max_line: int = MAX_LINE,
        loopback_urls: bool = False,
    ) -> None:
        """loopback_urls: also report every loopback http URL in the text as a callback port
        (for `tunnelauth run`, where any CLI's callback must be caught; forwarding an unused
        port is harmless, opening a browser is not, so only authorize URLs are ever opened)."""
        self._max_line = max_line
        self._loopback_urls = loopback_urls
        self._streams: dict[str, _Stream] = {}
        success = provider.success if provider else ()
        failure = (provider.failure if provider else ()) + COMMON_FAILURES
        self._success = tuple(re.compile(p) for p in success)
        self._failure = tuple(re.compile(p) for p in failure)
        self._seen_urls: set[str] = set()

    def feed(self, data: bytes, stream: str = "stdout") -> list[Event]:
        state = self._streams.setdefault(stream, _Stream(stream))
        return self._take(state, state.decoder.decode(data))

    def close(self) -> list[Event]:
        """Flush every stream: a last line without a newline still counts."""
        events: list[Event] = []
        for state in self._streams.values():
            events += self._take(state, state.decoder.decode(b"", final=True))
            if state.pending and not state.skipping:
                events += self._line(state, state.pending)
            state.pending = ""
        return events

    def _take(self, state: _Stream, text: str) -> list[Event]:
        events: list[Event] = []
        if (
            text
            and state.prompted
            and state.pending
            and strip_ansi(state.pending) == state.prompted
        ):
            # The answer to a prompt is typed on the other side of a pipe, so no newline is
            # echoed: what follows belongs on a line of its own.
            line, state.pending = state.pending, ""
            events += self._line(state, line)
        text = text.replace("\r\n", "\n")
        while text:
            head, newline, text = text.partition("\n")
            if state.skipping:
                if newline:
                    state.skipping = False
                continue
            state.pending += head
            if len(state.pending) > self._max_line:
                events += self._line(state, state.pending[: self._max_line])
                state.pending = ""
                state.skipping = not newline
                continue
            if newline:
                line, state.pending = state.pending, ""
                events += self._line(state, line)
        events += self._prompt(state)
        return events

    def _prompt(self, state: _Stream) -> list[Event]:
        tail = strip_ansi(state.pending)
        if not tail or len(tail) > MAX_PROMPT or tail == state.prompted:
            return []
        for pattern, secret in _PROMPTS:
            if pattern.search(tail):
                state.prompted = tail
                return [Prompt(text=tail.strip(), secret=secret)]
        return []

    def _line(self, state: _Stream, raw: str) -> list[Event]:
        # A bare CR rewrites the terminal line: what the user would see is the last part.
        text = strip_ansi(raw).rstrip("\r").rsplit("\r", 1)[-1]
        state.prompted = ""
        events: list[Event] = [Line(text=text, stream=state.name)]
        stripped = text.strip()
        if state.expect and stripped:
            expect, state.expect = state.expect, None
            if expect == "url" and _URL.fullmatch(stripped):
                return [*events, VerificationUrl(stripped)]
            if expect == "code" and _USER_CODE.match(stripped):
                return [*events, UserCode(stripped)]
        if _OPEN_NEXT.match(text):
            state.expect = "url"
        elif _CODE_NEXT.match(text):
            state.expect = "code"
        events += self._facts(text)
        return events

    def _facts(self, text: str) -> list[Event]:
        events: list[Event] = []
        for pattern in self._success:
            match = pattern.search(text)
            if match:
                label = match.groupdict().get("label")
                return [Success(label=label or None)]
        for pattern in self._failure:
            match = pattern.search(text)
            if match:
                return [Failure(message=match.group("message").strip())]
        if m := _WAITING.search(text):
            port = int(m["port"])
            if 0 < port < 65536:
                events.append(CallbackPort(port, listening=True, source="waiting", host=m["host"]))
            return events
        if m := _HINT.search(text):
            port = int(m["port"])
            if 0 < port < 65536:
                events.append(CallbackPort(port, listening=False, source="hint", host=m["host"]))
            return events
        if m := _REDIRECT_LINE.match(text.strip()):
            loopback = loopback_port(m["url"])
            if loopback:
                events.append(
                    CallbackPort(
                        loopback[1], listening=False, source="redirect_uri", host=loopback[0]
                    )
                )
            return events
        if m := _DEVICE_OPEN.match(text):
            return [VerificationUrl(m["url"])]
        if m := _DEVICE_CODE.match(text):
            return [UserCode(m["code"])]
        if m := _TOKEN_FILE.match(text):
            return [TokenFile(m["path"])]
        for url in _URL.findall(text):
            found = authorize_url(url, any_loopback_redirect=self._loopback_urls)
            if found and url not in self._seen_urls:
                self._seen_urls.add(url)
                events.append(found)
                if found.redirect_port is not None:
                    events.append(
                        CallbackPort(
                            found.redirect_port,
                            listening=False,
                            source="redirect_uri",
                            host=found.redirect_host or "127.0.0.1",
                        )
                    )
            elif self._loopback_urls and (local := loopback_port(url)):
                events.append(CallbackPort(local[1], listening=False, source="url", host=local[0]))
        return events
