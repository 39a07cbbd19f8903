"""A loopback fake of the Telegram Bot API, for tests and the benchmark.

A real aiohttp server on ``127.0.0.1`` port 0 that routes ``POST|GET /bot<token>/<method>``
the way ``api.telegram.org`` does, so the real python-telegram-bot talks to it through its own
HTTP stack (``ApplicationBuilder().base_url(fake.base_url)``).

What it implements (enough for hybot; see ``reference/platforms.md`` §1.2 and §5.1):

- bodies as PTB sends them: urlencoded forms (non-string values JSON-encoded), multipart
  (``sendPhoto``), JSON, the query string, and empty bodies (``getMe``);
- ``getMe``, ``getUpdates`` (long poll; an update is *delivered* when a response carried it and
  *confirmed* once ``getUpdates`` asks for an offset past it, then forgotten), ``sendMessage``,
  ``editMessageText`` (400 "message is not modified" for identical content),
  ``editMessageReplyMarkup``, ``deleteMessage``, ``sendChatAction``, ``sendPhoto`` (caption ≤ 1024),
  ``sendMessageDraft`` (the newest text of each draft in :attr:`FakeTelegram.drafts`; listed in
  :attr:`FakeTelegram.unsupported`, it answers 404 "Not Found" as a server predating it does),
  ``answerCallbackQuery``, ``setMyCommands``, ``deleteMyCommands``,
  ``setWebhook`` / ``deleteWebhook`` / ``getWebhookInfo`` (``getUpdates`` answers 409 while a
  webhook is set), ``close`` / ``logOut``;
- validation Telegram does: text ≤ 4096 UTF-16 units, entity ranges inside the text, MarkdownV2
  reserved characters escaped ("can't parse entities");
- scriptable faults (:meth:`FakeTelegram.fail`): 429 with ``retry_after``, "can't parse
  entities", "message is not modified", 403 blocked, 409 conflict, 401 unauthorized, 502, and a
  per-chat edit flood limit (:attr:`FakeTelegram.edit_interval`);
- a record of every call (:attr:`FakeTelegram.calls`) and :meth:`FakeTelegram.wait_for` to await
  a condition on it without sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["BOT_ID", "BOT_USERNAME", "TOKEN", "Call", "FakeTelegram", "Fault"]

TOKEN = "123456:TEST-token_secret"
BOT_ID = 999
BOT_USERNAME = "hybot_test_bot"

_JSON_FIELDS = {
    "reply_markup",
    "entities",
    "caption_entities",
    "reply_parameters",
    "commands",
    "scope",
    "allowed_updates",
    "link_preview_options",
}
_INT_FIELDS = {
    "chat_id",
    "message_id",
    "message_thread_id",
    "offset",
    "limit",
    "timeout",
    "draft_id",
    "max_connections",
}
_MDV2_SPECIAL = set("_*[]()~`>#+-=|{}.!")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass
class Call:
    """One request the fake received: the method and its decoded parameters."""

    method: str
    params: dict[str, Any]
    at: float
    status: int = 200
    files: dict[str, bytes] = field(default_factory=dict)
    content_type: str = ""

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return value if isinstance(value, int) else None


@dataclass
class Fault:
    """A scripted failure: the next ``times`` calls of ``method`` (optionally only for
    ``chat_id``) get this answer instead of being served."""

    method: str
    kind: str
    times: int = 1
    chat_id: int | None = None
    retry_after: int = 1


_FAULT_ANSWERS: dict[str, tuple[int, str]] = {
    "429": (429, "Too Many Requests: retry after {retry_after}"),
    "parse": (
        400,
        "Bad Request: can't parse entities: can't find end of bold entity at byte offset 6",
    ),
    "not_modified": (
        400,
        "Bad Request: message is not modified: specified new message content and reply markup "
        "are exactly the same as a current content and reply markup of the message",
    ),
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "bad_request": (400, "Bad Request: bad webhook: Failed to resolve host"),
    "conflict": (
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
        "is running",
    ),
    "unauthorized": (401, "Unauthorized"),
    "server": (502, "Bad Gateway"),
}


class _Error(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


class FakeTelegram:
    """The fake Bot API server (an async context manager).

    ``token`` is the only token accepted (others get 401, as a revoked token would).
    ``long_poll_cap`` bounds how long ``getUpdates`` waits for news (seconds), whatever
    ``timeout`` the client asks for, so shutdowns stay quick.
    """

    def __init__(
        self,
        *,
        token: str = TOKEN,
        bot_id: int = BOT_ID,
        bot_username: str = BOT_USERNAME,
        long_poll_cap: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.long_poll_cap = long_poll_cap
        self._host = host
        self._port = port
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        #: Minimum seconds between two edits in one chat; faster edits get 429 (None: off).
        self.edit_interval: float | None = None
        #: Seconds to wait before answering ``sendMessage``/``editMessageText`` (a slow server).
        self.send_latency: float = 0.0
        self.webhook: dict[str, Any] | None = None
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.deleted: set[tuple[int, int]] = set()
        self.photos: list[dict[str, Any]] = []
        self.answered_callbacks: list[str] = []
        #: (chat_id, draft_id) → the newest text of that draft (drafts are never messages).
        self.drafts: dict[tuple[int, int], str] = {}
        #: Methods this server does not have (404 "Not Found", like an older Bot API server).
        self.unsupported: set[str] = set()
        self._pending: list[dict[str, Any]] = []
        #: update ids that a getUpdates response carried (Telegram considers them sent).
        self.delivered: list[int] = []
        #: update ids confirmed by a later offset (forgotten by the server).
        self.confirmed: list[int] = []
        self._update_ids = itertools.count(1000)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._chat_types: dict[int, str] = {}
        self._last_edit: dict[int, float] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_post("/_fake/push", self._control_push)
        app.router.add_get("/_fake/stats", self._control_stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """What to give PTB's ``base_url`` (the token is appended by PTB)."""
        return f"http://{self._host}:{self.port}/bot"

    @property
    def bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Hybot",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    # --- scripting ---------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        kind: str,
        *,
        times: int = 1,
        chat_id: int | None = None,
        retry_after: int = 1,
    ) -> None:
        """Script a fault (see ``_FAULT_ANSWERS`` for the kinds) for the next ``times`` calls."""
        if kind not in _FAULT_ANSWERS:
            raise ValueError(f"unknown fault {kind!r}")
        self.faults.append(Fault(method, kind, times, chat_id, retry_after))

    def push(self, update: Mapping[str, Any]) -> dict[str, Any]:
        """Queue an update for ``getUpdates`` (an ``update_id`` is assigned when missing)."""
        body = dict(update)
        body.setdefault("update_id", next(self._update_ids))
        for part in ("message", "edited_message", "channel_post"):
            chat = body.get(part, {}).get("chat") if isinstance(body.get(part), dict) else None
            if chat:
                self._chat_types.setdefault(int(chat["id"]), str(chat.get("type", "private")))
        self._pending.append(body)
        self._notify()
        return body

    def next_update_id(self) -> int:
        return next(self._update_ids)

    def calls_of(self, *methods: str, chat_id: int | None = None) -> list[Call]:
        """Successful calls of ``methods`` (all when empty), optionally for one chat."""
        return [
            c
            for c in self.calls
            if (not methods or c.method in methods)
            and c.status == 200
            and (chat_id is None or c.chat_id == chat_id)
        ]

    def texts(self, chat_id: int) -> list[str]:
        """The current text of every message the bot has in ``chat_id`` (not deleted), in order."""
        return [
            str(m.get("text", m.get("caption", "")))
            for (chat, mid), m in sorted(self.messages.items())
            if chat == chat_id and (chat, mid) not in self.deleted
        ]

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        return [
            m
            for (chat, mid), m in sorted(self.messages.items())
            if chat == chat_id and (chat, mid) not in self.deleted
        ]

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 20.0) -> None:
        """Wait until ``predicate()`` holds (re-checked after every request the fake serves)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _notify(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._wake())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- control routes (for a fake in another process, e.g. the benchmark) -----------------

    async def _control_push(self, request: web.Request) -> web.Response:
        """``POST /_fake/push`` with a JSON list of updates: queue them (ids assigned)."""
        updates = await request.json()
        ids = [self.push(update)["update_id"] for update in updates]
        return web.json_response(ids)

    async def _control_stats(self, request: web.Request) -> web.Response:
        """``GET /_fake/stats[?chat_id=N]``: successful calls per method (of one chat)."""
        chat = request.query.get("chat_id")
        counts: dict[str, int] = {}
        for call in self.calls_of(chat_id=int(chat) if chat else None):
            counts[call.method] = counts.get(call.method, 0) + 1
        texts = self.texts(int(chat)) if chat else []
        return web.json_response({"calls": counts, "texts": texts})

    # --- HTTP --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, files = await self._params(request)
        call = Call(
            method,
            params,
            time.monotonic(),
            files=files,
            content_type=request.content_type if request.body_exists else "",
        )
        self.calls.append(call)
        try:
            if request.match_info["token"] != self.token:
                raise _Error(401, "Unauthorized")
            self._scripted_fault(method, params)
            result = await self._serve(method, params, files)
        except _Error as err:
            call.status = err.status
            body: dict[str, Any] = {
                "ok": False,
                "error_code": err.status,
                "description": err.description,
            }
            if err.retry_after is not None:
                body["parameters"] = {"retry_after": err.retry_after}
            await self._wake()
            return web.json_response(body, status=err.status)
        await self._wake()
        return web.json_response({"ok": True, "result": result})

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, bytes] = {}
        if request.body_exists:
            ctype = request.content_type
            if ctype == "application/json":
                raw.update(await request.json())
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = value.file.read()
                    else:
                        raw[key] = value
        params = {key: _decode(key, value) for key, value in raw.items()}
        return params, files

    def _scripted_fault(self, method: str, params: Mapping[str, Any]) -> None:
        for fault in self.faults:
            if fault.method != method or fault.times <= 0:
                continue
            if fault.chat_id is not None and params.get("chat_id") != fault.chat_id:
                continue
            if fault.kind == "parse" and not (params.get("entities") or params.get("parse_mode")):
                continue  # Telegram parses nothing in a plain-text message
            fault.times -= 1
            status, text = _FAULT_ANSWERS[fault.kind]
            retry = fault.retry_after if fault.kind == "429" else None
            raise _Error(status, text.format(retry_after=fault.retry_after), retry)

    async def _serve(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        handler = getattr(self, f"_m_{method}", None)
        if method in self.unsupported:
            raise _Error(404, "Not Found")
        if handler is None:
            raise _Error(404, "Not Found: method not found")
        return await handler(params, files)

    # --- methods -----------------------------------------------------------------------------

    async def _m_getMe(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return self.bot_user

    async def _m_logOut(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return True

    async def _m_close(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return True

    async def _m_getUpdates(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        if self.webhook is not None:
            raise _Error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(p.get("offset") or 0)
        limit = max(1, min(100, int(p.get("limit") or 100)))
        timeout = min(float(p.get("timeout") or 0), self.long_poll_cap)
        if offset:
            for update in [u for u in self._pending if u["update_id"] < offset]:
                self._pending.remove(update)
                self.confirmed.append(update["update_id"])
        if not self._pending and timeout > 0:
            try:
                async with asyncio.timeout(timeout):
                    async with self._changed:
                        await self._changed.wait_for(lambda: bool(self._pending))
            except TimeoutError:
                pass
        batch = [u for u in self._pending if u["update_id"] >= offset][:limit]
        for update in batch:
            if update["update_id"] not in self.delivered:
                self.delivered.append(update["update_id"])
        return batch

    def _chat(self, chat_id: int) -> dict[str, Any]:
        kind = self._chat_types.get(chat_id, "private" if chat_id > 0 else "supergroup")
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = "User"
        else:
            chat["title"] = "Group"
        return chat

    def _check_text(
        self, text: str, p: Mapping[str, Any], *, limit: int = 4096, entities_key: str = "entities"
    ) -> None:
        if utf16_len(text) > limit:
            raise _Error(
                400,
                "Bad Request: message is too long"
                if limit == 4096
                else "Bad Request: message caption is too long",
            )
        if not text.strip() and limit == 4096:
            raise _Error(400, "Bad Request: message text is empty")
        size = utf16_len(text)
        for entity in p.get(entities_key) or ():
            off, length = int(entity["offset"]), int(entity["length"])
            if off < 0 or length <= 0 or off + length > size:
                raise _Error(400, "Bad Request: can't parse entities: entity beyond the text")
        if p.get("parse_mode") == "MarkdownV2":
            _check_markdown_v2(text)

    async def _m_sendMessage(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        chat_id = int(p["chat_id"])
        text = str(p.get("text", ""))
        self._check_text(text, p)
        if self.send_latency:
            await asyncio.sleep(self.send_latency)
        return self._store(chat_id, {"text": text, **_extras(p)}, p)

    async def _m_sendPhoto(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        chat_id = int(p["chat_id"])
        caption = str(p.get("caption", ""))
        self._check_text(caption, p, limit=1024, entities_key="caption_entities")
        data = f.get("photo", b"")
        if not data:
            raise _Error(400, "Bad Request: there is no photo in the request")
        self.photos.append({"chat_id": chat_id, "size": len(data), "caption": caption})
        photo = [
            {
                "file_id": f"photo{len(self.photos)}",
                "file_unique_id": f"u{len(self.photos)}",
                "width": 1,
                "height": 1,
            }
        ]
        message = {"caption": caption, "photo": photo}
        if p.get("caption_entities"):
            message["caption_entities"] = p["caption_entities"]
        if p.get("reply_markup"):
            message["reply_markup"] = p["reply_markup"]
        return self._store(chat_id, message, p)

    def _store(self, chat_id: int, content: dict[str, Any], p: Mapping[str, Any]) -> Any:
        counter = self._message_ids.setdefault(chat_id, itertools.count(5000))
        mid = next(counter)
        message: dict[str, Any] = {
            "message_id": mid,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self.bot_user,
            **content,
        }
        thread = p.get("message_thread_id")
        if thread:
            message["message_thread_id"] = int(thread)
            message["is_topic_message"] = True
        self.messages[(chat_id, mid)] = message
        return message

    async def _m_editMessageText(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        chat_id = int(p["chat_id"])
        mid = int(p["message_id"])
        message = self.messages.get((chat_id, mid))
        if message is None or (chat_id, mid) in self.deleted:
            raise _Error(400, "Bad Request: message to edit not found")
        self._flood(chat_id)
        text = str(p.get("text", ""))
        self._check_text(text, p)
        extras = _extras(p)
        same = (
            message.get("text") == text
            and message.get("entities") == extras.get("entities")
            and message.get("reply_markup") == extras.get("reply_markup")
        )
        if same:
            raise _Error(400, _FAULT_ANSWERS["not_modified"][1])
        if self.send_latency:
            await asyncio.sleep(self.send_latency)
        message["text"] = text
        message.pop("entities", None)
        message.pop("reply_markup", None)
        message.update(extras)
        message["edit_date"] = int(time.time())
        return message

    async def _m_editMessageReplyMarkup(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        chat_id = int(p["chat_id"])
        mid = int(p["message_id"])
        message = self.messages.get((chat_id, mid))
        if message is None:
            raise _Error(400, "Bad Request: message to edit not found")
        if p.get("reply_markup"):
            message["reply_markup"] = p["reply_markup"]
        else:
            message.pop("reply_markup", None)
        return message

    def _flood(self, chat_id: int) -> None:
        if self.edit_interval is None:
            return
        now = time.monotonic()
        last = self._last_edit.get(chat_id)
        if last is not None and now - last < self.edit_interval:
            wait = max(1, math.ceil(self.edit_interval - (now - last)))
            raise _Error(429, f"Too Many Requests: retry after {wait}", wait)
        self._last_edit[chat_id] = now

    async def _m_deleteMessage(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        key = (int(p["chat_id"]), int(p["message_id"]))
        if key not in self.messages or key in self.deleted:
            raise _Error(400, "Bad Request: message to delete not found")
        self.deleted.add(key)
        return True

    async def _m_sendChatAction(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        if p.get("action") not in ("typing", "upload_photo", "record_voice", "upload_document"):
            raise _Error(400, "Bad Request: wrong parameter action in request")
        return True

    async def _m_sendMessageDraft(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        chat_id = int(p["chat_id"])
        if chat_id < 0:
            raise _Error(400, "Bad Request: drafts are available only in private chats")
        draft_id = int(p.get("draft_id") or 0)
        if not draft_id:
            raise _Error(400, "Bad Request: draft_id must be non-zero")
        text = str(p.get("text", ""))
        if text:
            self._check_text(text, p)
        self.drafts[(chat_id, draft_id)] = text
        return True

    async def _m_answerCallbackQuery(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        self.answered_callbacks.append(str(p["callback_query_id"]))
        return True

    async def _m_setMyCommands(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        self.commands[str(p.get("language_code", ""))] = list(p.get("commands") or [])
        return True

    async def _m_deleteMyCommands(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        self.commands.pop(str(p.get("language_code", "")), None)
        return True

    async def _m_getMyCommands(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return self.commands.get(str(p.get("language_code", "")), [])

    async def _m_setWebhook(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        self.webhook = {k: v for k, v in p.items()}
        return True

    async def _m_deleteWebhook(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        self.webhook = None
        if str(p.get("drop_pending_updates", "")).lower() == "true":
            self._pending.clear()
        return True

    async def _m_getWebhookInfo(self, p: dict[str, Any], f: dict[str, bytes]) -> Any:
        return {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }

    # --- update builders ---------------------------------------------------------------------

    def user(
        self, user_id: int, *, name: str = "", language: str = "en", is_bot: bool = False
    ) -> dict[str, Any]:
        return {
            "id": user_id,
            "is_bot": is_bot,
            "first_name": name or f"User{user_id}",
            "username": name.lower() if name else f"user{user_id}",
            "language_code": language,
        }

    def text_message(
        self,
        *,
        chat_id: int,
        text: str,
        user_id: int = 42,
        chat_type: str | None = None,
        thread_id: int | None = None,
        reply_to: Mapping[str, Any] | None = None,
        entities: Iterable[Mapping[str, Any]] | None = None,
        language: str = "en",
        is_bot: bool = False,
        message_id: int | None = None,
    ) -> dict[str, Any]:
        """A ``message`` object. Entities default to what Telegram would mark: a leading
        ``/command`` and every ``@username`` token."""
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        self._chat_types[chat_id] = kind
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = f"User{user_id}"
        else:
            chat["title"] = "Group"
            if thread_id is not None:
                chat["is_forum"] = True
        message: dict[str, Any] = {
            "message_id": message_id if message_id is not None else next(self._update_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": self.user(user_id, language=language, is_bot=is_bot),
            "text": text,
        }
        found = list(entities) if entities is not None else auto_entities(text)
        if found:
            message["entities"] = found
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = dict(reply_to)
        return message

    def message_update(self, **kw: Any) -> dict[str, Any]:
        """A full ``Update`` carrying :meth:`text_message` ``(**kw)`` (not queued)."""
        return {"update_id": next(self._update_ids), "message": self.text_message(**kw)}

    def send_text(self, **kw: Any) -> dict[str, Any]:
        """Queue a text message for ``getUpdates``; returns the update."""
        return self.push(self.message_update(**kw))

    def callback_update(
        self, *, chat_id: int, message: Mapping[str, Any], data: str, user_id: int = 42
    ) -> dict[str, Any]:
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": f"cb{next(self._update_ids)}",
                "from": self.user(user_id),
                "chat_instance": f"ci{chat_id}",
                "message": dict(message),
                "data": data,
            },
        }


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram's clients attach: ``bot_command`` at offset 0, ``mention``s."""
    found: list[dict[str, Any]] = []
    command = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
    if command:
        found.append({"type": "bot_command", "offset": 0, "length": utf16_len(command.group())})
    for match in re.finditer(r"(?<![\w@])@[A-Za-z0-9_]{3,32}", text):
        if command and match.start() < command.end():
            continue
        found.append(
            {
                "type": "mention",
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group()),
            }
        )
    return found


