"""The Telegram adapter: intake (polling or webhook) → inbox → core → Bot API.

Who calls: ``bots/telegram.py`` builds a :class:`TelegramAdapter` with a ``Conversation``, an
``Inbox`` and :class:`TelegramOptions`, enters it (``async with``) and awaits
:meth:`TelegramAdapter.serve` until a stop signal or a fatal error. Tests do the same against
the fake Bot API.

Delivery ("at least once in, exactly one answer out", Contract 2):

- **Polling** does not use PTB's ``Updater``: it advances the ``getUpdates`` offset (which
  *confirms* updates to Telegram) as soon as a batch is queued, before any handler ran, so a
  crash loses those updates (``reference/platforms.md`` §0.3, verified). Instead
  :meth:`TelegramAdapter._poll` calls ``bot.get_updates`` itself, records every update of a
  batch in the inbox (committed), and only then asks for the next offset. If recording fails,
  the offset stays, so Telegram delivers the batch again.
- **Webhook**: an aiohttp route (not PTB's tornado server, which is not installed and compares
  the secret with ``!=``) checks ``X-Telegram-Bot-Api-Secret-Token`` with
  :func:`hmac.compare_digest` (403), caps the body (413), answers malformed JSON or a body that
  is no ``Update`` with 400, records the update in the inbox and only then answers 200; a store
  failure answers 503 so Telegram re-sends. It never answers 500.
- An update already in the inbox (a re-delivery, or an update that another replica or a crashed
  run recorded) is not handled again here; entries whose lease expired are re-driven at start-up
  and every ``redrive_interval`` (:meth:`TelegramAdapter.redrive`). The core's delivery claim
  makes a second handling of one ``update_id`` a no-op.
- Handling: updates go through an ``Application`` with concurrent updates (one slow chat never
  blocks another; the core keeps each conversation in order); a button press is answered
  (``answerCallbackQuery``) before the core runs; ``inbox.done`` follows the core's answer,
  whatever it was. An update cut off by the drain deadline is *not* marked done, so it is
  re-driven after the restart.

Start-up: ``getMe`` (a rejected token raises :class:`~core.errors.ConfigError`; an unreachable
server is retried with full-jitter backoff for ``retry_budget`` seconds, then
:class:`PlatformError`), ``setMyCommands`` in English (default) and Chinese (``language_code``
``zh``), then the intake. A 409 from ``getUpdates`` (another poller, or a webhook is set) stops
intake at once with a :class:`PlatformError` that :meth:`serve` raises: no hot loop.

Stop: intake stops first (the poll task is cancelled; the webhook answers 503), in-flight answers
get ``drain_timeout`` seconds, the rest are cancelled, then the ``Application`` and the HTTP
connections are shut down. Idempotent and safe after a failed start.

Telegram-specific words: ``/start`` is answered by the core's help preceded by a greeting
(``telegram.start``); ``/help`` in a group is followed by the privacy-mode note for admins
(``telegram.privacy``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

from aiohttp import web
from telegram import BotCommand, BotCommandScopeDefault, Update
from telegram.error import (
    BadRequest,
    Conflict,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler

from adapters.base import AdapterLimits, BaseAdapter, ConversationHandler, MessageRef
from adapters.telegram.convert import PLATFORM, BotIdentity, migration, to_inbound
from adapters.telegram.render import LIMITS, TelegramPrimitives
from core.commands import command_specs
from core.errors import ConfigError, PlatformError, PlatformRetryAfter
from core.i18n import normalize_language, t
from core.types import Button, Inbound

__all__ = ["ALLOWED_UPDATES", "InboxPort", "TelegramAdapter", "TelegramOptions"]

log = logging.getLogger(__name__)

#: The update types hybot handles (others are not even fetched).
ALLOWED_UPDATES: tuple[str, ...] = ("message", "callback_query")

_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class _Entry(Protocol):
    @property
    def delivery_id(self) -> str: ...

    @property
    def payload(self) -> str: ...


class InboxPort(Protocol):
    """What the adapter needs of ``core.inbox.Inbox`` (Contract 2)."""

    async def record(self, platform: str, delivery_id: str, payload: str) -> bool: ...

    async def done(self, platform: str, delivery_id: str) -> None: ...

    async def due(self, platform: str, *, limit: int = 100) -> Sequence[_Entry]: ...


@dataclass(frozen=True, slots=True)
class TelegramOptions:
    """How to reach Telegram and how to receive updates (built by ``bots/`` from settings).

    ``base_url`` is PTB's: the API root followed by ``/bot`` (the token is appended).
    ``webhook_url`` is the public URL registered with ``setWebhook``; the route listens on
    ``webhook_host:webhook_port`` at that URL's path. ``retry_budget`` is how long (seconds)
    an unreachable Bot API is retried before the adapter gives up.
    """

    token: str = field(repr=False)
    base_url: str = "https://api.telegram.org/bot"
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8443
    max_body: int = 256 * 1024
    poll_timeout: float = 30.0
    retry_budget: float = 60.0
    drain_timeout: float = 25.0
    redrive_interval: float = 60.0
    group_scope: str = "shared"
    concurrency: int = 256
    #: HTTP connections to the Bot API. httpcore scans every pooled connection on each
    #: request, so a pool of 256 cost more CPU than the Bot API calls themselves (profiled);
    #: 32 keeps a hundred chats streaming at once without queueing noticeably.
    connection_pool: int = 32
    #: New messages per second across all chats (Telegram's limit is about 30; 0: unpaced).
    sends_per_second: int = 30
    register_commands: bool = True

    @property
    def webhook_path(self) -> str:
        return urlparse(self.webhook_url).path or "/telegram"


class TelegramAdapter(BaseAdapter):
    """Telegram on python-telegram-bot (see the module docstring)."""

    limits: AdapterLimits = LIMITS

    def __init__(
        self,
        *,
        conversation: ConversationHandler,
        inbox: InboxPort,
        options: TelegramOptions,
    ) -> None:
        super().__init__(conversation=conversation, drain_timeout=options.drain_timeout)
        self._inbox = inbox
        self._opts = options
        builder: ApplicationBuilder[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(options.token)
            .base_url(options.base_url)
            .updater(None)
            .concurrent_updates(options.concurrency)
            .connection_pool_size(options.connection_pool)
            .pool_timeout(5.0)
            .get_updates_read_timeout(options.poll_timeout + 10.0)
        )
        self._app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self._app.add_handler(TypeHandler(Update, self._on_update))
        self._prims = TelegramPrimitives(
            bot=self._app.bot, sends_per_second=options.sends_per_second
        )
        self._me: BotIdentity | None = None
        self._aliases: dict[int, int] = {}
        self._raw: dict[int, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._started = False
        self._fatal: asyncio.Future[None] | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

    # --- properties --------------------------------------------------------------------------

    @property
    def me(self) -> BotIdentity:
        if self._me is None:
            raise RuntimeError("the adapter has not started")
        return self._me

    @property
    def application(self) -> Application[Any, Any, Any, Any, Any, Any]:
        return self._app

    @property
    def webhook_port(self) -> int:
        """The port the webhook route listens on (useful with port 0)."""
        return self._port

    # --- primitives (Contract 1) ------------------------------------------------------------

    def measure(self, text: str) -> int:
        return self._prims.measure(text)

    def pressed_message(self, inbound: Inbound) -> MessageRef | None:
        return self._prims.pressed_message(inbound)

    async def send_text(
        self,
        inbound: Inbound,
        text: str,
        *,
        private: bool = False,
        buttons: tuple[Button, ...] = (),
    ) -> MessageRef:
        return await self._prims.send_text(inbound, text, private=private, buttons=buttons)

    async def edit_text(
        self, ref: MessageRef, text: str, *, buttons: tuple[Button, ...] = ()
    ) -> None:
        await self._prims.edit_text(ref, text, buttons=buttons)

    async def delete(self, ref: MessageRef) -> None:
        await self._prims.delete(ref)

    async def send_image(
        self, inbound: Inbound, data: bytes, mime: str, caption: str
    ) -> MessageRef:
        return await self._prims.send_image(inbound, data, mime, caption)

    async def send_draft(self, inbound: Inbound, draft_id: int, text: str) -> None:
        await self._prims.send_draft(inbound, draft_id, text)

    async def send_typing(
        self, inbound: Inbound, *, action: Literal["typing", "upload_photo"] = "typing"
    ) -> None:
        await self._prims.send_typing(inbound, action=action)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (``getMe``), register commands, re-drive due inbox entries, start intake."""
        loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        await self._connect()
        self._started = True
        if self._opts.register_commands:
            await self._register_commands()
        await self._app.start()
        await self.redrive()
        if self._opts.mode == "webhook":
            await self._start_webhook()
        else:
            await self._call_with_budget(
                "deleteWebhook", lambda: self._app.bot.delete_webhook(drop_pending_updates=False)
            )
            self._spawn(self._poll(), "hybot-telegram-poll")
        self._spawn(self._redrive_loop(), "hybot-telegram-redrive")

    async def stop(self) -> None:
        """Stop intake, drain in-flight answers within ``drain_timeout``, shut down."""
        if self._stopping:
            return
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.drain(self._opts.drain_timeout)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if self._app.running:
                await self._app.stop()
            if self._started:
                try:
                    await self._app.shutdown()
                except Exception:
                    log.warning("Telegram application shutdown failed", exc_info=True)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (returns) or intake fails for good (raises the error:
        :class:`ConfigError` for a rejected token, :class:`PlatformError` for a conflict or an
        unreachable server)."""
        assert self._fatal is not None, "enter the adapter first"
        waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        fatal: asyncio.Future[Any] = self._fatal
        try:
            await asyncio.wait({waiter, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._fatal.done():
            self._fatal.result()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _die(self, err: BaseException) -> None:
        log.error("Telegram intake stopped: %s", err)
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_exception(err)

    async def _call_with_budget(self, what: str, call: Any) -> Any:
        """``call()`` retried on network errors with full-jitter backoff for ``retry_budget``
        seconds; a rejected token becomes :class:`ConfigError`."""
        started = time.monotonic()
        delay = 0.5
        while True:
            try:
                return await call()
            except InvalidToken as err:
                raise ConfigError(
                    "Telegram rejected the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN"
                ) from err
            except RetryAfter as err:
                await asyncio.sleep(float(_retry_seconds(err)))
            except BadRequest as err:  # a NetworkError in PTB, but retrying cannot help
                raise PlatformError(f"Telegram refused {what}: {err.message}") from err
            except (TimedOut, NetworkError) as err:
                if time.monotonic() - started >= self._opts.retry_budget:
                    raise PlatformError(
                        f"cannot reach the Telegram Bot API ({what}) after "
                        f"{self._opts.retry_budget:g} s: {err.message}"
                    ) from err
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 30.0)
            except TelegramError as err:  # e.g. setWebhook refusing the URL
                raise PlatformError(f"Telegram refused {what}: {err.message}") from err

    async def _connect(self) -> None:
        await self._call_with_budget("getMe", self._app.initialize)
        bot = self._app.bot
        self._me = BotIdentity(id=bot.id, username=bot.username)

    async def _register_commands(self) -> None:
        specs = [s for s in command_specs() if not s.admin_only]
        for lang in ("en", "zh"):
            commands = [BotCommand(s.name, s.description(lang)[:256]) for s in specs]
            try:
                await self._app.bot.set_my_commands(
                    commands,
                    scope=BotCommandScopeDefault(),
                    language_code=None if lang == "en" else lang,
                )
            except TelegramError as err:
                log.warning("setMyCommands (%s) failed: %s", lang, err.message)

    # --- intake ------------------------------------------------------------------------------

    async def _intake(self, update: Update, payload: str, raw: dict[str, Any]) -> None:
        """Record ``update`` in the inbox (committed), then queue it if it is new."""
        if await self._inbox.record(PLATFORM, str(update.update_id), payload):
            await self._queue(update, raw)

    async def _queue(self, update: Update, raw: dict[str, Any]) -> None:
        """Hand ``update`` to the application; ``raw`` (as received) rides along for
        :attr:`Inbound.raw`, so it is not rebuilt from the parsed update."""
        self._raw[update.update_id] = raw
        await self._app.update_queue.put(update)

    async def _intake_batch(self, updates: Sequence[Update]) -> None:
        """Record a ``getUpdates`` batch in the inbox (concurrently: the store commits them
        together), then queue the new ones in order. Raises the first recording error after
        queueing the others, so the offset stays and Telegram sends the batch again."""
        raws = [update.to_dict() for update in updates]
        results = await asyncio.gather(
            *(
                self._inbox.record(
                    PLATFORM, str(update.update_id), json.dumps(raw, ensure_ascii=False)
                )
                for update, raw in zip(updates, raws, strict=True)
            ),
            return_exceptions=True,
        )
        failure: BaseException | None = None
        for update, raw, result in zip(updates, raws, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            elif result:
                await self._queue(update, raw)
        if failure is not None:
            raise failure

    async def _poll(self) -> None:
        bot = self._app.bot
        offset: int | None = None
        failing_since: float | None = None
        delay = 0.5
        while not self._stopping:
            try:
                updates = await bot.get_updates(
                    offset=offset,
                    timeout=int(self._opts.poll_timeout),
                    allowed_updates=list(ALLOWED_UPDATES),
                )
                await self._intake_batch(updates)
            except asyncio.CancelledError:
                raise
            except InvalidToken as err:
                self._die(
                    ConfigError(
                        "Telegram rejected the bot token (401 Unauthorized): "
                        "check TELEGRAM_BOT_TOKEN"
                    )
                )
                del err
                return
            except Conflict as err:
                self._die(
                    PlatformError(
                        "Telegram answered 409 Conflict: another process is polling with this "
                        "bot token, or a webhook is set. Stop the other instance (or use "
                        f"HYBOT_TELEGRAM_MODE=webhook). Telegram said: {err.message}"
                    )
                )
                return
            except RetryAfter as err:
                await asyncio.sleep(_retry_seconds(err))
                continue
            except Exception as err:  # network errors, a busy store: retry within the budget
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self._opts.retry_budget:
                    self._die(
                        PlatformError(
                            f"cannot fetch Telegram updates for {self._opts.retry_budget:g} s: "
                            f"{type(err).__name__}"
                        )
                    )
                    return
                log.warning("getUpdates failed (%s); retrying", type(err).__name__)
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 30.0)
                continue
            failing_since = None
            delay = 0.5
            if updates:
                offset = updates[-1].update_id + 1  # confirms the batch: all of it is recorded

    async def redrive(self) -> int:
        """Queue every inbox entry whose lease expired (a crash mid-answer); returns how many."""
        entries = await self._inbox.due(PLATFORM)
        for entry in entries:
            try:
                raw = json.loads(entry.payload)
                update = Update.de_json(raw, self._app.bot)
            except Exception:
                log.error("inbox entry %s is no Telegram update; dropped", entry.delivery_id)
                await self._inbox.done(PLATFORM, entry.delivery_id)
                continue
            if update is not None:
                log.info("re-driving Telegram update %s", entry.delivery_id)
                await self._queue(update, raw)
        return len(entries)

    async def _redrive_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._opts.redrive_interval)
            try:
                await self.redrive()
            except Exception:
                log.warning("re-driving the inbox failed", exc_info=True)

    async def _start_webhook(self) -> None:
        opts = self._opts
        app = web.Application(client_max_size=opts.max_body)
        app.router.add_post(opts.webhook_path, self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, opts.webhook_host, opts.webhook_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
        if opts.webhook_url:
            await self._call_with_budget(
                "setWebhook",
                lambda: self._app.bot.set_webhook(
                    opts.webhook_url,
                    secret_token=opts.webhook_secret or None,
                    allowed_updates=list(ALLOWED_UPDATES),
                ),
            )

    async def _webhook(self, request: web.Request) -> web.Response:
        try:
            return await self._webhook_inner(request)
        except Exception:
            log.exception("webhook request failed")
            return web.Response(status=503, text="try again")

    async def _webhook_inner(self, request: web.Request) -> web.Response:
        if self._stopping:
            return web.Response(status=503, text="shutting down")
        given = request.headers.get(_SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._opts.webhook_secret.encode()):
            return web.Response(status=403, text="forbidden")
        limit = self._opts.max_body
        if request.content_length is not None and request.content_length > limit:
            return web.Response(status=413, text="too large")
        body = bytearray()
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            body += chunk
            if len(body) > limit:
                return web.Response(status=413, text="too large")
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("no update_id")
            update = Update.de_json(data, self._app.bot)
            if update is None:
                raise ValueError("empty update")
        except Exception:
            return web.Response(status=400, text="bad update")
        await self._intake(update, body.decode("utf-8", errors="replace"), data)
        return web.Response(status=200, text="ok")

    # --- handling ----------------------------------------------------------------------------

    async def _on_update(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update):
            return
        try:
            handled = await self._handle(update)
        except asyncio.CancelledError:
            raise  # cut off by the drain deadline: not done, re-driven after the restart
        except Exception:
            log.exception("answering Telegram update %s failed", update.update_id)
            handled = True
        if not handled:
            return  # refused while draining: left for the re-drive
        try:
            await self._inbox.done(PLATFORM, str(update.update_id))
        except Exception:
            log.warning("marking update %s done failed", update.update_id, exc_info=True)

    async def _handle(self, update: Update) -> bool:
        """Answer ``update``; ``False`` when it was refused because the adapter is draining."""
        moved = migration(update)
        if moved is not None:
            old, new = moved
            self._aliases[new] = self._aliases.get(old, old)
        if update.callback_query is not None:
            try:
                await update.callback_query.answer()
            except TelegramError as err:
                log.info("answerCallbackQuery failed: %s", err.message)
        inbound = to_inbound(
            update,
            me=self.me,
            group_scope=self._opts.group_scope,
            chat_aliases=self._aliases,
            raw=self._raw.pop(update.update_id, None),
        )
        if inbound is None:
            return True
        if self.draining:
            return False
        command = inbound.text.split(maxsplit=1)[0].lower() if inbound.text else ""
        lang = normalize_language(inbound.language) or "en"
        if command == "/start":
            await self._say(inbound, t("telegram.start", lang))
        handled = await self.dispatch(inbound)
        if handled and command in ("/help", "/start") and not inbound.is_dm:
            await self._say(inbound, t("telegram.privacy", lang))
        return handled

    async def _say(self, inbound: Inbound, text: str) -> None:
        """Send one of the adapter's own sentences (honouring "retry after" a few times)."""
        for _ in range(3):
            try:
                await self.send_text(inbound, text)
                return
            except PlatformRetryAfter as err:
                await asyncio.sleep(min(err.retry_after, 30.0))
            except PlatformError as err:
                log.warning("could not send a Telegram notice: %s", err)
                return


def _retry_seconds(err: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = err.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
