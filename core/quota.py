"""Quota policy: which limits apply, in which period, and how a call is charged.

The store makes each step atomic and idempotent (see ``core.store.base``); this module
decides *what* to charge. Flow per model call (design §4):

1. :meth:`QuotaManager.reserve_chat` / :meth:`QuotaManager.reserve_image` reserve an estimate
   (prompt estimate + max output tokens, or one image) on every applicable counter at once,
   keyed by the delivery id, and return a decision: a :class:`Reservation`, or a
   :class:`QuotaRefusal` naming the limit, what remains and when it resets. Refusing is not an
   error here: the caller decides what to do (the chat turn retries with a smaller answer
   budget, then tells the user).
2. Settlement is one call: :meth:`QuotaManager.commit_turn` stores an answered exchange and
   charges its :class:`Charge` in one store transaction; :meth:`QuotaManager.settle` charges
   work with no turns (an image); :meth:`QuotaManager.refund` gives everything back (failure,
   refusal, cancel), recording in the ledger what the service billed when it billed anything.
3. A sweeper (:meth:`QuotaManager.sweep`) refunds reservations left open by a crash.

One module on purpose (a little over 600 lines): limits, periods, counter names and the
charging rules are one policy and read better side by side.

Per-user and per-role overrides: ``None`` falls through to the next layer (role, then the
defaults); :data:`UNLIMITED` (``core.config.UNLIMITED_OVERRIDE``, ``-1``) means "no limit" in
any layer (``/admin limit <user> <field> none``, or a role configured ``unlimited``).

Counters are named ``<subject>|<metric>|<period>``: subject ``user:<platform>:<id>`` or ``org``,
metric ``tokens``/``images``/``requests`` (and ``tokens_bonus``/``images_bonus`` for admin
top-ups), period ``d:YYYY-MM-DD``, ``m:YYYY-MM`` or ``min:YYYY-MM-DDTHH:MM`` in the configured
time zone (default Asia/Shanghai, where Tencent settles bills). The free image pack is the
counter ``org|free_images|pack``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from core.config import LIMIT_NAMES, UNLIMITED_OVERRIDE, LimitSet, ModelSpec, QuotaConfig
from core.errors import ConfigError, QuotaExceeded
from core.store.base import (
    BaseStore,
    LedgerEntry,
    Outcome,
    QuotaLine,
    ReserveOutcome,
    TurnRecord,
    UsageTotals,
    UserRecord,
    grant_outcome,
)
from core.subject import Subject

__all__ = [
    "FREE_PACK_COUNTER",
    "UNLIMITED",
    "Charge",
    "Periods",
    "QuotaManager",
    "QuotaRefusal",
    "QuotaStatus",
    "Reservation",
    "merge_limits",
    "next_reset",
    "periods",
    "usage_report",
]

FREE_PACK_COUNTER = "org|free_images|pack"

UNLIMITED: Final = UNLIMITED_OVERRIDE
"""A limit override meaning "no limit" (``None`` in an override means "not set here"): one
value for every layer, so a per-user ``none`` and a role's ``unlimited`` mean the same."""


@dataclass(frozen=True, slots=True)
class Periods:
    """Period keys for one instant in the quota time zone."""

    day: str
    month: str
    minute: str


# The keys of the latest minute asked for, per time zone: every quota operation needs them,
# and formatting three dates costs more than the rest of building a reservation's lines.
_LAST_PERIODS: dict[ZoneInfo, tuple[int, Periods]] = {}


