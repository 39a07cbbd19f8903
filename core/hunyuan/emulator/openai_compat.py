"""OpenAI-compatible side of the emulator: ``/v1/chat/completions`` and TokenHub images.

Wire facts (reference §4): Bearer auth (401 ``authentication_error``/``401002``), errors as
``{"error": {"message", "type", "param": null, "code"}}`` with the HTTP statuses of §4.3, JSON
replies with ``Content-Type: application/json``, streams as ``text/event-stream`` of
``chat.completion.chunk`` objects (``note`` in each, ``usage`` in the last) ending with
``data: [DONE]``. TokenHub image endpoints are synchronous and return URLs served by the
emulator itself (valid 12 h of emulator time).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.hunyuan.emulator.chat import ChatCtx, ChatRequest, run_chat
from core.hunyuan.emulator.render import mark_text_for
from core.hunyuan.emulator.state import CHAT_MODELS, STATE_KEY, EmuError, EmuState
from core.hunyuan.emulator.text import NOTE, ROLE_ORDER_MESSAGE, role_order_ok, strip_markers

__all__ = [
    "LITE_RESOLUTIONS",
    "OpenAIWire",
    "handle_chat",
    "handle_image_lite",
    "handle_image_v3",
    "json_response",
    "parse_chat",
    "read_json",
    "revise_prompt",
]

TOKENHUB_URL_TTL = 12 * 3600.0
LITE_RESOLUTIONS = frozenset(
    {
        "768:768",
        "768:1024",
        "1024:768",
        "1024:1024",
        "720:1280",
        "1280:720",
        "768:1280",
        "1280:768",
        "1080:1920",
        "1920:1080",
    }
)
_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_RES_RE = re.compile(r"^(\d{1,5}):(\d{1,5})$")
_CHAT_ROUTE = "/v1/chat/completions"
_V3_ROUTE = "/v1/wand/hunyuan-image/v3-generation"
_LITE_ROUTE = "/v1/api/image/lite"


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(
    obj: object, *, status: int = 200, headers: Mapping[str, str] = {}
) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json`` (no charset)."""
    return web.Response(
        status=status, body=_dumps(obj), headers={**headers, "Content-Type": "application/json"}
    )


async def read_json(request: web.BaseRequest) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 :class:`EmuError`."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise EmuError.invalid(f"Invalid JSON body: {err.__class__.__name__}") from err
    if not isinstance(body, dict):
        raise EmuError.invalid("The request body must be a JSON object.")
    return body


def _error_response(state: EmuState, err: EmuError) -> web.Response:
    state.stats.errors[err.stat or err.code] += 1
    payload = {"message": err.message, "type": err.err_type, "param": None, "code": err.code}
    return json_response(
        {"error": {**payload, **err.extra}}, status=err.status, headers=err.headers
    )