def _decode(key: str, value: Any) -> Any:
    """Form fields are strings; PTB JSON-encodes non-string values into them."""
    if not isinstance(value, str):
        return value
    try:
        if key in _JSON_FIELDS:
            return json.loads(value)
        if key in _INT_FIELDS:
            return int(value)
    except ValueError:
        return value
    return value


def _extras(p: Mapping[str, Any]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if p.get("entities"):
        extras["entities"] = p["entities"]
    if p.get("reply_markup"):
        extras["reply_markup"] = p["reply_markup"]
    return extras


def _check_markdown_v2(text: str) -> None:
    """Refuse unescaped reserved characters, as Telegram does ("can't parse entities")."""
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
            continue
        if char == "\\":
            escaped = True
            continue
        if char in "_*~`|" or char in "[]()":
            continue  # formatting characters; balance is not checked here
        if char in _MDV2_SPECIAL:
            raise _Error(
                400,
                f"Bad Request: can't parse entities: character '{char}' is reserved and must be "
                f"escaped with the preceding '\\' at byte offset {index}",
            )


@dataclass
class _MemEntry:
    platform: str
    delivery_id: str
    payload: str
    attempts: int = 1
    done: bool = False
    leased: bool = True


class MemoryInbox:
    """An in-memory stand-in for ``core.inbox.Inbox`` (Contract 2) for adapter tests: records
    are kept in order, ``due`` returns unfinished entries once :meth:`expire` released them,
    and :attr:`changed` lets a test await ``done``."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], _MemEntry] = {}
        self.records: list[str] = []
        self.done_ids: list[str] = []
        self.changed = asyncio.Condition()

    async def record(self, platform: str, delivery_id: str, payload: str) -> bool:
        self.records.append(delivery_id)
        if (platform, delivery_id) in self.entries:
            return False
        self.entries[(platform, delivery_id)] = _MemEntry(platform, delivery_id, payload)
        return True

    async def done(self, platform: str, delivery_id: str) -> None:
        entry = self.entries.get((platform, delivery_id))
        if entry is not None:
            entry.done = True
        self.done_ids.append(delivery_id)
        async with self.changed:
            self.changed.notify_all()

    async def due(self, platform: str, *, limit: int = 100) -> list[_MemEntry]:
        found = [
            e
            for e in self.entries.values()
            if e.platform == platform and not e.done and not e.leased
        ][:limit]
        for entry in found:
            entry.leased = True
            entry.attempts += 1
        return found

    def expire(self) -> None:
        """Let every unfinished entry's lease run out (as after a crash)."""
        for entry in self.entries.values():
            entry.leased = False

    async def wait_done(self, *delivery_ids: object, timeout: float = 20.0) -> None:
        wanted = {str(d) for d in delivery_ids}
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: wanted <= set(self.done_ids))