def periods(now: datetime, tz: ZoneInfo) -> Periods:
    """Day, month and minute keys of ``now`` (aware) in ``tz``."""
    minute = int(now.timestamp() // 60)
    cached = _LAST_PERIODS.get(tz)
    if cached is not None and cached[0] == minute:
        return cached[1]  # UTC offsets are whole minutes, so the keys hold for the minute
    local = now.astimezone(tz)
    keys = Periods(
        day=local.strftime("%Y-%m-%d"),
        month=local.strftime("%Y-%m"),
        minute=local.strftime("%Y-%m-%dT%H:%M"),
    )
    offset = local.utcoffset()
    if offset is not None and not offset.seconds % 60:  # not for historic odd-second offsets
        _LAST_PERIODS[tz] = (minute, keys)
    return keys


def next_reset(now: datetime, tz: ZoneInfo, period: str) -> datetime:
    """When the ``period`` (``"day"``, ``"month"``, ``"minute"``) containing ``now`` ends,
    as an aware datetime in ``tz``."""
    local = now.astimezone(tz)
    if period == "minute":
        return local.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if period == "day":
        return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
    if period == "month":
        first = date(local.year + (local.month == 12), local.month % 12 + 1, 1)
        return datetime.combine(first, time(0), tzinfo=tz)
    raise ValueError(f"unknown period {period!r}")


def merge_limits(*layers: LimitSet) -> LimitSet:
    """Per field, the first layer that sets it (not ``None``) wins."""
    if len(layers) == 1:
        return layers[0]
    values: dict[str, int | None] = {}
    for name in LIMIT_NAMES:
        value = None
        for layer in layers:
            value = getattr(layer, name)
            if value is not None:
                break
        values[name] = value
    return LimitSet(**values)


def _unlimited(value: int | None) -> bool:
    """An override meaning "no limit" (:data:`UNLIMITED`), in any layer."""
    return value == UNLIMITED


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted reservation (what to settle or refund later)."""

    id: str
    user_id: str
    platform: str
    chat: str
    model: str
    kind: str  # "chat" or "image"
    day_counter: str
    month_counter: str
    org_day_counter: str
    org_month_counter: str
    free_pack: bool
    created_at: datetime
    period_day: str
    period_month: str


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """A reservation that did not fit: ``limit_name`` (``"tokens/day"``, ``"org/images/month"``,
    ``"requests/minute"``), the effective ``limit``, what ``remaining`` in it, when it
    ``resets_at`` (``None``: never by itself)."""

    limit_name: str
    limit: int
    remaining: int
    resets_at: datetime | None

    @property
    def metric(self) -> str:
        """``"tokens"``, ``"images"`` or ``"requests"``."""
        return self.limit_name.removeprefix("org/").split("/", 1)[0]

    def error(self, *, needed: int | None = None) -> QuotaExceeded:
        """The refusal as the error the i18n layer words for the user."""
        return QuotaExceeded(
            self.limit_name,
            limit=self.limit,
            remaining=self.remaining,
            resets_at=self.resets_at,
            needed=needed,
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call used: tokens in and out (chat) or images."""

    tokens_in: int = 0
    tokens_out: int = 0
    images: int = 0


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """One line of ``/quota``: ``limit`` ``None`` = unlimited."""

    name: str
    used: int
    limit: int | None
    resets_at: datetime | None

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)


_METRIC_LIMITS = {
    "tokens": ("tokens_per_day", "tokens_per_month"),
    "images": ("images_per_day", "images_per_month"),
}


