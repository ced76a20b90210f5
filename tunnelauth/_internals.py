"""The private parts of asyncssh that tunnelauth leans on, and the shape each must have.

handshake.py and _asyncssh.py patch a few asyncssh internals to save round trips and CPU, and
ssh.py reads the ssh config through asyncssh's config classes. Private parts may change in any
release (pyproject.toml caps asyncssh below the next one for that reason). Each is described
here once: a patch asks `usable(name)` first and, when the shape is not the expected one, leaves
asyncssh's own behaviour in place — slower, equally correct, never a crash.
tests/test_asyncssh_internals.py asserts every shape, so a CI run against a new asyncssh fails
loudly instead of users quietly losing a speed-up.

Nothing here imports asyncssh at module level: preconnect.py runs before asyncssh is loaded.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


def _params(func: object) -> list[str] | None:
    try:
        return list(inspect.signature(func).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _names(func: object) -> tuple[str, ...]:
    """The global and attribute names a function's code uses (`self._x = …` included)."""
    code = getattr(func, "__code__", None)
    return code.co_names if code is not None else ()


def _uses(func: object, *names: str) -> bool:
    return all(name in _names(func) for name in names)


def _pipelined_auth() -> bool:
    # handshake.pipeline_auth: a public-key auth started right behind the service request.
    from asyncssh import auth, connection, packet

    cls = getattr(auth, "_ClientPublicKeyAuth", None)
    conn = connection.SSHClientConnection
    return (
        cls is not None
        and hasattr(packet, "Boolean")
        and hasattr(packet, "String")
        and _params(cls.__init__) == ["self", "conn", "method"]
        and _uses(auth.ClientAuth.__init__, "_method")
        and inspect.iscoroutinefunction(getattr(cls, "_start", None))
        and inspect.iscoroutinefunction(getattr(cls, "_send_signed_request", None))
        and inspect.iscoroutinefunction(getattr(cls, "send_request", None))
        and _uses(cls._start, "_conn", "_keypair", "public_key_auth_requested")
        and _params(getattr(conn, "send_service_request", None)) == ["self", "service"]
        and _params(getattr(conn, "try_next_auth", None)) == ["self", "next_method"]
        and inspect.signature(conn.try_next_auth).parameters["next_method"].kind
        is inspect.Parameter.KEYWORD_ONLY
        and inspect.iscoroutinefunction(getattr(conn, "public_key_auth_requested", None))
        and _uses(connection.SSHConnection.__init__, "_auth")
    )


def _version_sent_early() -> bool:
    # handshake.version_already_sent: asyncssh records the version line preconnect.py sent.
    from asyncssh.connection import SSHConnection

    return (
        _params(getattr(SSHConnection, "_send_version", None)) == ["self"]
        and _params(getattr(SSHConnection, "_send", None)) == ["self", "data"]
        and _uses(SSHConnection._send_version, "_send", "_client_version")
    )


def _cbc_padding() -> bool:
    # handshake.skip_cbc_padding: the empty MSG_IGNORE that send_packet sends through itself.
    from asyncssh.connection import SSHConnection

    params = inspect.signature(SSHConnection.send_packet).parameters
    return (
        list(params)[:3] == ["self", "pkttype", "args"]
        and params["args"].kind is inspect.Parameter.VAR_POSITIONAL
        and _uses(SSHConnection.send_packet, "send_packet", "MSG_IGNORE")
        and _uses(SSHConnection.__init__, "_enc_alg_cs")
    )


def _packet_logging() -> bool:
    # _asyncssh._quiet_packet_logging: skip formatting packet logs below debug level 3.
    from asyncssh.logging import SSHLogger
    from asyncssh.packet import SSHPacketLogger

    log_packet = getattr(SSHPacketLogger, "_log_packet", None)
    return (
        _params(getattr(log_packet, "__wrapped__", log_packet))  # the original, once patched
        == ["self", "msg", "pkttype", "pktid", "packet", "note"]
        and isinstance(getattr(SSHLogger, "_debug_level", None), int)
    )


_CONFIG_ARGS = ["last_config", "reload", "canonical", "final", "local_user", "user", "host", "port"]


def _config_handlers() -> bool:
    # ssh.py: keywords asyncssh does not keep, added to its table of config handlers.
    from asyncssh.config import SSHClientConfig, SSHConfig

    handlers = getattr(SSHClientConfig, "_handlers", None)
    return (
        isinstance(handlers, dict)
        and all(isinstance(v, tuple) and len(v) == 2 and callable(v[1]) for v in handlers.values())
        and _params(getattr(SSHConfig, "_set_string", None)) == ["self", "option", "args"]
    )


