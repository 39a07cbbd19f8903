"""convert.to_inbound on real PTB ``Update.de_json`` payloads (issue 8, item 3)."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.telegram import BOT_ID, BOT_USERNAME, FakeTelegram
from telegram import Update

from adapters.telegram.convert import (
    BotIdentity,
    callback_data,
    migration,
    parse_callback_data,
    to_inbound,
)
from core.types import Action, Button, ConversationKey

ME = BotIdentity(id=BOT_ID, username=BOT_USERNAME)
WS = str(BOT_ID)
GROUP = -100123


def update(data: dict[str, Any]) -> Update:
    upd = Update.de_json(data, None)
    assert upd is not None
    return upd


@pytest.fixture
def tg() -> FakeTelegram:
    return FakeTelegram()  # used only for its payload builders


def convert(tg: FakeTelegram, **kw: Any) -> Any:
    scope = kw.pop("group_scope", "shared")
    return to_inbound(update(tg.message_update(**kw)), me=ME, group_scope=scope)


def test_private_chat_answers_everything(tg: FakeTelegram) -> None:
    data = tg.message_update(chat_id=42, text="hello there", user_id=42, language="zh-hans")
    inbound = to_inbound(update(data), me=ME)
    assert inbound is not None
    assert inbound.key == ConversationKey("telegram", WS, "42")
    assert inbound.is_dm
    assert inbound.text == "hello there"
    assert inbound.delivery_id == str(data["update_id"])
    assert inbound.message_id == str(data["message"]["message_id"])
    assert inbound.user_id == "42"
    assert inbound.bot_id == f"telegram:{BOT_ID}"
    assert inbound.language == "zh-hans"
    assert inbound.channel_id == "42"
    assert inbound.user_name == "user42"  # the @username: what admins type to name someone


def test_group_needs_mention_reply_or_command(tg: FakeTelegram) -> None:
    assert convert(tg, chat_id=GROUP, text="just chatting") is None
    plain = convert(tg, chat_id=GROUP, text=f"@{BOT_USERNAME} what is 2+2?")
    assert plain is not None and plain.mentioned and plain.text == "what is 2+2?"
    assert plain.key == ConversationKey("telegram", WS, str(GROUP))
    mid = convert(tg, chat_id=GROUP, text=f"hey @{BOT_USERNAME.upper()} there")
    assert mid is not None and mid.text == "hey there"
    bot_msg = {
        "message_id": 7,
        "date": 0,
        "chat": {"id": GROUP, "type": "supergroup"},
        "from": tg.bot_user,
        "text": "earlier answer",
    }
    reply = convert(tg, chat_id=GROUP, text="and then?", reply_to=bot_msg)
    assert reply is not None and reply.reply_to_bot and not reply.mentioned
    other = {**bot_msg, "from": tg.user(5)}
    assert convert(tg, chat_id=GROUP, text="and then?", reply_to=other) is None


def test_mention_is_an_entity_not_a_substring(tg: FakeTelegram) -> None:
    # Zero-width space after the name: Telegram marks no mention entity, neither do we.
    sneaky = f"@{BOT_USERNAME}\u200b hi"
    assert convert(tg, chat_id=GROUP, text=sneaky, entities=[]) is None
    # The name inside other text without a mention entity.
    assert convert(tg, chat_id=GROUP, text=f"mail me at x@{BOT_USERNAME}.com") is None
    # A mention entity of somebody else.
    assert convert(tg, chat_id=GROUP, text="@someone_else hi") is None
    # A text_mention of the bot (no username in the text) counts.
    ent = [{"type": "text_mention", "offset": 0, "length": 5, "user": tg.bot_user}]
    tm = convert(tg, chat_id=GROUP, text="Hybot, hi", entities=ent)
    assert tm is not None and tm.mentioned and tm.text == ", hi"


def test_commands_addressed_to_this_bot_only(tg: FakeTelegram) -> None:
    bare = convert(tg, chat_id=GROUP, text="/usage")
    assert bare is not None and bare.text == "/usage"
    ours = convert(tg, chat_id=GROUP, text=f"/image@{BOT_USERNAME} a red fox")
    assert ours is not None and ours.text == "/image a red fox"
    assert convert(tg, chat_id=GROUP, text="/image@other_bot a red fox") is None
    assert convert(tg, chat_id=42, text="/help@other_bot") is None
    dm = convert(tg, chat_id=42, text=f"/help@{BOT_USERNAME}")
    assert dm is not None and dm.text == "/help"


def test_text_mentions_resolve_to_ids(tg: FakeTelegram) -> None:
    text = "/grant Alice 1000"
    ent = [
        {"type": "bot_command", "offset": 0, "length": 6},
        {"type": "text_mention", "offset": 7, "length": 5, "user": tg.user(77, name="Alice")},
    ]
    inbound = convert(tg, chat_id=GROUP, text=text, entities=ent)
    assert inbound is not None
    assert inbound.mentions == ("telegram:77",)
    assert inbound.text == "/grant telegram:77 1000"
    # In chat text the name stays as written, the id is still listed.
    ent2 = [
        {"type": "mention", "offset": 0, "length": len(BOT_USERNAME) + 1},
        {
            "type": "text_mention",
            "offset": len(BOT_USERNAME) + 6,
            "length": 5,
            "user": tg.user(77, name="Alice"),
        },
    ]
    chat = convert(tg, chat_id=GROUP, text=f"@{BOT_USERNAME} ask Alice", entities=ent2)
    assert chat is not None and chat.text == "ask Alice" and chat.mentions == ("telegram:77",)


def test_utf16_offsets_with_emoji(tg: FakeTelegram) -> None:
    text = f"👩‍👩‍👧 @{BOT_USERNAME} 𠀀 hi"
    inbound = convert(tg, chat_id=GROUP, text=text)
    assert inbound is not None and inbound.mentioned
    assert inbound.text == "👩‍👩‍👧 𠀀 hi"


def test_forum_topics_are_separate_conversations(tg: FakeTelegram) -> None:
    topic_start = {
        "message_id": 55,
        "date": 0,
        "chat": {"id": GROUP, "type": "supergroup"},
        "from": tg.bot_user,
        "forum_topic_created": {"name": "t", "icon_color": 1},
    }
    a = convert(tg, chat_id=GROUP, text=f"@{BOT_USERNAME} hi", thread_id=55, reply_to=topic_start)
    b = convert(tg, chat_id=GROUP, text=f"@{BOT_USERNAME} hi", thread_id=56)
    assert a is not None and b is not None
    assert a.key == ConversationKey("telegram", WS, str(GROUP), "55")
    assert b.key.thread == "56"
    # The implicit reply to the topic's first message is not a reply to the bot.
    assert not a.reply_to_bot
    assert convert(tg, chat_id=GROUP, text="hi", thread_id=55, reply_to=topic_start) is None


def test_group_scope_per_user(tg: FakeTelegram) -> None:
    inbound = convert(tg, chat_id=GROUP, text="/help", user_id=5, group_scope="user")
    assert inbound is not None
    assert inbound.key == ConversationKey("telegram", WS, str(GROUP), "", "5")
    dm = convert(tg, chat_id=42, text="hi", group_scope="user")
    assert dm is not None and dm.key == ConversationKey("telegram", WS, "42")


def test_ignored_updates(tg: FakeTelegram) -> None:
    msg = tg.text_message(chat_id=42, text="edited")
    assert to_inbound(update({"update_id": 1, "edited_message": msg}), me=ME) is None
    bot = tg.text_message(chat_id=42, text="I am a bot", is_bot=True)
    assert to_inbound(update({"update_id": 2, "message": bot}), me=ME) is None
    service = tg.text_message(chat_id=GROUP, text="x")
    del service["text"]
    service["new_chat_members"] = [tg.user(8)]
    assert to_inbound(update({"update_id": 3, "message": service}), me=ME) is None
    post = {"message_id": 1, "date": 0, "chat": {"id": -1009, "type": "channel"}, "text": "p"}
    assert to_inbound(update({"update_id": 4, "channel_post": post}), me=ME) is None


def test_migrated_group_keeps_its_conversation(tg: FakeTelegram) -> None:
    old, new = -555, -100555
    service = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": old, "type": "group"},
        "from": tg.user(5),
        "migrate_to_chat_id": new,
    }
    assert migration(update({"update_id": 1, "message": service})) == (old, new)
    other = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": new, "type": "supergroup"},
        "from": tg.user(5),
        "migrate_from_chat_id": old,
    }
    assert migration(update({"update_id": 2, "message": other})) == (old, new)
    assert to_inbound(update({"update_id": 2, "message": other}), me=ME) is None
    data = tg.message_update(chat_id=new, text="/help")
    inbound = to_inbound(update(data), me=ME, chat_aliases={new: old})
    assert inbound is not None and inbound.key.chat == str(old)


def test_callback_query_becomes_an_action(tg: FakeTelegram) -> None:
    button = Button(action="regenerate", label="Regenerate", payload="t:123")
    data = callback_data(button)
    assert parse_callback_data(data) == Action(kind="regenerate", payload="t:123")
    assert parse_callback_data("garbage") is None
    shown = {
        "message_id": 5001,
        "date": 0,
        "chat": {"id": GROUP, "type": "supergroup"},
        "from": tg.bot_user,
        "text": "answer",
        "message_thread_id": 9,
        "is_topic_message": True,
    }
    upd = tg.callback_update(chat_id=GROUP, message=shown, data=data, user_id=5)
    inbound = to_inbound(update(upd), me=ME)
    assert inbound is not None
    assert inbound.action == Action(kind="regenerate", payload="t:123")
    assert inbound.message_id == "5001"
    assert inbound.text == ""
    assert inbound.key == ConversationKey("telegram", WS, str(GROUP), "9")
    assert inbound.delivery_id == str(upd["update_id"])
    foreign = tg.callback_update(chat_id=GROUP, message=shown, data="x")
    assert to_inbound(update(foreign), me=ME) is None
    with pytest.raises(ValueError):
        callback_data(Button(action="new_chat", label="x", payload="p" * 63))
