"""The adapter contract: platform primitives below, one rendering policy above (design §7.3).

An adapter turns platform traffic into :class:`~core.types.Inbound` values, hands each to the
conversation core with :meth:`BaseAdapter.dispatch`, and shows the
:data:`~core.types.ReplyEvent` s that come back. Adapters translate and never decide: no quota,
model or store calls happen here.

Like python-telegram-bot's ``BaseRequest`` (``post()`` final, ``do_request()`` abstract), the
policy is concrete and final in :class:`BaseAdapter` and a platform implements only small
primitives (:meth:`~BaseAdapter.send_text`, :meth:`~BaseAdapter.edit_text`,
:meth:`~BaseAdapter.delete`, :meth:`~BaseAdapter.send_image`, :meth:`~BaseAdapter.send_typing`,
optionally :meth:`~BaseAdapter.measure` and :meth:`~BaseAdapter.pressed_message`), its
lifecycle (:meth:`~BaseAdapter.start`, :meth:`~BaseAdapter.stop`) and its converters, and
declares its :class:`AdapterLimits`.

The policy, per event (one :class:`_Answer` per dispatch):

- ``Typing``: the typing indicator is shown and renewed every ``typing_interval`` until the first
  text (or image) is shown; ``ImageRunning`` shows ``upload_photo`` until the image is sent.
- ``Partial``: coalesced. The newest text wins; the answer's messages change at most once per
  ``min_edit_interval`` (the first text is shown at once). A text that outgrows
  ``max_text_units`` is split (:func:`split_text`): the full parts stay as they are and
  streaming continues in a new message. ``stream=False``: nothing is shown until ``Final``.
- ``Final``: always delivered complete, even if streaming edits failed: existing parts are
  edited, extra parts sent, surplus parts deleted; a part whose edit fails is sent again (with
  every part after it, so the order holds). The note is shown under the text
  (``ⓘ note``), ``Final.buttons`` on the last part.
- ``Retract``: every part shown of the answer (or of the last answer, after its ``Final``) is
  replaced: the first edited to the notice, the rest deleted.
- ``Notice``: sent (split if needed); ``private`` is passed through to :meth:`send_text`.
- ``ImageQueued`` / ``ImageRunning``: one status message, edited in place, in the event's
  language (``core.i18n``); ``ImageReady``: :meth:`send_image` with the caption cut to
  ``caption_units`` (its last line, the AI-generated mark, is kept), then the status message is
  deleted.
- ``Failure``: ``✖`` and the sentence, appended to the streamed text when text was shown
  (editing that message), else sent.
- Regenerate: when ``inbound.action`` is a regenerate press and :meth:`pressed_message`
  returns a message, the answer's first message is that message, edited.

Platform errors. A primitive raises :class:`~core.errors.PlatformRetryAfter` when the platform
says "retry after N": the operation is retried after N seconds (through the injected ``sleep``),
at most ``retry_attempts`` times in all and never for a wait over ``max_retry_after``; later
operations of the answer wait, so the order is kept. Any other
:class:`~core.errors.PlatformError` is logged (class and message only; primitives never put
secrets or user text in it) and the base goes on with what it can still deliver: a failed
typing indicator, streaming edit, status message or delete costs nothing more. When an event's
content cannot be delivered at all (``Final``, ``Notice``, ``Failure``, ``Retract``,
``ImageReady``) rendering stops there and :meth:`BaseAdapter.dispatch` closes the stream without
pulling another event, so the core knows that event never reached the user (an undelivered
image is refunded by the core). For an undelivered image the user is told so
(``adapter.image_undelivered``). Exceptions other than ``PlatformError`` (bugs) propagate out
of :meth:`dispatch` after the stream was closed.

The reply-stream rule (``core.types``): the next event is pulled only after the previous one was
rendered. A ``Partial`` counts as rendered once it was taken into the coalescer (its text is
shown by the next flush); every other event once its primitives returned.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import logging
import math
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar, final

from core.errors import PlatformError, PlatformRetryAfter
from core.i18n import t
from core.types import (
    Button,
    Failure,
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
)

__all__ = [
    "MARK_FAILURE",
    "MARK_NOTE",
    "MARK_QUEUED",
    "MARK_RUNNING",
    "MIN_TEXT_UNITS",
    "AdapterLimits",
    "BaseAdapter",
    "ConversationHandler",
    "MessageRef",
    "TextPart",
    "cut_text",
    "measure_units",
    "plan_parts",
    "split_text",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MARK_FAILURE = "✖ "
"""Starts a shown ``Failure``."""
MARK_NOTE = "ⓘ "
"""Starts the line under a ``Final`` that shows its note."""
MARK_QUEUED = "⏳ "
"""Starts the status message of a queued image job."""
MARK_RUNNING = "🎨 "
"""Starts the status message of a running image job."""

MIN_TEXT_UNITS = 64
"""The smallest ``max_text_units`` / ``caption_units`` an adapter may declare (room for a code
fence closed at the end of one part and reopened in the next, plus text)."""


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message the bot has shown: ``chat`` is the platform chat/channel id, ``id`` the
    message's id (Telegram ``message_id`` as a string, Slack ``ts``), ``thread`` the topic or
    thread id, or ``""``."""

    chat: str
    id: str
    thread: str = ""


