"""The asyncssh internals tunnelauth patches: each has the expected shape on the installed
asyncssh (a new release that moved one fails here, loudly), and when one changed, a login still
works the way asyncssh alone would do it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from asyncssh.config import SSHClientConfig
from asyncssh.connection import SSHClientConnection, SSHConnection
from asyncssh.packet import SSHPacketLogger

from tests.test_handshake import key_file, login
from tunnelauth import _asyncssh, _internals, ssh
from tunnelauth.errors import UsageError

MSG_IGNORE, MSG_USERAUTH_REQUEST = 2, 50


@pytest.fixture(autouse=True)
def fresh_checks() -> Iterator[None]:
    _internals.usable.cache_clear()
    yield
    _internals.usable.cache_clear()


@pytest.mark.parametrize("name", sorted(_internals.CHECKS))
def test_every_patched_internal_has_the_expected_shape(name: str) -> None:
    assert _internals.usable(name), (
        f"asyncssh {asyncssh.__version__} changed the internal {name!r} that tunnelauth patches "
        f"(see tunnelauth/_internals.py). Users get asyncssh's own behaviour for it; adapt the patch "
        f"before raising the asyncssh ceiling in pyproject.toml."
    )


def test_a_changed_auth_internal_leaves_asyncssh_its_own_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SSHClientConnection.try_next_auth

    def try_next_auth(
        self: SSHClientConnection, next_method: bool = False
    ) -> None:  # no longer keyword-only
        real(self, next_method=next_method)

    monkeypatch.setattr(SSHClientConnection, "try_next_auth", try_next_auth)
    assert not _internals.usable("pipelined_auth")
    path, key = key_file(tmp_path, "id_ok")
    seen = asyncio.run(login(tmp_path, [path], key, head_start=False))
    assert seen == [key.get_fingerprint()] * 2  # probed, then signed: asyncssh's order, logged in


def test_a_changed_version_internal_gives_up_the_head_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SSHConnection._send_version

    def send_version(self: SSHConnection, extra: object = None) -> None:
        real(self)

    monkeypatch.setattr(SSHConnection, "_send_version", send_version)
    assert not _internals.usable("version_sent_early")
    path, key = key_file(tmp_path, "id_ok")
    # The head-start socket already carries a version line: it is closed unused, and asyncssh
    # connects and sends its own (the login asserts the version the server saw).
    seen = asyncio.run(login(tmp_path, [path], key, head_start=True))
    assert seen == [key.get_fingerprint()]


def test_a_changed_send_packet_keeps_the_padding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    real = SSHConnection.send_packet

    def send_packet(self: SSHConnection, pkttype: int, *args: bytes, **kwargs: object) -> None:
        sent.append(pkttype)
        real(self, pkttype, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SSHConnection, "send_packet", send_packet)
    assert not _internals.usable("cbc_padding")
    path, key = key_file(tmp_path, "id_ok")
    asyncio.run(login(tmp_path, [path], key, head_start=False))
    assert MSG_USERAUTH_REQUEST in sent and MSG_IGNORE in sent  # asyncssh's own padding


def test_a_changed_packet_logger_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def _log_packet(self: SSHPacketLogger, msg: str) -> None:
        pass

    monkeypatch.setattr(SSHPacketLogger, "_log_packet", _log_packet)
    _asyncssh._quiet_packet_logging()
    assert SSHPacketLogger._log_packet is _log_packet


def test_a_changed_handler_table_drops_only_the_added_keywords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = {"stricthostkeychecking": ("StrictHostKeyChecking", "_set_string")}
    assert "stricthostkeychecking" in _internals.config_handlers(extra)
    monkeypatch.setitem(_internals.CHECKS, "config_handlers", lambda: False)
    _internals.usable.cache_clear()
    table = _internals.config_handlers(extra)
    assert "stricthostkeychecking" not in table and table == SSHClientConfig._handlers


def test_the_config_values_read_without_the_private_dict_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "config"
    config_file.write_text(
        "Host t\n  HostName 198.18.5.5\n  Port 2222\n  User bob\n  IdentityFile ~/k\n"
    )
    loaded = _internals.load_config(ssh._Config, [config_file], False, "me", (), "t", ())
    direct = _internals.config_options(loaded)
    assert direct["Hostname"] == "198.18.5.5" and direct["Port"] == 2222
    monkeypatch.setitem(_internals.CHECKS, "config_load", lambda: False)
    _internals.usable.cache_clear()
    assert _internals.config_options(loaded) == {k: v for k, v in direct.items() if v is not None}
    with pytest.raises(UsageError, match="changed its config loader"):
        _internals.load_config(ssh._Config, [config_file], False, "me", (), "t", ())
