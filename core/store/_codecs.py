"""Values to and from SQLite rows: the SQLite store's codecs (pure functions, no I/O).

Who calls: :mod:`core.store.sqlite` (to build bound parameters before any I/O) and
:mod:`core.store._queries` (to turn rows into records on the writer thread).

- Timestamps are stored as fixed-width ISO-8601 UTC text (``2026-11-28T10:00:00.000000+00:00``),
  so they compare correctly as text, and come back as timezone-aware UTC ``datetime`` s. A naive
  ``datetime`` raises ``ValueError`` (a caller bug, caught before any I/O).
- A reservation's lines and ledger meta are JSON in the format ``dataclasses.asdict`` gave, so
  reservations written by older versions still settle.
- Conversions are written out field by field (no ``asdict``): they run on every reservation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from core.config import LIMIT_NAMES, LimitSet
from core.store.base import ChannelPolicy, ImageJobRecord, LedgerEntry, QuotaLine, UserRecord

__all__ = [
    "claim_params",
    "dt",
    "entry_from_json",
    "entry_from_row",
    "entry_params",
    "entry_to_json",
    "finish_delivery_params",
    "job_from_row",
    "job_params",
    "limits_from_json",
    "limits_to_json",
    "lines_to_json",
    "opt_bool",
    "opt_dt",
    "opt_int",
    "policy_from_row",
    "policy_params",
    "refundable_totals",
    "ts",
    "user_from_row",
    "user_params",
]

# Field names read once: ``dataclasses.fields()`` and ``asdict()`` are slow (``asdict`` deep-copies
# recursively), and these conversions run on every reservation and user lookup.
_LEDGER_FIELDS = frozenset(f.name for f in fields(LedgerEntry))

# json.dumps(..., ensure_ascii=False) builds a new encoder on every call; one shared encoder
# (stateless, thread-safe) produces the same text.
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def ts(value: datetime) -> str:
    """Fixed-width UTC ISO-8601 text (sorts like the instants it names)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("the store needs timezone-aware datetimes; got a naive one")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def dt(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    # Stored text always ends in +00:00, which parses to the UTC singleton: skip the conversion.
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def claim_params(
    platform: str,
    delivery_id: str,
    now: datetime,
    ttl_seconds: float,
    lease_seconds: float | None,
) -> dict[str, Any]:
    """Bound parameters for :data:`CLAIM_SQL` (validates before any I/O)."""
    cutoff: str | None = None
    if lease_seconds is not None:
        # ``not >`` also rejects NaN. A zero or negative lease would let every concurrent
        # taker win (each one's cut-off would reach past the others' fresh claimed_at).
        if isinstance(lease_seconds, bool) or not lease_seconds > 0:
            raise ValueError("lease_seconds must be a positive number of seconds")
        try:
            cutoff = ts(now - timedelta(seconds=lease_seconds))
        except OverflowError:
            ts(now)  # still reject a naive ``now``
            cutoff = None  # a lease longer than the calendar never runs out
    return {
        "platform": platform,
        "delivery_id": delivery_id,
        "now": ts(now),
        "expires_at": ts(now + timedelta(seconds=ttl_seconds)),
        "lease_cutoff": cutoff,
    }


def finish_delivery_params(platform: str, delivery_id: str, now: datetime) -> dict[str, Any]:
    return {"platform": platform, "delivery_id": delivery_id, "done_at": ts(now)}


def opt_dt(text: str | None) -> datetime | None:
    return None if text is None else dt(text)


def opt_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def opt_int(value: bool | None) -> int | None:
    return None if value is None else int(value)


def entry_params(reservation_id: str, entry: LedgerEntry) -> tuple[Any, ...]:
    return (
        reservation_id,
        entry.user_id,
        entry.platform,
        entry.chat,
        entry.model,
        entry.tokens_in,
        entry.tokens_out,
        entry.images,
        entry.cost_cny,
        entry.outcome,
        ts(entry.created_at),
        entry.period_day,
        entry.period_month,
    )


def entry_from_row(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(
        reservation_id=row[0],
        user_id=row[1],
        platform=row[2],
        chat=row[3],
        model=row[4],
        tokens_in=row[5],
        tokens_out=row[6],
        images=row[7],
        cost_cny=row[8],
        outcome=row[9],
        created_at=dt(row[10]),
        period_day=row[11],
        period_month=row[12],
    )


def entry_to_json(entry: LedgerEntry) -> str:
    # The same object asdict() would give (same keys, same order), built directly.
    data = {
        "reservation_id": entry.reservation_id,
        "user_id": entry.user_id,
        "platform": entry.platform,
        "chat": entry.chat,
        "model": entry.model,
        "tokens_in": entry.tokens_in,
        "tokens_out": entry.tokens_out,
        "images": entry.images,
        "cost_cny": entry.cost_cny,
        "outcome": entry.outcome,
        "created_at": ts(entry.created_at),
        "period_day": entry.period_day,
        "period_month": entry.period_month,
    }
    return _to_json(data)


def entry_from_json(text: str) -> LedgerEntry:
    data = json.loads(text)
    values = {k: v for k, v in data.items() if k in _LEDGER_FIELDS}
    values["created_at"] = dt(values["created_at"])
    return LedgerEntry(**values)


def lines_to_json(lines: Sequence[QuotaLine]) -> str:
    # Stored for settle/refund/sweep (only counter, amount and refundable are read back);
    # the format is what asdict() gave, so reservations written by older versions still settle.
    return _to_json(
        [
            {
                "counter": line.counter,
                "amount": line.amount,
                "limit": line.limit,
                "refundable": line.refundable,
                "bonus_counter": line.bonus_counter,
            }
            for line in lines
        ]
    )


def refundable_totals(lines_json: str) -> dict[str, int]:
    """Reserved amount per refundable counter (a counter may appear in several lines)."""
    totals: dict[str, int] = {}
    for item in json.loads(lines_json):
        if item.get("refundable", True):
            totals[item["counter"]] = totals.get(item["counter"], 0) + int(item["amount"])
    return totals


def limits_to_json(limits: LimitSet) -> str:
    return json.dumps({name: getattr(limits, name) for name in LIMIT_NAMES})


def limits_from_json(text: str) -> LimitSet:
    data = json.loads(text) if text else {}
    return LimitSet(**{name: data.get(name) for name in LIMIT_NAMES})


def user_from_row(row: Sequence[Any]) -> UserRecord:
    return UserRecord(
        user_id=row[0],
        role=row[1],
        language=row[2],
        access=row[3],
        limits=limits_from_json(row[4]),
    )


def policy_from_row(row: Sequence[Any]) -> ChannelPolicy:
    return ChannelPolicy(
        channel=row[0],
        enabled=opt_bool(row[1]),
        mention_only=opt_bool(row[2]),
        images_allowed=opt_bool(row[3]),
        model=row[4],
        persona=row[5],
    )


def job_from_row(row: Sequence[Any]) -> ImageJobRecord:
    return ImageJobRecord(
        job_id=row[0],
        user_id=row[1],
        conversation=row[2],
        prompt=row[3],
        size=row[4],
        status=row[5],
        created_at=dt(row[6]),
        finished_at=opt_dt(row[7]),
        result_path=row[8],
        error=row[9],
    )


def job_params(job: ImageJobRecord) -> tuple[Any, ...]:
    """Bound parameters for an image job row, in ``IMAGE_JOB_COLUMNS`` order."""
    return (
        job.job_id,
        job.user_id,
        job.conversation,
        job.prompt,
        job.size,
        job.status,
        ts(job.created_at),
        None if job.finished_at is None else ts(job.finished_at),
        job.result_path,
        job.error,
    )


def user_params(record: UserRecord) -> tuple[Any, ...]:
    """Bound parameters for a users row."""
    return (
        record.user_id,
        record.role,
        record.language,
        record.access,
        limits_to_json(record.limits),
    )


def policy_params(policy: ChannelPolicy) -> tuple[Any, ...]:
    """Bound parameters for a channel_policies row (tri-state booleans as 0/1/NULL)."""
    return (
        policy.channel,
        opt_int(policy.enabled),
        opt_int(policy.mention_only),
        opt_int(policy.images_allowed),
        policy.model,
        policy.persona,
    )
