"""tunnelauth's performance benchmark, measured against OpenSSH doing the same job.

    sudo .venv/bin/python bench/run.py [--quick] [--out bench/results]

Builds its own SSH lab (tests/lab/netlab.py: laptop -> bastion -> target network namespaces with
real sshd), runs every measurement, tears the lab down, and writes results.json, results.md (the
table, also printed) and results.png (if matplotlib is installed) to --out.

  login     a full xAI loopback login (fake hermes 0.18.0, mock provider) through one jump host,
            tunnelauth and the seed page's two-terminal OpenSSH flow alternating, at 0, 40 and
            150 ms laptop<->bastion round-trip time (bench/relay.py adds it, for both clients)
  login_real  the same with the real hermes-agent 0.18.0 from PyPI against the lab's
            https://auth.x.ai (the mock provider behind a lab CA, docs/performance-real-hermes.md)
  startup   `tunnelauth --help` / `providers`: wall time, peak RSS; what a login imports
  callback  a 2 KB HTTP request/response through tunnelauth's forward vs `ssh -L`, same hop
  fleet     `tunnelauth doctor` over 1, 10 and 50 targets behind one bastion (when it exists)

--quick (CI): 1 repetition, 0 ms only, fleet 1 and 5, about 45 s. Exit status 1 only if something
is broken (a login that did not log in, a forward that returned a wrong answer, a command that
crashed), never for a missed target; 2 if the lab cannot be built here.

Needs what the lab needs (root, sudo ./tests/setup), GNU time at /usr/bin/time (Debian package
`time`) and bash >= 5 for $EPOCHREALTIME.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for path in (str(ROOT), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

# After the sys.path lines above: run as a script, bench/ and the repository are not on it.
import person  # noqa: E402 - bench/person.py, beside this file

from tests import e2e  # noqa: E402
from tests.lab.netlab import Lab, LabUnavailable, _terminate, _tree  # noqa: E402

PY = sys.executable
_SCRIPT = Path(PY).parent / "tunnelauth"
TUNNELAUTH = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "tunnelauth"]
XAI_PORT = 56121
HTTPD_PORT = 56190  # the callback benchmark's server on the target; ssh -L listens on +1
FORBIDDEN = ("rich", "httpx", "tunnelauth.doctor")  # a login must not import these
REAL_HERMES = e2e.REAL_HERMES["0.19.0"]  # hermes-agent from PyPI, installed by tests/setup
LOGIN_HERMES = (
    "0.18.0"  # the last release with the loopback flow; the login series runs it for real too
)
SERIES = {"fake": f"fake hermes {LOGIN_HERMES}", "real": f"real hermes {LOGIN_HERMES}"}

TARGETS: dict[str, Any] = {
    "open_ratio": {0: 1.0, 40: 0.8, 150: 0.8},
    "help_ms": 150.0,
    "callback_ratio": 1.1,
    "fleet_ratio": 3.0,
    "fleet_mb": 150.0,
    "login_mb": 60.0,
}


@dataclass(frozen=True)
class Mode:
    quick: bool
    reps: int
    rtts: tuple[int, ...]
    fleet: tuple[int, ...]
    startup_reps: int
    callback_rounds: dict[int, int]
    fleet_reps: int
    fleet_rtts: tuple[int, ...]


QUICK = Mode(True, 1, (0,), (1, 5), 3, {0: 30}, 1, (0,))
FULL = Mode(False, 7, (0, 40, 150), (1, 10, 50), 15, {0: 200, 40: 20}, 3, (0, 40))


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# -- measuring a process ---------------------------------------------------------------------------


def measure(
    argv: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 120,
    netns: str | None = None,
) -> dict[str, Any]:
    """Run argv (in netns, if given): wall time (s), peak RSS (KB) and CPU seconds (GNU time), output."""
    report = Path(f"/tmp/tunnelauth-bench-{os.getpid()}.time")
    cmd = person.timed(argv, str(report))
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    busy = machine_busy_s()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.perf_counter() - start
    machine_cpu = machine_busy_s() - busy
    used: dict[str, float | None] = {
        "maxrss_kb": None,
        "cpu_s": None,
        **(person.usage(str(report)) or {}),
    }
    report.unlink(missing_ok=True)
    return {
        "wall": wall,
        **used,
        "machine_cpu_s": machine_cpu,
        "rc": proc.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
    }


def machine_busy_s() -> float:
    """CPU seconds this machine has been busy, all CPUs (from /proc/stat): what a run cost the
    lab's sshds and remote processes too, not only the client."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


# -- the lab side ----------------------------------------------------------------------------------


