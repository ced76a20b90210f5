"""Tests for the test doubles in tests/fakes (no SSH; everything on 127.0.0.1).

* mock_provider.py  -- mock OAuth IdP (authorize/PKCE, device flows, /_log)
* browser.py        -- the $BROWSER stand-in
* fake_hermes.py    -- fake hermes CLI, compared line by line with real transcripts
* the REAL hermes-agent 0.19.0 Spotify login, fully offline against mock_provider

Every process a test starts is killed by pid when the test ends.  Nothing here
connects to the hermes callback ports to probe them; readiness is read from
``ss -Hltn``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

FAKES = Path(__file__).resolve().parent
MOCK = FAKES / "mock_provider.py"
BROWSER = FAKES / "browser.py"
FAKE_HERMES = FAKES / "fake_hermes.py"
# The scripts must run on Debian's stock interpreter (no third-party packages).
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
HERMES_BIN = (
    os.environ.get("HERMES_BIN") or "/opt/tunnelauth-lab/hermes-0.19.0/bin/hermes"
)  # tests/setup

XAI_PORT = 56121
SPOTIFY_PORT = 43827


# ---------------------------------------------------------------------------
# process bookkeeping
# ---------------------------------------------------------------------------


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def popen(self, cmd, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, **kw)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.kill_all()


class StreamReader:
    """Collects a pipe's bytes in a thread so tests can wait for text."""

    def __init__(self, stream) -> None:
        self.data = bytearray()
        self.cond = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream) -> None:
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            with self.cond:
                if not chunk:
                    self.done = True
                    self.cond.notify_all()
                    return
                self.data.extend(chunk)
                self.cond.notify_all()

    @property
    def text(self) -> str:
        with self.cond:
            return self.data.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        with self.cond:
            while True:
                m = rx.search(self.data.decode("utf-8", "replace"))
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.done:
                    raise AssertionError(
                        f"pattern {pattern!r} not seen; output so far:\n{self.data.decode(errors='replace')}"
                    )
                self.cond.wait(min(left, 0.2))

    def join(self, timeout: float = 10.0) -> str:
        self.thread.join(timeout)
        return self.text


