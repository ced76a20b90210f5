"""The command line: arguments in, a LoginRequest out, exit codes back. No logic lives here."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tunnelauth import __version__
from tunnelauth.errors import EXIT_CODES, TunnelauthError, UsageError

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain help: rich costs more start-up time than the whole login path
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Log a remote Hermes Agent into a provider through one SSH connection.\n\n"
        "`tunnelauth PROVIDER DESTINATION [options]` is short for `tunnelauth login ...`."
    ),
)

SUBCOMMANDS = {"login", "providers", "exit-codes"}


def _version(value: bool) -> None:
    if value:
        print(f"tunnelauth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


@app.command()
def login(
    provider: str = typer.Argument(..., help="xai, spotify, anthropic, codex, minimax or nous (see `providers`)."),
    destination: str = typer.Argument(..., help="[user@]host[:port], or a Host alias from the ssh config."),
    jump: Optional[str] = typer.Option(None, "-J", "--jump", help="Jump hosts: [user@]host[:port][,...], like ssh -J."),
    port: Optional[int] = typer.Option(None, "-p", "--port", help="SSH port of the destination."),
    login_name: Optional[str] = typer.Option(None, "-l", "--login", help="Remote user name."),
    identity: List[str] = typer.Option([], "-i", "--identity", help="Private key file (repeatable)."),
    config_file: Optional[Path] = typer.Option(None, "-F", "--config", help="ssh config file (default ~/.ssh/config)."),
    option: List[str] = typer.Option([], "-o", help="ssh option Key=Value (repeatable), as for ssh -o."),
    hermes: str = typer.Option("hermes", "--hermes", help="The remote hermes command (found on the login PATH and in the usual install places)."),
    remote_env: List[str] = typer.Option([], "--remote-env", help="KEY=VALUE for the remote command (repeatable)."),
    as_user: Optional[str] = typer.Option(None, "--as-user", help="Run hermes as this remote user, through sudo -n."),
    hermes_home: Optional[str] = typer.Option(None, "--hermes-home", help="HERMES_HOME for the remote hermes."),
    client_id: Optional[str] = typer.Option(None, "--client-id", help="Answer for hermes's `Spotify Client ID:` prompt."),
    no_open: bool = typer.Option(False, "--no-open", help="Print URLs instead of opening the browser."),
    accept_new: bool = typer.Option(False, "--accept-new", help="Record unknown host keys in known_hosts (changed keys are always refused)."),
    allow_host: List[str] = typer.Option([], "--allow-host", help="Open authorize URLs on this host without a warning (labs)."),
    timeout: float = typer.Option(300.0, "--timeout", help="Give up (and stop the remote hermes) after this many seconds."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="Show every remote line and every decision."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only what needs you (a URL not opened, a code, a prompt), errors and the result."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per line on stdout (connected, forwarded, url, device code, success, failure)."),
) -> None:
    """Log the remote hermes into PROVIDER, forwarding its callback through SSH."""
    import asyncio

    from tunnelauth import flow, output, providers, remote, ssh

    reporter = output.JsonReporter() if json_lines else output.ConsoleReporter(0 if quiet else 1 + min(verbose, 1))
    try:
        if not math.isfinite(timeout) or timeout <= 0:
            raise UsageError(f"--timeout {timeout:g} must be more than 0 seconds")
        if port is not None:
            ssh.parse_port(str(port), "-p")
        settings = ssh.SshSettings(
            config_file=config_file.expanduser() if config_file else None,
            identities=tuple(str(Path(i).expanduser()) for i in identity),
            login=ssh.check_login(login_name, "-l") if login_name else None,
            port=port,
            options=dict(ssh.parse_option(o) for o in option),
            accept_new=accept_new,
        )
        for path in settings.identities:
            if not Path(path).is_file():
                raise UsageError(f"-i {path}: no such key file")
        env = remote.parse_env(remote_env)
        if hermes_home:
            env["HERMES_HOME"] = hermes_home
        if not hermes.strip() or "\0" in hermes:
            raise UsageError("--hermes must name a command")
        answers = {"Spotify Client ID": client_id} if client_id else {}
        request = flow.LoginRequest(
            provider=providers.lookup(provider),
            hops=tuple(ssh.plan(ssh.parse_endpoint(destination),
                                ssh.parse_jumps(jump) if jump is not None else None, settings)),
            hermes=hermes,
            remote_env=env,
            as_user=remote.check_user(as_user) if as_user else None,
            open_browser=not no_open,
            timeout=timeout,
            allow_hosts=tuple(h.lower() for h in allow_host),
            answers=answers,
        )
        result = asyncio.run(flow.run(request, reporter))
    except TunnelauthError as exc:
        reporter.failure(str(exc), exc.exit_code)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        reporter.failure("interrupted", 130)
        raise typer.Exit(130) from None
    reporter.result(result)


@app.command("providers")
def list_providers() -> None:
    """List the providers tunnelauth knows, with their hermes command and flow."""
    from tunnelauth.providers import PROVIDERS

    rows = [("PROVIDER", "ALIASES", "REMOTE COMMAND", "FLOW", "PORT", "RELEASES")]
    for p in PROVIDERS:
        rows.append((
            p.name,
            ", ".join(n for n in p.names[1:]) or "-",
            "hermes " + " ".join(p.args),
            " / ".join(f.value for f in p.flows),
            str(p.port or "-"),
            p.releases or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@app.command("exit-codes")
def exit_codes() -> None:
    """List tunnelauth's exit codes."""
    for code, meaning in sorted(EXIT_CODES.items()):
        print(f"{code:>3}  {meaning}")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # `tunnelauth xai host` means `tunnelauth login xai host`.
    if args and args[0] not in SUBCOMMANDS and args[0] not in ("-h", "--help", "--version"):
        args.insert(0, "login")
    app(args=args, prog_name="tunnelauth")
