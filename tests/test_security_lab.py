"""Security promises, end to end in the SSH lab: strict host keys on every hop, loopback-only
forwards, no secrets in what tunnelauth prints, safe browser opening, no shell injection."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import e2e
from tests.lab.netlab import Lab

pytestmark = pytest.mark.lab

XAI_PORT = 56121


def fake(lab: Lab, provider: e2e.Provider, hermes: Path, version: str = "0.18.0") -> list[str]:
    return [
        "--hermes",
        str(hermes),
        "--remote-env",
        f"FAKE_HERMES_VERSION={version}",
        "--remote-env",
        f"FAKE_HERMES_PROVIDER={provider.url}",
        "--allow-host",
        lab.provider_ip,
    ]


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("tunnelauth: error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert "Traceback" not in stderr
    return errors[0]


def connections(lab: Lab, host: str = "bastion") -> int:
    return e2e.sshd_log(lab, host).count("Connection from")


# == 1. host keys, strict on every hop ===========================================================


def recorded(known: Path, name: str, key: str) -> bool:
    """`name key` is in `known`, in plain or hashed form (the machine's ssh_config may say
    HashKnownHosts yes, as Debian's does; tunnelauth then hashes as ssh would)."""
    found = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(known)], capture_output=True, text=True, check=False
    ).stdout
    return any(
        line.split()[1:3] == key.split()[:2]
        for line in found.splitlines()
        if line and not line.startswith("#")
    )


