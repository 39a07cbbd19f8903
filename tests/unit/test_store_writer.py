"""White-box tests of the SQLite store's single writer: lock errors are retried within the busy
budget, then become :class:`StoreBusy`; other errors are not retried."""

from __future__ import annotations

import sqlite3

import pytest

from core.errors import StoreBusy, StoreError
from core.store import SQLiteStore


def _busy(code: int = sqlite3.SQLITE_BUSY) -> sqlite3.OperationalError:
    err = sqlite3.OperationalError("database is locked")
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


@pytest.mark.parametrize(
    "code", [sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, 517]
)  # 517: BUSY_SNAPSHOT
async def test_lock_errors_returned_at_once_are_retried(tmp_path, code):
    runs: list[int] = []

    def job(db):
        runs.append(1)
        if len(runs) <= 3:
            raise _busy(code)
        return db.conn.execute("SELECT 7").fetchone()[0]

    async with SQLiteStore(path=tmp_path / "r.db", busy_timeout_ms=30_000) as s:
        assert await s._call("flaky", job) == 7
    assert len(runs) == 4


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
