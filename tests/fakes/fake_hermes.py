#!/usr/bin/env python3
"""A faithful fake of the Hermes Agent CLI (``hermes``) for tunnelauth tests.

Python standard library only.  Invoked exactly like the real CLI:

    fake_hermes.py --version | version
    fake_hermes.py auth add xai-oauth --no-browser [--timeout N] [--manual-paste]
    fake_hermes.py auth add anthropic | openai-codex | minimax-oauth | nous [--no-browser]
    fake_hermes.py auth add <api-key provider>      (e.g. minimax, openrouter: API-key prompt)
    fake_hermes.py auth spotify [login] --no-browser [--client-id ID] [--redirect-uri URI]

Everything it prints, and on which stream, was copied from the hermes-agent
sources (hermes_cli/auth.py, hermes_cli/auth_commands.py,
agent/anthropic_adapter.py) of the release selected by FAKE_HERMES_VERSION.
Errors are real uncaught ``hermes_cli.auth.AuthError`` tracebacks on stderr
(rc 1); ``SystemExit("...")`` messages go to stderr with rc 1.  Output uses
plain print(), so it is block-buffered on a pipe unless PYTHONUNBUFFERED=1,
exactly like the real (Python) program.

Environment:
  FAKE_HERMES_VERSION        release to imitate (default 0.19.0).  xai-oauth is the
                             loopback PKCE flow for < 0.18.1, device code from 0.18.1.
  FAKE_HERMES_PROVIDER       base URL of tests/fakes/mock_provider.py, e.g.
                             http://198.18.3.1:PORT.  Stands in for auth.x.ai (OIDC
                             discovery), claude.ai + platform.claude.com,
                             auth.openai.com, api.minimax.io, portal.nousresearch.com
                             and accounts.spotify.com.  Unset: every network call
                             fails as if offline ("[Errno -3] Temporary failure in
                             name resolution") -- nothing is ever sent anywhere else.
                             Only loopback and 198.18.0.0/15 addresses are contacted.
  FAKE_HERMES_CALLBACK_WAIT  seconds the loopback listener waits (overrides the real
                             max(30, 9 * --timeout) = 180 s for xAI, 180 s / --timeout
                             for Spotify)
  FAKE_HERMES_NOUS_IMPORT    "1": pretend shared Nous credentials exist, so `auth add
                             nous` first asks "Import these credentials? [Y/n]: "; on
                             yes the rehydrate fails and it falls back to the device
                             flow.  "ok": same, but the import succeeds.
  FAKE_HERMES_HOSTNAME       hostname shown in the SSH hint (default: real hostname)
  HERMES_HOME                where auth.json goes (default ~/.hermes), like the real one
  SSH_CLIENT / SSH_TTY       remote-session detection, like the real one
  HERMES_SPOTIFY_ACCOUNTS_BASE_URL, HERMES_SPOTIFY_CLIENT_ID, HERMES_SPOTIFY_REDIRECT_URI,
  HERMES_SPOTIFY_API_BASE_URL, HERMES_PORTAL_BASE_URL: honoured like the real ones.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import ipaddress
import json
import os
import secrets
import select
import socket
import stat
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

# ---------------------------------------------------------------------------
# Version selection
# ---------------------------------------------------------------------------

RELEASE_DATES = {
    "0.14.0": "2026.5.16",
    "0.15.0": "2026.5.28",
    "0.16.0": "2026.6.5",
    "0.17.0": "2026.6.19",
    "0.18.0": "2026.7.1",
    "0.18.1": "2026.7.7",
    "0.19.0": "2026.7.20",
}

VERSION = (os.environ.get("FAKE_HERMES_VERSION") or "0.19.0").strip().lstrip("v")


def _version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


V = _version_tuple(VERSION)


def since(*version: int) -> bool:
    return V >= tuple(version)


# ---------------------------------------------------------------------------
# Constants copied from hermes_cli/auth.py
# ---------------------------------------------------------------------------

XAI_OAUTH_CLIENT_ID = "b1a00492-073a-47ea-816f-4c329264a828"
XAI_OAUTH_SCOPE = "openid profile email offline_access grok-cli:access api:access"
XAI_OAUTH_REDIRECT_HOST = "127.0.0.1"
XAI_OAUTH_REDIRECT_PORT = 56121
XAI_OAUTH_REDIRECT_PATH = "/callback"
XAI_OAUTH_DOCS_URL = "https://hermes-agent.nousresearch.com/docs/guides/xai-grok-oauth"
OAUTH_OVER_SSH_DOCS_URL = "https://hermes-agent.nousresearch.com/docs/guides/oauth-over-ssh"
DEFAULT_XAI_OAUTH_BASE_URL = "https://api.x.ai/v1"
DEFAULT_CODEX_BASE_URL = "https://chatgpt.com/backend-api/codex"
CODEX_OAUTH_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
MINIMAX_OAUTH_CLIENT_ID = "78257093-7e40-4613-99e0-527b14b39113"
MINIMAX_OAUTH_SCOPE = "group_id profile model.completion"
MINIMAX_OAUTH_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:user_code"
MINIMAX_OAUTH_GLOBAL_INFERENCE = "https://api.minimax.io/anthropic"
DEFAULT_NOUS_INFERENCE_URL = "https://inference-api.nousresearch.com/v1"
DEFAULT_NOUS_CLIENT_ID = "hermes-cli"
DEFAULT_NOUS_SCOPE = "inference:invoke"
DEVICE_AUTH_POLL_INTERVAL_CAP_SECONDS = 1
ANTHROPIC_OAUTH_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
ANTHROPIC_OAUTH_REDIRECT_URI = "https://console.anthropic.com/oauth/code/callback"
ANTHROPIC_OAUTH_SCOPES = "org:create_api_key user:profile user:inference"
DEFAULT_SPOTIFY_API_BASE_URL = "https://api.spotify.com/v1"
DEFAULT_SPOTIFY_REDIRECT_URI = "http://127.0.0.1:43827/spotify/callback"
SPOTIFY_DOCS_URL = "https://hermes-agent.nousresearch.com/docs/user-guide/features/spotify"
SPOTIFY_DASHBOARD_URL = "https://developer.spotify.com/dashboard"
DEFAULT_SPOTIFY_SCOPE = " ".join(
    (
        "user-modify-playback-state",
        "user-read-playback-state",
        "user-read-currently-playing",
        "user-read-recently-played",
        "playlist-read-private",
        "playlist-read-collaborative",
        "playlist-modify-public",
        "playlist-modify-private",
        "user-library-read",
        "user-library-modify",
    )
)

# hermes-agent 0.19.0 PROVIDER_REGISTRY ids (identical in 0.14.0 - 0.18.1)
PROVIDER_REGISTRY = {
    "alibaba",
    "alibaba-coding-plan",
    "anthropic",
    "arcee",
    "azure-foundry",
    "bedrock",
    "copilot",
    "copilot-acp",
    "deep-infra",
    "deepinfra",
    "deepinfra-ai",
    "deepseek",
    "fireworks",
    "fireworks-ai",
    "fw",
    "gemini",
    "gmi",
    "huggingface",
    "kilocode",
    "kimi-coding",
    "kimi-coding-cn",
    "lmstudio",
    "minimax",
    "minimax-cn",
    "minimax-oauth",
    "nous",
    "novita",
    "novita-ai",
    "novitaai",
    "nvidia",
    "ollama-cloud",
    "openai-api",
    "openai-codex",
    "opencode-go",
    "opencode-zen",
    "qwen-oauth",
    "solar",
    "stepfun",
    "tencent-tokenhub",
    "upstage",
    "xai",
    "xai-oauth",
    "xiaomi",
    "zai",
}
OAUTH_CAPABLE_PROVIDERS = {
    "anthropic",
    "nous",
    "openai-codex",
    "xai-oauth",
    "qwen-oauth",
    "minimax-oauth",
}


class AuthError(RuntimeError):
    """Same name and module as the real one, so tracebacks end in
    ``hermes_cli.auth.AuthError: <message>``."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str | None = None,
        relogin_required: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.code = code
        self.relogin_required = relogin_required


AuthError.__module__ = "hermes_cli.auth"


# ---------------------------------------------------------------------------
# Network: only the mock provider, only lab addresses
# ---------------------------------------------------------------------------

_ALLOWED_NETS = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("198.18.0.0/15"),
    ipaddress.ip_network("::1/128"),
)


def _offline() -> OSError:
    """What an offline host gets from the resolver (and what httpx shows)."""
    return socket.gaierror(-3, "Temporary failure in name resolution")


def provider_base() -> str | None:
    base = (os.environ.get("FAKE_HERMES_PROVIDER") or "").strip().rstrip("/")
    return base or None


def _check_lab_address(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except socket.gaierror:
            raise _offline()
        addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    for addr in addrs:
        if not any(addr in net for net in _ALLOWED_NETS):
            # Never contact anything but loopback and the lab range: behave as offline.
            raise _offline()


class Response:
    def __init__(self, status: int, body: bytes, reason: str = "") -> None:
        self.status_code = status
        self.content = body
        self.reason_phrase = reason

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(
    method: str,
    path_or_url: str,
    *,
    form: dict | None = None,
    json_body: dict | None = None,
    headers: dict | None = None,
    timeout: float = 20.0,
) -> Response:
    """An httpx-like request to the mock provider.  Transport errors are raised
    as OSError whose str() matches what httpx shows ("[Errno 111] Connection refused")."""
    if path_or_url.startswith("http"):
        url = path_or_url
    else:
        base = provider_base()
        if base is None:
            raise _offline()
        url = base + path_or_url
    _check_lab_address(url)
    data = None
    hdrs = dict(headers or {})
    if form is not None:
        data = urlencode(form).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif json_body is not None:
        data = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return Response(resp.status, resp.read(), resp.reason)
    except urllib.error.HTTPError as exc:
        body = exc.read() if exc.fp is not None else b""
        return Response(exc.code, body, exc.reason)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, OSError):
            raise reason
        raise OSError(str(reason))
    except TimeoutError:
        raise OSError("timed out")


