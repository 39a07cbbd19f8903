"""Raw-HTTP checks of the emulator's wire formats, auth, limits, images and faults.

Requests are built by hand with httpx (native requests signed with the project's one TC3 signer,
``core.hunyuan.signing``, pinned to reference §2.3's test vectors below and in
test_signing.py) so the bytes on the wire are exactly what the tests say.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image, ImageChops

from core.errors import ConfigError
from core.hunyuan.emulator import Emulator, EmulatorConfig, app_stats, make_app, openai_compat
from core.hunyuan.emulator import native as native_module
from core.hunyuan.emulator.gate import StepGate
from core.hunyuan.emulator.openai_compat import OpenAIWire
from core.hunyuan.emulator.state import EmuState
from core.hunyuan.emulator.text import role_order_ok, split_chunks
from core.hunyuan.signing import TC3Failure, sign_tc3, verify_tc3
from core.tokens import estimate_tokens

CFG = EmulatorConfig()
AUTH = {"Authorization": f"Bearer {CFG.api_key}"}
CHAT = "/chat/completions"
V3 = "/wand/hunyuan-image/v3-generation"
LITE = "/api/image/lite"


@pytest.fixture
async def emu():
    async with Emulator() as e:
        yield e


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def chat(http, emu, messages, **extra) -> httpx.Response:
    body = {"model": "hy3-preview", "messages": messages, **extra}
    return await http.post(emu.openai_base_url + CHAT, json=body, headers=AUTH)


async def native(
    http,
    emu,
    action: str,
    body: dict[str, Any] | bytes,
    *,
    ts: int | None = None,
    secret_id: str = CFG.secret_id,
    secret_key: str = CFG.secret_key,
    signed: tuple[str, ...] = ("content-type", "host"),
    after_sign: dict[str, str] | None = None,
    send_body: bytes | None = None,
    version: str = "2023-09-01",
    timeout: float | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "Host": f"127.0.0.1:{emu.port}",
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(int(time.time()) if ts is None else ts),
        "X-TC-Region": "ap-guangzhou",
    }
    headers["Authorization"] = sign_headers(
        headers, raw, secret_id=secret_id, secret_key=secret_key, signed=signed
    )
    headers.update(after_sign or {})
    kwargs = {} if timeout is None else {"timeout": timeout}
    return await http.post(
        emu.native_endpoint + "/", content=send_body or raw, headers=headers, **kwargs
    )


def sign_headers(
    headers: dict[str, str],
    body: bytes,
    *,
    secret_id: str = CFG.secret_id,
    secret_key: str = CFG.secret_key,
    signed: tuple[str, ...] = ("content-type", "host"),
    unsigned_payload: bool = False,
) -> str:
    """The Authorization value for ``headers`` (which hold Content-Type, Host, X-TC-Timestamp).

    ``signed`` names the signed headers. sign_tc3 always signs content-type and host, so when
    ``signed`` leaves one out, SignedHeaders is rewritten to list exactly ``signed`` (such a
    request must be rejected before its signature is even looked at).
    """
    by_name = {k.lower(): v for k, v in headers.items()}
    sig = sign_tc3(
        secret_id=secret_id,
        secret_key=secret_key,
        service="hunyuan",
        host=by_name["host"],
        timestamp=int(by_name["x-tc-timestamp"]),
        content_type=by_name["content-type"],
        body=body,
        extra_headers={n: by_name[n] for n in signed if n not in ("content-type", "host")},
        unsigned_payload=unsigned_payload,
    )
    wanted = ";".join(sorted(n.lower() for n in signed))
    return sig.authorization.replace(
        f"SignedHeaders={sig.signed_headers},", f"SignedHeaders={wanted},"
    )


def native_error_message(resp: httpx.Response) -> str:
    native_error(resp)
    return resp.json()["Response"]["Error"]["Message"]


def native_chat_body(text: str, **extra) -> dict[str, Any]:
    return {"Model": "hunyuan-lite", "Messages": [{"Role": "user", "Content": text}], **extra}


def sse(resp: httpx.Response) -> list[str]:
    """The data fields of an SSE body, in order."""
    events = [e for e in resp.text.split("\n\n") if e.strip()]
    out = []
    for event in events:
        lines = [ln[len("data: ") :] for ln in event.split("\n") if ln.startswith("data: ")]
        out.append("\n".join(lines))
    return out


def native_error(resp: httpx.Response) -> str:
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"Response"}
    assert set(body["Response"]) == {"Error", "RequestId"}
    assert set(body["Response"]["Error"]) == {"Code", "Message"}
    return body["Response"]["Error"]["Code"]


# --- TC3 verifier pinned to the reference vectors -----------------------------------------------

VEC_ID = "AKIDEXAMPLEsecretid0000000000000000"
VEC_KEY = "EXAMPLEsecretkey00000000000000000"
VEC_TS = 1735689600


def test_verifier_accepts_reference_vector_1_and_rejects_a_flipped_bit():
    body = b'{"Model": "hunyuan-lite", "Messages": [{"Role": "user", "Content": "\\u4f60\\u597d"}]}'
    assert len(body) == 84
    auth = (
        f"TC3-HMAC-SHA256 Credential={VEC_ID}/2025-01-01/hunyuan/tc3_request, "
        "SignedHeaders=content-type;host, "
        "Signature=bdddfe35b840c91269486670025a0440cd877a4a88d69ecb6039590f58699df0"
    )
    headers = {
        "Content-Type": "application/json",
        "Host": "hunyuan.tencentcloudapi.com",
        "X-TC-Timestamp": str(VEC_TS),
        "Authorization": auth,
    }

    def check(h, b):
        return verify_tc3(
            authorization=h["Authorization"],
            method="POST",
            canonical_uri="/",
            canonical_query="",
            headers=h,
            body=b,
            secrets={VEC_ID: VEC_KEY}.get,
            now=VEC_TS + 10,
            expected_service="hunyuan",
        )

    assert check(headers, body).failure is None
    signature = sign_tc3(
        secret_id=VEC_ID,
        secret_key=VEC_KEY,
        service="hunyuan",
        host="hunyuan.tencentcloudapi.com",
        timestamp=VEC_TS,
        content_type="application/json",
        body=body,
    )
    assert signature.authorization == auth
    tampered = check(headers, body.replace(b"lite", b"lit3"))
    assert tampered.failure is TC3Failure.MISMATCH
    assert tampered.failure.code == "AuthFailure.SignatureFailure"


def test_verifier_accepts_reference_vector_2_with_three_signed_headers():
    auth = (
        f"TC3-HMAC-SHA256 Credential={VEC_ID}/2025-01-01/hunyuan/tc3_request, "
        "SignedHeaders=content-type;host;x-tc-action, "
        "Signature=bcf1c607e1994e6ef5ea99499f4b15b711fc81bc6315ad12fe8af71e24220528"
    )
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Host": "hunyuan.tencentcloudapi.com",
        "X-TC-Action": "GetTokenCount",
        "X-TC-Timestamp": str(VEC_TS),
        "Authorization": auth,
    }
    ok = verify_tc3(
        authorization=auth,
        method="POST",
        canonical_uri="/",
        canonical_query="",
        headers=headers,
        body=b'{"Prompt":"hello"}',
        secrets={VEC_ID: VEC_KEY}.get,
        now=VEC_TS,
        expected_service="hunyuan",
    )
    assert ok.failure is None
    headers["X-TC-Action"] = "ChatCompletions"  # a signed header changed in flight
    bad = verify_tc3(
        authorization=auth,
        method="POST",
        canonical_uri="/",
        canonical_query="",
        headers=headers,
        body=b'{"Prompt":"hello"}',
        secrets={VEC_ID: VEC_KEY}.get,
        now=VEC_TS,
        expected_service="hunyuan",
    )
    assert bad.failure is TC3Failure.MISMATCH
    assert bad.failure.code == "AuthFailure.SignatureFailure"


# --- content types and envelopes -------------------------------------------------------------


async def test_native_content_types_are_exact(emu, http):
    ok = await native(http, emu, "ChatCompletions", native_chat_body("hi"))
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/json"
    resp = ok.json()["Response"]
    assert resp["RequestId"] == resp["Id"]
    assert resp["Choices"][0]["Message"]["Content"].startswith("Turn 1.")

    err = await native(http, emu, "ChatCompletions", native_chat_body("hi", Temperature=3))
    assert native_error(err) == "InvalidParameter"
    assert err.json()["Response"]["Error"]["Message"] == "Temperature must be 2 or less"

    stream = await native(http, emu, "ChatCompletions", native_chat_body("hi", Stream=True))
    assert stream.headers["content-type"] == "text/event-stream"
    data = sse(stream)
    assert "[DONE]" not in stream.text
    chunks = [json.loads(d) for d in data]
    assert all("Response" not in c and "RequestId" not in c for c in chunks)
    assert {c["Id"] for c in chunks} == {stream.headers["x-tc-requestid"]}
    assert chunks[-1]["Choices"][0]["FinishReason"] == "stop"
    assert all(c["Choices"][0]["FinishReason"] == "" for c in chunks[:-1])


async def test_native_errors_before_a_stream_are_json_envelopes(emu, http):
    resp = await native(
        http, emu, "ChatCompletions", native_chat_body("[[fault:moderation]]", Stream=True)
    )
    assert native_error(resp) == "OperationDenied.TextIllegalDetected"


async def test_openai_content_types_and_done(emu, http):
    resp = await chat(http, emu, user("hi"))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    stream = await chat(http, emu, user("hi"), stream=True)
    assert stream.headers["content-type"] == "text/event-stream"
    data = sse(stream)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all("note" in c for c in chunks)
    assert "usage" in chunks[-1] and all("usage" not in c for c in chunks[:-1])
    bad = await http.post(emu.openai_base_url + CHAT, content=b"{not json", headers=AUTH)
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/json"
    assert set(bad.json()["error"]) >= {"message", "type", "param", "code"}


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer sk-nope"}, {"Authorization": CFG.api_key}]
)
async def test_openai_wrong_or_missing_bearer_is_401(emu, http, headers):
    resp = await http.post(
        emu.openai_base_url + CHAT,
        json={"model": "hy3-preview", "messages": user("hi")},
        headers=headers,
    )
    assert resp.status_code == 401
    err = resp.json()["error"]
    assert err["type"] == "authentication_error" and err["code"] == "401002"
    assert emu.stats.requests["/v1/chat/completions"] == 1
    assert emu.stats.chats_in_flight.get(emu.openai_account, 0) == 0


async def test_native_signature_checks(emu, http):
    body = native_chat_body("hi")
    now = int(time.time())
    # Inside the window with room to spare: wall-clock seconds pass before the check (an
    # older timestamp only gets older, so "expired" below may sit right at the edge).
    good = await native(http, emu, "ChatCompletions", body, ts=now - 240)
    assert good.json()["Response"]["Choices"]

    expired = await native(http, emu, "ChatCompletions", body, ts=now - 301)
    assert native_error(expired) == "AuthFailure.SignatureExpire"
    future = await native(http, emu, "ChatCompletions", body, ts=now + 400)
    assert native_error(future) == "AuthFailure.SignatureExpire"

    raw = json.dumps(body).encode()
    altered = raw.replace(b'"hi"', b'"hj"')
    assert altered != raw and len(altered) == len(raw)
    resp = await native(http, emu, "ChatCompletions", raw, send_body=altered)
    assert native_error(resp) == "AuthFailure.SignatureFailure"

    wrong_key = await native(http, emu, "ChatCompletions", body, secret_key="x" * 20)
    assert native_error(wrong_key) == "AuthFailure.SignatureFailure"

    good_auth = (await _auth_header(emu, raw)).rsplit("=", 1)[0]
    forged = await native(
        http,
        emu,
        "ChatCompletions",
        body,
        after_sign={"Authorization": good_auth + "=" + "ab" * 32},
    )
    assert native_error(forged) == "AuthFailure.SignatureFailure"

    for junk in ("", "Bearer abc", "TC3-HMAC-SHA256 Credential=x, Signature=zz"):
        resp = await native(http, emu, "ChatCompletions", body, after_sign={"Authorization": junk})
        assert native_error(resp) == "AuthFailure.InvalidAuthorization"

    no_host = await native(http, emu, "ChatCompletions", body, signed=("content-type",))
    assert native_error(no_host) == "AuthFailure.InvalidAuthorization"

    unknown = await native(http, emu, "ChatCompletions", body, secret_id="AKIDsomeoneelse")
    assert native_error(unknown) == "AuthFailure.SecretIdNotFound"

    # Extra signed headers are verified generically; changing one after signing breaks it.
    three = ("content-type", "host", "x-tc-action")
    ok3 = await native(http, emu, "GetTokenCount", {"Prompt": "hello"}, signed=three)
    assert ok3.json()["Response"]["TokenCount"] == estimate_tokens("hello")
    swapped = await native(
        http,
        emu,
        "GetTokenCount",
        {"Prompt": "hello"},
        signed=three,
        after_sign={"X-TC-Action": "QueryHunyuanImageJob"},
    )
    assert native_error(swapped) == "AuthFailure.SignatureFailure"
    assert emu.stats.errors["AuthFailure.SignatureFailure"] == 4


async def test_native_signature_failure_messages(emu, http):
    # The emulator answers each TC3 failure with its own Tencent-style message.
    body = native_chat_body("hi")
    raw = json.dumps(body).encode()
    now = int(time.time())
    mismatch = "请求签名验证失败，请检查您的签名计算是否正确。"
    cases = [
        (
            await native(http, emu, "ChatCompletions", body, ts=now - 301),
            "AuthFailure.SignatureExpire",
            f"签名过期。Timestamp 与服务器时间相差超过 {CFG.clock_skew_window} 秒。",
        ),
        (
            await native(http, emu, "ChatCompletions", raw, send_body=raw.replace(b"hi", b"hj")),
            "AuthFailure.SignatureFailure",
            mismatch,
        ),
        (
            await native(http, emu, "ChatCompletions", body, secret_key="x" * 20),
            "AuthFailure.SignatureFailure",
            mismatch,
        ),
        (
            await native(
                http,
                emu,
                "ChatCompletions",
                body,
                after_sign={
                    "Authorization": (await _auth_header(emu, raw)).replace(
                        "/hunyuan/", "/hunyuan-other/"
                    )
                },
            ),
            "AuthFailure.SignatureFailure",
            "请求签名验证失败：凭证范围不匹配。",
        ),
        (
            await native(http, emu, "ChatCompletions", body, after_sign={"Authorization": ""}),
            "AuthFailure.InvalidAuthorization",
            "Authorization 头部格式不合法。",
        ),
        (
            await native(
                http, emu, "ChatCompletions", body, after_sign={"Authorization": "Bearer abc"}
            ),
            "AuthFailure.InvalidAuthorization",
            "Authorization 头部格式不合法。",
        ),
        (
            await native(http, emu, "ChatCompletions", body, signed=("content-type",)),
            "AuthFailure.InvalidAuthorization",
            "SignedHeaders 必须包含 content-type 和 host。",
        ),
        (
            await native(http, emu, "ChatCompletions", body, after_sign={"X-TC-Timestamp": "x"}),
            "AuthFailure.InvalidAuthorization",
            "X-TC-Timestamp 缺失或不合法。",
        ),
        (
            await native(http, emu, "ChatCompletions", body, secret_id="AKIDsomeoneelse"),
            "AuthFailure.SecretIdNotFound",
            "SecretId 不存在，请输入正确的密钥。",
        ),
    ]
    for resp, code, message in cases:
        assert (native_error(resp), native_error_message(resp)) == (code, message)

    # A header named in SignedHeaders but absent from the request is named in the message.
    headers = {
        "Content-Type": "application/json",
        "Host": f"127.0.0.1:{emu.port}",
        "X-TC-Action": "ChatCompletions",
        "X-TC-Version": "2023-09-01",
        "X-TC-Timestamp": str(now),
        "X-TC-Region": "ap-guangzhou",
    }
    headers["Authorization"] = sign_headers(
        headers, raw, signed=("content-type", "host", "x-tc-region")
    )
    del headers["X-TC-Region"]
    resp = await http.post(emu.native_endpoint + "/", content=raw, headers=headers)
    assert native_error(resp) == "AuthFailure.InvalidAuthorization"
    assert native_error_message(resp) == "签名头部缺失：x-tc-region。"


async def test_native_unsigned_payload_mode(emu, http):
    # With X-TC-Content-SHA256: UNSIGNED-PAYLOAD the body is not covered by the signature.
    body = native_chat_body("hi")
    raw = json.dumps(body).encode()
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "Host": f"127.0.0.1:{emu.port}",
        "X-TC-Action": "ChatCompletions",
        "X-TC-Version": "2023-09-01",
        "X-TC-Timestamp": str(ts),
        "X-TC-Content-SHA256": "UNSIGNED-PAYLOAD",
    }
    headers["Authorization"] = sign_headers(headers, b"", unsigned_payload=True)
    other = json.dumps(native_chat_body("something else")).encode()
    resp = await http.post(emu.native_endpoint + "/", content=other, headers=headers)
    assert "something else" in resp.json()["Response"]["Choices"][0]["Message"]["Content"]
    del headers["X-TC-Content-SHA256"]
    resp = await http.post(emu.native_endpoint + "/", content=raw, headers=headers)
    assert native_error(resp) == "AuthFailure.SignatureFailure"


async def _auth_header(emu, raw: bytes) -> str:
    headers = {
        "Content-Type": "application/json",
        "Host": f"127.0.0.1:{emu.port}",
        "X-TC-Timestamp": str(int(time.time())),
    }
    return sign_headers(headers, raw)


async def test_native_routing_errors(emu, http):
    body = native_chat_body("hi")
    assert native_error(await native(http, emu, "Nope", body)) == "InvalidAction"
    assert (
        native_error(await native(http, emu, "ChatCompletions", body, version="2022-01-01"))
        == "NoSuchVersion"
    )
    extra = native_chat_body("hi", MaxTokens=10)
    resp = await native(http, emu, "ChatCompletions", extra)
    assert native_error(resp) == "UnknownParameter"
    assert "MaxTokens" in resp.json()["Response"]["Error"]["Message"]
    model = await native(http, emu, "ChatCompletions", {**body, "Model": "gpt-4"})
    assert native_error(model) == "InvalidParameterValue.Model"


# --- role order and parameters ----------------------------------------------------------------

BAD_ORDERS = [
    [("assistant", "a"), ("user", "b")],
    [("user", "a"), ("user", "b")],
    [("user", "a"), ("assistant", "b")],
    [("system", "s"), ("system", "t"), ("user", "u")],
    [("user", "a"), ("system", "s")],
    [("user", "a"), ("assistant", "b"), ("assistant", "c"), ("user", "d")],
    [("system", "s")],
    [("user", "a"), ("narrator", "b"), ("user", "c")],
    [("user", "a"), ("tool", "b")],
]


@pytest.mark.parametrize("order", BAD_ORDERS)
async def test_role_order_violations_rejected_on_both_apis(emu, http, order):
    resp = await chat(http, emu, [{"role": r, "content": c} for r, c in order])
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "1001" and err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert err["message"].startswith("messages 中 user（tool） 和 assistant 角色需交替出现")
    nat = await native(
        http,
        emu,
        "ChatCompletions",
        {"Model": "hunyuan-lite", "Messages": [{"Role": r, "Content": c} for r, c in order]},
    )
    assert native_error(nat) == "InvalidParameter"
    assert emu.stats.max_concurrent_chats == {}  # rejected before taking a slot


def test_role_order_rules_accept_tool_runs():
    assert role_order_ok(["system", "user", "assistant", "tool", "tool", "assistant", "user"])
    assert role_order_ok(["user", "assistant", "tool"])
    assert not role_order_ok(["user", "tool"])
    assert not role_order_ok([])


async def test_tool_turns_and_parameter_validation(emu, http):
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "1"},
    ]
    assert (await chat(http, emu, msgs)).status_code == 200
    empty = await chat(http, emu, [{"role": "user", "content": "   "}])
    assert empty.status_code == 400
    hot = await chat(http, emu, user("hi"), temperature=2.5)
    assert hot.status_code == 400 and "2 or less" in hot.json()["error"]["message"]
    assert (await chat(http, emu, user("hi"), temperature=2)).status_code == 200
    assert (await chat(http, emu, user("hi"), top_p=1.5)).status_code == 400
    assert (await chat(http, emu, user("hi"), max_tokens=0)).status_code == 400
    unknown = await http.post(
        emu.openai_base_url + CHAT, json={"model": "gpt-x", "messages": user("hi")}, headers=AUTH
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    legacy = await http.post(
        emu.openai_base_url + CHAT,
        json={"model": "hunyuan-a13b", "messages": user("hi")},
        headers=AUTH,
    )
    assert legacy.status_code == 200
    nat_empty = await native(http, emu, "ChatCompletions", native_chat_body(""))
    assert native_error(nat_empty) == "InvalidParameter"


# --- concurrency --------------------------------------------------------------------------------


async def test_six_concurrent_openai_chats_give_exactly_one_busy(http):
    async with Emulator(config=EmulatorConfig(latency=0.4)) as emu:
        results = await asyncio.gather(*(chat(http, emu, user(f"q{i}")) for i in range(6)))
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] * 5 + [429]
        busy = next(r for r in results if r.status_code == 429).json()["error"]
        assert busy["code"] == "429001" and "oncurrency" in busy["message"]
        assert emu.stats.max_concurrent_chats[emu.openai_account] == 5
        assert emu.stats.chats_in_flight[emu.openai_account] == 0
        assert emu.stats.busy_rejections == 1
        # Slots are free again afterwards.
        assert (await chat(http, emu, user("again"))).status_code == 200


async def _refused_while_held(emu: Emulator, calls: list[asyncio.Task], held: int) -> None:
    """With ``hold_chats``: wait until ``held`` chats hold their slots at the chat gate and every
    other call was answered (refused as busy), then release the held ones."""
    await emu.chat_gate.wait_held(held)
    async with asyncio.timeout(10):
        while sum(c.done() for c in calls) < len(calls) - held:
            await asyncio.wait([c for c in calls if not c.done()], return_when="FIRST_COMPLETED")
    assert emu.chat_gate.held == held  # the refused calls never reached the gate
    emu.chat_gate.release(held)


async def test_six_concurrent_native_chats_give_exactly_one_busy(http):
    async with Emulator(config=EmulatorConfig(hold_chats=True, chat_concurrency=5)) as emu:
        calls = [
            asyncio.create_task(native(http, emu, "ChatCompletions", native_chat_body(f"q{i}")))
            for i in range(6)
        ]
        await _refused_while_held(emu, calls, 5)
        results = await asyncio.wait_for(asyncio.gather(*calls), 10)
        errors = [r.json()["Response"].get("Error", {}).get("Code") for r in results]
        assert errors.count("FailedOperation.EngineServerLimitExceeded") == 1
        assert errors.count(None) == 5
        assert emu.stats.max_concurrent_chats[emu.native_account] == 5


async def test_chat_concurrency_is_configurable(http):
    async with Emulator(config=EmulatorConfig(hold_chats=True, chat_concurrency=2)) as emu:
        calls = [asyncio.create_task(chat(http, emu, user("x"))) for i in range(4)]
        await _refused_while_held(emu, calls, 2)
        results = await asyncio.wait_for(asyncio.gather(*calls), 10)
        assert sorted(r.status_code for r in results) == [200, 200, 429, 429]


# --- image jobs -----------------------------------------------------------------------------


async def _submit(http, emu, prompt: str, **extra) -> str:
    resp = await native(http, emu, "SubmitHunyuanImageJob", {"Prompt": prompt, **extra})
    return resp.json()["Response"]["JobId"]


async def _query(http, emu, job_id: str) -> dict[str, Any]:
    resp = await native(http, emu, "QueryHunyuanImageJob", {"JobId": job_id})
    return resp.json()["Response"]


async def _codes(http, emu, jobs: list[str]) -> tuple[str, ...]:
    return tuple([(await _query(http, emu, j))["JobStatusCode"] for j in jobs])


HELD = EmulatorConfig(hold_image_runs=True)


async def test_second_image_job_stays_queued_while_first_runs(http):
    async with Emulator(config=HELD) as emu:
        gate = emu.image_gate
        first = await _submit(http, emu, "first picture", Resolution="768:768")
        second = await _submit(http, emu, "second picture", Resolution="768:768")
        jobs = [first, second]
        seen: list[tuple[str, str]] = []
        await gate.wait_held(2)  # both in their queued step
        seen.append(await _codes(http, emu, jobs))
        gate.release(2)  # the first takes the only slot; the second waits for it
        await gate.wait_held(1)  # the first is running
        seen.append(await _codes(http, emu, jobs))
        assert gate.held == 1 and emu.stats.image_runs[emu.native_account] == 1
        gate.release(1)  # the first finishes and frees the slot; the second starts
        await gate.wait_held(1)
        seen.append(await _codes(http, emu, jobs))
        gate.release(1)
        await gate.wait_finished(2)
        seen.append(await _codes(http, emu, jobs))
        assert seen == [("1", "1"), ("2", "1"), ("5", "2"), ("5", "5")]
        for a, b in seen:
            if b in ("2", "5"):
                assert a == "5"  # the second only starts once the first is done
        assert emu.stats.max_image_runs[emu.native_account] == 1
        assert [i.prompt for i in emu.stats.images] == ["first picture", "second picture"]


async def test_image_concurrency_two_runs_two_jobs_together(http):
    async with Emulator(config=EmulatorConfig(hold_image_runs=True, image_concurrency=2)) as emu:
        gate = emu.image_gate
        jobs = [await _submit(http, emu, f"p{i}", Resolution="768:768") for i in range(3)]
        await gate.wait_held(3)  # all three queued
        assert await _codes(http, emu, jobs) == ("1", "1", "1")
        gate.release(3)  # two take the two slots, the third waits
        await gate.wait_held(2)
        assert await _codes(http, emu, jobs) == ("2", "2", "1")
        gate.release(2)
        await gate.wait_held(1)  # the third got a slot
        assert await _codes(http, emu, jobs) == ("5", "5", "2")
        gate.release(1)
        await gate.wait_finished(3)
        assert await _codes(http, emu, jobs) == ("5", "5", "5")
        assert emu.stats.max_image_runs[emu.native_account] == 2


async def test_tokenhub_sync_images_wait_for_the_image_slot(http):
    async with Emulator(config=HELD) as emu:
        gate = emu.image_gate
        body = {"model": "hy-image-v3", "prompt": "p", "size": "512x512"}
        calls = [
            asyncio.create_task(http.post(emu.openai_base_url + V3, json=b, headers=AUTH))
            for b in (body, {**body, "seed": 2})
        ]
        await gate.wait_held(1)  # one call runs; the other waits for the slot
        gate.release(1)
        done, pending = await asyncio.wait(calls, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1  # the second has not run yet
        await gate.wait_held(1)  # ... and runs only now that the first is finished
        assert gate.finished == 1
        gate.release(1)
        a, b = await asyncio.wait_for(asyncio.gather(*calls), 10)
        assert a.status_code == b.status_code == 200
        assert emu.stats.max_image_runs[emu.openai_account] == 1


async def test_step_gate_releases_in_order_and_forgets_cancelled_steps():
    gate = StepGate(holding=True)
    order: list[int] = []

    async def run(i: int) -> None:
        await gate.step(60.0)  # held: the seconds are not waited
        order.append(i)
        gate.run_finished()

    tasks = [asyncio.create_task(run(i)) for i in range(3)]
    await gate.wait_held(3)
    with pytest.raises(ValueError, match="4 steps to release but 3 held"):
        gate.release(4)
    tasks[1].cancel()
    assert gate.held == 2  # at once, before the cancelled task has run again
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert gate.held == 2  # the cancelled step left the gate
    gate.release(1)
    await gate.wait_finished(1)
    assert order == [0] and gate.held == 1
    gate.open()  # stops holding and lets the rest go
    await gate.wait_finished(2)
    assert order == [0, 2] and not gate.holding
    with pytest.raises(TimeoutError):
        await gate.wait_held(1, within=0.01)  # nothing is held any more


async def test_native_job_validation_and_unknown_job(emu, http):
    bad_res = await native(http, emu, "SubmitHunyuanImageJob", {"Prompt": "x", "Resolution": "1:1"})
    assert native_error(bad_res) == "InvalidParameterValue"
    long = await native(http, emu, "SubmitHunyuanImageJob", {"Prompt": "x" * 1025})
    assert native_error(long) == "InvalidParameter"
    num = await native(http, emu, "SubmitHunyuanImageJob", {"Prompt": "x", "Num": 5})
    assert native_error(num) == "InvalidParameterValue"
    missing = await native(http, emu, "SubmitHunyuanImageJob", {})
    assert native_error(missing) == "MissingParameter"
    query = await native(http, emu, "QueryHunyuanImageJob", {"JobId": "nope"})
    assert native_error(query) == "InvalidParameterValue"


# --- image bytes and the AI mark ------------------------------------------------------------------


async def _v3(http, emu, **body) -> httpx.Response:
    payload = {"model": "hy-image-v3", "prompt": "a red fox", "size": "512x512", "seed": 7, **body}
    return await http.post(emu.openai_base_url + V3, json=payload, headers=AUTH)


async def _download(http, url: str) -> bytes:
    resp = await http.get(url)
    assert resp.status_code == 200
    return resp.content


async def test_v3_mark_is_drawn_unless_logo_add_0(emu, http):
    marked = (await _v3(http, emu)).json()
    plain = (await _v3(http, emu, logo_add=0)).json()
    assert [i.mark for i in emu.stats.images] == ["AI generated", None]
    assert [i.mark_drawn for i in emu.stats.images] == [True, False]
    a = Image.open(io.BytesIO(await _download(http, marked["data"][0]["url"]))).convert("RGB")
    b = Image.open(io.BytesIO(await _download(http, plain["data"][0]["url"]))).convert("RGB")
    assert a.size == b.size == (512, 512)
    bbox = ImageChops.difference(a, b).getbbox()
    assert bbox is not None  # the mark is visible
    left, top, right, bottom = bbox
    # ... and only in the bottom-right corner
    assert left > 512 // 2 and top > 512 * 3 // 4 and right <= 512 and bottom <= 512
    assert marked["data"][0]["revised_prompt"].startswith("a red fox")
    assert set(marked) == {"id", "created", "data"}


async def test_v3_is_deterministic_and_footnote_is_the_mark(emu, http):
    one = await _download(http, (await _v3(http, emu)).json()["data"][0]["url"])
    two = await _download(http, (await _v3(http, emu)).json()["data"][0]["url"])
    other = await _download(http, (await _v3(http, emu, seed=8)).json()["data"][0]["url"])
    assert one == two != other
    assert Image.open(io.BytesIO(one)).format == "PNG"
    await _v3(http, emu, footnote="Made by hybot")
    await _v3(http, emu, footnote="机器人生成")
    assert [i.mark for i in emu.stats.images[-2:]] == ["Made by hybot", "AI generated"]
    jpeg = await _v3(http, emu, output_format="jpeg")
    data = await _download(http, jpeg.json()["data"][0]["url"])
    assert Image.open(io.BytesIO(data)).format == "JPEG"


@pytest.mark.parametrize(
    "body",
    [
        {"size": "2048x2048"},
        {"size": "500x500"},
        {"size": "1024*1024"},
        {"footnote": "x" * 17},
        {"prompt": "p" * 8193},
        {"prompt": ""},
        {"model": "hy-image-lite"},
        {"logo_add": 2},
        {"seed": -1},
        {"images": ["a", "b", "c", "d"]},
    ],
)
async def test_v3_validation_errors(emu, http, body):
    resp = await _v3(http, emu, **body)
    assert resp.status_code in (400, 404)
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert emu.stats.images_generated == 0


async def test_v3_accepts_extreme_valid_sizes(emu, http):
    resp = await _v3(http, emu, size="2048x512")
    img = Image.open(io.BytesIO(await _download(http, resp.json()["data"][0]["url"])))
    assert img.size == (2048, 512)


async def test_lite_url_base64_and_logo(emu, http):
    base = {"model": "hy-image-lite", "prompt": "a cabin", "resolution": "1024:768"}
    url = await http.post(emu.openai_base_url + LITE, json=base, headers=AUTH)
    assert set(url.json()) == {"created", "request_id", "data"}
    img = Image.open(io.BytesIO(await _download(http, url.json()["data"][0]["url"])))
    assert img.size == (1024, 768)
    b64 = await http.post(
        emu.openai_base_url + LITE,
        json={**base, "rsp_img_type": "base64", "logo_add": 0},
        headers=AUTH,
    )
    data = base64.b64decode(b64.json()["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(data)).size == (1024, 768)
    assert [i.mark for i in emu.stats.images] == ["AI generated", None]
    bad = await http.post(
        emu.openai_base_url + LITE, json={**base, "resolution": "1000:1000"}, headers=AUTH
    )
    assert bad.status_code == 400


async def test_native_job_logo_add_0_has_no_mark(emu, http):
    job = await _submit(http, emu, "no mark please", LogoAdd=0, Resolution="768:768")
    job2 = await _submit(http, emu, "mark please", LogoAdd=7, Resolution="768:768")
    await emu.image_gate.wait_finished(2)
    assert await _codes(http, emu, [job, job2]) == ("5", "5")
    assert [i.mark for i in emu.stats.images] == [None, "AI generated"]  # 7 counts as 1


async def test_result_urls_expire(emu, http):
    tokenhub_url = (await _v3(http, emu)).json()["data"][0]["url"]
    job = await _submit(http, emu, "expiring", Resolution="768:768")
    await emu.image_gate.wait_finished(2)  # the TokenHub call, then the job
    res = await _query(http, emu, job)
    assert res["JobStatusCode"] == "5"
    native_url = res["ResultImage"][0]
    emu.advance_time(3601)  # native result URLs live 1 h, TokenHub ones 12 h
    assert (await http.get(native_url)).status_code == 403
    assert (await http.get(tokenhub_url)).status_code == 200
    emu.advance_time(12 * 3600)
    expired = await http.get(tokenhub_url)
    assert expired.status_code == 403 and b"expired" in expired.content
    assert (await http.get(emu.native_endpoint + "/files/nothing.png")).status_code == 404


# --- faults: OpenAI-compatible API ------------------------------------------------------------

OPENAI_ERROR_FAULTS = [
    ("429", 429, "rate_limit_error", "429001"),
    ("500", 500, "upstream_error", "500001"),
    ("busy", 429, "rate_limit_error", "429001"),
    ("moderation", 451, "content_filter_error", "451001"),
    ("credit", 402, "permission_error", "401007"),
    ("badkey", 401, "authentication_error", "401002"),
]


@pytest.mark.parametrize(("fault", "status", "etype", "code"), OPENAI_ERROR_FAULTS)
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_error_fault_markers(emu, http, fault, status, etype, code, stream):
    resp = await chat(http, emu, user(f"hello [[fault:{fault}]]"), stream=stream)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert (err["type"], err["code"]) == (etype, code)
    assert ("retry-after" in resp.headers) == (fault == "429")
    assert emu.stats.faults[fault] == 1
    assert emu.stats.chats_in_flight.get(emu.openai_account, 0) == 0


async def test_openai_credit_message_and_imagefail(emu, http):
    credit = await chat(http, emu, user("[[fault:credit]]"))
    assert "FREE_QUOTA_EXHAUSTED" in credit.json()["error"]["message"]
    fail = await _v3(http, emu, prompt="a cat [[fault:imagefail]]")
    assert fail.status_code == 451
    assert fail.json()["error"]["upstream_code"] == "FailedOperation.GenerateImageFailed"
    for fault, status in (("429", 429), ("moderation", 451), ("credit", 402), ("busy", 429)):
        resp = await _v3(http, emu, prompt=f"a cat [[fault:{fault}]]")
        assert resp.status_code == status
    assert emu.stats.images_generated == 0


async def test_openai_latency_marker_and_markers_are_not_quoted(emu, http):
    start = time.monotonic()
    resp = await chat(http, emu, user("slow one [[fault:latency=0.3]]"))
    assert time.monotonic() - start >= 0.3
    text = resp.json()["choices"][0]["message"]["content"]
    assert 'You just said: "slow one"' in text
    assert "[[" not in text


async def test_openai_sensitive_non_stream_is_partial(emu, http):
    full = (await chat(http, emu, user("tell me"))).json()["choices"][0]
    cut = (await chat(http, emu, user("tell me [[fault:sensitive]]"))).json()
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "sensitive"
    assert full["message"]["content"].startswith(choice["message"]["content"])
    assert 0 < len(choice["message"]["content"]) < len(full["message"]["content"])
    assert cut["usage"]["completion_tokens"] == estimate_tokens(choice["message"]["content"])


async def test_openai_stream_error_and_non_stream_timeout(emu, http):
    resp = await chat(http, emu, user("x [[fault:stream_error]]"), stream=True)
    data = sse(resp)
    assert "[DONE]" not in data
    assert json.loads(data[-1])["error"]["code"] == "4001"
    assert len(data) == 3  # two chunks, then the error event
    plain = await chat(http, emu, user("x [[fault:stream_error]]"))
    assert plain.status_code == 504 and plain.json()["error"]["code"] == "4001"


async def test_openai_disconnect(emu, http):
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(http, emu, user("x [[fault:disconnect]]"))
    got: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream(
            "POST",
            emu.openai_base_url + CHAT,
            json={
                "model": "hy3-preview",
                "messages": user("x [[fault:disconnect]]"),
                "stream": True,
            },
            headers=AUTH,
        ) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    got.append(line)
    assert len(got) == 2
    assert "[DONE]" not in "".join(got)
    assert emu.stats.chats_in_flight[emu.openai_account] == 0


def _on_state_call(monkeypatch, emu: Emulator, method: str) -> asyncio.Event:
    """White-box: an event set when the emulator's shared state calls ``method`` (set on entry,
    before the real method runs; works for plain and async methods)."""
    state = emu._state
    real = getattr(state, method)
    called = asyncio.Event()

    def spy(*args, **kwargs):
        called.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(state, method, spy)
    return called


async def test_openai_hang_until_client_gives_up_then_slot_is_freed(emu, http, monkeypatch):
    hanging = _on_state_call(monkeypatch, emu, "hang")
    left = _on_state_call(monkeypatch, emu, "leave_chat")
    with pytest.raises(httpx.ReadTimeout):
        await http.post(
            emu.openai_base_url + CHAT,
            json={"model": "hy3-preview", "messages": user("x [[fault:hang]]")},
            headers=AUTH,
            timeout=0.3,
        )
    assert hanging.is_set()  # the timeout came from the hang, not from a slow start
    await asyncio.wait_for(left.wait(), 10)  # the handler saw the client go and gave back
    assert emu.stats.chats_in_flight[emu.openai_account] == 0


async def test_hang_does_not_block_stop(http, monkeypatch):
    emu = Emulator(config=HELD)
    await emu.start()
    hanging = _on_state_call(monkeypatch, emu, "hang")
    pending = asyncio.create_task(chat(http, emu, user("x [[fault:hang]]")))
    job = await _submit(http, emu, "a job that never gets polled")
    assert job
    await asyncio.wait_for(hanging.wait(), 10)  # the chat hangs ...
    await emu.image_gate.wait_held(1)  # ... and the job waits in its queued step
    await asyncio.wait_for(emu.stop(), 10)  # did not hang (aiohttp alone would wait 2 s)
    with pytest.raises(httpx.HTTPError):
        await pending
    # The hanging chat ended and gave its slot back; the held job was cancelled, not run.
    assert emu.stats.chats_in_flight[emu.openai_account] == 0
    assert emu.image_gate.held == 0 and emu._state.tasks == set()
    assert emu.image_gate.finished == 0 and emu.stats.images_generated == 0


async def test_server_wide_faults(http):
    async with Emulator(config=EmulatorConfig(faults=frozenset({"429"}))) as emu:
        assert (await chat(http, emu, user("plain"))).status_code == 429
        nat = await native(http, emu, "ChatCompletions", native_chat_body("plain"))
        assert native_error(nat) == "RequestLimitExceeded"
        count = await native(http, emu, "GetTokenCount", {"Prompt": "x"})
        assert native_error(count) == "RequestLimitExceeded"
    async with Emulator(config=EmulatorConfig(faults=frozenset({"latency=0.25"}))) as emu:
        start = time.monotonic()
        assert (await chat(http, emu, user("plain"))).status_code == 200
        assert time.monotonic() - start >= 0.25


# --- faults: native API -------------------------------------------------------------------------

NATIVE_ERROR_FAULTS = [
    ("429", "RequestLimitExceeded"),
    ("busy", "FailedOperation.EngineServerLimitExceeded"),
    ("moderation", "OperationDenied.TextIllegalDetected"),
    ("credit", "FailedOperation.ResourcePackExhausted"),
    ("badkey", "AuthFailure.SecretIdNotFound"),
]


@pytest.mark.parametrize(("fault", "code"), NATIVE_ERROR_FAULTS)
async def test_native_error_fault_markers(emu, http, fault, code):
    resp = await native(http, emu, "ChatCompletions", native_chat_body(f"hi [[fault:{fault}]]"))
    assert native_error(resp) == code
    img = await native(http, emu, "SubmitHunyuanImageJob", {"Prompt": f"cat [[fault:{fault}]]"})
    assert native_error(img) == code
    assert emu.stats.images_generated == 0


async def test_native_500_is_plain_http_500(emu, http):
    resp = await native(http, emu, "ChatCompletions", native_chat_body("x [[fault:500]]"))
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "text/plain"
    assert "Response" not in resp.text


async def test_native_latency_hang_disconnect(emu, http):
    start = time.monotonic()
    resp = await native(http, emu, "ChatCompletions", native_chat_body("x [[fault:latency=0.3]]"))
    assert time.monotonic() - start >= 0.3 and resp.json()["Response"]["Choices"]
    with pytest.raises(httpx.ReadTimeout):
        await native(
            http, emu, "ChatCompletions", native_chat_body("x [[fault:hang]]"), timeout=0.3
        )
    with pytest.raises(httpx.RemoteProtocolError):
        await native(http, emu, "ChatCompletions", native_chat_body("x [[fault:disconnect]]"))
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        body = native_chat_body("x [[fault:disconnect]]", Stream=True)
        raw = json.dumps(body).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Host": f"127.0.0.1:{emu.port}",
            "X-TC-Action": "ChatCompletions",
            "X-TC-Version": "2023-09-01",
            "X-TC-Timestamp": str(ts),
        }
        headers["Authorization"] = sign_headers(headers, raw)
        async with http.stream(
            "POST", emu.native_endpoint + "/", content=raw, headers=headers
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
    assert len(got) == 2 and all(c["Choices"][0]["FinishReason"] == "" for c in got)


async def test_native_sensitive_and_stream_error(emu, http):
    stream = await native(
        http, emu, "ChatCompletions", native_chat_body("hey [[fault:sensitive]]", Stream=True)
    )
    chunks = [json.loads(d) for d in sse(stream)]
    assert chunks[-1]["Choices"][0]["FinishReason"] == "sensitive"
    plain = await native(http, emu, "ChatCompletions", native_chat_body("hey [[fault:sensitive]]"))
    assert plain.json()["Response"]["Choices"][0]["FinishReason"] == "sensitive"
    err = await native(
        http, emu, "ChatCompletions", native_chat_body("hey [[fault:stream_error]]", Stream=True)
    )
    chunks = [json.loads(d) for d in sse(err)]
    assert chunks[-1]["ErrorMsg"] == {"Code": 4001, "Msg": "model request timed out"}
    assert all(c["Choices"][0]["FinishReason"] == "" for c in chunks)
    non_stream = await native(
        http, emu, "ChatCompletions", native_chat_body("hey [[fault:stream_error]]")
    )
    assert native_error(non_stream) == "FailedOperation.EngineRequestTimeout"


async def test_native_imagefail_job_goes_to_4(http):
    async with Emulator(config=HELD) as emu:
        job = await _submit(http, emu, "a cat [[fault:imagefail]]")
        await emu.image_gate.wait_held(1)  # its queued step
        states = [(await _query(http, emu, job))["JobStatusCode"]]
        emu.image_gate.release(1)
        await emu.image_gate.wait_finished(1)
        res = await _query(http, emu, job)
        states.append(res["JobStatusCode"])
        assert emu.image_gate.held == 0  # it never took a run step
    assert states == ["1", "4"]
    assert res["JobErrorCode"] == "FailedOperation.GenerateImageFailed"
    assert res["JobStatusMsg"] == "处理失败" and res["ResultImage"] == []
    assert emu.stats.images_generated == 0


# --- replies, streaming shape, tokens ------------------------------------------------------------


async def test_long_marker_sizes_the_reply_and_streams_in_many_chunks(emu, http):
    resp = await chat(http, emu, user("go [[long=300]]"), stream=True)
    chunks = [json.loads(d) for d in sse(resp)[:-1]]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert estimate_tokens(text) == 300
    assert chunks[-1]["usage"]["completion_tokens"] == 300
    assert len(chunks) > 30
    assert split_chunks(text) and "".join(split_chunks(text)) == text


async def test_chunk_delay_spaces_out_chunks(http):
    async with Emulator(config=EmulatorConfig(chunk_delay=0.05)) as emu:
        start = time.monotonic()
        resp = await chat(http, emu, user("hi"), stream=True)
        n = len(sse(resp)) - 1
        assert time.monotonic() - start >= 0.05 * (n - 1)


# --- secrets and config ---------------------------------------------------------------------------


async def test_secrets_never_leak(http, caplog):
    cfg = EmulatorConfig(api_key="sk-SUPERSECRET-1", secret_key="SK-SUPERSECRET-2")
    caplog.set_level(logging.DEBUG)
    async with Emulator(config=cfg) as emu:
        for key in ("sk-SUPERSECRET-1", "wrong"):
            await http.post(
                emu.openai_base_url + CHAT,
                json={"model": "hy3-preview", "messages": user("hi")},
                headers={"Authorization": f"Bearer {key}"},
            )
        bad = await native(
            http, emu, "ChatCompletions", native_chat_body("hi"), secret_key="SK-SUPERSECRET-2x"
        )
        assert native_error(bad) == "AuthFailure.SignatureFailure"
        blob = repr(cfg) + repr(emu) + repr(emu.stats) + caplog.text + bad.text
        assert "SUPERSECRET" not in blob


def test_config_validation():
    with pytest.raises(ConfigError):
        EmulatorConfig(faults=frozenset({"explode"}))
    with pytest.raises(ConfigError):
        EmulatorConfig(faults=frozenset({"latency=abc"}))
    with pytest.raises(ConfigError):
        EmulatorConfig(chat_concurrency=0)
    assert EmulatorConfig(faults=frozenset({"latency=0.5", "429"})).faults


async def test_make_app_embeds_in_a_foreign_runner(http):
    app = make_app(EmulatorConfig(api_key="sk-embedded"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        resp = await http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "hy3-preview", "messages": user("embedded hello")},
            headers={"Authorization": "Bearer sk-embedded"},
        )
        assert 'You just said: "embedded hello"' in resp.json()["choices"][0]["message"]["content"]
        assert app_stats(app).requests["/v1/chat/completions"] == 1
    finally:
        await runner.cleanup()


# --- refusals: every bad request answered in the interface's JSON shape (issue 7 item 15) ---


def openai_refusal(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI-style error object of ``resp`` (asserting status, Content-Type and shape)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert all(isinstance(body["error"][k], str) for k in ("message", "type", "code"))
    assert "Traceback" not in resp.text
    error: dict[str, Any] = body["error"]
    return error


def native_refusal(resp: httpx.Response, status: int) -> str:
    """The native error code of a non-200 native answer (same envelope, HTTP ``status``)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"Response"} and set(body["Response"]) == {"Error", "RequestId"}
    assert set(body["Response"]["Error"]) == {"Code", "Message"}
    code: str = body["Response"]["Error"]["Code"]
    return code


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def chat_body_with(field: str, raw_value: str, model: str = "hy3-preview") -> bytes:
    """A chat body whose ``field`` holds ``raw_value`` verbatim (any JSON-ish text)."""
    head = json.dumps({"model": model, "messages": user("hi")})[:-1]
    return f'{head}, "{field}": {raw_value}}}'.encode()


