"""Contract 2, the inbox: every store backend, driven only through ``core.inbox.Inbox``.

Add a backend by extending the ``make_store`` fixture's params. A fake clock moves time; two
stores on one file stand for two processes (replicas) sharing the database.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from core.inbox import Inbox, InboxEntry
from core.store import BaseStore, SQLiteStore

T0 = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(params=["sqlite"])
def make_store(request, tmp_path):
    """A factory of fresh (unopened) stores over one backing database."""
    path = tmp_path / "inbox.db"
    if request.param == "sqlite":
        return lambda: SQLiteStore(path=path)
    raise AssertionError(f"unknown store backend {request.param}")


@pytest.fixture
async def store(make_store):
    async with make_store() as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_inbox(store: BaseStore, clock: Clock) -> Inbox:
    return Inbox(store=store, lease=LEASE, clock=clock)


def payload(n: int) -> str:
    # Raw JSON as a platform sends it: non-ASCII, escapes and odd spacing kept byte for byte.
    text = '"你好 \\"quoted\\" \\ud83d\\ude00"'
    return '{"update_id": ' + str(n) + ', "message": {"text": ' + text + "} }"


async def test_record_is_insert_if_absent(store, clock):
    inbox = make_inbox(store, clock)
    assert await inbox.record("telegram", "1", payload(1)) is True
    assert await inbox.record("telegram", "1", payload(1)) is False
    assert await inbox.record("telegram", "1", "something else") is False
    # The same id on another platform is another entry.
    assert await inbox.record("slack", "1", payload(1)) is True
    clock.advance(LEASE)
    [entry] = await inbox.due("telegram")
    assert entry.payload == payload(1)  # the first record's payload, untouched by repeats


async def test_record_is_durable_and_payload_exact(make_store, clock):
    async with make_store() as store:
        inbox = make_inbox(store, clock)
        assert await inbox.record("telegram", "42", payload(42))
    # A new process (store) after the first one is gone finds it, exactly as received.
    clock.advance(LEASE + timedelta(seconds=1))
    async with make_store() as store:
        inbox = make_inbox(store, clock)
        entries = await inbox.due("telegram")
        assert entries == [
            InboxEntry(
                platform="telegram",
                delivery_id="42",
                payload=payload(42),
                attempts=2,
                received_at=T0,
            )
        ]
        assert json.loads(entries[0].payload)["update_id"] == 42
        assert entries[0].received_at.tzinfo is not None
        assert await inbox.record("telegram", "42", payload(42)) is False


async def test_due_releases_only_expired_leases(store, clock):
    inbox = make_inbox(store, clock)
    await inbox.record("telegram", "a", payload(1))
    assert await inbox.due("telegram") == []  # the recorder holds the lease
    clock.advance(LEASE - timedelta(microseconds=1))
    assert await inbox.due("telegram") == []
    await inbox.record("telegram", "b", payload(2))  # recorded later: its lease runs later
    clock.advance(timedelta(microseconds=1))
    [first] = await inbox.due("telegram")
    assert (first.delivery_id, first.attempts) == ("a", 2)
    assert await inbox.due("telegram") == []  # leased again just now
    clock.advance(LEASE)
    got = await inbox.due("telegram")
    assert [(e.delivery_id, e.attempts) for e in got] == [("a", 3), ("b", 2)]  # oldest first


async def test_due_is_per_platform_oldest_first_and_bounded(store, clock):
    inbox = make_inbox(store, clock)
    for n in range(5):
        await inbox.record("telegram", f"t{n}", payload(n))
        await inbox.record("slack", f"s{n}", payload(n))
        clock.advance(timedelta(seconds=1))
    clock.advance(LEASE)
    first = await inbox.due("telegram", limit=3)
    assert [e.delivery_id for e in first] == ["t0", "t1", "t2"]
    assert [e.delivery_id for e in await inbox.due("telegram", limit=3)] == ["t3", "t4"]
    assert await inbox.due("telegram", limit=3) == []
    assert await inbox.due("slack", limit=0) == []
    assert [e.delivery_id for e in await inbox.due("slack")] == [f"s{n}" for n in range(5)]


async def test_done_entries_are_never_re_driven(store, clock):
    inbox = make_inbox(store, clock)
    await inbox.record("telegram", "done-now", payload(1))
    await inbox.record("telegram", "done-later", payload(2))
    await inbox.record("telegram", "never", payload(3))
    await inbox.done("telegram", "done-now")
    await inbox.done("telegram", "done-now")  # idempotent
    await inbox.done("telegram", "unknown")  # ignored, not created
    clock.advance(LEASE)
    got = await inbox.due("telegram")
    assert [e.delivery_id for e in got] == ["done-later", "never"]
    await inbox.done("telegram", "done-later")  # finished by its re-drive
    for _ in range(3):
        clock.advance(LEASE)
        assert [e.delivery_id for e in await inbox.due("telegram")] == ["never"]
    assert await inbox.record("telegram", "unknown", payload(4)) is True  # done() made nothing
    assert await inbox.record("telegram", "done-now", payload(1)) is False  # still known


async def test_two_concurrent_callers_never_lease_the_same_entry(make_store, clock):
    """Two stores on one file (two replicas), many concurrent due() calls each: every entry is
    handed out exactly once per lease period."""
    async with make_store() as one, make_store() as two:
        a, b = make_inbox(one, clock), make_inbox(two, clock)
        for n in range(120):
            await (a if n % 2 else b).record("telegram", f"u{n}", payload(n))
        clock.advance(LEASE)
        batches = await asyncio.gather(
            *(inbox.due("telegram", limit=7) for _ in range(12) for inbox in (a, b))
        )
        handed = [e.delivery_id for batch in batches for e in batch]
        assert sorted(handed) == sorted(f"u{n}" for n in range(120))  # each once, none lost
        assert {e.attempts for batch in batches for e in batch} == {2}
        assert await a.due("telegram") == [] and await b.due("telegram") == []


async def test_purge_removes_only_done_entries_old_enough(store, clock):
    inbox = make_inbox(store, clock)
    for name in ("old-done", "new-done", "old-open"):
        await inbox.record("telegram", name, payload(0))
    await inbox.done("telegram", "old-done")
    clock.advance(timedelta(hours=2))
    await inbox.done("telegram", "new-done")
    clock.advance(timedelta(minutes=30))
    assert await inbox.purge(older_than=timedelta(hours=1)) == 1
    assert await inbox.purge(older_than=timedelta(hours=1)) == 0
    # Purged: recorded again as new. Kept: still known.
    assert await inbox.record("telegram", "old-done", payload(0)) is True
    assert await inbox.record("telegram", "new-done", payload(0)) is False
    # The old unfinished entry survives any purge and is still re-driven.
    assert await inbox.purge(older_than=timedelta(0)) == 1  # new-done only
    assert [e.delivery_id for e in await inbox.due("telegram")] == ["old-open"]
    with pytest.raises(ValueError):
        await inbox.purge(older_than=timedelta(seconds=-1))


async def test_lease_must_be_positive(store):
    for bad in (timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(ValueError):
            Inbox(store=store, lease=bad)
