"""HunyuanClient against httpx.MockTransport: wire bodies, error table, retries, SSE, timeouts."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from PIL import Image

from core.config import HunyuanConfig, Secret
from core.errors import (
    AuthError,
    ConfigError,
    ContextLengthExceeded,
    HunyuanError,
    HunyuanTimeout,
    ImageJobFailed,
    InputTooLong,
    InvalidRequest,
    ModelUnavailable,
    ModerationRefused,
    OutOfCredit,
    RateLimited,
    ServerBusy,
    SignatureExpired,
    StreamInterrupted,
    TransportError,
    UpstreamError,
)
from core.hunyuan import HunyuanClient, verify_tc3
from core.hunyuan._errors import parse_retry_after
from core.i18n import CATALOGUE, LANGUAGES, error_message
from core.tokens import estimate_tokens
from core.types import ChatMessage

API_KEY = "sk-unit-test-key-0123456789"
SECRET_ID = "AKIDunitTest"
SECRET_KEY = "unit-test-secret-key-abcdef"
NOTE = "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记"
NOW = 1_800_000_000

OPENAI = HunyuanConfig(
    api="openai",
    base_url="https://th.test/v1",
    api_key=Secret(API_KEY),
    model="hy3-preview",
    max_attempts=3,
    backoff_base=0.5,
    backoff_cap=8.0,
    connect_timeout=1.0,
    idle_timeout=5.0,
    total_timeout=10.0,
)
NATIVE = replace(
    OPENAI,
    api="native",
    native_endpoint="https://hunyuan.test",
    secret_id=Secret(SECRET_ID),
    secret_key=Secret(SECRET_KEY),
    model="hunyuan-lite",
)

HELLO = [ChatMessage("user", "hello")]


class Recorder:
    """A MockTransport handler that replays scripted responses and records requests."""

    def __init__(self, *responses: Callable[[httpx.Request], object] | httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.responses:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, httpx.Response):
            return item
        result = item(request)
        if asyncio.iscoroutine(result):
            result = await result
        return result  # type: ignore[return-value]

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make(handler, config: HunyuanConfig = OPENAI, **kw) -> tuple[HunyuanClient, Sleeps]:
    sleeps = kw.pop("sleep", None) or Sleeps()
    client = HunyuanClient(
        config=config,
        transport=httpx.MockTransport(handler),
        sleep=sleeps,
        clock=kw.pop("clock", lambda: NOW),
        rng=kw.pop("rng", random.Random(7)),
    )
    return client, sleeps


def ok_openai(text: str = "hi there", **extra) -> httpx.Response:
    body = {
        "id": "req-1",
        "object": "chat.completion",
        "created": NOW,
        "model": "hy3-preview",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        "note": NOTE,
    }
    body.update(extra)
    return httpx.Response(200, json=body)


def ok_native(text: str = "你好呀") -> httpx.Response:
    return native_response(
        {
            "RequestId": "rid-9",
            "Id": "rid-9",
            "Created": NOW,
            "Note": NOTE,
            "Choices": [
                {
                    "Index": 0,
                    "FinishReason": "stop",
                    "Message": {"Role": "assistant", "Content": text},
                }
            ],
            "Usage": {"PromptTokens": 2, "CompletionTokens": 5, "TotalTokens": 7},
        }
    )


def native_response(payload: dict) -> httpx.Response:
    return httpx.Response(
        200,
        content=json.dumps({"Response": payload}).encode(),
        headers={"Content-Type": "application/json"},
    )


def native_error(code: str, message: str = "boom") -> httpx.Response:
    return native_response({"Error": {"Code": code, "Message": message}, "RequestId": "rid-e"})


def openai_error(status: int, code: str = "", type_: str = "", message: str = "x", headers=None):
    return httpx.Response(
        status,
        json={"error": {"message": message, "type": type_, "code": code}},
        headers=headers or {},
    )


def sse(*events: object, done: bool = False) -> bytes:
    out = []
    for e in events:
        out.append("data: " + (e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)))
    if done:
        out.append("data: [DONE]")
    return ("\n\n".join(out) + "\n\n").encode()


def oa_chunk(content: str = "", finish: str | None = None, usage: dict | None = None) -> dict:
    chunk: dict = {
        "id": "s-1",
        "object": "chat.completion.chunk",
        "model": "hy3-preview",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "note": NOTE,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def nv_chunk(content: str = "", finish: str = "", usage=(1, 1, 2), error=None) -> dict:
    chunk: dict = {
        "Note": NOTE,
        "Created": NOW,
        "Id": "nid",
        "Choices": [{"FinishReason": finish, "Delta": {"Role": "assistant", "Content": content}}],
        "Usage": {"PromptTokens": usage[0], "CompletionTokens": usage[1], "TotalTokens": usage[2]},
    }
    if error is not None:
        chunk["ErrorMsg"] = error
    return chunk


def stream_response(body: bytes | AsyncIterator[bytes], *, native: bool = False) -> httpx.Response:
    headers = {"Content-Type": "text/event-stream"}
    if native:
        headers["X-TC-RequestId"] = "stream-rid"
    return httpx.Response(200, headers=headers, content=body)


async def collect(client: HunyuanClient, messages=HELLO, **kw):
    return [c async for c in client.stream_chat(messages, **kw)]


# --- request bodies -------------------------------------------------------------------------


async def test_openai_chat_request_and_result() -> None:
    rec = Recorder(ok_openai())
    client, _ = make(rec)
    async with client:
        result = await client.chat(
            [ChatMessage("system", "be brief"), ChatMessage("user", "hello")]
        )
    req = rec.requests[0]
    assert str(req.url) == "https://th.test/v1/chat/completions"
    assert req.method == "POST"
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert rec.bodies[0] == {
        "model": "hy3-preview",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
        ],
    }
    assert result.text == "hi there"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 4)
    assert result.usage.total_tokens == 7
    assert result.finish_reason == "stop"
    assert result.note == NOTE
    assert result.request_id == "req-1"
    assert result.model == "hy3-preview"


async def test_unset_parameters_are_omitted_and_set_ones_sent() -> None:
    rec = Recorder(ok_openai())
    client, _ = make(rec)
    async with client:
        await client.chat(HELLO)
        await client.chat(HELLO, model="hunyuan-turbo", max_tokens=50, temperature=0.0, top_p=0.9)
        await client.chat(HELLO, extra={"seed": None, "stop": ["x"]})
    first, second, third = rec.bodies
    assert set(first) == {"model", "messages"}
    assert b"null" not in rec.requests[0].content
    assert second["model"] == "hunyuan-turbo"
    assert second["max_tokens"] == 50
    assert second["temperature"] == 0.0  # falsy but set: still sent
    assert second["top_p"] == 0.9
    assert "seed" not in third and third["stop"] == ["x"]


async def test_extra_body_and_extra_pass_through_at_top_level() -> None:
    rec = Recorder(ok_openai(), stream_response(sse(oa_chunk("a", "stop"), done=True)))
    cfg = replace(OPENAI, extra_body=(("enable_enhancement", False), ("citation", True)))
    client, _ = make(rec, cfg)
    async with client:
        await client.chat(HELLO, extra={"enable_enhancement": True, "stream": True})
        await collect(client, extra={"search_info": True})
    body, streamed = rec.bodies
    assert body["enable_enhancement"] is True  # the call's extra wins over config
    assert body["citation"] is True
    assert "stream" not in body  # a non-stream call stays non-stream
    assert streamed["stream"] is True and streamed["search_info"] is True
    assert streamed["enable_enhancement"] is False


async def test_native_chat_is_signed_over_the_exact_bytes_sent() -> None:
    rec = Recorder(ok_native())
    client, _ = make(rec, NATIVE)
    async with client:
        result = await client.chat(
            [ChatMessage("user", "你好")],
            temperature=0.5,
            max_tokens=99,
            extra={"EnableEnhancement": False},
        )
    req = rec.requests[0]
    assert str(req.url) == "https://hunyuan.test/"
    assert req.headers["x-tc-action"] == "ChatCompletions"
    assert req.headers["x-tc-version"] == "2023-09-01"
    assert req.headers["x-tc-timestamp"] == str(NOW)
    assert req.headers["x-tc-region"] == "ap-guangzhou"
    assert req.headers["host"] == "hunyuan.test"
    assert req.headers["content-type"] == "application/json"
    payload = {
        "Model": "hunyuan-lite",
        "Messages": [{"Role": "user", "Content": "你好"}],
        "Temperature": 0.5,
        "EnableEnhancement": False,
    }
    assert req.content == json.dumps(payload).encode()  # SDK-style bytes, no MaxTokens
    verdict = verify_tc3(
        authorization=req.headers["authorization"],
        headers=req.headers,
        body=req.content,
        secrets={SECRET_ID: SECRET_KEY},
        now=NOW,
        expected_service="hunyuan",
    )
    assert verdict.ok
    assert "x-tc-action" in req.headers["authorization"]
    assert result.text == "你好呀"
    assert result.usage.total_tokens == 7
    assert result.request_id == "rid-9"
    assert result.note == NOTE
    assert result.model == "hunyuan-lite"


async def test_role_normalisation_before_every_call() -> None:
    rec = Recorder(ok_openai(), stream_response(sse(oa_chunk("x", "stop"), done=True)))
    client, _ = make(rec)
    messy = [
        ChatMessage("assistant", "leading assistant"),
        ChatMessage("user", "one"),
        ChatMessage("user", "two"),
        ChatMessage("assistant", "   "),
        ChatMessage("system", "late system"),
        ChatMessage("assistant", "trailing"),
    ]
    async with client:
        await client.chat(messy)
        await collect(client, messy)
    for body in rec.bodies:
        assert body["messages"] == [
            {"role": "system", "content": "late system"},
            {"role": "user", "content": "one\n\ntwo"},
        ]


async def test_nothing_user_facing_raises_without_network() -> None:
    rec = Recorder()
    client, _ = make(rec)
    async with client:
        with pytest.raises(InvalidRequest):
            await client.chat([ChatMessage("system", "persona"), ChatMessage("assistant", "hi")])
        with pytest.raises(InvalidRequest):
            await collect(client, [ChatMessage("user", "   ")])
    assert rec.requests == []


async def test_usage_estimated_when_missing() -> None:
    rec = Recorder(ok_openai("four five six", usage=None))
    client, _ = make(rec)
    async with client:
        result = await client.chat(
            [ChatMessage("system", "persona!"), ChatMessage("user", "你好世界")]
        )
    prompt = estimate_tokens("persona!") + estimate_tokens("你好世界")
    assert result.usage.prompt_tokens == prompt
    assert result.usage.completion_tokens == estimate_tokens("four five six")
    assert result.usage.total_tokens == prompt + estimate_tokens("four five six")


# --- error table ----------------------------------------------------------------------------

NATIVE_ROWS = [
    ("FailedOperation.EngineServerLimitExceeded", ServerBusy),
    ("RequestLimitExceeded", RateLimited),
    ("RequestLimitExceeded.UinLimitExceeded", RateLimited),
    ("RequestLimitExceeded.IPLimitExceeded", RateLimited),
    ("RequestLimitExceeded.GlobalRegionUinLimitExceeded", RateLimited),
    ("LimitExceeded", RateLimited),
    ("FailedOperation.EngineRequestTimeout", HunyuanTimeout),
    ("FailedOperation.EngineServerError", UpstreamError),
    ("InternalError", UpstreamError),
    ("ServiceUnavailable", UpstreamError),
    ("OperationDenied.TextIllegalDetected", ModerationRefused),
    ("OperationDenied.ImageIllegalDetected", ModerationRefused),
    ("FailedOperation.GenerateImageFailed", ImageJobFailed),
    ("FailedOperation.ResourcePackExhausted", OutOfCredit),
    ("FailedOperation.FreeResourcePackExhausted", OutOfCredit),
    ("ResourceInsufficient.ChargeResourceExhaust", OutOfCredit),
    ("ResourceUnavailable.InArrears", OutOfCredit),
    ("ResourceUnavailable.LowBalance", OutOfCredit),
    ("FailedOperation.ServiceStopArrears", OutOfCredit),
    ("ResourceUnavailable.StopUsing", OutOfCredit),
    ("FailedOperation.ServiceStop", OutOfCredit),
    ("FailedOperation.ServiceNotActivated", AuthError),
    ("ResourceUnavailable.NotExist", AuthError),
    ("FailedOperation.UserUnAuthError", AuthError),
    ("FailedOperation.PartnerAccountUnSupport", AuthError),
    ("AuthFailure.SignatureFailure", AuthError),
    ("AuthFailure.SecretIdNotFound", AuthError),
    ("AuthFailure.InvalidSecretId", AuthError),
    ("AuthFailure.InvalidAuthorization", AuthError),
    ("AuthFailure.TokenFailure", AuthError),
    ("AuthFailure.UnauthorizedOperation", AuthError),
    ("UnauthorizedOperation", AuthError),
    ("AuthFailure.SignatureExpire", SignatureExpired),
    ("InvalidParameter", InvalidRequest),
    ("InvalidParameter.InvalidParameter", InvalidRequest),
    ("InvalidParameterValue", InvalidRequest),
    ("InvalidParameterValue.ParameterValueError", InvalidRequest),
    ("MissingParameter", InvalidRequest),
    ("UnknownParameter", InvalidRequest),
    ("InvalidParameterValue.Model", ModelUnavailable),
    ("ResourceNotFound", ModelUnavailable),
    ("InvalidParameter.ImageCountLimitExceededError", InvalidRequest),
    ("InvalidParameter.ImageProcessingFailureError", InvalidRequest),
    ("InvalidParameterValue.ImageRequestError", InvalidRequest),
    ("FailedOperation.DownloadError", InvalidRequest),
    ("FailedOperation.ImageDownloadError", InvalidRequest),
    ("FailedOperation.ImageDecodeFailed", InvalidRequest),
    ("RequestSizeLimitExceeded", InvalidRequest),
    ("ActionOffline", ModelUnavailable),
    ("InvalidAction", ModelUnavailable),
    ("FailedOperation.SetPayModeExceed", InvalidRequest),
    ("FailedOperation.ConsoleServerError", UpstreamError),
    # unknown sub-codes fall back to their family
    ("AuthFailure.SomethingNew", AuthError),
    ("RequestLimitExceeded.NewDimension", RateLimited),
    ("InvalidParameterValue.Model.Retired", ModelUnavailable),
    ("ResourceUnavailable.Whatever", OutOfCredit),
    ("OperationDenied.NewKind", ModerationRefused),
]


@pytest.mark.parametrize(("code", "expected"), NATIVE_ROWS)
async def test_native_error_table(code: str, expected: type[HunyuanError]) -> None:
    rec = Recorder(native_error(code, "upstream says no"))
    client, _ = make(rec, replace(NATIVE, max_attempts=1))
    async with client:
        with pytest.raises(HunyuanError) as info:
            await client.chat(HELLO)
    assert type(info.value) is expected
    assert info.value.code == code
    assert info.value.request_id == "rid-e"
    assert "upstream says no" not in info.value.user_message


async def test_unknown_native_code_is_the_base_error_and_not_retried() -> None:
    rec = Recorder(native_error("FailedOperation.Mystery"))
    client, _ = make(rec, NATIVE)
    async with client:
        with pytest.raises(HunyuanError) as info:
            await client.chat(HELLO)
    assert type(info.value) is HunyuanError
    assert len(rec.requests) == 1


OPENAI_ROWS = [
    # (status, code, type, message, expected)
    (400, "1001", "invalid_request_error", "role order", InvalidRequest),
    (400, "400001", "invalid_request_error", "", InvalidRequest),
    (400, "400002", "invalid_request_error", "", InvalidRequest),
    (400, "400004", "invalid_request_error", "", InvalidRequest),
    (400, "model_not_found", "invalid_request_error", "", ModelUnavailable),
    (401, "401002", "authentication_error", "", AuthError),
    (402, "401007", "permission_error", "FREE_QUOTA_EXHAUSTED", OutOfCredit),
    (402, "401008", "permission_error", "", OutOfCredit),
    (402, "403004", "permission_error", "", OutOfCredit),
    (403, "403001", "permission_error", "", AuthError),
    (403, "403002", "permission_error", "", AuthError),
    (403, "403005", "permission_error", "ip", AuthError),
    (429, "429001", "rate_limit_error", "rpm limit", RateLimited),
    (429, "429001", "rate_limit_error", "too many concurrent requests", ServerBusy),
    (451, "451001", "content_filter_error", "", ModerationRefused),
    (502, "502001", "upstream_error", "", UpstreamError),
    # status alone
    (400, "", "", "", InvalidRequest),
    (401, "", "", "", AuthError),
    (402, "", "", "", OutOfCredit),
    (403, "", "", "", AuthError),
    (404, "", "", "", ModelUnavailable),
    (408, "", "", "", HunyuanTimeout),
    (413, "", "", "", InvalidRequest),
    (422, "", "", "", InvalidRequest),
    (429, "", "", "", RateLimited),
    (451, "", "", "", ModerationRefused),
    (500, "", "", "", UpstreamError),
    (502, "", "", "", UpstreamError),
    (503, "", "", "", UpstreamError),
    (504, "", "", "", HunyuanTimeout),
    (418, "", "", "", InvalidRequest),
    (599, "", "", "", UpstreamError),
]


@pytest.mark.parametrize(("status", "code", "type_", "message", "expected"), OPENAI_ROWS)
async def test_openai_error_table(status, code, type_, message, expected) -> None:
    rec = Recorder(openai_error(status, code, type_, message))
    client, _ = make(rec, replace(OPENAI, max_attempts=1))
    async with client:
        with pytest.raises(HunyuanError) as info:
            await client.chat(HELLO)
    assert type(info.value) is expected
    assert info.value.status == status
    assert info.value.code == code


# --- a prompt over the model's window (the service's refusal) -------------------------------


def too_long_openai() -> httpx.Response:
    return openai_error(
        400,
        "context_length_exceeded",
        "invalid_request_error",
        "This model's maximum context length is 8192 tokens; your messages resulted in 9000.",
    )


def too_long_native() -> httpx.Response:
    return native_error("InvalidParameter", "输入内容过长：约 30000 tokens，超过模型的输入上限。")


@pytest.mark.parametrize(
    ("config", "response"), [(OPENAI, too_long_openai), (NATIVE, too_long_native)]
)
async def test_a_prompt_over_the_window_is_input_too_long_and_not_retried(
    config: HunyuanConfig, response: Callable[[], httpx.Response]
) -> None:
    rec = Recorder(response())
    client, sleeps = make(rec, replace(config, max_attempts=5))
    async with client:
        with pytest.raises(InputTooLong) as info:
            await client.chat(HELLO)
    assert len(rec.requests) == 1
    assert sleeps.calls == []
    err = info.value
    assert isinstance(err, ContextLengthExceeded) and err.kind == "input_too_long"
    assert not err.retryable
    for lang in LANGUAGES:
        assert error_message(err, lang) == CATALOGUE[lang]["error.input_too_long"]


@pytest.mark.parametrize(
    "message",
    [
        "Messages 的长度不能超过 40。",  # the number of messages: a bug on our side
        "Temperature must be 2 or less",
        "Prompt 长度不能超过 1024 个字符。",
    ],
)
async def test_other_invalid_parameters_stay_invalid_requests(message: str) -> None:
    rec = Recorder(native_error("InvalidParameter", message))
    client, _ = make(rec, replace(NATIVE, max_attempts=1))
    async with client:
        with pytest.raises(InvalidRequest) as info:
            await client.chat(HELLO)
    assert type(info.value) is InvalidRequest


async def test_openai_error_with_plain_text_body() -> None:
    rec = Recorder(httpx.Response(502, text="<html>Bad Gateway</html>"))
    client, _ = make(rec, replace(OPENAI, max_attempts=1))
    async with client:
        with pytest.raises(UpstreamError) as info:
            await client.chat(HELLO)
    assert info.value.status == 502


async def test_native_non_200_is_an_upstream_error() -> None:
    rec = Recorder(httpx.Response(500, text="internal server error"))
    client, _ = make(rec, replace(NATIVE, max_attempts=1))
    async with client:
        with pytest.raises(UpstreamError) as info:
            await client.chat(HELLO)
    assert info.value.status == 500


async def test_malformed_success_body_is_upstream_error() -> None:
    rec = Recorder(httpx.Response(200, text="not json"))
    client, _ = make(rec, replace(OPENAI, max_attempts=1))
    async with client:
        with pytest.raises(UpstreamError):
            await client.chat(HELLO)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3", now=NOW) == 3.0
    assert parse_retry_after(" 1.5 ", now=NOW) == 1.5
    assert parse_retry_after("-4", now=NOW) == 0.0
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after("nan", now=NOW) is None
    when = datetime.fromtimestamp(NOW, tz=UTC) + timedelta(seconds=120)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=NOW) == pytest.approx(120)


async def test_retry_after_is_carried_and_honoured_as_lower_bound() -> None:
    rec = Recorder(
        openai_error(429, "429001", "rate_limit_error", headers={"Retry-After": "4"}), ok_openai()
    )
    client, sleeps = make(rec)
    async with client:
        await client.chat(HELLO)
    assert len(rec.requests) == 2
    # jitter ceiling for the first retry is 0.5 s, so only Retry-After explains 4 s
    assert sleeps.calls == [4.0]

    rec = Recorder(openai_error(429, "429001", "rate_limit_error", headers={"Retry-After": "2"}))
    client, _ = make(rec, replace(OPENAI, max_attempts=1))
    async with client:
        with pytest.raises(RateLimited) as info:
            await client.chat(HELLO)
    assert info.value.retry_after == 2.0


# --- retry policy ---------------------------------------------------------------------------


class MaxRandom(random.Random):
    """Jitter source that always returns the top of the interval (to see the ceiling)."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_retries_retryable_errors_with_full_jitter_within_bounds() -> None:
    cfg = replace(OPENAI, max_attempts=6, backoff_base=0.5, backoff_cap=3.0)
    rec = Recorder(
        httpx.Response(500),
        httpx.Response(503),
        native_like_busy(),
        httpx.Response(502),
        httpx.Response(500),
        ok_openai(),
    )
    client, sleeps = make(rec, cfg, rng=random.Random(1234))
    async with client:
        result = await client.chat(HELLO)
    assert result.text == "hi there"
    assert len(rec.requests) == 6
    assert len(sleeps.calls) == 5
    ceilings = [min(3.0, 0.5 * 2**n) for n in range(5)]  # 0.5, 1, 2, 3, 3
    for delay, ceiling in zip(sleeps.calls, ceilings, strict=True):
        assert 0.0 <= delay <= ceiling
    # full jitter: not simply the ceiling every time
    assert sleeps.calls != ceilings


