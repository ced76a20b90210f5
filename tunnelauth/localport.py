"""The laptop's side of a callback port: is it free, and if not, who holds it."""

from __future__ import annotations

import errno
import socket

from tunnelauth.errors import LocalPortBusy

LOOPBACK = "127.0.0.1"
MAX_CMDLINE = 120


def holder(port: int) -> str | None:
    """'pid 123 (cmdline)' of the process listening on the port, when the OS lets us see it."""
    try:
        import psutil  # slow to import; only needed when a port is busy
    except ImportError:  # pragma: no cover - psutil is a dependency
        return None
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in conns:
        if (
            conn.status == psutil.CONN_LISTEN
            and conn.laddr
            and conn.laddr.port == port
            and conn.pid
        ):
            try:
                cmdline = " ".join(psutil.Process(conn.pid).cmdline()) or "?"
            except (psutil.Error, OSError):
                cmdline = "?"
            # One line, whatever the command line holds.
            cmdline = " ".join(cmdline.split())
            if len(cmdline) > MAX_CMDLINE:
                cmdline = cmdline[: MAX_CMDLINE - 1] + "…"
            return f"pid {conn.pid} ({cmdline})"
    return None


def busy_error(port: int) -> LocalPortBusy:
    who = holder(port)
    held = f"held by {who}" if who else "held by a process this user cannot see"
    return LocalPortBusy(
        f"port {port} on this machine's {LOOPBACK} is already in use, {held}",
        hint="stop that process (an earlier tunnel or login?) and run tunnelauth again",
    )


def ensure_free(port: int) -> None:
    """Raise LocalPortBusy, naming the holder, when something listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT from an earlier run is free for our purpose.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise busy_error(port) from exc
            raise


FIRST_UNPRIVILEGED = 1024
MAX_RUN_FORWARDS = 16  # `run`: laptop ports forwarded per run
MAX_LOGIN_PORTS = 4  # a login: callback ports followed (hermes moves its port at most once)


class PortBudget:
    """Which laptop ports the remote's output may make tunnelauth listen on: never a privileged
    one, and at most `limit` in all. Each refusal is said once."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what  # "`run`" or "a login", for the warning
        self.admitted: set[int] = set()
        self.refused: set[int] = set()
        self._capped = False

    def admit(self, port: int) -> tuple[bool, str | None]:
        """(may listen on port, a warning to show now)."""
        if port in self.admitted:
            return True, None
        if port in self.refused:
            return False, None
        if port < FIRST_UNPRIVILEGED:
            self.refused.add(port)
            return False, (
                f"the remote asks for a callback on port {port}; tunnelauth never "
                f"listens on a privileged port (below {FIRST_UNPRIVILEGED}) of this "
                "machine for a remote"
            )
        if len(self.admitted) >= self.limit:
            self.refused.add(port)
            if self._capped:
                return False, None
            self._capped = True
            return False, (
                f"the remote printed more than {self.limit} loopback ports; "
                f"{self.what} forwards at most {self.limit}, so port {port} and any "
                "further ones are not forwarded"
            )
        self.admitted.add(port)
        return True, None

    def refuse(self, port: int) -> None:
        self.admitted.discard(port)
        self.refused.add(port)