class Run:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.out = StreamReader(proc.stdout)
        self.err = StreamReader(proc.stderr)

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=timeout)
        return rc, self.out.join(), self.err.join()


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture
def mock(procs, tmp_path):
    """A running mock_provider on 127.0.0.1; yields its base URL."""
    state_dir = tmp_path / "mock-state"
    proc = procs.popen(
        [PY, str(MOCK), "--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline().decode()
    m = re.fullmatch(r"listening (http://127\.0\.0\.1:(\d+))\n", line)
    assert m, f"unexpected first line from mock_provider: {line!r}"
    base = m.group(1)
    base_obj = MockHandle(base, proc, state_dir)
    return base_obj


class MockHandle(str):
    def __new__(cls, base, proc, state_dir):
        obj = super().__new__(cls, base)
        obj.proc = proc
        obj.state_dir = state_dir
        return obj

    def log(self) -> dict:
        with urllib.request.urlopen(self + "/_log", timeout=10) as resp:
            return json.load(resp)


def http(method: str, url: str, data: dict | None = None, *, json_body: dict | None = None):
    body = None
    headers = {}
    if data is not None:
        body = urllib.parse.urlencode(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def pkce_pair():
    import base64
    import hashlib
    import secrets

    verifier = base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=")
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    return verifier, challenge


def jwt_claims(token: str) -> dict:
    import base64

    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def listening_ports() -> set[str]:
    """Local addresses in LISTEN state, from `ss -Hltn` (never by connecting)."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    addrs = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            addrs.add(cols[3])
    return addrs


def wait_listen(addr: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if addr in listening_ports():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"process exited (rc {proc.returncode}) before {addr} was listening"
            )
        time.sleep(0.05)
    raise AssertionError(f"{addr} never showed up as LISTEN in ss -Hltn")


def port_is_free(port: int) -> bool:
    if shutil.which("ss") and f"127.0.0.1:{port}" in listening_ports():
        return False
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def run_browser(url: str, log: Path, **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKE_BROWSER_LOG=str(log), **env_extra)
    return subprocess.run(
        [PY, str(BROWSER), url], env=env, capture_output=True, text=True, timeout=60
    )


def browser_records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def hermes_env(tmp_path: Path, mock_base: str | None, version: str, **extra) -> dict:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "USER": "labuser",
        "LOGNAME": "labuser",
        "LANG": "C.UTF-8",
        "SSH_CLIENT": "198.18.0.1 50000 22",
        "PYTHONUNBUFFERED": "1",
        "FAKE_HERMES_VERSION": version,
        "FAKE_HERMES_HOSTNAME": "vm",
    }
    if mock_base:
        env["FAKE_HERMES_PROVIDER"] = str(mock_base)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_fake(procs, env: dict, *args: str, stdin=subprocess.DEVNULL) -> Run:
    proc = procs.popen(
        [PY, str(FAKE_HERMES), *args],
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Run(proc)


# -- normalisation of random values -----------------------------------------


def normalise(
    text: str, *, mock_base: str | None = None, ephemeral_port: int | None = None
) -> list[str]:
    if mock_base:
        text = text.replace(mock_base + "/oauth2/auth", "https://auth.x.ai/oauth2/auth")
        text = text.replace(mock_base + "/device", "https://accounts.x.ai/device")
        text = text.replace(mock_base + "/authorize", "https://accounts.spotify.com/authorize")
    text = re.sub(r"code_challenge=[A-Za-z0-9_-]{43}", "code_challenge=<CHALLENGE>", text)
    text = re.sub(r"state=[0-9a-f]{32}", "state=<STATE>", text)
    text = re.sub(r"nonce=[0-9a-f]{32}", "nonce=<NONCE>", text)
    text = re.sub(r"\b\d{4}-[0-9A-F]{4}\b", "<USERCODE>", text)
    text = re.sub(r"(ssh -N -L \S+ )\S+@\S+$", r"\1<user>@<host>", text, flags=re.M)
    if ephemeral_port is not None:
        text = text.replace(f"%3A{ephemeral_port}%2F", "%3A<PORT>%2F")
        text = text.replace(f"127.0.0.1:{ephemeral_port}", "127.0.0.1:<PORT>")
        text = text.replace(f"-L {ephemeral_port}:", "-L <PORT>:")
    return text.splitlines()


def auth_json(home: Path) -> dict:
    path = home / ".hermes" / "auth.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, oct(path.parent.stat().st_mode)
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith("auth.json.tmp")]
    assert not leftovers, leftovers
    return json.loads(path.read_text())


def assert_no_secrets(mock_log: dict, *texts: str) -> None:
    secrets = [c["code"] for c in mock_log["codes"]]
    assert secrets, "expected at least one issued code"
    for text in texts:
        for secret in secrets:
            assert secret not in text, "an authorization code leaked into output"


# ===========================================================================
# mock_provider
# ===========================================================================


def test_mock_prints_only_listening_line_and_stops_on_sigterm(procs, tmp_path):
    proc = procs.popen(
        [PY, str(MOCK), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline().decode()
    assert re.fullmatch(r"listening http://127\.0\.0\.1:\d+\n", line)
    base = line.split()[1]
    status, _, body = http("GET", base + "/.well-known/openid-configuration")
    assert status == 200
    assert json.loads(body)["token_endpoint"] == base + "/oauth2/token"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stdout.read() == b""
    assert proc.stderr.read() == b""


def _https_get(port: int, path: str, ca: Path | None) -> tuple[int, bytes]:
    """GET https://auth.x.ai<path> from the mock on 127.0.0.1:port (name checked as auth.x.ai)."""
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="auth.x.ai") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: auth.x.ai\r\nConnection: close\r\n\r\n".encode())
        resp = http.client.HTTPResponse(tls)
        resp.begin()
        return resp.status, resp.read()


def test_mock_serves_https_as_the_labs_auth_x_ai(procs, tmp_path):
    import ssl

    from tests.lab.netlab import _lab_ca

    _lab_ca(tmp_path, ("auth.x.ai", "accounts.x.ai"))
    assert oct((tmp_path / "server.key").stat().st_mode & 0o777) == "0o600"
    proc = procs.popen(
        [
            PY,
            str(MOCK),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-cert",
            str(tmp_path / "server.pem"),
            "--tls-key",
            str(tmp_path / "server.key"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline().decode()
    m = re.fullmatch(r"listening https://127\.0\.0\.1:(\d+)\n", line)
    assert m, line
    port = int(m[1])
    status, body = _https_get(port, "/.well-known/openid-configuration", tmp_path / "ca.pem")
    assert status == 200
    doc = json.loads(body)
    assert doc["authorization_endpoint"] == "https://auth.x.ai/oauth2/auth"
    assert doc["token_endpoint"] == "https://auth.x.ai/oauth2/token"
    # Only the lab CA vouches for it: the system's trust store does not.
    with pytest.raises(ssl.SSLCertVerificationError):
        _https_get(port, "/.well-known/openid-configuration", None)
    status, body = _https_get(port, "/_log", tmp_path / "ca.pem")
    found = [e for e in json.loads(body)["events"] if e["event"] == "discovery"]
    assert [(e["host"], e["scheme"]) for e in found] == [("auth.x.ai", "https")]


def test_mock_tls_options_go_together(tmp_path):
    done = subprocess.run(
        [PY, str(MOCK), "--tls-cert", str(tmp_path / "x.pem")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--tls-cert and --tls-key go together" in done.stderr


def test_mock_authorization_code_pkce(mock):
    verifier, challenge = pkce_pair()
    redirect = "http://127.0.0.1:9/callback"
    q = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": "cid",
            "redirect_uri": redirect,
            "scope": "openid email",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "st-1",
        }
    )
    status, headers, _ = http("GET", f"{mock}/oauth2/auth?{q}")
    assert status == 302
    loc = urllib.parse.urlsplit(headers["Location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == redirect
    params = dict(urllib.parse.parse_qsl(loc.query))
    assert params["state"] == "st-1"
    code = params["code"]

    # wrong verifier -> invalid_grant, and the code is burnt
    status, _, body = http(
        "POST",
        f"{mock}/oauth2/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": "x" * 50,
            "redirect_uri": redirect,
            "client_id": "cid",
        },
    )
    assert status == 400 and json.loads(body)["error"] == "invalid_grant"
    status, _, body = http(
        "POST",
        f"{mock}/oauth2/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect,
            "client_id": "cid",
        },
    )
    assert status == 400 and "already used" in json.loads(body)["error_description"]

    # fresh code: redirect_uri must match, then success, then one-time
    status, headers, _ = http("GET", f"{mock}/oauth2/auth?{q}")
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["Location"]).query))["code"]
    status, _, body = http(
        "POST",
        f"{mock}/oauth2/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": "http://127.0.0.1:10/callback",
            "client_id": "cid",
        },
    )
    assert status == 400 and "redirect_uri" in json.loads(body)["error_description"]
    status, headers, _ = http("GET", f"{mock}/oauth2/auth?{q}")
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["Location"]).query))["code"]
    status, _, body = http(
        "POST",
        f"{mock}/oauth2/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect,
            "client_id": "cid",
        },
    )
    assert status == 200, body
    tokens = json.loads(body)
    assert {"access_token", "refresh_token", "id_token", "token_type", "expires_in"} <= set(tokens)
    assert jwt_claims(tokens["id_token"])["email"] == "lab@example.test"
    assert jwt_claims(tokens["access_token"])["email"] == "lab@example.test"
    status, _, _ = http(
        "POST",
        f"{mock}/oauth2/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect,
            "client_id": "cid",
        },
    )
    assert status == 400

    # denial
    status, headers, _ = http("GET", f"{mock}/oauth2/auth?{q}&mock_error=access_denied")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["Location"]).query))
    assert status == 302 and params["error"] == "access_denied" and params["state"] == "st-1"
    assert "code" not in params

    log = mock.log()
    assert log["codes_issued"] == 3 and log["codes_redeemed"] == 1
    on_disk = json.loads((mock.state_dir / "mock-log.json").read_text())
    assert on_disk["codes_redeemed"] == 1
    assert stat.S_IMODE((mock.state_dir / "mock-log.json").stat().st_mode) == 0o600


