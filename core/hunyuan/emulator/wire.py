"""HTTP plumbing shared by the emulator's interfaces: JSON bodies in, JSON replies and the
error shape of each interface out.

- OpenAI-compatible interface (paths under ``/v1``): errors are the HTTP status plus
  ``{"error": {"message", "type", "param": null, "code"}}`` (reference §4.3).
- Native API 3.0 (every other path): errors are HTTP 200 with
  ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` (reference §2.4); only answers
  of the HTTP layer (404 unknown path, 405 wrong method, 413 body too large) keep their status,
  with the same envelope as body.

Every JSON reply's ``Content-Type`` is exactly ``application/json`` (no charset: the
tencentcloud SDK ignores ``Response.Error`` under any other value).

What a request body must be (:func:`parse_json_object`), on both interfaces: sent as
``Content-Type: application/json`` (parameters allowed; a charset, if given, is UTF-8), a JSON
object nested at most :data:`MAX_JSON_DEPTH` levels, without ``NaN``/``Infinity`` (or numbers
that overflow to them) and with integers inside 64 bits. Lone surrogates in ``\\u`` escapes are
replaced by U+FFFD, as Go's and Java's JSON decoders do. Anything else is a :class:`BodyRefused`,
which each interface answers in its own error shape.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any, Literal, NoReturn

from aiohttp import web

from core.hunyuan.emulator.faults import EmuError
from core.hunyuan.emulator.state import EmuState

__all__ = [
    "MAX_JSON_DEPTH",
    "BodyRefused",
    "Interface",
    "check_content_type",
    "dumps",
    "http_error",
    "interface_of",
    "json_response",
    "native_envelope",
    "native_error",
    "openai_error",
    "parse_json_object",
    "read_json",
]

#: Deepest nesting a request body may have (real bodies need 5; tool schemas travel as strings).
MAX_JSON_DEPTH = 32
_INT_LIMIT = 2**63

Interface = Literal["openai", "native", "files"]


def interface_of(path: str) -> Interface:
    """Which interface answers ``path``: ``/v1/...`` OpenAI, ``/files/...`` COS, else native."""
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    if path.startswith("/files/"):
        return "files"
    return "native"


class BodyRefused(ValueError):
    """Why a request body was refused (plain English, safe to show: it never quotes the body)."""


def check_content_type(request: web.BaseRequest) -> None:
    """Raise :class:`BodyRefused` unless the body is declared as UTF-8 ``application/json``."""
    declared = request.headers.get("Content-Type", "")
    media, _, params = declared.partition(";")
    if media.strip().lower() != "application/json":
        shown = media.strip()[:60].encode("ascii", "replace").decode() or "none"
        raise BodyRefused(f"Content-Type must be application/json (got {shown})")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise BodyRefused("the only charset accepted is utf-8")


def _no_constant(name: str) -> NoReturn:
    raise BodyRefused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused("a number is too large")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise BodyRefused("an integer is too large")
    value = int(text)
    if not -_INT_LIMIT <= value < _INT_LIMIT:
        raise BodyRefused("an integer is too large")
    return value


def _fix_text(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates from \uD800-style escapes: pairs survive, lone halves become U+FFFD.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _fix_text(value)
    if isinstance(value, dict | list):
        if depth > MAX_JSON_DEPTH:
            raise BodyRefused(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            return {_fix_text(k): _clean(v, depth + 1) for k, v in value.items()}
        return [_clean(v, depth + 1) for v in value]
    return value


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object under the rules of the module docstring, or :class:`BodyRefused`.

    Never raises anything else: nesting too deep for the parser itself is refused too.
    """
    try:
        value = json.loads(
            raw, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except BodyRefused:
        raise
    except RecursionError as err:
        raise BodyRefused(f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise BodyRefused("the body is not valid JSON") from err
    if not isinstance(value, dict):
        raise BodyRefused("the body must be a JSON object")
    cleaned: dict[str, Any] = _clean(value, 1)
    return cleaned


def dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(
    obj: object, *, status: int = 200, headers: Mapping[str, str] = {}
) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json`` (no charset)."""
    return web.Response(
        status=status, body=dumps(obj), headers={**headers, "Content-Type": "application/json"}
    )


async def read_json(request: web.BaseRequest) -> dict[str, Any]:
    """The body of an OpenAI-compatible request as a JSON object, or a 400 :class:`EmuError`
    (see :func:`parse_json_object`; the Content-Type is checked first)."""
    try:
        check_content_type(request)
        return parse_json_object(await request.read())
    except BodyRefused as err:
        raise EmuError.invalid(f"Invalid request body: {err}.") from err


def openai_error(state: EmuState, err: EmuError) -> web.Response:
    """``err`` as an OpenAI-compatible error: its HTTP status and ``{"error": {...}}``."""
    state.stats.errors[err.stat or err.code] += 1
    payload = {"message": err.message, "type": err.err_type, "param": None, "code": err.code}
    return json_response(
        {"error": {**payload, **err.extra}}, status=err.status, headers=err.headers
    )


def native_envelope(payload: Mapping[str, Any], request_id: str) -> web.Response:
    """An API 3.0 reply: HTTP 200, ``{"Response": {..., "RequestId"}}``."""
    body = dumps({"Response": {**payload, "RequestId": request_id}})
    # Exactly "application/json": the SDK ignores Response.Error under any other value.
    return web.Response(status=200, body=body, headers={"Content-Type": "application/json"})


def native_error(state: EmuState, err: EmuError, request_id: str) -> web.Response:
    """``err`` as an API 3.0 error envelope (HTTP 200), or the bare 500 of the ``500`` fault."""
    if err.native_http500:
        state.stats.errors["http500"] += 1
        return web.Response(
            status=500, body=b"Internal Server Error", headers={"Content-Type": "text/plain"}
        )
    state.stats.errors[err.stat or err.native_code] += 1
    return native_envelope(
        {"Error": {"Code": err.native_code, "Message": err.native_message}}, request_id
    )


# --- answers of the HTTP layer ----------------------------------------------------------

# status → (OpenAI code, native code, native message); the English message comes from the caller.
_HTTP_ERRORS: Mapping[int, tuple[str, str, str]] = {
    404: ("not_found", "UnsupportedOperation", "请求路径不存在，API 3.0 的请求路径为 /。"),
    405: ("method_not_allowed", "UnsupportedProtocol", "HTTP 请求方法错误，仅支持 POST。"),
    413: ("request_too_large", "RequestSizeLimitExceeded", "请求包超过限制大小。"),
    500: ("internal_error", "InternalError", "内部错误。"),
}


def http_error(
    state: EmuState,
    interface: Interface,
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] = {},
) -> web.Response:
    """An answer of the HTTP layer (404, 405, 413, or 500 for an unexpected failure) in the
    error shape of ``interface``: OpenAI ``{"error": {...}}`` with ``status``; native envelope
    (with ``status``, except 500: the API layer answers ``InternalError`` with HTTP 200); COS
    XML for result files. ``message`` is English ASCII and never carries a traceback.
    """
    code, native_code, native_message = _HTTP_ERRORS.get(
        status, ("http_error", "InvalidParameter", "请求不合法。")
    )
    state.stats.errors["internal" if status >= 500 else f"http{status}"] += 1
    if interface == "openai":
        err_type = "server_error" if status >= 500 else "invalid_request_error"
        payload = {"message": message, "type": err_type, "param": None, "code": code}
        return json_response({"error": payload}, status=status, headers=headers)
    if interface == "files":
        xml_code = {404: "NoSuchKey", 405: "MethodNotAllowed"}.get(status, "InternalError")
        body = f"<Error><Code>{xml_code}</Code><Message>{message}</Message></Error>"
        return web.Response(
            status=status,
            body=body.encode(),
            headers={**headers, "Content-Type": "application/xml"},
        )
    envelope = dumps(
        {
            "Response": {
                "Error": {"Code": native_code, "Message": native_message},
                "RequestId": str(uuid.uuid4()),
            }
        }
    )
    return web.Response(
        status=200 if status >= 500 else status,
        body=envelope,
        headers={**headers, "Content-Type": "application/json"},
    )
