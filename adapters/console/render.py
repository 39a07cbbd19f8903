"""Pure helpers of the console adapter: script-line parsing, file names, terminal styling.

No I/O here, so every rule is testable without a terminal.

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
from dataclasses import dataclass

__all__ = [
    "ScriptLine",
    "dim",
    "extension_for",
    "parse_script_line",
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
