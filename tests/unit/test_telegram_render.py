"""The Telegram primitives against the fake Bot API, through the real PTB ``Bot``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes.telegram import BOT_ID, BOT_USERNAME, FakeTelegram
from telegram import Bot, Update

from adapters.base import MessageRef
from adapters.telegram.convert import BotIdentity, to_inbound, utf16_len
from adapters.telegram.render import SendWindow, TelegramPrimitives, format_markdown
from core.errors import PlatformError, PlatformRetryAfter
from core.types import Button, Inbound

ME = BotIdentity(id=BOT_ID, username=BOT_USERNAME)
GROUP = -100777


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def prims(fake: FakeTelegram) -> AsyncIterator[TelegramPrimitives]:
    async with Bot(fake.token, base_url=fake.base_url) as bot:
        yield TelegramPrimitives(bot=bot)


def inbound(fake: FakeTelegram, **kw: object) -> Inbound:
    upd = Update.de_json(fake.message_update(**kw), None)
    assert upd is not None
    result = to_inbound(upd, me=ME)
    assert result is not None
    return result


async def test_markdown_goes_as_entities_never_parse_mode(
    fake: FakeTelegram, prims: TelegramPrimitives
) -> None:
    hostile = "**bold** *unbalanced _md [x](y) 1.5-2! <b> `code`"
    ref = await prims.send_text(inbound(fake, chat_id=42, text="hi"), hostile)
    (call,) = fake.calls_of("sendMessage")
    assert "parse_mode" not in call.params
    assert {"type": "bold", "offset": 0, "length": 4} in call.params["entities"]
    assert call.params["text"].startswith("bold ")
    assert ref == MessageRef(chat="42", id=call_id(fake, 42))


def call_id(fake: FakeTelegram, chat: int) -> str:
    return str(fake.bot_messages(chat)[-1]["message_id"])


async def test_parse_error_falls_back_to_plain_text(
    fake: FakeTelegram, prims: TelegramPrimitives
) -> None:
    fake.fail("sendMessage", "parse")
    await prims.send_text(inbound(fake, chat_id=42, text="hi"), "**bold** text")
    failed, ok = [c for c in fake.calls if c.method == "sendMessage"]
    assert failed.status == 400 and ok.status == 200
    assert "entities" not in ok.params and ok.params["text"] == "**bold** text"
    assert fake.texts(42) == ["**bold** text"]
    ref = MessageRef(chat="42", id=call_id(fake, 42))
    fake.fail("editMessageText", "parse")
    await prims.edit_text(ref, "**new** text")
    assert fake.texts(42) == ["**new** text"]


async def test_edit_not_modified_is_success(fake: FakeTelegram, prims: TelegramPrimitives) -> None:
    ref = await prims.send_text(inbound(fake, chat_id=42, text="hi"), "same")
    await prims.edit_text(ref, "same")
    statuses = [c.status for c in fake.calls if c.method == "editMessageText"]
    assert statuses == [400]
    fake.fail("editMessageText", "not_modified")
    await prims.edit_text(ref, "changed")


async def test_errors_are_translated(fake: FakeTelegram, prims: TelegramPrimitives) -> None:
    msg = inbound(fake, chat_id=42, text="hi")
    fake.fail("sendMessage", "429", retry_after=3)
    with pytest.raises(PlatformRetryAfter) as retry:
        await prims.send_text(msg, "x")
    assert retry.value.retry_after == 3.0
    fake.fail("sendMessage", "blocked")
    with pytest.raises(PlatformError) as blocked:
        await prims.send_text(msg, "x")
    assert "blocked" in str(blocked.value) and fake.token not in str(blocked.value)
    fake.fail("sendChatAction", "server")
    with pytest.raises(PlatformError):
        await prims.send_typing(msg)
    await prims.delete(MessageRef(chat="42", id="123456"))  # already gone: fine


async def test_group_answer_replies_in_topic_with_buttons(
    fake: FakeTelegram, prims: TelegramPrimitives
) -> None:
    msg = inbound(fake, chat_id=GROUP, text=f"@{BOT_USERNAME} hi", thread_id=77)
    buttons = (
        Button(action="regenerate", label="Regenerate", payload="t1"),
        Button(action="new_chat", label="New chat", payload="t1"),
    )
    ref = await prims.send_text(msg, "answer", buttons=buttons)
    assert ref.thread == "77"
    (call,) = fake.calls_of("sendMessage")
    assert call.params["message_thread_id"] == 77
    assert call.params["reply_parameters"]["message_id"] == int(msg.message_id)
    keyboard = call.params["reply_markup"]["inline_keyboard"]
    assert [b["callback_data"] for b in keyboard[0]] == ["r:t1", "n:t1"]
    await prims.send_typing(msg, action="upload_photo")
    (typing,) = fake.calls_of("sendChatAction")
    assert typing.params["action"] == "upload_photo" and typing.params["message_thread_id"] == 77


async def test_private_notice_in_group_goes_to_dm_or_falls_back(
    fake: FakeTelegram, prims: TelegramPrimitives
) -> None:
    msg = inbound(fake, chat_id=GROUP, text="/usage", user_id=55)
    ref = await prims.send_text(msg, "your usage", private=True)
    assert ref.chat == "55"
    fake.fail("sendMessage", "blocked", chat_id=55)
    ref2 = await prims.send_text(msg, "your usage", private=True)
    assert ref2.chat == str(GROUP)


async def test_image_caption_is_capped(fake: FakeTelegram, prims: TelegramPrimitives) -> None:
    msg = inbound(fake, chat_id=42, text="/image fox")
    await prims.send_image(msg, b"\x89PNG fake", "image/png", "😀" * 600)
    (photo,) = fake.photos
    assert utf16_len(photo["caption"]) <= 1024


def test_measure_counts_formatted_utf16() -> None:
    prims = TelegramPrimitives(bot=Bot("1:x"))
    assert prims.measure("**ab**") == 6  # the source bound: the fallback must fit too
    assert prims.measure("---") >= 3
    assert prims.measure("😀") == 2
    assert format_markdown("") == ("", ())


def test_angle_brackets_are_text_not_dropped_html() -> None:
    # The core's usage lines and models writing about markup keep every word.
    plain, entities = format_markdown("/ask <question> — **Ask** a<b>c `<i>x</i>` ||hid||")
    assert plain == "/ask <question> — Ask a<b>c <i>x</i> hid"
    assert [e.type for e in entities] == ["bold", "code", "spoiler"]


async def test_send_window_waits_for_room() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    window = SendWindow(limit=2, period=60.0, clock=lambda: now[0], sleep=sleep)
    await window.acquire()
    now[0] = 10.0
    await window.acquire()
    assert slept == []
    await window.acquire()  # the third send waits until the first leaves the window
    assert slept == [50.0]


async def test_group_sends_keep_to_20_per_minute(fake: FakeTelegram) -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async with Bot(fake.token, base_url=fake.base_url) as bot:
        prims = TelegramPrimitives(bot=bot, clock=lambda: now[0], sleep=sleep)
        msg = inbound(fake, chat_id=GROUP, text="/help")
        for _ in range(20):
            await prims.send_text(msg, "x")
        dm = inbound(fake, chat_id=42, text="hi")
        await prims.send_text(dm, "private chats are not held back")
        assert slept == []  # 21 sends at one instant fit the overall 30 per second
        await prims.send_text(msg, "the 21st in the group")
        assert slept == [60.0]  # waits until the group's first send leaves the minute
    assert len(fake.calls_of("sendMessage", chat_id=GROUP)) == 21
