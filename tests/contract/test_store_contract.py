"""The store contract suite: every BaseStore implementation must pass it.

Add a backend by extending the ``make_store`` fixture's params (e.g. ``"postgres"``); the tests
only use the public BaseStore API. ``"sqlite-composed"`` is SQLite with the batched methods
(``begin_delivery``, ``load_context``, ``finish_turn``, ``checkpoint``) reset to BaseStore's
default implementations, so the defaults every other store inherits meet the same contract. A few
SQLite-specific checks (schema version and migration from the previous one, URL parsing,
one-transaction atomicity, another connection standing for another process) sit at the end of the
file; they too use only the public API and the database file. White-box tests of the SQLite store
(query plan, statements run, round trips, pragmas, the writer) are in ``tests/unit``.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.config import LimitSet
from core.errors import ConfigError, StoreError
from core.store import (
    SWEPT_JOB_ERROR,
    BaseStore,
    ChannelPolicy,
    DeliveryStart,
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
from core.store.migrations import MIGRATIONS, SCHEMA_VERSION, apply_migrations

NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)


# --- fixtures ------------------------------------------------------------------------------


class ComposedSQLiteStore(SQLiteStore):
    """SQLite with BaseStore's default (composed, several round trips) batched methods."""

    begin_delivery = BaseStore.begin_delivery
    load_context = BaseStore.load_context
    finish_turn = BaseStore.finish_turn
    checkpoint = BaseStore.checkpoint


@pytest.fixture(params=["sqlite", "sqlite-composed"])
def make_store(request, tmp_path):
    """A factory building a fresh (unopened) store over the same backing database each call."""
    path = tmp_path / "hybot.db"
    if request.param == "sqlite":
        return lambda: SQLiteStore(path=path)
    if request.param == "sqlite-composed":
        return lambda: ComposedSQLiteStore(path=path)
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


async def test_begin_delivery_claims_then_reads_user_and_policy(store: BaseStore):
    alice = UserRecord("telegram:1", role="vip", language="zh", limits=LimitSet(tokens_per_day=9))
    policy = ChannelPolicy("telegram:chat-1", enabled=True, model="hunyuan-lite")
    await store.put_user(alice)
    await store.put_channel_policy(policy)

    first = await store.begin_delivery(
        "telegram", "u1", now=NOW, ttl_seconds=60, user_id=alice.user_id, channel=policy.channel
    )
    assert first == DeliveryStart(claimed=True, user=alice, policy=policy)
    # A lost claim reads nothing, although both records exist.
    again = await store.begin_delivery(
        "telegram", "u1", now=NOW, ttl_seconds=60, user_id=alice.user_id, channel=policy.channel
    )
    assert again == DeliveryStart(claimed=False, user=None, policy=None)
    # Unknown user and channel: claimed, with nothing to read.
    stranger = await store.begin_delivery(
        "telegram", "u2", now=NOW, ttl_seconds=60, user_id="telegram:404", channel="nowhere"
    )
    assert stranger == DeliveryStart(claimed=True, user=None, policy=None)


async def test_begin_delivery_shares_claims_with_claim_delivery(store: BaseStore):
    assert await store.claim_delivery("slack", "Ev1", now=NOW, ttl_seconds=10)
    lost = await store.begin_delivery(
        "slack", "Ev1", now=NOW, ttl_seconds=10, user_id="slack:U1", channel="slack:C1"
    )
    assert lost.claimed is False
    won = await store.begin_delivery(
        "slack", "Ev2", now=NOW, ttl_seconds=10, user_id="slack:U1", channel="slack:C1"
    )
    assert won.claimed is True
    assert await store.claim_delivery("slack", "Ev2", now=NOW, ttl_seconds=10) is False
    # Expiry works the same way: an expired claim is taken over once.
    expired = NOW + timedelta(seconds=10)
    retaken = [
        await store.begin_delivery(
            "slack", "Ev1", now=expired, ttl_seconds=10, user_id="slack:U1", channel="slack:C1"
        )
        for _ in range(2)
    ]
    assert [r.claimed for r in retaken] == [True, False]
    assert await store.purge_deliveries(now=expired + timedelta(seconds=10)) == 2


async def test_concurrent_begin_delivery_claims_exactly_once(store: BaseStore):
    await store.put_user(UserRecord("telegram:1"))
    results = await asyncio.gather(
        *(
            store.begin_delivery(
                "telegram", "7", now=NOW, ttl_seconds=60, user_id="telegram:1", channel="c"
            )
            for _ in range(50)
        ),
        *(store.claim_delivery("telegram", "7", now=NOW, ttl_seconds=60) for _ in range(10)),
    )
    starts = [r for r in results if isinstance(r, DeliveryStart)]
    wins = [r for r in starts if r.claimed] + [r for r in results if r is True]
    assert len(wins) == 1
    assert all(r.user is None and r.policy is None for r in starts if not r.claimed)
    if isinstance(wins[0], DeliveryStart):
        assert wins[0].user == UserRecord("telegram:1")


# --- delivery leases ----------------------------------------------------------------------


def _claimer(store: BaseStore, platform: str, ttl: float):
    """``claim(id, seconds_after_NOW, lease=None)`` for the lease tests."""

    async def claim(delivery_id: str, seconds: float, lease: float | None = None) -> bool:
        return await store.claim_delivery(
            platform,
            delivery_id,
            now=NOW + timedelta(seconds=seconds),
            ttl_seconds=ttl,
            lease_seconds=lease,
        )

    return claim


async def test_lease_takes_over_an_unfinished_claim_after_the_lease_only(store: BaseStore):
    claim = _claimer(store, "telegram", 600)
    assert await claim("9", 0)
    # Before the lease has run out, and never without a lease (the pre-lease behaviour).
    assert not await claim("9", 29.999, lease=30)
    assert not await claim("9", 599)
    # Once it has (the boundary included): taken over by exactly this call.
    assert await claim("9", 30, lease=30)
    assert not await claim("9", 30, lease=30)
    # The take-over is a fresh claim: its lease counts from its own claim time ...
    assert not await claim("9", 59, lease=30)
    assert await claim("9", 60, lease=30)
    # ... and its expiry too (now + ttl = 660 s, not the first claim's 600 s).
    assert await store.purge_deliveries(now=NOW + timedelta(seconds=600)) == 0
    assert not await claim("9", 659)
    assert await claim("9", 660)
    # Another platform's id of the same name is untouched by all of this.
    assert await _claimer(store, "slack", 600)("9", 660)