def host_key(lab: Lab, host: str) -> str:
    """'ssh-ed25519 AAAA...' of a lab host."""
    return " ".join((lab.root / host / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def without(home: Path, ip: str) -> Path:
    known = home / ".ssh" / "known_hosts"
    known.write_text(
        "".join(
            line + "\n" for line in known.read_text().splitlines() if not line.startswith(ip + " ")
        )
    )
    return known


def test_unknown_bastion_key_stops_before_authenticating(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    laptop.home = e2e.fresh_home(lab, "p1-nokh", known_hosts=False)
    before = {host: e2e.sshd_log(lab, host) for host in ("bastion", "target")}
    run = laptop.run(["xai", "target", *fake(lab, provider, fake_hermes)])
    assert run.returncode == 4, run.output
    line = one_error_line(run.stderr)
    fingerprint = lab.run(
        "laptop",
        ["ssh-keygen", "-l", "-f", str(lab.root / "bastion" / "ssh_host_ed25519_key.pub")],
        check=True,
    ).stdout.split()[1]
    assert lab.bastion_ip in line and fingerprint in line and "--accept-new" in line, line
    for host in ("bastion", "target"):
        new = e2e.sshd_log(lab, host)[len(before[host]) :]
        assert "Accepted publickey" not in new and "session" not in new.lower(), (host, new)
    assert not lab.target_processes("fake-hermes")
    assert not (laptop.home / ".ssh" / "known_hosts").exists()


def test_unknown_target_key_stops_before_any_remote_command(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    laptop.home = e2e.fresh_home(lab, "p1-bastion-only")
    known = without(laptop.home, lab.target_ip)
    kept = known.read_text()
    before = e2e.sshd_log(lab, "target")
    run = laptop.run(["xai", "target", *fake(lab, provider, fake_hermes)])
    assert run.returncode == 4, run.output
    line = one_error_line(run.stderr)
    fingerprint = lab.run(
        "laptop",
        ["ssh-keygen", "-l", "-f", str(lab.root / "target" / "ssh_host_ed25519_key.pub")],
        check=True,
    ).stdout.split()[1]
    assert lab.target_ip in line and fingerprint in line and "--accept-new" in line, line
    new = e2e.sshd_log(lab, "target")[len(before) :]
    # The target saw a key exchange, nothing more: no login, no session, no command.
    assert "Accepted publickey" not in new and "session" not in new.lower(), new
    assert not lab.target_processes("fake-hermes") and not lab.target_processes("import base64")
    assert known.read_text() == kept


@pytest.mark.parametrize(
    "how",
    [
        ["--accept-new"],
        ["-o", "StrictHostKeyChecking=accept-new"],
        ["-o", "StrictHostKeyChecking=no"],
    ],
    ids=["flag", "o-accept-new", "o-no"],
)
def test_accept_new_records_both_keys_and_the_next_run_needs_no_flag(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path, how: list[str]
) -> None:
    laptop.home = e2e.fresh_home(lab, "p1-accept", known_hosts=False)
    known = laptop.home / ".ssh" / "known_hosts"
    run = laptop.run(["xai", "target", *how, *fake(lab, provider, fake_hermes, "0.19.0")])
    assert run.returncode == 0, run.output
    lines = known.read_text().splitlines()
    assert recorded(known, f"{lab.bastion_ip}", host_key(lab, "bastion")), lines
    assert recorded(known, f"{lab.target_ip}", host_key(lab, "target")), lines
    again = laptop.run(["xai", "target", *fake(lab, provider, fake_hermes, "0.19.0")])
    assert again.returncode == 0, again.output
    assert known.read_text().splitlines() == lines  # nothing recorded twice


def test_accept_new_appends_to_a_known_hosts_without_final_newline(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    laptop.home = e2e.fresh_home(lab, "p1-nonl")
    known = without(laptop.home, lab.target_ip)
    known.write_text(known.read_text().rstrip("\n"))  # as hand-edited files often end
    run = laptop.run(["xai", "target", "--accept-new", *fake(lab, provider, fake_hermes, "0.19.0")])
    assert run.returncode == 0, run.output
    lines = known.read_text().splitlines()
    assert recorded(known, f"{lab.bastion_ip}", host_key(lab, "bastion")), lines
    assert recorded(known, f"{lab.target_ip}", host_key(lab, "target")), lines
    again = laptop.run(["xai", "target", *fake(lab, provider, fake_hermes, "0.19.0")])
    assert again.returncode == 0, again.output


def test_accept_new_records_a_non_default_port_as_bracketed_host(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    lab.start_sshd("bastion", extra=[f"ListenAddress {lab.bastion_ip}:2222"])
    laptop.home = e2e.fresh_home(lab, "p1-port", known_hosts=False)
    known = laptop.home / ".ssh" / "known_hosts"
    hops = [
        f"{lab.user}@{lab.target_ip}",
        "-J",
        f"{lab.user}@{lab.bastion_ip}:2222",
        "-i",
        laptop.key,
    ]
    run = laptop.run(["xai", *hops, "--accept-new", *fake(lab, provider, fake_hermes, "0.19.0")])
    assert run.returncode == 0, run.output
    lines = known.read_text().splitlines()
    assert recorded(known, f"[{lab.bastion_ip}]:2222", host_key(lab, "bastion")), lines
    assert recorded(known, f"{lab.target_ip}", host_key(lab, "target")), lines
    again = laptop.run(["xai", *hops, *fake(lab, provider, fake_hermes, "0.19.0")])
    assert again.returncode == 0, again.output


@pytest.mark.parametrize(
    "mode",
    [
        [],
        ["--accept-new"],
        ["-o", "StrictHostKeyChecking=accept-new"],
        ["-o", "StrictHostKeyChecking=no"],
        ["--accept-new", "-o", "StrictHostKeyChecking=no"],
    ],
    ids=["default", "accept-new", "o-accept-new", "o-no", "both"],
)
@pytest.mark.parametrize("hop", ["bastion", "target"])
def test_changed_key_is_refused_in_every_mode(
    lab: Lab,
    laptop: e2e.Laptop,
    provider: e2e.Provider,
    fake_hermes: Path,
    hop: str,
    mode: list[str],
) -> None:
    ip = lab.bastion_ip if hop == "bastion" else lab.target_ip
    laptop.home = e2e.fresh_home(lab, f"p1-changed-{hop}")
    known = without(laptop.home, ip)
    impostor = laptop.home / "impostor"
    lab.run(
        "laptop", ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True
    )
    with known.open("a") as handle:
        handle.write(f"{ip} {' '.join(impostor.with_suffix('.pub').read_text().split()[:2])}\n")
    kept = known.read_bytes()
    before = e2e.sshd_log(lab, "target")
    run = laptop.run(["xai", "target", *mode, *fake(lab, provider, fake_hermes)])
    assert run.returncode == 4, run.output
    line = one_error_line(run.stderr)
    assert "HOST KEY CHANGED" in line and ip in line, line
    assert known.read_bytes() == kept
    if hop == "bastion":
        assert lab.target_ip not in line
    assert "Accepted publickey" not in e2e.sshd_log(lab, "target")[len(before) :]
    assert not lab.target_processes("fake-hermes")


def test_changed_key_in_a_hashed_known_hosts_is_refused(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    laptop.home = e2e.fresh_home(lab, "p1-hashed")
    known = without(laptop.home, lab.bastion_ip)
    impostor = laptop.home / "impostor"
    lab.run(
        "laptop", ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True
    )
    with known.open("a") as handle:
        handle.write(
            f"{lab.bastion_ip} {' '.join(impostor.with_suffix('.pub').read_text().split()[:2])}\n"
        )
    lab.run("laptop", ["ssh-keygen", "-H", "-f", str(known)], check=True)
    assert lab.bastion_ip not in known.read_text()  # names are hashed now
    kept = known.read_bytes()
    run = laptop.run(["xai", "target", "--accept-new", *fake(lab, provider, fake_hermes)])
    assert run.returncode == 4, run.output
    line = one_error_line(run.stderr)
    assert "HOST KEY CHANGED" in line and lab.bastion_ip in line, line
    assert known.read_bytes() == kept


# == 2. the forward listens on loopback only =====================================================

CONNECT = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
    except OSError as e:
        print("ERR", e.errno or "timeout")
    else:
        print("OK")
    s.close()
""")


def connect(lab: Lab, host: str, ip: str, port: int) -> str:
    return str(lab.run(host, ["/usr/bin/python3", "-c", CONNECT, ip, str(port)]).stdout).strip()


def test_forward_accepts_on_loopback_only(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    addresses = lab.run("laptop", ["ip", "-o", "-4", "addr", "show"], check=True).stdout
    assert "198.18.1.1/" in addresses  # the laptop's non-loopback address the probes aim at
    proc = laptop.start(["xai", "target", "--no-open", *fake(lab, provider, fake_hermes)])
    e2e.wait_for_stderr(proc, "Open this URL")
    listeners = lab.run("laptop", ["ss", "-Hltn", f"sport = :{XAI_PORT}"], check=True).stdout.split(
        "\n"
    )
    assert [line.split()[3] for line in listeners if line.strip()] == [f"127.0.0.1:{XAI_PORT}"], (
        listeners
    )
    assert connect(lab, "laptop", "198.18.1.1", XAI_PORT) == "ERR 111"
    assert connect(lab, "bastion", "198.18.1.1", XAI_PORT) == "ERR 111"
    # Last, as it spends hermes's one-shot listener: the loopback side does accept.
    assert connect(lab, "laptop", "127.0.0.1", XAI_PORT) == "OK"
    run = e2e.finish(proc, e2e.SIGINT)
    assert run.returncode == 130, run.output


# == 3. no secret in anything tunnelauth prints ==================================================

TOKEN_KEYS = ("access_token", "refresh_token", "id_token", "tokens")


def token_values(tree: object, under_token: bool = False) -> set[str]:
    """Every string longer than 8 characters below a token key of auth.json."""
    found: set[str] = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            found |= token_values(value, under_token or key in TOKEN_KEYS)
    elif isinstance(tree, list):
        for value in tree:
            found |= token_values(value, under_token)
    elif isinstance(tree, str) and under_token and len(tree) > 8:
        found.add(tree)
    return found


def new_codes(lab: Lab, provider: e2e.Provider, seen: int) -> list[dict[str, object]]:
    return e2e.provider_log(lab, provider)["codes"][seen:]  # type: ignore[index,return-value]


def code_count(lab: Lab, provider: e2e.Provider) -> int:
    return len(e2e.provider_log(lab, provider)["codes"])  # type: ignore[arg-type]


def assert_no_secrets(output: str, secrets: set[str], states: set[str]) -> None:
    for secret in secrets:
        assert secret not in output, f"secret {secret[:12]}... shown:\n{output}"
    for state in states:
        for line in output.splitlines():
            if state in line:
                # Only the authorize URL itself, printed for the person to open, may hold the state.
                url = line.strip()
                assert re.fullmatch(r"https?://\S+", url) and f"state={state}" in url, (
                    f"state leaked: {line}"
                )


def login_secrets(
    lab: Lab, provider: e2e.Provider, seen: int, token_file: Path
) -> tuple[set[str], set[str]]:
    codes = new_codes(lab, provider, seen)
    secrets = {str(c["code"]) for c in codes} | token_values(e2e.tokens(token_file))
    for c in codes:
        if c.get("code_verifier"):
            secrets.add(str(c["code_verifier"]))
    states = {str(c["state"]) for c in codes if c.get("state")}
    assert token_values(e2e.tokens(token_file)), "no tokens found to look for"
    return secrets, states


def test_xai_loopback_at_verbose_prints_no_secret(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    seen = code_count(lab, provider)
    run = laptop.run(["xai", "target", "-v", *fake(lab, provider, fake_hermes)])
    assert run.returncode == 0, run.output
    assert "remote stdout:" in run.stderr  # -v really showed the remote's lines
    secrets, states = login_secrets(lab, provider, seen, lab.user_home / ".hermes" / "auth.json")
    assert secrets and states
    assert_no_secrets(run.output, secrets, states)


def test_denied_login_at_verbose_prints_no_state(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    events = len(e2e.provider_log(lab, provider)["events"])  # type: ignore[arg-type]
    run = laptop.run(
        ["xai", "target", "-v", *fake(lab, provider, fake_hermes)], FAKE_BROWSER_MODE="deny"
    )
    assert run.returncode == 1, run.output
    denied = [
        e
        for e in e2e.provider_log(lab, provider)["events"][events:]  # type: ignore[index]
        if e["event"] == "authorize_denied"
    ]
    assert len(denied) == 1
    states = set(re.findall(r"[?&]state=([A-Za-z0-9_-]{8,})", run.stderr))
    assert states  # the authorize URL, shown for the person, carries it
    assert_no_secrets(run.output, set(), states)


def test_spotify_real_hermes_at_verbose_prints_no_secret(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    hermes = e2e.REAL_HERMES["0.19.0"]
    e2e.need(hermes.exists(), f"real hermes-agent 0.19.0 is not installed at {hermes}")
    seen = code_count(lab, provider)
    run = laptop.run(
        [
            "spotify",
            "target",
            "-v",
            "--hermes",
            str(hermes),
            "--remote-env",
            f"HERMES_SPOTIFY_ACCOUNTS_BASE_URL={provider.url}",
            "--remote-env",
            "HERMES_SPOTIFY_CLIENT_ID=labclient",
            "--allow-host",
            lab.provider_ip,
        ]
    )
    assert run.returncode == 0, run.output
    assert "remote stdout:" in run.stderr
    secrets, states = login_secrets(lab, provider, seen, lab.user_home / ".hermes" / "auth.json")
    assert_no_secrets(run.output, secrets, states)


def test_xai_device_code_at_verbose_prints_no_secret(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    before = len(e2e.provider_log(lab, provider)["devices"])  # type: ignore[arg-type]
    run = laptop.run(["xai", "target", "-v", *fake(lab, provider, fake_hermes, "0.19.0")])
    assert run.returncode == 0, run.output
    devices = e2e.provider_log(lab, provider)["devices"][before:]  # type: ignore[index]
    assert len(devices) == 1 and devices[0]["user_code"] in run.stderr  # the code to type IS shown
    secrets = token_values(e2e.tokens(lab.user_home / ".hermes" / "auth.json"))
    assert secrets
    assert_no_secrets(run.output, secrets, set())


def test_anthropic_paste_at_verbose_prints_no_secret(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, fake_hermes: Path
) -> None:
    seen = code_count(lab, provider)
    proc, tty = laptop.start_with_tty(
        ["anthropic", "target", "-v", *fake(lab, provider, fake_hermes, "0.19.0")]
    )
    try:
        e2e.wait_for_stderr(proc, "Authorization code")
        issued: list[dict[str, object]] = []
        deadline = time.monotonic() + 15
        while not issued and time.monotonic() < deadline:  # the browser may still be on the page
            issued = [c for c in new_codes(lab, provider, seen) if c["path"] == "/oauth/authorize"]
            time.sleep(0.1)
        assert issued, "the provider never issued a code"
        typed = f"{issued[-1]['code']}#{issued[-1]['state']}"
        os.write(tty, typed.encode() + b"\n")
        run = e2e.finish(proc)
    finally:
        os.close(tty)
    assert run.returncode == 0, run.output
    secrets, states = login_secrets(lab, provider, seen, lab.user_home / ".hermes" / "auth.json")
    secrets.add(typed)
    assert_no_secrets(run.output, secrets, states)


# == 4. the browser only ever opens a safe URL ===================================================


def hostile_hermes(
    lab: Lab, lines: list[str], listen: int | None = None, sleep: float = 60
) -> Path:
    """A 'hermes' that binds a callback listener (optional), prints lines, then waits."""
    body = textwrap.dedent(f"""\
        #!/usr/bin/python3
        import socket, sys, time
        port = {listen!r}
        if port:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(5)
        for line in {lines!r}:
            print(line, flush=True)
        time.sleep({sleep!r})
        """)
    return e2e.write_script(lab, f"hostile-{uuid.uuid4().hex[:8]}", body)


def loopback_url(host: str, path: str = "/oauth2/auth", userinfo: str = "") -> str:
    # No PKCE challenge: the mock answers 400 at once instead of redirecting to a listener that
    # never answers, so the fake browser's run ends (and is logged) quickly.
    redirect = f"http%3A%2F%2F127.0.0.1%3A{XAI_PORT}%2Fcallback"
    return f"http://{userinfo}{host}{path}?response_type=code&client_id=lab&redirect_uri={redirect}&state=s1"


WAITING = f"Waiting for callback on http://127.0.0.1:{XAI_PORT}/callback"


def test_non_http_urls_are_never_opened(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    control = f"{provider.url}/oauth2/auth?response_type=code&client_id=control"
    hermes = hostile_hermes(
        lab,
        [
            "Open this URL to authorize Hermes with xAI:",
            "javascript:alert(document.cookie)//?response_type=code&client_id=x&redirect_uri=http://127.0.0.1:56121/",
            "  JavaScript:fetch('http://198.18.3.1/')?client_id=x&response_type=code",
            "file:///etc/shadow?client_id=x&response_type=code",
            "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==?client_id=x&response_type=code",
            "1. Open this URL in your browser:",
            "   file:///etc/passwd",
            "1. Open: javascript:alert(1)",
            "Waiting for callback on javascript:alert(1)",
            "vbscript:msgbox(1)?client_id=x&response_type=code",
            "Open this URL to authorize Hermes with xAI:",
            control,
        ],
    )
    proc = laptop.start(["xai", "target", "--hermes", str(hermes), "--allow-host", lab.provider_ip])
    e2e.wait_until(laptop.browser_runs, 20, "the control URL was never opened")
    run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    opened = [r["url"] for r in laptop.browser_runs()]
    assert opened == [control.split("?")[0]], opened


def test_url_with_shell_metacharacters_reaches_the_browser_unharmed(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    marker = lab.root / f"marker-url-{uuid.uuid4().hex[:8]}"
    url = (
        f"{provider.url}/oauth2/auth?response_type=code&client_id=x;touch${{IFS}}{marker}"
        f"&scope=$(touch${{IFS}}{marker})|touch${{IFS}}{marker}&state=a;b"
    )
    hermes = hostile_hermes(lab, [url])
    proc = laptop.start(["xai", "target", "--hermes", str(hermes), "--allow-host", lab.provider_ip])
    e2e.wait_until(laptop.browser_runs, 20, "the URL was never opened")
    run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    assert [r["url"] for r in laptop.browser_runs()] == [url.split("?")[0]]
    assert not marker.exists()


@pytest.mark.parametrize("userinfo", ["user:pass@", "user@", ":@"])
@pytest.mark.parametrize("loopback", [True, False], ids=["loopback-redirect", "no-redirect"])
def test_url_with_credentials_is_refused(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider, userinfo: str, loopback: bool
) -> None:
    host = provider.url.split("//", 1)[1]
    if loopback:
        hermes = hostile_hermes(
            lab, [loopback_url(host, userinfo=userinfo), WAITING], listen=XAI_PORT
        )
    else:
        hermes = hostile_hermes(
            lab, [f"http://{userinfo}{host}/oauth2/auth?response_type=code&client_id=lab"]
        )
    run = laptop.run(
        [
            "xai",
            "target",
            "--hermes",
            str(hermes),
            "--allow-host",
            lab.provider_ip,
            "--timeout",
            "20",
        ],
        timeout=40,
    )
    assert run.returncode not in (0, 8), run.output  # refused, not opened nor waited out
    line = one_error_line(run.stderr)
    assert "credentials" in line, line
    assert laptop.browser_runs() == []
    assert e2e.gone_within(lab, "hostile-", 5)


def test_unexpected_host_is_shown_with_a_warning_and_not_opened(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    host = provider.url.split("//", 1)[1]
    hermes = hostile_hermes(lab, [loopback_url(host), WAITING], listen=XAI_PORT)
    proc = laptop.start(["xai", "target", "--hermes", str(hermes)])
    seen = e2e.wait_for_stderr(proc, "Open this URL in your browser (authorize):")
    run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    assert laptop.browser_runs() == []  # shown for the person to judge, not opened for them
    lines = (seen + run.stderr).splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning:"))
    assert lab.provider_ip in lines[warning] and "auth.x.ai" in lines[warning], lines[warning]
    assert f"--allow-host {lab.provider_ip} opens it" in lines[warning]
    assert warning < lines.index("Open this URL in your browser (authorize):")


def test_allowed_host_opens_without_warning(
    lab: Lab, laptop: e2e.Laptop, provider: e2e.Provider
) -> None:
    host = provider.url.split("//", 1)[1]
    hermes = hostile_hermes(lab, [loopback_url(host), WAITING], listen=XAI_PORT)
    proc = laptop.start(["xai", "target", "--hermes", str(hermes), "--allow-host", lab.provider_ip])
    e2e.wait_until(laptop.browser_runs, 20, "the URL was never opened")
    run = e2e.finish(proc, e2e.SIGTERM)
    assert run.returncode == 143, run.output
    # (The fake browser's 400 from the mock may add a "browser ... reported a failure" warning; that is not it.)
    assert "warning: the URL is on" not in run.stderr and "not on auth.x.ai" not in run.stderr
    assert "Opening the authorize URL" in run.stderr


@pytest.mark.parametrize("host", ["auth.x.ai.example.test", "evilauth.x.ai", "auth-x.ai"])
def test_lookalike_host_warns(lab: Lab, laptop: e2e.Laptop, host: str) -> None:
    # --no-open: these hosts must not be looked up for real.
    hermes = hostile_hermes(lab, [f"https://{host}/oauth2/auth?response_type=code&client_id=lab"])
    proc = laptop.start(["xai", "target", "--no-open", "--hermes", str(hermes)])
    seen = e2e.wait_for_stderr(proc, "Open this URL")
    run = e2e.finish(proc, e2e.SIGINT)
    assert run.returncode == 130, run.output
    assert f"warning: the URL is on {host}" in seen + run.stderr, seen + run.stderr


# == 5. nothing the user passes is run by a shell ================================================


@pytest.fixture
def markers(lab: Lab) -> Iterator[Path]:
    """A directory every lab user can write to (the target shares the laptop's filesystem)."""
    where = lab.root / "markers" / uuid.uuid4().hex[:8]
    where.mkdir(parents=True)
    where.chmod(0o777)
    probe = where / "can-write"
    lab.run("target", ["touch", str(probe)], user=lab.user, check=True)
    assert probe.exists()  # so a missing marker means "not run", not "could not write"
    probe.unlink()
    yield where
    subprocess.run(["rm", "-rf", str(where)], check=True)


def touched(where: Path) -> list[str]:
    """The markers an injected `touch` would have made (hostile paths may create directories
    whose names merely contain the word)."""
    return sorted(p.name for p in where.iterdir() if p.name.startswith("marker"))


@pytest.mark.parametrize(
    ("template", "login"),
    [
        ("/bin/true; touch {m}", "user"),
        ("/bin/true && touch {m}", "user"),
        ("$(touch {m})", "user"),
        ("`touch {m}`", "user"),
        ("/bin/true\ntouch {m}", "user"),
        ("/bin/true; touch {m}", "root-as-user"),
        # Without a '/', hermes is looked up through the remote login shell.
        ("nohermes;touch {rel}", "user"),
        ("nohermes$(touch {rel})", "user"),
        ("nohermes`touch {rel}`", "user"),
        ("nohermes||touch {rel}", "user"),
        ("nohermes'$(touch {rel})'", "user"),
        ('nohermes"$(touch {rel})"', "user"),
        ("-v;touch {rel}", "user"),
        ("nohermes;cd;touch {rel}", "root-as-user"),
    ],
)
def test_hostile_hermes_value_runs_nothing(
    lab: Lab, laptop: e2e.Laptop, markers: Path, template: str, login: str
) -> None:
    marker = markers / "marker"
    # Without a slash hermes is looked up by name; a relative path lands in the user's home.
    rel = f"marker-{uuid.uuid4().hex[:8]}"
    home_marker = lab.user_home / rel
    who = ["target"] if login == "user" else ["root@target", "--as-user", lab.user]
    try:
        run = laptop.run(["xai", *who, "--hermes", template.format(m=marker, rel=rel)])
        assert run.returncode in (2, 7), run.output
        assert not marker.exists() and not home_marker.exists(), run.output
    finally:
        home_marker.unlink(missing_ok=True)


def env_dump(lab: Lab, out: Path) -> Path:
    """A 'hermes' that writes the variables X* it was given to a file and fails."""
    return e2e.write_script(
        lab,
        f"env-dump-{uuid.uuid4().hex[:6]}",
        textwrap.dedent(f"""\
        #!/usr/bin/python3
        import json, os
        with open({str(out)!r}, "w") as f:
            json.dump({{k: v for k, v in os.environ.items() if k.startswith("X")}}, f)
        os.chmod({str(out)!r}, 0o666)
        print("Error: env dumped")
        raise SystemExit(1)
        """),
    )


@pytest.mark.parametrize("login", ["user", "root-as-user"])
def test_hostile_remote_env_values_arrive_verbatim(
    lab: Lab, laptop: e2e.Laptop, markers: Path, login: str
) -> None:
    m = markers / "marker"
    values = {
        "X1": f"$(touch {m}1)",
        "X2": f"';touch {m}2;'",
        "X3": f"`touch {m}3`",
        "X4": f"a\ntouch {m}4\n",
        "X5": f'"; touch {m}5; "',
        "X6": f"a && touch {m}6 || touch {m}6b",
        "X7": f"a' '$(touch {m}7)",
        "X8": "\\'\"$HOME${IFS}",
    }
    out = markers / "env.json"
    hermes = env_dump(lab, out)
    who = ["target"] if login == "user" else ["root@target", "--as-user", lab.user]
    args = [a for k, v in values.items() for a in ("--remote-env", f"{k}={v}")]
    run = laptop.run(["xai", *who, "--hermes", str(hermes), *args])
    assert run.returncode == 1 and "env dumped" in run.stderr, run.output
    assert json.loads(out.read_text()) == values
    assert touched(markers) == [], touched(markers)


@pytest.mark.parametrize("login", ["user", "root"])
def test_hostile_hermes_home_is_a_plain_path(
    lab: Lab,
    laptop: e2e.Laptop,
    provider: e2e.Provider,
    fake_hermes: Path,
    markers: Path,
    login: str,
) -> None:
    m = markers / "marker"
    home = f"{markers}/hh; touch {m}1 $(touch {m}2) `touch {m}3`"
    who = "target" if login == "user" else "root@target"
    run = laptop.run(
        ["xai", who, "--hermes-home", home, *fake(lab, provider, fake_hermes, "0.19.0")]
    )
    assert run.returncode == 0, run.output
    assert f"{home}/auth.json" in run.stdout
    assert (Path(home) / "auth.json").is_file()
    assert touched(markers) == [], touched(markers)


METACHARACTERS = [
    ["xai;touch {m}", "target"],
    ["xai$(touch {m})", "target"],
    ["xai", "target;touch {m}"],
    ["xai", "$(touch {m})"],
    ["xai", "`touch {m}`@target"],
    ["xai", "x;touch {m}@target"],
    ["xai", "target:22;touch {m}"],
    ["xai", "target", "-J", "bastion;touch {m}"],
    ["xai", "target", "-J", "bastion,$(touch {m})"],
    ["xai", "target", "-l", "x;touch {m}"],
    ["xai", "target", "-o", "User=x$(touch {m})"],
    ["xai", "target", "--as-user", "x;touch {m}"],
    ["xai", "--", "-oProxyCommand=touch {m}"],
]

INVALID = [
    ["--remote-env", "1X=a"],
    ["--remote-env", "X-Y=a"],
    ["--remote-env", "NOEQUALS"],
    ["--remote-env", "=value"],
    ["--remote-env", "X Y=a"],
    ["-p", "0"],
    ["-p", "65536"],
    ["-p", "-1"],
    ["-o", "Port=99999"],
    ["-o", "Port=0"],
    ["-J", ","],
    ["-J", "bastion,"],
    ["-J", ",bastion"],
    ["-J", "bastion target"],
    ["-J", "user@"],
    ["-J", "bastion:0"],
    ["-J", "bastion:70000"],
    ["-J", "[198.18.1.2"],
    ["-J", "bastion:22:22"],
    ["--timeout", "0"],
    ["--timeout", "-5"],
    ["--timeout", "nan"],
    ["-o", "StrictHostKeyChecking=maybe"],
    ["-o", "UserKnownHostsFile=none"],
    ["-o", "NoSuchOption=1"],
]

INVALID_DESTINATIONS = ["target:0", "target:65536", "target:x", "ta rget", "[target", "tar;get"]


def run_all(laptop: e2e.Laptop, arglists: list[list[str]]) -> list[tuple[list[str], e2e.Run]]:
    """Run many short-lived tunnelauths at once (each only parses its arguments)."""
    procs = [(args, laptop.start(args)) for args in arglists]
    return [(args, e2e.finish(proc)) for args, proc in procs]


def test_metacharacters_are_refused_locally(lab: Lab, laptop: e2e.Laptop, markers: Path) -> None:
    before = connections(lab)
    runs = run_all(
        laptop, [[a.format(m=markers / "marker") for a in args] for args in METACHARACTERS]
    )
    wrong = [
        (args, run.returncode, run.stderr[-300:])
        for args, run in runs
        if run.returncode != 2 or "Traceback" in run.stderr
    ]
    assert not wrong, wrong
    assert touched(markers) == []
    assert connections(lab) == before


def test_invalid_values_exit_2_before_connecting(lab: Lab, laptop: e2e.Laptop) -> None:
    before = connections(lab)
    arglists = [["xai", "target", *args] for args in INVALID] + [
        ["xai", d] for d in INVALID_DESTINATIONS
    ]
    runs = run_all(laptop, arglists)
    wrong = [
        (args, run.returncode, run.stderr[-300:])
        for args, run in runs
        if run.returncode != 2 or "Traceback" in run.stderr
    ]
    assert not wrong, wrong
    assert connections(lab) == before


# == 6. no secret in any process table (issue 12) ================================================

SUPERVISOR = "import base64,sys,zlib"


def secret_hermes(lab: Lab, fake_hermes: Path, seen: Path) -> Path:
    """fake hermes, after writing down a hash of the secrets it was given and who it runs as."""
    return e2e.write_script(
        lab,
        f"secret-hermes-{uuid.uuid4().hex[:6]}",
        textwrap.dedent(f"""\
        #!/usr/bin/python3
        import hashlib, os, sys
        with open({str(seen)!r}, "w") as f:
            for name in ("TA_TYPED", "TA_FROM_ENV"):
                f.write(name + " " + hashlib.sha256(os.environ.get(name, "").encode()).hexdigest() + "\\n")
        os.execv({str(fake_hermes)!r}, [{str(fake_hermes)!r}] + sys.argv[1:])
        """),
    )


@pytest.mark.parametrize("login", ["user", "root-as-user"])
def test_no_secret_in_any_process_table(
    lab: Lab,
    laptop: e2e.Laptop,
    provider: e2e.Provider,
    fake_hermes: Path,
    markers: Path,
    login: str,
) -> None:
    typed, from_env = secrets.token_hex(20), secrets.token_hex(20)
    home = markers / f"hermes-home-{secrets.token_hex(12)}"
    seen = markers / "seen"
    hermes = secret_hermes(lab, fake_hermes, seen)
    who = ["target"] if login == "user" else ["root@target", "--as-user", lab.user]
    args = [
        "xai",
        *who,
        *fake(lab, provider, hermes),
        "--remote-env",
        f"TA_TYPED={typed}",
        "--remote-env",
        "TA_FROM_ENV",
        "--hermes-home",
        str(home),
    ]
    needles = {
        "the typed --remote-env value": typed.encode(),
        "the --remote-env value from the environment": from_env.encode(),
        "HERMES_HOME": home.name.encode(),
    }
    typed_by_the_user = {"the typed --remote-env value", "HERMES_HOME"}
    with e2e.ProcessTableWatch(
        lab,
        needles,
        typed_by_the_user,
        pwd.getpwnam(lab.user).pw_uid,
        "xai",
        looking_for=(SUPERVISOR, "fake-hermes"),
    ) as watch:
        run = e2e.finish(laptop.start(args, TA_FROM_ENV=from_env), timeout=60)
    assert run.returncode == 0, run.output
    assert watch.saw == {SUPERVISOR, "fake-hermes"} and watch.rounds > 10, (
        "the scan missed the login"
    )
    assert not watch.found, watch.found
    # The login still got every value.
    assert seen.read_text().split() == [
        "TA_TYPED",
        hashlib.sha256(typed.encode()).hexdigest(),
        "TA_FROM_ENV",
        hashlib.sha256(from_env.encode()).hexdigest(),
    ]
    e2e.tokens(home / "auth.json")
