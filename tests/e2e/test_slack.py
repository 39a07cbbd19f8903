"""The Slack adapter end to end: real slack-bolt and slack_sdk against the loopback Slack fake,
the real core against the Hunyuan emulator, signed HTTP requests into the adapter's server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from core_harness import Core, core
from fakes.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    FakeSlack,
    event_body,
    form_body,
    signed_headers,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.app import SlackAdapter, SlackServe
from core.config import BotConfig
from core.errors import ConfigError, StoreError
from core.hunyuan.emulator import EmulatorConfig
from core.inbox import Inbox


@dataclass
class App:
    fake: FakeSlack
    adapter: SlackAdapter
    core: Core
    session: aiohttp.ClientSession
    inbox: Inbox

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}/slack/events"

    async def post(
        self, body: str, *, headers: dict[str, str] | None = None, **sign: Any
    ) -> tuple[int, str]:
        hdrs = headers if headers is not None else signed_headers(body, **sign)
        async with self.session.post(self.url, data=body.encode(), headers=hdrs) as resp:
            return resp.status, await resp.text()

    async def event(self, event: dict[str, Any], **kw: Any) -> tuple[int, str]:
        event_id = kw.pop("event_id", None)
        return await self.post(event_body(event, event_id=event_id), **kw)

    async def command(self, text: str, **fields: str) -> tuple[int, str]:
        form = {
            "command": "/hy",
            "text": text,
            "user_id": "U1",
            "user_name": "alice",
            "channel_id": "C1",
            "team_id": "T1",
            "trigger_id": f"trig-{time.monotonic_ns()}",
            "response_url": self.fake.response_url(),
        }
        form.update(fields)
        return await self.post(form_body(form), content_type="application/x-www-form-urlencoded")


def mention(text: str = "hello", *, ts: str = "1000.0001", channel: str = "C1", **kw: Any):
    return {
        "type": "app_mention",
        "user": "U1",
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        **kw,
    }


@asynccontextmanager
async def slack_app(
    tmp_path: Path,
    *,
    config: BotConfig | None = None,
    emulator_config: EmulatorConfig | None = None,
    serve: SlackServe | None = None,
) -> AsyncIterator[App]:
    async with (
        FakeSlack() as fake,
        core(tmp_path, config=config, emulator_config=emulator_config) as c,
        aiohttp.ClientSession() as session,
    ):
        inbox = Inbox(store=c.store)
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
        adapter = SlackAdapter(
            conversation=c.conv,
            client=client,
            signing_secret=SIGNING_SECRET,
            inbox=inbox,
            serve=serve or SlackServe(port=0, grace=5.0),
        )
        async with adapter:
            yield App(fake, adapter, c, session, inbox)


def final_text(fake: FakeSlack, channel: str = "C1") -> list[dict[str, Any]]:
    return [m for (ch, _), m in fake.messages.items() if ch == channel]


def said(text: str) -> str:
    """What the emulator's complete answer to ``text`` contains."""
    return f'You just said: "{text}"'


async def answered(fake: FakeSlack, *needles: str, timeout: float = 15) -> dict[str, Any]:
    """Wait for a shown message containing every needle; return it."""

    def find(f: FakeSlack) -> dict[str, Any] | None:
        for m in f.messages.values():
            if all(n in str(m.get("text")) for n in needles):
                return m
        return None

    await fake.wait_for(lambda f: find(f) is not None, timeout=timeout)
    found = find(fake)
    assert found is not None
    return found


