"""Who an admin command names: ``platform:id`` strings and the names of users seen.

The core never parses platform syntax (design §1): adapters rewrite a mention in a command's
text as ``platform:id`` and list it in ``Inbound.mentions``. An admin may also type the plain
name of a user the bot has seen on the same platform (``/admin grant alice ...`` or ``@alice``,
compared as :func:`~core.store.base.user_name_key` compares them, so case-insensitively).

Names are durable: each user's current name (``Inbound.user_name``) is recorded in the store
(:meth:`~core.store.base.BaseStore.record_user_name`) the first time this process sees it, and
resolved from the store (:meth:`~core.store.base.BaseStore.find_users`), so a user named before
a restart is still known after it. A name that matches exactly one user of the platform
resolves; none is unknown; several are ambiguous (the admin must write ``platform:id``). In
every case but the first, the admin command changes nothing. ``platform:id`` always works.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from core.errors import StoreError
from core.store.base import BaseStore, user_name_key

__all__ = ["USER_ID_RE", "Resolution", "UserDirectory"]

log = logging.getLogger(__name__)

USER_ID_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}:[^\s:][^\s]{0,127}", re.ASCII)
"""A resolved user id, ``platform:id`` (``telegram:42``, ``slack:U0123ABC``)."""

#: How many candidates an ambiguous name reports (the admin picks one by ``platform:id``).
MAX_CANDIDATES = 5

#: Longer names are not recorded (no platform has display names this long; a hostile client
#: does not get to grow the store by the megabyte per message).
MAX_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a user argument names: ``user_id`` when exactly one user, else ``None`` with the
    ``candidates`` found (empty: unknown; two or more: ambiguous, at most
    :data:`MAX_CANDIDATES`)."""

    user_id: str | None
    candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return self.user_id is None and len(self.candidates) > 1


class UserDirectory:
    """Records the names of users seen and resolves admin arguments through ``store``.

    ``max_names`` bounds the in-process memory of which names were already recorded (so a
    user's every message does not write); a user evicted from it, or seen again after a
    restart, is recorded once more. When two processes share a store, a name changed in one
    may be recorded again by the other only once that one sees the user under a new name.
    """

    def __init__(self, *, store: BaseStore, max_names: int = 10_000) -> None:
        self._store = store
        self._max = max_names
        self._recorded: OrderedDict[str, str] = OrderedDict()

    async def saw(self, user_id: str, name: str, *, now: datetime) -> None:
        """``user_id`` spoke under ``name``: record it unless this process already did.

        Best effort: a store failure is logged and the name is recorded at a later sighting;
        it never fails the delivery. Names longer than :data:`MAX_NAME_CHARS` are not recorded.
        """
        if not user_name_key(name) or len(name) > MAX_NAME_CHARS:
            return
        if self._recorded.get(user_id) == name:
            self._recorded.move_to_end(user_id)
            return
        try:
            await self._store.record_user_name(user_id, name, now=now)
        except StoreError as err:
            log.warning("could not record the name of %s (%s)", user_id, err.kind)
            return
        self._recorded[user_id] = name
        self._recorded.move_to_end(user_id)
        while len(self._recorded) > self._max:
            self._recorded.popitem(last=False)

    async def resolve(
        self, raw: str, *, platform: str, mentions: tuple[str, ...] = ()
    ) -> Resolution:
        """What ``raw`` names: a resolved id (``platform:id``, as adapters write mentions; one
        listed in ``mentions`` always is) or the name of a user seen on ``platform``, with or
        without ``@``. Store failures propagate (:class:`~core.errors.StoreError`)."""
        value = raw.strip()
        if value in mentions or USER_ID_RE.fullmatch(value):
            return Resolution(value)
        if not user_name_key(value):
            return Resolution(None)
        found = await self._store.find_users(platform, value, limit=MAX_CANDIDATES)
        if len(found) == 1:
            return Resolution(found[0])
        return Resolution(None, tuple(found))
