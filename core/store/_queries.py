"""The SQLite store's SQL: every statement, and the small synchronous functions that run them.

Who calls: :mod:`core.store.sqlite` composes these into jobs that run on its writer thread
(:mod:`core.store._writer`); nothing here runs on the event loop or opens a transaction (the
caller does, with :func:`core.store._writer.immediate`).

The statements are the store's guarantees, so they are written out rather than generated:

- A delivery claim, an inbox record and a quota charge are each *one conditional statement*
  (``INSERT … ON CONFLICT … DO UPDATE … WHERE`` / ``DO NOTHING``) whose row count is the
  decision, so concurrent callers (tasks, processes) can never both win.
- ``RECENT_TURNS_SQL`` walks the index ``turns_conv_epoch_id`` backwards and stops after
  ``LIMIT`` rows: a context costs the same whatever the length of the stored history.
- Fixed column names only are interpolated into SQL (:func:`where_clause`); every value is bound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from core.store._codecs import opt_dt, policy_from_row, refundable_totals, ts, user_from_row
from core.store.base import (
    ChannelPolicy,
    ConversationState,
    QuotaLine,
    ReservationState,
    ReserveOutcome,
    TurnRecord,
    UserRecord,
)

__all__ = [
    "ACTIVATE_CONVERSATION_SQL",
    "CHARGE_BONUS_SQL",
    "CHARGE_SQL",
    "CLAIM_SQL",
    "COUNTER_USED_SQL",
    "CREATE_CONVERSATION_SQL",
    "END_STALE_JOBS_SQL",
    "FIND_USERS_SQL",
    "FINISH_DELIVERY_SQL",
    "FORGET_NAME_SQL",
    "FORGET_PROMPTS_SQL",
    "FORGET_TURNS_SQL",
    "FORGET_USER_SQL",
    "GROUP_COLUMNS",
    "IMAGE_JOB_COLUMNS",
    "INBOX_DONE_SQL",
    "INBOX_DUE_SQL",
    "INBOX_PURGE_SQL",
    "INBOX_RECORD_SQL",
    "INSERT_LEDGER_SQL",
    "INSERT_RESERVATION_SQL",
    "INSERT_TURN_SQL",
    "IN_CHUNK",
    "LEDGER_COLUMNS",
    "NEW_EPOCH_SQL",
    "PURGE_DELIVERIES_SQL",
    "RECENT_TURNS_SQL",
    "RECORD_NAME_SQL",
    "RELEASE_DELIVERY_SQL",
    "RELEASE_SQL",
    "SELECT_CONVERSATION_SQL",
    "SELECT_EPOCH_SQL",
    "SELECT_IMAGE_JOB_SQL",
    "SELECT_POLICY_SQL",
    "SELECT_USER_SQL",
    "SET_PERSONA_SQL",
    "STALE_RESERVATIONS_SQL",
    "UPSERT_IMAGE_JOB_SQL",
    "UPSERT_POLICY_SQL",
    "UPSERT_USER_SQL",
    "append",
    "conversation",
    "denial",
    "finish_reservation",
    "policy",
    "recent",
    "turn_rows",
    "used",
    "user",
    "where_clause",
]

# How many ``?`` placeholders one IN (...) list gets; SQLite's default limit is far higher, but
# older builds stop at 999.
IN_CHUNK = 500

GROUP_COLUMNS = {"day": "period_day", "user": "user_id"}

# Insert-if-absent, or take over a claim that has expired or, when a lease cut-off is bound
# (``:lease_cutoff``, else NULL, which makes that test false), one that never finished and was
# claimed at or before the cut-off. ``changes()`` is 1 when this call owns the delivery, 0 when
# the existing claim stands (the upsert's WHERE was false). One statement, so of several
# concurrent takers (tasks, connections, processes) exactly one wins: the statements are
# serialised by the write lock, and the winner's new ``claimed_at`` is past every later taker's
# cut-off (leases are positive; takers' clocks agree to well within a lease). A taken-over
# claim starts unfinished.
CLAIM_SQL = """
INSERT INTO deliveries (platform, delivery_id, claimed_at, expires_at, done_at)
VALUES (:platform, :delivery_id, :now, :expires_at, NULL)
ON CONFLICT (platform, delivery_id) DO UPDATE
    SET claimed_at = excluded.claimed_at, expires_at = excluded.expires_at, done_at = NULL
    WHERE deliveries.expires_at <= excluded.claimed_at
        OR (deliveries.done_at IS NULL AND deliveries.claimed_at <= :lease_cutoff)
