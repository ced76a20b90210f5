"""The command line: arguments in, a LoginRequest out, exit codes back. No logic lives here."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from tunnelauth import __version__
from tunnelauth.errors import EXIT_CODES, TunnelauthError, UsageError

if TYPE_CHECKING:
    from tunnelauth import (
        flow,
        openssh,  # the login path imports these when it runs; --help stays fast without them
        output,
        ssh,
    )

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,  # plain help: rich costs more start-up time than the whole login path
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Log a remote Hermes Agent into a provider through one SSH connection.\n\n"
        "`tunnelauth PROVIDER DESTINATION [options]` is short for `tunnelauth login ...`."
    ),
)

SUBCOMMANDS = {"login", "run", "providers", "exit-codes", "doctor"}


def _version(value: bool) -> None:
    if value:
        print(f"tunnelauth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    pass


# SSH options shared by every command that connects (typer reuses these defaults).
JUMP = typer.Option(
    None, "-J", "--jump", metavar="HOPS", help="Jump hosts: [user@]host[:port][,...], like ssh -J."
)
PORT = typer.Option(None, "-p", "--port", metavar="PORT", help="SSH port of the destination.")
LOGIN = typer.Option(None, "-l", "--login", metavar="USER", help="Remote user name.")
IDENTITY = typer.Option(
    [], "-i", "--identity", metavar="FILE", help="Private key file (repeatable)."
)
CONFIG = typer.Option(
    None, "-F", "--config", metavar="FILE", help="ssh config file (default ~/.ssh/config)."
)
OPTION = typer.Option(
    [], "-o", metavar="KEY=VALUE", help="ssh option Key=Value (repeatable), as for ssh -o."
)
ACCEPT_NEW = typer.Option(
    False,
    "--accept-new",
    help="Record unknown host keys in known_hosts (changed keys are always refused).",
)
REMOTE_ENV = typer.Option(
    [], "--remote-env", metavar="KEY=VALUE", help="KEY=VALUE for the remote command (repeatable)."
)
AS_USER = typer.Option(
    None, "--as-user", metavar="USER", help="Run the remote command as this user, through sudo -n."
)
NO_OPEN = typer.Option(False, "--no-open", help="Print URLs instead of opening the browser.")
ALLOW_HOST = typer.Option(
    [],
    "--allow-host",
    metavar="HOST",
    help="Open authorize URLs on this host without a warning (labs).",
)
VERBOSE = typer.Option(
    0,
    "-v",
    "--verbose",
    count=True,
    show_default=False,
    help="Show every remote line and every decision.",
)
TRANSPORT = typer.Option(
    None,
    "--ssh",
    metavar="asyncssh|openssh",
    show_default=False,
    help="Connect with asyncssh (the default) or this machine's own ssh command; also $TUNNELAUTH_SSH.",
)
NO_REUSE = typer.Option(
    False,
    "--no-reuse",
    help="Never use a live OpenSSH master connection (ControlMaster) to the destination.",
)


def _route(
    destination: str,
    jump: str | None,
    port: int | None,
    login_name: str | None,
    identity: list[str],
    config_file: Path | None,
    option: list[str],
    accept_new: bool,
    transport_name: str | None,
    no_reuse: bool,
) -> dict[str, object]:
    """The request's connection fields: the hops (asyncssh), the ssh command line (OpenSSH, and
    for reusing a live master), the transport and whether a live master may be reused."""
    from tunnelauth import transport

    chosen = transport.choose(transport_name)
    hops, target = _hops(
        destination,
        jump,
        port,
        login_name,
        identity,
        config_file,
        option,
        accept_new,
        head_start=chosen == "asyncssh",
        plan=chosen == "asyncssh",
        command_line=chosen == "openssh" or not no_reuse,
    )
    if chosen == "openssh" and target is not None:
        target.require()
    return {"hops": hops, "openssh": target, "transport": chosen, "reuse": not no_reuse}


def _hops(
    destination: str,
    jump: str | None,
    port: int | None,
    login_name: str | None,
    identity: list[str],
    config_file: Path | None,
    option: list[str],
    accept_new: bool,
    head_start: bool = True,
    plan: bool = True,
    command_line: bool = False,
) -> tuple[tuple[ssh.Hop, ...], openssh.Target | None]:
    """The hops to connect, from the ssh-style options every connecting command takes, and
    (command_line) the same destination as an `ssh` command line.

    Once the input is valid, the first hop's connection starts (preconnect.py) before
    asyncssh is imported: it runs while the import does.
    """
    from tunnelauth import destination as dest
    from tunnelauth import preconnect

    if port is not None:
        dest.parse_port(str(port), "-p")
    settings = dest.SshSettings(
        config_file=config_file.expanduser() if config_file else None,
        identities=tuple(str(Path(i).expanduser()) for i in identity),
        login=dest.check_login(login_name, "-l") if login_name else None,
        port=port,
        options=dest.first_wins(dest.parse_option(o) for o in option),
        accept_new=accept_new,
    )
    for path in settings.identities:
        if not Path(path).is_file():
            raise UsageError(f"-i {path}: no such key file")
    jumps = dest.parse_jumps(jump) if jump is not None else None
    endpoint = dest.parse_endpoint(destination)
    target = None
    if command_line:
        from tunnelauth import openssh

        target = openssh.target(endpoint, jumps, settings)
    if not plan:
        return (), target
    if head_start:
        preconnect.start(endpoint, jumps, settings)
    from tunnelauth import ssh

    return tuple(ssh.plan(endpoint, jumps, settings)), target


def _check_timeout(timeout: float) -> float:
    if not math.isfinite(timeout) or timeout <= 0:
        raise UsageError(f"--timeout {timeout:g} must be more than 0 seconds")
    return timeout


@app.command()
def login(
    provider: str = typer.Argument(
        ...,
        metavar="PROVIDER",
        help="xai, spotify, anthropic, codex, minimax or nous (see `providers`).",
    ),
    destination: str = typer.Argument(
        ..., metavar="DESTINATION", help="[user@]host[:port], or a Host alias from the ssh config."
    ),
    jump: str | None = JUMP,
    port: int | None = PORT,
    login_name: str | None = LOGIN,
    identity: list[str] = IDENTITY,
    config_file: Path | None = CONFIG,
    option: list[str] = OPTION,
    hermes: str = typer.Option(
        "hermes",
        "--hermes",
        metavar="COMMAND",
        help="The remote hermes command (found on the login PATH and in the usual install places).",
    ),
    remote_env: list[str] = REMOTE_ENV,
    as_user: str | None = AS_USER,
    hermes_home: str | None = typer.Option(
        None, "--hermes-home", metavar="DIR", help="HERMES_HOME for the remote hermes."
    ),
    client_id: str | None = typer.Option(
        None, "--client-id", metavar="ID", help="Answer for hermes's `Spotify Client ID:` prompt."
    ),
    no_open: bool = NO_OPEN,
    accept_new: bool = ACCEPT_NEW,
    allow_host: list[str] = ALLOW_HOST,
    timeout: float = typer.Option(
        300,
        "--timeout",
        metavar="SECONDS",
        help="Give up (and stop the remote hermes) after this many seconds.",
    ),
    verbose: int = VERBOSE,
    transport_name: str | None = TRANSPORT,
    no_reuse: bool = NO_REUSE,
    quiet: bool = typer.Option(
        False,
        "-q",
        "--quiet",
        help="Only what needs you (a URL not opened, a code, a prompt), errors and the result.",
    ),
    json_lines: bool = typer.Option(
        False,
        "--json",
        help="One JSON object per line on stdout (connected, forwarded, url, device code, success, failure).",
    ),
) -> None:
    """Log the remote hermes into a provider.

    One SSH connection through the jump hosts; hermes's loopback callback is forwarded, its
    URL opened in this machine's browser.
    """
    from tunnelauth import localport, output, providers, remote

    reporter = (
        output.JsonReporter()
        if json_lines
        else output.ConsoleReporter(0 if quiet else 1 + min(verbose, 1))
    )

    def request() -> flow.LoginRequest:
        # Every check of the input comes before _hops, which starts connecting.
        chosen = providers.lookup(provider)
        env = remote.parse_env(remote_env)
        if hermes_home:
            env["HERMES_HOME"] = hermes_home
        if not hermes.strip() or "\0" in hermes:
            raise UsageError("--hermes must name a command")
        user = remote.check_user(as_user) if as_user else None
        remote.check_sizes((hermes, *chosen.args), env)
        limit = _check_timeout(timeout)
        if chosen.loopback and chosen.port:
            # A busy callback port costs nothing remote: checked before anything connects.
            localport.ensure_free(chosen.port)
        route = _route(
            destination,
            jump,
            port,
            login_name,
            identity,
            config_file,
            option,
            accept_new,
            transport_name,
            no_reuse,
        )
        from tunnelauth import flow

        return flow.LoginRequest(
            provider=chosen,
            **route,  # type: ignore[arg-type]
            hermes=hermes,
            remote_env=env,
            as_user=user,
            open_browser=not no_open,
            timeout=limit,
            allow_hosts=tuple(h.lower() for h in allow_host),
            answers={"Spotify Client ID": client_id} if client_id else {},
        )

    reporter.result(_execute(request, reporter))


@app.command()
def run(
    destination: str = typer.Argument(
        ..., metavar="DESTINATION", help="[user@]host[:port], or a Host alias from the ssh config."
    ),
    command: list[str] = typer.Argument(
        ..., metavar="COMMAND...", help="The command to run remotely, after `--`."
    ),
    jump: str | None = JUMP,
    port: int | None = PORT,
    login_name: str | None = LOGIN,
    identity: list[str] = IDENTITY,
    config_file: Path | None = CONFIG,
    option: list[str] = OPTION,
    remote_env: list[str] = REMOTE_ENV,
    as_user: str | None = AS_USER,
    no_open: bool = NO_OPEN,
    accept_new: bool = ACCEPT_NEW,
    allow_host: list[str] = ALLOW_HOST,
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        metavar="SECONDS",
        help="Stop the command after this many seconds (default: no limit).",
    ),
    verbose: int = VERBOSE,
    transport_name: str | None = TRANSPORT,
    no_reuse: bool = NO_REUSE,
) -> None:
    """Run a remote CLI, forwarding its callbacks.

    Each loopback callback port the command prints is forwarded, and its login URL opened.
    """
    import shutil

    from tunnelauth import output, remote

    terminal = sys.stdin.isatty()
    reporter = output.ConsoleReporter(1 + min(verbose, 1) if verbose else 0)

    def request() -> flow.RunRequest:
        size = shutil.get_terminal_size()
        env = remote.parse_env(remote_env)
        user = remote.check_user(as_user) if as_user else None
        remote.check_sizes(tuple(command), env)
        limit = _check_timeout(timeout) if timeout is not None else None
        route = _route(
            destination,
            jump,
            port,
            login_name,
            identity,
            config_file,
            option,
            accept_new,
            transport_name,
            no_reuse,
        )
        from tunnelauth import flow

        return flow.RunRequest(
            **route,  # type: ignore[arg-type]
            remote_env=env,
            as_user=user,
            open_browser=not no_open,
            timeout=limit,
            allow_hosts=tuple(h.lower() for h in allow_host),
            command=tuple(command),
            pty=terminal,
            size=(size.columns, size.lines) if terminal else None,
            stdin_fd=sys.stdin.fileno() if not sys.stdin.closed else None,
        )

    if terminal:
        # Like ssh -t: keys go to the remote terminal as typed (Ctrl-C included), its echo comes back.
        import termios
        import tty

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno())
        reporter.newline = "\r\n"
        raw_ask = reporter.ask

        def ask(prompt: str, secret: bool) -> str | None:
            # ssh's prompts (passphrase, password, codes) come before the session: in the
            # terminal as the person left it (Enter, Ctrl-C), as ssh asks them.
            fd = sys.stdin.fileno()
            raw = termios.tcgetattr(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            try:
                return raw_ask(prompt, secret)
            finally:
                termios.tcsetattr(fd, termios.TCSADRAIN, raw)

        reporter.ask = ask  # type: ignore[method-assign]
        try:
            result = _execute(request, reporter)
        finally:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    else:
        result = _execute(request, reporter)
    sys.stdout.flush()
    raise typer.Exit(result.exit_status)


def _execute(
    build: Callable[[], flow.Request], reporter: output.ConsoleReporter
) -> flow.LoginResult:
    """Build the request and run it; every failure becomes its message and exit code."""
    from tunnelauth import preconnect

    try:
        request = build()  # first: it starts the first hop's connection before the imports below
        import asyncio
        import logging

        from tunnelauth import flow

        # asyncio's own warnings (a ProxyCommand that exits at once, say) are not for the user:
        # every failure reaches them as tunnelauth's one-line error.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return asyncio.run(flow.run(request, reporter))
    except TunnelauthError as exc:
        reporter.failure(str(exc), exc.exit_code)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        reporter.failure("interrupted", 130)
        raise typer.Exit(130) from None
    finally:
        preconnect.discard()
        reporter.restore_terminal()


@app.command("providers")
def list_providers() -> None:
    """List the providers tunnelauth knows.

    With their hermes command, flows, callback port and the releases they were checked with.
    """
    from tunnelauth.providers import PROVIDERS

    rows = [("PROVIDER", "ALIASES", "REMOTE COMMAND", "FLOW", "PORT", "RELEASES")]
    for p in PROVIDERS:
        rows.append(
            (
                p.name,
                ", ".join(n for n in p.names[1:]) or "-",
                "hermes " + " ".join(p.args),
                " / ".join(f.value for f in p.flows),
                str(p.port or "-"),
                p.releases or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        )


@app.command("exit-codes")
def exit_codes() -> None:
    """List tunnelauth's exit codes."""
    for code, meaning in sorted(EXIT_CODES.items()):
        print(f"{code:>3}  {meaning}")


