"""`tunnelauth doctor` without the lab: the pure decisions, the remote programs run locally
through `sh -c` as the remote login shell would run them, and the shared-connection cache."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tunnelauth import ssh
from tunnelauth.doctor import commands, verdicts, versions
from tunnelauth.doctor.model import Check, DestinationReport, DoctorReport, Status
from tunnelauth.doctor.render import as_json, as_table
from tunnelauth.errors import ConnectFailed
from tunnelauth.providers import Flow, lookup

XAI, SPOTIFY = lookup("xai"), lookup("spotify")


# -- versions -> flows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ("Hermes Agent v0.19.0 (2026.7.20)", (0, 19, 0)),
        ("Hermes Agent v0.18.1 (2026.7.7)", (0, 18, 1)),
        ("hermes agent 0.20", (0, 20, 0)),
        ("Hermes Agent v1.2.3rc1 (dev)", (1, 2, 3)),
        ("Python 3.11.2", None),
        ("", None),
    ],
)
def test_version_is_read_from_the_first_line(
    line: str, version: tuple[int, int, int] | None
) -> None:
    assert versions.parse_version(line) == version


@pytest.mark.parametrize(
    ("name", "version", "flow"),
    [
        ("xai", (0, 13, 0), None),
        ("xai", (0, 14, 0), Flow.LOOPBACK),
        ("xai", (0, 18, 0), Flow.LOOPBACK),
        ("xai", (0, 18, 1), Flow.DEVICE),
        ("xai", (0, 19, 0), Flow.DEVICE),
        ("xai", (1, 0, 0), Flow.DEVICE),
        ("spotify", (0, 12, 9), None),
        ("spotify", (0, 13, 0), Flow.LOOPBACK),
        ("spotify", (0, 19, 0), Flow.LOOPBACK),
        ("anthropic", (0, 1, 0), Flow.PASTE),
        ("codex", (0, 19, 0), Flow.DEVICE),
        ("nous", (0, 19, 0), Flow.DEVICE),
    ],
)
def test_flow_of_each_provider_by_release(
    name: str, version: tuple[int, int, int], flow: Flow | None
) -> None:
    assert versions.flow_for(lookup(name), version) is flow


def test_first_release_is_known_only_where_the_history_is() -> None:
    assert versions.first_release(XAI) == (0, 14, 0)
    assert versions.first_release(SPOTIFY) == (0, 13, 0)
    assert versions.first_release(lookup("codex")) is None


# -- the target's socket table -------------------------------------------------------------------

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:AB53 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:DB19 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0202A8C6:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:2710 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000000000000:2711 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: 0000000000000000FFFF00000100007F:2712 00000000000000000000000000000000:0000 0A 00000000:00000000
   3: 000080FE00000000FF005450B6AD1DFE:2713 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_listeners_are_loopback_and_wildcard_listens_only() -> None:
    found = verdicts.listeners(TCP + TCP6)
    assert found == {
        43859: {"127.0.0.1"},
        56089: {"0.0.0.0"},
        10000: {"::1"},
        10001: {"::"},
        10002: {"::ffff:127.0.0.1"},
    }
    # 198.18.2.2:22 is not loopback, 127.0.0.1:8080 is a connection (01), fe80:: is link-local.
    assert 22 not in found and 8080 not in found and 10003 not in found


def test_listeners_read_a_big_endian_kernel_too() -> None:
    assert verdicts.listeners("   0: 7F000001:A8F3 00000000:0000 0A 0\n") == {43251: {"127.0.0.1"}}


def test_an_unreadable_table_gives_no_listeners() -> None:
    assert verdicts.listeners("") == {} and verdicts.listeners("garbage\n 0: zz:qq x 0A\n") == {}


# -- port verdicts -------------------------------------------------------------------------------


def test_port_free_on_both_sides_passes() -> None:
    out = verdicts.port_verdict(
        SPOTIFY, 43827, "gpu", laptop_busy=None, target=set(), flow=Flow.LOOPBACK
    )
    assert out.status is Status.PASS and "gpu" in out.detail


def test_port_taken_on_the_laptop_fails_whatever_the_flow() -> None:
    busy = "port 56121 on this machine's 127.0.0.1 is already in use, held by pid 7 (ssh -N)"
    out = verdicts.port_verdict(XAI, 56121, "gpu", laptop_busy=busy, target=set(), flow=Flow.DEVICE)
    assert out.status is Status.FAIL and "pid 7" in out.detail and "exit 3" in out.detail


def test_spotify_port_taken_on_the_target_fails_naming_the_port() -> None:
    out = verdicts.port_verdict(
        SPOTIFY, 43827, "gpu", laptop_busy=None, target={"127.0.0.1"}, flow=Flow.LOOPBACK
    )
    assert (
        out.status is Status.FAIL and "port 43827" in out.detail and "127.0.0.1:43827" in out.detail
    )


def test_xai_port_taken_on_the_target_warns_because_hermes_moves_it() -> None:
    out = verdicts.port_verdict(
        XAI, 56121, "gpu", laptop_busy=None, target={"::"}, flow=Flow.LOOPBACK
    )
    assert out.status is Status.WARN and "[::]:56121" in out.detail and "move" in out.detail


def test_xai_port_taken_does_not_matter_with_device_code() -> None:
    out = verdicts.port_verdict(
        XAI, 56121, "gpu", laptop_busy=None, target={"0.0.0.0"}, flow=Flow.DEVICE
    )
    assert out.status is Status.PASS and "device code" in out.detail


def test_unknown_socket_table_warns() -> None:
    out = verdicts.port_verdict(SPOTIFY, 43827, "gpu", laptop_busy=None, target=None, flow=None)
    assert out.status is Status.WARN and "/proc/net/tcp" in out.detail


# -- token directory -----------------------------------------------------------------------------

GOOD = {
    "user": "alice",
    "dir": "/home/alice/.hermes",
    "exists": True,
    "is_dir": True,
    "dir_mode": 0o700,
    "dir_owned": True,
    "writable": True,
    "file_exists": True,
    "file_mode": 0o600,
    "file_owned": True,
    "file_rw": True,
}


def test_token_dir_700_with_auth_json_600_passes() -> None:
    out = verdicts.token_verdict(GOOD)
    assert out.status is Status.PASS and out.data == "alice" and "auth.json mode 600" in out.detail


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"dir_mode": 0o755}, ["mode 755", "chmod 700"]),
        ({"file_mode": 0o644}, ["auth.json has mode 644"]),
        ({"dir_owned": False}, ["not owned by alice"]),
    ],
)
def test_loose_permissions_warn(change: dict[str, object], words: list[str]) -> None:
    out = verdicts.token_verdict({**GOOD, **change})
    assert out.status is Status.WARN
    assert all(word in out.detail for word in words)


@pytest.mark.parametrize(
    ("info", "words"),
    [
        ({**GOOD, "writable": False}, ["not writable for alice"]),
        ({**GOOD, "file_rw": False}, ["auth.json is not readable and writable"]),
        ({**GOOD, "is_dir": False}, ["not a directory"]),
        (
            {
                "user": "alice",
                "dir": "/x/.hermes",
                "exists": False,
                "parent": "/x",
                "creatable": False,
            },
            ["cannot create it", "/x is not writable"],
        ),
        ({"user": "bob", "sudo": "sudo: a password is required"}, ["sudo -n -u bob", "password"]),
        ({"user": "alice", "dir": "/h", "error": "Permission denied"}, ["/h: Permission denied"]),
    ],
)
def test_unusable_token_dir_fails(info: dict[str, object], words: list[str]) -> None:
    out = verdicts.token_verdict(info)
    assert out.status is Status.FAIL
    assert all(word in out.detail for word in words), out.detail


def test_missing_dir_that_can_be_created_passes() -> None:
    out = verdicts.token_verdict(
        {"user": "alice", "dir": "/h/.hermes", "exists": False, "parent": "/h", "creatable": True}
    )
    assert out.status is Status.PASS and "does not exist yet" in out.detail


# -- gateway -------------------------------------------------------------------------------------


def test_no_gateway_passes() -> None:
    assert verdicts.gateway_verdict("alice", {"processes": [], "units": []}).status is Status.PASS


def test_gateway_of_the_same_user_passes() -> None:
    info = {
        "processes": [{"user": "alice", "pid": 12, "args": "/usr/bin/python3 hermes gateway run"}]
    }
    out = verdicts.gateway_verdict("alice", info)
    assert out.status is Status.PASS and "pid 12" in out.detail


def test_gateway_of_another_user_warns_and_says_what_to_do() -> None:
    info = {
        "processes": [{"user": "alice", "pid": 12, "args": "hermes gateway"}],
        "units": [{"unit": "hermes-gateway.service", "user": "hermes", "state": "active"}],
    }
    out = verdicts.gateway_verdict("alice", info)
    assert out.status is Status.WARN
    assert "runs as hermes" in out.detail and "hermes-gateway.service" in out.detail
    assert "--as-user hermes" in out.detail


def test_long_gateway_command_lines_are_cut() -> None:
    info = {"processes": [{"user": "root", "pid": 1, "args": "hermes gateway " + "x" * 500}]}
    assert len(verdicts.gateway_verdict("alice", info).detail) < 300


# -- the report ----------------------------------------------------------------------------------


def report(*statuses: Status, strict: bool = False) -> DoctorReport:
    checks = tuple(Check(f"c{i}", s, f"d{i}", 0.1234) for i, s in enumerate(statuses))
    return DoctorReport((DestinationReport("gpu", checks),), strict)


def test_warnings_pass_unless_strict() -> None:
    assert report(Status.PASS, Status.WARN, Status.SKIP).exit_code == 0
    assert report(Status.PASS, Status.WARN, strict=True).exit_code == 1
    assert report(Status.PASS, Status.FAIL).exit_code == 1


def test_json_document_has_the_documented_shape() -> None:
    out = io.StringIO()
    as_json(report(Status.PASS, Status.FAIL), out)
    doc = json.loads(out.getvalue())
    assert doc == {
        "destinations": [
            {
                "destination": "gpu",
                "ok": False,
                "checks": [
                    {"name": "c0", "status": "pass", "detail": "d0", "seconds": 0.123},
                    {"name": "c1", "status": "fail", "detail": "d1", "seconds": 0.123},
                ],
            }
        ],
        "ok": False,
    }


def test_table_shows_every_check_and_the_verdict() -> None:
    out = io.StringIO()
    as_table(
        DoctorReport(
            (DestinationReport("gpu", (Check("hermes", Status.FAIL, "[not] found", 1.5),)),)
        ),
        out,
    )
    text = out.getvalue()
    assert "gpu" in text and "FAILED" in text and "[not] found" in text and "1.50 s" in text
    assert "0 of 1 destination ok" in text


# -- the throwaway listener, run locally as the target would run it ------------------------------


def start_listener(
    token: str, life: float = 10, avoid: tuple[int, ...] = (), python: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    env = None
    if python is not None:
        env = {**os.environ, "PATH": f"{Path(python).parent}:/usr/bin:/bin"}
    proc = subprocess.Popen(
        ["sh", "-c", commands.listener_command(token, avoid, life)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_listener_serves_its_token_once_and_exits() -> None:
    proc, port = start_listener("tok-123")
    assert commands.LISTENER_TAG in " ".join(_cmdline(proc.pid))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=5) as response:
        assert response.read() == b"tok-123"
    assert proc.wait(timeout=5) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_listener_stops_when_its_channel_closes() -> None:
    proc, _ = start_listener("t")
    assert proc.stdin is not None
    start = time.monotonic()
    proc.stdin.close()
    assert proc.wait(timeout=5) == 4 and time.monotonic() - start < 2


def test_listener_stops_by_itself_when_nobody_comes() -> None:
    proc, _ = start_listener("t", life=1)
    assert proc.wait(timeout=5) == 3


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a network namespace"
)
def test_listener_never_takes_an_avoided_port() -> None:
    # In a namespace whose ephemeral range is 8 ports, 7 of them avoided: only one is allowed.
    script = (
        'ip link set lo up && sysctl -qw net.ipv4.ip_local_port_range="40000 40007" && '
        + commands.listener_command("t", range(40000, 40007), life=0.2)
    )
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=10
    )
    assert done.stdout.strip() == "40007", done.stderr


def test_listener_reports_a_missing_python(tmp_path: Path) -> None:
    (tmp_path / "sh").symlink_to("/bin/sh")
    env = {**os.environ, "PATH": str(tmp_path)}
    done = subprocess.run(
        ["/bin/sh", "-c", commands.listener_command("t", ())],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == commands.NO_PYTHON and "no python3" in done.stderr
    with pytest.raises(commands.NoPython):
        commands.check_python(done.returncode, done.stderr.strip(), "gpu")


def _cmdline(pid: int) -> list[str]:
    import psutil

    return psutil.Process(pid).cmdline()


# -- the probe, run locally ----------------------------------------------------------------------


def start_probe(
    modes: list[str], config: dict[str, object], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    # The configuration as the first line on its stdin, which then stays open, as the doctor
    # keeps the channel's: its closing means "tunnelauth is gone".
    proc = subprocess.Popen(
        ["sh", "-c", commands.probe_command()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(commands.probe_config_line(modes, config))
    proc.stdin.flush()
    return proc


def probe_modes(
    modes: list[str], config: dict[str, object], env: dict[str, str] | None = None
) -> dict[str, object]:
    proc = start_probe(modes, config, env)
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    out = proc.stdout.read()
    proc.stdin.close()
    proc.wait(timeout=60)
    answer = commands.probe_answer(out)
    assert answer is not None, proc.stderr.read()
    assert list(answer) == modes
    return answer


def probe(
    mode: str, config: dict[str, object], env: dict[str, str] | None = None
) -> dict[str, object]:
    return probe_modes([mode], config, env)[mode]  # type: ignore[return-value]


def fake_hermes(tmp_path: Path, line: str = "Hermes Agent v0.18.0 (2026.7.1)") -> Path:
    script = tmp_path / "hermes"
    # Like the real one, --version writes into ~/.hermes: the probe must point it elsewhere.
    script.write_text(
        f'#!/bin/sh\nmkdir -p "$HOME/.hermes" && echo "$HERMES_HOME" > "$HOME/.hermes/where"\n'
        f'echo "{line}"\necho "Python: 3"\necho "FOO=$FOO" >&2\n'
    )
    script.chmod(0o755)
    return script


def test_probe_runs_hermes_version_in_a_throwaway_home(tmp_path: Path) -> None:
    hermes = fake_hermes(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HOME": str(home)}
    info = probe(
        "hermes",
        {"hermes": str(hermes), "as_user": None, "env": {"FOO": "bar", "HERMES_HOME": "/x"}},
        env,
    )
    assert info["path"] == str(hermes) and info["rc"] == 0
    assert info["first_line"] == "Hermes Agent v0.18.0 (2026.7.1)"
    assert info["error"] == "FOO=bar"  # --remote-env reaches it
    assert list(scratch.iterdir()) == [] and not (home / ".hermes").exists()


def installed_hermes(tmp_path: Path, version: str = "0.19.0", name: str = "hermes_agent") -> Path:
    """A hermes as pip or pipx installs it: a venv whose bin/hermes runs the venv's python,
    the package's dist-info beside it. Running it would fail: the probe must not need to."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python3"
    python.symlink_to("/bin/false")
    dist = venv / "lib" / "python3.11" / "site-packages" / f"{name}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
    )
    script = venv / "bin" / "hermes"
    script.write_text(f"#!{python}\nimport sys\nsys.exit(1)\n")
    script.chmod(0o755)
    link = tmp_path / ".local" / "bin" / "hermes"  # ~/.local/bin/hermes -> the venv's, as pipx does
    link.parent.mkdir(parents=True)
    link.symlink_to(script)
    return link


