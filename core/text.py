"""Text hygiene for what users send (pure, no I/O).

- Lone UTF-16 surrogates are legal in JSON (``"\\ud800"``) and so in what platforms deliver,
  but cannot be encoded as UTF-8, so SQLite and HTTP would fail on them:
  :func:`scrub_surrogates` replaces each with U+FFFD.
- Text that is empty once invisible characters are removed is empty: :func:`is_blank` treats
  whitespace, control characters (``Cc``), format characters (``Cf``: zero-width spaces and
  joiners, direction marks, BOM) and the few letters that render as nothing (Hangul fillers,
  the braille blank) as invisible. A message of only those is no message; an image prompt of
  only those is no prompt.
- :func:`control_characters` finds control characters other than newline and tab (NUL, escape
  sequences), which have no place in a stored persona.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["control_characters", "is_blank", "scrub_surrogates"]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u17b4\u17b5")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Cs"})


def scrub_surrogates(value: str) -> str:
    """``value`` with every lone surrogate replaced by U+FFFD; all else kept as sent."""
    return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value


def _invisible(ch: str) -> bool:
    return ch.isspace() or ch in _BLANK_LETTERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: only whitespace, control and format characters."""
    return all(_invisible(ch) for ch in text)


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` other than newline, carriage return and tab."""
    return [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t"]
