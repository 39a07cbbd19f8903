"""The adapter contract: platform primitives below, one rendering policy above (design §7.3).

An adapter turns platform traffic into :class:`~core.types.Inbound` values, hands each to the
conversation core with :meth:`BaseAdapter.dispatch`, and shows the
:data:`~core.types.ReplyEvent` s that come back. Adapters translate and never decide: no quota,
model or store calls happen here.

Like python-telegram-bot's ``BaseRequest`` (``post()`` final, ``do_request()`` abstract), the
policy is concrete and final in :class:`BaseAdapter` and a platform implements only small
primitives (:meth:`~BaseAdapter.send_text`, :meth:`~BaseAdapter.edit_text`,
:meth:`~BaseAdapter.delete`, :meth:`~BaseAdapter.send_image`, :meth:`~BaseAdapter.send_typing`,
optionally :meth:`~BaseAdapter.measure`, :meth:`~BaseAdapter.pressed_message` and, where the
platform declares ``drafts``, :meth:`~BaseAdapter.send_draft`), its
lifecycle (:meth:`~BaseAdapter.start`, :meth:`~BaseAdapter.stop`) and its converters, and
declares its :class:`AdapterLimits`.

The policy, per event (one :class:`~adapters._answer.Answer` per dispatch, in
:mod:`adapters._answer`; splitting in :mod:`adapters.split`):

- ``Typing``: the typing indicator is shown and renewed every ``typing_interval`` until the first
  text (or image) is shown; ``ImageRunning`` shows ``upload_photo`` until the image is sent.
- ``Partial``: coalesced. The newest text wins; the answer's messages change at most once per
  ``min_edit_interval`` (the first text is shown at once). A text that outgrows
  ``max_text_units`` is split (:func:`split_text`): the full parts stay as they are and
  streaming continues in a new message. ``stream=False``: nothing is shown until ``Final``.
- Drafts (``limits.drafts``, an optional capability): in a DM (``inbound.is_dm``) that is not a
  regenerate editing a pressed message, ``Partial`` s update one ephemeral draft
  (:meth:`~BaseAdapter.send_draft`, one ``draft_id`` per message being streamed, so its changes
  animate) at most once per ``draft_interval`` instead of sending and editing a message; a
  part that is full (the text outgrew ``max_text_units``) is sent as a message at once and the
  draft goes on with the rest. The ``Final`` is then sent as new message(s) with
  :meth:`~BaseAdapter.send_text` (split as usual, buttons on the last part), which replaces
  the draft; a ``Failure`` after drafted text sends that text with the sentence the same way;
  a ``Retract`` before any message exists sends the notice. The typing indicator is kept until
  the first draft is shown. A draft the platform asks to retry later
  (``PlatformRetryAfter``) is skipped, not waited for (later drafts wait out the requested
  time; the ``Final`` never does). Any other ``PlatformError`` of a draft (a server without
  the method) switches that answer to the send-then-edit streaming above at once, and the
  adapter stops trying drafts for the rest of the process (logged once).
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
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self, final

from adapters._answer import (
    MARK_FAILURE,
    MARK_NOTE,
    MARK_QUEUED,
    MARK_RUNNING,
    Answer,
    Drafts,
    Timing,
    Undelivered,
)
from adapters.split import (
    MIN_TEXT_UNITS,
    TextPart,
    cut_text,
    measure_units,
    plan_parts,
    split_text,
)
from core.types import Button, Inbound, ReplyEvent

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
    no streaming edits, only the ``Final``. ``private_failures``: a ``Failure`` shown on its
    own (no answer text yet) goes only to the user (``send_text(private=True)``: Slack's
    ephemeral messages); where private means another chat (Telegram), leave it ``False`` so the
    sentence lands where the question was asked. ``drafts``: the platform shows ephemeral
    streaming previews in DMs (:meth:`BaseAdapter.send_draft`, e.g. Telegram's
    ``sendMessageDraft``), so DM answers stream through a draft instead of a message that is
    edited; ``draft_interval``: seconds between two updates of one draft.
    """

    max_text_units: int
    unit: Literal["utf16", "chars"]
    min_edit_interval: float
    caption_units: int
    typing_interval: float = 4.0
    stream: bool = True
    private_failures: bool = False
    drafts: bool = False
    draft_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.unit not in ("utf16", "chars"):
            raise ValueError(f"unit must be 'utf16' or 'chars', not {self.unit!r}")
        for name in ("max_text_units", "caption_units"):
            if getattr(self, name) < MIN_TEXT_UNITS:
                raise ValueError(f"{name} must be at least {MIN_TEXT_UNITS}")
        for name in ("min_edit_interval", "typing_interval", "draft_interval"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0")


class ConversationHandler(Protocol):
    """What an adapter needs from the core: ``core.conversation.Conversation`` fits."""

    def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        """Yield the reply events for one inbound message, in order."""
        ...


# --- the adapter ----------------------------------------------------------------------------


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
        self._timing = Timing(
            clock=clock,
            sleep=sleep,
            retry_attempts=max(1, retry_attempts),
            max_retry_after=max_retry_after,
        )
        self._drain_timeout = drain_timeout
        self._drafts = Drafts()
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

    async def send_draft(self, inbound: Inbound, draft_id: int, text: str) -> None:
        """Show ``text`` (Markdown, formatted as :meth:`send_text` does, with the same plain
        fallback) as the ephemeral draft ``draft_id`` (non-zero; a new text for the same id
        replaces the previous one) in the DM of ``inbound``. Only called when
        ``limits.drafts`` is set; a draft is never persisted (the base sends the final text with
        :meth:`send_text`). Raises ``PlatformRetryAfter`` (the update is skipped) or
        ``PlatformError`` (the base falls back to send-then-edit). The default raises
        ``NotImplementedError``: a platform that declares ``drafts`` must override it."""
        raise NotImplementedError(f"{type(self).__name__} declares drafts but has no send_draft")

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
        answer = Answer(self, inbound, timing=self._timing, drafts=self._drafts)
        action = inbound.action
        if action is not None and action.kind == "regenerate":
            answer.reuse = self.pressed_message(inbound)
        answer.drafting = (
            self.limits.drafts
            and self.limits.stream
            and inbound.is_dm
            and answer.reuse is None
            and self._drafts.usable
        )
        try:
            async for event in events:
                try:
                    await answer.show(event)
                except Undelivered:
                    log.warning(
                        "stopped rendering: a %s could not be delivered", type(event).__name__
                    )
                    return
        finally:
            await answer.close()

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
