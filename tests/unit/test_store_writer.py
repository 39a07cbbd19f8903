"""White-box tests of the SQLite store's single writer (``core/store/_writer.py``), through
the store's ``_call``: jobs run one at a time in call order; a failing or cancelled job does not
disturb the others; close waits for queued jobs; lock errors are retried within the busy budget,
then become :class:`StoreBusy`; other errors are not retried."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from core.errors import StoreBusy, StoreError
from core.store import SQLiteStore, UserRecord


def _busy(code: int = sqlite3.SQLITE_BUSY) -> sqlite3.OperationalError:
    err = sqlite3.OperationalError("database is locked")
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


@pytest.mark.parametrize(
    "code", [sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, 517]
)  # 517: BUSY_SNAPSHOT
async def test_lock_errors_returned_at_once_are_retried(tmp_path, code):
    runs: list[int] = []  # the busy timeout each run's busy handler had

    def job(db):
        runs.append(db.conn.execute("PRAGMA busy_timeout").fetchone()[0])
        if len(runs) <= 3:
            raise _busy(code)
        return db.conn.execute("SELECT 7").fetchone()[0]

    def timeout(db):
        return db.conn.execute("PRAGMA busy_timeout").fetchone()[0]

    async with SQLiteStore(path=tmp_path / "r.db", busy_timeout_ms=30_000) as s:
        assert await s._call("flaky", job) == 7
        assert await s._call("timeout", timeout) == 30_000  # restored after the re-runs
    assert len(runs) == 4
    # A re-run's busy handler waits only for what is left of the budget.
    assert runs[0] == 30_000 and all(0 < left < 30_000 for left in runs[1:])


async def test_lock_errors_past_the_budget_become_store_busy(tmp_path):
    runs: list[int] = []

    def job(db):
        runs.append(1)
        raise _busy()

    async with SQLiteStore(path=tmp_path / "b.db", busy_timeout_ms=30) as s:
        with pytest.raises(StoreBusy, match=r"always-busy failed.*30 ms") as info:
            await s._call("always-busy", job)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert len(runs) >= 2  # retried before giving up
        assert await s.get_user("x") is None  # the writer goes on


async def test_other_errors_are_not_retried_and_are_not_busy(tmp_path):
    runs: list[int] = []

    def job(db):
        runs.append(1)
        db.conn.execute("SELECT * FROM no_such_table")

    async with SQLiteStore(path=tmp_path / "o.db", busy_timeout_ms=30_000) as s:
        with pytest.raises(StoreError) as info:
            await s._call("broken", job)
    assert not isinstance(info.value, StoreBusy)
    assert runs == [1]


async def _hold_writer(s: SQLiteStore) -> tuple[asyncio.Task, threading.Event]:
    """A job that keeps the writer thread busy until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def block(db):
        started.set()
        assert release.wait(10)
        return "held"

    task = asyncio.create_task(s._call("block", block))
    assert await asyncio.to_thread(started.wait, 10)
    return task, release


