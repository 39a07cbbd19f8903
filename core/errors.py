"""The one exception tree of hybot.

::

    HybotError
    ├── ConfigError                 bad or missing configuration (never retried)
    ├── StoreError                  the store failed (database unavailable, corrupt, migration)
    │   └── StoreBusy               another connection held a lock past the store's busy budget
    ├── CommandError                bad command or arguments; carries the usage line
    │   └── ImageSizeFormat         an /image --size that is not WxH at all
    ├── InputTooLong                the message cannot fit the model's window (nothing charged)
    ├── QuotaExceeded               a limit was hit; carries limit, remaining, resets_at
    ├── Busy                        a local governor's queue is full (a wait past the
    │                               job's deadline is a HunyuanTimeout)
    ├── HunyuanError                anything the model service did wrong (code, status, request_id)
    │   ├── TransportError          connect/read failure before a response (retryable)
    │   │   └── HunyuanTimeout      connect/read/idle timeout, 408/504, engine timeout (stream
    │   │                           ErrorMsg 4001), or a job's deadline
    │   ├── StreamInterrupted       the stream broke after text began (never retried)
    │   ├── RateLimited             429 / RequestLimitExceeded (retryable, may carry retry_after)
    │   ├── ServerBusy              concurrency limit, EngineServerLimitExceeded (retryable)
    │   ├── UpstreamError           5xx / engine errors / stream ErrorMsg 4000 (retryable)
    │   ├── ModerationRefused       input or output failed moderation (never retried)
    │   ├── OutOfCredit             resource pack exhausted, arrears, service stopped
    │   ├── AuthError               bad key/signature/permissions (operator must fix)
    │   │   └── SignatureExpired    clock skew > 5 min (retryable once after re-signing)
    │   ├── InvalidRequest          400 / InvalidParameter* (a bug on our side)
    │   │   └── ContextLengthExceeded   the service refused the prompt as over the model's
    │   │                               window; also an InputTooLong (kind input_too_long)
    │   ├── ModelUnavailable        unknown or retired model / endpoint / action
    │   └── ImageJobFailed          an image job reported failure (JobStatusCode "4")
    └── PlatformError               a chat platform refused or failed an adapter primitive
        └── PlatformRetryAfter      the platform said "retry after N seconds" (retry_after)

Every error has a stable ``kind`` (used for the i18n catalogue, logs and metrics), a
``retryable`` flag and an English ``user_message`` safe to show a chat user: it never contains
secrets, raw upstream text, or the user's own input. Foreign exceptions are translated at the
boundary with ``raise ... from err``.
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "AuthError",
    "Busy",
    "CommandError",
    "ConfigError",
    "ContextLengthExceeded",
    "HunyuanError",
    "HunyuanTimeout",
    "HybotError",
    "ImageJobFailed",
    "ImageSizeFormat",
    "InputTooLong",
    "InvalidRequest",
    "ModelUnavailable",
    "ModerationRefused",
    "OutOfCredit",
    "PlatformError",
    "PlatformRetryAfter",
    "QuotaExceeded",
    "RateLimited",
    "ServerBusy",
    "SignatureExpired",
    "StoreBusy",
    "StoreError",
    "StreamInterrupted",
    "TransportError",
    "UpstreamError",
]


class HybotError(Exception):
    """Root of every error hybot raises on purpose."""

    kind: str = "internal"
    retryable: bool = False
    default_user_message: str = "Something went wrong on our side. Please try again later."

    def __init__(self, message: str = "", *, user_message: str | None = None) -> None:
        super().__init__(message or self.default_user_message)
        self._user_message = user_message

    @property
    def user_message(self) -> str:
        """A sentence safe to show the chat user (English; core i18n translates by ``kind``)."""
        return self._user_message or self.default_user_message


class ConfigError(HybotError):
    kind = "config"
    default_user_message = "The bot is misconfigured. An operator has to fix it."


class StoreError(HybotError):
    kind = "store"
    retryable = True
    default_user_message = "The bot's storage is unavailable right now. Please try again shortly."


class StoreBusy(StoreError):
    """The database stayed locked by another connection (``SQLITE_BUSY``/``SQLITE_LOCKED``) for
    longer than the store's busy budget, lock errors retried meanwhile. Nothing of the failed
    call was written (its transaction rolled back), so the caller may simply try again later;
    a failed delivery claim leaves the delivery unclaimed."""

    kind = "store_busy"
    retryable = True
    default_user_message = "The bot's database is busy right now. Please try again in a moment."


class CommandError(HybotError):
    """Bad command or arguments. ``usage`` is the short correct usage line."""

    kind = "command"

    def __init__(self, message: str, *, usage: str = "") -> None:
        super().__init__(message, user_message=message)
        self.usage = usage


class ImageSizeFormat(CommandError):
    """``/image --size`` got a value that is not ``WxH`` at all (``abc``, ``-5x10``); the
    sentence says what a size looks like. A ``WxH`` the model does not take is not this error:
    the image handler answers it with the model's size rule."""


