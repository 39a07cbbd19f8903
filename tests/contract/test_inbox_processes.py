"""The inbox across OS processes: replicas re-driving one SQLite file at once never get the same
entry, and a recorded entry survives its recorder being killed with SIGKILL.

The parent records 200 entries whose lease has run out; four child interpreters (each its own
``SQLiteStore`` and ``Inbox`` with the same fixed clock) wait at a barrier, then all call
``due(limit=7)`` until it comes back empty, each entry they get counted as "re-driven" and marked
done by whoever got it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.inbox import Inbox
from core.store import SQLiteStore

PROCESSES = 4
ENTRIES = 200
RECORDED = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LATER = RECORDED + timedelta(hours=1)  # every recorder's 15-minute lease has run out

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import datetime

    from core.inbox import Inbox
    from core.store import SQLiteStore


    async def main(path, now):
        got, errors = [], []
        async with SQLiteStore(path=path) as store:
            inbox = Inbox(store=store, clock=lambda: now)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            while True:
                try:
                    batch = await inbox.due("telegram", limit=7)
                except Exception as err:  # report, don't crash: the parent asserts on these
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                if not batch:
                    break
                for entry in batch:
                    got.append([entry.delivery_id, entry.attempts])
                    await inbox.done("telegram", entry.delivery_id)
        print(json.dumps({"got": got, "errors": errors}), flush=True)


    asyncio.run(main(sys.argv[1], datetime.fromisoformat(sys.argv[2])))
    """
)


async def _record(db: Path) -> None:
    async with SQLiteStore(path=db) as store:
        inbox = Inbox(store=store, clock=lambda: RECORDED)
        for n in range(ENTRIES):
            assert await inbox.record("telegram", f"u{n}", json.dumps({"update_id": n}))


def test_four_processes_never_re_drive_the_same_entry(tmp_path):
    db = tmp_path / "inbox.db"
    asyncio.run(_record(db))
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), LATER.isoformat()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:  # the barrier: all start re-driving at (nearly) the same moment
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    assert [e for r in results for e in r["errors"]] == []
    handed = Counter(delivery_id for r in results for delivery_id, _ in r["got"])
    assert set(handed) == {f"u{n}" for n in range(ENTRIES)}  # none lost
    assert set(handed.values()) == {1}  # none handed out twice
    assert {attempts for r in results for _, attempts in r["got"]} == {2}

    async def nothing_left() -> None:
        async with SQLiteStore(path=db) as store:
            much_later = LATER + timedelta(days=1)
            assert await Inbox(store=store, clock=lambda: much_later).due("telegram") == []

    asyncio.run(nothing_left())


RECORDER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import datetime

    from core.inbox import Inbox
    from core.store import SQLiteStore


    async def main(path, now):
        store = SQLiteStore(path=path)
        await store.open()
        inbox = Inbox(store=store, clock=lambda: now)
        for n in range(3):
            assert await inbox.record("slack", f"Ev{n}", '{"event_id": "Ev' + str(n) + '"}')
        print("recorded", flush=True)
        await asyncio.Event().wait()  # "acknowledged"; then killed before any done()


    asyncio.run(main(sys.argv[1], datetime.fromisoformat(sys.argv[2])))
    """
)


def test_a_recorded_entry_survives_kill_9_and_is_re_driven(tmp_path):
    """record() is durable once it returns: the recorder is killed with SIGKILL right after,
    without closing its store, and a new process re-drives every entry after the lease."""
    db = tmp_path / "killed.db"
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    child = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(db), RECORDED.isoformat()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "recorded", child.stderr.read()
        child.kill()  # SIGKILL: no close, no checkpoint, no atexit
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    async def re_drive() -> list[tuple[str, str, int]]:
        async with SQLiteStore(path=db) as store:
            inbox = Inbox(store=store, clock=lambda: LATER)
            return [(e.delivery_id, e.payload, e.attempts) for e in await inbox.due("slack")]

    assert asyncio.run(re_drive()) == [
        (f"Ev{n}", '{"event_id": "Ev' + str(n) + '"}', 2) for n in range(3)
    ]
