"""Reliability promises, end to end in the SSH lab: nothing left behind however a login ends,
every fault named with its own exit code, one login per port, and no probing of hermes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import termios
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests import e2e
from tests.lab.netlab import Lab
from tunnelauth import remote

pytestmark = pytest.mark.lab

XAI_PORT = 56121
SUPERVISOR = "import base64,sys,zlib"  # in the command line of everything tunnelauth runs remotely
LINK_DEADLINE = 30.0  # keepalive 5 s x 3, plus margin


def fake(lab: Lab, provider: e2e.Provider, hermes: Path, version: str = "0.18.0") -> list[str]:
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


def who(lab: Lab, login: str) -> list[str]:
    if login == "root":
        return [
            "root@target",
            "--hermes-home",
            str(lab.root / f"root-hermes-{uuid.uuid4().hex[:8]}"),
        ]
    if login == "as-user":  # root logs in, hermes runs as the user through sudo
        return ["root@target", "--as-user", lab.user]
    return ["target"]


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:80]})"
    except psutil.Error:
        return f"pid {proc.pid}"


def leftovers(lab: Lab) -> list[str]:
    found = [
        describe(p) for needle in ("fake-hermes", SUPERVISOR) for p in lab.target_processes(needle)
    ]
    if XAI_PORT in lab.listening_ports("target"):
        found.append(f"a listener on the target's port {XAI_PORT}")
    if XAI_PORT in lab.listening_ports("laptop"):
        found.append(f"a listener on the laptop's port {XAI_PORT}")
    return found


def assert_nothing_left(lab: Lab, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while (left := leftovers(lab)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still there after {within} s: {left}"


def login_is_waiting(lab: Lab) -> bool:
    """hermes runs, listens, and the laptop's forward is up."""
    return (
        XAI_PORT in lab.listening_ports("target")
        and XAI_PORT in lab.listening_ports("laptop")
        and bool(lab.target_processes("fake-hermes"))
    )


def start_waiting(
    lab: Lab, laptop: e2e.Laptop, args: list[str], quiet: bool = False
) -> subprocess.Popen[str]:
    """A login waiting for the browser. quiet: -q with a browser that waits, so that stderr
    holds nothing but what the end of the run prints; else --no-open."""
    if quiet:
        proc = laptop.start(["xai", *args, "-q"], FAKE_BROWSER_DELAY="300")
        e2e.wait_until(
            lambda: login_is_waiting(lab) or proc.poll() is not None,
            30,
            "the login never got going",
        )
        assert proc.poll() is None, e2e.finish_now(proc).output
    else:
        proc = laptop.start(["xai", *args, "--no-open"])
        e2e.wait_for_stderr(proc, "Open this URL")
        assert login_is_waiting(lab)
    return proc


