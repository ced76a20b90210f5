"""Fewer round trips per SSH login than asyncssh makes by default.

Before its first signed public-key request asyncssh (like OpenSSH) spends three round trips
per hop: it waits for SERVICE_ACCEPT, sends a `none` request to learn the server's methods,
then offers the key unsigned and signs only after PK_OK. RFC 4252 lets a client send the
signed request at once, and servers read pipelined requests in order (OpenSSH's sshd handles
SERVICE_REQUEST, then the USERAUTH_REQUEST behind it). Through one jump host that is six of
the sixteen round trips before hermes's first line.

Only the first key goes out signed, straight behind the service request. If the server refuses
it, asyncssh's own logic takes over with the server's method list (probing the next keys as
usual). Security keys (sk-*) are still probed first, so a touch is never asked for a key the
server would refuse.

This leans on asyncssh internals (checked by `supported()`); where they are missing, the
connection keeps asyncssh's own order, which is slower but equally correct.
"""

from __future__ import annotations

from typing import Any

from tunnelauth import _internals
from tunnelauth._asyncssh import asyncssh

try:
    from asyncssh.auth import _ClientPublicKeyAuth
    from asyncssh.packet import Boolean, String
except ImportError:  # an asyncssh without these internals: keep its own auth order
    _ClientPublicKeyAuth = None  # type: ignore[assignment,misc]

_USERAUTH = b"ssh-userauth"
LOCKED = "_tunnelauth_locked"  # an encrypted key whose passphrase has not been asked yet
_INTERNALS = ("send_service_request", "try_next_auth", "public_key_auth_requested", "_auth")


def supported(conn: asyncssh.SSHClientConnection) -> bool:
    return (
        _ClientPublicKeyAuth is not None
        and _internals.usable("pipelined_auth")
        and all(hasattr(conn, name) for name in _INTERNALS)
    )


if _ClientPublicKeyAuth is not None:

    class _SignedFirst(_ClientPublicKeyAuth):
        """Public-key auth that sends its first key signed, without `none` or a probe."""

        async def _start(self) -> None:
            self._keypair = await self._conn.public_key_auth_requested()
            if self._keypair is None:
                # No key to offer: ask with `none`, as asyncssh would have, for the method list.
                self._method = b"none"
                await self.send_request()
            elif self._keypair.algorithm.startswith(b"sk-") or getattr(
                self._keypair, LOCKED, False
            ):
                # A touch or a passphrase is asked only for a key the server would take.
                await self.send_request(
                    Boolean(False),
                    String(self._keypair.algorithm),
                    String(self._keypair.public_data),
                )
            else:
                await self._send_signed_request()


def pipeline_auth(conn: asyncssh.SSHClientConnection) -> None:
    """Make `conn` start public-key auth behind its service request. Call from
    SSHClient.connection_made (before key exchange)."""
    if not supported(conn):
        return
    conn_any: Any = conn
    request_service = conn_any.send_service_request
    next_auth = conn_any.try_next_auth
    early: list[object] = []  # the auth started early, until SERVICE_ACCEPT has been handled

    def send_service_request(service: bytes) -> None:
        request_service(service)
        if service == _USERAUTH and conn_any._auth is None:
            conn_any._auth = _SignedFirst(conn, b"publickey")
            early.append(conn_any._auth)

    def try_next_auth(*, next_method: bool = False) -> None:
        # SERVICE_ACCEPT calls this to begin auth; ours is already under way, keep it.
        if early and early.pop() is conn_any._auth and not next_method:
            return
        next_auth(next_method=next_method)

    conn_any.send_service_request = send_service_request
    conn_any.try_next_auth = try_next_auth


def version_already_sent(conn: asyncssh.SSHClientConnection) -> None:
    """preconnect.py sent this connection's version line: let asyncssh record it, not send it."""
    conn_any: Any = conn
    send_version = conn_any._send_version

    def record_version() -> None:
        conn_any._send = lambda data: None
        try:
            send_version()
        finally:
            del conn_any._send  # the class's own _send again

    conn_any._send_version = record_version