class QuotaManager:
    """Applies :class:`QuotaConfig` through a :class:`BaseStore`.

    Limits for a user: per-user overrides (store) > role limits (config) > defaults. Admins are
    exempt when ``admins_exempt`` (their usage is still counted and billed in the ledger).
    """

    def __init__(
        self,
        *,
        config: QuotaConfig,
        store: BaseStore,
        image_model: str = "hy-image-v3",
    ) -> None:
        try:
            self._tz = ZoneInfo(config.timezone)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"unknown time zone {config.timezone!r}") from err
        self._config = config
        self._store = store
        self._roles = dict(config.roles)
        self._image_model = image_model
        self._free_expire = (
            date.fromisoformat(config.free_images_expire) if config.free_images_expire else None
        )

    @property
    def timezone(self) -> ZoneInfo:
        return self._tz

    def limits_for(self, user: UserRecord | None, *, is_admin: bool) -> LimitSet:
        """The effective limits of a user (``LimitSet()`` = unlimited for exempt admins)."""
        if is_admin and self._config.admins_exempt:
            return LimitSet()
        role = user.role if user else "user"
        layers = [user.limits] if user else []
        if role in self._roles:
            layers.append(self._roles[role])
        layers.append(self._config.defaults)
        merged = merge_limits(*layers)
        if not any(_unlimited(getattr(merged, name)) for name in LIMIT_NAMES):
            return merged
        return LimitSet(
            **{name: None if _unlimited(v := getattr(merged, name)) else v for name in LIMIT_NAMES}
        )

    # --- reserve ------------------------------------------------------------------------

    async def reserve_chat(
        self,
        subject: Subject,
        *,
        reservation_id: str,
        model: ModelSpec,
        tokens: int,
        now: datetime,
    ) -> Reservation | QuotaRefusal:
        """Reserve ``tokens`` (prompt estimate + max output) for a chat call."""
        return await self._reserve(
            "chat",
            subject,
            reservation_id=reservation_id,
            model=model.name,
            amount=tokens,
            cost=self._token_cost(model, tokens, 0),
            now=now,
        )

    async def reserve_image(
        self, subject: Subject, *, reservation_id: str, now: datetime
    ) -> Reservation | QuotaRefusal:
        """Reserve one image (the free pack first, then the organisation budget)."""
        return await self._reserve(
            "image",
            subject,
            reservation_id=reservation_id,
            model=self._image_model,
            amount=1,
            cost=self._config.image_price_cny,
            now=now,
        )

    async def _reserve(
        self,
        kind: str,
        subject: Subject,
        *,
        reservation_id: str,
        model: str,
        amount: int,
        cost: float,
        now: datetime,
    ) -> Reservation | QuotaRefusal:
        user_id, platform, chat = subject.user_id, subject.platform, subject.conversation
        per = periods(now, self._tz)
        metric = "tokens" if kind == "chat" else "images"
        limits = self.limits_for(subject.record, is_admin=subject.is_admin)
        org = self._config.org
        who = f"user:{user_id}"
        day_c = f"{who}|{metric}|d:{per.day}"
        month_c = f"{who}|{metric}|m:{per.month}"
        org_day_c = f"org|{metric}|d:{per.day}"
        org_month_c = f"org|{metric}|m:{per.month}"
        day_name, month_name = _METRIC_LIMITS[metric]
        user_lines = [
            QuotaLine(
                f"{who}|requests|min:{per.minute}",
                1,
                limits.requests_per_minute,
                refundable=False,
            ),
            QuotaLine(
                day_c,
                amount,
                getattr(limits, day_name),
                bonus_counter=f"{who}|{metric}_bonus|d:{per.day}",
            ),
            QuotaLine(
                month_c,
                amount,
                getattr(limits, month_name),
                bonus_counter=f"{who}|{metric}_bonus|m:{per.month}",
            ),
        ]
        org_lines = [
            QuotaLine(org_day_c, amount, getattr(org, day_name)),
            QuotaLine(org_month_c, amount, getattr(org, month_name)),
        ]
        meta = LedgerEntry(
            reservation_id=reservation_id,
            user_id=user_id,
            platform=platform,
            chat=chat,
            model=model,
            tokens_in=amount if kind == "chat" else 0,
            tokens_out=0,
            images=amount if kind == "image" else 0,
            cost_cny=cost,
            outcome=Outcome.RESERVED,
            created_at=now,
            period_day=per.day,
            period_month=per.month,
        )
        reservation = Reservation(
            id=reservation_id,
            user_id=user_id,
            platform=platform,
            chat=chat,
            model=model,
            kind=kind,
            day_counter=day_c,
            month_counter=month_c,
            org_day_counter=org_day_c,
            org_month_counter=org_month_c,
            free_pack=False,
            created_at=now,
            period_day=per.day,
            period_month=per.month,
        )
        if kind == "image" and self._free_pack_open(now):
            # The free pack is consumed first and replaces the org image budget while it lasts.
            lines = [*user_lines, QuotaLine(FREE_PACK_COUNTER, 1, self._config.free_images)]
            outcome = await self._store.reserve(reservation_id, lines, now=now, meta=meta)
            if outcome.granted:
                return replace(reservation, free_pack=True)
            if outcome.denied_counter != FREE_PACK_COUNTER:
                return self._refusal(outcome, now)
        outcome = await self._store.reserve(
            reservation_id, [*user_lines, *org_lines], now=now, meta=meta
        )
        return reservation if outcome.granted else self._refusal(outcome, now)

    def _free_pack_open(self, now: datetime) -> bool:
        if self._config.free_images <= 0:
            return False
        if self._free_expire is None:
            return True
        return now.astimezone(self._tz).date() <= self._free_expire

    def _refusal(self, outcome: ReserveOutcome, now: datetime) -> QuotaRefusal:
        used, limit = outcome.used, outcome.limit
        subject, metric, period = outcome.denied_counter.split("|", 2)
        prefix = "org/" if subject == "org" else ""
        if period.startswith("min:"):
            name, resets = f"{prefix}requests/minute", next_reset(now, self._tz, "minute")
        elif period.startswith("d:"):
            name, resets = f"{prefix}{metric}/day", next_reset(now, self._tz, "day")
        elif period.startswith("m:"):
            name, resets = f"{prefix}{metric}/month", next_reset(now, self._tz, "month")
        else:
            name, resets = f"{prefix}{metric}", None
        return QuotaRefusal(name, limit=limit, remaining=max(0, limit - used), resets_at=resets)

    # --- settle / refund ----------------------------------------------------------------

    async def settle(
        self,
        reservation: Reservation,
        charge: Charge,
        *,
        model: ModelSpec | None = None,
        outcome: str = Outcome.OK,
    ) -> bool:
        """Charge ``charge`` (refunding the rest of the estimate) and write the ledger row, for
        work that stores no turns (an image). ``False`` if the reservation was no longer open."""
        actual, entry = self._settlement(reservation, charge, model=model, outcome=outcome)
        return await self._store.settle(reservation.id, actual, entry=entry)

    async def commit_turn(
        self,
        reservation: Reservation,
        charge: Charge,
        *,
        model: ModelSpec,
        conversation: str,
        epoch: int,
        turns: Sequence[TurnRecord],
        active_at: datetime,
        delivery: tuple[str, str],
    ) -> bool:
        """Settle a chat turn in one store transaction: append ``turns`` to ``conversation``'s
        ``epoch``, charge ``charge`` on the reservation's counters, write the ledger row and
        mark ``delivery`` (``(platform, delivery_id)``) finished. No answer is stored without
        being billed, and none is billed without being stored (``BaseStore.finish_turn``)."""
        actual, entry = self._settlement(reservation, charge, model=model, outcome=Outcome.OK)
        return await self._store.finish_turn(
            conversation,
            epoch,
            turns,
            active_at=active_at,
            reservation_id=reservation.id,
            actual=actual,
            entry=entry,
            delivery=delivery,
        )

    def _settlement(
        self,
        reservation: Reservation,
        charge: Charge,
        *,
        model: ModelSpec | None,
        outcome: str,
    ) -> tuple[dict[str, int], LedgerEntry]:
        # The per-counter amounts are the store's settle format; they never leave this class.
        if reservation.kind == "chat":
            amount = charge.tokens_in + charge.tokens_out
        else:
            amount = charge.images
        actual = {
            reservation.day_counter: amount,
            reservation.month_counter: amount,
        }
        if reservation.free_pack:
            actual[FREE_PACK_COUNTER] = amount
            cost = 0.0
        else:
            actual[reservation.org_day_counter] = amount
            actual[reservation.org_month_counter] = amount
            cost = self._cost(reservation, charge, model)
        return actual, self._entry(reservation, charge, cost=cost, outcome=outcome)

    def _cost(self, reservation: Reservation, charge: Charge, model: ModelSpec | None) -> float:
        if reservation.kind == "chat":
            return self._token_cost(model, charge.tokens_in, charge.tokens_out)
        return charge.images * self._config.image_price_cny

    async def refund(
        self,
        reservation: Reservation,
        *,
        outcome: str,
        billed: Charge | None = None,
        model: ModelSpec | None = None,
    ) -> bool:
        """Give the whole reservation back (failure, refusal, cancel, a withdrawn answer).

        The user's counters are restored. The ledger row records ``billed``, what the service
        used and bills the account for even though the user is not charged (a withdrawn
        ``sensitive`` answer), at its estimated cost; without it the row is at zero."""
        used = billed or Charge()
        cost = (
            0.0 if billed is None or reservation.free_pack else self._cost(reservation, used, model)
        )
        entry = self._entry(reservation, used, cost=cost, outcome=outcome)
        return await self._store.refund(reservation.id, entry=entry)

    async def sweep(self, *, now: datetime) -> int:
        """Refund reservations older than the configured TTL (left by a crash)."""
        older = now - timedelta(seconds=self._config.reservation_ttl_seconds)
        return await self._store.sweep_reservations(older_than=older, now=now)

    @staticmethod
    def _entry(r: Reservation, charge: Charge, *, cost: float, outcome: str) -> LedgerEntry:
        return LedgerEntry(
            reservation_id=r.id,
            user_id=r.user_id,
            platform=r.platform,
            chat=r.chat,
            model=r.model,
            tokens_in=charge.tokens_in,
            tokens_out=charge.tokens_out,
            images=charge.images,
            cost_cny=round(cost, 6),
            outcome=outcome,
            created_at=r.created_at,
            period_day=r.period_day,
            period_month=r.period_month,
        )

    @staticmethod
    def _token_cost(model: ModelSpec | None, tokens_in: int, tokens_out: int) -> float:
        if model is None:
            return 0.0
        return tokens_in / 1000 * model.price_in_per_1k + tokens_out / 1000 * model.price_out_per_1k

    # --- status and admin ---------------------------------------------------------------

    async def status(self, subject_: Subject, *, now: datetime) -> list[QuotaStatus]:
        """The user's limits with what is used and when each resets (for ``/quota``)."""
        per = periods(now, self._tz)
        limits = self.limits_for(subject_.record, is_admin=subject_.is_admin)
        subject = f"user:{subject_.user_id}"
        rows: list[tuple[str, str, int | None, str, str]] = []
        for metric in ("tokens", "images"):
            day_name, month_name = _METRIC_LIMITS[metric]
            rows.append((f"{metric}/day", f"{subject}|{metric}|d:{per.day}",
                         getattr(limits, day_name), f"{subject}|{metric}_bonus|d:{per.day}",
                         "day"))  # fmt: skip
            rows.append((f"{metric}/month", f"{subject}|{metric}|m:{per.month}",
                         getattr(limits, month_name),
                         f"{subject}|{metric}_bonus|m:{per.month}", "month"))  # fmt: skip
        rows.append(("requests/minute", f"{subject}|requests|min:{per.minute}",
                     limits.requests_per_minute, "", "minute"))  # fmt: skip
        names = [r[1] for r in rows] + [r[3] for r in rows if r[3]] + [FREE_PACK_COUNTER]
        values = await self._store.counters(names)
        out = []
        for name, counter, limit, bonus, period in rows:
            extra = values.get(bonus, 0) if bonus else 0
            out.append(
                QuotaStatus(
                    name=name,
                    used=values.get(counter, 0),
                    limit=None if limit is None else limit + extra,
                    resets_at=next_reset(now, self._tz, period),
                )
            )
        if self._config.free_images > 0:
            used = values.get(FREE_PACK_COUNTER, 0)
            out.append(QuotaStatus("org/free images", used, self._config.free_images, None))
        return out

    async def top_up(self, *, user_id: str, metric: str, amount: int, now: datetime) -> None:
        """Admin grant: raise the user's day and month limits for ``metric`` by ``amount`` for
        the current periods only (bonus counters; the ledger records the grant at zero cost)."""
        if metric not in _METRIC_LIMITS:
            raise ValueError(f"unknown metric {metric!r}")
        per = periods(now, self._tz)
        subject = f"user:{user_id}"
        rid = f"grant:{uuid.uuid4()}"
        lines = [
            QuotaLine(f"{subject}|{metric}_bonus|d:{per.day}", amount, None, refundable=False),
            QuotaLine(f"{subject}|{metric}_bonus|m:{per.month}", amount, None, refundable=False),
        ]
        meta = LedgerEntry(rid, user_id, "admin", "", "grant", 0, 0, 0, 0.0, Outcome.GRANT, now,
                           per.day, per.month)  # fmt: skip
        await self._store.reserve(rid, lines, now=now, meta=meta)
        await self._store.settle(
            rid, {}, entry=replace(meta, outcome=grant_outcome(metric, amount))
        )


async def usage_report(
    store: BaseStore,
    *,
    period: str,
    date: str | None,
    user: str | None,
    group_by: str,
    timezone: str,
    now: datetime,
) -> list[UsageTotals]:
    """Totals for operators (``hybot usage report``) and ``/admin report``.

    ``period`` ``"day"`` or ``"month"``; ``date`` ``YYYY-MM-DD`` / ``YYYY-MM`` (default: the
    current one in ``timezone``); ``group_by`` ``"user"`` or ``"day"``.
    """
    if period not in ("day", "month"):
        raise ValueError("period must be 'day' or 'month'")
    if group_by not in ("user", "day"):
        raise ValueError("group_by must be 'user' or 'day'")
    per = periods(now, ZoneInfo(timezone))
    if period == "day":
        return await store.usage_totals(group_by=group_by, user_id=user, day=date or per.day)
    return await store.usage_totals(group_by=group_by, user_id=user, month=date or per.month)
