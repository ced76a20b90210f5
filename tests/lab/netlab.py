"""A throw-away SSH network: laptop -> bastion -> target network namespaces running real sshd.

Only 198.18.0.0/15 (benchmarking range) is used; no namespace gets a default route.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import psutil

# Not under /tmp: sshd's StrictModes rejects an AuthorizedKeysFile below a world-writable
# directory such as /tmp. /var/lib is root-owned 0755 (traversable by the lab user) and exec.
BASE = Path("/var/lib/tunnelauth-lab")
SSHD = "/usr/sbin/sshd"
LAB_NET = "198.18.0.0/15"
HOSTS = ("laptop", "bastion", "target")
_ROUTE_MARK = BASE / "route-added"
# `ip netns exec NS` bind-mounts every file of /etc/netns/NS over /etc: the lab's hosts files.
NETNS_ETC = Path("/etc/netns")
XAI_HOSTS = ("auth.x.ai", "accounts.x.ai")
_NS_RE = re.compile(r"^ta-([0-9a-f]{6})-(?:laptop|bastion|target)$")
_USER_RE = re.compile(r"^tal([0-9a-f]{6})$")
_TOOLS = ("ip", "ss", "setpriv", "ssh-keygen", "useradd", "userdel", "sysctl")


class LabError(RuntimeError):
    """Building, driving or tearing down the lab failed."""


class LabUnavailable(LabError):
    """This machine cannot host the lab at all (not root, tools missing)."""


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the SSH lab needs root (network namespaces, useradd, sshd)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        return "missing: " + ", ".join(missing)
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        return "no 'sshd' privilege-separation user (openssh-server not installed)"
    if _shadow_field("root").startswith("!"):
        return "root is locked ('!' in /etc/shadow); sshd without PAM refuses locked accounts"
    return None


def sweep_stale() -> list[str]:
    """Destroy labs whose owning process is gone (manual labs excepted); return their suffixes."""
    swept: list[str] = []
    if not BASE.is_dir():
        return swept
    for path in sorted(BASE.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except ValueError:
            state = {}
        if state.get("manual") or _alive(state.get("owner")):
            continue
        try:
            Lab.load(path.stem).destroy()
        except LabError as exc:
            warnings.warn(f"could not sweep stale lab {path.stem}: {exc}", stacklevel=2)
        swept.append(path.stem)
    # Leftovers whose state file is gone (e.g. a crash mid-destroy). A lab writes its state
    # file before creating anything, so "no state file" really means orphaned.
    for ns in _netns_list():
        if (m := _NS_RE.match(ns)) and not state_path(m[1]).exists():
            _terminate(_ns_procs(ns))
            _cmd("ip", "netns", "del", ns, check=False)
            swept.append(m[1])
    for pw in pwd.getpwall():
        m = _USER_RE.match(pw.pw_name)
        if m and pw.pw_dir.startswith(f"{BASE}/") and not state_path(m[1]).exists():
            _terminate(_user_procs(pw.pw_uid))
            _cmd("userdel", "-f", pw.pw_name, check=False)
            swept.append(m[1])
    for d in BASE.glob("lab-*"):
        if not state_path(d.name[4:]).exists():
            shutil.rmtree(d, ignore_errors=True)
    for d in NETNS_ETC.glob("ta-*") if NETNS_ETC.is_dir() else []:
        if (m := _NS_RE.match(d.name)) and not state_path(m[1]).exists():
            shutil.rmtree(d, ignore_errors=True)
    _release_route()
    return sorted(set(swept))


def manual_labs() -> list[Lab]:
    labs = []
    for path in sorted(BASE.glob("*.json")) if BASE.is_dir() else []:
        with suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("manual"):
                labs.append(Lab.load(path.stem))
    return labs


@dataclass
class Lab:
    suffix: str
    root: Path
    laptop_ns: str
    bastion_ns: str
    target_ns: str
    user: str
    user_home: Path
    laptop_home: Path
    manual: bool = False
    bastion_ip = "198.18.1.2"
    target_ip = "198.18.2.2"
    provider_ip = "198.18.3.1"
    xai_ip = "198.18.3.2"  # the lab's auth.x.ai / accounts.x.ai (TLS, lab CA), see _xai_tls
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list, init=False, repr=False)
    _keep: set[int] = field(default_factory=set, init=False, repr=False)
    _sshd: dict[str, subprocess.Popen[Any]] = field(default_factory=dict, init=False, repr=False)
    _sshd_extra: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False)
    _foreign: list[tuple[int, float]] = field(default_factory=list, init=False, repr=False)

    # -- life cycle ----------------------------------------------------------------------------

    @classmethod
    def load(cls, suffix: str, *, manual: bool = False) -> Lab:
        """The lab with this suffix; names derive from the suffix, pids come from its state file."""
        root = BASE / f"lab-{suffix}"
        user = f"tal{suffix}"
        lab = cls(
            suffix,
            root,
            f"ta-{suffix}-laptop",
            f"ta-{suffix}-bastion",
            f"ta-{suffix}-target",
            user,
            root / "home" / user,
            root / "laptop-home",
            manual,
        )
        with suppress(OSError, ValueError):
            state = json.loads(state_path(suffix).read_text())
            lab.manual = bool(state.get("manual"))
            lab._foreign = [(int(pid), float(start)) for pid, start in state.get("pids", [])]
        return lab

    @classmethod
    def create(cls, *, manual: bool = False) -> Lab:
        if reason := unavailable_reason():
            raise LabUnavailable(reason)
        BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(BASE, 0o755)
        sweep_stale()
        suffix = secrets.token_hex(3)
        while state_path(suffix).exists() or f"ta-{suffix}-laptop" in _netns_list():
            suffix = secrets.token_hex(3)
        lab = cls.load(suffix, manual=manual)
        try:
            lab._save_state()
            lab._build()
        except BaseException:
            lab.destroy()
            raise
        return lab

    def destroy(self) -> None:
        """Idempotent: stop every process of the lab and remove everything it created."""
        uid = _uid(self.user)
        victims = [q for p in [*self._procs, *self._sshd.values()] for q in _tree(p.pid)]
        victims += [q for pid, start in self._foreign for q in _tree(pid, start)]
        victims += [q for ns in self.namespaces for q in _ns_procs(ns)]
        if uid is not None:
            victims += _user_procs(uid)
        _terminate(victims)
        for p in [*self._procs, *self._sshd.values()]:
            p.poll()
        self._procs.clear()
        self._sshd.clear()
        self._keep.clear()
        self._foreign.clear()
        existing = _netns_list()
        for ns in self.namespaces:
            if ns in existing:
                _cmd("ip", "netns", "del", ns, check=False)
        if uid is not None:
            _cmd("userdel", "-f", self.user, check=False)
        with suppress(KeyError):
            grp.getgrnam(self.user)  # userdel keeps the group if something else joined it
            _cmd("groupdel", self.user, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        for ns in self.namespaces:
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        state_path(self.suffix).unlink(missing_ok=True)
        _release_route()
        left = [ns for ns in self.namespaces if ns in _netns_list()]
        left += [self.user] if _uid(self.user) is not None else []
        left += [str(self.root)] if self.root.exists() else []
        left += [str(NETNS_ETC / ns) for ns in self.namespaces if (NETNS_ETC / ns).exists()]
        if left:
            raise LabError(f"lab {self.suffix} teardown left behind: {', '.join(left)}")

    def _build(self) -> None:
        self.root.mkdir(mode=0o755)
        os.chmod(self.root, 0o755)
        if not _cmd("ip", "route", "show", LAB_NET).stdout.strip():
            added = _cmd("ip", "route", "add", "unreachable", LAB_NET, check=False)
            if added.returncode == 0:
                _ROUTE_MARK.touch()
        for ns in self.namespaces:
            _cmd("ip", "netns", "add", ns)
            _cmd("ip", "-n", ns, "link", "set", "lo", "up")
            # A new netns may inherit ip_forward from the root netns; the bastion must not route.
            _cmd("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        self._veth("laptop", "198.18.1.1/24", "bastion", f"{self.bastion_ip}/24", "lb")
        self._veth("bastion", "198.18.2.1/24", "target", f"{self.target_ip}/24", "bt")
        _cmd("ip", "-n", self.bastion_ns, "addr", "add", f"{self.provider_ip}/32", "dev", "lo")
        _cmd(
            "ip",
            "-n",
            self.laptop_ns,
            "route",
            "add",
            f"{self.provider_ip}/32",
            "via",
            self.bastion_ip,
        )
        _cmd(
            "ip",
            "-n",
            self.target_ns,
            "route",
            "add",
            f"{self.provider_ip}/32",
            "via",
            "198.18.2.1",
        )
        self._xai_tls()
        (self.root / "home").mkdir(mode=0o755)
        # '*' rather than useradd's default '!': sshd without PAM refuses '!'-locked accounts.
        _cmd(
            "useradd", "-m", "-d", str(self.user_home), "-s", "/bin/sh", "-U", "-p", "*", self.user
        )
        os.chmod(self.user_home, 0o755)
        self._make_keys()
        for host in ("bastion", "target"):
            self.start_sshd(host)

    def _veth(self, a: str, a_addr: str, b: str, b_addr: str, tag: str) -> None:
        dev_a, dev_b = f"ta{self.suffix}{tag}", f"ta{self.suffix}{tag[::-1]}"
        _cmd(
            "ip",
            "link",
            "add",
            dev_a,
            "netns",
            self.ns(a),
            "type",
            "veth",
            "peer",
            "name",
            dev_b,
            "netns",
            self.ns(b),
        )
        for host, dev, addr in ((a, dev_a, a_addr), (b, dev_b, b_addr)):
            _cmd("ip", "-n", self.ns(host), "addr", "add", addr, "dev", dev)
            _cmd("ip", "-n", self.ns(host), "link", "set", dev, "up")

    def _make_keys(self) -> None:
        ssh_dir = self.laptop_home / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True)
        key = ssh_dir / "id_ed25519"
        pub = _keygen(key, "tunnelauth-lab-laptop")
        keys_dir = self.root / "authorized_keys"
        keys_dir.mkdir(mode=0o755)
        for user in ("root", self.user):
            (keys_dir / user).write_text(pub + "\n")
            os.chmod(keys_dir / user, 0o644)
        known = []
        for host, ip in (("bastion", self.bastion_ip), ("target", self.target_ip)):
            (self.root / host).mkdir(mode=0o755)
            known.append(f"{ip} {_keygen(self.root / host / 'ssh_host_ed25519_key', host)}")
        (ssh_dir / "known_hosts").write_text("\n".join(known) + "\n")
        # OpenSSH's ssh locates ~ through the passwd entry, not $HOME, so the known_hosts
        # path is spelled out; StrictHostKeyChecking stops the ProxyJump hop from prompting.
        common = (
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        )
        (ssh_dir / "config").write_text(
            f"Host bastion\n  HostName {self.bastion_ip}\n  User {self.user}\n{common}\n"
            f"Host target\n  HostName {self.target_ip}\n  User {self.user}\n"
            f"  ProxyJump bastion\n{common}"
        )

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def tls_ca(self) -> Path:
        """The lab CA (PEM, world-readable): SSL_CERT_FILE for what must trust the lab's x.ai."""
        return self.tls_dir / "ca.pem"

    def _xai_tls(self) -> None:
        """auth.x.ai and accounts.x.ai inside the lab: a TLS address on the bastion, routed from
        the laptop and the target, named there by /etc/netns/NS/hosts (the real x.ai stays
        unroutable), and a per-lab CA with a server certificate for those names. Runs before the
        sshds start, so their sessions inherit the hosts file."""
        _cmd("ip", "-n", self.bastion_ns, "addr", "add", f"{self.xai_ip}/32", "dev", "lo")
        _cmd(
            "ip", "-n", self.laptop_ns, "route", "add", f"{self.xai_ip}/32", "via", self.bastion_ip
        )
        _cmd("ip", "-n", self.target_ns, "route", "add", f"{self.xai_ip}/32", "via", "198.18.2.1")
        base = Path("/etc/hosts").read_text(errors="replace") if Path("/etc/hosts").exists() else ""
        base = "\n".join(
            line for line in base.splitlines() if not set(line.split()[1:]) & set(XAI_HOSTS)
        )
        for host in ("laptop", "target"):
            d = NETNS_ETC / self.ns(host)
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
            (d / "hosts").write_text(f"{base}\n{self.xai_ip} {' '.join(XAI_HOSTS)}\n")
            os.chmod(d / "hosts", 0o644)
        self.tls_dir.mkdir(mode=0o755)
        _lab_ca(self.tls_dir, XAI_HOSTS)

    # -- sshd ----------------------------------------------------------------------------------

    def start_sshd(
        self,
        host: str,
        extra: Sequence[str] = (),
        *,
        pam: str | None = None,
        host_keys: Sequence[Path] | None = None,
    ) -> None:
        """(Re)start host's sshd; `extra` lines come first so they win over the defaults.

        `pam`: the text of a PAM service for this sshd alone (sshd always asks for "sshd"; it
        is bind-mounted over /etc/pam.d/sshd in a mount namespace of its own, the machine's
        file untouched) and UsePAM yes. `host_keys`: instead of the lab's ed25519 host key."""
        ip = {"bastion": self.bastion_ip, "target": self.target_ip}[host]
        self.stop_sshd(host)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        d = self.root / host
        extra = tuple(extra)
        # A Match block swallows every line after it, so it must go last.
        starts = [i for i, line in enumerate(extra) if line.lower().split()[:1] == ["match"]]
        cut = starts[0] if starts else len(extra)
        lines = [
            *extra[:cut],
            f"ListenAddress {ip}:22",
            *(f"HostKey {k}" for k in (host_keys or [d / "ssh_host_ed25519_key"])),
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}/%u",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            f"UsePAM {'yes' if pam is not None else 'no'}",
            "ClientAliveInterval 2",
            "ClientAliveCountMax 3",
            "LogLevel VERBOSE",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            *(["PerSourcePenalties no"] if _openssh_version() >= (9, 8) else []),
            *extra[cut:],
        ]
        cfg = d / "sshd_config"
        cfg.write_text("\n".join(lines) + "\n")
        _cmd(SSHD, "-t", "-f", str(cfg))
        log = d / "sshd.log"
        argv = [SSHD, "-D", "-e", "-E", str(log), "-f", str(cfg)]
        if pam is not None:
            service = d / "pam-sshd"
            service.write_text(pam)
            # unshare execs sh, which execs sshd: one pid, stopped like any other sshd.
            argv = [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount --bind "$0" /etc/pam.d/sshd && exec "$@"',
                str(service),
                *argv,
            ]
        proc = self._start(host, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        custom = ("# custom",) if pam is not None or host_keys else ()
        self._sshd[host], self._sshd_extra[host] = proc, extra + custom
        self._save_state()
        deadline = time.monotonic() + 10
        while 22 not in self.listening_ports(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise LabError(f"sshd in {host} not listening (exit={proc.poll()}):\n{tail}")
            time.sleep(0.05)

    def stop_sshd(self, host: str, *, sessions: bool = True) -> None:
        """Stop host's listening sshd and, unless sessions=False, its per-connection sshd
        processes (user processes under them are left to notice the dropped connection)."""
        proc = self._sshd.pop(host, None)
        if proc is None:
            return
        tree = _tree(proc.pid)
        _terminate([q for q in tree if q.pid == proc.pid or (sessions and _is_sshd(q))])
        proc.poll()
        self._save_state()

    def reset_sshd(self) -> None:
        """Bring both sshds back to the default config if a test stopped or reconfigured them."""
        for host in ("bastion", "target"):
            proc = self._sshd.get(host)
            if proc is None or proc.poll() is not None or self._sshd_extra.get(host):
                self.start_sshd(host)

    # -- processes -----------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        if host not in HOSTS:
            raise ValueError(f"unknown lab host {host!r}; expected one of {HOSTS}")
        return self.namespaces[HOSTS.index(host)]

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.laptop_ns, self.bastion_ns, self.target_ns)

    def laptop_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
        env["HOME"] = str(self.laptop_home)
        env.update(extra)
        return env

    def ns_argv(self, host: str, argv: Sequence[str], user: str | None = None) -> list[str]:
        out = ["ip", "netns", "exec", self.ns(host)]
        if user is not None:
            pw = pwd.getpwnam(user)
            out += [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--init-groups",
                "env",
                f"HOME={pw.pw_dir}",
                f"USER={user}",
                f"LOGNAME={user}",
            ]
        return out + [str(a) for a in argv]

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        keep: bool = False,
        **popen_kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start argv inside host's namespace. Killed by kill_tracked() unless keep=True;
        always killed by destroy(). With user, HOME is that user's home and cwd defaults to it."""
        if user is not None:
            popen_kw.setdefault("cwd", pwd.getpwnam(user).pw_dir)
        proc = self._start(host, self.ns_argv(host, argv, user), env=env, **popen_kw)
        self._procs.append(proc)
        if keep:
            self._keep.add(proc.pid)
        self._save_state()
        return proc

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = 60,
        input: str | bytes | None = None,
        check: bool = False,
        **kw: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """Like subprocess.run(capture_output=True, text=True); the whole tree dies on timeout."""
        kw.setdefault("text", True)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        if input is not None:
            kw["stdin"] = subprocess.PIPE
        proc = self.spawn(host, argv, user=user, env=env, **kw)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            _terminate(_tree(proc.pid))
            proc.poll()
            raise
        finally:
            if proc.returncode is not None:
                self._procs.remove(proc)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check:
            done.check_returncode()
        return done

    def kill_tracked(self) -> None:
        """Kill what tests left running: spawned trees, anything else inside the namespaces and
        anything of the lab user; spare the sshd listeners and keep=True trees."""
        spared = {p.pid for p in self._sshd.values()}
        spared |= {q.pid for p in self._procs if p.pid in self._keep for q in _tree(p.pid)}
        victims = [q for p in self._procs for q in _tree(p.pid)]
        victims += [q for ns in self.namespaces for q in _ns_procs(ns)]
        if (uid := _uid(self.user)) is not None:
            victims += _user_procs(uid)
        _terminate(q for q in victims if q.pid not in spared)
        for p in self._procs:
            p.poll()
        self._procs = [p for p in self._procs if p.pid in self._keep and p.returncode is None]
        self._keep &= {p.pid for p in self._procs}
        self._save_state()

    def _start(self, host: str, argv: list[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        if argv[:3] != ["ip", "netns", "exec"]:
            argv = self.ns_argv(host, argv)
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        # Own session: a terminal's Ctrl-C reaches only pytest, which then tears down in order.
        popen_kw.setdefault("start_new_session", True)
        return subprocess.Popen(argv, **popen_kw)

    # -- inspection ----------------------------------------------------------------------------

    def target_processes(self, needle: str) -> list[psutil.Process]:
        """Processes in the target namespace whose command line contains needle."""
        ns_ino = os.stat(f"/run/netns/{self.target_ns}").st_ino
        found = []
        for p in psutil.process_iter(["cmdline"]):
            with suppress(OSError, psutil.Error):
                if (
                    needle in " ".join(p.info["cmdline"] or ())
                    and os.stat(f"/proc/{p.pid}/ns/net").st_ino == ns_ino
                ):
                    found.append(p)
        return found

    def listening_ports(self, host: str) -> set[int]:
        out = _cmd("ip", "netns", "exec", self.ns(host), "ss", "-Hltn").stdout
        return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}

    # -- state file ----------------------------------------------------------------------------

    def _save_state(self) -> None:
        me = psutil.Process()
        pids = []
        for p in [*self._procs, *self._sshd.values()]:
            with suppress(psutil.Error):
                pids.append((p.pid, psutil.Process(p.pid).create_time()))
        state = {
            "suffix": self.suffix,
            "owner": (me.pid, me.create_time()),
            "manual": self.manual,
            "root": str(self.root),
            "user": self.user,
            "namespaces": self.namespaces,
            "pids": pids,
        }
        path = state_path(self.suffix)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


# -- helpers -----------------------------------------------------------------------------------


def _cmd(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and done.returncode:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def state_path(suffix: str) -> Path:
    return BASE / f"{suffix}.json"


def _alive(owner: Any) -> bool:
    try:
        pid, start = owner
        return abs(psutil.Process(int(pid)).create_time() - float(start)) < 1
    except (TypeError, ValueError, psutil.Error):
        return False


def _release_route() -> None:
    """Drop the safety route once the last lab is gone, and only if a lab added it."""
    if _ROUTE_MARK.exists() and not any(BASE.glob("*.json")):
        _cmd("ip", "route", "del", "unreachable", LAB_NET, check=False)
        _ROUTE_MARK.unlink(missing_ok=True)
    if not any(BASE.glob("*.json")):
        with suppress(OSError):
            NETNS_ETC.rmdir()  # only if empty: other tools may keep files there


def _netns_list() -> set[str]:
    out = _cmd("ip", "netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _shadow_field(user: str) -> str:
    with suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == user:
                return rest.split(":", 1)[0]
    return ""


@cache
def _openssh_version() -> tuple[int, int]:
    # Older sshd reject -V but still print the version in their usage text.
    banner = subprocess.run([SSHD, "-V"], capture_output=True, text=True).stderr
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", banner)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _lab_ca(d: Path, names: Sequence[str]) -> None:
    """d/ca.pem (a CA valid for a day) and d/server.pem + d/server.key (0600) for names."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=not ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"tunnelauth lab CA {d.parent.name}")]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    os.chmod(d / "ca.pem", 0o644)
    (d / "server.pem").write_bytes(cert.public_bytes(pem))
    fd = os.open(d / "server.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )


def _keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key without passphrase; return 'type base64' of its public half."""
    _cmd("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _tree(pid: int, start: float | None = None) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        if start is not None and abs(p.create_time() - start) >= 1:
            return []  # pid was reused by an unrelated process
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def _ns_procs(ns: str) -> list[psutil.Process]:
    out = _cmd("ip", "netns", "pids", ns, check=False).stdout
    return [p for pid in out.split() if (p := _proc(int(pid))) is not None]


def _user_procs(uid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["uids"]):
        uids = p.info["uids"]
        if uids and uid in (uids.real, uids.effective):
            found.append(p)
    return found


def _is_sshd(p: psutil.Process) -> bool:
    with suppress(psutil.Error):
        return p.name().startswith("sshd")
    return False


def _terminate(procs: Iterable[psutil.Process], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace` seconds."""
    me = os.getpid()
    targets = [p for p in {p.pid: p for p in procs}.values() if p.pid != me]
    for sig_sent in ("terminate", "kill"):
        for p in targets:
            with suppress(psutil.Error):
                getattr(p, sig_sent)()
        deadline = time.monotonic() + grace
        while (targets := [p for p in targets if _running(p)]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not targets:
            return


def _running(p: psutil.Process) -> bool:
    # Reap it if it is our child; zombies of other parents count as gone (PID 1 may not reap).
    with suppress(ChildProcessError):
        os.waitpid(p.pid, os.WNOHANG)
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
