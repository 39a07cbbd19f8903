"""adapters.slack.convert: Slack payloads → Inbound (pure)."""

from __future__ import annotations

from typing import Any

from adapters.slack.convert import (
    SlackIdentity,
    SlackOptions,
    action_to_inbound,
    clean_text,
    event_to_inbound,
    slash_to_inbound,
)
from core.types import Action, ConversationKey

ME = SlackIdentity(team="T1", user_id="UBOT", bot_id="BBOT")


def body(**event: Any) -> dict[str, Any]:
    base = {"type": "message", "channel": "C1", "user": "U1", "ts": "100.1", "text": "hi"}
    base.update(event)
    return {"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "event": base}


def test_mention_in_channel_opens_a_thread_conversation() -> None:
    inb = event_to_inbound(body(type="app_mention", text="<@UBOT> hello <@U2|bob>"), me=ME)
    assert inb is not None
    assert inb.text == "hello slack:U2"
    assert inb.mentioned and not inb.is_dm and not inb.reply_to_bot
    assert inb.mentions == ("slack:U2",)
    assert inb.key == ConversationKey("slack", "T1", "C1", "100.1", "")
    assert inb.message_id == "100.1"
    assert inb.user_id == "U1"
    assert inb.bot_id == "slack:UBOT"


def test_app_mention_and_message_for_one_ts_convert_identically() -> None:
    a = event_to_inbound(body(type="app_mention", text="<@UBOT> hi"), me=ME)
    m = event_to_inbound(
        body(type="message", channel_type="channel", text="<@UBOT> hi") | {"event_id": "Ev2"},
        me=ME,
    )
    assert a is not None and m is not None
    assert a == m  # same delivery id, key and text: the inbox/claim handles it once
    assert a.delivery_id == "msg:T1:C1:100.1"


def test_mention_inside_a_thread_keys_by_the_thread_root() -> None:
    inb = event_to_inbound(body(text="<@UBOT> more", thread_ts="90.0", ts="101.0"), me=ME)
    assert inb is not None and inb.key.thread == "90.0" and inb.message_id == "101.0"


def test_thread_follow_up_without_mention() -> None:
    ev = body(text="and then?", thread_ts="90.0", ts="102.0", channel_type="channel")
    assert event_to_inbound(ev, me=ME) is None  # a thread the bot is not in
    inb = event_to_inbound(ev, me=ME, in_bot_thread=True)
    assert inb is not None and inb.reply_to_bot and not inb.mentioned
    assert inb.key.thread == "90.0"
    off = SlackOptions(thread_follow_ups=False)
    assert event_to_inbound(ev, me=ME, options=off, in_bot_thread=True) is None
    rooted = body(text="x", thread_ts="90.0", ts="103.0", parent_user_id="UBOT")
    assert event_to_inbound(rooted, me=ME) is not None


def test_per_user_scope_in_threads() -> None:
    inb = event_to_inbound(body(text="<@UBOT> hi"), me=ME, options=SlackOptions(group_scope="user"))
    assert inb is not None and inb.key.user == "U1"


def test_channel_chatter_is_ignored() -> None:
    assert event_to_inbound(body(text="just talking", channel_type="channel"), me=ME) is None


def test_dm_is_a_conversation_and_dm_threads_are_their_own() -> None:
    inb = event_to_inbound(body(channel="D1", channel_type="im", text="hello"), me=ME)
    assert inb is not None and inb.is_dm and inb.key == ConversationKey("slack", "T1", "D1")
    threaded = event_to_inbound(
        body(channel="D1", channel_type="im", text="x", thread_ts="5.0"), me=ME
    )
    assert threaded is not None and threaded.key.thread == "5.0"


def test_bots_self_edits_deletions_joins_are_ignored() -> None:
    ignored = [
        body(bot_id="B9", text="<@UBOT> hi"),
        body(user="UBOT", text="<@UBOT> echo"),
        body(subtype="message_changed", text="<@UBOT> edited"),
        body(subtype="message_deleted"),
        body(subtype="channel_join", text="<@U1> has joined"),
        body(subtype="bot_message", text="<@UBOT>"),
        body(type="reaction_added"),
        {"type": "event_callback", "event": "not a mapping"},
        body(channel=None, text="<@UBOT> x"),
        body(user=None, text="<@UBOT> x"),
    ]
    for b in ignored:
        assert event_to_inbound(b, me=ME) is None, b
    kept = body(subtype="thread_broadcast", text="<@UBOT> also to channel")
    assert event_to_inbound(kept, me=ME) is not None


def test_broadcasts_links_and_escapes_are_neutralised() -> None:
    text, mentioned, users = clean_text(
        "<!channel> <!here> <!subteam^S1|@devs> see <https://x.io|docs> <#C2|general> "
        "a &lt;b&gt; &amp; c <@UBOT>",
        bot_user="UBOT",
    )
    assert mentioned and users == ()
    assert "<!" not in text and "<" not in text.replace("<b>", "")
    assert "@\u2060channel" in text and "@\u2060here" in text and "@\u2060devs" in text
    assert "docs (https://x.io)" in text and "#general" in text
    assert "a <b> & c" in text


def test_mention_of_bot_with_zero_width_space_is_not_a_mention() -> None:
    text, mentioned, _ = clean_text("@UBOT\u200b hi", bot_user="UBOT")
    assert not mentioned and text == "@UBOT\u200b hi"


def slash(**kw: str) -> dict[str, str]:
    base = {
        "command": "/hy",
        "text": "",
        "user_id": "U1",
        "channel_id": "C1",
        "team_id": "T1",
        "trigger_id": "trig1",
        "response_url": "http://127.0.0.1/resp/1",
    }
    base.update(kw)
    return base


def test_slash_command_subcommands() -> None:
    cases = {
        "": "/help",
        "help": "/help",
        "image a red cat": "/image a red cat",
        "IMAGE --size 512x512 cat": "/image --size 512x512 cat",
        "quota": "/quota",
        "admin grant <@U2|bob> tokens 5": "/admin grant slack:U2 tokens 5",
        "what is the weather": "what is the weather",
    }
    for arg, expected in cases.items():
        inb = slash_to_inbound(slash(text=arg), me=ME)
        assert inb is not None and inb.text == expected, arg
    inb = slash_to_inbound(slash(text="quota"), me=ME)
    assert inb is not None
    assert inb.key == ConversationKey("slack", "T1", "C1", "", "U1")
    assert inb.delivery_id == "cmd:trig1" and inb.mentioned
    assert slash_to_inbound(slash(command="/other"), me=ME) is None
    renamed = SlackOptions(command="/ai")
    assert slash_to_inbound(slash(command="/ai", text="reset"), me=ME, options=renamed)
    assert slash_to_inbound(slash(trigger_id=""), me=ME) is None


def test_slash_commands_carry_the_command_name_as_prefix_and_messages_keep_the_slash() -> None:
    for arg in ("", "image --size 4000x4000 cat", "quota", "what is the weather"):
        inb = slash_to_inbound(slash(text=arg), me=ME)
        assert inb is not None and inb.command_prefix == "/hy ", arg
    renamed = slash_to_inbound(
        slash(command="/ai", text="quota"), me=ME, options=SlackOptions(command="/ai")
    )
    assert renamed is not None and renamed.command_prefix == "/ai "
    # A mention, a DM and a thread follow-up reach the core as typed: "/image" works there.
    mention = event_to_inbound(body(type="app_mention", text="<@UBOT> /help"), me=ME)
    dm = event_to_inbound(body(channel="D1", channel_type="im", text="/quota"), me=ME)
    follow = event_to_inbound(
        body(text="/usage", thread_ts="90.0", ts="102.0", channel_type="channel"),
        me=ME,
        in_bot_thread=True,
    )
    for inb in (mention, dm, follow):
        assert inb is not None and inb.command_prefix == "/" and inb.text.startswith("/")


def test_button_press_becomes_an_action() -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": "U1"},
        "team": {"id": "T1"},
        "channel": {"id": "C1"},
        "container": {
            "type": "message",
            "message_ts": "200.0",
            "channel_id": "C1",
            "thread_ts": "100.1",
        },
        "message": {"ts": "200.0", "thread_ts": "100.1"},
        "actions": [{"action_id": "hybot_regenerate", "value": "tok123", "action_ts": "201.5"}],
    }
    inb = action_to_inbound(payload, me=ME)
    assert inb is not None
    assert inb.action == Action("regenerate", "tok123")
    assert inb.message_id == "200.0" and inb.text == ""
    assert inb.key == ConversationKey("slack", "T1", "C1", "100.1", "")
    other = dict(payload, actions=[{"action_id": "someone_else", "value": "x"}])
    assert action_to_inbound(other, me=ME) is None
    assert action_to_inbound({"type": "view_submission"}, me=ME) is None