def native_like_busy() -> httpx.Response:
    return openai_error(429, "429001", "rate_limit_error", "concurrency limit reached")


async def test_backoff_ceiling_doubles_and_caps() -> None:
    cfg = replace(OPENAI, max_attempts=5, backoff_base=1.0, backoff_cap=2.5)
    rec = Recorder(httpx.Response(500))
    client, sleeps = make(rec, cfg, rng=MaxRandom())
    async with client:
        with pytest.raises(UpstreamError):
            await client.chat(HELLO)
    assert len(rec.requests) == 5
    assert sleeps.calls == [1.0, 2.0, 2.5, 2.5]


@pytest.mark.parametrize(
    "response",
    [
        openai_error(400, "1001", "invalid_request_error"),
        openai_error(401, "401002", "authentication_error"),
        openai_error(451, "451001", "content_filter_error"),
        openai_error(402, "401007", "permission_error"),
        openai_error(404, "", ""),
    ],
)
async def test_never_retries_final_errors(response: httpx.Response) -> None:
    rec = Recorder(response)
    client, sleeps = make(rec, replace(OPENAI, max_attempts=5))
    async with client:
        with pytest.raises(HunyuanError):
            await client.chat(HELLO)
    assert len(rec.requests) == 1
    assert sleeps.calls == []