@dataclass(frozen=True, slots=True)
class AdapterLimits:
    """What a platform accepts, declared by each adapter (class attribute or property).

    ``max_text_units``: the most one message may hold, in ``unit`` (``"utf16"``: UTF-16 code
    units, as Telegram counts; ``"chars"``: code points), measured on what
    :meth:`BaseAdapter.measure` returns. ``min_edit_interval``: seconds between two changes of
    one streamed message. ``caption_units``: the image caption limit, same unit.
    ``typing_interval``: how often the typing indicator is renewed. ``stream``: ``False`` shows
    no streaming edits, only the ``Final``.
    """

    max_text_units: int
    unit: Literal["utf16", "chars"]
    min_edit_interval: float
    caption_units: int
    typing_interval: float = 4.0
    stream: bool = True

    def __post_init__(self) -> None:
        if self.unit not in ("utf16", "chars"):
            raise ValueError(f"unit must be 'utf16' or 'chars', not {self.unit!r}")
        for name in ("max_text_units", "caption_units"):
            if getattr(self, name) < MIN_TEXT_UNITS:
                raise ValueError(f"{name} must be at least {MIN_TEXT_UNITS}")
        for name in ("min_edit_interval", "typing_interval"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0")


class ConversationHandler(Protocol):
    """What an adapter needs from the core: ``core.conversation.Conversation`` fits."""

    def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        """Yield the reply events for one inbound message, in order."""
        ...


# --- measuring and splitting ----------------------------------------------------------------


def measure_units(text: str, unit: Literal["utf16", "chars"]) -> int:
    """``len(text)`` in ``unit``: code points, or UTF-16 code units (a character outside the
    Basic Multilingual Plane counts 2; a lone surrogate counts 1)."""
    if unit == "chars":
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass(frozen=True, slots=True)
class TextPart:
    """One message's worth of a split text: ``body`` is a slice of the original text;
    ``reopen`` (a fence line and newline) and ``close`` (a newline, when needed, and a fence)
    are inserted so that a code block cut by the split is closed in one part and reopened,
    with its language, in the next."""

    body: str
    reopen: str = ""
    close: str = ""

    @property
    def text(self) -> str:
        return self.reopen + self.body + self.close


_OPEN_FENCE = re.compile(r" {0,3}(`{3,})([^`]*)")
_CLOSE_FENCE = re.compile(r" {0,3}(`{3,})[ \t\r]*")
_ZWJ = "\u200d"


@dataclass(frozen=True, slots=True)
class _Fence:
    ticks: str  # the backticks that opened it (a closing fence needs at least as many)
    info: str  # the language / info string, stripped


class _Scan:
    """Line-by-line code-fence state of a text (CommonMark backtick fences)."""

    def __init__(self, text: str) -> None:
        self.starts: list[int] = []
        self.before: list[_Fence | None] = []  # the fence open before each line
        self.no_split: set[int] = set()  # indices a part must not end at
        self.length = len(text)
        self.max_ticks = 0  # the longest opening fence (the worst closing fence to insert)
        state: _Fence | None = None
        pos = 0
        while pos < len(text):
            nl = text.find("\n", pos)
            end = len(text) if nl < 0 else nl + 1
            line = text[pos:end].rstrip("\n")
            self.starts.append(pos)
            self.before.append(state)
            if state is None:
                m = _OPEN_FENCE.fullmatch(line)
                if m:
                    state = _Fence(m.group(1), m.group(2).strip())
                    self.max_ticks = max(self.max_ticks, len(state.ticks))
                    # Not inside the fence line, nor right after it (an empty code block).
                    self.no_split.update(range(pos + 1, end + 1))
            else:
                m = _CLOSE_FENCE.fullmatch(line)
                if m and len(m.group(1)) >= len(state.ticks):
                    state = None
                    self.no_split.update(range(pos + 1, pos + len(line) + 1))
            pos = end
        self.end_state = state

    def state_at(self, index: int) -> _Fence | None:
        """The fence open after ``text[:index]`` (split points are never inside a fence
        line, so the state before the line holding ``index`` is the answer)."""
        if index >= self.length:
            return self.end_state
        return self.before[bisect.bisect_right(self.starts, index) - 1]


def _is_mark(ch: str) -> bool:
    """Characters that belong to the character before them (never start a part with one)."""
    if unicodedata.combining(ch) or ch == _ZWJ:
        return True
    cp = ord(ch)
    return (
        0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequence
        or 0xDC00 <= cp <= 0xDFFF  # a low surrogate (the second half of a pair)
        or unicodedata.category(ch) in ("Mn", "Mc", "Me")
    )


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _codepoint_boundary(text: str, i: int) -> bool:
    """``i`` does not split a surrogate pair (text decoded with ``surrogatepass``)."""
    if i <= 0 or i >= len(text):
        return True
    return not (0xD800 <= ord(text[i - 1]) <= 0xDBFF and 0xDC00 <= ord(text[i]) <= 0xDFFF)


def _grapheme_boundary(text: str, i: int) -> bool:
    """An approximation of a grapheme-cluster boundary (UAX #29) good enough for splitting:
    not before a combining mark / joiner / selector / modifier, not after a joiner, not inside
    ``\\r\\n``, a surrogate pair or a flag (a pair of regional indicators)."""
    if i <= 0 or i >= len(text):
        return True
    before, after = text[i - 1], text[i]
    if _is_mark(after) or before == _ZWJ or (before == "\r" and after == "\n"):
        return False
    if not _codepoint_boundary(text, i):
        return False
    if _regional(before) and _regional(after):
        run = 0
        j = i - 1
        while j >= 0 and _regional(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0
    return True


def _boundary_kind(text: str, i: int) -> int:
    """How good a split before ``text[i]`` is: 0 paragraph, 1 line, 2 word, 3 grapheme,
    4 code point, 5 not allowed."""
    if not _codepoint_boundary(text, i):
        return 5
    if text[i - 1] == "\n":
        return 0 if i >= 2 and text[i - 2] == "\n" else 1
    if not _grapheme_boundary(text, i):
        return 4
    if text[i - 1] in " \t":
        return 2
    return 3


def plan_parts(text: str, limit: int, measure: Callable[[str], int]) -> list[TextPart]:
    """Split ``text`` into parts whose ``measure(part.text) <= limit``.

    Boundaries are chosen in this order of preference: after a blank line (paragraph), after a
    newline, after a space, between grapheme clusters, between code points (a surrogate pair
    is never split); a better kind of boundary in the last half of the room beats a worse one
    nearer its end. A ``` code block cut by a boundary is closed at the end of that part and
    reopened, with its language, at the start of the next, so no part but the last leaves a
    fence open (the last ends in the state the whole text ends in). The bodies concatenate to
    ``text`` exactly. ``measure`` must grow with the text (a longer prefix never measures less).
    Raises ``ValueError`` when ``limit < MIN_TEXT_UNITS``.
    """
    if limit < MIN_TEXT_UNITS:
        raise ValueError(f"limit must be at least {MIN_TEXT_UNITS}")
    scan = _Scan(text)
    parts: list[TextPart] = []
    worst_close = "\n" + "`" * scan.max_ticks if scan.max_ticks else ""
    pos = 0
    state: _Fence | None = None
    while pos < len(text):
        reopen = _reopen_line(state, limit, measure)
        rest = text[pos:]
        if measure(reopen + rest) <= limit:
            parts.append(TextPart(rest, reopen))
            break
        # The furthest end that fits with the worst closing fence (binary search: measure grows).
        lo, hi = pos, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if measure(reopen + text[pos:mid] + worst_close) <= limit:
                lo = mid
            else:
                hi = mid - 1
        end = _best_boundary(text, scan, pos, lo)
        while True:
            part = _make_part(text, scan, pos, end, reopen)
            if measure(part.text) <= limit or end <= pos + 1:
                break
            end = _best_boundary(text, scan, pos, end - 1)  # pathological measure: shrink
        parts.append(part)
        state = scan.state_at(end)
        pos = end
    return parts


def _reopen_line(state: _Fence | None, limit: int, measure: Callable[[str], int]) -> str:
    if state is None:
        return ""
    line = f"{state.ticks}{state.info}\n"
    overhead = measure(line) + measure("\n" + state.ticks)
    if overhead > limit // 4:
        line = state.ticks + "\n"  # a long info string is dropped rather than crowd the text
    return line


def _make_part(text: str, scan: _Scan, pos: int, end: int, reopen: str) -> TextPart:
    body = text[pos:end]
    state = scan.state_at(end) if end < len(text) else None
    close = ""
    if state is not None:
        close = state.ticks if body.endswith("\n") else "\n" + state.ticks
    return TextPart(body, reopen, close)


def _best_boundary(text: str, scan: _Scan, pos: int, furthest: int) -> int:
    """The best split point in ``(pos, furthest]`` (see :func:`plan_parts`); always > pos."""
    furthest = min(furthest, len(text))
    if furthest <= pos:
        # Not even one character fits (a pathological measure): make progress anyway.
        step = 2 if not _codepoint_boundary(text, pos + 1) else 1
        return min(len(text), pos + step)
    half = pos + (furthest - pos) // 2
    best: dict[int, int] = {}
    for i in range(furthest, pos, -1):
        if i in scan.no_split:
            continue
        kind = _boundary_kind(text, i)
        if kind < 5 and kind not in best:
            best[kind] = i
            if kind == 0 and i > half:
                return i
    for kind in range(5):
        i = best.get(kind, 0)
        if i > half:
            return i
    for kind in range(5):
        if kind in best:
            return best[kind]
    # Only split points inside fence lines remain: any code point boundary will do.
    for i in range(furthest, pos, -1):
        if _codepoint_boundary(text, i):
            return i
    return furthest


def split_text(text: str, limit: int, measure: Callable[[str], int]) -> list[str]:
    """The texts of :func:`plan_parts` (one per message), without parts that are only
    whitespace (platforms refuse an empty message, and show nothing of it anyway); ``[text]``
    when every part is whitespace (``[""]`` for an empty text)."""
    texts = [part.text for part in plan_parts(text, limit, measure)]
    return [t for t in texts if t.strip()] or [text[:limit]]


def cut_text(text: str, limit: int, measure: Callable[[str], int]) -> str:
    """``text`` if it fits ``limit``, else its longest prefix (at a grapheme boundary) + "…"
    that does."""
    if measure(text) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid] + "…") <= limit:
            lo = mid
        else:
            hi = mid - 1
    end = lo
    while end > 0 and not _grapheme_boundary(text, end):
        end -= 1
    if end == 0:
        end = lo
        while end > 0 and not _codepoint_boundary(text, end):
            end -= 1
    return text[:end] + "…"


