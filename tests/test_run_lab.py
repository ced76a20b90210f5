"""`tunnelauth run` with CLIs shaped like codex, az/MCP, kubelogin, in the SSH lab."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cli(lab: Lab) -> Path:
    return e2e.install_script(lab, e2e.FAKES / "loopback_cli.py", "loopback-cli")


def run_args(lab: Lab, cli: Path, provider: e2e.Provider, *cli_args: str) -> list[str]:
    return [
        "run",
        "target",
        "--allow-host",
        lab.provider_ip,
        "-v",
        "--",
        str(cli),
        "--provider",
        provider.url,
        *cli_args,
    ]


def callbacks(laptop: e2e.Laptop) -> list[str]:
    return [str(run["final"]) for run in laptop.browser_runs()]


@e2e.BOTH_TRANSPORTS
def test_fixed_port_printed_plainly(
    lab: Lab, laptop: e2e.Laptop, cli: Path, provider: e2e.Provider
) -> None:
    run = laptop.run(run_args(lab, cli, provider, "--port", "1455", "--style", "plain"))
    assert run.returncode == 0, run.output
    assert "Got a code on port 1455." in run.stdout and "Logged in." in run.stdout
    assert callbacks(laptop) == ["127.0.0.1:1455/callback"]
    assert 1455 not in lab.listening_ports("laptop")


def test_random_port_only_inside_an_encoded_redirect_uri(
    lab: Lab, laptop: e2e.Laptop, cli: Path, provider: e2e.Provider
) -> None:
    run = laptop.run(run_args(lab, cli, provider, "--style", "encoded"))
    assert run.returncode == 0, run.output
    port = int(run.stdout.split("Got a code on port ")[1].split(".")[0])
    assert callbacks(laptop) == [f"127.0.0.1:{port}/callback"]
    assert f"port {port}: seen" in run.stderr  # -v says why each port was forwarded


@e2e.BOTH_TRANSPORTS
def test_localhost_redirect_to_a_cli_listening_on_ipv6_only(
    lab: Lab, laptop: e2e.Laptop, cli: Path, provider: e2e.Provider
) -> None:
    run = laptop.run(
        run_args(
            lab,
            cli,
            provider,
            "--listen",
            "::1",
            "--redirect-host",
            "localhost",
            "--style",
            "encoded",
        )
    )
    assert run.returncode == 0, run.output
    assert "Logged in." in run.stdout
    assert len(callbacks(laptop)) == 1 and callbacks(laptop)[0].startswith("localhost:")


def test_two_ports_in_one_session(
    lab: Lab, laptop: e2e.Laptop, cli: Path, provider: e2e.Provider
) -> None:
    run = laptop.run(run_args(lab, cli, provider, "--ports", "8000,18000", "--style", "plain"))
    assert run.returncode == 0, run.output
    assert callbacks(laptop) == ["127.0.0.1:8000/callback", "127.0.0.1:18000/callback"]
    assert not {8000, 18000} & lab.listening_ports("laptop")


@e2e.BOTH_TRANSPORTS
def test_exit_status_of_the_command_is_tunnelauths(
    lab: Lab, laptop: e2e.Laptop, cli: Path, provider: e2e.Provider
) -> None:
    run = laptop.run(run_args(lab, cli, provider, "--style", "encoded", "--exit", "42"))
    assert run.returncode == 42, run.output
    assert e2e.gone_within(lab, "loopback-cli", 5)


def test_lookalike_output_opens_no_browser(
    lab: Lab, laptop: e2e.Laptop, cli: Path, provider: e2e.Provider
) -> None:
    run = laptop.run(run_args(lab, cli, provider, "--noise", "--style", "encoded"))
    assert run.returncode == 0, run.output
    assert all(":8080" not in str(r["url"]) for r in laptop.browser_runs())
    assert "port 8080: seen" in run.stderr  # forwarded (harmless) and said why
    assert len(laptop.browser_runs()) == 1


def test_interactive_prompt_answered_through_the_terminal(
    lab: Lab, laptop: e2e.Laptop, cli: Path, provider: e2e.Provider
) -> None:
    proc, tty = laptop.start_with_tty(
        run_args(lab, cli, provider, "--prompt", "--style", "encoded")
    )
    try:
        out = b""
        import select
        import time

        deadline = time.monotonic() + 30
        while b"Continue?" not in out and time.monotonic() < deadline:
            # The remote terminal's output arrives on our stdout pipe, not on the pty.
            assert proc.stdout is not None
            ready = select.select([proc.stdout.fileno()], [], [], 0.2)[0]
            if ready:
                out += os.read(proc.stdout.fileno(), 4096)
        assert b"Continue?" in out, out
        os.write(tty, b"y\r")
        run = e2e.finish(proc)
    finally:
        os.close(tty)
    assert run.returncode == 0, run.output
    assert "Logged in." in run.stdout


def test_run_through_a_target_that_forbids_forwarding(
    clean_lab: Lab, cli: Path, provider: e2e.Provider
) -> None:
    clean_lab.start_sshd("target", extra=["AllowTcpForwarding no"])
    laptop = e2e.Laptop(clean_lab)
    run = laptop.run(run_args(clean_lab, cli, provider, "--style", "encoded"))
    assert run.returncode == 0, run.output
    assert "relaying the callback" in run.stderr and "Logged in." in run.stdout


def test_as_user_on_a_terminal_gets_its_environment_and_the_terminal(
    lab: Lab, laptop: e2e.Laptop
) -> None:
    # --as-user hands the environment over a pipe (not sudo's command line); on a terminal the
    # command must still get the terminal as its stdin afterwards, and read what is typed.
    import select
    import time

    script = 'tty; echo "who:$(id -un) env:$TA_VALUE"; printf "Continue? "; read x; echo "got:$x"'
    proc, tty = laptop.start_with_tty(
        [
            "run",
            "root@target",
            "--as-user",
            lab.user,
            "--remote-env",
            "TA_VALUE=through the channel",
            "--",
            "sh",
            "-c",
            script,
        ]
    )
    try:
        out = b""
        deadline = time.monotonic() + 30
        while b"Continue?" not in out and time.monotonic() < deadline:
            assert proc.stdout is not None
            if select.select([proc.stdout.fileno()], [], [], 0.2)[0]:
                out += os.read(proc.stdout.fileno(), 4096)
        assert b"Continue?" in out, out
        os.write(tty, b"typed\r")
        run = e2e.finish(proc)
    finally:
        os.close(tty)
    text = out.decode(errors="replace") + run.stdout
    assert run.returncode == 0, run.output
    assert "/dev/pts/" in text and f"who:{lab.user} env:through the channel" in text, text
    assert "got:typed" in text, text
