"""The login and `run` policies against asyncssh's own SSH server, in process, without root.

The server (127.0.0.1, an ephemeral port, generated keys) runs every command it is asked for
the way sshd does: `sh -c COMMAND` on this machine, with pipes, its stdin closed when the
channel closes. So the real supervisor (tunnelauth/agent.py) runs, and under it
tests/fakes/fake_hermes.py, which talks to tests/fakes/mock_provider.py on 127.0.0.1; the
browser is tests/fakes/browser.py as $BROWSER.

The laptop and the target are one machine here, and both want their own 127.0.0.1:PORT (the
callback port is never remapped). So the laptop's forwards listen on 127.0.0.2, another
address of the same loopback, and the browser is told that 127.0.0.1 in a redirect means
127.0.0.2 (FAKE_BROWSER_LOOPBACK): the callback still goes laptop -> SSH channel -> target.
The lab (tests/*_lab.py) runs the same logins with real sshd and network namespaces.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from tunnelauth import flow, forward, providers, remote, ssh
from tunnelauth.errors import LoginFailed, LoginTimeout, RemoteSetupError

FAKES = Path(__file__).resolve().parent / "fakes"
LAPTOP = "127.0.0.2"


# -- the target: asyncssh's server, running commands as sshd would ------------------------------


@dataclass
class Target:
    port: int
    host_key: asyncssh.SSHKey
    forwarding: bool = True
    commands: list[str] = field(default_factory=list)
    channels: list[tuple[str, int]] = field(default_factory=list)
    sessions: list[asyncio.Task[None]] = field(default_factory=list)
    children: list[asyncio.subprocess.Process] = field(default_factory=list)


class _Server(asyncssh.SSHServer):
    def __init__(self, target: Target, client_key: asyncssh.SSHKey) -> None:
        self.target = target
        self.client_key = client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self.client_key.public_data

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        if not self.target.forwarding:  # AllowTcpForwarding no
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "TCP forwarding is disabled"
            )
        self.target.channels.append((dest_host, dest_port))
        return True  # asyncssh connects to dest_host:dest_port itself, as sshd does


def _session_env() -> dict[str, str]:
    """What a login session gets from sshd: no $BROWSER of the laptop, SSH_CLIENT set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BROWSER", "FAKE_BROWSER", "PYTEST", "SSH_"))
    }
    env["SSH_CLIENT"] = env["SSH_CONNECTION"] = "127.0.0.1 40000 127.0.0.1 22"
    env["SHELL"] = "/bin/sh"
    return env


async def _session(target: Target, process: asyncssh.SSHServerProcess[bytes]) -> None:
    command = process.command or ""
    target.commands.append(command)
    task = asyncio.current_task()
    assert task is not None
    target.sessions.append(task)
    child = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_session_env(),
        start_new_session=True,
    )
    target.children.append(child)
    assert child.stdin and child.stdout and child.stderr

    async def into_child() -> None:
        assert child.stdin
        try:
            while data := await process.stdin.read(65536):
                child.stdin.write(data)
                await child.stdin.drain()
        except (asyncssh.Error, OSError):
            pass
        finally:
            child.stdin.close()  # the channel is gone: the command sees EOF, as under sshd

    async def out_of_child(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
        except (asyncssh.Error, OSError):
            pass

    feeding = asyncio.ensure_future(into_child())
    await asyncio.gather(
        out_of_child(child.stdout, process.stdout), out_of_child(child.stderr, process.stderr)
    )
    status = await child.wait()
    feeding.cancel()
    await asyncio.gather(feeding, return_exceptions=True)
    process.exit(status if status >= 0 else 128 - status)


@asynccontextmanager
async def target_server(
    tmp_path: Path, forwarding: bool = True
) -> AsyncIterator[tuple[Target, ssh.Hop]]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "id_ed25519"
    client_key.write_private_key(key_path)
    key_path.chmod(0o600)
    target = Target(port=0, host_key=host_key, forwarding=forwarding)
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        encoding=None,
        server_factory=lambda: _Server(target, client_key),
        process_factory=lambda process: _session(target, process),
    )
    target.port = server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{target.port} {host_key.export_public_key().decode()}")
    hop = ssh.Hop(
        name="target",
        host="127.0.0.1",
        port=target.port,
        user=getpass.getuser(),
        identities=(str(key_path),),
        identities_only=True,
        known_hosts=(known,),
        accept_new=False,
        proxy_command=None,
        connect_timeout=10,
        keepalive_interval=0,
        keepalive_count_max=3,
    )
    try:
        yield target, hop
    finally:
        server.close()
        await server.wait_closed()
        # Sessions end once their command does; one still running after that is the tests'
        # business (they look for leftovers), stopped here by its pid.
        if target.sessions:
            await asyncio.wait(target.sessions, timeout=10)
        for child in target.children:
            if child.returncode is None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)  # its own session: the whole group
                except ProcessLookupError:
                    pass
            await child.wait()
        for task in target.sessions:
            task.cancel()
        await asyncio.gather(*target.sessions, return_exceptions=True)


