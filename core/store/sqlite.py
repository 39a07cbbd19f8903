"""The default store: one SQLite file, safe from asyncio and across processes.

Who uses it: the composition root builds ``SQLiteStore(path=...)`` (or :func:`open_store`) and
hands it to the core, which only sees :class:`~core.store.base.BaseStore`.

The store is split by responsibility (``platforms.md`` §3 says why each rule exists):

- this module: the store itself, its settings, opening (WAL, pragmas, migrations) and one
  method per :class:`BaseStore` operation, each a job of one statement or one transaction;
- :mod:`core.store._writer`: the single writer thread, ``BEGIN IMMEDIATE`` transactions, lock
  retries within the busy budget and the translation of ``sqlite3`` errors;
- :mod:`core.store._queries`: every SQL statement and the small functions that run them;
- :mod:`core.store._codecs`: values to and from rows (timestamps, JSON, records);
- :mod:`core.store.migrations`: the versioned schema.

How it keeps the contract:

- **Explicit transactions.** The connection is in autocommit mode (``isolation_level=None``);
  single statements commit on their own, and every read-then-write sequence runs inside
  ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error).
- **Conditional statements.** A delivery claim, an inbox record and each quota line are one
  conditional statement whose row count is the decision, so no read-check-write race exists.
- **A busy database loses nothing.** A call waits for other connections' locks within the busy
  budget (``busy_timeout_ms``), then raises :class:`~core.errors.StoreBusy` having written
  nothing (a delivery whose claim failed stays unclaimed).
- **WAL**, ``synchronous`` as configured (``NORMAL`` by default: durable across process crashes;
  an OS crash may lose the last commits), foreign keys on. ``wal_autocheckpoint`` (pages) sets how
  large the WAL grows before a commit checkpoints it; :meth:`SQLiteStore.checkpoint` runs a
  passive checkpoint on demand (the core's sweeper), so commits on the hot path rarely pay for one.
- **Few round trips.** ``begin_delivery``, ``load_context``, ``finish_turn`` and bonus-aware
  ``reserve`` do their whole job in one hop to the writer thread.

No context cache: an earlier version cached recent turns in memory. It saved about 0.07 ms per
context load in ``bench/pipeline.py`` (0.05 against 0.12 ms for a 40-turn window; see
``bench/README.md``), nothing a user can notice against model calls of seconds, and a read of
the newest ``limit`` turns already costs the same whatever the length of the stored history.

sqlite-utils: the store uses its ``Database`` wrapper (``enable_wal``, ``journal_mode``), not its
``insert``/``upsert``/``Migrations``. Every write here is a conditional statement whose row count
is the decision (``ON CONFLICT … DO UPDATE … WHERE``, ``DO NOTHING``, ``UPDATE … RETURNING``),
which those helpers do not express. For the plain record upserts (users, channel policies,
image jobs) ``Table.upsert`` would do, but each call first runs eight schema queries and its own
``BEGIN``, and on first use it probes for ``ON CONFLICT`` support by creating and dropping a table
in the shared file; a lock error during that probe silently switches the connection to the old
two-statement upsert for good. Its ``Migrations`` run each step in a deferred ``BEGIN`` (see
:mod:`core.store.migrations`).

This module is longer than the others (about 700 lines) because it is one responsibility that
reads better whole: one method per :class:`BaseStore` operation, each validating its arguments
and building its parameters before any I/O, then handing one job to the writer.

Several processes may share one file (each with its own ``SQLiteStore``): claims, inbox leases,
reservations and migrations stay exact across them. :meth:`SQLiteStore.conversation_lock` is
in-process only.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from sqlite_utils import Database

from core.errors import ConfigError
from core.store import _codecs as codec
from core.store import _queries as queries
from core.store._locks import KeyedLocks
from core.store._writer import Rollback, Writer, immediate, is_busy
from core.store.base import (
    SWEPT_JOB_ERROR,
    BaseStore,
    ChannelPolicy,
    ConversationState,
    DeliveryStart,
    ImageJobRecord,
    ImageJobStatus,
    InboxEntry,
    LedgerEntry,
    Outcome,
    QuotaLine,
    ReserveOutcome,
    TurnRecord,
    UsageTotals,
    UserRecord,
    user_name_key,
)
from core.store.migrations import apply_migrations

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_SYNCHRONOUS_MODES = ("EXTRA", "FULL", "NORMAL", "OFF")


class SQLiteStore(BaseStore):
    """:class:`BaseStore` over one SQLite file (see the module docstring for how).

    ``path`` is the database file (``":memory:"`` for a private in-memory database, handy in
    tests; its parent directory must exist). ``busy_timeout_ms`` is the busy budget: how long
    one call waits for locks held by other connections (SQLite's busy handler, and re-runs of
    the call on lock errors SQLite returns at once) before failing with
    :class:`~core.errors.StoreBusy` (nothing of that call is written). ``synchronous`` is
    SQLite's durability level (``"NORMAL"`` or ``"FULL"``; ``"OFF"``/``"EXTRA"`` accepted).
    ``wal_autocheckpoint`` is SQLite's ``PRAGMA wal_autocheckpoint`` (WAL pages before a commit
    checkpoints; ``0`` turns automatic checkpoints off, leaving them to :meth:`checkpoint`).
    The default, 4000 pages (about 16 MB), is four times SQLite's, so that the core's periodic
    :meth:`checkpoint` usually gets there first and a chat message's commit rarely pays for one.
    Invalid settings raise :class:`ConfigError`.

    Constructing does no I/O; :meth:`open` (or ``async with``) connects and migrates.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        busy_timeout_ms: int = 10_000,
        synchronous: str = "NORMAL",
        wal_autocheckpoint: int = 4000,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ConfigError(
                f"SQLite synchronous must be one of {', '.join(_SYNCHRONOUS_MODES)}, "
                f"not {synchronous!r}"
            )
        if isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int):
            raise ConfigError("SQLite busy_timeout_ms must be a whole number of milliseconds")
        if busy_timeout_ms < 0:
            raise ConfigError("SQLite busy_timeout_ms must not be negative")
        if isinstance(wal_autocheckpoint, bool) or not isinstance(wal_autocheckpoint, int):
            raise ConfigError("SQLite wal_autocheckpoint must be a whole number of pages")
        if wal_autocheckpoint < 0:
            raise ConfigError("SQLite wal_autocheckpoint must not be negative")
        self._path = os.fspath(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._wal_autocheckpoint = wal_autocheckpoint
        self._synchronous = mode
        self._writer = Writer(busy_budget=busy_timeout_ms / 1000)
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        state = "open" if self._writer.db is not None else "closed"
        return f"SQLiteStore(path={self._path!r}, {state})"

    @property
    def path(self) -> str:
        """The database file this store uses."""
        return self._path

    @property
    def _db(self) -> Database | None:
        """The writer's connection while open (white-box tests inspect it)."""
        return self._writer.db

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
                locked = is_busy(err) or "database is locked" in str(err)
                if not locked or time.monotonic() >= deadline:
                    raise
            time.sleep(pause * (0.5 + random.random()))  # on the writer thread
            pause = min(pause * 2, 0.1)

    async def open(self) -> None:
        """Connect, enable WAL and run pending migrations. Idempotent.

        Raises :class:`StoreError` if the file cannot be opened, is not a database, or has a
        schema newer than this code knows.
        """
        await self._writer.open(self._connect)

    async def close(self) -> None:
        """Close the connection (after work already called), then stop the writer thread.
        Idempotent; later calls on the store raise :class:`StoreError` until :meth:`open`."""
        await self._writer.close()

    async def _call(self, operation: str, job: Callable[[Database], _T]) -> _T:
        """Run ``job`` on the writer thread (see :meth:`Writer.run`)."""
        return await self._writer.run(operation, job)

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
        params = codec.claim_params(platform, delivery_id, now, ttl_seconds, lease_seconds)

        def job(db: Database) -> bool:
            return db.conn.execute(queries.CLAIM_SQL, params).rowcount == 1

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
        params = codec.claim_params(platform, delivery_id, now, ttl_seconds, lease_seconds)

        def body(db: Database) -> DeliveryStart:
            conn = db.conn
            if conn.execute(queries.CLAIM_SQL, params).rowcount != 1:
                return DeliveryStart(claimed=False)
            return DeliveryStart(
                claimed=True, user=queries.user(conn, user_id), policy=queries.policy(conn, channel)
            )

        # One transaction, so that a lock error after the claim cannot leave it taken while
        # the caller gets an error (a retried or failed call must leave it unclaimed).
        return await self._call("begin_delivery", lambda db: immediate(db, body))

    async def finish_delivery(self, platform: str, delivery_id: str, *, now: datetime) -> None:
        """One statement: ``done_at`` set if the claim exists and is not finished yet."""
        params = codec.finish_delivery_params(platform, delivery_id, now)

        def job(db: Database) -> None:
            db.conn.execute(queries.FINISH_DELIVERY_SQL, params)

        await self._call("finish_delivery", job)

    async def release_delivery(self, platform: str, delivery_id: str) -> bool:
        """One statement: the claim's row deleted if it is not finished."""
        params = (platform, delivery_id)

        def job(db: Database) -> bool:
            return db.conn.execute(queries.RELEASE_DELIVERY_SQL, params).rowcount == 1

        return await self._call("release_delivery", job)

    async def purge_deliveries(self, *, now: datetime) -> int:
        cutoff = codec.ts(now)

        def job(db: Database) -> int:
            return db.conn.execute(queries.PURGE_DELIVERIES_SQL, (cutoff,)).rowcount

        return await self._call("purge_deliveries", job)

    # --- conversations and turns -----------------------------------------------------------

    async def get_conversation(self, key: str) -> ConversationState:
        """Read first (no write lock on the hot path); create only when absent."""
        return await self._call("get_conversation", lambda db: queries.conversation(db.conn, key))

    async def load_context(
        self, key: str, *, limit: int
    ) -> tuple[ConversationState, list[TurnRecord]]:
        """One job: :meth:`get_conversation` then :meth:`recent_turns` of its epoch (an index
        walk bounded by ``limit``, whatever the length of the stored history)."""

        def job(db: Database) -> tuple[ConversationState, list[TurnRecord]]:
            state = queries.conversation(db.conn, key)
            return state, queries.recent(db.conn, key, state.epoch, limit)

        return await self._call("load_context", job)

    async def new_epoch(self, key: str) -> int:
        """Atomic increment (creating the conversation at epoch 1 if absent)."""

        def body(db: Database) -> int:
            db.conn.execute(queries.NEW_EPOCH_SQL, (key,))
            return int(db.conn.execute(queries.SELECT_EPOCH_SQL, (key,)).fetchone()[0])

        return await self._call("new_epoch", lambda db: immediate(db, body))

    async def set_persona(self, key: str, persona: str | None) -> None:
        def job(db: Database) -> None:
            db.conn.execute(queries.SET_PERSONA_SQL, (key, persona))

        await self._call("set_persona", job)

    async def append_turns(
        self, key: str, epoch: int, turns: Sequence[TurnRecord], *, active_at: datetime
    ) -> None:
        """All turns and ``last_active_at`` in one transaction. Turn ``id`` s are assigned by
        the store (the records' ``id`` field is ignored)."""
        active = codec.ts(active_at)
        rows = queries.turn_rows(key, epoch, turns)

        def body(db: Database) -> None:
            queries.append(db.conn, key, rows, active)

        await self._call("append_turns", lambda db: immediate(db, body))

    async def touch_conversation(self, key: str, *, active_at: datetime) -> None:
        active = codec.ts(active_at)

        def job(db: Database) -> None:
            db.conn.execute(queries.ACTIVATE_CONVERSATION_SQL, (key, active))

        await self._call("touch_conversation", job)

    async def recent_turns(self, key: str, epoch: int, *, limit: int) -> list[TurnRecord]:
        """Newest ``limit`` turns, oldest first, via an index walk bounded by ``limit``."""
        if limit <= 0:
            return []
        return await self._call(
            "recent_turns", lambda db: queries.recent(db.conn, key, epoch, limit)
        )

    async def forget_user(self, user_id: str) -> int:
        """One transaction: the user's turns (every conversation and epoch), their user row,
        and the prompts of their image jobs (blanked; the jobs stay for accounting)."""

        def body(db: Database) -> int:
            deleted = db.conn.execute(queries.FORGET_TURNS_SQL, (user_id,)).rowcount
            db.conn.execute(queries.FORGET_USER_SQL, (user_id,))
            db.conn.execute(queries.FORGET_PROMPTS_SQL, (user_id,))
            db.conn.execute(queries.FORGET_NAME_SQL, (user_id,))
            return deleted

        return await self._call("forget_user", lambda db: immediate(db, body))

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
        reservation_params = (
            reservation_id,
            codec.ts(now),
            codec.lines_to_json(lines),
            codec.entry_to_json(meta),
        )
        charges = [
            (
                line,
                queries.CHARGE_BONUS_SQL
                if line.bonus_counter and line.limit is not None
                else queries.CHARGE_SQL,
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
            if conn.execute(queries.INSERT_RESERVATION_SQL, reservation_params).rowcount != 1:
                # Only granted reservations are stored, whatever their later state.
                return ReserveOutcome(granted=True, duplicate=True)
            for line, sql, params in charges:
                if conn.execute(sql, params).rowcount != 1:
                    raise Rollback(queries.denial(conn, line))
            return ReserveOutcome(granted=True)

        return await self._call("reserve", lambda db: immediate(db, body))

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
        ledger_params = codec.entry_params(reservation_id, entry)  # validates before any I/O

        def body(db: Database) -> bool:
            return queries.finish_reservation(
                db.conn, reservation_id, state="settled", actual=wanted, ledger_params=ledger_params
            )

        return await self._call("settle", lambda db: immediate(db, body))

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
        active = codec.ts(active_at)
        rows = queries.turn_rows(key, epoch, turns)
        wanted = dict(actual)
        ledger_params = codec.entry_params(reservation_id, entry)
        finish = None if delivery is None else codec.finish_delivery_params(*delivery, active_at)

        def body(db: Database) -> bool:
            conn = db.conn
            queries.append(conn, key, rows, active)
            settled = queries.finish_reservation(
                conn, reservation_id, state="settled", actual=wanted, ledger_params=ledger_params
            )
            if finish is not None:
                conn.execute(queries.FINISH_DELIVERY_SQL, finish)
            return settled

        return await self._call("finish_turn", lambda db: immediate(db, body))

    async def refund(self, reservation_id: str, *, entry: LedgerEntry) -> bool:
        """Like :meth:`settle` with every refundable amount back to 0; state ``refunded``."""
        ledger_params = codec.entry_params(reservation_id, entry)

        def body(db: Database) -> bool:
            return queries.finish_reservation(
                db.conn, reservation_id, state="refunded", actual={}, ledger_params=ledger_params
            )

        return await self._call("refund", lambda db: immediate(db, body))

    async def sweep_reservations(self, *, older_than: datetime, now: datetime) -> int:
        """Refund (state ``swept``) every open reservation created before ``older_than``, each
        with a ledger row built from its stored meta: outcome ``"swept"``, zero tokens, images
        and cost, ``created_at=now``; end the image jobs left ``queued``/``running`` that were
        created before ``older_than`` (see :data:`SWEPT_JOB_ERROR`). One transaction."""
        cutoff = codec.ts(older_than)
        ended = (codec.ts(now), SWEPT_JOB_ERROR, cutoff)

        def body(db: Database) -> int:
            rows = db.conn.execute(queries.STALE_RESERVATIONS_SQL, (cutoff,)).fetchall()
            swept = 0
            for reservation_id, meta in rows:
                entry = replace(
                    codec.entry_from_json(meta),
                    reservation_id=reservation_id,
                    tokens_in=0,
                    tokens_out=0,
                    images=0,
                    cost_cny=0.0,
                    outcome=Outcome.SWEPT,
                    created_at=now,
                )
                if queries.finish_reservation(
                    db.conn,
                    reservation_id,
                    state="swept",
                    actual={},
                    ledger_params=codec.entry_params(reservation_id, entry),
                ):
                    swept += 1
            db.conn.execute(queries.END_STALE_JOBS_SQL, ended)
            return swept

        return await self._call("sweep_reservations", lambda db: immediate(db, body))

    async def counters(self, names: Sequence[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(names))

        def job(db: Database) -> dict[str, int]:
            found: dict[str, int] = {}
            for start in range(0, len(wanted), queries.IN_CHUNK):
                chunk = wanted[start : start + queries.IN_CHUNK]
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
        where, params = queries.where_clause(
            [("user_id", user_id), ("period_day", day), ("period_month", month)]
        )
        sql = f"SELECT {queries.LEDGER_COLUMNS} FROM ledger {where} ORDER BY id"

        def job(db: Database) -> list[LedgerEntry]:
            return [codec.entry_from_row(row) for row in db.execute(sql, params)]

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
        column = queries.GROUP_COLUMNS.get(group_by)
        if column is None:
            raise ValueError(f"group_by must be 'user' or 'day', not {group_by!r}")
        where, params = queries.where_clause(
            [("user_id", user_id), ("period_day", day), ("period_month", month)]
        )
        sql = (
            f"SELECT {column}, SUM(outcome NOT LIKE '{Outcome.GRANT}%'), SUM(tokens_in), "
            "SUM(tokens_out), SUM(images), "
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
        return await self._call("get_user", lambda db: queries.user(db.conn, user_id))

    async def put_user(self, record: UserRecord) -> None:
        params = codec.user_params(record)

        def job(db: Database) -> None:
            db.conn.execute(queries.UPSERT_USER_SQL, params)

        await self._call("put_user", job)

    async def record_user_name(self, user_id: str, name: str, *, now: datetime) -> None:
        """One upsert (the user's row in ``user_names``)."""
        key = user_name_key(name)
        if not key:
            return
        params = (user_id, user_id.partition(":")[0], name.strip(), key, codec.ts(now))

        def job(db: Database) -> None:
            db.conn.execute(queries.RECORD_NAME_SQL, params)

        await self._call("record_user_name", job)

    async def find_users(self, platform: str, name: str, *, limit: int = 10) -> list[str]:
        """One indexed read (``user_names_lookup``)."""
        key = user_name_key(name)
        if not key or limit <= 0:
            return []

        def job(db: Database) -> list[str]:
            rows = db.conn.execute(queries.FIND_USERS_SQL, (platform, key, limit)).fetchall()
            return [str(row[0]) for row in rows]

        return await self._call("find_users", job)

    async def get_channel_policy(self, channel: str) -> ChannelPolicy | None:
        return await self._call("get_channel_policy", lambda db: queries.policy(db.conn, channel))

    async def put_channel_policy(self, policy: ChannelPolicy) -> None:
        params = codec.policy_params(policy)

        def job(db: Database) -> None:
            db.conn.execute(queries.UPSERT_POLICY_SQL, params)

        await self._call("put_channel_policy", job)

    # --- image jobs ------------------------------------------------------------------------

    async def put_image_job(self, job: ImageJobRecord) -> None:
        """Upsert by ``job_id`` (the row keeps its place in creation order)."""
        params = codec.job_params(job)

        def run(db: Database) -> None:
            db.conn.execute(queries.UPSERT_IMAGE_JOB_SQL, params)

        await self._call("put_image_job", run)

    async def get_image_job(self, job_id: str) -> ImageJobRecord | None:
        def run(db: Database) -> ImageJobRecord | None:
            row = db.conn.execute(queries.SELECT_IMAGE_JOB_SQL, (job_id,)).fetchone()
            return None if row is None else codec.job_from_row(row)

        return await self._call("get_image_job", run)

    async def image_jobs(
        self, *, user_id: str | None = None, status: ImageJobStatus | None = None
    ) -> list[ImageJobRecord]:
        where, params = queries.where_clause([("user_id", user_id), ("status", status)])
        sql = (
            f"SELECT {queries.IMAGE_JOB_COLUMNS} FROM image_jobs {where} ORDER BY created_at, rowid"
        )

        def run(db: Database) -> list[ImageJobRecord]:
            return [codec.job_from_row(row) for row in db.execute(sql, params)]

        return await self._call("image_jobs", run)

    # --- the inbox -------------------------------------------------------------------------

    async def inbox_record(
        self, platform: str, delivery_id: str, payload: str, *, now: datetime, lease_until: datetime
    ) -> bool:
        """One insert-if-absent statement (autocommit: committed when it returns)."""
        params = (platform, delivery_id, payload, codec.ts(now), codec.ts(lease_until))

        def job(db: Database) -> bool:
            return db.conn.execute(queries.INBOX_RECORD_SQL, params).rowcount == 1

        return await self._call("inbox_record", job)

    async def inbox_done(self, platform: str, delivery_id: str, *, now: datetime) -> None:
        params = (codec.ts(now), platform, delivery_id)

        def job(db: Database) -> None:
            db.conn.execute(queries.INBOX_DONE_SQL, params)

        await self._call("inbox_done", job)

    async def inbox_due(
        self, platform: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[InboxEntry]:
        """One ``UPDATE … RETURNING`` statement inside ``BEGIN IMMEDIATE``."""
        params = {
            "platform": platform,
            "now": codec.ts(now),
            "until": codec.ts(lease_until),
            "limit": limit,
        }
        if limit <= 0:
            return []

        def body(db: Database) -> list[InboxEntry]:
            rows = db.conn.execute(queries.INBOX_DUE_SQL, params).fetchall()
            rows.sort(key=lambda row: (row[4], row[1]))
            return [InboxEntry(row[0], row[1], row[2], row[3], codec.dt(row[4])) for row in rows]

        return await self._call("inbox_due", lambda db: immediate(db, body))

    async def inbox_purge(self, *, done_before: datetime) -> int:
        cutoff = codec.ts(done_before)

        def job(db: Database) -> int:
            return db.conn.execute(queries.INBOX_PURGE_SQL, (cutoff,)).rowcount

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