def _config_load() -> bool:
    # ssh.py: SSHClientConfig.load(last_config, paths, reload, canonical, final, *init args),
    # and the evaluated options kept in `_options`.
    from asyncssh.config import SSHClientConfig, SSHConfig

    load = inspect.getattr_static(SSHClientConfig, "load", None)
    return (
        isinstance(load, classmethod)
        and _params(SSHClientConfig.load)
        == ["last_config", "config_paths", "reload", "canonical", "final", "args"]
        and _params(SSHClientConfig.__init__) == ["self", *_CONFIG_ARGS]
        and callable(getattr(SSHClientConfig, "has_match_final", None))
        and _uses(SSHConfig.__init__, "_options")
    )


def _conn_state() -> bool:
    # ssh.py reads what the connection learnt for its error messages: the server's auth
    # methods (`_auth_methods`), and whether the key exchange had begun (`_server_version`,
    # `_session_id`). Without them the messages are vaguer ("it accepts: none").
    from asyncssh.connection import SSHConnection

    return _uses(SSHConnection.__init__, "_auth_methods", "_server_version", "_session_id")


def _host_certificate() -> bool:
    # handshake.watch_host_certificate wraps this to keep the certificate a server sent.
    from asyncssh.connection import SSHClientConnection

    check = getattr(SSHClientConnection, "_validate_openssh_host_certificate", None)
    return _params(check) == ["self", "host", "addr", "port", "cert"]


def _key_auth() -> bool:
    # handshake.watch_keys wraps the coroutine that picks the next key; handshake.no_agent
    # drops the agent asyncssh opened from SSH_AUTH_SOCK (IdentityAgent none).
    from asyncssh.connection import SSHClientConnection

    requested = getattr(SSHClientConnection, "public_key_auth_requested", None)
    return (
        inspect.iscoroutinefunction(requested)
        and _params(requested) == ["self"]
        and _uses(SSHClientConnection.__init__, "_agent", "_get_agent_keys")
    )


def _data_with_exec() -> bool:
    # handshake.start_with_data: a channel request made by hand (the waiter list and the send
    # that SSHChannel._make_request uses), so the first stdin bytes follow the exec request
    # without waiting for its reply; and the session gets its channel before the exec.
    from asyncssh.channel import SSHChannel, SSHClientChannel

    make = getattr(SSHChannel, "_make_request", None)
    return (
        inspect.iscoroutinefunction(make)
        and _params(make) == ["self", "request", "args"]
        and _uses(make, "_request_waiters", "_send_request", "_loop")
        and _uses(SSHClientChannel.create, "connection_made", "_make_request")
    )


CHECKS: dict[str, Callable[[], bool]] = {
    "data_with_exec": _data_with_exec,
    "conn_state": _conn_state,
    "host_certificate": _host_certificate,
    "key_auth": _key_auth,
    "pipelined_auth": _pipelined_auth,
    "version_sent_early": _version_sent_early,
    "cbc_padding": _cbc_padding,
    "packet_logging": _packet_logging,
    "config_handlers": _config_handlers,
    "config_load": _config_load,
}


@functools.cache
def usable(name: str) -> bool:
    """Whether the installed asyncssh still has the internal `name` in the expected shape."""
    try:
        return CHECKS[name]()
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def config_handlers(extra: dict[str, tuple[str, str]]) -> dict[str, tuple[str, Any]]:
    """asyncssh's config handler table plus `extra` (keyword → (option name, SSHConfig setter
    name)); asyncssh's own table when its shape changed (it skips keywords it does not know)."""
    from asyncssh.config import SSHClientConfig, SSHConfig

    table = dict(getattr(SSHClientConfig, "_handlers", None) or {})
    if usable("config_handlers"):
        table.update(
            {key: (name, getattr(SSHConfig, setter)) for key, (name, setter) in extra.items()}
        )
    return table


def load_config(cls: Any, paths: list[Any], final: bool, *args: object) -> Any:
    """cls.load(None, paths, False, False, final, local_user, user, host, port)."""
    if not usable("config_load"):
        from tunnelauth._asyncssh import asyncssh
        from tunnelauth.errors import UsageError

        raise UsageError(
            f"ssh config: asyncssh {asyncssh.__version__} changed its config loader; "
            "install the asyncssh version pyproject.toml allows"
        )
    return cls.load(None, paths, False, False, final, *args)


def config_options(config: Any) -> dict[str, object]:
    """The values a loaded config resolved, by option name."""
    if usable("config_load"):
        return dict(config._options)
    names = {name for name, _ in config._handlers.values()}
    return {name: value for name in names if (value := config.get(name)) is not None}
