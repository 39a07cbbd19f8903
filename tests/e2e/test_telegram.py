"""The Telegram adapter end to end: the real python-telegram-bot against the fake Bot API, the
real core against the Hunyuan emulator (issue 8; catalogue numbers from platforms.md §5.3)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from core_harness import Core, core
from fakes.telegram import BOT_USERNAME, FakeTelegram, MemoryInbox

from adapters.base import MARK_NOTE
from adapters.telegram.app import TelegramAdapter, TelegramOptions
from adapters.telegram.render import format_markdown
from bots.cli import configure_logging
from core.config import AccessConfig, BotConfig
from core.errors import ConfigError, PlatformError
from core.i18n import t
from core.types import Final, Inbound, ReplyEvent

GROUP = -100500


@dataclass
class Recorder:
    """Wraps the core: remembers each inbound and the events it yielded."""

    conv: Any
    seen: list[Inbound] = field(default_factory=list)
    events: dict[str, list[ReplyEvent]] = field(default_factory=dict)

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        self.seen.append(inbound)
        got = self.events.setdefault(inbound.delivery_id, [])
        async for event in self.conv.handle(inbound):
            got.append(event)
            yield event

    def final(self, delivery_id: object) -> Final:
        finals = [e for e in self.events[str(delivery_id)] if isinstance(e, Final)]
        assert len(finals) == 1, self.events[str(delivery_id)]
        return finals[0]


@dataclass
class Bot:
    tg: FakeTelegram
    adapter: TelegramAdapter
    core: Core
    inbox: MemoryInbox
    rec: Recorder

    async def say(self, **kw: Any) -> dict[str, Any]:
        """Deliver a message through getUpdates and wait until it has been handled."""
        update = self.tg.send_text(**kw)
        await self.inbox.wait_done(update["update_id"])
        return update


@asynccontextmanager
async def running(
    tmp_path: Path, *, config: BotConfig | None = None, **opts: Any
) -> AsyncIterator[Bot]:
    async with FakeTelegram() as tg, core(tmp_path, config=config) as c:
        inbox = MemoryInbox()
        rec = Recorder(c.conv)
        options = TelegramOptions(
            token=tg.token,
            base_url=tg.base_url,
            poll_timeout=1,
            retry_budget=2.0,
            redrive_interval=3600,
            drain_timeout=5.0,
            **opts,
        )
        adapter = TelegramAdapter(conversation=rec, inbox=inbox, options=options)
        async with adapter:
            yield Bot(tg, adapter, c, inbox, rec)


def shown(final: Final) -> str:
    """What Telegram displays for a ``Final`` (formatted, markup removed, the note below)."""
    return format_markdown(full(final))[0]


def full(final: Final) -> str:
    return final.text + (f"\n\n{MARK_NOTE}{final.note}" if final.note else "")


# --- 1: DM happy path, streamed and complete ----------------------------------------------


async def test_dm_answer_streams_and_is_delivered_complete(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        update = await bot.say(chat_id=42, text="hello there [[long=700]]")
        final = bot.rec.final(update["update_id"])
        assert len(final.text) > 1500
        assert bot.tg.calls_of("sendChatAction", chat_id=42)
        assert bot.tg.texts(42) == [shown(final)]  # one message, complete
        edits = bot.tg.calls_of("editMessageText", chat_id=42)
        sends = bot.tg.calls_of("sendMessage", chat_id=42)
        drafts = bot.tg.calls_of("sendMessageDraft", chat_id=42)
        # Streamed: shown (as a draft, in a private chat) before it was complete, then sent
        # once, complete; no message was edited.
        assert len(drafts) >= 1 and len(sends) == 1 and edits == []
        assert bot.tg.calls.index(drafts[-1]) < bot.tg.calls.index(sends[0])
        # DMs are answered without a reply reference.
        assert all("reply_parameters" not in c.params for c in sends)


async def test_commands_registered_in_english_and_chinese(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        assert set(bot.tg.commands) == {"", "zh"}
        names = [c["command"] for c in bot.tg.commands[""]]
        assert "help" in names and "image" in names and "admin" not in names
        assert bot.tg.commands["zh"][0]["description"] != bot.tg.commands[""][0]["description"]


async def test_start_greets_then_helps(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        await bot.say(chat_id=42, text="/start")
        texts = bot.tg.texts(42)
        assert "Tencent Hunyuan" in texts[0] and "/quota" in texts[0]
        assert any("/image" in text for text in texts[1:])


# --- 14: groups answer mentions, replies and commands only ---------------------------------


async def test_group_gating(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        await bot.say(chat_id=GROUP, text="talking among ourselves")
        await bot.say(chat_id=GROUP, text="/help@other_bot")
        await bot.say(chat_id=GROUP, text=f"@{BOT_USERNAME}\u200b hi", entities=[])
        assert bot.tg.calls_of("sendMessage") == []
        assert bot.rec.seen == []
        mention = await bot.say(chat_id=GROUP, text=f"@{BOT_USERNAME} what is up?")
        assert bot.rec.seen[-1].text == "what is up?"
        sends = bot.tg.calls_of("sendMessage", chat_id=GROUP)
        assert sends[0].params["reply_parameters"]["message_id"] == mention["message"]["message_id"]
        answer = bot.tg.bot_messages(GROUP)[-1]
        await bot.say(chat_id=GROUP, text="and then?", reply_to=answer)
        assert bot.rec.seen[-1].reply_to_bot
        await bot.say(chat_id=GROUP, text=f"/help@{BOT_USERNAME}")
        assert bot.rec.seen[-1].text == "/help"
        assert len(bot.rec.seen) == 3
        # /help in a group ends with the privacy-mode note for admins.
        assert "privacy mode" in bot.tg.texts(GROUP)[-1]


async def test_forum_topics_are_separate_and_answered_in_place(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        await bot.say(chat_id=GROUP, text=f"@{BOT_USERNAME} remember apples", thread_id=11)
        await bot.say(chat_id=GROUP, text=f"@{BOT_USERNAME} remember pears", thread_id=12)
        keys = {i.key for i in bot.rec.seen}
        assert {k.thread for k in keys} == {"11", "12"}
        for call in bot.tg.calls_of("sendMessage", "sendChatAction", chat_id=GROUP):
            assert call.params["message_thread_id"] in (11, 12)
        threads = {m.get("message_thread_id") for m in bot.tg.bot_messages(GROUP)}
        assert threads == {11, 12}


# --- 2: duplicates by update_id are answered once -----------------------------------------


async def test_duplicate_update_is_answered_once(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        first = bot.tg.message_update(chat_id=42, text="only once please")
        bot.tg.push(first)
        bot.tg.push(first)  # the same update_id delivered again (e.g. after a lost ack)
        second = bot.tg.send_text(chat_id=42, text="next")
        await bot.inbox.wait_done(first["update_id"], second["update_id"])
        ids = [i.delivery_id for i in bot.rec.seen]
        assert ids.count(str(first["update_id"])) == 1
        assert bot.inbox.records.count(str(first["update_id"])) == 2


# --- 9, 10, 11: platform faults ------------------------------------------------------------


async def test_429_is_honoured_and_the_answer_delivered(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        bot.tg.fail("sendMessage", "429", retry_after=1, chat_id=42)
        update = await bot.say(chat_id=42, text="hi")
        attempts = [c for c in bot.tg.calls if c.method == "sendMessage" and c.chat_id == 42]
        assert [c.status for c in attempts[:2]] == [429, 200]
        assert attempts[1].at - attempts[0].at >= 1.0
        final = bot.rec.final(update["update_id"])
        assert bot.tg.texts(42)[-1] == shown(final)


async def test_parse_error_falls_back_to_plain_text(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        bot.tg.fail("sendMessage", "parse", chat_id=42)
        bot.tg.fail("editMessageText", "parse", chat_id=42, times=50)
        update = await bot.say(chat_id=42, text="*unbalanced _md [x](y) 1.5-2! <b>")
        final = bot.rec.final(update["update_id"])
        assert bot.tg.texts(42)[-1] in (full(final), shown(final))


# --- buttons -------------------------------------------------------------------------------


async def test_button_press_is_answered_and_reaches_the_core(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        await bot.say(chat_id=42, text="hi")
        shown_msg = bot.tg.bot_messages(42)[-1]
        press = bot.tg.push(bot.tg.callback_update(chat_id=42, message=shown_msg, data="n:tok"))
        await bot.inbox.wait_done(press["update_id"])
        assert bot.tg.answered_callbacks == [press["callback_query"]["id"]]
        inbound = bot.rec.seen[-1]
        assert inbound.action is not None and inbound.action.kind == "new_chat"
        assert inbound.message_id == str(shown_msg["message_id"])


# --- 7, 8: webhook --------------------------------------------------------------------------


async def test_webhook_secret_size_and_malformed_bodies(tmp_path: Path) -> None:
    secret = "s3cr3t-token_value"
    async with running(
        tmp_path,
        mode="webhook",
        webhook_url="https://bot.example.invalid/tg/hook",
        webhook_secret=secret,
        webhook_port=0,
        max_body=64 * 1024,
    ) as bot:
        assert bot.tg.webhook is not None and bot.tg.webhook["secret_token"] == secret
        url = f"http://127.0.0.1:{bot.adapter.webhook_port}/tg/hook"
        good = bot.tg.message_update(chat_id=42, text="via webhook")
        ok = {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with aiohttp.ClientSession() as http:

            async def post(body: bytes, headers: dict[str, str]) -> int:
                async with http.post(url, data=body, headers=headers) as resp:
                    return resp.status

            raw = json.dumps(good).encode()
            assert await post(raw, {}) == 403
            assert await post(raw, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}) == 403
            assert await post(b"{" + b" " * (2 * 1024 * 1024), ok) == 413
            assert await post(b"{not json", ok) == 400
            assert await post(b'{"no_update_id": 1}', ok) == 400
            assert await post(b"[" * 5000 + b"]" * 5000, ok) == 400
            assert await post(b'{"update_id": 1, "message": "\\ud800"}', ok) == 400
            assert bot.rec.seen == []
            assert await post(raw, ok) == 200
            assert await post(raw, ok) == 200  # a re-delivery: recorded once, answered once
            await bot.inbox.wait_done(good["update_id"])
        assert [i.text for i in bot.rec.seen] == ["via webhook"]
        assert bot.inbox.records.count(str(good["update_id"])) == 2


# --- 21, 401, unreachable: clear fatal errors, no hot loop ---------------------------------


async def test_conflict_stops_polling_with_a_clear_error(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        bot.tg.fail("getUpdates", "conflict", times=1000)
        with pytest.raises(PlatformError, match="409 Conflict"):
            await bot.adapter.serve(asyncio.Event())
        conflicts = [c for c in bot.tg.calls if c.method == "getUpdates" and c.status == 409]
        assert len(conflicts) == 1


async def test_wrong_token_fails_start(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, core(tmp_path) as c:
        options = TelegramOptions(token="1:revoked", base_url=tg.base_url, retry_budget=1)
        adapter = TelegramAdapter(conversation=c.conv, inbox=MemoryInbox(), options=options)
        with pytest.raises(ConfigError, match="401") as err:
            async with adapter:
                pass
        assert "revoked" not in str(err.value)


async def test_unreachable_server_gives_up_after_the_budget(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with core(tmp_path) as c:
        options = TelegramOptions(
            token="1:x", base_url=f"http://127.0.0.1:{port}/bot", retry_budget=0.5
        )
        adapter = TelegramAdapter(conversation=c.conv, inbox=MemoryInbox(), options=options)
        with pytest.raises(PlatformError, match="cannot reach"):
            async with adapter:
                pass


# --- inbox re-drive -------------------------------------------------------------------------


async def test_unfinished_inbox_entries_are_redriven_at_start(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, core(tmp_path) as c:
        inbox = MemoryInbox()
        update = tg.message_update(chat_id=42, text="left over from a crash")
        await inbox.record("telegram", str(update["update_id"]), json.dumps(update))
        inbox.expire()
        rec = Recorder(c.conv)
        options = TelegramOptions(token=tg.token, base_url=tg.base_url, poll_timeout=1)
        async with TelegramAdapter(conversation=rec, inbox=inbox, options=options):
            await inbox.wait_done(update["update_id"])
        assert [i.text for i in rec.seen] == ["left over from a crash"]
        assert len(tg.texts(42)) == 1


# --- 13, 19: hostile unicode, secrets never logged -----------------------------------------


async def test_hostile_unicode_and_no_secret_in_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "👩\u200d👩\u200d👧 \u202eevil\u202c zero\u200b\u2060width e\u0301 𠀀 nul\x00end"
    handler = configure_logging("DEBUG", secrets=())
    try:
        async with running(tmp_path) as bot:
            update = await bot.say(chat_id=42, text=hostile)
            assert bot.rec.seen[0].text == hostile
            assert bot.rec.final(update["update_id"]).text
            assert bot.tg.texts(42)
    finally:
        logging.getLogger().removeHandler(handler)
    logged = capsys.readouterr().err
    assert "sendMessage" in logged  # PTB logged its calls at DEBUG...
    assert bot.tg.token.split(":", 1)[1] not in logged  # ...with the token masked


async def test_answer_buttons_regenerate_in_place_and_go_stale_after_reset(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as bot:
        first = await bot.say(chat_id=42, text="tell me something")
        (shown_msg,) = bot.tg.bot_messages(42)
        keyboard = shown_msg["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in keyboard] == ["Regenerate", "New chat"]
        regenerate = keyboard[0]["callback_data"]
        press = bot.tg.push(bot.tg.callback_update(chat_id=42, message=shown_msg, data=regenerate))
        await bot.inbox.wait_done(press["update_id"])
        assert bot.rec.final(press["update_id"]).text  # a new answer...
        assert len(bot.tg.bot_messages(42)) == 1  # ...shown in place of the pressed one
        assert press["callback_query"]["id"] in bot.tg.answered_callbacks
        await bot.say(chat_id=42, text="/reset")
        stale = bot.tg.push(bot.tg.callback_update(chat_id=42, message=shown_msg, data=regenerate))
        await bot.inbox.wait_done(stale["update_id"])
        assert not [e for e in bot.rec.events[str(stale["update_id"])] if isinstance(e, Final)]
        assert t("action.stale", "en")[:30] in bot.tg.texts(42)[-1]  # says so instead
        assert bot.rec.final(first["update_id"])


async def test_per_user_rate_limit_is_a_polite_reply_and_spares_others(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        updates = [
            bot.tg.send_text(chat_id=-1000 - i, user_id=42, text=f"@{BOT_USERNAME} q{i}")
            for i in range(25)
        ]
        other = bot.tg.send_text(chat_id=43, user_id=43, text="me too")
        await bot.inbox.wait_done(*(u["update_id"] for u in updates), other["update_id"])
        finals = [
            u
            for u in updates
            if any(isinstance(e, Final) for e in bot.rec.events[str(u["update_id"])])
        ]
        assert len(finals) == 20  # the default: 20 requests per minute
        refused = [u for u in updates if u not in finals]
        for update in refused:
            (text,) = bot.tg.texts(update["message"]["chat"]["id"])
            assert "minute" in text.lower() or "limit" in text.lower()
        bot.rec.final(other["update_id"])


async def test_image_command_sends_a_photo_with_its_caption(tmp_path: Path) -> None:
    async with running(tmp_path) as bot:
        update = await bot.say(chat_id=42, text="/image a red fox in the snow")
        (photo,) = bot.tg.photos
        assert photo["size"] > 100 and "red fox" in photo["caption"]
        ready = [
            e for e in bot.rec.events[str(update["update_id"])] if type(e).__name__ == "ImageReady"
        ]
        assert ready and ready[0].caption.splitlines()[-1] in photo["caption"]  # the AI mark
        assert bot.tg.calls_of("sendChatAction", chat_id=42)[-1].params["action"] == "upload_photo"
        usage = await bot.say(chat_id=42, text="/image")
        assert "/image" in bot.tg.texts(42)[-1]  # the usage line, no photo
        assert len(bot.tg.photos) == 1 and bot.rec.events[str(usage["update_id"])]


async def test_a_refused_webhook_registration_is_a_clear_platform_error(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, core(tmp_path) as c:
        tg.fail("setWebhook", "bad_request")  # Telegram refusing the registration
        options = TelegramOptions(
            token=tg.token,
            base_url=tg.base_url,
            mode="webhook",
            webhook_url="https://bot.example.invalid/hook",
            webhook_secret="s",
            webhook_port=0,
        )
        adapter = TelegramAdapter(conversation=c.conv, inbox=MemoryInbox(), options=options)
        with pytest.raises(PlatformError, match="Telegram refused setWebhook"):
            async with adapter:
                pass


async def test_admin_names_a_user_by_their_telegram_username(tmp_path: Path) -> None:
    config = BotConfig(access=AccessConfig(admins=("telegram:42",)))
    async with running(tmp_path, config=config) as bot:
        hello = bot.tg.text_message(chat_id=55, user_id=55, text="hello")
        hello["from"].update(first_name="Alice", last_name="Smith", username="alice_s")
        seen = bot.tg.push({"message": hello})  # the bot has now seen @alice_s
        await bot.inbox.wait_done(seen["update_id"])
        await bot.say(chat_id=42, user_id=42, text="/admin grant @alice_s tokens 1000")
        assert bot.rec.seen[-1].text == "/admin grant @alice_s tokens 1000"
        reply = bot.tg.texts(42)[-1]
        assert reply.startswith(t("admin.done", "en", what="")[:5]), reply
        await bot.say(chat_id=42, user_id=42, text="/admin grant @nobody_here tokens 1000")
        assert not bot.tg.texts(42)[-1].startswith(t("admin.done", "en", what="")[:5])
