"""The inbox: "at least once in, exactly one answer out" (Contract 2).

Who calls: platform adapters, given an :class:`Inbox` by keyword injection from ``bots/``.

1. On every platform update/event, *before* acknowledging it to the platform:
   ``await inbox.record(platform, delivery_id, payload)``. Once it returns, the entry is
   committed (durable across a process crash; with ``synchronous=NORMAL`` an OS crash or power
   loss may lose the last commits, see the store). ``True``: new, handle it now (the recording
   process holds its lease); ``False``: already recorded (a platform re-delivery), skip it.
2. After the core finished with it (whatever the answer was): ``await inbox.done(...)``.
3. At start-up and periodically: ``for entry in await inbox.due(platform): ...`` re-drives
   entries whose lease ran out without ``done`` (the process died mid-answer, or handling
   raised), then ``done`` as in 2. Each call leases what it returns (``attempts`` + 1), so two
   replicas never re-drive the same entry at once.
4. Periodically: ``await inbox.purge(older_than=...)`` deletes finished entries only.

Failures: every method may raise :class:`~core.errors.StoreError`, in particular
:class:`~core.errors.StoreBusy` when the database stayed locked past the store's busy budget.
A failed :meth:`Inbox.record` recorded nothing: do not acknowledge the update, so that the
platform delivers it again. A failed :meth:`Inbox.done` leaves the entry to be re-driven after
its lease (the core's delivery claim makes that a no-op if the answer was stored).

Leases and the core's delivery claim: a re-driven entry reaches ``Conversation.handle`` again,
whose claim silently ignores a delivery whose previous attempt is still within the core's
``delivery_lease_seconds`` (counted from the claim, a moment after the record). So the inbox
``lease`` must *exceed* that lease by a margin (the composition root should pass, e.g., the
core's lease plus one minute; both default to 15 minutes), else a re-drive can be answered with
silence and then marked done, and the message is lost. A lease shorter than the longest answer
re-drives a live (slow) handler's entry: the core's claim then makes the second handling a
no-op, which is safe only under the previous rule.

``purge(older_than=...)`` should exceed how long a platform may re-deliver an update: a purged
entry that arrives again is recorded as new (the core's claim, remembered for its TTL, still
stops a second answer).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from core.store.base import BaseStore, InboxEntry

__all__ = ["Inbox", "InboxEntry"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Inbox:
    """The inbox policy over a :class:`BaseStore` (which keeps the atomicity).

    ``lease`` is how long a handler owns an entry (from :meth:`record` or :meth:`due`) before
    :meth:`due` may hand it out again; it must be positive. ``clock`` returns the current aware
    UTC time (tests inject a fake one).
    """

    def __init__(
        self,
        *,
        store: BaseStore,
        lease: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not lease > timedelta(0):
            raise ValueError("the inbox lease must be positive")
        self._store = store
        self._lease = lease
        self._clock = clock or _utcnow

    @property
    def lease(self) -> timedelta:
        """How long a handler owns an entry before it may be re-driven."""
        return self._lease

    async def record(self, platform: str, delivery_id: str, payload: str) -> bool:
        """Durable insert-if-absent, committed before returning; ``True`` if new.

        A new entry is leased to the caller (``attempts`` 1): it is expected to handle it now,
        so :meth:`due` will not hand it out before the lease runs out. A known entry (finished
        or not) is left untouched and ``False`` returned.
        """
        now = self._clock()
        return await self._store.inbox_record(
            platform, delivery_id, payload, now=now, lease_until=now + self._lease
        )

    async def done(self, platform: str, delivery_id: str) -> None:
        """Mark the entry finished: it is never re-driven. Idempotent; unknown ids are ignored."""
        await self._store.inbox_done(platform, delivery_id, now=self._clock())

    async def due(self, platform: str, *, limit: int = 100) -> list[InboxEntry]:
        """Unfinished entries of ``platform`` whose lease expired (or that were never leased),
        oldest first, at most ``limit``; each is leased again (``attempts`` + 1) atomically, so
        two concurrent callers (replicas) never get the same entry."""
        now = self._clock()
        return await self._store.inbox_due(
            platform, now=now, lease_until=now + self._lease, limit=limit
        )

    async def purge(self, *, older_than: timedelta) -> int:
        """Delete entries finished at least ``older_than`` ago (finished ones only); returns how
        many. A negative ``older_than`` raises ``ValueError``."""
        if older_than < timedelta(0):
            raise ValueError("older_than must not be negative")
        return await self._store.inbox_purge(done_before=self._clock() - older_than)
