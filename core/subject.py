"""Who is asking, in which role, and where: one frozen value per delivery.

``Conversation`` builds a :class:`Subject` once per claimed delivery (after the claim, from the
stored user record and the channel policy) and hands it to every step: authorization, quota,
command handlers, the chat turn. Nothing about the sender is looked up twice, and no step
takes the sender as a handful of loose arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.store.base import UserRecord

__all__ = ["EffectivePolicy", "Subject"]


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """Channel policy after stored overrides are merged over configured defaults."""

    enabled: bool
    mention_only: bool
    images_allowed: bool
    model: str
    persona: str


@dataclass(frozen=True, slots=True)
class Subject:
    """The sender of one delivery.

    Who: ``user_id`` (``platform:id``) and the stored ``record`` (``None``: never stored).
    Roles: ``is_admin`` (configured admin or stored role ``admin``). Scope: ``platform``, the
    ``conversation`` key (``str(ConversationKey)``), the ``channel`` (``platform:channel``),
    whether it is a DM, and the channel's effective ``policy``. ``lang`` is the language to
    answer in (``"en"``/``"zh"``).
    """

    user_id: str
    record: UserRecord | None
    is_admin: bool
    lang: str
    platform: str
    conversation: str
    channel: str
    is_dm: bool
    policy: EffectivePolicy
