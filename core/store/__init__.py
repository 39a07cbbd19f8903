"""Storage: the :class:`BaseStore` contract, its records, and the implementations.

Who calls: the composition root (``bots``) picks a store with :func:`open_store` (or
builds :class:`SQLiteStore` directly) and hands it to the core, which only sees
:class:`BaseStore`.
"""

from __future__ import annotations

from core.config import parse_database_url
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


def open_store(url: str, *, busy_timeout_ms: int = 10_000) -> BaseStore:
    """Build (not yet open) the store a URL names; use it as ``async with open_store(url)``.

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``sqlite:///:memory:`` (or ``sqlite://``) for a private in-memory database, and a plain
    file path, as :func:`core.config.parse_database_url` (the one parser) reads them.
    ``postgresql://…`` raises :class:`~core.errors.ConfigError` (not yet supported); so does
    any other scheme or an empty URL. Error messages never echo the URL (it may hold a
    password).
    ``busy_timeout_ms`` is the store's busy budget: how long one call waits for a database
    locked by another connection before raising :class:`~core.errors.StoreBusy`.
    """
    location = parse_database_url(url)  # the one parser; the settings validate with it too
    return SQLiteStore(path=location.path, busy_timeout_ms=busy_timeout_ms)
