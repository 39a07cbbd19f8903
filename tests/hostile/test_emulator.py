"""Hostile requests against the emulator's request parsing, over real HTTP (issue 7 item 15).

Hypothesis generates hostile text (control and invisible characters, lone surrogates sent as
JSON escapes, right-to-left text, 4-byte CJK, very long strings), bodies of every JSON shape
and wrong type, deep nesting, raw bytes, wrong Content-Types, unknown paths and methods. Each
request goes to the OpenAI-compatible or the native interface of one emulator. The rules:

- the emulator never answers with a 5xx, never with a traceback, never with an internal error;
- every refusal comes in the interface's JSON error shape (OpenAI ``{"error": {...}}`` with a
  4xx status; native ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``).

The emulator runs on its own event loop in a thread, so the tests are plain synchronous
Hypothesis tests with a synchronous httpx client (fault markers ``[[...]]`` are kept out of
the generated text: they ask the emulator for errors on purpose).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.hunyuan.signing import sign_tc3

CFG = EmulatorConfig(image_job_steps=0.0, max_body_bytes=256 * 1024)
AUTH = {"Authorization": f"Bearer {CFG.api_key}"}
OPENAI_ROUTES = (
    "/v1/chat/completions",
    "/v1/wand/hunyuan-image/v3-generation",
    "/v1/api/image/lite",
)
NATIVE_ACTIONS = (
    "ChatCompletions",
    "GetTokenCount",
    "SubmitHunyuanImageJob",
    "QueryHunyuanImageJob",
    "TextToImageLite",
)

HOSTILE = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# --- the emulator, on its own loop ------------------------------------------------------


class Server:
    """An :class:`Emulator` served from a thread with its own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emu = Emulator(config=CFG)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emu.start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.emu.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def _no_internal_errors(server: Server) -> Iterator[None]:
    # Also catches failures the HTTP answer cannot show (a stream cut by an internal error).
    before = server.emu.stats.errors["internal"]
    yield
    assert server.emu.stats.errors["internal"] == before


# --- strategies ---------------------------------------------------------------------------

_CONTROL = st.characters(categories=("Cc",))
_INVISIBLE = st.sampled_from(
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e", "\u034f", "\u2061"]
)
_BIDI = st.sampled_from(
    ["\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f", "\u061c"]
)
_RTL = st.characters(min_codepoint=0x0590, max_codepoint=0x06FF)
_CJK4 = st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF)
_SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_ANY = st.characters(codec=None, exclude_categories=())


def _no_markers(text: str) -> str:
    # [[fault:...]] / [[long=N]] ask the emulator for errors or huge replies on purpose.
    return text.replace("[[", "[ [")


hostile_text = st.one_of(
    st.text(),
    st.text(st.one_of(_CONTROL, _INVISIBLE, _BIDI, _RTL, _CJK4, _SURROGATE), max_size=200),
    st.text(st.one_of(_ANY, _SURROGATE), max_size=100),
    # very long: a hostile unit repeated (up to ~600k characters; over every input limit)
    st.builds(
        lambda unit, n: unit * n,
        st.text(st.one_of(_CONTROL, _INVISIBLE, _CJK4, _SURROGATE, _ANY), min_size=1, max_size=4),
        st.integers(min_value=1, max_value=150_000),
    ),
).map(_no_markers)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> str:
    """Nested arrays/objects, sometimes far past any parser's recursion limit."""
    depth = draw(st.integers(min_value=1, max_value=50_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ("[{}, ", "]")]))
    return opener * depth + "0" + closer * depth


_BAD_NUMBERS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 400, "-0"])


