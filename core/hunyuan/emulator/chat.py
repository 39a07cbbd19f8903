"""The chat engine shared by both wire formats.

Policy lives here once (concurrency slot, latency, fault order, reply, truncation, chunking,
usage); the two wire classes (``openai_compat.OpenAIWire``, ``native.NativeWire``) only format
bytes. Order of events for one validated request:

0. refuse a prompt longer than the model's input budget (:func:`context_refusal`);
1. take a chat slot for the account, or fail at once with the busy error (``busy`` fault or
   ``chat_concurrency`` requests already in flight);
2. sleep the configured + marker latency (holding the slot, like a slow model), or, with the
   ``hold_chats`` test hook, wait at ``EmuState.chat_gate`` until the test releases the chat;
3. ``hang``; then the error faults ``badkey``, ``429``, ``credit``, ``moderation``, ``500``;
   non-stream ``disconnect`` / ``stream_error``;
4. the reply: cut to ``max_tokens`` (finish ``length``), or cut short with finish
   ``sensitive``; streamed chunk by chunk (``disconnect`` drops after two chunks,
   ``stream_error`` sends the error event after two chunks).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from core.hunyuan.emulator.faults import EmuError, Faults
from core.hunyuan.emulator.state import MODEL_WINDOWS, EmuState
from core.hunyuan.emulator.text import build_reply, split_chunks, truncate_to_tokens
from core.tokens import estimate_tokens
from core.types import Usage

__all__ = [
    "ChatCtx",
    "ChatRequest",
    "ChatWire",
    "context_refusal",
    "input_budget",
    "run_chat",
]

_log = logging.getLogger(__name__)

_ERROR_FAULTS = ("badkey", "429", "credit", "moderation", "500")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request, wire-neutral. ``messages`` are ``(role, text)`` pairs."""

    model: str
    messages: tuple[tuple[str, str], ...]
    stream: bool
    max_tokens: int | None = None

    @property
    def latest_user(self) -> str:
        return next((text for role, text in reversed(self.messages) if role == "user"), "")


@dataclass(frozen=True, slots=True)
class ChatCtx:
    """Per-response constants repeated in every chunk."""

    request_id: str
    created: int
    model: str
    prompt_tokens: int

    def usage(self, completion: str) -> Usage:
        done = estimate_tokens(completion)
        return Usage(self.prompt_tokens, done, self.prompt_tokens + done)


class ChatWire(Protocol):
    """Formats one wire protocol's chat responses (no policy)."""

    def body(self, ctx: ChatCtx, text: str, finish: str) -> web.Response: ...

    def stream_headers(self, ctx: ChatCtx) -> dict[str, str]: ...

    def chunk(self, ctx: ChatCtx, delta: str, finish: str | None, text_so_far: str) -> bytes: ...

    def error_event(self, ctx: ChatCtx, text_so_far: str) -> bytes: ...

    def done(self) -> bytes: ...


def input_budget(model: str, max_tokens: int | None) -> int:
    """Input tokens a request to ``model`` may use: ``min(max_input, context - max_tokens)``,
    the core's rule (``core.context.input_budget``) applied to the model's published window."""
    context, max_input = MODEL_WINDOWS[model]
    return max(0, min(max_input, context - (max_tokens or 0)))


def context_refusal(chat: ChatRequest, prompt_tokens: int) -> EmuError | None:
    """The refusal of a prompt over :func:`input_budget`, or ``None`` when it fits.

    ``prompt_tokens`` is the sum of :func:`core.tokens.estimate_tokens` over the messages (what
    the usage reports). Unlike the service's documented habit for native requests (it drops the
    oldest content silently, reference §3.1), the emulator refuses, on both interfaces, so that
    tests catch a bot that sends more than the model takes: OpenAI HTTP 400
    ``invalid_request_error``/``context_length_exceeded``; native ``InvalidParameter``.
    """
    budget = input_budget(chat.model, chat.max_tokens)
    if prompt_tokens <= budget:
        return None
    context, _ = MODEL_WINDOWS[chat.model]
    return EmuError(
        native_code="InvalidParameter",
        native_message=(
            f"输入内容过长：约 {prompt_tokens} tokens，超过模型 {chat.model} 的输入上限 "
            f"{budget} tokens。"
        ),
        status=400,
        err_type="invalid_request_error",
        code="context_length_exceeded",
        message=(
            f"This model's maximum context length is {context} tokens and it takes at most "
            f"{budget} input tokens with this max_tokens; your messages resulted in about "
            f"{prompt_tokens} tokens. Please reduce the length of the messages."
        ),
        stat="context_length_exceeded",
    )