class Relay:
    """bench/relay.py in the laptop netns, in front of the bastion's sshd."""

    def __init__(self, lab: Lab, rtt_ms: int, log: Path) -> None:
        self.rtt_ms = rtt_ms
        self.log = log
        log.write_text("")
        self.proc = lab.spawn(
            "laptop",
            [
                PY,
                str(BENCH / "relay.py"),
                "--upstream",
                f"{lab.bastion_ip}:22",
                "--rtt-ms",
                str(rtt_ms),
                "--log",
                str(log),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if line[:1] != ["listening"]:
            raise RuntimeError(f"relay did not start: {line}")
        self.port = int(line[1])

    def count(self) -> int:
        return len(self.log.read_text().splitlines())

    def since(self, start: int, expected: int, wait: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait
        while self.count() - start < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return [json.loads(line) for line in self.log.read_text().splitlines()[start:]]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Bench:
    def __init__(self, lab: Lab, mode: Mode, own_lab: bool = True) -> None:
        self.lab = lab
        self.mode = mode
        self.own_lab = own_lab  # False for --lab: its sshds are not ours to restart
        self.dir = lab.root / "bench"
        self.dir.mkdir(mode=0o755, exist_ok=True)
        self.provider = e2e.start_provider(lab)
        self.hermes = e2e.install_script(lab, e2e.FAKES / "fake_hermes.py", "fake-hermes")
        self.real_hermes = e2e.REAL_HERMES[LOGIN_HERMES]
        self.xai: e2e.Provider | None = None  # the lab's https://auth.x.ai, started on first use
        browser = e2e.install_script(lab, e2e.FAKES / "browser.py", "browser")
        self.httpd = e2e.install_script(lab, BENCH / "httpd.py", "bench-httpd")
        # $BROWSER for both clients: note the moment it starts (bash's clock, no fork), then browse.
        self.browser = lab.root / "bin" / "bench-browser"
        self.browser.write_text(
            '#!/bin/bash\nprintf \'%s\\n\' "$EPOCHREALTIME" >> "$BENCH_OPEN_LOG"\n'
            f'unset PYTHONPROFILEIMPORTTIME\nexec {browser} "$@"\n'
        )
        self.browser.chmod(0o755)
        ssh_dir = lab.laptop_home / ".ssh"
        self.key = ssh_dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self._lab_known = (ssh_dir / "known_hosts").read_text()
        self.known_hosts.write_text(self._lab_known)

    def trust_relay(self, port: int) -> None:
        """The relay's address carries the bastion's key, for both clients' host-key checks."""
        bastion_key = next(
            line.split(None, 1)[1]
            for line in self._lab_known.splitlines()
            if line.startswith(self.lab.bastion_ip + " ")
        )
        with self.known_hosts.open("a") as handle:
            handle.write(f"[127.0.0.1]:{port} {bastion_key}\n")

    def master(self, config: Path) -> subprocess.Popen[str]:
        """The person's own ControlMaster for the target (as `config` sets it up), up."""
        argv = ["ssh", "-F", str(config), "-J", "bastion", "-M", "-N", "target"]
        proc = self.lab.spawn(
            "laptop",
            argv,
            env=self.lab.laptop_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        check = ["ssh", "-F", str(config), "-J", "bastion", "-O", "check", "target"]
        deadline = time.monotonic() + 30
        while self.lab.run("laptop", check, env=self.lab.laptop_env(), check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                why = (proc.communicate()[1] or "").strip().splitlines()[-1:]
                raise RuntimeError(f"the benchmark's ControlMaster did not come up: {why}")
            time.sleep(0.05)
        return proc

    def config(
        self,
        name: str,
        relay_port: int | None,
        aliases: list[str] = (),  # type: ignore[assignment]
        control: bool = False,
    ) -> Path:
        common = (
            f"  User {self.lab.user}\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
        )
        where = (
            f"  HostName 127.0.0.1\n  Port {relay_port}\n"
            if relay_port
            else f"  HostName {self.lab.bastion_ip}\n"
        )
        text = f"Host bastion\n{where}{common}\n"
        for alias in ["target", *aliases]:
            text += (
                f"Host {alias}\n  HostName {self.lab.target_ip}\n  ProxyJump bastion\n{common}\n"
            )
        if control:  # the person's own master for the target (tunnelauth-reused)
            # %C alone: the socket path (plus ssh's 17-character temporary suffix) must fit in 108.
            text += f"Host target\n  ControlMaster no\n  ControlPath {self.dir}/%C\n"
        path = self.dir / f"ssh-config-{name}"
        path.write_text(text)
        return path

    def wait_clean(self) -> None:
        """Nothing of the previous login left: no hermes, no listener, no token file."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            busy = (
                self.lab.target_processes("fake-hermes")
                or self.lab.target_processes(f"hermes-{LOGIN_HERMES}/")
                or XAI_PORT in self.lab.listening_ports("target")
                or XAI_PORT in self.lab.listening_ports("laptop")
            )
            if not busy:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the previous login left hermes or its port behind")
        shutil.rmtree(self.lab.user_home / ".hermes", ignore_errors=True)

    def person(
        self,
        client: str,
        config: Path,
        extra_env: dict[str, str] | None = None,
        series: str = "fake",
    ) -> dict[str, Any]:
        env = dict(extra_env or {})
        if series == "real":
            # Unmodified hermes-agent: its https://auth.x.ai is the lab's, trusted through the lab CA
            # on the target (hermes's httpx) and on the laptop (the browser follows the redirect).
            if self.xai is None:
                self.xai = e2e.start_provider(self.lab, xai=True)
            ca = str(self.lab.tls_ca)
            hermes, remote_env, allow_host = self.real_hermes, {"SSL_CERT_FILE": ca}, None
            env["SSL_CERT_FILE"] = ca
        else:
            hermes, allow_host = self.hermes, self.lab.provider_ip
            remote_env = {
                "FAKE_HERMES_VERSION": LOGIN_HERMES,
                "FAKE_HERMES_PROVIDER": self.provider.url,
            }
        spec = {
            "client": client,
            "config": str(config),
            "target": "target",
            "jump": "bastion",
            "hermes": str(hermes),
            "port": XAI_PORT,
            "tunnelauth": TUNNELAUTH,
            "timeout": 60,
            "allow_host": allow_host,
            "browser": str(self.browser),
            "open_log": str(self.dir / "open.log"),
            "browser_log": str(self.dir / "browser.log"),
            "remote_env": remote_env,
            "env": env,
            "keep_stderr": "PYTHONPROFILEIMPORTTIME" in env,
            "usage_dir": str(self.dir),
        }
        try:
            done = self.lab.run(
                "laptop",
                [PY, str(BENCH / "person.py"), json.dumps(spec)],
                env=self.lab.laptop_env(),
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": "person.py did not finish within 120 s"}
        if done.returncode != 0 or not done.stdout.strip():
            return {
                "ok": False,
                "error": f"person.py failed ({done.returncode}): {done.stderr[-2000:]}",
            }
        return json.loads(done.stdout)


# -- login -----------------------------------------------------------------------------------------


def flights(events: list[list[Any]], rtt: float) -> list[tuple[float, str, int]]:
    """Group a connection's chunks into flights: same direction, less than RTT/4 apart."""
    out: list[list[Any]] = []
    gap = max(rtt / 4, 0.002)
    for t, direction, size in events:
        if out and out[-1][1] == direction and t - out[-1][3] < gap:
            out[-1][2] += size
            out[-1][3] = t
        else:
            out.append([t, direction, size, t])
    return [(f[0], f[1], f[2]) for f in out]


def turns_before(connections: list[dict[str, Any]], wall: float | None) -> int | None:
    """Client flights (each one waited for an answer) before `wall`, on the busiest connection."""
    if wall is None or not connections:
        return None
    counts = []
    for conn in connections:
        rtt = conn["rtt_ms"] / 1000
        counts.append(
            sum(
                1
                for t, d, _ in flights(conn["events"], rtt)
                if d == "c" and conn["start"] + t < wall
            )
        )
    return max(counts)


# Every client of the login benchmark: what it is, and how many TCP connections its login opens.
CLIENTS = {"tunnelauth": 1, "openssh": 2, "tunnelauth-openssh": 1, "tunnelauth-reused": 0}
TRANSPORT_CLIENTS = ("tunnelauth-openssh", "tunnelauth-reused")  # the fake series only


def bench_login(bench: Bench, mode: Mode, log: list[str], series: str = "fake") -> dict[str, Any]:
    """The login series with the fake hermes 0.18.0, or (series="real") the real one. The fake
    series also times tunnelauth over the user's own ssh (--ssh openssh) and over a live
    ControlMaster it reuses."""
    if series == "real" and not bench.real_hermes.exists():
        why = f"real hermes-agent {LOGIN_HERMES} is not installed at {bench.real_hermes} (sudo ./tests/setup)"
        log.append(f"login ({SERIES[series]}): not available: {why}")
        print(log[-1], flush=True)
        return {"available": False, "why": why, "hermes": SERIES[series]}
    runs: list[dict[str, Any]] = []
    clients = ("tunnelauth", "openssh", *(TRANSPORT_CLIENTS if series == "fake" else ()))
    for rtt in mode.rtts:
        relay = Relay(bench.lab, rtt, bench.dir / f"relay-{rtt}.log")
        bench.trust_relay(relay.port)
        config = bench.config(f"rtt{rtt}", relay.port)
        reuse_config = bench.config(f"rtt{rtt}-reuse", relay.port, control=True)
        master = bench.master(reuse_config) if "tunnelauth-reused" in clients else None
        try:
            if rtt == mode.rtts[0] and not mode.quick:
                for client in ("tunnelauth", "openssh"):  # warm caches; not counted
                    bench.wait_clean()
                    bench.person(client, config, series=series)
            for rep in range(mode.reps):
                for client in clients if rep % 2 == 0 else clients[::-1]:
                    bench.wait_clean()
                    before = relay.count()
                    result = bench.person(
                        client,
                        reuse_config if client == "tunnelauth-reused" else config,
                        series=series,
                    )
                    conns = relay.since(before, CLIENTS[client])
                    result.update(
                        client=client,
                        hermes=SERIES[series],
                        rtt_ms=rtt,
                        rep=rep,
                        connections=len(conns),
                    )
                    if conns and "t0" in result:  # local start-up: until the first TCP connection
                        result["first_connect"] = min(c["start"] for c in conns) - result["t0"]
                    if rtt > 0 and result.get("open") is not None:
                        result["turns_to_open"] = turns_before(conns, result["t0"] + result["open"])
                        # Per connection, seconds since the person started (t0), as the relay saw them.
                        result["flights"] = [
                            [
                                [round(c["start"] - result["t0"] + t, 3), d, n]
                                for t, d, n in flights(c["events"], rtt / 1000)
                            ]
                            for c in conns
                        ]
                    runs.append(result)
                    log.append(
                        f"login rtt={rtt:>3} {client:<18} {SERIES[series]} rep={rep} ok={result.get('ok')} "
                        f"open={_fmt(result.get('open'))} success={_fmt(result.get('success'))}"
                    )
                    print(log[-1], flush=True)
        finally:
            if master is not None:
                master.terminate()
                master.wait(timeout=10)
            relay.stop()
    summary: dict[str, Any] = {}
    for rtt in mode.rtts:
        row: dict[str, Any] = {}
        for client in clients:
            mine = [r for r in runs if r["rtt_ms"] == rtt and r["client"] == client and r.get("ok")]
            row[client] = {
                "n": len(mine),
                "open": median([r["open"] for r in mine]),
                "success": median([r["success"] for r in mine]),
                "done": median([r["done"] for r in mine]),
                "turns_to_open": median([r.get("turns_to_open") for r in mine]),
                "first_connect": median([r.get("first_connect") for r in mine]),
                "maxrss_kb": median(
                    [
                        max(v["maxrss_kb"] for k, v in r["usage"].items() if v and k != "browser")
                        for r in mine
                    ]
                ),
                "cpu_s": median([sum(v["cpu_s"] for v in r["usage"].values() if v) for r in mine]),
            }
        row["open_ratio"] = ratio(row["tunnelauth"]["open"], row["openssh"]["open"])
        row["success_ratio"] = ratio(row["tunnelauth"]["success"], row["openssh"]["success"])
        for client in clients[2:]:
            row[f"{client}_open_ratio"] = ratio(row[client]["open"], row["openssh"]["open"])
        row["open_target"] = TARGETS["open_ratio"].get(rtt)
        summary[str(rtt)] = row
    # Round trips on the critical path, from how the time grows with the RTT.
    slope: dict[str, Any] = {}
    if len(mode.rtts) > 1:
        lo, hi = min(mode.rtts), max(mode.rtts)
        for client in ("tunnelauth", "openssh"):
            a, b = summary[str(lo)][client], summary[str(hi)][client]
            slope[client] = {
                key: (b[key] - a[key]) / ((hi - lo) / 1000) if a[key] and b[key] else None
                for key in ("open", "success")
            }
    ta_rss = [
        r["usage"]["tunnelauth"]["maxrss_kb"]
        for r in runs
        if r.get("ok") and r["client"] == "tunnelauth"
    ]
    return {
        "available": True,
        "hermes": SERIES[series],
        "runs": runs,
        "summary": summary,
        "round_trips_from_slope": slope,
        "login_maxrss_kb": {"median": median(ta_rss), "max": max(ta_rss) if ta_rss else None},
        "broken": [
            f"{r['client']} ({SERIES[series]}) rtt={r['rtt_ms']} rep={r['rep']}: "
            f"{r.get('error') or r.get('output')}"
            for r in runs
            if not r.get("ok")
        ],
    }


def bench_imports(bench: Bench) -> dict[str, Any] | None:
    """One more login, not timed, under PYTHONPROFILEIMPORTTIME: what a real login imports."""
    bench.wait_clean()
    traced = bench.person(
        "tunnelauth", bench.config("imports", None), {"PYTHONPROFILEIMPORTTIME": "1"}
    )
    rows = parse_importtime("\n".join(traced.get("stderr", [])))
    return import_report(rows) if traced.get("ok") and rows else None


def _fmt(value: float | None) -> str:
    return f"{value:.3f}s" if isinstance(value, (int, float)) else "-"


# -- start-up and imports ----------------------------------------------------------------------------


def parse_importtime(text: str) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) from -X importtime output."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((m[4], int(m[1]), int(m[2])))
    return rows


def import_report(rows: list[tuple[str, int, int]]) -> dict[str, Any]:
    modules = {name for name, _, _ in rows}
    total = sum(s for _, s, _ in rows) or 1  # µs
    tops: dict[str, int] = {}
    for name, self_us, _ in rows:
        top = name.split(".")[0]
        tops[top] = tops.get(top, 0) + self_us
    return {
        "modules": len(modules),
        "total_ms": total / 1000,
        "by_package_ms": {
            k: round(v / 1000, 1) for k, v in sorted(tops.items(), key=lambda kv: -kv[1])[:15]
        },
        # Shares, not ms: a traced import is slower than a real one, but in proportion.
        "share": {
            k: v / total for k, v in sorted(_families(tops).items(), key=lambda kv: -kv[1])[:8]
        },
        "forbidden": sorted(
            f for f in FORBIDDEN if f in modules or any(m.startswith(f + ".") for m in modules)
        ),
        "has": {
            p: any(m == p or m.startswith(p + ".") for m in modules)
            for p in (
                "asyncssh",
                "typer",
                "pydantic",
                "rich",
                "httpx",
                "psutil",
                "webbrowser",
                "shellingham",
                "tunnelauth.doctor",
                "asyncio",
            )
        },
    }


def _families(tops: dict[str, int]) -> dict[str, int]:
    """Top-level packages, with a library's helpers counted under it (pydantic_core -> pydantic)."""
    family = {
        "pydantic_core": "pydantic",
        "annotated_types": "pydantic",
        "typing_inspection": "pydantic",
        "_cffi_backend": "cryptography",
        "shellingham": "typer",
        "annotated_doc": "typer",
    }
    out: dict[str, int] = {}
    for name, us in tops.items():
        key = family.get(name, name if not name.startswith("_") else "stdlib")
        out[key] = out.get(key, 0) + us
    return out


def bench_startup(mode: Mode, log: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cases = {
        "python -c pass": [PY, "-c", "pass"],
        "tunnelauth --help": [*TUNNELAUTH, "--help"],
        "tunnelauth providers": [*TUNNELAUTH, "providers"],
        # What a login imports before it connects, without the network.
        "import login path": [
            PY,
            "-c",
            "import tunnelauth.cli, tunnelauth.flow, tunnelauth.output",
        ],
    }
    if importlib.util.find_spec("typer._adapters"):
        # typer >= 0.29 coerces every command's parameters through pydantic.
        cases["import typer's pydantic layer"] = [PY, "-c", "import typer._adapters"]
    out: dict[str, Any] = {}
    for name, argv in cases.items():
        measure(argv, env)  # warm the page cache and .pyc files
        samples = [measure(argv, env) for _ in range(mode.startup_reps)]
        broken = [s for s in samples if s["rc"] != 0]
        out[name] = {
            "wall_ms": median([s["wall"] * 1000 for s in samples]),
            "cpu_ms": median([s["cpu_s"] * 1000 for s in samples]),
            "maxrss_mb": median([s["maxrss_kb"] / 1024 for s in samples]),
            "broken": [s["stderr"][-500:] for s in broken],
        }
        log.append(
            f"startup {name:<22} {out[name]['wall_ms']:.0f} ms (CPU {out[name]['cpu_ms']:.0f} ms) "
            f"{out[name]['maxrss_mb']:.1f} MB"
        )
        print(log[-1], flush=True)
    imports = {}
    for module in ("tunnelauth.cli", "tunnelauth.flow"):
        done = measure([PY, "-X", "importtime", "-c", f"import {module}"], env)
        imports[module] = import_report(parse_importtime(done["stderr"]))
    out["imports"] = imports
    return out


# -- callback latency ------------------------------------------------------------------------------


def bench_callback(bench: Bench, mode: Mode, log: list[str]) -> dict[str, Any]:
    lab = bench.lab
    server = lab.spawn(
        "target",
        ["/usr/bin/python3", str(bench.httpd), str(HTTPD_PORT)],
        user=lab.user,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    if not server.stdout.readline().startswith("listening"):
        raise RuntimeError("the callback benchmark's HTTP server did not start")
    out: dict[str, Any] = {}
    try:
        for rtt, rounds in mode.callback_rounds.items():
            relay = Relay(lab, rtt, bench.dir / f"relay-cb-{rtt}.log") if rtt else None
            if relay:
                bench.trust_relay(relay.port)
            config = bench.config(f"cb{rtt}", relay.port if relay else None)
            env = lab.laptop_env()
            holder = lab.spawn(
                "laptop",
                [PY, str(BENCH / "forward.py"), "hold", str(config), "target", str(HTTPD_PORT)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            tunnel = lab.spawn(
                "laptop",
                [
                    "ssh",
                    "-F",
                    str(config),
                    "-N",
                    "-L",
                    f"{HTTPD_PORT + 1}:127.0.0.1:{HTTPD_PORT}",
                    "target",
                ],
                env=env,
            )
            try:
                assert holder.stdout is not None
                if holder.stdout.readline().strip() != "ready":
                    raise RuntimeError(
                        f"tunnelauth's forward did not start: {holder.stderr.read()[-1000:]}"
                    )  # type: ignore[union-attr]
                deadline = time.monotonic() + 30
                while HTTPD_PORT + 1 not in lab.listening_ports("laptop"):
                    if time.monotonic() > deadline or tunnel.poll() is not None:
                        raise RuntimeError("ssh -L did not start listening")
                    time.sleep(0.05)
                done = lab.run(
                    "laptop",
                    [
                        PY,
                        str(BENCH / "forward.py"),
                        "client",
                        str(rounds),
                        str(HTTPD_PORT),
                        str(HTTPD_PORT + 1),
                    ],
                    timeout=600,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"callback client failed: {done.stderr[-1000:]}")
                times = json.loads(done.stdout)
            finally:
                if holder.stdin:
                    holder.stdin.close()
                tunnel.terminate()
                for proc in (holder, tunnel):
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                if relay:
                    relay.stop()
            ta, ossh = times[str(HTTPD_PORT)], times[str(HTTPD_PORT + 1)]
            row: dict[str, Any] = {
                "rounds": rounds,
                "tunnelauth_ms": statistics.median(ta) * 1000,
                "openssh_ms": statistics.median(ossh) * 1000,
                "tunnelauth_p90_ms": _pct(ta, 90) * 1000,
                "openssh_p90_ms": _pct(ossh, 90) * 1000,
                "samples_ms": {
                    "tunnelauth": [round(t * 1000, 3) for t in ta],
                    "openssh": [round(t * 1000, 3) for t in ossh],
                },
            }
            row["ratio"] = ratio(row["tunnelauth_ms"], row["openssh_ms"])
            out[str(rtt)] = row
            log.append(
                f"callback rtt={rtt:>3} tunnelauth {row['tunnelauth_ms']:.2f} ms  "
                f"ssh -L {row['openssh_ms']:.2f} ms  ratio {row['ratio']:.2f}"
            )
            print(log[-1], flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return out


def _pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# -- fleet (doctor) --------------------------------------------------------------------------------


def doctor_help() -> str | None:
    """`tunnelauth doctor --help`, or None while tunnelauth has no doctor command."""
    probe = subprocess.run(
        [PY, "-c", "from tunnelauth.cli import SUBCOMMANDS; print('doctor' in SUBCOMMANDS)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "True":
        return None
    done = subprocess.run(
        [*TUNNELAUTH, "doctor", "--help"], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def _reported(stdout: str) -> int | None:
    """How many destinations doctor's --json document reports on (None: not a document)."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    lists = [v for v in doc.values() if isinstance(v, list)] if isinstance(doc, dict) else [doc]
    return len(lists[0]) if lists else None


def bench_fleet(bench: Bench, mode: Mode, log: list[str]) -> dict[str, Any]:
    help_text = doctor_help()
    if help_text is None:
        log.append("fleet: not available (tunnelauth has no `doctor` command yet)")
        print(log[-1], flush=True)
        return {"available": False, "why": "tunnelauth has no `doctor` command"}
    lab = bench.lab
    aliases = [f"t{i:02d}" for i in range(1, max(mode.fleet) + 1)]
    # 50 aliases of ONE host would meet that one sshd's MaxStartups (10:30:100) limit on
    # unauthenticated connections, which 50 real hosts would not: lift it on the target only.
    if bench.own_lab:
        lab.start_sshd("target", extra=["MaxStartups 200:30:400"])
    out: dict[str, Any] = {"available": True, "rtts": {}, "max_startups_lifted": bench.own_lab}
    try:
        for rtt in mode.fleet_rtts:
            relay = Relay(lab, rtt, bench.dir / f"relay-fleet-{rtt}.log") if rtt else None
            if relay:
                bench.trust_relay(relay.port)
            config = bench.config(f"fleet{rtt}", relay.port if relay else None, aliases)
            # A HOME whose ~/.ssh/config is the fleet config too, in case doctor has no -F.
            home = bench.dir / f"fleet-home-{rtt}"
            (home / ".ssh").mkdir(parents=True, exist_ok=True)
            shutil.copy(config, home / ".ssh" / "config")
            env = lab.laptop_env(HOME=str(home))
            extra = ["-F", str(config)] if re.search(r"(^|\s)-F\b", help_text) else []
            if "--json" in help_text:
                extra.append("--json")
            if REAL_HERMES.exists():  # a fleet runs hermes-agent itself, installed by pip
                extra += ["--hermes", str(REAL_HERMES)]
            else:  # (no tests/setup: the fake, as in the login benchmark)
                extra += [
                    "--hermes",
                    str(bench.hermes),
                    "--remote-env",
                    "FAKE_HERMES_VERSION=0.18.0",
                    "--remote-env",
                    f"FAKE_HERMES_PROVIDER={bench.provider.url}",
                ]
            sizes: dict[str, Any] = {}
            try:
                runs: list[tuple[str, int, list[str]]] = [(str(n), n, []) for n in mode.fleet]
                if "--concurrency" in help_text and not mode.quick:
                    # The default concurrency makes a big fleet a series of waves; how much of
                    # the time is that, and how much is work?
                    n = mode.fleet[-1]
                    runs.append((f"{n} (--concurrency {n})", n, ["--concurrency", str(n)]))
                for key, n, more in runs:
                    argv = [*TUNNELAUTH, "doctor", *aliases[:n], *extra, *more]
                    # The small fleets are the denominators of the ratios: more samples, less noise.
                    reps = mode.fleet_reps + (2 if n == mode.fleet[0] and not mode.quick else 0)
                    samples = [
                        measure(argv, env, timeout=300, netns=lab.laptop_ns) for _ in range(reps)
                    ]
                    broken = [
                        s["stderr"][-800:] or s["stdout"][-800:]
                        for s in samples
                        if "Traceback" in s["stderr"]
                        or s["rc"] not in (0, 1)
                        or ("--json" in extra and _reported(s["stdout"]) != n)
                    ]
                    sizes[key] = {
                        "wall_s": median([s["wall"] for s in samples]),
                        "maxrss_mb": median([s["maxrss_kb"] / 1024 for s in samples]),
                        "cpu_s": median([s["cpu_s"] for s in samples]),
                        "machine_cpu_s": median([s["machine_cpu_s"] for s in samples]),
                        "rc": [s["rc"] for s in samples],
                        "samples_s": [round(s["wall"], 3) for s in samples],
                        "crashed": broken,
                    }
                    log.append(
                        f"fleet rtt={rtt:>3} n={key:>2} {sizes[key]['wall_s']:.2f} s "
                        f"(CPU {sizes[key]['cpu_s']:.2f} s, whole machine {sizes[key]['machine_cpu_s']:.2f} s) "
                        f"{sizes[key]['maxrss_mb']:.0f} MB rc={sizes[key]['rc']}"
                    )
                    print(log[-1], flush=True)
            finally:
                if relay:
                    relay.stop()
            one, many = sizes[str(mode.fleet[0])], sizes[str(mode.fleet[-1])]
            out["rtts"][str(rtt)] = {
                "sizes": sizes,
                "ratio": ratio(many["wall_s"], one["wall_s"]),
                "args": [a for a in extra if not a.startswith("/")],
            }
    finally:
        if bench.own_lab:
            lab.reset_sshd()
    return out


# -- machine, report -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    versions: dict[str, str | None] = {}
    for pkg in ("asyncssh", "typer", "cryptography", "pydantic"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - informational only
            versions[pkg] = None
    ssh_v = subprocess.run(
        ["ssh", "-V"], capture_output=True, text=True, check=False
    ).stderr.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gb": round(mem / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": ssh_v,
        **versions,
    }


def _ms(value: float | None) -> str:
    return f"{value * 1000:.0f} ms" if value is not None else "-"


def _x(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "-"


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def table(results: dict[str, Any]) -> str:
    rows = [("measure", "tunnelauth", "OpenSSH", "ratio", "target", "met")]
    login = results.get("login", {})
    for rtt, row in login.get("summary", {}).items():
        ta, os_ = row["tunnelauth"], row["openssh"]
        target = row["open_target"]
        rows.append(
            (
                f"time to authorize URL opened, {rtt} ms RTT",
                _ms(ta["open"]),
                _ms(os_["open"]),
                _x(row["open_ratio"]),
                f"≤ {target:.1f}×" if target else "",
                _met(row["open_ratio"] <= target if row["open_ratio"] and target else None),
            )
        )
        for client, what in (
            ("tunnelauth-openssh", "--ssh openssh"),
            ("tunnelauth-reused", "reused master"),
        ):
            if client in row:
                rows.append(
                    (
                        f"… with {what}, {rtt} ms RTT",
                        _ms(row[client]["open"]),
                        _ms(os_["open"]),
                        _x(row.get(f"{client}_open_ratio")),
                        "",
                        "",
                    )
                )
    for rtt, row in login.get("summary", {}).items():
        ta, os_ = row["tunnelauth"], row["openssh"]
        rows.append(
            (
                f"time to success, {rtt} ms RTT",
                _ms(ta["success"]),
                _ms(os_["success"]),
                _x(row["success_ratio"]),
                "",
                "",
            )
        )
    for rtt, row in list(login.get("summary", {}).items())[:1]:
        ta, os_ = row["tunnelauth"], row["openssh"]
        rows.append(
            (
                f"start-up until the first TCP connection, {rtt} ms RTT",
                _ms(ta["first_connect"]),
                _ms(os_["first_connect"]),
                "",
                "",
                "",
            )
        )
    for rtt, row in login.get("summary", {}).items():
        ta, os_ = row["tunnelauth"], row["openssh"]
        if ta.get("turns_to_open") is not None:
            rows.append(
                (
                    f"client round trips before the URL (relay, {rtt} ms)",
                    f"{ta['turns_to_open']:.0f}",
                    f"{os_['turns_to_open']:.0f}",
                    "",
                    "",
                    "",
                )
            )
    slope = login.get("round_trips_from_slope", {})
    if slope:
        rows.append(
            (
                "RTTs on the critical path to the URL (slope)",
                f"{slope['tunnelauth']['open']:.1f}" if slope["tunnelauth"]["open"] else "-",
                f"{slope['openssh']['open']:.1f}" if slope["openssh"]["open"] else "-",
                "",
                "",
                "",
            )
        )
    rows += real_hermes_rows(results.get("login_real", {}))
    st = results.get("startup", {})
    if st:
        for name in [n for n in st if n != "imports"]:
            row = st[name]
            is_help = name == "tunnelauth --help"
            rows.append(
                (
                    f"`{name}` wall / CPU / peak RSS",
                    f"{row['wall_ms']:.0f} ms / {row['cpu_ms']:.0f} ms / {row['maxrss_mb']:.0f} MB",
                    "",
                    "",
                    f"< {TARGETS['help_ms']:.0f} ms" if is_help else "",
                    _met(row["wall_ms"] < TARGETS["help_ms"]) if is_help else "",
                )
            )
        traced = results.get("login_imports")
        imp = traced or st["imports"]["tunnelauth.flow"]
        bad = imp["forbidden"] + [p for p in ("pydantic", "shellingham") if imp["has"].get(p)]
        shares = ", ".join(f"{k} {v:.0%}" for k, v in list(imp["share"].items())[:4])
        what = "a login" if traced else "`import tunnelauth.flow`"
        rows.append(
            (
                f"what {what} imports (share of import time)",
                f"{imp['modules']} modules: {shares}",
                "",
                "",
                "nothing unused",
                _met(not bad) + (f" ({', '.join(bad)})" if bad else ""),
            )
        )
    for rtt, row in results.get("callback", {}).items():
        rows.append(
            (
                f"callback round trip, 2 KB, {rtt} ms RTT",
                f"{row['tunnelauth_ms']:.1f} ms",
                f"{row['openssh_ms']:.1f} ms",
                _x(row["ratio"]),
                f"≤ {TARGETS['callback_ratio']}×",
                _met(row["ratio"] <= TARGETS["callback_ratio"] if row["ratio"] else None),
            )
        )
    fleet = results.get("fleet", {})
    if fleet.get("available"):
        for rtt, per in fleet["rtts"].items():
            sizes = per["sizes"]
            for n, row in sizes.items():
                what = (
                    f"{n} target{'' if n == '1' else 's'}"
                    if n.isdigit()
                    else n.replace(" (", " targets (")
                )
                lab_cpu = (
                    f" / {row['machine_cpu_s']:.1f} s"
                    if row.get("machine_cpu_s") is not None
                    else ""
                )
                rows.append(
                    (
                        f"`tunnelauth doctor`, {what}, {rtt} ms RTT (wall / CPU / whole-machine CPU / "
                        "peak RSS)",
                        f"{row['wall_s']:.2f} s / {row['cpu_s']:.2f} s{lab_cpu} / {row['maxrss_mb']:.0f} MB",
                        "",
                        "",
                        f"< {TARGETS['fleet_mb']:.0f} MB",
                        _met(row["maxrss_mb"] < TARGETS["fleet_mb"]),
                    )
                )
            if per.get("ratio"):
                rows.append(
                    (
                        f"doctor, {mode_n(sizes)} targets vs 1 target, {rtt} ms RTT",
                        "",
                        "",
                        _x(per["ratio"]),
                        f"≤ {TARGETS['fleet_ratio']:.0f}×",
                        _met(per["ratio"] <= TARGETS["fleet_ratio"]),
                    )
                )
            one = min(sizes, key=lambda k: int(k) if k.isdigit() else 1 << 30)
            for key in (k for k in sizes if not k.isdigit()):
                rows.append(
                    (
                        f"doctor, {key.replace(' (', ' targets (')} vs {one} target, {rtt} ms RTT",
                        "",
                        "",
                        _x(ratio(sizes[key]["wall_s"], sizes[one]["wall_s"])),
                        "",
                        "",
                    )
                )
    elif fleet:
        rows.append(("`tunnelauth doctor` fleet", "not available", "", "", "", ""))
    for rtt, row in login.get("summary", {}).items():
        ta, os_ = row["tunnelauth"], row["openssh"]
        if ta.get("cpu_s") and os_.get("cpu_s"):
            rows.append(
                (
                    f"laptop CPU seconds per login (with the browser), {rtt} ms RTT",
                    f"{ta['cpu_s']:.2f} s",
                    f"{os_['cpu_s']:.2f} s (2 ssh + browser)",
                    _x(ratio(ta["cpu_s"], os_["cpu_s"])),
                    "",
                    "",
                )
            )
    rss = login.get("login_maxrss_kb", {})
    if rss.get("median"):
        mb = rss["median"] / 1024
        rows.append(
            (
                "peak RSS of one login (median / max)",
                f"{mb:.1f} / {rss['max'] / 1024:.1f} MB",
                _mb_ssh(login),
                "",
                f"< {TARGETS['login_mb']:.0f} MB",
                _met(mb < TARGETS["login_mb"]),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + " |"
        for r in rows
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def real_hermes_rows(login: dict[str, Any]) -> list[tuple[str, ...]]:
    """The login measures again, with the real hermes-agent on the target."""
    tag = login.get("hermes", SERIES["real"])
    if not login:
        return []
    if not login.get("available"):
        return [(f"xAI login with the {tag}", "not available", "", "", "", "")]
    rows: list[tuple[str, ...]] = []
    for rtt, row in login.get("summary", {}).items():
        ta, os_, target = row["tunnelauth"], row["openssh"], row["open_target"]
        rows.append(
            (
                f"time to authorize URL opened, {rtt} ms RTT ({tag})",
                _ms(ta["open"]),
                _ms(os_["open"]),
                _x(row["open_ratio"]),
                f"≤ {target:.1f}×" if target else "",
                _met(row["open_ratio"] <= target if row["open_ratio"] and target else None),
            )
        )
    for rtt, row in login.get("summary", {}).items():
        ta, os_ = row["tunnelauth"], row["openssh"]
        rows.append(
            (
                f"time to success, {rtt} ms RTT ({tag})",
                _ms(ta["success"]),
                _ms(os_["success"]),
                _x(row["success_ratio"]),
                "",
                "",
            )
        )
    for rtt, row in login.get("summary", {}).items():
        ta, os_ = row["tunnelauth"], row["openssh"]
        if ta.get("cpu_s") and os_.get("cpu_s"):
            rows.append(
                (
                    f"laptop CPU seconds per login (with the browser), {rtt} ms RTT ({tag})",
                    f"{ta['cpu_s']:.2f} s",
                    f"{os_['cpu_s']:.2f} s (2 ssh + browser)",
                    _x(ratio(ta["cpu_s"], os_["cpu_s"])),
                    "",
                    "",
                )
            )
    return rows


def mode_n(sizes: dict[str, Any]) -> int:
    return max(int(n) for n in sizes if n.isdigit())


def _mb_ssh(login: dict[str, Any]) -> str:
    sizes = [
        v["maxrss_kb"]
        for r in login.get("runs", [])
        if r.get("ok") and r["client"] == "openssh"
        for k, v in r["usage"].items()
        if v and k.startswith("ssh")
    ]
    mid = median(sizes)
    return f"{mid / 1024:.1f} MB per ssh" if mid else ""


def plot(results: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        return "matplotlib is not installed: no results.png (pip install matplotlib)"
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6))
    summary = results.get("login", {}).get("summary", {})
    rtts = [int(r) for r in summary]
    ax = axes[0]
    for client, colour in (("tunnelauth", "tab:blue"), ("openssh", "tab:orange")):
        for key, style in (("open", "-o"), ("success", "--s")):
            ys = [summary[str(r)][client][key] for r in rtts]
            ax.plot(
                rtts,
                ys,
                style,
                color=colour,
                label=f"{client}: {'URL opened' if key == 'open' else 'success'}",
            )
    for client, colour, what in (
        ("tunnelauth-openssh", "tab:purple", "--ssh openssh"),
        ("tunnelauth-reused", "tab:green", "reused master"),
    ):
        if rtts and client in summary[str(rtts[0])]:
            ys = [summary[str(r)][client]["open"] for r in rtts]
            ax.plot(rtts, ys, "-D", color=colour, label=f"tunnelauth {what}: URL opened")
    real = results.get("login_real", {}).get("summary", {})
    for client, colour in (("tunnelauth", "tab:cyan"), ("openssh", "tab:red")) if real else ():
        for key, style in (("open", ":^"), ("success", "-.v")):
            xs = [int(r) for r in real]
            ys = [real[r][client][key] for r in real]
            ax.plot(
                xs,
                ys,
                style,
                color=colour,
                label=f"{client}, real hermes: {'URL opened' if key == 'open' else 'success'}",
            )
    ax.set(
        title="xAI login through one jump host",
        xlabel="laptop↔bastion RTT (ms)",
        ylabel="seconds (median)",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    data, labels = [], []
    for rtt, row in results.get("callback", {}).items():
        for client, name in (("tunnelauth", "tunnelauth"), ("openssh", "ssh -L")):
            data.append(row["samples_ms"][client])
            labels.append(f"{name}\n{rtt} ms RTT")
    if data:
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_yscale("log")
        ax.set_yticks(
            [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= 2 * max(map(max, data))]
        )
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set(title="callback: 2 KB request/response", ylabel="ms (log scale)")
    fleet = results.get("fleet", {})
    ax, mem = axes[2], axes[3]
    if fleet.get("available"):
        for rtt, per in fleet["rtts"].items():
            ns = [int(n) for n in per["sizes"] if n.isdigit()]
            ax.plot(
                ns, [per["sizes"][str(n)]["wall_s"] for n in ns], "-o", label=f"wall, {rtt} ms RTT"
            )
            ax.plot(
                ns,
                [per["sizes"][str(n)]["cpu_s"] for n in ns],
                ":o",
                label=f"doctor's CPU, {rtt} ms RTT",
            )
            if rtt == "0" and all(
                per["sizes"][str(n)].get("machine_cpu_s") is not None for n in ns
            ):
                # All the lab's hosts share this machine: its busy CPU over its core count is the
                # least wall time the run could take here.
                cores = results["machine"]["nproc"]
                ax.plot(
                    ns,
                    [per["sizes"][str(n)]["machine_cpu_s"] / cores for n in ns],
                    "--",
                    color="grey",
                    label=f"whole machine's CPU / {cores} cores, {rtt} ms",
                )
            mem.plot(
                ns,
                [per["sizes"][str(n)]["maxrss_mb"] for n in ns],
                "-s",
                label=f"doctor, {rtt} ms RTT",
            )
        ax.legend(fontsize=8)
        ax.set(
            title="tunnelauth doctor: fleet behind one bastion",
            xlabel="targets",
            ylabel="seconds (median)",
        )
    else:
        ax.set(title="tunnelauth doctor: not available")
    rss = results.get("login", {}).get("login_maxrss_kb", {})
    if rss.get("median"):
        mem.axhline(
            rss["median"] / 1024, color="tab:blue", linestyle="--", label="one login (tunnelauth)"
        )
    mem.axhline(
        TARGETS["login_mb"],
        color="grey",
        linestyle=":",
        label=f"login target ({TARGETS['login_mb']:.0f} MB)",
    )
    mem.set(title="peak RSS", xlabel="doctor targets", ylabel="MB")
    mem.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


# -- main ------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI mode: 1 repetition, 0 ms only, fleet 1 and 5"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--only",
        action="append",
        choices=("startup", "login", "callback", "fleet"),
        help="run only these parts (repeatable; login includes the real-hermes series)",
    )
    parser.add_argument("--reps", type=int, help="login repetitions per client and RTT")
    parser.add_argument(
        "--lab",
        metavar="SUFFIX",
        help="use the lab made by `python -m tests.lab up` instead of building one (kept, sshds untouched)",
    )
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    if args.reps:
        mode = Mode(
            mode.quick,
            args.reps,
            mode.rtts,
            mode.fleet,
            mode.startup_reps,
            mode.callback_rounds,
            mode.fleet_reps,
            mode.fleet_rtts,
        )
    parts = args.only or ["startup", "login", "callback", "fleet"]
    if not os.access(person.TIME, os.X_OK):
        print(f"bench: {person.TIME} is missing (apt-get install time)", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.time()
    load_start = os.getloadavg()
    log: list[str] = []
    results: dict[str, Any] = {
        "mode": "quick" if mode.quick else "full",
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
    }
    broken: list[str] = []

    def section(name: str, run: Any, *args: Any) -> None:
        """One part of the benchmark; if it breaks, say so and go on with the next."""
        try:
            results[name] = run(*args)
        except Exception as exc:  # noqa: BLE001 - recorded as broken, never hidden
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"{name}: BROKEN: {exc!r}", file=sys.stderr, flush=True)

    if "startup" in parts:
        section("startup", bench_startup, mode, log)
        broken += [
            f"startup {k}: {v['broken']}"
            for k, v in results.get("startup", {}).items()
            if isinstance(v, dict) and v.get("broken")
        ]
    if set(parts) - {"startup"}:
        try:
            lab = Lab.load(args.lab) if args.lab else Lab.create()
        except LabUnavailable as exc:
            print(
                f"bench: the SSH lab is unavailable: {exc} (run as root after sudo ./tests/setup)",
                file=sys.stderr,
            )
            return 2
        try:
            bench = Bench(lab, mode, own_lab=not args.lab)
            if "login" in parts:
                section("login", bench_login, bench, mode, log)
                broken += results.get("login", {}).get("broken", [])
                section("login_real", bench_login, bench, mode, log, "real")
                broken += results.get("login_real", {}).get("broken", [])
                section("login_imports", bench_imports, bench)
                if results.get("login_imports") is None:
                    broken.append("the import-traced login failed")
            if "callback" in parts:
                section("callback", bench_callback, bench, mode, log)
            if "fleet" in parts:
                section("fleet", bench_fleet, bench, mode, log)
                broken += [
                    f"fleet rtt={rtt} n={n}: {row['crashed']}"
                    for rtt, per in results.get("fleet", {}).get("rtts", {}).items()
                    for n, row in per["sizes"].items()
                    if row["crashed"]
                ]
        finally:
            if args.lab:
                # Not kill_tracked(): a loaded lab does not know its sshd pids and would kill them.
                _terminate([q for p in lab._procs for q in _tree(p.pid)])
            else:
                lab.destroy()
    results["elapsed_s"] = round(time.time() - started, 1)
    results["loadavg"] = {"start": load_start, "end": os.getloadavg()}
    results["broken"] = broken
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = table(results)
    note = plot(results, args.out / "results.png")
    m = results["machine"]
    header = (
        f"tunnelauth benchmark ({results['mode']}), {results['started']}: {m['nproc']} × {m['cpu']}, "
        f"{m['mem_gb']} GB, Linux {m['kernel']}, Python {m['python']}, {m['openssh']}, "
        f"asyncssh {m['asyncssh']}; {results['elapsed_s']} s; load average "
        f"{results['loadavg']['start'][0]:.1f} at start, {results['loadavg']['end'][0]:.1f} at end\n"
    )
    (args.out / "results.md").write_text(
        header + "\n" + text + "\n" + (f"\n{note}\n" if note else "")
    )
    print("\n" + header + "\n" + text)
    if note:
        print(note)
    if broken:
        print("\nBROKEN:\n  " + "\n  ".join(map(str, broken)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