def _bearer_account(request: web.BaseRequest, state: EmuState) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if (
        scheme.lower() != "bearer"
        or not token
        or not hmac.compare_digest(token.encode(), state.config.api_key.encode())
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
        return b"data: " + _dumps(obj) + b"\n\n"

    def error_event(self, ctx: ChatCtx, text_so_far: str) -> bytes:
        err = {
            "message": "model request timed out",
            "type": "upstream_error",
            "param": None,
            "code": "4001",
        }
        return b"data: " + _dumps({"error": err}) + b"\n\n"

    def done(self) -> bytes:
        return b"data: [DONE]\n\n"


_WIRE = OpenAIWire()


async def handle_chat(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    state: EmuState = request.app[STATE_KEY]
    state.stats.requests[_CHAT_ROUTE] += 1
    try:
        account = _bearer_account(request, state)
        body = await read_json(request)
        state.stats.last_bodies[_CHAT_ROUTE] = body
        chat = parse_chat(body)
        faults = state.faults_for(chat.latest_user)
        return await run_chat(request, state, account=account, chat=chat, faults=faults, wire=_WIRE)
    except EmuError as err:
        return _error_response(state, err)


# --- TokenHub images -----------------------------------------------------------------------


def revise_prompt(prompt: str, revise: bool) -> str:
    """The emulator's deterministic "prompt expansion" (or the prompt itself)."""
    return f"{prompt}, highly detailed, soft natural light" if revise else prompt


def _check_model(body: Mapping[str, Any], expected: str) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise EmuError.invalid("model is required.")
    if model != expected:
        raise EmuError.invalid(
            f"The model `{model}` is not served by this endpoint (expected `{expected}`).",
            status=404,
            code="model_not_found",
        )


def _prompt(body: Mapping[str, Any], limit: int) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise EmuError.invalid("prompt is required.")
    if len(prompt) > limit:
        raise EmuError.invalid(f"prompt must be at most {limit} characters.")
    return prompt


def _jpeg(body: Mapping[str, Any]) -> bool:
    # Emulator extension: ``output_format`` "png" (default) or "jpeg"/"jpg".
    fmt = body.get("output_format", "png")
    if fmt not in ("png", "jpeg", "jpg"):
        raise EmuError.invalid("output_format must be png or jpeg.")
    return bool(fmt != "png")


def _seed(body: Mapping[str, Any]) -> int:
    seed = body.get("seed")
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 4294967295:
        raise EmuError.invalid("seed must be an integer in 0..4294967295.")
    return seed


async def handle_image_v3(request: web.Request) -> web.StreamResponse:
    """``POST /v1/wand/hunyuan-image/v3-generation`` (hy-image-v3, synchronous)."""
    state: EmuState = request.app[STATE_KEY]
    state.stats.requests[_V3_ROUTE] += 1
    try:
        account = _bearer_account(request, state)
        body = await read_json(request)
        state.stats.last_bodies[_V3_ROUTE] = body
        _check_model(body, "hy-image-v3")
        prompt = _prompt(body, 8192)
        size = body.get("size", "1024x1024")
        m = _SIZE_RE.match(size) if isinstance(size, str) else None
        if m is None:
            raise EmuError.invalid('size must look like "1024x1024".')
        width, height = int(m[1]), int(m[2])
        if not (512 <= width <= 2048 and 512 <= height <= 2048) or width * height > 1024 * 1024:
            raise EmuError.invalid("size: each side must be 512-2048 and W*H at most 1024*1024.")
        seed = _seed(body)
        footnote = body.get("footnote")
        if footnote is not None and (not isinstance(footnote, str) or len(footnote) > 16):
            raise EmuError.invalid("footnote must be a string of at most 16 characters.")
        revise = body.get("revise", True)
        if not isinstance(revise, bool):
            raise EmuError.invalid("revise must be a boolean.")
        logo_add = body.get("logo_add", 1)
        if logo_add not in (0, 1):
            raise EmuError.invalid("logo_add must be 0 or 1.")
        images = body.get("images", [])
        if not isinstance(images, list) or len(images) > 3:
            raise EmuError.invalid("images must be an array of at most 3 references.")
        jpeg = _jpeg(body)
        faults = state.faults_for(prompt)
        clean = strip_markers(prompt)
        result = await state.sync_image(
            request,
            route=_V3_ROUTE,
            account=account,
            prompt=clean,
            seed=seed,
            width=width,
            height=height,
            jpeg=jpeg,
            mark=mark_text_for(footnote) if logo_add else None,
            faults=faults,
            ttl=TOKENHUB_URL_TTL,
        )
        if isinstance(result, web.StreamResponse):
            return result
        url, _ = result
        return json_response(
            {
                "id": str(uuid.uuid4()),
                "created": int(state.now()),
                "data": [{"url": url, "revised_prompt": revise_prompt(clean, revise)}],
            }
        )
    except EmuError as err:
        return _error_response(state, err)


async def handle_image_lite(request: web.Request) -> web.StreamResponse:
    """``POST /v1/api/image/lite`` (hy-image-lite, synchronous; URL or base64)."""
    state: EmuState = request.app[STATE_KEY]
    state.stats.requests[_LITE_ROUTE] += 1
    try:
        account = _bearer_account(request, state)
        body = await read_json(request)
        state.stats.last_bodies[_LITE_ROUTE] = body
        _check_model(body, "hy-image-lite")
        prompt = _prompt(body, 256)
        negative = body.get("negative_prompt")
        if negative is not None and (not isinstance(negative, str) or len(negative) > 256):
            raise EmuError.invalid("negative_prompt must be a string of at most 256 characters.")
        resolution = body.get("resolution", "768:768")
        if resolution not in LITE_RESOLUTIONS:
            raise EmuError.invalid(
                "resolution must be one of " + ", ".join(sorted(LITE_RESOLUTIONS)) + "."
            )
        m = _RES_RE.match(resolution)
        assert m is not None  # every allowed value matches
        rsp_type = body.get("rsp_img_type", "url")
        if rsp_type not in ("url", "base64"):
            raise EmuError.invalid('rsp_img_type must be "url" or "base64".')
        # TextToImageLite semantics (reference §5.2): 1 adds the mark, anything else does not.
        logo_add = body.get("logo_add", 1)
        jpeg = _jpeg(body)
        faults = state.faults_for(prompt)
        result = await state.sync_image(
            request,
            route=_LITE_ROUTE,
            account=account,
            prompt=strip_markers(prompt),
            seed=_seed(body),
            width=int(m[1]),
            height=int(m[2]),
            jpeg=jpeg,
            mark=mark_text_for(None) if logo_add == 1 else None,
            faults=faults,
            ttl=TOKENHUB_URL_TTL,
        )
        if isinstance(result, web.StreamResponse):
            return result
        url, data = result
        item = {"url": url} if rsp_type == "url" else {"b64_json": base64.b64encode(data).decode()}
        return json_response(
            {"created": int(state.now()), "request_id": str(uuid.uuid4()), "data": [item]}
        )
    except EmuError as err:
        return _error_response(state, err)