# ---------------------------------------------------------------------------
# Helpers shared with the real CLI
# ---------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def oauth_pkce_code_verifier(length: int = 64) -> str:
    raw = base64.urlsafe_b64encode(os.urandom(length)).decode("ascii")
    return raw.rstrip("=")[:128]


def oauth_pkce_code_challenge(code_verifier: str) -> str:
    digest = hashlib.sha256(code_verifier.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def decode_jwt_claims(token) -> dict:
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    payload += "=" * ((4 - len(payload) % 4) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("utf-8")).decode("utf-8"))
    except Exception:
        return {}
    return claims if isinstance(claims, dict) else {}


def label_from_token(token: str, fallback: str) -> str:
    claims = decode_jwt_claims(token)
    for key in ("email", "preferred_username", "upn"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return fallback


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def iso_z() -> str:
    return now_utc().isoformat().replace("+00:00", "Z")


def is_remote_session() -> bool:
    if os.getenv("SSH_CLIENT") or os.getenv("SSH_TTY"):
        return True
    if not since(0, 15, 0):
        return False
    for var in (
        "CLOUD_SHELL",
        "CODESPACES",
        "CODESPACE_NAME",
        "GITPOD_WORKSPACE_ID",
        "REPL_ID",
        "STACKBLITZ",
    ):
        if os.getenv(var):
            return True
    return False


_CONSOLE_BROWSER_NAMES = frozenset(
    {"w3m", "lynx", "links", "links2", "elinks", "www-browser", "browsh"}
)


def can_open_graphical_browser() -> bool:
    import webbrowser as _webbrowser

    def _names_console_browser(value: str) -> bool:
        token = value.strip().split()[0] if value.strip() else ""
        return os.path.basename(token).lower() in _CONSOLE_BROWSER_NAMES

    browser_env = os.environ.get("BROWSER", "")
    if browser_env and _names_console_browser(browser_env):
        return False
    if sys.platform.startswith("linux"):
        has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        if not has_display and not browser_env:
            return False
    try:
        controller = _webbrowser.get()
    except Exception:
        return False
    candidate = getattr(controller, "name", "") or getattr(controller, "basename", "") or ""
    return not (candidate and _names_console_browser(candidate))


def browser_gate() -> bool:
    """The extra ``_can_open_graphical_browser()`` check exists from 0.16.0."""
    return can_open_graphical_browser() if since(0, 16, 0) else True


def webbrowser_open(url: str) -> bool:
    import webbrowser

    return webbrowser.open(url)


def ssh_user_at_host() -> str:
    hostname = os.environ.get("FAKE_HERMES_HOSTNAME")
    if not hostname:
        try:
            hostname = socket.gethostname() or "<this-host>"
        except OSError:
            hostname = "<this-host>"
    user = os.getenv("USER") or os.getenv("LOGNAME") or "<user>"
    return f"{user}@{hostname}"


def print_loopback_ssh_hint(redirect_uri: str, *, docs_url: str | None = None) -> None:
    if not is_remote_session():
        return
    try:
        parsed = urlparse(redirect_uri)
        host = parsed.hostname or ""
        port = parsed.port
    except Exception:
        return
    if host not in {"127.0.0.1", "::1", "localhost"} or not port:
        return
    if not since(0, 15, 0):
        print()
        print("Remote session detected. Your browser will redirect to")
        print(f"  {redirect_uri}")
        print("which the loopback listener on THIS machine is waiting on. If your")
        print("browser is on a different machine, forward the port first from your")
        print("local machine in a separate terminal:")
        print()
        print(f"  ssh -N -L {port}:127.0.0.1:{port} <user>@<this-host>")
        print()
        print("Then open the authorize URL above in your local browser.")
        if docs_url:
            print(f"Provider docs:      {docs_url}")
        print(f"SSH/jump-box guide: {OAUTH_OVER_SSH_DOCS_URL}")
        print()
        return
    divider = "-" * 60
    print()
    print(divider)
    print("Remote session detected — SSH tunnel required")
    print(divider)
    print(f"Hermes is waiting for the OAuth callback on {redirect_uri}")
    print("but your browser is on a different machine. Run this command")
    print("in a NEW terminal on your local machine BEFORE opening the URL:")
    print()
    print(f"  ssh -N -L {port}:127.0.0.1:{port} {ssh_user_at_host()}")
    print()
    print("Then open the authorize URL above in your local browser.")
    if not since(0, 18, 1):
        print()
        print("No SSH client (Cloud Shell / Codespaces / web IDE)?  Re-run with")
        print("`--manual-paste` to skip the loopback listener and paste the failed")
        print("callback URL directly.")
    if docs_url:
        print(f"Provider docs:      {docs_url}")
    print(f"SSH/jump-box guide: {OAUTH_OVER_SSH_DOCS_URL}")
    print(divider)
    print()


def callback_wait(default_seconds: float) -> float:
    override = os.environ.get("FAKE_HERMES_CALLBACK_WAIT")
    if override:
        try:
            return max(0.1, float(override))
        except ValueError:
            pass
    return max(5.0, default_seconds)


# ---------------------------------------------------------------------------
# auth.json (layout and atomic write as in hermes_cli/auth.py)
# ---------------------------------------------------------------------------


def hermes_home() -> Path:
    env = os.environ.get("HERMES_HOME", "").strip()
    return Path(env) if env else Path.home() / ".hermes"


def auth_file_path() -> Path:
    return hermes_home() / "auth.json"


class AuthStoreLock:
    def __enter__(self):
        import fcntl

        path = hermes_home() / "auth.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a+", encoding="utf-8")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        return False


def load_auth_store() -> dict:
    path = auth_file_path()
    if not path.exists():
        return {"version": 1, "providers": {}}
    try:
        raw = json.loads(path.read_text())
    except Exception:
        return {"version": 1, "providers": {}}
    if isinstance(raw, dict) and (
        isinstance(raw.get("providers"), dict) or isinstance(raw.get("credential_pool"), dict)
    ):
        raw.setdefault("providers", {})
        return raw
    return {"version": 1, "providers": {}}


def save_auth_store(store: dict) -> Path:
    path = auth_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    parent = path.parent.resolve()
    if parent != Path("/") and len(parent.parts) >= 3:
        try:
            os.chmod(parent, 0o700)
        except OSError:
            pass
    store["version"] = 1
    store["updated_at"] = now_utc().isoformat()
    payload = json.dumps(store, indent=2) + "\n"
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        try:
            dir_fd = os.open(str(path.parent), os.O_RDONLY)
        except OSError:
            dir_fd = None
        if dir_fd is not None:
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        except OSError:
            pass
    try:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    except OSError:
        pass
    return path


def pool_entries(store: dict, provider: str) -> list:
    pool = store.get("credential_pool")
    entries = pool.get(provider) if isinstance(pool, dict) else None
    return entries if isinstance(entries, list) else []


def make_pool_entry(
    entries: list,
    *,
    label: str,
    source: str,
    access_token: str,
    refresh_token=None,
    base_url=None,
    expires_at_ms=None,
    last_refresh=None,
    extra: dict | None = None,
) -> dict:
    priority = (
        max((int(e.get("priority", 0)) for e in entries if isinstance(e, dict)), default=-1) + 1
    )
    entry = {
        "id": uuid.uuid4().hex[:6],
        "label": label,
        "auth_type": "oauth",
        "priority": priority,
        "source": source,
        "access_token": access_token,
    }
    if refresh_token is not None:
        entry["refresh_token"] = refresh_token
    for key in (
        "last_status",
        "last_status_at",
        "last_error_code",
        "last_error_reason",
        "last_error_message",
        "last_error_reset_at",
    ):
        entry[key] = None
    if base_url is not None:
        entry["base_url"] = base_url
    if expires_at_ms is not None:
        entry["expires_at_ms"] = expires_at_ms
    if last_refresh is not None:
        entry["last_refresh"] = last_refresh
    entry["request_count"] = 0
    for key, value in (extra or {}).items():
        if value is not None:
            entry[key] = value
    return entry


def add_pool_entry(provider: str, **kwargs) -> tuple:
    """pool.add_entry(): append and persist.  Returns (entry, number of entries)."""
    with AuthStoreLock():
        store = load_auth_store()
        pool = store.get("credential_pool")
        if not isinstance(pool, dict):
            pool = store["credential_pool"] = {}
        entries = pool.setdefault(provider, [])
        entry = make_pool_entry(entries, **kwargs)
        entries.append(entry)
        save_auth_store(store)
    return entry, len(entries)


def save_provider_state(provider: str, state: dict, *, set_active: bool = True) -> Path:
    with AuthStoreLock():
        store = load_auth_store()
        store.setdefault("providers", {})[provider] = state
        if set_active:
            store["active_provider"] = provider
        return save_auth_store(store)


def seed_pool_from_singleton(
    provider: str,
    source: str,
    *,
    access_token: str,
    refresh_token=None,
    base_url=None,
    last_refresh=None,
    extra: dict | None = None,
) -> dict:
    """What load_pool() does after a singleton save: upsert one entry with ``source``."""
    with AuthStoreLock():
        store = load_auth_store()
        pool = store.get("credential_pool")
        if not isinstance(pool, dict):
            pool = store["credential_pool"] = {}
        entries = pool.setdefault(provider, [])
        label = label_from_token(access_token, source)
        for existing in entries:
            if isinstance(existing, dict) and existing.get("source") == source:
                existing.update(
                    access_token=access_token,
                    refresh_token=refresh_token,
                    last_refresh=last_refresh,
                )
                entry = existing
                break
        else:
            entry = make_pool_entry(
                entries,
                label=label,
                source=source,
                access_token=access_token,
                refresh_token=refresh_token,
                base_url=base_url,
                last_refresh=last_refresh,
                extra=extra,
            )
            entries.append(entry)
        save_auth_store(store)
    return entry


def mark_provider_active_if_unset(provider: str) -> None:
    with AuthStoreLock():
        store = load_auth_store()
        if not store.get("active_provider"):
            store["active_provider"] = provider
            save_auth_store(store)


# ---------------------------------------------------------------------------
# xAI: OIDC discovery (all versions)
# ---------------------------------------------------------------------------