async def test_gives_up_after_max_attempts() -> None:
    rec = Recorder(openai_error(429, "429001", "rate_limit_error"))
    client, sleeps = make(rec, replace(OPENAI, max_attempts=4))
    async with client:
        with pytest.raises(RateLimited):
            await client.chat(HELLO)
    assert len(rec.requests) == 4
    assert len(sleeps.calls) == 3


async def test_signature_expired_is_retried_once_after_resigning() -> None:
    ticks = iter(range(NOW, NOW + 100, 10))
    rec = Recorder(native_error("AuthFailure.SignatureExpire"), ok_native())
    client, _ = make(rec, NATIVE, clock=lambda: next(ticks))
    async with client:
        result = await client.chat(HELLO)
    assert result.text == "你好呀"
    first, second = rec.requests
    assert first.headers["x-tc-timestamp"] != second.headers["x-tc-timestamp"]
    assert first.headers["authorization"] != second.headers["authorization"]

    rec = Recorder(native_error("AuthFailure.SignatureExpire"))
    client, _ = make(rec, replace(NATIVE, max_attempts=5))
    async with client:
        with pytest.raises(SignatureExpired):
            await client.chat(HELLO)
    assert len(rec.requests) == 2


async def test_retry_stops_when_the_wait_would_pass_the_deadline() -> None:
    rec = Recorder(openai_error(429, "429001", "rate_limit_error", headers={"Retry-After": "60"}))
    client, sleeps = make(rec, replace(OPENAI, total_timeout=5.0, max_attempts=5))
    async with client:
        with pytest.raises(RateLimited):
            await client.chat(HELLO)
    assert len(rec.requests) == 1
    assert sleeps.calls == []


