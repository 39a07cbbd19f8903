"""The Slack primitives: Web API calls that show one piece of an answer (design §2, Contract 1).

Who calls: :class:`adapters.slack.app.SlackAdapter` delegates the base adapter's primitives to
:class:`SlackPrimitives`; the rendering *policy* (coalescing, splitting, retract, retries after
429, drain) lives in :class:`adapters.base.BaseAdapter`, never here.

Formatting. The model writes Markdown, and Slack's ``markdown`` block takes standard Markdown
(up to 12,000 characters per payload), so the text goes into one ``markdown`` block unchanged
except for Slack's three control characters: ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;``
and ``&gt;`` (:func:`escape`) so that model text can never ping ``<!channel>`` / ``<!here>``,
mention a user or spoof a link. No converter library is needed (Slack renders the Markdown
itself), and none of them escapes these three reliably. The message's ``text`` (notifications,
screen readers, and the plain fallback) is the same escaped text. When Slack refuses the blocks
(``invalid_blocks``, ``msg_blocks_too_long`` …) the primitive sends the escaped plain text
alone, once.

Limits (:data:`MAX_TEXT_UNITS` etc.): one ``markdown`` block per message holds at most
12,000 characters *after escaping* (:func:`measure`), well below the 40,000 of ``text`` and
below the ~13.2k where Slack answers ``msg_blocks_too_long``; a message has at most 2 blocks
(text + buttons), far below 50; no ``section`` block is used, so its 3,000 limit does not
apply. Edits of one message: ``chat.update`` is Tier 3 (50+/min), so at most one per second.

Streaming: in a DM thread (Slack's assistant pane) the answer streams natively: the first text
opens ``chat.startStream``, each longer text appends its new part with ``chat.appendStream``,
and the stream ends with ``chat.stopStream`` when the text comes with buttons, when it is
replaced by a shorter or different text (a retraction: the stream ends and ``chat.update``
shows the replacement), or when no edit came for ``stream_idle`` seconds (the base adapter
never says which edit is the last). If Slack refuses ``chat.startStream`` once, every answer
after it uses ``chat.postMessage`` and throttled ``chat.update`` (as everywhere else).

Where an answer goes: into the inbound's thread (``key.thread``; empty for a top-level DM
and for slash commands). Private output (``private=True``) outside a DM goes to the command's
or button's ``response_url`` as an ephemeral message while its budget lasts (5 uses within
30 minutes, :class:`ResponseUrls`), else through ``chat.postEphemeral``. A slash command's
public output is posted with ``chat.postMessage``; where the bot may not post
(``not_in_channel``, ``channel_not_found``) it goes through the ``response_url``
(``in_channel``) instead. Drafts of an answer streamed through a ``response_url`` (edits
that only lengthen the text, without buttons or a failure mark) never spend its last use,
which stays for the final answer (it carries its buttons), a retraction or a failure. A
``response_url`` is a capability: it is never logged and never put
into a :class:`~adapters.base.MessageRef` (refs carry an opaque ``resp:`` id instead).

Errors: HTTP 429 → :class:`~core.errors.PlatformRetryAfter` with Slack's ``Retry-After``; every
other failure (``SlackApiError``, ``SlackRequestError``, connection errors, timeouts) →
:class:`~core.errors.PlatformError` whose message names the method and Slack's error code only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import MARK_FAILURE, MessageRef
from adapters.slack.convert import ACTION_IDS
from core.errors import PlatformError, PlatformRetryAfter
from core.i18n import t
from core.types import Button, Inbound

__all__ = [
    "BLOCKS_REFUSED",
    "MAX_TEXT_UNITS",
    "MIN_EDIT_INTERVAL",
    "ResponseUrls",
    "SlackPrimitives",
    "blocks_for",
    "escape",
    "measure",
]

log = logging.getLogger(__name__)

#: Characters of escaped Markdown per message (one ``markdown`` block).
MAX_TEXT_UNITS = 12_000
#: Seconds between two edits of one message (``chat.update`` is Tier 3).
MIN_EDIT_INTERVAL = 1.0
#: Slack's cap on ``text``; the fallback text is cut here.
MAX_PLAIN_TEXT = 40_000
#: Errors meaning "Slack refused the formatting": resend as plain text.
BLOCKS_REFUSED = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "markdown_text_too_long"}
)
#: Errors meaning "the bot may not post here" for a slash command's public output.
_CANNOT_POST = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
_KIND_TO_ACTION_ID = {kind: action_id for action_id, kind in ACTION_IDS.items()}

T = TypeVar("T")


def escape(text: str) -> str:
    """Escape Slack's control characters (``&`` first, so nothing is escaped twice)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def measure(text: str) -> int:
    """Characters ``text`` takes in a message: its escaped length."""
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def blocks_for(text: str, buttons: Sequence[Button] = ()) -> list[dict[str, Any]]:
    """The Block Kit blocks of one message: a ``markdown`` block, then our buttons."""
    blocks: list[dict[str, Any]] = []
    if text.strip():
        blocks.append({"type": "markdown", "text": escape(text)})
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": "hybot_buttons",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": b.label[:75], "emoji": True},
                        "action_id": f"{_KIND_TO_ACTION_ID[b.action]}{'' if i == 0 else f'_{i}'}",
                        "value": b.payload,
                    }
                    for i, b in enumerate(buttons)
                ],
            }
        )
    return blocks


