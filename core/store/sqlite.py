"""The default store: one SQLite file, through sqlite-utils, safe from asyncio and across processes.

Who uses it: the composition root builds ``SQLiteStore(path=...)`` (or :func:`open_store`) and
hands it to the core, which only sees :class:`~core.store.base.BaseStore`.

How it keeps the contract (see ``base.py`` for the guarantees; ``platforms.md`` §3 for why):

- **One writer thread.** The connection is opened with ``check_same_thread=False`` and every
  piece of database work runs on one ``ThreadPoolExecutor(max_workers=1)``, so the event loop
  never blocks and the connection is never used by two threads at once. Each transaction is
  *one* synchronous function run on that thread: a transaction never spans an ``await``, so a
  cancelled caller cannot leave it half done.
- **Jobs go to the thread in batches.** A call appends its job to a FIFO queue; one executor
  task drains everything queued (jobs added while it runs included) and hands all the results
  back to the event loop in one callback. Under load, one thread wake-up and one loop wake-up
  serve several messages' jobs instead of one each: in ``bench/pipeline.py`` this cut the process's
  CPU per message by about 0.7 ms (a hand-off per job cost more than the SQL it carried). Jobs
  run strictly in call order, and every queued job runs, as with a plain executor.
- **Explicit transactions.** The connection is in autocommit mode (``isolation_level=None``);
  single statements commit on their own, and every read-then-write sequence runs inside
  ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error). ``BEGIN IMMEDIATE`` takes the
  write lock up front and honours the busy timeout; a deferred ``BEGIN`` would fail at once with
  ``database is locked`` when another process commits first.
- **Conditional counters.** A quota line is charged by one conditional upsert (insert the counter
  or add to it, only if the result fits the limit, a bonus counter's value included) whose row
  count says whether it fitted, so no read-check-write race exists even without the transaction.
- **WAL**, ``synchronous`` as configured (``NORMAL`` by default: durable across process crashes;
  an OS crash may lose the last commits), foreign keys on. ``wal_autocheckpoint`` (pages) sets how
  large the WAL grows before a commit checkpoints it; :meth:`SQLiteStore.checkpoint` runs a
  passive checkpoint on demand (the core's sweeper), so commits on the hot path rarely pay for one.
- **Few round trips.** Each executor hop costs far more than the SQL it carries (a thread
  wake-up each way), so the batched methods (``begin_delivery``, ``load_context``,
  ``finish_turn``, bonus-aware ``reserve``) do their whole job in one hop, and values are
  converted without generic helpers (no ``dataclasses.asdict`` on the hot path).
- **A context cache** keeps recently used conversations' newest turns in memory, validated on
  every :meth:`SQLiteStore.load_context` by one index probe, so a chat's context costs the same
  to load whatever the length of its stored history (details on :class:`SQLiteStore`).
- Timestamps are stored as fixed-width ISO-8601 UTC strings (``2026-11-28T10:00:00.000000+00:00``),
  so they compare correctly as text, and come back as timezone-aware UTC ``datetime`` s. Passing
  a naive ``datetime`` raises ``ValueError`` (a caller bug, caught before any I/O).
- ``sqlite3`` errors become :class:`~core.errors.StoreError` (``raise ... from err``);
  messages name the operation and SQLite's error, never bound parameters (which hold user text).

Several processes may share one file (each with its own ``SQLiteStore``): claims, reservations
and migrations stay exact across them. :meth:`SQLiteStore.conversation_lock` is in-process only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlite_utils import Database

from core.config import LIMIT_NAMES, LimitSet
from core.errors import ConfigError, StoreBusy, StoreError
from core.store._locks import KeyedLocks
from core.store.base import (
    SWEPT_JOB_ERROR,
    BaseStore,
    ChannelPolicy,
    ConversationState,
    DeliveryStart,
    ImageJobRecord,
    InboxEntry,
    LedgerEntry,
    QuotaLine,
    ReserveOutcome,
    TurnRecord,
    UsageTotals,
    UserRecord,
)
from core.store.migrations import apply_migrations

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_SYNCHRONOUS_MODES = ("EXTRA", "FULL", "NORMAL", "OFF")

# How many ``?`` placeholders one IN (...) list gets; SQLite's default limit is far higher, but
# older builds stop at 999.
_IN_CHUNK = 500

_GROUP_COLUMNS = {"day": "period_day", "user": "user_id"}

# --- SQL -----------------------------------------------------------------------------------

# Insert-if-absent, or take over a claim that has expired or, when a lease cut-off is bound
# (``:lease_cutoff``, else NULL, which makes that test false), one that never finished and was
# claimed at or before the cut-off. ``changes()`` is 1 when this call owns the delivery, 0 when
# the existing claim stands (the upsert's WHERE was false). One statement, so of several
# concurrent takers (tasks, connections, processes) exactly one wins: the statements are
# serialised by the write lock, and the winner's new ``claimed_at`` is past every later taker's
# cut-off (leases are positive; takers' clocks agree to well within a lease). A taken-over
# claim starts unfinished.
_CLAIM_SQL = """
INSERT INTO deliveries (platform, delivery_id, claimed_at, expires_at, done_at)
VALUES (:platform, :delivery_id, :now, :expires_at, NULL)
ON CONFLICT (platform, delivery_id) DO UPDATE
    SET claimed_at = excluded.claimed_at, expires_at = excluded.expires_at, done_at = NULL
    WHERE deliveries.expires_at <= excluded.claimed_at
        OR (deliveries.done_at IS NULL AND deliveries.claimed_at <= :lease_cutoff)
"""

# The first finish time is kept (idempotent); an absent claim stays absent.
_FINISH_DELIVERY_SQL = """
UPDATE deliveries SET done_at = :done_at
WHERE platform = :platform AND delivery_id = :delivery_id AND done_at IS NULL
"""


def _charge_sql(limit: str) -> str:
    """The single-statement check-and-debit: insert the counter at ``amount`` or add ``amount``
    to it, only if the result stays within ``limit`` (an SQL expression). ``changes()`` is 1
    when the line was charged, 0 when it did not fit. The ``SELECT ... WHERE`` guards the
    insert of an absent counter (``used`` starts at 0, so this is the same test); it is also a
    necessary condition for an existing row, because ``used`` is never negative."""
    return f"""
INSERT INTO counters (name, used)
SELECT :name, :amount WHERE :limit IS NULL OR :amount <= {limit}
ON CONFLICT (name) DO UPDATE SET used = counters.used + excluded.used
    WHERE :limit IS NULL OR counters.used + excluded.used <= {limit}
