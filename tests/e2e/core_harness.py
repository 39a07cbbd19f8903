"""A small harness: the real core over the real client, the emulator and a SQLite file."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.config import BotConfig, HunyuanConfig, Secret
from core.conversation import Conversation
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.store import SQLiteStore
from core.types import ConversationKey, Inbound, ReplyEvent

_ids = itertools.count(1)


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 4, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Core:
    conv: Conversation
    store: SQLiteStore
    emulator: Emulator
    clock: FakeClock
    client: HunyuanClient

    async def send(self, text: str, **kw: Any) -> list[ReplyEvent]:
        return [event async for event in self.conv.handle(inbound(text, **kw))]


def inbound(
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
    per_user: bool = False,
) -> Inbound:
    key = ConversationKey(platform, "bot", chat, thread, user if per_user else "")
    return Inbound(
        platform=platform,
        delivery_id=delivery or f"d{next(_ids)}",
        key=key,
        user_id=user,
        text=text,
        channel_id=chat,
        is_dm=is_dm,
        mentioned=mentioned,
        language=language,
    )


@asynccontextmanager
async def core(
    tmp_path: Path,
    *,
    config: BotConfig | None = None,
    emulator_config: EmulatorConfig | None = None,
    clock: FakeClock | None = None,
    tweak_hunyuan: Callable[[HunyuanConfig], HunyuanConfig] | None = None,
) -> AsyncIterator[Core]:
    emu_cfg = emulator_config or EmulatorConfig()
    clock = clock or FakeClock()
    async with Emulator(config=emu_cfg) as emu:
        cfg = config or BotConfig()
        hy = replace(
            cfg.hunyuan,
            base_url=emu.openai_base_url,
            api_key=Secret(emu_cfg.api_key),
            native_endpoint=emu.native_endpoint,
            secret_id=Secret(emu_cfg.secret_id),
            secret_key=Secret(emu_cfg.secret_key),
            max_attempts=2,
            backoff_base=0.01,
            backoff_cap=0.02,
            idle_timeout=2.0,
            image_poll_interval=0.02,
        )
        if tweak_hunyuan:
            hy = tweak_hunyuan(hy)
        cfg = replace(cfg, hunyuan=hy)
        async with (
            SQLiteStore(path=tmp_path / "core.db") as store,
            HunyuanClient(config=hy) as client,
            Conversation(config=cfg, store=store, model=client, clock=clock) as conv,
        ):
            yield Core(conv, store, emu, clock, client)
