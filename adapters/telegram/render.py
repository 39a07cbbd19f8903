"""The Telegram primitives of Contract 1: Bot API calls that show one thing each.

Who calls: :class:`adapters.telegram.app.TelegramAdapter` delegates its ``send_text``,
``edit_text``, ``delete``, ``send_image``, ``send_typing``, ``measure`` and ``pressed_message``
here; the rendering policy (streaming, coalescing, splitting, retries) is ``BaseAdapter``'s.

Contracts:

- **Formatting**: Markdown from the model or the core is converted by *telegramify-markdown*
  (the maintained converter for Telegram; chosen over hand-escaped MarkdownV2 because it emits
  plain text plus ``MessageEntity`` ranges in UTF-16 units, so no ``parse_mode`` is ever sent and
  the usual "can't parse entities" failures of model output cannot happen). If Telegram still
  refuses the entities, the same message is sent again as plain text (the Markdown source when it
  fits, else the converted text without entities): a parse error never reaches a user.
- :meth:`TelegramPrimitives.measure` counts UTF-16 units (Telegram's unit for the 4096 limit)
  of the converted text or of the Markdown source, whichever is longer, so every part the base
  splits fits formatted and as the plain-text fallback.
- **Errors**: PTB's ``RetryAfter`` becomes :class:`PlatformRetryAfter` (the base waits and
  retries the same call); every other ``TelegramError`` becomes :class:`PlatformError` whose
  message names the operation and Telegram's description (never the token or the user's text).
  "message is not modified" on an edit is success; deleting a message that is already gone is
  success.
- **Where**: answers go to the chat of the inbound (``channel_id``, the real chat id even when a
  migrated group's conversation key keeps the old one) and its forum topic
  (``message_thread_id``); in groups they reply to the user's message (without failing if it
  was deleted). A ``private`` notice in a group goes to the user's private chat when the user
  has one with the bot, else into the group as a reply.
- **Buttons** become one row of inline buttons, ``callback_data`` from
  :func:`adapters.telegram.convert.callback_data`.
- **Flood limits**: new messages wait for room (30 per second overall, 20 per minute per
  group) instead of provoking a 429; edits are paced by the base's ``min_edit_interval``.
- **Drafts**: in private chats the base streams through ``sendMessageDraft`` (an ephemeral
  ~30 s preview that animates while its ``draft_id`` stays the same; Bot API 9.3+, all bots
  since 10.0) and persists the answer with ``sendMessage`` (``LIMITS.drafts``). The draft is
  formatted like a message (entities, plain-text fallback). A server without the method (an
  old self-hosted Bot API server answers 404) raises :class:`PlatformError`, and the base
  falls back to ``editMessageText`` streaming. Drafts are not paced by the flood windows
  (they are no messages); the base updates one at most every ``LIMITS.draft_interval``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Literal

import telegramify_markdown
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    ReplyParameters,
)
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegramify_markdown import config as _config
from telegramify_markdown import converter as _converter

from adapters.base import AdapterLimits, MessageRef
from adapters.telegram.convert import callback_data, utf16_len
from core.errors import PlatformError, PlatformRetryAfter
from core.types import Button, Inbound

__all__ = ["LIMITS", "SendWindow", "TelegramPrimitives", "format_markdown"]

log = logging.getLogger(__name__)

LIMITS = AdapterLimits(
    max_text_units=4096,
    unit="utf16",
    min_edit_interval=1.0,
    caption_units=1024,
    typing_interval=4.0,
    stream=True,
    drafts=True,  # the base uses them only in DMs, i.e. private chats
    draft_interval=0.5,  # a preview, not a message: smoother than the 1 s of edits
)

_PARSE_ERRORS = ("can't parse entities", "entity", "entities")


class _LiteralHtml(_converter.EventWalker):
    """telegramify-markdown's walker, except that inline HTML stays as typed text.

    The stock walker drops inline HTML it does not know, so ``/ask <question>`` (the core's
    usage lines) or a model writing about ``<div>`` would lose words. Telegram shows text, not
    HTML, so the tag is written as it stands (its ``||spoiler||`` tags keep their meaning)."""

    def _on_inline_html(self, html: str) -> None:
        if html.strip().lower() in ("<tg-spoiler>", "</tg-spoiler>"):
            super()._on_inline_html(html)
        else:
            self._buf.write(html)


def _convert(text: str) -> tuple[str, list[telegramify_markdown.MessageEntity]]:
    """``telegramify_markdown.convert`` with :class:`_LiteralHtml` (the library's own steps:
    ``_parse`` then the walker), or the stock ``convert`` should those internals change."""
    try:
        config = _config.get_runtime_config()
        parsed, events = _converter._parse(text, _converter.STANDARD_OPTIONS, latex_escape=True)
        plain, entities, _ = _LiteralHtml(config, parsed).walk(events)
    except (AttributeError, TypeError):  # internals moved in a newer 1.x
        return telegramify_markdown.convert(text)
    return plain, entities


@functools.lru_cache(maxsize=512)
def format_markdown(text: str) -> tuple[str, tuple[MessageEntity, ...]]:
    """``text`` (Markdown) as Telegram plain text plus entities (offsets in UTF-16 units).

    Falls back to ``(text, ())`` when the converter fails or produces nothing visible."""
    try:
        plain, entities = _convert(text)
    except Exception:  # a converter bug must never cost the user the answer
        log.warning("telegramify-markdown failed; sending plain text", exc_info=True)
        return text, ()
    if not plain.strip():
        return text, ()
    converted = tuple(
        MessageEntity(
            type=e.type,
            offset=e.offset,
            length=e.length,
            url=e.url,
            language=e.language,
            custom_emoji_id=e.custom_emoji_id,
        )
        for e in entities
        if e.length > 0
    )
    return plain, converted


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _translate(err: TelegramError, operation: str) -> PlatformError:
    if isinstance(err, RetryAfter):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PTB deprecates the int form of retry_after
            wait = _seconds(err.retry_after)
        return PlatformRetryAfter(f"telegram {operation}: flood control", retry_after=wait)
    return PlatformError(f"telegram {operation}: {type(err).__name__}: {err.message}")


def _is_parse_error(err: BadRequest) -> bool:
    text = err.message.lower()
    return any(word in text for word in _PARSE_ERRORS)


def _markup(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    row: list[InlineKeyboardButton] = []
    for button in buttons:
        try:
            row.append(InlineKeyboardButton(button.label, callback_data=callback_data(button)))
        except ValueError:
            log.warning("button %s dropped: payload too long for Telegram", button.action)
    return InlineKeyboardMarkup([row]) if row else None


def _cut_utf16(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-16 units (never half a pair)."""
    if utf16_len(text) <= limit:
        return text
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit - 1:
            return text[:index] + "…"
    return text


