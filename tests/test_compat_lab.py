"""`ssh` and tunnelauth side by side on the SAME ssh config, keys, HOME and terminal: row by
row, both succeed or both fail (tunnelauth then with its documented exit code and a message
that names the problem).

OpenSSH runs as `ssh -F <config> bast true`, tunnelauth as `tunnelauth run -F <config> bast --
true`, both in the laptop namespace against the lab bastion's real sshd, reconfigured per row
(PAM for keyboard-interactive and passwords, a user CA, host certificates, an RSA-only host).
Prompts are answered through a real pseudo-terminal that is the process's controlling
terminal, as a person would type them."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab

OTP = "246810"
PASSPHRASE = "correct horse"
PAM_CHECK = """#!/bin/sh
# pam_exec with expose_authtok: the secret arrives on stdin, NUL-terminated.
secret=$(tr -d '\\000')
[ "$secret" = "{secret}" ]
"""


@dataclass
class Outcome:
    rc: int
    out: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _controlling_tty() -> None:
    # start_new_session (the lab's default) already made a session: take the pty as its terminal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _drive(
    lab: Lab,
    argv: Sequence[str],
    env: dict[str, str],
    answers: Sequence[tuple[str, str]],
    tty: bool,
    timeout: float = 40,
) -> Outcome:
    """Run argv in the laptop namespace; with tty, on a pty that is its controlling terminal,
    typing each answer once its prompt (a regex) has appeared."""
    start = time.monotonic()
    if not tty:
        done = lab.run("laptop", argv, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        return Outcome(done.returncode, done.stdout + done.stderr, time.monotonic() - start)
    master, slave = pty.openpty()
    proc = lab.spawn(
        "laptop",
        argv,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=_controlling_tty,
    )
    os.close(slave)
    out, seen, pending = b"", 0, list(answers)
    try:
        while True:
            if time.monotonic() - start > timeout:
                proc.kill()
                raise AssertionError(
                    f"{argv[0]} still running after {timeout} s:\n{out.decode(errors='replace')}"
                )
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the last holder of the terminal is gone
                    data = b""
                out += data
                while pending and re.search(pending[0][0].encode(), out[seen:]):
                    match = re.search(pending[0][0].encode(), out[seen:])
                    assert match is not None
                    seen += match.end()
                    os.write(master, pending.pop(0)[1].encode() + b"\r")  # the Enter key
                if not data and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
        proc.wait(timeout=10)
    finally:
        os.close(master)
    return Outcome(proc.returncode, out.decode(errors="replace"), time.monotonic() - start)


@dataclass
class Row:
    """One laptop setup: a HOME, a config, keys, and what to run both tools with."""

    lab: Lab
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ssh_dir(self) -> Path:
        return self.home / ".ssh"

    def write(self, name: str, text: str, mode: int = 0o600) -> Path:
        path = self.home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def key(self, name: str, alg: str = "ed25519", passphrase: str = "") -> Path:
        path = self.ssh_dir / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", alg, "-N", passphrase, "-C", name, "-f", str(path)],
            check=True,
        )
        return path

    def config(self, lines: str, before: str = "", after: str = "") -> Path:
        """`Host bast` with the row's lines first (the first value wins), then the base."""
        base = (
            f"  HostName {self.lab.bastion_ip}\n  User {self.lab.user}\n"
            f"  UserKnownHostsFile {self.ssh_dir / 'known_hosts'}\n  IdentitiesOnly yes\n"
            f"  IdentityFile {self.ssh_dir / 'id_ed25519'}\n  IdentityAgent none\n"
            f"  GlobalKnownHostsFile {self.ssh_dir / 'global_known_hosts'}\n"
            f"  StrictHostKeyChecking yes\n"
        )
        return self.write(
            f"config-{secrets.token_hex(3)}", f"{before}Host bast\n{lines}{base}{after}"
        )

    def both(
        self,
        config: Path | None,
        *,
        ssh_opts: Sequence[str] = (),
        ta_opts: Sequence[str] = (),
        answers: Sequence[tuple[str, str]] = (),
        tty: bool = True,
        wrap: Sequence[str] = (),
        alias: str = "bast",
        **env: str,
    ) -> tuple[Outcome, Outcome]:
        full_env = self.lab.laptop_env(HOME=str(self.home), **self.env, **env)
        full_env.pop("DISPLAY", None)
        dash_f = ["-F", str(config)] if config is not None else []
        ssh = _drive(
            self.lab, [*wrap, "ssh", *dash_f, *ssh_opts, alias, "true"], full_env, answers, tty
        )
        ta = _drive(
            self.lab,
            [
                *wrap,
                sys.executable,
                "-m",
                "tunnelauth",
                "run",
                *dash_f,
                *ta_opts,
                alias,
                "--",
                "true",
            ],
            full_env,
            answers,
            tty,
        )
        return ssh, ta

    def agent(self, *keys: Path) -> str:
        sock = self.home / f"agent-{secrets.token_hex(3)}.sock"
        self.lab.spawn("laptop", ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        for key in keys:
            subprocess.run(
                ["ssh-add", "-q", str(key)],
                env={"SSH_AUTH_SOCK": str(sock)},
                check=True,
                capture_output=True,
            )
        return str(sock)


@pytest.fixture
def row(clean_lab: Lab) -> Iterator[Row]:
    lab = clean_lab
    home = lab.root / f"compat-{secrets.token_hex(4)}"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(lab.laptop_home / ".ssh" / "id_ed25519", home / ".ssh" / "id_ed25519")
    shutil.copy(lab.laptop_home / ".ssh" / "id_ed25519.pub", home / ".ssh" / "id_ed25519.pub")
    known = f"{lab.bastion_ip} {_host_pub(lab)}\n"
    (home / ".ssh" / "known_hosts").write_text(known)
    yield Row(lab, home)
    shutil.rmtree(home, ignore_errors=True)


def _host_pub(lab: Lab, name: str = "ssh_host_ed25519_key") -> str:
    return " ".join((lab.root / "bastion" / f"{name}.pub").read_text().split()[:2])


def _authorized(row: Row, *keys: Path) -> str:
    """sshd reads these keys (and the lab's laptop key) for the row; returns the sshd line."""
    directory = row.lab.root / f"authorized-{secrets.token_hex(3)}"
    directory.mkdir(mode=0o755)
    lines = [(row.ssh_dir / "id_ed25519.pub").read_text().strip()]
    lines += [Path(str(k) + ".pub").read_text().strip() for k in keys]
    (directory / row.lab.user).write_text("\n".join(lines) + "\n")
    (directory / row.lab.user).chmod(0o644)
    return f"AuthorizedKeysFile {directory}/%u"


def _pam(row: Row, secret: str) -> str:
    check = row.lab.root / f"pam-check-{secrets.token_hex(3)}"
    check.write_text(PAM_CHECK.format(secret=secret))
    check.chmod(0o755)
    # pam_permit after pam_exec: sshd's pam_setcred needs one module that says yes.
    return (
        f"auth required pam_exec.so expose_authtok quiet {check}\nauth required pam_permit.so\n"
        "account required pam_permit.so\nsession required pam_permit.so\n"
        "password required pam_deny.so\n"
    )


def same(ssh: Outcome, ta: Outcome, *, ok: bool, code: int = 0) -> None:
    assert ssh.ok is ok, f"ssh rc={ssh.rc}:\n{ssh.out}"
    assert ta.ok is ok and (ok or ta.rc == code), f"tunnelauth rc={ta.rc}:\n{ta.out}"
    assert "Traceback" not in ta.out


# -- authentication ------------------------------------------------------------------------------


def test_encrypted_key_prompts_for_its_passphrase(row: Row) -> None:
    key = row.key("id_locked", passphrase=PASSPHRASE)
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    cfg = row.config(f"  IdentityFile {key}\n")
    prompt = re.escape(f"Enter passphrase for key '{key}': ")
    ssh, ta = row.both(cfg, answers=[(prompt, "wrong"), (prompt, PASSPHRASE)])
    same(ssh, ta, ok=True)
    assert PASSPHRASE not in ta.out and ta.out.count("Enter passphrase for key") == 2
    assert "hermes asks" not in ta.out  # ssh's own words, as ssh shows them


def test_encrypted_key_loaded_in_the_agent_needs_no_passphrase(row: Row) -> None:
    plain = row.key("id_agent")
    locked = row.ssh_dir / "id_agent_locked"
    shutil.copy(plain, locked)
    shutil.copy(str(plain) + ".pub", str(locked) + ".pub")
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", PASSPHRASE, "-f", str(locked)], check=True
    )
    sock = row.agent(plain)
    row.lab.start_sshd("bastion", extra=[_authorized(row, plain)])
    cfg = row.config(f"  IdentityFile {locked}\n  IdentityAgent {sock}\n")
    ssh, ta = row.both(cfg)
    same(ssh, ta, ok=True)
    assert "passphrase" not in ssh.out + ta.out


