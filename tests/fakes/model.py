"""A scripted fake of :class:`core.model.ChatModel` for core unit tests.

Modelled on aiogram's ``MockedBot``: a test scripts what the model will do, runs the core,
then reads what the model was asked. Nothing goes over the network.

Scripting (each ``add_*``/``answer``/``fail`` call queues one *call*; calls are consumed in
order, and a call with nothing scripted gets a default answer that quotes the last user
message, ``"echo: <text>"``, with ``finish_reason="stop"`` and usage)::

    model = FakeModel()
    model.answer("Hello there", pieces=3, usage=Usage(10, 5, 15))   # streamed in 3 chunks
    model.add_chat("Hi", Gate(event), ChatChunk("!", finish_reason="length"))
    model.fail(RateLimited("slow down"))                            # before any chunk
    model.add_chat("partial text", StreamInterrupted("cut"))        # after some text
    model.add_image(ImageResult(...))  or  model.add_image(ImageJobFailed("no"))

Items of a scripted chat: ``str`` (a delta chunk), :class:`ChatChunk` (yielded as is),
an exception instance (raised at that point), :class:`Gate` (wait for its event before going
on: lets a test hold a call open deterministically). A chat script without any chunk carrying a
``finish_reason`` gets a final ``ChatChunk("", finish_reason="stop")``.

Recording: :attr:`chat_calls` (:class:`ChatCall`), :attr:`image_calls` (:class:`ImageCall`),
:attr:`token_counts` (texts counted), :attr:`open_streams` (streams started and not yet
closed; a test can assert the core closed every stream it opened).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from core.tokens import estimate_tokens
from core.types import ChatChunk, ChatMessage, ImageResult, Usage

__all__ = ["ChatCall", "FakeModel", "Gate", "ImageCall", "tiny_png"]


def tiny_png() -> bytes:
    """A valid 1x1 PNG (what a real download would give)."""
    return bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d4944415478da63f8cfc0f01f0005000201a5b1a6b70000000049454e44ae426082"
    )


@dataclass(frozen=True)
class Gate:
    """A scripted pause: the fake waits for ``event`` before yielding what follows. ``reached``
    is set when the fake arrives at the gate."""

    event: asyncio.Event
    reached: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class ChatCall:
    messages: tuple[ChatMessage, ...]
    model: str | None
    max_tokens: int | None

    @property
    def last_user_text(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


@dataclass(frozen=True)
class ImageCall:
    prompt: str
    size: str
    style: str | None
    ai_mark: bool
    footnote: str | None


ChatItem = str | ChatChunk | BaseException | Gate
ImageItem = ImageResult | BaseException | Gate


class FakeModel:
    """Scripted :class:`core.model.ChatModel` (see the module docstring)."""

    def __init__(self) -> None:
        self._chats: deque[list[ChatItem]] = deque()
        self._images: deque[list[ImageItem]] = deque()
        self.chat_calls: list[ChatCall] = []
        self.image_calls: list[ImageCall] = []
        self.token_counts: list[str] = []
        self.open_streams = 0

    # --- scripting ----------------------------------------------------------------------

    def add_chat(self, *items: ChatItem) -> FakeModel:
        """Queue one chat call made of ``items`` (see the module docstring)."""
        self._chats.append(list(items))
        return self

    def answer(
        self,
        text: str,
        *,
        pieces: int = 1,
        finish: str = "stop",
        usage: Usage | None = None,
        note: str | None = None,
    ) -> FakeModel:
        """Queue one answer of ``text`` in ``pieces`` chunks, then the finish chunk."""
        size = max(1, -(-len(text) // max(1, pieces)))
        items: list[ChatItem] = [text[i : i + size] for i in range(0, len(text), size)]
        items.append(ChatChunk("", finish_reason=finish, usage=usage, note=note))
        return self.add_chat(*items)

    def fail(self, error: BaseException) -> FakeModel:
        """Queue one chat call that raises ``error`` before any chunk."""
        return self.add_chat(error)

    def add_image(self, *items: ImageItem) -> FakeModel:
        """Queue one image call: gates are waited for, then the result is returned or the
        exception raised."""
        self._images.append(list(items))
        return self

    # --- the ChatModel protocol -----------------------------------------------------------

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[ChatChunk]:
        call = ChatCall(tuple(messages), model, max_tokens)
        self.chat_calls.append(call)
        items = self._chats.popleft() if self._chats else self._default(call)
        if not any(isinstance(i, ChatChunk) and i.finish_reason for i in items):
            if not any(isinstance(i, BaseException) for i in items):
                items = [*items, ChatChunk("", finish_reason="stop")]
        self.open_streams += 1
        try:
            for item in items:
                if isinstance(item, Gate):
                    item.reached.set()
                    await item.event.wait()
                elif isinstance(item, BaseException):
                    raise item
                elif isinstance(item, str):
                    yield ChatChunk(item)
                else:
                    yield item
        finally:
            self.open_streams -= 1

    async def generate_image(
        self,
        prompt: str,
        *,
        size: str = "1024x1024",
        style: str | None = None,
        ai_mark: bool = True,
        footnote: str | None = None,
    ) -> ImageResult:
        self.image_calls.append(ImageCall(prompt, size, style, ai_mark, footnote))
        items = self._images.popleft() if self._images else []
        for item in items:
            if isinstance(item, Gate):
                item.reached.set()
                await item.event.wait()
            elif isinstance(item, BaseException):
                raise item
            else:
                return item
        width, height = (int(p) for p in size.split("x", 1))
        return ImageResult(tiny_png(), "image/png", width, height, "fake-image")

    async def count_tokens(self, text: str) -> int:
        self.token_counts.append(text)
        return estimate_tokens(text)

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _default(call: ChatCall) -> list[ChatItem]:
        text = f"echo: {call.last_user_text}"
        prompt = sum(estimate_tokens(m.content) for m in call.messages)
        completion = estimate_tokens(text)
        usage = Usage(prompt, completion, prompt + completion)
        return [text, ChatChunk("", finish_reason="stop", usage=usage)]
