"""outcome.py: a login's facts in, the result or the error a person reads out. Pure."""

from __future__ import annotations

import pytest

from tunnelauth import outcome, parse
from tunnelauth.errors import ConnectionLost, LoginFailed, RemoteSetupError

TOKEN = "/home/lab/.hermes/auth.json"


def facts(**changes: object) -> outcome.LoginFacts:
    base: dict[str, object] = {
        "provider": "xai-oauth",
        "destination": "lab@target",
        "exit_status": 0,
        "success": parse.Success("lab@example.test"),
        "token_info": {"path": TOKEN, "mode": 0o600, "size": 300},
    }
    base.update(changes)
    return outcome.LoginFacts(**base)  # type: ignore[arg-type]


def test_success_is_the_result_with_the_token_file() -> None:
    verdict = outcome.classify(facts())
    assert verdict == outcome.Succeeded(
        outcome.LoginResult(
            provider="xai-oauth",
            destination="lab@target",
            label="lab@example.test",
            token_file=TOKEN,
            token_mode=0o600,
        )
    )


def test_the_token_path_from_the_output_when_the_supervisor_gave_none() -> None:
    verdict = outcome.classify(facts(token_info={}, token_path="/srv/hermes/auth.json"))
    assert isinstance(verdict, outcome.Succeeded)
    assert (
        verdict.result.token_file == "/srv/hermes/auth.json" and verdict.result.token_mode is None
    )


@pytest.mark.parametrize(
    ("info", "warning"),
    [
        ({"path": TOKEN, "mode": 0o644}, f"{TOKEN} has mode 644; it should be 600"),
        (
            {"path": TOKEN, "error": "No such file or directory"},
            f"hermes reported success but {TOKEN} is not there (No such file or directory)",
        ),
    ],
)
def test_a_token_file_that_is_not_right_is_a_warning(info: dict[str, object], warning: str) -> None:
    verdict = outcome.classify(facts(token_info=info))
    assert isinstance(verdict, outcome.Succeeded) and verdict.warnings == (warning,)


def test_hermes_own_failures_are_the_message_with_its_status() -> None:
    verdict = outcome.classify(
        facts(
            exit_status=1,
            success=None,
            failures=("xAI authorization failed: access_denied", "login failed"),
        )
    )
    assert isinstance(verdict, LoginFailed) and verdict.exit_code == 1
    assert (
        str(verdict)
        == "hermes failed: xAI authorization failed: access_denied; login failed (exit status 1)"
    )


def test_without_a_recognised_failure_the_last_stderr_line_is_the_reason() -> None:
    verdict = outcome.classify(
        facts(exit_status=2, success=None, hermes_errors=("first", "Killed"))
    )
    assert str(verdict) == "hermes failed: Killed (exit status 2)"
    verdict = outcome.classify(facts(exit_status=2, success=None))
    assert str(verdict) == "hermes failed: no message (exit status 2)"


def test_an_exit_without_success_is_a_failure_even_with_status_0() -> None:
    verdict = outcome.classify(facts(success=None))
    assert isinstance(verdict, LoginFailed)
    assert str(verdict) == "hermes exited without reporting a login"


def test_success_with_a_failing_status_is_a_failure() -> None:
    verdict = outcome.classify(facts(exit_status=1))
    assert isinstance(verdict, LoginFailed) and "(exit status 1)" in str(verdict)


def test_a_busy_callback_port_is_asked_about() -> None:
    message = (
        "Could not bind Spotify callback server on 127.0.0.1:43827: "
        "[Errno 98] Address already in use"
    )
    verdict = outcome.classify(facts(exit_status=1, success=None, failures=(message,)))
    assert verdict == outcome.PortBusy(43827)


@pytest.mark.parametrize(
    ("holder", "by"),
    [("python3 (pid 42)", "by python3 (pid 42)"), (None, "by a process this login cannot see")],
)
def test_the_busy_port_error_names_the_holder(holder: str | None, by: str) -> None:
    error = outcome.port_busy(43827, "lab@target", holder)
    assert isinstance(error, RemoteSetupError) and error.exit_code == 7
    assert error.message.startswith(f"port 43827 on lab@target's 127.0.0.1 is taken {by}")


def test_run_passes_the_exit_status() -> None:
    assert outcome.run_result("target", 3).exit_status == 3
    assert outcome.run_result("target", None).exit_status == 0


def test_a_dropped_hop_is_a_lost_connection_naming_it() -> None:
    error = outcome.lost("lab@target", "bastion", False, "", ["noise"])
    assert isinstance(error, ConnectionLost) and error.exit_code == 9
    assert error.message.startswith("lost the connection to bastion during the login;")


def test_a_lost_connection_gives_the_peers_reason() -> None:
    error = outcome.lost("lab@target", None, True, "Connection reset", [])
    assert isinstance(error, ConnectionLost)
    assert "lost the connection to lab@target during the login (Connection reset);" in error.message


def test_otherwise_the_remote_side_stopped_with_its_last_words() -> None:
    error = outcome.lost(
        "lab@target",
        None,
        False,
        "",
        ["", "tunnelauth: no python3 on the remote host (needed to supervise the login)"],
    )
    assert type(error) is RemoteSetupError
    assert error.message == (
        "the remote side of the login stopped unexpectedly on lab@target: "
        "tunnelauth: no python3 on the remote host (needed to supervise the login)"
    )


def test_not_found_and_cannot_become_user_name_what_and_where() -> None:
    error = outcome.not_found(
        {"command": "hermes", "looked": ["$PATH", "~/.local/bin/hermes"]}, "target", "pass --hermes"
    )
    assert (
        str(error)
        == "hermes was not found on target; looked in $PATH, ~/.local/bin/hermes (pass --hermes)"
    )
    error = outcome.cannot_become({"user": "svc", "error": "a password is required"}, "target")
    assert error.message == "cannot run hermes as svc on target: a password is required"