@app.command("doctor")
def doctor(
    destinations: list[str] = typer.Argument(
        ...,
        metavar="DESTINATION...",
        help="[user@]host[:port] or Host aliases from the ssh config, one or more.",
    ),
    jump: str | None = JUMP,
    port: int | None = PORT,
    login_name: str | None = LOGIN,
    identity: list[str] = IDENTITY,
    config_file: Path | None = CONFIG,
    option: list[str] = OPTION,
    provider: str | None = typer.Option(
        None,
        "--provider",
        metavar="PROVIDER",
        help="Check for this provider only (default: every provider).",
    ),
    hermes: str = typer.Option(
        "hermes",
        "--hermes",
        metavar="COMMAND",
        help="The remote hermes command, looked up as a login does.",
    ),
    remote_env: list[str] = REMOTE_ENV,
    as_user: str | None = AS_USER,
    hermes_home: str | None = typer.Option(
        None, "--hermes-home", metavar="DIR", help="HERMES_HOME for the remote hermes."
    ),
    accept_new: bool = ACCEPT_NEW,
    json_output: bool = typer.Option(
        False, "--json", help="One JSON document on stdout instead of a table."
    ),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail too (exit 1)."),
    concurrency: int = typer.Option(
        16, "--concurrency", metavar="N", help="Destinations checked at the same time."
    ),
    transport_name: str | None = typer.Option(
        "asyncssh",
        "--ssh",
        metavar="asyncssh|openssh|both",
        help="Which transport to check logins with; with asyncssh, ssh is tried too when a hop refuses asyncssh's authentication.",
    ),
) -> None:
    """Check that logins would work (for CI).

    Checks the hops, forwarding, hermes and its flows, callback ports and token directory of
    each DESTINATION. Exit 0 when nothing fails; leaves nothing running.
    """
    import asyncio

    from tunnelauth import doctor as checkup
    from tunnelauth import output, providers, remote

    try:
        if concurrency < 1:
            raise UsageError(f"--concurrency {concurrency} must be 1 or more")
        env = remote.parse_env(remote_env)
        if hermes_home:
            env["HERMES_HOME"] = hermes_home
        if not hermes.strip() or "\0" in hermes:
            raise UsageError("--hermes must name a command")
        remote.check_sizes((hermes, "--version"), env)  # what the probe's `hermes --version` gets
        if transport_name not in ("asyncssh", "openssh", "both"):
            raise UsageError(f"--ssh {transport_name!r} is not one of: asyncssh, openssh, both")
        routes = [
            (
                d,
                *_hops(
                    d,
                    jump,
                    port,
                    login_name,
                    identity,
                    config_file,
                    option,
                    accept_new,
                    head_start=False,
                    command_line=True,
                ),
            )
            for d in destinations
        ]
        request = checkup.DoctorRequest(
            destinations=tuple((d, hops) for d, hops, _ in routes),
            targets={d: target for d, _, target in routes if target is not None},
            transports=("asyncssh", "openssh") if transport_name == "both" else (transport_name,),
            providers=(providers.lookup(provider),) if provider else providers.PROVIDERS,
            provider_given=provider is not None,
            hermes=hermes,
            remote_env=env,
            as_user=remote.check_user(as_user) if as_user else None,
            strict=strict,
            concurrency=concurrency,
        )
        report = asyncio.run(checkup.run(request))
    except TunnelauthError as exc:
        output.ConsoleReporter().error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        output.ConsoleReporter().error("interrupted")
        raise typer.Exit(130) from None
    (checkup.as_json if json_output else checkup.as_table)(report)
    raise typer.Exit(report.exit_code)


