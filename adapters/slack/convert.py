"""Slack payloads → :class:`~core.types.Inbound` (pure: no I/O, no clock, no state).

Who calls: :mod:`adapters.slack.app` for every event, slash command and button press, after the
request was verified and recorded in the inbox. Each function returns ``None`` for traffic that is
not a message to the bot; the core decides everything else (addressing policy, commands, quota).

What becomes an :class:`Inbound`:

- ``app_mention`` and ``message`` events from users. Bot messages (``bot_id``, or the bot's own
  user), edits, deletions, joins and every other ``subtype`` except ``thread_broadcast`` and
  ``file_share`` give ``None``. Channel messages count only when they mention the bot, or are
  follow-ups in a thread the bot takes part in (``in_bot_thread``, when
  :attr:`SlackOptions.thread_follow_ups` is on); other channel chatter gives ``None``.
- Conversation keys (via :func:`core.keys.conversation_key`): a channel mention or follow-up →
  kind ``thread`` keyed by the thread root (``thread_ts``, else the message's own ``ts``, which
  becomes the root of the thread the answer opens); a top-level DM → kind ``dm``; a DM message
  inside a thread (the assistant pane opens one per chat) → its own ``thread`` conversation.
- Delivery id of message-like events: ``msg:<team>:<channel>:<ts>``, **not** ``event_id``. One
  user message mentioning the bot arrives twice, as ``app_mention`` and as ``message``, with two
  different ``event_id`` s but the same channel and ``ts``; keying on the message makes the
  inbox (and the core's claim) handle it once whichever arrives first, and Slack's retries of
  either keep the same key. Both event types convert to the same :class:`Inbound` (``mentioned``
  is read from the text, not from the event type), so which one wins does not matter.
- Slash commands (one command with subcommands, :func:`slash_to_inbound`): ``/hy image a cat``
  → text ``/image a cat``; ``/hy`` → ``/help``; ``/hy <anything else>`` → a chat turn. The
  conversation is per channel and user (kind ``slash``); delivery id ``cmd:<trigger_id>``.
- Command syntax (:attr:`~core.types.Inbound.command_prefix`, how the core writes commands in
  ``/help`` and usage sentences): a slash command carries ``"<command> "`` (``"/hy "``: Slack
  has no ``/image`` or ``/quota``, only ``/hy image``, ``/hy quota``). Mentions, DMs and thread
  follow-ups keep ``"/"``: their text reaches the core as typed, so ``@hybot /image a cat`` is
  the ``/image`` command (Slack's client takes a message that *starts* with ``/`` as a slash
  command, which is why a mention or the assistant's suggested prompts are the way there).
- Button presses (``block_actions`` with our ``action_id`` s) → an :class:`Inbound` with
  :attr:`~core.types.Inbound.action` set and ``message_id`` = the pressed message's ``ts``;
  delivery id ``act:<team>:<channel>:<action_ts>``.

Text rewriting (Slack's syntax never reaches the core): ``<@U1>`` / ``<@U1|name>`` becomes
``slack:U1`` and is listed in :attr:`Inbound.mentions` (the bot's own mention is removed and
sets ``mentioned``); ``<!channel>``, ``<!here>``, ``<!everyone>`` and ``<!subteam^…>`` become
harmless ``@channel``-style words; ``<#C1|name>`` → ``#name``; ``<https://x|label>`` →
``label (https://x)``; ``&lt; &gt; &amp;`` are unescaped last.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.commands import command_specs
from core.keys import ChatKind, conversation_key
from core.types import Action, ActionKind, Inbound

__all__ = [
    "ACTION_IDS",
    "PLATFORM",
    "SlackIdentity",
    "SlackOptions",
    "action_to_inbound",
    "clean_text",
    "event_to_inbound",
    "message_delivery_id",
    "slash_to_inbound",
    "thread_of",
]

PLATFORM = "slack"

#: ``action_id`` of our Block Kit buttons, per :data:`core.types.ActionKind`.
ACTION_IDS: Mapping[str, ActionKind] = {
    "hybot_regenerate": "regenerate",
    "hybot_new_chat": "new_chat",
}

_KEPT_SUBTYPES = frozenset({"thread_broadcast", "file_share"})
_TOKEN = re.compile(r"<([^<>]*)>")
_COMMAND_WORDS = frozenset(word for spec in command_specs() for word in (spec.name, *spec.aliases))


@dataclass(frozen=True, slots=True)
class SlackIdentity:
    """Who the bot is in one workspace (from ``auth.test``)."""

    team: str
    user_id: str
    bot_id: str = ""


@dataclass(frozen=True, slots=True)
class SlackOptions:
    """Conversion settings (from configuration; defaults are the documented behaviour).

    ``thread_follow_ups``: messages in a thread the bot takes part in continue the
    conversation without a new mention. ``group_scope``: ``"shared"`` (one context per thread)
    or ``"user"`` (one per person in it). ``command``: the slash command's name.
    ``language``: the language of the adapter's own few words (the slash command's ack, the
    assistant's status and suggested prompts), where Slack gives no hint of the user's."""

    thread_follow_ups: bool = True
    group_scope: str = "shared"
    command: str = "/hy"
    language: str = "en"


def _received(ts: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def clean_text(text: str, *, bot_user: str) -> tuple[str, bool, tuple[str, ...]]:
    """Resolve Slack's markup in user text.

    Returns ``(text, mentions_bot, mentions)``: the plain text (the bot's own mention removed,
    other user mentions as ``slack:U…``), whether the bot was mentioned, and the other users
    mentioned, in order and without repeats."""
    mentioned = False
    users: list[str] = []

    def token(match: re.Match[str]) -> str:
        nonlocal mentioned
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            uid = target[1:]
            if uid == bot_user:
                mentioned = True
                return ""
            who = f"{PLATFORM}:{uid}"
            if who not in users:
                users.append(who)
            return who
        if target.startswith("!"):
            word = target[1:].split("^", 1)[0]
            name = label.lstrip("@") or word
            return "@\u2060" + name  # a word joiner: reads as @channel, pings nobody
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if label and label != target:
            return f"{label} ({target})"
        return target

    out = _TOKEN.sub(token, text)
    out = out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", out).strip(), mentioned, tuple(users)


def message_delivery_id(team: str, channel: str, ts: str) -> str:
    """The delivery id shared by every event describing one message (see module docstring)."""
    return f"msg:{team}:{channel}:{ts}"


def thread_of(event: Mapping[str, Any]) -> str:
    """The thread root a reply to ``event`` belongs in: ``thread_ts``, else its own ``ts``."""
    return str(event.get("thread_ts") or event.get("ts") or "")


def _is_dm(event: Mapping[str, Any]) -> bool:
    kind = event.get("channel_type")
    if kind is not None:
        return bool(kind == "im")
    return str(event.get("channel", "")).startswith("D")


def event_to_inbound(
    body: Mapping[str, Any],
    *,
    me: SlackIdentity,
    options: SlackOptions = SlackOptions(),
    in_bot_thread: bool = False,
) -> Inbound | None:
    """Convert an ``event_callback`` body (``app_mention`` / ``message``) or ``None``.

    ``in_bot_thread``: the caller knows the bot takes part in the event's thread (it answered
    there, or the thread's root is the bot's message); only then does an unmentioned channel
    message in a thread count, and only with ``options.thread_follow_ups``."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return None
    etype = event.get("type")
    if etype not in ("app_mention", "message"):
        return None
    subtype = event.get("subtype")
    if subtype is not None and (not isinstance(subtype, str) or subtype not in _KEPT_SUBTYPES):
        return None
    user = event.get("user")
    if not isinstance(user, str) or not user or user == me.user_id:
        return None
    if event.get("bot_id") or event.get("bot_profile") or event.get("hidden"):
        return None
    channel = event.get("channel")
    ts = event.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
        return None
    raw_text = event.get("text")
    text, mentioned, mentions = clean_text(
        raw_text if isinstance(raw_text, str) else "", bot_user=me.user_id
    )
    team = str(body.get("team_id") or event.get("team") or me.team)
    dm = _is_dm(event)
    thread_ts = event.get("thread_ts")
    thread = str(thread_ts) if isinstance(thread_ts, str) and thread_ts else ""
    reply_to_bot = False
    kind: ChatKind
    if dm:
        kind = "thread" if thread else "dm"
    else:
        follow_up = (
            bool(thread)
            and options.thread_follow_ups
            and (in_bot_thread or event.get("parent_user_id") == me.user_id)
        )
        if not mentioned and not follow_up:
            return None
        reply_to_bot = follow_up
        kind = "thread"
        thread = thread or ts
    key = conversation_key(
        platform=PLATFORM,
        workspace=team,
        chat=channel,
        kind=kind,
        user=user,
        thread=thread,
        group_scope=options.group_scope,
    )
    return Inbound(
        platform=PLATFORM,
        delivery_id=message_delivery_id(team, channel, ts),
        key=key,
        user_id=user,
        text=text,
        channel_id=channel,
        is_dm=dm,
        mentioned=mentioned,
        reply_to_bot=reply_to_bot,
        received_at=_received(ts),
        message_id=ts,
        bot_id=f"{PLATFORM}:{me.user_id}",
        mentions=mentions,
        raw=dict(body),
    )


