"""Provider data: the flow each hermes release uses is one entry per provider."""

from __future__ import annotations

import itertools

import pytest

from tunnelauth.providers import PROVIDERS, Flow, Release, lookup

# The doctor's own table before the flows moved onto Provider (doctor/versions.py HISTORY):
# the data must answer exactly as it did.
OLD_HISTORY: dict[str, tuple[tuple[Release, Flow | None], ...]] = {
    "xai": (((0, 0, 0), None), ((0, 14, 0), Flow.LOOPBACK), ((0, 18, 1), Flow.DEVICE)),
    "spotify": (((0, 0, 0), None), ((0, 13, 0), Flow.LOOPBACK)),
}
RELEASES = [(0, minor, patch) for minor, patch in itertools.product(range(22), range(3))] + [
    (1, 0, 0),
    (2, 3, 4),
]


def old_flow(name: str, release: Release) -> Flow | None:
    history = OLD_HISTORY.get(name)
    if history is None:
        return lookup(name).flows[0]
    flow: Flow | None = None
    for since, then in history:
        if release >= since:
            flow = then
    return flow


@pytest.mark.parametrize("name", [p.name for p in PROVIDERS])
def test_flow_data_answers_as_the_old_table_did(name: str) -> None:
    provider = lookup(name)
    assert [provider.flow_at(r) for r in RELEASES] == [old_flow(name, r) for r in RELEASES]


def test_first_release_and_the_text_for_people_agree_with_the_data() -> None:
    assert lookup("xai").first_release == (0, 14, 0)
    assert lookup("spotify").first_release == (0, 13, 0)
    assert lookup("codex").first_release is None
    for provider in PROVIDERS:
        for since, flow in provider.flows_by_release:
            assert ".".join(map(str, since)) in provider.releases, provider.name
            assert flow is None or flow in provider.flows, provider.name
        listed = [since for since, _ in provider.flows_by_release]
        assert listed == sorted(listed), f"{provider.name}: oldest release first"
