"""A database that stays locked: the user gets a sentence, and a re-delivery is answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes.conversation import fake_core

from core.config import AccessConfig, BotConfig
from core.errors import StoreBusy, StoreError
from core.store import SQLiteStore
from core.types import Failure, Final, ImageReady


class FlakyStore(SQLiteStore):
    """A real store whose named calls fail (nothing written) while ``busy`` holds their names:
    ``"<method>"`` raises StoreBusy, ``"<method>:broken"`` a plain StoreError."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.busy: set[str] = set()


def _flaky(name: str) -> Any:
    async def method(self: FlakyStore, *args: Any, **kw: Any) -> Any:
        if name in self.busy:
            raise StoreBusy("locked")
        if f"{name}:broken" in self.busy:
            raise StoreError("disk I/O error")
        return await getattr(SQLiteStore, name)(self, *args, **kw)

    return method


for _step in (
    "begin_delivery",
    "load_context",
    "reserve",
    "finish_turn",
    "refund",
    "settle",
    "put_image_job",
    "set_persona",
    "release_delivery",
):
    setattr(FlakyStore, _step, _flaky(_step))


async def test_a_busy_claim_says_busy_and_the_redelivery_is_answered(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"begin_delivery"}
        events = await c.send("hello", delivery="d1", language="zh")
        assert [type(e) for e in events] == [Failure]
        assert events[0].code == "store_busy" and "数据库正忙" in events[0].user_message
        store.busy = set()
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d1"))


async def test_a_busy_commit_refunds_says_busy_and_releases_the_delivery(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"finish_turn"}
        events = await c.send("hello", delivery="d2")
        assert isinstance(events[-1], Failure) and events[-1].code == "store_busy"
        assert "busy" in events[-1].user_message
        assert await c.counter() == 0  # refunded, nothing was written
        assert [r.outcome for r in await store.ledger()] == ["failed:store_busy"]
        store.busy = set()
        # Released: the re-delivery is answered at once, not after the 15-minute lease ...
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d2"))
        assert [r.outcome for r in await store.ledger()] == ["failed:store_busy", "ok"]
        assert len(c.model.chat_calls) == 2
        # ... and, answered, it is finished: a third delivery of it is a duplicate.
        assert await c.send("hello", delivery="d2") == []


@pytest.mark.parametrize("step", ["load_context", "reserve", "set_persona"])
async def test_a_turn_the_busy_store_stops_before_any_charge_is_released(
    tmp_path: Path, step: str
) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        text = "/persona be brief" if step == "set_persona" else "hello"
        store.busy = {step}
        events = await c.send(text, delivery="d4", language="zh")
        assert [type(e) for e in events][-1:] == [Failure], events
        assert events[-1].code == "store_busy" and "数据库正忙" in events[-1].user_message
        assert await store.ledger() == [] and await c.counter() == 0
        store.busy = set()
        again = await c.send(text, delivery="d4")
        assert again and not any(isinstance(e, Failure) for e in again), again
        assert await c.send(text, delivery="d4") == []  # finished now


async def test_a_busy_commit_whose_refund_fails_too_keeps_the_claim_for_the_lease(
    tmp_path: Path,
) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"finish_turn", "refund"}
        events = await c.send("hello", delivery="d5")
        assert isinstance(events[-1], Failure) and events[-1].code == "store_busy"
        assert await c.counter() > 0  # still reserved: the sweeper refunds it
        store.busy = set()
        # Not released (the reservation is still open): the lease rule as before.
        assert await c.send("hello", delivery="d5") == []
        c.clock.advance(minutes=16)
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d5"))


async def test_a_release_the_busy_store_refuses_leaves_the_claim_for_the_lease(
    tmp_path: Path,
) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"finish_turn", "release_delivery"}
        events = await c.send("hello", delivery="d6")
        assert isinstance(events[-1], Failure) and events[-1].code == "store_busy"
        assert await c.counter() == 0
        store.busy = set()
        assert await c.send("hello", delivery="d6") == []  # still claimed, within the lease
        c.clock.advance(minutes=16)
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d6"))


async def test_a_busy_image_job_is_refunded_and_released(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"put_image_job"}
        events = await c.send("/image a cat", delivery="d7")
        assert isinstance(events[-1], Failure) and events[-1].code == "store_busy"
        assert not any(isinstance(e, ImageReady) for e in events)
        assert await c.counter("images") == 0
        assert [r.outcome for r in await store.ledger()] == ["failed:store_busy"]
        store.busy = set()
        again = await c.send("/image a cat", delivery="d7")
        assert any(isinstance(e, ImageReady) for e in again), again
        assert await c.counter("images") == 1
        assert len(c.model.image_calls) == 1  # the first attempt never reached the model


async def test_an_image_shown_before_the_store_failed_is_not_released(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"settle"}
        events = await c.send("/image a cat", delivery="d8")
        assert any(isinstance(e, ImageReady) for e in events)
        assert isinstance(events[-1], Failure)
        store.busy = set()
        # The user has the image: a re-delivery must not draw (and show) it again.
        assert await c.send("/image a cat", delivery="d8") == []
        assert len(c.model.image_calls) == 1


async def test_a_busy_grant_is_not_released(tmp_path: Path) -> None:
    config = BotConfig(access=AccessConfig(admins=("telegram:boss",)))
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store, config=config) as c:
        store.busy = {"settle"}  # the top-up's second write
        events = await c.send("/admin grant telegram:42 tokens 5", user="boss", delivery="d9")
        assert isinstance(events[-1], Failure) and events[-1].code == "store_busy"
        store.busy = set()
        # Its first write may have landed: a re-delivery must not grant a second time.
        assert await c.send("/admin grant telegram:42 tokens 5", user="boss", delivery="d9") == []


async def test_a_failing_claim_is_a_sentence_not_a_traceback(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "broken.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"begin_delivery:broken"}
        events = await c.send("hello", delivery="d3")
        assert [type(e) for e in events] == [Failure] and events[0].code == "store"
        store.busy = set()
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d3"))
