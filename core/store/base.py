"""The storage contract every store implements (SQLite now, PostgreSQL later).

The core talks only to :class:`BaseStore`. Implementations do I/O; the *policy* (which limits
apply, what a period is, how much to reserve) lives in the core (``quota.py``), which hands the
store fully computed :class:`QuotaLine` s. The store guarantees atomicity and idempotency:

- :meth:`BaseStore.claim_delivery` is insert-if-absent: exactly one caller gets ``True`` for a
  given ``(platform, delivery_id)`` while the claim has not expired, across tasks, processes and
  (for a networked store) replicas. Claims are also *leases*: a claim whose work never finished
  (:meth:`BaseStore.finish_delivery` never called: the process died mid-turn) may be taken over
  by a caller that passes ``lease_seconds`` once that long has passed since it was claimed, again
  by exactly one caller. A finished claim is only taken over after its TTL.
- :meth:`BaseStore.reserve` is all-or-nothing over its lines and idempotent per
  ``reservation_id``: a second call with the same id returns the first call's outcome and never
  charges again.
- :meth:`BaseStore.settle` / :meth:`BaseStore.refund` act once per reservation (the first one
  wins; later calls return ``False``) and write exactly one ledger row in the same transaction,
  so ledger totals always equal the counters.
- :meth:`BaseStore.conversation_lock` serialises work on one conversation key in FIFO order
  (SQLite: in-process; PostgreSQL: advisory locks across replicas).

Batched operations for the hot path (one round trip each in an optimised store; the defaults
here compose the single-step methods, so every store supports them unchanged):

- :meth:`BaseStore.begin_delivery`: claim a delivery and, only if this call claimed it, read
  the sender's :class:`UserRecord` and the channel's :class:`ChannelPolicy`.
- :meth:`BaseStore.load_context`: the conversation state (created if absent) and the newest
  turns of its current epoch.
- :meth:`BaseStore.finish_turn`: append an answered exchange, settle its reservation and
  optionally mark its delivery finished (one transaction in an optimised store; the default is
  three steps, turns first).
- :attr:`QuotaLine.bonus_counter` lets :meth:`BaseStore.reserve` raise a line's limit by another
  counter's value inside the same atomic check, so no separate read precedes a reservation.
- :meth:`BaseStore.checkpoint`: housekeeping the core's sweeper calls periodically (SQLite:
  a passive WAL checkpoint; default: nothing).

All methods are coroutines and never block the event loop. All timestamps are timezone-aware UTC
``datetime`` s. Stores are async context managers: ``async with SQLiteStore(path=...) as store``.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Literal, Self

from core.config import LimitSet
from core.types import Role

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
    "TurnRecord",
    "UsageTotals",
    "UserRecord",
    "failed_outcome",
    "grant_outcome",
    "user_name_key",
]

# --- record states (closed sets: mypy rejects a misspelt state) ---------------------------

ImageJobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
"""An image job's :attr:`ImageJobRecord.status`: ``queued`` (waiting for a slot), ``running``
(the model is drawing), then one of ``done``, ``failed`` (the ``error`` says why; the sweeper
also ends abandoned jobs so) or ``cancelled`` (``/cancel`` or the turn was cancelled)."""

ReservationState = Literal["reserved", "settled", "refunded", "swept"]
"""A quota reservation's state in the store: ``reserved`` (open) until exactly one of
:meth:`BaseStore.settle` (``settled``), :meth:`BaseStore.refund` (``refunded``) or
:meth:`BaseStore.sweep_reservations` (``swept``) closes it."""

Access = Literal["allow", "deny", ""]
"""A user's stored :attr:`UserRecord.access`: ``""`` means not set (configuration decides)."""


class Outcome(StrEnum):
    """The fixed values and prefixes of :attr:`LedgerEntry.outcome`.

    An outcome is one of the plain values, or a prefixed one built by a helper:
    ``failed:<kind>`` (:func:`failed_outcome`, ``kind`` a :attr:`HybotError.kind
    <core.errors.HybotError.kind>` or a core reason such as ``busy``) and
    ``grant:<metric>:<amount>`` (:func:`grant_outcome`, an admin top-up, not a model call).
    The field stays a ``str`` because of the prefixed forms; compare against the members.
    """

    OK = "ok"
    """Answered and charged."""
    RESERVED = "reserved"
    """Only in a reservation's ``meta`` (never a ledger row's final outcome)."""
    REFUNDED = "refunded"
    SWEPT = "swept"
    """Refunded by the sweeper: the process that reserved it stopped."""
    CANCELLED = "cancelled"
    FAILED = "failed"
    """Prefix of ``failed:<kind>``."""
    GRANT = "grant"
    """Prefix of ``grant:<metric>:<amount>``."""