def native_body_with(field: str, raw_value: str) -> bytes:
    """A native chat body whose ``field`` holds ``raw_value`` verbatim."""
    head = json.dumps(native_chat_body("hi"))[:-1]
    return f'{head}, "{field}": {raw_value}}}'.encode()


JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}


@pytest.mark.parametrize("depth", [33, 2_000, 200_000])
async def test_deeply_nested_json_is_refused_in_shape(emu, http, caplog, depth):
    caplog.set_level(logging.DEBUG)
    resp = await http.post(
        emu.openai_base_url + CHAT, content=chat_body_with("x", nested(depth)), headers=JSON_HEADERS
    )
    assert "nested deeper" in openai_refusal(resp, 400)["message"]
    # The field is only looked at after parsing, so this is the native parser's answer too.
    assert (
        native_error(
            await native(http, emu, "ChatCompletions", native_body_with("Seed", nested(depth)))
        )
        == "InvalidParameter"
    )
    assert not [r for r in caplog.records if r.exc_info]  # no RecursionError anywhere


async def test_nesting_within_the_limit_is_parsed(emu, http):
    resp = await http.post(
        emu.openai_base_url + CHAT, content=chat_body_with("x", nested(31)), headers=JSON_HEADERS
    )
    assert resp.status_code == 200 and resp.json()["choices"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
async def test_non_finite_numbers_are_refused(emu, http, value):
    resp = await http.post(
        emu.openai_base_url + CHAT,
        content=chat_body_with("temperature", value),
        headers=JSON_HEADERS,
    )
    assert openai_refusal(resp, 400)["type"] == "invalid_request_error"
    raw = native_body_with("Temperature", value)
    assert native_error(await native(http, emu, "ChatCompletions", raw)) == "InvalidParameter"


@pytest.mark.parametrize("value", ["1" * 30, "-9223372036854775809", "9" * 5000])
async def test_integers_beyond_64_bits_are_refused(emu, http, value):
    resp = await http.post(
        emu.openai_base_url + CHAT,
        content=chat_body_with("max_tokens", value),
        headers=JSON_HEADERS,
    )
    openai_refusal(resp, 400)
    raw = native_body_with("Seed", value)
    assert native_error(await native(http, emu, "ChatCompletions", raw)) == "InvalidParameter"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json; charset=latin-1",
    ],
)
async def test_a_wrong_content_type_is_refused(emu, http, content_type):
    raw = json.dumps({"model": "hy3-preview", "messages": user("hi")}).encode()
    headers = dict(AUTH) if content_type is None else {**AUTH, "Content-Type": content_type}
    resp = await http.post(emu.openai_base_url + CHAT, content=raw, headers=headers)
    assert "Content-Type" in openai_refusal(resp, 400)["message"] or "charset" in resp.text
    # Native: the same check after authentication (the Content-Type is a signed header).
    native_raw = json.dumps(native_chat_body("hi")).encode()
    ts = int(time.time())
    nheaders = {
        "Content-Type": content_type or "",
        "Host": f"127.0.0.1:{emu.port}",
        "X-TC-Action": "ChatCompletions",
        "X-TC-Version": "2023-09-01",
        "X-TC-Timestamp": str(ts),
    }
    nheaders["Authorization"] = sign_headers(nheaders, native_raw)
    if content_type is None:
        del nheaders["Content-Type"]
        # Unsigned content-type header: the signature check refuses first.
        resp = await http.post(emu.native_endpoint + "/", content=native_raw, headers=nheaders)
        assert native_error(resp).startswith("AuthFailure")
        return
    resp = await http.post(emu.native_endpoint + "/", content=native_raw, headers=nheaders)
    assert native_error(resp) == "InvalidParameter"
    assert "Content-Type" in resp.text or "charset" in resp.text


