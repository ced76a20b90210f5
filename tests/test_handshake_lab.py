"""The faster handshake in the SSH lab (tunnelauth/handshake.py, tunnelauth/preconnect.py),
judged by what the real sshds log: one TCP connection per hop, the key signed at once (no
probe: OpenSSH logs each probe as "Postponed publickey"), and asyncssh's own order taking
over when the first key is refused."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab


def xai_args(lab: Lab, provider: e2e.Provider, hermes: Path) -> list[str]:
    return [
        "--hermes",
        str(hermes),
        "--remote-env",
        "FAKE_HERMES_VERSION=0.18.0",
        "--remote-env",
        f"FAKE_HERMES_PROVIDER={provider.url}",
        "--allow-host",
        lab.provider_ip,
    ]


def new_log(lab: Lab, host: str, since: int) -> str:
    return e2e.sshd_log(lab, host)[since:]


def connections(log: str) -> list[str]:
    return re.findall(r"^Connection from \S+ port (\d+)", log, re.M)


def test_a_login_opens_one_connection_per_hop_and_signs_at_once(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    marks = {host: len(e2e.sshd_log(lab, host)) for host in ("bastion", "target")}
    run = laptop.run(["xai", "target", *xai_args(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    for host in ("bastion", "target"):
        log = new_log(lab, host, marks[host])
        # The bastion's head-start connection is the one the login used: no second one.
        assert len(connections(log)) == 1, f"{host}: {log}"
        assert log.count("Accepted publickey for") == 1, f"{host}: {log}"
        assert "Postponed publickey" not in log, (
            f"{host} was probed before the signed request: {log}"
        )


def test_a_refused_first_key_falls_back_to_the_next(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, tmp_path: Path
) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    marks = {host: len(e2e.sshd_log(lab, host)) for host in ("bastion", "target")}
    # -i comes before the config's IdentityFile, so the unauthorized key goes first, signed.
    run = laptop.run(["xai", "target", "-i", str(stranger), *xai_args(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth" in run.stdout
    for host in ("bastion", "target"):
        log = new_log(lab, host, marks[host])
        assert len(connections(log)) == 1, f"{host}: {log}"
        assert "Failed publickey for" in log, f"{host} never saw the refused key: {log}"
        assert log.count("Accepted publickey for") == 1, f"{host}: {log}"


def test_only_an_unauthorized_key_is_refused_as_before(
    lab: Lab, laptop: e2e.Laptop, tmp_path: Path
) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    run = laptop.run(
        ["xai", f"{lab.user}@{lab.bastion_ip}", "-i", str(stranger), "-o", "IdentitiesOnly=yes"]
    )
    assert run.returncode == 6, run.output  # AuthFailed
    assert "refused authentication" in run.stderr
    assert run.stderr.count("\n") <= 2, run.stderr


def test_an_unreachable_first_hop_fails_as_before(lab: Lab, laptop: e2e.Laptop) -> None:
    # Nothing listens on this port of the bastion: the head-start connect is refused, and the
    # login reports it exactly as its own connect would have, once.
    marks = len(e2e.sshd_log(lab, "bastion"))
    run = laptop.run(["xai", f"{lab.user}@{lab.bastion_ip}:2222"])
    assert run.returncode == 5, run.output  # ConnectFailed
    assert f"cannot reach {lab.user}@{lab.bastion_ip}:2222" in run.stderr
    assert "Connection refused" in run.stderr
    assert connections(new_log(lab, "bastion", marks)) == []