def _plain(text: str) -> str:
    out = escape(text)
    return out if len(out) <= MAX_PLAIN_TEXT else out[: MAX_PLAIN_TEXT - 1] + "…"


def translate(err: Exception, method: str) -> PlatformError:
    """A Slack client failure as a hybot platform error (no bodies, URLs or tokens in it)."""
    if isinstance(err, SlackApiError):
        resp = err.response
        code = resp.get("error") if isinstance(resp.data, dict) else None
        if resp.status_code == 429:
            raw = resp.headers.get("Retry-After") or resp.headers.get("retry-after") or "1"
            try:
                after = max(0.0, float(raw if isinstance(raw, str) else raw[0]))
            except (TypeError, ValueError, IndexError):
                after = 1.0
            return PlatformRetryAfter(f"slack {method}: rate limited", retry_after=after)
        return PlatformError(f"slack {method}: {code or f'HTTP {resp.status_code}'}")
    return PlatformError(f"slack {method}: {type(err).__name__}")


def _error_code(err: PlatformError) -> str:
    return str(err).rsplit(": ", 1)[-1]


@dataclass
class _Stream:
    """A message being streamed natively: where it is and the text shown so far."""

    channel: str
    shown: str
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Url:
    url: str
    created: float
    uses: int = 0


class ResponseUrls:
    """The ``response_url`` budget of each slash command / button press: at most ``uses``
    posts within ``window`` seconds of the first sight (Slack allows 5 within 30 minutes).

    Remembers at most ``max_entries`` URLs (oldest forgotten first). Not thread-safe; used
    from the event loop only."""

    def __init__(
        self,
        *,
        uses: int = 5,
        window: float = 1800.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uses = uses
        self._window = window
        self._max = max_entries
        self._clock = clock
        self._by_key: dict[str, _Url] = {}
        self._ids = itertools.count(1)
        self._refs: dict[str, str] = {}

    def register(self, inbound: Inbound) -> str | None:
        """The key of ``inbound``'s response_url (``None`` when it has none)."""
        url = inbound.raw.get("response_url") if isinstance(inbound.raw, Mapping) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            return None
        key = inbound.delivery_id
        if key not in self._by_key:
            if len(self._by_key) >= self._max:
                oldest = next(iter(self._by_key))
                del self._by_key[oldest]
            self._by_key[key] = _Url(url, self._clock())
        return key

    def take(self, key: str) -> str | None:
        """Use the budget once: the URL, or ``None`` when it is spent or expired."""
        entry = self._by_key.get(key)
        if entry is None or entry.uses >= self._uses:
            return None
        if self._clock() - entry.created > self._window:
            return None
        entry.uses += 1
        return entry.url

    def left(self, key: str) -> int:
        """Uses left for ``key`` (0 when unknown or expired)."""
        entry = self._by_key.get(key)
        if entry is None or self._clock() - entry.created > self._window:
            return 0
        return self._uses - entry.uses

    def ref_id(self, key: str) -> str:
        """A fresh opaque message id for a message posted through ``key``'s URL."""
        rid = f"resp:{next(self._ids)}"
        self._refs[rid] = key
        if len(self._refs) > self._max:
            del self._refs[next(iter(self._refs))]
        return rid

    def key_of(self, ref_id: str) -> str | None:
        return self._refs.get(ref_id)


class SlackPrimitives:
    """The five primitives over one ``AsyncWebClient`` (see the module docstring).

    ``session`` posts to response_urls (the caller owns and closes it). ``status_text``
    gives the assistant status shown while working, per language."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        session: aiohttp.ClientSession,
        response_urls: ResponseUrls | None = None,
        status_text: Callable[[str], str] = lambda lang: t("slack.thinking", lang),
        language: str = "en",
        native_stream: bool = True,
        stream_idle: float = 3.0,
    ) -> None:
        self._language = language
        self._native = native_stream
        self._stream_idle = stream_idle
        self._streams: dict[str, _Stream] = {}
        self._resp_shown: OrderedDict[str, str] = OrderedDict()  # resp: ref id → text shown
        self._stoppers: set[asyncio.Task[None]] = set()
        self._client = client
        self._session = session
        self.response_urls = response_urls or ResponseUrls()
        self._status_text = status_text
        self._no_status: set[str] = set()

    async def _call(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (TimeoutError, SlackClientError, aiohttp.ClientError, OSError) as err:
            raise translate(err, method) from err

    async def _post_response(self, url: str, body: Mapping[str, Any]) -> None:
        """POST ``body`` to a response_url; the URL never appears in an error or a log."""
        try:
            async with self._session.post(url, json=dict(body)) as resp:
                if resp.status == 429:
                    after = float(resp.headers.get("Retry-After", "1") or 1)
                    raise PlatformRetryAfter("slack response_url: rate limited", retry_after=after)
                if resp.status >= 400:
                    raise PlatformError(f"slack response_url: HTTP {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
            raise PlatformError(f"slack response_url: {type(err).__name__}") from err

    # --- text -----------------------------------------------------------------------------

    async def send_text(
        self,
        inbound: Inbound,
        text: str,
        *,
        private: bool = False,
        buttons: tuple[Button, ...] = (),
    ) -> MessageRef:
        """Post ``text`` (Markdown) into ``inbound``'s conversation; see the module docstring
        for where private and slash-command output goes."""
        channel = inbound.channel_id or inbound.key.chat
        thread = inbound.key.thread
        resp_key = self.response_urls.register(inbound)
        if private and not inbound.is_dm:
            if resp_key is not None:
                url = self.response_urls.take(resp_key)
                if url is not None:
                    await self._post_response(url, self._payload(text, buttons, "ephemeral"))
                    return self._resp_ref(channel, resp_key, thread, text)
            return await self._ephemeral(inbound, channel, thread, text, buttons)
        if self._native and inbound.is_dm and thread and not buttons and not private:
            ref = await self._start_stream(inbound, channel, thread, text)
            if ref is not None:
                return ref
        try:
            return await self._post(channel, thread, text, buttons)
        except PlatformError as err:
            if resp_key is None or _error_code(err) not in _CANNOT_POST:
                raise
            url = self.response_urls.take(resp_key)
            if url is None:
                raise
            await self._post_response(url, self._payload(text, buttons, "in_channel"))
            return self._resp_ref(channel, resp_key, thread, text)

    def _resp_ref(self, channel: str, key: str, thread: str, text: str) -> MessageRef:
        ref = MessageRef(channel, self.response_urls.ref_id(key), thread)
        self._resp_shown[ref.id] = text
        while len(self._resp_shown) > 10_000:
            self._resp_shown.popitem(last=False)
        return ref

    @staticmethod
    def _payload(text: str, buttons: Sequence[Button], response_type: str) -> dict[str, Any]:
        return {
            "response_type": response_type,
            "text": _plain(text),
            "blocks": blocks_for(text, buttons),
            "replace_original": False,
        }

    async def _post(
        self, channel: str, thread: str, text: str, buttons: Sequence[Button]
    ) -> MessageRef:
        thread_ts = thread or None

        async def formatted() -> Any:
            return await self._client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=_plain(text),
                blocks=blocks_for(text, buttons),
                unfurl_links=False,
                unfurl_media=False,
            )

        async def plain() -> Any:
            return await self._client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=_plain(text),
                blocks=blocks_for("", buttons) or None,
                unfurl_links=False,
                unfurl_media=False,
            )

        try:
            resp = await self._call("chat.postMessage", formatted)
        except PlatformRetryAfter:
            raise
        except PlatformError as err:
            if _error_code(err) not in BLOCKS_REFUSED:
                raise
            resp = await self._call("chat.postMessage", plain)
        return MessageRef(str(resp.get("channel") or channel), str(resp["ts"]), thread)

    async def _ephemeral(
        self, inbound: Inbound, channel: str, thread: str, text: str, buttons: Sequence[Button]
    ) -> MessageRef:
        resp = await self._call(
            "chat.postEphemeral",
            lambda: self._client.chat_postEphemeral(
                channel=channel,
                user=inbound.user_id,
                thread_ts=thread or None,
                text=_plain(text),
                blocks=blocks_for(text, buttons),
            ),
        )
        return MessageRef(channel, f"eph:{resp.get('message_ts', '')}", thread)

    # --- native streaming (chat.startStream / appendStream / stopStream) ------------------

    async def _start_stream(
        self, inbound: Inbound, channel: str, thread: str, text: str
    ) -> MessageRef | None:
        """Open a native stream with ``text``; ``None`` (and never again) when Slack refuses
        streaming here, so the caller posts an ordinary message instead."""
        try:
            resp = await self._call(
                "chat.startStream",
                lambda: self._client.chat_startStream(
                    channel=channel,
                    thread_ts=thread,
                    markdown_text=escape(text),
                    recipient_user_id=inbound.user_id,
                    recipient_team_id=inbound.key.workspace or None,
                ),
            )
        except PlatformRetryAfter:
            raise
        except PlatformError as err:
            log.info("native streaming unavailable, using chat.update: %s", _error_code(err))
            self._native = False
            return None
        ts = str(resp["ts"])
        self._streams[ts] = _Stream(channel, text)
        self._arm(ts)
        return MessageRef(str(resp.get("channel") or channel), ts, thread)

    def _arm(self, ts: str) -> None:
        """(Re)start the idle timer that ends the stream once no edit came for a while (the
        base adapter never says which edit is the last)."""
        stream = self._streams.get(ts)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()

        def fire() -> None:
            task = asyncio.create_task(self._stop_quietly(ts))
            self._stoppers.add(task)
            task.add_done_callback(self._stoppers.discard)

        stream.timer = asyncio.get_running_loop().call_later(self._stream_idle, fire)

    async def _stop_quietly(self, ts: str) -> None:
        try:
            await self._stop_stream(ts)
        except PlatformError as err:
            log.warning("ending a stream failed: %s", _error_code(err))

    async def _stop_stream(
        self, ts: str, text: str | None = None, buttons: Sequence[Button] = ()
    ) -> None:
        """End the stream of ``ts``; with ``text``, leave exactly that text (and buttons)."""
        stream = self._streams.pop(ts, None)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()
        extends = text is None or text.startswith(stream.shown)
        delta = "" if text is None or not extends else text[len(stream.shown) :]
        blocks = blocks_for("", buttons) or None
        await self._call(
            "chat.stopStream",
            lambda: self._client.chat_stopStream(
                channel=stream.channel,
                ts=ts,
                markdown_text=escape(delta) if delta else None,
                blocks=blocks if extends else None,
            ),
        )
        if not extends and text is not None:
            await self._call(
                "chat.update",
                lambda: self._client.chat_update(
                    channel=stream.channel,
                    ts=ts,
                    text=_plain(text),
                    blocks=blocks_for(text, buttons),
                ),
            )

    async def close(self) -> None:
        """End every open stream (at shutdown)."""
        for ts in list(self._streams):
            await self._stop_quietly(ts)
        if self._stoppers:
            await asyncio.wait(set(self._stoppers), timeout=5)

    async def edit_text(
        self, ref: MessageRef, text: str, *, buttons: tuple[Button, ...] = ()
    ) -> None:
        """Replace a shown message's text (``chat.update``; a response_url message through
        its URL while the budget lasts). Ephemeral messages cannot be edited: PlatformError."""
        if ref.id.startswith("resp:"):
            key = self.response_urls.key_of(ref.id)
            shown = self._resp_shown.get(ref.id)
            streaming_step = (
                not buttons
                and shown is not None
                and text.startswith(shown)
                and MARK_FAILURE not in text
            )
            if key and streaming_step and self.response_urls.left(key) <= 1:
                # A longer draft of the same answer, and the URL has one use left: it is
                # kept for the final answer (which carries its buttons), a retraction or
                # a failure; the user sees this draft with the final.
                return
            url = self.response_urls.take(key) if key else None
            if url is None:
                raise PlatformError("slack response_url: budget spent")
            self._resp_shown[ref.id] = text
            body = self._payload(text, buttons, "in_channel")
            body["replace_original"] = True
            await self._post_response(url, body)
            return
        if ref.id.startswith("eph:"):
            raise PlatformError("slack chat.update: ephemeral messages cannot be edited")
        stream = self._streams.get(ref.id)
        if stream is not None:
            if buttons or not text.startswith(stream.shown):
                await self._stop_stream(ref.id, text, buttons)  # final, or text replaced
                return
            delta = text[len(stream.shown) :]
            if delta:
                await self._call(
                    "chat.appendStream",
                    lambda: self._client.chat_appendStream(
                        channel=stream.channel, ts=ref.id, markdown_text=escape(delta)
                    ),
                )
                stream.shown = text
            self._arm(ref.id)
            return
        try:
            await self._call(
                "chat.update",
                lambda: self._client.chat_update(
                    channel=ref.chat, ts=ref.id, text=_plain(text), blocks=blocks_for(text, buttons)
                ),
            )
        except PlatformRetryAfter:
            raise
        except PlatformError as err:
            if _error_code(err) not in BLOCKS_REFUSED:
                raise
            await self._call(
                "chat.update",
                lambda: self._client.chat_update(
                    channel=ref.chat,
                    ts=ref.id,
                    text=_plain(text),
                    blocks=blocks_for("", buttons) or [],
                ),
            )

    async def delete(self, ref: MessageRef) -> None:
        """Remove a shown message (``chat.delete``; ``files.delete`` for an uploaded image;
        ``delete_original`` through a response_url)."""
        if ref.id.startswith("resp:"):
            key = self.response_urls.key_of(ref.id)
            url = self.response_urls.take(key) if key else None
            if url is None:
                raise PlatformError("slack response_url: budget spent")
            await self._post_response(url, {"delete_original": True})
            return
        if ref.id.startswith("eph:"):
            return  # ephemeral messages vanish on their own; Slack offers no delete
        if ref.id in self._streams:
            await self._stop_quietly(ref.id)
        if ref.id.startswith("file:"):
            fid = ref.id.removeprefix("file:")
            await self._call("files.delete", lambda: self._client.files_delete(file=fid))
            return
        try:
            await self._call(
                "chat.delete", lambda: self._client.chat_delete(channel=ref.chat, ts=ref.id)
            )
        except PlatformRetryAfter:
            raise
        except PlatformError as err:
            if _error_code(err) != "message_not_found":
                raise  # a message already gone is success

    # --- images and typing ----------------------------------------------------------------

    async def send_image(
        self, inbound: Inbound, data: bytes, mime: str, caption: str
    ) -> MessageRef:
        """Upload ``data`` with ``files_upload_v2`` into the inbound's thread; the AI-generated
        mark is in the file's title and alt text (and the caption is the comment)."""
        channel = inbound.channel_id or inbound.key.chat
        thread = inbound.key.thread
        lang = "zh" if t("image.mark", "zh") in caption else "en"
        mark = t("image.mark", lang)
        alt = caption if mark in caption else f"{mark}. {caption}"
        ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(mime, "png")
        resp = await self._call(
            "files_upload_v2",
            lambda: self._client.files_upload_v2(
                channel=channel,
                thread_ts=thread or None,
                content=data,
                filename=f"hybot-image.{ext}",
                title=mark,
                alt_txt=alt[:1000],
                initial_comment=_plain(caption),
            ),
        )
        files = resp.get("files") or []
        fid = files[0].get("id", "") if files and isinstance(files[0], Mapping) else ""
        return MessageRef(channel, f"file:{fid}", thread)

    async def send_typing(self, inbound: Inbound, *, action: str = "typing") -> None:
        """Show "is thinking…" with ``assistant.threads.setStatus`` where Slack offers it (a
        thread; remembered per channel once refused). Slack has no other typing indicator for
        apps, so elsewhere this does nothing. Never raises but for a 429."""
        channel = inbound.channel_id or inbound.key.chat
        thread = inbound.key.thread
        if not thread or channel in self._no_status:
            return
        try:
            await self._call(
                "assistant.threads.setStatus",
                lambda: self._client.assistant_threads_setStatus(
                    channel_id=channel,
                    thread_ts=thread,
                    status=self._status_text(inbound.language or self._language),
                ),
            )
        except PlatformRetryAfter:
            raise
        except PlatformError as err:
            log.debug("assistant status unavailable in a channel: %s", _error_code(err))
            self._no_status.add(channel)
