"""The Slack adapter: slack-bolt's ``AsyncApp`` inside, HTTP (Events API) or Socket Mode.

Who calls: ``bots/slack.py`` builds a :class:`SlackAdapter` (keyword injection: the core, a
``slack_sdk`` ``AsyncWebClient`` pointed at Slack or a fake, the signing secret, the
:class:`~core.inbox.Inbox`) and runs ``async with adapter: await adapter.wait_closed()``.

Intake, in order, for every request (design §2 "at least once in, exactly one answer out"):

1. **Guard** (HTTP mode, :class:`RequestGuard`, in front of bolt): a body above
   ``max_body`` → 413; a missing/non-numeric timestamp, one more than 300 s away, a wrong
   signature, or a signature already seen (a replay) → 401; a body that is not UTF-8, not
   JSON / a form, or a form whose ``payload`` is not a JSON object → 400. Never 500, and
   nothing of the request (body, ``response_url``, signature) is logged: bolt's own
   verification (which logs the body at INFO and answers 500 on a malformed timestamp) is off,
   because the guard has already verified the raw bytes. While stopping, every request → 503,
   so Slack re-delivers it (to another replica, or to this one after a restart).
2. **Convert and record** (a bolt global middleware, so HTTP and Socket Mode share it): the
   payload becomes an :class:`~core.types.Inbound` (:mod:`adapters.slack.convert`) or is
   acknowledged and dropped (an unmentioned message in a channel thread this process does not
   know — it restarted since — first costs one ``conversations.replies`` look-up, cached,
   to see whether the bot posted there: :meth:`SlackAdapter._bot_in_thread`); the inbound
   is recorded in the inbox under its delivery id
   *before* bolt acknowledges. A new entry is dispatched in the background (a tracked task).
   A known one (a Slack retry, or ``app_mention`` + ``message`` for one ``ts``) is skipped
   while this process is still answering it; otherwise it is dispatched again and the core's
   delivery claim decides: a finished delivery yields nothing, one whose first attempt died
   (its claim lease ran out) is answered.
3. **Acknowledge** (bolt): events at once (``process_before_response=False``); the slash
   command's listener ``ack()`` s with a short ephemeral "Working on it…", well within 3 s,
   and the answer follows through messages or the ``response_url``. The answer itself is not
   run by a bolt listener (bolt runs listeners, lazy ones too, in tasks nobody tracks, so they
   could not be drained): the intake middleware starts it with
   :meth:`~adapters.base.BaseAdapter.dispatch`, whose tasks :meth:`drain` waits for; bolt's
   listeners only acknowledge.
4. **Done**: after the core finished with the delivery, the inbox entry is marked done. At
   start-up and every ``redrive_interval`` seconds, entries whose lease ran out (the process
   died mid-answer) are dispatched again.

Why one slash command with subcommands (``/hy image …``, ``/hy quota``, ``/hy <question>``):
one manifest entry instead of twelve; no clash with other apps' or Slack's own ``/remind``-style
names (``/image`` and ``/usage`` are taken in many workspaces); the admin commands stay out of
everyone's command menu; and the core's command parser is reused as is. The name is
configurable (``SlackOptions.command``).

Drain (SIGTERM): :meth:`SlackAdapter.stop` stops intake (503 / no Socket Mode acks), waits
for in-flight answers up to ``grace`` seconds, cancels the rest (their inbox entries stay
unfinished and are re-driven later), then closes the server or the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import AdapterLimits, BaseAdapter, ConversationHandler, MessageRef
from adapters.slack.convert import (
    PLATFORM,
    SlackIdentity,
    SlackOptions,
    action_to_inbound,
    clean_text,
    event_to_inbound,
    slash_to_inbound,
)
from adapters.slack.render import (
    MAX_TEXT_UNITS,
    MIN_EDIT_INTERVAL,
    SlackPrimitives,
    measure,
    translate,
)
from core.errors import ConfigError, HybotError, PlatformError
from core.i18n import t
from core.inbox import Inbox
from core.types import Button, Inbound

__all__ = ["RequestGuard", "SlackAdapter", "SlackServe"]

log = logging.getLogger(__name__)

# bolt logs the body (with the response_url) and the signature at INFO when its own
# verification fails; ours runs instead, and this keeps any such record out of the logs.
logging.getLogger("slack_bolt.middleware.request_verification").setLevel(logging.WARNING)

_BOLT_LOG = logging.getLogger("hybot.slack.bolt")
_SOCKET_LOG = logging.getLogger("hybot.slack.socket")
_CLIENT_AND_TOKEN = warning_client_prioritized_and_token_skipped()


def _not_client_and_token(record: logging.LogRecord) -> bool:
    """bolt's ``AsyncApp`` reads ``SLACK_BOT_TOKEN`` from the environment itself when no
    ``token`` is given, and then warns at every start that the ``client`` we pass wins (it
    does: the token is unused). Passing a token instead of the client is no way out, since
    bolt would then build its own client without our ``base_url``. So that one record is
    dropped; every other bolt record passes."""
    return record.getMessage() != _CLIENT_AND_TOKEN


_WSS_QUERY = re.compile(r"(wss?://[^\s'\"?]*)\?[^\s'\"]*")


def _no_traceback(record: logging.LogRecord) -> bool:
    """The Socket Mode client logs every failed (re)connection with ``logger.exception``: an
    expected network condition, so its record keeps the message and loses the traceback. The
    query of a WebSocket URL in the message (Slack's one-time connection ticket) is cut."""
    record.exc_info = None
    record.exc_text = None
    message = record.getMessage()
    if "ws://" in message or "wss://" in message:
        record.msg, record.args = _WSS_QUERY.sub(r"\1?…", message), None
    return True


_BOLT_LOG.addFilter(_not_client_and_token)
_SOCKET_LOG.addFilter(_no_traceback)

_REJECTED = ("invalid_auth", "not_authed", "account_inactive", "token_revoked")
_UNREACHABLE = (TimeoutError, aiohttp.ClientConnectionError)


def _unreachable(base_url: str, method: str, err: BaseException) -> ConfigError:
    """The start-up error for a Slack API that cannot be reached: names the setting and the
    URL (without any user, password or query), never a token."""
    try:
        parts = urlsplit(base_url)
        host = parts.netloc.rpartition("@")[2]
        shown = urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        shown = "(unparsable URL)"
    return ConfigError(
        f"cannot reach the Slack API at {shown} ({method}): {type(err).__name__}; "
        "check HYBOT_SLACK_BASE_URL and the network"
    )


@dataclass(frozen=True, slots=True)
class SlackServe:
    """How the adapter receives traffic.

    ``mode``: ``"http"`` (Events API, interactivity and slash commands POSTed to
    ``http://host:port{path}``) or ``"socket"`` (Socket Mode with ``app_token``, reconnecting
    by itself). ``max_body``: bytes accepted per request. ``grace``: seconds :meth:`stop`
    waits for in-flight answers. ``redrive_interval``: seconds between inbox re-drives.
    ``native_stream``: stream answers in DM threads with Slack's ``chat.*Stream`` methods."""

    mode: Literal["http", "socket"] = "http"
    host: str = "127.0.0.1"
    port: int = 3000
    path: str = "/slack/events"
    app_token: str = ""
    max_body: int = 256 * 1024
    grace: float = 25.0
    redrive_interval: float = 60.0
    native_stream: bool = True


class RequestGuard:
    """Verifies a raw Slack request before anything parses it (see the module docstring).

    ``check`` returns ``None`` when the request may pass, else the HTTP status to answer.
    Signatures are remembered for twice the 300 s window, so an exact replay (same timestamp
    and signature) is refused; Slack's own retries are signed afresh and pass."""

    WINDOW = 300

    def __init__(self, *, signing_secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = signing_secret.encode()
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, raw: bytes, timestamp: str | None, signature: str | None) -> int | None:
        now = self._clock()
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[oldest]
        if not timestamp or not timestamp.isascii() or not timestamp.isdigit():
            return 401
        if len(timestamp) > 12 or abs(now - int(timestamp)) > self.WINDOW:
            return 401
        if not signature or not signature.isascii() or len(signature) > 100:
            return 401
        base = b"v0:" + timestamp.encode() + b":" + raw
        expected = "v0=" + hmac.new(self._secret, base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return 401
        if signature in self._seen:
            return 401
        self._seen[signature] = now + 2 * self.WINDOW
        return None


def _parse_body(raw: str, content_type: str) -> dict[str, Any] | None:
    """The request body as bolt will see it, or ``None`` when it is malformed."""
    try:
        if content_type == "application/json" or raw.lstrip().startswith("{"):
            data = json.loads(raw)
            return data if isinstance(data, dict) else None
        fields = dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw)))
        if "payload" in fields:
            payload = json.loads(fields["payload"])
            return payload if isinstance(payload, dict) else None
        return fields
    except (ValueError, RecursionError):
        return None


