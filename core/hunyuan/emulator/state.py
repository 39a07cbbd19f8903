"""Shared state of one emulator app: config, counters, faults, concurrency, time, errors.

One :class:`EmuState` lives in each app built by ``make_app``; the OpenAI-compatible and the
native handlers both read and mutate it (single event loop, so no locks are needed). The
public pieces (:class:`EmulatorConfig`, :class:`EmulatorStats`, :class:`ImageRecord`) are
re-exported by ``core.hunyuan.emulator``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.errors import ConfigError
from core.hunyuan.emulator.faults import (
    IMAGE_ERROR_FAULTS,
    EmuError,
    Faults,
    faults_from_config,
)
from core.hunyuan.emulator.gate import StepGate
from core.hunyuan.emulator.render import FileStore, RenderedImage, SlotPool, render_image
from core.hunyuan.emulator.text import parse_markers

__all__ = [
    "CHAT_MODELS",
    "MODEL_WINDOWS",
    "STATE_KEY",
    "EmuState",
    "EmulatorConfig",
    "EmulatorStats",
    "ImageRecord",
    "key_account",
]

#: Context window and input limit (tokens) of each chat model the emulator serves: reference
#: §3.4 (TokenHub's official figures; third-party copies of Tencent's table for the legacy
#: models, the same figures as core.config.DEFAULT_MODELS). hunyuan-turbos-latest has no
#: published figure; it gets the conservative 32k/28k the core assumes for unknown models.
MODEL_WINDOWS: Mapping[str, tuple[int, int]] = {
    "hy3-preview": (256_000, 192_000),
    "hunyuan-role-latest": (32_000, 28_000),
    "hy-mt2-pro": (8_000, 4_000),
    "hunyuan-lite": (256_000, 250_000),
    "hunyuan-standard": (32_000, 30_000),
    "hunyuan-turbo": (32_000, 28_000),
    "hunyuan-a13b": (224_000, 200_000),
    "hunyuan-turbos-latest": (32_000, 28_000),
}
CHAT_MODELS = frozenset(MODEL_WINDOWS)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How an emulator behaves. Secrets are excluded from ``repr``.

    ``faults`` uses the marker names (``"429"``, ``"latency=0.5"``, ...) and applies them to
    every request of the matching kind. ``max_body_bytes`` caps every request body (larger
    ones get 413; the default is API 3.0's 10 MB request limit). Test hooks (see
    :mod:`.gate`): ``hold_image_runs`` makes every image step wait for
    ``Emulator.image_gate.release()`` instead of ``image_job_steps`` seconds; ``hold_chats``
    makes every chat wait for ``Emulator.chat_gate.release()`` (holding its chat slot) instead
    of its latency. Invalid values raise :class:`ConfigError`.
    """

    api_key: str = field(default="sk-hybot-emulator", repr=False)
    secret_id: str = "AKIDhybotEmulator"
    secret_key: str = field(default="hybot-emulator-secret-key", repr=False)
    chat_concurrency: int = 5
    image_concurrency: int = 1
    latency: float = 0.0
    chunk_delay: float = 0.0
    faults: frozenset[str] = frozenset()
    image_job_steps: float = 0.05
    clock_skew_window: int = 300
    max_body_bytes: int = 10 * 1024 * 1024
    hold_image_runs: bool = False
    hold_chats: bool = False

    def __post_init__(self) -> None:
        if not self.api_key or not self.secret_id or not self.secret_key:
            raise ConfigError("emulator credentials must not be empty")
        if self.chat_concurrency < 1 or self.image_concurrency < 1:
            raise ConfigError("emulator concurrency limits must be at least 1")
        for value in (self.latency, self.chunk_delay, self.image_job_steps):
            if not math.isfinite(value) or value < 0:
                raise ConfigError("emulator delays must be non-negative numbers")
        if self.clock_skew_window < 0:
            raise ConfigError("clock_skew_window must be non-negative")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes must be at least 1")
        try:
            faults_from_config(self.faults)
        except ValueError as err:
            raise ConfigError(f"bad emulator fault: {err}") from err


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One generated image. ``mark`` is the text of the AI mark drawn, ``None`` if none."""

    name: str
    route: str
    account: str
    width: int
    height: int
    mime: str
    prompt: str
    seed: int
    mark: str | None

    @property
    def mark_drawn(self) -> bool:
        return self.mark is not None


@dataclass(slots=True)
class EmulatorStats:
    """Counters tests assert on (mutated only by the emulator's handlers).

    - ``requests``: by route (``"/v1/chat/completions"``, ``"/v1/api/image/lite"``,
      ``"/v1/wand/hunyuan-image/v3-generation"``, ``"/files"``) and native action
      (``"native:ChatCompletions"``).
    - ``errors``: by error code returned (``"1001"``, ``"429001"``, ``"http500"``,
      ``"AuthFailure.SignatureFailure"``, ``"dropped"``...); fault errors are counted under the
      fault name (``"busy"``, ``"429"``, ``"moderation"``...); answers of the HTTP layer as
      ``"http404"``/``"http405"``/``"http413"``, prompts over the model's window as
      ``"context_length_exceeded"``, unexpected failures as ``"internal"``. ``faults``: fault
      names in force.
    - ``chats_in_flight`` / ``max_concurrent_chats``: per account (``"key:<fingerprint>"`` or
      ``"sid:<SecretId>"``; the API key itself is never used as a label).
    - ``image_runs`` / ``max_image_runs``: running image jobs (and sync image calls) per account.
    - ``images``: every image generated, in order. ``last_bodies``: last parsed body per route.
    - ``connections``: distinct client connections (peer addresses) that sent a request.
    """

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    chats_in_flight: dict[str, int] = field(default_factory=dict)
    max_concurrent_chats: dict[str, int] = field(default_factory=dict)
    image_runs: dict[str, int] = field(default_factory=dict)
    max_image_runs: dict[str, int] = field(default_factory=dict)
    images: list[ImageRecord] = field(default_factory=list)
    last_bodies: dict[str, Any] = field(default_factory=dict)
    connections: set[str] = field(default_factory=set)

    @property
    def images_generated(self) -> int:
        return len(self.images)

    @property
    def busy_rejections(self) -> int:
        return self.errors["busy"]


STATE_KEY: web.AppKey[EmuState] = web.AppKey("hybot_emulator_state")


def key_account(api_key: str) -> str:
    """Stats label of a Bearer account: a short fingerprint, never the key itself."""
    return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


class EmuState:
    """Everything one emulator app shares between requests (see module docstring)."""

    def __init__(self, config: EmulatorConfig, stats: EmulatorStats | None = None) -> None:
        self.config = config
        self.stats = stats if stats is not None else EmulatorStats()
        self.server_faults = faults_from_config(config.faults)
        self.clock_offset = 0.0
        self.files = FileStore(clock=self.now)
        self.image_slots = SlotPool(limit=config.image_concurrency, on_change=self._image_runs)
        self.image_gate = StepGate(holding=config.hold_image_runs)
        self.chat_gate = StepGate(holding=config.hold_chats)
        self.tasks: set[asyncio.Task[None]] = set()
        self.openai_account = key_account(config.api_key)
        self.native_account = "sid:" + config.secret_id
        self._stopping: asyncio.Event | None = None
        self.jobs: dict[str, Any] = {}

    # --- time ---------------------------------------------------------------------------

    def now(self) -> float:
        """Emulator wall-clock time (real time plus ``advance_time`` offsets)."""
        return time.time() + self.clock_offset

    @property
    def stopping(self) -> asyncio.Event:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    def reset_stop(self) -> None:
        """Forget a previous shutdown (the event is re-created in the current loop)."""
        self._stopping = None

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns early (``False``) when the emulator is stopping."""
        if seconds <= 0:
            return not self.stopping.is_set()
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def hang(self, request: web.BaseRequest) -> web.StreamResponse:
        """Never answer: wait until the client goes away or the emulator stops, then drop."""
        while not self.stopping.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await self.sleep(0.05)
        return self.drop(request)

    def drop(self, request: web.BaseRequest) -> web.StreamResponse:
        """Close the connection without (the rest of) a response."""
        self.stats.errors["dropped"] += 1
        transport = request.transport
        if transport is not None:
            transport.close()
        # aiohttp writes nothing to a closed transport; this object is never seen by a client.
        return web.Response(status=200)

    async def shutdown(self) -> None:
        """Wake hanging handlers, cancel background image jobs, then let the requests held at
        the test gates go on (on app shutdown)."""
        self.stopping.set()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        self.image_gate.open()
        self.chat_gate.open()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- faults -------------------------------------------------------------------------

    def faults_for(self, marker_text: str | None) -> Faults:
        """Server-wide faults merged with the markers in ``marker_text`` (markers win)."""
        names = dict(self.server_faults)
        long = None
        if marker_text:
            markers = parse_markers(marker_text)
            names.update(markers.faults)
            long = markers.long
        latency = self.config.latency
        if "latency" in names:
            latency += float(names["latency"] or 0)
        for name in names:
            self.stats.faults[name] += 1
        return Faults(names=names, latency=latency, long=long)

    # --- concurrency --------------------------------------------------------------------

    def enter_chat(self, account: str, *, force_busy: bool = False) -> bool:
        """Take a chat slot for ``account``; ``False`` (and nothing taken) when over the limit."""
        current = self.stats.chats_in_flight.get(account, 0)
        if force_busy or current >= self.config.chat_concurrency:
            return False
        current += 1
        self.stats.chats_in_flight[account] = current
        peak = self.stats.max_concurrent_chats.get(account, 0)
        self.stats.max_concurrent_chats[account] = max(peak, current)
        return True

    def leave_chat(self, account: str) -> None:
        self.stats.chats_in_flight[account] = max(0, self.stats.chats_in_flight[account] - 1)
        self.chat_gate.run_finished()

    async def apply_faults(
        self, request: web.BaseRequest, faults: Faults, names: tuple[str, ...]
    ) -> web.StreamResponse | None:
        """Latency, then ``hang``, then the first error fault of ``names`` that is in force
        (raised as :class:`EmuError`), then ``disconnect``. ``None`` means: go on answering."""
        await self.sleep(faults.latency)
        if "hang" in faults:
            return await self.hang(request)
        for name in names:
            if name in faults:
                raise EmuError.fault(name)
        if "disconnect" in faults:
            return self.drop(request)
        return None

    # --- images -------------------------------------------------------------------------

    async def sync_image(
        self,
        request: web.BaseRequest,
        *,
        route: str,
        account: str,
        prompt: str,
        seed: int,
        width: int,
        height: int,
        jpeg: bool,
        mark: str | None,
        faults: Faults,
        ttl: float,
    ) -> tuple[str, bytes] | web.StreamResponse:
        """One synchronous image call (TokenHub, native TextToImageLite).

        Applies the image faults, then waits for one of the account's image slots (excess
        calls wait in FIFO order), "runs" for one step of the image gate (``image_job_steps``)
        and renders. Returns ``(url, bytes)``, or the response to send instead
        (hang/disconnect).
        """
        early = await self.apply_faults(request, faults, IMAGE_ERROR_FAULTS)
        if early is not None:
            return early
        ticket = self.image_slots.enqueue(account)
        await self.image_slots.acquire(account, ticket)
        try:
            await self.image_gate.step(self.config.image_job_steps)
            if "imagefail" in faults:
                raise EmuError.fault("imagefail")
            url, image = await self.create_image(
                route=route,
                account=account,
                base_url=f"{request.scheme}://{request.host}",
                prompt=prompt,
                seed=seed,
                width=width,
                height=height,
                jpeg=jpeg,
                mark=mark,
                ttl=ttl,
            )
            return url, image.data
        finally:
            self.image_slots.release(account)
            self.image_gate.run_finished()

    async def create_image(
        self,
        *,
        route: str,
        account: str,
        base_url: str,
        prompt: str,
        seed: int,
        width: int,
        height: int,
        jpeg: bool,
        mark: str | None,
        ttl: float,
    ) -> tuple[str, RenderedImage]:
        """Render (in a worker thread), store and record one image; returns ``(url, image)``.

        ``prompt`` must already be marker-free; the URL points back at this emulator
        (``<base_url>/files/<name>``) and stops working ``ttl`` seconds of emulator time later.
        """
        image = await asyncio.to_thread(
            render_image,
            prompt=prompt,
            seed=seed,
            width=width,
            height=height,
            fmt="JPEG" if jpeg else "PNG",
            mark=mark,
        )
        name = f"{uuid.uuid4().hex}.{'jpg' if jpeg else 'png'}"
        self.files.put(name, image.data, image.mime, ttl)
        self.stats.images.append(
            ImageRecord(name, route, account, width, height, image.mime, prompt, seed, mark)
        )
        return f"{base_url}/files/{name}", image

    def _image_runs(self, account: str, running: int) -> None:
        self.stats.image_runs[account] = running
        peak = self.stats.max_image_runs.get(account, 0)
        self.stats.max_image_runs[account] = max(peak, running)
