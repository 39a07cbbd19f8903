"""Catalogue rows 12 and 17 for Slack (platforms.md §5.3).

Row 12: long answers — ~10k characters of prose full of Slack's control characters, 5,000
emoji, CJK, a code block across the split — reach Slack whole, split into messages within
every Slack limit, code fences balanced in each. Row 17: a slash command while the model
takes 10 s is acknowledged at once (with the ack text), and the answer follows through the
command's ``response_url`` within its budget of 5 posts.

The real core and slack-bolt / slack_sdk against the Slack fake; the model is the scripted
fake (tests/fakes/model.py), since the emulator quotes at most 60 characters of the user."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes.model import FakeModel, Gate
from fakes.slack import (
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
from core.conversation import Conversation
from core.inbox import Inbox
from core.store import SQLiteStore

FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # 👩‍👩‍👧: five code points, one emoji


@dataclass
class App:
    fake: FakeSlack
    adapter: SlackAdapter
    model: FakeModel
    session: aiohttp.ClientSession

    async def mention(self, text: str, *, ts: str) -> int:
        event = {
            "type": "app_mention",
            "user": "U1",
            "text": f"<@{BOT_USER}> {text}",
            "ts": ts,
            "channel": "C1",
        }
        body = event_body(event)
        url = f"http://127.0.0.1:{self.adapter.port}/slack/events"
        async with self.session.post(url, data=body.encode(), headers=signed_headers(body)) as r:
            return r.status

    async def command(self, text: str, *, channel: str, response_url: str) -> tuple[int, str]:
        form = {
            "command": "/hy",
            "text": text,
            "user_id": "U1",
            "user_name": "alice",
            "channel_id": channel,
            "team_id": "T1",
            "trigger_id": f"trig-{time.monotonic_ns()}",
            "response_url": response_url,
        }
        body = form_body(form)
        url = f"http://127.0.0.1:{self.adapter.port}/slack/events"
        headers = signed_headers(body, content_type="application/x-www-form-urlencoded")
        async with self.session.post(url, data=body.encode(), headers=headers) as r:
            return r.status, await r.text()


@asynccontextmanager
async def slack_app(tmp_path: Path) -> AsyncIterator[App]:
    model = FakeModel()
    async with (
        FakeSlack() as fake,
        SQLiteStore(path=tmp_path / "core.db") as store,
        Conversation(config=BotConfig(), store=store, model=model) as conv,
        aiohttp.ClientSession() as session,
    ):
        adapter = SlackAdapter(
            conversation=conv,
            client=AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url),
            signing_secret=SIGNING_SECRET,
            inbox=Inbox(store=store),
            serve=SlackServe(port=0, grace=30.0),
        )
        async with adapter:
            yield App(fake, adapter, model, session)


def prose() -> str:
    """About 10,000 characters of Markdown prose whose escaped form is far longer (every
    ``&``, ``<``, ``>`` grows to ``&amp;`` / ``&lt;`` / ``&gt;``)."""
    para = (
        "R&D <&> Q&A: when a < b && b > c, then **a < c** & <!channel> is just text; "
        "see <https://example.com|here> & <@U123> too."
    )
    paras = [f"{i}. {para}" for i in range(80)]
    return "\n\n".join(paras)


def emoji() -> str:
    """5,000 emoji: ZWJ families (five code points each) in lines of 50, and a run without any
    space or line break, so that a cut has to fall between grapheme clusters."""
    lines = [FAMILY * 50 for _ in range(60)]
    return "\n".join(lines) + "\n\n" + FAMILY * 2000


def cjk() -> str:
    """About 15,000 CJK characters (Ext-B included), in long paragraphs without spaces."""
    sentence = "混元大模型回答用户的问题，并且把很长的答案分成几条消息发送。𠀀𠀁"
    return "\n\n".join(sentence * 50 for _ in range(10))


def code() -> str:
    """Prose, then a ```python block of about 20,000 characters, then prose."""
    body = "\n".join(f"value_{i:04d} = compute({i}) & mask << 2  # <{i}>" for i in range(450))
    return f"Here is the program:\n\n```python\n{body}\n```\n\nThat is all & done."


def unescape(text: str) -> str:
    return html.unescape(text)


def normal(text: str) -> str:
    """The content of a text regardless of how it was split: fences and whitespace dropped."""
    return re.sub(r"\s+", "", re.sub(r"```[a-z]*", "", text))


def fences_balanced(text: str) -> bool:
    return sum(1 for line in text.splitlines() if line.lstrip().startswith("```")) % 2 == 0