def test_identity_file_pub_with_identities_only_uses_the_agents_private_half(row: Row) -> None:
    key = row.key("id_only_agent")
    sock = row.agent(key)
    key.unlink()  # only the .pub is left on disk
    Path(f"{key}.pub").chmod(0o600)  # ssh would warn about a world-readable "key file"
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    (row.ssh_dir / "id_ed25519").unlink()  # the base's key is authorized too: not here
    cfg = row.config(f"  IdentityFile {key}.pub\n  IdentityAgent SSH_AUTH_SOCK\n")
    ssh, ta = row.both(cfg, SSH_AUTH_SOCK=sock)
    same(ssh, ta, ok=True)


def test_identity_agent_in_the_config(row: Row) -> None:
    key = row.key("id_in_agent")
    sock = row.agent(key)
    key.unlink()
    (row.ssh_dir / "id_ed25519").unlink()
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    cfg = row.config(f"  IdentityAgent {sock}\n  IdentitiesOnly no\n")
    ssh, ta = row.both(cfg)
    same(ssh, ta, ok=True)


def test_certificate_file_against_a_user_ca(row: Row) -> None:
    ca = row.key("user_ca")
    key = row.key("id_certified")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "compat", "-n", row.lab.user, str(key) + ".pub"],
        check=True,
    )
    cert = row.ssh_dir / "certs" / "mine-cert.pub"
    cert.parent.mkdir()
    Path(str(key) + "-cert.pub").rename(cert)
    (row.ssh_dir / "id_ed25519").unlink()
    row.lab.start_sshd("bastion", extra=[f"TrustedUserCAKeys {ca}.pub", _authorized(row)])
    cfg = row.config(f"  IdentityFile {key}\n  CertificateFile {cert}\n")
    ssh, ta = row.both(cfg)
    same(ssh, ta, ok=True)