def xai_oauth_discovery(timeout_seconds: float = 15.0) -> dict:
    try:
        response = http_request(
            "GET",
            "/.well-known/openid-configuration",
            headers={"Accept": "application/json"},
            timeout=timeout_seconds,
        )
    except Exception as exc:
        raise AuthError(
            f"xAI OIDC discovery failed: {exc}", provider="xai-oauth", code="xai_discovery_failed"
        ) from exc
    if response.status_code != 200:
        raise AuthError(
            f"xAI OIDC discovery returned status {response.status_code}.",
            provider="xai-oauth",
            code="xai_discovery_failed",
        )
    try:
        payload = response.json()
    except Exception as exc:
        raise AuthError(
            f"xAI OIDC discovery returned invalid JSON: {exc}",
            provider="xai-oauth",
            code="xai_discovery_invalid_json",
        ) from exc
    if not isinstance(payload, dict):
        raise AuthError(
            "xAI OIDC discovery response was not a JSON object.",
            provider="xai-oauth",
            code="xai_discovery_incomplete",
        )
    authorization_endpoint = str(payload.get("authorization_endpoint", "") or "").strip()
    token_endpoint = str(payload.get("token_endpoint", "") or "").strip()
    if not authorization_endpoint or not token_endpoint:
        raise AuthError(
            "xAI OIDC discovery response was missing required endpoints.",
            provider="xai-oauth",
            code="xai_discovery_incomplete",
        )
    # (The real client also insists on https://*.x.ai here; the lab mock is plain http.)
    return {"authorization_endpoint": authorization_endpoint, "token_endpoint": token_endpoint}


def xai_inference_base_url() -> str:
    candidate = os.getenv("HERMES_XAI_BASE_URL", "").strip().rstrip("/") or os.getenv(
        "XAI_BASE_URL", ""
    ).strip().rstrip("/")
    if not candidate:
        return DEFAULT_XAI_OAUTH_BASE_URL
    if not since(0, 15, 0):
        return candidate
    parsed = urlparse(candidate)
    host = (parsed.hostname or "").lower()
    if parsed.scheme != "https" or not host or (host != "x.ai" and not host.endswith(".x.ai")):
        return DEFAULT_XAI_OAUTH_BASE_URL
    return candidate


# ---------------------------------------------------------------------------
# xAI loopback PKCE (0.14.0 - 0.18.0)
# ---------------------------------------------------------------------------


def _xai_callback_cors_origin(origin):
    return origin if origin in {"https://accounts.x.ai", "https://auth.x.ai"} else ""


def make_xai_callback_handler(expected_path: str):
    result = {"code": None, "state": None, "error": None, "error_description": None}
    result_lock = threading.Lock()
    old_style = not since(0, 15, 0)

    class _XAICallbackHandler(BaseHTTPRequestHandler):
        def _maybe_write_cors_headers(self) -> None:
            allow_origin = _xai_callback_cors_origin(self.headers.get("Origin"))
            if allow_origin:
                self.send_header("Access-Control-Allow-Origin", allow_origin)
                self.send_header("Access-Control-Allow-Methods", "GET, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "Content-Type")
                self.send_header("Access-Control-Allow-Private-Network", "true")
                self.send_header("Vary", "Origin")

        def do_OPTIONS(self) -> None:
            self.send_response(204)
            self._maybe_write_cors_headers()
            self.end_headers()

        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            if parsed.path != expected_path:
                self.send_response(404)
                self.end_headers()
                self.wfile.write(b"Not found.")
                return
            params = parse_qs(parsed.query)
            incoming = {
                "code": params.get("code", [None])[0],
                "state": params.get("state", [None])[0],
                "error": params.get("error", [None])[0],
                "error_description": params.get("error_description", [None])[0],
            }
            if old_style:
                # 0.14.0: every hit on the path overwrites the result and gets 200.
                result.update(incoming)
            else:
                if incoming["code"] is None and incoming["error"] is None:
                    self.send_response(400)
                    self._maybe_write_cors_headers()
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.end_headers()
                    body = (
                        "<html><body>"
                        "<h1>xAI authorization not received.</h1>"
                        "<p>No authorization code was present in this callback URL. "
                        "Return to the terminal and re-run "
                        "<code>hermes auth add xai-oauth</code> to retry.</p>"
                        "</body></html>"
                    )
                    self.wfile.write(body.encode("utf-8"))
                    return
                with result_lock:
                    if not (result["code"] or result["error"]):
                        result.update(incoming)
            self.send_response(200)
            self._maybe_write_cors_headers()
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            if incoming["error"]:
                body = "<html><body><h1>xAI authorization failed.</h1>You can close this tab.</body></html>"
            else:
                body = "<html><body><h1>xAI authorization received.</h1>You can close this tab.</body></html>"
            self.wfile.write(body.encode("utf-8"))

        def log_message(self, format, *args):
            return

    return _XAICallbackHandler, result


def xai_start_callback_server(preferred_port: int = XAI_OAUTH_REDIRECT_PORT):
    host = XAI_OAUTH_REDIRECT_HOST
    handler_cls, result = make_xai_callback_handler(XAI_OAUTH_REDIRECT_PATH)
    base_cls = ThreadingHTTPServer if since(0, 15, 0) else HTTPServer

    class _ReuseHTTPServer(base_cls):
        allow_reuse_address = True
        daemon_threads = True

    ports_to_try = [preferred_port]
    if preferred_port != 0:
        ports_to_try.append(0)
    server = None
    last_error = None
    for port in ports_to_try:
        try:
            server = _ReuseHTTPServer((host, port), handler_cls)
            break
        except OSError as exc:
            last_error = exc
    if server is None:
        raise AuthError(
            f"Could not bind xAI callback server on {host}:{preferred_port}: {last_error}",
            provider="xai-oauth",
            code="xai_callback_bind_failed",
        ) from last_error
    actual_port = int(server.server_address[1])
    redirect_uri = f"http://{host}:{actual_port}{XAI_OAUTH_REDIRECT_PATH}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    return server, thread, result, redirect_uri


def read_ready_stdin_line():
    try:
        if not sys.stdin.isatty():
            return None
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if not ready:
            return None
        return sys.stdin.readline()
    except Exception:
        return None


def parse_pasted_callback(raw: str) -> dict:
    stripped = raw.strip()
    result = {"code": None, "state": None, "error": None, "error_description": None}
    if not stripped:
        return result
    if stripped.startswith(("http://", "https://")):
        try:
            query = urlparse(stripped).query or ""
        except Exception:
            return result
    elif stripped.startswith("?"):
        query = stripped[1:]
    elif "=" in stripped:
        query = stripped
    else:
        result["code"] = stripped
        return result
    params = parse_qs(query, keep_blank_values=False)
    for key in ("code", "state", "error", "error_description"):
        values = params.get(key)
        if values:
            result[key] = values[0]
    return result


def prompt_manual_callback_paste(redirect_uri: str) -> dict:
    print()
    print("─── Manual callback paste ─────────────────────────────────────")
    print("After approving in your browser, your browser will try to load")
    print(f"  {redirect_uri}")
    print("which fails (the loopback listener is on this remote machine,")
    print("not on your laptop) — that is expected.  Copy the FULL URL")
    print("from your browser's address bar of that failed page and paste")
    print("it below.  A bare '?code=...&state=...' fragment also works.")
    print("If the consent page shows the authorization code in-page")
    print("(xAI's current behavior) rather than redirecting, paste the")
    print("bare code value on its own.")
    print("───────────────────────────────────────────────────────────────")
    try:
        raw = input("Callback URL: ")
    except (EOFError, KeyboardInterrupt):
        raw = ""
    return parse_pasted_callback(raw)


def xai_wait_for_callback(
    server, thread, result, *, timeout_seconds: float, manual_paste_redirect_uri=None
) -> dict:
    deadline = time.monotonic() + callback_wait(timeout_seconds)
    paste_enabled = bool(manual_paste_redirect_uri) and since(0, 17, 0)
    if paste_enabled and sys.stdin.isatty():
        print()
        print("If xAI shows a Grok Build code instead of redirecting,")
        print("paste that code here and press Enter.")
    try:
        while time.monotonic() < deadline:
            if result["code"] or result["error"]:
                return result
            if paste_enabled:
                raw_paste = read_ready_stdin_line()
                if raw_paste and raw_paste.strip():
                    pasted = parse_pasted_callback(raw_paste)
                    pasted["_manual_paste"] = True
                    return pasted
            time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=1.0)
    raise AuthError(
        "xAI authorization timed out waiting for the local callback.",
        provider="xai-oauth",
        code="xai_callback_timeout",
    )


def xai_build_authorize_url(
    *, authorization_endpoint, redirect_uri, code_challenge, state, nonce
) -> str:
    params = {
        "response_type": "code",
        "client_id": XAI_OAUTH_CLIENT_ID,
        "redirect_uri": redirect_uri,
        "scope": XAI_OAUTH_SCOPE,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "state": state,
        "nonce": nonce,
        "plan": "generic",
        "referrer": "hermes-agent",
    }
    return f"{authorization_endpoint}?{urlencode(params)}"


