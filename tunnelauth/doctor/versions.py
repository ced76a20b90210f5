"""Reading a hermes release from `hermes --version`, and which flow it uses. Pure.

The flows themselves are data on each Provider (`flows_by_release`). The login never needs
them (it follows what hermes prints); the doctor uses them to tell a person in advance what a
login on that host will look like.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tunnelauth.providers import Flow, Provider, Release

Version = Release
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
    return provider.flow_at(version)


def first_release(provider: Provider) -> Version | None:
    """The first release that has the provider, when its data knows it."""
    return provider.first_release
