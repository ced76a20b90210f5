"""Each hop configured by the whole ssh_config, and every prompt, against asyncssh's own server
in process: the evaluation (tokens, Match exec, HostKeyAlias, -F /dev/null), the host-key
policy (certificates, accept-new, HashKnownHosts, RSA-only hosts) and the auth prompts
(passphrase, keyboard-interactive, password, SSH_ASKPASS, no terminal).

OpenSSH's side of the same cases, through a real terminal, is tests/test_compat_lab.py."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from tunnelauth import ssh
from tunnelauth.destination import SshSettings, first_wins, parse_endpoint, parse_option
from tunnelauth.errors import AuthFailed, ConnectFailed, HostKeyError


@dataclass
class Policy:
    """What the in-process server accepts and asks."""

    keys: list[asyncssh.SSHKey] = field(default_factory=list)
    password: str | None = None
    rounds: list[tuple[str, str, list[tuple[str, bool]], list[str]]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


class Server(asyncssh.SSHServer):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.round = 0

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return bool(self.policy.keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.policy.seen.append("key")
        return any(key.public_data == k.public_data for k in self.policy.keys)

    def password_auth_supported(self) -> bool:
        return self.policy.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        self.policy.seen.append("password")
        return password == self.policy.password

    def kbdint_auth_supported(self) -> bool:
        return bool(self.policy.rounds)

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> object:
        self.round = 0
        name, instructions, prompts, _ = self.policy.rounds[0]
        return name, instructions, "", prompts

    def validate_kbdint_response(self, username: str, responses: list[str]) -> object:
        self.policy.seen.append(f"kbdint:{responses}")
        if responses != self.policy.rounds[self.round][3]:
            return False
        self.round += 1
        if self.round == len(self.policy.rounds):
            return True
        name, instructions, prompts, _ = self.policy.rounds[self.round]
        return name, instructions, "", prompts


@dataclass
class Asked:
    answers: list[str | None]
    prompts: list[tuple[str, bool]] = field(default_factory=list)
    told: list[str] = field(default_factory=list)

    def ask(self, prompt: str, secret: bool) -> str | None:
        self.prompts.append((prompt, secret))
        return self.answers.pop(0) if self.answers else None


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    for name in ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    ssh._evaluate.cache_clear()
    return home


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A person at a terminal: the prompts go to ask() (the lab drives a real pty)."""
    monkeypatch.setattr(ssh, "_has_tty", lambda: True)


def key_file(
    directory: Path, name: str, passphrase: str | None = None, alg: str = "ssh-ed25519"
) -> tuple[Path, asyncssh.SSHKey]:
    key = asyncssh.generate_private_key(alg)
    path = directory / name
    key.write_private_key(path, passphrase=passphrase)
    key.write_public_key(str(path) + ".pub")
    path.chmod(0o600)
    return path, key


class Lab:
    def __init__(
        self, tmp_path: Path, policy: Policy, host_keys: list[object] | None = None
    ) -> None:
        self.tmp = tmp_path
        self.policy = policy
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_keys = host_keys or [self.host_key]
        self.known = tmp_path / "known_hosts"
        self.server: asyncssh.SSHAcceptor | None = None
        self.port = 0

    async def __aenter__(self) -> Lab:
        self.server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=self.host_keys,
            server_factory=lambda: Server(self.policy),
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def trust(self, name: str | None = None, key: asyncssh.SSHKey | None = None) -> None:
        name = name or f"[127.0.0.1]:{self.port}"
        line = (key or self.host_key).export_public_key().decode()
        self.known.write_text(f"{name} {line}")

    def config(self, body: str = "", after: str = "", **more: str) -> Path:
        path = self.tmp / "ssh_config"
        lines = {
            "HostName": "127.0.0.1",
            "Port": str(self.port),
            "User": "alice",
            "UserKnownHostsFile": str(self.known),
            "GlobalKnownHostsFile": "/dev/null",
            "IdentityAgent": "none",
            **more,
        }
        path.write_text(
            textwrap.dedent(body)
            + "Host srv\n"
            + "".join(f"  {k} {v}\n" for k, v in lines.items())
            + textwrap.dedent(after)
        )
        return path

    async def connect(
        self,
        config: Path,
        asked: Asked | None = None,
        accept_new: bool = False,
        options: tuple[str, ...] = (),
        identities: tuple[str, ...] = (),
    ) -> ssh.Hop:
        settings = SshSettings(
            config_file=config,
            accept_new=accept_new,
            identities=identities,
            options=first_wins(parse_option(o) for o in options),
        )
        [hop] = ssh.plan(parse_endpoint("srv"), None, settings)
        conn = await ssh.connect_hop(
            hop, None, asked.ask if asked else None, asked.told.append if asked else None
        )
        async with conn:
            assert conn.get_extra_info("username") == hop.user
        return hop


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- config evaluation ---------------------------------------------------------------------------


