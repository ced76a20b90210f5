"""The real hermes-agent xAI flows, unmodified, in the SSH lab: 0.18.0's loopback PKCE login and
0.19.0's device-code login. hermes insists on https://auth.x.ai; in the lab that name is the
mock provider on the bastion (TLS, certificate from a per-lab CA), named by the laptop's and the
target's /etc/netns hosts files, and hermes trusts the lab CA through SSL_CERT_FILE. The real
x.ai is unroutable from every lab namespace; the mock's log shows every step landed on it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def xai(lab: Lab) -> Iterator[e2e.Provider]:
    server = e2e.start_provider(lab, xai=True)
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


def real_hermes(version: str) -> Path:
    hermes = e2e.REAL_HERMES[version]
    e2e.need(
        hermes.exists(),
        f"real hermes-agent {version} is not installed at {hermes}; run sudo ./tests/setup",
    )
    return hermes


def login(lab: Lab, laptop: e2e.Laptop, version: str) -> e2e.Run:
    # No --allow-host: auth.x.ai is xAI's own host, so tunnelauth must open it without a warning.
    args = [
        "xai",
        "target",
        "--hermes",
        str(real_hermes(version)),
        "--remote-env",
        f"SSL_CERT_FILE={lab.tls_ca}",
    ]
    return laptop.run(args, SSL_CERT_FILE=str(lab.tls_ca))  # the laptop's browser trusts it too


def mock_events(lab: Lab, xai: e2e.Provider) -> list[dict[str, Any]]:
    return cast("list[dict[str, Any]]", e2e.provider_log(lab, xai)["events"])


def events_since(lab: Lab, xai: e2e.Provider, before: int) -> list[dict[str, Any]]:
    return [e for e in mock_events(lab, xai) if int(e["n"]) > before]


def last_event(lab: Lab, xai: e2e.Provider) -> int:
    events = mock_events(lab, xai)
    return int(events[-1]["n"]) if events else 0


def stored_token_fingerprints(lab: Lab) -> set[str]:
    """sha256[:12] of every string in the lab user's auth.json (the mock logs its tokens so)."""
    data = e2e.tokens(lab.user_home / ".hermes" / "auth.json")
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.add(hashlib.sha256(node.encode()).hexdigest()[:12])

    walk(data)
    return found


def assert_logged_in_without_warning(run: e2e.Run) -> None:
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth as lab@example.test on target" in run.stdout
    assert "the URL is on" not in run.output and "--allow-host" not in run.output


def assert_only_the_lab_idp(steps: list[dict[str, Any]]) -> None:
    discoveries = [e for e in steps if e["event"] == "discovery"]
    assert discoveries, steps
    assert {(e["host"], e["scheme"]) for e in discoveries} == {("auth.x.ai", "https")}, steps


def test_x_ai_names_resolve_to_the_lab_inside_ssh_sessions(lab: Lab, laptop: e2e.Laptop) -> None:
    run = laptop.run(["run", "target", "--", "getent", "hosts", "auth.x.ai", "accounts.x.ai"])
    assert run.returncode == 0, run.output
    assert run.stdout.split() == [lab.xai_ip, "auth.x.ai", "accounts.x.ai"] * 2, run.stdout


@pytest.mark.parametrize("port_taken", [False, True], ids=["port-56121", "bumped-port"])
def test_real_hermes_0_18_loopback_login(
    lab: Lab, laptop: e2e.Laptop, xai: e2e.Provider, port_taken: bool
) -> None:
    if port_taken:
        e2e.hold_port(lab, "target", 56121)
    before = last_event(lab, xai)
    run = login(lab, laptop, "0.18.0")
    assert_logged_in_without_warning(run)
    steps = events_since(lab, xai, before)
    assert_only_the_lab_idp(steps)
    issued = [e for e in steps if e["event"] == "code_issued"]
    redeemed = [e for e in steps if e["event"] == "code_redeemed"]
    assert len(issued) == 1 and len(redeemed) == 1, steps
    redirect = str(issued[0]["redirect_uri"])
    assert redirect.startswith("http://127.0.0.1:") and redirect.endswith("/callback")
    assert (redirect == "http://127.0.0.1:56121/callback") != port_taken, redirect
    assert redeemed[0]["access_token_fp"] in stored_token_fingerprints(lab)
    browsed = laptop.browser_runs()
    assert [b["url"] for b in browsed] == ["https://auth.x.ai/oauth2/auth"], browsed
    assert browsed[0]["status"] == 200 and browsed[0]["hops"] == 1
    assert browsed[0]["final"] == redirect.removeprefix("http://"), browsed
    assert e2e.gone_within(lab, "hermes-0.18.0", 5)
    assert int(redirect.split(":")[2].split("/")[0]) not in lab.listening_ports("laptop")


def test_real_hermes_0_19_device_code_login(
    lab: Lab, laptop: e2e.Laptop, xai: e2e.Provider
) -> None:
    before = last_event(lab, xai)
    run = login(lab, laptop, "0.19.0")
    assert_logged_in_without_warning(run)
    assert "forwarding" not in run.stderr.split("starting", 1)[-1]
    steps = events_since(lab, xai, before)
    assert_only_the_lab_idp(steps)
    kinds = [e["event"] for e in steps]
    for step in ("device_code_issued", "device_approved", "device_redeemed"):
        assert kinds.count(step) == 1, steps
    redeemed = next(e for e in steps if e["event"] == "device_redeemed")
    assert redeemed["access_token_fp"] in stored_token_fingerprints(lab)
    browsed = laptop.browser_runs()
    assert [(b["url"], b["status"]) for b in browsed] == [("https://auth.x.ai/device", 200)], (
        browsed
    )
    assert e2e.gone_within(lab, "hermes-0.19.0", 5)


def test_without_the_lab_ca_hermes_refuses_the_lab_idp(
    lab: Lab, laptop: e2e.Laptop, xai: e2e.Provider
) -> None:
    """The lab changes no verification: hermes's TLS check still bites without SSL_CERT_FILE."""
    before = last_event(lab, xai)
    run = laptop.run(["xai", "target", "--hermes", str(real_hermes("0.18.0"))])
    assert run.returncode == 1, run.output  # LoginFailed: hermes's own error, shown
    assert "xAI OIDC discovery failed" in run.output, run.output
    assert "CERTIFICATE_VERIFY_FAILED" in run.output, run.output
    assert not [e for e in events_since(lab, xai, before) if e["event"] == "discovery"]
    assert not (lab.user_home / ".hermes" / "auth.json").exists()
    assert json.dumps(laptop.browser_runs()) == "[]"