def shown(fake: FakeSlack) -> list[dict[str, Any]]:
    """The messages left in C1, in posting order."""
    msgs = [(float(ts), m) for (ch, ts), m in fake.messages.items() if ch == "C1"]
    return [m for _, m in sorted(msgs, key=lambda x: x[0])]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("name", "make", "min_parts"),
    [("prose", prose, 2), ("emoji", emoji, 3), ("cjk", cjk, 2), ("code", code, 2)],
)
async def test_long_answers_split_within_slack_limits(
    tmp_path: Path, name: str, make: Any, min_parts: int
) -> None:
    answer = make()
    async with slack_app(tmp_path) as app:
        app.model.answer(answer, pieces=4)
        assert await app.mention(f"a long {name} answer please", ts="100.0001") == 200
        await app.fake.wait_for(
            lambda f: any(
                m.get("blocks") and any(b["type"] == "actions" for b in m["blocks"])
                for m in shown(f)
            ),
            timeout=60,
        )
        await app.adapter.drain(30)
        parts = shown(app.fake)
    assert len(parts) >= min_parts, [len(m["text"]) for m in parts]
    for m in parts:
        assert len(m["text"]) <= 40_000
        blocks = m["blocks"]
        assert len(blocks) <= 50
        md = [b for b in blocks if b["type"] == "markdown"]
        assert len(md) == 1 and len(md[0]["text"]) <= 12_000
        assert all(len(b["text"]["text"]) <= 3_000 for b in blocks if b["type"] == "section")
        assert md[0]["text"] == m["text"]
        # escaped: no control character of Slack's survives as such
        assert "<" not in m["text"] and ">" not in m["text"]
        assert fences_balanced(unescape(m["text"])), m["text"][:80]
        assert m["thread_ts"] == "100.0001"
    whole = "".join(unescape(m["text"]) for m in parts)
    assert normal(whole) == normal(answer)  # all of it, in order, nothing else
    if name == "code":  # the block was cut: closed in one part and reopened in the next
        assert sum(unescape(m["text"]).count("```python") for m in parts) >= 2
    if name == "emoji":
        for m in parts:  # never cut inside an emoji
            assert unescape(m["text"]).replace(FAMILY, "").strip() == "", m["text"][:40]


async def test_slash_command_under_a_ten_second_model_acks_at_once(tmp_path: Path) -> None:
    async with slack_app(tmp_path) as app:
        release = asyncio.Event()
        gate = Gate(release)
        # the model says nothing for 10 s, then answers
        app.model.add_chat(gate, "The slow answer ", "arrives at last.")
        timer = asyncio.get_running_loop().call_later(10, release.set)
        # a private channel the bot is not in: the answer can only go through the response_url
        app.fake.fail("chat.postMessage", "not_in_channel")
        url = app.fake.response_url()
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, text = await app.command("take your time", channel="G9", response_url=url)
        acked_after = loop.time() - started
        assert status == 200
        ack = json.loads(text)
        assert ack["response_type"] == "ephemeral" and "Working on it" in ack["text"]
        assert not release.is_set()  # the ack did not wait for the model …
        assert acked_after < 3.0  # … and came within Slack's 3 seconds (row 17)
        await gate.reached.wait()
        rid = url.rsplit("/", 1)[-1]
        await app.fake.wait_for(
            lambda f: any("arrives at last" in str(p.get("text")) for p in f.response_posts[rid]),
            timeout=40,
        )
        await app.adapter.drain(10)
        timer.cancel()
        posts = app.fake.response_posts[rid]
        assert 1 <= len(posts) <= 5
        assert not [c for c in app.fake.calls if c.method == "response_url" and c.status != 200]
        last = posts[-1]
        assert "The slow answer arrives at last." in last["text"]
        assert last["response_type"] == "in_channel"
        assert len(posts) == 1 or last["replace_original"] is True  # one answer, edited
        assert not app.fake.of("chat.postMessage")


async def test_a_slowly_streamed_answer_keeps_the_last_response_url_use_for_itself(
    tmp_path: Path,
) -> None:
    # The model trickles its answer: each draft is one more post to the response_url, and
    # Slack allows five. The last one must be left for the finished answer.
    async with slack_app(tmp_path) as app:
        gates = [asyncio.Event() for _ in range(8)]
        items: list[Any] = []
        for i, gate in enumerate(gates):
            items += [Gate(gate), f"word{i} "]
        app.model.add_chat(*items)
        app.fake.fail("chat.postMessage", "not_in_channel")
        url = app.fake.response_url()
        rid = url.rsplit("/", 1)[-1]
        status, _ = await app.command("trickle please", channel="G9", response_url=url)
        assert status == 200
        for i in range(4):  # the first draft, then three longer ones: four posts
            gates[i].set()
            await app.fake.wait_for(lambda f, n=i + 1: len(f.response_posts[rid]) == n)
            assert f"word{i}" in app.fake.response_posts[rid][-1]["text"]
        # a fifth draft: the adapter is asked to show it, and must not spend the last use
        drafted = asyncio.Event()
        edit = app.adapter.edit_text

        async def watched(ref: Any, text: str, **kw: Any) -> None:
            await edit(ref, text, **kw)
            if "word4" in text:
                drafted.set()

        app.adapter.edit_text = watched  # type: ignore[method-assign]
        gates[4].set()
        await drafted.wait()
        assert len(app.fake.response_posts[rid]) == 4
        for gate in gates[5:]:
            gate.set()

        def final(f: FakeSlack) -> bool:
            return any(
                "word7" in str(p.get("text"))
                and any(b["type"] == "actions" for b in p.get("blocks", []))
                for p in f.response_posts[rid]
            )

        await app.fake.wait_for(final, timeout=20)
        await app.adapter.drain(10)
        posts = app.fake.response_posts[rid]
        assert len(posts) == 5
        assert " ".join(f"word{i}" for i in range(8)) in posts[-1]["text"]
        assert not [c for c in app.fake.calls if c.method == "response_url" and c.status != 200]