def only_error(stderr: str) -> str:
    """-q: stderr is exactly the one error line."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunnelauth: error: "), stderr
    return lines[0]


# == 6. no orphans, however the login ends =======================================================

LOGINS = ["user", "root"]


@e2e.BOTH_TRANSPORTS
@pytest.mark.parametrize("login", LOGINS)
def test_nothing_left_after_success(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, login: str
) -> None:
    run = laptop.run(["xai", *who(lab, login), *fake(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert_nothing_left(lab)


@pytest.mark.parametrize("login", LOGINS)
def test_nothing_left_after_a_denied_login(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, login: str
) -> None:
    run = laptop.run(
        ["xai", *who(lab, login), *fake(lab, provider, fake_hermes)], FAKE_BROWSER_MODE="deny"
    )
    assert run.returncode == 1, run.output
    assert "denied" in run.stderr.strip().splitlines()[-1], run.stderr
    assert_nothing_left(lab)


@e2e.BOTH_TRANSPORTS
@pytest.mark.parametrize("login", LOGINS)
def test_nothing_left_after_timeout(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, login: str
) -> None:
    proc = start_waiting(
        lab, laptop, [*who(lab, login), "--timeout", "6", *fake(lab, provider, fake_hermes)]
    )
    run = e2e.finish(proc)
    assert run.returncode == 8, run.output
    assert_nothing_left(lab)


@e2e.BOTH_TRANSPORTS
@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
@pytest.mark.parametrize("login", [*LOGINS, "as-user"])
def test_nothing_left_after_a_signal(
    lab: Lab,
    laptop: e2e.Laptop,
    provider: e2e.Provider,
    fake_hermes: Path,
    login: str,
    sig: int,
    code: int,
) -> None:
    proc = start_waiting(lab, laptop, [*who(lab, login), *fake(lab, provider, fake_hermes)])
    run = e2e.finish(proc, sig)
    assert run.returncode == code, run.output
    if sig != signal.SIGKILL:
        assert run.stderr.strip().splitlines()[-1].startswith("tunnelauth: error: "), run.stderr
        assert run.elapsed < 5, run.elapsed
    assert_nothing_left(lab)


def test_ctrl_c_while_the_browser_has_not_returned(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    proc = start_waiting(lab, laptop, ["target", *fake(lab, provider, fake_hermes)], quiet=True)
    run = e2e.finish_now(proc, signal.SIGINT, timeout=10)
    assert run.returncode == 130, run.output
    assert run.elapsed < 5, run.elapsed
    assert only_error(run.stderr)
    assert_nothing_left(lab)


def start_on_a_terminal(
    lab: Lab, laptop: e2e.Laptop, args: list[str]
) -> tuple[subprocess.Popen[str], int, int]:
    """tunnelauth with a pseudo-terminal as its controlling terminal and stdin, as in a shell
    window: getpass really talks to it (prompt and echo). Returns the process, master, slave."""
    master, slave = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = lab.spawn(
        "laptop",
        laptop.argv(args),
        env=laptop.env(),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=take_terminal,
    )
    return proc, master, slave


def read_terminal_until(master: int, needle: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, f"{needle!r} never shown on the terminal; got {seen!r}"
        if select.select([master], [], [], 0.1)[0]:
            seen += os.read(master, 4096)
    return seen


def echoing(fd: int) -> bool:
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_at_a_secret_prompt_gives_the_terminal_back(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, sig: int, code: int
) -> None:
    proc, master, slave = start_on_a_terminal(
        lab, laptop, ["anthropic", "target", *fake(lab, provider, fake_hermes, "0.19.0")]
    )
    try:
        assert echoing(slave)
        read_terminal_until(master, b"Authorization code")
        e2e.wait_until(lambda: not echoing(slave), 5, "the secret prompt never turned echo off")
        run = e2e.finish(proc, sig)
        assert run.returncode == code, run.output
        assert_nothing_left(lab)
        assert echoing(slave), "the terminal was left without echo"
    finally:
        os.close(master)
        os.close(slave)


STUBBORN = textwrap.dedent(f"""\
    #!/usr/bin/python3
    # A hermes that ignores every polite signal and has a child doing the same.
    import os, signal, socket, time
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", {XAI_PORT}))
    s.listen(5)
    if os.fork() == 0:
        time.sleep(300)
        os._exit(0)
    print("Open this URL to authorize Hermes with xAI:", flush=True)
    print("https://auth.x.ai/oauth2/auth?response_type=code&client_id=lab"
          "&redirect_uri=http%3A%2F%2F127.0.0.1%3A{XAI_PORT}%2Fcallback&state=x", flush=True)
    print("Waiting for callback on http://127.0.0.1:{XAI_PORT}/callback", flush=True)
    time.sleep(300)
    """)


@pytest.mark.parametrize(
    ("login", "sig", "code"),
    [("user", signal.SIGINT, 130), ("as-user", signal.SIGKILL, -9)],
    ids=["user-SIGINT", "as-user-SIGKILL"],
)
def test_hermes_ignoring_signals_is_still_stopped(
    lab: Lab, laptop: e2e.Laptop, login: str, sig: int, code: int
) -> None:
    name = f"stubborn-{uuid.uuid4().hex[:6]}"
    hermes = e2e.write_script(lab, name, STUBBORN)
    proc = laptop.start(["xai", *who(lab, login), "--no-open", "--hermes", str(hermes)])
    e2e.wait_for_stderr(proc, "Open this URL")
    assert len(lab.target_processes(name)) >= 2  # hermes and its child (and sudo with --as-user)
    run = e2e.finish(proc, sig)
    assert run.returncode == code, run.output
    e2e.wait_until(
        lambda: not lab.target_processes(name), 5, "a hermes ignoring SIGTERM outlived the login"
    )
    assert_nothing_left(lab)


@pytest.mark.parametrize(
    ("login", "keepalive", "deadline"),
    [
        ("user", [], LINK_DEADLINE),
        # Shorter keepalives from -o, so the root run is quicker and proves they are honoured.
        ("root", ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"], 12.0),
    ],
    ids=["user-default-keepalive", "root-keepalive-1x2"],
)
def test_cut_link_exits_9_naming_the_hop_and_leaves_nothing(
    lab: Lab,
    laptop: e2e.Laptop,
    provider: e2e.Provider,
    fake_hermes: Path,
    login: str,
    keepalive: list[str],
    deadline: float,
) -> None:
    interval, count = (1.0, 2) if keepalive else (5.0, 3)
    window = remote.dead_after(interval, count)  # the supervisor's, from the same numbers
    proc = start_waiting(
        lab, laptop, [*who(lab, login), *keepalive, *fake(lab, provider, fake_hermes)], quiet=True
    )
    with e2e.link_down(lab):
        cut = time.monotonic()
        run = e2e.finish_now(proc, timeout=LINK_DEADLINE + 10)
        took = time.monotonic() - cut
        assert run.returncode == 9, run.output
        assert took < deadline, took
        line = only_error(run.stderr)
        assert lab.bastion_ip in line and "lost" in line, line
        # No EOF crosses a cut link: the remote supervisor notices the missing heartbeats itself
        # (or the bastion's sshd closes the tunnel first), within its window.
        e2e.wait_until(
            lambda: not lab.target_processes("fake-hermes"),
            max(0.0, window + 3 - (time.monotonic() - cut)),
            "hermes outlived the cut link",
        )
        assert_nothing_left(lab)


# == 7. every fault names its hop, with its own exit code, on one line ===========================


def test_bastion_down_exits_5_naming_the_bastion(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    lab.stop_sshd("bastion")
    run = laptop.run(["xai", "target", "-q", "--hermes", str(fake_hermes)])
    assert run.returncode == 5, run.output
    line = only_error(run.stderr)
    assert lab.bastion_ip in line and lab.target_ip not in line, line
    assert run.elapsed < 10


def silent_bastion(lab: Lab) -> None:
    """The bastion's port 22 accepts connections and never says a word."""
    lab.stop_sshd("bastion")
    code = (
        "import socket,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{lab.bastion_ip}',22)); s.listen(); print('up', flush=True); time.sleep(600)\n"
    )
    proc = lab.spawn("bastion", ["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"


def test_silent_bastion_exits_5_after_connect_timeout(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    silent_bastion(lab)
    run = laptop.run(
        ["xai", "target", "-q", "-o", "ConnectTimeout=2", "--hermes", str(fake_hermes)]
    )
    assert run.returncode == 5, run.output
    line = only_error(run.stderr)
    assert lab.bastion_ip in line and "2 s" in line, line
    assert run.elapsed < 6, run.elapsed


def test_sigterm_while_connecting_exits_143(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    silent_bastion(lab)
    proc = laptop.start(["xai", "target", "--hermes", str(fake_hermes)])
    e2e.wait_for_stderr(proc, "connecting to bastion")
    run = e2e.finish(proc, signal.SIGTERM, timeout=10)
    assert run.returncode == 143, run.output
    assert run.elapsed < 5, run.elapsed  # not the 15 s connect timeout
    assert run.stderr.strip().splitlines()[-1].startswith("tunnelauth: error: ")


def test_bastion_refusing_the_key_exits_6_naming_the_bastion(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    key = lab.root / f"stranger-{uuid.uuid4().hex[:6]}"
    lab.run("laptop", ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    before = e2e.sshd_log(lab, "target")
    run = laptop.run(
        [
            "xai",
            f"{lab.user}@{lab.target_ip}",
            "-J",
            f"{lab.user}@{lab.bastion_ip}",
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-q",
            "--hermes",
            str(fake_hermes),
        ]
    )
    assert run.returncode == 6, run.output
    line = only_error(run.stderr)
    assert lab.bastion_ip in line and lab.target_ip not in line, line
    assert "Accepted publickey" not in e2e.sshd_log(lab, "target")[len(before) :]


def test_target_unreachable_exits_5_naming_the_target(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    lab.stop_sshd("target")
    run = laptop.run(["xai", "target", "-q", "--hermes", str(fake_hermes)])
    assert run.returncode == 5, run.output
    line = only_error(run.stderr)
    assert lab.target_ip in line, line
    assert run.elapsed < 10


def test_target_refusing_the_user_exits_6_naming_the_target(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    run = laptop.run(["xai", "nosuchuser@target", "-q", "--hermes", str(fake_hermes)])
    assert run.returncode == 6, run.output
    line = only_error(run.stderr)
    assert lab.target_ip in line and "nosuchuser" in line, line


@pytest.mark.parametrize("hop", ["bastion", "target"])
def test_sshd_killed_mid_login_exits_9_naming_the_hop(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, hop: str
) -> None:
    proc = start_waiting(lab, laptop, ["target", *fake(lab, provider, fake_hermes)], quiet=True)
    lab.stop_sshd(hop)
    run = e2e.finish_now(proc)
    assert run.returncode == 9, run.output
    line = only_error(run.stderr)
    ip = lab.bastion_ip if hop == "bastion" else lab.target_ip
    assert ip in line, line
    if hop == "target":
        assert lab.bastion_ip not in line, line
    assert run.elapsed < 10
    assert_nothing_left(lab)


def test_errors_follow_the_progress_lines_on_one_line(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    run = laptop.run(["xai", "nosuchuser@target", "--hermes", str(fake_hermes)])
    assert run.returncode == 6, run.output
    lines = run.stderr.strip().splitlines()
    assert lines[:-1] and all(line.startswith("• ") for line in lines[:-1]), lines
    assert lines[-1].startswith("tunnelauth: error: ") and lab.target_ip in lines[-1], lines


# == 8. one login per callback port ==============================================================


def test_second_login_on_the_same_port_exits_3_naming_the_first(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    # The browser acts only after a while, so the first login is still waiting when the second starts.
    first = laptop.start(
        ["xai", "target", *fake(lab, provider, fake_hermes)], FAKE_BROWSER_DELAY="6"
    )
    e2e.wait_for_stderr(first, "Opening the authorize URL")
    before = e2e.sshd_log(lab, "bastion").count("Connection from")
    second = laptop.run(["xai", "target", *fake(lab, provider, fake_hermes)])
    assert first.poll() is None, "the first login ended before the second one was tried"
    assert second.returncode == 3, second.output
    line = only_error(second.stderr)  # checked before connecting: no progress lines either
    assert (
        f"pid {first.pid} (" in line and "tunnelauth" in line.split(f"pid {first.pid} (", 1)[1]
    ), line
    assert str(XAI_PORT) in line
    assert e2e.sshd_log(lab, "bastion").count("Connection from") == before
    run = e2e.finish(first)
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth" in run.stdout
    assert laptop.browser_runs()[-1]["status"] == 200
    assert_nothing_left(lab)


# == 9. tunnelauth never connects to hermes's listener itself ===================================


def test_single_threaded_one_shot_listener_gets_the_browser(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    run = laptop.run(["xai", "target", *fake(lab, provider, fake_hermes, "0.14.0")])
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth" in run.stdout
    e2e.tokens(lab.user_home / ".hermes" / "auth.json")
    browsed = laptop.browser_runs()
    assert len(browsed) == 1 and browsed[0]["status"] == 200, browsed
    assert str(browsed[0]["final"]).startswith(f"127.0.0.1:{XAI_PORT}/callback"), browsed
    assert_nothing_left(lab)


# == issue 12: stalls within the keepalive window, dead first hops, --timeout, helpers ===========


@contextmanager
def inner_link_down(lab: Lab) -> Iterator[None]:
    """Cut the bastion<->target link (the bastion's end of it); restore it however the body ends."""
    dev = f"ta{lab.suffix}bt"
    subprocess.run(["ip", "-n", lab.bastion_ns, "link", "set", dev, "down"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "-n", lab.bastion_ns, "link", "set", dev, "up"], check=True)
        subprocess.run(
            [
                "ip",
                "-n",
                lab.target_ns,
                "route",
                "replace",
                f"{lab.provider_ip}/32",
                "via",
                "198.18.2.1",
            ],
            check=True,
        )


def test_link_blip_shorter_than_the_keepalive_window_is_survived(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    # 4.5 s without a packet between bastion and target (TCP's retransmission backoff stretches
    # the silence to about 6 s): longer than the supervisor's old 4 s, inside 5 s x 3, and inside
    # the lab sshd's own ClientAlive 2 s x 3.
    proc = laptop.start(
        ["xai", "target", "-q", *fake(lab, provider, fake_hermes)], FAKE_BROWSER_DELAY="14"
    )
    e2e.wait_until(
        lambda: login_is_waiting(lab) or proc.poll() is not None, 30, "the login never got going"
    )
    with inner_link_down(lab):
        time.sleep(4.5)  # the blip itself
    run = e2e.finish_now(proc, timeout=60)
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth" in run.stdout
    assert laptop.browser_runs()[-1]["status"] == 200
    assert_nothing_left(lab)


def test_laptop_suspended_for_4_5_s_is_survived(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    proc = laptop.start(
        ["xai", "target", "-q", *fake(lab, provider, fake_hermes)], FAKE_BROWSER_DELAY="8"
    )
    e2e.wait_until(
        lambda: login_is_waiting(lab) or proc.poll() is not None, 30, "the login never got going"
    )
    proc.send_signal(signal.SIGSTOP)  # as a laptop lid closing: no heartbeat, no keepalive answer
    try:
        time.sleep(4.5)  # the suspend itself
    finally:
        proc.send_signal(signal.SIGCONT)
    run = e2e.finish_now(proc, timeout=60)
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth" in run.stdout
    assert_nothing_left(lab)


BLACK_HOLE = "198.18.1.77"  # on the laptop's link; its frames go to a MAC nobody has


@contextmanager
def black_hole(lab: Lab) -> Iterator[str]:
    """An address whose packets the laptop sends out and nobody ever answers (no ARP failure, no
    ICMP): a permanent neighbour entry with a MAC address that no interface has."""
    dev = e2e.laptop_link(lab)
    subprocess.run(
        [
            "ip",
            "-n",
            lab.laptop_ns,
            "neigh",
            "replace",
            BLACK_HOLE,
            "lladdr",
            "02:00:00:00:00:77",
            "dev",
            dev,
            "nud",
            "permanent",
        ],
        check=True,
    )
    try:
        yield BLACK_HOLE
    finally:
        subprocess.run(
            ["ip", "-n", lab.laptop_ns, "neigh", "del", BLACK_HOLE, "dev", dev], check=False
        )


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_black_holed_first_hop_exits_5_within_connect_timeout(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path, json_out: bool
) -> None:
    with black_hole(lab) as address:
        run = laptop.run(
            [
                "xai",
                f"{lab.user}@{address}",
                "-o",
                "ConnectTimeout=2",
                "-q",
                "--hermes",
                str(fake_hermes),
                *(["--json"] if json_out else []),
            ],
            timeout=30,
        )
    assert run.returncode == 5, run.output
    assert "Traceback" not in run.output
    assert run.elapsed < 5, run.elapsed
    if json_out:
        events = [json.loads(line) for line in run.stdout.splitlines()]
        assert events[-1]["event"] == "failure" and events[-1]["exit_code"] == 5, events
        assert address in events[-1]["message"] and "2 s" in events[-1]["message"], events
    else:
        line = only_error(run.stderr)
        assert address in line and "2 s" in line, line


def test_unresolvable_long_host_label_exits_5_at_once(
    lab: Lab, laptop: e2e.Laptop, fake_hermes: Path
) -> None:
    host = "a" * 64 + ".example"  # a 64-character label: no resolver can look it up
    run = laptop.run(["xai", f"{lab.user}@{host}", "-q", "--hermes", str(fake_hermes)], timeout=30)
    assert run.returncode == 5, run.output
    assert "Traceback" not in run.output
    line = only_error(run.stderr)
    assert host in line, line
    assert run.elapsed < 5, run.elapsed


def test_timeout_covers_connecting(lab: Lab, laptop: e2e.Laptop, fake_hermes: Path) -> None:
    with black_hole(lab) as address:
        run = laptop.run(
            ["xai", f"{lab.user}@{address}", "--timeout", "3", "-q", "--hermes", str(fake_hermes)],
            timeout=30,
        )
    assert run.returncode == 8, run.output
    line = only_error(run.stderr)
    assert "within 3 s" in line and address in line, line
    assert run.elapsed < 5, run.elapsed  # not the 15 s ConnectTimeout


PROMPT_THEN_FAIL = textwrap.dedent("""\
    #!/usr/bin/python3
    # Asks for the code, then gives up on its own before anyone answers.
    import sys, time
    sys.stdout.write("Authorization code: ")
    sys.stdout.flush()
    time.sleep(1.5)
    sys.stderr.write("Error: the lab token endpoint is unreachable\\n")
    sys.exit(1)
    """)


def test_prompt_followed_by_hermes_exiting_ends_at_once_with_its_error(
    lab: Lab, laptop: e2e.Laptop
) -> None:
    hermes = e2e.write_script(lab, f"prompt-then-fail-{uuid.uuid4().hex[:6]}", PROMPT_THEN_FAIL)
    began = time.monotonic()
    proc, master, slave = start_on_a_terminal(
        lab, laptop, ["anthropic", "target", "--timeout", "60", "--hermes", str(hermes)]
    )
    try:
        read_terminal_until(master, b"Authorization code")
        run = e2e.finish(proc, timeout=20)
        assert run.returncode == 1, run.output
        assert time.monotonic() - began < 15  # hermes's exit, not --timeout's 60 s
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("tunnelauth: error: ") and "token endpoint is unreachable" in last, (
            run.stderr
        )
        assert echoing(slave), "the terminal was left without echo"
        assert_nothing_left(lab)
    finally:
        os.close(master)
        os.close(slave)


def test_a_browser_that_never_returns_does_not_hold_tunnelauth(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    stay = str(600 + uuid.uuid4().int % 300)  # the browser "window" stays open this long
    laptop.browser = e2e.write_script(
        lab, f"browser-stays-{stay}", f'#!/bin/sh\n"{laptop.browser}" "$@"\nexec sleep {stay}\n'
    )
    proc = laptop.start(["xai", "target", *fake(lab, provider, fake_hermes)])
    run = e2e.finish_now(proc, timeout=40)
    still_open = [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", stay]
    ]
    for browser in still_open:
        browser.kill()
    assert run.returncode == 0, run.output
    assert "Logged in to xai-oauth" in run.stdout
    assert laptop.browser_runs()[-1]["status"] == 200
    assert still_open, "the browser had returned: the test proved nothing"
    assert run.elapsed < 10, run.elapsed  # the login's own time, not the browser's
    assert_nothing_left(lab)


def test_setsid_helper_holding_the_output_does_not_hold_run(lab: Lab, laptop: e2e.Laptop) -> None:
    tag = f"{uuid.uuid4().int % 1000 + 9000}"
    began = time.monotonic()
    run = laptop.run(
        ["run", "target", "--", "sh", "-c", f"setsid sleep {tag} & echo main done; exit 3"],
        timeout=60,
    )
    took = time.monotonic() - began
    helpers = lab.target_processes(f"sleep {tag}")
    for helper in helpers:  # it left its session on purpose: ours to clean up here, by pid
        helper.kill()
    assert run.returncode == 3, run.output
    assert "main done" in run.stdout
    assert helpers, "the helper was not running: the test proved nothing"
    assert took < 10, took


def test_two_131_kb_remote_env_values_reach_the_command(lab: Lab, laptop: e2e.Laptop) -> None:
    # They once made one 350 KB command line and the exec failed ("lost the connection"); now they
    # travel in the channel and reach the command's environment, each one exec string of its own.
    a, b = "a" * 131_000, "b" * 131_000
    run = laptop.run(
        [
            "run",
            "target",
            "--remote-env",
            f"A={a}",
            "--remote-env",
            f"B={b}",
            "--",
            "sh",
            "-c",
            'printf %s "$A$B" | sha256sum',
        ],
        timeout=60,
    )
    assert run.returncode == 0, run.output[-2000:]
    assert hashlib.sha256((a + b).encode()).hexdigest() in run.stdout


def test_laptop_suspended_past_the_window_is_a_lost_connection_not_a_hermes_failure(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    keepalive = ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1"]
    window = remote.dead_after(1.0, 1)  # the supervisor stops hermes after this long without a word
    proc = laptop.start(
        ["xai", "target", "-q", *keepalive, *fake(lab, provider, fake_hermes)],
        FAKE_BROWSER_DELAY="300",
    )
    e2e.wait_until(
        lambda: login_is_waiting(lab) or proc.poll() is not None, 30, "the login never got going"
    )
    proc.send_signal(signal.SIGSTOP)
    try:
        e2e.wait_until(
            lambda: not lab.target_processes("fake-hermes"),
            window + 5,
            "the supervisor did not stop hermes while the laptop was suspended",
        )
    finally:
        proc.send_signal(signal.SIGCONT)
    run = e2e.finish_now(proc, timeout=30)
    assert run.returncode == 9, run.output
    line = only_error(run.stderr)
    assert "exit status" not in line and (lab.target_ip in line or lab.bastion_ip in line), line
    assert_nothing_left(lab)
