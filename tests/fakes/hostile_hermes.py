#!/usr/bin/env python3
"""A hostile 'hermes' (or any remote command, for `tunnelauth run`): what a compromised target
could print to drive the laptop. Standard library only, Python 3.6+.

    hostile_hermes.py [MODE]     MODE, or $HOSTILE_MODE, is one of:

label       escape sequences on stdout and stderr lines, then a success line whose label holds
            OSC 52, a title change, ESC c, C1 and bidi controls; exit 0
error       the same lines, then an error line built the same way; exit 1
spoof       an authorize URL on $HOSTILE_HOST drawn so that a terminal would show only an
            auth.x.ai URL; then wait
escaped     an authorize URL on $HOSTILE_HOST with a raw ESC and a C1 inside it; then wait
flood       300 distinct authorize URLs on $HOSTILE_HOST, then a callback on port $HOSTILE_MARK
            (if set: the laptop's forward of it shows that every URL was read); then wait
privileged  a callback on port 22 (Waiting line and redirect_uri); then wait
ports       1,500 distinct loopback URLs (ports 20000-21499), then "ALL PRINTED"; then wait
mention     "server on http://localhost:$HOSTILE_PORT/api", then exit $HOSTILE_EXIT
"""

import os
import sys
import time

ESC = "\x1b"
# Each one a terminal would act on; several nest so that one stripping pass leaves a live one.
NASTY = (
    ESC
    + "]52;c;aGFja2VkCg=="
    + "\x07"  # OSC 52: write the clipboard
    + ESC
    + "]0;pwned"
    + ESC
    + "\\"  # window title
    + ESC
    + "c"  # full reset
    + ESC
    + ESC
    + "[[2J"  # nested clear screen
    + ESC
    + "[1;1H"
    + ESC
    + "[K"  # cursor home, erase line
    + "\x9b31m"
    + "\x9d52;c;eA==\x9c"  # 8-bit CSI and OSC
    + "\u202egnp.exe"
    + "\u2066"
    + "\x07\x08\x7f"
)
WAIT = 60


def out(line, stream=sys.stdout):
    stream.write(line + "\n")
    stream.flush()


def authorize(host, extra="", port=None):
    redirect = f"&redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback" if port else ""
    return f"http://{host}/oauth2/auth?response_type=code&client_id=lab{redirect}&state=s1{extra}"


def main():
    mode = (
        sys.argv[1]
        if len(sys.argv) > 1 and not sys.argv[1].startswith("-") and sys.argv[1] != "auth"
        else os.environ.get("HOSTILE_MODE", "")
    )
    host = os.environ.get("HOSTILE_HOST", "198.18.0.1")
    if mode in ("label", "error"):
        out("starting " + NASTY + " login")
        out("progress " + NASTY, sys.stderr)
        out("50%\r100% " + NASTY)  # a bare CR: the parser keeps what a terminal would show
        if mode == "label":
            out('Added xai-oauth OAuth credential #1: "lab' + NASTY + '@example.test"')
            return 0
        out("Error: login refused " + NASTY, sys.stderr)
        return 1
    if mode == "spoof":
        # A terminal would go back to column 1, erase the line and show only the auth.x.ai URL.
        out("Open this URL to authorize Hermes with xAI:")
        out(
            authorize(host)
            + ESC
            + "[1G"
            + ESC
            + "[2K"
            + "https://auth.x.ai/oauth2/auth?client_id=hermes"
        )
    elif mode == "escaped":
        out("Open this URL to authorize Hermes with xAI:")
        out(authorize(host, "&x=" + ESC + "\x9b"))
    elif mode == "flood":
        for n in range(300):
            out(authorize(host, f"&n={n}"))
        if os.environ.get("HOSTILE_MARK"):
            out(
                "Waiting for callback on http://127.0.0.1:{}/callback".format(
                    os.environ["HOSTILE_MARK"]
                )
            )
    elif mode == "privileged":
        out("Open this URL to authorize Hermes with xAI:")
        out(authorize(host, port=22))
        out("Waiting for callback on http://127.0.0.1:22/callback")
    elif mode == "ports":
        for port in range(20000, 21500):
            out(f"listening on http://127.0.0.1:{port}/")
        out("ALL PRINTED")
    elif mode == "mention":
        out("INFO server on http://localhost:{}/api".format(os.environ.get("HOSTILE_PORT", "8080")))
        return int(os.environ.get("HOSTILE_EXIT", "0"))
    else:
        out(f"hostile_hermes: unknown mode {mode!r}", sys.stderr)
        return 2
    time.sleep(WAIT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
