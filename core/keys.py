"""Conversation scopes: which messages share one context (design §2).

Adapters describe where a message was said; :func:`conversation_key` applies the configured
scope and returns the :class:`~core.types.ConversationKey`. Keeping the policy here means
Telegram and Slack scope the same way and an operator changes it in one setting.

=========  =====================================================================================
kind       conversation
=========  =====================================================================================
``dm``     the private chat with the bot (Telegram private chat, Slack DM / app home)
``group``  a group chat or channel outside threads: shared by everyone, or one per person when
           ``group_scope == "user"``
``topic``  a Telegram forum topic: its own conversation (``thread`` = the topic id), scoped by
           ``group_scope`` like a group
``thread`` a Slack thread: its own conversation (``thread`` = the root ``ts``), scoped by
           ``group_scope`` like a group
``slash``  a Slack slash command: one conversation per channel and user
=========  =====================================================================================
"""

from __future__ import annotations

from typing import Literal

from core.types import ConversationKey

__all__ = ["GROUP_SCOPES", "ChatKind", "conversation_key"]

ChatKind = Literal["dm", "group", "topic", "thread", "slash"]

#: Accepted values of ``BotConfig.group_scope``.
GROUP_SCOPES: tuple[str, ...] = ("shared", "user")


def conversation_key(
    *,
    platform: str,
    workspace: str,
    chat: str,
    kind: ChatKind,
    user: str,
    thread: str = "",
    group_scope: str = "shared",
) -> ConversationKey:
    """The key for a message of ``user`` in ``chat`` (see the module table).

    Raises ``ValueError`` for an unknown ``kind`` or ``group_scope``, or a ``topic``/``thread``
    without its ``thread`` id: a wrong key would silently merge conversations.
    """
    if group_scope not in GROUP_SCOPES:
        raise ValueError(f"group_scope must be one of {GROUP_SCOPES}, not {group_scope!r}")
    if kind == "dm":
        return ConversationKey(platform, workspace, chat)
    if kind == "slash":
        return ConversationKey(platform, workspace, chat, "", user)
    if kind not in ("group", "topic", "thread"):
        raise ValueError(f"unknown chat kind {kind!r}")
    if kind != "group" and not thread:
        raise ValueError(f"a {kind} needs its thread id")
    who = user if group_scope == "user" else ""
    return ConversationKey(platform, workspace, chat, thread if kind != "group" else "", who)
