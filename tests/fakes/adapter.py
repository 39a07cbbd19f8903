"""A recording fake adapter: only the primitives of :class:`adapters.base.BaseAdapter`.

Every primitive call is recorded as a :class:`Call` with a logical sequence number and the
virtual time of a :class:`FakeClock`; the fake keeps what a chat would show
(:meth:`FakeAdapter.visible`). Faults are scripted per operation ("raise this on the Nth
``edit_text``"), so the contract tests can run every policy of the base through ``dispatch``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from adapters.base import AdapterLimits, BaseAdapter, ConversationHandler, MessageRef
from core.errors import PlatformError
from core.types import Button, Inbound

__all__ = ["Call", "FakeAdapter", "FakeClock", "Fault"]

DEFAULT_LIMITS = AdapterLimits(
    max_text_units=4096, unit="utf16", min_edit_interval=1.0, caption_units=1024
)


class FakeClock:
    """Virtual time for the base's injected ``clock`` and ``sleep``.

    ``auto=True``: a sleep moves the clock to its own deadline at once (time jumps as if
    nothing else were running) and yields to the loop. ``auto=False``: a sleep waits until
    :meth:`advance` moves the clock past its deadline. Every requested sleep is recorded.
    """

    def __init__(self, *, auto: bool = True, start: float = 0.0) -> None:
        self.now = start
        self.auto = auto
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + max(0.0, seconds)
        if self.auto:
            self.now = max(self.now, target)
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        for n, watcher in self._watchers:
            if self.sleeping >= n and not watcher.done():
                watcher.set_result(None)
        try:
            await future
        finally:
            self._waiters = [(t, f) for t, f in self._waiters if f is not future]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for target, future in list(self._waiters):
            if target <= self.now and not future.done():
                future.set_result(None)

    @property
    def sleeping(self) -> int:
        """How many sleeps wait for :meth:`advance` (``auto=False``)."""
        return sum(1 for _, f in self._waiters if not f.done())

    async def wait_sleeping(self, n: int = 1) -> None:
        """Return once ``n`` sleeps wait for :meth:`advance` (``auto=False``)."""
        if self.sleeping >= n:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((n, future))
        await future


@dataclass(frozen=True, slots=True)
class Call:
    """One primitive call. ``seq`` orders all calls; ``time`` is the virtual clock; ``ok`` is
    ``False`` when the call raised a scripted fault; ``ref`` is the message it made or
    touched."""

    seq: int
    time: float
    op: str
    ref: MessageRef | None = None
    text: str = ""
    private: bool = False
    buttons: tuple[Button, ...] = ()
    action: str = ""
    mime: str = ""
    caption: str = ""
    draft_id: int = 0
    ok: bool = True


@dataclass(slots=True)
class Fault:
    """Raise ``error`` on the ``nth`` call (1-based) of ``op`` (``None``: of any operation),
    and on the ``times - 1`` calls of it after that."""

    op: str | None
    nth: int
    error: Exception
    times: int = 1


@dataclass(slots=True)
class _Shown:
    text: str
    buttons: tuple[Button, ...] = ()
    kind: str = "text"


class FakeAdapter(BaseAdapter):
    """Implements only the primitives; records them. ``pressed`` is what
    :meth:`pressed_message` returns; ``measure`` overrides the default measure."""

    def __init__(
        self,
        *,
        conversation: ConversationHandler,
        limits: AdapterLimits = DEFAULT_LIMITS,
        clock: FakeClock | None = None,
        pressed: MessageRef | None = None,
        measure: Callable[[str], int] | None = None,
        retry_attempts: int = 5,
        max_retry_after: float = 120.0,
        drain_timeout: float = 30.0,
    ) -> None:
        self.clock = clock or FakeClock()
        super().__init__(
            conversation=conversation,
            sleep=self.clock.sleep,
            clock=self.clock,
            retry_attempts=retry_attempts,
            max_retry_after=max_retry_after,
            drain_timeout=drain_timeout,
        )
        self._limits = limits
        self._pressed = pressed
        self._measure = measure
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.shown: dict[MessageRef, _Shown] = {}  # what the chat shows, in order of creation
        self.drafts: dict[int, str] = {}  # the newest text of each draft shown
        self._seq = itertools.count(1)
        self._ids = itertools.count(100)
        self._counts: dict[str, int] = {}
        self._watchers: list[tuple[Callable[[FakeAdapter], bool], asyncio.Future[None]]] = []
        self.started = False
        self.stopped = False

    @property
    def limits(self) -> AdapterLimits:
        return self._limits

    # --- test helpers -------------------------------------------------------------------

    def fail(self, op: str | None, nth: int, error: Exception, *, times: int = 1) -> None:
        self.faults.append(Fault(op, nth, error, times))

    def ok_calls(self, *ops: str) -> list[Call]:
        return [c for c in self.calls if c.ok and (not ops or c.op in ops)]

    def show(self, ref: MessageRef, text: str) -> None:
        """Pretend the chat already shows ``text`` as ``ref`` (e.g. an earlier answer)."""
        self.shown[ref] = _Shown(text)

    def visible(self) -> list[str]:
        """The texts of the messages the chat shows now (images as ``[image <caption>]``)."""
        return [s.text if s.kind == "text" else f"[image {s.text}]" for s in self.shown.values()]

    def buttons_of(self) -> list[tuple[Button, ...]]:
        return [s.buttons for s in self.shown.values()]

    async def wait_for(self, predicate: Callable[[FakeAdapter], bool]) -> None:
        """Return once ``predicate(self)`` holds (checked after every call)."""
        if predicate(self):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((predicate, future))
        await future

    def _record(self, op: str, **fields: object) -> Call:
        count = self._counts.get(op, 0) + 1
        self._counts[op] = count
        total = self._counts.get("*", 0) + 1
        self._counts["*"] = total
        error: Exception | None = None
        for fault in self.faults:
            n = total if fault.op is None else count
            if (fault.op is None or fault.op == op) and fault.nth <= n < fault.nth + fault.times:
                error = fault.error
                break
        call = Call(next(self._seq), self.clock.now, op, ok=error is None, **fields)  # type: ignore[arg-type]
        self.calls.append(call)
        for predicate, future in list(self._watchers):
            if not future.done() and predicate(self):
                future.set_result(None)
        if error is not None:
            raise error
        return call

    def _new_ref(self, inbound: Inbound) -> MessageRef:
        return MessageRef(chat=inbound.key.chat, id=str(next(self._ids)), thread=inbound.key.thread)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        await self.drain()
        self.stopped = True

    # --- primitives ---------------------------------------------------------------------

    async def send_text(
        self,
        inbound: Inbound,
        text: str,
        *,
        private: bool = False,
        buttons: tuple[Button, ...] = (),
    ) -> MessageRef:
        ref = self._new_ref(inbound)
        self._record("send_text", ref=ref, text=text, private=private, buttons=buttons)
        self.shown[ref] = _Shown(text, buttons)
        return ref

    async def edit_text(
        self, ref: MessageRef, text: str, *, buttons: tuple[Button, ...] = ()
    ) -> None:
        self._record("edit_text", ref=ref, text=text, buttons=buttons)
        if ref not in self.shown:
            self.calls[-1] = replace(self.calls[-1], ok=False)
            raise PlatformError("message to edit not found")
        self.shown[ref] = _Shown(text, buttons)

    async def delete(self, ref: MessageRef) -> None:
        self._record("delete", ref=ref)
        self.shown.pop(ref, None)

    async def send_image(
        self, inbound: Inbound, data: bytes, mime: str, caption: str
    ) -> MessageRef:
        ref = self._new_ref(inbound)
        self._record("send_image", ref=ref, mime=mime, caption=caption)
        self.shown[ref] = _Shown(caption, kind="image")
        return ref

    async def send_typing(
        self, inbound: Inbound, *, action: Literal["typing", "upload_photo"] = "typing"
    ) -> None:
        self._record("send_typing", action=action)

    async def send_draft(self, inbound: Inbound, draft_id: int, text: str) -> None:
        """Recorded as ``send_draft``; :attr:`drafts` keeps the newest text per draft id
        (ephemeral: not in :meth:`visible`)."""
        self._record("send_draft", text=text, draft_id=draft_id)
        self.drafts[draft_id] = text

    def measure(self, text: str) -> int:
        if self._measure is not None:
            return self._measure(text)
        return super().measure(text)

    def pressed_message(self, inbound: Inbound) -> MessageRef | None:
        return self._pressed
