"""A doctor fleet against asyncssh's own server, in process (no root, no lab): one target runs
the doctor's commands with this machine's sh and python3, another answers them with nonsense."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh

from tunnelauth import ssh
from tunnelauth.doctor import DoctorRequest, Status, run
from tunnelauth.providers import lookup

# A target whose probe answers in the wrong shape (a list where a mapping belongs): the
# doctor's code meets an error it does not expect.
NONSENSE = 'tunnelauth-doctor {"hermes": [], "tokens": [], "gateway": [], "sockets": []}\n'


class Target(asyncssh.SSHServer):
    def __init__(self, forwarding: bool) -> None:
        self.forwarding = forwarding

    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the lab's sshd tests that, not this file

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        if not self.forwarding:  # as OpenSSH's sshd with AllowTcpForwarding no answers
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "TCP forwarding disabled here"
            )
        return True


async def run_locally(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """The command as sshd would run it: through sh, here, with the same three pipes. (Not
    asyncssh's process.redirect: its server side drops the whole connection when a client
    closes a channel mid-redirect, as the login's relay does.)"""
    local = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        str(process.command),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert local.stdin and local.stdout and local.stderr

    async def feed() -> None:
        assert local.stdin
        try:
            while data := await process.stdin.read(65536):
                local.stdin.write(data)
                await local.stdin.drain()
        except (asyncssh.Error, OSError):
            pass
        local.stdin.close()

    async def copy(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            while data := await reader.read(65536):
                writer.write(data)

    feeding = asyncio.ensure_future(feed())
    try:
        await asyncio.gather(copy(local.stdout, process.stdout), copy(local.stderr, process.stderr))
        status = await local.wait()
        with contextlib.suppress(asyncssh.Error, OSError):
            process.exit(status)
    finally:
        feeding.cancel()
        if local.returncode is None:
            local.kill()
            await local.wait()


async def answer_nonsense(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stdout.write(NONSENSE.encode())
    process.exit(0)
    await process.wait_closed()


@asynccontextmanager
async def target(
    tmp_path: Path, name: str, *, sane: bool, forwarding: bool = True
) -> AsyncIterator[ssh.Hop]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        encoding=None,
        server_factory=lambda: Target(forwarding),
        process_factory=run_locally if sane else answer_nonsense,
    )
    port = server.sockets[0].getsockname()[1]
    known = tmp_path / f"known_hosts_{name}"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    try:
        yield ssh.Hop(
            name=name,
            host="127.0.0.1",
            port=port,
            user=os.environ.get("USER", "root"),
            identities=(),
            identities_only=True,
            known_hosts=(known,),
            accept_new=False,
            proxy_command=None,
            connect_timeout=10,
            keepalive_interval=0,
            keepalive_count_max=3,
        )
    finally:
        server.close()
        await server.wait_closed()


def hermes_here(tmp_path: Path) -> Path:
    script = tmp_path / "hermes"
    script.write_text(f"#!{sys.executable}\nprint('Hermes Agent v0.19.0 (2026.7.20)')\n")
    script.chmod(0o755)
    return script


def test_a_destination_that_raises_fails_alone_and_the_fleet_reports_every_destination(
    tmp_path: Path,
) -> None:
    async def main() -> object:
        async with (
            target(tmp_path, "good", sane=True) as good,
            target(tmp_path, "odd", sane=False) as odd,
        ):
            request = DoctorRequest(
                destinations=(("good", (good,)), ("odd", (odd,))),
                providers=(lookup("spotify"),),
                hermes=str(hermes_here(tmp_path)),
            )
            return await asyncio.wait_for(run(request), 60)

    report = asyncio.run(main())
    good, odd = report.destinations  # type: ignore[attr-defined]
    assert (good.destination, odd.destination) == ("good", "odd")
    shown = {c.name: (c.status, c.detail) for c in good.checks}
    assert shown["forwarding"][0] is Status.PASS, shown
    assert shown["hermes"] == (Status.PASS, f"{tmp_path}/hermes: Hermes Agent v0.19.0 (2026.7.20)")
    assert shown["flow spotify"][0] is Status.PASS
    odd_shown = {c.name: (c.status, c.detail) for c in odd.checks}
    status, detail = odd_shown["hermes"]
    assert status is Status.FAIL and detail.startswith("unexpected error: AttributeError: ")
    assert "\n" not in detail
    # Every later check of the odd target still has its row.
    assert [c.name for c in odd.checks][1:] == [c.name for c in good.checks][1:]
    assert not report.ok  # type: ignore[attr-defined]


def test_a_target_that_forbids_forwarding_is_checked_through_the_logins_relay(
    tmp_path: Path,
) -> None:
    async def main() -> object:
        async with target(tmp_path, "closed", sane=True, forwarding=False) as closed:
            request = DoctorRequest(
                destinations=(("closed", (closed,)),),
                providers=(lookup("spotify"),),
                hermes=str(hermes_here(tmp_path)),
            )
            return await asyncio.wait_for(run(request), 60)

    (closed,) = asyncio.run(main()).destinations  # type: ignore[attr-defined]
    shown = {c.name: (c.status, c.detail) for c in closed.checks}
    status, detail = shown["forwarding"]
    assert status is Status.FAIL
    assert detail.startswith(
        "forwarding refused by the target's sshd (TCP forwarding disabled here): "
        "allow it there (AllowTcpForwarding yes or local); "
    )
    assert detail.endswith(
        "until then a login has to relay the callback through an exec channel (that relay works)"
    )
    assert shown["hermes"][0] is Status.PASS  # the other checks still ran
