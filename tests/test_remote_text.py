"""Nothing the remote sends can drive the laptop: inert text on every path to a terminal, the
browser policy, the laptop ports a remote may ask for, and redaction at -v. Pure; no lab."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnelauth import browser, localport, output, parse
from tunnelauth.flow import LoginResult
from tunnelauth.providers import lookup
from tunnelauth.text import inert

BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unsafe(text: str) -> list[str]:
    """Every character a terminal would act on: C0 but tab/newline, DEL, C1, bidi controls."""
    return [
        c
        for c in text
        if (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F or c in BIDI
    ]


NASTY = [
    "\x1b",
    "\x1b[",
    "\x1b]",
    "\x1b\x1b[[31m",
    "\x1b[31m",
    "\x1b]52;c;aGVsbG8=\x07",
    "\x1b]0;title\x1b\\",
    "\x1bc",
    "\x1b[2J",
    "\x1b[H",
    "\x1bP1$r\x1b\\",
    "\x9b31m",
    "\x9d52;c;x\x9c",
    "\x90q\x9c",
    "\x07",
    "\x08",
    "\r",
    "\x7f",
    "\x00",
    "\u202e",
    "\u2066",
    "\u200f",
    "\u061c",
    "\x1b[1;1H\x1b[K",
    "\x1b[8m",
    "\x1b\x1b]]52;;",
    "https://auth.x.ai/",
    "code=SECRET",
    "\t",
    "\n",
]
TEXT = st.one_of(
    st.text(),
    st.binary().map(lambda b: b.decode("utf-8", "replace")),
    st.binary().map(lambda b: b.decode("latin-1")),  # raw 0x80-0x9F as U+0080-U+009F
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=5)), max_size=30).map("".join),
)
OURS = re.compile(r"\x1b\[(?:0|1|2|31|33)m")  # the colours the reporter itself paints


def console(color: bool) -> tuple[output.ConsoleReporter, io.StringIO, io.StringIO]:
    err, out = io.StringIO(), io.StringIO()
    reporter = output.ConsoleReporter(verbosity=2, err=err, out=out)
    reporter.color = color
    return reporter, err, out


def every_path(
    reporter: output.ConsoleReporter, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reporter.remote_line(text, "stdout")
    reporter.remote_line(text, "stderr")
    reporter.error(text)
    reporter.failure(f"hermes failed: {text} (exit status 1)", 1)
    reporter.warn(text)
    reporter.step(text)
    reporter.step(text, "started", command=text)
    reporter.detail(text)
    reporter.show_url(text, "authorize", None)
    reporter.show_url(text, "authorize", False)
    reporter.show_url(text, "authorize", False, host=text)
    reporter.show_code(text)
    reporter.result(
        LoginResult(provider=text, destination=text, label=text, token_file=text, token_mode=0o600)
    )
    monkeypatch.setattr(output, "_tty", lambda stream: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("answer\n"))
    assert reporter.ask(text, secret=False) == "answer"


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_console_output_is_inert_on_every_path(text: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for color in (False, True):
            reporter, err, out = console(color)
            every_path(reporter, text, mp)
            shown = OURS.sub("", err.getvalue() + out.getvalue())
            assert unsafe(shown) == [], (color, repr(text), repr(shown))


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_json_output_is_inert_on_every_path(text: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = output.JsonReporter(out=out)
    reporter.err = err
    with pytest.MonkeyPatch.context() as mp:
        every_path(reporter, text, mp)
    assert unsafe(out.getvalue() + err.getvalue()) == []
    for line in out.getvalue().splitlines():
        decoded = json.dumps(json.loads(line), ensure_ascii=False)  # what a consumer gets back
        assert unsafe(decoded) == [], decoded


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=200), st.sampled_from([n.encode() for n in NASTY])),
        max_size=20,
    )
)
def test_remote_bytes_through_the_parser_reach_the_terminal_inert(chunks: list[bytes]) -> None:
    reporter, err, out = console(False)
    parser = parse.Parser(lookup("xai"))
    events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.close()
    for event in events:
        if isinstance(event, parse.Line):
            reporter.remote_line(event.text, event.stream)
        elif isinstance(event, (parse.AuthorizeUrl, parse.VerificationUrl)):
            reporter.show_url(event.url, "authorize", None)
        elif isinstance(event, parse.UserCode):
            reporter.show_code(event.code)
        elif isinstance(event, parse.Failure):
            reporter.error(event.message)
        elif isinstance(event, parse.Success):
            reporter.result(LoginResult("xai-oauth", "target", event.label, None, None))
        elif isinstance(event, parse.Prompt):
            reporter.warn(event.text)
    assert unsafe(err.getvalue() + out.getvalue()) == []


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b\x1b[[31m", "\\x1b31m"),  # one pass of stripping would leave a working ESC [31m
        ("\x1b]52;c;aGVsbG8=\x07ok", "ok"),  # OSC 52: the clipboard write is gone
        ("a\x1bcb", "a\\x1bcb"),  # ESC c, the reset: shown, not done
        ("x\x9b2Jy", "x\\x9b2Jy"),  # 8-bit CSI
        ("abc\u202egpj.exe", "abc\\u202egpj.exe"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("over\rwrite", "over\\rwrite"),
        ("del\x7f", "del\\x7f"),
    ],
)
def test_inert_examples(raw: str, shown: str) -> None:
    assert inert(raw) == shown


@given(st.text())
def test_inert_changes_nothing_in_plain_text_and_is_idempotent(text: str) -> None:
    once = inert(text)
    assert inert(once) == once
    if not unsafe(text) and not any(
        0xD800 <= ord(c) <= 0xDFFF or c in "\u2028\u2029" for c in text
    ):
        assert once == text


# -- the browser policy ---------------------------------------------------------------------------

XAI = lookup("xai").authorize_hosts
AUTH = "https://auth.x.ai/oauth2/auth?response_type=code&client_id=x&state=abc"


def test_the_providers_url_is_opened_once_and_shown() -> None:
    policy = browser.Policy(XAI)
    first = policy.decide(AUTH, "authorize")
    assert first == browser.Decision(show=True, open=True, host="auth.x.ai")
    assert policy.decide(AUTH, "authorize") is None  # the same URL again: nothing to do
    second = policy.decide(AUTH + "2", "authorize")
    assert (
        second is not None
        and second.show
        and not second.open
        and "one was opened already" in str(second.warning)
    )
    # one verification URL may still be opened
    assert policy.decide("https://accounts.x.ai/device?user_code=ABCD", "verification").open  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://auth.x.ai.evil.test/oauth2/auth?client_id=x", "auth.x.ai.evil.test"),
        ("https://evil.test/x?u=https://auth.x.ai/", "evil.test"),
        ("https://аuth.x.ai/oauth2/auth", "аuth.x.ai"),  # noqa: RUF001 - a Cyrillic a, on purpose
    ],
)
def test_a_url_off_the_providers_hosts_is_shown_not_opened(url: str, host: str) -> None:
    decision = browser.Policy(XAI).decide(url, "authorize")
    assert decision is not None and decision.show and not decision.open
    assert f"the URL is on {host}" in str(
        decision.warning
    ) and f"--allow-host {host} opens it" in str(decision.warning)
    allowed = browser.Policy(XAI, (host,)).decide(url, "authorize")
    assert allowed is not None and allowed.open and allowed.warning is None


@pytest.mark.parametrize(
    "url",
    [
        "https://auth.x.ai/oauth2/auth?client_id=x\x1b[8m",
        "https://auth.x.ai/oauth2/auth?client_id=x\x9b",
        "https://auth.x.ai/oauth2/auth?client_id=x\u202e",
        "https://auth.x.ai/oauth2/auth?client_id=x y",
        "https://auth.x.ai/oauth2/auth?client_id=x\r",
    ],
)
def test_a_url_that_needed_cleaning_is_never_opened(url: str) -> None:
    decision = browser.Policy(XAI, ("auth.x.ai",)).decide(url, "authorize")
    assert decision is not None and decision.show and not decision.open
    assert "control characters" in str(decision.warning)
    run = browser.Policy((), running=True).decide(url, "authorize", 1455)
    assert run is not None and not run.open


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("javascript:alert(1)//?client_id=x", "javascript"),
        ("https://user:pw@auth.x.ai/oauth2/auth", "credentials"),
        ("https:///nohost", "without a host"),
    ],
)
def test_urls_never_to_open_are_refused(url: str, why: str) -> None:
    with pytest.raises(browser.UnsafeUrl, match=why):
        browser.Policy(XAI).decide(url, "authorize")


def test_a_flood_of_300_urls_opens_one_and_shows_a_few() -> None:
    policy = browser.Policy(XAI)
    decisions = [policy.decide(f"{AUTH}&n={i}", "authorize") for i in range(300)]
    assert sum(bool(d and d.open) for d in decisions) == 1
    assert sum(bool(d and d.show) for d in decisions) == browser.MAX_SHOWN
    warnings = [d.warning for d in decisions if d and d.warning]
    assert len(warnings) == browser.MAX_SHOWN  # one per shown extra URL, and one "no more"
    assert "not showing or opening any more" in warnings[-1]


def test_run_opens_one_url_per_callback_port_and_a_few_in_all() -> None:
    policy = browser.Policy((), running=True)
    assert policy.decide("https://login.example.test/a?x=1", "authorize", 8000).open  # type: ignore[union-attr]
    again = policy.decide("https://login.example.test/a?x=2", "authorize", 8000)
    assert again is not None and not again.open
    assert policy.decide("https://other.example.test/a", "authorize", 18000).open  # type: ignore[union-attr]
    opened = [
        policy.decide(f"https://x.example.test/{p}", "authorize", p) for p in range(20000, 20010)
    ]
    assert sum(bool(d and d.open) for d in opened) == browser.MAX_RUN_OPENS - 2


# -- laptop ports -----------------------------------------------------------------------------------


def test_privileged_ports_are_refused_once_with_a_warning() -> None:
    budget = localport.PortBudget(localport.MAX_LOGIN_PORTS, "a login")
    ok, warning = budget.admit(22)
    assert not ok and "privileged" in str(warning) and "port 22" in str(warning)
    assert budget.admit(22) == (False, None)
    assert budget.admit(1024) == (True, None)
    assert budget.admit(1024) == (True, None)


def test_run_forwards_at_most_the_cap_and_warns_once() -> None:
    budget = localport.PortBudget(localport.MAX_RUN_FORWARDS, "`run`")
    results = [budget.admit(port) for port in range(20000, 21500)]
    assert sum(ok for ok, _ in results) == localport.MAX_RUN_FORWARDS
    warnings = [w for _, w in results if w]
    assert len(warnings) == 1 and f"at most {localport.MAX_RUN_FORWARDS}" in warnings[0]


def test_a_refused_busy_port_frees_its_place() -> None:
    budget = localport.PortBudget(2, "`run`")
    assert budget.admit(8080)[0]
    budget.refuse(8080)
    assert budget.admit(8080) == (False, None)
    assert budget.admit(9000)[0] and budget.admit(9001)[0]


# -- redaction at -v --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET /callback?code=SECRET1&state=SECRET2 HTTP/1.1", "SECRET"),
        ("redirect%3Fcode%3DSECRET1%252F%26state%3DSECRET2%26x%3D1", "SECRET"),
        ("body=%7B%22access_token%22%3A%22SECRET1%22%2C%22x%22%3A1%7D", "SECRET"),
        (
            '{"access_token": "SECRET1", "refresh_token":"SECRET2", "id_token" : "SECRET3"}',
            "SECRET",
        ),
        ('{"accessToken":"SECRET1","password": "SECRET2"}', "SECRET"),
        ("client_secret=SECRET1&code_verifier=SECRET2", "SECRET"),
        ("Authorization: Bearer SECRET1", "SECRET"),
        ("Authorization: Basic SECRET1", "SECRET"),
        ("token=SECRET1 and more", "SECRET"),
        ('{\\"id_token\\": \\"SECRET1\\"}', "SECRET"),
    ],
)
def test_redact_covers_encoded_and_usual_token_names(line: str, secret: str) -> None:
    shown = parse.redact(line)
    assert secret not in shown and "[hidden]" in shown, shown


def test_redact_keeps_ordinary_lines() -> None:
    for line in (
        "xAI token exchange failed (HTTP 400). Response: {}",
        "Waiting for callback on http://127.0.0.1:56121/callback",
        "response_type=code&client_id=lab",
    ):
        assert parse.redact(line) == line


# -- the doctor's report -----------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(TEXT)
def test_doctor_report_is_inert_in_table_and_json(text: str) -> None:
    from tunnelauth.doctor.model import Check, DestinationReport, DoctorReport, Status
    from tunnelauth.doctor.render import as_json, as_table

    report = DoctorReport(
        (DestinationReport(text, (Check(text, Status.WARN, f"hermes {text} found", 0.1),)),)
    )
    table, doc = io.StringIO(), io.StringIO()
    as_table(report, table)
    as_json(report, doc)
    assert unsafe(table.getvalue()) == []
    assert unsafe(json.dumps(json.loads(doc.getvalue()), ensure_ascii=False)) == []
