"""The default store: one SQLite file, through sqlite-utils, safe from asyncio and across processes.

Who uses it: the composition root builds ``SQLiteStore(path=...)`` (or :func:`open_store`) and
hands it to the core, which only sees :class:`~hybot.core.store.base.BaseStore`.

How it keeps the contract (see ``base.py`` for the guarantees; ``platforms.md`` §3 for why):

- **One writer thread.** The connection is opened with ``check_same_thread=False`` and every
  piece of database work runs on one ``ThreadPoolExecutor(max_workers=1)`` through
  ``loop.run_in_executor``, so the event loop never blocks and the connection is never used by
  two threads at once. Each transaction is *one* synchronous function run on that thread: a
  transaction never spans an ``await``, so a cancelled caller cannot leave it half done.
- **Explicit transactions.** The connection is in autocommit mode (``isolation_level=None``);
  single statements commit on their own, and every read-then-write sequence runs inside
  ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error). ``BEGIN IMMEDIATE`` takes the
  write lock up front and honours the busy timeout; a deferred ``BEGIN`` would fail at once with
  ``database is locked`` when another process commits first.
- **Conditional counters.** A quota line is charged by one conditional ``UPDATE`` whose row count
  says whether it fitted, so no read-check-write race exists even without the transaction.
- **WAL**, ``synchronous`` as configured (``NORMAL`` by default: durable across process crashes;
  an OS crash may lose the last commits), foreign keys on.
- Timestamps are stored as fixed-width ISO-8601 UTC strings (``2026-11-28T10:00:00.000000+00:00``),
  so they compare correctly as text, and come back as timezone-aware UTC ``datetime`` s. Passing
  a naive ``datetime`` raises ``ValueError`` (a caller bug, caught before any I/O).
- ``sqlite3`` errors become :class:`~hybot.core.errors.StoreError` (``raise ... from err``);
  messages name the operation and SQLite's error, never bound parameters (which hold user text).

Several processes may share one file (each with its own ``SQLiteStore``): claims, reservations
and migrations stay exact across them. :meth:`SQLiteStore.conversation_lock` is in-process only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlite_utils import Database

from hybot.core.config import LimitSet
from hybot.core.errors import ConfigError, StoreError
from hybot.core.store._locks import KeyedLocks
from hybot.core.store.base import (
    BaseStore,
    ChannelPolicy,
    ConversationState,
    ImageJobRecord,
    LedgerEntry,
    QuotaLine,
    ReserveOutcome,
    TurnRecord,
    UsageTotals,
    UserRecord,
)
from hybot.core.store.migrations import apply_migrations
from hybot.core.types import Role

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_SYNCHRONOUS_MODES = ("EXTRA", "FULL", "NORMAL", "OFF")

# How many ``?`` placeholders one IN (...) list gets; SQLite's default limit is far higher, but
# older builds stop at 999.
_IN_CHUNK = 500

_GROUP_COLUMNS = {"day": "period_day", "user": "user_id"}

# --- SQL -----------------------------------------------------------------------------------

# Insert-if-absent, or take over a claim that has expired. ``changes()`` is 1 when this call
# owns the delivery, 0 when an unexpired claim exists (the upsert's WHERE was false).
_CLAIM_SQL = """
INSERT INTO deliveries (platform, delivery_id, claimed_at, expires_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (platform, delivery_id) DO UPDATE
    SET claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
    WHERE deliveries.expires_at <= excluded.claimed_at
"""

# The single-statement check-and-debit: the row changes only if the amount fits.
_CHARGE_SQL = """
UPDATE counters SET used = used + :amount
WHERE name = :name AND (:limit IS NULL OR used + :amount <= :limit)
"""

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

_LEDGER_COLUMNS = (
    "reservation_id, user_id, platform, chat, model, tokens_in, tokens_out, images, cost_cny, "
    "outcome, created_at, period_day, period_month"
)

_INSERT_LEDGER_SQL = f"""
INSERT INTO ledger ({_LEDGER_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_IMAGE_JOB_COLUMNS = (
    "job_id, user_id, conversation, prompt, size, status, created_at, finished_at, "
    "result_path, error"
)


# --- value conversion ----------------------------------------------------------------------


def _ts(value: datetime) -> str:
    """Fixed-width UTC ISO-8601 text (sorts like the instants it names)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("the store needs timezone-aware datetimes; got a naive one")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


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
    data = asdict(entry)
    data["created_at"] = _ts(entry.created_at)
    return json.dumps(data, ensure_ascii=False)


def _entry_from_json(text: str) -> LedgerEntry:
    data = json.loads(text)
    known = {f.name for f in fields(LedgerEntry)}
    values = {k: v for k, v in data.items() if k in known}
    values["created_at"] = _dt(values["created_at"])
    return LedgerEntry(**values)


def _lines_to_json(lines: Sequence[QuotaLine]) -> str:
    return json.dumps([asdict(line) for line in lines], ensure_ascii=False)


def _refundable_totals(lines_json: str) -> dict[str, int]:
    """Reserved amount per refundable counter (a counter may appear in several lines)."""
    totals: dict[str, int] = {}
    for item in json.loads(lines_json):
        if item.get("refundable", True):
            totals[item["counter"]] = totals.get(item["counter"], 0) + int(item["amount"])
    return totals


def _limits_to_json(limits: LimitSet) -> str:
    return json.dumps(asdict(limits))


def _limits_from_json(text: str) -> LimitSet:
    data = json.loads(text) if text else {}
    return LimitSet(**{f.name: data.get(f.name) for f in fields(LimitSet)})


def _turn_from_row(row: Sequence[Any]) -> TurnRecord:
    return TurnRecord(
        id=row[0],
        role=cast(Role, row[1]),
        content=row[2],
        user_id=row[3],
        tokens=row[4],
        created_at=_dt(row[5]),
        delivery_id=row[6],
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
    db: Database,
    reservation_id: str,
    *,
    state: str,
    actual: dict[str, int],
    entry: LedgerEntry,
) -> bool:
    """Close an open reservation (inside a transaction): flip its state, release each
    refundable line down to ``actual`` (0 when absent), write the ledger row. ``False`` (and
    no change) when the reservation is unknown or already closed."""
    row = db.execute(
        "SELECT lines FROM reservations WHERE id = ? AND state = 'reserved'", (reservation_id,)
    ).fetchone()
    if row is None:
        return False
    flipped = db.execute(
        "UPDATE reservations SET state = ? WHERE id = ? AND state = 'reserved'",
        (state, reservation_id),
    )
    if flipped.rowcount != 1:  # pragma: no cover - impossible under the write lock
        return False
    for counter, reserved in _refundable_totals(row[0]).items():
        db.execute(
            _RELEASE_SQL,
            {"name": counter, "reserved": reserved, "actual": actual.get(counter, 0)},
        )
    db.execute(_INSERT_LEDGER_SQL, _entry_params(reservation_id, entry))
    return True


# --- the store -----------------------------------------------------------------------------


class SQLiteStore(BaseStore):
    """:class:`BaseStore` over one SQLite file (see the module docstring for how).

    ``path`` is the database file (``":memory:"`` for a private in-memory database, handy in
    tests; its parent directory must exist). ``busy_timeout_ms`` is how long a writer waits for
    another process's write lock before failing with :class:`StoreError`. ``synchronous`` is
    SQLite's durability level (``"NORMAL"`` or ``"FULL"``; ``"OFF"``/``"EXTRA"`` accepted).

    Constructing does no I/O; :meth:`open` (or ``async with``) connects and migrates.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        busy_timeout_ms: int = 10_000,
        synchronous: str = "NORMAL",
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ConfigError(
                f"SQLite synchronous must be one of {', '.join(_SYNCHRONOUS_MODES)}, "
                f"not {synchronous!r}"
            )
        if busy_timeout_ms < 0:
            raise ConfigError("SQLite busy_timeout_ms must not be negative")
        self._path = os.fspath(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._synchronous = mode
        self._db: Database | None = None
        self._executor: ThreadPoolExecutor | None = None
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
            db.enable_wal()
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            apply_migrations(conn)
        except BaseException:
            conn.close()
            raise
        return db

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
                    await asyncio.get_running_loop().run_in_executor(executor, db.close)
            except sqlite3.Error as err:
                raise StoreError(f"closing the SQLite store failed: {_describe(err)}") from err
            finally:
                # The close job was the last one queued, so the thread is idle: nothing to wait for.
                executor.shutdown(wait=False)

    async def _call(self, operation: str, job: Callable[[Database], _T]) -> _T:
        """Run ``job`` on the writer thread; translate SQLite failures into StoreError."""
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError(f"SQLite store is not open ({operation})")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, job, db)
        except sqlite3.Error as err:
            raise StoreError(f"SQLite {operation} failed: {_describe(err)}") from err
        except RuntimeError as err:
            # "cannot schedule new futures after shutdown": closed while we were submitting.
            if self._executor is not executor:
                raise StoreError(f"SQLite store is closed ({operation})") from err
            raise

    # --- deliveries ------------------------------------------------------------------------

    async def claim_delivery(
        self, platform: str, delivery_id: str, *, now: datetime, ttl_seconds: float
    ) -> bool:
        """Insert-if-absent in one statement; an expired claim is taken over."""
        params = (platform, delivery_id, _ts(now), _ts(now + timedelta(seconds=ttl_seconds)))

        def job(db: Database) -> bool:
            return db.execute(_CLAIM_SQL, params).rowcount == 1

        return await self._call("claim_delivery", job)

    async def purge_deliveries(self, *, now: datetime) -> int:
        cutoff = _ts(now)

        def job(db: Database) -> int:
            return db.execute("DELETE FROM deliveries WHERE expires_at <= ?", (cutoff,)).rowcount

        return await self._call("purge_deliveries", job)

    # --- conversations and turns -----------------------------------------------------------

    async def get_conversation(self, key: str) -> ConversationState:
        """Read first (no write lock on the hot path); create only when absent."""

        def select(db: Database) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = db.execute(
                "SELECT key, epoch, persona, last_active_at FROM conversations WHERE key = ?",
                (key,),
            ).fetchone()
            return row

        def job(db: Database) -> ConversationState:
            row = select(db)
            if row is None:
                db.execute(
                    "INSERT INTO conversations (key) VALUES (?) ON CONFLICT (key) DO NOTHING",
                    (key,),
                )
                row = select(db)
            assert row is not None  # just inserted; conversations are never deleted
            return ConversationState(
                key=row[0], epoch=row[1], persona=row[2], last_active_at=_opt_dt(row[3])
            )

        return await self._call("get_conversation", job)

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
        rows = [
            (key, epoch, t.role, t.content, t.user_id, t.tokens, _ts(t.created_at), t.delivery_id)
            for t in turns
        ]

        def body(db: Database) -> None:
            db.execute(
                "INSERT INTO conversations (key) VALUES (?) ON CONFLICT (key) DO NOTHING", (key,)
            )
            db.conn.executemany(
                "INSERT INTO turns "
                "(conv_key, epoch, role, content, user_id, tokens, created_at, delivery_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("UPDATE conversations SET last_active_at = ? WHERE key = ?", (active, key))

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

        def job(db: Database) -> list[TurnRecord]:
            rows = db.execute(_RECENT_TURNS_SQL, (key, epoch, limit)).fetchall()
            return [_turn_from_row(row) for row in reversed(rows)]

        return await self._call("recent_turns", job)

    async def forget_user(self, user_id: str) -> int:
        """One transaction: the user's turns (every conversation and epoch), their user row,
        and the prompts of their image jobs (blanked; the jobs stay for accounting)."""

        def body(db: Database) -> int:
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
        """One ``BEGIN IMMEDIATE`` transaction: a known id returns ``granted=True,
        duplicate=True`` without charging; otherwise every line is charged by a conditional
        ``UPDATE`` and the first that does not fit rolls everything back (a denial leaves no
        row, so retrying a denied id is evaluated afresh). Negative amounts raise
        ``ValueError``."""
        if any(line.amount < 0 for line in lines):
            raise ValueError("quota line amounts must not be negative")
        created = _ts(now)
        lines_json = _lines_to_json(lines)
        meta_json = _entry_to_json(meta)

        def body(db: Database) -> ReserveOutcome:
            known = db.execute(
                "SELECT 1 FROM reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            if known is not None:
                # Only granted reservations are stored, whatever their later state.
                return ReserveOutcome(granted=True, duplicate=True)
            for line in lines:
                db.execute(
                    "INSERT INTO counters (name, used) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
                    (line.counter,),
                )
                charged = db.execute(
                    _CHARGE_SQL,
                    {"name": line.counter, "amount": line.amount, "limit": line.limit},
                )
                if charged.rowcount != 1:
                    used = db.execute(
                        "SELECT used FROM counters WHERE name = ?", (line.counter,)
                    ).fetchone()[0]
                    raise _Rollback(
                        ReserveOutcome(
                            granted=False,
                            denied_counter=line.counter,
                            used=int(used),
                            limit=line.limit if line.limit is not None else 0,
                        )
                    )
            db.execute(
                "INSERT INTO reservations (id, state, created_at, lines, meta) "
                "VALUES (?, 'reserved', ?, ?, ?)",
                (reservation_id, created, lines_json, meta_json),
            )
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
        entry = replace(entry, reservation_id=reservation_id)
        _entry_params(reservation_id, entry)  # validate timestamps before any I/O

        def body(db: Database) -> bool:
            return _finish_reservation(
                db, reservation_id, state="settled", actual=wanted, entry=entry
            )

        return await self._call("settle", lambda db: _immediate(db, body))

    async def refund(self, reservation_id: str, *, entry: LedgerEntry) -> bool:
        """Like :meth:`settle` with every refundable amount back to 0; state ``refunded``."""
        entry = replace(entry, reservation_id=reservation_id)
        _entry_params(reservation_id, entry)

        def body(db: Database) -> bool:
            return _finish_reservation(db, reservation_id, state="refunded", actual={}, entry=entry)

        return await self._call("refund", lambda db: _immediate(db, body))

    async def sweep_reservations(self, *, older_than: datetime, now: datetime) -> int:
        """Refund (state ``swept``) every open reservation created before ``older_than``, each
        with a ledger row built from its stored meta: outcome ``"swept"``, zero tokens, images
        and cost, ``created_at=now``. One transaction."""
        cutoff = _ts(older_than)
        _ts(now)

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
                if _finish_reservation(db, reservation_id, state="swept", actual={}, entry=entry):
                    swept += 1
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
        def job(db: Database) -> UserRecord | None:
            row = db.execute(
                "SELECT user_id, role, language, access, limits FROM users WHERE user_id = ?",
                (user_id,),
            ).fetchone()
            if row is None:
                return None
            return UserRecord(
                user_id=row[0],
                role=row[1],
                language=row[2],
                access=row[3],
                limits=_limits_from_json(row[4]),
            )

        return await self._call("get_user", job)

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
        def job(db: Database) -> ChannelPolicy | None:
            row = db.execute(
                "SELECT channel, enabled, mention_only, images_allowed, model, persona "
                "FROM channel_policies WHERE channel = ?",
                (channel,),
            ).fetchone()
            if row is None:
                return None
            return ChannelPolicy(
                channel=row[0],
                enabled=_opt_bool(row[1]),
                mention_only=_opt_bool(row[2]),
                images_allowed=_opt_bool(row[3]),
                model=row[4],
                persona=row[5],
            )

        return await self._call("get_channel_policy", job)

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


def _close_all(databases: list[Database]) -> None:
    for db in databases:
        db.close()


def _describe(err: sqlite3.Error) -> str:
    """SQLite's own message (it never contains bound parameters, which may hold user text)."""
    name = getattr(err, "sqlite_errorname", "") or type(err).__name__
    return f"{name}: {err}"
