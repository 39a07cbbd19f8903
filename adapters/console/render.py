"""Pure helpers of the console adapter: script-line parsing, file names, terminal styling.

No I/O here, so every rule is testable without a terminal.

:func:`printable` is applied to every piece of user- or model-derived text the console prints
(the echo of what was typed, user names, answers, captions), so that nobody who can send text
can drive the operator's terminal (issue 7, item 9).

Script language (one message per line, used by ``hybot demo --script``):

==================  =====================================================================
``text``            ``text`` from the console user (``me`` by default)
``@name text``      ``text`` from user ``name``
``& <line>``        start ``<line>`` (which may itself be ``@name text``) in the background
``!wait``           wait until every background message has been answered
``# ...``, blank    ignored
==================  =====================================================================
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "ScriptLine",
    "dim",
    "extension_for",
    "parse_script_line",
    "printable",
]

_MIME_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}

_USER_RE = re.compile(r"@([\w.-]+)(?:\s+(.*))?\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ScriptLine:
    """One parsed script line. ``wait``: the ``!wait`` directive (other fields unused);
    ``quit``: the ``!quit`` directive (interactive mode); otherwise a message ``text`` from
    ``user`` (``""`` = the console's own user), run in the background when ``background``."""

    text: str = ""
    user: str = ""
    background: bool = False
    wait: bool = False
    quit: bool = False


def parse_script_line(line: str) -> ScriptLine | None:
    """Parse one line; ``None`` for blank lines and ``#`` comments.

    ``@name`` without text yields a message with empty ``text`` (the core ignores empty chat
    turns), so a typo never silently becomes a message from the wrong user.
    """
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped == "!wait":
        return ScriptLine(wait=True)
    if stripped == "!quit":
        return ScriptLine(quit=True)
    background = False
    if stripped.startswith("& "):
        background = True
        stripped = stripped[2:].strip()
    user = ""
    match = _USER_RE.match(stripped)
    if match:
        user = match.group(1)
        stripped = (match.group(2) or "").strip()
    return ScriptLine(text=stripped, user=user, background=background)


def extension_for(mime: str) -> str:
    """File extension (with the dot) for an image MIME type; ``.bin`` when unknown."""
    return _MIME_EXTENSIONS.get(mime.split(";", 1)[0].strip().lower(), ".bin")


def dim(text: str, *, color: bool) -> str:
    """``text`` in the terminal's dim style when ``color``; unchanged otherwise."""
    return f"\x1b[2m{text}\x1b[0m" if color else text


_KEEP = frozenset("\n\t\u200c\u200d")  # newlines and tabs mean something; joiners shape text
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x20:
        return chr(0x2400 + cp)  # the Control Pictures block: ESC → ␛, NUL → ␀, CR → ␍
    if cp == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{cp:04X}>"


def _harmful(ch: str) -> bool:
    if ch in _KEEP:
        return False
    if ch in _BIDI:
        return True
    # Cc: C0/C1 controls (ESC, CSI, OSC starters); Cs: lone surrogates (cannot be encoded);
    # Cf: invisible format characters; Zl/Zp: line and paragraph separators.
    return unicodedata.category(ch) in ("Cc", "Cs", "Cf", "Zl", "Zp")


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: control characters (C0 as Control Pictures such
    as ``␛``, DEL as ``␡``, C1 as ``<U+009B>``), bidirectional overrides and isolates,
    invisible format characters, line/paragraph separators and lone surrogates become visible
    placeholders; newlines, tabs and the zero-width (non-)joiners that shape emoji and scripts
    are kept. The mapping is per character, so ``printable(a + b) == printable(a) +
    printable(b)``."""
    if text.isprintable():
        return text  # the common case (one C-level scan): no Cc, Cf, Cs, Zl or Zp at all
    return "".join(_visible(ch) if _harmful(ch) else ch for ch in text)