def xai_exchange_code_for_tokens(
    *, token_endpoint, code, redirect_uri, code_verifier, code_challenge, timeout_seconds
) -> dict:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": XAI_OAUTH_CLIENT_ID,
        "code_verifier": code_verifier,
    }
    if since(0, 15, 0) and code_challenge:
        data["code_challenge"] = code_challenge
        data["code_challenge_method"] = "S256"
    try:
        response = http_request(
            "POST",
            token_endpoint,
            form=data,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            timeout=max(20.0, timeout_seconds),
        )
    except Exception as exc:
        raise AuthError(
            f"xAI token exchange failed: {exc}",
            provider="xai-oauth",
            code="xai_token_exchange_failed",
        ) from exc
    if response.status_code != 200:
        body = response.text.strip()
        if not since(0, 15, 0):
            raise AuthError(
                "xAI token exchange failed." + (f" Response: {body}" if body else ""),
                provider="xai-oauth",
                code="xai_token_exchange_failed",
            )
        if response.status_code == 403:
            raise AuthError(
                "xAI token exchange failed (HTTP 403)."
                + (f" Response: {body}" if body else "")
                + " This OAuth account is not authorized for xAI API"
                " access — xAI may be restricting API/OAuth use to"
                " specific SuperGrok tiers despite the in-app"
                " subscription being active. Set ``XAI_API_KEY``"
                " and switch to ``provider: xai`` (API-key path) if"
                " available, or upgrade your subscription at"
                " https://x.ai/grok.",
                provider="xai-oauth",
                code="xai_oauth_tier_denied",
            )
        raise AuthError(
            f"xAI token exchange failed (HTTP {response.status_code})."
            + (f" Response: {body}" if body else ""),
            provider="xai-oauth",
            code="xai_token_exchange_failed",
        )
    try:
        payload = response.json()
    except Exception as exc:
        raise AuthError(
            f"xAI token exchange returned invalid JSON: {exc}",
            provider="xai-oauth",
            code="xai_token_exchange_invalid",
        ) from exc
    if not isinstance(payload, dict):
        raise AuthError(
            "xAI token exchange response was not a JSON object.",
            provider="xai-oauth",
            code="xai_token_exchange_invalid",
        )
    return payload


def xai_oauth_loopback_login(
    *, timeout_seconds: float, open_browser: bool, manual_paste: bool
) -> dict:
    discovery = xai_oauth_discovery(timeout_seconds)
    authorization_endpoint = discovery["authorization_endpoint"]
    token_endpoint = discovery["token_endpoint"]
    allow_missing_state = False

    if manual_paste:
        redirect_uri = (
            f"http://{XAI_OAUTH_REDIRECT_HOST}:{XAI_OAUTH_REDIRECT_PORT}{XAI_OAUTH_REDIRECT_PATH}"
        )
        code_verifier = oauth_pkce_code_verifier()
        code_challenge = oauth_pkce_code_challenge(code_verifier)
        state = uuid.uuid4().hex
        nonce = uuid.uuid4().hex
        authorize_url = xai_build_authorize_url(
            authorization_endpoint=authorization_endpoint,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            state=state,
            nonce=nonce,
        )
        print("Open this URL to authorize Hermes with xAI:")
        print(authorize_url)
        callback = prompt_manual_callback_paste(redirect_uri)
        allow_missing_state = True
    else:
        server, thread, callback_result, redirect_uri = xai_start_callback_server()
        try:
            code_verifier = oauth_pkce_code_verifier()
            code_challenge = oauth_pkce_code_challenge(code_verifier)
            state = uuid.uuid4().hex
            nonce = uuid.uuid4().hex
            authorize_url = xai_build_authorize_url(
                authorization_endpoint=authorization_endpoint,
                redirect_uri=redirect_uri,
                code_challenge=code_challenge,
                state=state,
                nonce=nonce,
            )
            print("Open this URL to authorize Hermes with xAI:")
            print(authorize_url)
            print()
            print(f"Waiting for callback on {redirect_uri}")

            print_loopback_ssh_hint(redirect_uri, docs_url=XAI_OAUTH_DOCS_URL)

            if open_browser and not is_remote_session() and browser_gate():
                try:
                    opened = webbrowser_open(authorize_url)
                except Exception:
                    opened = False
                if opened:
                    print("Browser opened for xAI authorization.")
                else:
                    print("Could not open the browser automatically; use the URL above.")

            wait = max(30.0, timeout_seconds * 9)
            if not since(0, 15, 0):
                callback = xai_wait_for_callback(
                    server, thread, callback_result, timeout_seconds=wait
                )
            else:
                try:
                    callback = xai_wait_for_callback(
                        server,
                        thread,
                        callback_result,
                        timeout_seconds=wait,
                        manual_paste_redirect_uri=redirect_uri,
                    )
                except AuthError as exc:
                    if exc.code != "xai_callback_timeout" or not _stdin_isatty():
                        raise
                    print()
                    print("xAI loopback callback timed out.")
                    print("If your browser reached a failed 127.0.0.1 callback page,")
                    print("paste that FULL callback URL below to continue this login.")
                    print("You can also re-run with `--manual-paste` to skip the")
                    print("loopback listener from the start.")
                    callback = prompt_manual_callback_paste(redirect_uri)
                    if callback.get("code") is None and callback.get("error") is None:
                        raise exc
                    if since(0, 17, 0):
                        allow_missing_state = True
        except Exception:
            try:
                server.shutdown()
                server.server_close()
            except Exception:
                pass
            try:
                thread.join(timeout=1.0)
            except Exception:
                pass
            raise

    if callback.get("error"):
        detail = callback.get("error_description") or callback["error"]
        raise AuthError(
            f"xAI authorization failed: {detail}",
            provider="xai-oauth",
            code="xai_authorization_failed",
        )
    callback_state = callback.get("state")
    if callback.get("_manual_paste"):
        allow_missing_state = True
    if since(0, 15, 0) and callback_state is None and (manual_paste or allow_missing_state):
        callback_state = state
    if callback_state != state:
        raise AuthError(
            "xAI authorization failed: state mismatch.",
            provider="xai-oauth",
            code="xai_state_mismatch",
        )
    code = str(callback.get("code") or "").strip()
    if not code:
        raise AuthError(
            "xAI authorization failed: missing authorization code.",
            provider="xai-oauth",
            code="xai_code_missing",
        )

    payload = xai_exchange_code_for_tokens(
        token_endpoint=token_endpoint,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
        code_challenge=code_challenge,
        timeout_seconds=timeout_seconds,
    )
    access_token = str(payload.get("access_token", "") or "").strip()
    refresh_token = str(payload.get("refresh_token", "") or "").strip()
    if not access_token:
        raise AuthError(
            "xAI token exchange did not return an access_token.",
            provider="xai-oauth",
            code="xai_token_exchange_invalid",
        )
    if not refresh_token:
        raise AuthError(
            "xAI token exchange did not return a refresh_token.",
            provider="xai-oauth",
            code="xai_token_exchange_invalid",
        )
    return {
        "tokens": {
            "access_token": access_token,
            "refresh_token": refresh_token,
            "id_token": str(payload.get("id_token", "") or "").strip(),
            "expires_in": payload.get("expires_in"),
            "token_type": str(payload.get("token_type") or "Bearer").strip() or "Bearer",
        },
        "discovery": discovery,
        "redirect_uri": redirect_uri,
        "base_url": xai_inference_base_url(),
        "last_refresh": iso_z(),
        "source": "oauth-loopback",
    }


def _stdin_isatty() -> bool:
    try:
        return bool(sys.stdin.isatty())
    except Exception:
        return False


# ---------------------------------------------------------------------------
# xAI device code (0.18.1+)
# ---------------------------------------------------------------------------


def xai_oauth_device_code_login(*, timeout_seconds: float, open_browser: bool) -> dict:
    discovery = xai_oauth_discovery(timeout_seconds)
    token_endpoint = discovery["token_endpoint"]
    timeout = max(20.0, timeout_seconds)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    response = http_request(
        "POST",
        "/oauth2/device/code",
        headers=headers,
        timeout=timeout,
        form={"client_id": XAI_OAUTH_CLIENT_ID, "scope": XAI_OAUTH_SCOPE},
    )
    if response.status_code != 200:
        raise AuthError(
            f"xAI device-code request failed (HTTP {response.status_code})."
            + (f" Response: {response.text.strip()}" if response.text else ""),
            provider="xai-oauth",
            code="device_code_request_failed",
        )
    device_data = response.json()
    required = (
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    )
    missing = [key for key in required if key not in device_data]
    if missing:
        raise AuthError(
            f"xAI device-code response missing fields: {', '.join(missing)}",
            provider="xai-oauth",
            code="device_code_invalid",
        )
    verification_url = str(
        device_data.get("verification_uri_complete") or device_data["verification_uri"]
    )
    user_code = str(device_data["user_code"])
    expires_in = int(device_data["expires_in"])
    interval = int(device_data["interval"])

    print()
    print("To continue:")
    print(f"  1. Open: {verification_url}")
    print(f"  2. If prompted, enter code: {user_code}")
    if open_browser and not is_remote_session() and can_open_graphical_browser():
        try:
            opened = webbrowser_open(verification_url)
        except Exception:
            opened = False
        if opened:
            print("  (Opened browser for verification)")
        else:
            print("  Could not open browser automatically -- use the URL above.")
    print(f"Waiting for approval (polling every {max(1, interval)}s)...")

    deadline = time.monotonic() + max(1, int(expires_in))
    current_interval = max(1, int(interval))
    payload = None
    while time.monotonic() < deadline:
        response = http_request(
            "POST",
            token_endpoint,
            headers=headers,
            timeout=timeout,
            form={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "client_id": XAI_OAUTH_CLIENT_ID,
                "device_code": str(device_data["device_code"]),
            },
        )
        if response.status_code == 200:
            payload = response.json()
            if not payload.get("access_token"):
                raise AuthError(
                    "xAI device-code token response did not include an access_token.",
                    provider="xai-oauth",
                    code="xai_device_token_invalid",
                )
            if not payload.get("refresh_token"):
                raise AuthError(
                    "xAI device-code token response did not include a refresh_token.",
                    provider="xai-oauth",
                    code="xai_device_token_invalid",
                )
            break
        try:
            error_payload = response.json()
        except Exception:
            raise AuthError(
                "xAI device-code token polling returned a non-JSON error response.",
                provider="xai-oauth",
                code="xai_device_token_failed",
            )
        error_code = str(error_payload.get("error") or "")
        if error_code == "authorization_pending":
            time.sleep(current_interval)
            continue
        if error_code == "slow_down":
            current_interval = min(current_interval + 1, 30)
            time.sleep(current_interval)
            continue
        description = (
            error_payload.get("error_description") or error_payload.get("error") or response.text
        )
        raise AuthError(
            f"xAI device-code token polling failed: {description}",
            provider="xai-oauth",
            code="xai_device_token_failed",
        )
    if payload is None:
        raise AuthError(
            "Timed out waiting for xAI device authorization.",
            provider="xai-oauth",
            code="device_code_timeout",
        )
    return {
        "tokens": {
            "access_token": str(payload.get("access_token", "") or "").strip(),
            "refresh_token": str(payload.get("refresh_token", "") or "").strip(),
            "id_token": str(payload.get("id_token", "") or "").strip(),
            "expires_in": payload.get("expires_in"),
            "token_type": str(payload.get("token_type") or "Bearer").strip() or "Bearer",
        },
        "discovery": discovery,
        "redirect_uri": "",
        "base_url": xai_inference_base_url(),
        "last_refresh": iso_z(),
        "source": "oauth-device-code",
    }


