"""Several OS processes sharing one SQLite file keep the store's guarantees.

Four child interpreters (``subprocess``, each with its own ``SQLiteStore`` on the same fresh
file) migrate the file concurrently, wait at a barrier, then all at once: claim one delivery id,
make 50 reservation attempts each against one counter with a limit of 10, attempt the same 20
shared reservation ids against a second counter with a limit of 10, and settle what they won.
A last "churn" phase (reserve then settle, 250 times per process, one shared counter) keeps the
four writers overlapping long enough that a deferred ``BEGIN`` anywhere in a read-then-write
path shows up as ``database is locked`` (with only the short bursts above it often does not).
"""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from core.store.migrations import SCHEMA_VERSION

PROCESSES = 4
ATTEMPTS_EACH = 50  # 200 in total
SHARED_IDS = 20
CHURN_EACH = 250
DEADLINE_SECONDS = 120  # for the whole run; generous for a loaded machine

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import UTC, datetime

    from core.store import LedgerEntry, QuotaLine, SQLiteStore

    NOW = datetime(2026, 11, 28, 10, tzinfo=UTC)


    def meta(rid, tokens=0):
        return LedgerEntry(rid, "telegram:1", "telegram", "c", "m", tokens, 0, 0, 0.0, "ok",
                           NOW, "2026-11-28", "2026-11")


    async def main(path, worker, attempts, shared, churn):
        errors = []

        async def guarded(coro):
            try:
                return await coro
            except Exception as err:  # report, don't crash: the parent asserts on these
                errors.append(f"{type(err).__name__}: {err}")
                return None

        async with SQLiteStore(path=path) as store:
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            claimed = await guarded(
                store.claim_delivery("telegram", "update-1", now=NOW, ttl_seconds=60)
            )
            own = [f"w{worker}-{i}" for i in range(attempts)]
            outs = await asyncio.gather(*(
                guarded(store.reserve(rid, [QuotaLine("hot", 1, 10)], now=NOW, meta=meta(rid)))
                for rid in own
            ))
            won = [rid for rid, o in zip(own, outs) if o is not None and o.granted]
            ids = [f"shared-{i}" for i in range(shared)]
            souts = await asyncio.gather(*(
                guarded(store.reserve(rid, [QuotaLine("shared", 1, 10)], now=NOW, meta=meta(rid)))
                for rid in ids
            ))
            fresh = [r for r, o in zip(ids, souts) if o and o.granted and not o.duplicate]
            dups = [r for r, o in zip(ids, souts) if o is not None and o.duplicate]
            settled = await asyncio.gather(*(
                guarded(store.settle(rid, {"hot": 1}, entry=meta(rid, tokens=1))) for rid in won
            ))
            churned = 0
            for i in range(churn):
                rid = f"churn-{worker}-{i}"
                out = await guarded(
                    store.reserve(rid, [QuotaLine("churn", 5, None)], now=NOW, meta=meta(rid))
                )
                if out is not None and out.granted:
                    if await guarded(store.settle(rid, {"churn": 2}, entry=meta(rid, tokens=2))):
                        churned += 1
            counters = await guarded(store.counters(["hot", "shared", "churn"]))
        print(json.dumps({
            "claimed": claimed, "won": won, "fresh": fresh, "dups": dups,
            "settled": settled, "churned": churned, "errors": errors, "counters": counters,
        }), flush=True)


    asyncio.run(main(sys.argv[1], *map(int, sys.argv[2:6])))
    """
)


def _spawn(db: Path, worker: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    # The children import hybot from the same tree as the tests.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(db),
            str(worker),
            str(ATTEMPTS_EACH),
            str(SHARED_IDS),
            str(CHURN_EACH),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_line(child: subprocess.Popen[str], deadline: float) -> str:
    """The child's next stdout line; fails the test if none comes before ``deadline``."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
    assert ready, "a child process did not report ready in time"
    return child.stdout.readline()


def test_four_processes_share_one_sqlite_file(tmp_path):
    db = tmp_path / "shared.db"  # fresh: the four children also race to migrate it
    # Did not hang: every wait on a child is bounded by one generous overall deadline.
    deadline = time.monotonic() + DEADLINE_SECONDS
    children = [_spawn(db, worker) for worker in range(PROCESSES)]
    try:
        for child in children:
            line = _read_line(child, deadline)
            assert line.strip() == "ready", child.stderr.read()
        # Barrier released: every child starts its burst at (nearly) the same moment.
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=max(0.0, deadline - time.monotonic()))
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    errors = [e for r in results for e in r["errors"]]
    assert errors == []  # in particular no "database is locked"

    # One delivery, four concurrent claimers: exactly one runs it.
    assert sum(1 for r in results if r["claimed"]) == 1

    # 200 attempts, distinct ids, limit 10: exactly 10 granted across all processes.
    won = [rid for r in results for rid in r["won"]]
    assert len(won) == 10 and len(set(won)) == 10
    assert all(all(r["settled"]) for r in results)

    # The same 20 ids tried by all four: 10 charged once each; other grants are duplicates.
    fresh = Counter(rid for r in results for rid in r["fresh"])
    assert len(fresh) == 10 and set(fresh.values()) == {1}
    assert {rid for r in results for rid in r["dups"]} <= set(fresh)

    assert all(r["churned"] == CHURN_EACH for r in results)

    conn = sqlite3.connect(db)
    try:
        counters = dict(conn.execute("SELECT name, used FROM counters").fetchall())
        ledger_rows = conn.execute(
            "SELECT COUNT(*), SUM(tokens_in) FROM ledger WHERE reservation_id NOT LIKE 'churn-%'"
        ).fetchone()
        churn_rows = conn.execute(
            "SELECT COUNT(*), SUM(tokens_in) FROM ledger WHERE reservation_id LIKE 'churn-%'"
        ).fetchone()
        versions = conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0]
    finally:
        conn.close()
    churn_total = PROCESSES * CHURN_EACH
    assert counters == {"hot": 10, "shared": 10, "churn": 2 * churn_total}
    assert ledger_rows == (10, 10)  # ledger totals equal the counter
    assert churn_rows == (churn_total, 2 * churn_total)
    # Each migration applied exactly once despite four concurrent first opens.
    assert versions == SCHEMA_VERSION
