"""End to end in the SSH lab: laptop -> bastion -> target, real sshd, real or faithful hermes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab


def real_hermes(version: str = "0.19.0") -> Path:
    path = e2e.REAL_HERMES[version]
    e2e.need(
        path.exists(),
        f"real hermes-agent {version} is not installed at {path}; run sudo ./tests/setup",
    )
    return path


def xai_args(lab: Lab, provider: e2e.Provider, hermes: Path, version: str = "0.18.0") -> list[str]:
    return [
        "--hermes",
        str(hermes),
        "--remote-env",
        f"FAKE_HERMES_VERSION={version}",
        "--remote-env",
        f"FAKE_HERMES_PROVIDER={provider.url}",
        "--allow-host",
        lab.provider_ip,
    ]


def spotify_args(lab: Lab, provider: e2e.Provider, hermes: Path) -> list[str]:
    return [
        "--hermes",
        str(hermes),
        "--remote-env",
        f"HERMES_SPOTIFY_ACCOUNTS_BASE_URL={provider.url}",
        "--remote-env",
        "HERMES_SPOTIFY_CLIENT_ID=labclient",
        "--allow-host",
        lab.provider_ip,
    ]


def assert_nothing_left(lab: Lab, needle: str, laptop_port: int) -> None:
    assert e2e.gone_within(lab, needle, 5), f"{needle} still running on the target"
    assert laptop_port not in lab.listening_ports("laptop")


@e2e.BOTH_TRANSPORTS
def test_xai_loopback_through_jump_host(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = laptop.run(
        [
            "xai",
            f"{lab.user}@{lab.target_ip}",
            "-J",
            f"{lab.user}@{lab.bastion_ip}",
            "-i",
            laptop.key,
            *xai_args(lab, provider, fake_hermes),
        ]
    )
    assert run.returncode == 0, run.output
    assert f"Logged in to xai-oauth as lab@example.test on {lab.user}@{lab.target_ip}" in run.stdout
    assert str(lab.user_home / ".hermes" / "auth.json") in run.stdout
    assert "connecting to" in run.stderr and lab.bastion_ip in run.stderr
    stored = e2e.tokens(lab.user_home / ".hermes" / "auth.json")
    assert "xai-oauth" in json.dumps(stored)
    browsed = laptop.browser_runs()
    assert browsed and browsed[-1]["status"] == 200
    assert_nothing_left(lab, "fake-hermes", 56121)


def test_xai_through_ssh_config_alias_with_proxyjump(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    home = lab.user_home / ".hermes"
    run = laptop.run(["xai", "target", *xai_args(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth as lab@example.test on target" in run.stdout
    e2e.tokens(home / "auth.json")
    assert_nothing_left(lab, "fake-hermes", 56121)


@e2e.BOTH_TRANSPORTS
def test_xai_bumped_port_is_followed(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    e2e.hold_port(lab, "target", 56121)
    run = laptop.run(["xai", "target", *xai_args(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert "not 56121: forwarding" in run.stderr
    e2e.tokens(lab.user_home / ".hermes" / "auth.json")
    final = str(laptop.browser_runs()[-1]["final"])
    assert final.startswith("127.0.0.1:") and not final.startswith("127.0.0.1:56121")
    assert 56121 not in lab.listening_ports("laptop")


def test_xai_as_root_on_the_target(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    hermes_home = lab.root / "root-hermes"
    run = laptop.run(
        [
            "xai",
            "root@target",
            *xai_args(lab, provider, fake_hermes),
            "--hermes-home",
            str(hermes_home),
        ]
    )
    assert run.returncode == 0, run.output
    e2e.tokens(hermes_home / "auth.json")
    assert_nothing_left(lab, "fake-hermes", 56121)


@e2e.BOTH_TRANSPORTS
@pytest.mark.parametrize("user", ["lab-user", "root"])
def test_spotify_with_the_real_hermes(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, user: str
) -> None:
    hermes = real_hermes()
    args = ["spotify", f"{lab.user}@target", *spotify_args(lab, provider, hermes)]
    token_file = lab.user_home / ".hermes" / "auth.json"
    if user == "root":
        token_file = lab.root / "root-spotify" / "auth.json"
        args = [
            "spotify",
            "root@target",
            *spotify_args(lab, provider, hermes),
            "--hermes-home",
            str(token_file.parent),
        ]
    run = laptop.run(args)
    assert run.returncode == 0, run.output
    assert "Logged in to spotify" in run.stdout and str(token_file) in run.stdout
    stored = e2e.tokens(token_file)
    assert "spotify" in stored.get("providers", {})
    assert_nothing_left(lab, "hermes auth spotify", 43827)


def bastion_sockets(lab: Lab) -> set[str]:
    """The laptop's TCP sockets to the bastion, in any state, by their local address."""
    out = lab.run("laptop", ["ss", "-Htan", "dst", lab.bastion_ip], check=True).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def test_local_port_busy_names_the_holder_and_touches_nothing(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    holder = e2e.hold_port(lab, "laptop", 43827)
    log = lab.root / "bastion" / "sshd.log"
    before = log.read_text()
    sockets_before = bastion_sockets(lab)
    run = laptop.run(["spotify", "target", "--hermes", str(fake_hermes)])
    assert run.returncode == 3, run.output
    assert (
        "43827" in run.stderr
        and f"pid {holder.pid}" in run.stderr
        and "/usr/bin/python3" in run.stderr
    )
    assert len(run.stderr.strip().splitlines()) == 1
    # Any connection to the bastion would have left a socket behind (TIME_WAIT lasts a minute).
    assert not bastion_sockets(lab) - sockets_before
    assert log.read_text().count("Accepted publickey") == before.count("Accepted publickey")


def test_unknown_host_key_stops_before_any_remote_command(
    lab: Lab, provider: e2e.Provider, fake_hermes: Path
) -> None:
    laptop = e2e.Laptop(lab, home=e2e.fresh_home(lab, "nokh", known_hosts=False))
    run = laptop.run(["xai", "target", *xai_args(lab, provider, fake_hermes)])
    assert run.returncode == 4, run.output
    assert "host key" in run.stderr and "SHA256:" in run.stderr and lab.bastion_ip in run.stderr
    assert "--accept-new" in run.stderr
    assert not lab.target_processes("fake-hermes")
    assert not (laptop.home / ".ssh" / "known_hosts").exists()


def test_unknown_key_on_the_second_hop_is_refused_too(
    lab: Lab, provider: e2e.Provider, fake_hermes: Path
) -> None:
    home = e2e.fresh_home(lab, "bastion-only")
    known = home / ".ssh" / "known_hosts"
    known.write_text(
        "".join(
            line + "\n"
            for line in known.read_text().splitlines()
            if not line.startswith(lab.target_ip)
        )
    )
    run = e2e.Laptop(lab, home=home).run(["xai", "target", *xai_args(lab, provider, fake_hermes)])
    assert run.returncode == 4, run.output
    assert lab.target_ip in run.stderr and "SHA256:" in run.stderr
    assert not lab.target_processes("fake-hermes")


def test_ctrl_c_stops_the_remote_hermes(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    proc = laptop.start(["xai", "target", "--no-open", *xai_args(lab, provider, fake_hermes)])
    e2e.wait_for_stderr(proc, "Open this URL")
    assert lab.target_processes("fake-hermes")
    run = e2e.finish(proc, e2e.SIGINT)
    assert run.returncode == 130, run.output
    assert "interrupted" in run.stderr
    assert_nothing_left(lab, "fake-hermes", 56121)


def test_timeout_stops_the_remote_hermes(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = laptop.run(
        ["xai", "target", "--no-open", "--timeout", "3", *xai_args(lab, provider, fake_hermes)]
    )
    assert run.returncode == 8, run.output
    assert "no login within 3 s" in run.stderr
    assert_nothing_left(lab, "fake-hermes", 56121)


def test_quiet_shows_only_the_url_and_the_result(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = laptop.run(["xai", "target", "-q", *xai_args(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert "connecting" not in run.stderr and "forwarding" not in run.stderr
    assert run.stdout.startswith("Logged in to xai-oauth")


def test_json_lines_for_wrappers(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = laptop.run(["xai", "target", "--json", *xai_args(lab, provider, fake_hermes, "0.18.0")])
    assert run.returncode == 0, run.output
    events = [json.loads(line) for line in run.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    for kind in ("connecting", "connected", "forwarded", "started", "url", "success"):
        assert kind in kinds, kinds
    success = events[-1]
    assert success["event"] == "success" and success["label"] == "lab@example.test"
    assert success["token_file"] == str(lab.user_home / ".hermes" / "auth.json")
    assert run.stderr == ""
    code = e2e.provider_log(lab, provider)["codes"][-1]["code"]  # type: ignore[index]
    assert code not in run.stdout


def test_json_lines_report_failure_with_its_exit_code(lab: Lab, laptop: e2e.Laptop) -> None:
    run = laptop.run(["xai", "target", "--json", "--hermes", "/nonexistent/hermes"])
    assert run.returncode == 7, run.output
    last = json.loads(run.stdout.splitlines()[-1])
    assert last["event"] == "failure" and last["exit_code"] == 7 and "not found" in last["message"]
