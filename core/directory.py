"""Who an admin command names: ``platform:id`` strings and the names of users seen.

The core never parses platform syntax (design §1): adapters rewrite a mention in a command's
text as ``platform:id`` and list it in ``Inbound.mentions``. An admin may also type the plain
name of a user the bot has seen on the same platform (``/admin grant alice ...`` or ``@alice``,
matched case-insensitively against ``Inbound.user_name``). Anything else is unknown, and the
admin command changes nothing.

The names are remembered in this process only (bounded, newest kept): the store has no
name index yet, so after a restart a user must speak once, or be mentioned, before an admin can
name them. ``platform:id`` always works.
"""

from __future__ import annotations

import re
from collections import OrderedDict

__all__ = ["USER_ID_RE", "UserDirectory"]

USER_ID_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}:[^\s:][^\s]{0,127}", re.ASCII)
"""A resolved user id, ``platform:id`` (``telegram:42``, ``slack:U0123ABC``)."""


class UserDirectory:
    """Names of users seen, per platform → their ``platform:id`` (at most ``max_names``)."""

    def __init__(self, *, max_names: int = 10_000) -> None:
        self._max = max_names
        self._names: OrderedDict[tuple[str, str], str] = OrderedDict()

    def saw(self, platform: str, name: str, user_id: str) -> None:
        """Remember that ``name`` on ``platform`` is ``user_id`` (the newest sighting wins)."""
        folded = name.strip().lstrip("@").casefold()
        if not folded:
            return
        key = (platform, folded)
        self._names[key] = user_id
        self._names.move_to_end(key)
        while len(self._names) > self._max:
            self._names.popitem(last=False)

    def resolve(self, raw: str, *, platform: str, mentions: tuple[str, ...] = ()) -> str | None:
        """The ``platform:id`` that ``raw`` names, or ``None`` when it names nobody known.

        ``raw`` is a resolved id (``platform:id``, as adapters write mentions; one listed in
        ``mentions`` always is) or a name seen on ``platform``, with or without ``@``.
        """
        value = raw.strip()
        if value in mentions or USER_ID_RE.fullmatch(value):
            return value
        folded = value.removeprefix("@").casefold()
        return self._names.get((platform, folded)) if folded else None