def slash_to_inbound(
    payload: Mapping[str, Any], *, me: SlackIdentity, options: SlackOptions = SlackOptions()
) -> Inbound | None:
    """Convert a slash-command payload (form fields) for ``options.command`` or ``None``.

    One command with subcommands: the first word of the argument names a core command
    (``image``, ``reset``, ``quota``, ``usage``, ``help``, ``admin`` …) or else the whole
    argument is a chat prompt; an empty argument asks for help."""
    if payload.get("command") != options.command:
        return None
    user = payload.get("user_id")
    channel = payload.get("channel_id")
    trigger = payload.get("trigger_id")
    if not all(isinstance(v, str) and v for v in (user, channel, trigger)):
        return None
    assert isinstance(user, str) and isinstance(channel, str) and isinstance(trigger, str)
    raw_text = payload.get("text")
    text, _, mentions = clean_text(
        raw_text if isinstance(raw_text, str) else "", bot_user=me.user_id
    )
    word, _, rest = text.partition(" ")
    if not text:
        text = "/help"
    elif word.lower() in _COMMAND_WORDS:
        text = f"/{word.lower()} {rest}".rstrip()
    team = str(payload.get("team_id") or me.team)
    dm = channel.startswith("D") or payload.get("channel_name") == "directmessage"
    key = conversation_key(platform=PLATFORM, workspace=team, chat=channel, kind="slash", user=user)
    return Inbound(
        platform=PLATFORM,
        delivery_id=f"cmd:{trigger}",
        key=key,
        user_id=user,
        text=text,
        channel_id=channel,
        user_name=str(payload.get("user_name") or ""),
        is_dm=dm,
        mentioned=True,
        bot_id=f"{PLATFORM}:{me.user_id}",
        mentions=mentions,
        command_prefix=f"{options.command} ",
        raw=dict(payload),
    )


