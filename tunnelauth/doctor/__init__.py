"""`tunnelauth doctor`: can a login to these destinations work? Checked, not assumed.

For each destination: every hop reachable and authenticated; the target forwards to its
loopback (through tunnelauth's own throwaway listener, never hermes's ports); hermes found, its
version, and the flow each provider will use; the callback ports free here and there; the
token directory usable; no hermes gateway running as another user. Leaves nothing running.
"""

from __future__ import annotations

from tunnelauth.doctor.checks import DEFAULT_CONCURRENCY, DoctorRequest
from tunnelauth.doctor.fleet import run
from tunnelauth.doctor.model import Check, DestinationReport, DoctorReport, Status
from tunnelauth.doctor.render import as_json, as_table

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Check",
    "DestinationReport",
    "DoctorReport",
    "DoctorRequest",
    "Status",
    "as_json",
    "as_table",
    "run",
]