async def test_json_with_a_utf8_charset_is_accepted(emu, http):
    headers = {**AUTH, "Content-Type": "application/json; charset=UTF-8"}
    raw = json.dumps({"model": "hy3-preview", "messages": user("hi")}).encode()
    assert (await http.post(emu.openai_base_url + CHAT, content=raw, headers=headers)).is_success


async def test_unknown_paths_get_404_in_each_interface_shape(emu, http):
    resp = await http.post(emu.openai_base_url + "/nope", json={}, headers=AUTH)
    assert openai_refusal(resp, 404)["code"] == "not_found"
    resp = await http.get(emu.native_endpoint + "/v1")
    assert openai_refusal(resp, 404)["message"] == "Invalid URL (GET /v1)."
    assert native_refusal(await http.post(emu.native_endpoint + "/nope", json={}), 404) == (
        "UnsupportedOperation"
    )
    files = await http.get(emu.native_endpoint + "/files/a/b.png")
    assert files.status_code == 404 and files.headers["content-type"] == "application/xml"
    assert emu.stats.errors["http404"] == 4


async def test_wrong_methods_get_405_in_each_interface_shape(emu, http):
    resp = await http.get(emu.openai_base_url + CHAT, headers=AUTH)
    assert openai_refusal(resp, 405)["code"] == "method_not_allowed"
    assert resp.headers["allow"] == "POST"
    resp = await http.put(emu.openai_base_url + LITE, json={}, headers=AUTH)
    openai_refusal(resp, 405)
    assert native_refusal(await http.get(emu.native_endpoint + "/"), 405) == "UnsupportedProtocol"
    assert native_refusal(await http.delete(emu.native_endpoint + "/"), 405) == (
        "UnsupportedProtocol"
    )
    files = await http.post(emu.native_endpoint + "/files/x.png")
    assert files.status_code == 405 and files.headers["content-type"] == "application/xml"


