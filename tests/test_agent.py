"""The remote supervisor, run locally through `sh -c` exactly as the remote shell would run it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tunnelauth import remote
from tunnelauth.remote import FrameDecoder, RemoteSpec, command_line, config_line, stdin_line


def start(spec: RemoteSpec, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The supervisor as sshd starts it: its code on the command line, its configuration as
    the first line on its stdin."""
    proc = subprocess.Popen(
        ["sh", "-c", command_line()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin
    proc.stdin.write(config_line(spec))
    proc.stdin.flush()
    return proc


def frames_of(proc: subprocess.Popen[bytes], timeout: float = 15) -> list[tuple[str, bytes]]:
    """Read to the end with stdin still open: a closed stdin means "the channel is gone"."""
    assert proc.stdout
    out = proc.stdout.read()
    proc.wait(timeout=timeout)
    if proc.stdin:
        proc.stdin.close()
    return FrameDecoder().feed(out)


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:  # gone, however late it went between two questions
            return True
        time.sleep(0.05)
    return False


def test_output_streams_input_and_exit_status_pass_through() -> None:
    proc = start(
        RemoteSpec(command=("sh", "-c", "echo out; echo err >&2; read x; echo got:$x; exit 3"))
    )
    assert proc.stdin
    proc.stdin.write(b"h\n" + stdin_line(b"typed\n"))
    proc.stdin.flush()
    frames = frames_of(proc)
    assert frames[0] == ("T", b"tunnelauth-agent 1")
    out = b"".join(p for k, p in frames if k == "o")
    assert out == b"out\ngot:typed\n"
    assert b"".join(p for k, p in frames if k == "e") == b"err\n"
    assert frames[-1] == ("x", b"3") and proc.returncode == 3


def test_environment_reaches_the_command_and_python_is_unbuffered() -> None:
    proc = start(
        RemoteSpec(command=("sh", "-c", 'echo "$A|$PYTHONUNBUFFERED"'), env={"A": "x y;$(z)"})
    )
    frames = frames_of(proc)
    assert b"".join(p for k, p in frames if k == "o") == b"x y;$(z)|1\n"


def test_channel_eof_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pidfile}; echo $$ >> {pidfile}; echo started; wait"
    proc = start(RemoteSpec(command=("sh", "-c", script)))
    assert proc.stdout and proc.stdin
    deadline = time.monotonic() + 10
    while (
        not (pidfile.exists() and len(pidfile.read_text().split()) == 2)
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    pids = [int(p) for p in pidfile.read_text().split()]
    proc.stdin.close()  # what sshd does when the connection goes away
    assert all(gone(pid, 8) for pid in pids)
    proc.wait(timeout=5)


def test_missing_heartbeats_kill_the_command() -> None:
    proc = start(RemoteSpec(command=("sleep", "300"), dead_after=1.0))
    start_time = time.monotonic()
    frames = frames_of(proc)
    assert time.monotonic() - start_time < 5
    assert frames[-1] == ("x", b"143")


def test_kill_request_stops_the_command() -> None:
    proc = start(RemoteSpec(command=("sleep", "300")))
    assert proc.stdin
    proc.stdin.write(b"k\n")
    proc.stdin.flush()
    assert frames_of(proc, 10)[-1] == ("x", b"143")


def _name(process: psutil.Process) -> str | None:
    try:
        return process.name()
    except psutil.Error:
        return None


def test_sigterm_to_the_supervisor_stops_the_command(tmp_path: Path) -> None:
    proc = start(RemoteSpec(command=("sleep", "300")))
    deadline = time.monotonic() + 10
    while True:
        # Short-lived helpers (the login shell's `command -v`) may exit while being listed.
        children = [
            (c, name)
            for c in psutil.Process(proc.pid).children(recursive=True)
            if (name := _name(c)) is not None
        ]
        sleeper = [c for c, name in children if name == "sleep"]
        if sleeper or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert sleeper, "the command never started"
    os.kill(next(c.pid for c, name in children if "python" in name), signal.SIGTERM)
    assert gone(sleeper[0].pid, 5)
    proc.kill()
    proc.wait()


def test_missing_command_is_reported_with_where_it_looked() -> None:
    frames = frames_of(start(RemoteSpec(command=("hermes-that-is-not-there",))))
    kinds = [k for k, _ in frames]
    assert kinds == ["T", "n"]
    assert b"login shell" in frames[1][1]


def test_listen_watch_reports_a_port_once_it_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = f"sleep 0.5; exec python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",{port})); s.listen(); time.sleep(1)'"
    proc = start(RemoteSpec(command=("sh", "-c", script)))
    assert proc.stdin
    proc.stdin.write(f"w{port}\nh\n".encode())
    proc.stdin.flush()
    frames = frames_of(proc)
    assert ("L", f"{port} 127.0.0.1".encode()) in frames