# -- the laptop -----------------------------------------------------------------------------------


class Recorder:
    """A Reporter that keeps everything it is told."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str | None, dict[str, object]]] = []
        self.details: list[str] = []
        self.warnings: list[str] = []
        self.urls: list[tuple[str, str, bool | None]] = []
        self.codes: list[str] = []
        self.output: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.lines: list[str] = []

    def passthrough(self, stream: str, data: bytes) -> None:
        self.output[stream] += data

    def step(self, text: str, event: str | None = None, **fields: object) -> None:
        self.steps.append((text, event, fields))

    def events(self) -> list[str | None]:
        return [event for _, event, _ in self.steps]

    def detail(self, text: str) -> None:
        self.details.append(text)

    def remote_line(self, text: str, stream: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def show_url(
        self, url: str, purpose: str, opened: bool | None, host: str | None = None
    ) -> None:
        self.urls.append((url, purpose, opened))

    def show_code(self, code: str) -> None:
        self.codes.append(code)

    def ask(self, prompt: str, secret: bool) -> str | None:
        return None


@dataclass
class Provider:
    url: str
    proc: subprocess.Popen[str]


@pytest.fixture
def provider() -> Iterator[Provider]:
    proc = subprocess.Popen(
        [sys.executable, str(FAKES / "mock_provider.py"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening "), line
    yield Provider(url=line.split(" ", 1)[1], proc=proc)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The laptop's side: forwards on 127.0.0.2, the fake browser as $BROWSER; its log."""
    log = tmp_path / "browser.log"
    monkeypatch.setattr(forward, "LOOPBACK", LAPTOP)
    monkeypatch.setenv("BROWSER", str(FAKES / "browser.py"))
    monkeypatch.setenv("FAKE_BROWSER_LOG", str(log))
    monkeypatch.setenv("FAKE_BROWSER_LOOPBACK", LAPTOP)
    return log


@pytest.fixture
def hermes(tmp_path: Path) -> Path:
    """fake_hermes under a name of its own, to look for it in the process table afterwards."""
    path = tmp_path / "bin" / f"fake-hermes-{os.getpid()}-{id(tmp_path)}"
    path.parent.mkdir()
    shutil.copy(FAKES / "fake_hermes.py", path)
    path.chmod(0o755)
    return path