@pytest.fixture
async def small_emu():
    async with Emulator(config=EmulatorConfig(max_body_bytes=4096)) as e:
        yield e


async def test_bodies_over_the_cap_get_413_in_each_interface_shape(small_emu, http):
    emu = small_emu
    big = json.dumps({"model": "hy3-preview", "messages": user("x" * 5000)}).encode()
    # Declared length over the cap: refused before the body is read.
    resp = await http.post(emu.openai_base_url + CHAT, content=big, headers=JSON_HEADERS)
    assert openai_refusal(resp, 413)["code"] == "request_too_large"
    assert "4096 bytes" in resp.json()["error"]["message"]

    # No declared length (chunked): refused once the bytes read pass the cap.
    async def chunks():
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    resp = await http.post(emu.openai_base_url + CHAT, content=chunks(), headers=JSON_HEADERS)
    openai_refusal(resp, 413)
    native_big = json.dumps(native_chat_body("x" * 5000)).encode()
    resp = await native(http, emu, "ChatCompletions", native_big)
    assert native_refusal(resp, 413) == "RequestSizeLimitExceeded"
    assert emu.stats.errors["http413"] == 3
    # Under the cap, the same emulator answers.
    assert (await chat(http, emu, user("x" * 1000))).status_code == 200


async def test_the_default_cap_is_ten_megabytes(emu, http):
    assert EmulatorConfig().max_body_bytes == 10 * 1024 * 1024
    body = (
        b'{"model": "hy3-preview", "messages": [{"role": "user", "content": "'
        + (b"x" * (10 * 1024 * 1024))
        + b'"}]}'
    )
    resp = await http.post(emu.openai_base_url + CHAT, content=body, headers=JSON_HEADERS)
    openai_refusal(resp, 413)