class SendWindow:
    """At most ``limit`` sends per ``period`` seconds (a sliding window): :meth:`acquire`
    waits until one more send fits. ``clock``/``sleep`` are injectable for tests."""

    def __init__(
        self,
        *,
        limit: int,
        period: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limit = limit
        self._period = period
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()

    async def acquire(self) -> None:
        while True:
            now = self._clock()
            while self._sent and self._sent[0] <= now - self._period:
                self._sent.popleft()
            if len(self._sent) < self._limit:
                self._sent.append(now)
                return
            await self._sleep(self._sent[0] + self._period - now)


class TelegramPrimitives:
    """The Bot API primitives for one bot (see the module docstring for the contracts).

    New messages (``sendMessage``, ``sendPhoto``) keep to Telegram's flood limits before they
    are sent rather than after a 429: at most ``sends_per_second`` overall (Telegram's 30;
    0: no overall pacing, e.g. with paid broadcasts) and 20 per minute in each group. Edits are
    paced by the base (``min_edit_interval``) and not counted here."""

    limits = LIMITS

    def __init__(
        self,
        *,
        bot: Bot,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sends_per_second: int = 30,
    ) -> None:
        self._bot = bot
        self._clock = clock
        self._sleep = sleep
        self._overall = (
            SendWindow(limit=sends_per_second, period=1.0, clock=clock, sleep=sleep)
            if sends_per_second > 0
            else None
        )
        self._groups: dict[int, SendWindow] = {}

    async def _pace(self, chat_id: int) -> None:
        if chat_id < 0:  # groups, supergroups and channels have negative ids
            window = self._groups.get(chat_id)
            if window is None:
                if len(self._groups) > 10_000:
                    self._groups.clear()  # bound the memory; a forgotten window only resets
                window = self._groups[chat_id] = SendWindow(
                    limit=20, period=60.0, clock=self._clock, sleep=self._sleep
                )
            await window.acquire()
        if self._overall is not None:
            await self._overall.acquire()

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _chat_id(inbound: Inbound) -> int:
        return int(inbound.channel_id or inbound.key.chat)

    @staticmethod
    def _thread(thread: str) -> int | None:
        return int(thread) if thread else None

    @staticmethod
    def _reply(inbound: Inbound) -> ReplyParameters | None:
        if inbound.is_dm or inbound.action is not None or not inbound.message_id:
            return None
        return ReplyParameters(message_id=int(inbound.message_id), allow_sending_without_reply=True)

    async def _send(
        self,
        chat_id: int,
        text: str,
        *,
        thread: int | None,
        reply: ReplyParameters | None,
        markup: InlineKeyboardMarkup | None,
    ) -> Message:
        plain, entities = format_markdown(text)
        await self._pace(chat_id)
        try:
            return await self._bot.send_message(
                chat_id,
                plain,
                entities=entities or None,
                message_thread_id=thread,
                reply_parameters=reply,
                reply_markup=markup,
            )
        except BadRequest as err:
            if not entities or not _is_parse_error(err):
                raise
            log.info("Telegram refused the formatting (%s); sending plain text", err.message)
        fallback = text if utf16_len(text) <= LIMITS.max_text_units else plain
        return await self._bot.send_message(
            chat_id,
            fallback,
            message_thread_id=thread,
            reply_parameters=reply,
            reply_markup=markup,
        )

    # --- the primitives --------------------------------------------------------------------

    def measure(self, text: str) -> int:
        """UTF-16 units Telegram counts: the larger of the formatted text and the Markdown
        source. The source bound keeps the measure additive (the converter trims whitespace at
        the edges of a piece) and guarantees that the plain-text fallback fits as well."""
        return max(utf16_len(text), utf16_len(format_markdown(text)[0]))

    def pressed_message(self, inbound: Inbound) -> MessageRef | None:
        """The bot message whose button produced ``inbound``, or ``None``."""
        if inbound.action is None or not inbound.message_id:
            return None
        return MessageRef(
            chat=inbound.channel_id or inbound.key.chat,
            id=inbound.message_id,
            thread=inbound.key.thread,
        )

    async def send_text(
        self,
        inbound: Inbound,
        text: str,
        *,
        private: bool = False,
        buttons: tuple[Button, ...] = (),
    ) -> MessageRef:
        markup = _markup(buttons)
        thread = self._thread(inbound.key.thread)
        if private and not inbound.is_dm and inbound.user_id.isdigit():
            try:
                sent = await self._send(
                    int(inbound.user_id), text, thread=None, reply=None, markup=markup
                )
                return MessageRef(chat=str(sent.chat_id), id=str(sent.message_id))
            except (Forbidden, BadRequest):
                pass  # the user never opened a private chat with the bot: answer in the group
            except TelegramError as err:
                raise _translate(err, "sendMessage") from err
        try:
            sent = await self._send(
                self._chat_id(inbound),
                text,
                thread=thread,
                reply=self._reply(inbound),
                markup=markup,
            )
        except TelegramError as err:
            raise _translate(err, "sendMessage") from err
        return MessageRef(
            chat=str(sent.chat_id), id=str(sent.message_id), thread=inbound.key.thread
        )

    async def edit_text(
        self, ref: MessageRef, text: str, *, buttons: tuple[Button, ...] = ()
    ) -> None:
        markup = _markup(buttons)
        plain, entities = format_markdown(text)
        try:
            try:
                await self._bot.edit_message_text(
                    plain,
                    chat_id=int(ref.chat),
                    message_id=int(ref.id),
                    entities=entities or None,
                    reply_markup=markup,
                )
                return
            except BadRequest as err:
                if "not modified" in err.message.lower():
                    return
                if not entities or not _is_parse_error(err):
                    raise
                log.info("Telegram refused the formatting (%s); editing as plain text", err.message)
            fallback = text if utf16_len(text) <= LIMITS.max_text_units else plain
            try:
                await self._bot.edit_message_text(
                    fallback, chat_id=int(ref.chat), message_id=int(ref.id), reply_markup=markup
                )
            except BadRequest as err:
                if "not modified" not in err.message.lower():
                    raise
        except TelegramError as err:
            raise _translate(err, "editMessageText") from err

    async def delete(self, ref: MessageRef) -> None:
        try:
            await self._bot.delete_message(int(ref.chat), int(ref.id))
        except BadRequest as err:
            if "not found" in err.message.lower():
                return  # already gone: what the caller wanted
            raise _translate(err, "deleteMessage") from err
        except TelegramError as err:
            raise _translate(err, "deleteMessage") from err

    async def send_image(
        self, inbound: Inbound, data: bytes, mime: str, caption: str
    ) -> MessageRef:
        """``sendPhoto``; the caption is formatted like text (so :meth:`measure`, which the
        base cut it with, holds), with the plain caption as the fallback."""
        chat_id = self._chat_id(inbound)
        thread = self._thread(inbound.key.thread)
        reply = self._reply(inbound)
        text, entities = format_markdown(caption) if caption else ("", ())
        await self._pace(chat_id)
        if utf16_len(text) > LIMITS.caption_units:
            text, entities = _cut_utf16(text, LIMITS.caption_units), ()
        try:
            try:
                sent = await self._bot.send_photo(
                    chat_id,
                    data,
                    caption=text or None,
                    caption_entities=entities or None,
                    message_thread_id=thread,
                    reply_parameters=reply,
                )
            except BadRequest as err:
                if not entities or not _is_parse_error(err):
                    raise
                sent = await self._bot.send_photo(
                    chat_id,
                    data,
                    caption=_cut_utf16(text, LIMITS.caption_units) or None,
                    message_thread_id=thread,
                    reply_parameters=reply,
                )
        except TelegramError as err:
            raise _translate(err, "sendPhoto") from err
        return MessageRef(
            chat=str(sent.chat_id), id=str(sent.message_id), thread=inbound.key.thread
        )

    async def send_draft(self, inbound: Inbound, draft_id: int, text: str) -> None:
        """``sendMessageDraft`` into the private chat of ``inbound`` (and its topic, where
        private chats have topics), formatted like :meth:`send_text` with the same plain-text
        fallback."""
        chat_id = self._chat_id(inbound)
        thread = self._thread(inbound.key.thread)
        plain, entities = format_markdown(text)
        try:
            try:
                await self._bot.send_message_draft(
                    chat_id,
                    draft_id,
                    plain,
                    message_thread_id=thread,
                    entities=entities or None,
                )
                return
            except BadRequest as err:
                if not entities or not _is_parse_error(err):
                    raise
                log.info("Telegram refused the formatting (%s); drafting plain text", err.message)
            fallback = text if utf16_len(text) <= LIMITS.max_text_units else plain
            await self._bot.send_message_draft(
                chat_id, draft_id, fallback, message_thread_id=thread
            )
        except InvalidToken as err:
            # PTB reads every 404 as a bad token; here it means the server lacks the method
            # (the token was accepted by getMe at start-up).
            raise PlatformError("telegram sendMessageDraft: not supported by the server") from err
        except TelegramError as err:
            raise _translate(err, "sendMessageDraft") from err

    async def send_typing(
        self, inbound: Inbound, *, action: Literal["typing", "upload_photo"] = "typing"
    ) -> None:
        try:
            await self._bot.send_chat_action(
                self._chat_id(inbound),
                action,
                message_thread_id=self._thread(inbound.key.thread),
            )
        except TelegramError as err:
            raise _translate(err, "sendChatAction") from err
