"""Token estimation and Hunyuan role normalisation (pure functions, no I/O).

``estimate_tokens`` is the product's rule of thumb: 1 token ≈ 1.8 CJK characters ≈ 3 other
characters. Real counts come from a response's usage; this is for budgeting before a call and
for the emulator's fabricated usage, so both sides agree.

``normalize_messages`` enforces Hunyuan's ordering rules (reference §3.1): an optional system
message first, then strict user/assistant alternation that starts and ends with ``user``, and no
empty content. Violations are *repaired* rather than rejected: same-role neighbours are merged,
empty turns dropped, leading and trailing assistant turns dropped, later system messages folded
into the leading one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from core.types import ChatMessage

__all__ = ["estimate_tokens", "is_cjk", "normalize_messages", "valid_role_order"]

_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x30FF),  # CJK punctuation, Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Hangul compat, Kanbun, Katakana ext
    (0x3400, 0x4DBF),  # Ext A
    (0x4E00, 0x9FFF),  # Unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # Compatibility ideographs
    (0xFF00, 0xFFEF),  # Full-width forms
    (0x20000, 0x3FFFF),  # Ext B and later planes
)


# The same ranges as one character class, so counting runs in the regex engine (C) instead of
# a Python loop over every character: estimate_tokens runs several times per chat message.
_CJK_CLASS = re.compile(
    "[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in _CJK_RANGES) + "]"
)


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph, kana, hangul, CJK punctuation or full-width form."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def estimate_tokens(text: str) -> int:
    """Estimated tokens for ``text``: ``ceil(cjk/1.8 + other/3)``; 0 only for ``""``."""
    if not text:
        return 0
    cjk = 0 if text.isascii() else len(_CJK_CLASS.findall(text))
    other = len(text) - cjk
    return max(1, math.ceil(cjk / 1.8 + other / 3))


def valid_role_order(messages: Sequence[ChatMessage]) -> bool:
    """True if ``messages`` already satisfy Hunyuan's rules (what the emulator enforces)."""
    body = list(messages)
    if body and body[0].role == "system":
        body = body[1:]
    if not body or body[0].role != "user" or body[-1].role != "user":
        return False
    for i, msg in enumerate(body):
        if not msg.content.strip():
            return False
        expected = "user" if i % 2 == 0 else "assistant"
        if msg.role != expected:
            return False
    return True


def normalize_messages(messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    """Repair ``messages`` into Hunyuan's order (see module docstring).

    The result is ``[system?] user (assistant user)*``, or ``[system?]`` alone when no user
    content exists (callers must not send that). Content is never altered except by joining
    merged neighbours with a blank line.
    """
    system_parts: list[str] = []
    body: list[ChatMessage] = []
    for msg in messages:
        if not msg.content.strip():
            continue
        if msg.role == "system":
            system_parts.append(msg.content)
            continue
        if body and body[-1].role == msg.role:
            body[-1] = ChatMessage(msg.role, body[-1].content + "\n\n" + msg.content)
        else:
            body.append(msg)
    while body and body[0].role != "user":
        body.pop(0)
    while body and body[-1].role != "user":
        body.pop()
    out: list[ChatMessage] = []
    if system_parts:
        out.append(ChatMessage("system", "\n\n".join(system_parts)))
    out.extend(body)
    return out
