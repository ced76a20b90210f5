"""The real command line, run as a subprocess: what a user sees on stdout, stderr and $?.

Nothing here contacts any host. The only destination used is lab@198.18.255.254 (an
unroutable benchmarking address), and only in cases that must fail before connecting;
each such case asserts it fails within seconds. Cases that once got past validation also
pass `-o ProxyCommand=false`, so the "connection" would be a local process that exits at
once and no address is contacted whatever happens.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tunnelauth import __version__
from tunnelauth.errors import EXIT_CODES, UsageError
from tunnelauth.providers import PROVIDERS, lookup

REPO = Path(__file__).resolve().parents[1]
DEST = (
    "lab@198.18.255.254"  # TEST-NET benchmarking range; only for must-fail-before-connecting cases
)
XAI_PORT = 56121
FAST = 5.0  # seconds: a usage error is reported before anything is contacted


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME for the CLI, so a developer's ~/.ssh/config (Match exec, ProxyCommand...)
    and known_hosts never take part."""
    home = tmp_path / "home"
    home.mkdir()
    return home


Runner = Callable[..., Run]


@pytest.fixture
def tunnelauth(home: Path) -> Runner:
    def run(*args: str, timeout: float = 30) -> Run:
        env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        env.pop("SSH_AUTH_SOCK", None)
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "tunnelauth", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=timeout,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)

    return run


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Like tunnelauth's own check: connections in TIME_WAIT do not make the port busy.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(8)
    except OSError:
        sock.close()
        raise
    return sock