def test_keyboard_interactive_after_the_key_through_the_terminal(row: Row) -> None:
    row.lab.start_sshd(
        "bastion",
        extra=[
            _authorized(row),
            "KbdInteractiveAuthentication yes",
            "AuthenticationMethods publickey,keyboard-interactive",
        ],
        pam=_pam(row, OTP),
    )
    cfg = row.config("")
    ssh, ta = row.both(cfg, answers=[("Password: ", OTP)])
    same(ssh, ta, ok=True)
    assert OTP not in ta.out


def test_keyboard_interactive_bastion_with_the_openssh_transport(row: Row) -> None:
    """--ssh openssh: the second factor is ssh's own prompt, on the same terminal."""
    row.lab.start_sshd(
        "bastion",
        extra=[
            _authorized(row),
            "KbdInteractiveAuthentication yes",
            "AuthenticationMethods publickey,keyboard-interactive",
        ],
        pam=_pam(row, OTP),
    )
    cfg = row.config("")
    before = (
        row.lab.root.joinpath("bastion", "sshd.log")
        .read_text()
        .count("Accepted keyboard-interactive")
    )
    ssh, ta = row.both(cfg, ta_opts=["--ssh", "openssh"], answers=[("Password: ", OTP)])
    same(ssh, ta, ok=True)
    assert OTP not in ta.out
    after = (
        row.lab.root.joinpath("bastion", "sshd.log")
        .read_text()
        .count("Accepted keyboard-interactive")
    )
    assert after == before + 2  # ssh's, then tunnelauth's own master's


def test_keyboard_interactive_without_a_terminal_fails_at_once_naming_hop_and_method(
    row: Row,
) -> None:
    row.lab.start_sshd(
        "bastion",
        extra=[
            _authorized(row),
            "KbdInteractiveAuthentication yes",
            "AuthenticationMethods publickey,keyboard-interactive",
        ],
        pam=_pam(row, OTP),
    )
    cfg = row.config("")
    ssh, ta = row.both(cfg, tty=False)
    same(ssh, ta, ok=False, code=6)
    assert ta.seconds < 10
    [line] = [ln for ln in ta.out.splitlines() if ln.startswith("tunnelauth: error:")]
    assert "bast" in line and "keyboard-interactive" in line and "accepted the key" in line


