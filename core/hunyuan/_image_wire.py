"""Wire formats of the two image APIs (no policy, no I/O; client internal).

:class:`TokenHubImageWire` speaks TokenHub's synchronous endpoints (Bearer key),
:class:`NativeImageWire` the TC3-signed Submit/QueryHunyuanImageJob pair (reference §4.4, §5).
They live apart from the chat wire (:mod:`core.hunyuan._wire`, whose request, envelope and
error helpers they share) because the image API is configured independently of the chat API.
As there, errors are only *extracted* into :class:`~core.hunyuan._errors.WireError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from core.config import Secret
from core.errors import UpstreamError
from core.hunyuan._errors import WireError
from core.hunyuan._wire import (
    JSON_TYPE,
    NativeWire,
    WireRequest,
    drop_unset,
    first_item,
    loads_object,
    nonempty_str,
    openai_error,
    reveal_secret,
)

__all__ = [
    "TOKENHUB_IMAGE_PATHS",
    "ImageJobStatus",
    "ImageOutput",
    "NativeImageWire",
    "TokenHubImageWire",
]


@dataclass(frozen=True, slots=True)
class ImageOutput:
    """Where a generated image is: a URL to download, or inline base64 data."""

    url: str | None
    b64: str | None
    revised_prompt: str | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class ImageJobStatus:
    """One QueryHunyuanImageJob answer (``code`` is the string JobStatusCode)."""

    code: str
    urls: tuple[str, ...]
    revised_prompt: str | None
    error_code: str
    error_message: str
    request_id: str | None


TOKENHUB_IMAGE_PATHS: Mapping[str, str] = {
    "hy-image-v3": "/wand/hunyuan-image/v3-generation",
    "hy-image-lite": "/api/image/lite",
}


class TokenHubImageWire:
    """TokenHub's synchronous image endpoints (Bearer key; ``base_url`` ends in ``/v1``).

    hy-image-v3 takes ``size`` "WxH", ``seed``, ``footnote``, ``revise``; hy-image-lite takes the
    TextToImageLite parameters in snake_case (``resolution`` "W:H", ``logo_add``,
    ``rsp_img_type``). The AI mark is on by default; ``logo_add: 0`` is sent only to remove it.
    """

    def __init__(self, *, base_url: str, api_key: Secret) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key

    @staticmethod
    def supports(model: str) -> bool:
        return model in TOKENHUB_IMAGE_PATHS

    def request(
        self,
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
    ) -> WireRequest:
        key = reveal_secret(self._api_key, "API key")
        body: dict[str, object]
        if model == "hy-image-lite":
            body = {
                "model": model,
                "prompt": prompt,
                "resolution": f"{width}:{height}",
                "style": style,
                "seed": seed,
                "rsp_img_type": "url",
                "logo_add": 1 if ai_mark else 0,
            }
        else:
            body = {
                "model": model,
                "prompt": prompt,
                "size": f"{width}x{height}",
                "seed": seed,
                "style": style,
                "revise": revise,
                "footnote": footnote,
                "logo_add": None if ai_mark else 0,
            }
        headers = {"Authorization": f"Bearer {key}", "Content-Type": JSON_TYPE, "Accept": JSON_TYPE}
        content = json.dumps(drop_unset(body), ensure_ascii=False).encode("utf-8")
        return WireRequest("POST", self._base + TOKENHUB_IMAGE_PATHS[model], headers, content)

    @staticmethod
    def extract_error(
        status: int, headers: httpx.Headers, body: bytes, *, now: float
    ) -> WireError | None:
        if status == 200:
            data = loads_object(body)
            if data is not None and data.get("error"):
                return openai_error(status, headers, data, now=now)
            return None
        return openai_error(status, headers, body, now=now)

    @staticmethod
    def parse(data: Mapping[str, Any], headers: httpx.Headers) -> ImageOutput:
        item = first_item(data, "data")
        url = nonempty_str(item.get("url"))
        b64 = (
            nonempty_str(item.get("b64_json"))
            or nonempty_str(item.get("base64"))
            or nonempty_str(item.get("image"))
        )
        if url is None and b64 is None:
            raise UpstreamError("image answer without url or data")
        return ImageOutput(
            url=url,
            b64=b64,
            revised_prompt=nonempty_str(item.get("revised_prompt")),
            request_id=nonempty_str(data.get("request_id")) or nonempty_str(data.get("id")),
        )


class NativeImageWire:
    """SubmitHunyuanImageJob / QueryHunyuanImageJob (string JobStatusCode "1","2","4","5")."""

    def __init__(self, *, wire: NativeWire) -> None:
        self._wire = wire

    def submit_request(
        self,
        *,
        prompt: str,
        width: int,
        height: int,
        seed: int | None,
        style: str | None,
        revise: bool | None,
        ai_mark: bool,
        timestamp: int,
    ) -> WireRequest:
        payload = drop_unset(
            {
                "Prompt": prompt,
                "Style": style,
                "Resolution": f"{width}:{height}",
                "Revise": None if revise is None else int(revise),
                "Seed": seed,
                "LogoAdd": 1 if ai_mark else 0,
            }
        )
        return self._wire.request("SubmitHunyuanImageJob", payload, timestamp=timestamp)

    def query_request(self, job_id: str, *, timestamp: int) -> WireRequest:
        return self._wire.request("QueryHunyuanImageJob", {"JobId": job_id}, timestamp=timestamp)

    def extract_error(
        self, status: int, headers: httpx.Headers, body: bytes, *, now: float
    ) -> WireError | None:
        return self._wire.extract_error(status, headers, body, now=now)

    def parse_submit(self, body: bytes) -> str:
        job_id = nonempty_str(self._wire.response(body).get("JobId"))
        if job_id is None:
            raise UpstreamError("SubmitHunyuanImageJob answer without JobId")
        return job_id

    def parse_query(self, body: bytes) -> ImageJobStatus:
        resp = self._wire.response(body)
        code = resp.get("JobStatusCode")
        if not isinstance(code, str | int) or isinstance(code, bool):
            raise UpstreamError("QueryHunyuanImageJob answer without JobStatusCode")
        images = resp.get("ResultImage")
        urls = (
            tuple(u for u in images if isinstance(u, str) and u) if isinstance(images, list) else ()
        )
        revised = resp.get("RevisedPrompt")
        revised_prompt = (
            nonempty_str(revised[0])
            if isinstance(revised, list) and revised
            else nonempty_str(revised)
        )
        return ImageJobStatus(
            code=str(code),
            urls=urls,
            revised_prompt=revised_prompt,
            error_code=str(resp.get("JobErrorCode") or ""),
            error_message=str(resp.get("JobErrorMsg") or ""),
            request_id=nonempty_str(resp.get("RequestId")),
        )
