"""`tunnelauth doctor` in the SSH lab: laptop -> bastion -> target, real sshd, the real hermes
0.19.0 or the faithful fake, and a check after every run that nothing was left behind."""

from __future__ import annotations

import hashlib
import json
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab
from tunnelauth.doctor import commands

pytestmark = pytest.mark.lab

STATUSES = {"pass", "fail", "warn", "skip"}
UNUSED = "198.18.2.99"  # on the bastion-target link, but nobody has it


@pytest.fixture
def laptop(clean_lab: Lab) -> Iterator[e2e.Laptop]:
    """The laptop, and afterwards the proof that the doctor left nothing on any host: no
    listener or probe process, no port, no throwaway hermes home, no ~/.hermes of its own."""
    before = {host: clean_lab.listening_ports(host) for host in ("laptop", "bastion", "target")}
    temp_before = throwaway_homes(clean_lab)
    hermes_home = clean_lab.user_home / ".hermes"
    existed = hermes_home.exists()
    yield e2e.Laptop(clean_lab)
    assert e2e.gone_within(clean_lab, "tunnelauth-doctor", 5), (
        "a doctor process is left on the target"
    )
    for host, ports in before.items():
        assert clean_lab.listening_ports(host) <= ports, f"a port is left open on {host}"
    assert throwaway_homes(clean_lab) <= temp_before, "a throwaway hermes home was left"
    assert hermes_home.exists() == existed, "the doctor created or removed ~/.hermes"


def throwaway_homes(lab: Lab) -> set[Path]:
    # The lab user's only: /tmp is shared with whatever else runs on this machine.
    uid = pwd.getpwnam(lab.user).pw_uid
    return {path for path in Path("/tmp").glob("tunnelauth-doctor.*") if path.lstat().st_uid == uid}


def release(*procs: subprocess.Popen[str]) -> None:
    """Stop what the test started on purpose, so that the leftover check sees only the doctor's."""
    for proc in procs:
        proc.kill()
        proc.wait(timeout=5)


def real_hermes() -> Path:
    path = e2e.REAL_HERMES["0.19.0"]
    e2e.need(
        path.exists(),
        f"real hermes-agent 0.19.0 is not installed at {path}; run sudo ./tests/setup",
    )
    return path


def fake(hermes: Path, version: str) -> list[str]:
    return ["--hermes", str(hermes), "--remote-env", f"FAKE_HERMES_VERSION={version}"]


def doctor_json(
    laptop: e2e.Laptop, args: list[str], timeout: float = 90
) -> tuple[e2e.Run, dict[str, object]]:
    run = laptop.run(["doctor", "--json", *args], timeout=timeout)
    assert run.stdout.strip(), run.output
    doc = json.loads(run.stdout)
    validate(doc)
    return run, doc


def validate(doc: object) -> None:
    """The documented shape, exactly: no key missing, none extra, the right types."""
    assert (
        isinstance(doc, dict) and set(doc) == {"destinations", "ok"} and isinstance(doc["ok"], bool)
    )
    assert isinstance(doc["destinations"], list) and doc["destinations"]
    for dest in doc["destinations"]:
        assert set(dest) == {"destination", "ok", "checks"}
        assert isinstance(dest["destination"], str) and isinstance(dest["ok"], bool)
        assert isinstance(dest["checks"], list) and dest["checks"]
        for check in dest["checks"]:
            assert set(check) == {"name", "status", "detail", "seconds"}
            assert isinstance(check["name"], str) and check["name"]
            assert check["status"] in STATUSES
            assert (
                isinstance(check["detail"], str) and check["detail"] and "\n" not in check["detail"]
            )
            assert isinstance(check["seconds"], (int, float)) and check["seconds"] >= 0
    assert doc["ok"] == all(dest["ok"] for dest in doc["destinations"])  # type: ignore[union-attr]


def checks(doc: dict[str, object], index: int = 0) -> dict[str, dict[str, object]]:
    dest = doc["destinations"][index]  # type: ignore[index]
    return {check["name"]: check for check in dest["checks"]}


def named(found: dict[str, dict[str, object]], prefix: str) -> dict[str, object]:
    matches = [check for name, check in found.items() if name.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(found))
    return matches[0]


# -- a healthy target ------------------------------------------------------------------------------