def save_xai_oauth_tokens(creds: dict, auth_mode: str) -> None:
    state = {}
    with AuthStoreLock():
        store = load_auth_store()
        existing = store.get("providers", {}).get("xai-oauth")
        state = dict(existing) if isinstance(existing, dict) else {}
    state["tokens"] = creds["tokens"]
    state["last_refresh"] = creds["last_refresh"]
    state["auth_mode"] = auth_mode
    if creds.get("discovery"):
        state["discovery"] = creds["discovery"]
    if creds.get("redirect_uri"):
        state["redirect_uri"] = creds["redirect_uri"]
    save_provider_state("xai-oauth", state)


def auth_add_xai(args) -> None:
    provider = "xai-oauth"
    timeout_seconds = args.timeout or 20.0
    open_browser = not args.no_browser
    custom_label = (args.label or "").strip()
    if not since(0, 18, 1):
        creds = xai_oauth_loopback_login(
            timeout_seconds=timeout_seconds,
            open_browser=open_browser,
            manual_paste=bool(getattr(args, "manual_paste", False)),
        )
        if not since(0, 16, 0):
            existing = pool_entries(load_auth_store(), provider)
            label = custom_label or label_from_token(
                creds["tokens"]["access_token"], f"{provider}-oauth-{len(existing) + 1}"
            )
            entry, count = add_pool_entry(
                provider,
                label=label,
                source="manual:xai_pkce",
                access_token=creds["tokens"]["access_token"],
                refresh_token=creds["tokens"].get("refresh_token"),
                base_url=creds.get("base_url"),
                last_refresh=creds.get("last_refresh"),
            )
            print(f'Added {provider} OAuth credential #{count}: "{entry["label"]}"')
            return
        save_xai_oauth_tokens(creds, "oauth_pkce")
        entry = seed_pool_from_singleton(
            provider,
            "loopback_pkce",
            access_token=creds["tokens"]["access_token"],
            refresh_token=creds["tokens"]["refresh_token"],
            base_url=creds.get("base_url"),
            last_refresh=creds.get("last_refresh"),
        )
        print(f'Saved {provider} OAuth credentials: "{entry["label"]}"')
        return

    creds = xai_oauth_device_code_login(timeout_seconds=timeout_seconds, open_browser=open_browser)
    if not since(0, 19, 0):
        save_xai_oauth_tokens(creds, "oauth_device_code")
        entry = seed_pool_from_singleton(
            provider,
            "device_code",
            access_token=creds["tokens"]["access_token"],
            refresh_token=creds["tokens"]["refresh_token"],
            base_url=creds.get("base_url"),
            last_refresh=creds.get("last_refresh"),
        )
        print(f'Saved {provider} OAuth credentials: "{entry["label"]}"')
        return
    existing = pool_entries(load_auth_store(), provider)
    label = custom_label or label_from_token(
        creds["tokens"]["access_token"], f"{provider}-oauth-{len(existing) + 1}"
    )
    first_credential = not existing
    entry, count = add_pool_entry(
        provider,
        label=label,
        source="manual:device_code",
        access_token=creds["tokens"]["access_token"],
        refresh_token=creds["tokens"].get("refresh_token"),
        base_url=creds.get("base_url") or DEFAULT_XAI_OAUTH_BASE_URL,
        last_refresh=creds.get("last_refresh"),
    )
    if first_credential:
        mark_provider_active_if_unset(provider)
    print(f'Added {provider} OAuth credential #{count}: "{entry["label"]}"')


# ---------------------------------------------------------------------------
# Anthropic (paste code#state) -- agent/anthropic_adapter.run_hermes_oauth_login_pure
# ---------------------------------------------------------------------------


def anthropic_login() -> dict | None:
    verifier = _b64url(secrets.token_bytes(32))
    challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
    oauth_state = secrets.token_urlsafe(32)
    params = {
        "code": "true",
        "client_id": ANTHROPIC_OAUTH_CLIENT_ID,
        "response_type": "code",
        "redirect_uri": ANTHROPIC_OAUTH_REDIRECT_URI,
        "scope": ANTHROPIC_OAUTH_SCOPES,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": oauth_state,
    }
    base = provider_base() or "https://claude.ai"
    auth_url = f"{base}/oauth/authorize?{urlencode(params)}"

    print()
    print("Authorize Hermes with your Claude Pro/Max subscription.")
    print()
    print("╭─ Claude Pro/Max Authorization ────────────────────╮")
    print("│                                                   │")
    print("│  Open this link in your browser:                  │")
    print("╰───────────────────────────────────────────────────╯")
    print()
    print(f"  {auth_url}")
    print()
    if browser_gate():
        try:
            webbrowser_open(auth_url)
            print("  (Browser opened automatically)")
        except Exception:
            pass
    print()
    print("After authorizing, you'll see a code. Paste it below.")
    print()
    try:
        auth_code = input("Authorization code: ").strip()
    except (KeyboardInterrupt, EOFError):
        return None
    if not auth_code:
        print("No code entered.")
        return None
    splits = auth_code.split("#")
    code = splits[0]
    received_state = splits[1] if len(splits) > 1 else ""
    if received_state != oauth_state:
        # The real client only logs "OAuth state mismatch — possible CSRF, aborting"
        # to ~/.hermes/logs, nothing on the terminal.
        return None
    body = {
        "grant_type": "authorization_code",
        "client_id": ANTHROPIC_OAUTH_CLIENT_ID,
        "code": code,
        "state": received_state,
        "redirect_uri": ANTHROPIC_OAUTH_REDIRECT_URI,
        "code_verifier": verifier,
    }
    try:
        base = provider_base()
        if base is None:
            raise urllib.error.URLError(_offline())
        url = f"{base}/v1/oauth/token"
        try:
            _check_lab_address(url)
        except OSError as exc:
            raise urllib.error.URLError(exc)
        req = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "axios/1.7.9"},
        )
        with _OPENER.open(req, timeout=15) as resp:
            result = json.loads(resp.read().decode())
    except Exception as exc:
        print(f"Token exchange failed: {exc}")
        return None
    access_token = result.get("access_token", "")
    if not access_token:
        print("No access token in response.")
        return None
    expires_in = result.get("expires_in", 3600)
    return {
        "access_token": access_token,
        "refresh_token": result.get("refresh_token", ""),
        "expires_at_ms": int(time.time() * 1000) + (expires_in * 1000),
    }


def auth_add_anthropic(args) -> None:
    provider = "anthropic"
    creds = anthropic_login()
    if not creds:
        raise SystemExit("Anthropic OAuth login did not return credentials.")
    existing = pool_entries(load_auth_store(), provider)
    label = (args.label or "").strip() or label_from_token(
        creds["access_token"], f"{provider}-oauth-{len(existing) + 1}"
    )
    entry, count = add_pool_entry(
        provider,
        label=label,
        source="manual:hermes_pkce",
        access_token=creds["access_token"],
        refresh_token=creds.get("refresh_token"),
        base_url="https://api.anthropic.com",
        expires_at_ms=creds.get("expires_at_ms"),
    )
    print(f'Added {provider} OAuth credential #{count}: "{entry["label"]}"')


# ---------------------------------------------------------------------------
# OpenAI Codex (device code, coloured URL and code)
# ---------------------------------------------------------------------------


def codex_device_code_login() -> dict:
    issuer = provider_base() or "https://auth.openai.com"
    client_id = CODEX_OAUTH_CLIENT_ID
    try:
        resp = http_request(
            "POST",
            "/api/accounts/deviceauth/usercode",
            json_body={"client_id": client_id},
            headers={"Content-Type": "application/json"},
            timeout=15.0,
        )
    except Exception as exc:
        raise AuthError(
            f"Failed to request device code: {exc}",
            provider="openai-codex",
            code="device_code_request_failed",
        )
    if resp.status_code != 200:
        raise AuthError(
            f"Device code request returned status {resp.status_code}.",
            provider="openai-codex",
            code="device_code_request_error",
        )
    device_data = resp.json()
    user_code = device_data.get("user_code", "")
    device_auth_id = device_data.get("device_auth_id", "")
    poll_interval = max(3, int(device_data.get("interval", "5")))
    if not user_code or not device_auth_id:
        raise AuthError(
            "Device code response missing required fields.",
            provider="openai-codex",
            code="device_code_incomplete",
        )

    print("To continue, follow these steps:\n")
    print("  1. Open this URL in your browser:")
    print(f"     \033[94m{issuer}/codex/device\033[0m\n")
    print("  2. Enter this code:")
    print(f"     \033[94m{user_code}\033[0m\n")
    print("Waiting for sign-in... (press Ctrl+C to cancel)")

    max_wait = 15 * 60
    start = time.monotonic()
    code_resp = None
    try:
        while time.monotonic() - start < max_wait:
            time.sleep(poll_interval)
            poll_resp = http_request(
                "POST",
                "/api/accounts/deviceauth/token",
                json_body={"device_auth_id": device_auth_id, "user_code": user_code},
                headers={"Content-Type": "application/json"},
                timeout=15.0,
            )
            if poll_resp.status_code == 200:
                code_resp = poll_resp.json()
                break
            if poll_resp.status_code in {403, 404}:
                continue
            raise AuthError(
                f"Device auth polling returned status {poll_resp.status_code}.",
                provider="openai-codex",
                code="device_code_poll_error",
            )
    except KeyboardInterrupt:
        print("\nLogin cancelled.")
        raise SystemExit(130)
    if code_resp is None:
        raise AuthError(
            "Login timed out after 15 minutes.", provider="openai-codex", code="device_code_timeout"
        )

    authorization_code = code_resp.get("authorization_code", "")
    code_verifier = code_resp.get("code_verifier", "")
    if not authorization_code or not code_verifier:
        raise AuthError(
            "Device auth response missing authorization_code or code_verifier.",
            provider="openai-codex",
            code="device_code_incomplete_exchange",
        )
    try:
        token_resp = http_request(
            "POST",
            "/oauth/token",
            timeout=15.0,
            form={
                "grant_type": "authorization_code",
                "code": authorization_code,
                "redirect_uri": f"{issuer}/deviceauth/callback",
                "client_id": client_id,
                "code_verifier": code_verifier,
            },
        )
    except Exception as exc:
        raise AuthError(
            f"Token exchange failed: {exc}", provider="openai-codex", code="token_exchange_failed"
        )
    if token_resp.status_code != 200:
        raise AuthError(
            f"Token exchange returned status {token_resp.status_code}.",
            provider="openai-codex",
            code="token_exchange_error",
        )
    tokens = token_resp.json()
    if not tokens.get("access_token", ""):
        raise AuthError(
            "Token exchange did not return an access_token.",
            provider="openai-codex",
            code="token_exchange_no_access_token",
        )
    return {
        "tokens": {
            "access_token": tokens.get("access_token", ""),
            "refresh_token": tokens.get("refresh_token", ""),
        },
        "base_url": os.getenv("HERMES_CODEX_BASE_URL", "").strip().rstrip("/")
        or DEFAULT_CODEX_BASE_URL,
        "last_refresh": iso_z(),
    }


