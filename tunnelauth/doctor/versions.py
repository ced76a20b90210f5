"""Which login flow a hermes release uses for each provider. Pure.

The login itself never needs this (it follows what hermes prints); the doctor uses it to tell
a person in advance what a login on that host will look like.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tunnelauth.providers import Flow, Provider

Version = tuple[int, int, int]

# For providers whose flow changed between releases: (first release, flow from then on);
# None means the provider did not exist in hermes yet. Providers not listed use their only flow.
HISTORY: Mapping[str, tuple[tuple[Version, Flow | None], ...]] = {
    "xai": (((0, 0, 0), None), ((0, 14, 0), Flow.LOOPBACK), ((0, 18, 1), Flow.DEVICE)),
    "spotify": (((0, 0, 0), None), ((0, 13, 0), Flow.LOOPBACK)),
}
LABELS: Mapping[Flow, str] = {
    Flow.LOOPBACK: "loopback",
    Flow.DEVICE: "device code",
    Flow.PASTE: "paste the code",
}
# `hermes --version`: "Hermes Agent v0.19.0 (2026.7.20)"; pre-releases ("0.20.0rc1") count as
# their release.
_VERSION = re.compile(r"\bHermes Agent v?(\d+)\.(\d+)(?:\.(\d+))?", re.IGNORECASE)


def parse_version(first_line: str) -> Version | None:
    match = _VERSION.search(first_line)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def show(version: Version) -> str:
    return ".".join(map(str, version))


def flow_for(provider: Provider, version: Version) -> Flow | None:
    """The flow `hermes` at `version` uses for provider; None when that release lacks it."""
    history = HISTORY.get(provider.name)
    if history is None:
        return provider.flows[0]
    flow: Flow | None = None
    for since, then in history:
        if version >= since:
            flow = then
    return flow


def first_release(provider: Provider) -> Version | None:
    """The first release that has the provider, when the history knows it."""
    for since, flow in HISTORY.get(provider.name, ()):
        if flow is not None:
            return since
    return None
