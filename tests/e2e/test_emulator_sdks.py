"""The official third-party clients against the emulator, over real loopback HTTP.

If the emulator's wire format drifted from what Tencent's SDK or the openai package expect,
these tests fail: both SDKs parse the bytes themselves (the Tencent SDK is strict about exact
Content-Type values and SSE framing; the openai SDK about error objects and ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.hunyuan.v20230901 import hunyuan_client, models

from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.tokens import estimate_tokens

CFG = EmulatorConfig()
NOTE = "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记"


@pytest.fixture
async def emu():
    async with Emulator(config=EmulatorConfig(image_job_steps=0.05)) as e:
        yield e


def oai(emu: Emulator, key: str = CFG.api_key) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key=key, max_retries=0)


def tc(emu: Emulator, *, secret_id: str = CFG.secret_id, secret_key: str = CFG.secret_key):
    cred = credential.Credential(secret_id, secret_key)
    profile = ClientProfile(
        httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{emu.port}")
    )
    return hunyuan_client.HunyuanClient(cred, "ap-guangzhou", profile)


def chat_req(messages: list[dict[str, str]], **extra: Any) -> models.ChatCompletionsRequest:
    req = models.ChatCompletionsRequest()
    req.from_json_string(json.dumps({"Model": "hunyuan-lite", "Messages": messages, **extra}))
    return req


HISTORY = [
    {"role": "system", "content": "You are a terse pirate"},
    {"role": "user", "content": "My name is Ada and I like tea"},
    {"role": "assistant", "content": "Noted."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And what is my name?"},
]


# --- openai package --------------------------------------------------------------------------


async def test_openai_chat_non_stream_quotes_context_and_reports_usage(emu):
    async with oai(emu) as client:
        resp = await client.chat.completions.create(model="hy3-preview", messages=HISTORY)
    text = resp.choices[0].message.content
    assert text.startswith("Turn 3. ")
    assert 'You first said: "My name is Ada and I like tea"' in text
    assert 'You just said: "And what is my name?"' in text
    assert 'System: "You are a terse pirate"' in text
    assert resp.choices[0].finish_reason == "stop"
    assert resp.object == "chat.completion"
    assert resp.model == "hy3-preview"
    prompt = sum(estimate_tokens(m["content"]) for m in HISTORY)
    assert resp.usage.prompt_tokens == prompt
    assert resp.usage.completion_tokens == estimate_tokens(text)
    assert resp.usage.total_tokens == prompt + estimate_tokens(text)
    assert resp.model_extra["note"] == NOTE
    assert emu.stats.requests["/v1/chat/completions"] == 1


async def test_openai_streaming_matches_non_stream_and_ends_with_usage(emu):
    async with oai(emu) as client:
        full = await client.chat.completions.create(model="hunyuan-turbos-latest", messages=HISTORY)
        stream = await client.chat.completions.create(
            model="hunyuan-turbos-latest", messages=HISTORY, stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert len(chunks) >= 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model_extra.get("note") == NOTE for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.total_tokens == full.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_max_tokens_truncates_with_finish_length(emu):
    async with oai(emu) as client:
        resp = await client.chat.completions.create(
            model="hy3-preview",
            messages=[{"role": "user", "content": "tell me a story [[long=200]]"}],
            max_tokens=20,
        )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens <= 20
    assert estimate_tokens(resp.choices[0].message.content) == resp.usage.completion_tokens
    assert "[[long" not in resp.choices[0].message.content


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        [{"role": "user", "content": "a"}, {"role": "system", "content": "late system"}],
    ],
    ids=["starts-assistant", "two-users", "ends-assistant", "late-system"],
)
async def test_openai_role_order_violation_is_bad_request_1001(emu, messages):
    async with oai(emu) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="hy3-preview", messages=messages)
    err = info.value
    assert err.status_code == 400
    assert err.code == "1001"
    assert err.type == "invalid_request_error"
    assert "交替出现" in err.message


async def test_openai_wrong_key_is_authentication_error(emu):
    async with oai(emu, key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(
                model="hy3-preview", messages=[{"role": "user", "content": "hi"}]
            )
    assert info.value.status_code == 401
    assert info.value.code == "401002"
    assert "sk-wrong" not in str(info.value)


async def test_openai_429_fault_is_rate_limit_error_with_retry_after(emu):
    async with oai(emu) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="hy3-preview", messages=[{"role": "user", "content": "hi [[fault:429]]"}]
            )
    assert info.value.code == "429001"
    assert info.value.response.headers["retry-after"] == "1"
    assert emu.stats.errors["429"] == 1


@pytest.mark.parametrize(
    ("fault", "exc", "status", "code"),
    [
        ("moderation", openai.APIStatusError, 451, "451001"),
        ("credit", openai.APIStatusError, 402, "401007"),
        ("badkey", openai.AuthenticationError, 401, "401002"),
        ("500", openai.InternalServerError, 500, "500001"),
        ("busy", openai.RateLimitError, 429, "429001"),
    ],
)
async def test_openai_error_faults_surface_as_sdk_errors(emu, fault, exc, status, code):
    async with oai(emu) as client:
        with pytest.raises(exc) as info:
            await client.chat.completions.create(
                model="hy3-preview",
                messages=[{"role": "user", "content": f"x [[fault:{fault}]]"}],
            )
    assert info.value.status_code == status
    assert info.value.code == code


async def test_openai_stream_error_event_raises_api_error_mid_stream(emu):
    got: list[str] = []
    async with oai(emu) as client:
        stream = await client.chat.completions.create(
            model="hy3-preview",
            messages=[{"role": "user", "content": "hi [[fault:stream_error]]"}],
            stream=True,
        )
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
    assert len(got) == 2  # two deltas arrived before the error event
    assert "timed out" in str(info.value)


async def test_openai_sensitive_stream_finishes_with_sensitive(emu):
    async with oai(emu) as client:
        stream = await client.chat.completions.create(
            model="hy3-preview",
            messages=[{"role": "user", "content": "hi [[fault:sensitive]]"}],
            stream=True,
        )
        chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "sensitive"
    assert len(chunks) >= 2  # some text went out first


async def test_openai_disconnect_mid_stream_breaks_the_sdk_stream(emu):
    async with oai(emu) as client:
        stream = await client.chat.completions.create(
            model="hy3-preview",
            messages=[{"role": "user", "content": "hi [[fault:disconnect]]"}],
            stream=True,
        )
        got = []
        with pytest.raises((httpx.HTTPError, openai.APIError)):
            async for chunk in stream:
                got.append(chunk)
    assert len(got) == 2
    assert all(c.choices[0].finish_reason is None for c in got)


async def test_openai_unknown_model_is_not_found(emu):
    async with oai(emu) as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )


# --- tencentcloud-sdk-python-hunyuan ---------------------------------------------------------


async def test_tencent_sdk_chat_non_stream(emu):
    def call():
        return tc(emu).ChatCompletions(
            chat_req(
                [
                    {"Role": "system", "Content": "你是一位诗人"},
                    {"Role": "user", "Content": "你好，我叫小明"},
                    {"Role": "assistant", "Content": "你好"},
                    {"Role": "user", "Content": "我叫什么？"},
                ]
            )
        )

    resp = await asyncio.to_thread(call)
    text = resp.Choices[0].Message.Content
    assert text.startswith("Turn 2. ")
    assert '"你好，我叫小明"' in text and '"我叫什么？"' in text and '"你是一位诗人"' in text
    assert resp.Choices[0].FinishReason == "stop"
    assert resp.Note == NOTE
    assert resp.Id == resp.RequestId
    prompt = sum(
        estimate_tokens(t) for t in ("你是一位诗人", "你好，我叫小明", "你好", "我叫什么？")
    )
    assert resp.Usage.PromptTokens == prompt
    assert resp.Usage.TotalTokens == prompt + estimate_tokens(text)


async def test_tencent_sdk_chat_streaming(emu):
    msgs = [{"Role": "user", "Content": "stream me something [[long=60]]"}]

    def call():
        client = tc(emu)
        full = client.ChatCompletions(chat_req(msgs))
        events = list(client.ChatCompletions(chat_req(msgs, Stream=True)))
        return full, events

    full, events = await asyncio.to_thread(call)
    data = [json.loads(e["data"]) for e in events]
    assert len(data) >= 5
    assert (
        "".join(d["Choices"][0]["Delta"]["Content"] for d in data)
        == full.Choices[0].Message.Content
    )
    assert [d["Choices"][0]["FinishReason"] for d in data[:-1]] == [""] * (len(data) - 1)
    assert data[-1]["Choices"][0]["FinishReason"] == "stop"
    assert len({d["Id"] for d in data}) == 1 and all(d["Note"] == NOTE for d in data)
    totals = [d["Usage"]["TotalTokens"] for d in data]
    assert totals == sorted(totals)  # cumulative
    assert data[-1]["Usage"]["TotalTokens"] == full.Usage.TotalTokens
    assert abs(full.Usage.CompletionTokens - 60) <= 1


async def test_tencent_sdk_image_job_until_done_and_download():
    async with Emulator(config=EmulatorConfig(hold_image_runs=True)) as emu:
        gate = emu.image_gate
        client = tc(emu)

        def submit() -> str:
            req = models.SubmitHunyuanImageJobRequest()
            req.Prompt = "a lighthouse at dusk"
            req.Resolution = "1024:768"
            return client.SubmitHunyuanImageJob(req).JobId

        job_id = await asyncio.to_thread(submit)

        async def query():  # the SDK is synchronous: it runs on a worker thread
            q = models.QueryHunyuanImageJobRequest()
            q.JobId = job_id
            resp = await asyncio.to_thread(client.QueryHunyuanImageJob, q)
            seen.append((resp.JobStatusCode, resp.JobStatusMsg))
            return resp

        seen: list[tuple[str, str]] = []
        await gate.wait_held(1)  # queued step
        await query()
        gate.release(1)
        await gate.wait_held(1)  # running step
        await query()
        gate.release(1)
        await gate.wait_finished(1)
        resp = await query()
        async with httpx.AsyncClient() as http:
            got = await http.get(resp.ResultImage[0])
    assert seen == [("1", "排队中"), ("2", "处理中"), ("5", "处理完成")]
    assert resp.ResultDetails == ["Success"]
    assert resp.RevisedPrompt[0].startswith("a lighthouse at dusk")
    assert got.status_code == 200
    img = Image.open(io.BytesIO(got.content))
    assert img.format == "JPEG"
    assert img.size == (1024, 768)
    assert emu.stats.images[-1].mark == "AI generated"


async def test_tencent_sdk_text_to_image_lite_base64(emu):
    def call():
        req = models.TextToImageLiteRequest()
        req.Prompt = "a small boat"
        return tc(emu).TextToImageLite(req)

    resp = await asyncio.to_thread(call)
    img = Image.open(io.BytesIO(base64.b64decode(resp.ResultImage)))
    assert img.size == (768, 768)


async def test_tencent_sdk_get_token_count(emu):
    prompt = "你好，世界! Hello world, this is hybot."

    def call():
        req = models.GetTokenCountRequest()
        req.Prompt = prompt
        return tc(emu).GetTokenCount(req)

    resp = await asyncio.to_thread(call)
    assert resp.TokenCount == estimate_tokens(prompt)
    assert resp.CharacterCount == len(prompt)
    assert len(resp.Tokens) == resp.TokenCount
    assert "".join(resp.Tokens) == prompt


async def test_tencent_sdk_wrong_secret_key_is_signature_failure(emu):
    def call():
        return tc(emu, secret_key="not-the-key").ChatCompletions(
            chat_req([{"Role": "user", "Content": "hi"}])
        )

    with pytest.raises(TencentCloudSDKException) as info:
        await asyncio.to_thread(call)
    assert info.value.get_code() == "AuthFailure.SignatureFailure"
    assert info.value.get_request_id()
    assert CFG.secret_key not in str(info.value)


async def test_tencent_sdk_unknown_secret_id(emu):
    def call():
        return tc(emu, secret_id="AKIDnobody").ChatCompletions(
            chat_req([{"Role": "user", "Content": "hi"}])
        )

    with pytest.raises(TencentCloudSDKException) as info:
        await asyncio.to_thread(call)
    assert info.value.get_code() == "AuthFailure.SecretIdNotFound"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("bad words [[fault:moderation]]", "OperationDenied.TextIllegalDetected"),
        ("[[fault:credit]] hi", "FailedOperation.ResourcePackExhausted"),
        ("hi [[fault:busy]]", "FailedOperation.EngineServerLimitExceeded"),
        ("hi [[fault:429]]", "RequestLimitExceeded"),
        ("hi [[fault:500]]", "ServerNetworkError"),
    ],
)
async def test_tencent_sdk_business_errors_carry_the_code(emu, content, code):
    def call():
        return tc(emu).ChatCompletions(chat_req([{"Role": "user", "Content": content}]))

    with pytest.raises(TencentCloudSDKException) as info:
        await asyncio.to_thread(call)
    assert info.value.get_code() == code


async def test_tencent_sdk_parameter_errors(emu):
    def call(**extra):
        return tc(emu).ChatCompletions(
            chat_req(
                extra.pop("messages", [{"Role": "user", "Content": "hi"}]),
                **extra,
            )
        )

    with pytest.raises(TencentCloudSDKException) as info:
        await asyncio.to_thread(call, Temperature=2.5)
    assert info.value.get_code() == "InvalidParameter"
    assert "2 or less" in info.value.get_message()
    with pytest.raises(TencentCloudSDKException) as info:
        await asyncio.to_thread(
            call, messages=[{"Role": "user", "Content": "a"}, {"Role": "user", "Content": "b"}]
        )
    assert info.value.get_code() == "InvalidParameter"
    too_many = [{"Role": "user" if i % 2 == 0 else "assistant", "Content": "x"} for i in range(41)]
    with pytest.raises(TencentCloudSDKException) as info:
        await asyncio.to_thread(call, messages=too_many)
    assert info.value.get_code() == "InvalidParameter"
    assert "40" in info.value.get_message()
    ok = await asyncio.to_thread(call, messages=too_many[:39])
    assert ok.Choices[0].Message.Content.startswith("Turn 20.")


async def test_tencent_sdk_stream_faults(emu):
    def run(content):
        events = tc(emu).ChatCompletions(
            chat_req([{"Role": "user", "Content": content}], Stream=True)
        )
        return [json.loads(e["data"]) for e in events]

    sensitive = await asyncio.to_thread(run, "hello there [[fault:sensitive]]")
    assert sensitive[-1]["Choices"][0]["FinishReason"] == "sensitive"
    assert len(sensitive) >= 2
    errored = await asyncio.to_thread(run, "hello there [[fault:stream_error]]")
    assert errored[-1]["ErrorMsg"] == {"Code": 4001, "Msg": "model request timed out"}
    assert len(errored) == 3