def test_mock_device_flow(mock):
    status, _, body = http(
        "POST", f"{mock}/oauth2/device/code", {"client_id": "cid", "scope": "openid"}
    )
    assert status == 200
    dev = json.loads(body)
    assert re.fullmatch(r"\d{4}-[0-9A-F]{4}", dev["user_code"])
    assert dev["verification_uri"] == f"{mock}/device"
    assert dev["verification_uri_complete"] == f"{mock}/device?user_code={dev['user_code']}"
    assert dev["interval"] == 1
    poll = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": dev["device_code"],
        "client_id": "cid",
    }
    status, _, body = http("POST", f"{mock}/oauth2/token", poll)
    assert status == 400 and json.loads(body)["error"] == "authorization_pending"
    status, _, body = http("GET", dev["verification_uri_complete"])
    assert status == 200 and b"approved" in body
    status, _, body = http("POST", f"{mock}/oauth2/token", poll)
    assert status == 200 and "access_token" in json.loads(body)
    status, _, body = http("POST", f"{mock}/oauth2/token", poll)
    assert status == 400 and json.loads(body)["error"] == "invalid_grant"
    assert mock.log()["device_approvals"] == 1


def test_mock_anthropic_paste_page_and_json_token(mock):
    verifier, challenge = pkce_pair()
    redirect = "https://console.anthropic.com/oauth/code/callback"
    q = urllib.parse.urlencode(
        {
            "code": "true",
            "client_id": "c",
            "response_type": "code",
            "redirect_uri": redirect,
            "scope": "user:inference",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "abc",
        }
    )
    status, _, body = http("GET", f"{mock}/oauth/authorize?{q}")
    assert status == 200
    pasted = re.search(r'<pre id="code">([^<]+)</pre>', body.decode()).group(1)
    code, state = pasted.split("#")
    assert state == "abc"
    status, _, body = http(
        "POST",
        f"{mock}/v1/oauth/token",
        json_body={
            "grant_type": "authorization_code",
            "client_id": "c",
            "code": code,
            "state": state,
            "redirect_uri": redirect,
            "code_verifier": verifier,
        },
    )
    assert status == 200 and set(json.loads(body)) == {
        "access_token",
        "refresh_token",
        "expires_in",
        "token_type",
    }


# ===========================================================================
# browser.py
# ===========================================================================


def test_browser_refuses_non_http(tmp_path):
    log = tmp_path / "browser.jsonl"
    for url in ("file:///etc/passwd", "javascript:alert(1)", "ftp://127.0.0.1/x"):
        res = run_browser(url, log)
        assert res.returncode == 3
    assert len(browser_records(log)) == 3


def test_browser_follows_redirects_and_never_logs_query(mock, tmp_path, procs):
    # A one-shot listener standing in for hermes's callback server.
    srv = procs.popen(
        [
            PY,
            "-c",
            (
                "import http.server,sys\n"
                "class H(http.server.BaseHTTPRequestHandler):\n"
                "    def do_GET(self):\n"
                "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
                "    def log_message(self,*a): pass\n"
                "s=http.server.HTTPServer(('127.0.0.1',0),H); print(s.server_address[1],flush=True); s.handle_request()\n"
            ),
        ],
        stdout=subprocess.PIPE,
    )
    port = int(srv.stdout.readline())
    _verifier, challenge = pkce_pair()
    url = f"{mock}/oauth2/auth?" + urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": "cid",
            "redirect_uri": f"http://127.0.0.1:{port}/callback",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s",
        }
    )
    log = tmp_path / "browser.jsonl"
    res = run_browser(url, log)
    assert res.returncode == 0, res.stderr
    rec = browser_records(log)[-1]
    assert rec["status"] == 200 and rec["hops"] == 1
    assert rec["final"] == f"127.0.0.1:{port}/callback"
    assert rec["url"] == f"{mock}/oauth2/auth"
    code = mock.log()["codes"][0]["code"]
    assert code not in log.read_text() and code not in res.stdout + res.stderr
    assert "state=" not in log.read_text()


def test_browser_status_delay_and_deny(mock, tmp_path):
    log = tmp_path / "browser.jsonl"
    res = run_browser(f"{mock}/no-such-page", log)
    assert res.returncode == 1 and browser_records(log)[-1]["status"] == 404
    # deny: appends mock_error=access_denied; the device page then records a denial
    t0 = time.monotonic()
    _status, _, body = http("POST", f"{mock}/oauth2/device/code", {"client_id": "c"})
    dev = json.loads(body)
    res = run_browser(
        dev["verification_uri_complete"], log, FAKE_BROWSER_MODE="deny", FAKE_BROWSER_DELAY="0.5"
    )
    assert res.returncode == 0
    assert time.monotonic() - t0 >= 0.5
    rec = browser_records(log)[-1]
    assert rec["mode"] == "deny"
    assert [d["status"] for d in mock.log()["devices"]] == ["denied"]
    # connection refused -> rc 1 with an error recorded
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    res = run_browser(f"http://127.0.0.1:{closed}/x", log)
    assert res.returncode == 1 and browser_records(log)[-1]["error"]


# ===========================================================================
# fake_hermes: xAI loopback (0.14.0 - 0.18.0)
# ===========================================================================


def _xai_loopback_login(procs, mock, tmp_path, version="0.18.0", **env_extra):
    env = hermes_env(tmp_path, mock, version, **env_extra)
    run = start_fake(procs, env, "auth", "add", "xai-oauth", "--no-browser")
    run.out.wait_for(r"^Waiting for callback on http://127\.0\.0\.1:\d+/callback$")
    # with PYTHONUNBUFFERED=1 the whole hint block is out before hermes starts waiting
    run.out.wait_for(r"^SSH/jump-box guide: .*\n(-{60}\n)?\n")
    url = re.search(r"^(http://\S+/oauth2/auth\?\S+)$", run.out.text, re.M).group(1)
    return env, run, url


