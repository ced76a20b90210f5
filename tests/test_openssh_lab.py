"""The user's own OpenSSH as the transport, and a live ControlMaster reused (issue 14).

The lab's login, bumped-port, device, Spotify, run, relay and no-orphan tests run with both
transports (`@e2e.BOTH_TRANSPORTS`); this module holds what only the OpenSSH side has.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab


def fake(lab: Lab, provider: e2e.Provider, hermes: Path) -> list[str]:
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


def logins(lab: Lab, host: str) -> int:
    """Authentications the host's sshd has accepted so far."""
    return len(
        re.findall(r"Accepted (?:publickey|keyboard-interactive|password)", e2e.sshd_log(lab, host))
    )


@dataclass
class Master:
    """The person's own ControlMaster connection to the target, as their config sets it up."""

    home: Path
    config: Path
    control: Path
    proc: subprocess.Popen[str]

    def check(self, lab: Lab) -> subprocess.CompletedProcess[str]:
        return lab.run(
            "laptop", ["/usr/bin/ssh", "-F", str(self.config), "-O", "check", "target"], check=False
        )


@pytest.fixture
def master(clean_lab: Lab) -> Iterator[Master]:
    lab = clean_lab
    home = e2e.fresh_home(lab, "master")
    config = home / ".ssh" / "config"
    control = home / ".ssh" / "cm-target"
    config.write_text(
        config.read_text() + f"\nHost target\n  ControlMaster auto\n  ControlPath {control}\n"
    )
    proc = lab.spawn(
        "laptop",
        ["/usr/bin/ssh", "-F", str(config), "-M", "-N", "target"],
        env=lab.laptop_env(HOME=str(home)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    the_master = Master(home, config, control, proc)
    e2e.wait_until(lambda: the_master.check(lab).returncode == 0, 20, "the person's master is up")
    yield the_master
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("transport", e2e.TRANSPORTS)
def test_a_live_master_is_reused_and_left_as_it_was(
    clean_lab: Lab, master: Master, provider: e2e.Provider, fake_hermes: Path, transport: str
) -> None:
    lab = clean_lab
    before = {host: logins(lab, host) for host in ("bastion", "target")}
    listening = lab.listening_ports("laptop")
    laptop = e2e.Laptop(lab, home=master.home, transport=transport)
    run = laptop.run(["xai", "target", "-v", *fake(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert "reusing your OpenSSH master connection to target" in run.stderr, run.stderr
    e2e.tokens(lab.user_home / ".hermes" / "auth.json")
    # No second authentication on any hop: the master's session carried the whole login.
    assert {host: logins(lab, host) for host in ("bastion", "target")} == before
    # The person's master still runs, the same process, with the same listeners as before.
    assert master.proc.poll() is None
    assert master.check(lab).returncode == 0
    assert lab.listening_ports("laptop") == listening
    assert e2e.gone_within(lab, "fake-hermes", 5)


def test_no_reuse_logs_in_anew(
    clean_lab: Lab, master: Master, provider: e2e.Provider, fake_hermes: Path
) -> None:
    lab = clean_lab
    before = logins(lab, "target")
    run = e2e.Laptop(lab, home=master.home).run(
        ["xai", "target", "--no-reuse", *fake(lab, provider, fake_hermes)]
    )
    assert run.returncode == 0, run.output
    assert "reusing" not in run.stderr
    assert logins(lab, "target") == before + 1
    assert master.check(lab).returncode == 0


def test_openssh_names_an_authentication_failure(clean_lab: Lab, fake_hermes: Path) -> None:
    lab = clean_lab
    home = e2e.fresh_home(lab, "wrong-key")
    key = home / ".ssh" / "id_ed25519"
    key.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    laptop = e2e.Laptop(lab, home=home, transport="openssh")
    run = laptop.run(["xai", "target", "--hermes", str(fake_hermes)])
    assert run.returncode == 6, run.output
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("tunnelauth: error: target refused authentication")
    )
    assert "publickey" in run.stderr
    laptop.assert_no_ssh_left()


def test_openssh_missing_is_a_usage_error(clean_lab: Lab) -> None:
    laptop = e2e.Laptop(clean_lab, transport="openssh")
    run = laptop.run(["run", "target", "--", "true"], TUNNELAUTH_SSH_BINARY="no-such-ssh-here")
    assert run.returncode == 2, run.output
    assert "--ssh openssh needs the `no-such-ssh-here` command" in run.stderr


def wrapped_ssh(lab: Lab, home: Path) -> Path:
    """A corporate-style ssh wrapper that brings a credential of its own (here: the key the
    hops accept), which only the user's ssh, not asyncssh, knows about. Its -F reaches the
    ProxyJump ssh too."""
    key = lab.laptop_home / ".ssh" / "id_ed25519"
    return e2e.write_script(
        lab,
        f"wrapped-ssh-{home.name}",
        (
            '#!/bin/sh\nc="$HOME/.ssh/config.corporate"\n'
            'printf "Include %s/.ssh/config\\nHost *\\n  UserKnownHostsFile %s/.ssh/known_hosts\\n'
            f'  IdentityFile {key}\\n" "$HOME" "$HOME" > "$c"\nexec /usr/bin/ssh -F "$c" "$@"\n'
        ),
    )


@pytest.fixture
def only_ssh_gets_in(clean_lab: Lab) -> tuple[Path, Path]:
    """A HOME whose own key no hop accepts, and an ssh wrapper that adds one they do."""
    home = e2e.fresh_home(clean_lab, "only-ssh")
    key = home / ".ssh" / "id_ed25519"
    key.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = home / ".ssh" / "config"
    config.write_text(config.read_text().replace(str(clean_lab.laptop_home), str(home)))
    return home, wrapped_ssh(clean_lab, home)


def doctor_checks(run: e2e.Run) -> dict[str, dict[str, object]]:
    doc = json.loads(run.stdout)
    return {check["name"]: check for check in doc["destinations"][0]["checks"]}


def test_doctor_says_which_transport_a_destination_needs(
    clean_lab: Lab, only_ssh_gets_in: tuple[Path, Path], fake_hermes: Path
) -> None:
    home, wrapper = only_ssh_gets_in
    run = e2e.Laptop(clean_lab, home=home).run(
        ["doctor", "target", "--json", "--hermes", str(fake_hermes)],
        TUNNELAUTH_SSH_BINARY=str(wrapper),
    )
    assert run.returncode == 1, run.output
    found = doctor_checks(run)
    assert found["ssh (openssh)"]["status"] == "pass", found
    assert found["transport"]["status"] == "warn"
    assert "--ssh openssh" in str(found["transport"]["detail"])


def test_doctor_checks_both_transports_when_asked(clean_lab: Lab, fake_hermes: Path) -> None:
    run = e2e.Laptop(clean_lab).run(
        [
            "doctor",
            "target",
            "--json",
            "--ssh",
            "both",
            "--hermes",
            str(fake_hermes),
            "--remote-env",
            "FAKE_HERMES_VERSION=0.19.0",
        ]
    )
    found = doctor_checks(run)
    assert found["ssh (openssh)"]["status"] == "pass", found
    assert found["transport"] == {
        **found["transport"],
        "status": "pass",
        "detail": "asyncssh (the default) works; --ssh openssh works too",
    }
    assert found["forwarding"]["status"] == "pass", found


def test_a_method_asyncssh_lacks_names_the_openssh_transport(
    clean_lab: Lab, only_ssh_gets_in: tuple[Path, Path], fake_hermes: Path
) -> None:
    """GSSAPI (Kerberos) asked for, which asyncssh cannot do without its optional gssapi
    package: when the hop refuses tunnelauth, the error says ssh could do more there."""
    lab = clean_lab
    lab.start_sshd("bastion", extra=["GSSAPIAuthentication yes"])
    home, _ = only_ssh_gets_in  # its own key is accepted nowhere
    run = e2e.Laptop(lab, home=home).run(
        ["xai", "target", "-o", "GSSAPIAuthentication=yes", "--hermes", str(fake_hermes)]
    )
    assert run.returncode == 6, run.output
    last = run.stderr.strip().splitlines()[-1]
    assert "bastion" in last and "GSSAPI (Kerberos)" in last, last
    assert last.endswith("rerun with --ssh openssh)"), last
