"""HTTP plumbing shared by the emulator's interfaces: JSON bodies in, JSON replies and the
error shape of each interface out.

- OpenAI-compatible interface: errors are the HTTP status plus
  ``{"error": {"message", "type", "param": null, "code"}}`` (reference §4.3).
- Native API 3.0: errors are HTTP 200 with
  ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` (reference §2.4).

Every JSON reply's ``Content-Type`` is exactly ``application/json`` (no charset: the
tencentcloud SDK ignores ``Response.Error`` under any other value).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.hunyuan.emulator.faults import EmuError
from core.hunyuan.emulator.state import EmuState

__all__ = [
    "dumps",
    "json_response",
    "native_envelope",
    "native_error",
    "openai_error",
    "read_json",
]


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
    """The request body as a JSON object, or a 400 :class:`EmuError`."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise EmuError.invalid(f"Invalid JSON body: {err.__class__.__name__}") from err
    if not isinstance(body, dict):
        raise EmuError.invalid("The request body must be a JSON object.")
    return body


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