class _Submissions:
    """Counts the jobs handed to the writer thread's executor from now on (white-box: wraps the
    executor's ``submit``, which ``run_in_executor`` calls on the event loop's thread)."""

    def __init__(self, s: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        executor = s._writer._executor
        assert executor is not None
        real = executor.submit
        self.count = 0
        self._changed = asyncio.Event()

        def submit(fn, /, *args, **kwargs):
            self.count += 1
            self._changed.set()
            return real(fn, *args, **kwargs)

        monkeypatch.setattr(executor, "submit", submit)

    async def queued_behind(self, task: asyncio.Task, jobs: int) -> None:
        """Wait until ``jobs`` calls were handed to the (blocked) writer thread."""
        async with asyncio.timeout(10):
            while self.count < jobs:
                self._changed.clear()
                await self._changed.wait()
        assert self.count == jobs
        assert not task.done()


async def test_jobs_queued_meanwhile_run_in_call_order(tmp_path, monkeypatch):
    async with SQLiteStore(path=tmp_path / "q.db") as s:
        await s.put_user(UserRecord("telegram:1"))
        blocker, release = await _hold_writer(s)
        submitted = _Submissions(s, monkeypatch)
        ran: list[int] = []

        def job(i):
            def run(db):
                ran.append(i)
                return db.conn.execute("SELECT ?", (i,)).fetchone()[0]

            return run

        calls = [asyncio.create_task(s._call(f"job{i}", job(i))) for i in range(20)]
        reads = [asyncio.create_task(s.get_user("telegram:1")) for _ in range(5)]
        await submitted.queued_behind(blocker, 25)
        assert not any(c.done() for c in calls)  # queued behind the blocker
        release.set()
        assert await blocker == "held"
        assert await asyncio.gather(*calls) == list(range(20))
        assert await asyncio.gather(*reads) == [UserRecord("telegram:1")] * 5
        assert ran == list(range(20))  # strictly in call order


async def test_a_failing_or_cancelled_job_does_not_disturb_the_others(tmp_path, monkeypatch):
    async with SQLiteStore(path=tmp_path / "f.db") as s:
        blocker, release = await _hold_writer(s)
        submitted = _Submissions(s, monkeypatch)
        ran: list[str] = []

        def ok(name):
            def run(db):
                ran.append(name)
                return name

            return run

        def broken(db):
            ran.append("broken")
            db.conn.execute("SELECT * FROM no_such_table")

        def odd(db):
            ran.append("odd")
            raise StopIteration  # an exception a future refuses: still settled, others intact

        first = asyncio.create_task(s._call("first", ok("first")))
        bad = asyncio.create_task(s._call("broken", broken))
        gone = asyncio.create_task(s._call("gone", ok("gone")))
        strange = asyncio.create_task(s._call("odd", odd))
        last = asyncio.create_task(s._call("last", ok("last")))
        await submitted.queued_behind(blocker, 5)
        gone.cancel()
        release.set()
        await blocker
        # Bounded: a future left unset would hang every later call of the store.
        got = await asyncio.wait_for(
            asyncio.gather(first, bad, gone, strange, last, return_exceptions=True), 10
        )
        assert got[0] == "first" and got[4] == "last"
        assert isinstance(got[1], StoreError) and "broken failed" in str(got[1])
        assert "no such table" in str(got[1]) and isinstance(got[1].__cause__, sqlite3.Error)
        assert isinstance(got[2], asyncio.CancelledError)
        assert isinstance(got[3], StoreError) and "odd failed" in str(got[3])
        assert await asyncio.wait_for(s.get_user("x"), 10) is None  # the writer still works
        assert ran == ["first", "broken", "gone", "odd", "last"]  # a cancelled caller's job runs


async def test_close_waits_for_queued_jobs_then_refuses_new_ones(tmp_path, monkeypatch):
    path = tmp_path / "c.db"
    s = SQLiteStore(path=path)
    await s.open()
    blocker, release = await _hold_writer(s)
    submitted = _Submissions(s, monkeypatch)
    writes = [asyncio.create_task(s.put_user(UserRecord(f"telegram:{i}"))) for i in range(10)]
    await submitted.queued_behind(blocker, 10)
    closing = asyncio.create_task(s.close())
    await submitted.queued_behind(blocker, 11)  # the close job queued behind the writes
    assert not closing.done()
    release.set()
    await blocker
    await asyncio.gather(*writes)
    await closing
    with pytest.raises(StoreError, match="not open"):
        await s.get_user("telegram:1")
    async with SQLiteStore(path=path) as again:  # every queued write landed before the close
        assert [await again.get_user(f"telegram:{i}") for i in range(10)] == [
            UserRecord(f"telegram:{i}") for i in range(10)
        ]


async def test_a_stopped_writer_thread_fails_calls_clearly(tmp_path):
    """Defensive path: if the executor is gone, a call fails with a StoreError naming it
    instead of waiting for ever."""
    s = SQLiteStore(path=tmp_path / "x.db")
    await s.open()
    writer = s._writer
    db, executor = writer._db, writer._executor
    executor.shutdown(wait=True)
    try:
        with pytest.raises(StoreError, match=r"closed \(get_user\)"):
            await asyncio.wait_for(s.get_user("x"), 10)
    finally:
        db.close()
        writer._db = writer._executor = None