def failed_outcome(kind: str) -> str:
    """The ledger outcome of a call that failed with ``kind``: ``"failed:<kind>"``."""
    return f"{Outcome.FAILED}:{kind}"


def grant_outcome(metric: str, amount: int) -> str:
    """The ledger outcome of an admin top-up: ``"grant:<metric>:<amount>"``."""
    return f"{Outcome.GRANT}:{metric}:{amount}"


@dataclass(frozen=True, slots=True)
class ConversationState:
    """Per-conversation state. ``epoch`` increases on /reset and idle expiry; only turns of the
    current epoch form the context (older ones stay for audit until /forget)."""

    key: str
    epoch: int
    persona: str | None
    last_active_at: datetime | None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One stored turn. ``user_id`` is the human the exchange belongs to (set on both the user
    turn and the assistant answer, so /forget removes both). ``tokens`` is the turn's token
    count (real when known, else the 1.8/3 estimate)."""

    role: Role
    content: str
    user_id: str
    tokens: int
    created_at: datetime
    delivery_id: str = ""
    id: int = 0


@dataclass(frozen=True, slots=True)
class QuotaLine:
    """One counter a reservation touches.

    ``counter`` is the full counter key computed by the core, e.g.
    ``"user:telegram:42|tokens|d:2026-11-28"`` or ``"org|images|m:2026-11"``. ``amount`` is what
    to reserve; ``limit`` the limit to enforce (``None`` = count but never deny).
    ``refundable=False`` counters (request-rate counters) keep their amount on settle/refund.

    ``bonus_counter``, when set and ``limit`` is not ``None``, names a counter whose current
    ``used`` (0 when absent) is added to ``limit``: the effective limit is
    ``limit + used(bonus_counter)``, read inside the same atomic check as the charge (admin
    top-ups live in such counters). It is never charged or refunded by this line.
    """

    counter: str
    amount: int
    limit: int | None
    refundable: bool = True
    bonus_counter: str = ""


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    """Result of :meth:`BaseStore.reserve`.

    ``granted``: the lines were charged (by this call or, when ``duplicate``, by an earlier call
    with the same id). On denial, ``denied_counter`` names the first line that did not fit and
    ``used``/``limit`` are that counter's figures at the time (``limit`` is the effective limit,
    bonus included, see :attr:`QuotaLine.bonus_counter`).
    """

    granted: bool
    duplicate: bool = False
    denied_counter: str = ""
    used: int = 0
    limit: int = 0


@dataclass(frozen=True, slots=True)
class CounterValue:
    counter: str
    used: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One model call, as billed. ``outcome``: an :class:`Outcome` (``ok``, ``refunded``,
    ``swept``, ``cancelled``) or a prefixed one (``failed:<kind>``, ``grant:<metric>:<amount>``;
    see :class:`Outcome`). ``period_day`` / ``period_month`` are in the quota time zone."""

    reservation_id: str
    user_id: str
    platform: str
    chat: str
    model: str
    tokens_in: int
    tokens_out: int
    images: int
    cost_cny: float
    outcome: str
    created_at: datetime
    period_day: str
    period_month: str


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Aggregated ledger rows for a report (``key`` is the grouping value: user or day)."""

    key: str
    calls: int
    tokens_in: int
    tokens_out: int
    images: int
    cost_cny: float


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A known user. ``user_id`` is ``"<platform>:<id>"``. ``limits`` are per-user overrides set
    by admins (fields ``None`` fall through to role/defaults). ``access`` is ``"allow"``,
    ``"deny"`` or ``""`` (not set: configuration decides). ``role`` is an open set (``"user"``,
    ``"admin"`` or any role name the configuration gives limits to), so it stays a ``str``."""

    user_id: str
    role: str = "user"
    language: str = ""
    access: Access = ""
    limits: LimitSet = field(default_factory=LimitSet)


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """Per-channel policy set by admins in chat. ``None`` fields fall through to defaults."""

    channel: str
    enabled: bool | None = None
    mention_only: bool | None = None
    images_allowed: bool | None = None
    model: str | None = None
    persona: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryStart:
    """Result of :meth:`BaseStore.begin_delivery`.

    ``claimed``: this call owns the delivery. Only then are ``user`` (``None`` = unknown user)
    and ``policy`` (``None`` = no policy stored) read; for a lost claim both stay ``None``.
    """

    claimed: bool
    user: UserRecord | None = None
    policy: ChannelPolicy | None = None


