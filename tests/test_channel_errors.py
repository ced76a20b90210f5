"""asyncssh's errors on an open connection become tunnelauth's in one place (ssh.channel_error)."""

from __future__ import annotations

import errno

import asyncssh

from tunnelauth import ssh
from tunnelauth.errors import ChannelRefused, ConnectionLost, ForwardingRefused


def test_a_forbidden_forward_is_told_apart_from_other_refusals_and_keeps_the_sshds_words() -> None:
    forbidden = ssh.channel_error(
        asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed"),
        "forwarding to 127.0.0.1:8080",
    )
    assert isinstance(forbidden, ForwardingRefused) and forbidden.reason == "open failed"
    assert (
        str(forbidden)
        == "forwarding to 127.0.0.1:8080: forbidden by the target's sshd (open failed)"
    )
    refused = ssh.channel_error(
        asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "Connection refused"),
        "forwarding to 127.0.0.1:8080",
    )
    assert type(refused) is ChannelRefused and refused.reason == "Connection refused"
    assert forbidden.exit_code == refused.exit_code == 7


def test_anything_else_on_the_connection_is_a_lost_connection_in_one_line() -> None:
    lost = ssh.channel_error(asyncssh.ConnectionLost("Connection\nreset"), "the probe")
    assert isinstance(lost, ConnectionLost) and str(lost) == "the probe: Connection reset"
    assert lost.exit_code == 9
    broken = ssh.channel_error(BrokenPipeError(errno.EPIPE, "Broken pipe"), "the relay")
    assert str(broken) == "the relay: Broken pipe"
    assert ssh.error_reason(OSError()) == "OSError"  # never an empty reason
