"""Hostile text through the conversation core (issue 7): no traceback reaches a user, nothing
is charged for nothing.

Hypothesis builds messages from control characters, invisible characters, lone surrogates,
RTL overrides, 4-byte CJK and very long runs, with or without a command in front, and sends
each through ``Conversation.handle`` over the scripted fake model and a fresh SQLite store.
"""

from __future__ import annotations

import asyncio
import tempfile
import unicodedata
from pathlib import Path

from fakes.conversation import fake_core
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.config import AccessConfig, BotConfig
from core.types import Action, Failure, Final, ImageReady, Notice, Retract

CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.sampled_from(
    ["\x7f", "\x85", "\x1b[2J", "\x1b]0;pwned\x07", "\x00"]
)
INVISIBLE = st.sampled_from(
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u3164", "\u2800", "\u180e"]
)
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
RTL = st.sampled_from(["\u202e", "\u202d", "\u2066", "\u2067", "\u200f", "\u061c", "مرحبا"])
CJK4 = st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF)
PLAIN = st.sampled_from(["hello", "你好", " ", "\n", "a", "--size", "512x512", "@alice", "\"'"])
PIECE = st.one_of(CONTROL, INVISIBLE, SURROGATE, RTL, CJK4, PLAIN)
LONG = st.builds(lambda piece, n: piece * n, PIECE, st.integers(1_000, 120_000))
BLANK = st.lists(st.one_of(INVISIBLE, CONTROL, st.sampled_from([" ", "\t", "\u3000"])), min_size=1,
                 max_size=20).map("".join)  # fmt: skip
BODY = st.one_of(BLANK, st.lists(PIECE, max_size=40).map("".join), LONG)
PREFIX = st.sampled_from(
    ["", "/image ", "/image --style ", "/persona ", "/ask ", "/admin grant ", "/admin limit ",
     "/admin channel persona ", "/lang ", "/usage ", "/help@other ", "／help ", "/"]
)  # fmt: skip

CONFIG = BotConfig(access=AccessConfig(admins=("telegram:u1",)))


def shows_nothing(text: str) -> bool:
    """Independent of the core's rule: only whitespace, control and format characters and
    the letters that render as nothing."""
    return all(
        ch.isspace()
        or ch in "\u3164\u2800\u180e"
        or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp")
        for ch in text
    )


async def _run(prefix: str, body: str, in_group: bool) -> None:
    text = prefix + body
    with tempfile.TemporaryDirectory() as tmp:
        async with fake_core(Path(tmp), config=CONFIG) as c:
            kw = {"is_dm": False, "mentioned": True, "chat": "g"} if in_group else {}
            events = await c.send(text, **kw)
            shown = 0
            for event in events:
                for attr in ("text", "user_message", "notice", "caption"):
                    value = getattr(event, attr, None)
                    if isinstance(value, str):
                        assert "Traceback" not in value and 'File "' not in value, value
                if isinstance(event, Failure):
                    assert event.code != "internal", event
                    assert event.user_message
                if isinstance(event, Notice):
                    assert event.text
                if isinstance(event, (Final, ImageReady)):
                    shown += 1
                assert not isinstance(event, Retract)
            rows = await c.store.ledger()
            charged = [r for r in rows if r.outcome == "ok"]
            assert len(charged) == shown, (rows, events)  # nothing charged for nothing
            assert all(r.outcome != "reserved" for r in rows)  # every reservation settled
            if not shown:
                assert await c.counter() == 0 and await c.counter("images") == 0
            if prefix in ("", "/image ", "/ask ") and shows_nothing(body):
                # Empty once the invisible is removed: no model call, nothing charged.
                assert c.model.chat_calls == [] and c.model.image_calls == [], text
                assert rows == []
            # The core still answers afterwards.
            assert any(isinstance(e, Final) for e in await c.send("still there?"))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(prefix=PREFIX, body=BODY, in_group=st.booleans())
@example(prefix="/image ", body="\u200b\u2060\ufeff", in_group=False)
@example(prefix="/persona ", body="be nice\x00\x1b[2J", in_group=False)
@example(prefix="", body="x" * 1_000_000, in_group=False)
def test_hostile_text_never_shows_a_traceback_or_charges_for_nothing(
    prefix: str, body: str, in_group: bool
) -> None:
    asyncio.run(_run(prefix, body, in_group))


async def _press(kind: str, payload: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with fake_core(Path(tmp), config=CONFIG) as c:
            await c.send("a question")
            events = await c.send("", action=Action(kind, payload))  # type: ignore[arg-type]
            assert [type(e) for e in events] == [Notice], events  # stale: says so
            assert len(c.model.chat_calls) == 1
            assert [r.outcome for r in await c.store.ledger()] == ["ok"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["regenerate", "new_chat"]), payload=BODY)
def test_hostile_button_payloads_are_stale_presses(kind: str, payload: str) -> None:
    asyncio.run(_press(kind, payload))
