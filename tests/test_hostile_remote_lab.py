"""A hostile remote (tests/fakes/hostile_hermes.py as hermes, or as `run`'s command) cannot drive
the laptop: its terminal, its browser, its ports. In the SSH lab, tunnelauth as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab

BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MARK_PORT = 47001  # the flood's last line moves the callback here: proof every URL was read


def unsafe(text: str) -> list[str]:
    return [
        c
        for c in text
        if (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F or c in BIDI
    ]


@pytest.fixture(scope="module")
def hostile(lab: Lab) -> Path:
    return e2e.install_script(lab, e2e.FAKES / "hostile_hermes.py", "hostile-hermes")


def as_hermes(hostile: Path, provider: e2e.Provider, mode: str) -> list[str]:
    return [
        "--hermes",
        str(hostile),
        "--remote-env",
        f"HOSTILE_MODE={mode}",
        "--remote-env",
        f"HOSTILE_HOST={provider.url.split('//', 1)[1]}",
    ]


# == the terminal ================================================================================


@pytest.mark.parametrize("verbosity", ["-v", "-q", "--json"])
@pytest.mark.parametrize("mode", ["label", "error"])
def test_escape_sequences_never_reach_the_laptops_terminal(
    lab: Lab, laptop: e2e.Laptop, hostile: Path, provider: e2e.Provider, mode: str, verbosity: str
) -> None:
    run = laptop.run(["xai", "target", verbosity, *as_hermes(hostile, provider, mode)])
    assert run.returncode == (0 if mode == "label" else 1), run.output
    assert unsafe(run.stdout) == [] and unsafe(run.stderr) == [], (run.stdout, run.stderr)
    if verbosity == "--json":
        events = [json.loads(line) for line in run.stdout.splitlines()]
        decoded = json.dumps(events, ensure_ascii=False)
        assert unsafe(decoded) == [], decoded
        last = events[-1]
        assert last["event"] == ("success" if mode == "label" else "failure"), events
        shown = str(last.get("label") or last.get("message"))
    elif mode == "label":
        shown = run.stdout
        assert run.stdout.startswith("Logged in to xai-oauth as lab"), run.stdout
    else:
        errors = [line for line in run.stderr.splitlines() if line.startswith("tunnelauth: error:")]
        assert len(errors) == 1 and "login refused" in errors[0], run.stderr
        shown = errors[0]
    assert (
        "\\x9b" in shown and "\\u202e" in shown
    )  # the controls are visible as escapes, not acted on
    if verbosity == "-v":
        assert "remote stdout: starting" in run.stderr and "remote stderr: progress" in run.stderr


# == the browser =================================================================================


@pytest.mark.parametrize("mode", ["spoof", "escaped"])
def test_a_spoofed_url_is_shown_and_not_opened(
    lab: Lab, laptop: e2e.Laptop, hostile: Path, provider: e2e.Provider, mode: str
) -> None:
    proc = laptop.start(["xai", "target", *as_hermes(hostile, provider, mode)])
    seen = e2e.wait_for_stderr(proc, "Open this URL in your browser (authorize):")
    run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    shown = seen + run.stderr
    assert unsafe(shown) == [], shown
    assert laptop.browser_runs() == [] and "Opening the" not in shown
    warning = next(line for line in shown.splitlines() if line.startswith("warning:"))
    url = next(line.strip() for line in shown.splitlines() if line.startswith("  http"))
    # What is on the screen is the whole URL: its real host first, the spoof after it.
    assert url.startswith(f"http://{provider.url.split('//', 1)[1]}/oauth2/auth?"), url
    if mode == "spoof":
        assert "https://auth.x.ai/" in url
        assert f"the URL is on {lab.provider_ip}, not on auth.x.ai" in warning, warning
        assert f"--allow-host {lab.provider_ip} opens it" in warning, warning
    else:
        assert "\\x1b\\x9b" in url and "control characters" in warning, (url, warning)


def test_a_spoofed_url_opens_with_allow_host_only_when_clean(
    lab: Lab, laptop: e2e.Laptop, hostile: Path, provider: e2e.Provider
) -> None:
    proc = laptop.start(
        ["xai", "target", "--allow-host", lab.provider_ip, *as_hermes(hostile, provider, "spoof")]
    )
    e2e.wait_until(laptop.browser_runs, 20, "the allowed URL was never opened")
    run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    assert [r["url"] for r in laptop.browser_runs()] == [f"{provider.url}/oauth2/auth"]
    assert "Opening the authorize URL" in run.stderr
    # With escapes inside, --allow-host does not help: what the browser got would not be what is shown.
    escaped = laptop.start(
        ["xai", "target", "--allow-host", lab.provider_ip, *as_hermes(hostile, provider, "escaped")]
    )
    seen = e2e.wait_for_stderr(escaped, "Open this URL in your browser (authorize):")
    assert "control characters" in seen + e2e.finish(escaped, e2e.SIGTERM).stderr
    assert len(laptop.browser_runs()) == 1


def test_a_flood_of_authorize_urls_opens_one_and_keeps_the_screen_usable(
    lab: Lab, laptop: e2e.Laptop, hostile: Path, provider: e2e.Provider
) -> None:
    proc = laptop.start(
        [
            "xai",
            "target",
            "--allow-host",
            lab.provider_ip,
            *as_hermes(hostile, provider, "flood"),
            "--remote-env",
            f"HOSTILE_MARK={MARK_PORT}",
        ]
    )
    seen = e2e.wait_for_stderr(proc, f"forwarding 127.0.0.1:{MARK_PORT}")  # after all 300 URLs
    e2e.wait_until(laptop.browser_runs, 20, "no URL was opened")
    run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    assert len(laptop.browser_runs()) == 1, laptop.browser_runs()
    lines = (seen + run.stderr).splitlines()
    assert len(lines) <= 25, "\n".join(lines)
    assert sum("not showing or opening any more" in line for line in lines) == 1, lines


# == the laptop's ports ==========================================================================


def test_a_privileged_callback_port_is_never_listened_on(
    lab: Lab, laptop: e2e.Laptop, hostile: Path, provider: e2e.Provider
) -> None:
    assert 22 not in lab.listening_ports("laptop")
    proc = laptop.start(["xai", "target", *as_hermes(hostile, provider, "privileged")])
    seen = e2e.wait_for_stderr(proc, "privileged port")
    try:
        assert 22 not in lab.listening_ports(
            "laptop"
        )  # tunnelauth runs as root here: it could have
    finally:
        run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    warning = next(line for line in (seen + run.stderr).splitlines() if "privileged" in line)
    assert warning.startswith("warning:") and "port 22" in warning, warning
    assert "forwarding 127.0.0.1:22 " not in seen + run.stderr
    assert laptop.browser_runs() == []


def test_run_forwards_at_most_its_cap_of_1500_printed_ports(
    lab: Lab, laptop: e2e.Laptop, hostile: Path
) -> None:
    proc = laptop.start(["run", "target", "-v", "--", str(hostile), "ports"])
    seen = e2e.wait_for_stderr(proc, "remote stdout: ALL PRINTED", timeout=60)
    try:
        forwarded = {p for p in lab.listening_ports("laptop") if 20000 <= p < 21500}
    finally:
        run = e2e.finish(proc, e2e.SIGTERM)
    assert forwarded == set(range(20000, 20016)), sorted(forwarded)
    text = seen + run.stderr
    assert text.count("forwarding 127.0.0.1:") == 16
    caps = [line for line in text.splitlines() if "loopback ports" in line]
    assert len(caps) == 1 and caps[0].startswith("warning:") and "at most 16" in caps[0], caps
    assert not {p for p in lab.listening_ports("laptop") if 20000 <= p < 21500}


def test_run_mentioning_a_busy_laptop_port_warns_and_the_command_finishes(
    lab: Lab, laptop: e2e.Laptop, hostile: Path
) -> None:
    holder = e2e.hold_port(lab, "laptop", 8080)
    try:
        run = laptop.run(
            ["run", "target", "--remote-env", "HOSTILE_EXIT=7", "--", str(hostile), "mention"]
        )
    finally:
        holder.kill()
        holder.wait()
    assert run.returncode == 7, run.output  # the command's own status, not tunnelauth's exit 3
    assert "INFO server on http://localhost:8080/api" in run.stdout
    warning = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert (
        len(warning) == 1 and "not forwarding port 8080" in warning[0] and "in use" in warning[0]
    ), run.stderr
    assert "tunnelauth: error" not in run.stderr


def test_run_names_the_host_it_opens(lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider) -> None:
    cli = e2e.install_script(lab, e2e.FAKES / "loopback_cli.py", "loopback-cli")
    run = laptop.run(
        ["run", "target", "--", str(cli), "--provider", provider.url, "--style", "encoded"]
    )
    assert run.returncode == 0, run.output
    line = next(line for line in run.stderr.splitlines() if "opening the authorize URL" in line)
    assert line.endswith(f"(host {lab.provider_ip}):"), line
    assert len(laptop.browser_runs()) == 1