def test_max_body_bytes_must_be_positive():
    with pytest.raises(ConfigError):
        EmulatorConfig(max_body_bytes=0)


# hy-mt2-pro: an 8k window taking at most 4k input tokens (reference §3.4).
async def test_prompts_over_the_models_input_limit_are_refused(emu, http):
    fits = "x" * (3 * 4000)  # exactly 4000 tokens by core.tokens.estimate_tokens
    assert estimate_tokens(fits) == 4000
    ok = await http.post(
        emu.openai_base_url + CHAT,
        json={"model": "hy-mt2-pro", "messages": user(fits)},
        headers=AUTH,
    )
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 4000
    over = await http.post(
        emu.openai_base_url + CHAT,
        json={"model": "hy-mt2-pro", "messages": user(fits + "x")},
        headers=AUTH,
    )
    error = openai_refusal(over, 400)
    assert error["code"] == "context_length_exceeded" and "4001" in error["message"]
    # max_tokens takes room from the window: 8000 - 5000 leaves 3000 input tokens.
    squeezed = await http.post(
        emu.openai_base_url + CHAT,
        json={"model": "hy-mt2-pro", "messages": user("x" * 9003), "max_tokens": 5000},
        headers=AUTH,
    )
    assert openai_refusal(squeezed, 400)["code"] == "context_length_exceeded"
    # Several messages count together (system + user + assistant + user).
    messages = [
        {"role": "system", "content": "s" * 3000},
        {"role": "user", "content": "u" * 3000},
        {"role": "assistant", "content": "a" * 3000},
        {"role": "user", "content": "v" * 3003},
    ]
    many = await http.post(
        emu.openai_base_url + CHAT,
        json={"model": "hy-mt2-pro", "messages": messages},
        headers=AUTH,
    )
    assert openai_refusal(many, 400)["code"] == "context_length_exceeded"
    assert emu.stats.errors["context_length_exceeded"] == 3
    assert emu.stats.chats_in_flight.get(emu.openai_account, 0) == 0


