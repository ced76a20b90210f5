"""The provider table: data only. Adding a provider is one entry in PROVIDERS."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from tunnelauth.errors import UsageError

Release = tuple[int, int, int]  # a hermes-agent version, e.g. (0, 18, 1)


class Flow(str, enum.Enum):
    LOOPBACK = "loopback"  # the browser is redirected to a listener on the remote's 127.0.0.1
    DEVICE = "device"  # open a verification URL, show a user code; nothing to forward
    PASTE = "paste"  # open an authorize URL, the user pastes the code back


@dataclass(frozen=True)
class Provider:
    name: str
    hermes_id: str
    args: tuple[str, ...]  # what follows the hermes command on the remote
    flows: tuple[Flow, ...]  # every flow some release uses; the output decides which one runs
    port: int | None = None  # preferred loopback callback port
    moves_port: bool = False  # hermes binds another port when the preferred one is taken
    callback_path: str | None = None
    aliases: tuple[str, ...] = ()
    success: tuple[str, ...] = ()  # regexes, matched against whole lines
    failure: tuple[str, ...] = ()
    authorize_hosts: tuple[str, ...] = ()  # hosts the real authorize/verification URLs live on
    # When the flow changed between releases: (first release, flow from then on), oldest first;
    # releases before the first entry lack the provider. Empty: every release uses flows[0].
    flows_by_release: tuple[tuple[Release, Flow | None], ...] = ()
    releases: str = ""  # the same, for people
    notes: str = ""
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", (self.name, self.hermes_id, *self.aliases))

    @property
    def loopback(self) -> bool:
        return Flow.LOOPBACK in self.flows

    def flow_at(self, release: Release) -> Flow | None:
        """The flow hermes `release` uses for this provider; None when that release lacks it."""
        if not self.flows_by_release:
            return self.flows[0]
        flow: Flow | None = None
        for since, then in self.flows_by_release:
            if release >= since:
                flow = then
        return flow

    @property
    def first_release(self) -> Release | None:
        """The first release that has the provider, when the data knows it."""
        return next((since for since, flow in self.flows_by_release if flow is not None), None)


def _added(hermes_id: str) -> str:
    return rf'^(?:Added|Imported) {re.escape(hermes_id)} OAuth credentials?(?: #\d+)?: "(?P<label>[^"]*)"'


def _saved(hermes_id: str) -> str:
    return rf'^Saved {re.escape(hermes_id)} OAuth (?:device-code )?credentials: "(?P<label>[^"]*)"'


# Failures every hermes command can print (stderr, last line of a traceback, or SystemExit text).
COMMON_FAILURES: tuple[str, ...] = (
    r"^hermes_cli\.auth\.AuthError: (?P<message>.+)$",
    r"^(?P<message>Unknown provider[: ].+)$",
    r"^(?P<message>Error: .+)$",
    r"^hermes: error: (?P<message>.+)$",  # argparse, e.g. an option this release lacks
    # Last line of any other traceback (nous raises RuntimeError, httpx errors, ...).
    r"^(?:[A-Za-z_][\w.]*\.)?(?:RuntimeError|TimeoutError|ConnectError|HTTPStatusError|ValueError): (?P<message>.+)$",
)

PROVIDERS: tuple[Provider, ...] = (
    Provider(
        name="xai",
        hermes_id="xai-oauth",
        args=("auth", "add", "xai-oauth", "--no-browser"),
        flows=(Flow.LOOPBACK, Flow.DEVICE),
        port=56121,
        moves_port=True,
        callback_path="/callback",
        aliases=("grok", "grok-oauth", "x-ai-oauth", "xai-grok-oauth"),
        success=(_saved("xai-oauth"), _added("xai-oauth")),
        authorize_hosts=("auth.x.ai", "accounts.x.ai"),
        flows_by_release=(((0, 14, 0), Flow.LOOPBACK), ((0, 18, 1), Flow.DEVICE)),
        releases="loopback 0.14.0-0.18.0, device code 0.18.1+",
    ),
    Provider(
        name="spotify",
        hermes_id="spotify",
        args=("auth", "spotify", "--no-browser"),
        flows=(Flow.LOOPBACK,),
        port=43827,
        callback_path="/spotify/callback",
        success=(r"^Spotify login successful!",),
        authorize_hosts=("accounts.spotify.com",),
        flows_by_release=(((0, 13, 0), Flow.LOOPBACK),),
        releases="0.13.0+",
        notes="`hermes auth spotify`, never `auth add spotify`",
    ),
    Provider(
        name="anthropic",
        hermes_id="anthropic",
        args=("auth", "add", "anthropic"),
        flows=(Flow.PASTE,),
        aliases=("claude",),
        success=(_added("anthropic"), r"^Login successful!"),
        failure=(
            r"^(?P<message>Token exchange failed: .+)$",
            r"^(?P<message>Anthropic OAuth login did not return credentials\.)$",
            r"^(?P<message>No code entered\.)$",
        ),
        authorize_hosts=("claude.ai", "console.anthropic.com"),
        releases="all",
    ),
    Provider(
        name="codex",
        hermes_id="openai-codex",
        args=("auth", "add", "openai-codex"),
        flows=(Flow.DEVICE,),
        aliases=("openai", "chatgpt"),
        success=(_added("openai-codex"), r"^Login successful!"),
        authorize_hosts=("auth.openai.com",),
        releases="all",
    ),
    Provider(
        name="minimax",
        hermes_id="minimax-oauth",
        args=("auth", "add", "minimax-oauth"),
        flows=(Flow.DEVICE,),
        success=(_added("minimax-oauth"), r"^\u2713 MiniMax OAuth login successful\."),
        authorize_hosts=("www.minimax.io", "platform.minimax.io", "api.minimax.io"),
        releases="recent",
    ),
    Provider(
        name="nous",
        hermes_id="nous",
        args=("auth", "add", "nous"),
        flows=(Flow.DEVICE,),
        aliases=("nous-portal",),
        success=(_saved("nous"), _added("nous"), r"^Login successful!"),
        authorize_hosts=("portal.nousresearch.com",),
        releases="all",
    ),
)


def lookup(name: str) -> Provider:
    """Find a provider by its name, its hermes id or an alias (case-insensitive)."""
    wanted = name.strip().lower()
    for provider in PROVIDERS:
        if wanted in provider.names:
            return provider
    known = ", ".join(p.name for p in PROVIDERS)
    guess = did_you_mean(wanted, [n for p in PROVIDERS for n in p.names])
    raise UsageError(f"unknown provider {name!r}" + guess, hint=f"choose one of: {known}")


def did_you_mean(word: str, choices: list[str]) -> str:
    """ "; did you mean 'x'?" for the closest choice, or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""