class InputTooLong(HybotError):
    """The input does not fit the model's window; nothing was charged. ``tokens`` and ``limit``
    (estimated input tokens and the input budget) are ``0`` when unknown."""

    kind = "input_too_long"
    default_user_message = "That message is too long for the model. Please shorten it."

    def __init__(
        self,
        message: str = "",
        *,
        tokens: int = 0,
        limit: int = 0,
        user_message: str | None = None,
    ) -> None:
        super().__init__(
            message or f"input of ~{tokens} tokens exceeds the limit of {limit}",
            user_message=user_message,
        )
        self.tokens = tokens
        self.limit = limit


class QuotaExceeded(HybotError):
    """A limit was hit. ``limit_name`` is e.g. ``"tokens/day"``, ``"images/month"``, ``"rpm"``,
    ``"org/tokens/month"``; ``remaining`` what is left in that limit; ``resets_at`` when it resets
    (timezone-aware), or ``None`` when it does not reset on its own (e.g. an exhausted pack);
    ``needed`` the least this request would have needed, when known."""

    kind = "quota"

    def __init__(
        self,
        limit_name: str,
        *,
        limit: int,
        remaining: int,
        resets_at: datetime | None,
        needed: int | None = None,
    ) -> None:
        super().__init__(f"quota exceeded: {limit_name} (limit {limit}, remaining {remaining})")
        self.limit_name = limit_name
        self.limit = limit
        self.remaining = remaining
        self.resets_at = resets_at
        self.needed = needed


class Busy(HybotError):
    kind = "busy"
    retryable = True
    default_user_message = "The bot is busy right now. Please try again in a moment."


class HunyuanError(HybotError):
    """An error from (or on the way to) the Hunyuan service.

    ``code`` is Tencent's error code string (``"RequestLimitExceeded"``, ``"1001"``, ``"429001"``),
    ``status`` the HTTP status if any, ``request_id`` Tencent's request id if known,
    ``retry_after`` seconds the service asked us to wait, if it said.
    """

    kind = "model_error"
    default_user_message = "The model service failed. Please try again later."

    def __init__(
        self,
        message: str = "",
        *,
        code: str = "",
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.code = code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after


class TransportError(HunyuanError):
    kind = "network"
    retryable = True
    default_user_message = "Couldn't reach the model service. Please try again in a moment."


class HunyuanTimeout(TransportError):
    kind = "timeout"
    default_user_message = "The model took too long to answer. Please try again."


class StreamInterrupted(HunyuanError):
    kind = "interrupted"
    retryable = False
    default_user_message = "The answer was interrupted. Please ask again."


class RateLimited(HunyuanError):
    kind = "rate_limited"
    retryable = True
    default_user_message = "The model service is rate-limiting us. Please try again in a moment."


class ServerBusy(HunyuanError):
    kind = "busy"
    retryable = True
    default_user_message = "The model is busy right now. Please try again in a moment."


class UpstreamError(HunyuanError):
    kind = "upstream"
    retryable = True
    default_user_message = "The model service had an internal error. Please try again."


class ModerationRefused(HunyuanError):
    kind = "moderation"
    default_user_message = "I can't help with that topic. Let's talk about something else."


class OutOfCredit(HunyuanError):
    kind = "out_of_credit"
    default_user_message = (
        "The bot's model account has run out of credit. An operator has been told."
    )


class AuthError(HunyuanError):
    kind = "auth"
    default_user_message = "The bot's model service credentials are misconfigured."


class SignatureExpired(AuthError):
    kind = "auth"
    retryable = True


class InvalidRequest(HunyuanError):
    kind = "invalid_request"
    default_user_message = "The model service rejected the request. Please try rephrasing."


class ContextLengthExceeded(InvalidRequest, InputTooLong):
    """The service refused a prompt over the model's context window (OpenAI-compatible
    ``context_length_exceeded``; native ``InvalidParameter`` about the input's length).

    Both a :class:`HunyuanError` (``code``, ``status``, ``request_id`` for logs; never retried:
    the same prompt is refused again) and an :class:`InputTooLong`, so the user reads that the
    message is too long for the model rather than a generic refusal.
    """

    kind = InputTooLong.kind
    retryable = False
    default_user_message = InputTooLong.default_user_message


class ModelUnavailable(HunyuanError):
    kind = "model_unavailable"
    default_user_message = (
        "The configured model or endpoint is unavailable or retired. An operator must update it."
    )


class ImageJobFailed(HunyuanError):
    kind = "image_failed"
    default_user_message = "I couldn't generate that image."


# --- chat platforms (raised by adapter primitives; owner: adapters/base.py) ------------------


class PlatformError(HybotError):
    """A chat platform refused or failed an adapter primitive (send, edit, delete, upload).

    Raised by a platform adapter's primitives, translated from the platform library's own error
    with ``raise PlatformError(...) from err``. The message names the operation and the
    platform's error description, never a token, a URL with credentials, or the user's text.
    ``BaseAdapter`` logs it and goes on with what it can still deliver.
    """

    kind = "platform"
    default_user_message = "The chat platform failed to deliver a message. Please try again."


class PlatformRetryAfter(PlatformError):
    """The platform said "retry after ``retry_after`` seconds" (Telegram 429 ``retry_after``,
    Slack ``Retry-After``). ``BaseAdapter`` waits that long and retries the same operation
    (bounded), so the order of what is shown is kept."""

    retryable = True

    def __init__(self, message: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(message or f"the platform asked to retry after {retry_after} s")
        self.retry_after = retry_after
