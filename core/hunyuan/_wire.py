"""Wire specifics of the two Hunyuan API flavours (no policy, no I/O).

:class:`BaseChatBackend` turns a normalised message list into request bytes and parses
responses and stream events; :class:`OpenAIChatBackend` speaks the OpenAI-compatible
chat-completions format (TokenHub / legacy), :class:`NativeChatBackend` the TC3-signed API 3.0.
:class:`NativeWire` signs and unwraps any API 3.0 action. The image wire formats live in
:mod:`core.hunyuan._image_wire` (the image API is configured independently of the chat API)
and share the helpers exported here (request, envelope, error extraction, secret reveal).

Everything here is pure: the client passes the timestamp, sends the request, and decides about
retries, timeouts and which exception to raise (errors are *extracted* into
:class:`~core.hunyuan._errors.WireError`, never mapped here).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.config import Secret
from core.errors import AuthError, UpstreamError
from core.hunyuan._errors import WireError, parse_retry_after
from core.hunyuan.signing import sign_tc3
from core.types import ChatMessage, Usage

__all__ = [
    "JSON_TYPE",
    "NATIVE_VERSION",
    "BaseChatBackend",
    "ChatParams",
    "NativeChatBackend",
    "NativeWire",
    "OpenAIChatBackend",
    "ParsedChat",
    "StreamEvent",
    "WireRequest",
    "drop_unset",
    "first_item",
    "loads_object",
    "nonempty_str",
    "openai_error",
    "reveal_secret",
]

NATIVE_VERSION = "2023-09-01"
NATIVE_SERVICE = "hunyuan"
JSON_TYPE = "application/json"
_SNIPPET = 300


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One HTTP request, fully built (``content`` are the exact bytes that were signed)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    content: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChatParams:
    """Generation parameters after defaults; ``None`` means "omit from the body"."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParsedChat:
    """A parsed non-stream answer (usage ``None`` when the service did not report it)."""

    text: str
    finish_reason: str | None
    usage: Usage | None
    note: str | None
    request_id: str | None
    model: str | None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One parsed SSE event. ``done`` marks OpenAI's ``[DONE]``; ``error`` an in-stream error."""

    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    note: str | None = None
    request_id: str | None = None
    model: str | None = None
    done: bool = False
    error: WireError | None = None


def drop_unset(values: Mapping[str, object]) -> dict[str, object]:
    """``values`` without ``None`` entries (unset parameters are omitted, never sent as null)."""
    return {k: v for k, v in values.items() if v is not None}


