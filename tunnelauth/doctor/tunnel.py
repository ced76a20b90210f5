"""The forwarding check: tunnelauth's own throwaway listener on the target's 127.0.0.1,
fetched with httpx through the login's own Forward (a local listener on 127.0.0.1 that
forwards to it, and relays through an exec channel when the target forbids forwarding).
hermes's ports are never touched."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from tunnelauth import ssh
from tunnelauth._asyncssh import asyncssh
from tunnelauth._compat import TIMEOUTS, timeout
from tunnelauth.doctor import commands
from tunnelauth.doctor.model import Outcome, Status
from tunnelauth.doctor.verdicts import listeners
from tunnelauth.errors import ChannelRefused
from tunnelauth.forward import Forward
from tunnelauth.localport import LOOPBACK

STARTUP = 10.0  # for the listener to print its port (python3 starting on a slow host)
FETCH = 10.0
STOP = 5.0  # the listener exits at once when its stdin closes
FIX = "allow it there (AllowTcpForwarding yes or local)"
_GONE: tuple[type[BaseException], ...] = (*TIMEOUTS, *ssh.CHANNEL_ERRORS)


async def check(
    conn: asyncssh.SSHClientConnection, destination: str, avoid: Iterable[int]
) -> Outcome:
    token = secrets.token_urlsafe(18)
    proc = await conn.create_process(commands.listener_command(token, avoid), encoding=None)
    port: int | None = None
    try:
        outcome, port = await _through(conn, proc, destination, token)
    finally:
        stopped = await _stop(proc)
    if not stopped:
        return Outcome(
            Status.FAIL, f"the test listener on {destination} did not stop within {STOP:g} s"
        )
    if port is not None:
        table = await conn.run(commands.socket_table_command(), check=False, encoding="utf-8")
        if port in listeners(str(table.stdout or "")):
            return Outcome(
                Status.FAIL, f"the test listener's port {port} still LISTENs on {destination}"
            )
    return outcome


async def _through(
    conn: asyncssh.SSHClientConnection,
    proc: asyncssh.SSHClientProcess[bytes],
    destination: str,
    token: str,
) -> tuple[Outcome, int | None]:
    async with timeout(STARTUP):
        line = await proc.stdout.readline()
    if not line.strip().isdigit():
        why = await _stderr(proc)  # read to its end: the listener has exited
        commands.check_python(proc.exit_status, why, destination)
        why = why or "it printed no port"
        return Outcome(
            Status.FAIL, f"could not start a test listener on {destination}: {why}"
        ), None
    port = int(line)
    refused: list[ChannelRefused] = []
    relayed: list[str] = []  # the sshd's reason for refusing to forward
    forward = Forward(
        ssh.AsyncsshConnection.over(conn, None, destination),
        port,
        lambda _, error: refused.append(error),
        lambda _, reason: relayed.append(reason),
        local_port=0,
    )
    await forward.start()
    try:
        body, failure = await _fetch(forward.local_port)
    finally:
        await forward.close()
    if relayed:
        # A login still gets through by relaying over an exec channel, but a bastion setup
        # that CI checks is meant to forward: this is the one thing to fix there.
        refusal = f"forwarding refused by the target's sshd ({relayed[0]}): {FIX}"
        if body == token:
            return Outcome(
                Status.FAIL,
                f"{refusal}; until then a login has to relay the callback "
                "through an exec channel (that relay works)",
            ), port
        return Outcome(
            Status.FAIL,
            f"{refusal}; a login's relay through an exec channel failed too: "
            f"{failure or 'not the test listener answered'}",
        ), port
    if refused:
        return Outcome(
            Status.FAIL, f"cannot forward to 127.0.0.1:{port} on {destination}: {refused[0].reason}"
        ), port
    if failure is not None:
        return Outcome(
            Status.FAIL,
            f"the tunnel to 127.0.0.1:{port} on {destination} opened, but "
            f"the test request failed: {failure}",
        ), port
    if body != token:
        return Outcome(
            Status.FAIL,
            f"127.0.0.1:{port} on {destination} answered through the tunnel, "
            "but not with the test listener's token",
        ), port
    return Outcome(
        Status.PASS,
        f"a test listener on {destination}'s 127.0.0.1:{port} answered through "
        "the tunnel; it is gone again",
    ), port


async def _fetch(local_port: int) -> tuple[str | None, str | None]:
    """(the body, None) of a GET through the forward on 127.0.0.1:local_port, or (None, why)."""
    import httpx  # slow to import; only the doctor needs it

    try:
        # Plain http to our own loopback listener: no TLS anywhere, so no CA bundle to load
        # (verify=True would read it: 40 ms of CPU per check, on every target of a fleet).
        async with httpx.AsyncClient(trust_env=False, timeout=FETCH, verify=False) as client:
            response = await client.get(f"http://{LOOPBACK}:{local_port}/tunnelauth-doctor")
        return response.text, None
    except (httpx.HTTPError, OSError) as exc:
        return None, str(exc) or type(exc).__name__


async def _stderr(proc: asyncssh.SSHClientProcess[bytes]) -> str:
    try:
        async with timeout(3):
            text = (await proc.stderr.read()).decode(errors="replace")
            await proc.wait_closed()  # so that exit_status is known
    except _GONE:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def _stop(proc: asyncssh.SSHClientProcess[bytes]) -> bool:
    """Close the listener's stdin (it exits on EOF) and wait for its exit status, which sshd
    sends only once the process is gone."""
    try:
        proc.stdin.write_eof()
    except ssh.CHANNEL_ERRORS:
        pass
    try:
        async with timeout(STOP):
            await proc.wait_closed()
    except TIMEOUTS:
        proc.close()
        return False
    return proc.exit_status is not None or proc.exit_signal is not None
