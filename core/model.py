"""The model seam: what the conversation core needs from a language/image model.

``Conversation`` talks to the model only through :class:`ChatModel`. The production
implementation is :class:`core.hunyuan.HunyuanClient` (a test asserts it satisfies the
protocol); core unit tests use the scripted fake in ``tests/fakes/model.py``, so the pipeline
can be exercised without HTTP, and the end-to-end tests still go through the client and the
emulator.

Contract of each method (the client's docstrings give the Hunyuan details):

- :meth:`ChatModel.stream_chat` streams one answer for ``messages`` (already in Hunyuan's role
  order, ``[system?] user (assistant user)*``) as :class:`~core.types.ChatChunk` s; the last
  chunk carries ``finish_reason`` (``"stop"``, ``"length"``, ``"sensitive"``, ...) and, when the
  service reported it, cumulative ``usage``. Failures raise a
  :class:`~core.errors.HunyuanError` subclass. The iterator should be an async generator (or
  have ``aclose``): the core closes it as soon as it stops reading (:func:`closing_stream`), so
  the call's connection is released at once instead of when the garbage collector gets to it.
- :meth:`ChatModel.generate_image` returns one downloaded image or raises a
  :class:`~core.errors.HunyuanError`.
- :meth:`ChatModel.count_tokens` counts tokens of ``text`` (the service's counter when it has
  one, else the 1.8/3 estimate).

This module imports nothing but :mod:`core.types`: importing the seam never loads httpx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from core.types import ChatChunk, ChatMessage, ImageResult

if TYPE_CHECKING:  # the static proof below; never imported at run time (no httpx)
    from core.hunyuan.client import HunyuanClient

__all__ = ["ChatModel", "closing_stream"]

_T = TypeVar("_T")


@runtime_checkable
class ChatModel(Protocol):
    """Streamed chat, image generation and token counting (see the module docstring)."""

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream an answer; the last chunk has ``finish_reason`` (and usage when reported)."""
        ...

    async def generate_image(
        self,
        prompt: str,
        *,
        size: str = "1024x1024",
        style: str | None = None,
        ai_mark: bool = True,
        footnote: str | None = None,
    ) -> ImageResult:
        """Generate and download one image of ``size`` (``"WxH"``)."""
        ...

    async def count_tokens(self, text: str) -> int:
        """Tokens in ``text``."""
        ...


@asynccontextmanager
async def closing_stream(stream: AsyncIterator[_T]) -> AsyncIterator[AsyncIterator[_T]]:
    """``async with closing_stream(it) as it:``: ``it.aclose()`` (when it has one) runs when
    the block ends, however it ends. Async generators are not closed by leaving an ``async
    for`` loop; without this a cancelled turn would leave its model call open."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


if TYPE_CHECKING:

    def _the_client_is_a_chat_model(client: HunyuanClient) -> ChatModel:
        """mypy (strict) checks this assignment: the client satisfies the protocol."""
        return client
