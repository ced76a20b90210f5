"""asyncssh, imported without its slowest step, and with packet logging that costs nothing
when it is off. Import asyncssh from here.

asyncssh looks for liboqs (optional post-quantum key exchange) with ctypes.util.find_library,
which on Linux falls back to running gcc and ld when ldconfig does not know the library: about
30 ms of every login's start-up on a machine with a compiler and no liboqs. Here find_library
first checks the places those tools would search; only if a liboqs file is there does the real
(slow, exact) lookup run, so a machine with liboqs still gets it.
"""

from __future__ import annotations

import sys

from tunnelauth import _internals


def _import() -> None:
    if "asyncssh" in sys.modules or not sys.platform.startswith("linux"):
        return
    import ctypes.util
    import glob
    import os

    real = ctypes.util.find_library
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += [
        "/usr/local/lib",
        "/usr/local/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/lib",
        "/lib64",
        *glob.glob("/usr/lib/*-linux-gnu*"),
        *glob.glob("/lib/*-linux-gnu*"),
    ]

    def find_library(name: str) -> str | None:
        stem = name if name.startswith("lib") else "lib" + name
        if any(glob.glob(os.path.join(glob.escape(d), stem + ".so*")) for d in dirs):
            return real(name)
        return None

    ctypes.util.find_library = find_library
    try:
        import asyncssh  # noqa: F401
    finally:
        ctypes.util.find_library = real


_import()

import asyncssh  # noqa: E402
from asyncssh.packet import SSHPacketLogger  # noqa: E402


def _quiet_packet_logging() -> None:
    """asyncssh formats a log line for every packet (names, sizes, a payload copy) before its
    logger drops it below debug level 3. Skipping that work when it would be dropped changes
    no output, and takes microseconds off each packet of each callback through the tunnel."""
    log_packet = getattr(SSHPacketLogger, "_log_packet", None)
    if (
        log_packet is None
        or getattr(log_packet, "_tunnelauth", False)
        or not _internals.usable("packet_logging")
    ):
        return

    def _log_packet(self: SSHPacketLogger, *args: object) -> None:
        if getattr(self.logger, "_debug_level", 3) >= 3:
            log_packet(self, *args)

    _log_packet._tunnelauth = True  # type: ignore[attr-defined]
    _log_packet.__wrapped__ = log_packet  # type: ignore[attr-defined]
    SSHPacketLogger._log_packet = _log_packet  # type: ignore[method-assign,assignment]


_quiet_packet_logging()

__all__ = ["asyncssh"]
