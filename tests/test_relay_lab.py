"""Logins where the target's sshd forbids forwarding: the callback goes through an exec relay."""

from __future__ import annotations

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture
def no_forwarding(clean_lab: Lab) -> Lab:
    clean_lab.start_sshd("target", extra=["AllowTcpForwarding no"])
    return clean_lab


@pytest.mark.parametrize("transport", e2e.TRANSPORTS)
def test_xai_loopback_completes_through_the_relay(
    no_forwarding: Lab, provider: e2e.Provider, transport: str
) -> None:
    lab = no_forwarding
    hermes = e2e.install_script(lab, e2e.FAKES / "fake_hermes.py", "fake-hermes")
    laptop = e2e.Laptop(lab, transport=transport)
    run = laptop.run(
        [
            "xai",
            "target",
            "--hermes",
            str(hermes),
            "--remote-env",
            "FAKE_HERMES_VERSION=0.18.0",
            "--remote-env",
            f"FAKE_HERMES_PROVIDER={provider.url}",
            "--allow-host",
            lab.provider_ip,
        ]
    )
    assert run.returncode == 0, run.output
    assert "forbids port forwarding" in run.stderr and "relaying the callback" in run.stderr
    e2e.tokens(lab.user_home / ".hermes" / "auth.json")
    assert e2e.gone_within(lab, "fake-hermes", 5)
    assert e2e.gone_within(lab, "import base64,sys,zlib", 5)  # no supervisor, no relay left
    assert 56121 not in lab.listening_ports("laptop")
    laptop.assert_no_ssh_left()


def test_spotify_real_hermes_completes_through_the_relay(
    no_forwarding: Lab, provider: e2e.Provider
) -> None:
    lab = no_forwarding
    hermes = e2e.REAL_HERMES["0.19.0"]
    e2e.need(hermes.exists(), f"real hermes-agent missing at {hermes}")
    token_file = lab.root / "relay-root" / "auth.json"
    run = e2e.Laptop(lab).run(
        [
            "spotify",
            "root@target",
            "--hermes",
            str(hermes),
            "--hermes-home",
            str(token_file.parent),
            "--remote-env",
            f"HERMES_SPOTIFY_ACCOUNTS_BASE_URL={provider.url}",
            "--remote-env",
            "HERMES_SPOTIFY_CLIENT_ID=labclient",
            "--allow-host",
            lab.provider_ip,
        ]
    )
    assert run.returncode == 0, run.output
    assert "relaying the callback" in run.stderr
    assert "spotify" in e2e.tokens(token_file)["providers"]  # type: ignore[operator]
    assert e2e.gone_within(lab, "hermes auth spotify", 5)
    assert 43827 not in lab.listening_ports("target")
