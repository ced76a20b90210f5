"""preconnect: where the first hop is, guessed without asyncssh, must be where ssh.plan()
(asyncssh's own config evaluation) connects first, or no guess at all; and the head-start
connection is used, or closed, as the real first hop decides."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnelauth import preconnect, ssh
from tunnelauth.destination import SshSettings, parse_endpoint, parse_jumps
from tunnelauth.errors import UsageError
from tunnelauth.ssh import plan


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USER", "localme")
    monkeypatch.setenv("LOGNAME", "localme")
    return home


def both(
    tmp_path: Path, config: str, destination: str, jumps: str | None = None, **options: object
) -> tuple[tuple[str, int] | None, tuple[str, int]]:
    path = tmp_path / "ssh_config"
    path.write_text(textwrap.dedent(config))
    cfg = SshSettings(config_file=path, **options)  # type: ignore[arg-type]
    endpoint, via = parse_endpoint(destination), parse_jumps(jumps) if jumps is not None else None
    first = plan(endpoint, via, cfg)[0]
    return preconnect.first_hop(endpoint, via, cfg), (first.host, first.port)


@pytest.mark.parametrize(
    ("config", "destination", "jumps"),
    [
        ("", "example.test", None),
        ("", "user@example.test:2200", None),
        (
            "Host t\n  HostName 198.18.2.2\n  ProxyJump b\nHost b\n  HostName 198.18.1.2\n  Port 2022\n",
            "t",
            None,
        ),
        ("Host b\n  HostName 198.18.1.2\n", "198.18.2.2", "b,other"),
        ("Host *.lab\n  ProxyJump gw\nHost gw\n  HostName 198.18.9.1\n", "x.lab", None),
        ("Host * !direct\n  ProxyJump gw:2222\nHost gw\n  HostName 198.18.9.1\n", "direct", None),
        (
            "Host * !direct !gw\n  ProxyJump gw:2222\nHost gw\n  HostName 198.18.9.1\n",
            "other",
            None,
        ),
        ("Host a\n  ProxyJump b\n", "a", "none"),  # -J none: straight there
        (
            "Host a\n  HostName first\nHost a\n  HostName second\n",
            "a",
            None,
        ),  # the first value wins
        ("Port 2200\nHost a\n  Port 2300\n", "a", None),  # settings before any Host apply to all
        ("Host a\n  Hostname=198.18.9.9\n  port = 2201\n", "a", None),
        ("Host a\n  ProxyJump none\n  HostName 198.18.9.8\n", "a", None),
        (
            "Host a\n  ProxyJump b\nHost b\n  ProxyJump c\nHost c\n  HostName 198.18.9.7\n",
            "a",
            None,
        ),
    ],
)
def test_the_guess_is_the_first_hop(
    tmp_path: Path, config: str, destination: str, jumps: str | None
) -> None:
    guess, first = both(tmp_path, config, destination, jumps)
    assert guess == first


def test_dash_p_counts_only_when_the_destination_is_the_first_hop(tmp_path: Path) -> None:
    assert both(tmp_path, "", "example.test", port=2200) == (("example.test", 2200),) * 2
    guess, first = both(tmp_path, "Host b\n  HostName 198.18.9.1\n", "example.test", "b", port=2200)
    assert guess == first == ("198.18.9.1", 22)


@pytest.mark.parametrize(
    "config",
    [
        "Match host a\n  HostName elsewhere\n",
        "Include %d/other_config\n",
        "Host a\n  ProxyCommand nc %h %p\n",
        "Host a\n  HostName %h.example.test\n",
        "Host a\n  CanonicalizeHostname yes\n",
    ],
)
def test_no_guess_when_the_config_is_beyond_it(tmp_path: Path, config: str) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    assert preconnect.first_hop(parse_endpoint("a"), None, SshSettings(config_file=path)) is None


def test_includes_are_followed_like_asyncssh_does(tmp_path: Path) -> None:
    extra = tmp_path / "conf.d"
    extra.mkdir()
    (extra / "10-gw.conf").write_text("Host gw\n  HostName 198.18.9.3\n  Port 2203\n")
    config = f"Include {extra}/*.conf\nHost *.lab\n  ProxyJump gw\n"
    guess, first = both(tmp_path, config, "x.lab")
    assert guess == first == ("198.18.9.3", 2203)


def test_without_dash_f_the_system_config_counts_too(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "etc_ssh_config"
    system.write_text("Host a\n  HostName 198.18.9.4\n  Port 2204\n")
    monkeypatch.setattr(preconnect, "SYSTEM_CONFIG", system)
    monkeypatch.setattr(ssh, "SYSTEM_CONFIG", system)
    (home / ".ssh").mkdir()
    (home / ".ssh/config").write_text("Host a\n  Port 2205\n")  # the user's file first
    cfg = SshSettings()
    first = plan(parse_endpoint("a"), None, cfg)[0]
    assert (
        preconnect.first_hop(parse_endpoint("a"), None, cfg)
        == (first.host, first.port)
        == ("198.18.9.4", 2205)
    )


@pytest.mark.parametrize(
    "config",
    [
        "Host *\n  User bad;user\n",
        "StrictHostKeyChecking maybe\n",
        "Host a\n  ConnectTimeout soon\n",
    ],
)
def test_no_guess_when_the_config_holds_a_value_plan_refuses(tmp_path: Path, config: str) -> None:
    # No head start may connect before the error about the config is shown.
    path = tmp_path / "ssh_config"
    path.write_text(config)
    settings_ = SshSettings(config_file=path)
    assert preconnect.first_hop(parse_endpoint("a"), None, settings_) is None
    with pytest.raises(UsageError):
        plan(parse_endpoint("a"), None, settings_)


@pytest.mark.parametrize("config", ["Host a\n  Port 0\n", "UserKnownHostsFile none\n"])
def test_no_guess_when_a_value_is_odd(tmp_path: Path, config: str) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    assert preconnect.first_hop(parse_endpoint("a"), None, SshSettings(config_file=path)) is None


@pytest.mark.parametrize("option", ["HostName", "Port", "ProxyJump", "ProxyCommand"])
def test_no_guess_when_an_option_moves_the_connection(tmp_path: Path, option: str) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("")
    cfg = SshSettings(config_file=path, options={option: "x"})
    assert preconnect.first_hop(parse_endpoint("a"), None, cfg) is None


ALIASES = ["a", "b", "c", "d"]
_block = st.fixed_dictionaries(
    {},
    optional={
        "HostName": st.sampled_from(["198.18.9.1", "198.18.9.2", "h.example.test"]),
        "Port": st.sampled_from(["22", "2200", "2222"]),
        "ProxyJump": st.sampled_from(["none", "b", "c", "d:2201", "c,d"]),
    },
)
_patterns = st.lists(
    st.sampled_from([*ALIASES, "A", "*", "?", "!a", "!c", "[bc]", "c*"]), min_size=1, max_size=3
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    blocks=st.lists(st.tuples(_patterns, _block), max_size=5),
    destination=st.sampled_from(ALIASES),
    jumps=st.sampled_from([None, "b", "c,d", "none"]),
)
def test_any_plain_config_guesses_what_asyncssh_decides(
    tmp_path: Path,
    blocks: list[tuple[list[str], dict[str, str]]],
    destination: str,
    jumps: str | None,
) -> None:
    text = "".join(
        f"Host {' '.join(patterns)}\n" + "".join(f"  {k} {v}\n" for k, v in block.items())
        for patterns, block in blocks
    )
    try:
        guess, first = both(tmp_path, text, destination, jumps)
    except UsageError as exc:  # a jump loop: plan() refuses it; no connection is made at all
        assert "ProxyJump chain" in str(exc)  # noqa: PT017 - either outcome is valid here
        return
    assert guess == first


def test_the_connection_is_handed_over_only_for_the_same_address() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:

        async def scenario() -> tuple[socket.socket | None, socket.socket | None]:
            preconnect._pending = preconnect._Attempt("127.0.0.1", port)
            other = await preconnect.take("127.0.0.1", port + 1)  # another address: closed
            preconnect._pending = preconnect._Attempt("127.0.0.1", port)
            same = await preconnect.take("127.0.0.1", port)
            return other, same

        other, same = asyncio.run(scenario())
        assert other is None and same is not None
        peer, _ = server.accept()
        with peer, same:
            assert peer.recv(100) == preconnect.BANNER  # our version line went out first
    finally:
        server.close()


def test_a_refused_head_start_raises_what_a_connect_would() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused

        async def scenario() -> None:
            preconnect._pending = preconnect._Attempt("127.0.0.1", port)
            await preconnect.take("127.0.0.1", port)

        with pytest.raises(ConnectionRefusedError):
            asyncio.run(scenario())


def test_a_head_start_given_up_on_never_raises_later() -> None:
    # A connect still under way when the caller's ConnectTimeout strikes: the wait is cancelled,
    # and neither the cancelled wait, nor the thread finishing later, nor discard() may raise.
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    gate = threading.Event()
    real = socket.create_connection

    def slow(*args: object, **kwargs: object) -> socket.socket:
        gate.wait(10)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(preconnect.socket, "create_connection", slow)

            async def scenario() -> None:
                preconnect._pending = attempt = preconnect._Attempt("127.0.0.1", port)
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await preconnect.take("127.0.0.1", port)
                gate.set()
                await asyncio.to_thread(attempt.result.exception, 5)  # settles within 5 s
                assert isinstance(attempt.result.exception(), OSError)  # settled, and quietly
                preconnect.discard()

            asyncio.run(scenario())
        peer, _ = server.accept()
        with peer:
            assert (
                peer.recv(100) == preconnect.BANNER and peer.recv(100) == b""
            )  # connected, then closed
    finally:
        gate.set()
        server.close()


def test_a_host_name_no_resolver_takes_fails_at_once() -> None:
    async def scenario() -> None:
        preconnect._pending = preconnect._Attempt("a" * 64 + ".example", 22)
        await preconnect.take("a" * 64 + ".example", 22)

    began = time.monotonic()
    with pytest.raises(OSError, match="63 characters"):
        asyncio.run(scenario())
    assert time.monotonic() - began < 2  # not the connect timeout
    preconnect.discard()
