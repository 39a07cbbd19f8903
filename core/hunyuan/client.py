"""The Hunyuan client: chat (whole or streamed), token counting, image generation, live check.

:class:`HunyuanClient` is created by the composition root (``bots``) or by tests, used as
an async context manager, and owns exactly one :class:`httpx.AsyncClient`. The wire formats live
in :mod:`core.hunyuan._wire` (OpenAI-compatible or native API 3.0 for chat) and
:mod:`core.hunyuan._image_wire` (TokenHub or native jobs for images); the policy lives once,
split by responsibility:

- :mod:`core.hunyuan._http`: one exchange (build → send → extract the error → parse) under
  the retry policy, and the one context manager translating httpx and deadline failures;
- :mod:`core.hunyuan._stream`: one streamed attempt and the stream termination rules;
- :mod:`core.hunyuan._images`: TokenHub generation and native image jobs;
- :mod:`core.hunyuan._check`: the live check's result and diagnosis;
- here: the public methods, each a short composition of the above.

The policy, as every method applies it:

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
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Self

import httpx

from core.config import HunyuanConfig
from core.errors import (
    ConfigError,
    HunyuanError,
    InvalidRequest,
    ModelUnavailable,
    UpstreamError,
)
from core.hunyuan._check import CheckProblem, CheckResult, diagnose
from core.hunyuan._http import NOT_SENT, Exchange, SleepFn, retryable
from core.hunyuan._image_wire import NativeImageWire, TokenHubImageWire
from core.hunyuan._images import (
    StatusCallback,
    native_image,
    parse_size,
    tokenhub_image,
)
from core.hunyuan._stream import open_stream, prompt_tokens
from core.hunyuan._wire import (
    BaseChatBackend,
    ChatParams,
    NativeChatBackend,
    NativeWire,
    OpenAIChatBackend,
    ParsedChat,
    WireRequest,
    loads_object,
)
from core.tokens import estimate_tokens, normalize_messages
from core.types import ChatChunk, ChatMessage, ChatResult, ImageResult, Usage

__all__ = ["CheckProblem", "CheckResult", "HunyuanClient", "SleepFn", "StatusCallback"]

#: What the live check sends as its one user message.
_CHECK_PROMPT = "ping"
#: A JobId no job has: querying it proves credentials and region without creating anything.
_CHECK_JOB_ID = "hybot-config-check"


# One check call: (what it is called, TC3-signed?, what success proves, the call).
_CheckStep = tuple[str, bool, tuple[str, ...], Callable[[], Awaitable[object]]]


def _never(err: HunyuanError) -> bool:
    return False


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
        self._x = Exchange(
            http=self._http,
            config=cfg,
            sleep=sleep,
            clock=clock,
            rng=rng if rng is not None else random.Random(),
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
        return (
            f"HunyuanClient(api={cfg.api!r}, endpoint={self._endpoint()!r}, "
            f"model={cfg.model!r}, image_api={cfg.image_api!r})"
        )

    def _endpoint(self) -> str:
        cfg = self._config
        return cfg.native_endpoint if cfg.api == "native" else cfg.base_url

    # --- chat -----------------------------------------------------------------------------

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

    def _parse_chat(self, response: httpx.Response) -> ParsedChat:
        data = loads_object(response.content)
        if data is None:
            raise UpstreamError("chat answer is not a JSON object", status=200)
        return self._chat_backend.parse_chat(data, response.headers)

    async def _chat_once(
        self,
        msgs: Sequence[ChatMessage],
        params: ChatParams,
        *,
        deadline: float,
        retry_if: Callable[[HunyuanError], bool] = retryable,
    ) -> ParsedChat:
        backend = self._chat_backend
        return await self._x.call(
            "chat",
            lambda ts: backend.chat_request(msgs, params, stream=False, timestamp=ts),
            backend.extract_error,
            self._parse_chat,
            deadline=deadline,
            retry_if=retry_if,
        )

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
        deadline = self._x.deadline(self._config.total_timeout)
        parsed = await self._chat_once(msgs, params, deadline=deadline)
        usage = parsed.usage
        if usage is None:
            prompt = prompt_tokens(msgs)
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
        deadline = self._x.deadline(self._config.total_timeout)
        backend = self._chat_backend
        reader, first = await self._x.retrying(
            lambda: open_stream(self._x, backend, msgs, params, deadline),
            deadline=deadline,
            what="stream",
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
        if not self._chat_backend.counts_tokens:
            return estimate_tokens(text)
        if not text:
            return 0
        deadline = self._x.deadline(self._config.total_timeout)
        return await self._count_once(text, deadline=deadline)

    async def _count_once(
        self,
        text: str,
        *,
        deadline: float,
        retry_if: Callable[[HunyuanError], bool] = retryable,
    ) -> int:
        backend = self._chat_backend

        def build(ts: int) -> WireRequest:
            request = backend.token_count_request(text, timestamp=ts)
            if request is None:  # pragma: no cover - guarded by counts_tokens
                raise ConfigError("this API has no token counter")
            return request

        def parse(response: httpx.Response) -> int:
            data = loads_object(response.content)
            if data is None:
                raise UpstreamError("GetTokenCount answer is not a JSON object")
            return backend.parse_token_count(data)

        return await self._x.call(
            "count_tokens",
            build,
            backend.extract_error,
            parse,
            deadline=deadline,
            retry_if=retry_if,
        )

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
        width, height = parse_size(size)
        if self._config.image_api == "native":
            return await native_image(
                self._x,
                self._native_images,
                prompt=prompt,
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
        return await tokenhub_image(
            self._x,
            self._tokenhub_images,
            model=chosen,
            prompt=prompt,
            width=width,
            height=height,
            seed=seed,
            style=style,
            revise=revise,
            ai_mark=ai_mark,
            footnote=footnote,
            on_status=on_status,
        )

    # --- live check -----------------------------------------------------------------------

    async def check(self) -> CheckResult:
        """Prove with the cheapest real calls that this configuration reaches a working service.

        Contract (for ``hybot config check --live``): returns a :class:`CheckResult` and never
        raises for a service, network or credential failure (only cancellation propagates);
        ``result.ok`` is true when every call succeeded, else ``problem``, ``settings`` and
        ``detail`` say what to fix (see :class:`CheckResult`). Each call is made once, without
        retries or backoff, so an unreachable address fails after one ``connect_timeout``; the
        whole check is bounded by ``total_timeout`` (reads by ``idle_timeout``). Nothing in the
        result is secret. Safe to call on a client that also serves traffic.

        The calls, in order, stopping at the first failure:

        - ``api == "openai"``: one chat completion of ``"ping"`` with ``max_tokens=1`` at
          ``base_url``: proves the address, the API key and the model (bills a few tokens);
        - ``api == "native"``: GetTokenCount of ``"ping"`` (address, SecretId/SecretKey, clock;
          no generation), then a streamed ChatCompletions of ``"ping"`` closed at its first
          chunk (the model; native chat has no max-tokens field);
        - ``image_api == "native"``: QueryHunyuanImageJob of a JobId that does not exist, which
          must come back as "no such job": proves the native credentials and that ``region``
          serves image jobs, and creates nothing.

        The TokenHub image endpoint is not called (it has no free call); it shares ``base_url``
        and ``api_key`` with the OpenAI-compatible chat.
        """
        cfg = self._config
        deadline = self._x.deadline(cfg.total_timeout)
        verified: list[str] = []
        region = ""
        msgs = [ChatMessage("user", _CHECK_PROMPT)]
        if cfg.api == "openai":
            params = self._params(None, 1, None, None, None)
            steps: list[_CheckStep] = [
                (
                    "chat completion",
                    False,
                    ("url", "key", "model"),
                    lambda: self._chat_once(msgs, params, deadline=deadline, retry_if=_never),
                )
            ]
        else:
            region = cfg.region
            params = self._params(None, None, None, None, None)
            steps = [
                (
                    "GetTokenCount",
                    True,
                    ("url", "key", "clock"),
                    lambda: self._count_once(_CHECK_PROMPT, deadline=deadline, retry_if=_never),
                ),
                ("ChatCompletions", True, ("model",), lambda: self._check_stream(msgs, deadline)),
            ]
        if cfg.image_api == "native":
            region = cfg.region
            steps.append(
                (
                    "QueryHunyuanImageJob",
                    True,
                    ("url", "key", "clock", "region"),
                    lambda: self._check_image_region(deadline),
                )
            )
        for what, native, proves, call in steps:
            address = "native_endpoint" if native else "base_url"
            try:
                await call()
            except HunyuanError as err:
                problem, settings, reason = diagnose(err, native=native, address=address)
                return self._check_result(
                    problem=problem,
                    detail=f"{what} failed: {reason} ({_label(err)}).",
                    endpoint=cfg.native_endpoint if native else cfg.base_url,
                    region=region,
                    settings=settings,
                    verified=verified,
                    err=err,
                )
            except httpx.InvalidURL:
                return self._check_result(
                    problem="url",
                    detail=f"{what} failed: the configured address is not a valid URL.",
                    endpoint=cfg.native_endpoint if native else cfg.base_url,
                    region=region,
                    settings=(address,),
                    verified=verified,
                )
            verified.extend(p for p in proves if p not in verified)
        return self._check_result(
            problem=None,
            detail="The model service answered every check.",
            endpoint=self._endpoint(),
            region=region,
            settings=(),
            verified=verified,
        )

    async def _check_stream(self, msgs: Sequence[ChatMessage], deadline: float) -> None:
        params = self._params(None, None, None, None, None)
        reader, _first = await open_stream(self._x, self._chat_backend, msgs, params, deadline)
        await reader.aclose()  # drops the connection: no need to pay for the rest

    async def _check_image_region(self, deadline: float) -> None:
        wire = self._native_images
        try:
            await self._x.call(
                "check",
                lambda ts: wire.query_request(_CHECK_JOB_ID, timestamp=ts),
                wire.extract_error,
                lambda response: wire.parse_query(response.content),
                deadline=deadline,
                retry_if=_never,
            )
        except InvalidRequest as err:  # "no such job": reached the service, region accepted
            problem, _, _ = diagnose(err, native=True, address="native_endpoint")
            if problem == "region":
                raise
        except ModelUnavailable as err:
            if not err.code.startswith("ResourceNotFound"):
                raise

    def _check_result(
        self,
        *,
        problem: CheckProblem | None,
        detail: str,
        endpoint: str,
        region: str,
        settings: tuple[str, ...],
        verified: Sequence[str],
        err: HunyuanError | None = None,
    ) -> CheckResult:
        return CheckResult(
            ok=problem is None,
            problem=problem,
            detail=detail,
            api=self._config.api,
            endpoint=_without_userinfo(endpoint),
            model=self._config.model,
            region=region,
            settings=settings,
            verified=tuple(verified),
            code=_code(err) if err is not None else "",
            status=err.status if err is not None else None,
            request_id=err.request_id if err is not None else None,
        )


def _code(err: HunyuanError) -> str:
    """The service's error code (our internal "not sent" marker is not one)."""
    return "" if err.code == NOT_SENT else err.code


def _label(err: HunyuanError) -> str:
    """The error's identity for the detail line: code, HTTP status, or kind (no upstream text)."""
    parts = [_code(err)] if _code(err) else []
    if err.status is not None:
        parts.append(f"HTTP {err.status}")
    return ", ".join(parts) if parts else err.kind


def _without_userinfo(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "(invalid URL)"
    if not parsed.userinfo:
        return url
    return str(parsed.copy_with(username=None, password=None))
