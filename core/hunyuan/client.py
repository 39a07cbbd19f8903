"""The Hunyuan client: chat (whole or streamed), token counting and image generation.

:class:`HunyuanClient` is created by the composition root (``bots``) or by tests, used as
an async context manager, and owns exactly one :class:`httpx.AsyncClient`. The wire formats live
in :mod:`core.hunyuan._wire` (OpenAI-compatible or native API 3.0 for chat, TokenHub or
native jobs for images); everything else is policy and lives here once:

- **Role normalisation** (:func:`core.tokens.normalize_messages`) before every chat call;
  a list without user content raises :class:`InvalidRequest` without touching the network.
- **Error mapping**: every failure becomes one :mod:`core.errors` type
  (:func:`core.hunyuan._errors.map_error`); httpx timeouts → :class:`HunyuanTimeout`,
  other connection failures → :class:`TransportError`, always ``raise ... from err``.
- **Retries**: capped exponential backoff with full jitter (``uniform(0, min(cap,
  base * 2**(n-1)))`` before retry ``n``), a ``Retry-After`` as a lower bound, at most
  ``config.max_attempts`` attempts and never past the call's deadline; only for errors whose
  ``retryable`` is true (:class:`SignatureExpired` once, after re-signing). Streams retry only
  until their first chunk reaches the caller. Image submissions retry only on errors proving no
  job was created (rate limit, busy, expired signature), never on timeouts.
- **Timeouts**: ``connect_timeout`` to connect; ``idle_timeout`` as httpx's read timeout and,
  for streams, as the longest wait for the response headers and for each next event;
  ``total_timeout`` as a deadline for a whole call (``image_deadline`` for a native image job).

Secrets are revealed only while building a request; they never reach logs, exception messages
or ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar

import httpx
from httpx_sse import EventSource
from PIL import Image, UnidentifiedImageError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from core.config import HunyuanConfig
from core.errors import (
    ConfigError,
    HunyuanError,
    HunyuanTimeout,
    ImageJobFailed,
    InvalidRequest,
    ModelUnavailable,
    RateLimited,
    ServerBusy,
    SignatureExpired,
    StreamInterrupted,
    TransportError,
    UpstreamError,
)
from core.hunyuan._errors import WireError, image_job_error, map_error
from core.hunyuan._wire import (
    BaseChatBackend,
    ChatParams,
    ImageJobStatus,
    ImageOutput,
    NativeChatBackend,
    NativeImageWire,
    NativeWire,
    OpenAIChatBackend,
    StreamEvent,
    TokenHubImageWire,
    WireRequest,
    loads_object,
)
from core.tokens import estimate_tokens, normalize_messages
from core.types import ChatChunk, ChatMessage, ChatResult, ImageResult, Usage

__all__ = ["HunyuanClient", "SleepFn", "StatusCallback"]

logger = logging.getLogger(__name__)

SleepFn = Callable[[float], Awaitable[None]]
"""An ``asyncio.sleep``-like coroutine function (injected so tests need not wait)."""

StatusCallback = Callable[[str], Awaitable[None]]
"""Told ``"queued"``, ``"running"`` or ``"done"`` as an image job changes state."""

T = TypeVar("T")

_NATIVE_JOB_STATES = {"1": "queued", "2": "running", "5": "done"}
_NATIVE_IMAGE_MODEL = "hunyuan-image"
_SUBMIT_RETRYABLE = (RateLimited, ServerBusy, SignatureExpired)
# ``code`` of a TransportError raised before any byte of the request was sent.
_NOT_SENT = "not_sent"
# httpx errors that happen before the request is written: no connection was obtained.
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _retryable(err: HunyuanError) -> bool:
    return err.retryable


def _submit_retryable(err: HunyuanError) -> bool:
    # Only errors proving no job exists: answered synchronously (rate limit, busy, expired
    # signature) or failed before the request left (no connection). A read timeout or a 5xx
    # may have created (and billed) a job we cannot see, so those are never retried.
    return isinstance(err, _SUBMIT_RETRYABLE) or (
        isinstance(err, TransportError) and err.code == _NOT_SENT
    )


def _parse_size(size: str) -> tuple[int, int]:
    width, sep, height = size.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise InvalidRequest(f"image size must look like '1024x1024', got {size!r}")
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        raise InvalidRequest(f"image size must be positive, got {size!r}")
    return w, h


def _probe_image(data: bytes) -> tuple[str, int, int]:
    """``(mime, width, height)`` read from the image header (no full decode)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").upper()
            width, height = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ImageJobFailed("the image service returned data that is not an image") from err
    mime = Image.MIME.get(fmt, f"image/{fmt.lower() or 'octet-stream'}")
    return mime, width, height