async def test_finished_claim_is_not_taken_over_by_the_lease(store: BaseStore):
    claim = _claimer(store, "telegram", 3600)
    assert await claim("1", 0)
    assert await claim("2", 0)
    await store.finish_delivery("telegram", "1", now=NOW + timedelta(seconds=5))
    await store.finish_delivery("telegram", "1", now=NOW + timedelta(seconds=6))  # idempotent
    assert not await claim("1", 1800, lease=60)
    assert await claim("2", 1800, lease=60)
    # TTL expiry still frees a finished claim, and the new claim starts unfinished.
    assert await claim("1", 3600, lease=60)
    assert await claim("1", 3660, lease=60)
    # Finishing an unknown id creates nothing: it can still be claimed normally.
    await store.finish_delivery("telegram", "never", now=NOW)
    assert await claim("never", 0)
    # Finished or not, expired claims are purged as before ("2" and "1" were re-claimed later).
    await store.finish_delivery("telegram", "never", now=NOW)
    assert await store.purge_deliveries(now=NOW + timedelta(seconds=3600)) == 1


async def test_release_frees_only_an_unfinished_claim_and_is_idempotent(store: BaseStore):
    claim = _claimer(store, "telegram", 3600)
    assert await claim("1", 0)
    assert await claim("2", 0)
    await store.finish_delivery("telegram", "2", now=NOW + timedelta(seconds=1))
    # The unfinished claim is released at once (no lease needed); a second call is a no-op.
    assert await store.release_delivery("telegram", "1")
    assert not await store.release_delivery("telegram", "1")
    # A finished claim, an absent id and another platform's id of the same name are untouched.
    assert not await store.release_delivery("telegram", "2")
    assert not await store.release_delivery("telegram", "never")
    assert not await store.release_delivery("slack", "1")
    assert not await claim("2", 10)
    assert not await claim("2", 10, lease=5)
    # The released id is claimed again, exactly once, with or without a lease; it is a fresh
    # claim (unfinished, its TTL counted from the new claim).
    assert await claim("1", 10)
    assert not await claim("1", 10)
    assert not await claim("1", 3609)
    assert await store.release_delivery("telegram", "1")
    assert await claim("1", 20, lease=60)
    # Releasing never creates a claim: the absent id is claimed normally afterwards.
    assert await claim("never", 20)


async def test_concurrent_claims_after_a_release_grant_exactly_one(make_store):
    stores = [make_store() for _ in range(3)]  # three connections to one database
    for s in stores:
        await s.open()
    try:
        assert await stores[0].claim_delivery("telegram", "x", now=NOW, ttl_seconds=600)
        assert await stores[0].release_delivery("telegram", "x")
        results = await asyncio.gather(
            *(
                s.claim_delivery("telegram", "x", now=NOW, ttl_seconds=600)
                for s in stores
                for _ in range(5)
            )
        )
        assert sum(results) == 1
    finally:
        for s in stores:
            await s.close()


async def test_concurrent_lease_takeovers_have_exactly_one_winner(make_store):
    stores = [make_store() for _ in range(3)]  # three connections to one database
    for s in stores:
        await s.open()
    try:
        await stores[0].put_user(UserRecord("telegram:1", role="vip"))
        for s in stores:
            await s.claim_delivery("telegram", "boom", now=NOW, ttl_seconds=600)
        later = NOW + timedelta(seconds=120)
        results = await asyncio.gather(
            *(
                stores[i % 3].claim_delivery(
                    "telegram", "boom", now=later, ttl_seconds=600, lease_seconds=90
                )
                for i in range(10)
            ),
            *(
                stores[i % 3].begin_delivery(
                    "telegram",
                    "boom",
                    now=later,
                    ttl_seconds=600,
                    lease_seconds=90,
                    user_id="telegram:1",
                    channel="c",
                )
                for i in range(10)
            ),
        )
        wins = [r for r in results if r is True or (isinstance(r, DeliveryStart) and r.claimed)]
        assert len(wins) == 1
        assert all(r == DeliveryStart(claimed=False) for r in results[10:] if r not in wins)
    finally:
        for s in stores:
            await s.close()


async def test_begin_delivery_with_a_lease_reads_user_and_policy_on_takeover(store: BaseStore):
    alice = UserRecord("telegram:1", role="admin", language="en")
    policy = ChannelPolicy("telegram:c", enabled=True, persona="terse")
    await store.put_user(alice)
    await store.put_channel_policy(policy)

    async def begin(at: datetime, lease: float | None = 30) -> DeliveryStart:
        return await store.begin_delivery(
            "telegram",
            "u9",
            now=at,
            ttl_seconds=600,
            lease_seconds=lease,
            user_id=alice.user_id,
            channel=policy.channel,
        )

    assert await begin(NOW) == DeliveryStart(claimed=True, user=alice, policy=policy)
    assert await begin(NOW + timedelta(seconds=10)) == DeliveryStart(claimed=False)
    assert await begin(NOW + timedelta(seconds=40), None) == DeliveryStart(claimed=False)
    # The process that claimed it died: the re-delivery takes it over, reading both again.
    retaken = await begin(NOW + timedelta(seconds=40))
    assert retaken == DeliveryStart(claimed=True, user=alice, policy=policy)
    await store.finish_delivery("telegram", "u9", now=NOW + timedelta(seconds=45))
    assert await begin(NOW + timedelta(seconds=500)) == DeliveryStart(claimed=False)


