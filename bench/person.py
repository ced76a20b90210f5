"""One xAI loopback login, timed the way a person experiences it. Runs in the lab's laptop netns.
The hermes on the target is whatever the spec names: the fake 0.18.0 or the real hermes-agent
0.18.0 (then with SSL_CERT_FILE in remote_env and env, for the lab's https://auth.x.ai).

    person.py '<json spec>'   ->  one JSON object on stdout

client "tunnelauth": the tunnelauth command, with $BROWSER = a wrapper that records when it
starts and then runs tests/fakes/browser.py.
clients "tunnelauth-openssh" (--ssh openssh) and "tunnelauth-reused" (a live ControlMaster
for the target, started beforehand and not timed): the same, over the user's own ssh.
client "openssh": the seed page's manual flow, as a person with two terminals ready would do
it: `ssh -N -L P:127.0.0.1:P -J JUMP TARGET` and `ssh -J JUMP TARGET '<hermes> auth add ...'`
started together, and the same browser wrapper started the moment the authorize URL appears in
the second one's output (if the tunnel's local port is not listening yet at that moment, it
waits for it, and says so).

Times are wall-clock seconds from just before the first process was started:
  open     the browser wrapper started (the authorize URL is "opened")
  success  the user is told the login worked (tunnelauth: its "hermes reports success" line;
           OpenSSH: hermes's own "Saved/Added xai-oauth OAuth credential" line)
  result   tunnelauth's final "Logged in ..." line (OpenSSH: same as success)
  done     the command the person waits for has exited (tunnelauth; OpenSSH: the exec ssh;
           the -N tunnel still has to be stopped by hand, which is not counted)
usage: peak RSS (KB) and CPU seconds (GNU time) of the tunnelauth process (with the browser it
       starts), or of each ssh command and the browser.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
from typing import IO, Any

from tunnelauth.providers import lookup

TIME = "/usr/bin/time"
# The OpenSSH flow succeeds on the very line tunnelauth itself takes for success.
SUCCESS = [re.compile(pattern) for pattern in lookup("xai").success]


def listening(port: int) -> bool:
    """Is 127.0.0.1:port LISTENing in this netns? (Never connect: hermes's listener is one-shot.)"""
    want = f":{port:04X}"
    with open("/proc/net/tcp") as handle:
        next(handle)
        return any(
            cols[1].endswith(want) and cols[3] == "0A" for cols in (row.split() for row in handle)
        )


class Lines:
    """Line-timestamped reading of several pipes at once."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.partial: dict[str, bytes] = {}
        self.lines: list[tuple[float, str, str]] = []

    def add(self, name: str, pipe: IO[bytes]) -> None:
        os.set_blocking(pipe.fileno(), False)
        self.sel.register(pipe, selectors.EVENT_READ, name)
        self.partial[name] = b""

    def poll(self, timeout: float) -> list[tuple[float, str, str]]:
        new: list[tuple[float, str, str]] = []
        for key, _ in self.sel.select(timeout):
            name = key.data
            data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            now = time.time()
            if data:
                *complete, self.partial[name] = (self.partial[name] + data).split(b"\n")
            else:  # EOF: an unterminated last line still counts
                self.sel.unregister(key.fileobj)
                complete, self.partial[name] = (
                    [self.partial[name]] if self.partial[name] else [],
                    b"",
                )
            for raw in complete:
                new.append((now, name, raw.decode(errors="replace").rstrip("\r")))
        self.lines += new
        return new

    @property
    def open(self) -> bool:
        return bool(self.sel.get_map())

    def reading(self, *names: str) -> bool:
        return any(key.data in names for key in self.sel.get_map().values())


def timed(argv: list[str], report: str) -> list[str]:
    """argv under GNU time, which writes the peak RSS (KB) and CPU seconds of the command and
    its children to `report`. Not wait4() from here: a child forked from a Python process
    starts out with that process's pages, and Linux counts them in the child's peak RSS."""
    return [TIME, "-f", "%M %U %S", "-o", report, *argv]


def usage(report: str) -> dict[str, float] | None:
    try:
        with open(report) as handle:
            kb, user, system = handle.read().split()[-3:]
        return {"maxrss_kb": int(kb), "cpu_s": round(float(user) + float(system), 3)}
    except (OSError, ValueError):
        return None


def start(argv: list[str], report: str, env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
    if os.path.exists(report):
        os.unlink(report)
    # Own process group: stopping it reaches the command under `time`, and nothing else.
    return subprocess.Popen(
        timed(argv, report), stdin=subprocess.DEVNULL, env=env, start_new_session=True, **kw
    )


def stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 10) -> None:
    """Signal proc's group (time ignores SIGINT, as a shell's Ctrl-C would reach ssh), then wait."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def finish(proc: subprocess.Popen[bytes], deadline: float) -> None:
    try:
        proc.wait(max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        stop(proc, signal.SIGKILL)


def opened_at(log: str) -> list[float]:
    try:
        with open(log) as handle:
            return [float(line.split()[0].replace(",", ".")) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def browser_record(log: str) -> dict[str, Any] | None:
    try:
        with open(log) as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return None
    return rows[-1] if rows else None


def run_tunnelauth(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    # "tunnelauth-openssh": --ssh openssh; "tunnelauth-reused": the config gives the target a
    # ControlPath whose master (started by the benchmark, not timed) is alive: it is reused.
    transport = ["--ssh", "openssh"] if spec["client"] == "tunnelauth-openssh" else []
    argv = [
        *spec["tunnelauth"],
        "xai",
        spec["target"],
        "-J",
        spec["jump"],
        "-F",
        spec["config"],
        *transport,
        "--hermes",
        spec["hermes"],
        *(["--allow-host", spec["allow_host"]] if spec.get("allow_host") else []),
        "--timeout",
        str(spec["timeout"]),
        *(a for k, v in spec["remote_env"].items() for a in ("--remote-env", f"{k}={v}")),
    ]
    report = spec["usage_dir"] + "/tunnelauth"
    t0 = time.time()
    proc = start(argv, report, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = Lines()
    lines.add("out", proc.stdout)  # type: ignore[arg-type]
    lines.add("err", proc.stderr)  # type: ignore[arg-type]
    out: dict[str, Any] = {"t0": t0}
    deadline = t0 + spec["timeout"] + 10
    while lines.open and time.time() < deadline:
        for when, name, text in lines.poll(0.5):
            if name == "err" and "hermes reports success" in text:
                out.setdefault("success", when - t0)
            if name == "out" and text.startswith("Logged in to"):
                out.setdefault("result", when - t0)
    finish(proc, deadline)
    out["done"] = time.time() - t0
    out["usage"] = {"tunnelauth": usage(report)}
    out["returncode"] = proc.returncode
    opens = opened_at(spec["open_log"])
    out["open"] = opens[0] - t0 if opens else None
    out["opens"] = len(opens)
    out["ok"] = proc.returncode == 0 and "success" in out and "result" in out and len(opens) == 1
    if spec.get("keep_stderr"):
        out["stderr"] = [text for _, name, text in lines.lines if name == "err"]
    if not out["ok"]:
        out["output"] = [f"{name}: {text}" for _, name, text in lines.lines][-30:]
    return out


def run_openssh(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    port, cfg, jump, target = spec["port"], spec["config"], spec["jump"], spec["target"]
    remote = " ".join(
        [
            *(f"{k}={shlex.quote(v)}" for k, v in spec["remote_env"].items()),
            shlex.quote(spec["hermes"]),
            "auth",
            "add",
            "xai-oauth",
            "--no-browser",
        ]
    )
    # The browser too: under tunnelauth it is tunnelauth's child, so counted in its CPU time.
    reports = {
        name: spec["usage_dir"] + "/" + name for name in ("ssh_tunnel", "ssh_login", "browser")
    }
    t0 = time.time()
    tunnel = start(
        ["ssh", "-F", cfg, "-N", "-L", f"{port}:127.0.0.1:{port}", "-J", jump, target],
        reports["ssh_tunnel"],
        env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    login = start(
        ["ssh", "-F", cfg, "-J", jump, target, f"PYTHONUNBUFFERED=1 {remote}"],
        reports["ssh_login"],
        env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = Lines()
    lines.add("out", login.stdout)  # type: ignore[arg-type]
    lines.add("err", login.stderr)  # type: ignore[arg-type]
    lines.add("tunnel", tunnel.stderr)  # type: ignore[arg-type]
    out: dict[str, Any] = {"t0": t0}
    browser: subprocess.Popen[bytes] | None = None
    deadline = t0 + spec["timeout"] + 10
    while time.time() < deadline and lines.reading("out", "err"):
        for when, name, text in lines.poll(0.5):
            if name != "out":
                continue
            stripped = text.strip()
            if browser is None and stripped.startswith("http") and "redirect_uri=" in stripped:
                out["url_line"] = when - t0
                waited = time.time()
                while not listening(port) and time.time() < deadline and tunnel.poll() is None:
                    time.sleep(0.002)
                out["waited_for_tunnel"] = round(time.time() - waited, 4)
                browser = start([spec["browser"], stripped], reports["browser"], env)
            if any(pattern.match(stripped) for pattern in SUCCESS):
                out.setdefault("success", when - t0)
                out.setdefault("result", when - t0)
    finish(login, deadline)
    out["done"] = time.time() - t0
    stop(tunnel, signal.SIGINT)  # the person presses Ctrl-C in the tunnel's terminal
    if browser is not None:
        browser.wait(30)
    out["usage"] = {name: usage(path) for name, path in reports.items()}
    out["returncode"] = login.returncode
    opens = opened_at(spec["open_log"])
    out["open"] = opens[0] - t0 if opens else None
    out["opens"] = len(opens)
    out["ok"] = login.returncode == 0 and "success" in out and len(opens) == 1
    if not out["ok"]:
        out["output"] = [f"{name}: {text}" for _, name, text in lines.lines][-30:]
    return out


def main() -> int:
    spec = json.loads(sys.argv[1])
    env = dict(os.environ)
    env.update(spec["env"])
    env.update(
        BENCH_OPEN_LOG=spec["open_log"],
        FAKE_BROWSER_LOG=spec["browser_log"],
        BROWSER=spec["browser"],
    )
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SSH_AUTH_SOCK", "SSH_AGENT_PID"):
        env.pop(name, None)
    for path in (spec["open_log"], spec["browser_log"]):
        if os.path.exists(path):
            os.unlink(path)
    result = (run_openssh if spec["client"] == "openssh" else run_tunnelauth)(spec, env)
    record = browser_record(spec["browser_log"])
    result["browser"] = record
    if (
        not record
        or record.get("status") != 200
        or not str(record.get("final", "")).startswith("127.0.0.1:")
    ):
        result["ok"] = False
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
