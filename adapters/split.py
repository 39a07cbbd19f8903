"""Splitting a Markdown text into messages a platform accepts, measured in its units.

Pure functions, no I/O: :class:`~adapters.base.BaseAdapter` uses them to cut a streamed or
final answer into parts of at most ``AdapterLimits.max_text_units`` (measured with the
adapter's ``measure``) and to cut an image caption to ``caption_units``; they are importable
from :mod:`adapters.base` too.

Boundaries are preferred in this order: paragraph, line, word, grapheme cluster, code point (a
surrogate pair is never split). A ``` code block cut by a boundary is closed at the end of one
part and reopened, with its language, in the next (:func:`plan_parts`).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MIN_TEXT_UNITS",
    "TextPart",
    "cut_caption",
    "cut_text",
    "measure_units",
    "plan_parts",
    "split_text",
]

MIN_TEXT_UNITS = 64
"""The smallest ``max_text_units`` / ``caption_units`` an adapter may declare (room for a code
fence closed at the end of one part and reopened in the next, plus text)."""


def measure_units(text: str, unit: Literal["utf16", "chars"]) -> int:
    """``len(text)`` in ``unit``: code points, or UTF-16 code units (a character outside the
    Basic Multilingual Plane counts 2; a lone surrogate counts 1)."""
    if unit == "chars":
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass(frozen=True, slots=True)
class TextPart:
    """One message's worth of a split text: ``body`` is a slice of the original text;
    ``reopen`` (a fence line and newline) and ``close`` (a newline, when needed, and a fence)
    are inserted so that a code block cut by the split is closed in one part and reopened,
    with its language, in the next."""

    body: str
    reopen: str = ""
    close: str = ""

    @property
    def text(self) -> str:
        return self.reopen + self.body + self.close


_OPEN_FENCE = re.compile(r" {0,3}(`{3,})([^`]*)")
_CLOSE_FENCE = re.compile(r" {0,3}(`{3,})[ \t\r]*")
_ZWJ = "\u200d"


@dataclass(frozen=True, slots=True)
class _Fence:
    ticks: str  # the backticks that opened it (a closing fence needs at least as many)
    info: str  # the language / info string, stripped


class _Scan:
    """Line-by-line code-fence state of a text (CommonMark backtick fences)."""

    def __init__(self, text: str) -> None:
        self.starts: list[int] = []
        self.before: list[_Fence | None] = []  # the fence open before each line
        self.no_split: set[int] = set()  # indices a part must not end at
        self.length = len(text)
        self.max_ticks = 0  # the longest opening fence (the worst closing fence to insert)
        state: _Fence | None = None
        pos = 0
        while pos < len(text):
            nl = text.find("\n", pos)
            end = len(text) if nl < 0 else nl + 1
            line = text[pos:end].rstrip("\n")
            self.starts.append(pos)
            self.before.append(state)
            if state is None:
                m = _OPEN_FENCE.fullmatch(line)
                if m:
                    state = _Fence(m.group(1), m.group(2).strip())
                    self.max_ticks = max(self.max_ticks, len(state.ticks))
                    # Not inside the fence line, nor right after it (an empty code block).
                    self.no_split.update(range(pos + 1, end + 1))
            else:
                m = _CLOSE_FENCE.fullmatch(line)
                if m and len(m.group(1)) >= len(state.ticks):
                    state = None
                    self.no_split.update(range(pos + 1, pos + len(line) + 1))
            pos = end
        self.end_state = state

    def state_at(self, index: int) -> _Fence | None:
        """The fence open after ``text[:index]`` (split points are never inside a fence
        line, so the state before the line holding ``index`` is the answer)."""
        if index >= self.length:
            return self.end_state
        return self.before[bisect.bisect_right(self.starts, index) - 1]


def _is_mark(ch: str) -> bool:
    """Characters that belong to the character before them (never start a part with one)."""
    if unicodedata.combining(ch) or ch == _ZWJ:
        return True
    cp = ord(ch)
    return (
        0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequence
        or 0xDC00 <= cp <= 0xDFFF  # a low surrogate (the second half of a pair)
        or unicodedata.category(ch) in ("Mn", "Mc", "Me")
    )


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _codepoint_boundary(text: str, i: int) -> bool:
    """``i`` does not split a surrogate pair (text decoded with ``surrogatepass``)."""
    if i <= 0 or i >= len(text):
        return True
    return not (0xD800 <= ord(text[i - 1]) <= 0xDBFF and 0xDC00 <= ord(text[i]) <= 0xDFFF)


def _grapheme_boundary(text: str, i: int) -> bool:
    """An approximation of a grapheme-cluster boundary (UAX #29) good enough for splitting:
    not before a combining mark / joiner / selector / modifier, not after a joiner, not inside
    ``\\r\\n``, a surrogate pair or a flag (a pair of regional indicators)."""
    if i <= 0 or i >= len(text):
        return True
    before, after = text[i - 1], text[i]
    if _is_mark(after) or before == _ZWJ or (before == "\r" and after == "\n"):
        return False
    if not _codepoint_boundary(text, i):
        return False
    if _regional(before) and _regional(after):
        run = 0
        j = i - 1
        while j >= 0 and _regional(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0
    return True


def _boundary_kind(text: str, i: int) -> int:
    """How good a split before ``text[i]`` is: 0 paragraph, 1 line, 2 word, 3 grapheme,
    4 code point, 5 not allowed."""
    if not _codepoint_boundary(text, i):
        return 5
    if text[i - 1] == "\n":
        return 0 if i >= 2 and text[i - 2] == "\n" else 1
    if not _grapheme_boundary(text, i):
        return 4
    if text[i - 1] in " \t":
        return 2
    return 3


def plan_parts(text: str, limit: int, measure: Callable[[str], int]) -> list[TextPart]:
    """Split ``text`` into parts whose ``measure(part.text) <= limit``.

    Boundaries are chosen in this order of preference: after a blank line (paragraph), after a
    newline, after a space, between grapheme clusters, between code points (a surrogate pair
    is never split); a better kind of boundary in the last half of the room beats a worse one
    nearer its end. A ``` code block cut by a boundary is closed at the end of that part and
    reopened, with its language, at the start of the next, so no part but the last leaves a
    fence open (the last ends in the state the whole text ends in). The bodies concatenate to
    ``text`` exactly. ``measure`` must grow with the text (a longer prefix never measures less).
    Raises ``ValueError`` when ``limit < MIN_TEXT_UNITS``.
    """
    if limit < MIN_TEXT_UNITS:
        raise ValueError(f"limit must be at least {MIN_TEXT_UNITS}")
    scan = _Scan(text)
    parts: list[TextPart] = []
    worst_close = "\n" + "`" * scan.max_ticks if scan.max_ticks else ""
    pos = 0
    state: _Fence | None = None
    while pos < len(text):
        reopen = _reopen_line(state, limit, measure)
        rest = text[pos:]
        if measure(reopen + rest) <= limit:
            parts.append(TextPart(rest, reopen))
            break
        # The furthest end that fits with the worst closing fence (binary search: measure grows).
        lo, hi = pos, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if measure(reopen + text[pos:mid] + worst_close) <= limit:
                lo = mid
            else:
                hi = mid - 1
        end = _best_boundary(text, scan, pos, lo)
        while True:
            part = _make_part(text, scan, pos, end, reopen)
            if measure(part.text) <= limit or end <= pos + 1:
                break
            end = _best_boundary(text, scan, pos, end - 1)  # pathological measure: shrink
        parts.append(part)
        state = scan.state_at(end)
        pos = end
    return parts


def _reopen_line(state: _Fence | None, limit: int, measure: Callable[[str], int]) -> str:
    if state is None:
        return ""
    line = f"{state.ticks}{state.info}\n"
    overhead = measure(line) + measure("\n" + state.ticks)
    if overhead > limit // 4:
        line = state.ticks + "\n"  # a long info string is dropped rather than crowd the text
    return line


def _make_part(text: str, scan: _Scan, pos: int, end: int, reopen: str) -> TextPart:
    body = text[pos:end]
    state = scan.state_at(end) if end < len(text) else None
    close = ""
    if state is not None:
        close = state.ticks if body.endswith("\n") else "\n" + state.ticks
    return TextPart(body, reopen, close)


def _best_boundary(text: str, scan: _Scan, pos: int, furthest: int) -> int:
    """The best split point in ``(pos, furthest]`` (see :func:`plan_parts`); always > pos."""
    furthest = min(furthest, len(text))
    if furthest <= pos:
        # Not even one character fits (a pathological measure): make progress anyway.
        step = 2 if not _codepoint_boundary(text, pos + 1) else 1
        return min(len(text), pos + step)
    half = pos + (furthest - pos) // 2
    best: dict[int, int] = {}
    for i in range(furthest, pos, -1):
        if i in scan.no_split:
            continue
        kind = _boundary_kind(text, i)
        if kind < 5 and kind not in best:
            best[kind] = i
            if kind == 0 and i > half:
                return i
    for kind in range(5):
        i = best.get(kind, 0)
        if i > half:
            return i
    for kind in range(5):
        if kind in best:
            return best[kind]
    # Only split points inside fence lines remain: any code point boundary will do.
    for i in range(furthest, pos, -1):
        if _codepoint_boundary(text, i):
            return i
    return furthest


def split_text(text: str, limit: int, measure: Callable[[str], int]) -> list[str]:
    """The texts of :func:`plan_parts` (one per message), without parts that are only
    whitespace (platforms refuse an empty message, and show nothing of it anyway); ``[text]``
    when every part is whitespace (``[""]`` for an empty text)."""
    texts = [part.text for part in plan_parts(text, limit, measure)]
    return [t for t in texts if t.strip()] or [text[:limit]]


def cut_text(text: str, limit: int, measure: Callable[[str], int]) -> str:
    """``text`` if it fits ``limit``, else its longest prefix (at a grapheme boundary) + "…"
    that does."""
    if measure(text) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid] + "…") <= limit:
            lo = mid
        else:
            hi = mid - 1
    end = lo
    while end > 0 and not _grapheme_boundary(text, end):
        end -= 1
    if end == 0:
        end = lo
        while end > 0 and not _codepoint_boundary(text, end):
            end -= 1
    return text[:end] + "…"


def cut_caption(caption: str, limit: int, measure: Callable[[str], int]) -> str:
    """Cut a caption to ``limit``, keeping its last line (the AI-generated mark) whole."""
    if measure(caption) <= limit:
        return caption
    head, sep, tail = caption.rpartition("\n")
    if sep and measure(tail) <= limit // 2:
        room = limit - measure("\n" + tail)
        return cut_text(head, room, measure) + "\n" + tail
    return cut_text(caption, limit, measure)