@pytest.mark.parametrize(
    "shown",
    [
        "http://127.0.0.1:{port}/callback",
        "http://localhost:{port}/cb",
        "https://auth.example.test/authorize?redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback",
    ],
)
def test_a_port_named_in_the_output_is_reported_unasked_before_that_output(shown: str) -> None:
    # tunnelauth opens the browser once the target listens; telling it with the very line
    # that names the port saves the round trip of asking.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = shown.format(port=port)
    script = (
        f"import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',{port:d})); s.listen(); "
        "print(sys.argv[1], flush=True); time.sleep(0.5)"
    )
    proc = start(RemoteSpec(command=("python3", "-c", script, text)))
    assert proc.stdin
    proc.stdin.write(b"h\n")
    proc.stdin.flush()
    frames = frames_of(proc)
    kinds = [(k, p) for k, p in frames if k in "Lo"]
    assert kinds[0] == ("L", f"{port} 127.0.0.1".encode()), frames
    assert kinds[1][0] == "o" and text.encode() in kinds[1][1]
    assert sum(1 for k, _ in frames if k == "L") == 1  # once, however often it is named


def test_a_port_not_listening_yet_is_reported_when_it_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = (
        f"import socket,time; print('http://127.0.0.1:{port:d}/callback', flush=True); time.sleep(0.3); "
        f"s=socket.socket(); s.bind(('127.0.0.1',{port:d})); s.listen(); time.sleep(0.5)"
    )
    proc = start(RemoteSpec(command=("python3", "-c", script)))
    assert proc.stdin
    proc.stdin.write(b"h\n")
    proc.stdin.flush()
    frames = frames_of(proc)
    # The command's stdout is unbuffered (PYTHONUNBUFFERED): print() writes the text and its
    # newline separately, so the line may come as one output frame or two. What matters is the
    # order: all of the line first, then the port once it listens.
    kinds = [k for k, _ in frames if k in "Lo"]
    assert kinds[-1] == "L" and set(kinds[:-1]) == {"o"}, frames
    assert (
        b"".join(p for k, p in frames if k == "o") == f"http://127.0.0.1:{port}/callback\n".encode()
    )
    assert ("L", f"{port} 127.0.0.1".encode()) in frames


def test_token_file_is_reported_after_success(tmp_path: Path) -> None:
    home = tmp_path / "hh"
    home.mkdir(mode=0o700)
    (home / "auth.json").write_text("{}")
    (home / "auth.json").chmod(0o600)
    proc = start(RemoteSpec(command=("true",), env={"HERMES_HOME": str(home)}, token_check=True))
    frames = dict(frames_of(proc))
    assert b'"mode": 384' in frames["f"] and str(home).encode() in frames["f"]