def test_real_hermes_through_the_bastion_passes_every_check(laptop: e2e.Laptop) -> None:
    run = laptop.run(["doctor", "target", "--hermes", str(real_hermes())])
    assert run.returncode == 0, run.output
    out = run.stdout
    for name in (
        "ssh bastion",
        "ssh target",
        "forwarding",
        "hermes",
        "flow xai",
        "flow spotify",
        "port 56121 (xai)",
        "port 43827 (spotify)",
        "token dir",
        "gateway",
    ):
        row = next((line for line in out.splitlines() if f" {name}" in line), "")
        assert "PASS" in row, f"{name}: {row or 'missing'}\n{out}"
    assert "FAIL" not in out and "WARN" not in out and "SKIP" not in out
    assert "Hermes Agent v0.19.0" in out
    assert "device code with hermes 0.19.0" in next(
        line for line in out.splitlines() if "flow xai" in line
    )
    assert "loopback with hermes 0.19.0" in next(
        line for line in out.splitlines() if "flow spotify" in line
    )
    assert "1 of 1 destination ok" in out
    assert run.stderr == ""


def test_real_hermes_0_13_has_no_xai_login(laptop: e2e.Laptop) -> None:
    old = e2e.REAL_HERMES["0.13.0"]
    e2e.need(
        old.exists(), f"real hermes-agent 0.13.0 is not installed at {old}; run sudo ./tests/setup"
    )
    run, doc = doctor_json(laptop, ["target", "--hermes", str(old)])
    assert run.returncode == 0, run.output  # without --provider, a missing provider only warns
    found = checks(doc)
    assert "v0.13.0" in str(found["hermes"]["detail"])
    assert found["flow spotify"]["status"] == "pass"
    assert found["flow spotify"]["detail"] == "loopback with hermes 0.13.0"
    assert found["flow xai"]["status"] == "warn" and "needs 0.14.0" in str(
        found["flow xai"]["detail"]
    )
    only_xai, doc = doctor_json(laptop, ["target", "--provider", "xai", "--hermes", str(old)])
    assert only_xai.returncode == 1 and checks(doc)["flow xai"]["status"] == "fail", only_xai.output


def test_fake_hermes_0_18_0_means_loopback_for_xai(laptop: e2e.Laptop, fake_hermes: Path) -> None:
    run, doc = doctor_json(laptop, ["target", *fake(fake_hermes, "0.18.0")])
    assert run.returncode == 0 and doc["ok"] is True, run.output
    found = checks(doc)
    assert "v0.18.0" in str(found["hermes"]["detail"])
    assert found["flow xai"]["detail"] == "loopback with hermes 0.18.0"
    assert found["flow spotify"]["detail"] == "loopback with hermes 0.18.0"
    assert all(check["status"] == "pass" for check in found.values()), found
    forwarding = str(found["forwarding"]["detail"])
    assert (
        "answered through the tunnel" in forwarding
        and ":56121" not in forwarding
        and ":43827" not in forwarding
    )


def test_provider_option_limits_the_checks(laptop: e2e.Laptop, fake_hermes: Path) -> None:
    run, doc = doctor_json(
        laptop, ["target", "--provider", "spotify", *fake(fake_hermes, "0.19.0")]
    )
    assert run.returncode == 0, run.output
    names = set(checks(doc))
    assert "flow spotify" in names and "port 43827 (spotify)" in names
    assert not any("xai" in name or "56121" in name for name in names)


# -- what fails ----------------------------------------------------------------------------------


