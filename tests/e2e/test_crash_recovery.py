"""A bot process killed mid-turn (kill -9) loses nothing and charges nothing twice.

The first process runs the real core against an emulator that answers slowly; it is killed
while the model call is in flight. A second "process" (here: a fresh store and core on the same
SQLite file, with the clock moved past the delivery lease and the reservation TTL) then:
sweeps the orphaned reservation, accepts the platform's re-delivery of the same update and
answers it exactly once; a further re-delivery is a duplicate.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from core_harness import FakeClock

from core.config import BotConfig, HunyuanConfig, Secret
from core.conversation import Conversation
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.store import SQLiteStore
from core.types import ConversationKey, Final, Inbound

KEY = ConversationKey("telegram", "bot", "42")
USER = "telegram:42"

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from core.config import BotConfig, HunyuanConfig, Secret
    from core.conversation import Conversation
    from core.hunyuan import HunyuanClient
    from core.store import SQLiteStore
    from core.types import ConversationKey, Inbound

    async def main(db, base_url, key):
        hy = HunyuanConfig(base_url=base_url, api_key=Secret(key), idle_timeout=120,
                           total_timeout=120, max_attempts=1)
        async with SQLiteStore(path=db) as store, HunyuanClient(config=hy) as client, \\
                Conversation(config=BotConfig(hunyuan=hy), store=store, model=client) as conv:
            inbound = Inbound("telegram", "update-7", ConversationKey("telegram", "bot", "42"),
                              "42", "What is the capital of France?", is_dm=True)
            print("SENDING", flush=True)
            async for _ in conv.handle(inbound):
                pass
            print("FINISHED", flush=True)  # never reached: killed mid-call

    asyncio.run(main(*sys.argv[1:]))
    """
)


def inbound() -> Inbound:
    return Inbound("telegram", "update-7", KEY, "42", "What is the capital of France?", is_dm=True)


async def test_kill_9_mid_turn_then_redelivery_answers_once(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    slow = EmulatorConfig(latency=60.0)
    async with Emulator(config=slow) as slow_emu:
        # White-box spy: the emulator (in this process) took the child's chat into a slot.
        in_flight = asyncio.Event()
        enter_chat = slow_emu._state.enter_chat

        def entered(*args, **kwargs):
            took = enter_chat(*args, **kwargs)
            if took:
                in_flight.set()
            return took

        slow_emu._state.enter_chat = entered
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            str(db),
            slow_emu.openai_base_url,
            slow.api_key,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"SENDING"
        # Wait until the model call is in flight (so the quota reservation exists).
        await asyncio.wait_for(in_flight.wait(), 30)
        assert any(slow_emu.stats.chats_in_flight.values())
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL

    # The database survived the kill intact, with the reservation still held.
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0

    healthy = EmulatorConfig()
    clock = FakeClock(datetime.now(UTC))
    async with Emulator(config=healthy) as emu:
        hy = HunyuanConfig(base_url=emu.openai_base_url, api_key=Secret(healthy.api_key))
        async with (
            SQLiteStore(path=db) as store,
            HunyuanClient(config=hy) as client,
            Conversation(
                config=BotConfig(hunyuan=hy), store=store, model=client, clock=clock
            ) as conv,
        ):
            day = clock().astimezone(conv.quota.timezone).strftime("%Y-%m-%d")
            counter = f"user:{USER}|tokens|d:{day}"
            assert (await store.counters([counter]))[counter] > 0  # held by the dead process

            # A re-delivery while the first attempt might still be running is a duplicate.
            clock.advance(minutes=1)
            assert [e async for e in conv.handle(inbound())] == []

            # Past the lease and the reservation TTL: the sweeper frees the orphaned
            # reservation, and the re-delivered update is answered, once.
            clock.advance(minutes=16)
            assert await conv.sweep() == 1
            assert (await store.counters([counter]))[counter] == 0
            events = [e async for e in conv.handle(inbound())]
            finals = [e for e in events if isinstance(e, Final)]
            assert len(finals) == 1 and "capital of France" in finals[0].text
            assert [e async for e in conv.handle(inbound())] == []

            ledger = await store.ledger(user_id=USER)
            assert [row.outcome for row in ledger] == ["swept", "ok"]
            charged = sum(row.tokens_in + row.tokens_out for row in ledger)
            # The answer is charged to the day it was answered in: 17 minutes later, which is
            # the next quota day when the test runs just before midnight in Asia/Shanghai.
            answered_day = clock().astimezone(conv.quota.timezone).strftime("%Y-%m-%d")
            answered = f"user:{USER}|tokens|d:{answered_day}"
            assert (await store.counters([answered]))[answered] == charged > 0
            if answered != counter:
                assert (await store.counters([counter]))[counter] == 0
            turns = await store.recent_turns(str(KEY), 0, limit=10)
            assert [t.role for t in turns] == ["user", "assistant"]
    assert emu.stats.requests["/v1/chat/completions"] == 1
