"""A database that stays locked: the user gets a sentence, and a re-delivery is answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakes.conversation import fake_core

from core.errors import StoreBusy, StoreError
from core.store import SQLiteStore
from core.types import Failure, Final


class FlakyStore(SQLiteStore):
    """A real store whose named calls raise StoreBusy (nothing written) while ``busy`` holds
    their names."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.busy: set[str] = set()

    async def begin_delivery(self, *args: Any, **kw: Any) -> Any:
        if "begin_delivery" in self.busy:
            raise StoreBusy("locked")
        if "begin_delivery:broken" in self.busy:
            raise StoreError("disk I/O error")
        return await super().begin_delivery(*args, **kw)

    async def finish_turn(self, *args: Any, **kw: Any) -> Any:
        if "finish_turn" in self.busy:
            raise StoreBusy("locked")
        return await super().finish_turn(*args, **kw)


async def test_a_busy_claim_says_busy_and_the_redelivery_is_answered(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"begin_delivery"}
        events = await c.send("hello", delivery="d1", language="zh")
        assert [type(e) for e in events] == [Failure]
        assert events[0].code == "store_busy" and "数据库正忙" in events[0].user_message
        store.busy = set()
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d1"))


async def test_a_busy_commit_refunds_says_busy_and_leaves_the_delivery(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "busy.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"finish_turn"}
        events = await c.send("hello", delivery="d2")
        assert isinstance(events[-1], Failure) and events[-1].code == "store_busy"
        assert "busy" in events[-1].user_message
        assert await c.counter() == 0  # refunded, nothing was written
        assert [r.outcome for r in await store.ledger()] == ["failed:store_busy"]
        store.busy = set()
        assert await c.send("hello", delivery="d2") == []  # still claimed, within the lease
        c.clock.advance(minutes=16)  # past the 15-minute lease: the re-delivery is answered
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d2"))


async def test_a_failing_claim_is_a_sentence_not_a_traceback(tmp_path: Path) -> None:
    store = FlakyStore(path=tmp_path / "broken.db")
    async with fake_core(tmp_path, store=store) as c:
        store.busy = {"begin_delivery:broken"}
        events = await c.send("hello", delivery="d3")
        assert [type(e) for e in events] == [Failure] and events[0].code == "store"
        store.busy = set()
        assert any(isinstance(e, Final) for e in await c.send("hello", delivery="d3"))
