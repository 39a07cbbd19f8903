"""Account-wide concurrency governors with a FIFO queue that is fair across users.

Hunyuan allows one running image job and five concurrent chat calls per account by default
(bought add-on packs raise that). Every user of the account shares those slots, so hybot queues
work itself instead of letting Tencent reject it, and tells the user where they stand.

Fairness: a waiter's rank is how many of the same user's tickets were already queued or running
when it joined; the queue is ordered by ``(rank, arrival)``. One user who submits ten jobs does
not push everybody else back: another user's first job goes before the first user's second.

The governor is in-process (one replica). A PostgreSQL deployment coordinates the same policy
through store leases in a later release; the interface stays: :meth:`FairGovernor.slot` (the
chat turn holds a slot for a block), and :meth:`~FairGovernor.join`,
:meth:`~FairGovernor.position`, :meth:`~FairGovernor.wait_change`, :meth:`~FairGovernor.cancel`
and :meth:`~FairGovernor.release` (an image job reports its place in the queue and can be
cancelled while it waits).

The module also holds the image size rule of each backend (:func:`size_allowed`,
:func:`image_sizes`): checked before anything is reserved, and worded in ``/help``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from core.errors import Busy

__all__ = ["FairGovernor", "Ticket", "image_sizes", "size_allowed"]

#: Resolutions of the native SubmitHunyuanImageJob (reference §5.1), as ``WxH``.
NATIVE_SIZES: tuple[str, ...] = (
    "768x768", "768x1024", "1024x768", "1024x1024",
    "720x1280", "1280x720", "768x1280", "1280x768",
)  # fmt: skip
#: hy-image-lite adds two full-HD sizes (reference §5.2).
LITE_SIZES: tuple[str, ...] = (*NATIVE_SIZES, "1080x1920", "1920x1080")


def image_sizes(*, api: str, model: str) -> str:
    """The sizes a backend accepts as a list (``"768x768, 1024x1024, ..."``), or ``""`` when
    it takes a range instead (hy-image-v3: the caller words the rule in the user's language)."""
    if api == "native":
        return ", ".join(NATIVE_SIZES)
    if model == "hy-image-lite":
        return ", ".join(LITE_SIZES)
    return ""


def size_allowed(size: str, *, api: str, model: str) -> bool:
    """Whether the backend takes ``size`` (``"WxH"``): checked before anything is charged, so
    a bad size gets the list of good ones instead of a rejected, refunded call."""
    if api == "native":
        return size in NATIVE_SIZES
    if model == "hy-image-lite":
        return size in LITE_SIZES
    try:
        width, height = (int(part) for part in size.split("x", 1))
    except ValueError:
        return False
    return 512 <= width <= 2048 and 512 <= height <= 2048 and width * height <= 1024 * 1024


@dataclass(eq=False, slots=True)
class Ticket:
    """One place in a governor: waiting until ``granted``, then holding a slot until released."""

    user: str
    job_id: str
    rank: int
    seq: int
    granted: bool = False
    cancelled: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def order(self) -> tuple[int, int]:
        return (self.rank, self.seq)


class FairGovernor:
    """At most ``limit`` holders at once; waiters ordered fairly (see module docstring).

    ``max_queue`` bounds the number of waiters; joining a full queue raises
    :class:`~core.errors.Busy`. All methods must be called from the event loop thread.
    """

    def __init__(self, *, limit: int, max_queue: int = 1000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._max_queue = max_queue
        self._running: set[Ticket] = set()
        self._waiting: list[Ticket] = []
        self._seq = itertools.count()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def join(self, *, user: str, job_id: str = "") -> Ticket:
        """Take a ticket; it is granted at once when a slot is free and nobody waits."""
        if len(self._waiting) >= self._max_queue:
            raise Busy("queue full")
        rank = sum(1 for t in self._running if t.user == user) + sum(
            1 for t in self._waiting if t.user == user
        )
        ticket = Ticket(user=user, job_id=job_id, rank=rank, seq=next(self._seq))
        self._waiting.append(ticket)
        self._waiting.sort(key=lambda t: t.order)
        self._dispatch()
        return ticket

    def position(self, ticket: Ticket) -> int:
        """0 when granted, else 1 for the next in line, 2 behind it, ..."""
        if ticket.granted:
            return 0
        try:
            return self._waiting.index(ticket) + 1
        except ValueError:
            return 0

    async def wait_change(self, ticket: Ticket, *, max_wait: float | None) -> bool:
        """Wait until the ticket's state may have changed (granted, moved up, cancelled).

        Returns ``False`` if ``max_wait`` seconds passed with no change. Callers loop:
        check ``granted``/``cancelled``/:meth:`position`, then call this again.
        """
        if ticket.granted or ticket.cancelled:
            return True
        ticket.changed.clear()
        try:
            await asyncio.wait_for(ticket.changed.wait(), max_wait)
        except TimeoutError:
            return False
        return True

    def release(self, ticket: Ticket) -> None:
        """Give the slot back (or leave the queue). Idempotent."""
        if ticket in self._running:
            self._running.discard(ticket)
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
        ticket.granted = False
        self._dispatch(notify_all=True)

    def cancel(self, ticket: Ticket) -> None:
        """Mark the ticket cancelled and release it; its waiter sees ``cancelled``."""
        ticket.cancelled = True
        self.release(ticket)
        ticket.changed.set()

    @asynccontextmanager
    async def slot(self, *, user: str, job_id: str = "") -> AsyncIterator[Ticket]:
        """Wait silently for a slot, hold it for the block, release it afterwards."""
        ticket = self.join(user=user, job_id=job_id)
        try:
            while not ticket.granted:
                if ticket.cancelled:
                    raise asyncio.CancelledError
                await self.wait_change(ticket, max_wait=None)
            yield ticket
        finally:
            self.release(ticket)

    def _dispatch(self, *, notify_all: bool = False) -> None:
        granted_any = False
        while self._waiting and len(self._running) < self._limit:
            ticket = self._waiting.pop(0)
            ticket.granted = True
            self._running.add(ticket)
            ticket.changed.set()
            granted_any = True
        if granted_any or notify_all:
            for ticket in self._waiting:
                ticket.changed.set()