def test_password_through_the_terminal(row: Row) -> None:
    (row.ssh_dir / "id_ed25519").unlink()
    row.lab.start_sshd(
        "bastion",
        extra=["PasswordAuthentication yes", "PubkeyAuthentication no"],
        pam=_pam(row, "pa55word"),
    )
    cfg = row.config("")
    prompt = re.escape(f"{row.lab.user}@{row.lab.bastion_ip}'s password: ")
    ssh, ta = row.both(cfg, answers=[(prompt, "pa55word")])
    same(ssh, ta, ok=True)


def test_ssh_askpass_forced_answers_the_passphrase(row: Row) -> None:
    key = row.key("id_askpass", passphrase=PASSPHRASE)
    askpass = row.write("askpass", f"#!/bin/sh\necho '{PASSPHRASE}'\n", 0o755)
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    cfg = row.config(f"  IdentityFile {key}\n")
    (row.ssh_dir / "id_ed25519").unlink()
    ssh, ta = row.both(cfg, tty=False, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")
    same(ssh, ta, ok=True)


# -- configuration -------------------------------------------------------------------------------


def test_host_key_alias(row: Row) -> None:
    row.write(".ssh/known_hosts", f"bastion-alias {_host_pub(row.lab)}\n")
    ssh, ta = row.both(row.config("  HostKeyAlias bastion-alias\n"))
    same(ssh, ta, ok=True)


def test_key_only_in_the_global_known_hosts_file(row: Row) -> None:
    (row.ssh_dir / "known_hosts").rename(row.ssh_dir / "global_known_hosts")
    ssh, ta = row.both(row.config(""))
    same(ssh, ta, ok=True)


def test_tokens_in_user_known_hosts_file(row: Row) -> None:
    (row.ssh_dir / "known_hosts").rename(row.ssh_dir / f"kh-{row.lab.bastion_ip}-22")
    cfg = row.config(f"  UserKnownHostsFile {row.ssh_dir}/kh-%h-%p\n")
    ssh, ta = row.both(cfg)
    same(ssh, ta, ok=True)


def test_match_exec_with_tokens(row: Row) -> None:
    # Only the Match block names the alias the key is known by: both must run it with %h
    # expanded (after the Host block, %h is the HostName).
    row.write(".ssh/known_hosts", f"matched-alias {_host_pub(row.lab)}\n")
    cfg = row.config(
        "",
        after=f'Match exec "echo %h | grep -qx {row.lab.bastion_ip}"\n'
        "  HostKeyAlias matched-alias\n",
    )
    ssh, ta = row.both(cfg)
    same(ssh, ta, ok=True)


def test_dash_f_dev_null_with_options(row: Row) -> None:
    opts = [
        f"-oHostName={row.lab.bastion_ip}",
        f"-oUser={row.lab.user}",
        f"-oUserKnownHostsFile={row.ssh_dir / 'known_hosts'}",
        f"-oIdentityFile={row.ssh_dir / 'id_ed25519'}",
        "-oIdentitiesOnly=yes",
        "-oIdentityAgent=none",
        "-oUser=nobody-wins-second",
    ]
    ssh, ta = row.both(Path("/dev/null"), ssh_opts=opts, ta_opts=opts)
    same(ssh, ta, ok=True)


def test_the_system_config_is_read_without_dash_f(row: Row) -> None:
    system = row.config("")
    wrap = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/ssh/ssh_config && exec "$@"',
        str(system),
    ]
    ssh, ta = row.both(None, wrap=wrap)
    same(ssh, ta, ok=True)
    # the bind mount lived only in the two commands' mount namespaces
    assert "Host bast" not in Path("/etc/ssh/ssh_config").read_text()
    same(*row.both(None), ok=False, code=5)  # without it neither knows "bast"


# -- host keys -----------------------------------------------------------------------------------


def _host_cert(row: Row) -> Path:
    ca = row.key("host_ca")
    d = row.lab.root / "bastion"
    cert = d / "ssh_host_ed25519_key-cert.pub"
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(ca),
            "-I",
            "bastion",
            "-h",
            "-n",
            row.lab.bastion_ip,
            str(d / "ssh_host_ed25519_key.pub"),
        ],
        check=True,
    )
    row.lab.start_sshd("bastion", extra=[f"HostCertificate {cert}"])
    return ca