def test_tokens_in_user_known_hosts_file_are_expanded(tmp_path: Path, home: Path) -> None:
    path, key = key_file(tmp_path, "id")

    async def go() -> ssh.Hop:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.known = home / f"kh_127.0.0.1_{lab.port}"
            lab.trust()
            return await lab.connect(
                lab.config(UserKnownHostsFile="%d/kh_%h_%p", IdentityFile=str(path))
            )

    hop = run(go())
    assert hop.known_hosts[0] == home / f"kh_127.0.0.1_{hop.port}"


def test_match_exec_sees_the_tokens(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")
    marker = tmp_path / "matched"

    async def go() -> ssh.Hop:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust()
            cfg = lab.config(
                after=f'Match exec "echo %h:%p | grep -qx 127.0.0.1:{lab.port} && touch {marker}"\n'
                "  ConnectTimeout 7\n",
                IdentityFile=str(path),
            )
            return await lab.connect(cfg)

    hop = run(go())
    assert hop.connect_timeout == 7 and marker.exists()


def test_dash_f_dev_null_with_options_alone(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")

    async def go() -> ssh.Hop:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust()
            opts = (
                "HostName=127.0.0.1",
                f"Port={lab.port}",
                "User=carol",
                f"UserKnownHostsFile={lab.known}",
                f"IdentityFile={path}",
                "IdentitiesOnly=yes",
                "IdentityAgent=none",
                "User=ignored",
            )
            return await lab.connect(Path("/dev/null"), options=opts)

    assert run(go()).user == "carol"  # the first -o User wins, as with ssh


def test_host_key_alias_names_the_key_without_the_port(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust(name="the-alias")
            await lab.connect(lab.config(HostKeyAlias="the-alias", IdentityFile=str(path)))

    run(go())


def test_a_key_only_in_the_global_known_hosts_file_is_trusted(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust()
            global_file = tmp_path / "global_known_hosts"
            lab.known.rename(global_file)
            await lab.connect(
                lab.config(GlobalKnownHostsFile=str(global_file), IdentityFile=str(path))
            )

    run(go())


def test_certificate_file_kept_apart_from_the_key(tmp_path: Path) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    path, key = key_file(tmp_path, "id")
    cert = ca.generate_user_certificate(key, "alice", principals=["alice"])
    certs = tmp_path / "elsewhere"
    certs.mkdir()
    cert.write_certificate(certs / "alice-cert.pub")

    class CertServer(Server):
        def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            self.policy.seen.append("cert")
            return key.public_data == ca.public_data

    async def go() -> None:
        policy = Policy()
        lab = Lab(tmp_path, policy)
        lab.server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[lab.host_key],
            server_factory=lambda: CertServer(policy),
        )
        lab.port = lab.server.sockets[0].getsockname()[1]
        try:
            lab.trust()
            await lab.connect(
                lab.config(IdentityFile=str(path), CertificateFile=str(certs / "alice-cert.pub"))
            )
        finally:
            await lab.__aexit__()
        assert "cert" in policy.seen

    policy_keys = Server.public_key_auth_supported
    Server.public_key_auth_supported = lambda self: True  # type: ignore[method-assign]
    try:
        run(go())
    finally:
        Server.public_key_auth_supported = policy_keys  # type: ignore[method-assign]


# -- prompts ---------------------------------------------------------------------------------


def test_an_encrypted_key_asks_for_its_passphrase_three_times_at_most(
    tmp_path: Path, terminal: None
) -> None:
    path, key = key_file(tmp_path, "id_enc", passphrase="right horse")
    asked = Asked(["wrong", "also wrong", "right horse"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust()
            await lab.connect(lab.config(IdentityFile=str(path)), asked)

    run(go())
    assert asked.prompts == [(f"Enter passphrase for key '{path}': ", True)] * 3


def test_three_wrong_passphrases_move_on_to_the_next_key(tmp_path: Path, terminal: None) -> None:
    locked, locked_key = key_file(tmp_path, "id_enc", passphrase="pw")
    plain, plain_key = key_file(tmp_path, "id_plain")
    asked = Asked(["a", "b", "c"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[locked_key, plain_key])) as lab:
            lab.trust()
            await lab.connect(
                lab.config(f"Host srv\n  IdentityFile {locked}\n", IdentityFile=str(plain)), asked
            )

    run(go())
    assert len(asked.prompts) == 3


def test_no_passphrase_is_asked_for_a_key_the_server_would_refuse(
    tmp_path: Path, terminal: None
) -> None:
    locked, _ = key_file(tmp_path, "id_enc", passphrase="pw")
    plain, plain_key = key_file(tmp_path, "id_plain")
    asked = Asked([])

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[plain_key])) as lab:
            lab.trust()
            await lab.connect(
                lab.config(f"Host srv\n  IdentityFile {locked}\n", IdentityFile=str(plain)), asked
            )

    run(go())
    assert asked.prompts == []


def test_keyboard_interactive_rounds_are_asked_as_the_server_words_them(
    tmp_path: Path, terminal: None
) -> None:
    rounds = [
        (
            "Duo",
            "Second factor\x1b]52;c;Zm9v\x07",
            [("Passcode: ", False), ("Token name: ", True)],
            ["123456", "phone"],
        ),
        ("", "", [("One more\x1b[2J: ", False)], ["ok"]),
    ]
    asked = Asked(["123456", "phone", "ok"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(rounds=rounds)) as lab:
            lab.trust()
            await lab.connect(lab.config(), asked)

    run(go())
    assert asked.prompts == [
        ("Passcode: ", True),
        ("Token name: ", False),
        ("One more?[2J: ", True),
    ]
    assert any(
        "Duo" in line and "Second factor" in line and "\x1b" not in line and "\x07" not in line
        for line in asked.told
    )


def test_password_prompt_is_sshs(tmp_path: Path, terminal: None) -> None:
    asked = Asked(["nope", "s3cret"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(password="s3cret")) as lab:
            lab.trust()
            await lab.connect(lab.config(), asked)

    run(go())
    assert asked.prompts == [("alice@127.0.0.1's password: ", True)] * 2


def test_without_a_terminal_keyboard_interactive_fails_at_once_naming_hop_and_method(
    tmp_path: Path,
) -> None:
    rounds = [("", "", [("Passcode: ", False)], ["1"])]
    asked = Asked(["never used"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(rounds=rounds)) as lab:
            lab.trust()
            await lab.connect(lab.config(), asked)

    start = time.monotonic()
    with pytest.raises(AuthFailed) as excinfo:
        run(go())
    assert time.monotonic() - start < 5
    assert "srv" in str(excinfo.value) and "keyboard-interactive" in str(excinfo.value)
    assert "no terminal" in str(excinfo.value) and excinfo.value.exit_code == 6
    assert asked.prompts == []


def test_ssh_askpass_forced_answers_a_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key = key_file(tmp_path, "id_enc", passphrase="from askpass")
    script = tmp_path / "askpass"
    log = tmp_path / "askpass.log"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> {log}\necho 'from askpass'\n")
    script.chmod(0o755)
    monkeypatch.setenv("SSH_ASKPASS", str(script))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust()
            await lab.connect(lab.config(IdentityFile=str(path)))

    run(go())
    assert log.read_text() == f"Enter passphrase for key '{path}': \n"


def test_askpass_never_means_no_askpass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_ASKPASS", "/bin/true")
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "never")
    monkeypatch.setenv("DISPLAY", ":0")
    assert ssh._askpass_program() is None
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "prefer")
    assert ssh._askpass_program() == "/bin/true"
    monkeypatch.delenv("DISPLAY")
    assert ssh._askpass_program() is None  # prefer needs a display, as in OpenSSH


# -- host keys -------------------------------------------------------------------------------


def test_accept_new_with_hash_known_hosts_writes_a_hashed_line_and_says_so(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")
    asked = Asked([])

    async def go() -> tuple[int, str]:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            cfg = lab.config(HashKnownHosts="yes", IdentityFile=str(path))
            await lab.connect(cfg, asked, accept_new=True)
            await lab.connect(cfg)  # recorded: no flag needed now
            return lab.port, lab.host_key.export_public_key().decode().split()[1]

    port, blob = run(go())
    [line] = (tmp_path / "known_hosts").read_text().splitlines()
    assert line.startswith("|1|") and line.endswith(blob) and "127.0.0.1" not in line
    assert len(asked.told) == 1 and f"[127.0.0.1]:{port}" in asked.told[0]
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{port}", "-f", str(tmp_path / "known_hosts")],
        capture_output=True,
        text=True,
    )
    assert blob in found.stdout  # OpenSSH reads it


def test_a_host_certificate_on_first_contact_records_the_plain_key(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")
    ca = asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_host_certificate(host_key, "srv", principals=["127.0.0.1"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key]), host_keys=[(host_key, cert)]) as lab:
            lab.host_key = host_key
            cfg = lab.config(IdentityFile=str(path))
            await lab.connect(cfg, accept_new=True)
            await lab.connect(cfg)

    run(go())
    [line] = (tmp_path / "known_hosts").read_text().splitlines()
    assert line.split()[1:] == host_key.export_public_key().decode().split()[:2]


def test_a_host_certificate_from_a_known_ca_is_trusted(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")
    ca = asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_host_certificate(host_key, "srv", principals=["127.0.0.1"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key]), host_keys=[(host_key, cert)]) as lab:
            lab.known.write_text(f"@cert-authority 127.0.0.1 {ca.export_public_key().decode()}")
            await lab.connect(lab.config(IdentityFile=str(path)))

    run(go())
    assert (tmp_path / "known_hosts").read_text().startswith("@cert-authority")  # nothing added


def test_an_rsa_only_host_known_by_its_ed25519_key_is_a_host_key_error(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key]), host_keys=[rsa]) as lab:
            lab.trust(key=asyncssh.generate_private_key("ssh-ed25519"))
            await lab.connect(lab.config(IdentityFile=str(path)))

    with pytest.raises(HostKeyError) as excinfo:
        run(go())
    assert "no host key of the type" in str(excinfo.value) and "ED25519" in str(excinfo.value)
    assert str(tmp_path / "known_hosts") in str(excinfo.value)


def test_a_changed_key_names_the_file_that_holds_the_old_one(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust(key=asyncssh.generate_private_key("ssh-ed25519"))
            global_file = tmp_path / "global_known_hosts"
            lab.known.rename(global_file)
            await lab.connect(
                lab.config(GlobalKnownHostsFile=str(global_file), IdentityFile=str(path)),
                accept_new=True,
            )

    with pytest.raises(HostKeyError) as excinfo:
        run(go())
    assert "CHANGED" in str(excinfo.value) and f"-f {tmp_path / 'global_known_hosts'}" in str(
        excinfo.value
    )


def test_accept_new_then_a_refused_login_is_an_auth_failure(tmp_path: Path) -> None:
    path, _ = key_file(tmp_path, "id")
    _, other = key_file(tmp_path, "other")

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[other])) as lab:
            await lab.connect(lab.config(IdentityFile=str(path)), accept_new=True)

    with pytest.raises(AuthFailed) as excinfo:
        run(go())
    assert excinfo.value.exit_code == 6 and "srv" in str(excinfo.value)


# -- unreachable hops --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["a" * 64 + ".example", "nonexistent.invalid", "fe80::1%nosuchif0"]
)
def test_an_unresolvable_host_is_one_line_exit_5(tmp_path: Path, host: str) -> None:
    settings = SshSettings(config_file=Path("/dev/null"), options={"ConnectTimeout": "5"})
    [hop] = ssh.plan(parse_endpoint(host), None, settings)
    start = time.monotonic()
    with pytest.raises(ConnectFailed) as excinfo:
        run(ssh.connect_hop(hop, None))
    assert time.monotonic() - start < 6
    assert "\n" not in str(excinfo.value) and host in str(excinfo.value)