"""


_CHARGE_SQL = _charge_sql(":limit")

# The effective limit of a line with a bonus counter, read inside the charging statement itself
# so that a concurrent top-up or charge can never be missed.
_BONUS_LIMIT = ":limit + COALESCE((SELECT b.used FROM counters AS b WHERE b.name = :bonus), 0)"

_CHARGE_BONUS_SQL = _charge_sql(f"({_BONUS_LIMIT})")

_INSERT_RESERVATION_SQL = """
INSERT INTO reservations (id, state, created_at, lines, meta)
VALUES (?, 'reserved', ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""

_COUNTER_USED_SQL = "SELECT used FROM counters WHERE name = ?"

# Clamped at zero so a bookkeeping slip can never turn into extra quota.
_RELEASE_SQL = """
UPDATE counters SET used = MAX(used - :reserved + :actual, 0) WHERE name = :name
"""

# Walks index turns_conv_epoch_id backwards and stops after LIMIT rows: the cost does not grow
# with the stored history.
_RECENT_TURNS_SQL = """
SELECT id, role, content, user_id, tokens, created_at, delivery_id
FROM turns
WHERE conv_key = ? AND epoch = ?
ORDER BY id DESC
LIMIT ?
"""

_SELECT_CONVERSATION_SQL = (
    "SELECT key, epoch, persona, last_active_at FROM conversations WHERE key = ?"
)

_CREATE_CONVERSATION_SQL = "INSERT INTO conversations (key) VALUES (?) ON CONFLICT (key) DO NOTHING"

# The conversation row plus the id of its epoch's newest turn (one index probe, so as cheap
# for 10,000 stored turns as for 10): what the context cache is validated against.
_SELECT_CONTEXT_STATE_SQL = """
SELECT key, epoch, persona, last_active_at,
       (SELECT MAX(t.id) FROM turns AS t WHERE t.conv_key = c.key AND t.epoch = c.epoch)
FROM conversations AS c WHERE c.key = ?
"""

# Turns newer than the context cache's newest, walking the same index backwards.
_TURNS_AFTER_SQL = """
SELECT id, role, content, user_id, tokens, created_at, delivery_id
FROM turns
WHERE conv_key = ? AND epoch = ? AND id > ?
ORDER BY id DESC
LIMIT ?
"""

# Creates the conversation if needed (turns reference it) and sets last_active_at, in one
# statement.
_ACTIVATE_CONVERSATION_SQL = """
INSERT INTO conversations (key, last_active_at) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET last_active_at = excluded.last_active_at
"""

_INSERT_TURN_SQL = """
INSERT INTO turns (conv_key, epoch, role, content, user_id, tokens, created_at, delivery_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

_SELECT_USER_SQL = "SELECT user_id, role, language, access, limits FROM users WHERE user_id = ?"

_SELECT_POLICY_SQL = (
    "SELECT channel, enabled, mention_only, images_allowed, model, persona "
    "FROM channel_policies WHERE channel = ?"
)

_LEDGER_COLUMNS = (
    "reservation_id, user_id, platform, chat, model, tokens_in, tokens_out, images, cost_cny, "
    "outcome, created_at, period_day, period_month"
)

_INSERT_LEDGER_SQL = f"""
INSERT INTO ledger ({_LEDGER_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# The inbox (Contract 2). An existing entry is never touched by a second record.
_INBOX_RECORD_SQL = """
INSERT INTO inbox (platform, delivery_id, payload, received_at, attempts, leased_until, done_at)
VALUES (?, ?, ?, ?, 1, ?, NULL)
ON CONFLICT (platform, delivery_id) DO NOTHING
"""

_INBOX_DONE_SQL = """
UPDATE inbox SET done_at = ? WHERE platform = ? AND delivery_id = ? AND done_at IS NULL
"""

# One statement: pick the due entries (through the partial index inbox_pending) and lease them,
# under the write lock, so no two callers lease the same entry.
_INBOX_DUE_SQL = """
UPDATE inbox SET attempts = attempts + 1, leased_until = :until
WHERE rowid IN (
    SELECT rowid FROM inbox
    WHERE platform = :platform AND done_at IS NULL
        AND (leased_until IS NULL OR leased_until <= :now)
    ORDER BY received_at, delivery_id
    LIMIT :limit
)
RETURNING platform, delivery_id, payload, attempts, received_at
"""

_INBOX_PURGE_SQL = "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at <= ?"

# Image jobs whose process died: its reservation is swept by the same transaction.
_END_STALE_JOBS_SQL = """
UPDATE image_jobs SET status = 'failed', finished_at = ?, error = ?
WHERE status IN ('queued', 'running') AND created_at < ?
"""

_IMAGE_JOB_COLUMNS = (
    "job_id, user_id, conversation, prompt, size, status, created_at, finished_at, "
    "result_path, error"
)


# --- value conversion ----------------------------------------------------------------------


# Field names read once: ``dataclasses.fields()`` and ``asdict()`` are slow (``asdict`` deep-copies
# recursively), and these conversions run on every reservation and user lookup.
_LEDGER_FIELDS = frozenset(f.name for f in fields(LedgerEntry))

# json.dumps(..., ensure_ascii=False) builds a new encoder on every call; one shared encoder
# (stateless, thread-safe) produces the same text.
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def _ts(value: datetime) -> str:
    """Fixed-width UTC ISO-8601 text (sorts like the instants it names)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("the store needs timezone-aware datetimes; got a naive one")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    # Stored text always ends in +00:00, which parses to the UTC singleton: skip the conversion.
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _claim_params(
    platform: str,
    delivery_id: str,
    now: datetime,
    ttl_seconds: float,
    lease_seconds: float | None,
) -> dict[str, Any]:
    """Bound parameters for :data:`_CLAIM_SQL` (validates before any I/O)."""
    cutoff: str | None = None
    if lease_seconds is not None:
        # ``not >`` also rejects NaN. A zero or negative lease would let every concurrent
        # taker win (each one's cut-off would reach past the others' fresh claimed_at).
        if isinstance(lease_seconds, bool) or not lease_seconds > 0:
            raise ValueError("lease_seconds must be a positive number of seconds")
        try:
            cutoff = _ts(now - timedelta(seconds=lease_seconds))
        except OverflowError:
            _ts(now)  # still reject a naive ``now``
            cutoff = None  # a lease longer than the calendar never runs out
    return {
        "platform": platform,
        "delivery_id": delivery_id,
        "now": _ts(now),
        "expires_at": _ts(now + timedelta(seconds=ttl_seconds)),
        "lease_cutoff": cutoff,
    }


def _finish_delivery_params(platform: str, delivery_id: str, now: datetime) -> dict[str, Any]:
    return {"platform": platform, "delivery_id": delivery_id, "done_at": _ts(now)}


def _opt_dt(text: str | None) -> datetime | None:
    return None if text is None else _dt(text)


def _opt_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _opt_int(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _entry_params(reservation_id: str, entry: LedgerEntry) -> tuple[Any, ...]:
    return (
        reservation_id,
        entry.user_id,
        entry.platform,
        entry.chat,
        entry.model,
        entry.tokens_in,
        entry.tokens_out,
        entry.images,
        entry.cost_cny,
        entry.outcome,
        _ts(entry.created_at),
        entry.period_day,
        entry.period_month,
    )


def _entry_from_row(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(
        reservation_id=row[0],
        user_id=row[1],
        platform=row[2],
        chat=row[3],
        model=row[4],
        tokens_in=row[5],
        tokens_out=row[6],
        images=row[7],
        cost_cny=row[8],
        outcome=row[9],
        created_at=_dt(row[10]),
        period_day=row[11],
        period_month=row[12],
    )


def _entry_to_json(entry: LedgerEntry) -> str:
    # The same object asdict() would give (same keys, same order), built directly.
    data = {
        "reservation_id": entry.reservation_id,
        "user_id": entry.user_id,
        "platform": entry.platform,
        "chat": entry.chat,
        "model": entry.model,
        "tokens_in": entry.tokens_in,
        "tokens_out": entry.tokens_out,
        "images": entry.images,
        "cost_cny": entry.cost_cny,
        "outcome": entry.outcome,
        "created_at": _ts(entry.created_at),
        "period_day": entry.period_day,
        "period_month": entry.period_month,
    }
    return _to_json(data)


def _entry_from_json(text: str) -> LedgerEntry:
    data = json.loads(text)
    values = {k: v for k, v in data.items() if k in _LEDGER_FIELDS}
    values["created_at"] = _dt(values["created_at"])
    return LedgerEntry(**values)


def _lines_to_json(lines: Sequence[QuotaLine]) -> str:
    # Stored for settle/refund/sweep (only counter, amount and refundable are read back);
    # the format is what asdict() gave, so reservations written by older versions still settle.
    return _to_json(
        [
            {
                "counter": line.counter,
                "amount": line.amount,
                "limit": line.limit,
                "refundable": line.refundable,
                "bonus_counter": line.bonus_counter,
            }
            for line in lines
        ]
    )


def _refundable_totals(lines_json: str) -> dict[str, int]:
    """Reserved amount per refundable counter (a counter may appear in several lines)."""
    totals: dict[str, int] = {}
    for item in json.loads(lines_json):
        if item.get("refundable", True):
            totals[item["counter"]] = totals.get(item["counter"], 0) + int(item["amount"])
    return totals


def _limits_to_json(limits: LimitSet) -> str:
    return json.dumps({name: getattr(limits, name) for name in LIMIT_NAMES})


def _limits_from_json(text: str) -> LimitSet:
    data = json.loads(text) if text else {}
    return LimitSet(**{name: data.get(name) for name in LIMIT_NAMES})


def _user_from_row(row: Sequence[Any]) -> UserRecord:
    return UserRecord(
        user_id=row[0],
        role=row[1],
        language=row[2],
        access=row[3],
        limits=_limits_from_json(row[4]),
    )


def _policy_from_row(row: Sequence[Any]) -> ChannelPolicy:
    return ChannelPolicy(
        channel=row[0],
        enabled=_opt_bool(row[1]),
        mention_only=_opt_bool(row[2]),
        images_allowed=_opt_bool(row[3]),
        model=row[4],
        persona=row[5],
    )


def _job_from_row(row: Sequence[Any]) -> ImageJobRecord:
    return ImageJobRecord(
        job_id=row[0],
        user_id=row[1],
        conversation=row[2],
        prompt=row[3],
        size=row[4],
        status=row[5],
        created_at=_dt(row[6]),
        finished_at=_opt_dt(row[7]),
        result_path=row[8],
        error=row[9],
    )


def _where(filters: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """``WHERE`` clause over fixed column names (never user input) with bound values."""
    used = [(column, value) for column, value in filters if value is not None]
    if not used:
        return "", []
    clause = " AND ".join(f"{column} = ?" for column, _ in used)
    return f"WHERE {clause}", [value for _, value in used]


# --- transactions --------------------------------------------------------------------------


class _Rollback(Exception):
    """Raised inside an :func:`_immediate` body to roll back and return ``value``."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


#: ``SQLITE_BUSY`` and ``SQLITE_LOCKED``: another connection holds the lock (primary codes).
_BUSY_CODES = frozenset({5, 6})


def _is_busy(err: sqlite3.Error) -> bool:
    """Whether ``err`` is a lock error (another connection holds the database)."""
    code = getattr(err, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _BUSY_CODES


def _retrying(job: Callable[[Database], _T], budget: float) -> Callable[[Database], _T]:
    """``job`` re-run on lock errors until ``budget`` seconds have passed since it started.

    SQLite's busy handler (``busy_timeout``, set to the same budget) already waits for most
    locks; this also covers the lock errors SQLite returns without waiting (a WAL snapshot that
    cannot be upgraded, a journal-mode switch, ``SQLITE_LOCKED``). Every job is a single
    statement or one transaction that rolls back on error, so re-running it is safe. The pause
    runs on the writer thread, never on the event loop.
    """

    def run(db: Database) -> _T:
        deadline = time.monotonic() + budget
        pause = 0.005
        while True:
            try:
                return job(db)
            except sqlite3.OperationalError as err:
                left = deadline - time.monotonic()
                if not _is_busy(err) or left <= 0:
                    raise
            time.sleep(min(pause * (0.5 + random.random()), left))
            pause = min(pause * 2, 0.1)

    return run


def _immediate(db: Database, body: Callable[[Database], _T]) -> _T:
    """Run ``body`` in ``BEGIN IMMEDIATE`` … ``COMMIT``; roll back on any exception.

    Runs on the writer thread. ``body`` raises :class:`_Rollback` to undo its work and still
    return a value (a denied reservation).
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(db)
        conn.execute("COMMIT")
    except _Rollback as stop:
        conn.execute("ROLLBACK")
        return cast(_T, stop.value)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _finish_reservation(
    conn: sqlite3.Connection,
    reservation_id: str,
    *,
    state: str,
    actual: dict[str, int],
    ledger_params: tuple[Any, ...],
) -> bool:
    """Close an open reservation (inside a transaction): flip its state, release each
    refundable line down to ``actual`` (0 when absent), write the ledger row
    (``ledger_params`` from :func:`_entry_params`). ``False`` (and no change) when the
    reservation is unknown or already closed."""
    row = conn.execute(
        "SELECT lines FROM reservations WHERE id = ? AND state = 'reserved'", (reservation_id,)
    ).fetchone()
    if row is None:
        return False
    flipped = conn.execute(
        "UPDATE reservations SET state = ? WHERE id = ? AND state = 'reserved'",
        (state, reservation_id),
    )
    if flipped.rowcount != 1:  # pragma: no cover - impossible under the write lock
        return False
    for counter, reserved in _refundable_totals(row[0]).items():
        conn.execute(
            _RELEASE_SQL,
            {"name": counter, "reserved": reserved, "actual": actual.get(counter, 0)},
        )
    conn.execute(_INSERT_LEDGER_SQL, ledger_params)
    return True


# --- single-hop building blocks (run on the writer thread) ----------------------------------


def _conversation(conn: sqlite3.Connection, key: str) -> ConversationState:
    """Read first (no write lock on the hot path); create only when absent."""
    row = conn.execute(_SELECT_CONVERSATION_SQL, (key,)).fetchone()
    if row is None:
        conn.execute(_CREATE_CONVERSATION_SQL, (key,))
        row = conn.execute(_SELECT_CONVERSATION_SQL, (key,)).fetchone()
    assert row is not None  # just inserted; conversations are never deleted
    return ConversationState(
        key=row[0], epoch=row[1], persona=row[2], last_active_at=_opt_dt(row[3])
    )


def _recent(
    conn: sqlite3.Connection, key: str, epoch: int, limit: int, after: int = -1
) -> list[TurnRecord]:
    """The newest ``limit`` turns of ``epoch`` (only those with ``id > after`` when ``after``
    is given), oldest first.

    The row conversion is written out inline (positional ``TurnRecord``, no helper calls): it
    runs for every turn of every context load, and per-row calls cost a quarter of it."""
    if limit <= 0:
        return []
    if after < 0:
        rows = conn.execute(_RECENT_TURNS_SQL, (key, epoch, limit)).fetchall()
    else:
        rows = conn.execute(_TURNS_AFTER_SQL, (key, epoch, after, limit)).fetchall()
    rows.reverse()
    parse, utc, record = datetime.fromisoformat, UTC, TurnRecord
    turns: list[TurnRecord] = []
    for turn_id, role, content, user_id, tokens, created, delivery_id in rows:
        at = parse(created)
        if at.tzinfo is not utc:  # stored text is always +00:00; kept for safety
            at = at.astimezone(utc)
        turns.append(record(role, content, user_id, tokens, at, delivery_id, turn_id))
    return turns


def _turn_rows(
    key: str, epoch: int, turns: Sequence[TurnRecord]
) -> list[tuple[str, int, str, str, str, int, str, str]]:
    """Bound parameters for :data:`_INSERT_TURN_SQL` (validates timestamps before any I/O)."""
    return [
        (key, epoch, t.role, t.content, t.user_id, t.tokens, _ts(t.created_at), t.delivery_id)
        for t in turns
    ]


def _append(
    conn: sqlite3.Connection,
    key: str,
    rows: Sequence[tuple[Any, ...]],
    active: str,
) -> None:
    """Turns and ``last_active_at`` (inside the caller's transaction). The conversation row is
    written first because turns reference it."""
    conn.execute(_ACTIVATE_CONVERSATION_SQL, (key, active))
    conn.executemany(_INSERT_TURN_SQL, rows)


def _user(conn: sqlite3.Connection, user_id: str) -> UserRecord | None:
    row = conn.execute(_SELECT_USER_SQL, (user_id,)).fetchone()
    return None if row is None else _user_from_row(row)


def _policy(conn: sqlite3.Connection, channel: str) -> ChannelPolicy | None:
    row = conn.execute(_SELECT_POLICY_SQL, (channel,)).fetchone()
    return None if row is None else _policy_from_row(row)


def _used(conn: sqlite3.Connection, counter: str) -> int:
    row = conn.execute(_COUNTER_USED_SQL, (counter,)).fetchone()
    return 0 if row is None else int(row[0])


def _denial(conn: sqlite3.Connection, line: QuotaLine) -> ReserveOutcome:
    """The figures of a line that did not fit, read in the same transaction as the failed
    charge (so they are the ones it was judged on)."""
    limit = line.limit if line.limit is not None else 0
    if line.bonus_counter and line.limit is not None:
        limit += _used(conn, line.bonus_counter)
    return ReserveOutcome(
        granted=False, denied_counter=line.counter, used=_used(conn, line.counter), limit=limit
    )


# --- the context cache ---------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    """The newest ``limit`` turns of one conversation's ``epoch`` as last read (oldest first);
    ``last_id`` is the id of the newest of them (0 when there are none)."""

    epoch: int
    limit: int
    last_id: int
    turns: list[TurnRecord]


#: The context cache's bound on the text it holds (characters of turn content), whatever the
#: turn bound: long answers must not turn a turn-count bound into hundreds of megabytes.
_CONTEXT_CACHE_MAX_CHARS = 8_000_000


class _ContextCache:
    """Recently used conversations' turn windows, least recently used evicted first, bounded
    by the number of turns held and by :data:`_CONTEXT_CACHE_MAX_CHARS` characters of their
    content. Only touched by store jobs, which never run concurrently (the writer thread).

    Why it is safe: turn ids only grow (``AUTOINCREMENT``) and turns are only appended, except
    by :meth:`SQLiteStore.forget_user`, which clears the cache; ``PRAGMA data_version``
    changes whenever another connection (another process) commits, and then the whole cache
    is dropped. So a window whose epoch and newest id match the database is exactly what a
    fresh read would return, and one whose newest id is lower only lacks the turns after it.
    """

    def __init__(self, max_turns: int, max_chars: int = _CONTEXT_CACHE_MAX_CHARS) -> None:
        self.max_turns = max_turns
        self.max_chars = max_chars
        self.data_version: int | None = None
        self._windows: OrderedDict[str, tuple[_Window, int]] = OrderedDict()  # window, chars
        self._held = 0
        self._held_chars = 0

    def get(self, key: str) -> _Window | None:
        entry = self._windows.get(key)
        if entry is None:
            return None
        self._windows.move_to_end(key)
        return entry[0]

    def put(self, key: str, window: _Window) -> None:
        old = self._windows.pop(key, None)
        if old is not None:
            self._held -= len(old[0].turns)
            self._held_chars -= old[1]
        chars = sum(len(turn.content) for turn in window.turns)
        if len(window.turns) > self.max_turns or chars > self.max_chars:
            return
        self._windows[key] = (window, chars)
        self._held += len(window.turns)
        self._held_chars += chars
        while self._held > self.max_turns or self._held_chars > self.max_chars:
            _, (evicted, evicted_chars) = self._windows.popitem(last=False)
            self._held -= len(evicted.turns)
            self._held_chars -= evicted_chars

    def clear(self) -> None:
        self._windows.clear()
        self._held = self._held_chars = 0

    def __len__(self) -> int:
        return len(self._windows)


def _load_context(
    conn: sqlite3.Connection, cache: _ContextCache | None, key: str, limit: int
) -> tuple[ConversationState, list[TurnRecord]]:
    """:meth:`SQLiteStore.load_context` on the connection, through ``cache`` when given."""
    if cache is None:
        state = _conversation(conn, key)
        return state, _recent(conn, key, state.epoch, limit)
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    if version != cache.data_version:  # another connection committed: trust nothing cached
        cache.clear()
        cache.data_version = version
    row = conn.execute(_SELECT_CONTEXT_STATE_SQL, (key,)).fetchone()
    if row is None:
        conn.execute(_CREATE_CONVERSATION_SQL, (key,))
        row = conn.execute(_SELECT_CONTEXT_STATE_SQL, (key,)).fetchone()
    assert row is not None  # just inserted; conversations are never deleted
    epoch, newest = row[1], row[4] or 0
    state = ConversationState(
        key=row[0], epoch=epoch, persona=row[2], last_active_at=_opt_dt(row[3])
    )
    window = cache.get(key)
    if window is None or window.epoch != epoch or window.limit < limit or window.last_id > newest:
        turns = _recent(conn, key, epoch, limit)
        window = _Window(epoch, limit, turns[-1].id if turns else 0, turns)
        cache.put(key, window)
    elif window.last_id < newest:
        fresh = _recent(conn, key, epoch, window.limit, after=window.last_id)
        turns = (window.turns + fresh)[-window.limit :]
        window = _Window(epoch, window.limit, turns[-1].id, turns)
        cache.put(key, window)
    return state, window.turns[-limit:] if limit > 0 else []


# --- the writer queue ----------------------------------------------------------------------


@dataclass(slots=True)
class _Queued:
    """One job waiting for the writer thread, and the caller's future for its outcome."""

    operation: str
    job: Callable[[Database], Any]
    future: asyncio.Future[Any]


# --- the store -----------------------------------------------------------------------------


class SQLiteStore(BaseStore):
    """:class:`BaseStore` over one SQLite file (see the module docstring for how).

    ``path`` is the database file (``":memory:"`` for a private in-memory database, handy in
    tests; its parent directory must exist). ``busy_timeout_ms`` is the busy budget: how long
    one call waits for locks held by other connections (SQLite's busy handler, and re-runs of
    the call on lock errors SQLite returns at once) before failing with :class:`StoreBusy`
    (nothing of that call is written). ``synchronous`` is
    SQLite's durability level (``"NORMAL"`` or ``"FULL"``; ``"OFF"``/``"EXTRA"`` accepted).
    ``wal_autocheckpoint`` is SQLite's ``PRAGMA wal_autocheckpoint`` (WAL pages before a commit
    checkpoints; ``0`` turns automatic checkpoints off, leaving them to :meth:`checkpoint`).
    The default, 4000 pages (about 16 MB), is four times SQLite's, so that the core's periodic
    :meth:`checkpoint` usually gets there first and a chat message's commit rarely pays for one.
    A negative value raises :class:`ConfigError`.

    ``context_cache_turns`` bounds an in-process cache of recently used conversations' turn
    windows (``0`` turns it off): :meth:`load_context` then reads only the conversation row,
    the id of its newest turn and any turns after the cached ones, instead of the whole
    window, and a chat's context costs the same to load with 10 or 40 turns. It is dropped
    whenever another process commits (``PRAGMA data_version``) and by :meth:`forget_user`.
    At 20,000 turns (the default) it holds about 500 full 40-turn windows, and never more than
    8 million characters of turn text.

    Constructing does no I/O; :meth:`open` (or ``async with``) connects and migrates.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        busy_timeout_ms: int = 10_000,
        synchronous: str = "NORMAL",
        wal_autocheckpoint: int = 4000,
        context_cache_turns: int = 20_000,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ConfigError(
                f"SQLite synchronous must be one of {', '.join(_SYNCHRONOUS_MODES)}, "
                f"not {synchronous!r}"
            )
        if busy_timeout_ms < 0:
            raise ConfigError("SQLite busy_timeout_ms must not be negative")
        if isinstance(wal_autocheckpoint, bool) or not isinstance(wal_autocheckpoint, int):
            raise ConfigError("SQLite wal_autocheckpoint must be a whole number of pages")
        if wal_autocheckpoint < 0:
            raise ConfigError("SQLite wal_autocheckpoint must not be negative")
        if isinstance(context_cache_turns, bool) or not isinstance(context_cache_turns, int):
            raise ConfigError("SQLite context_cache_turns must be a whole number of turns")
        if context_cache_turns < 0:
            raise ConfigError("SQLite context_cache_turns must not be negative")
        self._context_cache = _ContextCache(context_cache_turns) if context_cache_turns else None
        self._path = os.fspath(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._wal_autocheckpoint = wal_autocheckpoint
        self._synchronous = mode
        self._db: Database | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Jobs for the writer thread, in call order. Appended on the event loop, taken on the
        # writer thread (deque append/popleft are atomic); _draining is only read and written
        # on the loop: True from the submission of a drain until its results are delivered.
        self._queue: deque[_Queued] = deque()
        self._draining = False
        self._lifecycle = asyncio.Lock()
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        state = "open" if self._db is not None else "closed"
        return f"SQLiteStore(path={self._path!r}, {state})"

    @property
    def path(self) -> str:
        """The database file this store uses."""
        return self._path

    # --- lifecycle -------------------------------------------------------------------------

    def _connect(self) -> Database:
        """Open, configure and migrate the connection (on the writer thread)."""
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            check_same_thread=False,
            isolation_level=None,
        )
        try:
            db = Database(conn, execute_plugins=False)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {self._wal_autocheckpoint}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._prepare(db)
        except BaseException:
            conn.close()
            raise
        return db

    def _prepare(self, db: Database) -> None:
        """WAL on, then pending migrations, retried until the busy timeout on lock errors.

        Several processes opening a fresh file at once race to switch it to WAL and migrate
        it. SQLite can refuse the journal-mode switch without waiting (it reports the old mode,
        or ``SQLITE_BUSY`` where waiting could deadlock), so the busy timeout alone does not
        cover this; both steps are safe to repeat (migrations re-check the version under the
        write lock).
        """
        conn = db.conn
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        pause = 0.005
        while True:
            try:
                if self._path != ":memory:" and db.journal_mode != "wal":
                    db.enable_wal()
                    if db.journal_mode != "wal":
                        raise sqlite3.OperationalError("database is locked (switching to WAL)")
                apply_migrations(conn)
                return
            except sqlite3.OperationalError as err:
                locked = _is_busy(err) or "database is locked" in str(err)
                if not locked or time.monotonic() >= deadline:
                    raise
            time.sleep(pause * (0.5 + random.random()))  # on the writer thread
            pause = min(pause * 2, 0.1)

    async def open(self) -> None:
        """Connect, enable WAL and run pending migrations. Idempotent.

        Raises :class:`StoreError` if the file cannot be opened, is not a database, or has a
        schema newer than this code knows.
        """
        async with self._lifecycle:
            if self._db is not None:
                return
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybot-sqlite")
            opened: list[Database] = []

            def connect() -> Database:
                db = self._connect()
                opened.append(db)
                return db

            try:
                db = await asyncio.get_running_loop().run_in_executor(executor, connect)
            except BaseException as err:
                # If we were cancelled, connect() may still finish: close what it opened, on
                # the same thread, after it.
                executor.submit(_close_all, opened)
                executor.shutdown(wait=False)
                if isinstance(err, sqlite3.Error):
                    raise StoreError(f"cannot open the SQLite store: {_describe(err)}") from err
                raise
            self._queue.clear()
            self._draining = False
            self._db, self._executor = db, executor

    async def close(self) -> None:
        """Close the connection (after work already queued), then stop the writer thread.
        Idempotent; later calls on the store raise :class:`StoreError` until :meth:`open`."""
        async with self._lifecycle:
            db, executor = self._db, self._executor
            self._db = self._executor = None
            if executor is None:
                return
            try:
                if db is not None:
                    # Queued behind every job already called, like any other job.
                    await self._enqueue("close", lambda database: database.close(), db, executor)
            except sqlite3.Error as err:
                raise StoreError(f"closing the SQLite store failed: {_describe(err)}") from err
            finally:
                # The close job was the last one queued, so the thread is idle: nothing to wait for.
                executor.shutdown(wait=False)

    async def _call(self, operation: str, job: Callable[[Database], _T]) -> _T:
        """Run ``job`` on the writer thread (after every job called before it), re-run on lock
        errors within the busy budget (:func:`_retrying`); translate SQLite failures into
        :class:`StoreError`, lock errors past the budget into :class:`StoreBusy`. Cancelling
        the caller does not stop a queued job."""
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError(f"SQLite store is not open ({operation})")
        try:
            return cast(
                _T,
                await self._enqueue(
                    operation, _retrying(job, self._busy_timeout_ms / 1000), db, executor
                ),
            )
        except sqlite3.Error as err:
            if _is_busy(err):
                raise StoreBusy(
                    f"SQLite {operation} failed: {_describe(err)} "
                    f"(still locked after {self._busy_timeout_ms} ms)"
                ) from err
            raise StoreError(f"SQLite {operation} failed: {_describe(err)}") from err

    def _enqueue(
        self,
        operation: str,
        job: Callable[[Database], Any],
        db: Database,
        executor: ThreadPoolExecutor,
    ) -> asyncio.Future[Any]:
        """Queue ``job`` and start a drain on the writer thread unless one is under way."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Queued(operation, job, future))
        if not self._draining:
            self._start_drain(loop, db, executor)
        return future

    def _start_drain(
        self, loop: asyncio.AbstractEventLoop, db: Database, executor: ThreadPoolExecutor
    ) -> None:
        try:
            executor.submit(self._drain, loop, db, executor)
        except RuntimeError:
            # "cannot schedule new futures after shutdown": the store was closed meanwhile.
            self._draining = False
            self._fail_queued("SQLite store is closed")
            return
        self._draining = True

    def _drain(
        self, loop: asyncio.AbstractEventLoop, db: Database, executor: ThreadPoolExecutor
    ) -> None:
        """On the writer thread: run every queued job in order, then deliver all outcomes to
        the event loop in one callback."""
        outcomes: list[tuple[_Queued, Any, BaseException | None]] = []
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            try:
                outcomes.append((item, item.job(db), None))
            except BaseException as err:  # delivered to the caller, as an executor would
                outcomes.append((item, None, err))
        try:
            loop.call_soon_threadsafe(self._deliver, outcomes, db, executor)
        except RuntimeError:  # pragma: no cover - the loop closed under a running store
            log.warning("event loop closed before %d SQLite results were delivered", len(outcomes))

    def _deliver(
        self,
        outcomes: list[tuple[_Queued, Any, BaseException | None]],
        db: Database,
        executor: ThreadPoolExecutor,
    ) -> None:
        """On the event loop: settle the callers' futures, then drain again (same thread and
        connection: close() queues its own job behind the others) if jobs were queued after
        the drain had taken its last one."""
        for item, result, err in outcomes:
            if item.future.done():  # the caller was cancelled
                continue
            if err is None:
                item.future.set_result(result)
            elif isinstance(err, StopIteration):  # a future refuses it; never leave one unset
                item.future.set_exception(StoreError(f"SQLite {item.operation} failed"))
            else:
                item.future.set_exception(err)
        if self._queue:
            self._start_drain(asyncio.get_running_loop(), db, executor)
        else:
            self._draining = False

    def _fail_queued(self, message: str) -> None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(StoreError(f"{message} ({item.operation})"))

    # --- deliveries ------------------------------------------------------------------------

    async def claim_delivery(
        self,
        platform: str,
        delivery_id: str,
        *,
        now: datetime,
        ttl_seconds: float,
        lease_seconds: float | None = None,
    ) -> bool:
        """Insert-if-absent in one statement; an expired claim, or (with ``lease_seconds``) an
        unfinished one whose lease ran out, is taken over by the same statement."""
        params = _claim_params(platform, delivery_id, now, ttl_seconds, lease_seconds)

        def job(db: Database) -> bool:
            return db.conn.execute(_CLAIM_SQL, params).rowcount == 1

        return await self._call("claim_delivery", job)

    async def begin_delivery(
        self,
        platform: str,
        delivery_id: str,
        *,
        now: datetime,
        ttl_seconds: float,
        user_id: str,
        channel: str,
        lease_seconds: float | None = None,
    ) -> DeliveryStart:
        """One hop, one ``BEGIN IMMEDIATE`` transaction: the claim statement (lease rule
        included), then (only when it claimed) two indexed reads. A failure (a lock past the
        busy budget included) leaves the delivery unclaimed."""
        params = _claim_params(platform, delivery_id, now, ttl_seconds, lease_seconds)

        def body(db: Database) -> DeliveryStart:
            conn = db.conn
            if conn.execute(_CLAIM_SQL, params).rowcount != 1:
                return DeliveryStart(claimed=False)
            return DeliveryStart(
                claimed=True, user=_user(conn, user_id), policy=_policy(conn, channel)
            )

        # One transaction, so that a lock error after the claim cannot leave it taken while
        # the caller gets an error (a retried or failed call must leave it unclaimed).
        return await self._call("begin_delivery", lambda db: _immediate(db, body))

    async def finish_delivery(self, platform: str, delivery_id: str, *, now: datetime) -> None:
        """One statement: ``done_at`` set if the claim exists and is not finished yet."""
        params = _finish_delivery_params(platform, delivery_id, now)

        def job(db: Database) -> None:
            db.conn.execute(_FINISH_DELIVERY_SQL, params)

        await self._call("finish_delivery", job)

    async def purge_deliveries(self, *, now: datetime) -> int:
        cutoff = _ts(now)

        def job(db: Database) -> int:
            return db.execute("DELETE FROM deliveries WHERE expires_at <= ?", (cutoff,)).rowcount

        return await self._call("purge_deliveries", job)

    # --- conversations and turns -----------------------------------------------------------

    async def get_conversation(self, key: str) -> ConversationState:
        """Read first (no write lock on the hot path); create only when absent."""
        return await self._call("get_conversation", lambda db: _conversation(db.conn, key))

    async def load_context(
        self, key: str, *, limit: int
    ) -> tuple[ConversationState, list[TurnRecord]]:
        """One job: :meth:`get_conversation` then :meth:`recent_turns` of its epoch. With the
        context cache (see the class docstring), a conversation read recently costs one probe
        for its newest turn id plus the turns added since, whatever the window's length."""

        def job(db: Database) -> tuple[ConversationState, list[TurnRecord]]:
            return _load_context(db.conn, self._context_cache, key, limit)

        return await self._call("load_context", job)

    async def new_epoch(self, key: str) -> int:
        """Atomic increment (creating the conversation at epoch 1 if absent)."""

        def body(db: Database) -> int:
            db.execute(
                "INSERT INTO conversations (key, epoch) VALUES (?, 1) "
                "ON CONFLICT (key) DO UPDATE SET epoch = conversations.epoch + 1",
                (key,),
            )
            row = db.execute("SELECT epoch FROM conversations WHERE key = ?", (key,)).fetchone()
            return int(row[0])

        return await self._call("new_epoch", lambda db: _immediate(db, body))

    async def set_persona(self, key: str, persona: str | None) -> None:
        def job(db: Database) -> None:
            db.execute(
                "INSERT INTO conversations (key, persona) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET persona = excluded.persona",
                (key, persona),
            )

        await self._call("set_persona", job)

    async def append_turns(
        self, key: str, epoch: int, turns: Sequence[TurnRecord], *, active_at: datetime
    ) -> None:
        """All turns and ``last_active_at`` in one transaction. Turn ``id`` s are assigned by
        the store (the records' ``id`` field is ignored)."""
        active = _ts(active_at)
        rows = _turn_rows(key, epoch, turns)

        def body(db: Database) -> None:
            _append(db.conn, key, rows, active)

        await self._call("append_turns", lambda db: _immediate(db, body))

    async def touch_conversation(self, key: str, *, active_at: datetime) -> None:
        active = _ts(active_at)

        def job(db: Database) -> None:
            db.execute(
                "INSERT INTO conversations (key, last_active_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET last_active_at = excluded.last_active_at",
                (key, active),
            )

        await self._call("touch_conversation", job)

    async def recent_turns(self, key: str, epoch: int, *, limit: int) -> list[TurnRecord]:
        """Newest ``limit`` turns, oldest first, via an index walk bounded by ``limit``."""
        if limit <= 0:
            return []
        return await self._call("recent_turns", lambda db: _recent(db.conn, key, epoch, limit))

    async def forget_user(self, user_id: str) -> int:
        """One transaction: the user's turns (every conversation and epoch), their user row,
        and the prompts of their image jobs (blanked; the jobs stay for accounting)."""

        def body(db: Database) -> int:
            if self._context_cache is not None:
                self._context_cache.clear()
            deleted = db.execute("DELETE FROM turns WHERE user_id = ?", (user_id,)).rowcount
            db.execute("DELETE FROM users WHERE user_id = ?", (user_id,))
            db.execute("UPDATE image_jobs SET prompt = '' WHERE user_id = ?", (user_id,))
            return deleted

        return await self._call("forget_user", lambda db: _immediate(db, body))

    def conversation_lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """In-process FIFO lock per key (other processes are not excluded)."""
        return self._locks.hold(key)

    # --- quota -----------------------------------------------------------------------------

    async def reserve(
        self,
        reservation_id: str,
        lines: Sequence[QuotaLine],
        *,
        now: datetime,
        meta: LedgerEntry,
    ) -> ReserveOutcome:
        """One ``BEGIN IMMEDIATE`` transaction: the reservation row is inserted if absent (a
        known id returns ``granted=True, duplicate=True`` without charging); then every line is
        charged by one conditional upsert (the effective limit, bonus included, is evaluated in
        that statement) and the first that does not fit rolls everything back (a denial leaves
        no row, so retrying a denied id is evaluated afresh). Negative amounts raise
        ``ValueError``."""
        if any(line.amount < 0 for line in lines):
            raise ValueError("quota line amounts must not be negative")
        reservation_params = (reservation_id, _ts(now), _lines_to_json(lines), _entry_to_json(meta))
        charges = [
            (
                line,
                _CHARGE_BONUS_SQL if line.bonus_counter and line.limit is not None else _CHARGE_SQL,
                {
                    "name": line.counter,
                    "amount": line.amount,
                    "limit": line.limit,
                    "bonus": line.bonus_counter,
                },
            )
            for line in lines
        ]

        def body(db: Database) -> ReserveOutcome:
            conn = db.conn
            if conn.execute(_INSERT_RESERVATION_SQL, reservation_params).rowcount != 1:
                # Only granted reservations are stored, whatever their later state.
                return ReserveOutcome(granted=True, duplicate=True)
            for line, sql, params in charges:
                if conn.execute(sql, params).rowcount != 1:
                    raise _Rollback(_denial(conn, line))
            return ReserveOutcome(granted=True)

        return await self._call("reserve", lambda db: _immediate(db, body))

    async def settle(
        self,
        reservation_id: str,
        actual: dict[str, int],
        *,
        entry: LedgerEntry,
    ) -> bool:
        """State ``reserved`` → ``settled``, each refundable counter moved from its reserved
        amount to ``actual`` (summed per counter), and the ledger row (stored under
        ``reservation_id``, whatever ``entry.reservation_id`` says), in one transaction."""
        if any(value < 0 for value in actual.values()):
            raise ValueError("actual amounts must not be negative")
        wanted = dict(actual)
        ledger_params = _entry_params(reservation_id, entry)  # validates before any I/O

        def body(db: Database) -> bool:
            return _finish_reservation(
                db.conn, reservation_id, state="settled", actual=wanted, ledger_params=ledger_params
            )

        return await self._call("settle", lambda db: _immediate(db, body))

    async def finish_turn(
        self,
        key: str,
        epoch: int,
        turns: Sequence[TurnRecord],
        *,
        active_at: datetime,
        reservation_id: str,
        actual: dict[str, int],
        entry: LedgerEntry,
        delivery: tuple[str, str] | None = None,
    ) -> bool:
        """One ``BEGIN IMMEDIATE`` transaction: exactly :meth:`append_turns`, then exactly
        :meth:`settle`, then (with ``delivery``) exactly :meth:`finish_delivery` at
        ``active_at``. The turns and the finish are committed whatever the reservation's state;
        the result is the settle's. Any error rolls back all of it (no turns, reservation still
        open, delivery still unfinished)."""
        if any(value < 0 for value in actual.values()):
            raise ValueError("actual amounts must not be negative")
        active = _ts(active_at)
        rows = _turn_rows(key, epoch, turns)
        wanted = dict(actual)
        ledger_params = _entry_params(reservation_id, entry)
        finish = None if delivery is None else _finish_delivery_params(*delivery, active_at)

        def body(db: Database) -> bool:
            conn = db.conn
            _append(conn, key, rows, active)
            settled = _finish_reservation(
                conn, reservation_id, state="settled", actual=wanted, ledger_params=ledger_params
            )
            if finish is not None:
                conn.execute(_FINISH_DELIVERY_SQL, finish)
            return settled

        return await self._call("finish_turn", lambda db: _immediate(db, body))

    async def refund(self, reservation_id: str, *, entry: LedgerEntry) -> bool:
        """Like :meth:`settle` with every refundable amount back to 0; state ``refunded``."""
        ledger_params = _entry_params(reservation_id, entry)

        def body(db: Database) -> bool:
            return _finish_reservation(
                db.conn, reservation_id, state="refunded", actual={}, ledger_params=ledger_params
            )

        return await self._call("refund", lambda db: _immediate(db, body))

    async def sweep_reservations(self, *, older_than: datetime, now: datetime) -> int:
        """Refund (state ``swept``) every open reservation created before ``older_than``, each
        with a ledger row built from its stored meta: outcome ``"swept"``, zero tokens, images
        and cost, ``created_at=now``; end the image jobs left ``queued``/``running`` that were
        created before ``older_than`` (see :data:`SWEPT_JOB_ERROR`). One transaction."""
        cutoff = _ts(older_than)
        ended = (_ts(now), SWEPT_JOB_ERROR, cutoff)

        def body(db: Database) -> int:
            rows = db.execute(
                "SELECT id, meta FROM reservations WHERE state = 'reserved' AND created_at < ? "
                "ORDER BY created_at, id",
                (cutoff,),
            ).fetchall()
            swept = 0
            for reservation_id, meta in rows:
                entry = replace(
                    _entry_from_json(meta),
                    reservation_id=reservation_id,
                    tokens_in=0,
                    tokens_out=0,
                    images=0,
                    cost_cny=0.0,
                    outcome="swept",
                    created_at=now,
                )
                if _finish_reservation(
                    db.conn,
                    reservation_id,
                    state="swept",
                    actual={},
                    ledger_params=_entry_params(reservation_id, entry),
                ):
                    swept += 1
            db.conn.execute(_END_STALE_JOBS_SQL, ended)
            return swept

        return await self._call("sweep_reservations", lambda db: _immediate(db, body))

    async def counters(self, names: Sequence[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(names))

        def job(db: Database) -> dict[str, int]:
            found: dict[str, int] = {}
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for name, used in db.execute(
                    f"SELECT name, used FROM counters WHERE name IN ({marks})", chunk
                ):
                    found[name] = int(used)
            return {name: found.get(name, 0) for name in wanted}

        return await self._call("counters", job)

    async def ledger(
        self,
        *,
        user_id: str | None = None,
        day: str | None = None,
        month: str | None = None,
    ) -> list[LedgerEntry]:
        where, params = _where([("user_id", user_id), ("period_day", day), ("period_month", month)])
        sql = f"SELECT {_LEDGER_COLUMNS} FROM ledger {where} ORDER BY id"

        def job(db: Database) -> list[LedgerEntry]:
            return [_entry_from_row(row) for row in db.execute(sql, params)]

        return await self._call("ledger", job)

    async def usage_totals(
        self,
        *,
        group_by: str,
        user_id: str | None = None,
        day: str | None = None,
        month: str | None = None,
    ) -> list[UsageTotals]:
        """``GROUP BY`` in SQL. ``group_by`` other than ``"user"``/``"day"`` raises
        ``ValueError``."""
        column = _GROUP_COLUMNS.get(group_by)
        if column is None:
            raise ValueError(f"group_by must be 'user' or 'day', not {group_by!r}")
        where, params = _where([("user_id", user_id), ("period_day", day), ("period_month", month)])
        sql = (
            f"SELECT {column}, SUM(outcome NOT LIKE 'grant%'), SUM(tokens_in), SUM(tokens_out), "
            "SUM(images), "
            f"SUM(cost_cny) FROM ledger {where} GROUP BY {column} ORDER BY {column}"
        )

        def job(db: Database) -> list[UsageTotals]:
            return [
                UsageTotals(
                    key=row[0],
                    calls=int(row[1]),
                    tokens_in=int(row[2]),
                    tokens_out=int(row[3]),
                    images=int(row[4]),
                    cost_cny=float(row[5]),
                )
                for row in db.execute(sql, params)
            ]

        return await self._call("usage_totals", job)

    # --- users and policies ----------------------------------------------------------------

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._call("get_user", lambda db: _user(db.conn, user_id))

    async def put_user(self, record: UserRecord) -> None:
        params = (
            record.user_id,
            record.role,
            record.language,
            record.access,
            _limits_to_json(record.limits),
        )

        def job(db: Database) -> None:
            db.execute(
                "INSERT INTO users (user_id, role, language, access, limits) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
                "role = excluded.role, language = excluded.language, "
                "access = excluded.access, limits = excluded.limits",
                params,
            )

        await self._call("put_user", job)

    async def get_channel_policy(self, channel: str) -> ChannelPolicy | None:
        return await self._call("get_channel_policy", lambda db: _policy(db.conn, channel))

    async def put_channel_policy(self, policy: ChannelPolicy) -> None:
        params = (
            policy.channel,
            _opt_int(policy.enabled),
            _opt_int(policy.mention_only),
            _opt_int(policy.images_allowed),
            policy.model,
            policy.persona,
        )

        def job(db: Database) -> None:
            db.execute(
                "INSERT INTO channel_policies "
                "(channel, enabled, mention_only, images_allowed, model, persona) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel) DO UPDATE SET "
                "enabled = excluded.enabled, mention_only = excluded.mention_only, "
                "images_allowed = excluded.images_allowed, model = excluded.model, "
                "persona = excluded.persona",
                params,
            )

        await self._call("put_channel_policy", job)

    # --- image jobs ------------------------------------------------------------------------

    async def put_image_job(self, job: ImageJobRecord) -> None:
        """Upsert by ``job_id`` (the row keeps its place in creation order)."""
        params = (
            job.job_id,
            job.user_id,
            job.conversation,
            job.prompt,
            job.size,
            job.status,
            _ts(job.created_at),
            None if job.finished_at is None else _ts(job.finished_at),
            job.result_path,
            job.error,
        )

        def run(db: Database) -> None:
            db.execute(
                f"INSERT INTO image_jobs ({_IMAGE_JOB_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                "user_id = excluded.user_id, conversation = excluded.conversation, "
                "prompt = excluded.prompt, size = excluded.size, status = excluded.status, "
                "created_at = excluded.created_at, finished_at = excluded.finished_at, "
                "result_path = excluded.result_path, error = excluded.error",
                params,
            )

        await self._call("put_image_job", run)

    async def get_image_job(self, job_id: str) -> ImageJobRecord | None:
        def run(db: Database) -> ImageJobRecord | None:
            row = db.execute(
                f"SELECT {_IMAGE_JOB_COLUMNS} FROM image_jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            return None if row is None else _job_from_row(row)

        return await self._call("get_image_job", run)

    async def image_jobs(
        self, *, user_id: str | None = None, status: str | None = None
    ) -> list[ImageJobRecord]:
        where, params = _where([("user_id", user_id), ("status", status)])
        sql = f"SELECT {_IMAGE_JOB_COLUMNS} FROM image_jobs {where} ORDER BY created_at, rowid"

        def run(db: Database) -> list[ImageJobRecord]:
            return [_job_from_row(row) for row in db.execute(sql, params)]

        return await self._call("image_jobs", run)

    # --- the inbox -------------------------------------------------------------------------

    async def inbox_record(
        self, platform: str, delivery_id: str, payload: str, *, now: datetime, lease_until: datetime
    ) -> bool:
        """One insert-if-absent statement (autocommit: committed when it returns)."""
        params = (platform, delivery_id, payload, _ts(now), _ts(lease_until))

        def job(db: Database) -> bool:
            return db.conn.execute(_INBOX_RECORD_SQL, params).rowcount == 1

        return await self._call("inbox_record", job)

    async def inbox_done(self, platform: str, delivery_id: str, *, now: datetime) -> None:
        params = (_ts(now), platform, delivery_id)

        def job(db: Database) -> None:
            db.conn.execute(_INBOX_DONE_SQL, params)

        await self._call("inbox_done", job)

    async def inbox_due(
        self, platform: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[InboxEntry]:
        """One ``UPDATE … RETURNING`` statement inside ``BEGIN IMMEDIATE``."""
        params = {"platform": platform, "now": _ts(now), "until": _ts(lease_until), "limit": limit}
        if limit <= 0:
            return []

        def body(db: Database) -> list[InboxEntry]:
            rows = db.conn.execute(_INBOX_DUE_SQL, params).fetchall()
            rows.sort(key=lambda row: (row[4], row[1]))
            return [InboxEntry(row[0], row[1], row[2], row[3], _dt(row[4])) for row in rows]

        return await self._call("inbox_due", lambda db: _immediate(db, body))

    async def inbox_purge(self, *, done_before: datetime) -> int:
        cutoff = _ts(done_before)

        def job(db: Database) -> int:
            return db.conn.execute(_INBOX_PURGE_SQL, (cutoff,)).rowcount

        return await self._call("inbox_purge", job)

    # --- housekeeping ----------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """``PRAGMA wal_checkpoint(PASSIVE)`` on the writer thread: copies committed WAL frames
        into the database file as far as readers allow, without waiting for any lock (other
        processes' readers and writers are never blocked; frames they still need stay). The
        WAL file is reused from the start once fully checkpointed. Never changes data."""

        def job(db: Database) -> None:
            db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        await self._call("checkpoint", job)


def _close_all(databases: list[Database]) -> None:
    for db in databases:
        db.close()


def _describe(err: sqlite3.Error) -> str:
    """SQLite's own message (it never contains bound parameters, which may hold user text)."""
    name = getattr(err, "sqlite_errorname", "") or type(err).__name__
    return f"{name}: {err}"