_DEFAULT_OPTIONS = SlackOptions()
_DEFAULT_SERVE = SlackServe()


class SlackAdapter(BaseAdapter):
    """The Slack platform adapter (see the module docstring)."""

    def __init__(
        self,
        *,
        conversation: ConversationHandler,
        client: AsyncWebClient,
        signing_secret: str,
        inbox: Inbox,
        options: SlackOptions = _DEFAULT_OPTIONS,
        serve: SlackServe = _DEFAULT_SERVE,
        wall_clock: Callable[[], float] = time.time,
        **base: Any,
    ) -> None:
        super().__init__(conversation=conversation, drain_timeout=serve.grace, **base)
        self._client = client
        self._inbox = inbox
        self._options = options
        self._serve = serve
        self._guard = RequestGuard(signing_secret=signing_secret, clock=wall_clock)
        self._signing_secret = signing_secret
        self._me: SlackIdentity | None = None
        self._session: aiohttp.ClientSession | None = None
        self._prims: SlackPrimitives | None = None
        self._bolt: AsyncApp | None = None
        self._runner: web.AppRunner | None = None
        self._socket: Any = None
        self._redrive_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()
        self._bot_threads: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._not_bot_threads: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._thread_lookups: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._titled: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._accepting = False
        self._closed = asyncio.Event()
        self.port = 0

    #: Thread follow-ups after a restart (:meth:`_bot_in_thread`): how long a thread the bot
    #: is not in is not asked about again, the messages one lookup reads, and its time limit.
    NOT_IN_THREAD_TTL = 600.0
    THREAD_LOOKUP_LIMIT = 200
    THREAD_LOOKUP_TIMEOUT = 2.0

    # --- identity and limits --------------------------------------------------------------

    #: One ``markdown`` block per message (escaped length), ``chat.update`` at most once a
    #: second (Tier 3), captions as comments; the assistant status lasts until the reply (or
    #: two minutes), so it is renewed rarely.
    limits = AdapterLimits(
        max_text_units=MAX_TEXT_UNITS,
        unit="chars",
        min_edit_interval=MIN_EDIT_INTERVAL,
        caption_units=3_000,
        typing_interval=60.0,
        private_failures=True,  # errors are the asker's business: ephemeral (issue 9)
    )

    @property
    def me(self) -> SlackIdentity:
        if self._me is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._me

    @property
    def bolt(self) -> AsyncApp:
        if self._bolt is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._bolt

    def measure(self, text: str) -> int:
        return measure(text)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the token (``auth.test``), build the bolt app, start serving (Socket Mode:
        check the app token with one ``apps.connections.open`` first), re-drive the inbox.
        Raises :class:`~core.errors.ConfigError` for a rejected token or an unreachable Slack
        API (naming ``HYBOT_SLACK_BASE_URL`` and the URL)."""
        try:
            auth = await self._client.auth_test()
        except SlackApiError as err:
            code = err.response.get("error") if isinstance(err.response.data, dict) else None
            if code in _REJECTED:
                raise ConfigError(
                    f"Slack rejected SLACK_BOT_TOKEN ({code}); check the bot token"
                ) from err
            raise translate(err, "auth.test") from err
        except _UNREACHABLE as err:
            raise _unreachable(self._client.base_url, "auth.test", err) from err
        except (SlackClientError, aiohttp.ClientError, OSError) as err:
            raise translate(err, "auth.test") from err
        self._me = SlackIdentity(
            team=str(auth.get("team_id") or ""),
            user_id=str(auth.get("user_id") or ""),
            bot_id=str(auth.get("bot_id") or ""),
        )
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        self._prims = SlackPrimitives(
            client=self._client,
            session=self._session,
            language=self._options.language,
            native_stream=self._serve.native_stream,
        )
        self._bolt = self._build_bolt()
        self._accepting = True
        if self._serve.mode == "socket":
            await self._start_socket()
        else:
            await self._start_http()
        self._redrive_task = asyncio.create_task(self._redrive_loop())

    async def stop(self) -> None:
        """Stop intake, drain in-flight answers within ``grace``, release everything.
        Idempotent, and safe after a failed :meth:`start`."""
        self._accepting = False
        if self._redrive_task is not None:
            self._redrive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._redrive_task
            self._redrive_task = None
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()
            self._socket = None
        await self.drain(self._serve.grace)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self._prims is not None:
            await self._prims.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._closed.set()

    async def wait_closed(self) -> None:
        """Return once :meth:`stop` has finished."""
        await self._closed.wait()

    async def _start_http(self) -> None:
        app = web.Application(client_max_size=self._serve.max_body)
        app.router.add_post(self._serve.path, self._handle_http)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._serve.host, self._serve.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._serve.port
        log.info("Slack events served on %s:%d%s", self._serve.host, self.port, self._serve.path)

    async def _start_socket(self) -> None:
        if not self._serve.app_token:
            raise ConfigError("Socket Mode needs SLACK_APP_TOKEN (an xapp- app-level token)")
        # The Socket Mode client retries a failed connection for ever (a rejected token too),
        # so the app token is checked here, once, the way that client would use it: the URL
        # this issues is the one its first connection uses. Later reconnections are its own.
        try:
            opened = await self._client.apps_connections_open(app_token=self._serve.app_token)
        except SlackApiError as err:
            code = err.response.get("error") if isinstance(err.response.data, dict) else None
            if code in (*_REJECTED, "not_allowed_token_type"):
                raise ConfigError(
                    f"Slack rejected SLACK_APP_TOKEN ({code}); check the app-level token"
                ) from err
            raise translate(err, "apps.connections.open") from err
        except _UNREACHABLE as err:
            raise _unreachable(self._client.base_url, "apps.connections.open", err) from err
        except (SlackClientError, aiohttp.ClientError, OSError) as err:
            raise translate(err, "apps.connections.open") from err
        self._socket = AsyncSocketModeHandler(self.bolt, self._serve.app_token, logger=_SOCKET_LOG)
        self._socket.client.wss_uri = str(opened["url"])
        await self._socket.connect_async()
        log.info("Slack Socket Mode connected")

    # --- HTTP guard -----------------------------------------------------------------------

    async def _handle_http(self, request: web.Request) -> web.Response:
        if not self._accepting:
            return web.json_response({"error": "shutting down"}, status=503)
        if request.content_length is not None and request.content_length > self._serve.max_body:
            return web.json_response({"error": "too large"}, status=413)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > self._serve.max_body:
                    return web.json_response({"error": "too large"}, status=413)
                chunks.append(chunk)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return web.json_response({"error": "bad request"}, status=400)
        raw = b"".join(chunks)
        status = self._guard.check(
            raw,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
        )
        if status is not None:
            log.info("Slack request refused (HTTP %d)", status)
            return web.json_response({"error": "invalid request"}, status=status)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"error": "bad request"}, status=400)
        if _parse_body(text, request.content_type) is None:
            return web.json_response({"error": "bad request"}, status=400)
        headers: dict[str, str | Sequence[str]] = {}
        for name in set(request.headers.keys()):
            headers[name.lower()] = request.headers.getall(name)
        try:
            bolt_req = AsyncBoltRequest(body=text, query=request.query_string, headers=headers)
            resp = await self.bolt.async_dispatch(bolt_req)
        except Exception as err:
            # Intake could not record the event (store down) or bolt failed: 503 so that Slack
            # delivers it again later; the type only, never the request, goes to the log.
            log.error("Slack request failed: %s", type(err).__name__)
            return web.json_response({"error": "unavailable"}, status=503)
        # bolt answers 500 when a middleware raised (the inbox could not record the event):
        # 503 instead, so Slack delivers it again later; never a 500.
        out = web.Response(status=503 if resp.status >= 500 else resp.status, body=resp.body)
        for name, values in resp.headers.items():
            if name.lower() in ("content-type", "x-slack-no-retry"):
                out.headers[name] = values[0]
        return out

    # --- bolt -----------------------------------------------------------------------------

    def _build_bolt(self) -> AsyncApp:
        app = AsyncApp(
            client=self._client,
            signing_secret=self._signing_secret,
            request_verification_enabled=False,  # RequestGuard verified the raw bytes
            process_before_response=False,
            logger=_BOLT_LOG,
        )
        app.use(self._intake)
        lang = self._options.language

        async def noop() -> None:
            return None

        async def ack_command(ack: Any) -> None:
            await ack(response_type="ephemeral", text=t("slack.working", lang))

        async def ack_action(ack: Any) -> None:
            await ack()

        app.event("app_mention")(noop)
        app.event("message")(noop)
        app.command(self._options.command)(ack_command)
        app.action(re.compile(r"^hybot_"))(ack_action)
        app.assistant(self._assistant())
        return app

    def _assistant(self) -> AsyncAssistant:
        """Slack's AI assistant pane (bolt's ``Assistant``): suggested prompts when a thread
        opens, the thread's title from its first message. The messages themselves are
        answered like any DM thread (the intake middleware already dispatched them)."""
        assistant = AsyncAssistant(logger=logging.getLogger("hybot.slack.bolt"))
        lang = self._options.language

        async def started(set_suggested_prompts: Any) -> None:
            prompts = [
                {
                    "title": t("slack.prompt_explain_title", lang),
                    "message": t("slack.prompt_explain", lang),
                },
                {
                    "title": t("slack.prompt_image_title", lang),
                    "message": t("slack.prompt_image", lang),
                },
                # a command, not a sentence: the same in every language
                {"title": t("slack.prompt_quota_title", lang), "message": "/quota"},
            ]
            try:
                await set_suggested_prompts(prompts=prompts)
            except (SlackClientError, aiohttp.ClientError, OSError) as err:
                log.info("assistant prompts not set: %s", translate(err, "setSuggestedPrompts"))

        async def user_message(payload: Mapping[str, Any], set_title: Any) -> None:
            key = (str(payload.get("channel", "")), str(payload.get("thread_ts", "")))
            if key in self._titled:
                return
            self._titled[key] = None
            while len(self._titled) > 10_000:
                self._titled.popitem(last=False)
            me = self.me
            text, _, _ = clean_text(str(payload.get("text") or ""), bot_user=me.user_id)
            title = " ".join(text.split())[:60] or "hybot"
            try:
                await set_title(title)
            except (SlackClientError, aiohttp.ClientError, OSError) as err:
                log.info("assistant title not set: %s", translate(err, "setTitle"))

        assistant.thread_started(started)
        assistant.user_message(user_message)
        return assistant

    async def _intake(
        self, body: dict[str, Any], response: BoltResponse, next: Callable[[], Any]
    ) -> BoltResponse:
        """bolt global middleware: convert, record in the inbox, dispatch, then let bolt ack."""
        if not self._accepting:
            return BoltResponse(status=503, body="")
        inbound = await self._convert(body)
        if inbound is None:
            event = body.get("event")
            etype = str(event.get("type", "")) if isinstance(event, Mapping) else ""
            if body.get("type") == "event_callback" and not etype.startswith("assistant_"):
                return BoltResponse(status=200, body="")  # acknowledged, nothing to do
            if body.get("type") == "block_actions":
                return BoltResponse(status=200, body="")  # someone else's button: ack only
            await next()
            return response
        new = await self._inbox.record(PLATFORM, inbound.delivery_id, json.dumps(body))
        if new or inbound.delivery_id not in self._in_flight:
            self._spawn(inbound)
        await next()
        return response

    async def _convert(self, body: Mapping[str, Any], *, recorded: bool = False) -> Inbound | None:
        """The payload as an :class:`Inbound`, or ``None``. ``recorded``: the payload comes
        from the inbox, so it was accepted once already (a thread follow-up then needs no
        second look at the thread: after a restart the memory of threads is gone)."""
        me = self.me
        if body.get("type") == "event_callback":
            event = body.get("event")
            if not isinstance(event, Mapping):
                return None
            channel, thread = str(event.get("channel", "")), str(event.get("thread_ts", ""))
            known = recorded or (channel, thread) in self._bot_threads
            inbound = event_to_inbound(body, me=me, options=self._options, in_bot_thread=known)
            if inbound is None and not known:
                # Would it count as a follow-up if the bot took part in its thread? (Only an
                # unmentioned user message in a channel thread, with follow-ups switched on.)
                candidate = event_to_inbound(body, me=me, options=self._options, in_bot_thread=True)
                if candidate is not None and await self._bot_in_thread(channel, thread):
                    inbound = candidate
            if inbound is not None and inbound.key.thread and not inbound.is_dm:
                self._remember_thread(inbound.channel_id, inbound.key.thread)
            return inbound
        if "command" in body:
            return slash_to_inbound(body, me=me, options=self._options)
        if body.get("type") == "block_actions":
            return action_to_inbound(body, me=me, options=self._options)
        return None

    def _remember_thread(self, channel: str, thread: str) -> None:
        self._not_bot_threads.pop((channel, thread), None)
        self._bot_threads[(channel, thread)] = None
        self._bot_threads.move_to_end((channel, thread))
        while len(self._bot_threads) > 50_000:
            self._bot_threads.popitem(last=False)

    async def _bot_in_thread(self, channel: str, thread: str) -> bool:
        """Whether the bot has posted in a thread this process knows nothing about (it was
        restarted, or another replica answered there). Known threads answer from memory; an
        unknown one is asked about once (``conversations.replies``, concurrent askers share
        the call); a thread without the bot is not asked about again for
        :attr:`NOT_IN_THREAD_TTL` seconds (both answers are kept in bounded LRUs)."""
        key = (channel, thread)
        if key in self._bot_threads:
            return True
        now = time.monotonic()
        expires = self._not_bot_threads.get(key)
        if expires is not None:
            if expires > now:
                return False
            del self._not_bot_threads[key]
        pending = self._thread_lookups.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._ask_thread(channel, thread))
            self._thread_lookups[key] = pending
            pending.add_done_callback(lambda _: self._thread_lookups.pop(key, None))
        return await asyncio.shield(pending)

    async def _ask_thread(self, channel: str, thread: str) -> bool:
        """One ``conversations.replies`` call (the first :attr:`THREAD_LOOKUP_LIMIT` messages
        of the thread, root included): does any come from the bot's user or bot id? Any
        failure (a missing ``*:history`` scope, 429, a timeout — it runs before the event is
        acknowledged) means "no", with one log line naming the error code."""
        me = self.me
        found = False
        try:
            async with asyncio.timeout(self.THREAD_LOOKUP_TIMEOUT):
                resp = await self._client.conversations_replies(
                    channel=channel, ts=thread, limit=self.THREAD_LOOKUP_LIMIT
                )
            messages = resp.get("messages")
            found = isinstance(messages, list) and any(
                isinstance(m, Mapping)
                and (
                    m.get("user") == me.user_id or bool(me.bot_id and m.get("bot_id") == me.bot_id)
                )
                for m in messages
            )
        except TimeoutError:
            log.warning("thread check (conversations.replies) timed out: not a follow-up")
        except (SlackClientError, aiohttp.ClientError, OSError, ValueError) as err:
            log.warning(
                "thread check failed, not a follow-up: %s", translate(err, "conversations.replies")
            )
        if found:
            self._remember_thread(channel, thread)
        else:
            self._not_bot_threads[(channel, thread)] = time.monotonic() + self.NOT_IN_THREAD_TTL
            self._not_bot_threads.move_to_end((channel, thread))
            while len(self._not_bot_threads) > 10_000:
                self._not_bot_threads.popitem(last=False)
        return found

    # --- dispatch and re-drive ------------------------------------------------------------

    def _spawn(self, inbound: Inbound) -> None:
        self._in_flight.add(inbound.delivery_id)
        task = asyncio.create_task(self._answer(inbound))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, inbound: Inbound) -> None:
        try:
            handled = await self.dispatch(inbound)
        except asyncio.CancelledError:
            return  # cut off by drain: left unfinished in the inbox, re-driven later
        except Exception as err:
            # Left unfinished in the inbox: re-driven after its lease.
            log.error("answering a Slack delivery failed: %s", type(err).__name__)
            return
        finally:
            self._in_flight.discard(inbound.delivery_id)
        if not handled:
            return  # refused while draining: re-driven later
        try:
            await self._inbox.done(PLATFORM, inbound.delivery_id)
        except HybotError as err:
            log.warning("inbox done failed: %s", type(err).__name__)

    async def redrive(self) -> int:
        """Dispatch inbox entries whose lease ran out; returns how many were started."""
        started = 0
        for entry in await self._inbox.due(PLATFORM):
            try:
                body = json.loads(entry.payload)
            except ValueError:
                body = None
            inbound = await self._convert(body, recorded=True) if isinstance(body, dict) else None
            if inbound is None or entry.attempts > 5:
                await self._inbox.done(PLATFORM, entry.delivery_id)
                continue
            if inbound.delivery_id in self._in_flight:
                continue
            self._spawn(inbound)
            started += 1
        return started

    async def _redrive_loop(self) -> None:
        """Re-drive every ``redrive_interval``; once an hour, forget finished entries older
        than a day (Slack stops retrying after minutes; the core's claim remembers a delivery
        for its own TTL, so a later duplicate is still not answered twice)."""
        last_purge = -math.inf
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.redrive()
                if loop.time() - last_purge >= 3600:
                    last_purge = loop.time()
                    await self._inbox.purge(older_than=timedelta(days=1))
            except HybotError as err:
                log.warning("inbox upkeep failed: %s", type(err).__name__)
            await asyncio.sleep(self._serve.redrive_interval)

    # --- primitives -----------------------------------------------------------------------

    @property
    def _p(self) -> SlackPrimitives:
        if self._prims is None:
            raise PlatformError("slack: the adapter is not started")
        return self._prims

    async def send_text(
        self,
        inbound: Inbound,
        text: str,
        *,
        private: bool = False,
        buttons: tuple[Button, ...] = (),
    ) -> MessageRef:
        return await self._p.send_text(inbound, text, private=private, buttons=buttons)

    async def edit_text(
        self, ref: MessageRef, text: str, *, buttons: tuple[Button, ...] = ()
    ) -> None:
        await self._p.edit_text(ref, text, buttons=buttons)

    async def delete(self, ref: MessageRef) -> None:
        await self._p.delete(ref)

    async def send_image(
        self, inbound: Inbound, data: bytes, mime: str, caption: str
    ) -> MessageRef:
        return await self._p.send_image(inbound, data, mime, caption)

    async def send_typing(
        self, inbound: Inbound, *, action: Literal["typing", "upload_photo"] = "typing"
    ) -> None:
        await self._p.send_typing(inbound, action=action)

    def pressed_message(self, inbound: Inbound) -> MessageRef | None:
        if inbound.action is None or not inbound.message_id:
            return None
        return MessageRef(inbound.channel_id, inbound.message_id, inbound.key.thread)