async def test_connection_errors_are_transport_errors_and_retried() -> None:
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    rec = Recorder(refuse)
    client, _ = make(rec, replace(OPENAI, max_attempts=2))
    async with client:
        with pytest.raises(TransportError) as info:
            await client.chat(HELLO)
    assert type(info.value) is TransportError
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(rec.requests) == 2

    def slow_connect(request):
        raise httpx.ConnectTimeout("connect timeout", request=request)

    client, _ = make(Recorder(slow_connect), replace(OPENAI, max_attempts=1))
    async with client:
        with pytest.raises(HunyuanTimeout) as tinfo:
            await client.chat(HELLO)
    assert isinstance(tinfo.value.__cause__, httpx.ConnectTimeout)


async def never_answer(request=None) -> None:
    """A server that never answers (only the client's own timeouts can end the wait)."""
    await asyncio.Event().wait()


async def test_total_timeout_bounds_a_non_stream_call() -> None:
    rec = Recorder(never_answer)
    client, sleeps = make(rec, replace(OPENAI, total_timeout=0.2, max_attempts=3))
    async with client:
        with pytest.raises(HunyuanTimeout) as info:
            await client.chat(HELLO)
    # The call's deadline ended it (not a per-attempt timeout), and nothing was retried past it.
    assert str(info.value) == "call deadline exceeded"
    assert isinstance(info.value.__cause__, TimeoutError)
    assert len(rec.requests) == 1
    assert sleeps.calls == []