@dataclass(frozen=True, slots=True)
class ImageJobRecord:
    """An image job (``status``: see :data:`ImageJobStatus`)."""

    job_id: str
    user_id: str
    conversation: str
    prompt: str
    size: str
    status: ImageJobStatus
    created_at: datetime
    finished_at: datetime | None = None
    result_path: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One recorded platform update/event (Contract 2, :mod:`core.inbox`).

    ``payload`` is the raw update/event as JSON text, exactly as received; ``attempts`` counts
    the leases handed out so far (1 after :meth:`BaseStore.inbox_record`, +1 per re-drive);
    ``received_at`` is when it was first recorded (aware UTC).
    """

    platform: str
    delivery_id: str
    payload: str
    attempts: int
    received_at: datetime


def user_name_key(name: str) -> str:
    """The form in which user names are compared (:meth:`BaseStore.find_users`): surrounding
    whitespace and one leading ``@`` removed, then Unicode case-folded (``"@Alice "`` and
    ``"alice"`` name the same user). ``""`` means no name."""
    return name.strip().removeprefix("@").strip().casefold()


#: The ``error`` of an image job ended by :meth:`BaseStore.sweep_reservations`.
SWEPT_JOB_ERROR = "expired: left unfinished by a process that stopped"


class BaseStore(abc.ABC):
    """Abstract store. See the module docstring for the guarantees every implementation keeps."""

    # --- lifecycle ----------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and run pending migrations. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- deliveries ---------------------------------------------------------------------

    @abc.abstractmethod
    async def claim_delivery(
        self,
        platform: str,
        delivery_id: str,
        *,
        now: datetime,
        ttl_seconds: float,
        lease_seconds: float | None = None,
    ) -> bool:
        """Claim ``(platform, delivery_id)``; ``True`` when this call owns it.

        Who calls: the core (through :meth:`begin_delivery`) before doing anything for a
        delivery, so that a re-delivered id is never processed (or charged) twice.

        The claim is taken, with ``claimed_at = now`` and expiry ``now + ttl_seconds``, when
        no claim exists, when the existing one has expired (``expires_at <= now``), or, only
        if ``lease_seconds`` is given, when the existing one is not finished
        (:meth:`finish_delivery`) and was claimed at or before ``now - lease_seconds`` (its
        lease has run out: its owner presumably died mid-turn). A taken-over claim is a fresh
        one: new ``claimed_at``, new expiry, not finished. Whatever the reason, exactly one of
        several concurrent callers gets ``True`` (one conditional statement or one write
        transaction). The store cannot tell a dead owner from a slow one, so the lease must
        exceed the longest a live owner may take: a slow owner is not stopped, and the new one
        repeats its work (the user may get two answers). ``lease_seconds=None``
        (the default) is the pre-lease behaviour: unfinished claims wait for their TTL.
        ``lease_seconds`` that is not a positive number raises ``ValueError`` before any I/O.
        """

    @abc.abstractmethod
    async def finish_delivery(self, platform: str, delivery_id: str, *, now: datetime) -> None:
        """Mark the claim of ``(platform, delivery_id)`` finished (``done_at = now``).

        Who calls: the core, once it is done with a delivery (an answer stored, a command
        answered, a message ignored), so the lease rule of :meth:`claim_delivery` never hands
        it out again; it still expires after its TTL as before. Idempotent (the first finish
        time is kept); an absent (never claimed or purged) claim is left absent.
        """

    @abc.abstractmethod
    async def release_delivery(self, platform: str, delivery_id: str) -> bool:
        """Give up an unfinished claim of ``(platform, delivery_id)``, so that the next
        :meth:`claim_delivery` of it is granted at once instead of after the lease; ``True``
        when this call released one. A finished claim (:meth:`finish_delivery`) and an absent
        one are left as they are (``False``); a second call is a no-op (idempotent).

        Who calls: the core, as the owner of the claim, when a turn stopped with nothing of it
        charged or stored (the database stayed busy), so that the platform's re-delivery is
        answered without waiting for the lease. The store cannot tell the owner from a caller
        whose lease ran out and was taken over, so only the owner calls it, within its lease.
        """

    @abc.abstractmethod
    async def purge_deliveries(self, *, now: datetime) -> int:
        """Delete expired claims (finished or not); returns how many."""

    async def begin_delivery(
        self,
        platform: str,
        delivery_id: str,
        *,
        now: datetime,
        ttl_seconds: float,
        user_id: str,
        channel: str,
        lease_seconds: float | None = None,
    ) -> DeliveryStart:
        """Claim a delivery (exactly as :meth:`claim_delivery`, lease rule included) and, only
        if this call claimed it, read ``user_id``'s record and ``channel``'s policy.

        Who calls: the core, first thing for every inbound message. A lost claim returns
        ``DeliveryStart(claimed=False)`` without reading anything; a claim taken over after its
        lease reads both like a fresh one. The reads are not a snapshot taken with the claim
        (an admin's change landing in between may or may not be seen, as with separate calls).
        Optimised stores do all of it in one round trip and one transaction, so a failure
        (:class:`~core.errors.StoreBusy` included) leaves the delivery unclaimed; this default
        makes up to three calls, and a read failing after the claim leaves it claimed (answered
        again only after its lease).
        """
        claimed = await self.claim_delivery(
            platform, delivery_id, now=now, ttl_seconds=ttl_seconds, lease_seconds=lease_seconds
        )
        if not claimed:
            return DeliveryStart(claimed=False)
        user = await self.get_user(user_id)
        policy = await self.get_channel_policy(channel)
        return DeliveryStart(claimed=True, user=user, policy=policy)

    # --- conversations and turns --------------------------------------------------------

    @abc.abstractmethod
    async def get_conversation(self, key: str) -> ConversationState:
        """The state for ``key``, creating it (epoch 0, no persona) if absent."""

    @abc.abstractmethod
    async def new_epoch(self, key: str) -> int:
        """Start a fresh context (``/reset`` or idle expiry). Returns the new epoch."""

    @abc.abstractmethod
    async def set_persona(self, key: str, persona: str | None) -> None:
        """Set or clear (``None``) the conversation's persona."""

    @abc.abstractmethod
    async def append_turns(
        self, key: str, epoch: int, turns: Sequence[TurnRecord], *, active_at: datetime
    ) -> None:
        """Append turns to the conversation (one transaction) and set ``last_active_at``."""

    @abc.abstractmethod
    async def touch_conversation(self, key: str, *, active_at: datetime) -> None:
        """Set ``last_active_at`` without adding turns."""

    @abc.abstractmethod
    async def recent_turns(self, key: str, epoch: int, *, limit: int) -> list[TurnRecord]:
        """The newest ``limit`` turns of ``epoch``, oldest first. Cost must not grow with the
        length of the stored history (indexed, bounded query)."""

    async def load_context(
        self, key: str, *, limit: int
    ) -> tuple[ConversationState, list[TurnRecord]]:
        """The conversation's state (created if absent, as :meth:`get_conversation`) and the
        newest ``limit`` turns of its current epoch, oldest first (as :meth:`recent_turns`).

        Who calls: the core, under :meth:`conversation_lock`, before building a model request.
        Optimised stores do it in one round trip; this default makes two calls.
        """
        state = await self.get_conversation(key)
        turns = await self.recent_turns(key, state.epoch, limit=limit)
        return state, turns

    @abc.abstractmethod
    async def forget_user(self, user_id: str) -> int:
        """Delete every turn belonging to ``user_id``, their user record, their recorded name
        (:meth:`record_user_name`) and their image jobs' prompts. Ledger rows stay (billing)
        but lose nothing personal beyond the id. Returns the number of turns deleted."""

    @abc.abstractmethod
    def conversation_lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """An async context manager that holds the conversation's lock; waiters are FIFO."""

    # --- quota --------------------------------------------------------------------------

    @abc.abstractmethod
    async def reserve(
        self,
        reservation_id: str,
        lines: Sequence[QuotaLine],
        *,
        now: datetime,
        meta: LedgerEntry,
    ) -> ReserveOutcome:
        """Atomically charge every line or none (see module docstring). ``meta`` is kept with
        the reservation so a sweeper can write its ledger row (its token/cost fields are the
        reserved estimate; ``outcome`` is ignored). A line with a ``bonus_counter`` is checked
        against its effective limit (:attr:`QuotaLine.bonus_counter`) in the same atomic step
        as the charge, never against a value read earlier."""

    @abc.abstractmethod
    async def settle(
        self,
        reservation_id: str,
        actual: dict[str, int],
        *,
        entry: LedgerEntry,
    ) -> bool:
        """Replace each reserved amount by ``actual[counter]`` (missing counters: 0 for
        refundable lines) and write ``entry`` to the ledger, atomically. ``False`` if the
        reservation is unknown or already settled/refunded (nothing changes then)."""

    async def finish_turn(
        self,
        key: str,
        epoch: int,
        turns: Sequence[TurnRecord],
        *,
        active_at: datetime,
        reservation_id: str,
        actual: dict[str, int],
        entry: LedgerEntry,
        delivery: tuple[str, str] | None = None,
    ) -> bool:
        """Append an answered exchange (as :meth:`append_turns`), settle its reservation (as
        :meth:`settle`) and, when ``delivery`` is ``(platform, delivery_id)``, mark that claim
        finished at ``active_at`` (as :meth:`finish_delivery`); returns what :meth:`settle`
        returns.

        Who calls: the core, once the model's answer has been shown. The turns are always
        appended (the user saw the answer), and the delivery always marked finished, even when
        the reservation is no longer open (swept, refunded, settled): then the result is
        ``False`` and no counter or ledger row changes. Optimised stores do it all in one
        transaction, so a failure leaves none of it done (the delivery stays unfinished, so a
        re-delivery can take it over after its lease). This default is **not atomic**: it
        appends, then settles, then finishes the delivery, so a failure part-way leaves the
        earlier steps done (an open reservation is refunded later by the sweeper; an unfinished
        delivery may be answered again after its lease). Invalid arguments (negative ``actual``
        amounts, naive datetimes) raise ``ValueError`` before anything is written.
        """
        if any(value < 0 for value in actual.values()):
            raise ValueError("actual amounts must not be negative")
        # Checked up front so that a caller bug cannot leave the turns stored but unsettled.
        for moment in (active_at, entry.created_at, *(t.created_at for t in turns)):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError("the store needs timezone-aware datetimes; got a naive one")
        await self.append_turns(key, epoch, turns, active_at=active_at)
        settled = await self.settle(reservation_id, actual, entry=entry)
        if delivery is not None:
            platform, delivery_id = delivery
            await self.finish_delivery(platform, delivery_id, now=active_at)
        return settled

    @abc.abstractmethod
    async def refund(self, reservation_id: str, *, entry: LedgerEntry) -> bool:
        """Give back every refundable line and write ``entry``, atomically. Once only."""

    @abc.abstractmethod
    async def sweep_reservations(self, *, older_than: datetime, now: datetime) -> int:
        """Refund open reservations created before ``older_than`` (crash mid-call), writing a
        ``"swept"`` ledger row each, and, in the same transaction, end the image jobs still
        ``queued`` or ``running`` that were created before ``older_than`` (their process died:
        status ``"failed"``, ``finished_at=now``, ``error`` :data:`SWEPT_JOB_ERROR`). Jobs
        already finished and younger jobs are untouched. Returns how many reservations were
        swept."""

    @abc.abstractmethod
    async def counters(self, names: Sequence[str]) -> dict[str, int]:
        """Current ``used`` for each counter (0 when absent)."""

    @abc.abstractmethod
    async def ledger(
        self,
        *,
        user_id: str | None = None,
        day: str | None = None,
        month: str | None = None,
    ) -> list[LedgerEntry]:
        """Ledger rows, oldest first, filtered by user and/or period."""

    @abc.abstractmethod
    async def usage_totals(
        self,
        *,
        group_by: str,
        user_id: str | None = None,
        day: str | None = None,
        month: str | None = None,
    ) -> list[UsageTotals]:
        """Sums of ledger rows grouped by ``"user"`` or ``"day"``, sorted by key. ``calls``
        counts model calls: admin top-up rows (outcome ``"grant:..."``) are not calls."""

    # --- users and policies -------------------------------------------------------------

    @abc.abstractmethod
    async def get_user(self, user_id: str) -> UserRecord | None: ...

    @abc.abstractmethod
    async def put_user(self, record: UserRecord) -> None:
        """Insert or replace the user record."""

    @abc.abstractmethod
    async def record_user_name(self, user_id: str, name: str, *, now: datetime) -> None:
        """Remember that ``user_id`` (``"<platform>:<id>"``) was seen at ``now`` with the
        display name ``name``, replacing the name recorded for it before (a user has one
        current name; several users may share one). A ``name`` whose :func:`user_name_key` is
        empty records nothing. Independent of :meth:`put_user`: recording a name creates no
        user record, and :meth:`put_user` keeps the name; :meth:`forget_user` deletes it.

        Who calls: the core, when it sees a user under a name it has not recorded in this
        process, so that admins can name the user after a restart (:meth:`find_users`).
        """

    @abc.abstractmethod
    async def find_users(self, platform: str, name: str, *, limit: int = 10) -> list[str]:
        """The ids (``"<platform>:<id>"``) of ``platform``'s users whose current recorded name
        matches ``name`` (equal :func:`user_name_key`), sorted, at most ``limit``. An empty key
        or ``limit <= 0`` returns ``[]``. Indexed: cost does not grow with the number of users.

        Who calls: the core's user directory, to resolve an admin command's ``@name``.
        """

    @abc.abstractmethod
    async def get_channel_policy(self, channel: str) -> ChannelPolicy | None: ...

    @abc.abstractmethod
    async def put_channel_policy(self, policy: ChannelPolicy) -> None:
        """Insert or replace the channel's policy."""

    # --- image jobs ---------------------------------------------------------------------

    @abc.abstractmethod
    async def put_image_job(self, job: ImageJobRecord) -> None:
        """Insert or replace an image job record."""

    @abc.abstractmethod
    async def get_image_job(self, job_id: str) -> ImageJobRecord | None: ...

    @abc.abstractmethod
    async def image_jobs(
        self, *, user_id: str | None = None, status: ImageJobStatus | None = None
    ) -> list[ImageJobRecord]:
        """Jobs, oldest first, optionally filtered."""

    # --- the inbox (Contract 2; the policy is in core/inbox.py) ---------------------------

    @abc.abstractmethod
    async def inbox_record(
        self, platform: str, delivery_id: str, payload: str, *, now: datetime, lease_until: datetime
    ) -> bool:
        """Insert ``(platform, delivery_id)`` if absent, received at ``now``, leased to the
        caller until ``lease_until`` (``attempts`` 1); ``True`` if this call inserted it. An
        existing entry (done or not) is left exactly as it is. Committed before returning.
        """

    @abc.abstractmethod
    async def inbox_done(self, platform: str, delivery_id: str, *, now: datetime) -> None:
        """Mark the entry finished at ``now`` (the first finish time is kept; an absent entry
        stays absent). A finished entry is never handed out by :meth:`inbox_due` again."""

    @abc.abstractmethod
    async def inbox_due(
        self, platform: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[InboxEntry]:
        """Lease up to ``limit`` of ``platform``'s unfinished entries whose lease ran out
        (``leased_until <= now``) or that were never leased, oldest ``received_at`` first:
        each gets ``leased_until = lease_until`` and ``attempts + 1``, atomically, so of
        several concurrent callers (tasks, processes, replicas) each entry goes to at most one.
        Returns them (with the new ``attempts``) oldest first; ``limit <= 0`` returns ``[]``."""

    @abc.abstractmethod
    async def inbox_purge(self, *, done_before: datetime) -> int:
        """Delete finished entries whose ``done_at`` is at or before ``done_before``; returns how
        many. Unfinished entries are never deleted, however old."""

    # --- housekeeping -------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Periodic housekeeping that keeps tail latency low; the core's sweeper calls it. Safe
        to call at any time and any number of times; it never changes data. Default: nothing
        (SQLite runs a passive WAL checkpoint)."""
        return  # deliberately empty: a store without such housekeeping needs no override

    # --- convenience --------------------------------------------------------------------

    async def iter_turns(self, key: str, epoch: int) -> AsyncIterator[TurnRecord]:
        """All turns of an epoch, oldest first (audit/export; not used on the hot path)."""
        for turn in await self.recent_turns(key, epoch, limit=1_000_000):
            yield turn
