"""Thread follow-ups survive a restart: an adapter that does not know a thread asks Slack
(``conversations.replies``) whether the bot posted there, once per thread, and treats any
failure of that question as "not a follow-up"."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from core_harness import Core, core
from fakes.slack import (
    BOT_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    FakeSlack,
    event_body,
    signed_headers,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.app import SlackAdapter, SlackServe
from adapters.slack.convert import SlackOptions
from core.inbox import Inbox


@dataclass
class World:
    """One fake Slack and one core (store, emulator) that outlive adapter restarts."""

    fake: FakeSlack
    core: Core
    session: aiohttp.ClientSession
    inbox: Inbox

    @asynccontextmanager
    async def adapter(self, options: SlackOptions | None = None) -> AsyncIterator[SlackAdapter]:
        """A fresh adapter process over the same Slack and store (a restart)."""
        adapter = SlackAdapter(
            conversation=self.core.conv,
            client=AsyncWebClient(token=BOT_TOKEN, base_url=self.fake.base_url),
            signing_secret=SIGNING_SECRET,
            inbox=self.inbox,
            options=options or SlackOptions(),
            serve=SlackServe(port=0, grace=5.0),
        )
        async with adapter:
            yield adapter

    async def event(self, adapter: SlackAdapter, event: dict[str, Any]) -> int:
        body = event_body(event)
        url = f"http://127.0.0.1:{adapter.port}/slack/events"
        async with self.session.post(url, data=body.encode(), headers=signed_headers(body)) as resp:
            return resp.status


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with (
        FakeSlack() as fake,
        core(tmp_path) as c,
        aiohttp.ClientSession() as session,
    ):
        yield World(fake, c, session, Inbox(store=c.store))


def mention(text: str, *, ts: str, channel: str = "C1") -> dict[str, Any]:
    return {
        "type": "app_mention",
        "user": "U1",
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
    }


def follow_up(text: str, *, ts: str, thread: str, channel: str = "C1") -> dict[str, Any]:
    return {
        "type": "message",
        "channel_type": "channel",
        "user": "U1",
        "text": text,
        "ts": ts,
        "thread_ts": thread,
        "channel": channel,
    }


def said(text: str) -> str:
    return f'You just said: "{text}"'


async def answered(fake: FakeSlack, *needles: str) -> dict[str, Any]:
    def find(f: FakeSlack) -> dict[str, Any] | None:
        for m in f.messages.values():
            if all(n in str(m.get("text")) for n in needles):
                return m
        return None

    await fake.wait_for(lambda f: find(f) is not None, timeout=15)
    found = find(fake)
    assert found is not None
    return found


def shown_with(fake: FakeSlack, needle: str) -> list[dict[str, Any]]:
    return [m for m in fake.messages.values() if needle in str(m.get("text"))]


async def test_a_follow_up_after_a_restart_continues_the_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        async with w.adapter() as first:
            assert await w.event(first, mention("first", ts="100.0001")) == 200
            await answered(w.fake, "Turn 1", said("first"))
            await first.drain(5)
        assert not w.fake.of("conversations.replies")  # a mention needs no look-up
        async with w.adapter() as second:  # a new process: it never saw that thread
            ev = follow_up("second", ts="100.0005", thread="100.0001")
            assert await w.event(second, ev) == 200
            turn2 = await answered(w.fake, "Turn 2", said("second"))
            assert 'You first said: "first"' in turn2["text"]
            assert turn2["thread_ts"] == "100.0001"
            # and the next one is known: no second look-up for this thread
            ev = follow_up("third", ts="100.0009", thread="100.0001")
            assert await w.event(second, ev) == 200
            await answered(w.fake, "Turn 3", said("third"))
            await second.drain(5)
        (lookup,) = w.fake.of("conversations.replies")
        assert lookup.params["channel"] == "C1" and lookup.params["ts"] == "100.0001"


async def test_a_thread_the_bot_never_posted_in_is_ignored_and_asked_about_once(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        w.fake.add_history("C1", "200.0001", user="U2", ts="200.0001", text="lunch?")
        w.fake.add_history("C1", "200.0001", user="U3", ts="200.0002", text="sure")
        # another app's bot posted there too: not us
        w.fake.add_history("C1", "200.0001", user="UOTHER", bot_id="BOTHER", ts="200.0003")
        async with w.adapter() as adapter:
            for n in range(3):
                ev = follow_up(f"chatter {n}", ts=f"200.001{n}", thread="200.0001")
                assert await w.event(adapter, ev) == 200  # the look-up ran before the ack
            await adapter.drain(5)
        assert len(w.fake.of("conversations.replies")) == 1
        assert not w.fake.of("chat.postMessage")
        assert w.core.emulator.stats.requests["/v1/chat/completions"] == 0


async def test_concurrent_look_ups_of_one_thread_share_one_call(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.fake.add_history("C1", "300.0001", user="U1", ts="300.0001", text="a question")
        w.fake.add_history(
            "C1", "300.0001", user=BOT_USER, bot_id="BBOT", ts="300.0002", text="an answer"
        )
        async with w.adapter() as adapter:
            w.fake.gate = gate = asyncio.Event()  # hold Slack's answer
            # two events of one unknown thread at once (both asks start in one loop turn)
            asks = [asyncio.create_task(adapter._bot_in_thread("C1", "300.0001")) for _ in range(2)]
            await w.fake.wait_for(lambda f: f.held >= 1)
            w.fake.gate = None
            gate.set()
            assert await asyncio.gather(*asks) == [True, True]
            # then a follow-up through the front door: known, no further call
            ev = follow_up("again", ts="300.0010", thread="300.0001")
            assert await w.event(adapter, ev) == 200
            await answered(w.fake, said("again"))
            await adapter.drain(5)
        assert w.fake.held == 1
        assert len(w.fake.of("conversations.replies")) == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [("missing_scope", "missing_scope"), ("ratelimited", "rate limited")],
)
async def test_a_failed_look_up_means_not_a_follow_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: str, expected: str
) -> None:
    caplog.set_level(logging.INFO)
    async with world(tmp_path) as w:
        async with w.adapter() as first:
            await w.event(first, mention("before", ts="400.0001"))
            await answered(w.fake, said("before"))
            await first.drain(5)
        async with w.adapter() as second:
            w.fake.fail("conversations.replies", error)
            ev = follow_up("lost", ts="400.0005", thread="400.0001")
            assert await w.event(second, ev) == 200
            # not asked again for a while, even though the bot is in fact in the thread
            ev = follow_up("lost again", ts="400.0006", thread="400.0001")
            assert await w.event(second, ev) == 200
            # a mention still works, and makes the thread known again
            await w.event(second, mention("back", ts="400.0007"))
            await answered(w.fake, said("back"))
            await second.drain(5)
        assert not shown_with(w.fake, "lost")
        assert len([c for c in w.fake.calls if c.method == "conversations.replies"]) == 1
        lines = [r for r in caplog.records if "thread check" in r.getMessage()]
        assert len(lines) == 1, caplog.text
        assert expected in lines[0].getMessage()
        assert BOT_TOKEN not in caplog.text


async def test_follow_ups_switched_off_ask_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        options = SlackOptions(thread_follow_ups=False)
        async with w.adapter(options) as first:
            await w.event(first, mention("hi", ts="500.0001"))
            await answered(w.fake, said("hi"))
            await first.drain(5)
        async with w.adapter(options) as second:
            ev = follow_up("unmentioned", ts="500.0005", thread="500.0001")
            assert await w.event(second, ev) == 200
            await second.drain(5)
        assert not w.fake.of("conversations.replies")
        assert not shown_with(w.fake, "unmentioned")
