"""The one table from Hunyuan error codes and HTTP statuses to :mod:`core.errors` types.

Backends only *extract* what the wire said into a :class:`WireError` (which API, code, HTTP
status, message, request id, ``Retry-After``); :func:`map_error` alone decides the exception
type, so the mapping lives here once (reference ``hunyuan-api.md`` §7 for native codes, §4.3 for
the OpenAI-compatible statuses and codes, §3.3 for the stream ``ErrorMsg`` codes).

Lookup order:
- native envelope errors: exact code, then the longest matching dotted prefix, then
  :class:`HunyuanError` itself (unknown codes are not retried);
- OpenAI-style errors: exact ``code``, then HTTP status, then the error ``type``, then by
  status class (other 4xx → :class:`InvalidRequest`, other 5xx → :class:`UpstreamError`);
- stream errors: ``ErrorMsg.Code`` 4000/4001, else as an OpenAI-style error without status.

A refusal of a prompt over the model's context window (OpenAI-style code
``context_length_exceeded``, or an :class:`InvalidRequest` whose message is about the input's
length, as native ``InvalidParameter`` says it) becomes :class:`ContextLengthExceeded`, which is
also an :class:`~core.errors.InputTooLong`: the user is told the message is too long for the
model, and it is never retried.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from core.errors import (
    AuthError,
    ContextLengthExceeded,
    HunyuanError,
    HunyuanTimeout,
    ImageJobFailed,
    InvalidRequest,
    ModelUnavailable,
    ModerationRefused,
    OutOfCredit,
    RateLimited,
    ServerBusy,
    SignatureExpired,
    UpstreamError,
)

__all__ = [
    "HTTP_STATUS_ERRORS",
    "IMAGE_INPUT_CODES",
    "NATIVE_ERROR_CODES",
    "NATIVE_ERROR_PREFIXES",
    "OPENAI_ERROR_CODES",
    "OPENAI_ERROR_TYPES",
    "STREAM_ERROR_CODES",
    "WireError",
    "image_job_error",
    "map_error",
    "parse_retry_after",
]

ErrorType = type[HunyuanError]

# reference §7, row by row.
NATIVE_ERROR_CODES: Mapping[str, ErrorType] = MappingProxyType(
    {
        # concurrency overflow (retry with jittered backoff)
        "FailedOperation.EngineServerLimitExceeded": ServerBusy,
        # API rate / frequency limits
        "RequestLimitExceeded": RateLimited,
        "RequestLimitExceeded.UinLimitExceeded": RateLimited,
        "RequestLimitExceeded.IPLimitExceeded": RateLimited,
        "RequestLimitExceeded.GlobalRegionUinLimitExceeded": RateLimited,
        "LimitExceeded": RateLimited,
        # engine timeout / internal failures
        "FailedOperation.EngineRequestTimeout": HunyuanTimeout,
        "FailedOperation.EngineServerError": UpstreamError,
        "InternalError": UpstreamError,
        "ServiceUnavailable": UpstreamError,
        # moderation
        "OperationDenied.TextIllegalDetected": ModerationRefused,
        "OperationDenied.ImageIllegalDetected": ModerationRefused,
        "FailedOperation.GenerateImageFailed": ImageJobFailed,
        # prepaid / free quota exhausted, arrears, service stopped
        "FailedOperation.ResourcePackExhausted": OutOfCredit,
        "FailedOperation.FreeResourcePackExhausted": OutOfCredit,
        "ResourceInsufficient.ChargeResourceExhaust": OutOfCredit,
        "ResourceUnavailable.InArrears": OutOfCredit,
        "ResourceUnavailable.LowBalance": OutOfCredit,
        "FailedOperation.ServiceStopArrears": OutOfCredit,
        "ResourceUnavailable.StopUsing": OutOfCredit,
        "FailedOperation.ServiceStop": OutOfCredit,
        # account not activated / not verified: the operator must fix the account
        "FailedOperation.ServiceNotActivated": AuthError,
        "ResourceUnavailable.NotExist": AuthError,
        "FailedOperation.UserUnAuthError": AuthError,
        "FailedOperation.PartnerAccountUnSupport": AuthError,
        # credentials / permissions
        "AuthFailure.SignatureFailure": AuthError,
        "AuthFailure.SecretIdNotFound": AuthError,
        "AuthFailure.InvalidSecretId": AuthError,
        "AuthFailure.InvalidAuthorization": AuthError,
        "AuthFailure.TokenFailure": AuthError,
        "AuthFailure.UnauthorizedOperation": AuthError,
        "UnauthorizedOperation": AuthError,
        "AuthFailure.SignatureExpire": SignatureExpired,
        # bad requests (a bug on our side)
        "InvalidParameter": InvalidRequest,
        "InvalidParameter.InvalidParameter": InvalidRequest,
        "InvalidParameterValue": InvalidRequest,
        "InvalidParameterValue.ParameterValueError": InvalidRequest,
        "MissingParameter": InvalidRequest,
        "UnknownParameter": InvalidRequest,
        "RequestSizeLimitExceeded": InvalidRequest,
        # unknown / retired model, action or resource
        "InvalidParameterValue.Model": ModelUnavailable,
        "ResourceNotFound": ModelUnavailable,
        "ActionOffline": ModelUnavailable,
        "InvalidAction": ModelUnavailable,
        # image inputs that could not be read
        "InvalidParameter.ImageCountLimitExceededError": InvalidRequest,
        "InvalidParameter.ImageProcessingFailureError": InvalidRequest,
        "InvalidParameterValue.ImageRequestError": InvalidRequest,
        "FailedOperation.DownloadError": InvalidRequest,
        "FailedOperation.ImageDownloadError": InvalidRequest,
        "FailedOperation.ImageDecodeFailed": InvalidRequest,
        # console / billing operations: not something a retry fixes
        "FailedOperation.SetPayModeExceed": InvalidRequest,
        "FailedOperation.ConsoleServerError": UpstreamError,
    }
)

# Unknown sub-codes fall back to their family (longest prefix wins).
NATIVE_ERROR_PREFIXES: tuple[tuple[str, ErrorType], ...] = (
    ("AuthFailure.SignatureExpire", SignatureExpired),
    ("AuthFailure", AuthError),
    ("UnauthorizedOperation", AuthError),
    ("RequestLimitExceeded", RateLimited),
    ("LimitExceeded", RateLimited),
    ("InvalidParameterValue.Model", ModelUnavailable),
    ("InvalidParameter", InvalidRequest),
    ("InvalidParameterValue", InvalidRequest),
    ("MissingParameter", InvalidRequest),
    ("UnknownParameter", InvalidRequest),
    ("OperationDenied", ModerationRefused),
    ("ResourceInsufficient", OutOfCredit),
    ("ResourceUnavailable", OutOfCredit),
    ("ResourceNotFound", ModelUnavailable),
    ("InternalError", UpstreamError),
    ("ServiceUnavailable", UpstreamError),
)

IMAGE_INPUT_CODES = frozenset(
    {
        "InvalidParameter.ImageCountLimitExceededError",
        "InvalidParameter.ImageProcessingFailureError",
        "InvalidParameterValue.ImageRequestError",
        "FailedOperation.DownloadError",
        "FailedOperation.ImageDownloadError",
        "FailedOperation.ImageDecodeFailed",
    }
)
_IMAGE_INPUT_MESSAGE = "The image couldn't be read. Please try a different one."
_TOO_LARGE_MESSAGE = "The request is too large for the model. Please shorten it."

# reference §4.3 (TokenHub error object) and the legacy OpenAI-compatible codes.
OPENAI_ERROR_CODES: Mapping[str, ErrorType] = MappingProxyType(
    {
        "1001": InvalidRequest,  # legacy: role order / parameter error
        "400001": InvalidRequest,
        "400002": InvalidRequest,
        "400004": InvalidRequest,
        "401002": AuthError,
        "401007": OutOfCredit,  # FREE_QUOTA_EXHAUSTED
        "401008": OutOfCredit,
        "403004": OutOfCredit,
        "403001": AuthError,
        "403002": AuthError,
        "403005": AuthError,
        "429001": RateLimited,
        "451001": ModerationRefused,
        "502001": UpstreamError,
        # names used by OpenAI-compatible gateways
        "model_not_found": ModelUnavailable,
        "invalid_api_key": AuthError,
        "insufficient_quota": OutOfCredit,
        "rate_limit_exceeded": RateLimited,
        "content_filter": ModerationRefused,
    }
)

HTTP_STATUS_ERRORS: Mapping[int, ErrorType] = MappingProxyType(
    {
        400: InvalidRequest,
        401: AuthError,
        402: OutOfCredit,
        403: AuthError,
        404: ModelUnavailable,
        408: HunyuanTimeout,
        413: InvalidRequest,
        422: InvalidRequest,
        429: RateLimited,
        451: ModerationRefused,
        500: UpstreamError,
        502: UpstreamError,
        503: UpstreamError,
        504: HunyuanTimeout,
    }
)

OPENAI_ERROR_TYPES: Mapping[str, ErrorType] = MappingProxyType(
    {
        "invalid_request_error": InvalidRequest,
        "authentication_error": AuthError,
        "permission_error": AuthError,
        "rate_limit_error": RateLimited,
        "content_filter_error": ModerationRefused,
        "upstream_error": UpstreamError,
        "server_error": UpstreamError,
        "api_error": UpstreamError,
        "not_found_error": ModelUnavailable,
        "timeout_error": HunyuanTimeout,
    }
)

# reference §3.3: ErrorMsg.Code in a native stream chunk.
STREAM_ERROR_CODES: Mapping[str, ErrorType] = MappingProxyType(
    {"4000": UpstreamError, "4001": HunyuanTimeout}
)

_MAX_MESSAGE = 300

# What a refusal of an over-long input says (the emulator's wording, OpenAI's, and the usual
# Chinese ones). Not "长度不能超过", which native uses for the number of messages and for the
# length of an image prompt.
_TOO_LONG_WORDS = (
    "context length",
    "context window",
    "context_length",
    "too long",
    "过长",
    "上下文长度",
    "输入上限",
)


@dataclass(frozen=True, slots=True)
class WireError:
    """What the wire said about a failure, before it becomes an exception.

    ``source``: ``"native"`` (``Response.Error`` envelope), ``"http"`` (an HTTP status,
    optionally with an OpenAI-style ``{"error": {...}}`` body), ``"stream"`` (an error inside
    an SSE stream: native ``ErrorMsg`` or an OpenAI error event).
    """

    source: Literal["native", "http", "stream"]
    code: str = ""
    message: str = ""
    status: int | None = None
    error_type: str = ""
    request_id: str | None = None
    retry_after: float | None = None


def _native_type(code: str) -> ErrorType:
    exact = NATIVE_ERROR_CODES.get(code)
    if exact is not None:
        return exact
    best: tuple[int, ErrorType] | None = None
    for prefix, cls in NATIVE_ERROR_PREFIXES:
        if (code == prefix or code.startswith(prefix + ".")) and (
            best is None or len(prefix) > best[0]
        ):
            best = (len(prefix), cls)
    return best[1] if best is not None else HunyuanError


def _http_type(err: WireError) -> ErrorType:
    if err.code in OPENAI_ERROR_CODES:
        cls = OPENAI_ERROR_CODES[err.code]
    elif err.status is not None and err.status in HTTP_STATUS_ERRORS:
        cls = HTTP_STATUS_ERRORS[err.status]
    elif err.error_type in OPENAI_ERROR_TYPES:
        cls = OPENAI_ERROR_TYPES[err.error_type]
    elif err.status is not None and 400 <= err.status < 500:
        cls = InvalidRequest
    elif (err.status is not None and err.status >= 500) or err.source == "stream":
        cls = UpstreamError
    else:
        cls = HunyuanError
    # TokenHub reports concurrency overflow with the same 429001 as a rate limit; only the
    # message tells them apart. Both are retried; the distinction only changes what users read.
    if cls is RateLimited and any(k in err.message.lower() for k in ("concurren", "并发")):
        cls = ServerBusy
    return cls


def _about_length(err: WireError) -> bool:
    """Whether a refused request's message says the input is too long for the model."""
    text = err.message.lower()
    return any(word in text for word in _TOO_LONG_WORDS)


