"""What users see on Telegram for scripted reply streams (BaseAdapter policy + Telegram
primitives + real PTB + the fake Bot API): splitting (catalogue 12), retraction, images,
regenerate, and the Bot API cost of a streamed 2,000-character answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fakes.telegram import BOT_USERNAME, FakeTelegram, MemoryInbox, utf16_len

from adapters.telegram.app import TelegramAdapter, TelegramOptions
from core.types import (
    Button,
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
)

Script = Callable[[Inbound], Sequence[ReplyEvent]]


@dataclass
class Scripted:
    """A stand-in core: yields the events ``script(inbound)`` returns, pausing ``gap`` seconds
    between events (a model streaming)."""

    script: Script
    gap: float = 0.0

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        for event in self.script(inbound):
            if self.gap:
                await asyncio.sleep(self.gap)
            yield event


@asynccontextmanager
async def bot(
    script: Script, *, gap: float = 0.0
) -> AsyncIterator[tuple[FakeTelegram, MemoryInbox]]:
    async with FakeTelegram() as tg:
        inbox = MemoryInbox()
        options = TelegramOptions(
            token=tg.token, base_url=tg.base_url, poll_timeout=1, register_commands=False
        )
        async with TelegramAdapter(
            conversation=Scripted(script, gap), inbox=inbox, options=options
        ):
            yield tg, inbox


async def ask(tg: FakeTelegram, inbox: MemoryInbox, **kw: Any) -> dict[str, Any]:
    update = tg.send_text(**kw)
    await inbox.wait_done(update["update_id"])
    return update


def streamed(text: str, steps: int) -> list[ReplyEvent]:
    size = max(1, len(text) // steps)
    events: list[ReplyEvent] = [Typing()]
    for end in range(size, len(text), size):
        events.append(Partial(text=text[:end], delta=text[end - size : end]))
    events.append(Final(text=text))
    return events


async def test_long_answers_split_within_4096_utf16_units_each_part_well_formed() -> None:
    code = "```python\n" + "\n".join(f"print({i})  # 👩‍👩‍👧" for i in range(300)) + "\n```"
    cases = {
        1: "word " * 2000,  # 10k characters
        2: "😀" * 5000,  # 10k UTF-16 units
        3: "汉字𠀀" * 2500,  # CJK with astral characters
        4: "Intro paragraph.\n\n" + code + "\n\nThe end.",
    }
    async with bot(lambda i: [Typing(), Final(text=cases[int(i.key.chat)])]) as (tg, inbox):
        for chat in cases:
            await ask(tg, inbox, chat_id=chat, text="long please")
        for chat, text in cases.items():
            parts = tg.bot_messages(chat)
            assert len(parts) >= 2, chat
            for part in parts:
                assert 0 < utf16_len(part["text"]) <= 4096
                for entity in part.get("entities", []):
                    assert entity["offset"] + entity["length"] <= utf16_len(part["text"])
            joined = "".join(p["text"] for p in parts)
            if chat in (1, 2, 3):
                assert joined.replace("\n", "").replace(" ", "") == text.replace(" ", "")
        # The code block is split into parts that are each a code block (pre entity).
        code_parts = [p for p in tg.bot_messages(4) if "print(" in p["text"]]
        assert len(code_parts) >= 2
        assert all(any(e["type"] == "pre" for e in p.get("entities", [])) for p in code_parts)


async def test_streamed_2000_character_answer_costs_at_most_12_calls() -> None:
    text = " ".join(f"word{i}" for i in range(400))[:2000]
    async with bot(lambda i: streamed(text, 60), gap=0.05) as (tg, inbox):
        # A private chat streams through drafts, then one sendMessage with the whole text.
        before = len(tg.calls)
        await ask(tg, inbox, chat_id=7, text="stream")
        calls = [c for c in tg.calls[before:] if c.method != "getUpdates"]
        assert tg.texts(7) == [text]
        drafts = tg.calls_of("sendMessageDraft", chat_id=7)
        assert len(drafts) >= 2  # it did stream
        assert len({c.params["draft_id"] for c in drafts}) == 1  # one draft, animated
        assert all(text.startswith(c.params["text"]) for c in drafts)
        assert tg.calls_of("editMessageText", chat_id=7) == []
        (sent,) = tg.calls_of("sendMessage", chat_id=7)
        assert sent.params["text"] == text and calls.index(sent) > calls.index(drafts[-1])
        assert len(calls) <= 12, [c.method for c in calls]

        # A group streams by editing its message, within the same budget.
        before = len(tg.calls)
        await ask(tg, inbox, chat_id=-107, text=f"@{BOT_USERNAME} stream")
        calls = [c for c in tg.calls[before:] if c.method != "getUpdates"]
        assert tg.texts(-107) == [text]
        assert tg.calls_of("sendMessageDraft", chat_id=-107) == []
        assert len(tg.calls_of("editMessageText", chat_id=-107)) >= 1  # it did stream
        assert len(calls) <= 12, [c.method for c in calls]


async def test_a_server_without_drafts_streams_by_edits_and_delivers_complete(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = " ".join(f"word{i}" for i in range(400))[:2000]
    async with bot(lambda i: streamed(text, 60), gap=0.05) as (tg, inbox):
        tg.unsupported.add("sendMessageDraft")  # an older self-hosted Bot API server
        with caplog.at_level("WARNING", logger="adapters.base"):
            await ask(tg, inbox, chat_id=11, text="stream")
        (off,) = [r.getMessage() for r in caplog.records if "drafts are off" in r.getMessage()]
        assert "not supported by the server" in off and tg.token not in off
        assert [c.status for c in tg.calls if c.method == "sendMessageDraft"] == [404]
        assert tg.texts(11) == [text]  # complete
        assert len(tg.calls_of("editMessageText", chat_id=11)) >= 1  # streamed by edits
        # The adapter does not try drafts again.
        await ask(tg, inbox, chat_id=12, text="stream")
        assert tg.texts(12) == [text]
        assert len([c for c in tg.calls if c.method == "sendMessageDraft"]) == 1


async def test_a_draft_with_formatting_carries_entities_and_the_answer_is_sent_formatted() -> None:
    script = [
        Typing(),
        Partial(text="**bold** start", delta="**bold** start"),
        Final(text="**bold** start and end"),
    ]
    async with bot(lambda i: script, gap=0.05) as (tg, inbox):
        tg.fail("sendMessageDraft", "parse")  # Telegram refuses the entities once
        await ask(tg, inbox, chat_id=13, text="hi")
        drafts = [c for c in tg.calls if c.method == "sendMessageDraft"]
        assert [c.status for c in drafts] == [400, 200]
        assert drafts[0].params["entities"][0]["type"] == "bold"
        assert drafts[0].params["text"] == "bold start"
        assert "entities" not in drafts[1].params  # the plain-text fallback
        (message,) = tg.bot_messages(13)
        assert message["text"] == "bold start and end" and message["entities"][0]["type"] == "bold"


async def test_retract_replaces_what_was_shown() -> None:
    script = [Typing(), Partial(text="bad words", delta="bad words"), Retract(notice="Withdrawn.")]
    async with bot(lambda i: script) as (tg, inbox):
        await ask(tg, inbox, chat_id=8, text="hi")
        assert tg.texts(8) == ["Withdrawn."]


async def test_image_status_then_photo_with_capped_caption() -> None:
    caption = "A red fox — " + "prompt " * 300 + "\nAI-generated"
    script = [
        ImageQueued(position=2),
        ImageQueued(position=1),
        ImageRunning(),
        ImageReady(data=b"\x89PNG\r\n\x1a\nfake", mime="image/png", caption=caption),
    ]
    async with bot(lambda i: script) as (tg, inbox):
        await ask(tg, inbox, chat_id=-100, text="/image fox", thread_id=5)
        (photo,) = tg.photos
        assert utf16_len(photo["caption"]) <= 1024 and photo["caption"].endswith("AI-generated")
        assert tg.calls_of("sendChatAction", chat_id=-100)[-1].params["action"] == "upload_photo"
        # The status message was edited in place, then removed; only the photo remains.
        assert tg.calls_of("editMessageText", chat_id=-100)
        assert [m.get("caption") for m in tg.bot_messages(-100)] == [photo["caption"]]
        sent = tg.calls_of("sendPhoto")[0]
        assert sent.params["message_thread_id"] == 5


async def test_regenerate_edits_the_pressed_answer_and_buttons_come_back() -> None:
    buttons = (
        Button(action="regenerate", label="Regenerate", payload="tok1"),
        Button(action="new_chat", label="New chat", payload="tok1"),
    )

    def script(inbound: Inbound) -> list[ReplyEvent]:
        if inbound.action is not None:
            return [Typing(), Final(text="second answer", buttons=buttons)]
        return [Typing(), Final(text="first answer", buttons=buttons)]

    async with bot(script) as (tg, inbox):
        await ask(tg, inbox, chat_id=9, text="hi")
        (shown,) = tg.bot_messages(9)
        keyboard = shown["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in keyboard] == ["Regenerate", "New chat"]
        press = tg.push(
            tg.callback_update(chat_id=9, message=shown, data=keyboard[0]["callback_data"])
        )
        await inbox.wait_done(press["update_id"])
        assert tg.answered_callbacks == [press["callback_query"]["id"]]
        assert tg.texts(9) == ["second answer"]  # edited in place, not sent anew
        assert len(tg.calls_of("sendMessage", chat_id=9)) == 1
