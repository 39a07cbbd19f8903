"""Parallel conversations, serialised turns within one, and the image queue, ordered by
events (the fake model's gates), not by sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.conversation import fake_core
from fakes.model import FakeModel, Gate

from core.config import BotConfig, ImageConfig
from core.store import SQLiteStore
from core.types import Failure, Final, ImageQueued, ImageReady, Notice, ReplyEvent


async def settle_loop(rounds: int = 20) -> None:
    """Let every runnable task run (no time passes for anyone)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a state (store calls run on the store's thread, so this polls the state;
    nothing waits for a duration). The test timeout bounds it."""
    while not condition():
        await asyncio.sleep(0.005)


async def collect(stream: AsyncIterator[ReplyEvent], into: list[ReplyEvent]) -> None:
    async for event in stream:
        into.append(event)


async def test_different_conversations_run_in_parallel_up_to_the_governor(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    gates = [Gate(release) for _ in range(6)]
    model = FakeModel()
    for gate in gates:
        model.add_chat("answer ", gate, "done")
    async with fake_core(tmp_path, model=model, config=BotConfig(chat_concurrency=5)) as c:
        tasks = [asyncio.create_task(c.send("hi", chat=f"chat{i}")) for i in range(6)]
        await asyncio.wait_for(asyncio.gather(*(g.reached.wait() for g in gates[:5])), 30)
        await until(lambda: c.conv.chat_governor.waiting == 1)  # the sixth waits for a slot
        assert len(model.chat_calls) == 5 and c.conv.chat_governor.running == 5
        release.set()
        results = await asyncio.gather(*tasks)
        assert all(any(isinstance(e, Final) for e in r) for r in results)
        assert len(model.chat_calls) == 6


async def test_turns_of_one_conversation_are_serialised(tmp_path: Path) -> None:
    release = asyncio.Event()
    gate = Gate(release)
    model = FakeModel().add_chat("first answer", gate)
    async with fake_core(tmp_path, model=model) as c:
        first = asyncio.create_task(c.send("one"))
        await asyncio.wait_for(gate.reached.wait(), 30)
        second = asyncio.create_task(c.send("two"))
        await settle_loop()
        assert len(model.chat_calls) == 1  # "two" waits for "one" to finish
        release.set()
        await first
        await second
        roles = [m.role for m in model.chat_calls[1].messages]
        assert roles == ["user", "assistant", "user"]  # never two user turns in a row


async def test_images_queue_fairly_and_a_queued_one_can_be_cancelled(tmp_path: Path) -> None:
    release = asyncio.Event()
    gate = Gate(release)
    model = FakeModel().add_image(gate)
    async with fake_core(tmp_path, model=model) as c:
        got: dict[str, list[ReplyEvent]] = {"a": [], "b": [], "c": []}
        first = asyncio.create_task(collect(c.stream("/image one", user="a", chat="a"), got["a"]))
        await asyncio.wait_for(gate.reached.wait(), 30)
        second = asyncio.create_task(collect(c.stream("/image two", user="b", chat="b"), got["b"]))
        third = asyncio.create_task(collect(c.stream("/image three", user="c", chat="c"), got["c"]))
        await until(lambda: any(isinstance(e, ImageQueued) for e in got["b"] + got["c"]))
        await until(lambda: c.conv.image_governor.waiting == 2)
        await until(lambda: all(any(isinstance(e, ImageQueued) for e in got[u]) for u in "bc"))
        assert [e.position for e in got["b"] if isinstance(e, ImageQueued)] == [1]
        assert [e.position for e in got["c"] if isinstance(e, ImageQueued)] == [2]
        cancel = await c.send("/cancel", user="c", chat="c")
        assert any(isinstance(e, Notice) for e in cancel)
        release.set()
        await asyncio.gather(first, second, third)
        assert any(isinstance(e, ImageReady) for e in got["a"])
        assert any(isinstance(e, ImageReady) for e in got["b"])
        assert not any(isinstance(e, ImageReady) for e in got["c"])
        outcomes = {r.user_id: r.outcome for r in await c.store.ledger()}
        assert outcomes == {"telegram:a": "ok", "telegram:b": "ok", "telegram:c": "cancelled"}
        assert [call.prompt for call in model.image_calls] == ["one", "two"]


class SlowReserveStore(SQLiteStore):
    """A real store whose ``reserve`` waits for ``release`` after committing."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def reserve(self, *args: Any, **kw: Any) -> Any:
        outcome = await super().reserve(*args, **kw)
        self.reached.set()
        await self.release.wait()
        return outcome


@pytest.mark.parametrize("text", ["/image a fox", "a question"])
async def test_a_turn_cancelled_while_reserving_refunds_at_once(tmp_path: Path, text: str) -> None:
    store = SlowReserveStore(path=tmp_path / "slow.db")
    async with fake_core(tmp_path, store=store) as c:
        task = asyncio.create_task(c.send(text))
        await asyncio.wait_for(store.reached.wait(), 30)
        task.cancel()  # SIGTERM's drain, while the reservation is being committed
        store.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [r.outcome for r in await store.ledger()] == ["cancelled"]
        assert await c.counter() == 0 and await c.counter("images") == 0
        assert c.model.chat_calls == [] and c.model.image_calls == []


async def test_a_full_image_queue_refunds_and_says_so(tmp_path: Path) -> None:
    cfg = BotConfig(images=ImageConfig(max_queue=0))
    async with fake_core(tmp_path, config=cfg) as c:
        events = await c.send("/image a fox")
        assert [e.code for e in events if isinstance(e, Failure)] == ["busy"]
        assert [r.outcome for r in await c.store.ledger()] == ["failed:busy"]
        [job] = await c.store.image_jobs(user_id="telegram:u1")
        assert job.status == "failed"
