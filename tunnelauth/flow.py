"""The orchestrator: parser events in, actions out (forward, re-forward, open, relay, finish).

run() and login() own the connection, the timeout and the one task group of a login, and all
of its cleanup. Two small policies react to what the remote command prints: HermesLogin (a
provider's login through hermes) and RunCommand (`tunnelauth run`, any CLI). Both stand on
the same parts: the connection (transport.Connection, never asyncssh itself), the supervisor
channel (supervisor.py), the set of forwards (forward.Forwards) and the pure outcome
(outcome.py). Nothing here prints; it tells a Reporter, which the CLI supplies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tunnelauth import browser, localport, outcome, parse, remote, ssh, supervisor, transport
from tunnelauth._compat import TIMEOUTS, BaseExceptionGroup, TaskGroup, timeout
from tunnelauth.errors import (
    ChannelRefused,
    ConnectionLost,
    Interrupted,
    LocalPortBusy,
    LoginFailed,
    LoginTimeout,
    Terminated,
    TunnelauthError,
)
from tunnelauth.forward import Forwards
from tunnelauth.outcome import LoginResult
from tunnelauth.providers import Provider

if TYPE_CHECKING:  # imported when used: the default transport never loads it
    from tunnelauth import openssh

DEFAULT_TIMEOUT = 300.0
EXIT_GRACE = 15.0  # how long hermes may take to exit after printing success
KILL_GRACE = 3.0  # how long the supervisor may take to stop hermes on the way out
PORT_HOLDER_WAIT = 5.0
MAX_QUOTED = 300  # characters of a remote line quoted in an error
T = TypeVar("T")

__all__ = ["LoginRequest", "LoginResult", "Reporter", "RunRequest", "connect", "login", "run"]


class Reporter(Protocol):
    def passthrough(self, stream: str, data: bytes) -> None:
        """The command's own output, for `run`."""
        ...

    def step(self, text: str, event: str | None = None, **fields: object) -> None:
        """Progress for a person (text) and, when `event` is set, for a machine."""
        ...

    def detail(self, text: str) -> None: ...
    def remote_line(self, text: str, stream: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def show_url(
        self, url: str, purpose: str, opened: bool | None, host: str | None = None
    ) -> None: ...
    def show_code(self, code: str) -> None: ...
    def ask(self, prompt: str, secret: bool) -> str | None:
        """Blocking; None when there is no person to ask."""
        ...


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Common:
    """What every job needs: where, as whom, with which environment, and the laptop's side."""

    hops: tuple[ssh.Hop, ...]  # for asyncssh; empty with transport="openssh"
    openssh: openssh.Target | None = None  # the same destination as an `ssh` command line
    transport: str = "asyncssh"
    reuse: bool = True  # use a live OpenSSH master for the destination, if there is one
    remote_env: Mapping[str, str] = field(default_factory=dict)
    as_user: str | None = None
    open_browser: bool = True
    timeout: float | None = None
    allow_hosts: tuple[str, ...] = ()

    @property
    def destination(self) -> str:
        if self.hops:
            return str(self.hops[-1])
        assert self.openssh is not None
        return self.openssh.label


@dataclass(frozen=True, kw_only=True)
class LoginRequest(_Common):
    """Log the remote hermes into a provider."""

    provider: Provider
    hermes: str = "hermes"
    answers: Mapping[str, str] = field(default_factory=dict)  # prompt prefix -> answer
    timeout: float | None = DEFAULT_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class RunRequest(_Common):
    """`tunnelauth run`: any command, its output passed through."""

    command: tuple[str, ...]
    pty: bool = False  # give the command a terminal (the laptop has one)
    size: tuple[int, int] | None = None  # the laptop terminal's columns and rows
    stdin_fd: int | None = None  # relay this file descriptor to the command


Request = LoginRequest | RunRequest


# -- the job: connect, run a policy within the timeout, clean up -------------------------------


async def run(request: Request, reporter: Reporter) -> LoginResult:
    """login() with Ctrl-C and SIGTERM turned into a clean stop and their own errors."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    caught: list[int] = []

    def stop(signum: int) -> None:
        caught.append(signum)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await login(request, reporter)
    except asyncio.CancelledError:
        if not caught:
            raise
        if caught[0] == signal.SIGTERM:
            raise Terminated("stopped by SIGTERM; the remote login was stopped") from None
        raise Interrupted("interrupted; the remote login was stopped") from None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def connect(
    request: Request,
    reporter: Reporter,
    stack: AsyncExitStack,
    connecting: Callable[[str], None] = lambda hop: None,
) -> transport.Connection:
    """The connection to the destination through every hop, closed by `stack`: the user's
    live OpenSSH master when there is one (and reuse is on), else a new one with the transport
    asked for. `connecting` hears of each hop as it starts."""
    target = request.openssh
    if target is not None:
        from tunnelauth import openssh

        if request.reuse:
            reused = await openssh.OpenSshConnection.reuse(target)
            if reused is not None:
                reporter.step(
                    f"reusing your OpenSSH master connection to {target.label} "
                    f"({reused.control}): no new login",
                    "reused",
                    destination=target.label,
                )
                stack.push_async_callback(reused.close)
                return reused
        if request.transport == "openssh":
            through = f" through {target.via}" if target.via else ""
            connecting(target.label)
            reporter.step(
                f"connecting to {target.label}{through} with OpenSSH (ssh)",
                "connecting",
                hop=target.label,
            )
            opened = await openssh.OpenSshConnection.open(
                target, reuse=False, on_message=_ssh_said(reporter)
            )
            stack.push_async_callback(opened.close)
            return opened

    def on_hop(hop: ssh.Hop) -> None:
        connecting(str(hop))
        reporter.step(f"connecting to {hop}", "connecting", hop=str(hop))

    chain = await ssh.connect(
        list(request.hops), stack, on_hop=on_hop, ask=reporter.ask, tell=reporter.warn
    )
    conn = ssh.AsyncsshConnection(chain)
    stack.push_async_callback(conn.close)
    return conn


def _ssh_said(reporter: Reporter) -> Callable[[str], None]:
    """What the master `ssh` prints: its warnings for everyone (a key it recorded, say), the
    rest at -v."""

    def said(line: str) -> None:
        if line.startswith("Warning:"):
            reporter.step(f"ssh: {line}")
        else:
            reporter.detail(f"ssh: {line}")

    return said


async def login(request: Request, reporter: Reporter) -> LoginResult:
    # The laptop's callback port was checked (cli) before anything connected. --timeout bounds
    # the whole run, connecting included; the cleanup (stack) runs after it, bounded by itself.
    where: list[str] = []

    def connecting(hop: str) -> None:
        where.append(hop)

    policy: _Policy | None = None
    async with AsyncExitStack() as stack:
        try:
            async with timeout(request.timeout):
                conn = await connect(request, reporter, stack, connecting)
                reporter.step(
                    "",
                    "connected",
                    destination=request.destination,
                    hops=[str(h) for h in request.hops] or [request.destination],
                )
                if isinstance(request, LoginRequest):
                    policy = HermesLogin(request, reporter, conn)
                else:
                    policy = RunCommand(request, reporter, conn)
                stack.push_async_callback(policy.cleanup)
                return await policy.run()
        except TIMEOUTS:
            if policy is not None and policy.finished:
                raise
            if policy is None:
                hop = where[-1] if where else str(request.destination)
                raise LoginTimeout(
                    f"no login within {request.timeout:g} s: still connecting to {hop}",
                    hint="check that hop, or rerun with a larger --timeout",
                ) from None
            raise LoginTimeout(
                f"no login within {request.timeout:g} s; the remote hermes was stopped",
                hint="rerun with a larger --timeout",
            ) from None
        except BaseExceptionGroup as group:
            raise _first(group) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that matters in a task group's bundle: ours first, then anything else."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    for exc in flat:
        if isinstance(exc, TunnelauthError):
            return exc
    return flat[0] if flat else group


def _in_thread(fn: Callable[..., T], *args: object) -> Awaitable[T]:
    """Like asyncio.to_thread, but a daemon thread: a browser or prompt that never returns
    must not keep tunnelauth alive after the login is over."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        try:
            result: T | None = fn(*args)
            exc: BaseException | None = None
        except BaseException as caught:  # noqa: BLE001 - handed over to the awaiting task
            result, exc = None, caught
        try:
            loop.call_soon_threadsafe(_settle, future, result, exc)
        except RuntimeError:
            pass  # the login is over and its loop closed: nobody waits for this any more

    threading.Thread(target=work, daemon=True).start()
    return future


def _settle(future: asyncio.Future[T], result: T | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


# -- what both policies share ------------------------------------------------------------------


class _Policy:
    """Start the remote command under the supervisor, read its frames, react to the parser's
    events, and clean up. The subclasses decide what the events mean."""

    NOT_FOUND_HINT = ""

    def __init__(
        self,
        request: Request,
        reporter: Reporter,
        conn: transport.Connection,
        parser: parse.Parser,
        urls: browser.Policy,
        ports: localport.PortBudget,
    ) -> None:
        self.request = request
        self.reporter = reporter
        self.conn = conn
        self.parser = parser
        self.channel: supervisor.SupervisorChannel | None = None
        self.group: TaskGroup | None = None
        self.forwards = Forwards(conn, self._forward_failed, self._relaying)
        self.watching: set[int] = set()
        self.authorize: parse.AuthorizeUrl | None = None
        self.urls = urls  # which URLs are shown and opened
        self.ports = ports  # which laptop ports the remote's output may make us listen on
        self.exit_status: int | None = None
        self.finished = False
        self.tasks: set[asyncio.Task[None]] = set()  # helpers: heartbeat, prompts, browsers
        self.stalled: float | None = None  # the supervisor's death window, if it ran out

    # -- what a policy decides ------------------------------------------------------------------

    async def _prepare(self) -> remote.RemoteSpec:
        """Anything before the remote command starts; what to start."""
        raise NotImplementedError

    async def _result(self) -> LoginResult:
        raise NotImplementedError

    async def _output(self, frame: supervisor.Output) -> None:
        for event in self.parser.feed(frame.data, frame.stream):
            await self._event(event)

    async def _event(self, event: parse.Event) -> None:
        raise NotImplementedError

    def _input(self) -> None:
        """Relay the laptop's input to the command, when the policy does."""

    # -- lifetime -------------------------------------------------------------------------------

    async def run(self) -> LoginResult:
        spec = await self._prepare()
        self.reporter.step(
            f"starting {' '.join(spec.command)} on {self.request.destination}",
            "started",
            destination=str(self.request.destination),
            command=" ".join(spec.command),
        )
        try:
            # The configuration (environment included) is the supervisor's first stdin line:
            # inside the channel, right behind the exec request.
            self.channel = supervisor.SupervisorChannel(
                await self.conn.start(remote.command_line(), supervisor.configuration(spec))
            )
        except (TunnelauthError, OSError) as exc:
            raise self._lost(exc) from exc
        async with TaskGroup() as group:
            self.group = group
            self._spawn(self._heartbeat())
            self._spawn(self.channel.read_stderr())
            self._input()
            try:
                await self._read_stdout()
            finally:
                self._input_done()
                # The outcome is known: every helper ends with it (a prompt or a browser
                # still waiting in its thread is abandoned; those threads are daemons).
                for task in list(self.tasks):
                    task.cancel()
        self.finished = True
        if self.stalled is not None:
            raise outcome.stalled(str(self.request.destination), self.stalled)
        return await self._result()

    def _dead_after(self) -> float:
        """The supervisor's death window, from the destination's keepalive numbers."""
        hop = self.request.hops[-1] if self.request.hops else None
        if hop is None:
            return remote.dead_after(ssh.KEEPALIVE_INTERVAL, ssh.KEEPALIVE_COUNT_MAX)
        return remote.dead_after(hop.keepalive_interval, hop.keepalive_count_max)

    def _input_done(self) -> None:
        pass

    async def cleanup(self) -> None:
        """Stop the remote command (if it still runs) and every forward. Short and bounded."""
        await self.forwards.close_all()
        channel = self.channel
        if channel is None:
            return
        if self.exit_status is None and self.conn.dropped() is None and channel.kill():
            try:
                async with timeout(KILL_GRACE):
                    await channel.wait_closed()
            except (*TIMEOUTS, TunnelauthError, OSError):
                pass
        channel.close()

    # -- reading the remote ---------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        assert self.channel is not None
        while self.channel.heartbeat():  # noqa: ASYNC110 - a periodic beat, not a wait
            await asyncio.sleep(remote.HEARTBEAT)

    def _read_limit(self) -> float | None:
        """How long the next read may take (None: as long as the login)."""
        return None

    async def _read_stdout(self) -> None:
        assert self.channel is not None
        while self.exit_status is None:
            try:
                async with timeout(self._read_limit()):
                    frame = await self.channel.next()
            except TIMEOUTS:
                raise LoginFailed(
                    "hermes reported success but did not exit; it was stopped"
                ) from None
            except (ConnectionLost, transport.ChannelFailed, OSError) as exc:
                raise self._lost(exc) from exc
            if frame is None:
                break
            await self._frame(frame)
        if self.exit_status is None:
            raise self._lost(None)

    def _lost(self, exc: BaseException | None) -> TunnelauthError:
        reason = (
            exc.reason if isinstance(exc, (transport.StreamLost, transport.ChannelFailed)) else ""
        )
        return outcome.lost(
            str(self.request.destination),
            self.conn.dropped(),
            isinstance(exc, ConnectionLost),
            reason,
            self.channel.stderr_tail if self.channel else [],
        )

    async def _frame(self, frame: supervisor.Frame) -> None:
        if isinstance(frame, supervisor.Output):
            await self._output(frame)
        elif isinstance(frame, supervisor.Listening):
            self.forwards.listens(frame.port, frame.address)
            self.reporter.detail(
                f"the target now listens on {frame.address or '127.0.0.1'}:{frame.port}"
            )
            await self._maybe_open()
        elif isinstance(frame, supervisor.Exited):
            for event in self.parser.close():
                await self._event(event)
            self.exit_status = frame.status
        elif isinstance(frame, supervisor.TokenInfo):
            self._token_info(frame.info)
        elif isinstance(frame, supervisor.Stalled):
            self.stalled = frame.seconds
        elif isinstance(frame, supervisor.CannotBecomeUser):
            raise outcome.cannot_become(frame.info, str(self.request.destination))
        elif isinstance(frame, supervisor.CommandNotFound):
            raise outcome.not_found(frame.info, str(self.request.destination), self.NOT_FOUND_HINT)

    def _token_info(self, info: dict[str, object]) -> None:
        pass

    # -- actions both policies take -------------------------------------------------------------

    async def _authorize_url(self, event: parse.AuthorizeUrl) -> None:
        if event.redirect_port is None:
            self._open(event.url, "authorize")
            return
        if not self._admit(event.redirect_port):
            return
        self.authorize = event
        port = event.redirect_port
        if port not in self.forwards.listening and port not in self.watching:
            # hermes may bind only after printing the URL (Spotify does): ask the supervisor to
            # tell us when the port is LISTENing, rather than ever connecting to it ourselves.
            self.watching.add(port)
            self._supervisor().watch(port)
        await self._maybe_open()

    async def _maybe_open(self) -> None:
        url = self.authorize
        if url is None or self.urls.decided(url.url) or url.redirect_port is None:
            return
        if url.redirect_port in self.forwards.listening and url.redirect_port in self.forwards:
            self._open(url.url, "authorize", url.redirect_port)

    def _admit(self, port: int) -> bool:
        admitted, warning = self.ports.admit(port)
        if warning:
            self.reporter.warn(warning)
        return admitted

    async def _forward(self, port: int, also_ipv6: bool = False) -> None:
        await self.forwards.add(port, also_ipv6=also_ipv6)
        self.reporter.step(
            f"forwarding 127.0.0.1:{port} to 127.0.0.1:{port} on {self.request.destination}",
            "forwarded",
            port=port,
        )

    def _forward_failed(self, port: int, exc: ChannelRefused) -> None:
        self.reporter.warn(
            f"a callback reached port {port} but nothing listens there on the target yet"
        )

    def _relaying(self, port: int, reason: str) -> None:
        self.reporter.step(
            f"{self.request.destination} forbids port forwarding ({reason}); relaying the callback "
            f"to 127.0.0.1:{port} through an exec channel instead",
            "relaying",
            port=port,
        )

    def _open(self, url: str, purpose: str, port: int | None = None) -> None:
        """Show url, and open it only when browser.Policy says the person would (see there)."""
        decision = self.urls.decide(url, purpose, port)
        if decision is None:
            return
        if decision.warning:
            self.reporter.warn(decision.warning)
        if not decision.show:
            return
        if not decision.open or not self.request.open_browser:
            self.reporter.show_url(url, purpose, None)
            return
        self.reporter.show_url(url, purpose, False, host=self._named_host(decision.host))
        self._spawn(self._open_in_browser(url, purpose))

    def _named_host(self, host: str) -> str | None:
        """The host to name beside a URL being opened (`run` names it: no provider to trust)."""
        return None

    async def _open_in_browser(self, url: str, purpose: str) -> None:
        if not await _in_thread(browser.open_url, url):
            self.reporter.warn(
                "the browser could not be started or reported a failure; "
                "if no page opened, open the URL above yourself"
            )
        elif not self._done():
            self.reporter.step("opened the browser; waiting for you to approve", "browser_opened")

    def _done(self) -> bool:
        """The login is over as far as the person is concerned (nothing more to approve)."""
        return False

    def _supervisor(self) -> supervisor.SupervisorChannel:
        # Events, prompts and input all come after the remote command started.
        assert self.channel is not None
        return self.channel

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self.group is not None
        task = self.group.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


# -- the hermes login --------------------------------------------------------------------------


class HermesLogin(_Policy):
    """A provider's login: forward hermes's callback port (following it when it moves), open
    the authorize URL once the port listens, answer or ask its prompts, show a device code
    (and drop the tunnel then), close the tunnel at success, and check the token file."""

    NOT_FOUND_HINT = "install hermes-agent there, or pass --hermes /path/to/hermes"
    request: LoginRequest

    def __init__(
        self, request: LoginRequest, reporter: Reporter, conn: transport.Connection
    ) -> None:
        super().__init__(
            request,
            reporter,
            conn,
            parse.Parser(request.provider),
            browser.Policy(request.provider.authorize_hosts, request.allow_hosts),
            localport.PortBudget(localport.MAX_LOGIN_PORTS, "a login"),
        )
        self.device = False
        self.success: parse.Success | None = None
        self.failures: list[str] = []
        self.hermes_errors: list[str] = []  # the last lines hermes wrote to its stderr
        self.token_path: str | None = None
        self.token_info: dict[str, object] = {}

    async def _prepare(self) -> remote.RemoteSpec:
        provider = self.request.provider
        if provider.loopback and provider.port:
            await self._forward(provider.port)
        return remote.RemoteSpec(
            command=(self.request.hermes, *provider.args),
            env=self.request.remote_env,
            as_user=self.request.as_user,
            token_check=True,
            dead_after=self._dead_after(),
        )

    def _read_limit(self) -> float | None:
        return EXIT_GRACE if self.success else None

    def _done(self) -> bool:
        return self.success is not None

    def _token_info(self, info: dict[str, object]) -> None:
        self.token_info = info

    async def _event(self, event: parse.Event) -> None:
        if isinstance(event, parse.Line):
            self.reporter.remote_line(event.text, event.stream)
            if event.stream == "stderr" and event.text.strip():
                quoted = event.text.strip()
                if len(quoted) > MAX_QUOTED:
                    quoted = quoted[:MAX_QUOTED] + "…"
                self.hermes_errors = [*self.hermes_errors, quoted][-5:]
        elif isinstance(event, parse.CallbackPort):
            await self._callback_port(event)
        elif isinstance(event, parse.AuthorizeUrl):
            await self._authorize_url(event)
        elif isinstance(event, parse.VerificationUrl):
            await self._device()
            self._open(event.url, "verification")
        elif isinstance(event, parse.UserCode):
            await self._device()
            self.reporter.show_code(event.code)
        elif isinstance(event, parse.Prompt):
            self._prompt(event)
        elif isinstance(event, parse.Success):
            self.success = event
            self.reporter.step("hermes reports success; closing the tunnel", "reported_success")
            await self.forwards.close_all()
        elif isinstance(event, parse.TokenFile):
            self.token_path = event.path
        elif isinstance(event, parse.Failure) and event.message not in self.failures:
            # The last two distinct messages: the specific cause and hermes's summary of it.
            self.failures = [*self.failures, event.message][-2:]

    async def _callback_port(self, event: parse.CallbackPort) -> None:
        if self.device or self.success:
            return
        if not self._admit(event.port):
            return
        if event.listening:
            self.forwards.listening.add(event.port)
        if event.port not in self.forwards:
            old = self.forwards.ports()
            await self._forward(event.port)
            if old:
                self.reporter.step(
                    f"hermes listens on port {event.port}, not {old[0]}: forwarding {event.port} instead",
                    "port_moved",
                    port=event.port,
                    old_port=old[0],
                )
            for port in old:
                await self.forwards.close(port)
        await self._maybe_open()

    async def _device(self) -> None:
        if not self.device:
            self.device = True
            if self.forwards:
                self.reporter.detail("device-code flow: no callback, so no tunnel")
            await self.forwards.close_all()

    def _prompt(self, event: parse.Prompt) -> None:
        for prefix, answer in self.request.answers.items():
            if event.text.startswith(prefix):
                self.reporter.detail(
                    f"answering hermes's prompt {event.text!r} from the command line"
                )
                self._supervisor().send_input(answer.encode() + b"\n")
                return
        self._spawn(self._ask(event))

    async def _ask(self, event: parse.Prompt) -> None:
        answer = await _in_thread(self.reporter.ask, f"hermes asks: {event.text}", event.secret)
        if answer is None:
            raise LoginFailed(
                f"hermes asks {event.text!r} and there is no terminal here to answer it",
                hint="run tunnelauth from a terminal, or pass the answer as an option",
            )
        self._supervisor().send_input(answer.encode() + b"\n")

    async def _why_port_busy(self, port: int) -> TunnelauthError:
        holder = None
        try:
            async with timeout(PORT_HOLDER_WAIT):
                holder = remote.parse_port_holder(
                    await self.conn.run(remote.port_holder_command(port))
                )
        except (*TIMEOUTS, TunnelauthError, OSError):
            pass
        return outcome.port_busy(port, str(self.request.destination), holder)

    async def _result(self) -> LoginResult:
        verdict = outcome.classify(
            outcome.LoginFacts(
                provider=self.request.provider.hermes_id,
                destination=str(self.request.destination),
                exit_status=self.exit_status,
                success=self.success,
                failures=tuple(self.failures),
                hermes_errors=tuple(self.hermes_errors),
                token_path=self.token_path,
                token_info=self.token_info,
            )
        )
        if isinstance(verdict, outcome.PortBusy):
            raise await self._why_port_busy(verdict.port)
        if isinstance(verdict, TunnelauthError):
            raise verdict
        for warning in verdict.warnings:
            self.reporter.warn(warning)
        return verdict.result


# -- `tunnelauth run` --------------------------------------------------------------------------


class RunCommand(_Policy):
    """Any CLI: its output passed through as it comes, every loopback port it names forwarded
    (and kept: a CLI may use several), its authorize URLs opened, the laptop's input relayed;
    its exit status is the result."""

    NOT_FOUND_HINT = "check the command's name, or give its full path"
    request: RunRequest

    def __init__(self, request: RunRequest, reporter: Reporter, conn: transport.Connection) -> None:
        super().__init__(
            request,
            reporter,
            conn,
            parse.Parser(None, loopback_urls=True),
            browser.Policy((), request.allow_hosts, running=True),
            localport.PortBudget(localport.MAX_RUN_FORWARDS, "`run`"),
        )

    async def _prepare(self) -> remote.RemoteSpec:
        return remote.RemoteSpec(
            command=self.request.command,
            env=self.request.remote_env,
            as_user=self.request.as_user,
            pty=self.request.pty,
            size=self.request.size,
            dead_after=self._dead_after(),
        )

    async def _output(self, frame: supervisor.Output) -> None:
        self.reporter.passthrough(frame.stream, frame.data)
        await super()._output(frame)

    async def _event(self, event: parse.Event) -> None:
        # Prompts are not ours to answer: the terminal is relayed as it is.
        if isinstance(event, parse.Line):
            self.reporter.remote_line(event.text, event.stream)
        elif isinstance(event, parse.CallbackPort):
            await self._run_port(event)
        elif isinstance(event, parse.AuthorizeUrl):
            await self._authorize_url(event)
        elif isinstance(event, parse.VerificationUrl):
            self._open(event.url, "verification")
        elif isinstance(event, parse.UserCode):
            self.reporter.show_code(event.code)

    async def _run_port(self, event: parse.CallbackPort) -> None:
        """`run` forwards every loopback port it sees (up to a cap) and keeps them all: a CLI may
        use several. A port busy on the laptop may merely be mentioned: a warning, not an abort."""
        if not self._admit(event.port):
            return
        if event.listening:
            self.forwards.listening.add(event.port)
        if event.port not in self.forwards:
            self.reporter.detail(
                f"port {event.port}: seen as a loopback URL ({event.source}) in the output"
            )
            try:
                await self._forward(event.port, also_ipv6=event.host == "localhost")
            except LocalPortBusy as exc:
                self.ports.refuse(event.port)
                self.reporter.warn(
                    f"not forwarding port {event.port}: {exc}; a callback to it "
                    f"would not reach {self.request.destination}"
                )
                return
        await self._maybe_open()

    def _named_host(self, host: str) -> str | None:
        return host

    def _input(self) -> None:
        fd = self.request.stdin_fd
        if fd is None:
            return
        loop = asyncio.get_running_loop()

        def read() -> bytes:
            try:
                return os.read(fd, 4096)
            except OSError:
                return b""

        def forward(data: bytes) -> None:
            if data:
                self._supervisor().send_input(data)
            else:
                self._supervisor().close_input()

        def readable() -> None:
            data = read()
            if not data:
                loop.remove_reader(fd)
            forward(data)

        def blocking() -> None:
            try:
                while data := read():
                    loop.call_soon_threadsafe(forward, data)
                loop.call_soon_threadsafe(forward, b"")
            except RuntimeError:
                pass  # the run is over and its loop closed

        try:
            loop.add_reader(fd, readable)
        except (OSError, ValueError):
            # A regular file or /dev/null cannot be polled: read it in a thread instead.
            threading.Thread(target=blocking, daemon=True).start()

    def _input_done(self) -> None:
        if self.request.stdin_fd is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.request.stdin_fd)
            except (OSError, ValueError):
                pass

    async def _result(self) -> LoginResult:
        return outcome.run_result(str(self.request.destination), self.exit_status)