def test_identity_agent_none_keeps_the_agent_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    if not shutil.which("ssh-agent"):
        pytest.skip("no ssh-agent here")
    path, key = key_file(tmp_path, "id_agent")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        subprocess.run(["ssh-add", "-q", str(path)], env={"SSH_AUTH_SOCK": str(sock)}, check=True)
        path.unlink()
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))

        async def go(agent_line: str) -> None:
            async with Lab(tmp_path, Policy(keys=[key])) as lab:
                lab.trust()
                await lab.connect(lab.config(IdentityAgent=agent_line, IdentitiesOnly="no"))

        run(go("SSH_AUTH_SOCK"))
        with pytest.raises(AuthFailed):
            run(go("none"))
    finally:
        agent.terminate()
        agent.wait(timeout=5)


def test_a_host_that_never_answers_is_one_line_exit_5_within_connect_timeout(
    tmp_path: Path,
) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        settings = SshSettings(
            config_file=Path("/dev/null"), options={"Port": str(port), "ConnectTimeout": "1"}
        )
        [hop] = ssh.plan(parse_endpoint("127.0.0.1"), None, settings)
        start = time.monotonic()
        with pytest.raises(ConnectFailed) as excinfo:
            run(ssh.connect_hop(hop, None))
        assert time.monotonic() - start < 3
        assert "no answer within 1 s" in str(excinfo.value)
    finally:
        silent.close()


