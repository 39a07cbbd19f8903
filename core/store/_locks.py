"""In-process, per-key FIFO locks whose bookkeeping vanishes when a key is idle.

Who calls: stores implement :meth:`BaseStore.conversation_lock` with :class:`KeyedLocks`
(SQLite alone; a networked store puts its cross-replica lock inside this one).

Guarantees: for one key, at most one holder at a time; waiters acquire in arrival order
(``asyncio.Lock`` wakes waiters first-in first-out and does not let a newcomer overtake queued
waiters). The entry for a key is deleted as soon as nobody holds or waits for it, so memory stays
bounded by the number of *busy* keys, not by every chat ever seen. A waiter that is cancelled
leaves the queue cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["KeyedLocks"]


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Holders plus waiters; the entry is dropped when this returns to zero.
    users: int = 0


class KeyedLocks:
    """A family of FIFO ``asyncio.Lock`` s addressed by string key (one event loop)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """How many keys are currently held or waited for."""
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the ``async with`` body."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