def auth_add_codex(args) -> None:
    provider = "openai-codex"
    creds = codex_device_code_login()
    existing = pool_entries(load_auth_store(), provider)
    label = (args.label or "").strip() or label_from_token(
        creds["tokens"]["access_token"], f"{provider}-oauth-{len(existing) + 1}"
    )
    first_credential = not existing
    entry, count = add_pool_entry(
        provider,
        label=label,
        source="manual:device_code",
        access_token=creds["tokens"]["access_token"],
        refresh_token=creds["tokens"].get("refresh_token"),
        base_url=creds.get("base_url"),
        last_refresh=creds.get("last_refresh"),
    )
    if first_credential:
        mark_provider_active_if_unset(provider)
    print(f'Added {provider} OAuth credential #{count}: "{entry["label"]}"')


# ---------------------------------------------------------------------------
# MiniMax OAuth (user code + PKCE)
# ---------------------------------------------------------------------------


def minimax_oauth_login(*, open_browser: bool, timeout_seconds: float) -> dict:
    region = "global"
    portal_base_url = provider_base() or "https://api.minimax.io"
    inference_base_url = MINIMAX_OAUTH_GLOBAL_INFERENCE
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    state = secrets.token_urlsafe(16)
    if is_remote_session():
        open_browser = False

    print(f"Starting Hermes login via MiniMax ({region}) OAuth...")
    print(f"Portal: {portal_base_url}")

    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    response = http_request(
        "POST",
        "/oauth/code",
        timeout=timeout_seconds,
        headers={**headers, "x-request-id": str(uuid.uuid4())},
        form={
            "response_type": "code",
            "client_id": MINIMAX_OAUTH_CLIENT_ID,
            "scope": MINIMAX_OAUTH_SCOPE,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
        },
    )
    if response.status_code != 200:
        raise AuthError(
            f"MiniMax OAuth authorization failed: {response.text or response.reason_phrase}",
            provider="minimax-oauth",
            code="authorization_failed",
        )
    code_data = response.json()
    for field in ("user_code", "verification_uri", "expired_in"):
        if field not in code_data:
            raise AuthError(
                f"MiniMax OAuth response missing field: {field}",
                provider="minimax-oauth",
                code="authorization_incomplete",
            )
    if code_data.get("state") != state:
        raise AuthError(
            "MiniMax OAuth state mismatch (possible CSRF).",
            provider="minimax-oauth",
            code="state_mismatch",
        )
    verification_url = str(code_data["verification_uri"])
    user_code = str(code_data["user_code"])

    print()
    print("To continue:")
    print(f"  1. Open: {verification_url}")
    print(f"  2. If prompted, enter code: {user_code}")
    if open_browser and browser_gate():
        if webbrowser_open(verification_url):
            print("  (Opened browser for verification)")
        else:
            print("  Could not open browser automatically -- use the URL above.")
    interval_raw = code_data.get("interval")
    interval_ms = int(interval_raw) if interval_raw is not None else None
    print("Waiting for approval...")

    now_ms = int(time.time() * 1000)
    raw = int(code_data["expired_in"])
    deadline = raw / 1000.0 if raw > now_ms // 2 else time.time() + max(1, raw)
    interval = max(2.0, (interval_ms or 2000) / 1000.0)
    token_data = None
    while time.time() < deadline:
        response = http_request(
            "POST",
            "/oauth/token",
            timeout=timeout_seconds,
            headers=headers,
            form={
                "grant_type": MINIMAX_OAUTH_GRANT_TYPE,
                "client_id": MINIMAX_OAUTH_CLIENT_ID,
                "user_code": user_code,
                "code_verifier": verifier,
            },
        )
        try:
            payload = response.json() if response.text else {}
        except Exception:
            payload = {}
        if response.status_code != 200:
            msg = (payload.get("base_resp", {}) or {}).get("status_msg") or response.text
            raise AuthError(
                f"MiniMax OAuth error: {msg or 'unknown'}",
                provider="minimax-oauth",
                code="token_exchange_failed",
            )
        status = payload.get("status")
        if status == "error":
            raise AuthError(
                "MiniMax OAuth reported an error. Please try again later.",
                provider="minimax-oauth",
                code="authorization_denied",
            )
        if status == "success":
            if not all(payload.get(k) for k in ("access_token", "refresh_token", "expired_in")):
                raise AuthError(
                    "MiniMax OAuth success payload missing required token fields.",
                    provider="minimax-oauth",
                    code="token_incomplete",
                )
            token_data = payload
            break
        time.sleep(interval)
    if token_data is None:
        raise AuthError(
            "MiniMax OAuth timed out before authorization completed.",
            provider="minimax-oauth",
            code="timeout",
        )

    now = now_utc()
    exp_raw = int(token_data["expired_in"])
    expires_at_unix = (
        exp_raw / 1000.0
        if exp_raw > int(now.timestamp() * 1000) // 2
        else now.timestamp() + max(1, exp_raw)
    )
    auth_state = {
        "provider": "minimax-oauth",
        "region": region,
        "portal_base_url": portal_base_url,
        "inference_base_url": inference_base_url,
        "client_id": MINIMAX_OAUTH_CLIENT_ID,
        "scope": MINIMAX_OAUTH_SCOPE,
        "token_type": token_data.get("token_type", "Bearer"),
        "access_token": token_data["access_token"],
        "refresh_token": token_data["refresh_token"],
        "resource_url": token_data.get("resource_url"),
        "obtained_at": now.isoformat(),
        "expires_at": datetime.fromtimestamp(expires_at_unix, tz=timezone.utc).isoformat(),
        "expires_in": max(0, int(expires_at_unix - now.timestamp())),
    }
    save_provider_state("minimax-oauth", auth_state)
    print("\u2713 MiniMax OAuth login successful.")
    if token_data.get("notification_message"):
        print(f"Note from MiniMax: {token_data['notification_message']}")
    return auth_state


def auth_add_minimax(args) -> None:
    provider = "minimax-oauth"
    existing = pool_entries(load_auth_store(), provider)
    creds = minimax_oauth_login(
        open_browser=not args.no_browser, timeout_seconds=args.timeout or 15.0
    )
    label = (args.label or "").strip() or label_from_token(
        creds["access_token"], f"{provider}-oauth-{len(existing) + 1}"
    )
    entry, count = add_pool_entry(
        provider,
        label=label,
        source="manual:minimax_oauth",
        access_token=creds["access_token"],
        refresh_token=creds.get("refresh_token"),
        base_url=creds.get("inference_base_url"),
    )
    print(f'Added {provider} OAuth credential #{count}: "{entry["label"]}"')


# ---------------------------------------------------------------------------
# Nous Portal (device code, optional shared-credential import prompt)
# ---------------------------------------------------------------------------


def nous_shared_store_path() -> Path:
    override = os.getenv("HERMES_SHARED_AUTH_DIR", "").strip()
    if override:
        return Path(override).expanduser() / "nous_auth.json"
    native = Path.home() / ".hermes"
    env_home = os.environ.get("HERMES_HOME", "")
    if not env_home:
        root = native
    else:
        env_path = Path(env_home)
        try:
            env_path.resolve().relative_to(native.resolve())
            root = native
        except ValueError:
            root = env_path.parent.parent if env_path.parent.name == "profiles" else env_path
    return root / "shared" / "nous_auth.json"


