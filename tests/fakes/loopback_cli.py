#!/usr/bin/env python3
"""A small CLI whose login waits on a loopback callback, shaped like the real ones.

    loopback_cli.py --provider URL [--port N] [--listen 127.0.0.1|::1] [--redirect-host H]
                    [--style plain|encoded] [--ports N,M] [--prompt] [--exit N] [--noise]

--style plain    prints "Listening on http://HOST:PORT/callback" then the authorize URL (codex)
--style encoded  prints only the authorize URL; the port is visible only URL-encoded inside
                 redirect_uri (az, MCP OAuth clients with random ports)
--ports N,M      one login per port, one after the other (kubelogin's two ports)
--listen ::1     listen on IPv6 loopback only (redirect host "localhost")
--prompt         ask "Continue? [y/N] " on the terminal first and insist on "y"
--noise          also print lookalike text ("server on http://localhost:8080") first
Each listener answers one request carrying ?code= and then closes. Standard library only.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, quote, urlsplit


class V6Server(HTTPServer):
    address_family = socket.AF_INET6


def login(provider: str, listen: str, port: int, redirect_host: str, style: str) -> None:
    server_class = V6Server if ":" in listen else HTTPServer
    got: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            if "code" in query:
                got["code"] = query["code"][0]
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"You may close this window.")

        def log_message(self, *args: object) -> None:
            pass

    server = server_class((listen, port), Handler)
    bound = server.server_address[1]
    redirect = f"http://{redirect_host}:{bound}/callback"
    state = secrets.token_hex(8)
    url = (
        f"{provider}/oauth2/auth?response_type=code&client_id=loopcli&redirect_uri={quote(redirect, safe='')}"
        f"&state={state}&code_challenge=x&code_challenge_method=S256"
    )
    if style == "plain":
        print(f"Listening on {redirect}", flush=True)
        print(f"Open this URL to log in: {url}", flush=True)
    else:
        print(f"To sign in, open {url}", flush=True)
    while "code" not in got:
        server.handle_request()
    server.server_close()
    print(f"Got a code on port {bound}.", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ports", default="")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--redirect-host", default="127.0.0.1")
    parser.add_argument("--style", choices=("plain", "encoded"), default="plain")
    parser.add_argument("--prompt", action="store_true")
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--noise", action="store_true")
    args = parser.parse_args()
    if args.noise:
        print("INFO metrics server on http://localhost:8080/metrics", flush=True)
    if args.prompt:
        sys.stdout.write("Continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "y":
            print("Aborted.")
            return 1
    ports = [int(p) for p in args.ports.split(",") if p] or [args.port]
    for port in ports:
        login(args.provider, args.listen, port, args.redirect_host, args.style)
    print("Logged in.", flush=True)
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
