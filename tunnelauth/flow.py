"""The orchestrator: parser events in, actions out (forward, re-forward, open, relay, finish).

It owns the one task group of a login and all of its cleanup. It prints nothing; it tells
a Reporter, which the CLI supplies.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tunnelauth._asyncssh import asyncssh

from tunnelauth import browser, parse, remote, ssh
from tunnelauth._compat import TIMEOUTS, BaseExceptionGroup, TaskGroup, timeout
from tunnelauth.errors import (
    ConnectionLost,
    Interrupted,
    LoginFailed,
    LoginTimeout,
    RemoteSetupError,
    Terminated,
    TunnelauthError,
)
from tunnelauth.forward import Forward
from tunnelauth.providers import Provider

DEFAULT_TIMEOUT = 300.0
EXIT_GRACE = 15.0  # how long hermes may take to exit after printing success
KILL_GRACE = 3.0  # how long the supervisor may take to stop hermes on the way out
T = TypeVar("T")


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
    def show_url(self, url: str, purpose: str, opened: bool | None) -> None: ...
    def show_code(self, code: str) -> None: ...
    def ask(self, prompt: str, secret: bool) -> str | None:
        """Blocking; None when there is no person to ask."""
        ...


@dataclass(frozen=True)
class LoginRequest:
    """A hermes login (provider set) or `tunnelauth run` of any command (provider None)."""

    provider: Provider | None
    hops: tuple[ssh.Hop, ...]
    hermes: str = "hermes"
    remote_env: Mapping[str, str] = field(default_factory=dict)
    as_user: str | None = None
    open_browser: bool = True
    timeout: float | None = DEFAULT_TIMEOUT
    allow_hosts: tuple[str, ...] = ()
    answers: Mapping[str, str] = field(default_factory=dict)  # prompt prefix -> answer
    command: tuple[str, ...] = ()  # for `run`: the command and its arguments
    pty: bool = False  # for `run`: give the command a terminal (the laptop has one)
    size: tuple[int, int] | None = None  # the laptop terminal's columns and rows
    stdin_fd: int | None = None  # for `run`: relay this file descriptor to the command

    @property
    def destination(self) -> ssh.Hop:
        return self.hops[-1]


@dataclass(frozen=True)
class LoginResult:
    provider: str
    destination: str
    label: str | None
    token_file: str | None
    token_mode: int | None
    exit_status: int = 0  # the remote command's, for `run`


async def run(request: LoginRequest, reporter: Reporter) -> LoginResult:
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


async def login(request: LoginRequest, reporter: Reporter) -> LoginResult:
    # The laptop's callback port was checked (cli) before anything connected. --timeout bounds
    # the whole run, connecting included; the cleanup (stack) runs after it, bounded by itself.
    where: list[ssh.Hop] = []

    def connecting(hop: ssh.Hop) -> None:
        where.append(hop)
        reporter.step(f"connecting to {hop}", "connecting", hop=str(hop))

    session: _Session | None = None
    async with AsyncExitStack() as stack:
        try:
            async with timeout(request.timeout):
                chain = await ssh.connect(list(request.hops), stack, on_hop=connecting)
                reporter.step("", "connected", destination=str(request.destination),
                              hops=[str(h) for h in request.hops])
                session = _Session(request, reporter, chain)
                stack.push_async_callback(session.cleanup)
                return await session.run()
        except TIMEOUTS:
            if session is not None and session.finished:
                raise
            if session is None:
                hop = where[-1] if where else request.hops[0]
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


def _first(group: BaseExceptionGroup) -> BaseException:  # type: ignore[type-arg]
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


class _Session:
    def __init__(self, request: LoginRequest, reporter: Reporter, chain: ssh.Chain) -> None:
        self.request = request
        self.reporter = reporter
        self.chain = chain
        self.conn = chain.last
        self.running = request.provider is None  # `tunnelauth run`, not a hermes login
        self.parser = parse.Parser(request.provider, loopback_urls=self.running)
        self.frames = remote.FrameDecoder()
        self.proc: asyncssh.SSHClientProcess[bytes] | None = None
        self.group: TaskGroup | None = None
        self.forwards: dict[int, Forward] = {}
        self.listening: set[int] = set()
        self.ipv6_only: set[int] = set()  # ports the target listens on at ::1 only
        self.watching: set[int] = set()
        self.authorize: parse.AuthorizeUrl | None = None
        self.opened: set[str] = set()
        self.device = False
        self.success: parse.Success | None = None
        self.failures: list[str] = []
        self.token_path: str | None = None
        self.token_info: dict[str, object] = {}
        self.exit_status: int | None = None
        self.stderr_tail: list[str] = []  # the supervisor's own stderr (a missing python3, say)
        self.hermes_errors: list[str] = []  # the last lines hermes wrote to its stderr
        self.finished = False
        self.tasks: set[asyncio.Task[None]] = set()  # helpers: prompts, browsers
        self.stalled: float | None = None  # the supervisor's death window, if it ran out

    # -- lifetime -------------------------------------------------------------------------

    async def run(self) -> LoginResult:
        provider = self.request.provider
        hop = self.request.destination
        dead_after = remote.dead_after(hop.keepalive_interval, hop.keepalive_count_max)
        if provider is None:
            spec = remote.RemoteSpec(command=self.request.command, env=self.request.remote_env,
                                     as_user=self.request.as_user, pty=self.request.pty,
                                     size=self.request.size, dead_after=dead_after)
        else:
            if provider.loopback and provider.port:
                await self._forward(provider.port)
            spec = remote.RemoteSpec(command=(self.request.hermes, *provider.args),
                                     env=self.request.remote_env, as_user=self.request.as_user,
                                     token_check=True, dead_after=dead_after)
        self.reporter.step(
            f"starting {' '.join(spec.command)} on {self.request.destination}",
            "started", destination=str(self.request.destination), command=" ".join(spec.command),
        )
        try:
            self.proc = await self.conn.create_process(remote.command_line(), encoding=None)
            # The configuration (environment included) goes inside the channel, first.
            self.proc.stdin.write(remote.config_line(spec))
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc) from exc
        async with TaskGroup() as group:
            self.group = group
            self._spawn(self._heartbeat())
            self._spawn(self._read_stderr())
            if self.request.stdin_fd is not None:
                self._relay_stdin(self.request.stdin_fd)
            try:
                await self._read_stdout()
            finally:
                if self.request.stdin_fd is not None:
                    try:
                        asyncio.get_running_loop().remove_reader(self.request.stdin_fd)
                    except (OSError, ValueError):
                        pass
                # The outcome is known: every helper ends with it (a prompt or a browser
                # still waiting in its thread is abandoned; those threads are daemons).
                for task in list(self.tasks):
                    task.cancel()
        self.finished = True
        return await self._result()

    async def cleanup(self) -> None:
        """Stop the remote command (if it still runs) and every forward. Short and bounded."""
        for forward in list(self.forwards.values()):
            await forward.close()
        self.forwards.clear()
        proc = self.proc
        if proc is None:
            return
        if self.exit_status is None and not self.conn.is_closed():
            try:
                proc.stdin.write(b"k\n")
                async with timeout(KILL_GRACE):
                    await proc.wait_closed()
            except (*TIMEOUTS, asyncssh.Error, OSError):
                pass
        proc.close()

    # -- reading the remote ----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        assert self.proc is not None
        try:
            while True:
                self.proc.stdin.write(b"h\n")
                await asyncio.sleep(remote.HEARTBEAT)
        except (asyncssh.Error, OSError):
            return

    async def _read_stderr(self) -> None:
        assert self.proc is not None
        while True:
            data = await self.proc.stderr.read(4096)
            if not data:
                return
            text = parse.strip_ansi(data.decode(errors="replace"))
            self.stderr_tail = (self.stderr_tail + text.splitlines())[-20:]

    async def _read_stdout(self) -> None:
        assert self.proc is not None
        while self.exit_status is None:
            try:
                async with timeout(EXIT_GRACE if self.success else None):
                    data = await self.proc.stdout.read(65536)
            except TIMEOUTS:
                raise LoginFailed("hermes reported success but did not exit; it was stopped") from None
            except (asyncssh.Error, OSError) as exc:
                raise self._lost(exc) from exc
            if not data:
                break
            for kind, payload in self.frames.feed(data):
                await self._frame(kind, payload)
        if self.exit_status is None:
            raise self._lost(None)

    def _lost(self, exc: BaseException | None) -> TunnelauthError:
        hop = self.chain.dropped()
        if hop is not None or isinstance(exc, asyncssh.ConnectionLost):
            where = hop or self.request.destination
            why = f" ({exc.reason})" if isinstance(exc, asyncssh.Error) and exc.reason else ""
            return ConnectionLost(
                f"lost the connection to {where} during the login{why}; the remote hermes stops by itself",
                hint="check that hop and run tunnelauth again",
            )
        tail = " ".join(line.strip() for line in self.stderr_tail[-2:] if line.strip())
        return RemoteSetupError(
            f"the remote side of the login stopped unexpectedly on {self.request.destination}"
            + (f": {tail}" if tail else "")
        )

    def _relay_stdin(self, fd: int) -> None:
        loop = asyncio.get_running_loop()

        def read() -> bytes:
            try:
                return os.read(fd, 4096)
            except OSError:
                return b""

        def forward(data: bytes) -> None:
            self._send(remote.stdin_line(data) if data else b"c\n")

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

    async def _frame(self, kind: str, payload: bytes) -> None:
        if kind in "oe" and self.running:
            self.reporter.passthrough("stdout" if kind == "o" else "stderr", payload)
        if kind in "oe":
            for event in self.parser.feed(payload, "stdout" if kind == "o" else "stderr"):
                await self._event(event)
        elif kind == "L":
            port_text, _, address = payload.decode().partition(" ")
            port = int(port_text)
            self.listening.add(port)
            if address == "::1":
                # It listens on IPv6 loopback only: the forward must connect there.
                self.ipv6_only.add(port)
                if port in self.forwards:
                    self.forwards[port].remote_host = "::1"
            self.reporter.detail(f"the target now listens on {address or '127.0.0.1'}:{port}")
            await self._maybe_open()
        elif kind == "x":
            for event in self.parser.close():
                await self._event(event)
            self.exit_status = int(payload)
        elif kind == "H":
            self.stalled = float(payload)
        elif kind == "f":
            self.token_info = json.loads(payload)
        elif kind == "S":
            info = json.loads(payload)
            raise RemoteSetupError(
                f"cannot run hermes as {info['user']} on {self.request.destination}: {info['error']}",
                hint="--as-user needs `sudo -n -u USER` to work without a password there",
            )
        elif kind == "n":
            info = json.loads(payload)
            hint = ("install hermes-agent there, or pass --hermes /path/to/hermes" if not self.running
                    else "check the command's name, or give its full path")
            raise RemoteSetupError(
                f"{info['command']} was not found on {self.request.destination}; looked in "
                + ", ".join(info["looked"]),
                hint=hint,
            )

    # -- reacting to events ----------------------------------------------------------------

    async def _event(self, event: parse.Event) -> None:
        if isinstance(event, parse.Line):
            self.reporter.remote_line(event.text, event.stream)
            if event.stream == "stderr" and event.text.strip():
                self.hermes_errors = (self.hermes_errors + [event.text.strip()])[-5:]
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
        elif isinstance(event, parse.Prompt) and not self.running:  # `run` relays the terminal itself
            self._prompt(event)
        elif isinstance(event, parse.Success):
            self.success = event
            self.reporter.step("hermes reports success; closing the tunnel", "reported_success")
            await self._close_forwards()
        elif isinstance(event, parse.TokenFile):
            self.token_path = event.path
        elif isinstance(event, parse.Failure):
            # The last two distinct messages: the specific cause and hermes's summary of it.
            if event.message not in self.failures:
                self.failures = (self.failures + [event.message])[-2:]

    async def _callback_port(self, event: parse.CallbackPort) -> None:
        if self.running:
            await self._run_port(event)
            return
        if self.device or self.success:
            return
        if event.listening:
            self.listening.add(event.port)
        if event.port not in self.forwards:
            old = sorted(self.forwards)
            await self._forward(event.port)
            if old:
                self.reporter.step(
                    f"hermes listens on port {event.port}, not {old[0]}: forwarding {event.port} instead",
                    "port_moved", port=event.port, old_port=old[0],
                )
            for port in old:
                await self.forwards.pop(port).close()
        await self._maybe_open()

    async def _run_port(self, event: parse.CallbackPort) -> None:
        """`run` forwards every loopback port it sees and keeps them all: a CLI may use several."""
        if event.listening:
            self.listening.add(event.port)
        if event.port not in self.forwards:
            self.reporter.detail(f"port {event.port}: seen as a loopback URL ({event.source}) in the output")
            await self._forward(event.port, also_ipv6=event.host == "localhost")
        await self._maybe_open()

    async def _authorize_url(self, event: parse.AuthorizeUrl) -> None:
        if event.redirect_port is None:
            self._open(event.url, "authorize")
            return
        self.authorize = event
        port = event.redirect_port
        if port not in self.listening and port not in self.watching:
            # hermes may bind only after printing the URL (Spotify does): ask the supervisor to
            # tell us when the port is LISTENing, rather than ever connecting to it ourselves.
            self.watching.add(port)
            self._send(f"w{port}\n".encode())
        await self._maybe_open()

    async def _maybe_open(self) -> None:
        url = self.authorize
        if url is None or url.url in self.opened or url.redirect_port is None:
            return
        if url.redirect_port in self.listening and url.redirect_port in self.forwards:
            self._open(url.url, "authorize")

    async def _device(self) -> None:
        if self.running:
            return
        if not self.device:
            self.device = True
            if self.forwards:
                self.reporter.detail("device-code flow: no callback, so no tunnel")
            await self._close_forwards()

    async def _forward(self, port: int, also_ipv6: bool = False) -> None:
        forward = Forward(self.conn, port, self._forward_failed, self._relaying, also_ipv6=also_ipv6)
        if port in self.ipv6_only:  # the supervisor saw the listener before the URL
            forward.remote_host = "::1"
        await forward.start()
        self.forwards[port] = forward
        self.reporter.step(f"forwarding 127.0.0.1:{port} to 127.0.0.1:{port} on {self.request.destination}", "forwarded", port=port)

    def _forward_failed(self, port: int, exc: asyncssh.ChannelOpenError) -> None:
        self.reporter.warn(f"a callback reached port {port} but nothing listens there on the target yet")

    def _relaying(self, port: int, reason: str) -> None:
        self.reporter.step(
            f"{self.request.destination} forbids port forwarding ({reason}); relaying the callback "
            f"to 127.0.0.1:{port} through an exec channel instead",
            "relaying", port=port,
        )

    async def _close_forwards(self) -> None:
        for port in list(self.forwards):
            await self.forwards.pop(port).close()

    def _open(self, url: str, purpose: str) -> None:
        if url in self.opened:
            return
        self.opened.add(url)
        provider = self.request.provider
        warning = browser.vet(url, provider.authorize_hosts if provider else (), self.request.allow_hosts)
        if warning and provider is not None:  # `run` has no known hosts to compare with
            self.reporter.warn(warning)
        if not self.request.open_browser:
            self.reporter.show_url(url, purpose, None)
            return
        self.reporter.show_url(url, purpose, False)
        self._spawn(self._open_in_browser(url, purpose))

    async def _open_in_browser(self, url: str, purpose: str) -> None:
        if not await _in_thread(browser.open_url, url):
            self.reporter.warn("the browser could not be started or reported a failure; "
                               "if no page opened, open the URL above yourself")
        elif not self.success:
            self.reporter.step("opened the browser; waiting for you to approve", "browser_opened")

    def _prompt(self, event: parse.Prompt) -> None:
        for prefix, answer in self.request.answers.items():
            if event.text.startswith(prefix):
                self.reporter.detail(f"answering hermes's prompt {event.text!r} from the command line")
                self._send(remote.stdin_line(answer.encode() + b"\n"))
                return
        self._spawn(self._ask(event))

    async def _ask(self, event: parse.Prompt) -> None:
        answer = await _in_thread(self.reporter.ask, event.text, event.secret)
        if answer is None:
            raise LoginFailed(
                f"hermes asks {event.text!r} and there is no terminal here to answer it",
                hint="run tunnelauth from a terminal, or pass the answer as an option",
            )
        self._send(remote.stdin_line(answer.encode() + b"\n"))

    def _send(self, line: bytes) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.write(line)
            except (asyncssh.Error, OSError):
                pass

    def _spawn(self, coro: Awaitable[None]) -> None:
        assert self.group is not None
        task = self.group.create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- the outcome -----------------------------------------------------------------------

    async def _why_port_busy(self, port: int) -> RemoteSetupError:
        holder = None
        try:
            async with timeout(5):
                done = await self.conn.run(remote.port_holder_command(port), check=False)
            holder = remote.parse_port_holder(str(done.stdout or ""))
        except (*TIMEOUTS, asyncssh.Error, OSError):
            pass
        by = f"by {holder}" if holder else "by a process this login cannot see"
        return RemoteSetupError(
            f"port {port} on {self.request.destination}'s 127.0.0.1 is taken {by}, and hermes "
            f"cannot move its callback elsewhere",
            hint="stop that process (an earlier login?) and run tunnelauth again",
        )

    async def _result(self) -> LoginResult:
        status = self.exit_status
        if self.stalled is not None:
            raise ConnectionLost(
                f"nothing reached {self.request.destination} for more than {self.stalled:g} s "
                f"(a stalled link, or this machine suspended, past the SSH keepalive window); "
                f"the remote command was stopped",
                hint="check the network; raise ServerAliveInterval/ServerAliveCountMax on slow links",
            )
        if self.running:
            return LoginResult(provider="", destination=str(self.request.destination), label=None,
                               token_file=None, token_mode=None, exit_status=status or 0)
        if status == 0 and self.success is not None:
            info = self.token_info
            path = str(info.get("path") or self.token_path or "") or None
            mode = info.get("mode")
            if info.get("error"):
                self.reporter.warn(f"hermes reported success but {path} is not there ({info['error']})")
            elif isinstance(mode, int) and mode & 0o077:
                self.reporter.warn(f"{path} has mode {mode:o}; it should be 600")
            return LoginResult(
                provider=self.request.provider.hermes_id,
                destination=str(self.request.destination),
                label=self.success.label,
                token_file=path,
                token_mode=mode if isinstance(mode, int) else None,
            )
        reason = "; ".join(self.failures) or (self.hermes_errors[-1] if self.hermes_errors else None)
        busy = remote.busy_port(reason or "")
        if busy is not None:
            raise await self._why_port_busy(busy)
        if status == 0:
            raise LoginFailed(f"hermes exited without reporting a login{': ' + reason if reason else ''}")
        raise LoginFailed(f"hermes failed: {reason or 'no message'} (exit status {status})")
