"""The parser on the recorded hermes output (shared/transcripts) and on variants of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnelauth import parse
from tunnelauth.parse import (
    AuthorizeUrl,
    CallbackPort,
    Failure,
    Line,
    Parser,
    Prompt,
    Success,
    TokenFile,
    UserCode,
    VerificationUrl,
)
from tunnelauth.providers import lookup

# Copies of shared/transcripts: real hermes output recorded over SSH (see their README).
TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"


def transcript(name: str) -> bytes:
    path = TRANSCRIPTS / name
    if not path.exists():
        pytest.fail(f"missing transcript {path}")
    return path.read_bytes()


def events(data: bytes, provider: str, chunk: int | None = None) -> list[parse.Event]:
    parser = Parser(lookup(provider))
    found: list[parse.Event] = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        found += parser.feed(data[i : i + step])
    found += parser.close()
    return [e for e in found if not isinstance(e, Line)]


CHUNKS = [None, 1, 7, 64]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_xai_018_success(chunk: int | None) -> None:
    got = events(transcript("hermes-0.18.0-xai-oauth-success.txt"), "xai", chunk)
    urls = [e for e in got if isinstance(e, AuthorizeUrl)]
    assert len(urls) == 1
    assert urls[0].url.startswith("https://auth.x.ai/oauth2/auth?response_type=code")
    assert urls[0].redirect_port == 56121
    ports = [e for e in got if isinstance(e, CallbackPort)]
    assert {(p.port, p.source) for p in ports} == {
        (56121, "redirect_uri"),
        (56121, "waiting"),
        (56121, "hint"),
    }
    assert [p.listening for p in ports if p.source == "waiting"] == [True]
    assert got[-1] == Success(label="lab@example.test")
    assert not [e for e in got if isinstance(e, Failure)]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_xai_018_bumped_port_is_followed(chunk: int | None) -> None:
    got = events(transcript("hermes-0.18.0-xai-oauth-bumped.txt"), "xai", chunk)
    assert {e.port for e in got if isinstance(e, CallbackPort)} == {33785}
    assert [e.redirect_port for e in got if isinstance(e, AuthorizeUrl)] == [33785]
    assert not [e for e in got if isinstance(e, (Success, Failure))]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_xai_019_device_code(chunk: int | None) -> None:
    got = events(transcript("hermes-0.19.0-xai-oauth-device-success.txt"), "xai", chunk)
    assert got == [
        VerificationUrl("https://accounts.x.ai/device?user_code=1366-40B5"),
        UserCode("1366-40B5"),
        Success(label="lab@example.test"),
    ]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_spotify_success(chunk: int | None) -> None:
    got = events(transcript("hermes-0.19.0-spotify-success.txt"), "spotify", chunk)
    urls = [e for e in got if isinstance(e, AuthorizeUrl)]
    assert [u.redirect_port for u in urls] == [43827]
    # Spotify prints no "Waiting for callback" line: nothing claims the port is listening.
    assert not [e for e in got if isinstance(e, CallbackPort) and e.listening]
    assert Success(label=None) in got
    assert TokenFile("/home/labuser/.hermes/auth.json") in got


def test_spotify_port_busy_is_a_failure() -> None:
    got = events(transcript("hermes-0.19.0-spotify-port-busy.txt"), "spotify")
    failures = [e for e in got if isinstance(e, Failure)]
    assert failures == [
        Failure(
            "Could not bind Spotify callback server on 127.0.0.1:43827: [Errno 98] Address already in use"
        )
    ]
    assert not [e for e in got if isinstance(e, Success)]


def test_unknown_provider_is_a_failure() -> None:
    got = events(transcript("hermes-0.19.0-auth-add-spotify-unknown.txt"), "spotify")
    assert got == [Failure("Unknown provider: spotify")]


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("hermes-0.18.0-xai-oauth-success.txt", "xai"),
        ("hermes-0.18.0-xai-oauth-bumped.txt", "xai"),
        ("hermes-0.19.0-spotify-success.txt", "spotify"),
        ("hermes-0.19.0-xai-oauth-device-success.txt", "xai"),
    ],
)
def test_crlf_and_pty_style_output_give_the_same_events(name: str, provider: str) -> None:
    data = transcript(name)
    plain = events(data, provider)
    assert events(data.replace(b"\n", b"\r\n"), provider, 5) == plain


def test_codex_coloured_device_code() -> None:
    out = (
        b"To continue, follow these steps:\n\n"
        b"  1. Open this URL in your browser:\n"
        b"     \x1b[94mhttps://auth.openai.com/codex/device\x1b[0m\n\n"
        b"  2. Enter this code:\n"
        b"     \x1b[94mABCD-1234\x1b[0m\n\n"
        b"Waiting for sign-in... (press Ctrl+C to cancel)\n"
        b'Added openai-codex OAuth credential #1: "me@example.test"\n'
    )
    assert events(out, "codex", 3) == [
        VerificationUrl("https://auth.openai.com/codex/device"),
        UserCode("ABCD-1234"),
        Success("me@example.test"),
    ]


def test_anthropic_paste_prompt_is_seen_without_a_newline() -> None:
    parser = Parser(lookup("anthropic"))
    got = parser.feed(
        b"  https://claude.ai/oauth/authorize?code=true&client_id=abc&response_type=code"
        b"&redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback&state=xyz\n\n"
        b"After authorizing, you'll see a code. Paste it below.\n\nAuthorization code: "
    )
    urls = [e for e in got if isinstance(e, AuthorizeUrl)]
    assert len(urls) == 1 and urls[0].redirect_port is None
    assert [e for e in got if isinstance(e, Prompt)] == [Prompt("Authorization code:", secret=True)]
    # The same pending prompt is reported once, not again on every chunk.
    assert not [e for e in parser.feed(b"") if isinstance(e, Prompt)]


@pytest.mark.parametrize(
    ("prompt", "secret"),
    [
        (b"Spotify Client ID: ", False),
        (b"Import these credentials? [Y/n]: ", False),
        (b"xAI loopback callback timed out.\nCallback URL: ", True),
    ],
)
def test_prompts(prompt: bytes, secret: bool) -> None:
    got = [e for e in Parser(lookup("xai")).feed(prompt) if isinstance(e, Prompt)]
    assert len(got) == 1 and got[0].secret is secret


def test_utf8_split_across_reads() -> None:
    data = "Remote session detected — SSH tunnel required\n".encode()
    cut = data.index(b"\xe2") + 1
    parser = Parser(lookup("xai"))
    lines = [e for e in parser.feed(data[:cut]) + parser.feed(data[cut:]) if isinstance(e, Line)]
    assert [line.text for line in lines] == ["Remote session detected — SSH tunnel required"]


def test_megabyte_line_is_cut_and_memory_stays_bounded() -> None:
    parser = Parser(lookup("xai"), max_line=1024)
    for _ in range(1000):
        parser.feed(b"x" * 4096)
        assert all(len(s.pending) <= 1024 for s in parser._streams.values())
    got = parser.feed(b"\nWaiting for callback on http://127.0.0.1:40001/callback\n")
    assert CallbackPort(40001, listening=True, source="waiting") in got


@pytest.mark.parametrize(
    "line",
    [
        "INFO server started on http://localhost:8080/",
        "see https://example.com/docs?redirect_uri=http://127.0.0.1:9000/cb",  # no client_id
        "Waiting for callback on http://evil.example:56121/callback",
        "Waiting for callback on http://127.0.0.1:99999/callback",
        "ssh -N -L 56121:198.18.0.5:56121 user@host",
        "javascript:alert(1)",
        "http://127.0.0.1.evil.example:56121/callback",
    ],
)
def test_lookalikes_open_and_forward_nothing(line: str) -> None:
    got = events(line.encode() + b"\n", "xai")
    assert not [e for e in got if isinstance(e, (AuthorizeUrl, CallbackPort))], got


def test_redact_hides_secrets_but_keeps_the_shape() -> None:
    line = '127.0.0.1 - "GET /callback?code=SECRETCODE&state=SECRETSTATE HTTP/1.1" {"access_token": "TOK"}'
    shown = parse.redact(line)
    assert "SECRETCODE" not in shown and "SECRETSTATE" not in shown and "TOK" not in shown
    assert "GET /callback?code=" in shown


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_crash_and_stay_bounded(chunks: list[bytes]) -> None:
    parser = Parser(lookup("xai"), max_line=256)
    for chunk in chunks:
        for event in parser.feed(chunk, "stdout"):
            if isinstance(event, AuthorizeUrl):
                assert "client_id=" in event.url
            if isinstance(event, CallbackPort):
                assert 0 < event.port < 65536
        assert all(len(s.pending) <= 256 for s in parser._streams.values())
    parser.close()


_alphabet = st.sampled_from(
    [
        "\x1b[94m",
        "\x1b[0m",
        "\r",
        "\n",
        "\r\n",
        " ",
        "http://",
        "https://",
        "127.0.0.1",
        "localhost",
        ":",
        "56121",
        "/callback",
        "?",
        "&",
        "client_id=x",
        "redirect_uri=",
        "%3A",
        "Waiting for callback on ",
        "ssh -N -L ",
        'Saved xai-oauth OAuth credentials: "a"',
        "é",
        "—",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_alphabet, max_size=60), st.integers(min_value=1, max_value=17))
def test_tokens_soup_is_parsed_the_same_in_any_chunking(parts: list[str], chunk: int) -> None:
    data = "".join(parts).encode()
    assert events(data, "xai", chunk) == events(data, "xai")


def test_output_after_an_answered_prompt_starts_a_new_line() -> None:
    parser = Parser(lookup("anthropic"))
    first = parser.feed(b"Authorization code: ")
    assert [e for e in first if isinstance(e, Prompt)]
    later = parser.feed(b'Added anthropic OAuth credential #1: "me@example.test"\n')
    assert Success("me@example.test") in later
    assert [e.text for e in later if isinstance(e, Line)] == [
        "Authorization code: ",
        'Added anthropic OAuth credential #1: "me@example.test"',
    ]


# Output of other releases, reconstructed from the hermes-agent sources of each release (the same
# strings tests/fakes/fake_hermes.py prints, checked there against the real wheels).
XAI_014 = b"""Open this URL to authorize Hermes with xAI:
https://auth.x.ai/oauth2/auth?response_type=code&client_id=b1a00492&redirect_uri=http%3A%2F%2F127.0.0.1%3A41234%2Fcallback&scope=openid&code_challenge=abc&code_challenge_method=S256&state=0123456789abcdef0123456789abcdef