async def test_native_prompts_over_the_models_input_limit_are_refused(emu, http):
    # hunyuan-turbo: 28k input tokens; CJK counts 1.8 characters per token.
    fits = "好" * int(28_000 * 1.8)
    assert estimate_tokens(fits) == 28_000
    body = {"Model": "hunyuan-turbo", "Messages": [{"Role": "user", "Content": fits}]}
    ok = await native(http, emu, "ChatCompletions", body)
    assert ok.json()["Response"]["Usage"]["PromptTokens"] == 28_000
    body["Messages"][0]["Content"] = fits + "好"
    over = await native(http, emu, "ChatCompletions", body)
    assert native_error(over) == "InvalidParameter"
    assert "28000" in native_error_message(over)


async def test_a_one_megabyte_prompt_is_refused(emu, http):
    resp = await chat(http, emu, user("x" * 1_000_000))
    assert openai_refusal(resp, 400)["code"] == "context_length_exceeded"


async def test_lone_surrogate_escapes_are_replaced_not_fatal(emu, http):
    raw = (
        b'{"model": "hy3-preview", "messages": [{"role": "user", "content": "a\\ud800b\\udfffc"}]}'
    )
    resp = await http.post(emu.openai_base_url + CHAT, content=raw, headers=JSON_HEADERS)
    assert resp.status_code == 200
    assert 'You just said: "a\ufffdb\ufffdc"' in resp.json()["choices"][0]["message"]["content"]
    # A proper pair stays one character.
    raw = b'{"model": "hy3-preview", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    resp = await http.post(emu.openai_base_url + CHAT, content=raw, headers=JSON_HEADERS)
    assert '"\U0001f600"' in resp.json()["choices"][0]["message"]["content"]
    native_raw = b'{"Model": "hunyuan-lite", "Messages": [{"Role": "user", "Content": "x\\udc00"}]}'
    resp = await native(http, emu, "ChatCompletions", native_raw)
    assert "x\ufffd" in resp.json()["Response"]["Choices"][0]["Message"]["Content"]