def nous_device_code_login(args) -> dict:
    portal_base_url = (
        args.portal_url
        or os.getenv("HERMES_PORTAL_BASE_URL")
        or os.getenv("NOUS_PORTAL_BASE_URL")
        or provider_base()
        or "https://portal.nousresearch.com"
    ).rstrip("/")
    inference_base_url = (
        args.inference_url or os.getenv("NOUS_INFERENCE_BASE_URL") or DEFAULT_NOUS_INFERENCE_URL
    ).rstrip("/")
    client_id = args.client_id or DEFAULT_NOUS_CLIENT_ID
    scope = args.scope or DEFAULT_NOUS_SCOPE
    timeout = args.timeout or 15.0
    open_browser = not args.no_browser
    if is_remote_session():
        open_browser = False

    print("Starting Hermes login via Nous Portal...")
    print(f"Portal: {portal_base_url}")
    if args.insecure:
        print("TLS verification: disabled (--insecure)")
    elif args.ca_bundle:
        print(f"TLS verification: custom CA bundle ({args.ca_bundle})")

    response = http_request(
        "POST",
        f"{portal_base_url}/api/oauth/device/code",
        timeout=timeout,
        headers={"Accept": "application/json"},
        form={"client_id": client_id, **({"scope": scope} if scope else {})},
    )
    if response.status_code >= 400:
        raise RuntimeError(
            f"Client error '{response.status_code} {response.reason_phrase}' for url "
            f"'{portal_base_url}/api/oauth/device/code'"
        )
    device_data = response.json()
    required = [
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    ]
    missing = [f for f in required if f not in device_data]
    if missing:
        raise ValueError(f"Device code response missing fields: {', '.join(missing)}")
    verification_url = str(device_data["verification_uri_complete"])
    user_code = str(device_data["user_code"])
    expires_in = int(device_data["expires_in"])
    interval = int(device_data["interval"])

    print()
    print("To continue:")
    print(f"  1. Open: {verification_url}")
    print(f"  2. If prompted, enter code: {user_code}")
    if open_browser:
        if webbrowser_open(verification_url):
            print("  (Opened browser for verification)")
        else:
            print("  Could not open browser automatically — use the URL above.")
    effective_interval = max(1, min(interval, DEVICE_AUTH_POLL_INTERVAL_CAP_SECONDS))
    print(f"Waiting for approval (polling every {effective_interval}s)...")

    deadline = time.monotonic() + max(1, expires_in)
    token_data = None
    while time.monotonic() < deadline:
        response = http_request(
            "POST",
            f"{portal_base_url}/api/oauth/token",
            timeout=timeout,
            headers={"Accept": "application/json"},
            form={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "client_id": client_id,
                "device_code": str(device_data["device_code"]),
            },
        )
        if response.status_code == 200:
            token_data = response.json()
            if "access_token" not in token_data:
                raise ValueError("Token response did not include access_token")
            break
        try:
            error_payload = response.json()
        except Exception:
            raise RuntimeError("Token endpoint returned a non-JSON error response")
        error_code = error_payload.get("error", "")
        if error_code == "authorization_pending":
            time.sleep(effective_interval)
            continue
        if error_code == "slow_down":
            effective_interval = min(effective_interval + 1, 30)
            time.sleep(effective_interval)
            continue
        description = error_payload.get("error_description") or "Unknown authentication error"
        raise RuntimeError(f"{error_code}: {description}")
    if token_data is None:
        raise TimeoutError("Timed out waiting for device authorization")

    now = now_utc()
    ttl = int(token_data.get("expires_in") or 0)
    return {
        "portal_base_url": portal_base_url,
        "inference_base_url": inference_base_url,
        "client_id": client_id,
        "scope": token_data.get("scope") or scope,
        "token_type": token_data.get("token_type", "Bearer"),
        "access_token": token_data["access_token"],
        "refresh_token": token_data.get("refresh_token"),
        "obtained_at": now.isoformat(),
        "expires_at": datetime.fromtimestamp(now.timestamp() + ttl, tz=timezone.utc).isoformat(),
        "expires_in": ttl,
        "tls": {"insecure": bool(args.insecure), "ca_bundle": args.ca_bundle},
        "agent_key": None,
        "agent_key_id": None,
        "agent_key_expires_at": None,
        "agent_key_expires_in": None,
        "agent_key_reused": None,
        "agent_key_obtained_at": None,
    }


def persist_nous_credentials(creds: dict, label: str | None) -> dict:
    state = dict(creds)
    if label:
        state["label"] = label
    save_provider_state("nous", state)
    return seed_pool_from_singleton(
        "nous",
        "device_code",
        access_token=state["access_token"],
        refresh_token=state.get("refresh_token"),
        base_url=state.get("inference_base_url"),
    )


def auth_add_nous(args) -> None:
    provider = "nous"
    custom_label = (args.label or "").strip() or None
    shared = (os.environ.get("FAKE_HERMES_NOUS_IMPORT") or "").strip().lower()
    if shared and shared not in {"0", "no", "false"}:
        print()
        print(f"Found existing Nous OAuth credentials at {nous_shared_store_path()}")
        try:
            do_import = input("Import these credentials? [Y/n]: ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            do_import = "y"
        if do_import in {"", "y", "yes"}:
            print("Rehydrating Nous session from shared credentials...")
            if shared == "ok":
                now = int(time.time())
                claims = {
                    "email": "lab@example.test",
                    "scope": DEFAULT_NOUS_SCOPE,
                    "iat": now,
                    "exp": now + 3600,
                }
                token = ".".join(
                    (
                        _b64url(b'{"alg":"none","typ":"JWT"}'),
                        _b64url(json.dumps(claims).encode()),
                        _b64url(b"fake-import"),
                    )
                )
                rehydrated = {
                    "portal_base_url": provider_base() or "https://portal.nousresearch.com",
                    "inference_base_url": DEFAULT_NOUS_INFERENCE_URL,
                    "client_id": DEFAULT_NOUS_CLIENT_ID,
                    "scope": DEFAULT_NOUS_SCOPE,
                    "token_type": "Bearer",
                    "access_token": token,
                    "refresh_token": "fake-imported-refresh-" + secrets.token_urlsafe(12),
                }
                entry = persist_nous_credentials(rehydrated, custom_label)
                print(f'Imported {provider} OAuth credentials: "{entry["label"]}"')
                return
            print("Could not refresh shared credentials — falling back to device-code login.")
    creds = nous_device_code_login(args)
    entry = persist_nous_credentials(creds, custom_label)
    print(f'Saved {provider} OAuth device-code credentials: "{entry["label"]}"')


# ---------------------------------------------------------------------------
# API-key providers (the real prompt, via getpass)
# ---------------------------------------------------------------------------


def auth_add_api_key(args, provider: str) -> None:
    token = (args.api_key or "").strip()
    if not token:
        token = getpass.getpass("Paste your API key: ").strip()
    if not token:
        raise SystemExit("No API key provided.")
    existing = pool_entries(load_auth_store(), provider)
    default_label = f"api-key-{len(existing) + 1}"
    label = (args.label or "").strip()
    if not label:
        if sys.stdin.isatty():
            label = input(f"Label (optional, default: {default_label}): ").strip() or default_label
        else:
            label = default_label
    with AuthStoreLock():
        store = load_auth_store()
        pool = store.setdefault("credential_pool", {})
        entries = pool.setdefault(provider, [])
        entry = make_pool_entry(entries, label=label, source="manual", access_token=token)
        entry["auth_type"] = "api_key"
        entries.append(entry)
        save_auth_store(store)
        count = len(entries)
    print(f'Added {provider} credential #{count}: "{label}"')


# ---------------------------------------------------------------------------
# Spotify (loopback PKCE on 127.0.0.1:43827, single-threaded listener)
# ---------------------------------------------------------------------------


def dotenv_value(key: str) -> str | None:
    if key in os.environ:
        return os.environ[key]
    try:
        for line in (hermes_home() / ".env").read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                if k.strip() == key:
                    return v.strip().strip('"').strip("'")
    except OSError:
        pass
    return None


def spotify_interactive_setup(redirect_uri_hint: str) -> str:
    print()
    print("=" * 70)
    print("Spotify first-time setup")
    print("=" * 70)
    print()
    print("Spotify requires every user to register their own lightweight")
    print("developer app. This takes about two minutes and only has to be")
    print("done once per machine.")
    print()
    print(f"Full guide: {SPOTIFY_DOCS_URL}")
    print()
    print("Steps:")
    print(f"  1. Opening {SPOTIFY_DASHBOARD_URL} in your browser...")
    print("  2. Click 'Create app' and fill in:")
    print("       App name:     anything (e.g. hermes-agent)")
    print("       Description:  anything")
    print(f"       Redirect URI: {redirect_uri_hint}")
    print("       API/SDK:      Web API")
    print("  3. Agree to the terms, click Save.")
    print("  4. Open the app's Settings page and copy the Client ID.")
    print("  5. Paste it below.")
    print()
    try:
        raw = input("Spotify Client ID: ").strip()
    except (EOFError, KeyboardInterrupt):
        print()
        raise SystemExit("Spotify setup cancelled.")
    if not raw:
        print()
        print(f"No Client ID entered. See {SPOTIFY_DOCS_URL} for the full guide.")
        raise SystemExit("Spotify setup cancelled: empty Client ID.")
    env_path = hermes_home() / ".env"
    env_path.parent.mkdir(parents=True, exist_ok=True)
    with open(env_path, "a", encoding="utf-8") as fh:
        fh.write(f"HERMES_SPOTIFY_CLIENT_ID={raw}\n")
    print()
    print("Saved HERMES_SPOTIFY_CLIENT_ID to ~/.hermes/.env")
    print()
    return raw


def spotify_wait_for_callback(redirect_uri: str, *, timeout_seconds: float) -> dict:
    parsed = urlparse(redirect_uri)
    if parsed.scheme != "http":
        raise AuthError(
            "Spotify PKCE redirect_uri must use http://localhost or http://127.0.0.1.",
            provider="spotify",
            code="spotify_redirect_invalid",
        )
    host = parsed.hostname or ""
    if host not in {"127.0.0.1", "localhost"}:
        raise AuthError(
            "Spotify PKCE redirect_uri must point to localhost or 127.0.0.1.",
            provider="spotify",
            code="spotify_redirect_invalid",
        )
    if not parsed.port:
        raise AuthError(
            "Spotify PKCE redirect_uri must include an explicit localhost port.",
            provider="spotify",
            code="spotify_redirect_invalid",
        )
    port = parsed.port
    expected_path = parsed.path or "/"
    result = {"code": None, "state": None, "error": None, "error_description": None}

    class _SpotifyCallbackHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            p = urlparse(self.path)
            if p.path != expected_path:
                self.send_response(404)
                self.end_headers()
                self.wfile.write(b"Not found.")
                return
            params = parse_qs(p.query)
            result["code"] = params.get("code", [None])[0]
            result["state"] = params.get("state", [None])[0]
            result["error"] = params.get("error", [None])[0]
            result["error_description"] = params.get("error_description", [None])[0]
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            if result["error"]:
                body = "<html><body><h1>Spotify authorization failed.</h1>You can close this tab.</body></html>"
            else:
                body = "<html><body><h1>Spotify authorization received.</h1>You can close this tab.</body></html>"
            self.wfile.write(body.encode("utf-8"))

        def log_message(self, format, *args):
            return

    class _ReuseHTTPServer(HTTPServer):
        allow_reuse_address = True

    try:
        server = _ReuseHTTPServer((host, port), _SpotifyCallbackHandler)
    except OSError as exc:
        raise AuthError(
            f"Could not bind Spotify callback server on {host}:{port}: {exc}",
            provider="spotify",
            code="spotify_callback_bind_failed",
        ) from exc
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + callback_wait(timeout_seconds)
    try:
        while time.monotonic() < deadline:
            if result["code"] or result["error"]:
                return result
            time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=1.0)
    raise AuthError(
        "Spotify authorization timed out waiting for the local callback.",
        provider="spotify",
        code="spotify_callback_timeout",
    )


