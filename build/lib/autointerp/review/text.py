"""Untrusted text made safe to read: control and bidi characters shown, long text clipped.

Model output and corpus text can hold characters that change how a page reads without being
visible: U+202E (right-to-left override) reverses everything after it, NUL bytes are turned
into U+FFFD by the browser (so an edit would silently change them). The app never emits them
raw: every rendered string passes through `reveal_plain` (the Jinja `finalize` hook), which
writes each one as a visible marker such as ``⟨U+202E⟩``; `reveal_html` does the same with a
styled badge for element content.
"""

from __future__ import annotations

import re
import unicodedata

from markupsafe import Markup, escape

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""Arabic letter mark, LRM, RLM, the embeddings and overrides (U+202A-E) and the isolates (U+2066-9)."""

CONTROL_PATTERN = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{BIDI_CONTROLS}]")
"""Characters shown as markers: C0 controls except tab and newlines, DEL, C1 controls, bidi controls."""

_NAMES = {
    "\x00": "NUL",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
    "\u061c": "ARABIC LETTER MARK",
}


def control_name(char: str) -> str:
    """Returns a readable name of one control character (its Unicode name where it has one)."""
    return _NAMES.get(char) or str(unicodedata.name(char, f"control U+{ord(char):04X}"))


def _marker(char: str) -> str:
    return f"⟨U+{ord(char):04X}⟩"


def has_controls(text: str | None) -> bool:
    """Returns True when `text` holds a character that `reveal_plain` would replace."""
    return bool(text) and CONTROL_PATTERN.search(text or "") is not None


def reveal_plain(text: str) -> str:
    """Returns `text` with each control or bidi character written as a visible ``⟨U+XXXX⟩`` marker."""
    return CONTROL_PATTERN.sub(lambda m: _marker(m.group()), text)


def reveal_html(text: str | None) -> Markup:
    """Returns `text` HTML-escaped, each control or bidi character a titled ``<span class="ctl">`` badge."""
    if text is None:
        return Markup("")
    parts: list[str] = []
    last = 0
    for match in CONTROL_PATTERN.finditer(text):
        parts.append(str(escape(text[last : match.start()])))
        char = match.group()
        parts.append(f'<span class="ctl" title="{escape(control_name(char))}">{escape(_marker(char))}</span>')
        last = match.end()
    parts.append(str(escape(text[last:])))
    return Markup("".join(parts))


def clip(text: str | None, limit: int, total: int | None = None) -> str:
    """Returns `text` cut to `limit` characters with a note of how many were left out (`total`: full length)."""
    if text is None:
        return ""
    full = len(text) if total is None else total
    if full <= limit and len(text) <= limit:
        return text
    return text[:limit] + f"… ({full - min(limit, len(text)):,} more characters)"


def finalize(value: object) -> object:
    """Jinja `finalize` hook: returns strings with control characters revealed; markup and non-strings as given."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return reveal_plain(value)
    return value