def dumps_escaped(value: Any) -> bytes:
    """JSON with ASCII escapes: lone surrogates travel as ``\\udXXX`` escapes."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def openai_chat_body(
    text: str, *, role: str = "user", stream: bool = False, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "hy3-preview",
        "messages": [{"role": role, "content": text}],
        "stream": stream,
    }
    body.update(extra or {})
    return body


# --- the rules ----------------------------------------------------------------------------


def check_openai(resp: httpx.Response) -> None:
    """No 5xx, no trace; a refusal is 4xx ``{"error": {message, type, param, code}}``."""
    assert resp.status_code < 500, resp.text[:500]
    assert "Traceback" not in resp.text
    if resp.status_code == 200:
        ctype = resp.headers["content-type"]
        if ctype == "text/event-stream":
            assert resp.text.rstrip().endswith("data: [DONE]")
        else:
            assert ctype == "application/json"
            body = resp.json()
            assert "choices" in body or "data" in body
        return
    assert 400 <= resp.status_code < 500
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["code"], str)


def check_native(resp: httpx.Response) -> None:
    """No 5xx, no trace; every answer an API 3.0 envelope, errors never ``InternalError``."""
    assert resp.status_code < 500, resp.text[:500]
    assert "Traceback" not in resp.text
    if resp.headers["content-type"] == "text/event-stream":
        assert resp.status_code == 200
        return
    assert resp.status_code in (200, 404, 405, 413)
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"Response"} and isinstance(body["Response"].get("RequestId"), str)
    error = body["Response"].get("Error")
    if resp.status_code != 200:
        assert error is not None
    if error is not None:
        assert set(error) == {"Code", "Message"}
        assert isinstance(error["Code"], str) and error["Code"] != "InternalError"
        assert isinstance(error["Message"], str)


def post_openai(
    http: httpx.Client,
    server: Server,
    route: str,
    raw: bytes,
    *,
    content_type: str | None = "application/json",
) -> httpx.Response:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return http.post(
        server.emu.openai_base_url[: -len("/v1")] + route, content=raw, headers=headers
    )


def post_native(
    http: httpx.Client,
    server: Server,
    action: str,
    raw: bytes,
    *,
    content_type: str = "application/json",
) -> httpx.Response:
    host = f"127.0.0.1:{server.emu.port}"
    ts = int(time.time())
    sig = sign_tc3(
        secret_id=CFG.secret_id,
        secret_key=CFG.secret_key,
        service="hunyuan",
        host=host,
        timestamp=ts,
        content_type=content_type,
        body=raw,
    )
    headers = {
        "Content-Type": content_type,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Version": "2023-09-01",
        "X-TC-Timestamp": str(ts),
        "X-TC-Region": "ap-guangzhou",
        "Authorization": sig.authorization,
    }
    return http.post(server.emu.native_endpoint + "/", content=raw, headers=headers)


# --- tests --------------------------------------------------------------------------------


@HOSTILE
@given(
    text=hostile_text,
    role=st.sampled_from(["user", "system"]),
    stream=st.booleans(),
)
def test_openai_chat_takes_any_text(
    http: httpx.Client, server: Server, text: str, role: str, stream: bool
) -> None:
    body = openai_chat_body(text, role=role, stream=stream)
    if role == "system":
        body["messages"].append({"role": "user", "content": "hi"})
    check_openai(post_openai(http, server, OPENAI_ROUTES[0], dumps_escaped(body)))


@HOSTILE
@given(text=hostile_text, stream=st.booleans())
def test_native_chat_takes_any_text(
    http: httpx.Client, server: Server, text: str, stream: bool
) -> None:
    body = {
        "Model": "hunyuan-lite",
        "Messages": [{"Role": "user", "Content": text}],
        "Stream": stream,
    }
    check_native(post_native(http, server, "ChatCompletions", dumps_escaped(body)))


@HOSTILE
@given(route=st.sampled_from(OPENAI_ROUTES), body=json_values, field=st.text(max_size=20))
def test_openai_bodies_of_any_shape(
    http: httpx.Client, server: Server, route: str, body: Any, field: str
) -> None:
    # The body itself, and a plausible body with one field replaced by any JSON value.
    check_openai(post_openai(http, server, route, dumps_escaped(body)))
    plausible: dict[str, Any] = {
        "model": {"/v1/chat/completions": "hy3-preview"}.get(route, "hy-image-lite"),
        "messages": [{"role": "user", "content": "hi"}],
        "prompt": "a cat",
    }
    if route.endswith("v3-generation"):
        plausible["model"] = "hy-image-v3"
    key = field or next(iter(plausible))
    plausible[key] = body
    check_openai(post_openai(http, server, route, dumps_escaped(plausible)))


@HOSTILE
@given(action=st.sampled_from(NATIVE_ACTIONS), body=json_values, field=st.text(max_size=20))
def test_native_bodies_of_any_shape(
    http: httpx.Client, server: Server, action: str, body: Any, field: str
) -> None:
    check_native(post_native(http, server, action, dumps_escaped(body)))
    plausible: dict[str, Any] = {
        "ChatCompletions": {
            "Model": "hunyuan-lite",
            "Messages": [{"Role": "user", "Content": "x"}],
        },
        "GetTokenCount": {"Prompt": "x"},
        "QueryHunyuanImageJob": {"JobId": "x"},
    }.get(action, {"Prompt": "a cat"})
    key = field or next(iter(plausible))
    plausible[key] = body
    check_native(post_native(http, server, action, dumps_escaped(plausible)))


@HOSTILE
@given(
    raw=st.one_of(
        st.binary(max_size=2000),
        deep().map(str.encode),
        _BAD_NUMBERS.map(lambda n: b'{"model": "hy3-preview", "temperature": ' + n.encode() + b"}"),
        deep().map(lambda d: b'{"model": "hy3-preview", "messages": ' + d.encode() + b"}"),
        st.integers(min_value=1, max_value=400_000).map(lambda n: b'{"a": "' + b"x" * n + b'"}'),
    ),
    route=st.sampled_from(OPENAI_ROUTES),
    action=st.sampled_from(NATIVE_ACTIONS),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=gbk",
            "",
        ]
    ),
)
def test_raw_bodies_and_content_types(
    http: httpx.Client,
    server: Server,
    raw: bytes,
    route: str,
    action: str,
    content_type: str,
) -> None:
    check_openai(post_openai(http, server, route, raw, content_type=content_type or None))
    check_native(post_native(http, server, action, raw, content_type=content_type))


@HOSTILE
@given(
    path=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%"),
        max_size=40,
    ),
    method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST", "HEAD"]),
    prefix=st.sampled_from(["/v1/", "/", "/files/"]),
)
def test_any_path_and_method(
    http: httpx.Client, server: Server, path: str, method: str, prefix: str
) -> None:
    url = server.emu.native_endpoint + prefix + path
    resp = http.request(method, url, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code < 500 and "Traceback" not in resp.text
    if method == "HEAD" or resp.headers.get("content-type") == "application/xml":
        return  # HEAD has no body; /files answers like COS, in XML
    if resp.url.path == "/v1" or resp.url.path.startswith("/v1/"):
        check_openai(resp)
    else:
        check_native(resp)


# Field values HTTP allows (RFC 9110: visible ASCII, space, tab, obs-text 0x80-0xFF).
header_bytes = st.lists(
    st.one_of(st.integers(0x20, 0x7E), st.integers(0x80, 0xFF), st.just(0x09)), max_size=80
).map(lambda b: bytes(b).strip())


@HOSTILE
@given(
    name=st.sampled_from(
        ["Authorization", "X-TC-Action", "X-TC-Version", "X-TC-Timestamp", "X-TC-Region"]
    ),
    value=header_bytes,
    openai_name=st.sampled_from(["Authorization", "Content-Type"]),
)
def test_hostile_header_values(
    http: httpx.Client, server: Server, name: str, value: bytes, openai_name: str
) -> None:
    raw = dumps_escaped({"Model": "hunyuan-lite", "Messages": [{"Role": "user", "Content": "hi"}]})
    headers: dict[str, str | bytes] = {
        "Content-Type": "application/json",
        "X-TC-Action": "ChatCompletions",
        "X-TC-Version": "2023-09-01",
        "X-TC-Timestamp": str(int(time.time())),
        "Authorization": "TC3-HMAC-SHA256 Credential=x/2025-01-01/hunyuan/tc3_request, "
        "SignedHeaders=content-type;host, Signature=00",
    }
    headers[name] = value
    check_native(http.post(server.emu.native_endpoint + "/", content=raw, headers=headers))
    body = dumps_escaped(openai_chat_body("hi"))
    openai_headers: dict[str, str | bytes] = {**AUTH, "Content-Type": "application/json"}
    openai_headers[openai_name] = value
    check_openai(
        post_raw(http, server.emu.openai_base_url + "/chat/completions", body, openai_headers)
    )


def test_control_characters_in_headers_are_a_bad_request_not_a_crash(
    http: httpx.Client, server: Server
) -> None:
    # Not valid HTTP at all: aiohttp's parser answers 400 before any interface is reached (as
    # any gateway would); what matters is that it is a 4xx and nothing is logged as internal.
    resp = http.post(
        server.emu.openai_base_url + "/chat/completions",
        content=b"{}",
        headers={"Authorization": b"Bearer \x01"},
    )
    assert resp.status_code == 400


def post_raw(
    http: httpx.Client, url: str, body: bytes, headers: dict[str, str | bytes]
) -> httpx.Response:
    return http.post(url, content=body, headers=headers)