def _usage_error(message: str) -> NoReturn:
    from tunnelauth import output

    output.ConsoleReporter().error(message)
    raise SystemExit(UsageError.exit_code)


def _shorthand(args: list[str]) -> list[str]:
    """`tunnelauth xai host` means `tunnelauth login xai host`; a word that is neither a command
    nor a provider is an error naming the closest of both, never a provider to log into."""
    if not args or args[0] in SUBCOMMANDS or args[0] in ("-h", "--help", "--version"):
        return args
    if not args[0].startswith("-"):
        from tunnelauth.providers import PROVIDERS, did_you_mean

        names = [n for p in PROVIDERS for n in p.names]
        if args[0].strip().lower() not in names:
            guess = did_you_mean(args[0], sorted(SUBCOMMANDS) + names)
            commands, known = ", ".join(sorted(SUBCOMMANDS)), ", ".join(p.name for p in PROVIDERS)
            _usage_error(
                f"unknown command or provider {args[0]!r}"
                + (guess or f" (commands: {commands}; providers: {known})")
            )
    return ["login", *args]


def main(argv: list[str] | None = None) -> None:
    args = _shorthand(list(sys.argv[1:] if argv is None else argv))
    # click's UsageError, found through its public subclass (newer typers vendor click).
    click_usage_error: Any = next(
        c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
    )
    try:
        code = app(args=args, prog_name="tunnelauth", standalone_mode=False)
    except click_usage_error as exc:  # a missing argument, an ill-typed option, a typo'd option
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx:  # bare `tunnelauth`: the help
            print(exc.ctx.get_help(), file=sys.stderr)
            raise SystemExit(UsageError.exit_code) from None
        where = f"; see '{exc.ctx.command_path} -h'" if exc.ctx else ""
        _usage_error(exc.format_message().rstrip(".") + where)
    except typer.Abort:  # Ctrl-C outside a command's own handling (at a click prompt, say)
        from tunnelauth import output

        output.ConsoleReporter().error("interrupted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
