"""The conversation core over the scripted :class:`~fakes.model.FakeModel` and a SQLite file.

For core unit tests and the hostile-input suite: no HTTP, no emulator. ``send`` runs one
delivery to the end and returns its events; ``stream`` gives the raw event stream so a test can
stop pulling (an adapter that failed to render an event closes the stream).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.config import BotConfig
from core.conversation import Conversation
from core.store import SQLiteStore
from core.types import Action, ConversationKey, Inbound, ReplyEvent
from fakes.model import FakeModel

__all__ = ["FakeClock", "FakeCore", "fake_core", "make_inbound"]

_ids = itertools.count(1)


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 4, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def make_inbound(
    text: str,
    *,
    user: str = "u1",
    chat: str = "c1",
    thread: str = "",
    delivery: str | None = None,
    platform: str = "telegram",
    is_dm: bool = True,
    mentioned: bool = False,
    language: str = "",
    user_name: str = "",
    mentions: tuple[str, ...] = (),
    action: Action | None = None,
    command_prefix: str = "/",
) -> Inbound:
    return Inbound(
        platform=platform,
        delivery_id=delivery or f"d{next(_ids)}",
        key=ConversationKey(platform, "bot", chat, thread, ""),
        user_id=user,
        text=text,
        channel_id=chat,
        user_name=user_name,
        is_dm=is_dm,
        mentioned=mentioned,
        language=language,
        mentions=mentions,
        action=action,
        command_prefix=command_prefix,
    )


@dataclass
class FakeCore:
    conv: Conversation
    store: SQLiteStore
    model: FakeModel
    clock: FakeClock
    config: BotConfig

    async def send(self, text: str, **kw: Any) -> list[ReplyEvent]:
        return [event async for event in self.conv.handle(make_inbound(text, **kw))]

    async def deliver(self, inbound: Inbound) -> list[ReplyEvent]:
        return [event async for event in self.conv.handle(inbound)]

    def stream(self, text: str, **kw: Any) -> AsyncIterator[ReplyEvent]:
        return self.conv.handle(make_inbound(text, **kw))

    async def counter(self, metric: str = "tokens", user: str = "telegram:u1") -> int:
        day = self.clock().astimezone(self.conv.quota.timezone).strftime("%Y-%m-%d")
        name = f"user:{user}|{metric}|d:{day}"
        return (await self.store.counters([name]))[name]


@asynccontextmanager
async def fake_core(
    tmp_path: Path,
    *,
    config: BotConfig | None = None,
    model: FakeModel | None = None,
    clock: FakeClock | None = None,
    store: SQLiteStore | None = None,
) -> AsyncIterator[FakeCore]:
    """The core over ``store`` (default: a fresh SQLite file in ``tmp_path``), opened and
    closed here."""
    cfg = config or BotConfig()
    fake = model or FakeModel()
    clk = clock or FakeClock()
    async with (
        store or SQLiteStore(path=tmp_path / "core.db") as store,
        Conversation(config=cfg, store=store, model=fake, clock=clk) as conv,
    ):
        yield FakeCore(conv, store, fake, clk, cfg)
