"""Versioned schema migrations for :class:`~core.store.sqlite.SQLiteStore`.

Who calls: ``SQLiteStore.open()`` calls :func:`apply_migrations` on its writer thread, once per
connection. Guarantees:

- All pending migrations run, each with its version record, in one ``BEGIN IMMEDIATE``
  transaction, so a crash leaves the schema where it was, and several processes opening the same
  fresh file at once serialise on the write lock (the busy timeout applies) instead of failing with
  ``database is locked`` or applying a migration twice.
- Re-opening an up-to-date file is read-only: the version is checked first, without the write
  lock, and nothing runs.
- A file whose schema is newer than :data:`SCHEMA_VERSION` raises :class:`StoreError` and is
  left untouched (an older hybot must not write to a newer schema).

Why not ``sqlite_utils.migrations.Migrations``: its ``apply`` wraps each step in a deferred
``BEGIN`` (``db.atomic()``), which fails at once under multi-process contention (see
platforms.md §3.2), and it has no notion of "a newer schema than this code knows".

Migrations are append-only: never edit a released one; add a new version instead.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "apply_migrations", "schema_version"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``statements`` run in order inside the version's transaction.

    Statements are executed one by one (``executescript`` would commit the transaction first).
    """

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="initial",
        statements=(
            """
            CREATE TABLE conversations (
                key TEXT PRIMARY KEY,
                epoch INTEGER NOT NULL DEFAULT 0,
                persona TEXT,
                last_active_at TEXT
            )
            """,
            """
            CREATE TABLE turns (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                conv_key TEXT NOT NULL REFERENCES conversations(key),
                epoch INTEGER NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
                content TEXT NOT NULL,
                user_id TEXT NOT NULL,
                tokens INTEGER NOT NULL,
                created_at TEXT NOT NULL,
                delivery_id TEXT NOT NULL DEFAULT ''
            )
            """,
            # recent_turns: WHERE conv_key=? AND epoch=? ORDER BY id DESC LIMIT ? walks this index
            # backwards and stops after LIMIT rows, whatever the history length.
            "CREATE INDEX turns_conv_epoch_id ON turns (conv_key, epoch, id)",
            # forget_user deletes by user across all conversations.
            "CREATE INDEX turns_user ON turns (user_id)",
            """
            CREATE TABLE deliveries (
                platform TEXT NOT NULL,
                delivery_id TEXT NOT NULL,
                claimed_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                PRIMARY KEY (platform, delivery_id)
            )
            """,
            "CREATE INDEX deliveries_expires ON deliveries (expires_at)",
            """
            CREATE TABLE counters (
                name TEXT PRIMARY KEY,
                used INTEGER NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE reservations (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL
                    CHECK (state IN ('reserved', 'settled', 'refunded', 'swept')),
                created_at TEXT NOT NULL,
                lines TEXT NOT NULL,
                meta TEXT NOT NULL
            )
            """,
            # The sweeper looks for open reservations older than a cut-off.
            "CREATE INDEX reservations_state_created ON reservations (state, created_at)",
            """
            CREATE TABLE ledger (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                reservation_id TEXT NOT NULL UNIQUE,
                user_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                chat TEXT NOT NULL,
                model TEXT NOT NULL,
                tokens_in INTEGER NOT NULL,
                tokens_out INTEGER NOT NULL,
                images INTEGER NOT NULL,
                cost_cny REAL NOT NULL,
                outcome TEXT NOT NULL,
                created_at TEXT NOT NULL,
                period_day TEXT NOT NULL,
                period_month TEXT NOT NULL
            )
            """,
            "CREATE INDEX ledger_user ON ledger (user_id, id)",
            "CREATE INDEX ledger_day ON ledger (period_day, id)",
            "CREATE INDEX ledger_month ON ledger (period_month, id)",
            """
            CREATE TABLE users (
                user_id TEXT PRIMARY KEY,
                role TEXT NOT NULL DEFAULT 'user',
                language TEXT NOT NULL DEFAULT '',
                access TEXT NOT NULL DEFAULT '',
                limits TEXT NOT NULL DEFAULT '{}'
            )
            """,
            """
            CREATE TABLE channel_policies (
                channel TEXT PRIMARY KEY,
                enabled INTEGER,
                mention_only INTEGER,
                images_allowed INTEGER,
                model TEXT,
                persona TEXT
            )
            """,
            """
            CREATE TABLE image_jobs (
                job_id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                conversation TEXT NOT NULL,
                prompt TEXT NOT NULL,
                size TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at TEXT NOT NULL,
                finished_at TEXT,
                result_path TEXT NOT NULL DEFAULT '',
                error TEXT NOT NULL DEFAULT ''
            )
            """,
            "CREATE INDEX image_jobs_user ON image_jobs (user_id, created_at)",
            "CREATE INDEX image_jobs_status ON image_jobs (status, created_at)",
        ),
    ),
    Migration(
        version=2,
        name="delivery_leases",
        statements=(
            # When the claim's work finished (NULL: not finished). A claim that never finished
            # (the process died mid-turn) may be taken over after a lease; a finished one only
            # after its TTL. Claims stored before this version read as not finished (there is
            # no way to tell): an upgrade is a restart, exactly when an unfinished turn is
            # likely, and losing a message is worse than answering a re-delivery twice.
            "ALTER TABLE deliveries ADD COLUMN done_at TEXT",
        ),
    ),
    Migration(
        version=3,
        name="inbox",
        statements=(
            # Contract 2 (core/inbox.py): every platform update/event, recorded before it is
            # acknowledged. ``leased_until`` NULL: never leased (due at once); ``done_at`` NULL:
            # not finished.
            """
            CREATE TABLE inbox (
                platform TEXT NOT NULL,
                delivery_id TEXT NOT NULL,
                payload TEXT NOT NULL,
                received_at TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                leased_until TEXT,
                done_at TEXT,
                PRIMARY KEY (platform, delivery_id)
            )
            """,
            # due(): only unfinished entries, oldest first; the partial index stays as small as
            # the backlog, however many finished entries wait for purge.
            "CREATE INDEX inbox_pending ON inbox (platform, received_at) WHERE done_at IS NULL",
            "CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL",
        ),
    ),
    Migration(
        version=4,
        name="user_names",
        statements=(
            # The current display name of each user seen (BaseStore.record_user_name), so that
            # admins can name users after a restart. Its own table, not a users column: a users
            # row holds admin overrides (put_user replaces it whole, and its absence means "no
            # overrides"); a name is only an observation. name_key is user_name_key(name).
            """
            CREATE TABLE user_names (
                user_id TEXT PRIMARY KEY,
                platform TEXT NOT NULL,
                name TEXT NOT NULL,
                name_key TEXT NOT NULL,
                seen_at TEXT NOT NULL
            )
            """,
            "CREATE INDEX user_names_lookup ON user_names (platform, name_key, user_id)",
        ),
    ),
)

SCHEMA_VERSION: int = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied version in ``conn``'s database (0 for a fresh file). Read-only."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def _check_not_newer(found: int, known: int) -> None:
    if found > known:
        raise StoreError(
            f"the database schema is version {found}, newer than this hybot supports "
            f"(version {known}); upgrade hybot or point it at another database"
        )


def apply_migrations(
    conn: sqlite3.Connection,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    *,
    now: datetime | None = None,
) -> int:
    """Bring ``conn``'s schema up to the last of ``migrations``; returns how many ran.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no open transaction;
    call it from the thread that owns the connection. Raises :class:`StoreError` when the
    file's schema is newer than ``migrations`` know; ``sqlite3.Error`` propagates (the caller
    translates it).
    """
    known = migrations[-1].version if migrations else 0
    current = schema_version(conn)
    _check_not_newer(current, known)
    if current == known:
        return 0
    applied_at = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    applied = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_VERSION_TABLE)
        # Re-read under the write lock: another process may have migrated meanwhile.
        current = schema_version(conn)
        _check_not_newer(current, known)
        for migration in migrations:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, applied_at),
            )
            applied += 1
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied
