"""The store contract suite: every BaseStore implementation must pass it.

Add a backend by extending the ``make_store`` fixture's params (e.g. ``"postgres"``); the tests
only use the public BaseStore API. A few SQLite-specific checks (query plan, schema version,
URL parsing, lock bookkeeping) sit at the end of the file.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hybot.core.config import LimitSet
from hybot.core.errors import ConfigError, StoreError
from hybot.core.store import (
    BaseStore,
    ChannelPolicy,
    ImageJobRecord,
    LedgerEntry,
    QuotaLine,
    ReserveOutcome,
    SQLiteStore,
    TurnRecord,
    UsageTotals,
    UserRecord,
    open_store,
)
from hybot.core.store.migrations import SCHEMA_VERSION
from hybot.core.store.sqlite import _RECENT_TURNS_SQL

NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite"])
def make_store(request, tmp_path):
    """A factory building a fresh (unopened) store over the same backing database each call."""
    if request.param == "sqlite":
        path = tmp_path / "hybot.db"
        return lambda: SQLiteStore(path=path)
    raise AssertionError(f"unknown store backend {request.param}")


@pytest.fixture
async def store(make_store):
    async with make_store() as opened:
        yield opened


def entry(
    rid: str = "",
    *,
    user: str = "telegram:1",
    tokens_in: int = 0,
    tokens_out: int = 0,
    images: int = 0,
    cost: float = 0.0,
    outcome: str = "ok",
    day: str = "2026-11-28",
    month: str = "2026-11",
    at: datetime = NOW,
) -> LedgerEntry:
    return LedgerEntry(
        reservation_id=rid,
        user_id=user,
        platform=user.partition(":")[0],
        chat="chat-1",
        model="hy3-preview",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        images=images,
        cost_cny=cost,
        outcome=outcome,
        created_at=at,
        period_day=day,
        period_month=month,
    )


def turn(
    role: str, content: str, user: str = "telegram:1", *, at: datetime = NOW, tokens: int = 3
) -> TurnRecord:
    return TurnRecord(
        role=role,  # type: ignore[arg-type]
        content=content,
        user_id=user,
        tokens=tokens,
        created_at=at,
        delivery_id=f"d-{content}",
    )


def job(
    job_id: str, user: str = "telegram:1", *, status: str = "queued", at: datetime = NOW
) -> ImageJobRecord:
    return ImageJobRecord(
        job_id=job_id,
        user_id=user,
        conversation="telegram/bot/chat",
        prompt=f"a cat number {job_id}",
        size="1024x1024",
        status=status,
        created_at=at,
    )


# --- lifecycle -----------------------------------------------------------------------------


async def test_open_and_close_are_idempotent_and_closed_store_refuses_work(make_store):
    s = make_store()
    await s.open()
    await s.open()
    assert (await s.get_conversation("k")).epoch == 0
    await s.close()
    await s.close()
    with pytest.raises(StoreError):
        await s.get_conversation("k")
    # Re-opening after close works and sees the same data.
    async with s:
        assert await s.new_epoch("k") == 1


async def test_reopen_keeps_data_and_does_not_rerun_migrations(make_store):
    async with make_store() as s:
        await s.append_turns("k", 0, [turn("user", "hello")], active_at=NOW)
        await s.reserve("r1", [QuotaLine("c", 5, 10)], now=NOW, meta=entry())
    for _ in range(2):
        async with make_store() as s:
            turns = await s.recent_turns("k", 0, limit=10)
            assert [t.content for t in turns] == ["hello"]
            assert await s.counters(["c"]) == {"c": 5}
            # A re-run "initial" migration would fail (tables exist) or wipe data.
            assert await s.reserve("r1", [QuotaLine("c", 5, 10)], now=NOW, meta=entry()) == (
                ReserveOutcome(granted=True, duplicate=True)
            )


# --- deliveries ----------------------------------------------------------------------------


async def test_claim_twice_only_first_wins(store: BaseStore):
    assert await store.claim_delivery("telegram", "42", now=NOW, ttl_seconds=60) is True
    assert await store.claim_delivery("telegram", "42", now=NOW, ttl_seconds=60) is False
    later = NOW + timedelta(seconds=59)
    assert await store.claim_delivery("telegram", "42", now=later, ttl_seconds=60) is False
    # Same id on another platform is a different delivery.
    assert await store.claim_delivery("slack", "42", now=NOW, ttl_seconds=60) is True


async def test_expired_claim_can_be_reclaimed_once(store: BaseStore):
    assert await store.claim_delivery("slack", "Ev1", now=NOW, ttl_seconds=10)
    expired = NOW + timedelta(seconds=10)
    assert await store.claim_delivery("slack", "Ev1", now=expired, ttl_seconds=10) is True
    # The re-claim is a fresh claim with its own expiry.
    assert await store.claim_delivery("slack", "Ev1", now=expired, ttl_seconds=10) is False
    assert (
        await store.claim_delivery(
            "slack", "Ev1", now=expired + timedelta(seconds=9), ttl_seconds=10
        )
        is False
    )


async def test_concurrent_claims_of_one_delivery_grant_exactly_one(store: BaseStore):
    results = await asyncio.gather(
        *(store.claim_delivery("telegram", "7", now=NOW, ttl_seconds=60) for _ in range(50))
    )
    assert results.count(True) == 1


async def test_purge_deletes_only_expired_claims(store: BaseStore):
    await store.claim_delivery("t", "short", now=NOW, ttl_seconds=5)
    await store.claim_delivery("t", "long", now=NOW, ttl_seconds=500)
    assert await store.purge_deliveries(now=NOW) == 0
    assert await store.purge_deliveries(now=NOW + timedelta(seconds=6)) == 1
    assert await store.purge_deliveries(now=NOW + timedelta(seconds=6)) == 0
    # "long" is still claimed; "short" is gone and claimable again.
    later = NOW + timedelta(seconds=6)
    assert await store.claim_delivery("t", "long", now=later, ttl_seconds=5) is False
    assert await store.claim_delivery("t", "short", now=later, ttl_seconds=5) is True


# --- conversations and turns ---------------------------------------------------------------


async def test_get_conversation_creates_once(store: BaseStore):
    state = await store.get_conversation("telegram/b/1")
    assert (state.key, state.epoch, state.persona, state.last_active_at) == (
        "telegram/b/1",
        0,
        None,
        None,
    )
    assert await store.new_epoch("telegram/b/1") == 1
    # Not re-created (epoch stays).
    assert (await store.get_conversation("telegram/b/1")).epoch == 1


async def test_new_epoch_increments_and_is_atomic(store: BaseStore):
    assert await store.new_epoch("fresh") == 1  # works on an unseen key too
    results = await asyncio.gather(*(store.new_epoch("k") for _ in range(20)))
    assert sorted(results) == list(range(1, 21))
    assert (await store.get_conversation("k")).epoch == 20


async def test_persona_set_and_clear(store: BaseStore):
    await store.set_persona("k", "a pirate")
    assert (await store.get_conversation("k")).persona == "a pirate"
    await store.new_epoch("k")
    assert (await store.get_conversation("k")).persona == "a pirate"  # survives /reset
    await store.set_persona("k", None)
    assert (await store.get_conversation("k")).persona is None
    assert (await store.get_conversation("other")).persona is None


async def test_touch_and_append_set_last_active_as_aware_utc(store: BaseStore):
    shanghai = timezone(timedelta(hours=8))
    await store.touch_conversation("k", active_at=datetime(2026, 11, 28, 18, 0, tzinfo=shanghai))
    state = await store.get_conversation("k")
    assert state.last_active_at == NOW
    assert state.last_active_at.utcoffset() == timedelta(0)
    later = NOW + timedelta(minutes=5, microseconds=123)
    await store.append_turns("k", 0, [turn("user", "hi")], active_at=later)
    assert (await store.get_conversation("k")).last_active_at == later


async def test_recent_turns_order_limit_epoch_and_key(store: BaseStore):
    for i in range(10):
        role = "user" if i % 2 == 0 else "assistant"
        await store.append_turns(
            "k", 0, [turn(role, f"m{i}", at=NOW + timedelta(seconds=i))], active_at=NOW
        )
    await store.append_turns("k", 1, [turn("user", "new-epoch")], active_at=NOW)
    await store.append_turns("other", 0, [turn("user", "other-chat")], active_at=NOW)

    last3 = await store.recent_turns("k", 0, limit=3)
    assert [t.content for t in last3] == ["m7", "m8", "m9"]
    assert [t.role for t in last3] == ["assistant", "user", "assistant"]
    assert last3[0].id < last3[1].id < last3[2].id
    assert last3[2].created_at == NOW + timedelta(seconds=9)
    assert last3[2].created_at.tzinfo is not None
    assert last3[2].delivery_id == "d-m9"
    assert last3[2].user_id == "telegram:1" and last3[2].tokens == 3

    everything = await store.recent_turns("k", 0, limit=100)
    assert [t.content for t in everything] == [f"m{i}" for i in range(10)]
    assert [t.content for t in await store.recent_turns("k", 1, limit=100)] == ["new-epoch"]
    assert [t.content for t in await store.recent_turns("other", 0, limit=100)] == ["other-chat"]
    assert await store.recent_turns("k", 0, limit=0) == []
    assert await store.recent_turns("k", 7, limit=5) == []
    assert [t.content async for t in store.iter_turns("k", 0)] == [f"m{i}" for i in range(10)]


async def test_append_turns_keeps_batch_order(store: BaseStore):
    batch = [turn("user", "q"), turn("assistant", "a")]
    await store.append_turns("k", 0, batch, active_at=NOW)
    got = await store.recent_turns("k", 0, limit=2)
    assert [(t.role, t.content) for t in got] == [("user", "q"), ("assistant", "a")]


async def test_append_turns_is_all_or_nothing(store: BaseStore):
    await store.append_turns("k", 0, [turn("user", "kept")], active_at=NOW)
    bad = [turn("user", "first"), turn("robot", "second")]  # invalid role fails the batch
    with pytest.raises(StoreError):
        await store.append_turns("k", 0, bad, active_at=NOW + timedelta(hours=1))
    assert [t.content for t in await store.recent_turns("k", 0, limit=10)] == ["kept"]
    assert (await store.get_conversation("k")).last_active_at == NOW


async def test_forget_user(store: BaseStore):
    alice, bob = "telegram:1", "telegram:2"
    await store.append_turns(
        "chat-a", 0, [turn("user", "a1", alice), turn("assistant", "r1", alice)], active_at=NOW
    )
    await store.append_turns("chat-a", 0, [turn("user", "b1", bob)], active_at=NOW)
    await store.new_epoch("chat-a")
    await store.append_turns("chat-a", 1, [turn("user", "a2", alice)], active_at=NOW)
    await store.append_turns("chat-b", 0, [turn("user", "a3", alice)], active_at=NOW)
    await store.put_user(UserRecord(alice, role="admin"))
    await store.put_user(UserRecord(bob))
    await store.put_image_job(job("j1", alice))
    await store.put_image_job(job("j2", bob))
    await store.reserve("r1", [QuotaLine("c", 1, None)], now=NOW, meta=entry(user=alice))
    await store.settle("r1", {"c": 1}, entry=entry("r1", user=alice, tokens_in=1))

    assert await store.forget_user(alice) == 4

    assert [t.content for t in await store.recent_turns("chat-a", 0, limit=10)] == ["b1"]
    assert await store.recent_turns("chat-a", 1, limit=10) == []
    assert await store.recent_turns("chat-b", 0, limit=10) == []
    assert await store.get_user(alice) is None
    assert await store.get_user(bob) == UserRecord(bob)
    j1 = await store.get_image_job("j1")
    assert j1 is not None and j1.prompt == "" and j1.status == "queued"
    assert (await store.get_image_job("j2")).prompt == "a cat number j2"
    # Billing stays.
    assert [e.reservation_id for e in await store.ledger(user_id=alice)] == ["r1"]
    assert await store.forget_user(alice) == 0


async def test_conversation_lock_is_exclusive_and_fifo(store: BaseStore):
    order: list[int] = []
    inside = 0
    max_inside = 0
    started = asyncio.Event()

    async def worker(i: int) -> None:
        nonlocal inside, max_inside
        async with store.conversation_lock("k"):
            inside += 1
            max_inside = max(max_inside, inside)
            order.append(i)
            started.set()
            await asyncio.sleep(0.001)
            inside -= 1

    # Start workers one by one so their arrival order is defined: 0 first, then 1, 2, ...
    tasks = [asyncio.create_task(worker(0))]
    await started.wait()
    for i in range(1, 20):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert max_inside == 1
    assert order == list(range(20))


async def test_conversation_lock_keys_are_independent_and_waiter_cancel_is_clean(
    store: BaseStore,
):
    async with store.conversation_lock("a"):
        # Another key is not blocked.
        async with asyncio.timeout(1):
            async with store.conversation_lock("b"):
                pass
        waiter = asyncio.create_task(_hold(store, "a"))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    # The cancelled waiter left nothing behind: the key is free.
    async with asyncio.timeout(1):
        async with store.conversation_lock("a"):
            pass


async def _hold(store: BaseStore, key: str) -> None:
    async with store.conversation_lock(key):
        pass


# --- quota ---------------------------------------------------------------------------------


async def test_reserve_grants_and_charges_every_line(store: BaseStore):
    lines = [QuotaLine("u|tokens|d", 100, 1000), QuotaLine("org|tokens|m", 100, None)]
    outcome = await store.reserve("r1", lines, now=NOW, meta=entry())
    assert outcome == ReserveOutcome(granted=True)
    assert await store.counters(["u|tokens|d", "org|tokens|m", "absent"]) == {
        "u|tokens|d": 100,
        "org|tokens|m": 100,
        "absent": 0,
    }


async def test_denial_is_all_or_nothing_and_reports_the_counter(store: BaseStore):
    await store.reserve("r0", [QuotaLine("user", 8, 10)], now=NOW, meta=entry())
    lines = [QuotaLine("org", 5, 100), QuotaLine("user", 3, 10), QuotaLine("rpm", 1, 5, False)]
    outcome = await store.reserve("r1", lines, now=NOW, meta=entry())
    assert outcome == ReserveOutcome(granted=False, denied_counter="user", used=8, limit=10)
    # The "org" line, charged before the failing line, was rolled back; later lines untouched.
    assert await store.counters(["org", "user", "rpm"]) == {"org": 0, "user": 8, "rpm": 0}
    # Exactly filling the limit is allowed.
    assert (await store.reserve("r2", [QuotaLine("user", 2, 10)], now=NOW, meta=entry())).granted
    assert await store.counters(["user"]) == {"user": 10}


async def test_zero_limit_denies_and_none_limit_never_does(store: BaseStore):
    denied = await store.reserve("r1", [QuotaLine("img", 1, 0)], now=NOW, meta=entry())
    assert denied == ReserveOutcome(granted=False, denied_counter="img", used=0, limit=0)
    for i in range(5):
        ok = await store.reserve(f"n{i}", [QuotaLine("free", 10**9, None)], now=NOW, meta=entry())
        assert ok.granted
    assert await store.counters(["free"]) == {"free": 5 * 10**9}


async def test_duplicate_reservation_returns_first_outcome_without_charging(store: BaseStore):
    lines = [QuotaLine("c", 4, 10)]
    assert await store.reserve("dup", lines, now=NOW, meta=entry()) == ReserveOutcome(True)
    assert await store.reserve("dup", lines, now=NOW, meta=entry()) == ReserveOutcome(
        granted=True, duplicate=True
    )
    assert await store.counters(["c"]) == {"c": 4}
    # Still a duplicate after settlement, and still no charge.
    assert await store.settle("dup", {"c": 2}, entry=entry("dup", tokens_in=2))
    again = await store.reserve("dup", lines, now=NOW, meta=entry())
    assert again == ReserveOutcome(granted=True, duplicate=True)
    assert await store.counters(["c"]) == {"c": 2}


async def test_retry_after_denial_is_evaluated_again(store: BaseStore):
    assert not (await store.reserve("r", [QuotaLine("c", 5, 3)], now=NOW, meta=entry())).granted
    # A denial leaves no reservation: the same id with a fitting line is granted, not "duplicate".
    assert await store.reserve("r", [QuotaLine("c", 5, 10)], now=NOW, meta=entry()) == (
        ReserveOutcome(granted=True)
    )
    assert await store.counters(["c"]) == {"c": 5}


async def test_settle_replaces_reserved_by_actual_once(store: BaseStore):
    lines = [
        QuotaLine("tok", 4000, None),
        QuotaLine("img", 1, None),
        QuotaLine("rpm", 1, None, refundable=False),
    ]
    await store.reserve("r1", lines, now=NOW, meta=entry())
    settled = await store.settle(
        "r1",
        {"tok": 120, "rpm": 99, "unrelated": 5},
        entry=entry("r1", tokens_in=100, tokens_out=20),
    )
    assert settled is True
    # tok: 4000 → 120; img missing from actual → 0; rpm non-refundable keeps its 1.
    assert await store.counters(["tok", "img", "rpm", "unrelated"]) == {
        "tok": 120,
        "img": 0,
        "rpm": 1,
        "unrelated": 0,
    }
    assert await store.settle("r1", {"tok": 1}, entry=entry("r1")) is False
    assert await store.refund("r1", entry=entry("r1", outcome="refunded")) is False
    assert await store.counters(["tok"]) == {"tok": 120}
    rows = await store.ledger()
    assert len(rows) == 1
    assert (rows[0].reservation_id, rows[0].tokens_in, rows[0].tokens_out, rows[0].outcome) == (
        "r1",
        100,
        20,
        "ok",
    )


async def test_refund_gives_back_refundable_lines_once(store: BaseStore):
    lines = [QuotaLine("tok", 500, 1000), QuotaLine("rpm", 1, 10, refundable=False)]
    await store.reserve("r1", lines, now=NOW, meta=entry())
    assert await store.refund("r1", entry=entry("r1", outcome="failed:timeout")) is True
    assert await store.counters(["tok", "rpm"]) == {"tok": 0, "rpm": 1}
    assert await store.refund("r1", entry=entry("r1")) is False
    assert await store.settle("r1", {"tok": 500}, entry=entry("r1")) is False
    assert await store.counters(["tok", "rpm"]) == {"tok": 0, "rpm": 1}
    assert [e.outcome for e in await store.ledger()] == ["failed:timeout"]


async def test_settle_and_refund_of_unknown_reservation(store: BaseStore):
    assert await store.settle("nope", {"c": 1}, entry=entry("nope")) is False
    assert await store.refund("nope", entry=entry("nope")) is False
    assert await store.ledger() == []
    assert await store.counters(["c"]) == {"c": 0}


async def test_same_counter_twice_in_one_reservation(store: BaseStore):
    lines = [QuotaLine("c", 3, 10), QuotaLine("c", 4, 10)]
    assert (await store.reserve("r", lines, now=NOW, meta=entry())).granted
    assert await store.counters(["c"]) == {"c": 7}
    await store.settle("r", {"c": 5}, entry=entry("r", tokens_in=5))
    assert await store.counters(["c"]) == {"c": 5}
    # Together they do not fit: the second line sees the first's charge, and both roll back.
    out = await store.reserve(
        "r2", [QuotaLine("c", 3, 10), QuotaLine("c", 3, 10)], now=NOW, meta=entry()
    )
    assert out == ReserveOutcome(granted=False, denied_counter="c", used=8, limit=10)
    assert await store.counters(["c"]) == {"c": 5}


async def test_concurrent_settle_and_refund_act_once(store: BaseStore):
    await store.reserve("r", [QuotaLine("c", 10, None)], now=NOW, meta=entry())
    calls = [store.settle("r", {"c": 3}, entry=entry("r", tokens_in=3)) for _ in range(10)]
    calls += [store.refund("r", entry=entry("r", outcome="refunded")) for _ in range(10)]
    results = await asyncio.gather(*calls)
    assert results.count(True) == 1
    assert len(await store.ledger()) == 1
    assert (await store.counters(["c"]))["c"] in (0, 3)


async def test_sweep_refunds_old_open_reservations_only(store: BaseStore):
    old = NOW - timedelta(hours=1)
    meta = entry(user="slack:U1", tokens_in=4000, cost=1.5, day="2026-11-27", month="2026-11")
    await store.reserve("old-open", [QuotaLine("tok", 4000, None)], now=old, meta=meta)
    await store.reserve(
        "old-rpm", [QuotaLine("rpm", 1, None, refundable=False)], now=old, meta=entry()
    )
    await store.reserve("old-settled", [QuotaLine("tok", 100, None)], now=old, meta=entry())
    await store.settle("old-settled", {"tok": 50}, entry=entry("old-settled", tokens_in=50))
    await store.reserve("new-open", [QuotaLine("tok", 200, None)], now=NOW, meta=entry())

    swept = await store.sweep_reservations(older_than=NOW - timedelta(minutes=15), now=NOW)
    assert swept == 2
    assert await store.counters(["tok", "rpm"]) == {"tok": 50 + 200, "rpm": 1}
    rows = {e.reservation_id: e for e in await store.ledger()}
    assert set(rows) == {"old-open", "old-rpm", "old-settled"}
    swept_row = rows["old-open"]
    assert swept_row.outcome == "swept"
    assert (swept_row.tokens_in, swept_row.tokens_out, swept_row.images, swept_row.cost_cny) == (
        0,
        0,
        0,
        0.0,
    )
    assert (swept_row.user_id, swept_row.platform, swept_row.period_day) == (
        "slack:U1",
        "slack",
        "2026-11-27",
    )
    assert swept_row.created_at == NOW
    # Swept reservations are closed: no second sweep, settle or refund.
    assert await store.sweep_reservations(older_than=NOW - timedelta(minutes=15), now=NOW) == 0
    assert await store.settle("old-open", {"tok": 1}, entry=entry("old-open")) is False
    assert await store.refund("old-open", entry=entry("old-open")) is False
    # ...and a retried delivery with that id is still a duplicate (never charged twice).
    dup = await store.reserve("old-open", [QuotaLine("tok", 4000, None)], now=NOW, meta=meta)
    assert dup.duplicate and dup.granted
    # The young reservation is untouched and still settles.
    assert await store.settle("new-open", {"tok": 20}, entry=entry("new-open", tokens_in=20))
    assert await store.counters(["tok"]) == {"tok": 70}


async def test_ledger_totals_equal_counters_after_random_traffic(store: BaseStore):
    rng = random.Random(20261128)
    counter = "user|tokens|d"
    open_ids: list[str] = []
    for i in range(150):
        action = rng.random()
        if action < 0.5 or not open_ids:
            rid = f"r{i}"
            out = await store.reserve(
                rid, [QuotaLine(counter, rng.randint(1, 50), 2000)], now=NOW, meta=entry()
            )
            if out.granted:
                open_ids.append(rid)
        elif action < 0.85:
            rid = open_ids.pop(rng.randrange(len(open_ids)))
            spent_in, spent_out = rng.randint(0, 40), rng.randint(0, 40)
            ok = await store.settle(
                rid,
                {counter: spent_in + spent_out},
                entry=entry(rid, tokens_in=spent_in, tokens_out=spent_out),
            )
            assert ok
        else:
            rid = open_ids.pop(rng.randrange(len(open_ids)))
            assert await store.refund(rid, entry=entry(rid, outcome="refunded"))
    await store.sweep_reservations(older_than=NOW + timedelta(seconds=1), now=NOW)
    rows = await store.ledger()
    used = (await store.counters([counter]))[counter]
    assert used == sum(r.tokens_in + r.tokens_out for r in rows)
    assert used > 0


async def test_200_concurrent_reservations_against_limit_10_grant_exactly_10(store: BaseStore):
    async def attempt(i: int) -> ReserveOutcome:
        return await store.reserve(
            f"res-{i}", [QuotaLine("hot", 1, 10)], now=NOW, meta=entry(f"res-{i}")
        )

    outcomes = await asyncio.gather(*(attempt(i) for i in range(200)))
    assert sum(o.granted for o in outcomes) == 10
    assert not any(o.duplicate for o in outcomes)
    denied = [o for o in outcomes if not o.granted]
    assert all((o.denied_counter, o.used, o.limit) == ("hot", 10, 10) for o in denied)
    assert await store.counters(["hot"]) == {"hot": 10}


async def test_200_concurrent_reservations_with_duplicate_ids(store: BaseStore):
    # 40 ids, each attempted 5 times concurrently: a limit of 10 admits 10 distinct ids, and
    # every attempt with an admitted id reports granted (4 of the 5 as duplicates).
    ids = [f"dup-{i % 40}" for i in range(200)]
    random.Random(7).shuffle(ids)
    outcomes = await asyncio.gather(
        *(store.reserve(rid, [QuotaLine("hot", 1, 10)], now=NOW, meta=entry()) for rid in ids)
    )
    fresh = Counter(rid for rid, o in zip(ids, outcomes) if o.granted and not o.duplicate)
    assert len(fresh) == 10 and set(fresh.values()) == {1}
    for rid, o in zip(ids, outcomes):
        if o.duplicate:
            assert o.granted and rid in fresh
    assert await store.counters(["hot"]) == {"hot": 10}


# --- reports -------------------------------------------------------------------------------


async def _bill(store: BaseStore, rid: str, user: str, day: str, tin: int, tout: int, **kw):
    await store.reserve(rid, [QuotaLine(f"{user}|tok", tin + tout, None)], now=NOW, meta=entry())
    assert await store.settle(
        rid,
        {f"{user}|tok": tin + tout},
        entry=entry(rid, user=user, tokens_in=tin, tokens_out=tout, day=day, month=day[:7], **kw),
    )


async def test_ledger_filters_and_order(store: BaseStore):
    await _bill(store, "a", "telegram:1", "2026-11-27", 10, 1)
    await _bill(store, "b", "telegram:2", "2026-11-28", 20, 2)
    await _bill(store, "c", "telegram:1", "2026-11-28", 30, 3, images=1, cost=0.2)
    await _bill(store, "d", "telegram:1", "2026-12-01", 40, 4)
    assert [e.reservation_id for e in await store.ledger()] == ["a", "b", "c", "d"]
    assert [e.reservation_id for e in await store.ledger(user_id="telegram:1")] == ["a", "c", "d"]
    assert [e.reservation_id for e in await store.ledger(day="2026-11-28")] == ["b", "c"]
    assert [e.reservation_id for e in await store.ledger(month="2026-11")] == ["a", "b", "c"]
    assert [
        e.reservation_id for e in await store.ledger(user_id="telegram:1", month="2026-11")
    ] == ["a", "c"]
    c = (await store.ledger(day="2026-11-28", user_id="telegram:1"))[0]
    assert c == entry("c", tokens_in=30, tokens_out=3, images=1, cost=0.2)


async def test_usage_totals_group_by_user_and_day(store: BaseStore):
    await _bill(store, "a", "telegram:2", "2026-11-27", 10, 1, cost=0.5)
    await _bill(store, "b", "telegram:1", "2026-11-28", 20, 2, cost=0.25)
    await _bill(store, "c", "telegram:2", "2026-11-28", 30, 3, images=2)
    by_user = await store.usage_totals(group_by="user")
    assert by_user == [
        UsageTotals("telegram:1", 1, 20, 2, 0, 0.25),
        UsageTotals("telegram:2", 2, 40, 4, 2, 0.5),
    ]
    by_day = await store.usage_totals(group_by="day")
    assert [(t.key, t.calls, t.tokens_in) for t in by_day] == [
        ("2026-11-27", 1, 10),
        ("2026-11-28", 2, 50),
    ]
    only = await store.usage_totals(group_by="day", user_id="telegram:2", month="2026-11")
    assert [(t.key, t.tokens_out, t.images) for t in only] == [
        ("2026-11-27", 1, 0),
        ("2026-11-28", 3, 2),
    ]
    assert await store.usage_totals(group_by="user", day="2030-01-01") == []
    with pytest.raises(ValueError):
        await store.usage_totals(group_by="model")


# --- users, policies, image jobs -----------------------------------------------------------


async def test_users_round_trip_and_replace(store: BaseStore):
    assert await store.get_user("telegram:9") is None
    record = UserRecord(
        "telegram:9",
        role="vip",
        language="zh",
        access="allow",
        limits=LimitSet(tokens_per_day=5000, images_per_month=0),
    )
    await store.put_user(record)
    assert await store.get_user("telegram:9") == record
    replaced = UserRecord("telegram:9", access="deny")
    await store.put_user(replaced)
    assert await store.get_user("telegram:9") == replaced


async def test_channel_policies_round_trip(store: BaseStore):
    assert await store.get_channel_policy("slack:C1") is None
    policy = ChannelPolicy("slack:C1", enabled=False, mention_only=None, images_allowed=True)
    await store.put_channel_policy(policy)
    assert await store.get_channel_policy("slack:C1") == policy
    other = ChannelPolicy("slack:C1", model="hunyuan-lite", persona="terse")
    await store.put_channel_policy(other)
    assert await store.get_channel_policy("slack:C1") == other


async def test_image_jobs_round_trip_filter_and_order(store: BaseStore):
    assert await store.get_image_job("none") is None
    await store.put_image_job(job("j2", at=NOW + timedelta(seconds=2)))
    await store.put_image_job(job("j1", at=NOW + timedelta(seconds=1)))
    await store.put_image_job(job("j3", "telegram:2", at=NOW + timedelta(seconds=3)))
    done = ImageJobRecord(
        job_id="j1",
        user_id="telegram:1",
        conversation="telegram/bot/chat",
        prompt="a cat number j1",
        size="1024x1024",
        status="done",
        created_at=NOW + timedelta(seconds=1),
        finished_at=NOW + timedelta(seconds=30),
        result_path="hybot-images/j1.png",
    )
    await store.put_image_job(done)
    assert await store.get_image_job("j1") == done
    assert [j.job_id for j in await store.image_jobs()] == ["j1", "j2", "j3"]
    assert [j.job_id for j in await store.image_jobs(user_id="telegram:1")] == ["j1", "j2"]
    assert [j.job_id for j in await store.image_jobs(status="queued")] == ["j2", "j3"]
    assert [j.job_id for j in await store.image_jobs(user_id="telegram:1", status="done")] == ["j1"]
    failed = ImageJobRecord("j4", "telegram:1", "c", "p", "1x1", "failed", NOW, NOW, "", "boom")
    await store.put_image_job(failed)
    assert await store.get_image_job("j4") == failed


# --- SQLite-specific -----------------------------------------------------------------------


async def test_sqlite_settings_and_schema_version(tmp_path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path=path, synchronous="full") as s:
        await s.get_conversation("k")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT version, name FROM schema_version").fetchall()
        assert rows == [(SCHEMA_VERSION, "initial")]
    finally:
        conn.close()


async def test_sqlite_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path=path):
        pass
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO schema_version VALUES (?, 'from-the-future', '2030-01-01')",
            (SCHEMA_VERSION + 1,),
        )
    conn.close()
    s = SQLiteStore(path=path)
    with pytest.raises(StoreError, match="newer than this hybot supports"):
        await s.open()
    # Nothing was half-opened.
    with pytest.raises(StoreError, match="not open"):
        await s.get_conversation("k")
    with pytest.raises(StoreError, match="newer"):
        async with SQLiteStore(path=path):
            pass


async def test_sqlite_recent_turns_uses_the_index(store):
    conn = sqlite3.connect(store.path)
    try:
        plan = " ".join(
            row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + _RECENT_TURNS_SQL, ("k", 0, 5))
        )
    finally:
        conn.close()
    assert "USING INDEX turns_conv_epoch_id" in plan or "USING COVERING INDEX" in plan
    assert "TEMP B-TREE" not in plan  # no sort of the whole history


async def test_sqlite_errors_are_store_errors_without_user_text(tmp_path):
    missing_dir = tmp_path / "no-such-dir" / "x.db"
    with pytest.raises(StoreError) as info:
        await SQLiteStore(path=missing_dir).open()
    assert isinstance(info.value.__cause__, sqlite3.Error)
    async with SQLiteStore(path=tmp_path / "ok.db") as s:
        with pytest.raises(StoreError) as info:
            await s.append_turns("k", 0, [turn("robot", "TOP-SECRET-USER-TEXT")], active_at=NOW)
        assert "TOP-SECRET-USER-TEXT" not in str(info.value)
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        # The failed transaction was rolled back; the store keeps working.
        await s.append_turns("k", 0, [turn("user", "fine")], active_at=NOW)
        assert len(await s.recent_turns("k", 0, limit=5)) == 1


async def test_sqlite_rejects_naive_datetimes_and_bad_settings(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.claim_delivery("t", "1", now=datetime(2026, 1, 1), ttl_seconds=1)
    with pytest.raises(ValueError):
        await store.reserve("r", [QuotaLine("c", -1, None)], now=NOW, meta=entry())
    with pytest.raises(ConfigError):
        SQLiteStore(path="x.db", synchronous="sometimes")


async def test_sqlite_lock_entries_do_not_accumulate(store):
    async def use(i: int) -> None:
        async with store.conversation_lock(f"chat-{i % 10_000}"):
            await asyncio.sleep(0)

    await asyncio.gather(*(use(i) for i in range(12_000)))
    assert len(store._locks) == 0


async def test_sqlite_in_memory_store(tmp_path):
    async with open_store("sqlite:///:memory:") as s:
        assert isinstance(s, SQLiteStore) and s.path == ":memory:"
        await s.append_turns("k", 0, [turn("user", "hi")], active_at=NOW)
        assert len(await s.recent_turns("k", 0, limit=5)) == 1


def test_open_store_urls(tmp_path):
    absolute = tmp_path / "a.db"
    assert open_store(f"sqlite:///{absolute}").path == str(absolute)  # sqlite:////abs/a.db
    assert open_store("sqlite:///rel/b.db").path == "rel/b.db"
    assert open_store(str(absolute)).path == str(absolute)
    assert open_store("sqlite://").path == ":memory:"
    with pytest.raises(ConfigError, match="not yet supported") as info:
        open_store("postgresql://bot:hunter2@db/hybot")
    assert "hunter2" not in str(info.value)
    for bad in ("", "mysql://x/y", "sqlite://host/file.db"):
        with pytest.raises(ConfigError):
            open_store(bad)


async def test_sqlite_waits_for_another_writer_without_blocking_the_loop(tmp_path):
    path = tmp_path / "w.db"
    async with SQLiteStore(path=path) as s:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
            reserve = asyncio.create_task(
                s.reserve("r", [QuotaLine("c", 1, 5)], now=NOW, meta=entry())
            )
            ticks = 0
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20 and not reserve.done()  # waiting, and the loop kept running
            other.execute("COMMIT")
            assert (await asyncio.wait_for(reserve, 5)).granted
        finally:
            other.close()


async def test_sqlite_lock_timeout_becomes_a_retryable_store_error(tmp_path):
    path = tmp_path / "t.db"
    async with SQLiteStore(path=path):
        pass
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with SQLiteStore(path=path, busy_timeout_ms=50) as s:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError) as info:
                await s.reserve("r", [QuotaLine("c", 1, 5)], now=NOW, meta=entry())
            assert info.value.retryable and "locked" in str(info.value)
            other.execute("ROLLBACK")
            # Nothing was charged, and the same id works once the lock is free.
            assert await s.counters(["c"]) == {"c": 0}
            assert await s.reserve("r", [QuotaLine("c", 1, 5)], now=NOW, meta=entry()) == (
                ReserveOutcome(granted=True)
            )
    finally:
        other.close()