#: How long closing a finished stream may spend reading the end of its body.
_DRAIN_SECONDS = 1.0


class _StreamReader:
    """Reads one open SSE response and applies the termination rules (client internal).

    ``next_chunk`` returns the next :class:`ChatChunk` worth yielding (non-empty delta or the
    final chunk), ``None`` once the stream has ended properly, or raises. Once ``delivered`` is
    set (a chunk reached the caller), transport failures become :class:`StreamInterrupted`.
    """

    def __init__(
        self,
        *,
        response: httpx.Response,
        backend: BaseChatBackend,
        deadline: float,
        idle_timeout: float,
        prompt_tokens: int,
        model: str,
        map_error: Callable[[WireError], HunyuanError],
    ) -> None:
        self._map_error = map_error
        self._response = response
        self._backend = backend
        self._events = EventSource(response).aiter_sse()
        self._deadline = deadline
        self._idle = idle_timeout
        self._prompt_tokens = prompt_tokens
        self.model = model
        self.delivered = False
        self._text: list[str] = []
        self._usage: Usage | None = None
        self._note: str | None = None
        self._finish: str | None = None
        self._pending_delta = ""
        self._ended = False

    async def aclose(self) -> None:
        """Release the response. After a proper end, the rest of the body (the server's
        closing chunk) is read first, so httpx can return the connection to its pool instead
        of dropping it: otherwise every streamed answer pays a new TCP (and TLS) handshake."""
        try:
            if self._ended and not self._response.is_closed:
                try:
                    async with asyncio.timeout(_DRAIN_SECONDS):
                        async for _ in self._events:
                            pass
                except (TimeoutError, httpx.HTTPError):
                    pass  # the connection is dropped instead; nothing else is affected
            await self._events.aclose()
        finally:
            await self._response.aclose()

    def _broken(self, err: HunyuanError) -> HunyuanError:
        if self.delivered:
            interrupted = StreamInterrupted(
                f"stream broke after text was delivered ({err.kind})",
                code=err.code,
                status=err.status,
                request_id=err.request_id,
            )
            return interrupted
        return err

    async def _next_event(self) -> str | None:
        loop = asyncio.get_running_loop()
        idle_at = loop.time() + self._idle
        try:
            async with asyncio.timeout_at(min(idle_at, self._deadline)):
                sse = await anext(self._events)
        except StopAsyncIteration:
            return None
        except TimeoutError as err:
            which = "idle" if idle_at <= self._deadline else "total"
            raise HunyuanTimeout(f"stream {which} timeout") from err
        except httpx.TimeoutException as err:
            raise HunyuanTimeout("stream read timeout") from err
        except httpx.HTTPError as err:
            raise TransportError(f"stream read failed: {type(err).__name__}") from err
        return sse.data

    def _final(self) -> ChatChunk:
        self._ended = True
        usage = self._usage
        if usage is None:
            completion = estimate_tokens("".join(self._text))
            usage = Usage(self._prompt_tokens, completion, self._prompt_tokens + completion)
        return ChatChunk(
            delta=self._pending_delta,
            finish_reason=self._finish or "stop",
            usage=usage,
            note=self._note,
        )

    def _absorb(self, event: StreamEvent) -> None:
        if event.usage is not None:
            self._usage = event.usage
        if event.note is not None:
            self._note = event.note
        if event.model is not None:
            self.model = event.model

    async def next_chunk(self) -> ChatChunk | None:
        while not self._ended:
            try:
                data = await self._next_event()
            except TransportError as err:
                if self._finish is not None:
                    # Finished already; only the usage tail / [DONE] was lost.
                    return self._final()
                broken = self._broken(err)
                if broken is err:
                    raise  # keeps the original httpx cause
                raise broken from err
            if data is None:
                if self._finish is not None:
                    return self._final()
                eof = TransportError("stream ended before a finish reason")
                broken = self._broken(eof)
                if broken is eof:
                    raise eof
                raise broken from eof
            try:
                event = self._backend.parse_stream_event(data, self._response.headers)
            except UpstreamError as err:
                broken = self._broken(err)
                if broken is err:
                    raise
                raise broken from err
            if event.done:
                return self._final()
            if event.error is not None:
                # An explicit error from the service keeps its own type even after text.
                raise self._map_error(event.error)
            self._absorb(event)
            if event.delta:
                self._text.append(event.delta)
            if event.finish_reason:
                self._finish = event.finish_reason
                self._pending_delta += event.delta
                if self._backend.ends_at_finish:
                    return self._final()
                continue
            if self._finish is not None:
                self._pending_delta += event.delta
                continue
            if event.delta:
                return ChatChunk(delta=event.delta, usage=event.usage, note=event.note)
        return None