def _cut_caption(caption: str, limit: int, measure: Callable[[str], int]) -> str:
    """Cut a caption to ``limit``, keeping its last line (the AI-generated mark) whole."""
    if measure(caption) <= limit:
        return caption
    head, sep, tail = caption.rpartition("\n")
    if sep and measure(tail) <= limit // 2:
        room = limit - measure("\n" + tail)
        return cut_text(head, room, measure) + "\n" + tail
    return cut_text(caption, limit, measure)


# --- the adapter ----------------------------------------------------------------------------


class _Undelivered(Exception):
    """An event's content could not be shown: rendering stops, the stream is closed."""


@dataclass(slots=True)
class _Shown:
    ref: MessageRef
    text: str | None  # None: unknown (an edit failed), so the next sync edits it again
    buttons: tuple[Button, ...] = ()


@dataclass(slots=True)
class _Answer:
    """Rendering state of one dispatch."""

    inbound: Inbound
    parts: list[_Shown] = field(default_factory=list)  # the answer being streamed / finished
    last_parts: list[_Shown] = field(default_factory=list)  # the previous answer (for Retract)
    reuse: MessageRef | None = None  # the pressed message a regenerated answer edits
    text: str = ""  # the newest streamed text
    pending: str | None = None  # streamed text not shown yet
    next_change: float = -math.inf  # when the answer's messages may change again
    flusher: asyncio.Task[None] | None = None
    flushing: bool = False
    status: MessageRef | None = None  # the image status message
    status_text: str = ""
    status_changed: float = -math.inf
    typing: asyncio.Task[None] | None = None
    typing_action: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_FINAL_METHODS = ("dispatch", "render", "drain")


