"""The lab's topology and teardown really hold."""

from __future__ import annotations

import errno
import json
import pwd
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.lab import netlab
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab

# Prints "OK <first bytes>" or "ERR <errno>"; exit status 0 / 1.
PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.settimeout(2)
    data = s.recv(64) if sys.argv[4] == "read" else b""
except OSError as e:
    print("ERR", e.errno or "timeout")
    sys.exit(1)
print("OK", data.decode(errors="replace").strip())
"""

LISTEN = """
import socket, sys, time
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
while True:
    c, _ = s.accept()
    c.sendall(b"hello-from-listener\\n")
    c.close()
"""


def probe(lab: Lab, host: str, ip: str, port: int, *, read: bool = True, wait: float = 5) -> str:
    argv = [sys.executable, "-c", PROBE, ip, str(port), str(wait), "read" if read else "-"]
    out: str = lab.run(host, argv).stdout
    return out.strip()


def listen(lab: Lab, host: str, ip: str, port: int) -> None:
    lab.spawn(host, [sys.executable, "-c", LISTEN, ip, str(port), f"lab-listener-{port}"])
    deadline = time.monotonic() + 10
    while port not in lab.listening_ports(host):
        assert time.monotonic() < deadline, f"listener on {host} {ip}:{port} never came up"
        time.sleep(0.05)


def ssh(lab: Lab, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cfg = config or lab.laptop_home / ".ssh" / "config"
    argv = ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *args]
    return lab.run("laptop", argv, env=lab.laptop_env(), timeout=30)


def test_laptop_reaches_bastion_sshd(clean_lab: Lab) -> None:
    assert probe(clean_lab, "laptop", clean_lab.bastion_ip, 22).startswith("OK SSH-2.0-OpenSSH")


def test_laptop_cannot_reach_target(clean_lab: Lab) -> None:
    assert probe(clean_lab, "laptop", clean_lab.target_ip, 22) == f"ERR {errno.ENETUNREACH}"


def test_bastion_does_not_forward(clean_lab: Lab) -> None:
    lab = clean_lab
    assert lab.run("bastion", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    # Even with a route on the laptop, the bastion must drop packets meant for the target.
    route = ["ip", "-n", lab.laptop_ns, "route", "add", "198.18.2.0/24", "via", lab.bastion_ip]
    subprocess.run(route, check=True)
    try:
        assert probe(lab, "laptop", lab.target_ip, 22, wait=2).startswith("ERR")
    finally:
        subprocess.run(["ip", "-n", lab.laptop_ns, "route", "del", "198.18.2.0/24"], check=True)


def test_root_namespace_cannot_reach_lab(clean_lab: Lab) -> None:
    routes = subprocess.run(
        ["ip", "route", "show", netlab.LAB_NET], capture_output=True, text=True, check=True
    ).stdout
    assert routes.strip()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, clean_lab.bastion_ip, "22", "2", "-"],
        capture_output=True,
        text=True,
    )
    assert done.stdout.startswith("ERR")


def test_provider_address_reachable_from_laptop_and_target(clean_lab: Lab) -> None:
    lab = clean_lab
    listen(lab, "bastion", lab.provider_ip, 8765)
    for host in ("laptop", "target"):
        assert probe(lab, host, lab.provider_ip, 8765) == "OK hello-from-listener", host


def test_lab_x_ai_is_named_and_reachable_from_laptop_and_target(clean_lab: Lab) -> None:
    lab = clean_lab
    listen(lab, "bastion", lab.xai_ip, 8768)
    for host in ("laptop", "target"):
        names = lab.run(host, ["getent", "hosts", "auth.x.ai"], check=True).stdout.split()
        assert names[:2] == [lab.xai_ip, "auth.x.ai"], (host, names)
        assert probe(lab, host, "auth.x.ai", 8768) == "OK hello-from-listener", host
    # The root namespace keeps its own /etc/hosts: the lab names x.ai only inside the lab.
    assert lab.xai_ip not in Path("/etc/hosts").read_text()


def test_loopback_is_per_namespace(clean_lab: Lab) -> None:
    lab = clean_lab
    listen(lab, "target", "127.0.0.1", 8766)
    assert 8766 not in lab.listening_ports("laptop")
    assert probe(lab, "laptop", "127.0.0.1", 8766) == f"ERR {errno.ECONNREFUSED}"
    assert probe(lab, "target", "127.0.0.1", 8766) == "OK hello-from-listener"
    assert len(lab.target_processes("lab-listener-8766")) == 1
    listen(lab, "bastion", "127.0.0.1", 8767)
    assert lab.target_processes("lab-listener-8767") == []


@pytest.mark.parametrize("host", ["laptop", "bastion", "target"])
def test_no_default_route(clean_lab: Lab, host: str) -> None:
    for family in ("-4", "-6"):
        out = clean_lab.run(host, ["ip", family, "route", "show", "default"], check=True).stdout
        assert out.strip() == "", (host, family, out)


def test_laptop_home_files(clean_lab: Lab) -> None:
    lab = clean_lab
    ssh_dir = lab.laptop_home / ".ssh"
    known = (ssh_dir / "known_hosts").read_text().splitlines()
    assert [line.split()[:2] for line in known] == [
        [lab.bastion_ip, "ssh-ed25519"],
        [lab.target_ip, "ssh-ed25519"],
    ]
    config = (ssh_dir / "config").read_text()
    key = ssh_dir / "id_ed25519"
    for line in (
        "Host bastion",
        f"HostName {lab.bastion_ip}",
        f"User {lab.user}",
        "ProxyJump bastion",
        f"IdentityFile {key}",
        "IdentitiesOnly yes",
    ):
        assert line in config
    assert (ssh_dir / "id_ed25519").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("login", ["user", "root"])
def test_openssh_proxyjump_to_target(clean_lab: Lab, login: str) -> None:
    lab = clean_lab
    args = ["-l", "root"] if login == "root" else []
    done = ssh(lab, *args, "target", "id -un; ip -4 -o addr show")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ("root" if login == "root" else lab.user)
    assert f"inet {lab.target_ip}/24" in done.stdout


ASYNCSSH_CLIENT = """
import asyncio, sys, asyncssh

