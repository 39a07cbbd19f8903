"""Image generation: TokenHub's synchronous endpoints and native jobs (client internal).

Both end the same way: the result is downloaded at once (result URLs expire within hours) and
its real format and size are read from the image header. Submissions retry only on errors that
prove no image was created (:func:`~core.hunyuan._http.submit_retryable`); a native job is
polled every ``image_poll_interval`` until ``image_deadline``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from collections.abc import Awaitable, Callable

import httpx
from PIL import Image, UnidentifiedImageError

from core.errors import HunyuanTimeout, ImageJobFailed, InvalidRequest, UpstreamError
from core.hunyuan._errors import image_job_error
from core.hunyuan._http import Exchange, submit_retryable
from core.hunyuan._image_wire import ImageOutput, NativeImageWire, TokenHubImageWire
from core.hunyuan._wire import loads_object
from core.types import ImageResult

__all__ = ["StatusCallback", "native_image", "parse_size", "probe_image", "tokenhub_image"]

StatusCallback = Callable[[str], Awaitable[None]]
"""Told ``"queued"``, ``"running"`` or ``"done"`` as an image job changes state."""

_NATIVE_JOB_STATES = {"1": "queued", "2": "running", "5": "done"}
_NATIVE_IMAGE_MODEL = "hunyuan-image"


def parse_size(size: str) -> tuple[int, int]:
    """``(width, height)`` from ``"WxH"`` (raises :class:`InvalidRequest`)."""
    width, sep, height = size.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise InvalidRequest(f"image size must look like '1024x1024', got {size!r}")
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        raise InvalidRequest(f"image size must be positive, got {size!r}")
    return w, h


def probe_image(data: bytes) -> tuple[str, int, int]:
    """``(mime, width, height)`` read from the image header (no full decode)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").upper()
            width, height = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ImageJobFailed("the image service returned data that is not an image") from err
    mime = Image.MIME.get(fmt, f"image/{fmt.lower() or 'octet-stream'}")
    return mime, width, height


def _image_output(wire: TokenHubImageWire, response: httpx.Response) -> ImageOutput:
    data = loads_object(response.content)
    if data is None:
        raise UpstreamError("image answer is not a JSON object")
    return wire.parse(data, response.headers)


async def tokenhub_image(
    exchange: Exchange,
    wire: TokenHubImageWire,
    *,
    model: str,
    prompt: str,
    width: int,
    height: int,
    seed: int | None,
    style: str | None,
    revise: bool | None,
    ai_mark: bool,
    footnote: str | None,
    on_status: StatusCallback | None,
) -> ImageResult:
    """One synchronous TokenHub generation (``on_status("running")`` before the call)."""
    deadline = exchange.deadline(exchange.config.total_timeout)
    if on_status is not None:
        await on_status("running")
    # A sync generation that timed out may still have been billed: same rule as a submit.
    output = await exchange.call(
        "image",
        lambda _ts: wire.request(
            model=model,
            prompt=prompt,
            width=width,
            height=height,
            seed=seed,
            style=style,
            revise=revise,
            ai_mark=ai_mark,
            footnote=footnote,
        ),
        wire.extract_error,
        lambda response: _image_output(wire, response),
        deadline=deadline,
        retry_if=submit_retryable,
    )
    if output.url is not None:
        data = await exchange.download(output.url, deadline=deadline)
    else:
        try:
            data = base64.b64decode(output.b64 or "", validate=True)
        except (binascii.Error, ValueError) as err:
            raise UpstreamError("image answer with invalid base64") from err
    mime, got_w, got_h = probe_image(data)
    return ImageResult(
        data=data,
        mime=mime,
        width=got_w,
        height=got_h,
        model=model,
        revised_prompt=output.revised_prompt,
        seed=seed,
    )


async def native_image(
    exchange: Exchange,
    wire: NativeImageWire,
    *,
    prompt: str,
    width: int,
    height: int,
    seed: int | None,
    style: str | None,
    revise: bool | None,
    ai_mark: bool,
    on_status: StatusCallback | None,
) -> ImageResult:
    """SubmitHunyuanImageJob, then QueryHunyuanImageJob until done, failed or the deadline."""
    config = exchange.config
    deadline = exchange.deadline(config.image_deadline)
    job_id = await exchange.call(
        "image submit",
        lambda ts: wire.submit_request(
            prompt=prompt,
            width=width,
            height=height,
            seed=seed,
            style=style,
            revise=revise,
            ai_mark=ai_mark,
            timestamp=ts,
        ),
        wire.extract_error,
        lambda response: wire.parse_submit(response.content),
        deadline=deadline,
        retry_if=submit_retryable,
    )
    last_state: str | None = None
    loop = asyncio.get_running_loop()
    while True:
        status = await exchange.call(
            "image query",
            lambda ts: wire.query_request(job_id, timestamp=ts),
            wire.extract_error,
            lambda response: wire.parse_query(response.content),
            deadline=deadline,
        )
        state = _NATIVE_JOB_STATES.get(status.code)
        if state is not None and state != last_state:
            last_state = state
            if on_status is not None:
                await on_status(state)
        if status.code == "4":
            raise image_job_error(
                status.error_code, status.error_message, request_id=status.request_id
            )
        if status.code == "5":
            break
        if loop.time() + config.image_poll_interval >= deadline:
            raise HunyuanTimeout(
                f"image job {job_id} not finished within {config.image_deadline}s",
                code=status.code,
            )
        await exchange.sleep(config.image_poll_interval)
    if not status.urls:
        raise ImageJobFailed("image job finished without a result image", code="5")
    data = await exchange.download(status.urls[0], deadline=deadline)
    mime, got_w, got_h = probe_image(data)
    return ImageResult(
        data=data,
        mime=mime,
        width=got_w,
        height=got_h,
        model=_NATIVE_IMAGE_MODEL,
        revised_prompt=status.revised_prompt,
        seed=seed,
    )
