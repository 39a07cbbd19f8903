"""The fake Bot API behaves like Telegram where hybot depends on it (real PTB as the client)."""

from __future__ import annotations

import aiohttp
import pytest
from fakes.telegram import FakeTelegram
from telegram import Bot
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter


async def test_bodies_form_multipart_json_and_empty() -> None:
    async with FakeTelegram() as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        await bot.send_message(42, "hi")
        await bot.send_photo(42, b"\x89PNG\r\n", caption="c")
        async with aiohttp.ClientSession() as http:
            url = f"{fake.base_url}{fake.token}/sendMessage"
            async with http.post(url, json={"chat_id": 42, "text": "json"}) as resp:
                assert resp.status == 200
        kinds = [(c.method, c.content_type) for c in fake.calls]
        assert kinds == [
            ("getMe", ""),
            ("sendMessage", "application/x-www-form-urlencoded"),
            ("sendPhoto", "multipart/form-data"),
            ("sendMessage", "application/json"),
        ]
        assert fake.photos == [{"chat_id": 42, "size": 6, "caption": "c"}]
        assert fake.texts(42) == ["hi", "c", "json"]


async def test_get_updates_offsets_deliver_then_confirm() -> None:
    async with FakeTelegram() as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        first = fake.send_text(chat_id=42, text="one")
        second = fake.send_text(chat_id=42, text="two")
        got = await bot.get_updates(timeout=0)
        assert [u.update_id for u in got] == [first["update_id"], second["update_id"]]
        assert fake.delivered == [first["update_id"], second["update_id"]]
        assert fake.confirmed == []
        again = await bot.get_updates(offset=second["update_id"], timeout=0)
        assert [u.update_id for u in again] == [second["update_id"]]
        assert fake.confirmed == [first["update_id"]]
        assert await bot.get_updates(offset=second["update_id"] + 1, timeout=0) == ()
        assert fake.confirmed == [first["update_id"], second["update_id"]]


async def test_scripted_faults_map_to_ptb_errors() -> None:
    async with FakeTelegram() as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        fake.fail("sendMessage", "429", retry_after=7)
        with pytest.raises(RetryAfter) as retry:
            await bot.send_message(42, "x")
        assert retry.value.retry_after == 7
        fake.fail("sendMessage", "parse")
        await bot.send_message(42, "plain text has nothing to parse")
        with pytest.raises(BadRequest, match="parse entities"):
            await bot.send_message(42, "x", parse_mode="MarkdownV2")
        fake.fail("sendMessage", "blocked", chat_id=43)
        await bot.send_message(42, "other chat unaffected")
        with pytest.raises(Forbidden):
            await bot.send_message(43, "x")
        fake.fail("getUpdates", "conflict")
        with pytest.raises(Conflict):
            await bot.get_updates(timeout=0)
        assert (await bot.send_message(42, "ok")).text == "ok"


async def test_not_modified_flood_and_validation() -> None:
    async with FakeTelegram() as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        msg = await bot.send_message(42, "a")
        with pytest.raises(BadRequest, match="not modified"):
            await bot.edit_message_text("a", chat_id=42, message_id=msg.message_id)
        fake.edit_interval = 60.0
        await bot.edit_message_text("b", chat_id=42, message_id=msg.message_id)
        with pytest.raises(RetryAfter):
            await bot.edit_message_text("c", chat_id=42, message_id=msg.message_id)
        with pytest.raises(BadRequest, match="too long"):
            await bot.send_message(42, "😀" * 2049)  # 4098 UTF-16 units
        with pytest.raises(BadRequest, match="parse entities"):
            await bot.send_message(42, "1.5", parse_mode="MarkdownV2")
        await bot.send_message(42, "1\\.5", parse_mode="MarkdownV2")


async def test_wrong_token_and_webhook_conflict() -> None:
    async with FakeTelegram() as fake:
        with pytest.raises(InvalidToken):
            async with Bot("1:wrong", base_url=fake.base_url):
                pass
        async with Bot(fake.token, base_url=fake.base_url) as bot:
            await bot.set_webhook("https://example.invalid/hook", secret_token="s")
            with pytest.raises(Conflict):
                await bot.get_updates(timeout=0)
            await bot.delete_webhook()
            assert await bot.get_updates(timeout=0) == ()


async def test_message_drafts_are_recorded_and_an_old_server_lacks_them() -> None:
    async with FakeTelegram() as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        assert await bot.send_message_draft(42, 7, "thinking about it") is True
        assert await bot.send_message_draft(42, 7, "thinking about it, done") is True
        assert fake.drafts == {(42, 7): "thinking about it, done"}
        assert fake.texts(42) == []  # a draft is no message
        with pytest.raises(BadRequest, match="non-zero"):
            await bot.send_message_draft(42, 0, "x")
        with pytest.raises(BadRequest, match="private chats"):
            await bot.send_message_draft(-100, 1, "x")
        fake.unsupported.add("sendMessageDraft")
        with pytest.raises(InvalidToken):  # PTB's reading of any 404
            await bot.send_message_draft(42, 8, "x")
        assert [c.status for c in fake.calls if c.method == "sendMessageDraft"][-1] == 404
        assert (42, 8) not in fake.drafts