def map_error(err: WireError) -> HunyuanError:
    """The one exception for ``err`` (never raises; unknown codes give :class:`HunyuanError`).

    The exception message carries the code and a truncated upstream message for logs; the
    ``user_message`` never does.
    """
    if err.source == "native":
        cls = _native_type(err.code)
    elif err.source == "stream" and err.code in STREAM_ERROR_CODES:
        cls = STREAM_ERROR_CODES[err.code]
    else:
        cls = _http_type(err)
    if err.code == "context_length_exceeded" or (cls is InvalidRequest and _about_length(err)):
        cls = ContextLengthExceeded
    user_message: str | None = None
    if err.code in IMAGE_INPUT_CODES:
        user_message = _IMAGE_INPUT_MESSAGE
    elif err.code == "RequestSizeLimitExceeded" or err.status == 413:
        user_message = _TOO_LARGE_MESSAGE
    label = err.code or (f"HTTP {err.status}" if err.status is not None else err.source)
    text = err.message.strip()
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "…"
    exc = cls(
        f"{label}: {text}" if text else label,
        code=err.code,
        status=err.status,
        request_id=err.request_id,
        retry_after=err.retry_after,
        user_message=user_message,
    )
    return exc


def image_job_error(
    code: str, message: str = "", *, request_id: str | None = None
) -> ImageJobFailed:
    """The :class:`ImageJobFailed` for a job that reported ``JobStatusCode "4"``.

    ``code`` (``JobErrorCode``) is kept on the error; the table above decides what the user is
    told (a moderation code gets the moderation wording, an unreadable input image its own).
    """
    mapped = _native_type(code) if code else ImageJobFailed
    user_message: str | None = None
    if code in IMAGE_INPUT_CODES:
        user_message = _IMAGE_INPUT_MESSAGE
    elif mapped is ModerationRefused:
        user_message = "I can't generate that image: it was blocked by the content policy."
    elif mapped is OutOfCredit:
        user_message = OutOfCredit.default_user_message
    return ImageJobFailed(
        f"image job failed: {code or 'unknown'}"
        + (f": {message[:_MAX_MESSAGE]}" if message else ""),
        code=code,
        request_id=request_id,
        user_message=user_message,
    )


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    ``now`` is the current Unix time (for the date form). Returns ``None`` when absent or
    unparseable; never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)