async def main():
    # Only what tunnelauth has: HOME's ~/.ssh/config, known_hosts and key.
    async with asyncssh.connect("target") as conn:
        print((await conn.run("id -un", check=True)).stdout.strip())
        listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", int(sys.argv[1]))
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.get_port())
        print((await reader.readline()).decode().strip())
        writer.close()
        listener.close()

asyncio.run(main())
"""


def test_asyncssh_proxyjump_and_forward_to_target_loopback(clean_lab: Lab) -> None:
    lab = clean_lab
    listen(lab, "target", "127.0.0.1", 8768)
    done = lab.run("laptop", [sys.executable, "-c", ASYNCSSH_CLIENT, "8768"], env=lab.laptop_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [lab.user, "hello-from-listener"]


def test_run_as_lab_user(clean_lab: Lab) -> None:
    lab = clean_lab
    out = lab.run("target", ["sh", "-c", 'id -un; echo "$HOME"; pwd'], user=lab.user, check=True)
    assert out.stdout.split() == [lab.user, str(lab.user_home), str(lab.user_home)]


def test_unknown_host_key_is_refused(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = tmp_path / "config"
    config.write_text(
        (lab.laptop_home / ".ssh" / "config")
        .read_text()
        .replace(str(lab.laptop_home / ".ssh" / "known_hosts"), str(empty))
    )
    done = ssh(lab, "target", "true", config=config)
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_sshd_stop_start_and_extra_config(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.stop_sshd("target")
    assert 22 not in lab.listening_ports("target")
    assert ssh(lab, "target", "true").returncode == 255
    lab.start_sshd("target")
    assert ssh(lab, "target", "true").returncode == 0
    # ProxyJump needs TCP forwarding on the bastion.
    lab.start_sshd("bastion", extra=["AllowTcpForwarding no"])
    done = ssh(lab, "target", "true")
    assert done.returncode == 255
    assert "prohibited" in done.stderr
    assert ssh(lab, "bastion", "true").returncode == 0


def test_sshd_extra_match_block_goes_last(clean_lab: Lab) -> None:
    lab = clean_lab
    extra = ["LogLevel DEBUG", "Match User root", "  ForceCommand echo forced"]
    lab.start_sshd("target", extra=extra)
    assert ssh(lab, "-l", "root", "target", "id -un").stdout.strip() == "forced"
    assert ssh(lab, "target", "id -un").stdout.strip() == lab.user
    assert "debug1:" in (lab.root / "target" / "sshd.log").read_text()


def test_kill_tracked_spares_sshd(clean_lab: Lab) -> None:
    lab = clean_lab
    sleeper = lab.spawn("target", ["sleep", "600"], user=lab.user)
    kept = lab.spawn("bastion", ["sleep", "601"], keep=True)
    sshd_pids = {h: lab._sshd[h].pid for h in ("bastion", "target")}
    lab.kill_tracked()
    assert sleeper.poll() is not None
    assert kept.poll() is None
    assert all(psutil.pid_exists(pid) for pid in sshd_pids.values())
    lab.kill_tracked()  # keep=True survives repeated calls too
    assert kept.poll() is None
    kept.kill()
    kept.wait()


def _assert_gone(suffix: str, pids: list[int], root: Path, user: str) -> None:
    assert not [ns for ns in netlab._netns_list() if ns.startswith(f"ta-{suffix}-")]
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert not root.exists()
    assert not netlab.state_path(suffix).exists()
    assert not list(netlab.NETNS_ETC.glob(f"ta-{suffix}-*"))  # hosts files naming the lab's x.ai


def test_destroy_leaves_nothing(lab: Lab) -> None:
    other = Lab.create()
    try:
        assert other.suffix != lab.suffix
        pids = [
            other.spawn("target", ["sleep", "600"], user=other.user).pid,
            other.spawn("laptop", ["sleep", "600"]).pid,
            *(p.pid for p in other._sshd.values()),
        ]
        done = ssh(other, "target", "true")
        assert done.returncode == 0, done.stderr
    finally:
        other.destroy()
    _assert_gone(other.suffix, pids, other.root, other.user)
    other.destroy()  # idempotent


def test_stale_lab_is_swept(lab: Lab) -> None:
    stale = Lab.create()
    try:
        pid = stale.spawn("target", ["sleep", "600"], user=stale.user).pid
        dead = subprocess.Popen(["true"])
        dead.wait()
        state_file = netlab.state_path(stale.suffix)
        state = json.loads(state_file.read_text())
        state["owner"] = [dead.pid, 0.0]
        state_file.write_text(json.dumps(state))
        assert stale.suffix in netlab.sweep_stale()
        _assert_gone(stale.suffix, [pid], stale.root, stale.user)
        assert lab.suffix not in netlab.sweep_stale()
        assert netlab.state_path(lab.suffix).exists()
    finally:
        stale.destroy()


def test_lab_user_can_traverse_lab_dir(clean_lab: Lab) -> None:
    lab = clean_lab
    keys = lab.root / "authorized_keys" / lab.user
    done = lab.run("target", ["sh", "-c", f"ls {lab.root} >/dev/null && cat {keys}"], user=lab.user)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ssh-ed25519 ")
