"""The SQLite store's single writer: one connection, one thread, transactions and lock retries.

Who calls: :class:`core.store.sqlite.SQLiteStore` runs every piece of database work through
:meth:`Writer.run`.

Guarantees:

- **One thread.** The connection (opened with ``check_same_thread=False``) is used only by one
  ``ThreadPoolExecutor(max_workers=1)``, so the event loop never blocks and the connection is
  never used by two threads at once. Jobs run one at a time, in call order.
- **A job is one unit.** Each job is a synchronous function of the connection: a single
  statement (autocommit) or one :func:`immediate` transaction. A transaction never spans an
  ``await``, so a cancelled caller cannot leave it half done; a cancelled caller's job still
  runs (like any queued executor job), its result is dropped.
- **Lock errors are retried within the busy budget.** SQLite's busy handler (``busy_timeout``,
  set by the store to the same budget) waits for most locks; :func:`retrying` also re-runs a job
  on the lock errors SQLite returns without waiting (a WAL snapshot that cannot be upgraded,
  ``SQLITE_LOCKED``). Re-running is safe because a failed job wrote nothing. Past the budget the
  call raises :class:`~core.errors.StoreBusy`.
- **Errors are translated.** ``sqlite3`` errors become :class:`~core.errors.StoreError`
  (``raise ... from err``); messages name the operation and SQLite's own error, never bound
  parameters (which hold user text).

Why no batching: an earlier version handed jobs to the thread in batches (one wake-up per
batch). In ``bench/pipeline.py`` it made no difference to CPU per message that survived the
noise (1.71 against 1.70 ms), and nothing a user can notice against model calls of seconds
(see ``bench/README.md``), so the plain executor won.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from sqlite_utils import Database

from core.errors import StoreBusy, StoreError

__all__ = ["BUSY_CODES", "Rollback", "Writer", "describe", "immediate", "is_busy", "retrying"]

_T = TypeVar("_T")

#: ``SQLITE_BUSY`` and ``SQLITE_LOCKED``: another connection holds the lock (primary codes).
BUSY_CODES = frozenset({5, 6})


class Rollback(Exception):
    """Raised inside an :func:`immediate` body to roll back and return ``value``."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def is_busy(err: sqlite3.Error) -> bool:
    """Whether ``err`` is a lock error (another connection holds the database)."""
    code = getattr(err, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in BUSY_CODES


def describe(err: sqlite3.Error) -> str:
    """SQLite's own message (it never contains bound parameters, which may hold user text)."""
    name = getattr(err, "sqlite_errorname", "") or type(err).__name__
    return f"{name}: {err}"


def retrying(job: Callable[[Database], _T], budget: float) -> Callable[[Database], _T]:
    """``job`` re-run on lock errors until ``budget`` seconds have passed since it started.

    The pause (jittered, doubling up to 0.1 s, never past the budget) runs on the writer
    thread, never on the event loop. A re-run's busy handler waits at most for what is left of
    the budget (``PRAGMA busy_timeout`` is lowered for it, then restored), so a call never waits
    much longer than ``budget`` in all. Other errors propagate at once.
    """

    def run(db: Database) -> _T:
        deadline = time.monotonic() + budget
        pause = 0.005
        shortened = False
        try:
            while True:
                try:
                    return job(db)
                except sqlite3.OperationalError as err:
                    left = deadline - time.monotonic()
                    if not is_busy(err) or left <= 0:
                        raise
                time.sleep(min(pause * (0.5 + random.random()), left))
                pause = min(pause * 2, 0.1)
                # The next attempt's busy handler may only wait for what is left of the budget.
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                db.conn.execute(f"PRAGMA busy_timeout = {left_ms}")
                shortened = True
        finally:
            if shortened:
                db.conn.execute(f"PRAGMA busy_timeout = {round(budget * 1000)}")

    return run


def immediate(db: Database, body: Callable[[Database], _T]) -> _T:
    """Run ``body`` in ``BEGIN IMMEDIATE`` … ``COMMIT``; roll back on any exception.

    Runs on the writer thread. ``BEGIN IMMEDIATE`` takes the write lock up front and honours the
    busy timeout (a deferred ``BEGIN`` fails at once when another process commits first, see
    platforms.md §3.2). ``body`` raises :class:`Rollback` to undo its work and still return a
    value (a denied reservation).
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(db)
        conn.execute("COMMIT")
    except Rollback as stop:
        conn.execute("ROLLBACK")
        return cast(_T, stop.value)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class Writer:
    """One connection and the one thread that uses it.

    ``busy_budget`` is how long (seconds) one job may keep meeting lock errors before the call
    fails with :class:`StoreBusy`. :meth:`open` connects (on the thread) with a function the
    store gives; :meth:`close` closes the connection after every job already called.
    """

    def __init__(self, *, busy_budget: float) -> None:
        self._budget = busy_budget
        self._db: Database | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lifecycle = asyncio.Lock()

    @property
    def db(self) -> Database | None:
        """The open connection (``None`` when closed); only jobs may use it."""
        return self._db

    async def open(self, connect: Callable[[], Database]) -> None:
        """Start the thread and run ``connect`` on it. Idempotent. A ``sqlite3`` error becomes
        :class:`StoreError` ("cannot open the SQLite store"), and nothing stays open."""
        async with self._lifecycle:
            if self._db is not None:
                return
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybot-sqlite")
            opened: list[Database] = []

            def run() -> Database:
                db = connect()
                opened.append(db)
                return db

            try:
                db = await asyncio.get_running_loop().run_in_executor(executor, run)
            except BaseException as err:
                # If we were cancelled, connect() may still finish: close what it opened, on
                # the same thread, after it.
                executor.submit(_close_all, opened)
                executor.shutdown(wait=False)
                if isinstance(err, sqlite3.Error):
                    raise StoreError(f"cannot open the SQLite store: {describe(err)}") from err
                raise
            self._db, self._executor = db, executor

    async def close(self) -> None:
        """Close the connection (after every job already called), then stop the thread.
        Idempotent; later calls raise :class:`StoreError` until :meth:`open`."""
        async with self._lifecycle:
            db, executor = self._db, self._executor
            self._db = self._executor = None
            if executor is None:
                return
            try:
                if db is not None:
                    await self._submit("close", lambda database: database.close(), db, executor)
            except sqlite3.Error as err:
                raise StoreError(f"closing the SQLite store failed: {describe(err)}") from err
            finally:
                executor.shutdown(wait=False)  # the close job was the last one: nothing waits

    async def run(self, operation: str, job: Callable[[Database], _T]) -> _T:
        """Run ``job`` on the thread, after every job called before it, re-run on lock errors
        within the busy budget; ``sqlite3`` errors become :class:`StoreError`, lock errors past
        the budget :class:`StoreBusy`. ``operation`` names the call in error messages."""
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError(f"SQLite store is not open ({operation})")
        try:
            return await self._submit(operation, retrying(job, self._budget), db, executor)
        except sqlite3.Error as err:
            if is_busy(err):
                raise StoreBusy(
                    f"SQLite {operation} failed: {describe(err)} "
                    f"(still locked after {round(self._budget * 1000)} ms)"
                ) from err
            raise StoreError(f"SQLite {operation} failed: {describe(err)}") from err

    @staticmethod
    async def _submit(
        operation: str,
        job: Callable[[Database], _T],
        db: Database,
        executor: ThreadPoolExecutor,
    ) -> _T:
        def call() -> _T:
            try:
                return job(db)
            except StopIteration as err:  # an asyncio future refuses it: never leave one unset
                raise StoreError(f"SQLite {operation} failed") from err

        try:
            future = asyncio.get_running_loop().run_in_executor(executor, call)
        except RuntimeError as err:  # "cannot schedule new futures after shutdown"
            raise StoreError(f"SQLite store is closed ({operation})") from err
        # Shielded: a cancelled caller does not cancel the queued job (it still runs, in its
        # turn); its outcome is then retrieved and dropped.
        future.add_done_callback(_consume)
        return await asyncio.shield(future)


def _consume(future: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        future.exception()


def _close_all(databases: list[Database]) -> None:
    for db in databases:
        db.close()
