"""A loopback fake of Slack for end-to-end tests (design §7.11, platforms.md §2.5–§2.7, §5.1).

:class:`FakeSlack` is a real aiohttp server on ``127.0.0.1`` port 0 that ``slack_sdk``'s
``AsyncWebClient`` talks to through ``base_url`` (:attr:`FakeSlack.base_url`). It answers:

- ``POST /api/{method}`` (and ``GET``, which slack_sdk uses for some methods) for
  ``auth.test``, ``chat.postMessage``, ``chat.postEphemeral``,
  ``chat.update``, ``chat.delete``, ``chat.startStream`` / ``appendStream`` / ``stopStream``,
  ``assistant.threads.setStatus`` / ``setSuggestedPrompts`` / ``setTitle``,
  ``files.getUploadURLExternal``, ``files.completeUploadExternal``, ``apps.connections.open``,
  ``conversations.replies`` (a thread's messages: every message the fake recorded in it, as
  posted by the bot's user ``BOT_USER`` / ``BOT_ID``, plus what :meth:`FakeSlack.add_history`
  scripted, oldest first; ``thread_not_found`` for a thread with none);
  any other method answers ``{"ok": true}``. Parameters are merged from the query string, a
  form body and a JSON body (slack_sdk uses all three, platforms.md §2.5).
- ``POST /upload/{file_id}``: step 2 of ``files_upload_v2`` (the upload URL points here).
- ``POST /resp/{id}``: a ``response_url`` (:meth:`FakeSlack.response_url`), enforcing Slack's
  5 uses within 30 minutes (a 6th use gets 404 ``used_url``).
- ``GET /link``: a minimal Socket Mode server (platforms.md §2.6): ``hello``, then envelopes
  pushed with :meth:`FakeSlack.send_envelope`; acks are recorded; unacked envelopes can be
  re-sent with ``retry_attempt + 1``; :meth:`FakeSlack.disconnect_sockets` sends ``disconnect``,
  :meth:`FakeSlack.drop_sockets` closes them; while :attr:`FakeSlack.refuse_sockets` is above
  zero, a connection attempt is refused (HTTP 503) and the counter goes down by one.

Every call is recorded in order (:attr:`FakeSlack.calls`); tests wait for calls with
:meth:`FakeSlack.wait_for` (an ``asyncio.Condition``, never sleeps). Faults are scripted per
method with :meth:`FakeSlack.fail` (``ratelimited`` → HTTP 429 with ``Retry-After``, or any
``{"ok": false, "error": …}``). A token not in :attr:`FakeSlack.tokens` gets ``invalid_auth``.

:func:`signed_headers` builds the headers of a correctly signed Events API request
(``X-Slack-Signature`` v0 over ``v0:{ts}:{body}``, ``X-Slack-Request-Timestamp``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSMsgType, web

__all__ = [
    "APP_TOKEN",
    "BOT_ID",
    "BOT_TOKEN",
    "BOT_USER",
    "SIGNING_SECRET",
    "TEAM",
    "Call",
    "FakeSlack",
    "event_body",
    "form_body",
    "signed_headers",
]

BOT_TOKEN = "xoxb-SECRET-test-token"
APP_TOKEN = "xapp-SECRET-test-token"
SIGNING_SECRET = "signing-SECRET-0123456789abcdef"
BOT_USER = "UBOT"
BOT_ID = "BBOT"
TEAM = "T1"


@dataclass
class Call:
    """One request the fake received: ``method`` is the Web API method (``"upload"`` for step 2
    of the upload flow, ``"response_url"`` for a response_url post), ``params`` the merged
    parameters, ``status`` the HTTP status answered."""

    method: str
    params: dict[str, Any]
    status: int = 200
    body: bytes = b""
    token: str = ""
    ok: bool = True


@dataclass
class _Fault:
    error: str
    status: int
    retry_after: int | None
    times: int


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    acks: list[dict[str, Any]] = field(default_factory=list)


def signed_headers(
    body: bytes | str,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | str | None = None,
    signature: str | None = None,
    content_type: str = "application/json",
    retry_num: int | None = None,
) -> dict[str, str]:
    """Headers Slack sends with an Events API / interactivity / slash-command request.

    ``timestamp`` defaults to now; pass an old one to build an expired request, a string to
    build a malformed one. ``signature`` overrides the computed one (forgery)."""
    raw = body.encode() if isinstance(body, str) else body
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + raw
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature if signature is not None else sig,
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return headers


_event_ids = itertools.count(1)


def event_body(event: Mapping[str, Any], *, event_id: str | None = None, team: str = TEAM) -> str:
    """An ``event_callback`` envelope around ``event`` as JSON text."""
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": team,
            "api_app_id": "A1",
            "event": dict(event),
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(_event_ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": team, "user_id": BOT_USER, "is_bot": True, "enterprise_id": None}
            ],
        }
    )


class FakeSlack:
    """The fake Slack server; an async context manager (see the module docstring)."""

    def __init__(self, *, tokens: tuple[str, ...] = (BOT_TOKEN,)) -> None:
        self.tokens = set(tokens)
        self.app_tokens = {APP_TOKEN}
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        #: Scripted thread history (``conversations.replies``), by (channel, thread root ts).
        self.history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.uploads: dict[str, bytes] = {}
        self.response_posts: dict[str, list[dict[str, Any]]] = {}
        self._response_created: dict[str, float] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._cond = asyncio.Condition()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.sockets: list[_Socket] = []
        self.connections_opened = 0
        self.sockets_accepted = 0
        self.sockets_refused = 0
        #: Refuse this many Socket Mode connection attempts (HTTP 503) before accepting again.
        self.refuse_sockets = 0
        self.clock: Callable[[], float] = time.monotonic
        #: Block each Web API call on this event when set (lets a test hold the app mid-call).
        self.gate: asyncio.Event | None = None
        #: How many Web API calls have reached :attr:`gate` (held or since released).
        self.held = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk GETs a few (replies)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/resp/{rid}", self._respond)
        app.router.add_get("/link", self._socket)
        app.router.add_get("/_stats", self._stats)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sock in list(self.sockets):
            await sock.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``AsyncWebClient(base_url=…)`` needs."""
        return f"{self.url}/api/"

    # --- scripting ------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        error: str = "ratelimited",
        *,
        status: int | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail. ``"ratelimited"`` answers HTTP 429
        with ``Retry-After`` (default 1); other errors answer 200 ``{"ok": false}``."""
        if status is None:
            status = 429 if error == "ratelimited" else 200
        if status == 429 and retry_after is None:
            retry_after = 1
        self._faults.setdefault(method, []).append(_Fault(error, status, retry_after, times))

    def add_history(
        self,
        channel: str,
        thread_ts: str,
        *,
        user: str,
        ts: str,
        text: str = "",
        bot_id: str = "",
    ) -> None:
        """Script a message in a thread, as if posted before the fake started (by ``user``;
        ``bot_id`` too for a bot's message). ``ts == thread_ts`` scripts the thread's root."""
        msg: dict[str, Any] = {"type": "message", "user": user, "ts": ts, "text": text}
        if bot_id:
            msg["bot_id"] = bot_id
        if ts != thread_ts:
            msg["thread_ts"] = thread_ts
        self.history.setdefault((channel, thread_ts), []).append(msg)

    def response_url(self) -> str:
        """A fresh response_url capability on this fake."""
        rid = f"R{next(self._ids)}"
        self.response_posts[rid] = []
        self._response_created[rid] = self.clock()
        return f"{self.url}/resp/{rid}"

    def of(self, method: str) -> list[Call]:
        """The recorded successful calls of ``method``, in order."""
        return [c for c in self.calls if c.method == method and c.status == 200 and c.ok]

    async def wait_for(
        self, predicate: Callable[[FakeSlack], bool], *, timeout: float = 10.0
    ) -> None:
        """Wait until ``predicate(self)`` holds (checked after every recorded call)."""
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: predicate(self)), timeout)

    async def wait_calls(self, method: str, n: int = 1, *, timeout: float = 10.0) -> list[Call]:
        """Wait for at least ``n`` successful calls of ``method``; return them."""
        await self.wait_for(lambda f: len(f.of(method)) >= n, timeout=timeout)
        return self.of(method)

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        async with self._cond:
            self._cond.notify_all()

    # --- Web API --------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], bytes]:
        params: dict[str, Any] = dict(request.query)
        body = await request.read()
        ctype = request.content_type
        if body:
            if ctype == "application/json":
                data = json.loads(body)
                if isinstance(data, dict):
                    params.update(data)
            elif ctype == "application/x-www-form-urlencoded":
                params.update(parse_qsl(body.decode(), keep_blank_values=True))
            elif ctype.startswith("multipart/"):
                pass
        return params, body

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, body = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(params.get("token", ""))
        if self.gate is not None:
            self.held += 1
            async with self._cond:
                self._cond.notify_all()
            await self.gate.wait()
        valid = self.app_tokens if method == "apps.connections.open" else self.tokens
        if token not in valid:
            await self._record(Call(method, params, 200, body, token, ok=False))
            return web.json_response({"ok": False, "error": "invalid_auth"})
        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.times -= 1
            if fault.times <= 0:
                faults.pop(0)
            await self._record(Call(method, params, fault.status, body, token, ok=False))
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return web.json_response(
                {"ok": False, "error": fault.error}, status=fault.status, headers=headers
            )
        result = self._answer(method, params)
        await self._record(Call(method, params, 200, body, token, ok=bool(result.get("ok"))))
        return web.json_response(result)

    def _new_ts(self) -> str:
        return f"{1700000000 + next(self._ts)}.000100"

    def _answer(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        ok: dict[str, Any] = {"ok": True}
        if method == "auth.test":
            return {
                **ok,
                "url": "https://fake.slack.com/",
                "team": "Fake",
                "user": "hybot",
                "team_id": TEAM,
                "user_id": BOT_USER,
                "bot_id": BOT_ID,
            }
        if method in ("chat.postMessage", "chat.startStream"):
            ts = self._new_ts()
            channel = str(p.get("channel", ""))
            self.messages[(channel, ts)] = dict(p)
            if method == "chat.startStream":
                if not p.get("thread_ts"):
                    return {"ok": False, "error": "invalid_arguments"}
                # a streamed message's text is what was streamed so far
                self.messages[(channel, ts)].update(text=p.get("markdown_text", ""), streaming=True)
            return {**ok, "channel": channel, "ts": ts, "message": {"ts": ts, **p}}
        if method == "chat.postEphemeral":
            return {**ok, "message_ts": self._new_ts()}
        if method in ("chat.appendStream", "chat.stopStream"):
            channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
            msg = self.messages.get((channel, ts))
            if msg is None:
                return {"ok": False, "error": "message_not_found"}
            if not msg.get("streaming"):
                return {"ok": False, "error": "message_not_in_streaming_state"}
            msg["text"] = msg.get("text", "") + str(p.get("markdown_text") or "")
            if method == "chat.stopStream":
                msg["streaming"] = False
                if p.get("blocks"):
                    msg["blocks"] = p["blocks"]
            return {**ok, "channel": channel, "ts": ts}
        if method == "chat.update":
            channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
            if (channel, ts) not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            self.messages[(channel, ts)].update(p)
            return {**ok, "channel": channel, "ts": ts}
        if method == "chat.delete":
            channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
            if self.messages.pop((channel, ts), None) is None:
                return {"ok": False, "error": "message_not_found"}
            return {**ok, "channel": channel, "ts": ts}
        if method == "files.getUploadURLExternal":
            fid = f"F{next(self._ids)}"
            return {**ok, "upload_url": f"{self.url}/upload/{fid}", "file_id": fid}
        if method == "files.completeUploadExternal":
            files = json.loads(p.get("files", "[]"))
            for f in files:
                if f.get("id") not in self.uploads:
                    return {"ok": False, "error": "file_not_found"}
            return {**ok, "files": [{"id": f["id"], "title": f.get("title", "")} for f in files]}
        if method == "conversations.replies":
            return self._replies(str(p.get("channel", "")), str(p.get("ts", "")), p.get("limit"))
        if method == "apps.connections.open":
            self.connections_opened += 1
            return {**ok, "url": f"ws://127.0.0.1:{self.port}/link?ticket=TICKET-{next(self._ids)}"}
        return ok

    def _replies(self, channel: str, thread: str, limit: Any) -> dict[str, Any]:
        found = list(self.history.get((channel, thread), []))
        for (ch, ts), m in self.messages.items():
            if ch == channel and (ts == thread or m.get("thread_ts") == thread):
                msg = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": ts}
                msg["text"] = str(m.get("text", ""))
                if ts != thread:
                    msg["thread_ts"] = thread
                found.append(msg)
        if not found:
            return {"ok": False, "error": "thread_not_found"}
        found.sort(key=lambda m: float(m["ts"]))
        try:
            n = max(1, min(1000, int(limit))) if limit is not None else 1000
        except (TypeError, ValueError):
            n = 1000
        more = len(found) > n
        return {
            "ok": True,
            "messages": found[:n],
            "has_more": more,
            "response_metadata": {"next_cursor": "more" if more else ""},
        }

    async def _stats(self, request: web.Request) -> web.Response:
        """Counts of successful calls per method, for a benchmark in another process;
        ``?reset=1`` forgets every call and message afterwards."""
        counts: dict[str, int] = {}
        for c in self.calls:
            if c.status == 200 and c.ok:
                counts[c.method] = counts.get(c.method, 0) + 1
        longest = max((len(str(m.get("text", ""))) for m in self.messages.values()), default=0)
        if request.query.get("reset"):
            self.calls.clear()
            self.messages.clear()
        return web.json_response({"counts": counts, "longest_text": longest})

    async def _upload(self, request: web.Request) -> web.Response:
        fid = request.match_info["file_id"]
        body = await request.read()
        self.uploads[fid] = body
        await self._record(Call("upload", {"file_id": fid, "length": len(body)}, 200, body))
        return web.Response(text="OK - " + str(len(body)))

    async def _respond(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        params, body = await self._params(request)
        posts = self.response_posts.get(rid)
        created = self._response_created.get(rid, 0.0)
        if posts is None or len(posts) >= 5 or self.clock() - created > 1800:
            await self._record(Call("response_url", params, 404, body, ok=False))
            return web.Response(status=404, text="used_url")
        posts.append(params)
        await self._record(Call("response_url", {**params, "rid": rid}, 200, body))
        return web.Response(text="ok")

    # --- Socket Mode ----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_sockets > 0:
            self.refuse_sockets -= 1
            self.sockets_refused += 1
            async with self._cond:
                self._cond.notify_all()
            return web.Response(status=503, text="try again later")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws)
        self.sockets.append(sock)
        self.sockets_accepted += 1
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}})
        async with self._cond:
            self._cond.notify_all()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    sock.acks.append(data)
                    await self._record(Call("socket_ack", data))
        finally:
            if sock in self.sockets:
                self.sockets.remove(sock)
            async with self._cond:
                self._cond.notify_all()
        return ws

    async def wait_socket(self, *, timeout: float = 10.0) -> None:
        """Wait until a Socket Mode client is connected."""
        await self.wait_for(lambda f: any(not s.ws.closed for s in f.sockets), timeout=timeout)

    async def send_envelope(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        envelope_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """Push an envelope (``events_api``, ``slash_commands``, ``interactive``) to the newest
        open socket; return its ``envelope_id``."""
        eid = envelope_id or f"env-{next(self._ids)}"
        sock = next(s for s in reversed(self.sockets) if not s.ws.closed)
        await sock.ws.send_json(
            {
                "envelope_id": eid,
                "type": kind,
                "payload": dict(payload),
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry_attempt,
                "retry_reason": retry_reason,
            }
        )
        return eid

    def acked(self, envelope_id: str) -> dict[str, Any] | None:
        """The ack the client sent for ``envelope_id``, if any."""
        for c in self.calls:
            if c.method == "socket_ack" and c.params.get("envelope_id") == envelope_id:
                return c.params
        return None

    async def drop_sockets(self) -> None:
        """Close every open Socket Mode connection from the server side."""
        for sock in list(self.sockets):
            await sock.ws.close()

    async def disconnect_sockets(self) -> None:
        """Ask every client to reconnect (``{"type": "disconnect"}``), as Slack does."""
        for sock in list(self.sockets):
            if not sock.ws.closed:
                await sock.ws.send_json({"type": "disconnect", "reason": "refresh_requested"})


def form_body(fields: Mapping[str, str]) -> str:
    """A URL-encoded form body (slash commands and interactivity come this way)."""
    return urlencode(dict(fields))
