"""One HTTP exchange with Hunyuan under the client's policy (client internal).

Two pieces every call of :class:`~core.hunyuan.client.HunyuanClient` shares, written once:

- :func:`translating`, the one context manager that turns an asyncio deadline
  (``TimeoutError``) and any :class:`httpx.HTTPError` into a :mod:`core.errors` type with
  ``raise ... from err``: deadline and httpx timeouts → :class:`HunyuanTimeout`, other httpx
  failures → :class:`TransportError`; where the request cannot have left (no connection was
  obtained) the error carries ``code == NOT_SENT``. A :class:`Phase` holds the wording of one
  step (sending, waiting for stream headers, reading an error body, reading a stream,
  downloading an image).
- :class:`Exchange`, which owns the deadline clock, TC3 timestamps, the retry policy and the
  send → extract error → parse sequence (:meth:`Exchange.call`); each public client method is
  one call of it.

The retry policy (see the client's module docstring) is :meth:`Exchange.retrying`: capped
exponential backoff with full jitter, ``Retry-After`` as a lower bound, at most
``config.max_attempts`` attempts, never past the deadline, one retry for an expired signature.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from core.config import HunyuanConfig
from core.errors import (
    HunyuanError,
    HunyuanTimeout,
    ImageJobFailed,
    RateLimited,
    ServerBusy,
    SignatureExpired,
    TransportError,
    UpstreamError,
)
from core.hunyuan._errors import WireError, map_error
from core.hunyuan._wire import WireRequest

__all__ = [
    "DOWNLOAD",
    "ERROR_BODY",
    "HEADERS",
    "NOT_SENT",
    "SEND",
    "STREAM_READ",
    "ErrorExtractor",
    "Exchange",
    "Phase",
    "SleepFn",
    "retryable",
    "submit_retryable",
    "translating",
]

logger = logging.getLogger("core.hunyuan.client")

T = TypeVar("T")

SleepFn = Callable[[float], Awaitable[None]]
"""An ``asyncio.sleep``-like coroutine function (injected so tests need not wait)."""

#: ``code`` of a :class:`TransportError` raised before any byte of the request was sent.
NOT_SENT = "not_sent"
# httpx errors that happen before the request is written: no connection was obtained.
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_SUBMIT_RETRYABLE = (RateLimited, ServerBusy, SignatureExpired)


def retryable(err: HunyuanError) -> bool:
    """The default retry predicate: the error type says whether a retry can help."""
    return err.retryable


def submit_retryable(err: HunyuanError) -> bool:
    """Retry predicate for calls that may create (and bill) something: image generation.

    Only errors proving nothing was created: answered synchronously (rate limit, busy, expired
    signature) or failed before the request left (no connection). A read timeout or a 5xx may
    have created a job we cannot see, so those are never retried.
    """
    return isinstance(err, _SUBMIT_RETRYABLE) or (
        isinstance(err, TransportError) and err.code == NOT_SENT
    )


@dataclass(frozen=True, slots=True)
class Phase:
    """The wording of one translated step; ``{name}`` is replaced by the httpx error's type.

    ``deadline``: the asyncio deadline fired; ``timeout``: an httpx timeout; ``failure``: any
    other httpx error. ``unsent``: connect and pool failures become ``could not connect``
    errors with ``code == NOT_SENT`` (a connect timeout stays a :class:`HunyuanTimeout`).
    """

    deadline: str
    timeout: str
    failure: str
    unsent: bool = False


SEND = Phase(
    "call deadline exceeded", "request timed out: {name}", "request failed: {name}", unsent=True
)
HEADERS = Phase(
    "no response headers before the timeout", "request timed out: {name}", "request failed: {name}"
)
ERROR_BODY = Phase(
    "call deadline exceeded", "error body read timed out", "error body read failed: {name}"
)
STREAM_READ = Phase("stream timeout", "stream read timeout", "stream read failed: {name}")
DOWNLOAD = Phase(
    "image download deadline exceeded", "image download timed out", "image download failed: {name}"
)


def _translate(exc: BaseException, phase: Phase, deadline: str) -> HunyuanError | None:
    if isinstance(exc, TimeoutError):
        return HunyuanTimeout(deadline)
    if not isinstance(exc, httpx.HTTPError):
        return None
    name = type(exc).__name__
    if phase.unsent and isinstance(exc, _UNSENT_ERRORS):
        cls = TransportError if isinstance(exc, httpx.ConnectError) else HunyuanTimeout
        return cls(f"could not connect: {name}", code=NOT_SENT)
    if isinstance(exc, httpx.TimeoutException):
        return HunyuanTimeout(phase.timeout.format(name=name))
    return TransportError(phase.failure.format(name=name))


class _Translating:
    __slots__ = ("_deadline", "_phase")

    def __init__(self, phase: Phase, deadline: str) -> None:
        self._phase = phase
        self._deadline = deadline

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        translated = _translate(exc, self._phase, self._deadline)
        if translated is not None:
            raise translated from exc


def translating(phase: Phase, *, deadline: str | None = None) -> _Translating:
    """Context manager: a deadline or httpx error inside leaves as a hybot error (``from``).

    Put it *around* ``asyncio.timeout_at(...)`` so the deadline's ``TimeoutError`` is seen.
    ``deadline`` overrides ``phase.deadline`` (e.g. which of two timeouts fired). Every other
    exception passes through untouched.
    """
    return _Translating(phase, phase.deadline if deadline is None else deadline)


class ErrorExtractor(Protocol):
    """A wire's ``extract_error``: the error a complete response reports, or ``None``."""

    def __call__(
        self, status: int, headers: httpx.Headers, body: bytes, *, now: float
    ) -> WireError | None: ...


