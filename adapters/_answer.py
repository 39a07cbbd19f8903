"""One answer being shown: its rendering state and the per-event policy of ``BaseAdapter``.

:meth:`adapters.base.BaseAdapter.render` makes one :class:`Answer` per dispatch and hands it
each event in order (:meth:`Answer.show`); the answer drives the adapter's primitives through
:class:`Timing` (the injected clock and sleep, and the bounded "retry after" policy). What each
event does is described in :mod:`adapters.base`. Private to :mod:`adapters`: platform adapters
implement primitives and never touch this module.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from adapters.split import cut_caption, split_text
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

if TYPE_CHECKING:
    from adapters.base import BaseAdapter, MessageRef

__all__ = [
    "MARK_FAILURE",
    "MARK_NOTE",
    "MARK_QUEUED",
    "MARK_RUNNING",
    "Answer",
    "Drafts",
    "Timing",
    "Undelivered",
]

# The policy logs under the name it always had, so operators' logging config keeps working.
log = logging.getLogger("adapters.base")

T = TypeVar("T")

MARK_FAILURE = "✖ "
"""Starts a shown ``Failure``."""
MARK_NOTE = "ⓘ "
"""Starts the line under a ``Final`` that shows its note."""
MARK_QUEUED = "⏳ "
"""Starts the status message of a queued image job."""
MARK_RUNNING = "🎨 "
"""Starts the status message of a running image job."""


class Undelivered(Exception):
    """An event's content could not be shown: rendering stops, the stream is closed."""


@dataclass(frozen=True, slots=True)
class Timing:
    """How an answer waits and retries: ``clock`` (monotonic seconds) and ``sleep`` are the
    adapter's injected ones; :meth:`call` retries a primitive the platform asked to retry later
    (at most ``retry_attempts`` tries, never a wait over ``max_retry_after``)."""

    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    retry_attempts: int
    max_retry_after: float

    async def call(
        self, name: str, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object
    ) -> T:
        """``fn(*args, **kwargs)``, retried after the wait a ``PlatformRetryAfter`` asks for;
        the last ``PlatformRetryAfter`` (or a wait too long to honour) is raised."""
        for attempt in range(1, self.retry_attempts + 1):
            try:
                return await fn(*args, **kwargs)
            except PlatformRetryAfter as err:
                wait = _finite(err.retry_after)
                if attempt == self.retry_attempts or wait > self.max_retry_after:
                    raise
                log.info("%s: the platform asked to retry after %.1f s", name, wait)
                await self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


class Drafts:
    """Per adapter: whether drafts still work (:attr:`usable`) and the draft ids to use.

    The first draft that fails with a ``PlatformError`` other than "retry after" turns drafts
    off for the rest of the process (:meth:`broken`, logged once): a server without the method
    will not grow it while we run."""

    def __init__(self) -> None:
        # Ids start at a random point so a restarted process does not animate an old draft
        # of the same chat (drafts live ~30 s) into a new answer.
        self._ids = itertools.count(random.randrange(1, 2**30))
        self.usable = True

    def new_id(self) -> int:
        """A fresh non-zero draft id (below 2**31, as Telegram's ids are)."""
        return next(self._ids) % (2**31 - 1) + 1

    def broken(self, err: PlatformError) -> None:
        if self.usable:
            self.usable = False
            log.warning(
                "drafts are off for the rest of the process (the platform refused one: "
                "%s: %s); answers stream by editing messages",
                type(err).__name__,
                str(err)[:300],
            )


@dataclass(slots=True)
class Shown:
    """One message of an answer as the bot last showed it."""

    ref: MessageRef
    text: str | None  # None: unknown (an edit failed), so the next sync edits it again
    buttons: tuple[Button, ...] = ()