async def run_chat(
    request: web.BaseRequest,
    state: EmuState,
    *,
    account: str,
    chat: ChatRequest,
    faults: Faults,
    wire: ChatWire,
    request_id: str | None = None,
) -> web.StreamResponse:
    """Answer one validated chat request (see module docstring); raises :class:`EmuError`."""
    prompt_tokens = sum(estimate_tokens(text) for _, text in chat.messages)
    refusal = context_refusal(chat, prompt_tokens)
    if refusal is not None:
        raise refusal
    if not state.enter_chat(account, force_busy="busy" in faults):
        raise EmuError.fault("busy", limit=state.config.chat_concurrency)
    try:
        if state.chat_gate.holding:
            await state.chat_gate.step(faults.latency)
        else:
            await state.sleep(faults.latency)
        if "hang" in faults:
            return await state.hang(request)
        for name in _ERROR_FAULTS:
            if name in faults:
                raise EmuError.fault(name)
        if not chat.stream and "disconnect" in faults:
            return state.drop(request)
        if not chat.stream and "stream_error" in faults:
            raise EmuError.fault("stream_error")
        ctx = ChatCtx(
            request_id=request_id or str(uuid.uuid4()),
            created=int(state.now()),
            model=chat.model,
            prompt_tokens=prompt_tokens,
        )
        reply = build_reply(chat.messages, long=faults.long)
        finish = "stop"
        if chat.max_tokens is not None and estimate_tokens(reply) > chat.max_tokens:
            reply = truncate_to_tokens(reply, chat.max_tokens)
            finish = "length"
        chunks = split_chunks(reply)
        if "sensitive" in faults:
            # Moderation "fails" half-way: only the first half of the answer goes out.
            chunks = chunks[: max(1, len(chunks) // 2)]
            reply = "".join(chunks)
            finish = "sensitive"
        if not chat.stream:
            return wire.body(ctx, reply, finish)
        return await _stream(
            request, state=state, ctx=ctx, chunks=chunks, finish=finish, faults=faults, wire=wire
        )
    finally:
        state.leave_chat(account)


async def _stream(
    request: web.BaseRequest,
    *,
    state: EmuState,
    ctx: ChatCtx,
    chunks: list[str],
    finish: str,
    faults: Faults,
    wire: ChatWire,
) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=wire.stream_headers(ctx))
    await resp.prepare(request)
    sent = ""
    broken = "disconnect" in faults or "stream_error" in faults
    if broken:
        chunks = chunks[:2]
    try:
        for i, delta in enumerate(chunks):
            if i and not await state.sleep(state.config.chunk_delay):
                return state.drop(request)
            sent += delta
            await resp.write(wire.chunk(ctx, delta, None, sent))
        if "disconnect" in faults:
            return state.drop(request)
        if "stream_error" in faults:
            state.stats.errors["stream_error"] += 1
            await resp.write(wire.error_event(ctx, sent))
        else:
            await state.sleep(state.config.chunk_delay)
            await resp.write(wire.chunk(ctx, "", finish, sent))
            await resp.write(wire.done())
        await resp.write_eof()
    except ConnectionError:
        # The client went away mid-stream (e.g. it gave up); nothing more to send.
        state.stats.errors["client_gone"] += 1
    except Exception:
        # Headers are out, so no error shape can follow: log once and cut the stream (the
        # client sees an interrupted stream, as with a real mid-stream failure).
        _log.exception("emulator: unexpected error while streaming %s", ctx.request_id)
        state.stats.errors["internal"] += 1
        return state.drop(request)
    return resp
