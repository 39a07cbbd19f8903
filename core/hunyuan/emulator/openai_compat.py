"""OpenAI-compatible chat: ``POST /v1/chat/completions`` (TokenHub / legacy endpoint).

Wire facts (reference §4): Bearer auth (401 ``authentication_error``/``401002``), errors as
``{"error": {"message", "type", "param": null, "code"}}`` with the HTTP statuses of §4.3, JSON
replies with ``Content-Type: application/json``, streams as ``text/event-stream`` of
``chat.completion.chunk`` objects (``note`` in each, ``usage`` in the last) ending with
``data: [DONE]``. The TokenHub image endpoints are in :mod:`.images`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.hunyuan.emulator.chat import ChatCtx, ChatRequest, run_chat
from core.hunyuan.emulator.faults import EmuError
from core.hunyuan.emulator.state import CHAT_MODELS, STATE_KEY, EmuState
from core.hunyuan.emulator.text import NOTE, ROLE_ORDER_MESSAGE, role_order_ok
from core.hunyuan.emulator.wire import dumps, json_response, openai_error, read_json

__all__ = ["OpenAIWire", "bearer_account", "handle_chat", "parse_chat"]

_CHAT_ROUTE = "/v1/chat/completions"


def bearer_account(request: web.BaseRequest, state: EmuState) -> str:
    """The stats label of the Bearer account, or a 401 :class:`EmuError`."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if (
        scheme.lower() != "bearer"
        or not token
        or not hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), state.config.api_key.encode()
        )
    ):
        raise EmuError.invalid(
            "Incorrect API key provided." if token else "You didn't provide an API key.",
            status=401,
            err_type="authentication_error",
            code="401002",
        )
    return state.openai_account


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EmuError.invalid(f"{key} must be a number.")
    return float(value)


def _text_of(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise EmuError.invalid("Each content part must be an object with a type.")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise EmuError.invalid("A text content part needs a string text.")
                texts.append(part["text"])
        return "\n".join(texts)
    raise EmuError.invalid("message content must be a string or an array of parts.")


def parse_chat(body: Mapping[str, Any]) -> ChatRequest:
    """Validate an OpenAI chat body (reference §3.1/§4.2); raises :class:`EmuError`."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise EmuError.invalid("model is required.")
    if model not in CHAT_MODELS:
        raise EmuError.invalid(
            f"The model `{model}` does not exist or you do not have access to it.",
            status=404,
            code="model_not_found",
        )
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise EmuError.invalid("messages must be a non-empty array.", code="1001")
    pairs: list[tuple[str, str]] = []
    for msg in raw:
        if not isinstance(msg, dict):
            raise EmuError.invalid("Each message must be an object.", code="1001")
        role = msg.get("role")
        if not isinstance(role, str):
            raise EmuError.invalid(ROLE_ORDER_MESSAGE, code="1001")
        text = _text_of(msg.get("content"))
        if not text.strip() and not (role == "assistant" and msg.get("tool_calls")):
            raise EmuError.invalid("messages 中 content 不能为空。", code="1001")
        pairs.append((role, text))
    if not role_order_ok([role for role, _ in pairs]):
        raise EmuError.invalid(ROLE_ORDER_MESSAGE, code="1001")
    temperature = _number(body, "temperature")
    if temperature is not None and temperature > 2:
        raise EmuError.invalid("Temperature must be 2 or less.")
    if temperature is not None and temperature < 0:
        raise EmuError.invalid("Temperature must be 0 or more.")
    top_p = _number(body, "top_p")
    if top_p is not None and not 0 <= top_p <= 1:
        raise EmuError.invalid("top_p must be between 0 and 1.")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise EmuError.invalid("max_tokens must be a positive integer.")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise EmuError.invalid("stream must be a boolean.")
    return ChatRequest(model, tuple(pairs), bool(stream), max_tokens)


class OpenAIWire:
    """Formats chat responses the OpenAI way (plus Hunyuan's ``note``)."""

    def _usage(self, ctx: ChatCtx, text: str) -> dict[str, int]:
        u = ctx.usage(text)
        return {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
        }

    def body(self, ctx: ChatCtx, text: str, finish: str) -> web.Response:
        return json_response(
            {
                "id": ctx.request_id,
                "object": "chat.completion",
                "created": ctx.created,
                "model": ctx.model,
                "system_fingerprint": "",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": self._usage(ctx, text),
                "note": NOTE,
            }
        )

    def stream_headers(self, ctx: ChatCtx) -> dict[str, str]:
        return {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Request-Id": ctx.request_id,
        }

    def chunk(self, ctx: ChatCtx, delta: str, finish: str | None, text_so_far: str) -> bytes:
        obj: dict[str, Any] = {
            "id": ctx.request_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "system_fingerprint": "",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": delta},
                    "finish_reason": finish,
                }
            ],
            "note": NOTE,
        }
        if finish is not None:
            obj["usage"] = self._usage(ctx, text_so_far)
        return b"data: " + dumps(obj) + b"\n\n"

    def error_event(self, ctx: ChatCtx, text_so_far: str) -> bytes:
        err = {
            "message": "model request timed out",
            "type": "upstream_error",
            "param": None,
            "code": "4001",
        }
        return b"data: " + dumps({"error": err}) + b"\n\n"

    def done(self) -> bytes:
        return b"data: [DONE]\n\n"


_WIRE = OpenAIWire()


async def handle_chat(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    state: EmuState = request.app[STATE_KEY]
    state.stats.requests[_CHAT_ROUTE] += 1
    try:
        account = bearer_account(request, state)
        body = await read_json(request)
        state.stats.last_bodies[_CHAT_ROUTE] = body
        chat = parse_chat(body)
        faults = state.faults_for(chat.latest_user)
        return await run_chat(request, state, account=account, chat=chat, faults=faults, wire=_WIRE)
    except EmuError as err:
        return openai_error(state, err)
