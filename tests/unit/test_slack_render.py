"""adapters.slack.render: the primitives against the Slack fake (real slack_sdk)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from fakes.slack import BOT_TOKEN, FakeSlack
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import (
    ResponseUrls,
    SlackPrimitives,
    blocks_for,
    escape,
    measure,
)
from core.errors import PlatformError, PlatformRetryAfter
from core.types import Button, ConversationKey, Inbound


def inbound(*, chat: str = "C1", thread: str = "100.1", dm: bool = False, **raw: Any) -> Inbound:
    return Inbound(
        platform="slack",
        delivery_id="msg:T1:C1:100.1",
        key=ConversationKey("slack", "T1", chat, thread),
        user_id="U1",
        text="hi",
        channel_id=chat,
        is_dm=dm,
        raw=raw,
    )


@asynccontextmanager
async def prims() -> AsyncIterator[tuple[SlackPrimitives, FakeSlack]]:
    async with FakeSlack() as fake, aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
        yield SlackPrimitives(client=client, session=session), fake


def test_escape_and_measure() -> None:
    text = "<!channel> & <https://evil|bank> <@U1>"
    out = escape(text)
    assert "<" not in out and ">" not in out
    assert out.count("&amp;") == 1
    assert measure(text) == len(out)
    assert escape("&lt;") == "&amp;lt;"  # never unescaped by us: shown as typed


def test_blocks_markdown_and_buttons() -> None:
    blocks = blocks_for("**bold** <b>", (Button("regenerate", "Again", "tok"),))
    assert blocks[0] == {"type": "markdown", "text": "**bold** &lt;b&gt;"}
    assert blocks[1]["elements"][0]["action_id"] == "hybot_regenerate"
    assert blocks[1]["elements"][0]["value"] == "tok"
    assert blocks_for("   ") == []


async def test_send_edit_delete_in_thread() -> None:
    async with prims() as (p, fake):
        ref = await p.send_text(inbound(), "hello *there*")
        assert ref.chat == "C1" and ref.thread == "100.1"
        call = fake.of("chat.postMessage")[0]
        assert call.params["thread_ts"] == "100.1"
        assert call.params["blocks"][0]["type"] == "markdown"
        await p.edit_text(ref, "changed")
        assert fake.messages[("C1", ref.id)]["text"] == "changed"
        await p.delete(ref)
        await p.delete(ref)  # already gone: success
        with pytest.raises(PlatformError) as err:
            await p.edit_text(ref, "gone")
        assert "message_not_found" in str(err.value)


async def test_refused_formatting_falls_back_to_plain_text() -> None:
    async with prims() as (p, fake):
        fake.fail("chat.postMessage", "invalid_blocks")
        ref = await p.send_text(inbound(), "# title <x>")
        posts = fake.of("chat.postMessage")
        assert len(posts) == 1 and "blocks" not in posts[0].params
        assert posts[0].params["text"] == "# title &lt;x&gt;"
        fake.fail("chat.update", "msg_blocks_too_long")
        await p.edit_text(ref, "again")
        assert fake.messages[("C1", ref.id)]["text"] == "again"


async def test_429_becomes_retry_after_and_errors_name_no_secret() -> None:
    async with prims() as (p, fake):
        fake.fail("chat.postMessage", retry_after=7)
        with pytest.raises(PlatformRetryAfter) as err:
            await p.send_text(inbound(), "x")
        assert err.value.retry_after == 7.0
        fake.fail("chat.postMessage", "channel_not_found")
        with pytest.raises(PlatformError) as err2:
            await p.send_text(inbound(), "x")
        assert str(err2.value) == "slack chat.postMessage: channel_not_found"
        assert BOT_TOKEN not in str(err2.value)


async def test_private_output() -> None:
    async with prims() as (p, fake):
        # in a channel without a response_url: chat.postEphemeral to the user, in the thread
        await p.send_text(inbound(), "only you", private=True)
        eph = fake.of("chat.postEphemeral")[0]
        assert eph.params["user"] == "U1" and eph.params["thread_ts"] == "100.1"
        # in a DM: an ordinary message
        await p.send_text(inbound(chat="D1", thread="", dm=True), "dm", private=True)
        assert fake.of("chat.postMessage")[0].params["channel"] == "D1"
        # a slash command: through its response_url, ephemeral
        url = fake.response_url()
        ref = await p.send_text(inbound(thread="", response_url=url), "secret", private=True)
        (post,) = fake.of("response_url")
        assert post.params["response_type"] == "ephemeral"
        assert ref.id.startswith("resp:") and url not in repr(ref)


async def test_response_url_budget_is_five_uses() -> None:
    async with prims() as (p, fake):
        url = fake.response_url()
        inb = inbound(thread="", response_url=url)
        ref = await p.send_text(inb, "1", private=True)
        for i in range(4):
            await p.edit_text(ref, f"edit {i}")
        with pytest.raises(PlatformError):
            await p.edit_text(ref, "sixth")
        assert len(fake.of("response_url")) == 5
        assert all(c.status == 200 for c in fake.calls if c.method == "response_url")


def test_response_urls_expire_after_the_window() -> None:
    now = [0.0]
    urls = ResponseUrls(clock=lambda: now[0])
    inb = inbound(response_url="https://hooks.slack.com/x")
    key = urls.register(inb)
    assert key is not None and urls.take(key) == "https://hooks.slack.com/x"
    now[0] = 1801.0
    assert urls.take(key) is None and urls.left(key) == 0
    assert urls.register(inbound(response_url="javascript:alert(1)")) is None


async def test_image_upload_carries_the_ai_mark() -> None:
    async with prims() as (p, fake):
        ref = await p.send_image(inbound(), b"\x89PNG....", "image/png", "Prompt: cat")
        assert ref.id.startswith("file:")
        alt = fake.of("files.getUploadURLExternal")[0].params["alt_txt"]
        assert alt.startswith("AI-generated image")
        done = fake.of("files.completeUploadExternal")[0].params
        assert "AI-generated image" in done["files"]
        assert done["thread_ts"] == "100.1"
        zh = await p.send_image(inbound(), b"\x89PNG", "image/png", "提示词：猫\n图片由 AI 生成")
        assert zh.id.startswith("file:")
        files = json.loads(fake.of("files.completeUploadExternal")[1].params["files"])
        assert files[0]["title"] == "图片由 AI 生成"


async def test_typing_uses_assistant_status_and_gives_up_quietly() -> None:
    async with prims() as (p, fake):
        await p.send_typing(inbound())
        call = fake.of("assistant.threads.setStatus")[0]
        assert call.params["thread_ts"] == "100.1" and call.params["status"]
        await p.send_typing(inbound(thread=""))  # no thread: nothing to show
        assert len(fake.of("assistant.threads.setStatus")) == 1
        fake.fail("assistant.threads.setStatus", "not_allowed")
        await p.send_typing(inbound(chat="C2"))
        await p.send_typing(inbound(chat="C2"))  # remembered: not tried again
        assert [c.params["channel_id"] for c in fake.calls if "setStatus" in c.method] == [
            "C1",
            "C2",
        ]


@asynccontextmanager
async def streaming(idle: float = 60.0) -> AsyncIterator[tuple[SlackPrimitives, FakeSlack]]:
    async with FakeSlack() as fake, aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
        p = SlackPrimitives(client=client, session=session, stream_idle=idle)
        try:
            yield p, fake
        finally:
            await p.close()


async def test_native_stream_in_a_dm_thread() -> None:
    async with streaming() as (p, fake):
        await p.send_text(inbound(), "in a channel thread")  # never streamed natively
        await p.send_text(inbound(chat="D1", thread="", dm=True), "top of a DM")  # no thread
        assert len(fake.of("chat.postMessage")) == 2 and not fake.of("chat.startStream")
        fake.calls.clear()
        dm = inbound(chat="D1", thread="5.0", dm=True)
        ref = await p.send_text(dm, "Hello <b>")
        (start,) = fake.of("chat.startStream")
        assert start.params["thread_ts"] == "5.0" and start.params["recipient_user_id"] == "U1"
        assert start.params["markdown_text"] == "Hello &lt;b&gt;"
        await p.edit_text(ref, "Hello <b> & more")
        (append,) = fake.of("chat.appendStream")
        assert append.params["markdown_text"] == " &amp; more"
        await p.edit_text(ref, "Hello <b> & more")  # nothing new: no call
        assert len(fake.of("chat.appendStream")) == 1
        await p.edit_text(ref, "Hello <b> & more!", buttons=(Button("regenerate", "Again", "t"),))
        (stop,) = fake.of("chat.stopStream")
        assert stop.params["markdown_text"] == "!"
        assert stop.params["blocks"][0]["type"] == "actions"
        msg = fake.messages[("D1", ref.id)]
        assert msg["text"] == escape("Hello <b> & more!") and not msg["streaming"]
        assert not fake.of("chat.postMessage") and not fake.of("chat.update")


async def test_native_stream_retracted_is_stopped_and_replaced() -> None:
    async with streaming() as (p, fake):
        ref = await p.send_text(inbound(chat="D1", thread="5.0", dm=True), "Something risky")
        await p.edit_text(ref, "Withdrawn.")
        assert fake.of("chat.stopStream")
        (update,) = fake.of("chat.update")
        assert update.params["text"] == "Withdrawn."
        assert fake.messages[("D1", ref.id)]["text"] == "Withdrawn."


async def test_native_stream_ends_after_idle_time() -> None:
    async with streaming(idle=0.05) as (p, fake):
        ref = await p.send_text(inbound(chat="D1", thread="5.0", dm=True), "Done soon")
        (stop,) = await fake.wait_calls("chat.stopStream")
        assert stop.params["ts"] == ref.id and "markdown_text" not in stop.params
        assert not fake.messages[("D1", ref.id)]["streaming"]


async def test_refused_native_stream_falls_back_to_post_and_update() -> None:
    async with streaming() as (p, fake):
        fake.fail("chat.startStream", "not_allowed_token_type")
        dm = inbound(chat="D1", thread="5.0", dm=True)
        ref = await p.send_text(dm, "one")
        await p.edit_text(ref, "one two")
        await p.send_text(dm, "again")
        assert len(fake.of("chat.postMessage")) == 2 and len(fake.of("chat.update")) == 1
        assert [c.method for c in fake.calls].count("chat.startStream") == 1  # tried once