class Exchange:
    """The policy shared by every call: deadlines, timestamps, retries, send and translate.

    Owned by one :class:`~core.hunyuan.client.HunyuanClient`; ``http`` is its connection pool
    (closed by the client, not here). ``clock`` is Unix time for TC3 timestamps and
    ``Retry-After`` dates; deadlines use the event loop's clock.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        config: HunyuanConfig,
        sleep: SleepFn,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.http = http
        self.config = config
        self.sleep = sleep
        self._clock = clock
        self._rng = rng

    def now(self) -> float:
        """Unix time from the injected clock."""
        return self._clock()

    def timestamp(self) -> int:
        """A TC3 timestamp (whole Unix seconds)."""
        return int(self._clock())

    @staticmethod
    def deadline(seconds: float) -> float:
        """The event-loop time ``seconds`` from now."""
        return asyncio.get_running_loop().time() + seconds

    def error(self, wire_error: WireError) -> HunyuanError:
        """Map ``wire_error`` and scrub our own secrets from the upstream text it quotes.

        Some gateways echo the presented key in their message ("invalid key sk-…").
        """
        exc = map_error(wire_error)
        text = str(exc.args[0]) if exc.args else ""
        cfg = self.config
        for secret in (cfg.api_key, cfg.secret_key, cfg.secret_id):
            value = secret.reveal()
            if value and value in text:
                text = text.replace(value, "****")
        exc.args = (text,)
        return exc

    def _backoff(self, state: RetryCallState) -> float:
        cfg = self.config
        ceiling = min(cfg.backoff_cap, cfg.backoff_base * 2 ** (state.attempt_number - 1))
        delay = self._rng.uniform(0.0, ceiling)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, HunyuanError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    async def retrying(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        deadline: float,
        what: str,
        retry_if: Callable[[HunyuanError], bool] = retryable,
    ) -> T:
        """Run ``operation`` under the retry policy; the last error is re-raised as is."""
        loop = asyncio.get_running_loop()
        max_attempts = self.config.max_attempts
        expired_seen = 0

        def should_retry(exc: BaseException) -> bool:
            nonlocal expired_seen
            if not isinstance(exc, HunyuanError):
                return False
            if isinstance(exc, SignatureExpired):
                expired_seen += 1
                return expired_seen == 1 and retry_if(exc)
            return retry_if(exc)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= max_attempts:
                return True
            # A wait that would outlive the deadline only delays the inevitable error.
            return loop.time() + state.upcoming_sleep >= deadline

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            kind = exc.kind if isinstance(exc, HunyuanError) else type(exc).__name__
            logger.info(
                "hunyuan %s: attempt %d failed (%s), retrying in %.2fs",
                what,
                state.attempt_number,
                kind,
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            stop=stop,
            wait=self._backoff,
            retry=retry_if_exception(should_retry),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

        async def call() -> T:
            # tenacity awaits only real coroutine functions; lambdas returning awaitables are not.
            return await operation()

        return await retrying(call)

    def build(self, request: WireRequest) -> httpx.Request:
        """The httpx request for ``request`` (its exact, possibly signed, bytes)."""
        return self.http.build_request(
            request.method, request.url, headers=dict(request.headers), content=request.content
        )

    async def send(self, request: WireRequest, *, deadline: float) -> httpx.Response:
        """Send a non-stream request and read the whole body, translating failures."""
        req = self.build(request)
        with translating(SEND):
            async with asyncio.timeout_at(deadline):
                return await self.http.send(req)

    async def call(
        self,
        what: str,
        build: Callable[[int], WireRequest],
        extract: ErrorExtractor,
        parse: Callable[[httpx.Response], T],
        *,
        deadline: float,
        retry_if: Callable[[HunyuanError], bool] = retryable,
    ) -> T:
        """One exchange under the retry policy: build → send → extract the error → parse.

        Each attempt builds a fresh request from a fresh TC3 timestamp (so an expired signature
        is re-signed), sends it, raises the mapped error if ``extract`` finds one, else returns
        ``parse(response)`` (which may raise :class:`UpstreamError` for a garbled answer).
        ``what`` names the call in retry logs.
        """

        async def attempt() -> T:
            response = await self.send(build(self.timestamp()), deadline=deadline)
            wire_error = extract(
                response.status_code, response.headers, response.content, now=self._clock()
            )
            if wire_error is not None:
                raise self.error(wire_error)
            return parse(response)

        return await self.retrying(attempt, deadline=deadline, what=what, retry_if=retry_if)

    async def download(self, url: str, *, deadline: float) -> bytes:
        """Download a result URL under the retry policy (no credentials are sent to it)."""

        async def attempt() -> bytes:
            with translating(DOWNLOAD):
                async with asyncio.timeout_at(deadline):
                    response = await self.http.get(url, follow_redirects=True)
            if response.status_code >= 500:
                raise UpstreamError("image download failed", status=response.status_code)
            if response.status_code != 200:
                raise ImageJobFailed(
                    "image download failed",
                    code=f"download:{response.status_code}",
                    status=response.status_code,
                )
            return response.content

        return await self.retrying(attempt, deadline=deadline, what="download")
