"""Making text from the remote inert before any of it reaches a terminal. Pure.

A terminal acts on control characters, escape sequences and bidi controls; a remote that can
print them can write the clipboard (OSC 52), retitle the window, clear the screen or make a
URL look like another. inert() leaves none of them in its result: the well-formed colour
sequences a CLI prints are dropped, and every control character left over is replaced by a
visible escape (ESC becomes the four characters ``\\x1b``). The check is per character of the
final string, so no nesting of sequences can survive it.
"""

from __future__ import annotations

import re

# CSI, OSC (ended by BEL or ST) and the two-character escapes: what CLIs use for colour.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# C0 but tab and newline, DEL, C1, the bidi marks, embeddings, overrides and isolates, the
# Unicode line and paragraph separators, and lone surrogates (not printable anywhere).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\r": "\\r", "\x1b": "\\x1b", "\x7f": "\\x7f"}


def strip_ansi(text: str) -> str:
    """Drop well-formed escape sequences (colours). Not a safety measure by itself: what is
    left may still hold control characters; inert() is the one that makes text safe."""
    return _ANSI.sub("", text)


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: str) -> str:
    """text with no C0 (but tab and newline), DEL, C1, escape sequence or bidi control left."""
    return _UNSAFE.sub(_visible, strip_ansi(text))


def is_inert(text: str) -> bool:
    return _UNSAFE.search(text) is None


def inert_tree(value: object) -> object:
    """inert() applied to every string inside JSON-shaped data (dicts, lists, tuples)."""
    if isinstance(value, str):
        return inert(value)
    if isinstance(value, dict):
        return {inert(str(k)): inert_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [inert_tree(v) for v in value]
    return value
