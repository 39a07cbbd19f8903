"""Native API 3.0 side of the emulator: ``POST /`` routed on ``X-TC-Action``.

Wire facts (reference §2-§6): version ``2023-09-01``; TC3-HMAC-SHA256 verified over the RAW
body bytes with the headers named in ``SignedHeaders``; every reply that is not a stream or a
transport fault is HTTP 200 with ``Content-Type: application/json`` EXACTLY (the Python SDK
only parses ``Response.Error`` for that exact value) carrying ``{"Response": {..., "RequestId"}}``
or ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``. Streams are
``text/event-stream`` EXACTLY, with ``X-TC-RequestId`` and no ``Response`` wrapper, and end with
a chunk whose ``FinishReason`` is non-empty (no ``[DONE]``).

Actions: ChatCompletions, GetTokenCount, SubmitHunyuanImageJob, QueryHunyuanImageJob,
TextToImageLite. Image jobs run in background tasks: "1" (queued, at least
``image_job_steps`` s and until one of the account's ``image_concurrency`` slots is free, in
submission order) → "2" (running, at least ``image_job_steps`` s) → "5" (done), or "1" → "4"
with the ``imagefail`` fault. Each of those waits is a step of ``EmuState.image_gate``, which a
test can hold and release (see :mod:`.gate`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.hunyuan.emulator.chat import ChatCtx, ChatRequest, run_chat
from core.hunyuan.emulator.faults import IMAGE_ERROR_FAULTS, EmuError
from core.hunyuan.emulator.images import LITE_RESOLUTIONS, revise_prompt
from core.hunyuan.emulator.render import mark_text_for
from core.hunyuan.emulator.state import CHAT_MODELS, STATE_KEY, EmuState
from core.hunyuan.emulator.text import (
    NOTE,
    ROLE_ORDER_MESSAGE,
    role_order_ok,
    split_tokens,
    strip_markers,
)
from core.hunyuan.emulator.wire import (
    BodyRefused,
    check_content_type,
    dumps,
    native_envelope,
    native_error,
    parse_json_object,
)
from core.hunyuan.signing import (
    TC3Failure,
    parse_authorization,
    verify_tc3,
)
from core.tokens import estimate_tokens

__all__ = ["VERSION", "NativeWire", "handle_native", "parse_native_chat"]

_log = logging.getLogger(__name__)

VERSION = "2023-09-01"
NATIVE_URL_TTL = 3600.0
JOB_RESOLUTIONS = frozenset(
    {"768:768", "768:1024", "1024:768", "1024:1024", "720:1280", "1280:720", "768:1280", "1280:768"}
)
_STATUS_MSG = {"1": "排队中", "2": "处理中", "4": "处理失败", "5": "处理完成"}
_PARAMS: dict[str, frozenset[str]] = {
    "ChatCompletions": frozenset(
        [
            "Model",
            "Messages",
            "Stream",
            "StreamModeration",
            "TopP",
            "Temperature",
            "EnableEnhancement",
            "Tools",
            "ToolChoice",
            "CustomTool",
            "SearchInfo",
            "Citation",
            "EnableSpeedSearch",
            "EnableMultimedia",
            "EnableDeepSearch",
            "Seed",
            "ForceSearchEnhancement",
            "Stop",
            "EnableRecommendedQuestions",
            "EnableDeepRead",
            "WebSearchOptions",
            "TopicChoice",
            "EnableThinking",
        ]
    ),
    "GetTokenCount": frozenset({"Prompt"}),
    "SubmitHunyuanImageJob": frozenset(
        [
            "Prompt",
            "NegativePrompt",
            "Style",
            "Resolution",
            "Num",
            "Clarity",
            "ContentImage",
            "Revise",
            "Seed",
            "LogoAdd",
            "LogoParam",
        ]
    ),
    "QueryHunyuanImageJob": frozenset({"JobId"}),
    "TextToImageLite": frozenset(
        ["Prompt", "NegativePrompt", "Style", "Resolution", "LogoAdd", "LogoParam", "RspImgType"]
    ),
}
_IMAGE_ACTIONS = frozenset({"SubmitHunyuanImageJob", "QueryHunyuanImageJob", "TextToImageLite"})


def _native(code: str, message: str) -> EmuError:
    return EmuError.invalid(message, native_code=code)


# --- TC3 ----------------------------------------------------------------------------------

# Tencent-style messages for the failure details signing.verify_tc3 reports; any other detail
# falls back to the generic message of its failure (see _tc3_error). The wire tests pin these.
_TC3_DETAIL_MESSAGES = {
    "missing or invalid X-TC-Timestamp": "X-TC-Timestamp 缺失或不合法。",
    "content-type and host must be signed": "SignedHeaders 必须包含 content-type 和 host。",
    "credential scope does not match the request": "请求签名验证失败：凭证范围不匹配。",
}
_TC3_MISSING_HEADER = "a signed header is missing from the request"


def _tc3_error(failure: TC3Failure, detail: str, request: web.Request, window: int) -> EmuError:
    """The emulator's ``AuthFailure.*`` error for a failed :func:`verify_tc3` verdict."""
    message = _TC3_DETAIL_MESSAGES.get(detail)
    if message is None and detail == _TC3_MISSING_HEADER:
        parsed = parse_authorization(request.headers.get("Authorization", ""))
        signed = parsed.signed_headers if parsed is not None else ()
        missing = sorted(name for name in signed if name not in request.headers)
        message = f"签名头部缺失：{', '.join(missing)}。"
    if message is None:
        message = {
            TC3Failure.MALFORMED: "Authorization 头部格式不合法。",
            TC3Failure.UNKNOWN_ID: "SecretId 不存在，请输入正确的密钥。",
            TC3Failure.EXPIRED: f"签名过期。Timestamp 与服务器时间相差超过 {window} 秒。",
            TC3Failure.MISMATCH: "请求签名验证失败，请检查您的签名计算是否正确。",
        }[failure]
    return _native(failure.code, message)


