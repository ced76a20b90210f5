"""The shorter handshake against a server that is not OpenSSH: asyncssh's own, in process.

OpenSSH's sshd is covered in the lab (test_handshake_lab.py); here a second implementation
shows the pipelined signed request and the head-start socket are plain SSH, and the server
counts what it was asked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from tunnelauth import preconnect, ssh
from tunnelauth.errors import AuthFailed


class CountingServer(asyncssh.SSHServer):
    def __init__(self, allowed: asyncssh.SSHKey, seen: list[str]) -> None:
        self.allowed = allowed
        self.seen = seen

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Called once for a probe and once more for the signed request that follows it.
        self.seen.append(key.get_fingerprint())
        return key.public_data == self.allowed.public_data


def hop(
    tmp_path: Path,
    port: int,
    keys: list[Path],
    host_key: asyncssh.SSHKey,
    identities_only: bool = True,
) -> ssh.Hop:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    return ssh.Hop(
        name="server",
        host="127.0.0.1",
        port=port,
        user="alice",
        identities=tuple(map(str, keys)),
        identities_only=identities_only,
        known_hosts=(known,),
        accept_new=False,
        proxy_command=None,
        connect_timeout=10,
        keepalive_interval=0,
        keepalive_count_max=3,
    )


def key_file(tmp_path: Path, name: str) -> tuple[Path, asyncssh.SSHKey]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / name
    key.write_private_key(path)
    path.chmod(0o600)
    return path, key


async def login(
    tmp_path: Path,
    keys: list[Path],
    allowed: asyncssh.SSHKey,
    *,
    head_start: bool,
    identities_only: bool = True,
) -> list[str]:
    seen: list[str] = []
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        server_factory=lambda: CountingServer(allowed, seen),
    )
    port = server.sockets[0].getsockname()[1]
    try:
        target = hop(tmp_path, port, keys, host_key, identities_only)
        if head_start:
            preconnect._pending = preconnect._Attempt("127.0.0.1", port)
        conn = await ssh.connect_hop(target, None)
        async with conn:
            assert conn.get_extra_info("username") == "alice"
            assert conn.get_extra_info("client_version") == preconnect.BANNER.decode().strip()
    finally:
        server.close()
        await server.wait_closed()
    return seen


@pytest.mark.parametrize("head_start", [False, True])
def test_the_first_key_is_signed_at_once(
    tmp_path: Path, head_start: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    real = asyncssh.connection.SSHClientConnection.send_packet

    def counted(
        self: asyncssh.SSHClientConnection, pkttype: int, *args: bytes, **kwargs: object
    ) -> None:
        sent.append(pkttype)
        real(self, pkttype, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncssh.connection.SSHClientConnection, "send_packet", counted)
    path, key = key_file(tmp_path, "id_ok")
    seen = asyncio.run(login(tmp_path, [path], key, head_start=head_start))
    assert seen == [key.get_fingerprint()]  # one request: no probe before it
    assert 50 in sent and 2 not in sent  # a USERAUTH_REQUEST, and no MSG_IGNORE padding (AEAD)


def test_a_refused_first_key_falls_back_to_probing_the_next(tmp_path: Path) -> None:
    stranger, other = key_file(tmp_path, "id_stranger")
    path, key = key_file(tmp_path, "id_ok")
    seen = asyncio.run(login(tmp_path, [stranger, path], key, head_start=False))
    # The stranger, signed and refused; then asyncssh's own order: the next key probed, then signed.
    assert seen == [other.get_fingerprint(), key.get_fingerprint(), key.get_fingerprint()]


def test_no_accepted_key_is_refused(tmp_path: Path) -> None:
    stranger, _ = key_file(tmp_path, "id_stranger")
    _, key = key_file(tmp_path, "id_ok")
    with pytest.raises(AuthFailed):
        asyncio.run(login(tmp_path, [stranger], key, head_start=False))


def test_an_agent_key_is_signed_at_once_by_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import subprocess

    if not shutil.which("ssh-agent"):
        pytest.skip("no ssh-agent here")
    path, key = key_file(tmp_path, "id_agent")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.02"])
        subprocess.run(["ssh-add", "-q", str(path)], env={"SSH_AUTH_SOCK": str(sock)}, check=True)
        path.unlink()  # only the agent has it now
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no default keys of this machine's user
        seen = asyncio.run(login(tmp_path, [], key, head_start=False, identities_only=False))
        assert seen == [key.get_fingerprint()]
    finally:
        agent.terminate()
        agent.wait(timeout=5)
