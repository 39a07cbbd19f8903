"""The emulator's fault tables: which faults exist and what each error fault answers.

- :data:`FAULT_NAMES`: the names usable as ``[[fault:NAME]]`` markers and in
  ``EmulatorConfig.faults`` (:func:`parse_fault_spec` validates one).
- :data:`FAULT_ERRORS`: the documented error response of each error fault, for both wire
  formats (the native code and message; the OpenAI-compatible status, type, code, message).
- :class:`EmuError`: one refusal, described for both wire formats; :class:`Faults`: the
  faults in force for one request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAULT_ERRORS",
    "FAULT_NAMES",
    "IMAGE_ERROR_FAULTS",
    "EmuError",
    "Faults",
    "faults_from_config",
    "parse_fault_spec",
]

FAULT_NAMES = frozenset(
    {
        "429",
        "500",
        "badkey",
        "busy",
        "credit",
        "disconnect",
        "hang",
        "imagefail",
        "latency",
        "moderation",
        "sensitive",
        "stream_error",
    }
)


def parse_fault_spec(spec: str) -> tuple[str, str]:
    """``"latency=0.5"`` → ``("latency", "0.5")``; ``"429"`` → ``("429", "")``.

    Raises ``ValueError`` for an unknown name or a non-numeric latency.
    """
    name, _, value = spec.strip().partition("=")
    name = name.strip().lower()
    if name not in FAULT_NAMES:
        raise ValueError(f"unknown emulator fault {name!r}")
    if name == "latency":
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("latency must be a non-negative number of seconds")
    return name, value.strip()


def faults_from_config(specs: Iterable[str]) -> dict[str, str]:
    """Parse ``EmulatorConfig.faults`` (validated by ``parse_fault_spec``)."""
    return dict(parse_fault_spec(s) for s in specs)


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults in force for one request (server-wide merged with the request's markers)."""

    names: Mapping[str, str]
    latency: float
    long: int | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.names


#: The documented error response of each error fault (the emulator's contract table): the
#: native API's code and message, and the OpenAI-compatible status, type, code and message.
FAULT_ERRORS: Mapping[str, Mapping[str, Any]] = {
    "429": {
        "native_code": "RequestLimitExceeded",
        "native_message": "请求的次数超过了频率限制。",
        "status": 429,
        "err_type": "rate_limit_error",
        "code": "429001",
        "message": "Rate limit reached for requests per minute. Please retry later.",
        "headers": {"Retry-After": "1"},
        "stat": "429",
    },
    "busy": {
        "native_code": "FailedOperation.EngineServerLimitExceeded",
        "native_message": "引擎层请求超过限额：并发数已达上限。",
        "status": 429,
        "err_type": "rate_limit_error",
        "code": "429001",
        "message": "Concurrency limit exceeded: too many requests in flight for this account.",
        "stat": "busy",
    },
    "credit": {
        "native_code": "FailedOperation.ResourcePackExhausted",
        "native_message": "资源包余量已用尽，请购买资源包或开通后付费。",
        "status": 402,
        "err_type": "permission_error",
        "code": "401007",
        "message": "FREE_QUOTA_EXHAUSTED: the free quota of this account is used up.",
        "stat": "credit",
    },
    "moderation": {
        "native_code": "OperationDenied.TextIllegalDetected",
        "native_message": "文本内容包含违法违规信息，审核不通过。",
        "status": 451,
        "err_type": "content_filter_error",
        "code": "451001",
        "message": "The input was blocked by the content safety policy.",
        "stat": "moderation",
    },
    "badkey": {
        "native_code": "AuthFailure.SecretIdNotFound",
        "native_message": "SecretId 不存在，请输入正确的密钥。",
        "status": 401,
        "err_type": "authentication_error",
        "code": "401002",
        "message": "Invalid API key.",
        "stat": "badkey",
    },
    "500": {
        "native_code": "InternalError",
        "native_message": "内部错误。",
        "status": 500,
        "err_type": "upstream_error",
        "code": "500001",
        "message": "The upstream model service failed.",
        "native_http500": True,
        "stat": "http500",
    },
    "stream_error": {
        "native_code": "FailedOperation.EngineRequestTimeout",
        "native_message": "引擎层请求超时。",
        "status": 504,
        "err_type": "upstream_error",
        "code": "4001",
        "message": "model request timed out",
        "stat": "stream_error",
    },
    "imagefail": {
        "native_code": "FailedOperation.GenerateImageFailed",
        "native_message": "图片生成失败。",
        "status": 451,
        "err_type": "content_filter_error",
        "code": "451001",
        "message": "Image generation failed: the result did not pass the safety review.",
        "extra": {"upstream_code": "FailedOperation.GenerateImageFailed"},
        "stat": "imagefail",
    },
}


class EmuError(Exception):
    """A rejection, described for both wire formats.

    Native: ``native_code``/``native_message`` in an HTTP 200 error envelope (or, with
    ``native_http500``, a bare HTTP 500). OpenAI: ``status`` + ``{"error": {...}}`` with
    ``err_type``/``code``/``message``; ``headers`` are extra response headers.
    """

    def __init__(
        self,
        *,
        native_code: str,
        native_message: str,
        status: int,
        err_type: str,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        native_http500: bool = False,
        stat: str | None = None,
    ) -> None:
        super().__init__(message)
        self.native_code = native_code
        self.native_message = native_message
        self.status = status
        self.err_type = err_type
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        self.native_http500 = native_http500
        self.stat = stat

    @classmethod
    def invalid(
        cls,
        message: str,
        *,
        native_code: str = "InvalidParameter",
        code: str = "400001",
        status: int = 400,
        native_message: str | None = None,
        err_type: str = "invalid_request_error",
    ) -> EmuError:
        return cls(
            native_code=native_code,
            native_message=native_message or message,
            status=status,
            err_type=err_type,
            code=code,
            message=message,
        )

    @classmethod
    def fault(cls, name: str, *, limit: int = 0) -> EmuError:
        """The documented response of fault ``name`` (see ``FAULT_ERRORS``)."""
        spec = FAULT_ERRORS.get(name)
        if spec is None:
            raise ValueError(f"fault {name!r} has no error response")
        if name == "busy" and limit:
            spec = {**spec, "message": f"{spec['message'][:-1]} (limit {limit})."}
        return cls(**spec)


# Error faults checked (in this order) before an image is generated.
IMAGE_ERROR_FAULTS = ("busy", "badkey", "429", "credit", "moderation", "500")