Waiting for callback on http://127.0.0.1:41234/callback

Remote session detected. Your browser will redirect to
  http://127.0.0.1:41234/callback
which the loopback listener on THIS machine is waiting on. If your
browser is on a different machine, forward the port first from your
local machine in a separate terminal:

  ssh -N -L 41234:127.0.0.1:41234 <user>@<this-host>

Then open the authorize URL above in your local browser.
SSH/jump-box guide: https://hermes-agent.nousresearch.com/docs/guides/oauth-over-ssh

Added xai-oauth OAuth credential #2: "lab@example.test"
"""

MINIMAX = """Starting Hermes login via MiniMax (global) OAuth...
Portal: https://api.minimax.io

To continue:
  1. Open: https://www.minimax.io/oauth/device?user_code=ABCD-EFGH
  2. If prompted, enter code: ABCD-EFGH
Waiting for approval...
\u2713 MiniMax OAuth login successful.
Added minimax-oauth OAuth credential #1: "lab@example.test"
""".encode()

NOUS_IMPORT = b"""
Found existing Nous OAuth credentials at /home/u/.hermes/shared/nous_auth.json
Import these credentials? [Y/n]: """


def test_xai_014_hint_without_dividers_and_added_wording() -> None:
    got = events(XAI_014, "xai", 9)
    assert {e.port for e in got if isinstance(e, CallbackPort)} == {41234}
    assert [e for e in got if isinstance(e, Success)] == [Success("lab@example.test")]


@pytest.mark.parametrize(
    "line",
    [
        'Saved xai-oauth OAuth credentials: "lab@example.test"',  # 0.16.0 - 0.18.1
        'Added xai-oauth OAuth credential #1: "lab@example.test"',  # 0.14.0, 0.15.0, 0.19.0
    ],
)
def test_xai_success_wordings_of_every_release(line: str) -> None:
    assert events(line.encode() + b"\n", "xai") == [Success("lab@example.test")]


def test_minimax_device_code() -> None:
    got = events(MINIMAX, "minimax", 4)
    assert got[:2] == [
        VerificationUrl("https://www.minimax.io/oauth/device?user_code=ABCD-EFGH"),
        UserCode("ABCD-EFGH"),
    ]
    assert isinstance(got[-1], Success)


def test_nous_import_prompt() -> None:
    got = [e for e in Parser(lookup("nous")).feed(NOUS_IMPORT) if isinstance(e, Prompt)]
    assert got == [Prompt("Import these credentials? [Y/n]:", secret=False)]


@pytest.mark.parametrize(
    ("stderr_line", "message"),
    [
        (
            "hermes_cli.auth.AuthError: xAI authorization timed out waiting for the local callback.",
            "xAI authorization timed out waiting for the local callback.",
        ),
        (
            "hermes_cli.auth.AuthError: xAI authorization failed: access_denied",
            "xAI authorization failed: access_denied",
        ),
        (
            "hermes_cli.auth.AuthError: xAI authorization failed: state mismatch.",
            "xAI authorization failed: state mismatch.",
        ),
        (
            "hermes_cli.auth.AuthError: xAI token exchange failed (HTTP 400). Response: {}",
            "xAI token exchange failed (HTTP 400). Response: {}",
        ),
        (
            "hermes_cli.auth.AuthError: xAI OIDC discovery failed: [Errno -3] Temporary failure in name resolution",
            "xAI OIDC discovery failed: [Errno -3] Temporary failure in name resolution",
        ),
        (
            "hermes: error: unrecognized arguments: --manual-paste",
            "unrecognized arguments: --manual-paste",
        ),
        ("RuntimeError: Nous device authorization expired", "Nous device authorization expired"),
    ],
)
def test_failures_of_every_release(stderr_line: str, message: str) -> None:
    parser = Parser(lookup("xai"))
    got = parser.feed(
        b'Traceback (most recent call last):\n  File "x", line 1\n' + stderr_line.encode() + b"\n",
        "stderr",
    )
    assert [e for e in got if isinstance(e, Failure)] == [Failure(message)]


def test_anthropic_wrong_code_lines() -> None:
    parser = Parser(lookup("anthropic"))
    got = parser.feed(b"Token exchange failed: HTTP Error 400: Bad Request\n")
    got += parser.feed(b"Anthropic OAuth login did not return credentials.\n", "stderr")
    assert [e.message for e in got if isinstance(e, Failure)] == [
        "Token exchange failed: HTTP Error 400: Bad Request",
        "Anthropic OAuth login did not return credentials.",
    ]
