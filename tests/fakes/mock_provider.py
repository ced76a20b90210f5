#!/usr/bin/env python3
"""Mock OAuth identity provider for tunnelauth tests (Python standard library only).

Usage:
    python3 mock_provider.py --host H --port P [--state-dir DIR]
                             [--device-interval N] [--device-expires N] [--verbose]
                             [--tls-cert PEM --tls-key PEM]

Prints exactly one line ``listening http://H:PORT`` on stdout once bound (``--port 0``
prints the port the OS chose) and serves until SIGTERM/SIGINT (exit 0).  With
``--tls-cert``/``--tls-key`` it serves HTTPS instead (``listening https://H:PORT``), as
the lab's auth.x.ai: the real hermes xAI flows insist on https URLs on x.ai.

It never prints codes or tokens to stdout/stderr.  ``--verbose`` logs
``METHOD path status`` to stderr, without the query string.

Endpoints (the base URL is taken from the request's Host header, so the mock
works unchanged behind any address the tests give it):

  OIDC discovery (xAI-like)
    GET  /.well-known/openid-configuration     (logged as a "discovery" event with its Host)

  Authorization-code + PKCE (xAI /oauth2/auth, Spotify /authorize,
  Anthropic /oauth/authorize)
    GET  <authorize path>?response_type=code&client_id&redirect_uri&state
         &code_challenge&code_challenge_method=S256[&mock_error=access_denied]
         -> 302 to redirect_uri?code=...&state=...   (or ?error=...&state=...)
         When redirect_uri is not a loopback http URL (Anthropic's
         https://console.anthropic.com/oauth/code/callback) the mock instead
         answers 200 with a page that shows ``<code>#<state>`` for the user to paste.

  Token endpoint, one handler on every path the clients use:
    POST /oauth2/token  /api/token  /oauth/token  /v1/oauth/token  /api/oauth/token
         form-encoded or JSON bodies; grant types:
           authorization_code  (PKCE S256 verified, redirect_uri must match,
                                one-time code)
           urn:ietf:params:oauth:grant-type:device_code   (RFC 8628 polling)
           urn:ietf:params:oauth:grant-type:user_code     (MiniMax polling)
           refresh_token

  Device authorization
    POST /oauth2/device/code               xAI (RFC 8628)
    POST /api/oauth/device/code            Nous Portal (RFC 8628)
    POST /oauth/code                       MiniMax (user_code + PKCE)
    POST /api/accounts/deviceauth/usercode OpenAI Codex (JSON)
    POST /api/accounts/deviceauth/token    OpenAI Codex polling (403 until approved)
    GET  /device?user_code=X               what the browser opens: approves X, 200 HTML.
    GET  /codex/device[?user_code=X]       same; without user_code it approves the
                                           only pending code, if exactly one is pending.
         Add ``&mock_error=access_denied`` to deny instead.

  Spotify Web API stub (not needed for login)
    GET  /v1/me        (Bearer access token from this mock)

  Test helpers
    GET  /_log         JSON of everything that happened (codes issued/redeemed,
                       device approvals, token requests, errors).  Contains
                       codes, for tests only.
    POST /_reset       forget all state.

With ``--state-dir DIR`` the log is also written to DIR/mock-log.json after every
event (mode 0600).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import os
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

LAB_EMAIL = "lab@example.test"

AUTHORIZE_PATHS = {"/oauth2/auth", "/authorize", "/oauth/authorize"}
TOKEN_PATHS = {"/oauth2/token", "/api/token", "/oauth/token", "/v1/oauth/token", "/api/oauth/token"}
DEVICE_PAGE_PATHS = {"/device", "/codex/device", "/oauth/device", "/activate"}

GRANT_DEVICE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_USER_CODE = "urn:ietf:params:oauth:grant-type:user_code"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def pkce_s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())


def fake_jwt(claims: dict) -> str:
    """An unsigned JWT-shaped token (three dot-separated base64url parts)."""
    header = {"alg": "none", "typ": "JWT", "kid": "mock"}
    return ".".join(
        (
            b64url(json.dumps(header, separators=(",", ":")).encode()),
            b64url(json.dumps(claims, separators=(",", ":")).encode()),
            b64url(b"mock-signature-" + secrets.token_bytes(8)),
        )
    )


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def new_user_code() -> str:
    digits = "".join(secrets.choice("0123456789") for _ in range(4))
    tail = "".join(secrets.choice("0123456789ABCDEF") for _ in range(4))
    return f"{digits}-{tail}"


def is_loopback_http(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.scheme == "http" and (parts.hostname or "") in {"127.0.0.1", "localhost", "::1"}


def add_query(uri: str, params: list) -> str:
    parts = urlsplit(uri)
    query = parts.query
    extra = urlencode(params)
    query = f"{query}&{extra}" if query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class State:
    """All mutable provider state, guarded by one lock."""

    def __init__(self, state_dir: str | None, device_interval: int, device_expires: int):
        self.lock = threading.Lock()
        self.state_dir = state_dir
        self.device_interval = device_interval
        self.device_expires = device_expires
        self.reset()

    def reset(self) -> None:
        self.codes: dict = {}  # code -> {...}
        self.devices: dict = {}  # user_code -> {...}
        self.by_device_code: dict = {}  # device_code -> user_code
        self.by_codex_id: dict = {}  # device_auth_id -> user_code
        self.access_tokens: dict = {}  # token -> claims
        self.refresh_tokens: dict = {}  # token -> client_id
        self.events: list = []
        self.counter = 0

    def event(self, _event: str, **fields) -> None:
        # caller holds the lock
        self.counter += 1
        entry = {"n": self.counter, "t": round(time.time(), 3), "event": _event}
        entry.update(fields)
        self.events.append(entry)
        if self.state_dir:
            try:
                path = os.path.join(self.state_dir, "mock-log.json")
                tmp = f"{path}.tmp.{os.getpid()}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self.snapshot(), fh, indent=2)
                os.replace(tmp, path)
            except OSError:
                pass

    def snapshot(self) -> dict:
        codes = []
        for code, rec in self.codes.items():
            item = {k: v for k, v in rec.items() if k not in {"code_challenge"}}
            item["code"] = code
            codes.append(item)
        devices = []
        for user_code, rec in self.devices.items():
            item = {
                k: v
                for k, v in rec.items()
                if k not in {"device_code", "code_challenge", "verifier"}
            }
            item["user_code"] = user_code
            devices.append(item)
        return {
            "codes_issued": sum(1 for e in self.events if e["event"] == "code_issued"),
            "codes_redeemed": sum(1 for e in self.events if e["event"] == "code_redeemed"),
            "device_approvals": sum(1 for e in self.events if e["event"] == "device_approved"),
            "codes": codes,
            "devices": devices,
            "events": list(self.events),
        }

    def issue_tokens(
        self, client_id: str, scope: str = "", *, email: str = LAB_EMAIL, extra: dict | None = None
    ) -> dict:
        now = int(time.time())
        claims = {
            "iss": "mock-provider",
            "sub": "mock-user-1",
            "aud": client_id or "mock-client",
            "email": email,
            "iat": now,
            "exp": now + 3600,
            "jti": secrets.token_hex(8),
        }
        if scope:
            claims["scope"] = scope
        access = fake_jwt(claims)
        refresh = "mock-refresh-" + secrets.token_urlsafe(24)
        id_claims = {**claims, "email_verified": True}
        if (extra or {}).get("nonce"):
            id_claims["nonce"] = extra["nonce"]
        id_token = fake_jwt(id_claims)
        self.access_tokens[access] = claims
        self.refresh_tokens[refresh] = client_id
        payload = {
            "access_token": access,
            "refresh_token": refresh,
            "id_token": id_token,
            "token_type": "Bearer",
            "expires_in": 3600,
        }
        if scope:
            payload["scope"] = scope
        return payload


STATE: State  # set in main()


class Handler(BaseHTTPRequestHandler):
    server_version = "MockIdP/1.0"
    protocol_version = "HTTP/1.1"
    verbose = False
    scheme = "http"

    # -- plumbing -----------------------------------------------------------
    def log_message(self, format, *args):
        return

    def log_request(self, code="-", size="-"):
        if self.verbose:
            path = self.path.split("?", 1)[0]
            sys.stderr.write(f"mock_provider: {self.command} {path} {code}\n")
            sys.stderr.flush()

    def base_url(self) -> str:
        host = self.headers.get("Host") or "{}:{:d}".format(*self.server.server_address[:2])
        return f"{self.scheme}://{host}"

    def send_body(
        self, status: int, body: bytes, content_type: str, headers: dict | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj) -> None:
        self.send_body(status, json.dumps(obj).encode(), "application/json")

    def send_html(self, status: int, title: str, body_html: str) -> None:
        page = f"<!doctype html><html><head><title>{html.escape(title)}</title></head><body>{body_html}</body></html>"
        self.send_body(status, page.encode(), "text/html; charset=utf-8")

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def oauth_error(self, status: int, error: str, description: str = "") -> None:
        body = {"error": error}
        if description:
            body["error_description"] = description
        self.send_json(status, body)

    def read_params(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/json" or raw[:1] in (b"{",):
            try:
                data = json.loads(raw.decode("utf-8") or "{}")
                return (
                    {str(k): ("" if v is None else str(v)) for k, v in data.items()}
                    if isinstance(data, dict)
                    else {}
                )
            except ValueError:
                return {}
        parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    # -- dispatch -----------------------------------------------------------
    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path
        if path == "/.well-known/openid-configuration":
            return self.discovery()
        if path in AUTHORIZE_PATHS:
            return self.authorize(path, query)
        if path in DEVICE_PAGE_PATHS:
            return self.device_page(path, query)
        if path == "/v1/me":
            return self.spotify_me()
        if path == "/_log":
            with STATE.lock:
                snap = STATE.snapshot()
            return self.send_json(200, snap)
        if path in ("/", "/_health"):
            return self.send_json(200, {"ok": True})
        self.send_html(404, "Not found", "<h1>Not found</h1>")

    def do_POST(self):
        path = urlsplit(self.path).path
        params = self.read_params()
        if path in TOKEN_PATHS:
            return self.token(path, params)
        if path in (
            "/oauth2/device/code",
            "/api/oauth/device/code",
            "/oauth2/device_authorization",
        ):
            return self.device_code(path, params)
        if path == "/oauth/code":
            return self.minimax_code(params)
        if path == "/api/accounts/deviceauth/usercode":
            return self.codex_usercode(params)
        if path == "/api/accounts/deviceauth/token":
            return self.codex_poll(params)
        if path == "/_reset":
            with STATE.lock:
                STATE.reset()
            return self.send_json(200, {"ok": True})
        self.send_json(404, {"error": "not_found"})

    # -- endpoints ----------------------------------------------------------
    def discovery(self) -> None:
        base = self.base_url()
        with STATE.lock:
            STATE.event("discovery", host=self.headers.get("Host") or "", scheme=self.scheme)
        self.send_json(
            200,
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/oauth2/auth",
                "token_endpoint": f"{base}/oauth2/token",
                "device_authorization_endpoint": f"{base}/oauth2/device/code",
                "userinfo_endpoint": f"{base}/v1/me",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", GRANT_DEVICE],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
            },
        )

    def authorize(self, path: str, q: dict) -> None:
        redirect_uri = q.get("redirect_uri", "")
        state = q.get("state", "")
        client_id = q.get("client_id", "")
        problems = []
        if q.get("response_type") != "code":
            problems.append("response_type must be code")
        if not client_id:
            problems.append("client_id missing")
        if not redirect_uri:
            problems.append("redirect_uri missing")
        if not q.get("code_challenge"):
            problems.append("code_challenge missing")
        if q.get("code_challenge_method") != "S256":
            problems.append("code_challenge_method must be S256")
        if problems:
            with STATE.lock:
                STATE.event("authorize_rejected", path=path, problems=problems)
            return self.send_html(
                400,
                "Bad authorization request",
                "<h1>Bad authorization request</h1><p>" + html.escape("; ".join(problems)) + "</p>",
            )

        mock_error = q.get("mock_error") or (q.get("deny") and "access_denied")
        if mock_error:
            with STATE.lock:
                STATE.event(
                    "authorize_denied",
                    path=path,
                    client_id=client_id,
                    redirect_uri=redirect_uri,
                    error=mock_error,
                )
            params = [
                ("error", mock_error),
                ("error_description", "The user denied the request (mock)."),
                ("state", state),
            ]
            if is_loopback_http(redirect_uri) or path != "/oauth/authorize":
                return self.redirect(add_query(redirect_uri, params))
            return self.send_html(200, "Authorization denied", "<h1>Authorization denied</h1>")

        code = "mock-code-" + secrets.token_urlsafe(24)
        with STATE.lock:
            STATE.codes[code] = {
                "kind": "authorize",
                "path": path,
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "code_challenge": q.get("code_challenge"),
                "state": state,
                "scope": q.get("scope", ""),
                "nonce": q.get("nonce", ""),
                "issued_at": time.time(),
                "redeemed": False,
            }
            STATE.event(
                "code_issued",
                path=path,
                client_id=client_id,
                redirect_uri=redirect_uri,
                code=code,
                state=state,
            )
        if is_loopback_http(redirect_uri) or path != "/oauth/authorize":
            return self.redirect(add_query(redirect_uri, [("code", code), ("state", state)]))
        # Anthropic-style paste flow: show code#state on a page.
        pasted = f"{code}#{state}"
        return self.send_html(
            200,
            "Authorization code",
            "<h1>Authentication successful</h1><p>Paste this code into your terminal:</p>"
            f'<pre id="code">{html.escape(pasted)}</pre>',
        )

    def token(self, path: str, p: dict) -> None:
        grant = p.get("grant_type", "")
        if grant == "authorization_code":
            return self.token_authorization_code(path, p)
        if grant == GRANT_DEVICE:
            return self.token_device(path, p)
        if grant == GRANT_USER_CODE:
            return self.token_minimax(p)
        if grant == "refresh_token":
            return self.token_refresh(path, p)
        with STATE.lock:
            STATE.event("token_error", path=path, grant_type=grant, error="unsupported_grant_type")
        return self.oauth_error(
            400, "unsupported_grant_type", f"grant_type {grant!r} is not supported"
        )

    def token_authorization_code(self, path: str, p: dict) -> None:
        code = p.get("code", "")
        verifier = p.get("code_verifier", "")
        with STATE.lock:
            rec = STATE.codes.get(code)
            error = None
            if rec is None:
                error = ("invalid_grant", "unknown authorization code")
            elif rec["redeemed"]:
                error = ("invalid_grant", "authorization code already used")
            elif rec.get("client_id") and p.get("client_id") and p["client_id"] != rec["client_id"]:
                error = ("invalid_client", "client_id does not match the authorization request")
            elif p.get("redirect_uri", "") != rec["redirect_uri"]:
                error = ("invalid_grant", "redirect_uri does not match the authorization request")
            elif not verifier:
                error = ("invalid_request", "code_verifier is required")
            elif pkce_s256(verifier) != rec["code_challenge"]:
                error = ("invalid_grant", "PKCE verification failed")
            elif time.time() - rec["issued_at"] > 600:
                error = ("invalid_grant", "authorization code expired")
            if rec is not None:
                rec["redeemed"] = True  # one-time, even when the attempt fails
            if error:
                STATE.event(
                    "token_error",
                    path=path,
                    grant_type="authorization_code",
                    error=error[0],
                    error_description=error[1],
                    code=code or None,
                )
            else:
                rec["redeemed_at"] = time.time()
                tokens = STATE.issue_tokens(
                    rec.get("client_id") or p.get("client_id", ""),
                    rec.get("scope", ""),
                    extra={"nonce": rec.get("nonce")},
                )
                STATE.event(
                    "code_redeemed",
                    path=path,
                    client_id=rec.get("client_id"),
                    code=code,
                    access_token_fp=fingerprint(tokens["access_token"]),
                )
        if error:
            return self.oauth_error(400, *error)
        if path == "/v1/oauth/token":  # Anthropic shape
            tokens = {
                k: tokens[k] for k in ("access_token", "refresh_token", "expires_in", "token_type")
            }
        if path == "/api/token":  # Spotify shape (no id_token)
            tokens.pop("id_token", None)
        return self.send_json(200, tokens)

    def token_device(self, path: str, p: dict) -> None:
        device_code = p.get("device_code", "")
        with STATE.lock:
            user_code = STATE.by_device_code.get(device_code)
            rec = STATE.devices.get(user_code) if user_code else None
            rec_state = "unknown" if rec is None else rec["status"]
            if rec is not None and rec_state == "pending" and time.time() > rec["expires_at"]:
                rec_state = rec["status"] = "expired"
            if rec is not None:
                rec["polls"] = rec.get("polls", 0) + 1
            tokens = None
            if rec_state == "approved":
                rec["status"] = "redeemed"
                tokens = STATE.issue_tokens(rec.get("client_id", ""), rec.get("scope", ""))
                STATE.event(
                    "device_redeemed",
                    kind=rec["kind"],
                    user_code=user_code,
                    access_token_fp=fingerprint(tokens["access_token"]),
                )
            elif rec_state != "pending":
                STATE.event(
                    "token_error",
                    path=path,
                    grant_type=GRANT_DEVICE,
                    error=rec_state,
                    user_code=user_code,
                )
        if tokens is not None:
            if rec["kind"] == "nous":
                tokens["scope"] = rec.get("scope") or "inference:invoke"
            return self.send_json(200, tokens)
        if rec_state == "pending":
            return self.oauth_error(
                400, "authorization_pending", "The user has not yet approved the request."
            )
        if rec_state == "denied":
            return self.oauth_error(400, "access_denied", "The user denied the request.")
        if rec_state == "expired":
            return self.oauth_error(400, "expired_token", "The device code has expired.")
        return self.oauth_error(400, "invalid_grant", "Unknown or already used device code.")

    def token_refresh(self, path: str, p: dict) -> None:
        refresh = p.get("refresh_token", "")
        with STATE.lock:
            client_id = STATE.refresh_tokens.pop(refresh, None)
            if client_id is None:
                STATE.event(
                    "token_error", path=path, grant_type="refresh_token", error="invalid_grant"
                )
                tokens = None
            else:
                tokens = STATE.issue_tokens(client_id)
                STATE.event(
                    "token_refreshed",
                    path=path,
                    access_token_fp=fingerprint(tokens["access_token"]),
                )
        if tokens is None:
            return self.oauth_error(400, "invalid_grant", "unknown refresh token")
        if path == "/api/token":
            tokens.pop("id_token", None)
        return self.send_json(200, tokens)

    # -- device flows -------------------------------------------------------
    def _new_device(self, kind: str, client_id: str, scope: str, **extra) -> tuple:
        # caller holds the lock
        user_code = new_user_code()
        while user_code in STATE.devices:
            user_code = new_user_code()
        device_code = "mock-device-" + secrets.token_urlsafe(24)
        rec = {
            "kind": kind,
            "client_id": client_id,
            "scope": scope,
            "status": "pending",
            "issued_at": time.time(),
            "expires_at": time.time() + STATE.device_expires,
            "device_code": device_code,
            "polls": 0,
        }
        rec.update(extra)
        STATE.devices[user_code] = rec
        STATE.by_device_code[device_code] = user_code
        STATE.event("device_code_issued", kind=kind, client_id=client_id, user_code=user_code)
        return user_code, device_code, rec

    def device_code(self, path: str, p: dict) -> None:
        kind = "nous" if path.startswith("/api/") else "xai"
        base = self.base_url()
        with STATE.lock:
            user_code, device_code, _ = self._new_device(
                kind, p.get("client_id", ""), p.get("scope", "")
            )
        self.send_json(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": f"{base}/device",
                "verification_uri_complete": f"{base}/device?{urlencode({'user_code': user_code})}",
                "expires_in": STATE.device_expires,
                "interval": STATE.device_interval,
            },
        )

    def minimax_code(self, p: dict) -> None:
        base = self.base_url()
        with STATE.lock:
            user_code, _dc, _ = self._new_device(
                "minimax",
                p.get("client_id", ""),
                p.get("scope", ""),
                code_challenge=p.get("code_challenge", ""),
            )
        self.send_json(
            200,
            {
                "user_code": user_code,
                "verification_uri": f"{base}/device?{urlencode({'user_code': user_code})}",
                "expired_in": int((time.time() + STATE.device_expires) * 1000),
                "interval": STATE.device_interval * 1000,
                "state": p.get("state", ""),
            },
        )

    def token_minimax(self, p: dict) -> None:
        user_code = p.get("user_code", "")
        with STATE.lock:
            rec = STATE.devices.get(user_code)
            if rec is None or rec["kind"] != "minimax":
                STATE.event("token_error", grant_type=GRANT_USER_CODE, error="unknown_user_code")
                result = (
                    400,
                    {
                        "status": "error",
                        "base_resp": {"status_code": 1004, "status_msg": "unknown user_code"},
                    },
                )
            elif pkce_s256(p.get("code_verifier", "")) != rec.get("code_challenge"):
                STATE.event(
                    "token_error",
                    grant_type=GRANT_USER_CODE,
                    error="pkce_failed",
                    user_code=user_code,
                )
                result = (
                    400,
                    {
                        "status": "error",
                        "base_resp": {
                            "status_code": 1004,
                            "status_msg": "PKCE verification failed",
                        },
                    },
                )
            else:
                rec["polls"] = rec.get("polls", 0) + 1
                if rec["status"] == "pending":
                    result = (200, {"status": "pending"})
                elif rec["status"] == "approved":
                    rec["status"] = "redeemed"
                    tokens = STATE.issue_tokens(rec.get("client_id", ""))
                    STATE.event(
                        "device_redeemed",
                        kind="minimax",
                        user_code=user_code,
                        access_token_fp=fingerprint(tokens["access_token"]),
                    )
                    result = (
                        200,
                        {
                            "status": "success",
                            "access_token": tokens["access_token"],
                            "refresh_token": tokens["refresh_token"],
                            "expired_in": int((time.time() + 3600) * 1000),
                            "token_type": "Bearer",
                        },
                    )
                else:
                    result = (200, {"status": "error"})
        self.send_json(*result)

    def codex_usercode(self, p: dict) -> None:
        with STATE.lock:
            user_code, _dc, rec = self._new_device("codex", p.get("client_id", ""), "")
            device_auth_id = "deviceauth_" + secrets.token_hex(12)
            rec["device_auth_id"] = device_auth_id
            STATE.by_codex_id[device_auth_id] = user_code
        self.send_json(
            200,
            {
                "device_auth_id": device_auth_id,
                "user_code": user_code,
                "interval": str(STATE.device_interval),
            },
        )

    def codex_poll(self, p: dict) -> None:
        base = self.base_url()
        with STATE.lock:
            user_code = STATE.by_codex_id.get(p.get("device_auth_id", ""))
            rec = STATE.devices.get(user_code) if user_code else None
            if rec is None or p.get("user_code") != user_code:
                result = (404, {"error": "not_found"})
            else:
                rec["polls"] = rec.get("polls", 0) + 1
                if rec["status"] == "approved":
                    rec["status"] = "redeemed"
                    verifier = b64url(secrets.token_bytes(48))
                    code = "mock-code-" + secrets.token_urlsafe(24)
                    STATE.codes[code] = {
                        "kind": "codex-device",
                        "path": "/api/accounts/deviceauth/token",
                        "client_id": rec.get("client_id", ""),
                        "redirect_uri": f"{base}/deviceauth/callback",
                        "code_challenge": pkce_s256(verifier),
                        "state": "",
                        "scope": "",
                        "issued_at": time.time(),
                        "redeemed": False,
                    }
                    STATE.event(
                        "code_issued",
                        path="/api/accounts/deviceauth/token",
                        code=code,
                        user_code=user_code,
                    )
                    result = (
                        200,
                        {
                            "authorization_code": code,
                            "code_verifier": verifier,
                            "code_challenge": pkce_s256(verifier),
                        },
                    )
                elif rec["status"] == "denied":
                    result = (400, {"error": "access_denied"})
                else:
                    result = (403, {"error": "authorization_pending"})
        self.send_json(*result)

    def device_page(self, path: str, q: dict) -> None:
        user_code = (q.get("user_code") or "").strip().upper()
        deny = bool(q.get("mock_error") or q.get("deny"))
        with STATE.lock:
            if not user_code:
                pending = [uc for uc, r in STATE.devices.items() if r["status"] == "pending"]
                if len(pending) == 1:
                    user_code = pending[0]
            rec = STATE.devices.get(user_code) if user_code else None
            if rec is None:
                STATE.event("device_page_no_code", path=path, user_code=user_code or None)
                status = None
            else:
                if rec["status"] == "pending":
                    rec["status"] = "denied" if deny else "approved"
                    rec["decided_at"] = time.time()
                    STATE.event(
                        "device_denied" if deny else "device_approved",
                        kind=rec["kind"],
                        user_code=user_code,
                    )
                status = rec["status"]
        if status is None:
            if user_code:
                return self.send_html(404, "Unknown code", "<h1>Unknown or expired code</h1>")
            return self.send_html(
                200,
                "Enter code",
                "<h1>Enter the code shown in your terminal</h1>"
                '<form method="get"><input name="user_code"><button>Continue</button></form>',
            )
        if status == "denied":
            return self.send_html(
                200, "Denied", "<h1>Access denied</h1><p>You can close this tab.</p>"
            )
        return self.send_html(
            200,
            "Device approved",
            f"<h1>Device approved</h1><p>Code {html.escape(user_code)} approved. "
            "You can close this tab.</p>",
        )

    def spotify_me(self) -> None:
        auth = self.headers.get("Authorization") or ""
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        with STATE.lock:
            claims = STATE.access_tokens.get(token)
        if claims is None:
            return self.send_json(
                401, {"error": {"status": 401, "message": "Invalid access token"}}
            )
        return self.send_json(
            200,
            {
                "id": "labuser",
                "display_name": "Lab User",
                "email": claims.get("email"),
                "country": "ZZ",
                "product": "premium",
                "type": "user",
            },
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Mock OAuth identity provider for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument(
        "--device-interval", type=int, default=1, help="device-flow poll interval (s)"
    )
    parser.add_argument("--device-expires", type=int, default=600, help="device-code lifetime (s)")
    parser.add_argument("--verbose", action="store_true", help="log METHOD path status to stderr")
    parser.add_argument(
        "--tls-cert", default=None, help="serve HTTPS with this PEM certificate chain"
    )
    parser.add_argument("--tls-key", default=None, help="the PEM private key of --tls-cert")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")

    global STATE
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)
    STATE = State(args.state_dir, args.device_interval, args.device_expires)
    Handler.verbose = args.verbose

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            # One line, no request data (it could hold codes or tokens).
            exc = sys.exc_info()[1]
            sys.stderr.write(f"mock_provider: error handling a request: {type(exc).__name__}\n")
            sys.stderr.flush()

    server = Server((args.host, args.port), Handler)
    if args.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # The handshake runs in the request's own thread (do_handshake_on_connect=False
        # leaves it to the first read), so a stalled client never blocks the accept loop.
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        Handler.scheme = "https"
    host, port = server.server_address[:2]
    shown_host = f"[{host}]" if ":" in host else host

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(f"listening {Handler.scheme}://{shown_host}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
