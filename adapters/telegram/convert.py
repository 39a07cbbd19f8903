"""Telegram ``Update`` → :class:`~core.types.Inbound` (pure: no I/O, no clock, no state).

Who calls: :class:`adapters.telegram.app.TelegramAdapter`, once per update, and the unit tests.

Rules (design §6, issue 8 item 3):

- **Private chats** answer every text message.
- **Groups and supergroups** answer only a message addressed to the bot: a ``mention`` entity
  whose text is ``@<bot username>`` (case-insensitive; entities only, never substring search,
  so ``@bot\\u200b`` or ``email@bot`` is no mention), a ``text_mention`` of the bot, a reply to
  one of the bot's messages, or a command for it (``/cmd`` or ``/cmd@thisbot``, both become
  ``/cmd``). ``/cmd@otherbot`` is dropped. The bot's own mention is removed from the text.
- **Forum topics** are separate conversations: the key's ``thread`` is the
  ``message_thread_id``. Inside a topic every message "replies" to the topic's first message;
  that is not a reply to the bot.
- The conversation key comes from :func:`core.keys.conversation_key` (so the group scope,
  shared or per user, follows the core's ``group_scope`` setting); ``workspace`` is the bot's id,
  so two bots sharing a store never share a conversation.
- **Mentions**: ``text_mention`` entities carry the user's id and become ``telegram:<id>`` in
  :attr:`Inbound.mentions` (and, in a command's arguments, in the text). A plain ``@username``
  of someone else carries no id on the Bot API, so it stays as typed and is not listed.
- **Ignored** (``None``): edited messages, channel posts, messages from bots (other bots, and
  anonymous admins posting as the group), service messages (no text or caption: joins, pins,
  topic events, migrations), inline queries and the rest.
- **Migrated groups**: when a group becomes a supergroup its id changes. ``chat_aliases`` maps
  a new chat id to the id the conversation was keyed by; :func:`migration` reads the pair from the
  service message Telegram sends, and the adapter keeps the map.
- **Button presses** (callback queries): an :class:`Inbound` with ``text=""``, ``action`` parsed
  from ``callback_data`` (see :func:`callback_data`) and ``message_id`` of the pressed message.
- ``delivery_id`` is the ``update_id``; ``user_id`` the bare Telegram user id (the core qualifies
  it as ``telegram:<id>``); ``bot_id`` is ``telegram:<bot id>``; ``user_name`` the user's
  ``@username`` without the ``@`` (what an admin types to name them, e.g. ``/admin grant
  @alice ...``, resolved by the core's user directory), else their display name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telegram import Message, MessageEntity, Update

from core.keys import ChatKind, conversation_key
from core.types import Action, ActionKind, Button, ConversationKey, Inbound

__all__ = [
    "PLATFORM",
    "BotIdentity",
    "callback_data",
    "migration",
    "parse_callback_data",
    "to_inbound",
    "utf16_len",
]

PLATFORM = "telegram"

_ACTION_CODES: dict[ActionKind, str] = {"regenerate": "r", "new_chat": "n"}
_CODE_ACTIONS: dict[str, ActionKind] = {v: k for k, v in _ACTION_CODES.items()}
_CALLBACK_LIMIT = 64


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is (from ``getMe``): its numeric id and username (without ``@``)."""

    id: int
    username: str

    @property
    def qualified(self) -> str:
        return f"{PLATFORM}:{self.id}"


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (Telegram's unit for lengths and offsets)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _index(text: str, utf16_offset: int) -> int:
    """The Python index of the character at ``utf16_offset`` UTF-16 units into ``text``."""
    if text.isascii():
        return utf16_offset
    units = 0
    for index, char in enumerate(text):
        if units >= utf16_offset:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(text)


def callback_data(button: Button) -> str:
    """The ``callback_data`` of an inline button: one letter for the action, ``:``, the
    payload. Raises ``ValueError`` when that exceeds Telegram's 64 bytes."""
    data = f"{_ACTION_CODES[button.action]}:{button.payload}"
    if len(data.encode()) > _CALLBACK_LIMIT:
        raise ValueError("button payload too long for Telegram callback_data")
    return data


def parse_callback_data(data: str) -> Action | None:
    """The :class:`Action` encoded by :func:`callback_data`, or ``None`` for foreign data."""
    code, sep, payload = data.partition(":")
    kind = _CODE_ACTIONS.get(code)
    if not sep or kind is None:
        return None
    return Action(kind=kind, payload=payload)


def migration(update: Update) -> tuple[int, int] | None:
    """``(old_chat_id, new_chat_id)`` when ``update`` announces a group's migration to a
    supergroup (either of the two service messages Telegram sends), else ``None``."""
    message = update.message
    if message is None:
        return None
    if message.migrate_to_chat_id:
        return message.chat.id, message.migrate_to_chat_id
    if message.migrate_from_chat_id:
        return message.migrate_from_chat_id, message.chat.id
    return None


def to_inbound(
    update: Update,
    *,
    me: BotIdentity,
    group_scope: str = "shared",
    chat_aliases: Mapping[int, int] | None = None,
    raw: Mapping[str, Any] | None = None,
) -> Inbound | None:
    """The :class:`Inbound` for ``update``, or ``None`` when the bot should not answer it
    (see the module docstring for the rules). ``raw`` is the update as received, kept in
    :attr:`Inbound.raw` (default: ``update.to_dict()``)."""
    aliases = chat_aliases or {}
    if update.callback_query is not None:
        return _callback(update, me=me, group_scope=group_scope, aliases=aliases, raw=raw)
    message = update.message
    if message is None:  # edited messages, channel posts, inline queries, ...
        return None
    sender = message.from_user
    if sender is None or sender.is_bot:
        return None
    text = message.text if message.text is not None else message.caption
    if not text:
        return None  # service messages, stickers, photos without caption
    entities = message.entities if message.text is not None else message.caption_entities
    is_dm = message.chat.type == "private"
    parsed = _parse(text, entities, me)
    if parsed is None:
        return None  # a command for another bot
    text, is_command, mentioned, mentions = parsed
    reply_to_bot = _replies_to_bot(message, me)
    if not is_dm and not (mentioned or reply_to_bot or is_command):
        return None
    key = _key(message, me=me, group_scope=group_scope, aliases=aliases, user=str(sender.id))
    return Inbound(
        platform=PLATFORM,
        delivery_id=str(update.update_id),
        key=key,
        user_id=str(sender.id),
        text=text.strip(),
        channel_id=str(message.chat.id),
        user_name=sender.username or sender.full_name,
        is_dm=is_dm,
        mentioned=mentioned,
        reply_to_bot=reply_to_bot,
        language=sender.language_code or "",
        received_at=message.date,
        message_id=str(message.message_id),
        bot_id=me.qualified,
        mentions=mentions,
        raw=raw if raw is not None else update.to_dict(),
    )


def _key(
    message: Message, *, me: BotIdentity, group_scope: str, aliases: Mapping[int, int], user: str
) -> ConversationKey:
    chat_id = aliases.get(message.chat.id, message.chat.id)
    kind: ChatKind
    thread = ""
    if message.chat.type == "private":
        kind = "dm"
    elif message.is_topic_message and message.message_thread_id:
        kind = "topic"
        thread = str(message.message_thread_id)
    else:
        kind = "group"
    return conversation_key(
        platform=PLATFORM,
        workspace=str(me.id),
        chat=str(chat_id),
        kind=kind,
        user=user,
        thread=thread,
        group_scope=group_scope,
    )


def _parse(
    text: str, entities: tuple[MessageEntity, ...], me: BotIdentity
) -> tuple[str, bool, bool, tuple[str, ...]] | None:
    """``(text, is_command, mentioned, mentions)``, or ``None`` for a command addressed to
    another bot. The text loses ``@thisbot`` after a command and the bot's own mentions; in a
    command, ``text_mention`` s of other users become ``telegram:<id>``."""
    edits: list[tuple[int, int, str]] = []
    is_command = False
    mentioned = False
    others: list[str] = []
    for entity in entities:
        start = _index(text, entity.offset)
        end = _index(text, entity.offset + entity.length)
        if (
            entity.type == MessageEntity.BOT_COMMAND
            and entity.offset == 0
            and text[start:end].startswith("/")  # an entity is a claim; the text decides
        ):
            name, at, target = text[start:end].partition("@")
            if at and target.lower() != me.username.lower():
                return None
            is_command = True
            if at:
                edits.append((start + len(name), end, ""))
        elif entity.type == MessageEntity.MENTION:
            if text[start:end].lower() == f"@{me.username.lower()}":
                mentioned = True
                edits.append((start, end, ""))
        elif entity.type == MessageEntity.TEXT_MENTION and entity.user is not None:
            if entity.user.id == me.id:
                mentioned = True
                edits.append((start, end, ""))
            else:
                who = f"{PLATFORM}:{entity.user.id}"
                others.append(who)
                if is_command:
                    edits.append((start, end, who))
    for start, end, new in sorted(edits, reverse=True):
        before, after = text[:start], text[end:]
        if not new and before.endswith(" ") and after.startswith(" "):
            after = after[1:]
        text = before + new + after
    return text.strip(), is_command, mentioned, tuple(others)


def _replies_to_bot(message: Message, me: BotIdentity) -> bool:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None:
        return False
    if message.is_topic_message and replied.message_id == message.message_thread_id:
        return False  # every topic message "replies" to the topic's first message
    return replied.from_user.id == me.id


def _callback(
    update: Update,
    *,
    me: BotIdentity,
    group_scope: str,
    aliases: Mapping[int, int],
    raw: Mapping[str, Any] | None,
) -> Inbound | None:
    query = update.callback_query
    if query is None or query.data is None or query.message is None:
        return None
    action = parse_callback_data(query.data)
    if action is None:
        return None
    pressed = query.message
    chat = pressed.chat
    is_dm = chat.type == "private"
    sender = query.from_user
    thread = ""
    kind: ChatKind = "dm" if is_dm else "group"
    if isinstance(pressed, Message) and pressed.is_topic_message and pressed.message_thread_id:
        kind = "topic"
        thread = str(pressed.message_thread_id)
    key = conversation_key(
        platform=PLATFORM,
        workspace=str(me.id),
        chat=str(aliases.get(chat.id, chat.id)),
        kind=kind,
        user=str(sender.id),
        thread=thread,
        group_scope=group_scope,
    )
    return Inbound(
        platform=PLATFORM,
        delivery_id=str(update.update_id),
        key=key,
        user_id=str(sender.id),
        text="",
        channel_id=str(chat.id),
        user_name=sender.username or sender.full_name,
        is_dm=is_dm,
        reply_to_bot=True,
        language=sender.language_code or "",
        message_id=str(pressed.message_id),
        bot_id=me.qualified,
        action=action,
        raw=raw if raw is not None else update.to_dict(),
    )
