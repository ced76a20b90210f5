"""The checks of one destination, in order, each timed; a failure that makes later checks
meaningless turns them into "skip" with the reason."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from tunnelauth import openssh, ssh
from tunnelauth._asyncssh import asyncssh
from tunnelauth._compat import TIMEOUTS, timeout
from tunnelauth.doctor import commands, tunnel, verdicts, versions
from tunnelauth.doctor.model import Check, DestinationReport, Outcome, Status
from tunnelauth.errors import AuthFailed, LocalPortBusy, RemoteSetupError, TunnelauthError
from tunnelauth.localport import ensure_free
from tunnelauth.providers import PROVIDERS, Flow, Provider

DEFAULT_CONCURRENCY = 16
PROBE_MODES = ("hermes", "tokens", "gateway", "sockets")
# Seconds per check: finding hermes as another user may take a few sudo calls, and
# `hermes --version` a few seconds on a slow host.
LIMITS = {"forwarding": 30.0, "hermes": 90.0, "port": 15.0, "token dir": 40.0, "gateway": 40.0}
DEFAULT_LIMIT = 30.0
# What a remote probe may fail with, short of a bug.
PROBE_FAILURES: tuple[type[BaseException], ...] = (TunnelauthError, *ssh.CHANNEL_ERRORS)


@dataclass(frozen=True)
class DoctorRequest:
    destinations: tuple[tuple[str, tuple[ssh.Hop, ...]], ...]  # as typed, and its hops
    providers: tuple[Provider, ...] = PROVIDERS
    provider_given: bool = False  # --provider: its problems fail, others' only warn
    hermes: str = "hermes"
    remote_env: Mapping[str, str] = field(default_factory=dict)
    as_user: str | None = None
    strict: bool = False
    concurrency: int = DEFAULT_CONCURRENCY
    transports: tuple[str, ...] = ("asyncssh",)  # --ssh: asyncssh, openssh, or both
    targets: Mapping[str, openssh.Target] = field(default_factory=dict)  # per destination, for ssh

    @property
    def loopback(self) -> tuple[Provider, ...]:
        return tuple(p for p in self.providers if p.loopback and p.port)


def laptop_ports(request: DoctorRequest) -> dict[int, str | None]:
    """Which callback ports are taken on this machine, and by whom (None: free). Asked once
    for the whole fleet, before connecting anything, as a login asks before it connects."""
    busy: dict[int, str | None] = {}
    for provider in request.loopback:
        assert provider.port is not None
        try:
            ensure_free(provider.port)
            busy[provider.port] = None
        except LocalPortBusy as exc:
            busy[provider.port] = exc.message
    return busy


def unexpected(exc: BaseException) -> str:
    return (
        f"unexpected error: {type(exc).__name__}: {exc}"
        if str(exc)
        else f"unexpected error: {exc!r}"
    )


class Destination:
    def __init__(
        self,
        request: DoctorRequest,
        name: str,
        hops: tuple[ssh.Hop, ...],
        pool: ssh.SharedConnections,
        laptop_busy: Mapping[int, str | None],
    ) -> None:
        self.request = request
        self.name = name
        self.hops = hops
        self.pool = pool
        self.laptop_busy = laptop_busy
        self.checks: list[Check] = []
        self.conn: asyncssh.SSHClientConnection | None = None
        self.no_python = False
        self.no_version = "the hermes check failed"  # why the flows cannot be told
        self.listeners: dict[int, set[str]] | None = None  # the target's; None: unknown
        self._tables_read = False
        self._prefetch: asyncio.Future[None] | None = None
        self._answers: dict[str, object] | None = None  # the probe's, for every mode at once
        self._probe_error: BaseException | None = None
        self._auth_failed = False  # a hop refused asyncssh's authentication

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> DestinationReport:
        later = self._later_names()
        wanted = self.request.transports
        if "asyncssh" not in wanted:
            await self._timed("ssh (openssh)", self._openssh_login(), None)
            self._skip(later, "the target's checks run over asyncssh (--ssh asyncssh or both)")
            return self.report()
        connected = await self._connect()
        if "openssh" in wanted or self._auth_failed:
            # Asked for, or the way to tell whether this destination needs --ssh openssh.
            by_ssh = await self._timed("ssh (openssh)", self._openssh_login(), None)
            self.checks.append(self._transport(connected, by_ssh.status is Status.PASS))
        if not connected:
            self._skip(later, f"no connection to {self.name}")
            return self.report()
        # The probe and the forwarding check need nothing of each other: the probe's python3
        # (and hermes --version, if it must run) work while the test listener is fetched.
        self._prefetch = asyncio.ensure_future(self._probe_all())
        try:
            return await self._checks()
        finally:
            if not self._prefetch.done():
                self._prefetch.cancel()
            await asyncio.gather(self._prefetch, return_exceptions=True)

    async def _checks(self) -> DestinationReport:
        avoid = [p.port for p in PROVIDERS if p.port]  # the listener never takes a hermes port
        await self._timed(
            "forwarding",
            self._remote(tunnel.check(self._conn, self.name, avoid)),
            LIMITS["forwarding"],
        )
        found = await self._timed("hermes", self._remote(self._hermes()), LIMITS["hermes"])
        version = found.data if found.status is Status.PASS else None
        for provider in self.request.providers:
            name = f"flow {provider.name}"
            if version is None:
                self._skip([name], found.detail if found.status is Status.SKIP else self.no_version)
            else:
                await self._timed(name, self._flow(provider, version))
        for provider in self.request.loopback:
            flow = versions.flow_for(provider, version) if version else None
            await self._timed(
                f"port {provider.port} ({provider.name})",
                self._port(provider, flow),
                LIMITS["port"],
            )
        tokens = await self._timed("token dir", self._remote(self._tokens()), LIMITS["token dir"])
        user = (
            tokens.data
            if isinstance(tokens.data, str)
            else (self.request.as_user or self.hops[-1].user)
        )
        await self._timed("gateway", self._remote(self._gateway(user)), LIMITS["gateway"])
        return self.report()

    def report(self) -> DestinationReport:
        return DestinationReport(self.name, tuple(self.checks))

    def _later_names(self) -> list[str]:
        names = ["forwarding", "hermes", *(f"flow {p.name}" for p in self.request.providers)]
        names += [f"port {p.port} ({p.name})" for p in self.request.loopback]
        return [*names, "token dir", "gateway"]

    async def _connect(self) -> bool:
        for i, hop in enumerate(self.hops):
            # No limit of ours: every hop has its ConnectTimeout.
            outcome = await self._timed(f"ssh {hop}", self._hop(self.hops[: i + 1]), None)
            if outcome.status is Status.FAIL:
                self._skip([f"ssh {later}" for later in self.hops[i + 1 :]], f"{hop} failed")
                return False
        return True

    async def _hop(self, chain: tuple[ssh.Hop, ...]) -> Outcome:
        try:
            self.conn, shared = await self.pool.get(chain)
        except AuthFailed:
            self._auth_failed = True
            raise
        how = " (connection shared with other destinations)" if shared else ""
        return Outcome(Status.PASS, f"authenticated as {chain[-1].user}{how}")

    async def _openssh_login(self) -> Outcome:
        """Can this machine's own ssh log in, without asking anyone (BatchMode)?"""
        target = self.request.targets.get(self.name)
        if target is None or not target.ssh:
            return Outcome(Status.SKIP, "no ssh command on this machine")
        error = await openssh.batch_login(target)
        if error is None:
            return Outcome(Status.PASS, "this machine's ssh logs in (BatchMode, no prompt)")
        return Outcome(Status.FAIL, error.message)

    def _transport(self, by_asyncssh: bool, by_ssh: bool) -> Check:
        """Which transport a login to this destination needs."""
        if by_asyncssh:
            return Check(
                "transport",
                Status.PASS,
                "asyncssh (the default) works" + ("; --ssh openssh works too" if by_ssh else ""),
                0.0,
            )
        if by_ssh:
            return Check(
                "transport",
                Status.WARN,
                "asyncssh cannot log in here but this machine's ssh can: log in with --ssh openssh",
                0.0,
            )
        return Check(
            "transport", Status.FAIL, "neither asyncssh nor this machine's ssh can log in", 0.0
        )

    @property
    def _conn(self) -> asyncssh.SSHClientConnection:
        assert self.conn is not None
        return self.conn

    async def _timed(
        self, name: str, work: Coroutine[Any, Any, Outcome], limit: float | None = DEFAULT_LIMIT
    ) -> Outcome:
        if self.conn is not None and self.conn.is_closed():
            work.close()
            outcome = Outcome(Status.SKIP, f"lost the connection to {self.name}")
            self.checks.append(Check(name, outcome.status, outcome.detail, 0.0))
            return outcome
        start = time.monotonic()
        try:
            async with timeout(limit):
                outcome = await work
        except TIMEOUTS:
            outcome = Outcome(Status.FAIL, f"no answer from {self.name} within {limit or 0:g} s")
        except TunnelauthError as exc:
            outcome = Outcome(Status.FAIL, str(exc))
        except ssh.CHANNEL_ERRORS as exc:
            outcome = Outcome(Status.FAIL, self._lost(exc))
        # A bug, or a target answering nonsense: this check fails, not the whole run.
        except Exception as exc:  # noqa: BLE001
            outcome = Outcome(Status.FAIL, unexpected(exc))
        detail = " ".join(outcome.detail.split())  # one line, whatever a remote error held
        self.checks.append(Check(name, outcome.status, detail, time.monotonic() - start))
        return outcome

    def _skip(self, names: list[str], why: str) -> None:
        self.checks.extend(Check(name, Status.SKIP, why, 0.0) for name in names)

    def _lost(self, exc: BaseException) -> str:
        reason = ssh.error_reason(exc)
        if self.conn is not None and self.conn.is_closed():
            return f"lost the connection to {self.name}: {reason}"
        return f"{self.name}: {reason}"

    # -- remote probes -----------------------------------------------------------------------

    async def _remote(self, work: Coroutine[Any, Any, Outcome]) -> Outcome:
        """Checks that need the target's python3 are skipped once it is known to be missing."""
        if self.no_python:
            work.close()
            return Outcome(Status.SKIP, f"no python3 on {self.name}")
        try:
            return await work
        except commands.NoPython:
            self.no_python = True
            raise

    async def _probe_all(self) -> None:
        req = self.request
        try:
            self._answers = await self._run_probe(
                hermes=req.hermes,
                as_user=req.as_user,
                env=dict(req.remote_env),
                hermes_home=req.remote_env.get("HERMES_HOME"),
            )
        except PROBE_FAILURES as exc:
            self._probe_error = exc

    async def _probe(self, mode: str) -> Any:
        """The probe's answer for `mode`. ONE probe run answers hermes, tokens, gateway and
        sockets: on a fleet every process started on every target counts. It starts as soon
        as the destination is connected; the first check to need it waits for the rest of
        it (and that wait is its time), the others read its answer."""
        assert self._prefetch is not None
        await asyncio.shield(
            self._prefetch
        )  # a check's time limit must not cancel it for the others
        if self._probe_error is not None:
            raise self._probe_error
        assert self._answers is not None
        return self._answers[mode]

    async def _run_probe(self, **config: object) -> dict[str, object]:
        # The configuration goes in as the first line on the probe's stdin (never in argv: it
        # holds --remote-env values), which then stays open. Not conn.run(): that closes it at
        # once, and the probe takes its closing as "tunnelauth is gone" (Ctrl-C, a timeout).
        proc = await self._conn.create_process(commands.probe_command(), encoding="utf-8")
        try:
            with contextlib.suppress(*ssh.CHANNEL_ERRORS):  # gone already (no python3): it says why
                proc.stdin.write(commands.probe_config_line(PROBE_MODES, config))
            out, errors = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
            await proc.wait_closed()
        finally:
            proc.close()
        answer = commands.probe_answer(out)
        if answer is None:
            err = [line.strip() for line in errors.splitlines() if line.strip()]
            commands.check_python(proc.exit_status, err[-1] if err else "", self.name)
            raise RemoteSetupError(
                f"the doctor's probe failed on {self.name}: "
                f"{err[-1] if err else f'exit status {proc.exit_status}'}"
            )
        return answer

    async def _hermes(self) -> Outcome:
        req = self.request
        info = await self._probe("hermes")
        if info.get("sudo"):
            self.no_version = f"hermes cannot run as {req.as_user}"
            return Outcome(
                Status.FAIL,
                f"cannot run hermes as {req.as_user} on {self.name} through "
                f"`sudo -n`: {info['sudo']}",
            )
        if info.get("missing"):
            looked = ", ".join(map(str, info["missing"]))
            self.no_version = "hermes was not found"
            return Outcome(
                Status.FAIL,
                f"{req.hermes} was not found on {self.name}; looked in {looked} "
                "(install hermes-agent there, or pass --hermes /path/to/hermes)",
            )
        path, first = info.get("path"), str(info.get("first_line") or "")
        if info.get("rc") != 0:
            why = info.get("error") or first or "no message"
            self.no_version = "hermes --version failed"
            return Outcome(
                Status.FAIL,
                f"{path} --version failed on {self.name} (exit status {info.get('rc')}): {why}",
            )
        version = versions.parse_version(first)
        if version is None:
            self.no_version = "hermes printed no version"
            return Outcome(
                Status.WARN,
                f"{path}: --version printed {first!r}, not a hermes version "
                "(a login still follows what it prints)",
            )
        return Outcome(Status.PASS, f"{path}: {first.strip()}", version)

    async def _flow(self, provider: Provider, version: versions.Version) -> Outcome:
        flow = versions.flow_for(provider, version)
        shown = versions.show(version)
        if flow is not None:
            return Outcome(Status.PASS, f"{versions.LABELS[flow]} with hermes {shown}", flow)
        first = versions.first_release(provider)
        needs = f" (needs {versions.show(first)} or later)" if first else ""
        status = Status.FAIL if self.request.provider_given else Status.WARN
        return Outcome(status, f"hermes {shown} has no {provider.name} login{needs}")

    async def _port(self, provider: Provider, flow: Flow | None) -> Outcome:
        assert provider.port is not None
        if not self._tables_read:
            self.listeners = await self._listeners()
            self._tables_read = True
        target = None if self.listeners is None else self.listeners.get(provider.port, set())
        return verdicts.port_verdict(
            provider,
            provider.port,
            self.name,
            laptop_busy=self.laptop_busy.get(provider.port),
            target=target,
            flow=flow,
        )

    async def _listeners(self) -> dict[int, set[str]] | None:
        """port -> loopback/wildcard addresses listening there; None when unknown."""
        try:
            found = await self._probe("sockets")
        except PROBE_FAILURES:
            # No probe (no python3, say): the kernel's tables need only sh and cat.
            done = await self._conn.run(
                commands.socket_table_command(), check=False, encoding="utf-8"
            )
            text = str(done.stdout or "")
            return verdicts.listeners(text) if text.strip() else None
        if not isinstance(found, dict):
            return None
        return verdicts.blocking({int(port): addresses for port, addresses in found.items()})

    async def _tokens(self) -> Outcome:
        return verdicts.token_verdict(await self._probe("tokens"))

    async def _gateway(self, token_user: str) -> Outcome:
        return verdicts.gateway_verdict(token_user, await self._probe("gateway"))
