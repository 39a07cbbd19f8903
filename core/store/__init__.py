"""Storage: the :class:`BaseStore` contract, its records, and the implementations.

Who calls: the composition root (``bots``) picks a store with :func:`open_store` (or
builds :class:`SQLiteStore` directly) and hands it to the core, which only sees
:class:`BaseStore`.
"""

from __future__ import annotations

from core.errors import ConfigError
from core.store.base import (
    SWEPT_JOB_ERROR,
    Access,
    BaseStore,
    ChannelPolicy,
    ConversationState,
    CounterValue,
    DeliveryStart,
    ImageJobRecord,
    ImageJobStatus,
    InboxEntry,
    LedgerEntry,
    Outcome,
    QuotaLine,
    ReservationState,
    ReserveOutcome,
    TurnRecord,
    UsageTotals,
    UserRecord,
    failed_outcome,
    grant_outcome,
    user_name_key,
)
from core.store.sqlite import SQLiteStore

__all__ = [
    "SWEPT_JOB_ERROR",
    "Access",
    "BaseStore",
    "ChannelPolicy",
    "ConversationState",
    "CounterValue",
    "DeliveryStart",
    "ImageJobRecord",
    "ImageJobStatus",
    "InboxEntry",
    "LedgerEntry",
    "Outcome",
    "QuotaLine",
    "ReservationState",
    "ReserveOutcome",
    "SQLiteStore",
    "TurnRecord",
    "UsageTotals",
    "UserRecord",
    "failed_outcome",
    "grant_outcome",
    "open_store",
    "user_name_key",
]

_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg")


def open_store(url: str, *, busy_timeout_ms: int = 10_000) -> BaseStore:
    """Build (not yet open) the store a URL names; use it as ``async with open_store(url)``.

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``sqlite:///:memory:`` (or ``sqlite://``) for a private in-memory database, and a plain
    file path. ``postgresql://…`` raises :class:`ConfigError` (not yet supported); so does any
    other scheme or an empty URL. Error messages never echo the URL (it may hold a password).
    ``busy_timeout_ms`` is the store's busy budget: how long one call waits for a database
    locked by another connection before raising :class:`~core.errors.StoreBusy`.
    """
    text = url.strip()
    if not text:
        raise ConfigError("the store URL is empty")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return SQLiteStore(path=text, busy_timeout_ms=busy_timeout_ms)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if rest in ("", "/"):
            return SQLiteStore(path=":memory:", busy_timeout_ms=busy_timeout_ms)
        if not rest.startswith("/"):
            # sqlite://host/... has no meaning for a local file.
            raise ConfigError("SQLite store URLs look like sqlite:///path/to/file.db")
        path = rest[1:]
        if not path:
            raise ConfigError("the SQLite store URL has no file path")
        return SQLiteStore(path=path, busy_timeout_ms=busy_timeout_ms)
    if scheme in _POSTGRES_SCHEMES:
        raise ConfigError("PostgreSQL stores are not yet supported; use a sqlite:/// URL")
    raise ConfigError(f"unknown store URL scheme {scheme!r}; use sqlite:///path/to/file.db")