async def test_mention_is_answered_in_its_thread(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        status, _ = await app.event(mention("what is up?"))
        assert status == 200
        await answered(app.fake, said("what is up?"))
        posts = app.fake.of("chat.postMessage")
        assert posts and all(p.params["thread_ts"] == "1000.0001" for p in posts)
        assert posts[0].params["channel"] == "C1"
        (msg,) = final_text(app.fake)
        assert 'You just said: "what is up?"' in msg["text"]
        assert msg["blocks"][0]["type"] == "markdown"


async def test_thread_follow_up_without_mention_continues_the_conversation(
    tmp_path: Path,
) -> None:
    async with slack_app(tmp_path) as app:
        await app.event(mention("first", ts="1000.0001"))
        await answered(app.fake, "Turn 1", said("first"))
        follow = {
            "type": "message",
            "channel_type": "channel",
            "user": "U1",
            "text": "second",
            "ts": "1000.0005",
            "thread_ts": "1000.0001",
            "channel": "C1",
        }
        status, _ = await app.event(follow)
        assert status == 200
        turn2 = await answered(app.fake, "Turn 2", said("second"))
        assert 'You first said: "first"' in turn2["text"]
        assert turn2["thread_ts"] == "1000.0001"
        # chatter in another thread, without a mention, is not answered
        other = dict(follow, ts="1000.0009", thread_ts="999.0", text="unrelated")
        await app.event(other)
        await app.event(mention("third", ts="1000.0010", thread_ts="1000.0001"))
        await answered(app.fake, "Turn 3", said("third"))
        assert not any("unrelated" in str(m.get("text")) for m in app.fake.messages.values())


async def test_dm_is_a_conversation(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        dm = {"type": "message", "channel_type": "im", "user": "U1", "channel": "D1"}
        await app.event(dict(dm, text="one", ts="2000.0001"))
        await answered(app.fake, "Turn 1", said("one"))
        await app.event(dict(dm, text="two", ts="2000.0002"))
        await answered(app.fake, "Turn 2", said("two"))
        posts = app.fake.of("chat.postMessage")
        assert all(p.params["channel"] == "D1" and "thread_ts" not in p.params for p in posts)


async def test_app_mention_and_message_for_one_ts_are_answered_once(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        ev = mention("once please", ts="3000.0001")
        msg = dict(ev, type="message", channel_type="channel")
        first, second = await asyncio.gather(
            app.event(ev, event_id="EvA"), app.event(msg, event_id="EvB")
        )
        assert first[0] == second[0] == 200
        await answered(app.fake, said("once please"))
        # a later re-delivery of both, as Slack's retries
        await app.event(ev, event_id="EvA", retry_num=1)
        await app.event(msg, event_id="EvB", retry_num=1)
        await app.adapter.drain(5)
        answers = [m for m in app.fake.messages.values() if "once please" in str(m.get("text"))]
        assert len(answers) == 1
        assert app.core.emulator.stats.requests["/v1/chat/completions"] == 1


async def test_signature_guard(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        body = event_body(mention("guarded", ts="4000.0001"))
        now = int(time.time())
        bad = [
            signed_headers(body, secret="wrong-secret"),
            # Well outside the 300 s window: seconds pass between here and the check (the
            # exact edges are tests/unit/test_slack_guard.py's, on an injected clock).
            signed_headers(body, timestamp=now - 400),
            signed_headers(body, timestamp=now + 400),
            signed_headers(body, timestamp="abc"),
            signed_headers(body, timestamp=""),
            {"Content-Type": "application/json"},
        ]
        for headers in bad:
            assert (await app.post(body, headers=headers))[0] == 401
        altered = signed_headers(body)
        assert (await app.post(body.replace("guarded", "guardeD"), headers=altered))[0] == 401
        good = signed_headers(body)
        assert (await app.post(body, headers=good))[0] == 200
        # an exact replay of a valid request within the window
        assert (await app.post(body, headers=good))[0] == 401
        # malformed bodies, correctly signed
        for raw, ctype in (
            ("{not json", "application/json"),
            ("[1, 2]", "application/json"),
            ("payload=%7Bbroken", "application/x-www-form-urlencoded"),
            ("payload=%5B%5D", "application/x-www-form-urlencoded"),
            ("[" * 100_000 + "]" * 100_000, "application/json"),
        ):
            status, _ = await app.post(raw, content_type=ctype)
            assert status == 400, raw[:20]
        huge = json.dumps({"type": "event_callback", "pad": "x" * (2 * 1024 * 1024)})
        assert (await app.post(huge))[0] == 413
        await answered(app.fake, said("guarded"))
        # still serving after all that
        assert (await app.event(mention("still here", ts="4000.0002")))[0] == 200
        await answered(app.fake, said("still here"))


async def test_url_verification(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        body = json.dumps({"type": "url_verification", "challenge": "chal-123", "token": "x"})
        status, text = await app.post(body)
        assert status == 200 and "chal-123" in text


async def test_model_text_cannot_ping_channel(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        # the emulator quotes the user's words back; the user's escaped <!channel> arrives
        # as text, and the model's answer containing it must go out escaped
        ev = mention("say &lt;!channel&gt; and &lt;https://evil.example|bank.com&gt;", ts="5000.1")
        await app.event(ev)
        msg = await answered(app.fake, "Turn 1", "bank.com")
        for field in (msg["text"], msg["blocks"][0]["text"]):
            assert "&lt;!channel&gt;" in field
            assert "<!channel>" not in field and "<https://" not in field


async def test_slash_command_acks_fast_and_answers(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        status, text = await app.command("quota")
        assert status == 200
        assert json.loads(text)["response_type"] == "ephemeral"
        # quota output is private: through the response_url, ephemeral
        posts = await app.fake.wait_calls("response_url")
        assert posts[0].params["response_type"] == "ephemeral"
        assert not app.fake.of("chat.postMessage")
        # a question is a public answer in the channel
        status, _ = await app.command("what is two plus two")
        assert status == 200
        await answered(app.fake, said("what is two plus two"))
        post = app.fake.of("chat.postMessage")[0]
        assert post.params["channel"] == "C1" and "thread_ts" not in post.params


async def test_slash_command_ack_does_not_wait_for_a_slow_model(tmp_path: Path) -> None:
    # The model takes 1.5 s (below the harness's idle timeout); the ack comes back before any
    # answer exists, so it did not wait for the model.
    async with slack_app(tmp_path, emulator_config=EmulatorConfig(latency=1.5)) as app:
        status, text = await app.command("a slow question")
        assert status == 200 and "Working on it" in text
        assert not app.fake.of("chat.postMessage")
        await answered(app.fake, said("a slow question"), timeout=20)


async def test_slash_command_private_output_when_bot_cannot_post(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        app.fake.fail("chat.postMessage", "not_in_channel", times=5)
        await app.command("hello from a private channel", channel_id="G9")
        posts = await app.fake.wait_calls("response_url")
        assert posts[0].params["response_type"] == "in_channel"
        await app.adapter.drain(10)
        assert 1 <= len(app.fake.of("response_url")) <= 5


async def test_429_on_update_is_retried_after_retry_after(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        app.fake.fail("chat.postMessage", retry_after=1)
        await app.event(mention("rate limited", ts="6000.1"))
        await answered(app.fake, said("rate limited"))
        calls = [c for c in app.fake.calls if c.method == "chat.postMessage"]
        assert [c.status for c in calls][:2] == [429, 200]


async def test_image_is_uploaded_with_the_three_step_flow(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        await app.event(mention("/image a red cat", ts="7000.1"))
        done = await app.fake.wait_calls("files.completeUploadExternal", timeout=20)
        methods = [c.method for c in app.fake.calls]
        i = methods.index("files.getUploadURLExternal")
        assert methods[i + 1 : i + 3] == ["upload", "files.completeUploadExternal"]
        params = done[0].params
        assert params["channel_id"] == "C1" and params["thread_ts"] == "7000.1"
        title = json.loads(params["files"])[0]["title"]
        assert "AI" in title
        alt = app.fake.of("files.getUploadURLExternal")[0].params["alt_txt"]
        assert "AI-generated" in alt
        upload = app.fake.of("upload")[0]
        assert (
            upload.body[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1") or upload.body
        )


async def test_bad_token_at_start_up_is_a_config_error(tmp_path: Path) -> None:
    async with FakeSlack() as fake, core(tmp_path) as c:
        client = AsyncWebClient(token="xoxb-revoked", base_url=fake.base_url)
        adapter = SlackAdapter(
            conversation=c.conv,
            client=client,
            signing_secret=SIGNING_SECRET,
            inbox=Inbox(store=c.store),
            serve=SlackServe(port=0),
        )
        with pytest.raises(ConfigError) as err:
            async with adapter:
                pass
        assert "invalid_auth" in str(err.value)
        assert "xoxb-revoked" not in str(err.value)


# --- Socket Mode ----------------------------------------------------------------------------


@asynccontextmanager
async def socket_app(tmp_path: Path) -> AsyncIterator[App]:
    async with (
        FakeSlack() as fake,
        core(tmp_path) as c,
        aiohttp.ClientSession() as session,
    ):
        inbox = Inbox(store=c.store)
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
        adapter = SlackAdapter(
            conversation=c.conv,
            client=client,
            signing_secret=SIGNING_SECRET,
            inbox=inbox,
            serve=SlackServe(mode="socket", app_token=APP_TOKEN, grace=5.0),
        )
        async with adapter:
            await fake.wait_socket()
            yield App(fake, adapter, c, session, inbox)


async def test_socket_mode_event_retry_and_reconnect(tmp_path: Path) -> None:
    async with socket_app(tmp_path) as app:
        fake = app.fake
        assert fake.connections_opened == 1
        payload = json.loads(event_body(mention("over the socket", ts="9100.1"), event_id="EvS1"))
        env = await fake.send_envelope("events_api", payload)
        await fake.wait_for(lambda f: f.acked(env) is not None)
        await answered(fake, said("over the socket"))
        # Slack re-sends (as if the ack were lost), then asks the client to reconnect and
        # sends it once more on the new connection: still answered once
        again = await fake.send_envelope(
            "events_api", payload, retry_attempt=1, retry_reason="timeout"
        )
        await fake.wait_for(lambda f: f.acked(again) is not None)
        await fake.disconnect_sockets()
        await fake.wait_for(lambda f: f.connections_opened == 2 and f.sockets_accepted == 2)
        third = await fake.send_envelope("events_api", payload, retry_attempt=2)
        await fake.wait_for(lambda f: f.acked(third) is not None)
        await app.adapter.drain(5)
        answers = [m for m in fake.messages.values() if "over the socket" in str(m.get("text"))]
        assert len(answers) == 1
        assert app.core.emulator.stats.requests["/v1/chat/completions"] == 1


async def test_socket_mode_slash_command_ack_carries_text(tmp_path: Path) -> None:
    async with socket_app(tmp_path) as app:
        fake = app.fake
        env = await fake.send_envelope(
            "slash_commands",
            {
                "command": "/hy",
                "text": "help",
                "user_id": "U1",
                "channel_id": "C1",
                "team_id": "T1",
                "trigger_id": "trig-socket-1",
                "response_url": fake.response_url(),
            },
        )
        await fake.wait_for(lambda f: f.acked(env) is not None)
        ack = fake.acked(env)
        assert ack is not None and "Working on it" in ack["payload"]["text"]
        posts = await fake.wait_calls("response_url")
        assert "/image" in posts[0].params["text"]


async def test_assistant_pane_prompts_title_status_and_answer(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        started = {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": "U1",
                "context": {"channel_id": "C1", "team_id": "T1"},
                "channel_id": "D9",
                "thread_ts": "9200.0001",
            },
            "event_ts": "9200.0002",
        }
        assert (await app.event(started))[0] == 200
        (prompts,) = await app.fake.wait_calls("assistant.threads.setSuggestedPrompts")
        assert prompts.params["channel_id"] == "D9"
        assert prompts.params["thread_ts"] == "9200.0001"
        assert [p["message"] for p in prompts.params["prompts"]][-1] == "/quota"
        msg = {
            "type": "message",
            "channel_type": "im",
            "user": "U1",
            "channel": "D9",
            "text": "tell me about lighthouses",
            "ts": "9200.0005",
            "thread_ts": "9200.0001",
        }
        assert (await app.event(msg))[0] == 200
        answer = await answered(app.fake, said("tell me about lighthouses"))
        assert answer["thread_ts"] == "9200.0001"
        # streamed natively in the assistant thread, and the stream ended
        (start,) = app.fake.of("chat.startStream")
        assert start.params["channel"] == "D9" and start.params["thread_ts"] == "9200.0001"
        await app.fake.wait_calls("chat.stopStream", timeout=15)
        assert not answer["streaming"]
        assert not app.fake.of("chat.postMessage")
        (title,) = await app.fake.wait_calls("assistant.threads.setTitle")
        assert title.params["title"] == "tell me about lighthouses"
        status = app.fake.of("assistant.threads.setStatus")
        assert status and status[0].params["thread_ts"] == "9200.0001"


# --- hygiene, hostile input, limits -----------------------------------------------------------


async def test_no_secret_or_capability_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with slack_app(tmp_path) as app:
        await app.event(mention("log me", ts="9400.1"))
        await answered(app.fake, said("log me"))
        url = app.fake.response_url()
        await app.command("quota", response_url=url)
        await app.fake.wait_calls("response_url")
        body = event_body(mention("forged", ts="9400.2"))
        await app.post(body, headers=signed_headers(body, secret="wrong"))
        app.fake.fail("chat.postMessage", "channel_not_found")
        await app.event(mention("fails", ts="9400.3"))
        await app.fake.wait_for(lambda f: any(c.ok is False for c in f.calls))
        await app.adapter.drain(5)
    text = caplog.text + "".join(str(r.exc_info) for r in caplog.records if r.exc_info)
    for secret in (BOT_TOKEN, SIGNING_SECRET, url, url.rsplit("/", 1)[-1] + '"'):
        assert secret not in text
    assert "forged" not in text  # a refused request's body is not logged


async def test_hostile_unicode_is_answered_without_crash(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        hostile = "👩‍👩‍👧 \u202eRTL\u202c zero\u200bwidth\u2060 e\u0301 𠀀 nul\x00 lone\ud800 end"
        raw = event_body(mention(hostile, ts="9500.1"))  # json.dumps escapes \ud800 as Slack does
        status, _ = await app.post(raw)
        assert status == 200
        msg = await answered(app.fake, "Turn 1", "end")
        assert "👩‍👩‍👧" in msg["text"] and "𠀀" in msg["text"] and "\u202eRTL" in msg["text"]
        # the zero-width space after a would-be mention does not make it one
        await app.event(
            {
                "type": "message",
                "channel_type": "channel",
                "user": "U1",
                "channel": "C1",
                "text": "@hybot\u200b hi",
                "ts": "9500.2",
            }
        )
        await app.adapter.drain(5)
        assert not any("hybot\u200b" in str(m.get("text")) for m in app.fake.messages.values())


async def test_long_answer_is_split_within_slack_limits(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        # about 5,000 tokens of filler: well over one 12,000-character markdown block
        await app.event(mention("[[long=5000]] a long one", ts="9600.1"))
        await app.adapter.drain(30)
        shown = [m for (ch, _), m in app.fake.messages.items() if ch == "C1"]
        assert len(shown) >= 2
        for m in shown:
            assert len(m["text"]) <= 40_000
            assert len(m["blocks"]) <= 50
            md = [b for b in m["blocks"] if b["type"] == "markdown"]
            assert len(md) == 1 and len(md[0]["text"]) <= 12_000
            assert all(
                len(b.get("text", "")) <= 3000 for b in m["blocks"] if b["type"] == "section"
            )
        assert sum(len(m["text"]) for m in shown) > 12_000


async def test_retracted_answer_is_replaced(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        await app.event(mention("touchy [[fault:sensitive]]", ts="9700.1"))
        await app.adapter.drain(10)
        shown = [m for (ch, _), m in app.fake.messages.items() if ch == "C1"]
        assert shown
        assert not any("touchy" in str(m.get("text")) for m in shown)
        assert app.fake.of("chat.update") or app.fake.of("chat.delete")


async def test_a_failure_in_a_channel_is_ephemeral(tmp_path: Path) -> None:
    # The account is out of credit: the sentence is for the asker only, not the channel.
    async with slack_app(tmp_path) as app:
        await app.event(mention("any news? [[fault:credit]]", ts="9800.1"))
        await app.adapter.drain(10)
        assert not final_text(app.fake), "nothing was posted to the channel"
        (ephemeral,) = app.fake.of("chat.postEphemeral")
        assert ephemeral.params["channel"] == "C1"
        assert ephemeral.params["user"]
        assert "credit" in str(ephemeral.params.get("text")).lower()


async def test_429_on_update_is_retried_in_order(tmp_path: Path) -> None:
    async with slack_app(tmp_path, emulator_config=EmulatorConfig(chunk_delay=0.01)) as app:
        app.fake.fail("chat.update", retry_after=1)
        await app.event(mention("[[long=600]] stream it", ts="9800.1"))
        await app.adapter.drain(30)
        updates = [c for c in app.fake.calls if c.method == "chat.update"]
        assert updates[0].status == 429
        assert updates[1].status == 200  # the same operation again, after Retry-After
        final = app.fake.messages[("C1", updates[-1].params["ts"])]
        assert final["text"] == updates[-1].params["text"]
        assert "stream it" in final["text"]


async def test_an_event_the_inbox_cannot_record_is_refused_with_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with slack_app(tmp_path) as app:

        async def broken(*args: Any, **kw: Any) -> bool:
            raise StoreError("database unavailable")

        monkeypatch.setattr(app.inbox, "record", broken)
        status, _ = await app.event(mention("not recorded", ts="9900.1"))
        assert status == 503  # Slack delivers it again later; never acknowledged unrecorded
        monkeypatch.undo()
        status, _ = await app.event(mention("not recorded", ts="9900.1"), retry_num=1)
        assert status == 200
        await answered(app.fake, said("not recorded"))


async def test_slash_image_shows_its_queue_status_then_uploads(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        status, _ = await app.command("image a quiet harbour at night")
        assert status == 200
        (done,) = await app.fake.wait_calls("files.completeUploadExternal", timeout=30)
        assert done.params["channel_id"] == "C1" and "thread_ts" not in done.params
        await app.adapter.drain(10)
        status_posts = [
            c
            for c in app.fake.of("chat.postMessage")
            if "⏳" in c.params["text"] or "🎨" in c.params["text"]
        ]
        assert status_posts, [c.params["text"] for c in app.fake.of("chat.postMessage")]
        # the status message was removed once the picture was up
        assert app.fake.of("chat.delete")
        title = json.loads(done.params["files"])[0]["title"]
        assert title == "AI-generated image"


async def test_regenerate_button_edits_the_pressed_answer(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        await app.event(mention("pick a colour", ts="9950.0001"))
        answer = await answered(app.fake, said("pick a colour"))
        # the Final carries the buttons
        await app.fake.wait_for(
            lambda f: any(b["type"] == "actions" for b in answer.get("blocks", []))
        )
        actions = next(b for b in answer["blocks"] if b["type"] == "actions")
        button = next(e for e in actions["elements"] if e["action_id"] == "hybot_regenerate")
        ts = next(ts for (ch, ts), m in app.fake.messages.items() if m is answer)
        updates_before = len(app.fake.of("chat.update"))
        payload = {
            "type": "block_actions",
            "user": {"id": "U1"},
            "team": {"id": "T1"},
            "channel": {"id": "C1"},
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": "C1",
                "thread_ts": "9950.0001",
            },
            "message": {"ts": ts, "thread_ts": "9950.0001"},
            "trigger_id": "trig-press-1",
            "response_url": app.fake.response_url(),
            "actions": [
                {
                    "action_id": "hybot_regenerate",
                    "value": button["value"],
                    "action_ts": "9950.0100",
                    "type": "button",
                }
            ],
        }
        status, _ = await app.post(
            form_body({"payload": json.dumps(payload)}),
            content_type="application/x-www-form-urlencoded",
        )
        assert status == 200
        await app.fake.wait_for(lambda f: len(f.of("chat.update")) > updates_before)
        await app.adapter.drain(10)
        edited = [c for c in app.fake.of("chat.update")[updates_before:] if c.params["ts"] == ts]
        assert edited  # the pressed message itself was edited, no new answer posted
        assert said("pick a colour") in app.fake.messages[("C1", ts)]["text"]
        assert app.core.emulator.stats.requests["/v1/chat/completions"] == 2


async def test_socket_mode_logs_no_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with socket_app(tmp_path) as app:
        payload = json.loads(event_body(mention("quietly", ts="9960.1"), event_id="EvQ"))
        env = await app.fake.send_envelope("events_api", payload)
        await app.fake.wait_for(lambda f: f.acked(env) is not None)
        await answered(app.fake, said("quietly"))
    assert "apps.connections.open" in caplog.text  # the debug log really was captured
    for secret in (APP_TOKEN, BOT_TOKEN, SIGNING_SECRET):
        assert secret not in caplog.text


async def test_a_retry_whose_first_attempt_died_is_answered(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        ev = mention("second chance", ts="9970.0001")
        # a previous process recorded the event, acknowledged it and died before answering
        assert await app.inbox.record("slack", "msg:T1:C1:9970.0001", event_body(ev))
        status, _ = await app.event(ev, retry_num=1)  # Slack's retry of the same message
        assert status == 200
        await answered(app.fake, said("second chance"))
        # and a further retry, after the answer, is not answered again
        await app.event(ev, retry_num=2)
        await app.adapter.drain(5)
        answers = [m for m in app.fake.messages.values() if "second chance" in str(m.get("text"))]
        assert len(answers) == 1
