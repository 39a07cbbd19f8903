"""A busy database must not lose the message (issue 7, item 4), through the public store API.

Another connection (standing for another process) holds the database's write lock. The store
waits for it within its busy budget (``busy_timeout_ms``); past the budget it raises
:class:`StoreBusy`, writes nothing, and a delivery whose claim failed stays unclaimed, so the
platform's re-delivery is answered once the lock is gone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime

import pytest

from core.errors import StoreBusy, StoreError
from core.i18n import CATALOGUE, error_message
from core.store import DeliveryStart, LedgerEntry, QuotaLine, SQLiteStore, UserRecord, open_store

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def meta() -> LedgerEntry:
    return LedgerEntry(
        "r", "telegram:1", "telegram", "c", "m", 0, 0, 0, 0.0, "ok", NOW, "2026-12-04", "2026-12"
    )


async def _fresh(path) -> None:
    async with SQLiteStore(path=path) as s:
        await s.put_user(UserRecord("telegram:1", language="zh"))


async def begin(s: SQLiteStore, delivery_id: str = "update-1") -> DeliveryStart:
    return await s.begin_delivery(
        "telegram",
        delivery_id,
        now=NOW,
        ttl_seconds=3600,
        user_id="telegram:1",
        channel="telegram:chat",
        lease_seconds=900,
    )


@pytest.mark.parametrize("lock", ["BEGIN EXCLUSIVE", "BEGIN IMMEDIATE"])
async def test_a_claim_past_the_busy_budget_raises_store_busy_and_stays_unclaimed(tmp_path, lock):
    path = tmp_path / "busy.db"
    await _fresh(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with SQLiteStore(path=path, busy_timeout_ms=50) as s:
            other.execute(lock)
            with pytest.raises(StoreBusy) as info:
                await begin(s)
            err = info.value
            assert isinstance(err, StoreError) and err.retryable and err.kind == "store_busy"
            assert "begin_delivery" in str(err) and "locked" in str(err)
            assert isinstance(err.__cause__, sqlite3.OperationalError)
            # Other writes are refused the same way and leave nothing behind.
            with pytest.raises(StoreBusy):
                await s.reserve("r", [QuotaLine("c", 1, 5)], now=NOW, meta=meta())
            other.execute("ROLLBACK")
            # The re-delivery is answered: the failed claim left the delivery unclaimed.
            start = await begin(s)
            assert start.claimed and start.user == UserRecord("telegram:1", language="zh")
            assert not (await begin(s)).claimed
            assert await s.counters(["c"]) == {"c": 0}
    finally:
        other.close()


async def test_open_store_passes_the_busy_budget(tmp_path):
    path = tmp_path / "url.db"
    await _fresh(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with open_store(f"sqlite:///{path}", busy_timeout_ms=20) as s:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreBusy, match="20 ms"):
                await begin(s)
            other.execute("ROLLBACK")
            assert (await begin(s)).claimed
    finally:
        other.close()


async def test_a_lock_released_within_the_budget_is_waited_for(tmp_path):
    """The lock holder lets go only once the store's call is under way (sequenced by events):
    the call waits, then claims, and the caller never sees an error."""
    path = tmp_path / "wait.db"
    await _fresh(path)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            other.execute("INSERT INTO counters (name, used) VALUES ('held', 1)")
            holding.set()
            assert release.wait(30)
            other.execute("COMMIT")
        finally:
            other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert await asyncio.to_thread(holding.wait, 30)
        async with SQLiteStore(path=path, busy_timeout_ms=30_000) as s:
            claim = asyncio.create_task(begin(s))
            tick = asyncio.Event()
            asyncio.get_running_loop().call_soon(tick.set)
            await tick.wait()  # the loop runs while the store waits on its thread
            assert not claim.done()
            release.set()
            start = await asyncio.wait_for(claim, 30)
            assert start.claimed
            assert await s.counters(["held"]) == {"held": 1}  # the holder's commit landed
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 30)


def test_store_busy_has_its_own_sentence_in_every_language():
    for lang in ("en", "zh"):
        sentence = error_message(StoreBusy("locked"), lang)
        assert sentence == CATALOGUE[lang]["error.store_busy"]
        assert sentence != CATALOGUE[lang]["error.store"]
        assert "locked" not in sentence
    assert "busy" in error_message(StoreBusy(), "en") and "try again" in error_message(
        StoreBusy(), "en"
    )