class HunyuanClient:
    """Async client for Hunyuan chat, token counting and images (see module docstring).

    Construct with keyword arguments only; every one has a safe default. ``transport`` replaces
    httpx's network transport (tests pass :class:`httpx.MockTransport`); ``sleep`` is used for
    backoff and image polling; ``clock`` gives Unix time for TC3 timestamps; ``rng`` draws the
    backoff jitter. Use ``async with HunyuanClient(...) as client`` (or call :meth:`aclose`).
    Instances may be shared by concurrent tasks.
    """

    def __init__(
        self,
        *,
        config: HunyuanConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: SleepFn = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        cfg = config if config is not None else HunyuanConfig()
        if cfg.api not in ("openai", "native"):
            raise ConfigError(f"hunyuan api must be 'openai' or 'native', not {cfg.api!r}")
        if cfg.image_api not in ("tokenhub", "native"):
            raise ConfigError(
                f"hunyuan image_api must be 'tokenhub' or 'native', not {cfg.image_api!r}"
            )
        if cfg.max_attempts < 1:
            raise ConfigError("hunyuan max_attempts must be at least 1")
        self._config = cfg
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        extra_body = dict(cfg.extra_body)
        native = NativeWire(
            endpoint=cfg.native_endpoint,
            secret_id=cfg.secret_id,
            secret_key=cfg.secret_key,
            region=cfg.region,
        )
        self._chat_backend: BaseChatBackend
        if cfg.api == "native":
            self._chat_backend = NativeChatBackend(wire=native, extra_body=extra_body)
        else:
            self._chat_backend = OpenAIChatBackend(
                base_url=cfg.base_url, api_key=cfg.api_key, extra_body=extra_body
            )
        self._tokenhub_images = TokenHubImageWire(base_url=cfg.base_url, api_key=cfg.api_key)
        self._native_images = NativeImageWire(wire=native)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout,
                read=cfg.idle_timeout,
                write=cfg.idle_timeout,
                pool=cfg.connect_timeout,
            ),
            # Core code reads no environment: no proxy or netrc discovery.
            trust_env=False,
            follow_redirects=False,
            headers={"User-Agent": "hybot"},
        )

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def config(self) -> HunyuanConfig:
        return self._config

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool (idempotent)."""
        await self._http.aclose()

    def __repr__(self) -> str:
        cfg = self._config
        where = cfg.native_endpoint if cfg.api == "native" else cfg.base_url
        return (
            f"HunyuanClient(api={cfg.api!r}, endpoint={where!r}, model={cfg.model!r}, "
            f"image_api={cfg.image_api!r})"
        )

    # --- policy helpers -------------------------------------------------------------------

    def _error(self, wire_error: WireError) -> HunyuanError:
        """Map ``wire_error`` and scrub our own secrets from the upstream text it quotes.

        Some gateways echo the presented key in their message ("invalid key sk-…").
        """
        exc = map_error(wire_error)
        text = str(exc.args[0]) if exc.args else ""
        cfg = self._config
        for secret in (cfg.api_key, cfg.secret_key, cfg.secret_id):
            value = secret.reveal()
            if value and value in text:
                text = text.replace(value, "****")
        exc.args = (text,)
        return exc

    def _deadline(self, seconds: float) -> float:
        return asyncio.get_running_loop().time() + seconds

    def _timestamp(self) -> int:
        return int(self._clock())

    def _backoff(self, state: RetryCallState) -> float:
        cfg = self._config
        ceiling = min(cfg.backoff_cap, cfg.backoff_base * 2 ** (state.attempt_number - 1))
        delay = self._rng.uniform(0.0, ceiling)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, HunyuanError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    async def _retrying(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        deadline: float,
        what: str,
        retry_if: Callable[[HunyuanError], bool] = _retryable,
    ) -> T:
        """Run ``operation`` under the retry policy; the last error is re-raised as is."""
        loop = asyncio.get_running_loop()
        max_attempts = self._config.max_attempts
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
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

        async def call() -> T:
            # tenacity awaits only real coroutine functions; lambdas returning awaitables are not.
            return await operation()

        return await retrying(call)

    async def _send(self, request: WireRequest, *, deadline: float) -> httpx.Response:
        """Send a non-stream request and read the whole body, translating failures."""
        req = self._http.build_request(
            request.method, request.url, headers=dict(request.headers), content=request.content
        )
        try:
            async with asyncio.timeout_at(deadline):
                return await self._http.send(req)
        except TimeoutError as err:
            raise HunyuanTimeout("call deadline exceeded") from err
        except _UNSENT_ERRORS as err:
            cls = TransportError if isinstance(err, httpx.ConnectError) else HunyuanTimeout
            raise cls(f"could not connect: {type(err).__name__}", code=_NOT_SENT) from err
        except httpx.TimeoutException as err:
            raise HunyuanTimeout(f"request timed out: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise TransportError(f"request failed: {type(err).__name__}") from err

    async def _get(self, url: str, *, deadline: float) -> bytes:
        """Download a result URL (no credentials are sent to it)."""
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._http.get(url, follow_redirects=True)
        except TimeoutError as err:
            raise HunyuanTimeout("image download deadline exceeded") from err
        except httpx.TimeoutException as err:
            raise HunyuanTimeout("image download timed out") from err
        except httpx.HTTPError as err:
            raise TransportError(f"image download failed: {type(err).__name__}") from err
        if response.status_code >= 500:
            raise UpstreamError("image download failed", status=response.status_code)
        if response.status_code != 200:
            raise ImageJobFailed(
                "image download failed",
                code=f"download:{response.status_code}",
                status=response.status_code,
            )
        return response.content

    def _prepare(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        normalised = normalize_messages(messages)
        if not any(m.role == "user" for m in normalised):
            raise InvalidRequest("no user message to send after role normalisation")
        return normalised

    def _params(
        self,
        model: str | None,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        extra: Mapping[str, object] | None,
    ) -> ChatParams:
        return ChatParams(
            model=model or self._config.model,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            extra=dict(extra or {}),
        )

    @staticmethod
    def _prompt_tokens(messages: Sequence[ChatMessage]) -> int:
        return sum(estimate_tokens(m.content) for m in messages)

    # --- chat -----------------------------------------------------------------------------

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> ChatResult:
        """One complete answer for ``messages`` (normalised first).

        Unset parameters are omitted; ``extra`` (and ``config.extra_body``) go into the body's
        top level as given (native: PascalCase). ``usage`` is the service's, else estimated.
        Raises a :class:`HunyuanError` subclass after the retry policy gave up.
        """
        msgs = self._prepare(messages)
        params = self._params(model, max_tokens, temperature, top_p, extra)
        backend = self._chat_backend
        deadline = self._deadline(self._config.total_timeout)

        async def attempt() -> ChatResult:
            request = backend.chat_request(msgs, params, stream=False, timestamp=self._timestamp())
            response = await self._send(request, deadline=deadline)
            wire_error = backend.extract_error(
                response.status_code, response.headers, response.content, now=self._clock()
            )
            if wire_error is not None:
                raise self._error(wire_error)
            data = loads_object(response.content)
            if data is None:
                raise UpstreamError("chat answer is not a JSON object", status=200)
            parsed = backend.parse_chat(data, response.headers)
            usage = parsed.usage
            if usage is None:
                prompt = self._prompt_tokens(msgs)
                completion = estimate_tokens(parsed.text)
                usage = Usage(prompt, completion, prompt + completion)
            return ChatResult(
                text=parsed.text,
                usage=usage,
                finish_reason=parsed.finish_reason or "stop",
                model=parsed.model or params.model,
                note=parsed.note,
                request_id=parsed.request_id,
            )

        return await self._retrying(attempt, deadline=deadline, what="chat")

    async def _open_stream(
        self,
        msgs: Sequence[ChatMessage],
        params: ChatParams,
        deadline: float,
    ) -> tuple[_StreamReader, ChatChunk | None]:
        """One attempt: send, check for a pre-stream error, read up to the first chunk."""
        backend = self._chat_backend
        request = backend.chat_request(msgs, params, stream=True, timestamp=self._timestamp())
        req = self._http.build_request(
            request.method, request.url, headers=dict(request.headers), content=request.content
        )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(loop.time() + self._config.idle_timeout, deadline)):
                response = await self._http.send(req, stream=True)
        except TimeoutError as err:
            raise HunyuanTimeout("no response headers before the timeout") from err
        except httpx.TimeoutException as err:
            raise HunyuanTimeout(f"request timed out: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise TransportError(f"request failed: {type(err).__name__}") from err
        content_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if response.status_code != 200 or content_type != "text/event-stream":
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        body = await response.aread()
                except TimeoutError as err:
                    raise HunyuanTimeout("call deadline exceeded") from err
                except httpx.TimeoutException as err:
                    raise HunyuanTimeout("error body read timed out") from err
                except httpx.HTTPError as err:
                    raise TransportError(f"error body read failed: {type(err).__name__}") from err
            finally:
                await response.aclose()
            wire_error = backend.extract_error(
                response.status_code, response.headers, body, now=self._clock()
            )
            if wire_error is not None:
                raise self._error(wire_error)
            raise UpstreamError(
                f"expected an event stream, got {content_type or 'no content type'}",
                status=response.status_code,
            )
        reader = _StreamReader(
            response=response,
            backend=backend,
            deadline=deadline,
            idle_timeout=self._config.idle_timeout,
            prompt_tokens=self._prompt_tokens(msgs),
            model=params.model,
            map_error=self._error,
        )
        try:
            first = await reader.next_chunk()
        except BaseException:
            await reader.aclose()
            raise
        return reader, first

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream an answer as :class:`ChatChunk` s; the last one has ``finish_reason`` and usage.

        Failures before the first chunk is yielded are retried like :meth:`chat`. After that:
        a broken connection, EOF without a finish reason, or a timeout raises
        :class:`StreamInterrupted`; an error the service sends inside the stream raises its
        mapped type (e.g. :class:`UpstreamError`, :class:`HunyuanTimeout` for ErrorMsg 4001).
        ``finish_reason == "sensitive"`` means text already shown must be retracted. Closing
        the iterator early closes the connection.
        """
        msgs = self._prepare(messages)
        params = self._params(model, max_tokens, temperature, top_p, extra)
        deadline = self._deadline(self._config.total_timeout)
        reader, first = await self._retrying(
            lambda: self._open_stream(msgs, params, deadline), deadline=deadline, what="stream"
        )
        try:
            reader.delivered = True
            chunk = first
            while chunk is not None:
                yield chunk
                chunk = await reader.next_chunk()
        finally:
            await reader.aclose()

    # --- tokens ---------------------------------------------------------------------------

    async def count_tokens(self, text: str) -> int:
        """Tokens in ``text``: native GetTokenCount when ``api == "native"``, else the estimate."""
        backend = self._chat_backend
        if not backend.counts_tokens:
            return estimate_tokens(text)
        if not text:
            return 0
        deadline = self._deadline(self._config.total_timeout)

        async def attempt() -> int:
            request = backend.token_count_request(text, timestamp=self._timestamp())
            if request is None:  # pragma: no cover - guarded by counts_tokens above
                raise ConfigError("this API has no token counter")
            response = await self._send(request, deadline=deadline)
            wire_error = backend.extract_error(
                response.status_code, response.headers, response.content, now=self._clock()
            )
            if wire_error is not None:
                raise self._error(wire_error)
            data = loads_object(response.content)
            if data is None:
                raise UpstreamError("GetTokenCount answer is not a JSON object")
            return backend.parse_token_count(data)

        return await self._retrying(attempt, deadline=deadline, what="count_tokens")

    # --- images ---------------------------------------------------------------------------

    async def generate_image(
        self,
        prompt: str,
        *,
        size: str = "1024x1024",
        seed: int | None = None,
        style: str | None = None,
        revise: bool | None = None,
        ai_mark: bool = True,
        footnote: str | None = None,
        model: str | None = None,
        on_status: StatusCallback | None = None,
    ) -> ImageResult:
        """Generate one image and download it at once (result URLs expire within hours).

        ``image_api == "tokenhub"``: synchronous hy-image-v3 / hy-image-lite (``model``, default
        ``config.image_model``); ``on_status("running")`` before the call. ``"native"``:
        SubmitHunyuanImageJob then QueryHunyuanImageJob every ``image_poll_interval`` until
        ``image_deadline`` (:class:`HunyuanTimeout`); ``on_status`` hears ``"queued"``,
        ``"running"`` and ``"done"`` as the job changes state; a failed job raises
        :class:`ImageJobFailed` carrying ``JobErrorCode``. ``ai_mark`` keeps the visible AI
        mark (LogoAdd); ``footnote`` is sent only to hy-image-v3. ``size`` is ``"WxH"``.
        """
        if not prompt.strip():
            raise InvalidRequest("empty image prompt")
        width, height = _parse_size(size)
        if self._config.image_api == "native":
            return await self._native_image(
                prompt,
                width=width,
                height=height,
                seed=seed,
                style=style,
                revise=revise,
                ai_mark=ai_mark,
                on_status=on_status,
            )
        chosen = model or self._config.image_model
        if not TokenHubImageWire.supports(chosen):
            raise ModelUnavailable(f"unsupported TokenHub image model {chosen!r}", code=chosen)
        deadline = self._deadline(self._config.total_timeout)
        wire = self._tokenhub_images

        async def attempt() -> ImageOutput:
            request = wire.request(
                model=chosen,
                prompt=prompt,
                width=width,
                height=height,
                seed=seed,
                style=style,
                revise=revise,
                ai_mark=ai_mark,
                footnote=footnote,
            )
            response = await self._send(request, deadline=deadline)
            wire_error = wire.extract_error(
                response.status_code, response.headers, response.content, now=self._clock()
            )
            if wire_error is not None:
                raise self._error(wire_error)
            data = loads_object(response.content)
            if data is None:
                raise UpstreamError("image answer is not a JSON object")
            return wire.parse(data, response.headers)

        if on_status is not None:
            await on_status("running")
        # A sync generation that timed out may still have been billed: same rule as a submit.
        output = await self._retrying(
            attempt, deadline=deadline, what="image", retry_if=_submit_retryable
        )
        if output.url is not None:
            url = output.url
            data = await self._retrying(
                lambda: self._get(url, deadline=deadline), deadline=deadline, what="download"
            )
        else:
            try:
                data = base64.b64decode(output.b64 or "", validate=True)
            except (binascii.Error, ValueError) as err:
                raise UpstreamError("image answer with invalid base64") from err
        mime, got_w, got_h = _probe_image(data)
        return ImageResult(
            data=data,
            mime=mime,
            width=got_w,
            height=got_h,
            model=chosen,
            revised_prompt=output.revised_prompt,
            seed=seed,
        )

    async def _native_image(
        self,
        prompt: str,
        *,
        width: int,
        height: int,
        seed: int | None,
        style: str | None,
        revise: bool | None,
        ai_mark: bool,
        on_status: StatusCallback | None,
    ) -> ImageResult:
        wire = self._native_images
        deadline = self._deadline(self._config.image_deadline)

        async def submit() -> str:
            request = wire.submit_request(
                prompt=prompt,
                width=width,
                height=height,
                seed=seed,
                style=style,
                revise=revise,
                ai_mark=ai_mark,
                timestamp=self._timestamp(),
            )
            response = await self._send(request, deadline=deadline)
            wire_error = wire.extract_error(
                response.status_code, response.headers, response.content, now=self._clock()
            )
            if wire_error is not None:
                raise self._error(wire_error)
            return wire.parse_submit(response.content)

        job_id = await self._retrying(
            submit, deadline=deadline, what="image submit", retry_if=_submit_retryable
        )

        async def query() -> ImageJobStatus:
            request = wire.query_request(job_id, timestamp=self._timestamp())
            response = await self._send(request, deadline=deadline)
            wire_error = wire.extract_error(
                response.status_code, response.headers, response.content, now=self._clock()
            )
            if wire_error is not None:
                raise self._error(wire_error)
            return wire.parse_query(response.content)

        last_state: str | None = None
        loop = asyncio.get_running_loop()
        while True:
            status = await self._retrying(query, deadline=deadline, what="image query")
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
            if loop.time() + self._config.image_poll_interval >= deadline:
                raise HunyuanTimeout(
                    f"image job {job_id} not finished within {self._config.image_deadline}s",
                    code=status.code,
                )
            await self._sleep(self._config.image_poll_interval)
        if not status.urls:
            raise ImageJobFailed("image job finished without a result image", code="5")
        url = status.urls[0]
        data = await self._retrying(
            lambda: self._get(url, deadline=deadline), deadline=deadline, what="download"
        )
        mime, got_w, got_h = _probe_image(data)
        return ImageResult(
            data=data,
            mime=mime,
            width=got_w,
            height=got_h,
            model=_NATIVE_IMAGE_MODEL,
            revised_prompt=status.revised_prompt,
            seed=seed,
        )