async def test_wrongly_typed_choices_are_refused_not_fatal(emu, http):
    resp = await http.post(
        emu.openai_base_url + LITE,
        json={"model": "hy-image-lite", "prompt": "cat", "resolution": ["768:768"]},
        headers=AUTH,
    )
    openai_refusal(resp, 400)
    resp = await native(http, emu, "SubmitHunyuanImageJob", {"Prompt": "cat", "Resolution": {}})
    assert native_error(resp) == "InvalidParameterValue"
    resp = await native(http, emu, "TextToImageLite", {"Prompt": "cat", "Resolution": [1]})
    assert native_error(resp) == "InvalidParameterValue"
    assert emu.stats.errors["internal"] == 0


async def test_a_non_ascii_bearer_key_is_refused_as_a_bad_key(emu, http):
    resp = await http.post(
        emu.openai_base_url + CHAT,
        json={"model": "hy3-preview", "messages": user("hi")},
        headers={"Authorization": b"Bearer sk-\xff\xfe"},
    )
    assert openai_refusal(resp, 401)["code"] == "401002"


def _emulator_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("core.hunyuan.emulator") and r.levelno >= logging.ERROR
    ]


async def test_an_unexpected_failure_is_a_json_500_logged_once(emu, http, caplog, monkeypatch):
    def boom(body: object) -> None:
        raise RuntimeError("boom-detail-7f3a")

    monkeypatch.setattr(openai_compat, "parse_chat", boom)
    monkeypatch.setattr(native_module, "parse_native_chat", boom)
    caplog.set_level(logging.DEBUG)
    resp = await chat(http, emu, user("hi"))
    error = openai_refusal(resp, 500)
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert "boom" not in resp.text
    records = _emulator_errors(caplog)
    assert len(records) == 1 and records[0].exc_info is not None
    assert "boom-detail-7f3a" in caplog.text  # the operator gets the traceback, once
    caplog.clear()
    resp = await native(http, emu, "ChatCompletions", native_chat_body("hi"))
    assert native_error(resp) == "InternalError" and "boom" not in resp.text
    assert len(_emulator_errors(caplog)) == 1
    assert emu.stats.errors["internal"] == 2