def test_target_that_forbids_forwarding_fails_clearly(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    lab.start_sshd("target", extra=["AllowTcpForwarding no"])
    run, doc = doctor_json(laptop, ["target", *fake(fake_hermes, "0.19.0")])
    assert run.returncode == 1 and doc["ok"] is False, run.output
    found = checks(doc)
    assert found["forwarding"]["status"] == "fail"
    assert "forwarding refused by the target's sshd" in str(found["forwarding"]["detail"])
    # The other checks still ran: forwarding is what is wrong, and only that is reported.
    assert found["hermes"]["status"] == "pass" and found["token dir"]["status"] == "pass"
    human = laptop.run(["doctor", "target", *fake(fake_hermes, "0.19.0")])
    assert human.returncode == 1 and "forwarding refused by the target's sshd" in human.stdout
    assert "0 of 1 destination ok" in human.stdout


def test_spotify_port_held_on_the_target_fails_naming_it(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    holders = [e2e.hold_port(lab, "target", 43827), e2e.hold_port(lab, "target", 56121)]
    run, doc = doctor_json(laptop, ["target", *fake(fake_hermes, "0.18.0")])
    release(*holders)
    assert run.returncode == 1, run.output
    found = checks(doc)
    spotify, xai = found["port 43827 (spotify)"], found["port 56121 (xai)"]
    assert spotify["status"] == "fail" and "port 43827 is taken on target" in str(spotify["detail"])
    assert "127.0.0.1:43827" in str(spotify["detail"])
    # xAI's hermes moves its callback when 56121 is taken, and tunnelauth follows: a warning.
    assert xai["status"] == "warn" and "port 56121 is taken on target" in str(xai["detail"])
    assert found["forwarding"]["status"] == "pass"


def test_xai_port_held_on_the_target_is_fine_with_device_code(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    holder = e2e.hold_port(lab, "target", 56121)
    run, doc = doctor_json(laptop, ["target", "--provider", "xai", *fake(fake_hermes, "0.19.0")])
    release(holder)
    assert run.returncode == 0, run.output
    assert "device code" in str(checks(doc)["port 56121 (xai)"]["detail"])


def test_callback_port_held_on_the_laptop_fails_naming_the_holder(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    holder = e2e.hold_port(lab, "laptop", 43827)
    run, doc = doctor_json(
        laptop, ["target", "--provider", "spotify", *fake(fake_hermes, "0.19.0")]
    )
    release(holder)
    assert run.returncode == 1, run.output
    detail = str(checks(doc)["port 43827 (spotify)"]["detail"])
    assert "this machine" in detail and f"pid {holder.pid}" in detail


def test_hermes_missing_fails_naming_where_it_looked(laptop: e2e.Laptop) -> None:
    run, doc = doctor_json(laptop, ["target"])
    assert run.returncode == 1, run.output
    found = checks(doc)
    detail = str(found["hermes"]["detail"])
    assert found["hermes"]["status"] == "fail"
    assert "hermes was not found on target" in detail and "$PATH" in detail
    assert (
        ".local/bin/hermes" in detail
        and "/opt/hermes/bin/hermes" in detail
        and "--hermes" in detail
    )
    assert found["flow xai"]["status"] == "skip" and "not found" in str(found["flow xai"]["detail"])
    assert found["forwarding"]["status"] == "pass"  # the rest still ran


def test_stopped_sshd_names_the_hop_and_skips_the_rest(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    lab.stop_sshd("target")
    run, doc = doctor_json(laptop, ["target", *fake(fake_hermes, "0.19.0")])
    assert run.returncode == 1, run.output
    found = checks(doc)
    bastion, target = named(found, "ssh bastion"), named(found, "ssh target")
    assert bastion["status"] == "pass"
    assert target["status"] == "fail" and lab.target_ip in str(target["detail"])
    assert "cannot" in str(target["detail"])
    later = [check for name, check in found.items() if not name.startswith("ssh ")]
    assert later and all(check["status"] == "skip" for check in later)
    assert all("no connection to target" == check["detail"] for check in later)
    assert run.elapsed < 20


# -- warnings, --strict --------------------------------------------------------------------------


def test_strict_turns_a_loose_token_dir_into_a_failure(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    home = lab.user_home / ".hermes"
    home.mkdir()
    try:
        shutil.chown(home, lab.user, lab.user)
        home.chmod(0o755)
        run, doc = doctor_json(laptop, ["target", *fake(fake_hermes, "0.19.0")])
        assert run.returncode == 0 and doc["ok"] is True, run.output
        token_dir = checks(doc)["token dir"]
        assert token_dir["status"] == "warn" and "mode 755" in str(token_dir["detail"])
        strict, doc = doctor_json(laptop, ["target", "--strict", *fake(fake_hermes, "0.19.0")])
        assert strict.returncode == 1 and doc["ok"] is False, strict.output
        assert checks(doc)["token dir"]["status"] == "warn"
    finally:
        shutil.rmtree(home)


def test_gateway_of_another_user_is_a_warning(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    gateway = lab.spawn(
        "target", ["/usr/bin/python3", "-c", "import time; time.sleep(60)", "hermes", "gateway"]
    )
    deadline = time.monotonic() + 5
    while not lab.target_processes("hermes gateway") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.target_processes("hermes gateway"), "the gateway stand-in never started"
    run, doc = doctor_json(laptop, ["target", *fake(fake_hermes, "0.19.0")])
    assert run.returncode == 0, run.output
    check = checks(doc)["gateway"]
    assert check["status"] == "warn", check
    detail = str(check["detail"])
    assert "runs as root" in detail and f"pid {gateway.pid}" in detail
    assert lab.user in detail and "--as-user root" in detail
    release(gateway)


def test_as_user_checks_that_users_token_dir(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    run, doc = doctor_json(
        laptop, ["root@target", "--as-user", lab.user, *fake(fake_hermes, "0.18.0")]
    )
    assert run.returncode == 0, run.output
    found = checks(doc)
    assert found["token dir"]["status"] == "pass"
    assert str(lab.user_home / ".hermes") in str(found["token dir"]["detail"])
    assert f"{lab.user} can create it" in str(found["token dir"]["detail"])
    assert "v0.18.0" in str(found["hermes"]["detail"])


def test_as_user_without_sudo_rights_fails(laptop: e2e.Laptop, fake_hermes: Path) -> None:
    run, doc = doctor_json(laptop, ["target", "--as-user", "root", *fake(fake_hermes, "0.19.0")])
    assert run.returncode == 1, run.output
    found = checks(doc)
    assert found["hermes"]["status"] == "fail" and "sudo" in str(found["hermes"]["detail"])
    assert found["token dir"]["status"] == "fail" and "sudo -n -u root" in str(
        found["token dir"]["detail"]
    )


# -- no secret in any process table (issue 12) ----------------------------------------------------


@pytest.mark.parametrize("login", ["user", "root-as-user"])
def test_no_secret_in_any_process_table(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path, login: str
) -> None:
    """--remote-env values and HERMES_HOME reach the probe, its re-run as the --as-user user and
    `hermes --version`, and never a command line (nor another user's environment) on the way."""
    typed, from_env = secrets.token_hex(20), secrets.token_hex(20)
    home = (
        lab.user_home / f"hermes-home-{secrets.token_hex(12)}"
    )  # not there: the user may create it
    seen = lab.root / f"doctor-seen-{secrets.token_hex(4)}"
    seen.mkdir()
    seen.chmod(0o777)
    # `hermes --version` writes down (hashes of) what it was given, and takes a moment, as a
    # real one does, so that the scan sees it run.
    hermes = e2e.write_script(
        lab,
        f"secret-hermes-{secrets.token_hex(3)}",
        (
            "#!/usr/bin/python3\n"
            "import hashlib, os, sys, time\n"
            f"with open({str(seen / 'env')!r}, 'w') as f:\n"
            "    for name in ('TA_TYPED', 'TA_FROM_ENV'):\n"
            "        f.write(name + ' ' + hashlib.sha256(os.environ.get(name, '').encode()).hexdigest() + '\\n')\n"
            "time.sleep(0.5)\n"
            f"os.execv({str(fake_hermes)!r}, [{str(fake_hermes)!r}] + sys.argv[1:])\n"
        ),
    )
    who = ["target"] if login == "user" else ["root@target", "--as-user", lab.user]
    args = [
        "doctor",
        "--json",
        *who,
        *fake(hermes, "0.18.0"),
        "--remote-env",
        f"TA_TYPED={typed}",
        "--remote-env",
        "TA_FROM_ENV",
        "--hermes-home",
        str(home),
    ]
    needles = {
        "the typed --remote-env value": typed.encode(),
        "the --remote-env value from the environment": from_env.encode(),
        "HERMES_HOME": home.name.encode(),
    }
    typed_by_the_user = {"the typed --remote-env value", "HERMES_HOME"}
    try:
        with e2e.ProcessTableWatch(
            lab,
            needles,
            typed_by_the_user,
            pwd.getpwnam(lab.user).pw_uid,
            "doctor",
            looking_for=(commands.PROBE_TAG, hermes.name),
        ) as watch:
            run = laptop.run(args, TA_FROM_ENV=from_env)
        written = (seen / "env").read_text().split()
    finally:
        shutil.rmtree(seen)
    assert run.returncode == 0, run.output
    assert watch.saw == {commands.PROBE_TAG, hermes.name} and watch.rounds > 10, (
        "the scan missed the probe"
    )
    assert not watch.found, watch.found
    # Every value still got where it belongs: hermes --version, and the token dir check.
    assert written == [
        "TA_TYPED",
        hashlib.sha256(typed.encode()).hexdigest(),
        "TA_FROM_ENV",
        hashlib.sha256(from_env.encode()).hexdigest(),
    ]
    doc = json.loads(run.stdout)
    found = checks(doc)
    assert "v0.18.0" in str(found["hermes"]["detail"]), found["hermes"]
    assert (
        str(home) in str(found["token dir"]["detail"]) and found["token dir"]["status"] == "pass"
    ), found
    assert f"{lab.user} can create it" in str(found["token dir"]["detail"])


# -- fleets --------------------------------------------------------------------------------------


def fleet_config(lab: Lab) -> Path:
    ssh_dir = lab.laptop_home / ".ssh"
    common = (
        f"  User {lab.user}\n  IdentityFile {ssh_dir / 'id_ed25519'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
    )
    path = lab.root / "doctor-fleet-config"
    path.write_text(
        f"Host bastion\n  HostName {lab.bastion_ip}\n{common}\n"
        f"Host t1 t2 t3 t4\n  HostName {lab.target_ip}\n  ProxyJump bastion\n{common}\n"
        f"Host broken\n  HostName {UNUSED}\n  ProxyJump bastion\n  ConnectTimeout 3\n{common}"
    )
    return path


def test_fleet_runs_concurrently_over_one_bastion_login(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    config = fleet_config(lab)
    args = ["-F", str(config), *fake(fake_hermes, "0.19.0")]
    single, _ = doctor_json(laptop, ["t1", *args])
    assert single.returncode == 0, single.output
    log = lab.root / "bastion" / "sshd.log"
    logins_before = log.read_text().count("Accepted publickey")
    run, doc = doctor_json(laptop, ["t1", "broken", "t2", "t3", "t4", *args])
    # sshd writes its log line a moment after the login
    e2e.wait_until(
        lambda: log.read_text().count("Accepted publickey") > logins_before, 5, "sshd's login line"
    )
    assert log.read_text().count("Accepted publickey") - logins_before == 1
    assert run.returncode == 1 and doc["ok"] is False, run.output
    dests = doc["destinations"]
    assert [d["destination"] for d in dests] == ["t1", "broken", "t2", "t3", "t4"]  # type: ignore[index]
    assert [d["ok"] for d in dests] == [True, False, True, True, True]  # type: ignore[index]
    broken = checks(doc, 1)
    hop = named(broken, "ssh broken")
    assert hop["status"] == "fail" and UNUSED in str(hop["detail"])
    assert float(hop["seconds"]) < 5  # type: ignore[arg-type]
    shared = [named(checks(doc, i), "ssh bastion")["detail"] for i in range(5)]
    assert sum("shared" in str(detail) for detail in shared) == 4
    # Five destinations, one of them dead for its ConnectTimeout (3 s): about one run's time
    # plus that timeout, well below four runs one after another.
    assert run.elapsed < 2 * single.elapsed + 3, (run.elapsed, single.elapsed)


def test_concurrency_one_still_shares_the_bastion(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    config = fleet_config(lab)
    log = lab.root / "bastion" / "sshd.log"
    before = log.read_text().count("Accepted publickey")
    run, doc = doctor_json(
        laptop, ["t1", "t2", "--concurrency", "1", "-F", str(config), *fake(fake_hermes, "0.19.0")]
    )
    assert run.returncode == 0 and doc["ok"] is True, run.output
    e2e.wait_until(
        lambda: log.read_text().count("Accepted publickey") > before, 5, "sshd's login line"
    )
    assert log.read_text().count("Accepted publickey") - before == 1


def test_bad_arguments_contact_nothing(lab: Lab, laptop: e2e.Laptop) -> None:
    log = lab.root / "bastion" / "sshd.log"
    before = log.read_text()
    for args in (
        ["doctor", "target", "--provider", "nope"],
        ["doctor", "target", "--concurrency", "0"],
        ["doctor", "target", "-o", "Bogus=1"],
    ):
        run = laptop.run(args)
        assert run.returncode == 2, run.output
        assert run.stdout == "" and "tunnelauth: error:" in run.stderr
    assert log.read_text().count("Accepted publickey") == before.count("Accepted publickey")


def test_ctrl_c_stops_what_runs_and_leaves_nothing(lab: Lab, laptop: e2e.Laptop) -> None:
    slow = lab.root / "bin" / "slow-hermes"  # `hermes --version` that never answers
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    proc = laptop.start(["doctor", "target", "--hermes", str(slow)])
    deadline = time.monotonic() + 15
    while not lab.target_processes("slow-hermes") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.target_processes("slow-hermes"), "the doctor never got to hermes --version"
    proc.send_signal(e2e.SIGINT)
    done = e2e.finish(proc, timeout=10)
    assert done.returncode == 130 and "interrupted" in done.stderr, done.output
    assert done.elapsed < 5
    assert e2e.gone_within(lab, "slow-hermes", 5), "hermes --version is still running on the target"