def test_fake_hermes_018_xai_success_matches_transcript(procs, mock, tmp_path):
    if not port_is_free(XAI_PORT):
        pytest.skip(f"127.0.0.1:{XAI_PORT} is busy on this machine")
    env, run, url = _xai_loopback_login(procs, mock, tmp_path)
    assert f"127.0.0.1:{XAI_PORT}" in listening_ports()
    log = tmp_path / "browser.jsonl"
    res = run_browser(url, log)
    assert res.returncode == 0, res.stderr
    rc, out, err = run.finish()
    assert rc == 0, err
    assert err == ""
    assert normalise(out, mock_base=mock) == normalise(TRANSCRIPTS["xai_018_success"])
    assert out.endswith('Saved xai-oauth OAuth credentials: "lab@example.test"\n')
    store = auth_json(Path(env["HOME"]))
    state = store["providers"]["xai-oauth"]
    assert state["auth_mode"] == "oauth_pkce"
    assert state["redirect_uri"] == f"http://127.0.0.1:{XAI_PORT}/callback"
    assert state["tokens"]["access_token"] and state["tokens"]["refresh_token"]
    assert jwt_claims(state["tokens"]["id_token"])["email"] == "lab@example.test"
    [entry] = store["credential_pool"]["xai-oauth"]
    assert entry["source"] == "loopback_pkce" and entry["label"] == "lab@example.test"
    assert store["active_provider"] == "xai-oauth"
    rec = browser_records(log)[-1]
    assert rec["final"] == f"127.0.0.1:{XAI_PORT}/callback" and rec["status"] == 200
    mlog = mock.log()
    assert mlog["codes_redeemed"] == 1
    assert_no_secrets(mlog, out, err, log.read_text())
    # the listener is gone once the code arrived
    assert f"127.0.0.1:{XAI_PORT}" not in listening_ports()