class Answer:
    """Rendering state of one dispatch, and the policy that shows each of its events through
    ``adapter``'s primitives. Not shared between tasks except with its own flusher and typing
    tasks (``lock`` serialises the changes of its messages)."""

    def __init__(
        self,
        adapter: BaseAdapter,
        inbound: Inbound,
        *,
        timing: Timing,
        drafts: Drafts | None = None,
    ) -> None:
        self._adapter = adapter
        self._timing = timing
        self._drafts = drafts or Drafts()
        self.drafting = False  # streaming through drafts (set by render; off after a failure)
        self.drafted = False  # a draft of this answer's text was shown
        self.draft_id = 0  # the draft being streamed (0: none yet)
        self.draft_part = -1  # the part index that draft shows
        self.draft_hold = -math.inf  # no draft before this (the platform said "retry after")
        self.inbound = inbound
        self.parts: list[Shown] = []  # the answer being streamed / finished
        self.last_parts: list[Shown] = []  # the previous answer (for Retract)
        self.reuse: MessageRef | None = None  # the pressed message a regenerated answer edits
        self.text = ""  # the newest streamed text
        self.pending: str | None = None  # streamed text not shown yet
        self.next_change = -math.inf  # when the answer's messages may change again
        self.flusher: asyncio.Task[None] | None = None
        self.flushing = False
        self.status: MessageRef | None = None  # the image status message
        self.status_text = ""
        self.status_changed = -math.inf
        self.typing: asyncio.Task[None] | None = None
        self.typing_action = ""
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        """Stop the flusher (dropping unshown streamed text) and the typing indicator."""
        try:
            await self._stop_flusher()
        finally:
            await self._stop_typing()

    # --- per event -------------------------------------------------------------------------

    async def show(self, event: ReplyEvent) -> None:
        """Render ``event`` (see :mod:`adapters.base`); raises :class:`Undelivered` when its
        content could not be shown at all."""
        lang = "en"
        match event:
            case Typing():
                await self._start_typing("typing")
            case Partial(text=text):
                self.text = text
                if self._adapter.limits.stream:
                    await self._offer(text)
            case Final(text=text, note=note, buttons=buttons):
                await self._stop_flusher()
                full = text + (f"\n\n{MARK_NOTE}{note}" if note else "")
                await self._wait_change()
                await self._show_answer(full, buttons=buttons, final=True)
                self._end()
            case Retract(notice=notice):
                await self._stop_flusher()
                await self._retract(notice)
            case Notice(text=text, private=private):
                await self._send_new(text, private=private)
            case Failure(user_message=message):
                await self._stop_flusher()
                if self.parts or self.drafted:
                    await self._wait_change()
                    full = f"{self.text}\n\n{MARK_FAILURE}{message}"
                    await self._show_answer(full, buttons=(), final=True)
                else:
                    private = self._adapter.limits.private_failures
                    await self._send_new(MARK_FAILURE + message, private=private)
                self._end()
            case ImageQueued(position=position, language=lang):
                text = MARK_QUEUED + t("image.queued", lang, position=position)
                await self._show_status(text)
            case ImageRunning(language=lang):
                await self._show_status(MARK_RUNNING + t("image.running", lang))
                await self._start_typing("upload_photo")
            case ImageReady(data=data, mime=mime, caption=caption, language=lang):
                await self._send_image(data, mime, caption, lang)

    def _end(self) -> None:
        if self.parts:
            self.last_parts = self.parts
        self.parts = []
        self.text = ""
        self.pending = None
        self.next_change = -math.inf
        self.drafted = False
        self.draft_id = 0
        self.draft_part = -1

    # --- coalescing -------------------------------------------------------------------------

    async def _offer(self, text: str) -> None:
        """Take a streamed text: show it now if the answer may change, else let the flusher
        show the newest text once it may."""
        self.pending = text
        if self.flusher is not None:
            if not self.flusher.done():
                return
            _raise_bug(self.flusher)
        if self._timing.clock() >= self._flush_at():
            await self._flush()
        else:
            self.flusher = asyncio.create_task(self._flush_later(), name="hybot-flush")

    def _flush_at(self) -> float:
        """When the streamed text may be shown again."""
        if self.drafting:
            return max(self.next_change, self.draft_hold)
        return self.next_change

    async def _flush_later(self) -> None:
        while (wait := self._flush_at() - self._timing.clock()) > 0:
            await self._timing.sleep(wait)
        await self._flush()

    async def _flush(self) -> None:
        async with self.lock:
            text, self.pending = self.pending, None
            if text is None:
                return
            self.flushing = True
            limits = self._adapter.limits
            try:
                texts = self._split(text)
                if not (self.drafting and await self._stream_draft(texts)):
                    await self._sync(texts, (), False)
            finally:
                self.flushing = False
                interval = limits.draft_interval if self.drafting else limits.min_edit_interval
                self.next_change = self._timing.clock() + interval

    async def _stream_draft(self, texts: list[str]) -> bool:
        """Show streamed ``texts`` through a draft: the full parts as messages (sent once),
        the last part as the draft. ``False`` when drafts failed (``drafting`` is then off
        and the caller streams by send-then-edit)."""
        if len(texts) > 1:
            await self._sync(texts[:-1], (), False)
            if len(self.parts) < len(texts) - 1:
                return True  # a full part could not be sent: the next flush tries again
        part = len(texts) - 1
        if not texts[part].strip():
            return True  # nothing to preview yet (an empty draft would show a placeholder)
        if part != self.draft_part:
            self.draft_id, self.draft_part = self._drafts.new_id(), part
        try:
            await self._adapter.send_draft(self.inbound, self.draft_id, texts[-1])
        except PlatformRetryAfter as err:
            # A draft is a preview: skip it rather than hold up the answer.
            wait = _finite(err.retry_after)
            log.info("send_draft: the platform asked to retry after %.1f s; skipped", wait)
            self.draft_hold = self._timing.clock() + wait
            return True
        except PlatformError as err:
            self._drafts.broken(err)
            self.drafting = False
            return False
        self.drafted = True
        if self.typing_action == "typing":
            await self._stop_typing()
        return True

    async def _stop_flusher(self) -> None:
        """Drop the pending streamed text and stop the flusher; a flush already talking to the
        platform is allowed to finish (cancelling it would leave the message in doubt)."""
        task = self.flusher
        self.flusher = None
        self.pending = None
        if task is None:
            return
        if task.done():
            _raise_bug(task)
            return
        if not self.flushing:
            task.cancel()
        # asyncio.wait, not ``await task``: a cancellation of this task must not be mistaken
        # for the flusher's own (and swallowed).
        await asyncio.wait({task})
        _raise_bug(task)

    async def _wait_change(self) -> None:
        """Wait until the answer's messages may change again (``min_edit_interval``)."""
        if not self.parts:
            return
        while (wait := self.next_change - self._timing.clock()) > 0:
            await self._timing.sleep(wait)

    def _split(self, text: str) -> list[str]:
        return split_text(text, self._adapter.limits.max_text_units, self._adapter.measure)

    # --- showing text -----------------------------------------------------------------------

    async def _show_answer(self, text: str, *, buttons: tuple[Button, ...], final: bool) -> None:
        async with self.lock:
            texts = self._split(text)
            await self._sync(texts, buttons, final)
            self.next_change = self._timing.clock() + self._adapter.limits.min_edit_interval

    async def _sync(self, texts: list[str], buttons: tuple[Button, ...], final: bool) -> None:
        """Make the answer's messages read ``texts`` (buttons on the last).

        Streaming (``final=False``): a failed edit leaves the part unknown (the next flush
        edits it again); a failed send ends this flush. Final: a part whose edit fails is
        sent again with every part after it (so the order holds) and the stale messages are
        deleted; surplus parts are deleted; a failed send raises ``Undelivered``.
        """
        parts = self.parts
        for i, text in enumerate(texts):
            wanted = buttons if i == len(texts) - 1 else ()
            if i < len(parts):
                shown = parts[i]
                if shown.text == text and shown.buttons == wanted:
                    continue
                try:
                    await self._timing.call(
                        "edit_text", self._adapter.edit_text, shown.ref, text, buttons=wanted
                    )
                except PlatformError as err:
                    _log_failure("edit_text", err)
                    shown.text = None
                    if not final:
                        continue
                    await self._resend_from(i, texts, buttons)
                    return
                shown.text, shown.buttons = text, wanted
                continue
            if i == 0 and self.reuse is not None:
                ref, self.reuse = self.reuse, None
                parts.append(Shown(ref, None))
                try:
                    await self._timing.call(
                        "edit_text", self._adapter.edit_text, ref, text, buttons=wanted
                    )
                except PlatformError as err:
                    _log_failure("edit_text", err)
                    parts.pop()
                else:
                    parts[0].text, parts[0].buttons = text, wanted
                    if self.typing_action == "typing":
                        await self._stop_typing()
                    continue
            try:
                ref = await self._send_answer_text(text, wanted)
            except PlatformError as err:
                _log_failure("send_text", err)
                if final:
                    raise Undelivered from err
                return
            parts.append(Shown(ref, text, wanted))
        if final and len(parts) > len(texts):
            surplus = parts[len(texts) :]
            del parts[len(texts) :]
            for shown in surplus:
                await self._try_delete(shown.ref)

    async def _resend_from(self, start: int, texts: list[str], buttons: tuple[Button, ...]) -> None:
        stale = self.parts[start:]
        del self.parts[start:]
        for i in range(start, len(texts)):
            wanted = buttons if i == len(texts) - 1 else ()
            try:
                ref = await self._send_answer_text(texts[i], wanted)
            except PlatformError as err:
                _log_failure("send_text", err)
                raise Undelivered from err
            self.parts.append(Shown(ref, texts[i], wanted))
        for shown in stale:
            await self._try_delete(shown.ref)

    async def _send_answer_text(
        self, text: str, buttons: tuple[Button, ...], *, private: bool = False
    ) -> MessageRef:
        ref = await self._timing.call(
            "send_text",
            self._adapter.send_text,
            self.inbound,
            text,
            private=private,
            buttons=buttons,
        )
        if self.typing_action == "typing":
            await self._stop_typing()
        return ref

    async def _send_new(self, text: str, *, private: bool = False) -> None:
        """Send ``text`` as new message(s); ``Undelivered`` when that fails."""
        for part in self._split(text):
            try:
                await self._send_answer_text(part, (), private=private)
            except PlatformError as err:
                _log_failure("send_text", err)
                raise Undelivered from err

    async def _retract(self, notice: str) -> None:
        targets = self.parts or self.last_parts
        self.parts, self.last_parts = [], []
        self.text = ""
        self.drafted, self.draft_id, self.draft_part = False, 0, -1  # the notice replaces it
        if not targets:
            await self._send_new(notice)
            return
        first, rest = targets[0], targets[1:]
        try:
            await self._timing.call("edit_text", self._adapter.edit_text, first.ref, notice)
        except PlatformError as err:
            _log_failure("edit_text", err)
            rest = targets  # the withdrawn text must go even if the notice cannot replace it
            for shown in rest:
                await self._try_delete(shown.ref)
            await self._send_new(notice)
            return
        self.last_parts = [Shown(first.ref, notice)]
        for shown in rest:
            await self._try_delete(shown.ref)

    async def _try_delete(self, ref: MessageRef) -> None:
        try:
            await self._timing.call("delete", self._adapter.delete, ref)
        except PlatformError as err:
            _log_failure("delete", err)

    # --- images -----------------------------------------------------------------------------

    async def _show_status(self, text: str) -> None:
        if text == self.status_text:
            return
        try:
            if self.status is None:
                self.status = await self._timing.call(
                    "send_text", self._adapter.send_text, self.inbound, text
                )
            else:
                while (wait := self.status_changed - self._timing.clock()) > 0:
                    await self._timing.sleep(wait)
                await self._timing.call("edit_text", self._adapter.edit_text, self.status, text)
            self.status_text = text
            self.status_changed = self._timing.clock() + self._adapter.limits.min_edit_interval
        except PlatformError as err:
            _log_failure("status", err)

    async def _send_image(self, data: bytes, mime: str, caption: str, lang: str) -> None:
        caption = cut_caption(caption, self._adapter.limits.caption_units, self._adapter.measure)
        try:
            await self._timing.call(
                "send_image", self._adapter.send_image, self.inbound, data, mime, caption
            )
        except PlatformError as err:
            _log_failure("send_image", err)
            await self._stop_typing()
            sorry = MARK_FAILURE + t("adapter.image_undelivered", lang)
            try:
                if self.status is not None:
                    await self._timing.call(
                        "edit_text", self._adapter.edit_text, self.status, sorry
                    )
                else:
                    await self._timing.call(
                        "send_text", self._adapter.send_text, self.inbound, sorry
                    )
            except PlatformError as second:
                _log_failure("send_text", second)
            self.status = None
            raise Undelivered from err
        await self._stop_typing()
        if self.status is not None:
            status, self.status, self.status_text = self.status, None, ""
            await self._try_delete(status)

    # --- typing -----------------------------------------------------------------------------

    async def _start_typing(self, action: Literal["typing", "upload_photo"]) -> None:
        """Show the indicator now (before the next event is pulled) and renew it every
        ``typing_interval`` in a task of its own until :meth:`_stop_typing`."""
        if self.typing is not None and not self.typing.done():
            if self.typing_action == action:
                return
            await self._stop_typing()
        self.typing_action = action
        wait = await self._typing_once(self.inbound, action)
        if self._adapter.limits.typing_interval > 0:
            self.typing = asyncio.create_task(
                self._keep_typing(self.inbound, action, wait), name="hybot-typing"
            )

    async def _typing_once(
        self, inbound: Inbound, action: Literal["typing", "upload_photo"]
    ) -> float:
        """Send the indicator once; the seconds until the next renewal."""
        interval = self._adapter.limits.typing_interval
        try:
            await self._adapter.send_typing(inbound, action=action)
        except PlatformRetryAfter as err:
            return max(interval, _finite(err.retry_after))
        except PlatformError as err:
            _log_failure("send_typing", err)
        return interval

    async def _keep_typing(
        self, inbound: Inbound, action: Literal["typing", "upload_photo"], wait: float
    ) -> None:
        while True:
            await self._timing.sleep(wait)
            wait = await self._typing_once(inbound, action)

    async def _stop_typing(self) -> None:
        task, self.typing, self.typing_action = self.typing, None, ""
        # (typing_action is cleared even without a task: typing_interval 0 shows it once)
        if task is None:
            return
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        _raise_bug(task)


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