def test_host_certificate_from_a_known_ca(row: Row) -> None:
    ca = _host_cert(row)
    ca_pub = Path(str(ca) + ".pub").read_text().split()
    row.write(".ssh/known_hosts", f"@cert-authority {row.lab.bastion_ip} {ca_pub[0]} {ca_pub[1]}\n")
    ssh, ta = row.both(row.config(""))
    same(ssh, ta, ok=True)


def test_host_certificate_on_first_contact_records_the_plain_key(row: Row) -> None:
    _host_cert(row)
    known = row.ssh_dir / "known_hosts"
    recorded = {}
    for tool in ("ssh", "tunnelauth"):
        known.write_text("")
        ssh, ta = row.both(
            row.config(""),
            ssh_opts=["-oStrictHostKeyChecking=accept-new"],
            ta_opts=["--accept-new"],
        )
        outcome = ssh if tool == "ssh" else ta
        assert outcome.ok, outcome.out
        recorded[tool] = known.read_text().split()  # the second run of the pair found it known
    assert (
        recorded["ssh"]
        == recorded["tunnelauth"]
        == [row.lab.bastion_ip, *_host_pub(row.lab).split()]
    )


def test_rsa_only_host_while_known_hosts_holds_ed25519(row: Row) -> None:
    rsa = row.lab.root / "bastion" / "ssh_host_rsa_key"
    if not rsa.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True
        )
    row.lab.start_sshd("bastion", host_keys=[rsa])
    ssh, ta = row.both(row.config(""))
    same(ssh, ta, ok=False, code=4)
    assert "host key" in ta.out and "Connection lost" not in ta.out


def test_hash_known_hosts_with_accept_new(row: Row) -> None:
    known = row.ssh_dir / "known_hosts"
    lines = {}
    for tool in ("ssh", "tunnelauth"):
        known.write_text("")
        cfg = row.config("  HashKnownHosts yes\n")
        env = row.lab.laptop_env(HOME=str(row.home))
        if tool == "ssh":
            out = _drive(
                row.lab,
                ["ssh", "-F", str(cfg), "-oStrictHostKeyChecking=accept-new", "bast", "true"],
                env,
                (),
                tty=False,
            )
        else:
            out = _drive(
                row.lab,
                [
                    sys.executable,
                    "-m",
                    "tunnelauth",
                    "run",
                    "-F",
                    str(cfg),
                    "--accept-new",
                    "bast",
                    "--",
                    "true",
                ],
                env,
                (),
                tty=False,
            )
        assert out.ok, out.out
        [line] = known.read_text().splitlines()
        lines[tool] = line
        said = [ln for ln in out.out.splitlines() if "Permanently added" in ln]
        assert len(said) == 1, out.out
    for line in lines.values():
        assert line.startswith("|1|") and row.lab.bastion_ip not in line
        assert line.split()[1:] == _host_pub(row.lab).split()
    found = subprocess.run(
        ["ssh-keygen", "-F", row.lab.bastion_ip, "-f", str(known)], capture_output=True, text=True
    ).stdout
    assert _host_pub(row.lab).split()[1] in found


def test_accept_new_then_a_refused_key_is_an_auth_failure(row: Row) -> None:
    stranger = row.key("id_stranger")
    row.lab.start_sshd("bastion", extra=[_authorized(row)])
    known = row.ssh_dir / "known_hosts"
    known.write_text("")
    (row.ssh_dir / "id_ed25519").unlink()  # only the stranger key is offered
    ssh, ta = row.both(
        row.config(f"  IdentityFile {stranger}\n"),
        tty=False,
        ssh_opts=["-oStrictHostKeyChecking=accept-new"],
        ta_opts=["--accept-new"],
    )
    same(ssh, ta, ok=False, code=6)
    assert "refused authentication" in ta.out and "--accept-new" not in ta.out
    assert _host_pub(row.lab).split()[1] in known.read_text()  # recorded, as ssh does


def test_a_changed_host_key_is_refused_and_the_hint_names_the_file(row: Row) -> None:
    other = row.key("not_the_host_key")
    (row.ssh_dir / "known_hosts").rename(row.ssh_dir / "global_known_hosts")
    row.write(
        ".ssh/global_known_hosts",
        f"{row.lab.bastion_ip} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n",
    )
    ssh, ta = row.both(
        row.config(""), ta_opts=["--accept-new"], ssh_opts=["-oStrictHostKeyChecking=accept-new"]
    )
    same(ssh, ta, ok=False, code=4)
    assert "CHANGED" in ta.out and f"-f {row.ssh_dir / 'global_known_hosts'}" in ta.out


