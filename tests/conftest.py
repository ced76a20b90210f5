from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests import e2e  # noqa: E402
from tests.lab.netlab import Lab, LabUnavailable  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab: needs the root-only network-namespace SSH lab (sudo ./tests/setup)"
    )


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _interrupt(signum: int, frame: Any) -> None:
    # KeyboardInterrupt makes pytest stop and still run fixture teardown (SystemExit would not).
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    try:
        the_lab = Lab.create()
    except LabUnavailable as exc:
        msg = f"SSH lab unavailable: {exc}. Run `sudo ./tests/setup` and the tests as root."
        if _in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    atexit.register(the_lab.destroy)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield the_lab
    finally:
        try:
            the_lab.destroy()
        finally:
            atexit.unregister(the_lab.destroy)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[Lab]:
    try:
        yield lab
    finally:
        lab.kill_tracked()
        lab.reset_sshd()
        # Each test starts from a user without tokens: "tokens in the right file" means this test's.
        shutil.rmtree(lab.user_home / ".hermes", ignore_errors=True)


@pytest.fixture(scope="module")
def provider(lab: Lab) -> Iterator[e2e.Provider]:
    """The mock identity provider on the lab's provider address (one per test module)."""
    server = e2e.start_provider(lab)
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def fake_hermes(lab: Lab) -> Path:
    return e2e.install_script(lab, e2e.FAKES / "fake_hermes.py", "fake-hermes")


@pytest.fixture
def laptop(clean_lab: Lab, request: pytest.FixtureRequest) -> Iterator[e2e.Laptop]:
    """tunnelauth on the laptop; `@e2e.BOTH_TRANSPORTS` runs a test once per transport."""
    the_laptop = e2e.Laptop(clean_lab, transport=getattr(request, "param", "asyncssh"))
    yield the_laptop
    the_laptop.assert_no_ssh_left()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test that uses the lab is a lab test, whether or not its module says so.
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()) or "clean_lab" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker("lab")


# The only skips a CI run accepts, by a phrase of their reason, each with why it is acceptable.
# Any other skip fails the run in CI (a lab test, the real hermes, the old remote Pythons, the
# ssh-agent: tests/setup provides them all), and every skip is listed at the end of the run.
ALLOWED_SKIPS = {
    "is busy on this machine": (
        "hermes fixes its callback ports (56121, 43827); on a shared host another process may hold "
        "one, which the test cannot move. The same paths run in the lab's own namespaces."
    ),
    "is already taken by another process": (
        "as above: the provider's fixed port held on the host by something outside the test."
    ),
}

_skips: list[tuple[str, str]] = []


def _allowed(reason: str) -> str | None:
    return next((why for phrase, why in ALLOWED_SKIPS.items() if phrase in reason), None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skips.append((report.nodeid, reason.removeprefix("Skipped: ")))


def _refused() -> list[tuple[str, str]]:
    return [(nodeid, reason) for nodeid, reason in _skips if _allowed(reason) is None]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # In CI a skip that is not on the allow-list is a failure: a test that did not run proved nothing.
    if _in_ci() and _refused() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _skips:
        return
    terminalreporter.section("skips")
    for nodeid, reason in _skips:
        why = _allowed(reason)
        verdict = f"allowed: {why}" if why else "NOT on the allow-list (tests/conftest.py)"
        terminalreporter.write_line(f"{nodeid}: {reason} -- {verdict}")
    if _in_ci() and (refused := _refused()):
        terminalreporter.write_line(
            f"FAILED: {len(refused)} skip(s) in CI not on the allow-list in tests/conftest.py",
            red=True,
        )
