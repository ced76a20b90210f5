"""Everything a person sees: progress on stderr, the result on stdout, prompts on the tty.

Every text that reaches a terminal through here is made inert first (text.inert): much of it
comes from the remote (lines at -v, hermes's errors, labels, URLs, codes, prompts). Only the
colours painted here are added after; `passthrough` alone relays bytes as they are (`run`).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from tunnelauth.parse import redact
from tunnelauth.text import inert, inert_tree

if TYPE_CHECKING:  # flow imports asyncssh; printing must not wait for that import
    from tunnelauth.flow import LoginResult


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:
        return False


class ConsoleReporter:
    """Plain lines, coloured when stderr is a terminal. verbosity: 0 quiet, 1 normal, 2 -v."""

    def __init__(
        self, verbosity: int = 1, err: TextIO | None = None, out: TextIO | None = None
    ) -> None:
        self.verbosity = verbosity
        self.err = err or sys.stderr
        self.out = out or sys.stdout
        self.color = _tty(self.err)
        self.newline = "\n"
        self._terminal: tuple[int, list[Any]] | None = None

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _say(self, text: str, prefix: str = "", code: str | None = None) -> None:
        """One line on stderr: prefix (ours, may be painted) + text (made inert, then painted)."""
        body = inert(text)
        if code:
            body = self._paint(body, code)
        # In raw terminal mode (`run` with a terminal) a bare newline would not return the carriage.
        line = (prefix + body).replace("\n", self.newline)
        print(line, file=self.err, end=self.newline, flush=True)

    def passthrough(self, stream: str, data: bytes) -> None:
        target = self.out if stream == "stdout" else self.err
        target.flush()
        os.write(target.fileno(), data)

    def step(self, text: str, event: str | None = None, **fields: object) -> None:
        if text and self.verbosity >= 1:
            self._say(text, prefix=self._paint("• ", "2"))

    def detail(self, text: str) -> None:
        if self.verbosity >= 2:
            self._say(f"  {text}", code="2")

    def remote_line(self, text: str, stream: str) -> None:
        if self.verbosity >= 2:
            # Remote lines can carry a callback's code or a token; only their shape is shown.
            self._say(f"  remote {stream}: {redact(inert(text))}", code="2")

    def warn(self, text: str) -> None:
        self._say(text, prefix=self._paint("warning: ", "33"))

    def show_url(
        self, url: str, purpose: str, opened: bool | None, host: str | None = None
    ) -> None:
        """opened None: the person must open it; False: it is being opened. host (set by `run`):
        say which host even at -q, since no provider's hosts vouch for it."""
        if host is not None and opened is not None:
            self._say(f"tunnelauth: opening the {purpose} URL in your browser (host {host}):")
        elif opened is None:
            self._say(f"Open this URL in your browser ({purpose}):")
        elif self.verbosity >= 1:
            self._say(f"Opening the {purpose} URL in your browser:")
        else:
            return
        self._say(f"  {url}")

    def show_code(self, code: str) -> None:
        # The user must type this on the provider's page: shown even with -q, plain and large.
        self._say("")
        self._say(code, prefix="  Enter this code when the page asks for it:  ", code="1")
        self._say("")

    def ask(self, prompt: str, secret: bool) -> str | None:
        if not _tty(sys.stdin):
            return None
        # As the asker words it (ssh's own prompts end in a space), on one line, inert.
        prompt = inert(" ".join(prompt.splitlines()))
        prompt = prompt if prompt.endswith(" ") else prompt + " "
        try:
            if secret:
                self._remember_terminal()
                return getpass.getpass(prompt)
            self.err.write(prompt)
            self.err.flush()
            return sys.stdin.readline().rstrip("\n")
        except (EOFError, OSError):
            return None

    def _remember_terminal(self) -> None:
        """getpass turns echo off; if tunnelauth is stopped mid-prompt its own restore never
        runs, so keep the settings to put back (restore_terminal) on every way out."""
        import termios

        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            fd = os.dup(sys.stdin.fileno())
        try:
            self._terminal = (fd, termios.tcgetattr(fd))
        except termios.error:
            os.close(fd)

    def restore_terminal(self) -> None:
        if self._terminal is None:
            return
        import termios

        fd, settings = self._terminal
        self._terminal = None
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, settings)
        except termios.error:
            pass
        finally:
            os.close(fd)

    def result(self, result: LoginResult) -> None:
        who = f" as {result.label}" if result.label else ""
        where = f"; tokens in {result.token_file}" if result.token_file else ""
        mode = f" (mode {result.token_mode:o})" if result.token_mode is not None else ""
        line = f"Logged in to {result.provider}{who} on {result.destination}{where}{mode}"
        print(inert(" ".join(line.splitlines())), file=self.out, flush=True)

    def error(self, text: str) -> None:
        self._say(text, prefix=self._paint("tunnelauth: error: ", "31"))

    def failure(self, message: str, exit_code: int) -> None:
        self.error(message)


class JsonReporter(ConsoleReporter):
    """One JSON object per line on stdout, for wrappers and CI. Secrets are left out as
    everywhere: no remote lines, no typed answers; URLs and device codes are for the user."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__(verbosity=0, out=out)

    def _emit(self, event: str, **fields: object) -> None:
        print(json.dumps(inert_tree({"event": event, **fields})), file=self.out, flush=True)

    def step(self, text: str, event: str | None = None, **fields: object) -> None:
        if event:
            self._emit(event, **fields)

    def warn(self, text: str) -> None:
        self._emit("warning", message=text)

    def show_url(
        self, url: str, purpose: str, opened: bool | None, host: str | None = None
    ) -> None:
        self._emit("url", purpose=purpose, url=url, opening=opened is not None)

    def show_code(self, code: str) -> None:
        self._emit("device_code", code=code)

    def result(self, result: LoginResult) -> None:
        self._emit(
            "success",
            provider=result.provider,
            destination=result.destination,
            label=result.label,
            token_file=result.token_file,
            token_mode=f"{result.token_mode:o}" if result.token_mode is not None else None,
        )

    def failure(self, message: str, exit_code: int) -> None:
        self._emit("failure", exit_code=exit_code, message=message)