def test_probe_reads_the_version_from_the_package_metadata_without_running_hermes(
    tmp_path: Path,
) -> None:
    hermes = installed_hermes(tmp_path)
    info = probe("hermes", {"hermes": str(hermes), "as_user": None, "env": {}})
    assert info["path"] == str(hermes) and info["rc"] == 0
    assert versions.parse_version(str(info["first_line"])) == (0, 19, 0)
    assert "package metadata" in str(info["first_line"])


def test_probe_runs_hermes_when_the_metadata_is_not_hermes_agent(tmp_path: Path) -> None:
    hermes = installed_hermes(tmp_path, name="hermes_other")
    info = probe("hermes", {"hermes": str(hermes), "as_user": None, "env": {}})
    assert info["rc"] == 1  # it ran (and this one fails), since nothing else told its version


ALL_MODES = ["hermes", "tokens", "gateway", "sockets"]


def check_every_mode(
    tmp_path: Path, hermes: Path, env: dict[str, str] | None = None
) -> dict[str, object]:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = listening.getsockname()[1]
        answer = probe_modes(
            ALL_MODES,
            {
                "hermes": str(hermes),
                "as_user": None,
                "env": {},
                "hermes_home": str(tmp_path / "hh"),
            },
            env,
        )
    assert answer["tokens"]["dir"] == str(tmp_path / "hh")  # type: ignore[index]
    # What LISTENs where, read on the target by remote_lib's one parser.
    assert answer["sockets"][str(port)] == ["127.0.0.1"]  # type: ignore[index]
    assert set(answer["gateway"]) == {"processes", "units"}  # type: ignore[arg-type]
    return answer