async def test_an_unexpected_failure_mid_stream_cuts_the_stream_logged_once(
    emu, http, caplog, monkeypatch
):
    real_chunk = OpenAIWire.chunk
    calls = []

    def flaky(self, ctx, delta, finish, text_so_far):
        calls.append(delta)
        if len(calls) == 2:
            raise RuntimeError("mid-stream failure")
        return real_chunk(self, ctx, delta, finish, text_so_far)

    monkeypatch.setattr(OpenAIWire, "chunk", flaky)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(http, emu, user("hello there"), stream=True)
    assert len(_emulator_errors(caplog)) == 1
    assert emu.stats.errors["internal"] == 1


async def test_an_unexpected_failure_in_an_image_job_fails_the_job_logged_once(
    http, caplog, monkeypatch
):
    reached = asyncio.Event()

    async def broken_render(self, **kwargs):
        reached.set()
        raise RuntimeError("render failed")

    monkeypatch.setattr(EmuState, "create_image", broken_render)
    caplog.set_level(logging.DEBUG)
    async with Emulator(config=EmulatorConfig(image_job_steps=0.0)) as emu:
        job_id = await _submit(http, emu, "a cat")
        await reached.wait()
        status = await _query(http, emu, job_id)
        assert status["JobStatusCode"] == "4"
        assert (status["JobErrorCode"], status["JobErrorMsg"]) == ("InternalError", "内部错误。")
        assert status["ResultImage"] == []
        assert len(_emulator_errors(caplog)) == 1 and emu.stats.errors["internal"] == 1
        # The slot was released: the next job runs (and fails the same way, not queued forever).
        reached.clear()
        second = await _submit(http, emu, "another cat")
        await reached.wait()
        assert (await _query(http, emu, second))["JobStatusCode"] == "4"
