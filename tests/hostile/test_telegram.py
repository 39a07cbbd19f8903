"""Hostile input to the Telegram adapter: whatever text and entities an update carries, and
whatever a model answers, conversion and formatting never raise, offsets stay inside the text
and mentions are found by entity only; the webhook answers arbitrary bodies with 4xx, never
500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from fakes.telegram import BOT_ID, BOT_USERNAME, FakeTelegram, MemoryInbox
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telegram import Update

from adapters.telegram.app import TelegramAdapter, TelegramOptions
from adapters.telegram.convert import BotIdentity, to_inbound, utf16_len
from adapters.telegram.render import format_markdown
from core.types import Inbound

ME = BotIdentity(id=BOT_ID, username=BOT_USERNAME)
_TG = FakeTelegram()  # payload builders only

hostile_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",))
    | st.sampled_from("@/_*`[]()\u200b\u202e👩‍👧𠀀"),
    min_size=1,
    max_size=80,
)
entity = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["mention", "bot_command", "text_mention", "bold", "url"]),
        "offset": st.integers(min_value=0, max_value=90),
        "length": st.integers(min_value=1, max_value=40),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    text=hostile_text,
    entities=st.lists(entity, max_size=4),
    chat=st.sampled_from([42, -100123]),
    thread=st.none() | st.integers(min_value=1, max_value=9),
)
def test_convert_never_raises_and_mentions_need_entities(
    text: str, entities: list[dict[str, Any]], chat: int, thread: int | None
) -> None:
    for e in entities:
        if e["type"] == "text_mention":
            e["user"] = _TG.user(7)
    data = _TG.message_update(chat_id=chat, text=text, entities=entities, thread_id=thread)
    update = Update.de_json(data, None)
    assert update is not None
    inbound = to_inbound(update, me=ME)
    if inbound is None:
        return
    assert inbound.delivery_id == str(data["update_id"])
    if inbound.mentioned:
        assert any(e["type"] in ("mention", "text_mention") for e in entities)
    if chat < 0:
        assert inbound.mentioned or inbound.text.startswith("/") or inbound.reply_to_bot


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_formatting_never_raises_and_entities_stay_inside(text: str) -> None:
    plain, entities = format_markdown(text)
    size = utf16_len(plain)
    for e in entities:
        assert 0 <= e.offset and e.offset + e.length <= size


class _Silent:
    async def handle(self, inbound: Inbound) -> Any:
        return
        yield  # an async generator that answers nothing


async def _post_all(bodies: list[bytes]) -> list[int]:
    async with FakeTelegram() as tg:
        options = TelegramOptions(
            token=tg.token,
            base_url=tg.base_url,
            mode="webhook",
            webhook_secret="s",
            webhook_port=0,
            register_commands=False,
        )
        async with (
            TelegramAdapter(conversation=_Silent(), inbox=MemoryInbox(), options=options) as bot,
            aiohttp.ClientSession() as http,
        ):
            url = f"http://127.0.0.1:{bot.webhook_port}/telegram"
            statuses = []
            for body in bodies:
                headers = {"X-Telegram-Bot-Api-Secret-Token": "s"}
                async with http.post(url, data=body, headers=headers) as resp:
                    statuses.append(resp.status)
            return statuses


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bodies=st.lists(
        st.binary(max_size=200)
        | st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()),
        min_size=1,
        max_size=20,
    )
)
def test_webhook_answers_any_body_without_a_500(bodies: list[bytes]) -> None:
    statuses = asyncio.run(_post_all(bodies))
    assert all(status in (200, 400) for status in statuses), statuses