def test_one_probe_answers_every_mode(tmp_path: Path) -> None:
    answer = check_every_mode(tmp_path, fake_hermes(tmp_path))
    assert answer["hermes"]["first_line"] == "Hermes Agent v0.18.0 (2026.7.1)"  # type: ignore[index]


def test_probe_stops_hermes_and_cleans_up_when_tunnelauth_goes_away(tmp_path: Path) -> None:
    import psutil

    hermes = tmp_path / "hermes"
    hermes.write_text('#!/bin/sh\necho started > "$HOME/started"\nexec sleep 60\n')
    hermes.chmod(0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = start_probe(
        ["hermes"],
        {"hermes": str(hermes), "as_user": None, "env": {}},
        {**os.environ, "TMPDIR": str(scratch)},
    )
    sleepers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 10
        while not list(scratch.glob("*/started")) and time.monotonic() < deadline:
            time.sleep(0.02)
        sleepers = [
            c for c in psutil.Process(proc.pid).children(recursive=True) if "sleep" in c.name()
        ]
        assert sleepers, "hermes --version did not start"
        assert proc.stdin is not None
        start = time.monotonic()
        proc.stdin.close()  # tunnelauth is gone: Ctrl-C, a timeout, a cut link
        proc.wait(timeout=10)
        assert time.monotonic() - start < 5
        assert not [s for s in sleepers if s.is_running() and s.status() != psutil.STATUS_ZOMBIE]
        assert list(scratch.iterdir()) == []
    finally:
        for leftover in [*sleepers, psutil.Process(proc.pid)] if proc.poll() is None else sleepers:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        proc.wait(timeout=10)


def test_probe_says_where_it_looked_for_a_missing_hermes(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
    info = probe("hermes", {"hermes": "hermes", "as_user": None, "env": {}}, env)
    looked = info["missing"]
    assert isinstance(looked, list) and "$PATH" in looked
    assert f"{tmp_path}/.local/bin/hermes" in looked


def test_probe_checks_the_token_dir(tmp_path: Path) -> None:
    where = tmp_path / "hh"
    where.mkdir(mode=0o755)
    where.chmod(0o755)
    (where / "auth.json").write_text("{}")
    (where / "auth.json").chmod(0o600)
    info = probe("tokens", {"as_user": None, "hermes_home": str(where)})
    assert info["dir_mode"] == 0o755 and info["file_mode"] == 0o600 and info["writable"] is True
    assert verdicts.token_verdict(info).status is Status.WARN
    info = probe("tokens", {"as_user": None, "hermes_home": str(tmp_path / "new" / "deeper")})
    assert info["exists"] is False and info["parent"] == str(tmp_path) and info["creatable"] is True


def test_probe_finds_a_gateway_and_its_user() -> None:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "hermes", "gateway"]
    )
    try:
        deadline = time.monotonic() + 10
        while "gateway" not in _cmdline(sleeper.pid):  # until it has exec'd
            assert time.monotonic() < deadline, "the gateway stand-in never started"
            time.sleep(0.01)
        info = probe("gateway", {})
    finally:
        sleeper.kill()
        sleeper.wait()
    mine = [p for p in info["processes"] if p["pid"] == sleeper.pid]  # type: ignore[union-attr,index]
    assert mine and mine[0]["user"] == pwd.getpwuid(os.getuid()).pw_name
    assert not [p for p in info["processes"] if commands.PROBE_TAG in p["args"]]  # type: ignore[union-attr,index]