def loads_object(body: bytes | str) -> dict[str, Any] | None:
    """Parse a JSON object; ``None`` if ``body`` is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _snippet(body: bytes) -> str:
    return body[:_SNIPPET].decode("utf-8", "replace")


def nonempty_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def first_item(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    choices = data.get(key)
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def _usage(raw: object, prompt: str, completion: str, total: str) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    p, c = _int(raw.get(prompt)), _int(raw.get(completion))
    t = _int(raw.get(total)) or p + c
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=t)


def reveal_secret(secret: Secret, what: str) -> str:
    value = secret.reveal()
    if not value:
        raise AuthError(f"no {what} configured")
    return value


class BaseChatBackend(ABC):
    """Wire format of one chat API. Subclasses are pure translators; the client owns policy.

    ``ends_at_finish``: whether a stream is complete at the first event with a finish reason
    (native) or may still carry usage and ``[DONE]`` after it (OpenAI). ``counts_tokens``:
    whether :meth:`token_count_request` is available (native GetTokenCount).
    """

    ends_at_finish: bool = False
    counts_tokens: bool = False

    @abstractmethod
    def chat_request(
        self,
        messages: Sequence[ChatMessage],
        params: ChatParams,
        *,
        stream: bool,
        timestamp: int,
    ) -> WireRequest:
        """The request for one chat call (raises :class:`AuthError` if credentials are unset)."""

    @abstractmethod
    def extract_error(
        self, status: int, headers: httpx.Headers, body: bytes, *, now: float
    ) -> WireError | None:
        """The error a complete (non-SSE) response reports, or ``None`` for a success."""

    @abstractmethod
    def parse_chat(self, data: Mapping[str, Any], headers: httpx.Headers) -> ParsedChat:
        """Parse a successful non-stream body (already checked by :meth:`extract_error`)."""

    @abstractmethod
    def parse_stream_event(self, data: str, headers: httpx.Headers) -> StreamEvent:
        """Parse the ``data`` of one SSE event (raises :class:`UpstreamError` if garbled)."""

    def token_count_request(self, text: str, *, timestamp: int) -> WireRequest | None:
        """A GetTokenCount request, or ``None`` when this API has no token counter."""
        return None

    def parse_token_count(self, data: Mapping[str, Any]) -> int:
        """The token count from a GetTokenCount answer."""
        raise NotImplementedError


# --- OpenAI-compatible --------------------------------------------------------------------


def openai_error(
    status: int | None,
    headers: httpx.Headers | None,
    body: bytes | Mapping[str, Any],
    *,
    now: float,
) -> WireError:
    data = body if isinstance(body, Mapping) else loads_object(body)
    err = data.get("error") if data is not None else None
    retry_after = (
        parse_retry_after(headers.get("retry-after"), now=now) if headers is not None else None
    )
    request_id = headers.get("x-request-id") if headers is not None else None
    if isinstance(err, dict):
        code = err.get("code")
        return WireError(
            source="http" if status is not None else "stream",
            code=str(code) if code is not None else "",
            message=str(err.get("message") or ""),
            status=status,
            error_type=str(err.get("type") or ""),
            request_id=nonempty_str(err.get("request_id"))
            or nonempty_str(err.get("id"))
            or request_id,
            retry_after=retry_after,
        )
    message = str(err) if isinstance(err, str) else ""
    if not message and not isinstance(body, Mapping):
        message = _snippet(body)
    return WireError(
        source="http" if status is not None else "stream",
        message=message,
        status=status,
        request_id=request_id,
        retry_after=retry_after,
    )


class OpenAIChatBackend(BaseChatBackend):
    """``POST {base_url}/chat/completions`` with a Bearer key; SSE ends with ``[DONE]``."""

    ends_at_finish = False

    def __init__(self, *, base_url: str, api_key: Secret, extra_body: Mapping[str, object]) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._extra_body = dict(extra_body)

    def chat_request(
        self,
        messages: Sequence[ChatMessage],
        params: ChatParams,
        *,
        stream: bool,
        timestamp: int,
    ) -> WireRequest:
        key = reveal_secret(self._api_key, "API key")
        body: dict[str, object] = {
            "model": params.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        body.update(self._extra_body)
        body.update(params.extra)
        body = drop_unset(body)
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": JSON_TYPE,
            "Accept": "text/event-stream" if stream else JSON_TYPE,
        }
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return WireRequest("POST", self._url, headers, content)

    def extract_error(
        self, status: int, headers: httpx.Headers, body: bytes, *, now: float
    ) -> WireError | None:
        if status == 200:
            data = loads_object(body)
            if data is not None and data.get("error"):
                return openai_error(status, headers, data, now=now)
            return None
        return openai_error(status, headers, body, now=now)

    def parse_chat(self, data: Mapping[str, Any], headers: httpx.Headers) -> ParsedChat:
        choice = first_item(data, "choices")
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise UpstreamError("chat completion without message content")
        return ParsedChat(
            text=content,
            finish_reason=nonempty_str(choice.get("finish_reason")),
            usage=_usage(data.get("usage"), "prompt_tokens", "completion_tokens", "total_tokens"),
            note=nonempty_str(data.get("note")),
            request_id=nonempty_str(data.get("id")) or headers.get("x-request-id"),
            model=nonempty_str(data.get("model")),
        )

    def parse_stream_event(self, data: str, headers: httpx.Headers) -> StreamEvent:
        if data.strip() == "[DONE]":
            return StreamEvent(done=True)
        obj = loads_object(data)
        if obj is None:
            raise UpstreamError("malformed stream event")
        if obj.get("error"):
            return StreamEvent(error=openai_error(None, None, obj, now=0.0))
        choice = first_item(obj, "choices")
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        return StreamEvent(
            delta=content if isinstance(content, str) else "",
            finish_reason=nonempty_str(choice.get("finish_reason")),
            usage=_usage(obj.get("usage"), "prompt_tokens", "completion_tokens", "total_tokens"),
            note=nonempty_str(obj.get("note")),
            request_id=nonempty_str(obj.get("id")),
            model=nonempty_str(obj.get("model")),
        )


# --- native API 3.0 -----------------------------------------------------------------------


class NativeWire:
    """Builds TC3-signed API 3.0 requests and unwraps ``{"Response": ...}`` envelopes.

    Signs ``content-type``, ``host`` and ``x-tc-action`` (Tencent's guide style), so a signature
    cannot be replayed against another action. The body is ``json.dumps`` of the payload with
    the SDK's default separators; those exact bytes are signed and sent.
    """

    def __init__(
        self, *, endpoint: str, secret_id: Secret, secret_key: Secret, region: str
    ) -> None:
        self._url = endpoint.rstrip("/") + "/"
        self._host = httpx.URL(self._url).netloc.decode("ascii")
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._region = region

    def request(
        self, action: str, payload: Mapping[str, object], *, timestamp: int, stream: bool = False
    ) -> WireRequest:
        secret_id = reveal_secret(self._secret_id, "SecretId")
        secret_key = reveal_secret(self._secret_key, "SecretKey")
        content = json.dumps(dict(payload)).encode("utf-8")
        signature = sign_tc3(
            secret_id=secret_id,
            secret_key=secret_key,
            service=NATIVE_SERVICE,
            host=self._host,
            timestamp=timestamp,
            content_type=JSON_TYPE,
            body=content,
            extra_headers={"X-TC-Action": action},
        )
        headers = {
            "Authorization": signature.authorization,
            "Content-Type": JSON_TYPE,
            "Host": self._host,
            "X-TC-Action": action,
            "X-TC-Version": NATIVE_VERSION,
            "X-TC-Timestamp": str(timestamp),
            "Accept": "text/event-stream" if stream else JSON_TYPE,
        }
        if self._region:
            headers["X-TC-Region"] = self._region
        return WireRequest("POST", self._url, headers, content)

    @staticmethod
    def extract_error(
        status: int, headers: httpx.Headers, body: bytes, *, now: float
    ) -> WireError | None:
        """Non-200 → an HTTP error (the SDK's ServerNetworkError); 200 → ``Response.Error``."""
        if status != 200:
            return WireError(
                source="http",
                message=_snippet(body),
                status=status,
                request_id=headers.get("x-tc-requestid"),
                retry_after=parse_retry_after(headers.get("retry-after"), now=now),
            )
        data = loads_object(body)
        response = data.get("Response") if data is not None else None
        if not isinstance(response, dict):
            return WireError(source="http", message="malformed API 3.0 envelope", status=502)
        error = response.get("Error")
        if isinstance(error, dict):
            return WireError(
                source="native",
                code=str(error.get("Code") or ""),
                message=str(error.get("Message") or ""),
                request_id=nonempty_str(response.get("RequestId")),
            )
        return None

    @staticmethod
    def response(body: bytes) -> Mapping[str, Any]:
        """The ``Response`` object of a body :meth:`extract_error` accepted."""
        data = loads_object(body) or {}
        response = data.get("Response")
        return response if isinstance(response, dict) else {}


class NativeChatBackend(BaseChatBackend):
    """API 3.0 ``ChatCompletions`` / ``GetTokenCount``; a stream ends at a non-empty FinishReason.

    Native ChatCompletions has no max-tokens field, so ``max_tokens`` is not sent.
    """

    ends_at_finish = True
    counts_tokens = True

    def __init__(self, *, wire: NativeWire, extra_body: Mapping[str, object]) -> None:
        self._wire = wire
        self._extra_body = dict(extra_body)

    def chat_request(
        self,
        messages: Sequence[ChatMessage],
        params: ChatParams,
        *,
        stream: bool,
        timestamp: int,
    ) -> WireRequest:
        body: dict[str, object] = {
            "Model": params.model,
            "Messages": [{"Role": m.role, "Content": m.content} for m in messages],
            "Temperature": params.temperature,
            "TopP": params.top_p,
        }
        body.update(self._extra_body)
        body.update(params.extra)
        body = drop_unset(body)
        if stream:
            body["Stream"] = True
        else:
            body.pop("Stream", None)
        return self._wire.request("ChatCompletions", body, timestamp=timestamp, stream=stream)

    def extract_error(
        self, status: int, headers: httpx.Headers, body: bytes, *, now: float
    ) -> WireError | None:
        return self._wire.extract_error(status, headers, body, now=now)

    def parse_chat(self, data: Mapping[str, Any], headers: httpx.Headers) -> ParsedChat:
        response = data.get("Response")
        resp: Mapping[str, Any] = response if isinstance(response, dict) else {}
        choice = first_item(resp, "Choices")
        message = choice.get("Message")
        content = message.get("Content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise UpstreamError("ChatCompletions answer without Message.Content")
        return ParsedChat(
            text=content,
            finish_reason=nonempty_str(choice.get("FinishReason")),
            usage=_usage(resp.get("Usage"), "PromptTokens", "CompletionTokens", "TotalTokens"),
            note=nonempty_str(resp.get("Note")),
            request_id=nonempty_str(resp.get("RequestId")) or nonempty_str(resp.get("Id")),
            model=None,
        )

    def parse_stream_event(self, data: str, headers: httpx.Headers) -> StreamEvent:
        obj = loads_object(data)
        if obj is None:
            raise UpstreamError("malformed stream event")
        request_id = headers.get("x-tc-requestid") or nonempty_str(obj.get("Id"))
        envelope = obj.get("Response")
        if isinstance(envelope, dict) and isinstance(envelope.get("Error"), dict):
            error = envelope["Error"]
            return StreamEvent(
                error=WireError(
                    source="native",
                    code=str(error.get("Code") or ""),
                    message=str(error.get("Message") or ""),
                    request_id=nonempty_str(envelope.get("RequestId")) or request_id,
                )
            )
        error_msg = obj.get("ErrorMsg")
        if isinstance(error_msg, dict) and error_msg.get("Code") not in (None, 0, ""):
            return StreamEvent(
                error=WireError(
                    source="stream",
                    code=str(error_msg.get("Code")),
                    message=str(error_msg.get("Msg") or ""),
                    request_id=request_id,
                )
            )
        choice = first_item(obj, "Choices")
        delta = choice.get("Delta")
        content = delta.get("Content") if isinstance(delta, dict) else None
        return StreamEvent(
            delta=content if isinstance(content, str) else "",
            finish_reason=nonempty_str(choice.get("FinishReason")),
            usage=_usage(obj.get("Usage"), "PromptTokens", "CompletionTokens", "TotalTokens"),
            note=nonempty_str(obj.get("Note")),
            request_id=request_id,
        )

    def token_count_request(self, text: str, *, timestamp: int) -> WireRequest | None:
        return self._wire.request("GetTokenCount", {"Prompt": text}, timestamp=timestamp)

    def parse_token_count(self, data: Mapping[str, Any]) -> int:
        response = data.get("Response")
        count = response.get("TokenCount") if isinstance(response, dict) else None
        if isinstance(count, bool) or not isinstance(count, int):
            raise UpstreamError("GetTokenCount answer without TokenCount")
        return count
