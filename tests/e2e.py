"""Running tunnelauth on the lab's laptop against its bastion and target, as a user would.

tunnelauth runs as a real process in the laptop namespace (`python -m tunnelauth ...`), the
browser is tests/fakes/browser.py as $BROWSER, hermes is the real hermes-agent from PyPI or
tests/fakes/fake_hermes.py, and the identity provider is tests/fakes/mock_provider.py on
the lab's provider address (reachable from the laptop and the target, nothing else).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import pty
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.lab.netlab import Lab

FAKES = Path(__file__).resolve().parent / "fakes"
REAL_HERMES = {
    "0.19.0": Path(
        os.environ.get("TUNNELAUTH_LAB_HERMES", "/opt/tunnelauth-lab/hermes-0.19.0/bin/hermes")
    ),
    "0.18.0": Path("/opt/tunnelauth-lab/hermes-0.18.0/bin/hermes"),  # the last xAI loopback release
    "0.13.0": Path("/opt/tunnelauth-lab/hermes-0.13.0/bin/hermes"),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need(condition: bool, why: str) -> None:
    """Skip on a developer machine, fail in CI: CI must never skip the lab."""
    if condition:
        return
    if in_ci():
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def install_script(lab: Lab, source: Path, name: str) -> Path:
    """Copy a stdlib-only script into the lab dir, runnable by every user with Debian's python."""
    target = lab.root / "bin" / name
    target.parent.mkdir(mode=0o755, exist_ok=True)
    body = (
        source.read_text().split("\n", 1)[1]
        if source.read_text().startswith("#!")
        else source.read_text()
    )
    target.write_text("#!/usr/bin/python3\n" + body)
    target.chmod(0o755)
    return target


@dataclass
class Provider:
    url: str
    proc: subprocess.Popen[str]