# --- ChatCompletions -----------------------------------------------------------------------


def _num(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _native("InvalidParameterValue", f"{key} 参数类型错误。")
    return float(value)


def _message_text(msg: Mapping[str, Any]) -> str:
    content = msg.get("Content")
    if content is not None and not isinstance(content, str):
        raise _native("InvalidParameterValue", "Content 参数类型错误。")
    if content:
        return content
    contents = msg.get("Contents")
    if contents is None:
        return ""
    if not isinstance(contents, list):
        raise _native("InvalidParameterValue", "Contents 参数类型错误。")
    texts = [
        c["Text"]
        for c in contents
        if isinstance(c, dict) and c.get("Type") == "text" and isinstance(c.get("Text"), str)
    ]
    return "\n".join(texts)


def parse_native_chat(body: Mapping[str, Any]) -> ChatRequest:
    """Validate a native ChatCompletions body (reference §3.1); raises :class:`EmuError`."""
    model = body.get("Model")
    if not isinstance(model, str) or not model:
        raise _native("MissingParameter", "The request is missing a required parameter `Model`.")
    if model not in CHAT_MODELS:
        raise _native("InvalidParameterValue.Model", f"模型 {model} 不存在或不可用。")
    raw = body.get("Messages")
    if not isinstance(raw, list) or not raw:
        raise _native("MissingParameter", "The request is missing a required parameter `Messages`.")
    if len(raw) > 40:
        raise _native("InvalidParameter", "Messages 的长度不能超过 40。")
    pairs: list[tuple[str, str]] = []
    for msg in raw:
        if not isinstance(msg, dict) or not isinstance(msg.get("Role"), str):
            raise _native("InvalidParameter", ROLE_ORDER_MESSAGE)
        if msg.get("ReasoningContent"):
            raise _native("InvalidParameter", "Messages 中不能传入 ReasoningContent。")
        role = msg["Role"]
        text = _message_text(msg)
        if not text.strip() and not (role == "assistant" and msg.get("ToolCalls")):
            raise _native("InvalidParameter", "Messages 中 Content 不能为空。")
        pairs.append((role, text))
    if not role_order_ok([role for role, _ in pairs]):
        raise _native("InvalidParameter", ROLE_ORDER_MESSAGE)
    temperature = _num(body, "Temperature")
    if temperature is not None and temperature > 2:
        raise _native("InvalidParameter", "Temperature must be 2 or less")
    if temperature is not None and temperature < 0:
        raise _native("InvalidParameter", "Temperature must be 0 or more")
    top_p = _num(body, "TopP")
    if top_p is not None and not 0 <= top_p <= 1:
        raise _native("InvalidParameter", "TopP must be between 0 and 1")
    seed = body.get("Seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 1 <= seed <= 10000
    ):
        raise _native("InvalidParameterValue", "Seed 取值范围为 1 到 10000。")
    stream = body.get("Stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _native("InvalidParameterValue", "Stream 参数类型错误。")
    return ChatRequest(model, tuple(pairs), bool(stream))


class NativeWire:
    """Formats chat responses the native way (PascalCase, cumulative Usage, no [DONE])."""

    def _usage(self, ctx: ChatCtx, text: str) -> dict[str, int]:
        u = ctx.usage(text)
        return {
            "PromptTokens": u.prompt_tokens,
            "CompletionTokens": u.completion_tokens,
            "TotalTokens": u.total_tokens,
        }

    def body(self, ctx: ChatCtx, text: str, finish: str) -> web.Response:
        choice = {
            "Index": 0,
            "FinishReason": finish,
            "Message": {"Role": "assistant", "Content": text},
        }
        payload = {
            "Id": ctx.request_id,
            "Created": ctx.created,
            "Note": NOTE,
            "Choices": [choice],
            "Usage": self._usage(ctx, text),
        }
        return native_envelope(payload, ctx.request_id)

    def stream_headers(self, ctx: ChatCtx) -> dict[str, str]:
        return {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-TC-RequestId": ctx.request_id,
        }

    def _chunk(self, ctx: ChatCtx, delta: str, finish: str, text_so_far: str) -> dict[str, Any]:
        return {
            "Note": NOTE,
            "Choices": [
                {
                    "Index": 0,
                    "FinishReason": finish,
                    "Delta": {"Role": "assistant", "Content": delta},
                }
            ],
            "Created": ctx.created,
            "Id": ctx.request_id,
            "Usage": self._usage(ctx, text_so_far),
        }

    def chunk(self, ctx: ChatCtx, delta: str, finish: str | None, text_so_far: str) -> bytes:
        return b"data: " + dumps(self._chunk(ctx, delta, finish or "", text_so_far)) + b"\n\n"

    def error_event(self, ctx: ChatCtx, text_so_far: str) -> bytes:
        obj = self._chunk(ctx, "", "", text_so_far)
        obj["ErrorMsg"] = {"Code": 4001, "Msg": "model request timed out"}
        return b"data: " + dumps(obj) + b"\n\n"

    def done(self) -> bytes:
        return b""


_WIRE = NativeWire()

_Handler = Callable[
    [web.Request, EmuState, dict[str, Any], str, str], Awaitable[web.StreamResponse]
]


async def _chat(
    request: web.Request, state: EmuState, body: dict[str, Any], account: str, rid: str
) -> web.StreamResponse:
    chat = parse_native_chat(body)
    faults = state.faults_for(chat.latest_user)
    return await run_chat(
        request, state, account=account, chat=chat, faults=faults, wire=_WIRE, request_id=rid
    )


async def _token_count(
    request: web.Request, state: EmuState, body: dict[str, Any], account: str, rid: str
) -> web.StreamResponse:
    prompt = body.get("Prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _native("MissingParameter", "The request is missing a required parameter `Prompt`.")
    early = await state.apply_faults(request, state.faults_for(None), ("badkey", "429", "500"))
    if early is not None:
        return early
    payload = {
        "TokenCount": estimate_tokens(prompt),
        "CharacterCount": len(prompt),
        "Tokens": split_tokens(prompt),
    }
    return native_envelope(payload, rid)


# --- image jobs ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    job_id: str
    account: str
    prompt: str
    revised: str
    seed: int
    width: int
    height: int
    num: int
    mark: str | None
    base_url: str
    fail: bool
    created: float
    status: str = "1"
    urls: list[str] = field(default_factory=list)
    error: tuple[str, str] = ("FailedOperation.GenerateImageFailed", "图片生成失败。")


def _str_param(body: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise _native(
                "MissingParameter", f"The request is missing a required parameter `{key}`."
            )
        return ""
    if not isinstance(value, str):
        raise _native("InvalidParameterValue", f"{key} 参数类型错误。")
    if required and not value.strip():
        raise _native("InvalidParameter", f"{key} 不能为空。")
    if len(value) > limit:
        raise _native("InvalidParameter", f"{key} 长度不能超过 {limit} 个字符。")
    return value


def _int_param(body: Mapping[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _native("InvalidParameterValue", f"{key} 参数类型错误。")
    return value


def _resolution(body: Mapping[str, Any], allowed: frozenset[str], default: str) -> tuple[int, int]:
    value = body.get("Resolution", default)
    if not isinstance(value, str) or value not in allowed:
        raise _native(
            "InvalidParameterValue", f"Resolution 取值不合法，可选：{', '.join(sorted(allowed))}。"
        )
    width, height = str(value).split(":")
    return int(width), int(height)


async def _submit_job(
    request: web.Request, state: EmuState, body: dict[str, Any], account: str, rid: str
) -> web.StreamResponse:
    prompt = _str_param(body, "Prompt", 1024, required=True)
    _str_param(body, "NegativePrompt", 1024)
    _str_param(body, "Style", 64)
    width, height = _resolution(body, JOB_RESOLUTIONS, "1024:1024")
    num = _int_param(body, "Num", 1)
    if not 1 <= num <= 4:
        raise _native("InvalidParameterValue", "Num 取值范围为 1 到 4。")
    clarity = body.get("Clarity")
    if clarity not in (None, "", "x2", "x4"):
        raise _native("InvalidParameterValue", "Clarity 取值为 x2 或 x4。")
    scale = {"x2": 2, "x4": 4}.get(str(clarity), 1)
    revise = _int_param(body, "Revise", 1)
    seed = _int_param(body, "Seed", 0)
    logo_add = _int_param(body, "LogoAdd", 1)
    for key in ("ContentImage", "LogoParam"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise _native("InvalidParameterValue", f"{key} 参数类型错误。")
    faults = state.faults_for(prompt)
    early = await state.apply_faults(request, faults, IMAGE_ERROR_FAULTS)
    if early is not None:
        return early
    clean = strip_markers(prompt)
    job = _Job(
        job_id=f"1253534368-{int(state.now())}-{uuid.uuid4()}-0",
        account=account,
        prompt=clean,
        revised=revise_prompt(clean, revise != 0),
        seed=max(seed, 0),
        width=width * scale,
        height=height * scale,
        num=num,
        # SubmitHunyuanImageJob: 0 turns the mark off, any other value means 1 (§5.1).
        mark=None if logo_add == 0 else mark_text_for(None),
        base_url=f"{request.scheme}://{request.host}",
        fail="imagefail" in faults,
        created=state.now(),
    )
    # Forget finished jobs whose results expired, so a long-running emulator stays small.
    horizon = state.now() - NATIVE_URL_TTL
    for old in [j for j in state.jobs.values() if j.status in ("4", "5") and j.created < horizon]:
        del state.jobs[old.job_id]
    state.jobs[job.job_id] = job
    ticket = state.image_slots.enqueue(account)
    state.spawn(_run_job(state, job, ticket))
    return native_envelope({"JobId": job.job_id}, rid)


async def _run_job(state: EmuState, job: _Job, ticket: Any) -> None:
    steps = state.config.image_job_steps
    loop = asyncio.get_running_loop()
    try:
        await state.image_gate.step(steps)
        if job.fail:
            state.image_slots.withdraw(job.account, ticket)
            job.status = "4"
            state.image_gate.run_finished()
            return
        await state.image_slots.acquire(job.account, ticket)
    except BaseException:
        state.image_slots.withdraw(job.account, ticket)
        raise
    try:
        job.status = "2"
        started = loop.time()
        urls = []
        for i in range(job.num):
            url, _ = await state.create_image(
                route="native:SubmitHunyuanImageJob",
                account=job.account,
                base_url=job.base_url,
                prompt=job.prompt,
                seed=job.seed + i,
                width=job.width,
                height=job.height,
                jpeg=True,
                mark=job.mark,
                ttl=NATIVE_URL_TTL,
            )
            urls.append(url)
        await state.image_gate.step(max(0.0, steps - (loop.time() - started)))
        job.urls = urls
        job.status = "5"
    except Exception:
        # A background job has no request to answer: log once, and the job reports failure.
        _log.exception("emulator: image job %s failed unexpectedly", job.job_id)
        state.stats.errors["internal"] += 1
        job.error = ("InternalError", "内部错误。")
        job.status = "4"
    finally:
        state.image_slots.release(job.account)
        if job.status in ("4", "5"):
            state.image_gate.run_finished()


async def _query_job(
    request: web.Request, state: EmuState, body: dict[str, Any], account: str, rid: str
) -> web.StreamResponse:
    job_id = _str_param(body, "JobId", 256, required=True)
    early = await state.apply_faults(request, state.faults_for(None), ("badkey", "429", "500"))
    if early is not None:
        return early
    job = state.jobs.get(job_id)
    if not isinstance(job, _Job) or job.account != account:
        raise _native("InvalidParameterValue", "JobId 不存在。")
    failed = job.status == "4"
    done = job.status == "5"
    payload = {
        "JobStatusCode": job.status,
        "JobStatusMsg": _STATUS_MSG[job.status],
        "JobErrorCode": job.error[0] if failed else "",
        "JobErrorMsg": job.error[1] if failed else "",
        "ResultImage": list(job.urls) if done else [],
        "ResultDetails": ["Success"] * len(job.urls) if done else [],
        "RevisedPrompt": [job.revised] * job.num if done else [],
    }
    return native_envelope(payload, rid)


async def _text_to_image_lite(
    request: web.Request, state: EmuState, body: dict[str, Any], account: str, rid: str
) -> web.StreamResponse:
    prompt = _str_param(body, "Prompt", 256, required=True)
    _str_param(body, "NegativePrompt", 256)
    _str_param(body, "Style", 64)
    width, height = _resolution(body, LITE_RESOLUTIONS, "768:768")
    # TextToImageLite: 1 adds the mark, any other value means none (§5.2).
    logo_add = body.get("LogoAdd", 1)
    rsp_type = body.get("RspImgType", "base64")
    if rsp_type not in ("base64", "url"):
        raise _native("InvalidParameterValue", "RspImgType 取值为 base64 或 url。")
    result = await state.sync_image(
        request,
        route="native:TextToImageLite",
        account=account,
        prompt=strip_markers(prompt),
        seed=0,
        width=width,
        height=height,
        jpeg=True,
        mark=mark_text_for(None) if logo_add == 1 else None,
        faults=state.faults_for(prompt),
        ttl=NATIVE_URL_TTL,
    )
    if isinstance(result, web.StreamResponse):
        return result
    url, data = result
    image = url if rsp_type == "url" else base64.b64encode(data).decode()
    return native_envelope({"ResultImage": image}, rid)


_ACTIONS: dict[str, _Handler] = {
    "ChatCompletions": _chat,
    "GetTokenCount": _token_count,
    "SubmitHunyuanImageJob": _submit_job,
    "QueryHunyuanImageJob": _query_job,
    "TextToImageLite": _text_to_image_lite,
}


async def handle_native(request: web.Request) -> web.StreamResponse:
    """``POST /``: version and TC3 checks, then the action handler (see module docstring)."""
    state = request.app[STATE_KEY]
    raw = await request.read()
    action = request.headers.get("X-TC-Action", "")
    rid = str(uuid.uuid4())
    state.stats.requests[f"native:{action or '-'}"] += 1
    try:
        if not action:
            raise _native(
                "MissingParameter", "The request is missing a required parameter `Action`."
            )
        if request.headers.get("X-TC-Version") != VERSION:
            raise _native("NoSuchVersion", "接口版本不存在。")
        config = state.config
        verdict = verify_tc3(
            authorization=request.headers.get("Authorization"),
            headers=request.headers,
            body=raw,
            secrets={config.secret_id: config.secret_key},
            # Real time, not emulator time: advance_time() only ages result URLs.
            now=time.time(),
            window=config.clock_skew_window,
            method=request.method,
            canonical_uri=request.path,
            canonical_query=request.query_string,
            expected_service="hunyuan",
        )
        if verdict.failure is not None:
            raise _tc3_error(verdict.failure, verdict.detail, request, config.clock_skew_window)
        account = state.native_account
        handler = _ACTIONS.get(action)
        if handler is None:
            raise _native("InvalidAction", f"接口 {action} 不存在。")
        region = request.headers.get("X-TC-Region")
        if action in _IMAGE_ACTIONS and region not in (None, "", "ap-guangzhou"):
            raise _native("UnsupportedRegion", "接口不支持所传地域。")
        try:
            check_content_type(request)
            body = parse_json_object(raw) if raw else {}
        except BodyRefused as err:
            raise _native("InvalidParameter", f"请求体不合法：{err}。") from err
        state.stats.last_bodies[f"native:{action}"] = body
        unknown = sorted(set(body) - _PARAMS[action])
        if unknown:
            raise _native("UnknownParameter", f"The parameter `{unknown[0]}` is not recognized.")
        return await handler(request, state, body, account, rid)
    except EmuError as err:
        return native_error(state, err, rid)
