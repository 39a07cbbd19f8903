"""TokenHub's synchronous image endpoints and the result files they point at.

- ``POST /v1/wand/hunyuan-image/v3-generation`` (hy-image-v3) and ``POST /v1/api/image/lite``
  (hy-image-lite), Bearer auth, OpenAI-style errors (reference §4.4); synchronous, they answer
  with URLs served by the emulator itself, valid 12 h of emulator time.
- ``GET /files/<name>``: the generated files (TokenHub and native results); answers like Tencent
  COS, in XML: 404 ``NoSuchKey``, 403 ``AccessDenied`` once expired.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.hunyuan.emulator.faults import EmuError
from core.hunyuan.emulator.openai_compat import bearer_account
from core.hunyuan.emulator.render import mark_text_for
from core.hunyuan.emulator.state import STATE_KEY, EmuState
from core.hunyuan.emulator.text import strip_markers
from core.hunyuan.emulator.wire import json_response, openai_error, read_json

__all__ = [
    "LITE_RESOLUTIONS",
    "TOKENHUB_URL_TTL",
    "handle_file",
    "handle_image_lite",
    "handle_image_v3",
    "revise_prompt",
    "xml_error",
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
_V3_ROUTE = "/v1/wand/hunyuan-image/v3-generation"
_LITE_ROUTE = "/v1/api/image/lite"


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
        account = bearer_account(request, state)
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
        return openai_error(state, err)


async def handle_image_lite(request: web.Request) -> web.StreamResponse:
    """``POST /v1/api/image/lite`` (hy-image-lite, synchronous; URL or base64)."""
    state: EmuState = request.app[STATE_KEY]
    state.stats.requests[_LITE_ROUTE] += 1
    try:
        account = bearer_account(request, state)
        body = await read_json(request)
        state.stats.last_bodies[_LITE_ROUTE] = body
        _check_model(body, "hy-image-lite")
        prompt = _prompt(body, 256)
        negative = body.get("negative_prompt")
        if negative is not None and (not isinstance(negative, str) or len(negative) > 256):
            raise EmuError.invalid("negative_prompt must be a string of at most 256 characters.")
        resolution = body.get("resolution", "768:768")
        if not isinstance(resolution, str) or resolution not in LITE_RESOLUTIONS:
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
        return openai_error(state, err)


# --- result files ----------------------------------------------------------------------


def xml_error(status: int, code: str, message: str) -> web.Response:
    # Result URLs imitate Tencent COS, which answers in XML.
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return web.Response(status=status, body=body, headers={"Content-Type": "application/xml"})


async def handle_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.stats.requests["/files"] += 1
    stored = state.files.get(request.match_info["name"])
    if stored is None:
        return xml_error(404, "NoSuchKey", "The specified key does not exist.")
    if state.files.expired(stored):
        return xml_error(403, "AccessDenied", "Request has expired")
    return web.Response(body=stored.data, headers={"Content-Type": stored.mime})
