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
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
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