async def test_invalid_lease_is_refused_before_any_write(store: BaseStore):
    assert await store.claim_delivery("t", "1", now=NOW, ttl_seconds=600)
    later = NOW + timedelta(seconds=100)
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="lease_seconds"):
            await store.claim_delivery("t", "1", now=later, ttl_seconds=600, lease_seconds=bad)
        with pytest.raises(ValueError, match="lease_seconds"):
            await store.begin_delivery(
                "t", "2", now=later, ttl_seconds=600, lease_seconds=bad, user_id="u", channel="c"
            )
    # Nothing was claimed by the refused calls.
    assert await store.claim_delivery("t", "2", now=later, ttl_seconds=600)
    # A lease too long for the calendar never runs out (and is not an error).
    assert not await store.claim_delivery(
        "t", "1", now=later, ttl_seconds=600, lease_seconds=float("inf")
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.finish_delivery("t", "1", now=datetime(2026, 1, 1))


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


async def test_load_context_creates_and_reads_the_current_epoch(store: BaseStore):
    state, turns = await store.load_context("fresh", limit=40)
    assert (state.key, state.epoch, state.persona, state.last_active_at, turns) == (
        "fresh",
        0,
        None,
        None,
        [],
    )
    assert await store.get_conversation("fresh") == state  # created, not just reported

    for i in range(6):
        await store.append_turns(
            "k", 0, [turn("user", f"old{i}", at=NOW + timedelta(seconds=i))], active_at=NOW
        )
    await store.set_persona("k", "a pirate")
    assert await store.new_epoch("k") == 1
    later = NOW + timedelta(minutes=3)
    for i in range(5):
        await store.append_turns(
            "k", 1, [turn("assistant", f"new{i}", at=later + timedelta(seconds=i))], active_at=later
        )
    await store.append_turns("other", 1, [turn("user", "elsewhere")], active_at=NOW)

    state, turns = await store.load_context("k", limit=3)
    assert (state.epoch, state.persona, state.last_active_at) == (1, "a pirate", later)
    assert [t.content for t in turns] == ["new2", "new3", "new4"]  # newest 3, oldest first
    assert turns[-1].created_at == later + timedelta(seconds=4)
    assert turns[0].id < turns[1].id < turns[2].id
    # The same answer as the two single-step calls it replaces.
    assert (state, turns) == (
        await store.get_conversation("k"),
        await store.recent_turns("k", 1, limit=3),
    )
    assert [t.content for t in (await store.load_context("k", limit=100))[1]] == [
        f"new{i}" for i in range(5)
    ]
    assert (await store.load_context("k", limit=0))[1] == []


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
    first_inside = asyncio.Event()
    all_queued = asyncio.Event()

    async def worker(i: int, arrived: asyncio.Event) -> None:
        nonlocal inside, max_inside
        arrived.set()  # the next statement queues on the lock before this task yields
        async with store.conversation_lock("k"):
            inside += 1
            max_inside = max(max_inside, inside)
            order.append(i)
            if i == 0:
                first_inside.set()
                await all_queued.wait()  # hold the lock until every other worker waits on it
            # One scheduler yield while holding: a non-exclusive lock would let a waiter in here.
            await asyncio.sleep(0)
            inside -= 1

    # Start workers one by one so their arrival order is defined: 0 holds, then 1, 2, ... queue.
    tasks = [asyncio.create_task(worker(0, asyncio.Event()))]
    await asyncio.wait_for(first_inside.wait(), 5)
    for i in range(1, 20):
        arrived = asyncio.Event()
        tasks.append(asyncio.create_task(worker(i, arrived)))
        await asyncio.wait_for(arrived.wait(), 5)
    assert order == [0]  # everyone else is queued behind worker 0
    all_queued.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
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
        arrived = asyncio.Event()
        waiter = asyncio.create_task(_hold(store, "a", arrived))
        await asyncio.wait_for(arrived.wait(), 5)  # the waiter is queued on the held lock
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    # The cancelled waiter left nothing behind: the key is free.
    async with asyncio.timeout(1):
        async with store.conversation_lock("a"):
            pass


async def _hold(store: BaseStore, key: str, arrived: asyncio.Event | None = None) -> None:
    if arrived is not None:
        arrived.set()  # the next statement queues on the lock before this task yields
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


async def test_sweep_ends_image_jobs_left_queued_or_running(store: BaseStore):
    """A dead process leaves its image jobs queued or running: the sweep that releases their
    reservations ends them too, with a reason; finished and young jobs are untouched."""
    old = NOW - timedelta(hours=1)
    await store.reserve("img", [QuotaLine("images", 1, 5)], now=old, meta=entry(images=1))
    await store.put_image_job(job("old-queued", at=old))
    await store.put_image_job(job("old-running", status="running", at=old))
    await store.put_image_job(job("old-done", status="done", at=old))
    await store.put_image_job(job("old-cancelled", status="cancelled", at=old))
    await store.put_image_job(job("young-running", status="running", at=NOW))
    later = NOW + timedelta(seconds=5)

    assert await store.sweep_reservations(older_than=NOW - timedelta(minutes=15), now=later) == 1
    jobs = {j.job_id: j for j in await store.image_jobs()}
    for ended in ("old-queued", "old-running"):
        assert jobs[ended].status == "failed"
        assert jobs[ended].finished_at == later
        assert jobs[ended].error == SWEPT_JOB_ERROR and "expired" in jobs[ended].error
        assert jobs[ended].prompt == f"a cat number {ended}"  # the rest of the record is kept
    assert jobs["old-done"] == job("old-done", status="done", at=old)
    assert jobs["old-cancelled"] == job("old-cancelled", status="cancelled", at=old)
    assert jobs["young-running"] == job("young-running", status="running", at=NOW)
    assert await store.image_jobs(status="queued") == []
    assert [j.job_id for j in await store.image_jobs(status="running")] == ["young-running"]
    # Idempotent: a second sweep changes nothing (the first finish time stays).
    assert await store.sweep_reservations(older_than=NOW, now=later + timedelta(hours=1)) == 0
    assert (await store.get_image_job("old-running")).finished_at == later
    assert (await store.get_image_job("young-running")).status == "running"


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


# --- bonus counters ------------------------------------------------------------------------


async def _top_up(store: BaseStore, counter: str, amount: int, rid: str) -> None:
    """What an admin grant does: a non-refundable, unlimited line, settled at once."""
    await store.reserve(rid, [QuotaLine(counter, amount, None, False)], now=NOW, meta=entry())
    assert await store.settle(rid, {}, entry=entry(rid, outcome="grant:tokens"))


async def test_bonus_counter_raises_the_effective_limit_exactly(store: BaseStore):
    line = QuotaLine("u|tok|d", 1, 10, bonus_counter="u|tok_bonus|d")
    # Absent bonus counter: the plain limit.
    outs = [await store.reserve(f"a{i}", [line], now=NOW, meta=entry()) for i in range(11)]
    assert [o.granted for o in outs] == [True] * 10 + [False]
    assert outs[-1] == ReserveOutcome(granted=False, denied_counter="u|tok|d", used=10, limit=10)
    # A top-up of 5 admits exactly 5 more, and denials report the effective limit.
    await _top_up(store, "u|tok_bonus|d", 5, "grant-1")
    outs = [await store.reserve(f"b{i}", [line], now=NOW, meta=entry()) for i in range(6)]
    assert [o.granted for o in outs] == [True] * 5 + [False]
    assert outs[-1] == ReserveOutcome(granted=False, denied_counter="u|tok|d", used=15, limit=15)
    # The bonus counter is read, never charged or released.
    assert await store.refund("b0", entry=entry("b0", outcome="refunded"))
    assert await store.counters(["u|tok|d", "u|tok_bonus|d"]) == {
        "u|tok|d": 14,
        "u|tok_bonus|d": 5,
    }
    # A line wider than limit + bonus is refused as a whole; one that exactly fills it is not.
    wide = QuotaLine("u|tok|d", 2, 10, bonus_counter="u|tok_bonus|d")
    assert not (await store.reserve("c0", [wide], now=NOW, meta=entry())).granted
    assert (await store.reserve("c1", [line], now=NOW, meta=entry())).granted
    assert await store.counters(["u|tok|d"]) == {"u|tok|d": 15}


async def test_bonus_counter_on_fresh_counter_and_without_limit(store: BaseStore):
    await _top_up(store, "bonus", 30, "g")
    # The first charge of a counter is checked against limit + bonus too.
    big = QuotaLine("fresh", 35, 10, bonus_counter="bonus")
    assert (await store.reserve("r1", [big], now=NOW, meta=entry())).granted
    too_big = QuotaLine("fresh2", 41, 10, bonus_counter="bonus")
    assert await store.reserve("r2", [too_big], now=NOW, meta=entry()) == ReserveOutcome(
        granted=False, denied_counter="fresh2", used=0, limit=40
    )
    # No limit: the bonus changes nothing and nothing is denied.
    free = QuotaLine("free", 10**6, None, bonus_counter="bonus")
    assert (await store.reserve("r3", [free], now=NOW, meta=entry())).granted
    # A zero limit with a bonus admits exactly the bonus.
    zero = QuotaLine("z", 30, 0, bonus_counter="bonus")
    assert (await store.reserve("r4", [zero], now=NOW, meta=entry())).granted
    assert not (await store.reserve("r5", [QuotaLine("z", 1, 0, bonus_counter="bonus")],
                                    now=NOW, meta=entry())).granted  # fmt: skip
    assert await store.counters(["fresh", "fresh2", "free", "z", "bonus"]) == {
        "fresh": 35,
        "fresh2": 0,
        "free": 10**6,
        "z": 30,
        "bonus": 30,
    }


async def test_bonus_denial_rolls_back_every_line(store: BaseStore):
    await _top_up(store, "day_bonus", 2, "g")
    await store.reserve("r0", [QuotaLine("day", 12, None)], now=NOW, meta=entry())
    lines = [
        QuotaLine("rpm", 1, 10, refundable=False),
        QuotaLine("org", 5, 100),
        QuotaLine("day", 1, 10, bonus_counter="day_bonus"),  # 12 + 1 > 10 + 2
        QuotaLine("month", 1, 1000),
    ]
    out = await store.reserve("r1", lines, now=NOW, meta=entry())
    assert out == ReserveOutcome(granted=False, denied_counter="day", used=12, limit=12)
    assert await store.counters(["rpm", "org", "day", "month", "day_bonus"]) == {
        "rpm": 0,
        "org": 0,
        "day": 12,
        "month": 0,
        "day_bonus": 2,
    }
    # A duplicate id is still answered before any line is looked at.
    await _top_up(store, "day_bonus", 1, "g2")
    assert await store.reserve("r1", lines, now=NOW, meta=entry()) == ReserveOutcome(True)
    assert await store.reserve("r1", lines, now=NOW, meta=entry()) == ReserveOutcome(
        granted=True, duplicate=True
    )
    assert await store.counters(["day", "org"]) == {"day": 13, "org": 5}


async def test_200_concurrent_reservations_with_a_bonus_grant_exactly_limit_plus_bonus(
    store: BaseStore,
):
    await _top_up(store, "hot_bonus", 7, "grant")

    async def attempt(i: int) -> ReserveOutcome:
        line = QuotaLine("hot", 1, 10, bonus_counter="hot_bonus")
        return await store.reserve(f"res-{i}", [line], now=NOW, meta=entry(f"res-{i}"))

    outcomes = await asyncio.gather(*(attempt(i) for i in range(200)))
    assert sum(o.granted for o in outcomes) == 17
    denied = [o for o in outcomes if not o.granted]
    assert all((o.denied_counter, o.used, o.limit) == ("hot", 17, 17) for o in denied)
    assert await store.counters(["hot", "hot_bonus"]) == {"hot": 17, "hot_bonus": 7}


async def test_bonus_reservations_match_a_model_under_random_traffic(store: BaseStore):
    rng = random.Random(4242)
    used = {"c": 0, "b": 0}
    limit = 50
    for i in range(150):
        if rng.random() < 0.15:
            amount = rng.randint(1, 10)
            await _top_up(store, "b", amount, f"g{i}")
            used["b"] += amount
            continue
        amount = rng.randint(0, 12)
        out = await store.reserve(
            f"r{i}", [QuotaLine("c", amount, limit, bonus_counter="b")], now=NOW, meta=entry()
        )
        fits = used["c"] + amount <= limit + used["b"]
        assert out.granted == fits, (i, used, amount)
        if fits:
            used["c"] += amount
        else:
            assert (out.used, out.limit) == (used["c"], limit + used["b"])
    assert await store.counters(["c", "b"]) == used


# --- finishing a turn ----------------------------------------------------------------------


async def test_finish_turn_appends_and_settles(store: BaseStore):
    lines = [QuotaLine("tok", 4000, 10_000), QuotaLine("rpm", 1, 10, refundable=False)]
    await store.reserve("r1", lines, now=NOW, meta=entry())
    done = NOW + timedelta(seconds=7)
    ok = await store.finish_turn(
        "chat",
        0,
        [turn("user", "q", at=NOW), turn("assistant", "a", at=done)],
        active_at=done,
        reservation_id="r1",
        actual={"tok": 130},
        entry=entry("ignored-id", tokens_in=100, tokens_out=30),
    )
    assert ok is True
    got = await store.recent_turns("chat", 0, limit=10)
    assert [(t.role, t.content, t.created_at) for t in got] == [
        ("user", "q", NOW),
        ("assistant", "a", done),
    ]
    assert (await store.get_conversation("chat")).last_active_at == done
    assert await store.counters(["tok", "rpm"]) == {"tok": 130, "rpm": 1}
    rows = await store.ledger()
    assert len(rows) == 1  # stored under the reservation id, like settle
    assert rows[0] == entry("r1", tokens_in=100, tokens_out=30)
    # Settled once: the reservation is closed for settle, refund and another finish.
    assert await store.settle("r1", {"tok": 1}, entry=entry("r1")) is False
    assert await store.refund("r1", entry=entry("r1")) is False


async def test_finish_turn_on_a_closed_reservation_keeps_turns_and_changes_no_quota(
    store: BaseStore,
):
    old = NOW - timedelta(hours=1)
    await store.reserve("swept", [QuotaLine("tok", 500, None)], now=old, meta=entry())
    await store.reserve("refunded", [QuotaLine("tok", 70, None)], now=NOW, meta=entry())
    assert await store.refund("refunded", entry=entry("refunded", outcome="refunded"))
    assert await store.sweep_reservations(older_than=NOW - timedelta(minutes=15), now=NOW) == 1
    assert await store.counters(["tok"]) == {"tok": 0}
    before = await store.ledger()

    for i, rid in enumerate(["swept", "refunded", "never-reserved"]):
        ok = await store.finish_turn(
            "chat",
            0,
            [turn("user", f"q{i}"), turn("assistant", f"a{i}")],
            active_at=NOW + timedelta(minutes=i),
            reservation_id=rid,
            actual={"tok": 400},
            entry=entry(rid, tokens_in=400),
        )
        assert ok is False
    # The user saw the answers: every exchange is stored; no counter or ledger row moved.
    assert [t.content for t in await store.recent_turns("chat", 0, limit=10)] == [
        "q0",
        "a0",
        "q1",
        "a1",
        "q2",
        "a2",
    ]
    assert (await store.get_conversation("chat")).last_active_at == NOW + timedelta(minutes=2)
    assert await store.counters(["tok"]) == {"tok": 0}
    assert await store.ledger() == before


async def test_finish_turn_with_a_bad_turn_changes_nothing(store: BaseStore):
    await store.reserve("r", [QuotaLine("tok", 100, None)], now=NOW, meta=entry())
    await store.append_turns("chat", 0, [turn("user", "kept")], active_at=NOW)
    with pytest.raises(StoreError):
        await store.finish_turn(
            "chat",
            0,
            [turn("user", "q"), turn("robot", "a")],  # invalid role: the append fails
            active_at=NOW + timedelta(hours=1),
            reservation_id="r",
            actual={"tok": 10},
            entry=entry("r", tokens_in=10),
        )
    with pytest.raises(ValueError):
        await store.finish_turn(
            "chat",
            0,
            [turn("user", "q")],
            active_at=NOW,
            reservation_id="r",
            actual={"tok": -1},
            entry=entry("r"),
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.finish_turn(
            "chat",
            0,
            [turn("user", "q")],
            active_at=NOW,
            reservation_id="r",
            actual={"tok": 10},
            entry=entry("r", at=datetime(2026, 11, 28, 10)),  # naive
        )
    assert [t.content for t in await store.recent_turns("chat", 0, limit=10)] == ["kept"]
    assert (await store.get_conversation("chat")).last_active_at == NOW
    assert await store.counters(["tok"]) == {"tok": 100}
    assert await store.ledger() == []
    # The reservation is still open.
    assert await store.settle("r", {"tok": 10}, entry=entry("r", tokens_in=10))


async def test_concurrent_finish_turn_and_settle_settle_once(store: BaseStore):
    await store.reserve("r", [QuotaLine("c", 10, None)], now=NOW, meta=entry())
    calls = [
        store.finish_turn(
            "chat",
            0,
            [turn("user", f"q{i}")],
            active_at=NOW,
            reservation_id="r",
            actual={"c": 3},
            entry=entry("r", tokens_in=3),
        )
        for i in range(10)
    ]
    calls += [store.settle("r", {"c": 4}, entry=entry("r", tokens_in=4)) for _ in range(5)]
    results = await asyncio.gather(*calls)
    assert results.count(True) == 1
    assert len(await store.ledger()) == 1
    assert (await store.counters(["c"]))["c"] in (3, 4)
    assert len(await store.recent_turns("chat", 0, limit=100)) == 10


async def test_finish_turn_with_a_delivery_marks_it_finished(store: BaseStore):
    claim = _claimer(store, "telegram", 3600)
    for delivery_id in ("d-ok", "d-closed", "d-plain"):
        assert await claim(delivery_id, 0)
    await store.reserve("r-ok", [QuotaLine("tok", 100, None)], now=NOW, meta=entry())
    done = NOW + timedelta(seconds=20)
    assert await store.finish_turn(
        "chat",
        0,
        [turn("user", "q"), turn("assistant", "a")],
        active_at=done,
        reservation_id="r-ok",
        actual={"tok": 40},
        entry=entry("r-ok", tokens_in=40),
        delivery=("telegram", "d-ok"),
    )
    assert await store.counters(["tok"]) == {"tok": 40}
    # A reservation no longer open: turns stored, nothing settled, the delivery still finished
    # (the user saw the answer, so a re-delivery must not answer it again).
    assert not await store.finish_turn(
        "chat",
        0,
        [turn("user", "q2"), turn("assistant", "a2")],
        active_at=done,
        reservation_id="r-ok",
        actual={"tok": 1},
        entry=entry("r-ok"),
        delivery=("telegram", "d-closed"),
    )
    # Without ``delivery`` (the pre-lease call) the claim is left unfinished.
    await store.reserve("r-plain", [QuotaLine("tok", 10, None)], now=NOW, meta=entry())
    assert await store.finish_turn(
        "chat",
        0,
        [turn("user", "q3"), turn("assistant", "a3")],
        active_at=done,
        reservation_id="r-plain",
        actual={"tok": 5},
        entry=entry("r-plain"),
    )
    assert len(await store.recent_turns("chat", 0, limit=10)) == 6
    assert await store.counters(["tok"]) == {"tok": 45}
    assert not await claim("d-ok", 600, lease=60)
    assert not await claim("d-closed", 600, lease=60)
    assert await claim("d-plain", 600, lease=60)
    # Marking the delivery finished never touches another platform's claim of the same id.
    assert await _claimer(store, "slack", 3600)("d-ok", 0)
    assert await _claimer(store, "slack", 3600)("d-ok", 600, lease=60)


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


async def test_user_names_are_found_by_platform_and_name(store: BaseStore):
    assert await store.find_users("telegram", "alice") == []
    await store.record_user_name("telegram:42", "Alice", now=NOW)
    await store.record_user_name("telegram:7", "bob", now=NOW)
    await store.record_user_name("slack:U1", "alice", now=NOW)
    # Case-insensitive, a leading @ and surrounding spaces ignored; only that platform's users.
    for typed in ("alice", "ALICE", "@Alice", " alice "):
        assert await store.find_users("telegram", typed) == ["telegram:42"]
    assert await store.find_users("slack", "Alice") == ["slack:U1"]
    assert await store.find_users("telegram", "carol") == []
    assert await store.find_users("telegram", "") == []
    assert await store.find_users("telegram", "@") == []
    assert await store.find_users("telegram", "alice", limit=0) == []
    # Several users may share a name: all of them, sorted, at most ``limit``.
    await store.record_user_name("telegram:9", "alice", now=NOW)
    await store.record_user_name("telegram:100", "ALICE", now=NOW)
    assert await store.find_users("telegram", "alice") == [
        "telegram:100",
        "telegram:42",
        "telegram:9",
    ]
    assert await store.find_users("telegram", "alice", limit=2) == ["telegram:100", "telegram:42"]
    # A user has one current name: a new one replaces the old; a blank one records nothing.
    await store.record_user_name("telegram:42", "Alicia", now=NOW + timedelta(minutes=1))
    await store.record_user_name("telegram:42", "  ", now=NOW + timedelta(minutes=2))
    assert await store.find_users("telegram", "alicia") == ["telegram:42"]
    assert await store.find_users("telegram", "alice") == ["telegram:100", "telegram:9"]
    # A name is no user record, and a user record keeps the name.
    assert await store.get_user("telegram:42") is None
    await store.put_user(UserRecord("telegram:42", access="deny"))
    assert await store.find_users("telegram", "alicia") == ["telegram:42"]
    # /forget deletes the name with the rest.
    await store.forget_user("telegram:42")
    assert await store.find_users("telegram", "alicia") == []
    assert await store.find_users("telegram", "alice") == ["telegram:100", "telegram:9"]


async def test_user_names_survive_a_reopen(make_store):
    async with make_store() as s:
        await s.record_user_name("telegram:42", "Alice", now=NOW)
    async with make_store() as s:
        assert await s.find_users("telegram", "alice") == ["telegram:42"]


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


# --- housekeeping --------------------------------------------------------------------------


async def test_checkpoint_is_harmless_at_any_time(store: BaseStore):
    await store.checkpoint()  # nothing written yet
    await store.append_turns("k", 0, [turn("user", "hi")], active_at=NOW)
    await store.reserve("r", [QuotaLine("c", 3, 10)], now=NOW, meta=entry())
    # Concurrently with writes, and repeatedly.
    await asyncio.gather(
        store.checkpoint(),
        store.append_turns("k", 0, [turn("assistant", "hello")], active_at=NOW),
        store.checkpoint(),
        store.settle("r", {"c": 2}, entry=entry("r", tokens_in=2)),
        store.checkpoint(),
    )
    assert [t.content for t in await store.recent_turns("k", 0, limit=5)] == ["hi", "hello"]
    assert await store.counters(["c"]) == {"c": 2}


# --- SQLite-specific -----------------------------------------------------------------------


async def test_sqlite_settings_and_schema_version(tmp_path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path=path, synchronous="full") as s:
        await s.get_conversation("k")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT version, name FROM schema_version").fetchall()
        assert rows == [(1, "initial"), (2, "delivery_leases"), (3, "inbox"), (4, "user_names")]
        assert SCHEMA_VERSION == 4
    finally:
        conn.close()


def _v1_database(path) -> None:
    """A file exactly as the previous release (schema version 1) left it, with claims in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert apply_migrations(conn, MIGRATIONS[:1]) == 1
        conn.executemany(
            "INSERT INTO deliveries (platform, delivery_id, claimed_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            [
                ("telegram", "old-1", "2026-11-28T10:00:00.000000+00:00",
                 "2026-11-28T11:00:00.000000+00:00"),
                ("telegram", "old-2", "2026-11-28T10:00:00.000000+00:00",
                 "2026-11-28T11:00:00.000000+00:00"),
            ],
        )  # fmt: skip
        conn.execute("INSERT INTO conversations (key, epoch) VALUES ('k', 3)")
    finally:
        conn.close()


async def test_sqlite_migrates_a_version_1_database(tmp_path):
    path = tmp_path / "v1.db"
    _v1_database(path)
    conn = sqlite3.connect(path)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(deliveries)")]
        assert "done_at" not in columns
    finally:
        conn.close()

    async with SQLiteStore(path=path) as s:
        # Old data is intact, and old claims behave as unfinished, unexpired claims.
        assert (await s.get_conversation("k")).epoch == 3
        claim = _claimer(s, "telegram", 3600)
        assert not await claim("old-1", 60)
        assert not await claim("old-1", 60, lease=120)
        await s.finish_delivery("telegram", "old-2", now=NOW + timedelta(seconds=30))
        assert await claim("old-1", 120, lease=120)
        assert not await claim("old-2", 120, lease=120)
        assert await s.purge_deliveries(now=NOW + timedelta(hours=1)) == 1  # old-2 expired

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        assert rows == [(1, "initial"), (2, "delivery_leases"), (3, "inbox"), (4, "user_names")]
        done = conn.execute("SELECT delivery_id, done_at FROM deliveries").fetchall()
        assert done == [("old-1", None)]  # re-claimed: a fresh, unfinished claim
    finally:
        conn.close()
    async with SQLiteStore(path=path) as s:  # re-opening runs nothing
        assert await _claimer(s, "telegram", 3600)("old-1", 240, lease=120)


async def test_sqlite_concurrent_opens_migrate_a_version_1_database_once(tmp_path):
    path = tmp_path / "v1.db"
    _v1_database(path)
    stores = [SQLiteStore(path=path) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert await stores[1].claim_delivery(
            "telegram", "old-1", now=NOW + timedelta(seconds=5), ttl_seconds=60, lease_seconds=5
        )
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
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


async def test_sqlite_finish_turn_is_one_transaction(tmp_path):
    """A failure in the settle half also undoes the appended turns (the default composition
    could not promise that)."""
    path = tmp_path / "f.db"
    async with SQLiteStore(path=path) as s:
        await s.reserve("r", [QuotaLine("tok", 100, None)], now=NOW, meta=entry())
        other = sqlite3.connect(path, isolation_level=None)
        try:
            # A stray ledger row for the id makes the settle's ledger insert fail (UNIQUE).
            other.execute(
                "INSERT INTO ledger (reservation_id, user_id, platform, chat, model, tokens_in, "
                "tokens_out, images, cost_cny, outcome, created_at, period_day, period_month) "
                "VALUES ('r', 'u', 'p', 'c', 'm', 0, 0, 0, 0, 'x', 'x', 'x', 'x')"
            )
            with pytest.raises(StoreError) as info:
                await s.finish_turn(
                    "chat",
                    0,
                    [turn("user", "q"), turn("assistant", "a")],
                    active_at=NOW,
                    reservation_id="r",
                    actual={"tok": 10},
                    entry=entry("r", tokens_in=10),
                )
            assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
            assert await s.recent_turns("chat", 0, limit=10) == []
            assert (await s.get_conversation("chat")).last_active_at is None
            assert await s.counters(["tok"]) == {"tok": 100}
            other.execute("DELETE FROM ledger WHERE reservation_id = 'r'")
        finally:
            other.close()
        assert await s.finish_turn(
            "chat",
            0,
            [turn("user", "q")],
            active_at=NOW,
            reservation_id="r",
            actual={"tok": 10},
            entry=entry("r", tokens_in=10),
        )
        assert await s.counters(["tok"]) == {"tok": 10}


@pytest.mark.parametrize("store_class", [SQLiteStore, ComposedSQLiteStore])
async def test_sqlite_failed_finish_turn_leaves_the_delivery_unfinished(tmp_path, store_class):
    """SQLite's one transaction undoes everything; BaseStore's default is not atomic (the turns
    stay) but, finishing the delivery last, also never marks a failed turn finished."""
    path = tmp_path / "f.db"

    def done_at(delivery_id: str):
        conn = sqlite3.connect(path)
        try:
            return conn.execute(
                "SELECT done_at FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()[0]
        finally:
            conn.close()

    async with store_class(path=path) as s:
        claim = _claimer(s, "telegram", 3600)
        assert await claim("d1", 0)
        await s.reserve("r", [QuotaLine("tok", 100, None)], now=NOW, meta=entry())
        other = sqlite3.connect(path, isolation_level=None)
        try:
            # A stray ledger row for the id makes the settle's ledger insert fail (UNIQUE).
            other.execute(
                "INSERT INTO ledger (reservation_id, user_id, platform, chat, model, tokens_in, "
                "tokens_out, images, cost_cny, outcome, created_at, period_day, period_month) "
                "VALUES ('r', 'u', 'p', 'c', 'm', 0, 0, 0, 0, 'x', 'x', 'x', 'x')"
            )
            with pytest.raises(StoreError):
                await s.finish_turn(
                    "chat",
                    0,
                    [turn("user", "q"), turn("assistant", "a")],
                    active_at=NOW + timedelta(seconds=3),
                    reservation_id="r",
                    actual={"tok": 10},
                    entry=entry("r", tokens_in=10),
                    delivery=("telegram", "d1"),
                )
            assert done_at("d1") is None
            assert await s.counters(["tok"]) == {"tok": 100}
            stored = len(await s.recent_turns("chat", 0, limit=10))
            assert stored == (0 if store_class is SQLiteStore else 2)
            other.execute("DELETE FROM ledger WHERE reservation_id = 'r'")
        finally:
            other.close()
        assert await s.finish_turn(
            "chat",
            0,
            [turn("user", "q")],
            active_at=NOW + timedelta(seconds=4),
            reservation_id="r",
            actual={"tok": 10},
            entry=entry("r", tokens_in=10),
            delivery=("telegram", "d1"),
        )
        assert done_at("d1") == "2026-11-28T10:00:04.000000+00:00"  # active_at, as UTC text
        assert not await claim("d1", 600, lease=60)
        await s.finish_delivery("telegram", "d1", now=NOW + timedelta(minutes=5))
        assert done_at("d1") == "2026-11-28T10:00:04.000000+00:00"  # the first finish stays


async def test_sqlite_sweep_is_one_transaction_with_the_image_jobs(tmp_path):
    """If sweeping a reservation fails, the stale image jobs stay as they were too (and the
    next sweep, once the fault is gone, ends both)."""
    path = tmp_path / "s.db"
    old = NOW - timedelta(hours=1)
    async with SQLiteStore(path=path) as s:
        await s.reserve("r", [QuotaLine("images", 1, 5)], now=old, meta=entry(images=1))
        await s.put_image_job(job("stale", status="running", at=old))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            # A stray ledger row for the id makes the sweep's ledger insert fail (UNIQUE).
            other.execute(
                "INSERT INTO ledger (reservation_id, user_id, platform, chat, model, tokens_in, "
                "tokens_out, images, cost_cny, outcome, created_at, period_day, period_month) "
                "VALUES ('r', 'u', 'p', 'c', 'm', 0, 0, 0, 0, 'x', 'x', 'x', 'x')"
            )
            with pytest.raises(StoreError):
                await s.sweep_reservations(older_than=NOW, now=NOW)
            assert (await s.get_image_job("stale")).status == "running"
            assert await s.counters(["images"]) == {"images": 1}
            other.execute("DELETE FROM ledger WHERE reservation_id = 'r'")
        finally:
            other.close()
        assert await s.sweep_reservations(older_than=NOW, now=NOW) == 1
        assert (await s.get_image_job("stale")).status == "failed"
        assert await s.counters(["images"]) == {"images": 0}


async def test_sqlite_settles_reservations_stored_without_bonus_field(tmp_path):
    """Reservations written before ``bonus_counter`` existed (asdict format) still settle."""
    path = tmp_path / "o.db"
    async with SQLiteStore(path=path) as s:
        await s.reserve("new", [QuotaLine("tok", 10, None)], now=NOW, meta=entry())
        other = sqlite3.connect(path, isolation_level=None)
        try:
            meta_json = other.execute("SELECT meta FROM reservations").fetchone()[0]
            other.execute("UPDATE counters SET used = used + 40 WHERE name = 'tok'")
            other.execute(
                "INSERT INTO reservations VALUES ('old', 'reserved', ?, ?, ?)",
                (
                    "2026-11-28T10:00:00.000000+00:00",
                    '[{"counter": "tok", "amount": 40, "limit": null, "refundable": true}]',
                    meta_json,
                ),
            )
        finally:
            other.close()
        assert await s.settle("old", {"tok": 25}, entry=entry("old", tokens_in=25))
        assert await s.counters(["tok"]) == {"tok": 35}


async def test_sqlite_checkpoint_moves_the_wal_into_the_database(tmp_path):
    path = tmp_path / "w.db"
    wal = tmp_path / "w.db-wal"
    # Automatic checkpoints off: only checkpoint() copies pages into the main file.
    async with SQLiteStore(path=path, wal_autocheckpoint=0) as s:
        await s.get_conversation("k")
        await s.checkpoint()
        base_size = path.stat().st_size
        big = [turn("user", f"{i} " + "x" * 2000) for i in range(300)]  # ~600 KB
        for start in range(0, len(big), 50):
            await s.append_turns("k", 0, big[start : start + 50], active_at=NOW)
        assert path.stat().st_size == base_size  # everything is still in the WAL
        assert wal.stat().st_size > 500_000
        await s.checkpoint()
        assert path.stat().st_size > base_size + 500_000
        # The WAL is reused from its start afterwards instead of growing further.
        wal_size = wal.stat().st_size
        await s.append_turns("k", 0, [turn("user", "after")], active_at=NOW)
        assert wal.stat().st_size == wal_size
        assert len(await s.recent_turns("k", 0, limit=1000)) == 301
    # With automatic checkpoints at a few pages, commits copy pages on their own.
    async with SQLiteStore(path=tmp_path / "a.db", wal_autocheckpoint=4) as s:
        await s.get_conversation("k")
        size = (tmp_path / "a.db").stat().st_size
        for start in range(0, len(big), 50):
            await s.append_turns("k", 0, big[start : start + 50], active_at=NOW)
        assert (tmp_path / "a.db").stat().st_size > size + 500_000


# --- context reads across connections ----------------------------------------------------


def _contents(turns: list[TurnRecord]) -> list[str]:
    return [t.content for t in turns]


async def test_sqlite_load_context_matches_a_fresh_read_through_random_operations(tmp_path):
    """Random appends, new epochs, forgets and loads (several keys and limits) through one
    store always return exactly what a read through another connection to the file returns."""
    rng = random.Random(20261128)
    path = tmp_path / "c.db"
    async with (
        SQLiteStore(path=path) as cached,
        SQLiteStore(path=path) as fresh,
    ):
        keys = ["a", "b", "c"]
        users = ["telegram:1", "telegram:2"]
        counter = 0
        for _ in range(400):
            key = rng.choice(keys)
            action = rng.random()
            if action < 0.45:
                state = await cached.get_conversation(key)
                batch = []
                for _ in range(rng.randint(1, 3)):
                    counter += 1
                    role = rng.choice(["user", "assistant", "system"])
                    batch.append(turn(role, f"t{counter}", rng.choice(users)))
                await cached.append_turns(key, state.epoch, batch, active_at=NOW)
            elif action < 0.5:
                await cached.new_epoch(key)
            elif action < 0.53:
                await cached.forget_user(rng.choice(users))
            else:
                limit = rng.choice([1, 5, 10, 40])
                got_state, got = await cached.load_context(key, limit=limit)
                want_state, want = await fresh.load_context(key, limit=limit)
                assert got_state == want_state
                assert got == want


async def test_sqlite_load_context_sees_another_process_and_forgets(tmp_path):
    """Turns written or forgotten through another connection (another process) are never
    served stale, and /forget through this store drops the turns at once."""
    path = tmp_path / "p.db"
    async with SQLiteStore(path=path) as mine, SQLiteStore(path=path) as theirs:
        state = await mine.get_conversation("k")
        await mine.append_turns(
            "k",
            state.epoch,
            [turn("user", "mine", "telegram:1"), turn("assistant", "ok", "telegram:1")],
            active_at=NOW,
        )
        await mine.load_context("k", limit=40)  # cached now
        await theirs.append_turns(
            "k", state.epoch, [turn("user", "theirs", "telegram:2")], active_at=NOW
        )
        _, turns = await mine.load_context("k", limit=40)
        assert _contents(turns) == ["mine", "ok", "theirs"]
        assert await theirs.forget_user("telegram:1") == 2
        _, turns = await mine.load_context("k", limit=40)
        assert _contents(turns) == ["theirs"]
        assert await mine.forget_user("telegram:2") == 1
        _, turns = await mine.load_context("k", limit=40)
        assert turns == []