def action_to_inbound(
    payload: Mapping[str, Any],
    *,
    me: SlackIdentity,
    options: SlackOptions = SlackOptions(),
) -> Inbound | None:
    """Convert a ``block_actions`` payload pressing one of our buttons, or ``None``.

    The conversation is the pressed message's: its thread in a channel (or DM thread), the DM
    itself for a top-level DM message, else the presser's slash conversation in that channel."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], Mapping):
        return None
    pressed = actions[0]
    kind = ACTION_IDS.get(str(pressed.get("action_id", "")))
    if kind is None:
        return None
    user_obj = payload.get("user")
    user = user_obj.get("id") if isinstance(user_obj, Mapping) else None
    container = payload.get("container")
    container = container if isinstance(container, Mapping) else {}
    message = payload.get("message")
    message = message if isinstance(message, Mapping) else {}
    channel_obj = payload.get("channel")
    channel = (
        channel_obj.get("id") if isinstance(channel_obj, Mapping) else None
    ) or container.get("channel_id")
    ts = container.get("message_ts") or message.get("ts")
    if not all(isinstance(v, str) and v for v in (user, channel, ts)):
        return None
    assert isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)
    team_obj = payload.get("team")
    team = str((team_obj.get("id") if isinstance(team_obj, Mapping) else None) or me.team)
    thread = str(container.get("thread_ts") or message.get("thread_ts") or "")
    dm = channel.startswith("D")
    chat_kind: ChatKind = "thread" if thread else ("dm" if dm else "slash")
    key = conversation_key(
        platform=PLATFORM,
        workspace=team,
        chat=channel,
        kind=chat_kind,
        user=user,
        thread=thread,
        group_scope=options.group_scope,
    )
    action_ts = str(pressed.get("action_ts") or payload.get("trigger_id") or ts)
    return Inbound(
        platform=PLATFORM,
        delivery_id=f"act:{team}:{channel}:{action_ts}",
        key=key,
        user_id=user,
        text="",
        channel_id=channel,
        is_dm=dm,
        mentioned=True,
        message_id=ts,
        bot_id=f"{PLATFORM}:{me.user_id}",
        action=Action(kind=kind, payload=str(pressed.get("value") or "")),
        raw=dict(payload),
    )