def browsed(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def running(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def gone(needle: str, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while running(needle):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def listening_on(address: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((address, port)) == 0


def xai_request(
    hop: ssh.Hop,
    hermes: Path,
    tmp_path: Path,
    provider_url: str | None,
    version: str,
    **extra: object,
) -> flow.LoginRequest:
    env = {
        "FAKE_HERMES_VERSION": version,
        "HERMES_HOME": str(tmp_path / "hermes-home"),
        "FAKE_HERMES_CALLBACK_WAIT": "30",
    }
    if provider_url:
        env["FAKE_HERMES_PROVIDER"] = provider_url
    return flow.LoginRequest(
        hops=(hop,),
        provider=providers.lookup("xai"),
        hermes=str(hermes),
        remote_env=env,
        allow_hosts=("127.0.0.1",),
        timeout=60,
        **extra,
    )  # type: ignore[arg-type]


def login(
    tmp_path: Path,
    request: Callable[[ssh.Hop], flow.LoginRequest | flow.RunRequest],
    forwarding: bool = True,
) -> tuple[flow.LoginResult | BaseException, Recorder, Target]:
    reporter = Recorder()

    async def go() -> tuple[flow.LoginResult | BaseException, Target]:
        async with target_server(tmp_path, forwarding) as (target, hop):
            try:
                return await flow.login(request(hop), reporter), target
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                return exc, target

    result, target = asyncio.run(go())
    return result, reporter, target


def tokens(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "hermes-home" / "auth.json"
    assert path.stat().st_mode & 0o777 == 0o600
    return json.loads(path.read_text())


# -- the hermes login ------------------------------------------------------------------------------


def test_a_loopback_login_follows_the_moved_port(
    tmp_path: Path, laptop: Path, provider: Provider, hermes: Path
) -> None:
    held = socket.socket()  # something else has the callback port on the target
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        held.bind(("127.0.0.1", 56121))
        held.listen()
    except OSError:
        pass  # something on this machine holds it already: the same situation for hermes
    try:
        result, reporter, target = login(
            tmp_path, lambda hop: xai_request(hop, hermes, tmp_path, provider.url, "0.18.0")
        )
    finally:
        held.close()
    assert isinstance(result, flow.LoginResult), result
    assert result.provider == "xai-oauth" and result.label == "lab@example.test"
    assert (
        result.token_file == str(tmp_path / "hermes-home" / "auth.json")
        and result.token_mode == 0o600
    )
    assert "xai-oauth" in json.dumps(tokens(tmp_path))
    moved = [fields for _, event, fields in reporter.steps if event == "port_moved"]
    assert len(moved) == 1 and moved[0]["old_port"] == 56121
    new_port = moved[0]["port"]
    assert isinstance(new_port, int) and new_port != 56121
    # The browser's callback went through the laptop's forward and the SSH channel to hermes.
    final = browsed(laptop)[-1]
    assert final["status"] == 200 and str(final["final"]).startswith(f"{LAPTOP}:{new_port}/")
    assert ("127.0.0.1", new_port) in target.channels
    assert reporter.events().index("port_moved") < reporter.events().index("browser_opened")
    assert "reported_success" in reporter.events() and not reporter.warnings
    assert gone(hermes.name)
    assert not listening_on(LAPTOP, new_port) and not listening_on(LAPTOP, 56121)


def test_a_device_code_login_closes_the_tunnel(
    tmp_path: Path, laptop: Path, provider: Provider, hermes: Path
) -> None:
    result, reporter, target = login(
        tmp_path, lambda hop: xai_request(hop, hermes, tmp_path, provider.url, "0.19.0")
    )
    assert isinstance(result, flow.LoginResult), result
    assert result.label == "lab@example.test"
    tokens(tmp_path)
    assert "device-code flow: no callback, so no tunnel" in reporter.details
    assert reporter.codes and [purpose for _, purpose, _ in reporter.urls] == ["verification"]
    assert browsed(laptop)[-1]["status"] == 200
    assert not target.channels  # nothing went through a forward
    assert not listening_on(LAPTOP, 56121)
    assert gone(hermes.name)


def test_a_failing_hermes_gives_its_own_message(tmp_path: Path, laptop: Path, hermes: Path) -> None:
    # No provider: hermes is offline and says so.
    result, reporter, _ = login(
        tmp_path, lambda hop: xai_request(hop, hermes, tmp_path, None, "0.18.0")
    )
    assert isinstance(result, LoginFailed) and result.exit_code == 1, result
    assert "Temporary failure in name resolution" in str(result)
    assert "reported_success" not in reporter.events()
    assert not browsed(laptop)
    assert gone(hermes.name) and not listening_on(LAPTOP, 56121)


def test_hermes_not_found_says_where_it_looked(tmp_path: Path, laptop: Path) -> None:
    missing = tmp_path / "no-such-hermes"
    result, _, _ = login(tmp_path, lambda hop: xai_request(hop, missing, tmp_path, None, "0.18.0"))
    assert isinstance(result, RemoteSetupError) and result.exit_code == 7, result
    assert f"{missing} was not found on target" in str(result) and "--hermes" in str(result)
    assert not listening_on(LAPTOP, 56121)


def test_a_target_that_forbids_forwarding_gets_the_callback_relayed(
    tmp_path: Path, laptop: Path, provider: Provider, hermes: Path
) -> None:
    result, reporter, target = login(
        tmp_path,
        lambda hop: xai_request(hop, hermes, tmp_path, provider.url, "0.18.0"),
        forwarding=False,
    )
    assert isinstance(result, flow.LoginResult), result
    tokens(tmp_path)
    relaying = [text for text, event, _ in reporter.steps if event == "relaying"]
    assert relaying and "TCP forwarding is disabled" in relaying[0]
    assert not target.channels
    forwarded = [fields["port"] for _, event, fields in reporter.steps if event == "forwarded"]
    assert any(
        remote.relay_command("127.0.0.1", int(str(port))) in target.commands for port in forwarded
    )
    assert browsed(laptop)[-1]["status"] == 200
    assert gone(hermes.name)


# -- `tunnelauth run` -------------------------------------------------------------------------------


def run_request(command: tuple[str, ...], **extra: object) -> Callable[[ssh.Hop], flow.RunRequest]:
    return lambda hop: flow.RunRequest(hops=(hop,), command=command, **extra)  # type: ignore[arg-type]


def test_run_passes_output_and_exit_status_through(tmp_path: Path, laptop: Path) -> None:
    result, reporter, _ = login(
        tmp_path, run_request(("sh", "-c", "echo out; echo err >&2; exit 3"))
    )
    assert isinstance(result, flow.LoginResult), result
    assert result.exit_status == 3
    assert reporter.output == {"stdout": b"out\n", "stderr": b"err\n"}


def test_run_relays_stdin_to_the_command(tmp_path: Path, laptop: Path) -> None:
    source = tmp_path / "input"
    source.write_bytes(b"one\ntwo\n")
    with source.open("rb") as handle:
        result, reporter, _ = login(
            tmp_path, run_request(("sh", "-c", "wc -l"), stdin_fd=handle.fileno())
        )
    assert isinstance(result, flow.LoginResult) and result.exit_status == 0, result
    assert reporter.output["stdout"].strip() == b"2"


def test_run_not_found_names_the_command(tmp_path: Path, laptop: Path) -> None:
    result, _, _ = login(tmp_path, run_request(("no-such-command-here",)))
    assert isinstance(result, RemoteSetupError) and result.exit_code == 7, result
    assert "no-such-command-here was not found" in str(result) and "full path" in str(result)


def test_run_refuses_to_open_a_url_with_credentials(tmp_path: Path, laptop: Path) -> None:
    url = "https://someone:secret@127.0.0.1/authorize?client_id=x&response_type=code"
    result, reporter, _ = login(tmp_path, run_request(("echo", url)))
    assert isinstance(result, LoginFailed) and "embedded credentials" in str(result), result
    assert not reporter.urls and not browsed(laptop)


def test_a_timeout_stops_the_remote_command(tmp_path: Path, laptop: Path) -> None:
    marker = f"tunnelauth-test-sleeper-{os.getpid()}"
    sleeper = (
        "python3",
        "-c",
        "import time; print('started', flush=True); time.sleep(300)",
        marker,
    )
    result, reporter, _ = login(tmp_path, run_request(sleeper, timeout=3))
    assert isinstance(result, LoginTimeout) and result.exit_code == 8, result
    assert reporter.output["stdout"] == b"started\n"
    assert gone(marker)


# -- one place knows asyncssh ------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["flow", "forward", "supervisor", "outcome", "transport"])
def test_the_policies_and_their_parts_never_import_asyncssh(module: str) -> None:
    import ast

    source = (Path(flow.__file__).parent / f"{module}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert not [name for name in imported if "asyncssh" in name], imported