def test_fake_hermes_018_xai_bumped_port_matches_transcript(procs, mock, tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", XAI_PORT))
    except OSError:
        holder.close()
        pytest.skip(f"127.0.0.1:{XAI_PORT} is busy on this machine; cannot stage the bump")
    holder.listen(1)
    try:
        env, run, url = _xai_loopback_login(procs, mock, tmp_path)
        port = int(
            re.search(
                r"^Waiting for callback on http://127\.0\.0\.1:(\d+)/callback$", run.out.text, re.M
            ).group(1)
        )
        assert port not in (XAI_PORT, XAI_PORT + 1)  # an OS-chosen port, never "the next port"
        expected = normalise(TRANSCRIPTS["xai_018_bumped"], ephemeral_port=33785)
        got = normalise(run.out.text, mock_base=mock, ephemeral_port=port)
        # the recording was cut by `timeout 8`; everything it shows must match
        assert got[: len(expected)] == expected
        assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback" in url
        assert f"  ssh -N -L {port}:127.0.0.1:{port} labuser@vm" in run.out.text
        res = run_browser(url, tmp_path / "browser.jsonl")
        assert res.returncode == 0
        rc, _out, err = run.finish()
        assert rc == 0, err
        store = auth_json(Path(env["HOME"]))
        assert (
            store["providers"]["xai-oauth"]["redirect_uri"] == f"http://127.0.0.1:{port}/callback"
        )
    finally:
        holder.close()


@pytest.mark.parametrize(
    ("version", "no_code_status", "hint_marker"),
    [
        ("0.14.0", 200, "<user>@<this-host>"),
        ("0.18.0", 400, "labuser@vm"),
    ],
)
def test_fake_hermes_xai_listener_semantics(
    procs, mock, tmp_path, version, no_code_status, hint_marker
):
    if not port_is_free(XAI_PORT):
        pytest.skip(f"127.0.0.1:{XAI_PORT} is busy on this machine")
    _env, run, _url = _xai_loopback_login(procs, mock, tmp_path, version=version)
    assert hint_marker in run.out.text
    cb = f"http://127.0.0.1:{XAI_PORT}/callback"
    assert http("GET", cb)[0] == no_code_status  # keeps waiting
    assert http("GET", f"http://127.0.0.1:{XAI_PORT}/other?code=x")[0] == 404
    assert run.proc.poll() is None
    assert (
        http("GET", cb + "?code=abc&state=not-the-state")[0] == 200
    )  # one-shot: ends the listener
    rc, _out, err = run.finish()
    assert rc == 1
    assert (
        err.rstrip("\n").splitlines()[-1]
        == "hermes_cli.auth.AuthError: xAI authorization failed: state mismatch."
    )
    assert err.startswith("Traceback (most recent call last):")


def test_fake_hermes_xai_denied_and_timeout(procs, mock, tmp_path):
    if not port_is_free(XAI_PORT):
        pytest.skip(f"127.0.0.1:{XAI_PORT} is busy on this machine")
    env, run, url = _xai_loopback_login(procs, mock, tmp_path / "a")
    res = run_browser(url, tmp_path / "b.jsonl", FAKE_BROWSER_MODE="deny")
    assert res.returncode == 0
    rc, out, err = run.finish()
    assert rc == 1
    assert (
        err.splitlines()[-1]
        == "hermes_cli.auth.AuthError: xAI authorization failed: The user denied the request (mock)."
    )

    (tmp_path / "t").mkdir()
    env = hermes_env(tmp_path / "t", mock, "0.17.0", FAKE_HERMES_CALLBACK_WAIT="1")
    t0 = time.monotonic()
    run = start_fake(procs, env, "auth", "add", "xai-oauth", "--no-browser")
    rc, out, err = run.finish()
    assert rc == 1 and time.monotonic() - t0 < 20
    assert (
        err.splitlines()[-1]
        == "hermes_cli.auth.AuthError: xAI authorization timed out waiting for the local callback."
    )
    assert "Callback URL" not in out  # stdin is not a TTY: no manual-paste prompt
    assert not (tmp_path / "t" / "home" / ".hermes" / "auth.json").exists()


def test_fake_hermes_xai_timeout_on_tty_prompts_for_callback_url(procs, mock, tmp_path):
    import pty

    if not port_is_free(XAI_PORT):
        pytest.skip(f"127.0.0.1:{XAI_PORT} is busy on this machine")
    env = hermes_env(tmp_path, mock, "0.17.0", FAKE_HERMES_CALLBACK_WAIT="1")
    env.pop("PYTHONUNBUFFERED")
    master, slave = pty.openpty()
    proc = procs.popen(
        [PY, str(FAKE_HERMES), "auth", "add", "xai-oauth", "--no-browser"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    import select

    buf = b""
    deadline = time.monotonic() + 30
    while b"Callback URL: " not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    text = buf.decode()
    assert "\r\n" in text  # a PTY gives CRLF line ends
    assert "If xAI shows a Grok Build code instead of redirecting,\r\n" in text
    assert "xAI loopback callback timed out.\r\n" in text
    assert text.endswith("Callback URL: ")
    time.sleep(0.5)
    assert proc.poll() is None  # blocked on the prompt
    os.write(master, b"\n")
    assert proc.wait(timeout=20) == 1
    os.close(master)


def test_fake_hermes_is_block_buffered_without_pythonunbuffered(procs, mock, tmp_path):
    if not port_is_free(XAI_PORT):
        pytest.skip(f"127.0.0.1:{XAI_PORT} is busy on this machine")
    env = hermes_env(tmp_path, mock, "0.18.0")
    env.pop("PYTHONUNBUFFERED")
    run = start_fake(procs, env, "auth", "add", "xai-oauth", "--no-browser")
    wait_listen(f"127.0.0.1:{XAI_PORT}", proc=run.proc)
    time.sleep(1.0)
    assert run.out.text == ""  # everything is still in the process's stdout buffer
    run.proc.kill()


# ===========================================================================
# fake_hermes: device flows
# ===========================================================================


def test_fake_hermes_019_xai_device_matches_transcript(procs, mock, tmp_path):
    env = hermes_env(tmp_path, mock, "0.19.0")
    run = start_fake(procs, env, "auth", "add", "xai-oauth", "--no-browser")
    m = run.out.wait_for(r"^  1\. Open: (\S+)$")
    run.out.wait_for(r"^Waiting for approval \(polling every 1s\)\.\.\.$")
    res = run_browser(m.group(1), tmp_path / "browser.jsonl")
    assert res.returncode == 0
    rc, out, err = run.finish()
    assert rc == 0 and err == ""
    assert normalise(out, mock_base=mock) == normalise(TRANSCRIPTS["xai_019_device"])
    store = auth_json(Path(env["HOME"]))
    [entry] = store["credential_pool"]["xai-oauth"]
    assert entry["source"] == "manual:device_code" and entry["base_url"] == "https://api.x.ai/v1"
    assert store["active_provider"] == "xai-oauth"
    # a second login is credential #2
    run = start_fake(procs, env, "auth", "add", "xai-oauth", "--no-browser")
    m = run.out.wait_for(r"^  1\. Open: (\S+)$")
    run_browser(m.group(1), tmp_path / "browser.jsonl")
    rc, out, err = run.finish()
    assert out.endswith('Added xai-oauth OAuth credential #2: "lab@example.test"\n')


def test_fake_hermes_0181_xai_device_uses_saved_wording(procs, mock, tmp_path):
    env = hermes_env(tmp_path, mock, "0.18.1")
    run = start_fake(procs, env, "auth", "add", "xai-oauth", "--no-browser")
    m = run.out.wait_for(r"^  1\. Open: (\S+)$")
    run_browser(m.group(1), tmp_path / "browser.jsonl")
    rc, out, _err = run.finish()
    assert rc == 0
    assert out.endswith('Saved xai-oauth OAuth credentials: "lab@example.test"\n')
    assert (
        auth_json(Path(env["HOME"]))["providers"]["xai-oauth"]["auth_mode"] == "oauth_device_code"
    )


def test_fake_hermes_codex_minimax_nous(procs, mock, tmp_path):
    env = hermes_env(tmp_path, mock, "0.19.0")
    # openai-codex: coloured URL and code, polls every >= 3 s
    run = start_fake(procs, env, "auth", "add", "openai-codex")
    m = run.out.wait_for(
        r"^     \x1b\[94m(\S+)\x1b\[0m\n\n  2\. Enter this code:\n     \x1b\[94m(\S+)\x1b\[0m\n"
    )
    assert m.group(1) == f"{mock}/codex/device"
    run.out.wait_for(r"^Waiting for sign-in\.\.\. \(press Ctrl\+C to cancel\)$")
    assert run.out.text.startswith(
        "To continue, follow these steps:\n\n  1. Open this URL in your browser:\n"
    )
    assert run_browser(f"{m.group(1)}?user_code={m.group(2)}", tmp_path / "b.jsonl").returncode == 0
    rc, out, err = run.finish()
    assert rc == 0, err
    assert out.endswith('Added openai-codex OAuth credential #1: "lab@example.test"\n')

    # minimax-oauth
    run = start_fake(procs, env, "auth", "add", "minimax-oauth")
    m = run.out.wait_for(r"^  1\. Open: (\S+)$")
    run.out.wait_for(r"^Waiting for approval\.\.\.$")
    assert run_browser(m.group(1), tmp_path / "b.jsonl").returncode == 0
    rc, out, err = run.finish()
    assert rc == 0, err
    assert out.splitlines()[:2] == [
        "Starting Hermes login via MiniMax (global) OAuth...",
        f"Portal: {mock}",
    ]
    assert out.endswith(
        '✓ MiniMax OAuth login successful.\nAdded minimax-oauth OAuth credential #1: "lab@example.test"\n'
    )

    # nous, with the import prompt first (declined by answering "n")
    run = start_fake(
        procs, dict(env, FAKE_HERMES_NOUS_IMPORT="1"), "auth", "add", "nous", stdin=subprocess.PIPE
    )
    run.out.wait_for(r"Import these credentials\? \[Y/n\]: $")
    run.proc.stdin.write(b"n\n")
    run.proc.stdin.close()
    m = run.out.wait_for(r"^  1\. Open: (\S+)$")
    run.out.wait_for(r"^Waiting for approval \(polling every 1s\)\.\.\.$")
    assert run_browser(m.group(1), tmp_path / "b.jsonl").returncode == 0
    rc, out, err = run.finish()
    assert rc == 0, err
    assert "Rehydrating" not in out
    assert out.endswith('Saved nous OAuth device-code credentials: "lab@example.test"\n')
    store = auth_json(Path(env["HOME"]))
    assert set(store["credential_pool"]) == {"openai-codex", "minimax-oauth", "nous"}


def test_fake_hermes_anthropic_paste_flow(procs, mock, tmp_path):
    env = hermes_env(tmp_path, mock, "0.19.0")
    for good in (False, True):
        run = start_fake(procs, env, "auth", "add", "anthropic", stdin=subprocess.PIPE)
        m = run.out.wait_for(r"^  (http://\S+/oauth/authorize\?code=true&\S+)$")
        run.out.wait_for(r"Authorization code: $")
        _status, _, body = http("GET", m.group(1))
        import html

        pasted = html.unescape(re.search(r'<pre id="code">([^<]+)</pre>', body.decode()).group(1))
        if not good:
            pasted = "wrong-code#" + pasted.split("#", 1)[1]
        run.proc.stdin.write(pasted.encode() + b"\n")
        run.proc.stdin.close()
        rc, out, err = run.finish()
        if good:
            assert rc == 0, err
            assert out.endswith(
                'Authorization code: Added anthropic OAuth credential #1: "lab@example.test"\n'
            )
        else:
            assert rc == 1
            assert out.endswith(
                "Authorization code: Token exchange failed: HTTP Error 400: Bad Request\n"
            )
            assert err == "Anthropic OAuth login did not return credentials.\n"
    lines = out.splitlines()
    assert lines[:4] == [
        "",
        "Authorize Hermes with your Claude Pro/Max subscription.",
        "",
        "╭─ Claude Pro/Max Authorization ────────────────────╮",
    ]


# ===========================================================================
# fake_hermes: misc
# ===========================================================================


def test_fake_hermes_version_and_unknown_provider(tmp_path):
    env = hermes_env(tmp_path, None, "0.19.0")
    res = subprocess.run(
        [PY, str(FAKE_HERMES), "--version"], env=env, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0 and res.stdout.splitlines()[0] == "Hermes Agent v0.19.0 (2026.7.20)"
    env["FAKE_HERMES_VERSION"] = "0.18.0"
    res = subprocess.run(
        [PY, str(FAKE_HERMES), "--version"], env=env, capture_output=True, text=True, timeout=30
    )
    assert res.stdout.splitlines()[0] == "Hermes Agent v0.18.0 (2026.7.1)"
    env["FAKE_HERMES_VERSION"] = "0.19.0"
    res = subprocess.run(
        [PY, str(FAKE_HERMES), "auth", "add", "spotify", "--no-browser"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr == TRANSCRIPTS["spotify_019_unknown"]
    # offline (no provider): discovery fails, nothing on stdout
    res = subprocess.run(
        [PY, str(FAKE_HERMES), "auth", "add", "xai-oauth", "--no-browser"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines()[-1] == (
        "hermes_cli.auth.AuthError: xAI OIDC discovery failed: "
        "[Errno -3] Temporary failure in name resolution"
    )


def test_fake_hermes_spotify_matches_transcript(procs, mock, tmp_path):
    if not port_is_free(SPOTIFY_PORT):
        pytest.skip(f"127.0.0.1:{SPOTIFY_PORT} is busy on this machine")
    env = hermes_env(tmp_path, mock, "0.19.0", HERMES_SPOTIFY_CLIENT_ID="labclient")
    run = start_fake(procs, env, "auth", "spotify", "--no-browser")
    url = run.out.wait_for(r"^(http://\S+/authorize\?\S+)$").group(1)
    wait_listen(f"127.0.0.1:{SPOTIFY_PORT}", proc=run.proc)
    assert run_browser(url, tmp_path / "b.jsonl").returncode == 0
    rc, out, err = run.finish()
    assert rc == 0, err
    auth_path = str(Path(env["HOME"]) / ".hermes" / "auth.json")
    expected = TRANSCRIPTS["spotify_019_success"].replace(
        "/home/labuser/.hermes/auth.json", auth_path
    )
    assert normalise(out, mock_base=mock) == normalise(expected)
    assert auth_json(Path(env["HOME"]))["providers"]["spotify"]["access_token"]


def test_fake_hermes_spotify_port_busy_matches_transcript(procs, mock, tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", SPOTIFY_PORT))
    except OSError:
        holder.close()
        pytest.skip(f"127.0.0.1:{SPOTIFY_PORT} is busy on this machine")
    holder.listen(1)
    try:
        env = hermes_env(tmp_path, mock, "0.19.0", HERMES_SPOTIFY_CLIENT_ID="labclient")
        run = start_fake(procs, env, "auth", "spotify", "--no-browser")
        rc, out, err = run.finish()
    finally:
        holder.close()
    assert rc == 1
    recorded = TRANSCRIPTS["spotify_019_port_busy"]
    rec_out, rec_err = recorded.split("Traceback (most recent call last):", 1)
    fake_out = out.replace(mock + "/authorize", "https://accounts.spotify.test/authorize")
    assert normalise(fake_out) == normalise(rec_out)
    assert err.splitlines()[-1] == rec_err.splitlines()[-1]
    assert "OSError: [Errno 98] Address already in use" in err
    assert "The above exception was the direct cause of the following exception:" in err


# ===========================================================================
# the REAL hermes-agent 0.19.0: Spotify login, fully offline
# ===========================================================================


@pytest.mark.skipif(
    not os.path.exists(HERMES_BIN),
    reason=f"real hermes not installed at {HERMES_BIN}: run sudo ./tests/setup",
)
def test_real_hermes_spotify_login_offline(procs, mock, tmp_path):
    if not port_is_free(SPOTIFY_PORT):
        pytest.skip(f"127.0.0.1:{SPOTIFY_PORT} is busy on this machine")
    home = tmp_path / "home"
    home.mkdir()
    hermes_home = tmp_path / "hermes-home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "USER": "labuser",
        "LANG": "C.UTF-8",
        "HERMES_HOME": str(hermes_home),
        "HERMES_SPOTIFY_ACCOUNTS_BASE_URL": str(mock),
        "HERMES_SPOTIFY_CLIENT_ID": "labclient",
        "PYTHONUNBUFFERED": "1",
        "SSH_CLIENT": "198.18.0.1 50000 22",
    }
    proc = procs.popen(
        [HERMES_BIN, "auth", "spotify", "--no-browser"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run = Run(proc)
    url = run.out.wait_for(r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)$", timeout=120).group(1)
    # hermes binds its listener only after printing the URL: wait for LISTEN, never connect to probe
    wait_listen(f"127.0.0.1:{SPOTIFY_PORT}", timeout=60, proc=proc)
    log = tmp_path / "browser.jsonl"
    res = run_browser(url, log)
    assert res.returncode == 0, res.stderr
    rc, out, err = run.finish(timeout=120)
    assert rc == 0, err
    expected = TRANSCRIPTS["spotify_019_success"].replace(
        "/home/labuser/.hermes/auth.json", str(hermes_home / "auth.json")
    )
    assert normalise(out, mock_base=mock) == normalise(expected)
    rec = browser_records(log)[-1]
    assert rec["final"] == f"127.0.0.1:{SPOTIFY_PORT}/spotify/callback" and rec["status"] == 200
    path = hermes_home / "auth.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = json.loads(path.read_text())["providers"]["spotify"]
    assert state["client_id"] == "labclient"
    assert state["accounts_base_url"] == str(mock)
    assert state["redirect_uri"] == f"http://127.0.0.1:{SPOTIFY_PORT}/spotify/callback"
    assert state["access_token"] and state["refresh_token"]
    mlog = mock.log()
    assert [e["event"] for e in mlog["events"]] == ["code_issued", "code_redeemed"]
    assert_no_secrets(mlog, out, err, log.read_text())


# Verbatim copies of /work/shared/transcripts/*.txt (real hermes output, recorded over SSH).
TRANSCRIPTS = {
    "xai_018_success": (
        "Open this URL to authorize Hermes with xAI:\n"
        "https://auth.x.ai/oauth2/auth?response_type=code&client_id=b1a00492-073a-47ea-816f-4c329264a828&redirect_uri=http%3A%2F%2F127.0.0.1%3A56121%2Fcallback&scope=openid+profile+email+offline_access+grok-cli%3Aaccess+api%3Aaccess&code_challenge=b2y2Jr7RTzlgvsYAKJa7Yh-hzlqhMAPNGnD1OYg5WNc&code_challenge_method=S256&state=5d8769c883114cb597bf3d882ed5505c&nonce=3604f5fe52b24c87a4e2f0efa0d9fe7d&plan=generic&referrer=hermes-agent\n"
        "\n"
        "Waiting for callback on http://127.0.0.1:56121/callback\n"
        "\n"
        "------------------------------------------------------------\n"
        "Remote session detected — SSH tunnel required\n"
        "------------------------------------------------------------\n"
        "Hermes is waiting for the OAuth callback on http://127.0.0.1:56121/callback\n"
        "but your browser is on a different machine. Run this command\n"
        "in a NEW terminal on your local machine BEFORE opening the URL:\n"
        "\n"
        "  ssh -N -L 56121:127.0.0.1:56121 labuser@vm\n"
        "\n"
        "Then open the authorize URL above in your local browser.\n"
        "\n"
        "No SSH client (Cloud Shell / Codespaces / web IDE)?  Re-run with\n"
        "`--manual-paste` to skip the loopback listener and paste the failed\n"
        "callback URL directly.\n"
        "Provider docs:      https://hermes-agent.nousresearch.com/docs/guides/xai-grok-oauth\n"
        "SSH/jump-box guide: https://hermes-agent.nousresearch.com/docs/guides/oauth-over-ssh\n"
        "------------------------------------------------------------\n"
        "\n"
        'Saved xai-oauth OAuth credentials: "lab@example.test"\n'
    ),
    "xai_018_bumped": (
        "Open this URL to authorize Hermes with xAI:\n"
        "https://auth.x.ai/oauth2/auth?response_type=code&client_id=b1a00492-073a-47ea-816f-4c329264a828&redirect_uri=http%3A%2F%2F127.0.0.1%3A33785%2Fcallback&scope=openid+profile+email+offline_access+grok-cli%3Aaccess+api%3Aaccess&code_challenge=UhylJJNsLhLk7t4Awf785-6F3lQgt9aLKnZ3KykaK5U&code_challenge_method=S256&state=2c9210322aa54047bab62d2371c5107c&nonce=c0460727f6e44cbcba245c7b5179f518&plan=generic&referrer=hermes-agent\n"
        "\n"
        "Waiting for callback on http://127.0.0.1:33785/callback\n"
        "\n"
        "------------------------------------------------------------\n"
        "Remote session detected — SSH tunnel required\n"
        "------------------------------------------------------------\n"
        "Hermes is waiting for the OAuth callback on http://127.0.0.1:33785/callback\n"
        "but your browser is on a different machine. Run this command\n"
        "in a NEW terminal on your local machine BEFORE opening the URL:\n"
        "\n"
        "  ssh -N -L 33785:127.0.0.1:33785 labuser@vm\n"
        "\n"
        "Then open the authorize URL above in your local browser.\n"
        "\n"
        "No SSH client (Cloud Shell / Codespaces / web IDE)?  Re-run with\n"
        "`--manual-paste` to skip the loopback listener and paste the failed\n"
        "callback URL directly.\n"
        "Provider docs:      https://hermes-agent.nousresearch.com/docs/guides/xai-grok-oauth\n"
        "SSH/jump-box guide: https://hermes-agent.nousresearch.com/docs/guides/oauth-over-ssh\n"
        "------------------------------------------------------------\n"
        "\n"
    ),
    "xai_019_device": (
        "\n"
        "To continue:\n"
        "  1. Open: https://accounts.x.ai/device?user_code=1366-40B5\n"
        "  2. If prompted, enter code: 1366-40B5\n"
        "Waiting for approval (polling every 1s)...\n"
        'Added xai-oauth OAuth credential #1: "lab@example.test"\n'
    ),
    "spotify_019_success": (
        "Starting Spotify PKCE login...\n"
        "Client ID: labclient\n"
        "Redirect URI: http://127.0.0.1:43827/spotify/callback\n"
        "Make sure this redirect URI is allow-listed in your Spotify app settings.\n"
        "\n"
        "Open this URL to authorize Hermes:\n"
        "https://accounts.spotify.com/authorize?client_id=labclient&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A43827%2Fspotify%2Fcallback&scope=user-modify-playback-state+user-read-playback-state+user-read-currently-playing+user-read-recently-played+playlist-read-private+playlist-read-collaborative+playlist-modify-public+playlist-modify-private+user-library-read+user-library-modify&state=962358f0f07449bb9d41045dc9557c82&code_challenge_method=S256&code_challenge=eL614tEBINhURFSD94omfjihWgVZcZmWTViaOsee-bA\n"
        "\n"
        "Full setup guide: https://hermes-agent.nousresearch.com/docs/user-guide/features/spotify\n"
        "\n"
        "\n"
        "------------------------------------------------------------\n"
        "Remote session detected — SSH tunnel required\n"
        "------------------------------------------------------------\n"
        "Hermes is waiting for the OAuth callback on http://127.0.0.1:43827/spotify/callback\n"
        "but your browser is on a different machine. Run this command\n"
        "in a NEW terminal on your local machine BEFORE opening the URL:\n"
        "\n"
        "  ssh -N -L 43827:127.0.0.1:43827 labuser@vm\n"
        "\n"
        "Then open the authorize URL above in your local browser.\n"
        "Provider docs:      https://hermes-agent.nousresearch.com/docs/user-guide/features/spotify\n"
        "SSH/jump-box guide: https://hermes-agent.nousresearch.com/docs/guides/oauth-over-ssh\n"
        "------------------------------------------------------------\n"
        "\n"
        "Spotify login successful!\n"
        "  Auth state: /home/labuser/.hermes/auth.json\n"
        "  Provider state saved under providers.spotify\n"
        "  Docs: https://hermes-agent.nousresearch.com/docs/user-guide/features/spotify\n"
    ),
    "spotify_019_unknown": ("Unknown provider: spotify\n"),
    "spotify_019_port_busy": (
        "Starting Spotify PKCE login...\n"
        "Client ID: labclient\n"
        "Redirect URI: http://127.0.0.1:43827/spotify/callback\n"
        "Make sure this redirect URI is allow-listed in your Spotify app settings.\n"
        "\n"
        "Open this URL to authorize Hermes:\n"
        "https://accounts.spotify.test/authorize?client_id=labclient&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A43827%2Fspotify%2Fcallback&scope=user-modify-playback-state+user-read-playback-state+user-read-currently-playing+user-read-recently-played+playlist-read-private+playlist-read-collaborative+playlist-modify-public+playlist-modify-private+user-library-read+user-library-modify&state=cb17eb6ed3d2459e9e1d91c3218e3dc9&code_challenge_method=S256&code_challenge=iwEtKQqh6TMLEPql2xgzHVDFWf13VXpZzIKntniRy6c\n"
        "\n"
        "Full setup guide: https://hermes-agent.nousresearch.com/docs/user-guide/features/spotify\n"
        "\n"
        "\n"
        "------------------------------------------------------------\n"
        "Remote session detected — SSH tunnel required\n"
        "------------------------------------------------------------\n"
        "Hermes is waiting for the OAuth callback on http://127.0.0.1:43827/spotify/callback\n"
        "but your browser is on a different machine. Run this command\n"
        "in a NEW terminal on your local machine BEFORE opening the URL:\n"
        "\n"
        "  ssh -N -L 43827:127.0.0.1:43827 labuser@vm\n"
        "\n"
        "Then open the authorize URL above in your local browser.\n"
        "Provider docs:      https://hermes-agent.nousresearch.com/docs/user-guide/features/spotify\n"
        "SSH/jump-box guide: https://hermes-agent.nousresearch.com/docs/guides/oauth-over-ssh\n"
        "------------------------------------------------------------\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/hermes/lib/python3.11/site-packages/hermes_cli/auth.py", line 2725, in _spotify_wait_for_callback\n'
        "    server = _ReuseHTTPServer((host, port), handler_cls)\n"
        "             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/usr/lib/python3.11/socketserver.py", line 456, in __init__\n'
        "    self.server_bind()\n"
        '  File "/usr/lib/python3.11/http/server.py", line 136, in server_bind\n'
        "    socketserver.TCPServer.server_bind(self)\n"
        '  File "/usr/lib/python3.11/socketserver.py", line 472, in server_bind\n'
        "    self.socket.bind(self.server_address)\n"
        "OSError: [Errno 98] Address already in use\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/hermes/bin/hermes", line 8, in <module>\n'
        "    sys.exit(main())\n"
        "             ^^^^^^\n"
        '  File "/opt/hermes/lib/python3.11/site-packages/hermes_cli/main.py", line 15315, in main\n'
        "    args.func(args)\n"
        '  File "/opt/hermes/lib/python3.11/site-packages/hermes_cli/main.py", line 4442, in cmd_auth\n'
        "    auth_command(args)\n"
        '  File "/opt/hermes/lib/python3.11/site-packages/hermes_cli/auth_commands.py", line 799, in auth_command\n'
        "    auth_spotify_command(args)\n"
        '  File "/opt/hermes/lib/python3.11/site-packages/hermes_cli/auth_commands.py", line 536, in auth_spotify_command\n'
        "    auth_mod.login_spotify_command(args)\n"
        '  File "/opt/hermes/lib/python3.11/site-packages/hermes_cli/auth.py", line 3106, in login_spotify_command\n'
        "    callback = _spotify_wait_for_callback(\n"
        "               ^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/opt/hermes/lib/python3.11/site-packages/hermes_cli/auth.py", line 2727, in _spotify_wait_for_callback\n'
        "    raise AuthError(\n"
        "hermes_cli.auth.AuthError: Could not bind Spotify callback server on 127.0.0.1:43827: [Errno 98] Address already in use\n"
    ),
}