# --- streaming ------------------------------------------------------------------------------


async def test_openai_stream_ends_at_done_with_usage_on_final_chunk() -> None:
    body = sse(
        oa_chunk(""),  # role-only chunk: nothing to yield
        oa_chunk("Hel"),
        oa_chunk("lo"),
        oa_chunk("!", "stop", {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}),
        done=True,
    )
    rec = Recorder(stream_response(body))
    client, _ = make(rec)
    async with client:
        chunks = await collect(client)
    assert rec.requests[0].headers["accept"] == "text/event-stream"
    assert [c.delta for c in chunks] == ["Hel", "lo", "!"]
    assert all(c.finish_reason is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == 5
    assert final.note == NOTE


async def test_openai_stream_usage_in_a_chunk_after_the_finish() -> None:
    body = sse(
        oa_chunk("a"),
        oa_chunk("b", "stop"),
        {
            "id": "s-1",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        },
        done=True,
    )
    client, _ = make(Recorder(stream_response(body)))
    async with client:
        chunks = await collect(client)
    assert "".join(c.delta for c in chunks) == "ab"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 3


async def test_openai_stream_plain_eof_after_finish_is_fine_and_usage_estimated() -> None:
    body = sse(oa_chunk("one "), oa_chunk("two", "length"))
    client, _ = make(Recorder(stream_response(body)))
    async with client:
        chunks = await collect(client, [ChatMessage("user", "count please")])
    assert chunks[-1].finish_reason == "length"
    usage = chunks[-1].usage
    assert usage.prompt_tokens == estimate_tokens("count please")
    assert usage.completion_tokens == estimate_tokens("one two")


async def test_openai_stream_eof_before_finish_after_text_is_interrupted() -> None:
    rec = Recorder(stream_response(sse(oa_chunk("par"), oa_chunk("tial"))))
    client, _ = make(rec)
    got = []
    async with client:
        with pytest.raises(StreamInterrupted):
            async for chunk in client.stream_chat(HELLO):
                got.append(chunk.delta)
    assert got == ["par", "tial"]
    assert len(rec.requests) == 1  # never retried after text reached the caller


async def test_stream_eof_before_any_text_is_a_retried_transport_error() -> None:
    rec = Recorder(stream_response(sse(oa_chunk(""))))
    client, sleeps = make(rec, replace(OPENAI, max_attempts=3))
    async with client:
        with pytest.raises(TransportError) as info:
            await collect(client)
    assert type(info.value) is TransportError
    assert len(rec.requests) == 3
    assert len(sleeps.calls) == 2


async def test_stream_is_retried_before_the_first_chunk_only() -> None:
    rec = Recorder(
        openai_error(429, "429001", "rate_limit_error"),
        stream_response(sse(oa_chunk("ok"), oa_chunk("", "stop"), done=True)),
    )
    client, _ = make(rec)
    async with client:
        chunks = await collect(client)
    assert "".join(c.delta for c in chunks) == "ok"
    assert len(rec.requests) == 2


async def broken_stream(*parts: bytes, error: Exception) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise error


async def test_disconnect_before_text_keeps_the_httpx_cause() -> None:
    def respond(request):
        return stream_response(
            broken_stream(
                b": nothing yet\n\n",
                error=httpx.ReadError("connection reset", request=request),
            )
        )

    rec = Recorder(respond)
    client, _ = make(rec, replace(OPENAI, max_attempts=2))
    async with client:
        with pytest.raises(TransportError) as info:
            await collect(client)
    assert type(info.value) is TransportError
    assert isinstance(info.value.__cause__, httpx.ReadError)
    assert len(rec.requests) == 2


async def test_disconnect_after_text_is_interrupted_and_not_retried() -> None:
    def respond(request):
        return stream_response(
            broken_stream(
                sse(oa_chunk("half")),
                error=httpx.RemoteProtocolError("peer closed connection", request=request),
            )
        )

    rec = Recorder(respond)
    client, _ = make(rec)
    async with client:
        with pytest.raises(StreamInterrupted) as info:
            await collect(client)
    assert isinstance(info.value.__cause__, TransportError)
    assert len(rec.requests) == 1


async def test_openai_error_event_inside_the_stream() -> None:
    body = sse(
        oa_chunk("so far"),
        {"error": {"message": "upstream died", "type": "upstream_error", "code": "502001"}},
    )
    rec = Recorder(stream_response(body))
    client, _ = make(rec)
    async with client:
        with pytest.raises(UpstreamError) as info:
            await collect(client)
    assert info.value.code == "502001"
    assert len(rec.requests) == 1


async def test_stream_sensitive_finish_is_reported() -> None:
    body = sse(oa_chunk("some "), oa_chunk("", "sensitive"), done=True)
    client, _ = make(Recorder(stream_response(body)))
    async with client:
        chunks = await collect(client)
    assert chunks[-1].finish_reason == "sensitive"


async def test_pre_stream_errors_come_back_as_json() -> None:
    rec = Recorder(openai_error(451, "451001", "content_filter_error"))
    client, _ = make(rec)
    async with client:
        with pytest.raises(ModerationRefused):
            await collect(client)
    rec = Recorder(native_error("FailedOperation.ResourcePackExhausted"))
    client, _ = make(rec, NATIVE)
    async with client:
        with pytest.raises(OutOfCredit):
            await collect(client)
    assert rec.bodies[0]["Stream"] is True


async def test_native_stream_ends_at_finish_reason_without_done() -> None:
    # Anything after the finishing chunk must not be read (no [DONE] in the native protocol).
    body = sse(
        nv_chunk("你", usage=(3, 1, 4)),
        nv_chunk("好", usage=(3, 2, 5)),
        nv_chunk("", "stop", usage=(3, 2, 5)),
        "this is not json",
    )
    rec = Recorder(stream_response(body, native=True))
    client, _ = make(rec, NATIVE)
    async with client:
        chunks = await collect(client)
    assert [c.delta for c in chunks] == ["你", "好", ""]
    assert chunks[0].usage.total_tokens == 4  # cumulative usage passed through
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 5
    assert chunks[-1].note == NOTE


@pytest.mark.parametrize(("code", "expected"), [(4001, HunyuanTimeout), (4000, UpstreamError)])
async def test_native_stream_error_msg(code: int, expected: type[HunyuanError]) -> None:
    body = sse(
        nv_chunk("部分"), nv_chunk("", error={"Code": code, "Msg": "model request timed out"})
    )
    rec = Recorder(stream_response(body, native=True))
    client, _ = make(rec, NATIVE)
    async with client:
        with pytest.raises(expected) as info:
            await collect(client)
    assert info.value.code == str(code)
    assert info.value.request_id == "stream-rid"
    assert len(rec.requests) == 1


async def test_native_stream_error_before_text_is_retried() -> None:
    rec = Recorder(
        stream_response(sse(nv_chunk("", error={"Code": 4001, "Msg": "timeout"})), native=True),
        stream_response(sse(nv_chunk("好", "stop")), native=True),
    )
    client, _ = make(rec, NATIVE)
    async with client:
        chunks = await collect(client)
    assert [c.delta for c in chunks] == ["好"]
    assert chunks[0].finish_reason == "stop"
    assert len(rec.requests) == 2


async def test_stream_idle_timeout_after_text() -> None:
    async def stall() -> AsyncIterator[bytes]:
        yield sse(oa_chunk("first"))
        await never_answer()
        yield sse(oa_chunk("never"))

    client, _ = make(
        Recorder(lambda r: stream_response(stall())), replace(OPENAI, idle_timeout=0.2)
    )
    got = []
    async with client:
        with pytest.raises(StreamInterrupted) as info:
            async for chunk in client.stream_chat(HELLO):
                got.append(chunk.delta)
    assert got == ["first"]
    # The idle timeout ended it, not the call's (10 s) deadline.
    assert isinstance(info.value.__cause__, HunyuanTimeout)
    assert str(info.value.__cause__) == "stream idle timeout"


async def test_stream_idle_timeout_before_text_and_before_headers() -> None:
    async def stall() -> AsyncIterator[bytes]:
        yield b": keep-alive comment\n\n"
        await never_answer()
        yield b""

    rec = Recorder(lambda r: stream_response(stall()))
    client, _ = make(rec, replace(OPENAI, idle_timeout=0.1, max_attempts=2))
    async with client:
        with pytest.raises(HunyuanTimeout) as info:
            await collect(client)
    assert str(info.value) == "stream idle timeout"
    assert len(rec.requests) == 2

    rec = Recorder(never_answer)
    client, _ = make(rec, replace(OPENAI, idle_timeout=0.1, max_attempts=1))
    async with client:
        with pytest.raises(HunyuanTimeout) as info:
            await collect(client)
    assert str(info.value) == "no response headers before the timeout"


async def test_closing_the_stream_early_closes_the_response() -> None:
    class Tracking(httpx.AsyncByteStream):
        closed = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(1000):
                yield sse(oa_chunk(f"w{i} "))
                await asyncio.sleep(0)

        async def aclose(self) -> None:
            self.closed = True

    body = Tracking()
    response = httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=body)
    client, _ = make(Recorder(response))
    async with client:
        stream = client.stream_chat(HELLO)
        first = await anext(stream)
        assert first.delta == "w0 "
        assert not body.closed
        await stream.aclose()
    assert body.closed