def login_spotify(args) -> None:
    existing = load_auth_store().get("providers", {}).get("spotify") or {}
    client_id = None
    for candidate in (
        args.client_id,
        dotenv_value("HERMES_SPOTIFY_CLIENT_ID"),
        dotenv_value("SPOTIFY_CLIENT_ID"),
        existing.get("client_id"),
    ):
        if str(candidate or "").strip():
            client_id = str(candidate).strip()
            break
    if client_id is None:
        client_id = spotify_interactive_setup(args.redirect_uri or DEFAULT_SPOTIFY_REDIRECT_URI)
    redirect_uri = DEFAULT_SPOTIFY_REDIRECT_URI
    for candidate in (
        args.redirect_uri,
        dotenv_value("HERMES_SPOTIFY_REDIRECT_URI"),
        dotenv_value("SPOTIFY_REDIRECT_URI"),
        existing.get("redirect_uri"),
    ):
        if str(candidate or "").strip():
            redirect_uri = str(candidate).strip()
            break
    raw_scope = args.scope or existing.get("scope") or DEFAULT_SPOTIFY_SCOPE
    seen, scopes = set(), []
    for part in raw_scope.split():
        if part not in seen:
            seen.add(part)
            scopes.append(part)
    scope = " ".join(scopes)
    accounts_base_url = ""
    for candidate in (
        dotenv_value("HERMES_SPOTIFY_ACCOUNTS_BASE_URL"),
        existing.get("accounts_base_url"),
        provider_base(),
        "https://accounts.spotify.com",
    ):
        if str(candidate or "").strip():
            accounts_base_url = str(candidate).strip().rstrip("/")
            break
    api_base_url = ""
    for candidate in (
        dotenv_value("HERMES_SPOTIFY_API_BASE_URL"),
        existing.get("api_base_url"),
        DEFAULT_SPOTIFY_API_BASE_URL,
    ):
        if str(candidate or "").strip():
            api_base_url = str(candidate).strip().rstrip("/")
            break
    open_browser = not args.no_browser

    code_verifier = oauth_pkce_code_verifier()
    code_challenge = oauth_pkce_code_challenge(code_verifier)
    state_nonce = uuid.uuid4().hex
    query = urlencode(
        {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state_nonce,
            "code_challenge_method": "S256",
            "code_challenge": code_challenge,
        }
    )
    authorize_url = f"{accounts_base_url}/authorize?{query}"

    print("Starting Spotify PKCE login...")
    print(f"Client ID: {client_id}")
    print(f"Redirect URI: {redirect_uri}")
    print("Make sure this redirect URI is allow-listed in your Spotify app settings.")
    print()
    print("Open this URL to authorize Hermes:")
    print(authorize_url)
    print()
    print(f"Full setup guide: {SPOTIFY_DOCS_URL}")
    print()

    print_loopback_ssh_hint(redirect_uri, docs_url=SPOTIFY_DOCS_URL)

    if open_browser and not is_remote_session() and browser_gate():
        try:
            opened = webbrowser_open(authorize_url)
        except Exception:
            opened = False
        if opened:
            print("Browser opened for Spotify authorization.")
        else:
            print("Could not open the browser automatically; use the URL above.")

    callback = spotify_wait_for_callback(redirect_uri, timeout_seconds=float(args.timeout or 180.0))
    if callback.get("error"):
        raise SystemExit(
            f"Spotify authorization failed: {callback.get('error_description') or callback['error']}"
        )
    if callback.get("state") != state_nonce:
        raise SystemExit("Spotify authorization failed: state mismatch.")

    try:
        response = http_request(
            "POST",
            f"{accounts_base_url}/api/token",
            timeout=float(args.timeout or 20.0),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            form={
                "client_id": client_id,
                "grant_type": "authorization_code",
                "code": str(callback.get("code") or ""),
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
        )
    except Exception as exc:
        raise AuthError(
            f"Spotify token exchange failed: {exc}",
            provider="spotify",
            code="spotify_token_exchange_failed",
        ) from exc
    if response.status_code >= 400:
        detail = response.text.strip()
        raise AuthError(
            "Spotify token exchange failed." + (f" Response: {detail}" if detail else ""),
            provider="spotify",
            code="spotify_token_exchange_failed",
        )
    payload = response.json()
    if not isinstance(payload, dict) or not str(payload.get("access_token", "") or "").strip():
        raise AuthError(
            "Spotify token response did not include an access_token.",
            provider="spotify",
            code="spotify_token_exchange_invalid",
        )
    now = now_utc()
    try:
        expires_in = max(0, int(payload.get("expires_in", 0) or 0))
    except (TypeError, ValueError):
        expires_in = 0
    spotify_state = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "accounts_base_url": accounts_base_url,
        "api_base_url": api_base_url,
        "scope": scope,
        "granted_scope": str(payload.get("scope") or scope).strip(),
        "token_type": str(payload.get("token_type", "Bearer") or "Bearer").strip() or "Bearer",
        "access_token": str(payload.get("access_token", "") or "").strip(),
        "refresh_token": str(payload.get("refresh_token") or "").strip(),
        "obtained_at": now.isoformat(),
        "expires_at": datetime.fromtimestamp(
            now.timestamp() + expires_in, tz=timezone.utc
        ).isoformat(),
        "expires_in": expires_in,
        "auth_type": "oauth_pkce",
    }
    saved_to = save_provider_state("spotify", spotify_state, set_active=False)
    print("Spotify login successful!")
    print(f"  Auth state: {saved_to}")
    print("  Provider state saved under providers.spotify")
    print(f"  Docs: {SPOTIFY_DOCS_URL}")


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def normalize_provider(provider: str) -> str:
    normalized = (provider or "").strip().lower()
    if normalized in {"or", "open-router"}:
        return "openrouter"
    if normalized in {"grok-oauth", "xai-oauth", "x-ai-oauth", "xai-grok-oauth"}:
        return "xai-oauth"
    return normalized


def auth_add_command(args) -> None:
    provider = normalize_provider(args.provider)
    if provider not in PROVIDER_REGISTRY and provider != "openrouter":
        raise SystemExit(f"Unknown provider: {provider}")
    requested_type = str(args.auth_type or "").strip().lower()
    if requested_type in {"api_key", "api-key"}:
        requested_type = "api_key"
    if not requested_type:
        requested_type = "oauth" if provider in OAUTH_CAPABLE_PROVIDERS else "api_key"
    if requested_type == "api_key":
        return auth_add_api_key(args, provider)
    handlers = {
        "xai-oauth": auth_add_xai,
        "anthropic": auth_add_anthropic,
        "openai-codex": auth_add_codex,
        "minimax-oauth": auth_add_minimax,
        "nous": auth_add_nous,
    }
    handler = handlers.get(provider)
    if handler is None:
        raise SystemExit(
            f"`hermes auth add {provider}` is not implemented for auth type {requested_type} yet."
        )
    handler(args)


def print_version() -> None:
    print(f"Hermes Agent v{VERSION} ({RELEASE_DATES.get(VERSION, 'unknown')})")
    print(f"Install directory: {os.path.dirname(os.path.abspath(__file__))}")
    print("Install method: pip")
    print(f"Python: {sys.version.split()[0]}")
    print("OpenAI SDK: Not installed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hermes", description="Hermes Agent (fake, for tests)")
    parser.add_argument("--version", "-V", action="store_true", help="Show version and exit")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("version", help="Show version")
    auth = sub.add_parser("auth", help="Manage pooled provider credentials")
    auth_sub = auth.add_subparsers(dest="auth_action")
    add = auth_sub.add_parser("add", help="Add a pooled credential")
    add.add_argument("provider")
    add.add_argument("--type", dest="auth_type", choices=["oauth", "api-key", "api_key"])
    add.add_argument("--label")
    add.add_argument("--api-key")
    add.add_argument("--portal-url")
    add.add_argument("--inference-url")
    add.add_argument("--client-id")
    add.add_argument("--scope")
    add.add_argument("--no-browser", action="store_true")
    if since(0, 15, 0) and not since(0, 18, 1):
        add.add_argument("--manual-paste", action="store_true")
    add.add_argument("--timeout", type=float)
    add.add_argument("--insecure", action="store_true")
    add.add_argument("--ca-bundle")
    spotify = auth_sub.add_parser("spotify", help="Authenticate Hermes with Spotify via PKCE")
    spotify.add_argument(
        "spotify_action", nargs="?", choices=["login", "status", "logout"], default="login"
    )
    spotify.add_argument("--client-id")
    spotify.add_argument("--redirect-uri")
    spotify.add_argument("--scope")
    spotify.add_argument("--no-browser", action="store_true")
    spotify.add_argument("--timeout", type=float)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version or args.command == "version":
        print_version()
        return 0
    if args.command != "auth":
        parser.print_help()
        return 0
    if args.auth_action == "add":
        auth_add_command(args)
        return 0
    if args.auth_action == "spotify":
        if args.spotify_action == "login":
            login_spotify(args)
        elif args.spotify_action == "status":
            state = load_auth_store().get("providers", {}).get("spotify")
            print("spotify: logged in" if state else "spotify: logged out")
        else:
            with AuthStoreLock():
                store = load_auth_store()
                store.get("providers", {}).pop("spotify", None)
                save_auth_store(store)
        return 0
    raise SystemExit("fake_hermes: only `auth add` and `auth spotify` are implemented")


if __name__ == "__main__":
    sys.exit(main())