class BaseAdapter(abc.ABC):
    """Abstract base of every platform adapter; an async context manager.

    Subclasses declare :attr:`limits` and implement the primitives, :meth:`start` and
    :meth:`stop`; :meth:`dispatch`, :meth:`render` and :meth:`drain` are final (overriding them
    raises ``TypeError`` at class creation). Constructor (keyword-only): ``conversation`` (the
    core), ``sleep`` and ``clock`` (injectable so tests control time; defaults
    ``asyncio.sleep`` and ``time.monotonic``), ``retry_attempts`` (tries per operation when
    the platform says "retry after"), ``max_retry_after`` (a longer requested wait is not
    waited: the operation fails), ``drain_timeout`` (default for :meth:`drain`).

    ``async with adapter:`` calls :meth:`start`; leaving calls :meth:`stop`. If :meth:`start`
    fails, :meth:`stop` is still called (so partially acquired resources are released) and the
    error propagates. :meth:`stop` must therefore be idempotent and safe after a failed start,
    and must call :meth:`drain` once it stopped taking platform traffic, before it releases
    what the primitives use. (If dispatches are still in flight after :meth:`stop` returned,
    ``__aexit__`` drains them as a last resort.)

    Drain: :meth:`dispatch` runs each delivery in a task of its own that :meth:`drain` tracks.
    Once draining started, :meth:`dispatch` returns ``False`` without calling the core (the
    delivery stays unhandled, for the platform or the inbox to deliver again); it returns
    ``True`` for every delivery the core handled.
    """

    @property
    @abc.abstractmethod
    def limits(self) -> AdapterLimits:
        """What the platform accepts (a class attribute in most adapters)."""

    def __init__(
        self,
        *,
        conversation: ConversationHandler,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        retry_attempts: int = 5,
        max_retry_after: float = 120.0,
        drain_timeout: float = 30.0,
    ) -> None:
        self._conversation = conversation
        self._sleep = sleep
        self._clock = clock
        self._retry_attempts = max(1, retry_attempts)
        self._max_retry_after = max_retry_after
        self._drain_timeout = drain_timeout
        self._inflight: set[asyncio.Task[bool]] = set()
        self._draining = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for name in _FINAL_METHODS:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} overrides BaseAdapter.{name}, which is final")

    @property
    def conversation(self) -> ConversationHandler:
        return self._conversation

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has started (new deliveries are refused)."""
        return self._draining

    # --- lifecycle (platform) ---------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Acquire platform resources (connections, webhooks, directories)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop taking traffic, :meth:`drain`, release resources. Idempotent."""

    # --- primitives (platform) --------------------------------------------------------------

    @abc.abstractmethod
    async def send_text(
        self,
        inbound: Inbound,
        text: str,
        *,
        private: bool = False,
        buttons: tuple[Button, ...] = (),
    ) -> MessageRef:
        """Send ``text`` (Markdown; format it for the platform, falling back to plain text if
        the platform refuses the formatting) into the conversation of ``inbound`` (its
        thread/topic, replying to ``inbound.message_id`` where apt). ``private``: only the
        user should see it. Raises ``PlatformError`` / ``PlatformRetryAfter``."""

    @abc.abstractmethod
    async def edit_text(
        self, ref: MessageRef, text: str, *, buttons: tuple[Button, ...] = ()
    ) -> None:
        """Replace the text (and buttons) of ``ref``; "not modified" is success."""

    @abc.abstractmethod
    async def delete(self, ref: MessageRef) -> None:
        """Delete ``ref``; a message already gone is success."""

    @abc.abstractmethod
    async def send_image(
        self, inbound: Inbound, data: bytes, mime: str, caption: str
    ) -> MessageRef:
        """Send an image with ``caption`` (already cut to ``limits.caption_units``)."""

    @abc.abstractmethod
    async def send_typing(
        self, inbound: Inbound, *, action: Literal["typing", "upload_photo"] = "typing"
    ) -> None:
        """Show the typing (or uploading) indicator once; the base renews it."""

    def measure(self, text: str) -> int:
        """The size of ``text`` as the platform counts it against ``limits``; the default
        is its length in ``limits.unit``. Override to measure the formatted form. Must never
        measure a longer prefix as less."""
        return measure_units(text, self.limits.unit)

    def pressed_message(self, inbound: Inbound) -> MessageRef | None:
        """The bot message whose button produced ``inbound`` (default: ``None``)."""
        return None

    # --- policy (final) ---------------------------------------------------------------------

    @final
    async def dispatch(self, inbound: Inbound) -> bool:
        """Hand ``inbound`` to the core and render its answer; ``True`` when the core handled
        it (an inbox entry may be marked done), ``False`` when the adapter is draining (the
        core was not called: leave the entry for a later re-drive).

        The core's stream is always closed (``aclose``), also when rendering failed or the
        dispatch was cancelled, so the core's cleanup (refunds, lock release) runs promptly.
        Runs in a task of its own, tracked for :meth:`drain`; cancelling the caller cancels it,
        and a dispatch that :meth:`drain` cancels raises ``asyncio.CancelledError`` in the
        caller. Platform errors are logged, not raised; any other exception (a bug) is raised
        after the stream was closed.
        """
        if self._draining:
            log.info("refused a delivery: the adapter is draining (%s)", inbound.platform)
            return False
        task = asyncio.create_task(self._dispatch(inbound), name="hybot-dispatch")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await task

    async def _dispatch(self, inbound: Inbound) -> bool:
        events = self._conversation.handle(inbound)
        try:
            await self.render(events, inbound=inbound)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                # Closing runs the core's cleanup (refund, lock release) when rendering stopped
                # early; a second error from inside it is logged, not raised, so it cannot hide
                # the first one.
                try:
                    await aclose()
                except Exception:
                    log.exception("closing the reply stream failed")
        return True

    @final
    async def render(self, events: AsyncIterator[ReplyEvent], *, inbound: Inbound) -> None:
        """Show ``events`` (the answer to ``inbound``) as they arrive (see the module
        docstring). Pulls the next event only after the previous one was rendered; stops
        (without pulling more) when an event's content could not be delivered. Does not close
        ``events``: :meth:`dispatch` does."""
        answer = _Answer(inbound)
        action = inbound.action
        if action is not None and action.kind == "regenerate":
            answer.reuse = self.pressed_message(inbound)
        try:
            async for event in events:
                try:
                    await self._render_one(answer, event)
                except _Undelivered:
                    log.warning(
                        "stopped rendering: a %s could not be delivered", type(event).__name__
                    )
                    return
        finally:
            await self._stop_flusher(answer)
            await self._stop_typing(answer)

    @final
    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (injected clock)
        """Stop intake, wait up to ``timeout`` seconds (default: the constructor's
        ``drain_timeout``; measured with the injected ``sleep``) for every in-flight dispatch,
        then cancel the rest and wait for their cleanup (the core's generator close runs its
        refunds). Idempotent."""
        self._draining = True
        limit = self._drain_timeout if timeout is None else timeout
        if self._inflight:
            timer = asyncio.ensure_future(self._sleep(max(0.0, limit)))
            try:
                while self._inflight and not timer.done():
                    waiting = {*self._inflight, timer}
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
        late = list(self._inflight)
        for task in late:
            task.cancel()
        if late:
            log.warning("drain: cancelled %d dispatch(es) still running", len(late))
            await asyncio.gather(*late, return_exceptions=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._inflight:
            await self.drain()

    # --- rendering, per event -------------------------------------------------------------

    async def _render_one(self, answer: _Answer, event: ReplyEvent) -> None:
        lang = "en"
        match event:
            case Typing():
                await self._start_typing(answer, "typing")
            case Partial(text=text):
                answer.text = text
                if self.limits.stream:
                    await self._offer(answer, text)
            case Final(text=text, note=note, buttons=buttons):
                await self._stop_flusher(answer)
                full = text + (f"\n\n{MARK_NOTE}{note}" if note else "")
                await self._wait_change(answer)
                await self._show_answer(answer, full, buttons=buttons, final=True)
                self._end_answer(answer)
            case Retract(notice=notice):
                await self._stop_flusher(answer)
                await self._retract(answer, notice)
            case Notice(text=text, private=private):
                await self._send_new(answer, text, private=private)
            case Failure(user_message=message):
                await self._stop_flusher(answer)
                if answer.parts:
                    await self._wait_change(answer)
                    full = f"{answer.text}\n\n{MARK_FAILURE}{message}"
                    await self._show_answer(answer, full, buttons=(), final=True)
                else:
                    await self._send_new(answer, MARK_FAILURE + message)
                self._end_answer(answer)
            case ImageQueued(position=position, language=lang):
                text = MARK_QUEUED + t("image.queued", lang, position=position)
                await self._show_status(answer, text)
            case ImageRunning(language=lang):
                await self._show_status(answer, MARK_RUNNING + t("image.running", lang))
                await self._start_typing(answer, "upload_photo")
            case ImageReady(data=data, mime=mime, caption=caption, language=lang):
                await self._send_image(answer, data, mime, caption, lang)

    def _end_answer(self, answer: _Answer) -> None:
        if answer.parts:
            answer.last_parts = answer.parts
        answer.parts = []
        answer.text = ""
        answer.pending = None
        answer.next_change = -math.inf

    # --- coalescing -------------------------------------------------------------------------

    async def _offer(self, answer: _Answer, text: str) -> None:
        """Take a streamed text: show it now if the answer may change, else let the flusher
        show the newest text once it may."""
        answer.pending = text
        if answer.flusher is not None:
            if not answer.flusher.done():
                return
            _raise_bug(answer.flusher)
        if self._clock() >= answer.next_change:
            await self._flush(answer)
        else:
            answer.flusher = asyncio.create_task(self._flush_later(answer), name="hybot-flush")

    async def _flush_later(self, answer: _Answer) -> None:
        while (wait := answer.next_change - self._clock()) > 0:
            await self._sleep(wait)
        await self._flush(answer)

    async def _flush(self, answer: _Answer) -> None:
        async with answer.lock:
            text, answer.pending = answer.pending, None
            if text is None:
                return
            answer.flushing = True
            try:
                await self._sync(answer, split_text(text, self._max_units, self.measure), (), False)
            finally:
                answer.flushing = False
                answer.next_change = self._clock() + self.limits.min_edit_interval

    async def _stop_flusher(self, answer: _Answer) -> None:
        """Drop the pending streamed text and stop the flusher; a flush already talking to the
        platform is allowed to finish (cancelling it would leave the message in doubt)."""
        task = answer.flusher
        answer.flusher = None
        answer.pending = None
        if task is None:
            return
        if task.done():
            _raise_bug(task)
            return
        if not answer.flushing:
            task.cancel()
        # asyncio.wait, not ``await task``: a cancellation of this task must not be mistaken
        # for the flusher's own (and swallowed).
        await asyncio.wait({task})
        _raise_bug(task)

    async def _wait_change(self, answer: _Answer) -> None:
        """Wait until the answer's messages may change again (``min_edit_interval``)."""
        if not answer.parts:
            return
        while (wait := answer.next_change - self._clock()) > 0:
            await self._sleep(wait)

    @property
    def _max_units(self) -> int:
        return self.limits.max_text_units

    # --- showing text -----------------------------------------------------------------------

    async def _show_answer(
        self, answer: _Answer, text: str, *, buttons: tuple[Button, ...], final: bool
    ) -> None:
        async with answer.lock:
            texts = split_text(text, self._max_units, self.measure)
            await self._sync(answer, texts, buttons, final)
            answer.next_change = self._clock() + self.limits.min_edit_interval

    async def _sync(
        self, answer: _Answer, texts: list[str], buttons: tuple[Button, ...], final: bool
    ) -> None:
        """Make the answer's messages read ``texts`` (buttons on the last).

        Streaming (``final=False``): a failed edit leaves the part unknown (the next flush
        edits it again); a failed send ends this flush. Final: a part whose edit fails is
        sent again with every part after it (so the order holds) and the stale messages are
        deleted; surplus parts are deleted; a failed send raises ``_Undelivered``.
        """
        parts = answer.parts
        for i, text in enumerate(texts):
            wanted = buttons if i == len(texts) - 1 else ()
            if i < len(parts):
                shown = parts[i]
                if shown.text == text and shown.buttons == wanted:
                    continue
                try:
                    await self._call("edit_text", self.edit_text, shown.ref, text, buttons=wanted)
                except PlatformError as err:
                    self._log_failure("edit_text", err)
                    shown.text = None
                    if not final:
                        continue
                    await self._resend_from(answer, i, texts, buttons)
                    return
                shown.text, shown.buttons = text, wanted
                continue
            if i == 0 and answer.reuse is not None:
                ref, answer.reuse = answer.reuse, None
                parts.append(_Shown(ref, None))
                try:
                    await self._call("edit_text", self.edit_text, ref, text, buttons=wanted)
                except PlatformError as err:
                    self._log_failure("edit_text", err)
                    parts.pop()
                else:
                    parts[0].text, parts[0].buttons = text, wanted
                    if answer.typing_action == "typing":
                        await self._stop_typing(answer)
                    continue
            try:
                ref = await self._send_answer_text(answer, text, wanted)
            except PlatformError as err:
                self._log_failure("send_text", err)
                if final:
                    raise _Undelivered from err
                return
            parts.append(_Shown(ref, text, wanted))
        if final and len(parts) > len(texts):
            surplus = parts[len(texts) :]
            del parts[len(texts) :]
            for shown in surplus:
                await self._try_delete(shown.ref)

    async def _resend_from(
        self, answer: _Answer, start: int, texts: list[str], buttons: tuple[Button, ...]
    ) -> None:
        stale = answer.parts[start:]
        del answer.parts[start:]
        for i in range(start, len(texts)):
            wanted = buttons if i == len(texts) - 1 else ()
            try:
                ref = await self._send_answer_text(answer, texts[i], wanted)
            except PlatformError as err:
                self._log_failure("send_text", err)
                raise _Undelivered from err
            answer.parts.append(_Shown(ref, texts[i], wanted))
        for shown in stale:
            await self._try_delete(shown.ref)

    async def _send_answer_text(
        self, answer: _Answer, text: str, buttons: tuple[Button, ...], *, private: bool = False
    ) -> MessageRef:
        ref = await self._call(
            "send_text", self.send_text, answer.inbound, text, private=private, buttons=buttons
        )
        if answer.typing_action == "typing":
            await self._stop_typing(answer)
        return ref

    async def _send_new(self, answer: _Answer, text: str, *, private: bool = False) -> None:
        """Send ``text`` as new message(s); ``_Undelivered`` when that fails."""
        for part in split_text(text, self._max_units, self.measure):
            try:
                await self._send_answer_text(answer, part, (), private=private)
            except PlatformError as err:
                self._log_failure("send_text", err)
                raise _Undelivered from err

    async def _retract(self, answer: _Answer, notice: str) -> None:
        targets = answer.parts or answer.last_parts
        answer.parts, answer.last_parts = [], []
        answer.text = ""
        if not targets:
            await self._send_new(answer, notice)
            return
        first, rest = targets[0], targets[1:]
        try:
            await self._call("edit_text", self.edit_text, first.ref, notice)
        except PlatformError as err:
            self._log_failure("edit_text", err)
            rest = targets  # the withdrawn text must go even if the notice cannot replace it
            for shown in rest:
                await self._try_delete(shown.ref)
            await self._send_new(answer, notice)
            return
        answer.last_parts = [_Shown(first.ref, notice)]
        for shown in rest:
            await self._try_delete(shown.ref)

    async def _try_delete(self, ref: MessageRef) -> None:
        try:
            await self._call("delete", self.delete, ref)
        except PlatformError as err:
            self._log_failure("delete", err)

    # --- images -----------------------------------------------------------------------------

    async def _show_status(self, answer: _Answer, text: str) -> None:
        if text == answer.status_text:
            return
        try:
            if answer.status is None:
                answer.status = await self._call("send_text", self.send_text, answer.inbound, text)
            else:
                while (wait := answer.status_changed - self._clock()) > 0:
                    await self._sleep(wait)
                await self._call("edit_text", self.edit_text, answer.status, text)
            answer.status_text = text
            answer.status_changed = self._clock() + self.limits.min_edit_interval
        except PlatformError as err:
            self._log_failure("status", err)

    async def _send_image(
        self, answer: _Answer, data: bytes, mime: str, caption: str, lang: str
    ) -> None:
        caption = _cut_caption(caption, self.limits.caption_units, self.measure)
        try:
            await self._call("send_image", self.send_image, answer.inbound, data, mime, caption)
        except PlatformError as err:
            self._log_failure("send_image", err)
            await self._stop_typing(answer)
            sorry = MARK_FAILURE + t("adapter.image_undelivered", lang)
            try:
                if answer.status is not None:
                    await self._call("edit_text", self.edit_text, answer.status, sorry)
                else:
                    await self._call("send_text", self.send_text, answer.inbound, sorry)
            except PlatformError as second:
                self._log_failure("send_text", second)
            answer.status = None
            raise _Undelivered from err
        await self._stop_typing(answer)
        if answer.status is not None:
            status, answer.status, answer.status_text = answer.status, None, ""
            await self._try_delete(status)

    # --- typing -----------------------------------------------------------------------------

    async def _start_typing(
        self, answer: _Answer, action: Literal["typing", "upload_photo"]
    ) -> None:
        """Show the indicator now (before the next event is pulled) and renew it every
        ``typing_interval`` in a task of its own until :meth:`_stop_typing`."""
        if answer.typing is not None and not answer.typing.done():
            if answer.typing_action == action:
                return
            await self._stop_typing(answer)
        answer.typing_action = action
        wait = await self._typing_once(answer.inbound, action)
        if self.limits.typing_interval > 0:
            answer.typing = asyncio.create_task(
                self._keep_typing(answer.inbound, action, wait), name="hybot-typing"
            )

    async def _typing_once(
        self, inbound: Inbound, action: Literal["typing", "upload_photo"]
    ) -> float:
        """Send the indicator once; the seconds until the next renewal."""
        interval = self.limits.typing_interval
        try:
            await self.send_typing(inbound, action=action)
        except PlatformRetryAfter as err:
            return max(interval, _finite(err.retry_after))
        except PlatformError as err:
            self._log_failure("send_typing", err)
        return interval

    async def _keep_typing(
        self, inbound: Inbound, action: Literal["typing", "upload_photo"], wait: float
    ) -> None:
        while True:
            await self._sleep(wait)
            wait = await self._typing_once(inbound, action)

    async def _stop_typing(self, answer: _Answer) -> None:
        task, answer.typing, answer.typing_action = answer.typing, None, ""
        # (typing_action is cleared even without a task: typing_interval 0 shows it once)
        if task is None:
            return
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        _raise_bug(task)

    # --- platform calls ---------------------------------------------------------------------

    async def _call(
        self, name: str, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object
    ) -> T:
        """``fn(*args, **kwargs)``, retried after the wait a ``PlatformRetryAfter`` asks for
        (at most ``retry_attempts`` tries, never a wait over ``max_retry_after``)."""
        for attempt in range(1, self._retry_attempts + 1):
            try:
                return await fn(*args, **kwargs)
            except PlatformRetryAfter as err:
                wait = _finite(err.retry_after)
                if attempt == self._retry_attempts or wait > self._max_retry_after:
                    raise
                log.info("%s: the platform asked to retry after %.1f s", name, wait)
                await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _log_failure(name: str, err: PlatformError) -> None:
        # The class and the message only: primitives keep secrets and user text out of it, and
        # no traceback (its frames could hold either).
        log.warning("%s failed: %s: %s", name, type(err).__name__, str(err)[:300])


def _raise_bug(task: asyncio.Task[None]) -> None:
    """Re-raise what a finished helper task raised, unless it was cancelled (platform errors
    are handled inside the tasks: what escapes is a bug)."""
    if task.done() and not task.cancelled():
        error = task.exception()
        if error is not None:
            raise error


def _finite(seconds: float) -> float:
    """A sane wait from a platform's number (NaN, negative or infinite → 1 s, 0, or 1 h)."""
    if math.isnan(seconds):
        return 1.0
    return min(max(seconds, 0.0), 3600.0)