# asyncssh puts an empty MSG_IGNORE in front of every packet once encryption is on: RFC 4251
# 9.3.1's defence for CBC ciphers, whose next IV the previous packet reveals. The AEAD ciphers
# tunnelauth prefers have per-packet nonces, so there it only doubles the packets (and the
# crypto) of every message; through a jump host each inner packet costs four outer ones.
_AEAD = {b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com", b"chacha20-poly1305@openssh.com"}
_MSG_IGNORE = 2
_EMPTY_STRING = b"\0\0\0\0"


def skip_cbc_padding(conn: asyncssh.SSHClientConnection) -> None:
    """Drop asyncssh's automatic empty MSG_IGNORE packets when the cipher is AEAD."""
    conn_any: Any = conn
    if not _internals.usable("cbc_padding") or not all(
        hasattr(conn, n) for n in ("send_packet", "_enc_alg_cs")
    ):
        return
    send_packet = conn_any.send_packet

    def send(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if (
            pkttype == _MSG_IGNORE
            and args == (_EMPTY_STRING,)
            and not kwargs
            and conn_any._enc_alg_cs in _AEAD
        ):
            return
        send_packet(pkttype, *args, **kwargs)

    conn_any.send_packet = send


# -- what asyncssh leaves to its caller: passphrases, host certificates, touches ----------------


def unlock_on_sign(key: Any, path: str, prompts: Any) -> None:
    """An encrypted key (loaded with its public half) asks for its passphrase when it is first
    used to sign, in a thread, up to prompts.tries times; then asyncssh moves on to the next
    key, as ssh does."""
    enc = getattr(key, "_enc_key", None)
    if enc is None:
        return
    setattr(key, LOCKED, True)

    async def sign_async(data: bytes) -> bytes:
        if getattr(key, "_enc_key", None) is not None:
            key._key = await _unlock(enc, path, prompts)
            key._enc_key = None
            setattr(key, LOCKED, False)
        signature: bytes = key._key.sign(data, key.sig_algorithm)
        return signature

    key.sign_async = sign_async


_unlocked: dict[tuple[str, bytes], Any] = {}  # one passphrase per key file and login


async def _unlock(enc: Any, path: str, prompts: Any) -> Any:
    cached = _unlocked.get((path, enc._key_data))
    if cached is not None:
        return cached
    if not prompts.available():
        prompts.missed.append(f"the passphrase of {path}")
    for _ in range(max(prompts.tries, 1)):
        if not prompts.available():
            break
        answer = await prompts.ask(f"Enter passphrase for key '{path}': ", True)
        if answer is None:
            break
        try:
            key = asyncssh.import_private_key(enc._key_data, answer)
        except (asyncssh.KeyImportError, ValueError):
            continue
        _unlocked[(path, enc._key_data)] = key
        return key
    # ValueError: asyncssh's public-key auth takes it as "try the next key".
    raise ValueError(f"no passphrase for {path}")


async def unlock_file(path: str, prompts: Any) -> Any:
    """An encrypted key file without its public half: asks for the passphrase (as unlock_on_sign
    does); None when it could not be unlocked."""
    try:
        with open(path, "rb") as handle:  # noqa: ASYNC230 - a key file of a few KB, read once
            data = handle.read()
    except OSError:
        return None

    class _File:
        _key_data = data

    try:
        return await _unlock(_File(), path, prompts)
    except ValueError:
        return None


def watch_host_certificate(conn: asyncssh.SSHClientConnection, policy: Any) -> None:
    """Keep the host certificate the server sent, so the policy can judge its plain key:
    asyncssh's validate_host_ca_key sees only the CA."""
    conn_any: Any = conn
    validate = getattr(conn_any, "_validate_openssh_host_certificate", None)
    if validate is None or not _internals.usable("host_certificate"):
        return

    def keep(host: str, addr: str, port: int, cert: Any) -> Any:
        policy.cert = cert
        return validate(host, addr, port, cert)

    conn_any._validate_openssh_host_certificate = keep


def watch_keys(conn: asyncssh.SSHClientConnection, policy: Any, tell: Any) -> None:
    """Note that a key was offered (to tell a second factor from a refused key), and say
    "Confirm user presence" before a security key in the agent signs."""
    conn_any: Any = conn
    requested = getattr(conn_any, "public_key_auth_requested", None)
    if requested is None or not _internals.usable("key_auth"):
        return

    async def public_key_auth_requested() -> Any:
        keypair = await requested()
        if keypair is not None:
            policy.keys_offered = True
            sign = getattr(keypair, "sign_async", None)
            if (
                keypair.algorithm.startswith(b"sk-")
                and sign is not None
                and not getattr(keypair, "_tunnelauth_touch", False)
            ):

                async def touch_then_sign(data: bytes) -> bytes:
                    tell(
                        f"Confirm user presence for key {keypair.get_algorithm()} "
                        f"{keypair.get_fingerprint('sha256')}"
                    )
                    signature: bytes = await sign(data)
                    return signature

                keypair.sign_async = touch_then_sign
                keypair._tunnelauth_touch = True
        return keypair

    conn_any.public_key_auth_requested = public_key_auth_requested


def no_agent(conn: asyncssh.SSHClientConnection) -> None:
    """IdentityAgent none (or no agent at all): never ask SSH_AUTH_SOCK's agent for keys."""
    if not _internals.usable("key_auth"):
        return  # asyncssh's own agent handling
    conn_any: Any = conn
    agent = getattr(conn_any, "_agent", None)
    if agent is not None:
        agent.close()
    conn_any._agent = None
    conn_any._get_agent_keys = False


async def start_with_data(
    conn: asyncssh.SSHClientConnection, command: str, data: bytes
) -> asyncssh.SSHClientProcess[bytes]:
    """conn.create_process(command, encoding=None), with `data` for its stdin sent right behind
    the exec request instead of after its reply: sshd takes the two in order, so the command
    finds its first input waiting rather than one round trip later. (The supervisor's
    configuration travels this way: inside the channel, and without costing a round trip.)"""

    class _Process(asyncssh.SSHClientProcess):  # type: ignore[type-arg]
        def connection_made(self, chan: Any) -> None:
            super().connection_made(chan)

            async def make_request(request: bytes, *args: bytes) -> bool | None:
                if request != b"exec" or chan._send_chan is None:
                    answer: bool | None = await make(request, *args)
                    return answer
                waiter = chan._loop.create_future()
                chan._request_waiters.append(waiter)
                chan._send_request(request, *args, want_reply=True)
                chan.write(data)
                result: bool | None = await waiter
                return result

            make = chan._make_request
            chan._make_request = make_request

    _, session = await conn.create_session(_Process, command, encoding=None)
    process: asyncssh.SSHClientProcess[bytes] = session  # type: ignore[assignment]  # _Process
    await process.redirect(asyncssh.PIPE, asyncssh.PIPE, asyncssh.PIPE)
    return process