def start_provider(lab: Lab, xai: bool = False) -> Provider:
    """The mock on the provider address; with xai, the lab's https://auth.x.ai instead (port
    443 on lab.xai_ip, certificate from the lab CA), for the real hermes xAI flows."""
    script = install_script(lab, FAKES / "mock_provider.py", "mock-provider")
    where = ["--host", lab.provider_ip, "--port", "0"]
    if xai:
        where = [
            "--host",
            lab.xai_ip,
            "--port",
            "443",
            "--tls-cert",
            str(lab.tls_dir / "server.pem"),
            "--tls-key",
            str(lab.tls_dir / "server.key"),
        ]
    proc = lab.spawn("bastion", [script, *where], keep=True, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        raise RuntimeError(f"mock provider did not start: {line!r}")
    url = line.split(" ", 1)[1]
    return Provider(url="https://auth.x.ai" if xai else url, proc=proc)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _as_from_a_shell() -> None:
    """Ctrl-C as a person's shell delivers it. Run in the background (`pytest … &`), the test
    process itself ignores SIGINT, and a child would inherit that and never see it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


TRANSPORTS = ("asyncssh", "openssh")
# A test that runs once with each transport (the `laptop` fixture's parameter).
BOTH_TRANSPORTS = pytest.mark.parametrize("laptop", TRANSPORTS, indirect=True)


def ssh_wrapper(lab: Lab) -> Path:
    """`ssh` as the lab's laptop user runs it (TUNNELAUTH_SSH_BINARY). OpenSSH finds ~/.ssh
    through the passwd entry's home, not $HOME, and the lab changes only $HOME: the wrapper
    names the files ~/.ssh would hold (config, known_hosts, the default key)."""
    return write_script(
        lab,
        "laptop-ssh",
        (
            "#!/bin/sh\n"
            "# ~/.ssh as $HOME has it; -F is passed on to ProxyJump's own ssh, so the jump hosts see it too\n"
            'c="$HOME/.ssh/config.openssh"\n'
            'printf "Include %s/.ssh/config\\nHost *\\n  UserKnownHostsFile %s/.ssh/known_hosts\\n'
            '  IdentityFile %s/.ssh/id_ed25519\\n" "$HOME" "$HOME" "$HOME" > "$c"\n'
            'exec /usr/bin/ssh -F "$c" "$@"\n'
        ),
    )


def ssh_dirs() -> set[str]:
    """The OpenSSH transport's private directories (of every run on this machine)."""
    return {str(p) for p in Path(tempfile.gettempdir()).glob("tunnelauth-ssh-*")}


class Laptop:
    """tunnelauth as the person on the laptop runs it, with the lab's HOME and $BROWSER, and
    the transport asked for (asyncssh, or the laptop's own OpenSSH)."""

    def __init__(self, lab: Lab, home: Path | None = None, transport: str = "asyncssh") -> None:
        self.lab = lab
        self.home = home or lab.laptop_home
        self.transport = transport
        self._ssh_dirs = ssh_dirs()
        self.browser = install_script(lab, FAKES / "browser.py", "browser")
        self.browser_log = (
            lab.root / f"browser-{secrets.token_hex(4)}.log"
        )  # one per Laptop: per test
        self.key = str(lab.laptop_home / ".ssh" / "id_ed25519")

    def env(self, **extra: str) -> dict[str, str]:
        env = self.lab.laptop_env(
            BROWSER=str(self.browser),
            FAKE_BROWSER_LOG=str(self.browser_log),
            PYTHONFAULTHANDLER="1",
            **extra,
        )
        env["HOME"] = str(self.home)
        env.setdefault("TUNNELAUTH_SSH", self.transport)
        env.setdefault(
            "TUNNELAUTH_SSH_BINARY", str(ssh_wrapper(self.lab))
        )  # both: masters are reused
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        return env

    def argv(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "tunnelauth", *args]

    def run(self, args: list[str], timeout: float = 90, **env: str) -> Run:
        start = time.monotonic()
        done = self.lab.run("laptop", self.argv(args), env=self.env(**env), timeout=timeout)
        return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - start)

    def start(self, args: list[str], **env: str) -> subprocess.Popen[str]:
        return self.lab.spawn(
            "laptop",
            self.argv(args),
            env=self.env(**env),
            preexec_fn=_as_from_a_shell,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def start_with_tty(self, args: list[str], **env: str) -> tuple[subprocess.Popen[str], int]:
        """tunnelauth with a pseudo-terminal as stdin, as when a person runs it; returns the
        process and the terminal's master end (write to it to type)."""
        master, slave = pty.openpty()
        proc = self.lab.spawn(
            "laptop",
            self.argv(args),
            env=self.env(**env),
            stdin=slave,
            preexec_fn=_as_from_a_shell,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        return proc, master

    def ssh_processes(self) -> list[psutil.Process]:
        """`ssh` processes in the laptop's namespace: a master or a session left behind."""
        ns_ino = os.stat(f"/run/netns/{self.lab.laptop_ns}").st_ino
        found = []
        for p in psutil.process_iter(["name"]):
            try:
                if p.info["name"] == "ssh" and os.stat(f"/proc/{p.pid}/ns/net").st_ino == ns_ino:
                    found.append(p)
            except (OSError, psutil.Error):
                continue
        return found

    def assert_no_ssh_left(self, within: float = 5) -> None:
        """No ssh process in the laptop's namespace and no private directory of this test's
        logins is left (the OpenSSH transport's master, sessions and control socket)."""
        if self.transport != "openssh":
            return
        wait_until(lambda: not self.ssh_processes(), within, "an ssh process left on the laptop")
        wait_until(
            lambda: not (ssh_dirs() - self._ssh_dirs),
            within,
            "the OpenSSH transport's private directory left behind",
        )

    def browser_runs(self) -> list[dict[str, object]]:
        if not self.browser_log.exists():
            return []
        return [
            json.loads(line) for line in self.browser_log.read_text().splitlines() if line.strip()
        ]


def wait_for_stderr(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> str:
    """Read proc's stderr until needle shows up; return what was read (raw fd reads, so the
    rest can still be collected with communicate())."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            if needle.encode() in seen:
                return seen.decode(errors="replace")
    raise AssertionError(
        f"{needle!r} not seen on stderr within {timeout}s; got:\n{seen.decode(errors='replace')}"
    )


def finish(proc: subprocess.Popen[str], sig: int | None = None, timeout: float = 30) -> Run:
    if sig is not None:
        proc.send_signal(sig)
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Still running: SIGABRT makes faulthandler (PYTHONFAULTHANDLER, set by Laptop) print
        # where every thread was, which is what the failure message needs.
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(
            f"still running {timeout} s later; its stacks and output:\n{err[-6000:]}\n{out[-2000:]}"
        ) from None
    return Run(proc.returncode, out, err, time.monotonic() - start)


def gone_within(lab: Lab, needle: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not lab.target_processes(needle):
            return True
        time.sleep(0.1)
    return False


def hold_port(lab: Lab, host: str, port: int) -> subprocess.Popen[str]:
    """Something else listening on 127.0.0.1:port inside host's namespace."""
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1',{port})); s.listen(); print('held', flush=True); time.sleep(600)\n"
    )
    proc = lab.spawn(host, ["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def fresh_home(lab: Lab, name: str, known_hosts: bool = True) -> Path:
    """A copy of the laptop HOME, optionally without known_hosts."""
    home = lab.root / f"home-{name}"
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(lab.laptop_home, home, symlinks=True)
    if not known_hosts:
        (home / ".ssh" / "known_hosts").unlink()
    config = home / ".ssh" / "config"
    config.write_text(config.read_text().replace(str(lab.laptop_home), str(home)))
    return home


def tokens(path: Path) -> dict[str, object]:
    assert path.exists(), f"no token file at {path}"
    assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)
    return json.loads(path.read_text())


SIGINT = signal.SIGINT
SIGTERM = signal.SIGTERM


def provider_log(lab: Lab, provider: Provider) -> dict[str, object]:
    """The mock provider's record (it holds raw codes: for leak checks and typing a code)."""
    code = f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('{provider.url}/_log').read().decode())"
    env = {**os.environ, "SSL_CERT_FILE": str(lab.tls_ca)}  # for the lab's https://auth.x.ai
    done = lab.run("laptop", ["/usr/bin/python3", "-c", code], env=env, check=True)
    return json.loads(done.stdout)


# -- helpers for the reliability and security tests ----------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll condition until it is true; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def sshd_log(lab: Lab, host: str) -> str:
    return (lab.root / host / "sshd.log").read_text(errors="replace")


def write_script(lab: Lab, name: str, text: str) -> Path:
    """A script (shebang included in text) under lab.root/bin, runnable by every lab user."""
    target = lab.root / "bin" / name
    target.parent.mkdir(mode=0o755, exist_ok=True)
    target.write_text(text)
    target.chmod(0o755)
    return target


def laptop_link(lab: Lab) -> str:
    """The laptop's interface towards the bastion (its only one besides lo)."""
    out = subprocess.run(
        ["ip", "-n", lab.laptop_ns, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()]
    links = [name for name in names if name != "lo"]
    assert len(links) == 1, f"expected one laptop link, found {links}"
    return links[0]


@contextmanager
def link_down(lab: Lab) -> Iterator[None]:
    """Cut the laptop<->bastion link; restore it, and the route it takes along, however the body ends
    (the lab's per-test cleanup restarts processes, not links)."""
    dev = laptop_link(lab)
    subprocess.run(["ip", "-n", lab.laptop_ns, "link", "set", dev, "down"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "-n", lab.laptop_ns, "link", "set", dev, "up"], check=True)
        # An interface going down drops the routes through it, the provider's among them.
        for ip in (lab.provider_ip, lab.xai_ip):
            subprocess.run(
                ["ip", "-n", lab.laptop_ns, "route", "replace", f"{ip}/32", "via", lab.bastion_ip],
                check=True,
            )


def finish_now(proc: subprocess.Popen[str], sig: int | None = None, timeout: float = 30) -> Run:
    """Like finish(), but done when tunnelauth exits, even while a child it started (a browser
    that is still waiting) holds its output pipes open."""
    if sig is not None:
        proc.send_signal(sig)
    start = time.monotonic()
    proc.wait(timeout=timeout)
    elapsed = time.monotonic() - start
    texts = []
    for stream in (proc.stdout, proc.stderr):
        assert stream is not None
        fd = stream.fileno()
        os.set_blocking(fd, False)
        data = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        texts.append(data.decode(errors="replace"))
    return Run(proc.returncode, texts[0], texts[1], elapsed)


class ProcessTableWatch:
    """Reads every process's command line (all namespaces: one pid namespace) over and over,
    every ~10 ms, base64 (and base64 zlib) arguments decoded, and the environment of the
    target's processes not run as `env_uid` (the user the values are for), while tunnelauth
    runs. `found` lists every place a needle showed; `saw`, which of `looking_for` showed in a
    command line (proof that the scan caught what it was meant to watch)."""

    def __init__(
        self,
        lab: Lab,
        needles: dict[str, bytes],
        typed: set[str],
        env_uid: int,
        command: str,
        looking_for: tuple[str, ...] = (),
    ) -> None:
        self.lab, self.needles, self.typed, self.env_uid = lab, needles, typed, env_uid
        # tunnelauth's own command line holds what the user typed there (their choice); a
        # child it forks shows the same until it execs.
        self._own = b"\0-m\0tunnelauth\0" + command.encode() + b"\0"
        self._looking_for = looking_for
        self.found: list[str] = []
        self.saw: set[str] = set()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._target_ns = os.stat(f"/run/netns/{lab.target_ns}").st_ino

    def __enter__(self) -> ProcessTableWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _read(self, pid: str, what: str) -> bytes:
        try:
            with open(f"/proc/{pid}/{what}", "rb") as handle:
                return handle.read()
        except OSError:
            return b""

    @functools.lru_cache(maxsize=256)  # noqa: B019 - a test's short-lived helper
    def _decoded(self, arg: bytes) -> bytes:
        """A base64 (or base64 zlib) argument's content: a value hidden that way is still there."""
        if len(arg) < 16 or not re.fullmatch(rb"[A-Za-z0-9+/=_-]+", arg):
            return b""
        try:
            data = base64.b64decode(
                arg + b"=" * (-len(arg) % 4), altchars=b"-_" if b"-" in arg or b"_" in arg else None
            )
        except ValueError:
            return b""
        try:
            return data + zlib.decompress(data)
        except zlib.error:
            return data

    def _run(self) -> None:
        while not self._stop.is_set():
            self.rounds += 1
            for pid in (p for p in os.listdir("/proc") if p.isdigit()):
                cmdline = self._read(pid, "cmdline")
                cmdline += b"\0".join(self._decoded(arg) for arg in cmdline.split(b"\0"))
                self.saw.update(mark for mark in self._looking_for if mark.encode() in cmdline)
                own = self._own in cmdline
                for name, needle in self.needles.items():
                    if needle in cmdline and not (own and name in self.typed):
                        self.found.append(
                            f"{name} in the command line of pid {pid}: {cmdline[:120]!r}"
                        )
                try:
                    in_target = os.stat(f"/proc/{pid}/ns/net").st_ino == self._target_ns
                    uid = os.stat(f"/proc/{pid}").st_uid
                except OSError:
                    continue
                if in_target and uid != self.env_uid:
                    environ = self._read(pid, "environ")
                    for name, needle in self.needles.items():
                        if needle in environ:
                            self.found.append(f"{name} in the environment of pid {pid} (uid {uid})")
            self._stop.wait(0.01)