@pytest.mark.parametrize("version", ["3.6", "3.8"])
def test_supervisor_runs_on_old_remote_pythons(version: str, tmp_path: Path) -> None:
    # sudo's secure_path hides pyenv's shims: look in pyenv's versions too.
    found = sorted(Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python{version}"))
    python = shutil.which(f"python{version}") or (str(found[-1]) if found else None)
    if python is None:
        pytest.skip(f"python{version} is not installed here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = start(RemoteSpec(command=("echo", "hi")), env=env)
    frames = frames_of(proc)
    assert ("o", b"hi\n") in frames and frames[-1] == ("x", b"0")


def test_pty_mode_gives_the_command_a_terminal() -> None:
    proc = start(
        RemoteSpec(
            command=("sh", "-c", "tty; stty size; read x; echo got:$x"), pty=True, size=(100, 30)
        )
    )
    assert proc.stdin
    proc.stdin.write(b"h\n" + stdin_line(b"typed\n"))
    proc.stdin.flush()
    frames = frames_of(proc)
    out = b"".join(p for k, p in frames if k == "o").decode()
    assert "/dev/pts/" in out and "30 100" in out and "got:typed" in out
    assert frames[-1] == ("x", b"0")


# -- issue 12: secrets stay in the channel, stalls within the keepalive window, setsid helpers --


def tree_cmdlines(pid: int) -> list[str]:
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []
    lines = []
    for proc in procs:
        try:
            lines.append("\0".join(proc.cmdline()))
        except psutil.Error:
            continue
    return lines


def test_configuration_arrives_on_stdin_and_no_value_is_in_any_command_line(tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    home = f"/nonexistent/{secrets.token_hex(8)}"
    marker = tmp_path / "started"
    script = f'touch {marker}; read x; printf "%s|%s" "$SECRET" "$HERMES_HOME"'
    proc = start(
        RemoteSpec(command=("sh", "-c", script), env={"SECRET": secret, "HERMES_HOME": home})
    )
    assert proc.stdin
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the command never started"
        time.sleep(0.02)
    lines = tree_cmdlines(proc.pid)
    assert len(lines) >= 3  # sh, the supervisor, the command
    assert not [line for line in lines if secret in line or home in line], lines
    proc.stdin.write(stdin_line(b"go\n"))
    proc.stdin.flush()
    frames = frames_of(proc)
    assert b"".join(p for k, p in frames if k == "o") == f"{secret}|{home}".encode()


def test_no_configuration_no_command() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", command_line()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin
    proc.stdin.close()  # the channel closed before tunnelauth sent anything
    frames = frames_of(proc)
    assert [k for k, _ in frames] == ["T"] and proc.returncode == 125


def test_death_window_follows_the_keepalive_numbers() -> None:
    # tunnelauth's keepalive gives up after interval x (count_max + 1) s; the supervisor waits longer.
    for interval, count in ((5.0, 3), (1.0, 2), (15.0, 1)):
        assert remote.dead_after(interval, count) > interval * (count + 1) + remote.HEARTBEAT
    assert (
        remote.dead_after(5.0, 3) < 30
    )  # and a cut link still frees the target within half a minute


def test_a_stall_shorter_than_the_keepalive_window_is_survived() -> None:
    interval, count = 1.0, 3  # a 3 s keepalive window
    proc = start(
        RemoteSpec(
            command=("sh", "-c", "read x; echo got:$x"),
            dead_after=remote.dead_after(interval, count),
        )
    )
    assert proc.stdin
    proc.stdin.write(b"h\n")
    proc.stdin.flush()
    time.sleep(
        2.9
    )  # the stall itself (laptop suspended): no heartbeat, no EOF, shorter than the window
    assert proc.poll() is None
    proc.stdin.write(b"h\n" + stdin_line(b"late\n"))
    proc.stdin.flush()
    frames = frames_of(proc)
    assert b"got:late" in b"".join(p for k, p in frames if k == "o")
    assert frames[-1] == ("x", b"0") and "H" not in [k for k, _ in frames]


def test_heartbeats_missing_for_the_whole_window_stop_the_command_and_say_so() -> None:
    window = remote.dead_after(0.5, 1)
    proc = start(RemoteSpec(command=("sleep", "300"), dead_after=window))
    began = time.monotonic()
    frames = frames_of(proc)
    took = time.monotonic() - began
    assert window <= took < window + 4, (window, took)
    assert frames[-2] == ("H", f"{window:g}".encode()) and frames[-1] == ("x", b"143")


def test_a_setsid_helper_holding_the_output_does_not_keep_the_supervisor(tmp_path: Path) -> None:
    pidfile = tmp_path / "helper"
    script = f"setsid sleep 300 & echo $! > {pidfile}; echo main done; exit 5"
    proc = start(RemoteSpec(command=("sh", "-c", script)))
    assert proc.stdin
    proc.stdin.write(b"h\n")
    proc.stdin.flush()
    began = time.monotonic()
    try:
        frames = frames_of(proc, timeout=10)
        took = time.monotonic() - began
    finally:
        if pidfile.exists():
            helper = int(pidfile.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper, signal.SIGKILL)
    assert frames[-1] == ("x", b"5"), frames
    assert b"main done" in b"".join(p for k, p in frames if k == "o")
    assert took < 3, took