def assert_usage_error(run: Run, *fragments: str) -> str:
    """Exit 2, one `tunnelauth: error:` line naming the bad value, nothing on stdout, fast."""
    assert run.code == 2, f"exit {run.code}, stderr:\n{run.err}"
    assert run.out == ""
    assert len(run.err_lines) == 1, f"expected one stderr line, got:\n{run.err}"
    line = run.err_lines[0]
    assert line.startswith("tunnelauth: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert run.seconds < FAST, f"took {run.seconds:.1f} s: was something contacted?"
    return line


# --------------------------------------------------------------------------------------
# Bad input: exit 2, one clear line, nothing contacted
# --------------------------------------------------------------------------------------


# (arguments after `tunnelauth`, the bad value as shown, what the line tells the user to do)
BAD_INPUT = {
    "unknown provider": (
        ["bogus", DEST],
        "unknown command or provider 'bogus'",
        "providers: xai, spotify, anthropic, codex, minimax, nous",
    ),
    "unknown provider after login": (
        ["login", "bogus", DEST],
        "'bogus'",
        "choose one of: xai, spotify, anthropic, codex, minimax, nous",
    ),
    "destination with a shell metacharacter": (
        ["xai", "host;touch /tmp/tunnelauth-test-pwned"],
        "'host;touch /tmp/tunnelauth-test-pwned'",
        "use [user@]host[:port]",
    ),
    "empty jump hop": (["xai", DEST, "-J", "a,,b"], "-J 'a,,b'", "use -J host1[,host2...]"),
    "jump host with a shell metacharacter": (
        ["xai", DEST, "-J", "a;b"],
        "jump host 'a;b'",
        "use [user@]host[:port]",
    ),
    "typo of a command": (
        ["provders"],
        "unknown command or provider 'provders'",
        "did you mean 'providers'?",
    ),
    "typo of a command, with arguments": (
        ["doctr", DEST],
        "unknown command or provider 'doctr'",
        "did you mean 'doctor'?",
    ),
    "typo of a provider": (
        ["spotfy", DEST],
        "unknown command or provider 'spotfy'",
        "did you mean 'spotify'?",
    ),
    "typo of a provider after login": (
        ["login", "spotfy", DEST],
        "unknown provider 'spotfy'",
        "did you mean 'spotify'?",
    ),
    "-o without =": (["xai", DEST, "-o", "NoEquals"], "-o 'NoEquals'", "missing '='"),
    "missing destination": (["xai"], "Missing argument 'DESTINATION'", "see 'tunnelauth login -h'"),
    "ill-typed port": (["xai", DEST, "-p", "abc"], "'abc' is not a valid int", "'--port'"),
    "ill-typed timeout": (["xai", DEST, "--timeout", "soon"], "'soon'", "'--timeout'"),
    "unknown option": (["xai", DEST, "--bogus"], "--bogus", "see 'tunnelauth login -h'"),
    "unsupported -o": (["xai", DEST, "-o", "Bogus=1"], "'Bogus'", "keywords of ssh_config(5)"),
    "UserKnownHostsFile none": (
        ["xai", DEST, "-o", "UserKnownHostsFile=none"],
        "UserKnownHostsFile none",
        "tunnelauth always checks",
    ),
    "env name starting with a digit": (
        ["xai", DEST, "--remote-env", "1BAD=x"],
        "'1BAD=x'",
        "not starting with a digit",
    ),
    "env without =": (["xai", DEST, "--remote-env", "NOEQUALS"], "'NOEQUALS'", "KEY=VALUE"),
    "env name with a shell metacharacter": (
        ["xai", DEST, "--remote-env", "A;B=x"],
        "'A;B=x'",
        "names are letters, digits and _",
    ),
    "zero timeout": (["xai", DEST, "--timeout", "0"], "--timeout 0", "must be more than 0 seconds"),
    "negative timeout": (
        ["xai", DEST, "--timeout", "-5"],
        "--timeout -5",
        "must be more than 0 seconds",
    ),
    "missing identity file": (
        ["xai", DEST, "-i", "/nonexistent/key"],
        "-i /nonexistent/key",
        "no such key file",
    ),
    "missing config file": (
        ["xai", DEST, "-F", "/nonexistent/config"],
        "-F /nonexistent/config",
        "no such file",
    ),
    "port out of range": (["xai", DEST, "-p", "70000"], "'70000'", "from 1 to 65535"),
    "port zero": (["xai", DEST, "-p", "0"], "'0'", "from 1 to 65535"),
    "destination port out of range": (
        ["xai", "lab@198.18.255.254:65536"],
        "'65536'",
        "from 1 to 65535",
    ),
    "as-user with a shell metacharacter": (
        ["xai", DEST, "--as-user", "root;id"],
        "--as-user 'root;id'",
        "is not a valid user name",
    ),
    "empty --hermes": (["xai", DEST, "--hermes", " "], "--hermes", "must name a command"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_one_clear_line_and_exit_2(tunnelauth: Runner, case: str) -> None:
    args, bad_value, what_to_do = BAD_INPUT[case]
    assert_usage_error(tunnelauth(*args), bad_value, what_to_do)


def test_a_shell_metacharacter_in_the_destination_runs_nothing(
    tunnelauth: Runner, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    run = tunnelauth("xai", f"host;touch {marker}")
    assert_usage_error(run, f"host;touch {marker}")
    assert not marker.exists()


def test_a_destination_that_looks_like_an_option_never_becomes_one(
    tunnelauth: Runner, tmp_path: Path
) -> None:
    # After `--`, click hands it over as the destination; tunnelauth must refuse it.
    marker = tmp_path / "pwned"
    run = tunnelauth("login", "xai", "--", f"-oProxyCommand=touch {marker}")
    assert_usage_error(run, f"'-oProxyCommand=touch {marker}'", "is not a host name")
    assert not marker.exists()


# Regressions: each of these was once accepted or crashed instead of being one exit-2 line.
# Should validation let them through again, -o ProxyCommand=false makes the connect step
# fail locally (exit 5, or exit 3 if the xai port happens to be busy): nothing is contacted.
NO_NETWORK = ["-o", "ProxyCommand=false"]
SLIPPED_THROUGH_ONCE = {
    "non-ASCII digit port": (["xai", "lab@198.18.255.254:\u00b2"], "'lab@198.18.255.254:\u00b2'"),
    "env name with a trailing newline": (["xai", DEST, "--remote-env", "A\n=x"], "--remote-env"),
    "as-user with a trailing newline": (["xai", DEST, "--as-user", "root\n"], "--as-user"),
    "timeout nan": (["xai", DEST, "--timeout", "nan"], "--timeout nan"),
    "-l with a shell metacharacter": (["xai", "198.18.255.254", "-l", "root;id"], "'root;id'"),
    "-o User with a shell metacharacter": (
        ["xai", "198.18.255.254", "-o", "User=root;id"],
        "'root;id'",
    ),
}


@pytest.mark.parametrize(
    "case",
    list(SLIPPED_THROUGH_ONCE),
    ids=list(SLIPPED_THROUGH_ONCE),
)
def test_bad_input_that_once_slipped_through(tunnelauth: Runner, case: str) -> None:
    args, bad_value = SLIPPED_THROUGH_ONCE[case]
    assert_usage_error(tunnelauth(*args, *NO_NETWORK), bad_value)


def test_a_malformed_known_hosts_line_is_not_a_traceback(tunnelauth: Runner, home: Path) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh/known_hosts").write_text("stray-text-without-a-key\n")
    # codex needs no local port; ProxyCommand=false means the "connection" is a local
    # process that exits at once, so no address is contacted whatever happens.
    run = tunnelauth("codex", DEST, *NO_NETWORK)
    assert "Traceback" not in run.err
    assert run.code in (4, 5), run.err
    errors = [line for line in run.err_lines if line.startswith("tunnelauth: error: ")]
    assert len(errors) == 1, run.err
    assert run.out == ""


# --------------------------------------------------------------------------------------
# The local callback port is busy: exit 3, named holder, nothing disturbed
# --------------------------------------------------------------------------------------


def test_busy_callback_port_names_the_holder_and_leaves_it_alone(tunnelauth: Runner) -> None:
    try:
        server = _listen(XAI_PORT)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            pytest.skip(f"127.0.0.1:{XAI_PORT} is already taken by another process")
        raise
    with server:
        run = tunnelauth("xai", DEST)

        assert run.code == 3, run.err
        assert run.out == ""
        assert len(run.err_lines) == 1, run.err
        line = run.err_lines[0]
        assert line.startswith("tunnelauth: error: ")
        assert f"port {XAI_PORT}" in line
        assert f"pid {os.getpid()}" in line
        assert "already in use" in line
        assert "stop that process" in line
        assert run.seconds < FAST

        # The port is still ours: a client connecting to it reaches this socket.
        assert server.getsockname() == ("127.0.0.1", XAI_PORT)
        server.settimeout(2)
        with socket.create_connection(("127.0.0.1", XAI_PORT), timeout=2) as client:
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"still mine")
                assert accepted.recv(16) == b"still mine"


# --------------------------------------------------------------------------------------
# Informational commands
# --------------------------------------------------------------------------------------


def test_help(tunnelauth: Runner) -> None:
    for flag in ("--help", "-h"):
        run = tunnelauth(flag)
        assert run.code == 0, run.err
        assert "Usage: tunnelauth" in run.out
        assert "login" in run.out
        assert "providers" in run.out
        assert "exit-codes" in run.out
        assert "PROVIDER DESTINATION" in run.out


def test_login_help_lists_the_options(tunnelauth: Runner) -> None:
    run = tunnelauth("login", "--help")
    assert run.code == 0, run.err
    for option in (
        "-J",
        "--port",
        "--login",
        "--identity",
        "--config",
        "-o",
        "--hermes",
        "--remote-env",
        "--as-user",
        "--hermes-home",
        "--no-open",
        "--accept-new",
        "--timeout",
        "--verbose",
        "--quiet",
    ):
        assert option in run.out, option


def _help_at_80_columns(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "tunnelauth", *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_command_summaries_are_whole_on_an_80_column_terminal() -> None:
    out = _help_at_80_columns()
    commands = out.split("Commands:")[1]
    assert "..." not in commands, commands
    for command in ("login", "run", "providers", "exit-codes", "doctor"):
        summary = next(line for line in commands.splitlines() if line.split()[:1] == [command])
        assert summary.rstrip().endswith((".", ")")), summary


@pytest.mark.parametrize("command", ["login", "run", "doctor"])
def test_help_shows_uppercase_metavars_and_no_meaningless_defaults(command: str) -> None:
    out = _help_at_80_columns(command)
    assert "[default: 0]" not in out and "[default: 300.0]" not in out
    assert (
        "<str>" not in out and "<int>" not in out and "<float>" not in out and "<path>" not in out
    )
    for shown in ("-J, --jump HOPS", "-p, --port PORT", "-i, --identity FILE", "-o KEY=VALUE"):
        assert shown in out, shown
    usage = out.splitlines()[0]
    assert "DESTINATION" in usage and "destination" not in usage, usage


def test_no_arguments_shows_the_help_as_a_usage_error(tunnelauth: Runner) -> None:
    run = tunnelauth()
    assert run.code == 2 and run.out == ""
    assert run.err.startswith("Usage: tunnelauth") and "Commands:" in run.err


def test_version(tunnelauth: Runner) -> None:
    run = tunnelauth("--version")
    assert run.code == 0
    assert run.out.strip() == f"tunnelauth {__version__}"
    assert run.err == ""


def _table(text: str) -> dict[str, dict[str, str]]:
    lines = text.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_providers(tunnelauth: Runner) -> None:
    run = tunnelauth("providers")
    assert run.code == 0, run.err
    assert run.err == ""
    table = _table(run.out)
    assert list(table) == ["xai", "spotify", "anthropic", "codex", "minimax", "nous"]

    assert table["xai"]["REMOTE COMMAND"] == "hermes auth add xai-oauth --no-browser"
    assert table["xai"]["PORT"] == "56121"
    assert "grok" in table["xai"]["ALIASES"]
    assert table["spotify"]["REMOTE COMMAND"] == "hermes auth spotify --no-browser"
    assert table["spotify"]["PORT"] == "43827"
    assert table["anthropic"]["REMOTE COMMAND"] == "hermes auth add anthropic"
    assert table["codex"]["REMOTE COMMAND"] == "hermes auth add openai-codex"
    assert "openai-codex" in table["codex"]["ALIASES"]
    assert table["minimax"]["REMOTE COMMAND"] == "hermes auth add minimax-oauth"
    assert "minimax-oauth" in table["minimax"]["ALIASES"]
    assert "nous-portal" in table["nous"]["ALIASES"]
    for name in ("anthropic", "codex", "minimax", "nous"):
        assert table[name]["PORT"] == "-", name


def test_providers_table_matches_the_provider_data(tunnelauth: Runner) -> None:
    table = _table(tunnelauth("providers").out)
    for provider in PROVIDERS:
        row = table[provider.name]
        assert row["REMOTE COMMAND"] == "hermes " + " ".join(provider.args)
        assert row["PORT"] == (str(provider.port) if provider.port else "-")
        for alias in provider.names[1:]:
            assert alias in row["ALIASES"]


def test_exit_codes(tunnelauth: Runner) -> None:
    run = tunnelauth("exit-codes")
    assert run.code == 0, run.err
    listed = {}
    for line in run.out.splitlines():
        code, meaning = line.strip().split(None, 1)
        listed[int(code)] = meaning
    assert sorted(listed) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130, 143]
    assert listed == EXIT_CODES
    assert "nothing was contacted" in listed[2]


# --------------------------------------------------------------------------------------
# Provider names and aliases
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("xai", "xai"),
        ("grok", "xai"),
        ("xai-oauth", "xai"),
        ("GROK", "xai"),
        (" Grok ", "xai"),
        ("spotify", "spotify"),
        ("anthropic", "anthropic"),
        ("claude", "anthropic"),
        ("codex", "codex"),
        ("openai-codex", "codex"),
        ("openai", "codex"),
        ("minimax", "minimax"),
        ("minimax-oauth", "minimax"),
        ("nous", "nous"),
        ("nous-portal", "nous"),
    ],
)
def test_provider_aliases_resolve(name: str, provider: str) -> None:
    assert lookup(name).name == provider


def test_unknown_provider_lookup_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as excinfo:
        lookup("gemini")
    assert excinfo.value.exit_code == 2
    assert "'gemini'" in str(excinfo.value)
    assert "xai, spotify, anthropic, codex, minimax, nous" in str(excinfo.value)


def test_an_alias_works_on_the_command_line(tunnelauth: Runner) -> None:
    # `grok` resolves (no "unknown provider"), then the bad destination is what is reported.
    run = tunnelauth("grok", "host;x")
    assert_usage_error(run, "destination 'host;x'")


# -- sizes the target cannot exec are refused before connecting (issue 12) ----------------------


def test_remote_env_adding_up_past_the_limit_is_refused_before_connecting(
    tunnelauth: Runner,
) -> None:
    from tunnelauth.remote import MAX_ARGS_TOTAL

    value = "v" * 120_000  # each fits one exec argument; nine of them do not fit what we pass on
    args = [a for i in range(9) for a in ("--remote-env", f"BIG{i}={value}")]
    run = tunnelauth("xai", DEST, *args, *NO_NETWORK)
    assert_usage_error(run, "--remote-env", str(MAX_ARGS_TOTAL))
    assert run.seconds < FAST


def test_doctor_refuses_the_same_sizes_before_connecting(tunnelauth: Runner) -> None:
    from tunnelauth.remote import MAX_ARGS_TOTAL

    value = "v" * 120_000
    args = [a for i in range(9) for a in ("--remote-env", f"BIG{i}={value}")]
    run = tunnelauth("doctor", DEST, *args, *NO_NETWORK)
    assert_usage_error(run, "--remote-env", str(MAX_ARGS_TOTAL))
    assert run.seconds < FAST


def test_one_value_larger_than_an_exec_argument_is_refused() -> None:
    # Linux's own exec limit stops such a value on the laptop's command line already; a laptop
    # with other limits (macOS) could pass it, and the target's execve would refuse it.
    from tunnelauth.remote import MAX_ARG, check_sizes

    check_sizes(("hermes",), {"OK": "v" * (MAX_ARG - len("OK=") - 1)})
    with pytest.raises(UsageError, match="at most"):
        check_sizes(("hermes",), {"BIG": "v" * MAX_ARG})
    with pytest.raises(UsageError, match="argument of the remote command"):
        check_sizes(("cmd", "a" * MAX_ARG), {})


def test_remote_env_by_name_takes_the_value_from_tunnelauths_environment() -> None:
    from tunnelauth.remote import parse_env

    assert parse_env(["TOKEN", "A=b"], {"TOKEN": "from the environment"}) == {
        "TOKEN": "from the environment",
        "A": "b",
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_env(["TOKEN"], {})
