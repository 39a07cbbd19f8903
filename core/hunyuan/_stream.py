"""Streamed chat: opening one SSE attempt and reading it to its proper end (client internal).

:func:`open_stream` is one attempt of :meth:`~core.hunyuan.client.HunyuanClient.stream_chat`
(retried by the caller): send, wait at most ``idle_timeout`` for the response headers, turn a
non-SSE answer into its mapped error, then read up to the first chunk worth yielding.
:class:`StreamReader` applies the termination rules of both wire formats (native: the first
non-empty ``FinishReason``; OpenAI: ``[DONE]`` or EOF after a finish reason) and the
``idle_timeout`` / deadline per event; once a chunk reached the caller, transport failures
become :class:`StreamInterrupted`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from httpx_sse import EventSource

from core.errors import (
    HunyuanError,
    StreamInterrupted,
    TransportError,
    UpstreamError,
)
from core.hunyuan._http import ERROR_BODY, HEADERS, STREAM_READ, Exchange, translating
from core.hunyuan._wire import BaseChatBackend, ChatParams, StreamEvent
from core.tokens import estimate_tokens
from core.types import ChatChunk, ChatMessage, Usage

__all__ = ["StreamReader", "open_stream", "prompt_tokens"]


def prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """The local estimate of the prompt's tokens (used when the service reports no usage)."""
    return sum(estimate_tokens(m.content) for m in messages)


#: How long closing a finished stream may spend reading the end of its body.
_DRAIN_SECONDS = 1.0


class StreamReader:
    """Reads one open SSE response and applies the termination rules (client internal).

    ``next_chunk`` returns the next :class:`ChatChunk` worth yielding (non-empty delta or the
    final chunk), ``None`` once the stream has ended properly, or raises. Once ``delivered`` is
    set (a chunk reached the caller), transport failures become :class:`StreamInterrupted`.
    """

    def __init__(
        self,
        *,
        response: httpx.Response,
        backend: BaseChatBackend,
        deadline: float,
        idle_timeout: float,
        prompt_tokens: int,
        model: str,
        exchange: Exchange,
    ) -> None:
        self._exchange = exchange
        self._response = response
        self._backend = backend
        self._events = EventSource(response).aiter_sse()
        self._deadline = deadline
        self._idle = idle_timeout
        self._prompt_tokens = prompt_tokens
        self.model = model
        self.delivered = False
        self._text: list[str] = []
        self._usage: Usage | None = None
        self._note: str | None = None
        self._finish: str | None = None
        self._pending_delta = ""
        self._ended = False

    async def aclose(self) -> None:
        """Release the response. After a proper end, the rest of the body (the server's
        closing chunk) is read first, so httpx can return the connection to its pool instead
        of dropping it: otherwise every streamed answer pays a new TCP (and TLS) handshake."""
        try:
            if self._ended and not self._response.is_closed:
                try:
                    async with asyncio.timeout(_DRAIN_SECONDS):
                        async for _ in self._events:
                            pass
                except (TimeoutError, httpx.HTTPError):
                    pass  # the connection is dropped instead; nothing else is affected
            await self._events.aclose()
        finally:
            await self._response.aclose()

    def _broken(self, err: HunyuanError) -> HunyuanError:
        if self.delivered:
            interrupted = StreamInterrupted(
                f"stream broke after text was delivered ({err.kind})",
                code=err.code,
                status=err.status,
                request_id=err.request_id,
            )
            return interrupted
        return err

    async def _next_event(self) -> str | None:
        loop = asyncio.get_running_loop()
        idle_at = loop.time() + self._idle
        which = "idle" if idle_at <= self._deadline else "total"
        try:
            with translating(STREAM_READ, deadline=f"stream {which} timeout"):
                async with asyncio.timeout_at(min(idle_at, self._deadline)):
                    sse = await anext(self._events)
        except StopAsyncIteration:
            return None
        return sse.data

    def _final(self) -> ChatChunk:
        self._ended = True
        usage = self._usage
        if usage is None:
            completion = estimate_tokens("".join(self._text))
            usage = Usage(self._prompt_tokens, completion, self._prompt_tokens + completion)
        return ChatChunk(
            delta=self._pending_delta,
            finish_reason=self._finish or "stop",
            usage=usage,
            note=self._note,
        )

    def _absorb(self, event: StreamEvent) -> None:
        if event.usage is not None:
            self._usage = event.usage
        if event.note is not None:
            self._note = event.note
        if event.model is not None:
            self.model = event.model

    async def next_chunk(self) -> ChatChunk | None:
        while not self._ended:
            try:
                data = await self._next_event()
            except TransportError as err:
                if self._finish is not None:
                    # Finished already; only the usage tail / [DONE] was lost.
                    return self._final()
                broken = self._broken(err)
                if broken is err:
                    raise  # keeps the original httpx cause
                raise broken from err
            if data is None:
                if self._finish is not None:
                    return self._final()
                eof = TransportError("stream ended before a finish reason")
                broken = self._broken(eof)
                if broken is eof:
                    raise eof
                raise broken from eof
            try:
                event = self._backend.parse_stream_event(data, self._response.headers)
            except UpstreamError as err:
                broken = self._broken(err)
                if broken is err:
                    raise
                raise broken from err
            if event.done:
                return self._final()
            if event.error is not None:
                # An explicit error from the service keeps its own type even after text.
                raise self._exchange.error(event.error)
            self._absorb(event)
            if event.delta:
                self._text.append(event.delta)
            if event.finish_reason:
                self._finish = event.finish_reason
                self._pending_delta += event.delta
                if self._backend.ends_at_finish:
                    return self._final()
                continue
            if self._finish is not None:
                self._pending_delta += event.delta
                continue
            if event.delta:
                return ChatChunk(delta=event.delta, usage=event.usage, note=event.note)
        return None


async def open_stream(
    exchange: Exchange,
    backend: BaseChatBackend,
    msgs: Sequence[ChatMessage],
    params: ChatParams,
    deadline: float,
) -> tuple[StreamReader, ChatChunk | None]:
    """One attempt: send, check for a pre-stream error, read up to the first chunk.

    The caller owns the returned reader (``aclose`` it); on any error it is already closed.
    """
    request = backend.chat_request(msgs, params, stream=True, timestamp=exchange.timestamp())
    req = exchange.build(request)
    loop = asyncio.get_running_loop()
    with translating(HEADERS):
        async with asyncio.timeout_at(min(loop.time() + exchange.config.idle_timeout, deadline)):
            response = await exchange.http.send(req, stream=True)
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if response.status_code != 200 or content_type != "text/event-stream":
        try:
            with translating(ERROR_BODY):
                async with asyncio.timeout_at(deadline):
                    body = await response.aread()
        finally:
            await response.aclose()
        wire_error = backend.extract_error(
            response.status_code, response.headers, body, now=exchange.now()
        )
        if wire_error is not None:
            raise exchange.error(wire_error)
        raise UpstreamError(
            f"expected an event stream, got {content_type or 'no content type'}",
            status=response.status_code,
        )
    reader = StreamReader(
        response=response,
        backend=backend,
        deadline=deadline,
        idle_timeout=exchange.config.idle_timeout,
        prompt_tokens=prompt_tokens(msgs),
        model=params.model,
        exchange=exchange,
    )
    try:
        first = await reader.next_chunk()
    except BaseException:
        await reader.aclose()
        raise
    return reader, first
