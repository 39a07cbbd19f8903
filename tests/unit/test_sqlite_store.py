"""White-box tests of the SQLite store (``core/store/sqlite.py`` and its private modules): query
plans, statements run, round trips per batched call, pragmas, lock bookkeeping, the retries of
``open()``. The behaviour every store owes lives in ``tests/contract``."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import typing
from datetime import UTC, datetime

import pytest

from core.errors import ConfigError, StoreError
from core.store import (
    ChannelPolicy,
    DeliveryStart,
    LedgerEntry,
    Outcome,
    QuotaLine,
    ReservationState,
    SQLiteStore,
    TurnRecord,
    UserRecord,
    failed_outcome,
    grant_outcome,
)
from core.store import sqlite as module
from core.store._queries import RECENT_TURNS_SQL
from core.store.migrations import MIGRATIONS

NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path):
    async with SQLiteStore(path=tmp_path / "hybot.db") as opened:
        yield opened


def entry(rid: str = "", *, user: str = "telegram:1") -> LedgerEntry:
    return LedgerEntry(
        rid, user, "telegram", "chat-1", "hy3-preview", 0, 0, 0, 0.0, "ok", NOW, "2026-11-28",
        "2026-11",
    )  # fmt: skip


def turn(role: str, content: str, user: str = "telegram:1") -> TurnRecord:
    return TurnRecord(
        role=role,  # type: ignore[arg-type]
        content=content,
        user_id=user,
        tokens=3,
        created_at=NOW,
        delivery_id=f"d-{content}",
    )


async def test_recent_turns_uses_the_index(store):
    conn = sqlite3.connect(store.path)
    try:
        plan = " ".join(
            row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + RECENT_TURNS_SQL, ("k", 0, 5))
        )
    finally:
        conn.close()
    assert "USING INDEX turns_conv_epoch_id" in plan or "USING COVERING INDEX" in plan
    assert "TEMP B-TREE" not in plan  # no sort of the whole history


async def test_lock_entries_do_not_accumulate(store):
    async def use(i: int) -> None:
        async with store.conversation_lock(f"chat-{i % 10_000}"):
            await asyncio.sleep(0)

    await asyncio.gather(*(use(i) for i in range(12_000)))
    assert len(store._locks) == 0


class _HopCounter:
    """Counts executor round trips of a SQLiteStore (its ``_call``)."""

    def __init__(self, store: SQLiteStore, monkeypatch) -> None:
        self.names: list[str] = []
        real = store._call

        async def counted(operation, job):
            self.names.append(operation)
            return await real(operation, job)

        monkeypatch.setattr(store, "_call", counted)


async def test_batched_methods_take_one_round_trip_each(tmp_path, monkeypatch):
    async with SQLiteStore(path=tmp_path / "h.db") as s:
        await s.put_user(UserRecord("telegram:1"))
        await s.append_turns("k", 0, [turn("user", "x")], active_at=NOW)
        await s.reserve("g", [QuotaLine("b", 5, None, False)], now=NOW, meta=entry())
        hops = _HopCounter(s, monkeypatch)

        start = await s.begin_delivery(
            "t", "1", now=NOW, ttl_seconds=5, user_id="telegram:1", channel="c", lease_seconds=2
        )
        assert start.claimed and start.user == UserRecord("telegram:1")
        state, turns = await s.load_context("k", limit=40)
        assert len(turns) == 1
        lines = [
            QuotaLine("rpm", 1, 10, refundable=False),
            QuotaLine("day", 100, 10, bonus_counter="b"),
            QuotaLine("month", 100, 1000, bonus_counter="b"),
            QuotaLine("org-day", 100, None),
            QuotaLine("org-month", 100, None),
        ]
        denied = await s.reserve("r0", lines, now=NOW, meta=entry())
        assert (denied.denied_counter, denied.limit) == ("day", 15)
        lines[1] = QuotaLine("day", 100, 95, bonus_counter="b")
        assert (await s.reserve("r1", lines, now=NOW, meta=entry())).granted
        assert await s.finish_turn(
            "k",
            state.epoch,
            [turn("user", "q"), turn("assistant", "a")],
            active_at=NOW,
            reservation_id="r1",
            actual={"day": 50},
            entry=entry("r1"),
            delivery=("t", "1"),
        )
        await s.checkpoint()
        assert hops.names == [
            "begin_delivery",
            "load_context",
            "reserve",
            "reserve",
            "finish_turn",
            "checkpoint",
        ]


async def test_lost_claim_runs_only_the_claim_statement(tmp_path):
    async with SQLiteStore(path=tmp_path / "c.db") as s:
        await s.put_user(UserRecord("telegram:1"))
        await s.put_channel_policy(ChannelPolicy("c", enabled=True))
        statements: list[str] = []
        s._db.conn.set_trace_callback(statements.append)
        try:
            won = await s.begin_delivery(
                "t", "1", now=NOW, ttl_seconds=5, user_id="telegram:1", channel="c"
            )
            reads_when_won = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
            statements.clear()
            lost = await s.begin_delivery(
                "t", "1", now=NOW, ttl_seconds=5, user_id="telegram:1", channel="c"
            )
        finally:
            s._db.conn.set_trace_callback(None)
    assert won.claimed and won.policy == ChannelPolicy("c", enabled=True)
    assert len(reads_when_won) == 2
    assert lost == DeliveryStart(claimed=False)
    # The claim and its reads are one transaction (so a lock error cannot leave the claim
    # taken); besides the transaction's own BEGIN and COMMIT, only the claim statement runs.
    work = [q for q in statements if q.split()[0].upper() not in ("BEGIN", "COMMIT")]
    assert len(work) == 1 and "INSERT INTO deliveries" in work[0]
    assert len(statements) == 3


async def test_wal_autocheckpoint_setting(tmp_path):
    for bad in (-1, True, "4000", 1.5):
        with pytest.raises(ConfigError):
            SQLiteStore(path=tmp_path / "x.db", wal_autocheckpoint=bad)
    async with SQLiteStore(path=tmp_path / "d.db") as s:
        assert s._db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4000
    async with SQLiteStore(path=tmp_path / "e.db", wal_autocheckpoint=123) as s:
        assert s._db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 123


async def test_sqlite_waits_for_another_writer_without_blocking_the_loop(tmp_path):
    path = tmp_path / "w.db"
    async with SQLiteStore(path=path) as s:
        loop = asyncio.get_running_loop()
        begun = asyncio.Event()

        def trace(sql: str) -> None:  # on the writer thread, as a statement starts
            if sql.startswith("BEGIN IMMEDIATE"):
                loop.call_soon_threadsafe(begun.set)

        await s._call("trace", lambda db: db.conn.set_trace_callback(trace))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
            reserve = asyncio.create_task(
                s.reserve("r", [QuotaLine("c", 1, 5)], now=NOW, meta=entry())
            )
            # The reserve's transaction has started while the lock is held: it is waiting.
            await asyncio.wait_for(begun.wait(), 10)
            # ... and the loop keeps running meanwhile: other tasks start and finish.
            assert await asyncio.wait_for(asyncio.create_task(_loop_turns(20)), 10) == 20
            assert not reserve.done()
            other.execute("COMMIT")
            assert (await asyncio.wait_for(reserve, 10)).granted
        finally:
            other.close()
            await s._call("untrace", lambda db: db.conn.set_trace_callback(None))


async def _loop_turns(n: int) -> int:
    """Yield to the event loop ``n`` times; returns ``n`` only if the loop kept turning."""
    for _ in range(n):
        await asyncio.sleep(0)
    return n


# --- opening a fresh file from several processes ---------------------------------------------


def _busy() -> sqlite3.OperationalError:
    err = sqlite3.OperationalError("database is locked")
    err.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    return err


async def test_open_retries_a_refused_wal_switch_or_migration(tmp_path, monkeypatch):
    """SQLite may refuse the WAL switch or a migration's lock without waiting while other
    processes open the same fresh file: open() tries again until the busy timeout."""
    real = module.apply_migrations
    calls = []

    def flaky(conn):
        calls.append(1)
        if len(calls) <= 2:
            raise _busy()
        return real(conn)

    monkeypatch.setattr(module, "apply_migrations", flaky)
    async with SQLiteStore(path=tmp_path / "r.db") as s:
        assert len(calls) == 3
        assert s._db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert await s.get_user("x") is None  # migrated

    def always(conn):
        raise _busy()

    monkeypatch.setattr(module, "apply_migrations", always)
    clock = _VirtualTime()
    monkeypatch.setattr(module, "time", clock)  # open()'s retry loop reads and sleeps on it
    with pytest.raises(StoreError, match="cannot open the SQLite store"):
        await SQLiteStore(path=tmp_path / "t.db", busy_timeout_ms=200).open()
    # It kept retrying until the 0.2 s budget was spent, and stopped within one pause of it.
    assert len(clock.sleeps) >= 2 and sum(clock.sleeps) == pytest.approx(clock.now)
    assert 0.2 <= clock.now < 0.2 + 0.15  # the longest pause is 0.1 s with +50 % jitter

    broken_calls = []

    def broken(conn):
        broken_calls.append(1)
        raise sqlite3.OperationalError("no such table: nowhere")

    monkeypatch.setattr(module, "apply_migrations", broken)
    clock = _VirtualTime()
    monkeypatch.setattr(module, "time", clock)
    with pytest.raises(StoreError, match="no such table"):
        await SQLiteStore(path=tmp_path / "u.db").open()
    assert broken_calls == [1] and clock.sleeps == []  # other errors are not retried


class _VirtualTime:
    """Stands in for the ``time`` module of ``core.store.sqlite``: ``sleep`` advances a virtual
    ``monotonic`` clock at once and records the pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_memory_store_opens_without_wal():
    async with SQLiteStore(path=":memory:") as s:
        assert s._db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "memory"
        await s.put_user(UserRecord("telegram:1"))
        assert await s.get_user("telegram:1") == UserRecord("telegram:1")
        await s.checkpoint()  # nothing to do, no error


def test_reservation_states_match_the_schema_check() -> None:
    """The ``ReservationState`` type and the table's CHECK constraint name the same states."""
    ddl = next(s for s in MIGRATIONS[0].statements if "CREATE TABLE reservations" in s)
    match = re.search(r"CHECK \(state IN \(([^)]*)\)\)", ddl)
    assert match is not None
    in_schema = {part.strip().strip("'") for part in match.group(1).split(",")}
    assert in_schema == set(typing.get_args(ReservationState))


def test_outcome_helpers_build_the_prefixed_forms() -> None:
    assert failed_outcome("busy") == "failed:busy"
    assert failed_outcome("busy").startswith(Outcome.FAILED)
    assert grant_outcome("tokens", 500) == "grant:tokens:500"
    assert Outcome.OK == "ok"