@pytest.mark.parametrize("version", ["3.6", "3.8"])
def test_listener_and_probe_run_on_old_remote_pythons(version: str, tmp_path: Path) -> None:
    # pyenv's own binary, not its shim: a shim called as `python3` runs the default python.
    found = sorted(Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python{version}"))
    python = str(found[-1]) if found else shutil.which(f"python{version}")
    if python is None:
        pytest.skip(f"python{version} is not installed here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    shown = subprocess.run(
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert shown == version
    proc = subprocess.Popen(
        ["sh", "-c", commands.listener_command("old", ())],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert response.read() == b"old"
    assert proc.wait(timeout=5) == 0
    info = probe("tokens", {"as_user": None, "hermes_home": str(tmp_path / "h")}, env)
    assert info["exists"] is False and info["creatable"] is True
    # What a doctor run asks of it: every mode at once, hermes's version from its metadata.
    answer = check_every_mode(tmp_path, installed_hermes(tmp_path), env)
    assert versions.parse_version(str(answer["hermes"]["first_line"])) == (0, 19, 0)  # type: ignore[index]


# -- one connection per hop-chain prefix ---------------------------------------------------------


def hop(name: str) -> ssh.Hop:
    return ssh.Hop(
        name=name,
        host=name,
        port=22,
        user="u",
        identities=(),
        identities_only=False,
        known_hosts=(),
        accept_new=False,
        proxy_command=None,
        connect_timeout=3,
        keepalive_interval=5,
        keepalive_count_max=3,
    )


class FakeConn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None


def test_shared_connections_connect_each_prefix_once(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, str | None]] = []

    async def connect_hop(h: ssh.Hop, via: FakeConn | None) -> FakeConn:
        opened.append((h.name, via.name if via else None))
        await asyncio.sleep(0.05)
        if h.name == "dead":
            raise ConnectFailed(f"cannot reach {h}")
        return FakeConn(h.name)

    monkeypatch.setattr(ssh, "connect_hop", connect_hop)
    bastion, t1, t2, dead = hop("bastion"), hop("t1"), hop("t2"), hop("dead")

    async def main() -> tuple[list[object], list[FakeConn]]:
        pool = ssh.SharedConnections()
        results: list[object] = list(
            await asyncio.gather(
                pool.get((bastion, t1)),
                pool.get((bastion, t2)),
                pool.get((bastion, dead)),
                pool.get((bastion, dead)),
                return_exceptions=True,
            )
        )
        results.append(await pool.get((bastion,)))
        conns = [r[0] for r in results if isinstance(r, tuple)]
        await pool.close()
        return results, conns

    results, conns = asyncio.run(main())
    assert sorted(opened) == [
        ("bastion", None),
        ("dead", "bastion"),
        ("t1", "bastion"),
        ("t2", "bastion"),
    ]
    assert isinstance(results[2], ConnectFailed) and results[2] is results[3]
    assert results[0][1] is False and results[4][1] is True  # type: ignore[index]  # opened by t1, reused
    assert len({id(conn) for conn in conns}) == 3  # t1, t2 and the one bastion
    assert all(conn.closed for conn in conns)
