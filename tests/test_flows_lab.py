"""Every Hermes login flow and release in the SSH lab: device code, paste code, prompts,
tokens for the gateway's user, finding hermes, and the remote port taken."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab


def fake(
    lab: Lab, provider: e2e.Provider, hermes: Path, version: str = "0.19.0", **env: str
) -> list[str]:
    args = [
        "--hermes",
        str(hermes),
        "--remote-env",
        f"FAKE_HERMES_VERSION={version}",
        "--remote-env",
        f"FAKE_HERMES_PROVIDER={provider.url}",
        "--allow-host",
        lab.provider_ip,
    ]
    for key, value in env.items():
        args += ["--remote-env", f"{key}={value}"]
    return args


def real(
    lab: Lab, provider: e2e.Provider, version: str = "0.19.0", client_id: bool = True
) -> list[str]:
    path = e2e.REAL_HERMES[version]
    e2e.need(
        path.exists(),
        f"real hermes-agent {version} is not installed at {path}; run sudo ./tests/setup",
    )
    args = [
        "--hermes",
        str(path),
        "--remote-env",
        f"HERMES_SPOTIFY_ACCOUNTS_BASE_URL={provider.url}",
        "--allow-host",
        lab.provider_ip,
    ]
    if client_id:
        args += ["--remote-env", "HERMES_SPOTIFY_CLIENT_ID=labclient"]
    return args


def auth_json(lab: Lab) -> Path:
    return lab.user_home / ".hermes" / "auth.json"


# -- device code ---------------------------------------------------------------------------------


@e2e.BOTH_TRANSPORTS
@pytest.mark.parametrize(("version", "flow"), [("0.18.0", "loopback"), ("0.19.0", "device")])
def test_xai_works_on_both_flows_without_a_flag(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, version: str, flow: str
) -> None:
    run = laptop.run(["xai", "target", *fake(lab, provider, fake_hermes, version)])
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth as lab@example.test" in run.stdout
    assert "xai-oauth" in auth_json(lab).read_text()
    if flow == "device":
        assert "Enter this code" in run.stderr
        assert "forwarding" not in run.stderr.split("starting", 1)[1]
        assert str(laptop.browser_runs()[-1]["url"]).endswith("/device")
    assert 56121 not in lab.listening_ports("laptop")


@e2e.BOTH_TRANSPORTS
@pytest.mark.parametrize(
    ("name", "hermes_id"),
    [("codex", "openai-codex"), ("minimax", "minimax-oauth"), ("nous", "nous")],
)
def test_device_code_providers(
    lab: Lab,
    laptop: e2e.Laptop,
    provider: e2e.Provider,
    fake_hermes: Path,
    name: str,
    hermes_id: str,
) -> None:
    run = laptop.run([name, "target", *fake(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert f"Logged in to {hermes_id}" in run.stdout
    code_line = next(line for line in run.stderr.splitlines() if "Enter this code" in line)
    assert "\x1b" not in code_line  # the remote's colours are stripped
    devices = e2e.provider_log(lab, provider)["devices"]
    assert any(d["user_code"] in code_line for d in devices)  # type: ignore[index,union-attr]
    assert laptop.browser_runs(), "the verification URL was not opened"
    e2e.tokens(auth_json(lab))


# -- paste the code ------------------------------------------------------------------------------


def _paste_flow(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, wrong: bool
) -> e2e.Run:
    proc, tty = laptop.start_with_tty(
        ["anthropic", "target", "-v", *fake(lab, provider, fake_hermes)]
    )
    try:
        e2e.wait_for_stderr(proc, "Authorization code")
        deadline = time.monotonic() + 15
        issued: list[dict[str, object]] = []
        while (
            not issued and time.monotonic() < deadline
        ):  # the browser may still be loading the page
            issued = [
                c
                for c in e2e.provider_log(lab, provider)["codes"]  # type: ignore[union-attr]
                if c["path"] == "/oauth/authorize"
            ]
            time.sleep(0.1)
        code = f"{issued[-1]['code']}#{issued[-1]['state']}"
        typed = ("not-the-code#" + str(issued[-1]["state"])) if wrong else code
        os.write(tty, typed.encode() + b"\n")
        run = e2e.finish(proc)
    finally:
        os.close(tty)
    assert issued[-1]["code"] not in run.output  # typed secrets are never echoed or logged
    return run


def test_anthropic_paste_code_typed_on_the_laptop(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = _paste_flow(lab, laptop, provider, fake_hermes, wrong=False)
    assert run.returncode == 0, run.output
    assert "Logged in to anthropic" in run.stdout
    assert "anthropic" in e2e.tokens(auth_json(lab)).get("credential_pool", {})


def test_anthropic_wrong_code_gives_hermes_error(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = _paste_flow(lab, laptop, provider, fake_hermes, wrong=True)
    assert run.returncode == 1, run.output
    assert "Token exchange failed" in run.stderr or "did not return credentials" in run.stderr
    assert e2e.gone_within(lab, "fake-hermes", 5)


# -- prompts -------------------------------------------------------------------------------------


def test_prompt_without_a_terminal_fails_clearly(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = laptop.run(
        ["nous", "target", *fake(lab, provider, fake_hermes, FAKE_HERMES_NOUS_IMPORT="1")],
        timeout=60,
    )
    assert run.returncode == 1, run.output
    assert "Import these credentials" in run.stderr and "no terminal" in run.stderr
    assert run.elapsed < 30
    assert e2e.gone_within(lab, "fake-hermes", 5)


def test_prompt_is_relayed_to_the_person_at_the_laptop(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    proc, tty = laptop.start_with_tty(
        ["nous", "target", *fake(lab, provider, fake_hermes, FAKE_HERMES_NOUS_IMPORT="1")]
    )
    try:
        e2e.wait_for_stderr(proc, "Import these credentials")
        os.write(tty, b"n\n")
        run = e2e.finish(proc)
    finally:
        os.close(tty)
    assert run.returncode == 0, run.output
    assert "Logged in to nous" in run.stdout


def test_spotify_client_id_prompt_answered_from_the_option(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    run = laptop.run(
        ["spotify", "target", *real(lab, provider, client_id=False), "--client-id", "labclient"]
    )
    assert run.returncode == 0, run.output
    stored = e2e.tokens(auth_json(lab))
    assert stored["providers"]["spotify"]["client_id"] == "labclient"  # type: ignore[index]


# -- releases ------------------------------------------------------------------------------------


def test_spotify_on_hermes_0_13(lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider) -> None:
    run = laptop.run(["spotify", "target", *real(lab, provider, "0.13.0")])
    assert run.returncode == 0, run.output
    assert "spotify" in e2e.tokens(auth_json(lab))["providers"]  # type: ignore[operator]


# -- where tokens land ---------------------------------------------------------------------------


def test_as_user_puts_tokens_in_that_users_home(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    run = laptop.run(["spotify", "root@target", "--as-user", lab.user, *real(lab, provider)])
    assert run.returncode == 0, run.output
    assert str(auth_json(lab)) in run.stdout and "(mode 600)" in run.stdout
    token_file = auth_json(lab)
    assert token_file.stat().st_uid == lab_uid(lab)
    e2e.tokens(token_file)
    assert e2e.gone_within(lab, "hermes auth spotify", 5)


def lab_uid(lab: Lab) -> int:
    import pwd

    return pwd.getpwnam(lab.user).pw_uid


def test_as_user_without_sudo_rights_fails_clearly(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = laptop.run(["xai", "target", "--as-user", "root", *fake(lab, provider, fake_hermes)])
    assert run.returncode == 7, run.output
    assert "cannot run hermes as root" in run.stderr and "sudo" in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 5


def test_hermes_home_is_honoured(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    home = lab.user_home / "gateway-home"
    run = laptop.run(
        ["xai", "target", "--hermes-home", str(home), *fake(lab, provider, fake_hermes, "0.18.0")]
    )
    assert run.returncode == 0, run.output
    assert str(home / "auth.json") in run.stdout
    e2e.tokens(home / "auth.json")


# -- finding hermes ------------------------------------------------------------------------------


def test_hermes_in_local_bin_is_found_without_a_flag(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    hermes = e2e.REAL_HERMES["0.19.0"]
    e2e.need(hermes.exists(), "real hermes-agent 0.19.0 missing")
    local_bin = lab.user_home / ".local" / "bin"
    local_bin.mkdir(parents=True, exist_ok=True)
    link = local_bin / "hermes"
    link.symlink_to(hermes)
    try:
        args = [a for a in real(lab, provider) if a not in ("--hermes", str(hermes))]
        run = laptop.run(["spotify", "target", *args])
    finally:
        link.unlink()
    assert run.returncode == 0, run.output


def test_hermes_missing_says_where_it_looked(lab: Lab, laptop: e2e.Laptop) -> None:
    run = laptop.run(["xai", "target"])
    assert run.returncode == 7, run.output
    line = run.stderr.strip().splitlines()[-1]
    assert "hermes was not found" in line and ".local/bin/hermes" in line and "--hermes" in line
    assert 56121 not in lab.listening_ports("laptop")


# -- the remote port taken -----------------------------------------------------------------------


@pytest.mark.parametrize("login", ["root", "user"])
def test_spotify_remote_port_busy_names_port_host_and_process(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, login: str
) -> None:
    holder = e2e.hold_port(lab, "target", 43827)
    who = "root@target" if login == "root" else "target"
    extra = ["--hermes-home", str(lab.root / "root-busy")] if login == "root" else []
    run = laptop.run(["spotify", who, *real(lab, provider), *extra])
    assert run.returncode == 7, run.output
    line = run.stderr.strip().splitlines()[-1]
    assert "port 43827" in line and "target" in line
    if login == "root":
        assert f"pid {holder.pid}" in line  # root may see every process; a user sees only its own
    assert e2e.gone_within(lab, "hermes auth spotify", 5)
    e2e.wait_until(
        lambda: 43827 not in lab.listening_ports("laptop"), 2, "the laptop's listener closed"
    )


def test_unknown_provider_spelling_is_never_sent(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    # The seed page's `hermes auth add spotify` fails on real releases; tunnelauth sends `auth spotify`.
    run = laptop.run(["spotify", "target", *real(lab, provider), "-v"])
    assert run.returncode == 0, run.output
    assert "auth spotify --no-browser" in run.stderr and "auth add spotify" not in run.stderr
    assert json.loads(auth_json(lab).read_text())["providers"]["spotify"]