def test_remote_command_request_tty_and_set_env_are_not_for_tunnelauths_command(
    tmp_path: Path,
) -> None:
    path, key = key_file(tmp_path, "id")

    def report(process: asyncssh.SSHServerProcess) -> None:
        process.stdout.write(
            f"{process.command}|{process.get_terminal_type()}|{process.env.get('X')}"
        )
        process.exit(0)

    async def go() -> str:
        lab = Lab(tmp_path, Policy(keys=[key]))
        lab.server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[lab.host_key],
            server_factory=lambda: Server(lab.policy),
            process_factory=report,
        )
        lab.port = lab.server.sockets[0].getsockname()[1]
        try:
            lab.trust()
            cfg = lab.config(
                IdentityFile=str(path), RequestTTY="force", RemoteCommand="false", SetEnv="X=1"
            )
            [hop] = ssh.plan(parse_endpoint("srv"), None, SshSettings(config_file=cfg))
            conn = await ssh.connect_hop(hop, None)
            async with conn:
                done = await conn.run("ours", check=True)
                return str(done.stdout)
        finally:
            await lab.__aexit__()

    assert run(go()) == "ours|None|None"


def test_without_a_terminal_an_encrypted_key_is_named_in_the_failure(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id_enc", passphrase="pw")
    asked = Asked(["never used"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust()
            await lab.connect(lab.config(IdentityFile=str(path)), asked)

    with pytest.raises(AuthFailed) as excinfo:
        run(go())
    assert f"no terminal to ask for the passphrase of {path}" in str(excinfo.value)
    assert asked.prompts == []


def test_an_encrypted_key_without_its_pub_is_asked_for_after_the_others(
    tmp_path: Path, terminal: None
) -> None:
    locked, locked_key = key_file(tmp_path, "id_enc_nopub", passphrase="pw")
    Path(f"{locked}.pub").unlink()
    asked = Asked(["pw"])

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[locked_key])) as lab:
            lab.trust()
            await lab.connect(lab.config(IdentityFile=str(locked)), asked)

    run(go())
    assert asked.prompts == [(f"Enter passphrase for key '{locked}': ", True)]


def test_a_revoked_host_key_is_refused_as_revoked(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, "id")

    async def go() -> None:
        async with Lab(tmp_path, Policy(keys=[key])) as lab:
            lab.trust()
            line = lab.host_key.export_public_key().decode()
            lab.known.write_text(lab.known.read_text() + f"\n@revoked * {line}")
            await lab.connect(lab.config(IdentityFile=str(path)), accept_new=True)

    with pytest.raises(HostKeyError) as excinfo:
        run(go())
    assert "revoked" in str(excinfo.value)