"""

# The first finish time is kept (idempotent); an absent claim stays absent.
FINISH_DELIVERY_SQL = """
UPDATE deliveries SET done_at = :done_at
WHERE platform = :platform AND delivery_id = :delivery_id AND done_at IS NULL
"""

RELEASE_DELIVERY_SQL = """
DELETE FROM deliveries WHERE platform = ? AND delivery_id = ? AND done_at IS NULL
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


CHARGE_SQL = _charge_sql(":limit")

# The effective limit of a line with a bonus counter, read inside the charging statement itself
# so that a concurrent top-up or charge can never be missed.
BONUS_LIMIT = ":limit + COALESCE((SELECT b.used FROM counters AS b WHERE b.name = :bonus), 0)"

CHARGE_BONUS_SQL = _charge_sql(f"({BONUS_LIMIT})")

INSERT_RESERVATION_SQL = """
INSERT INTO reservations (id, state, created_at, lines, meta)
VALUES (?, 'reserved', ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""

COUNTER_USED_SQL = "SELECT used FROM counters WHERE name = ?"

# Clamped at zero so a bookkeeping slip can never turn into extra quota.
RELEASE_SQL = """
UPDATE counters SET used = MAX(used - :reserved + :actual, 0) WHERE name = :name
"""

# Walks index turns_conv_epoch_id backwards and stops after LIMIT rows: the cost does not grow
# with the stored history.
RECENT_TURNS_SQL = """
SELECT id, role, content, user_id, tokens, created_at, delivery_id
FROM turns
WHERE conv_key = ? AND epoch = ?
ORDER BY id DESC
LIMIT ?
"""

SELECT_CONVERSATION_SQL = (
    "SELECT key, epoch, persona, last_active_at FROM conversations WHERE key = ?"
)

CREATE_CONVERSATION_SQL = "INSERT INTO conversations (key) VALUES (?) ON CONFLICT (key) DO NOTHING"


# Creates the conversation if needed (turns reference it) and sets last_active_at, in one
# statement.
ACTIVATE_CONVERSATION_SQL = """
INSERT INTO conversations (key, last_active_at) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET last_active_at = excluded.last_active_at
"""

INSERT_TURN_SQL = """
INSERT INTO turns (conv_key, epoch, role, content, user_id, tokens, created_at, delivery_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

SELECT_USER_SQL = "SELECT user_id, role, language, access, limits FROM users WHERE user_id = ?"

SELECT_POLICY_SQL = (
    "SELECT channel, enabled, mention_only, images_allowed, model, persona "
    "FROM channel_policies WHERE channel = ?"
)

LEDGER_COLUMNS = (
    "reservation_id, user_id, platform, chat, model, tokens_in, tokens_out, images, cost_cny, "
    "outcome, created_at, period_day, period_month"
)

INSERT_LEDGER_SQL = f"""
INSERT INTO ledger ({LEDGER_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# The inbox (Contract 2). An existing entry is never touched by a second record.
INBOX_RECORD_SQL = """
INSERT INTO inbox (platform, delivery_id, payload, received_at, attempts, leased_until, done_at)
VALUES (?, ?, ?, ?, 1, ?, NULL)
ON CONFLICT (platform, delivery_id) DO NOTHING
"""

INBOX_DONE_SQL = """
UPDATE inbox SET done_at = ? WHERE platform = ? AND delivery_id = ? AND done_at IS NULL
"""

# One statement: pick the due entries (through the partial index inbox_pending) and lease them,
# under the write lock, so no two callers lease the same entry.
INBOX_DUE_SQL = """
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

INBOX_PURGE_SQL = "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at <= ?"

PURGE_DELIVERIES_SQL = "DELETE FROM deliveries WHERE expires_at <= ?"

NEW_EPOCH_SQL = """
INSERT INTO conversations (key, epoch) VALUES (?, 1)
ON CONFLICT (key) DO UPDATE SET epoch = conversations.epoch + 1
"""

SELECT_EPOCH_SQL = "SELECT epoch FROM conversations WHERE key = ?"

SET_PERSONA_SQL = """
INSERT INTO conversations (key, persona) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET persona = excluded.persona
"""

# /forget: the user's turns everywhere, their user row, and their image prompts (the jobs stay
# for accounting).
FORGET_TURNS_SQL = "DELETE FROM turns WHERE user_id = ?"
FORGET_USER_SQL = "DELETE FROM users WHERE user_id = ?"
FORGET_PROMPTS_SQL = "UPDATE image_jobs SET prompt = '' WHERE user_id = ?"
FORGET_NAME_SQL = "DELETE FROM user_names WHERE user_id = ?"

# A user's current display name (one row per user; the newest sighting wins).
RECORD_NAME_SQL = """
INSERT INTO user_names (user_id, platform, name, name_key, seen_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    platform = excluded.platform, name = excluded.name, name_key = excluded.name_key,
    seen_at = excluded.seen_at
"""

# Walks the index user_names_lookup: already sorted by user_id.
FIND_USERS_SQL = """
SELECT user_id FROM user_names WHERE platform = ? AND name_key = ? ORDER BY user_id LIMIT ?
"""

STALE_RESERVATIONS_SQL = """
SELECT id, meta FROM reservations WHERE state = 'reserved' AND created_at < ?
ORDER BY created_at, id
"""

UPSERT_USER_SQL = """
INSERT INTO users (user_id, role, language, access, limits) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    role = excluded.role, language = excluded.language, access = excluded.access,
    limits = excluded.limits
"""

UPSERT_POLICY_SQL = """
INSERT INTO channel_policies (channel, enabled, mention_only, images_allowed, model, persona)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (channel) DO UPDATE SET
    enabled = excluded.enabled, mention_only = excluded.mention_only,
    images_allowed = excluded.images_allowed, model = excluded.model, persona = excluded.persona
"""

# Image jobs whose process died: its reservation is swept by the same transaction.
END_STALE_JOBS_SQL = """
UPDATE image_jobs SET status = 'failed', finished_at = ?, error = ?
WHERE status IN ('queued', 'running') AND created_at < ?
"""

IMAGE_JOB_COLUMNS = (
    "job_id, user_id, conversation, prompt, size, status, created_at, finished_at, "
    "result_path, error"
)

# Upsert by job_id; the row keeps its place (rowid) in creation order.
UPSERT_IMAGE_JOB_SQL = f"""
INSERT INTO image_jobs ({IMAGE_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    user_id = excluded.user_id, conversation = excluded.conversation, prompt = excluded.prompt,
    size = excluded.size, status = excluded.status, created_at = excluded.created_at,
    finished_at = excluded.finished_at, result_path = excluded.result_path, error = excluded.error
"""

SELECT_IMAGE_JOB_SQL = f"SELECT {IMAGE_JOB_COLUMNS} FROM image_jobs WHERE job_id = ?"


def where_clause(filters: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """``WHERE`` clause over fixed column names (never user input) with bound values."""
    used = [(column, value) for column, value in filters if value is not None]
    if not used:
        return "", []
    clause = " AND ".join(f"{column} = ?" for column, _ in used)
    return f"WHERE {clause}", [value for _, value in used]


def finish_reservation(
    conn: sqlite3.Connection,
    reservation_id: str,
    *,
    state: ReservationState,
    actual: dict[str, int],
    ledger_params: tuple[Any, ...],
) -> bool:
    """Close an open reservation (inside a transaction): flip its state, release each
    refundable line down to ``actual`` (0 when absent), write the ledger row
    (``ledger_params`` from :func:`entry_params`). ``False`` (and no change) when the
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
    for counter, reserved in refundable_totals(row[0]).items():
        conn.execute(
            RELEASE_SQL,
            {"name": counter, "reserved": reserved, "actual": actual.get(counter, 0)},
        )
    conn.execute(INSERT_LEDGER_SQL, ledger_params)
    return True


# --- building blocks of the store's jobs (run on the writer thread) --------------------------


def conversation(conn: sqlite3.Connection, key: str) -> ConversationState:
    """Read first (no write lock on the hot path); create only when absent."""
    row = conn.execute(SELECT_CONVERSATION_SQL, (key,)).fetchone()
    if row is None:
        conn.execute(CREATE_CONVERSATION_SQL, (key,))
        row = conn.execute(SELECT_CONVERSATION_SQL, (key,)).fetchone()
    assert row is not None  # just inserted; conversations are never deleted
    return ConversationState(
        key=row[0], epoch=row[1], persona=row[2], last_active_at=opt_dt(row[3])
    )


def recent(conn: sqlite3.Connection, key: str, epoch: int, limit: int) -> list[TurnRecord]:
    """The newest ``limit`` turns of ``epoch``, oldest first (an index walk bounded by
    ``limit``, whatever the length of the stored history).

    The row conversion is written out inline (positional ``TurnRecord``, no helper calls): it
    runs for every turn of every context load."""
    if limit <= 0:
        return []
    rows = conn.execute(RECENT_TURNS_SQL, (key, epoch, limit)).fetchall()
    rows.reverse()
    parse, utc, record = datetime.fromisoformat, UTC, TurnRecord
    turns: list[TurnRecord] = []
    for turn_id, role, content, user_id, tokens, created, delivery_id in rows:
        at = parse(created)
        if at.tzinfo is not utc:  # stored text is always +00:00; kept for safety
            at = at.astimezone(utc)
        turns.append(record(role, content, user_id, tokens, at, delivery_id, turn_id))
    return turns


def turn_rows(
    key: str, epoch: int, turns: Sequence[TurnRecord]
) -> list[tuple[str, int, str, str, str, int, str, str]]:
    """Bound parameters for :data:`INSERT_TURN_SQL` (validates timestamps before any I/O)."""
    return [
        (key, epoch, t.role, t.content, t.user_id, t.tokens, ts(t.created_at), t.delivery_id)
        for t in turns
    ]


def append(
    conn: sqlite3.Connection,
    key: str,
    rows: Sequence[tuple[Any, ...]],
    active: str,
) -> None:
    """Turns and ``last_active_at`` (inside the caller's transaction). The conversation row is
    written first because turns reference it."""
    conn.execute(ACTIVATE_CONVERSATION_SQL, (key, active))
    conn.executemany(INSERT_TURN_SQL, rows)


def user(conn: sqlite3.Connection, user_id: str) -> UserRecord | None:
    row = conn.execute(SELECT_USER_SQL, (user_id,)).fetchone()
    return None if row is None else user_from_row(row)


def policy(conn: sqlite3.Connection, channel: str) -> ChannelPolicy | None:
    row = conn.execute(SELECT_POLICY_SQL, (channel,)).fetchone()
    return None if row is None else policy_from_row(row)


def used(conn: sqlite3.Connection, counter: str) -> int:
    row = conn.execute(COUNTER_USED_SQL, (counter,)).fetchone()
    return 0 if row is None else int(row[0])


def denial(conn: sqlite3.Connection, line: QuotaLine) -> ReserveOutcome:
    """The figures of a line that did not fit, read in the same transaction as the failed
    charge (so they are the ones it was judged on)."""
    limit = line.limit if line.limit is not None else 0
    if line.bonus_counter and line.limit is not None:
        limit += used(conn, line.bonus_counter)
    return ReserveOutcome(
        granted=False, denied_counter=line.counter, used=used(conn, line.counter), limit=limit
    )
