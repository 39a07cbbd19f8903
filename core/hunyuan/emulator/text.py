"""Pure text helpers of the emulator: fault markers, role rules, deterministic replies.

Everything here is a pure function of its arguments so that both wire formats (OpenAI and
native) fabricate byte-for-byte the same reply, usage and chunking for the same request.

Reply contract (shared with the client helper and the demo)::

    Turn N. You first said: "<first>". You just said: "<latest>". System: "<persona>".

where ``<first>``/``<latest>`` are the first/latest user messages (N counts user messages).
Quoted texts are marker-free, whitespace-collapsed and at most 60 (persona: 40) characters
(longer ones end in ``…``); ``System: "none"`` when there is no system message.
``[[long=N]]`` pads the reply with filler words until it is about N tokens.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.hunyuan.emulator.faults import parse_fault_spec
from core.tokens import estimate_tokens, is_cjk

__all__ = [
    "MAX_LONG",
    "NOTE",
    "ROLE_ORDER_MESSAGE",
    "Markers",
    "build_reply",
    "parse_markers",
    "role_order_ok",
    "split_chunks",
    "split_tokens",
    "strip_markers",
    "truncate_to_tokens",
]

NOTE = "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记"

# The legacy endpoint's message for error 1001 (reference §4.3, quoted by the brief verbatim).
ROLE_ORDER_MESSAGE = (
    "messages 中 user（tool） 和 assistant 角色需交替出现（一问一答），"
    "以 user 提问开始，user（tool）提问结束…"
)

MAX_LONG = 131_072

_FAULT_RE = re.compile(r"\[\[fault:([A-Za-z0-9_]+)(?:=([^\]]*))?\]\]")
_LONG_RE = re.compile(r"\[\[long=(\d+)\]\]")
_FILLER = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


@dataclass(frozen=True, slots=True)
class Markers:
    """What a request's markers asked for: ``faults`` (name → value or ``""``), ``long`` tokens."""

    faults: Mapping[str, str]
    long: int | None = None


def parse_markers(text: str) -> Markers:
    """Find ``[[fault:NAME(=VALUE)]]`` and ``[[long=N]]`` markers in ``text``.

    Unknown fault names and malformed latencies are ignored (a chat user can type anything).
    """
    faults: dict[str, str] = {}
    for m in _FAULT_RE.finditer(text):
        try:
            name, value = parse_fault_spec(m.group(0)[8:-2])
        except ValueError:
            continue
        faults[name] = value
    longs = _LONG_RE.findall(text)
    # Capped at the largest real output budget (hy3-preview: 128k) to bound the work per reply.
    return Markers(faults=faults, long=min(int(longs[-1]), MAX_LONG) if longs else None)


def strip_markers(text: str) -> str:
    """``text`` without any marker, surrounding whitespace trimmed."""
    return _LONG_RE.sub("", _FAULT_RE.sub("", text)).strip()


def role_order_ok(roles: Sequence[str]) -> bool:
    """Hunyuan's ordering rules exactly as reference §3.1 states them.

    ``system`` optional and only first; then turns alternate starting and ending with a user
    turn, where a user turn is one ``user`` message or a run of consecutive ``tool`` messages.
    Unknown roles fail.
    """
    body = list(roles)
    if body and body[0] == "system":
        body = body[1:]
    turns: list[str] = []
    for i, role in enumerate(body):
        if role == "tool":
            if i > 0 and body[i - 1] == "tool":
                continue  # a run of tool results is one user-side turn
            turns.append("user")
        elif role in ("user", "assistant"):
            turns.append(role)
        else:
            return False
    if not turns:
        return False
    return all(t == ("user" if i % 2 == 0 else "assistant") for i, t in enumerate(turns)) and (
        turns[-1] == "user"
    )


def _quote(text: str, limit: int) -> str:
    flat = " ".join(strip_markers(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose ``estimate_tokens`` is at most ``limit``."""
    if limit <= 0:
        return ""
    cjk = other = 0
    for i, ch in enumerate(text):
        if ord(ch) >= 0x1100 and is_cjk(ch):
            cjk += 1
        else:
            other += 1
        if math.ceil(cjk / 1.8 + other / 3) > limit:
            return text[:i]
    return text


def build_reply(messages: Sequence[tuple[str, str]], *, long: int | None = None) -> str:
    """The deterministic assistant reply for ``messages`` (``(role, text)`` pairs).

    See the module docstring for the template. ``long`` pads with filler words to about that
    many tokens (or cuts the sentence down when it is already longer).
    """
    users = [text for role, text in messages if role == "user"]
    system = next((text for role, text in messages if role == "system"), "")
    first = _quote(users[0], 60) if users else ""
    latest = _quote(users[-1], 60) if users else ""
    persona = _quote(system, 40) if system.strip() else "none"
    reply = (
        f'Turn {len(users)}. You first said: "{first}". You just said: "{latest}". '
        f'System: "{persona}".'
    )
    if long is None:
        return reply
    if estimate_tokens(reply) >= long:
        return truncate_to_tokens(reply, long)
    parts = [reply]
    size = len(reply)
    # Filler is ASCII (3 chars per token), so the padded length is predictable; the final
    # check below makes the estimate exact.
    target = len(reply) + 3 * (long - estimate_tokens(reply)) + 8
    i = 0
    while size < target:
        word = _FILLER[i % len(_FILLER)]
        parts.append(word)
        size += len(word) + 1
        i += 1
    return truncate_to_tokens(" ".join(parts), long)


def split_chunks(text: str) -> list[str]:
    """Split ``text`` into stream deltas at word boundaries; ``"".join`` gives ``text`` back.

    Short replies give one word per chunk (several chunks even for a one-line reply); long ones
    up to four words per chunk.
    """
    if not text:
        return []
    words = re.findall(r"\s*\S+", text)
    tail = text[len("".join(words)) :]
    if tail:
        if words:
            words[-1] += tail
        else:
            words = [tail]
    size = max(1, min(4, len(words) // 8))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def split_tokens(text: str) -> list[str]:
    """``text`` cut into ``estimate_tokens(text)`` contiguous, non-empty pieces (GetTokenCount)."""
    n = estimate_tokens(text)
    if n == 0:
        return []
    bounds = [i * len(text) // n for i in range(n + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(n)]