def test_identity_agent_none_keeps_ssh_auth_sock_out(row: Row) -> None:
    key = row.key("id_agent_only")
    sock = row.agent(key)
    key.unlink()
    (row.ssh_dir / "id_ed25519").unlink()
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    cfg = row.config("  IdentityAgent none\n  IdentitiesOnly no\n")
    ssh, ta = row.both(cfg, tty=False, SSH_AUTH_SOCK=sock)
    same(ssh, ta, ok=False, code=6)


def test_password_without_a_terminal_fails_at_once_naming_the_method(row: Row) -> None:
    (row.ssh_dir / "id_ed25519").unlink()
    row.lab.start_sshd(
        "bastion",
        extra=["PasswordAuthentication yes", "PubkeyAuthentication no"],
        pam=_pam(row, "pa55word"),
    )
    ssh, ta = row.both(row.config(""), tty=False)
    same(ssh, ta, ok=False, code=6)
    assert ta.seconds < 10 and "password" in ta.out and "no terminal" in ta.out


def test_encrypted_key_without_a_terminal_names_the_key(row: Row) -> None:
    key = row.key("id_locked_ci", passphrase=PASSPHRASE)
    (row.ssh_dir / "id_ed25519").unlink()
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    ssh, ta = row.both(row.config(f"  IdentityFile {key}\n"), tty=False)
    same(ssh, ta, ok=False, code=6)
    assert f"passphrase of {key}" in ta.out


def test_a_jump_host_asks_its_own_passphrase_and_the_target_uses_its_own_key(row: Row) -> None:
    key = row.key("id_jump_locked", passphrase=PASSPHRASE)
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    target = (
        f"Host tgt\n  HostName {row.lab.target_ip}\n  User {row.lab.user}\n  ProxyJump bast\n"
        f"  UserKnownHostsFile {row.ssh_dir / 'known_hosts'}\n  IdentityFile {row.ssh_dir / 'id_ed25519'}\n"
        "  IdentitiesOnly yes\n  IdentityAgent none\n"
    )
    cfg = row.config(f"  IdentityFile {key}\n", before=target)
    known = row.ssh_dir / "known_hosts"
    known.write_text(
        known.read_text()
        + f"{row.lab.target_ip} "
        + " ".join((row.lab.root / "target" / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        + "\n"
    )
    prompt = re.escape(f"Enter passphrase for key '{key}': ")
    ssh, ta = row.both(cfg, alias="tgt", answers=[(prompt, PASSPHRASE)])
    same(ssh, ta, ok=True)


def test_include_with_a_glob(row: Row) -> None:
    conf_d = row.ssh_dir / "conf.d"
    conf_d.mkdir()
    body = row.config("").read_text()
    (conf_d / "10-bast.conf").write_text(body)
    cfg = row.write("config-include", f"Include {conf_d}/*.conf\n")
    ssh, ta = row.both(cfg)
    same(ssh, ta, ok=True)


def test_ctrl_c_at_a_passphrase_prompt_ends_tunnelauth_at_once(row: Row) -> None:
    key = row.key("id_interrupted", passphrase=PASSPHRASE)
    row.lab.start_sshd("bastion", extra=[_authorized(row, key)])
    cfg = row.config(f"  IdentityFile {key}\n")
    env = row.lab.laptop_env(HOME=str(row.home))
    master, slave = pty.openpty()
    proc = row.lab.spawn(
        "laptop",
        [sys.executable, "-m", "tunnelauth", "run", "-F", str(cfg), "bast", "--", "true"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=_controlling_tty,
    )
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"Enter passphrase for key" not in out:
            assert time.monotonic() < deadline and proc.poll() is None, out
            if select.select([master], [], [], 0.1)[0]:
                out += os.read(master, 65536)
        os.write(master, b"\x03")  # Ctrl-C, as the terminal delivers it
        pressed = time.monotonic()
        proc.wait(timeout=10)
        assert time.monotonic() - pressed < 3
        assert proc.returncode == 130
        attrs = termios.tcgetattr(master)
        assert attrs[3] & termios.ECHO  # echo is back on for the person's shell
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