# --- tokens ---------------------------------------------------------------------------------


async def test_count_tokens_openai_is_the_local_estimate() -> None:
    rec = Recorder()
    client, _ = make(rec)
    async with client:
        assert await client.count_tokens("你好, world") == estimate_tokens("你好, world")
    assert rec.requests == []


async def test_count_tokens_native_calls_get_token_count() -> None:
    rec = Recorder(
        native_response({"TokenCount": 42, "CharacterCount": 7, "Tokens": [], "RequestId": "r"})
    )
    client, _ = make(rec, NATIVE)
    async with client:
        assert await client.count_tokens("hello") == 42
    req = rec.requests[0]
    assert req.headers["x-tc-action"] == "GetTokenCount"
    assert req.content == json.dumps({"Prompt": "hello"}).encode()
    assert verify_tc3(
        authorization=req.headers["authorization"],
        headers=req.headers,
        body=req.content,
        secrets={SECRET_ID: SECRET_KEY},
        now=NOW,
    )


# --- images ---------------------------------------------------------------------------------


def png(width: int, height: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


async def test_tokenhub_v3_image_generation_and_download() -> None:
    image = png(64, 48)

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/wand/hunyuan-image/v3-generation":
            return httpx.Response(
                200,
                json={
                    "id": "img-1",
                    "created": NOW,
                    "data": [
                        {"url": "https://cos.test/a.png?sig=1", "revised_prompt": "a cat, detailed"}
                    ],
                },
            )
        assert str(request.url) == "https://cos.test/a.png?sig=1"
        return httpx.Response(200, content=image, headers={"Content-Type": "image/png"})

    rec = Recorder(route)
    client, _ = make(rec)
    statuses: list[str] = []

    async def on_status(s: str) -> None:
        statuses.append(s)

    async with client:
        result = await client.generate_image(
            "a cat", size="768x512", seed=7, revise=True, footnote="hybot", on_status=on_status
        )
    gen, download = rec.requests
    assert gen.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(gen.content) == {
        "model": "hy-image-v3",
        "prompt": "a cat",
        "size": "768x512",
        "seed": 7,
        "revise": True,
        "footnote": "hybot",
    }
    assert "authorization" not in download.headers  # never send the key to result URLs
    assert result.data == image
    assert (result.mime, result.width, result.height) == ("image/png", 64, 48)
    assert result.model == "hy-image-v3"
    assert result.revised_prompt == "a cat, detailed"
    assert result.seed == 7
    assert statuses == ["running"]


async def test_tokenhub_ai_mark_off_and_lite_endpoint() -> None:
    image = png(32, 32, "JPEG")

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "th.test":
            return httpx.Response(
                200,
                json={
                    "created": NOW,
                    "request_id": "r",
                    "data": [{"url": "https://cos.test/x.jpg"}],
                },
            )
        return httpx.Response(200, content=image)

    rec = Recorder(route)
    client, _ = make(rec)
    async with client:
        await client.generate_image("v3 no mark", ai_mark=False)
        lite = await client.generate_image(
            "lite", model="hy-image-lite", size="1024x768", style="201"
        )
        await client.generate_image("lite no mark", model="hy-image-lite", ai_mark=False)
    v3_body = json.loads(rec.requests[0].content)
    assert v3_body["logo_add"] == 0
    assert rec.requests[2].url.path == "/v1/api/image/lite"
    assert json.loads(rec.requests[2].content) == {
        "model": "hy-image-lite",
        "prompt": "lite",
        "resolution": "1024:768",
        "style": "201",
        "rsp_img_type": "url",
        "logo_add": 1,
    }
    assert json.loads(rec.requests[4].content)["logo_add"] == 0
    assert lite.mime == "image/jpeg"
    assert lite.model == "hy-image-lite"


async def test_tokenhub_image_inline_base64_and_bad_data() -> None:
    image = png(16, 16)
    rec = Recorder(
        httpx.Response(200, json={"data": [{"b64_json": base64.b64encode(image).decode()}]})
    )
    client, _ = make(rec)
    async with client:
        result = await client.generate_image("inline")
    assert result.data == image and (result.width, result.height) == (16, 16)

    rec = Recorder(
        httpx.Response(200, json={"data": [{"b64_json": base64.b64encode(b"<html>").decode()}]})
    )
    client, _ = make(rec)
    async with client:
        with pytest.raises(ImageJobFailed):
            await client.generate_image("not an image")


async def test_image_argument_errors_need_no_network() -> None:
    rec = Recorder()
    client, _ = make(rec)
    async with client:
        with pytest.raises(ModelUnavailable):
            await client.generate_image("x", model="hy-image-v3.5-preview")
        with pytest.raises(InvalidRequest):
            await client.generate_image("x", size="big")
        with pytest.raises(InvalidRequest):
            await client.generate_image("   ")
    assert rec.requests == []


async def test_tokenhub_image_errors_are_not_retried_unless_nothing_was_created() -> None:
    rec = Recorder(openai_error(500, "", "upstream_error"))
    client, _ = make(rec)
    async with client:
        with pytest.raises(UpstreamError):
            await client.generate_image("x")
    assert len(rec.requests) == 1
    rec = Recorder(openai_error(451, "451001", "content_filter_error"))
    client, _ = make(rec)
    async with client:
        with pytest.raises(ModerationRefused):
            await client.generate_image("x")
    assert len(rec.requests) == 1


NATIVE_IMG = replace(NATIVE, image_api="native", image_poll_interval=0.5, image_deadline=10.0)


def native_job_route(statuses: list[dict], image: bytes, submits: list | None = None):
    queue = list(statuses)

    def route(request: httpx.Request) -> httpx.Response:
        action = request.headers.get("x-tc-action")
        if action == "SubmitHunyuanImageJob":
            if submits:
                return submits.pop(0)
            return native_response({"JobId": "job-1", "RequestId": "s"})
        if action == "QueryHunyuanImageJob":
            assert json.loads(request.content) == {"JobId": "job-1"}
            item = queue.pop(0) if len(queue) > 1 else queue[0]
            return native_response({**item, "RequestId": "q"})
        return httpx.Response(200, content=image)

    return route


async def test_native_image_job_polls_until_done() -> None:
    image = png(40, 30, "JPEG")
    route = native_job_route(
        [
            {"JobStatusCode": "1", "JobStatusMsg": "排队中"},
            {"JobStatusCode": "1"},
            {"JobStatusCode": "2"},
            {"JobStatusCode": "2"},
            {
                "JobStatusCode": "5",
                "ResultImage": ["https://cos.test/j.jpg"],
                "RevisedPrompt": ["一只猫"],
                "ResultDetails": ["Success"],
            },
        ],
        image,
    )
    rec = Recorder(route)
    client, sleeps = make(rec, NATIVE_IMG)
    statuses: list[str] = []

    async def on_status(s: str) -> None:
        statuses.append(s)

    async with client:
        result = await client.generate_image(
            "一只猫", size="1280x720", seed=5, style="riman", revise=False, on_status=on_status
        )
    submit = rec.requests[0]
    assert json.loads(submit.content) == {
        "Prompt": "一只猫",
        "Style": "riman",
        "Resolution": "1280:720",
        "Revise": 0,
        "Seed": 5,
        "LogoAdd": 1,
    }
    assert verify_tc3(
        authorization=submit.headers["authorization"],
        headers=submit.headers,
        body=submit.content,
        secrets={SECRET_ID: SECRET_KEY},
        now=NOW,
    )
    assert statuses == ["queued", "running", "done"]
    assert [r.headers.get("x-tc-action") for r in rec.requests].count("QueryHunyuanImageJob") == 5
    assert sleeps.calls == [0.5] * 4
    assert result.data == image and result.mime == "image/jpeg"
    assert (result.width, result.height) == (40, 30)
    assert result.revised_prompt == "一只猫"


async def test_native_image_logo_off() -> None:
    route = native_job_route(
        [{"JobStatusCode": "5", "ResultImage": ["https://cos.test/j.png"]}], png(8, 8)
    )
    rec = Recorder(route)
    client, _ = make(rec, NATIVE_IMG)
    async with client:
        await client.generate_image("x", ai_mark=False)
    assert json.loads(rec.requests[0].content)["LogoAdd"] == 0


async def test_native_image_job_failure_maps_job_error_code() -> None:
    route = native_job_route(
        [
            {"JobStatusCode": "1"},
            {
                "JobStatusCode": "4",
                "JobErrorCode": "OperationDenied.ImageIllegalDetected",
                "JobErrorMsg": "bad",
            },
        ],
        b"",
    )
    client, _ = make(Recorder(route), NATIVE_IMG)
    async with client:
        with pytest.raises(ImageJobFailed) as info:
            await client.generate_image("x")
    assert info.value.code == "OperationDenied.ImageIllegalDetected"
    assert "content policy" in info.value.user_message

    route = native_job_route(
        [{"JobStatusCode": "4", "JobErrorCode": "FailedOperation.GenerateImageFailed"}], b""
    )
    client, _ = make(Recorder(route), NATIVE_IMG)
    async with client:
        with pytest.raises(ImageJobFailed) as info:
            await client.generate_image("x")
    assert info.value.code == "FailedOperation.GenerateImageFailed"


class MovableClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock a test moves forward (the client's deadlines use loop time)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset


def test_native_image_deadline() -> None:
    # Polling every 10 s (of loop time) against a 95 s deadline: the 10th query, at 90 s, is the
    # last one, since another wait would pass the deadline. Waits move the clock, not real time.
    route = native_job_route([{"JobStatusCode": "1"}], b"")
    rec = Recorder(route)
    cfg = replace(NATIVE_IMG, image_poll_interval=10.0, image_deadline=95.0)
    waits: list[float] = []

    async def main(loop: MovableClockLoop) -> HunyuanTimeout:
        async def wait(seconds: float) -> None:
            waits.append(seconds)
            loop.offset += seconds
            await asyncio.sleep(0)

        client, _ = make(rec, cfg, sleep=wait)
        async with client:
            with pytest.raises(HunyuanTimeout) as info:
                await client.generate_image("x")
        return info.value

    with asyncio.Runner(loop_factory=MovableClockLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, MovableClockLoop)
        err = runner.run(main(loop))
    assert err.code == "1"
    assert "not finished within 95.0s" in str(err)
    actions = [r.headers["x-tc-action"] for r in rec.requests]
    assert actions == ["SubmitHunyuanImageJob"] + ["QueryHunyuanImageJob"] * 10
    assert waits == [10.0] * 9


async def test_native_submit_retried_only_when_nothing_was_created() -> None:
    image = png(8, 8)
    done = [{"JobStatusCode": "5", "ResultImage": ["https://cos.test/j.png"]}]
    submits = [
        native_error("RequestLimitExceeded"),
        native_error("FailedOperation.EngineServerLimitExceeded"),
    ]
    rec = Recorder(native_job_route(done, image, submits=submits))
    client, _ = make(rec, NATIVE_IMG)
    async with client:
        await client.generate_image("x")
    actions = [r.headers.get("x-tc-action") for r in rec.requests]
    assert actions.count("SubmitHunyuanImageJob") == 3

    for failure in (native_error("InternalError"), httpx.Response(500, text="oops")):
        rec = Recorder(native_job_route(done, image, submits=[failure, failure]))
        client, _ = make(rec, NATIVE_IMG)
        async with client:
            with pytest.raises(UpstreamError):
                await client.generate_image("x")
        assert [r.headers.get("x-tc-action") for r in rec.requests] == ["SubmitHunyuanImageJob"]

    def submit_timeout(request):
        raise httpx.ReadTimeout("read timeout", request=request)

    rec = Recorder(submit_timeout)
    client, _ = make(rec, NATIVE_IMG)
    async with client:
        with pytest.raises(HunyuanTimeout):
            await client.generate_image("x")
    assert len(rec.requests) == 1

    # A failed connection proves the submit never left: that one is retried.
    attempts = []

    def refuse_once(request):
        if request.headers.get("x-tc-action") == "SubmitHunyuanImageJob" and not attempts:
            attempts.append(1)
            raise httpx.ConnectError("refused", request=request)
        return native_job_route(done, image)(request)

    rec = Recorder(refuse_once)
    client, _ = make(rec, NATIVE_IMG)
    async with client:
        result = await client.generate_image("x")
    assert result.data == image
    actions = [r.headers.get("x-tc-action") for r in rec.requests]
    assert actions.count("SubmitHunyuanImageJob") == 2


async def test_native_query_is_retried_on_transient_errors() -> None:
    image = png(8, 8)
    statuses = iter(
        [
            native_error("RequestLimitExceeded"),
            native_response({"JobStatusCode": "5", "ResultImage": ["https://cos.test/j.png"]}),
        ]
    )

    def route(request):
        action = request.headers.get("x-tc-action")
        if action == "SubmitHunyuanImageJob":
            return native_response({"JobId": "job-1"})
        if action == "QueryHunyuanImageJob":
            return next(statuses)
        return httpx.Response(200, content=image)

    rec = Recorder(route)
    client, _ = make(rec, NATIVE_IMG)
    async with client:
        result = await client.generate_image("x")
    assert result.data == image


# --- secrets, config, lifecycle -------------------------------------------------------------


async def test_secrets_never_show(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = replace(NATIVE, api_key=Secret(API_KEY))
    rec = Recorder(native_error("InternalError"), native_error("AuthFailure.SecretIdNotFound"))
    client, _ = make(rec, cfg)
    text = repr(client)
    assert API_KEY not in text and SECRET_KEY not in text
    async with client:
        with pytest.raises(AuthError) as info:
            await client.chat(HELLO)
    err = info.value
    for blob in (str(err), repr(err), err.user_message, caplog.text):
        assert SECRET_KEY not in blob
        assert API_KEY not in blob
    assert "retrying" in caplog.text  # the retry was logged, without secrets

    # A gateway that echoes the presented key: the client scrubs it from the message.
    rec = Recorder(
        openai_error(401, "401002", "authentication_error", f"invalid api key {API_KEY}")
    )
    client, _ = make(rec)
    async with client:
        with pytest.raises(AuthError) as info:
            await client.chat(HELLO)
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)
    assert "invalid api key ****" in str(info.value)
    assert API_KEY not in caplog.text


async def test_missing_credentials_fail_without_network() -> None:
    rec = Recorder()
    client, _ = make(rec, replace(OPENAI, api_key=Secret("")))
    async with client:
        with pytest.raises(AuthError):
            await client.chat(HELLO)
    client, _ = make(rec, replace(NATIVE, secret_key=Secret("")))
    async with client:
        with pytest.raises(AuthError):
            await collect(client)
    assert rec.requests == []


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ConfigError):
        HunyuanClient(config=replace(OPENAI, api="grpc"))
    with pytest.raises(ConfigError):
        HunyuanClient(config=replace(OPENAI, image_api="dalle"))
    with pytest.raises(ConfigError):
        HunyuanClient(config=replace(OPENAI, max_attempts=0))


async def test_client_closes_its_http_pool() -> None:
    client, _ = make(Recorder(ok_openai()))
    async with client:
        await client.chat(HELLO)
    assert client._http.is_closed
