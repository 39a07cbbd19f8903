"""The emulator's aiohttp application: routes, middleware, and :class:`Emulator`, the server.

:func:`make_app` builds the application (for embedding); :class:`Emulator` runs one on a
loopback port. Routes: ``/v1/...`` are the OpenAI-compatible interface
(:mod:`.openai_compat`, :mod:`.images`), ``POST /`` the native API 3.0 (:mod:`.native`),
``GET /files/<name>`` the generated images (:mod:`.images`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from aiohttp import web

from core.hunyuan.emulator.gate import StepGate
from core.hunyuan.emulator.images import handle_file, handle_image_lite, handle_image_v3
from core.hunyuan.emulator.native import handle_native
from core.hunyuan.emulator.openai_compat import handle_chat
from core.hunyuan.emulator.state import (
    STATE_KEY,
    EmulatorConfig,
    EmulatorStats,
    EmuState,
    ImageRecord,
)
from core.hunyuan.emulator.wire import http_error, interface_of

__all__ = ["Emulator", "EmulatorConfig", "EmulatorStats", "ImageRecord", "app_stats", "make_app"]

_log = logging.getLogger(__name__)


@web.middleware
async def _count_connections(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if peer is not None:
        request.app[STATE_KEY].stats.connections.add(repr(peer))
    return await handler(request)


_STATUS_MESSAGES = {
    404: "Invalid URL ({method} {path}).",
    405: "Method not allowed ({method} {path}).",
    413: "Request body too large: the limit is {limit} bytes.",
}


@web.middleware
async def _refuse_in_shape(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Every refusal in the error shape of the path's interface (see :mod:`.wire`).

    404/405 from the router and 413 (declared ``Content-Length`` or bytes read over
    ``max_body_bytes``) keep their status; any other exception escaping a handler is logged
    once, with its traceback, and answered as the interface's internal error, whose body never
    carries the trace.
    """
    state = request.app[STATE_KEY]
    interface = interface_of(request.path)
    limit = state.config.max_body_bytes
    # Shown in messages: ASCII only, so a hostile path cannot break the JSON encoding.
    path = request.path[:200].encode("ascii", "backslashreplace").decode()
    try:
        length = request.content_length
        if length is not None and length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        template = _STATUS_MESSAGES.get(exc.status, "The request was refused ({method} {path}).")
        message = template.format(method=request.method, path=path, limit=limit)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return http_error(state, interface, exc.status, message, headers=headers)
    except Exception:
        _log.exception("emulator: unexpected error answering %s %s", request.method, path)
        message = "The emulator failed while processing the request."
        return http_error(state, interface, 500, message)


def _build_app(state: EmuState) -> web.Application:
    app = web.Application(
        client_max_size=state.config.max_body_bytes,
        middlewares=[_count_connections, _refuse_in_shape],
    )
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", handle_chat)
    app.router.add_post("/v1/wand/hunyuan-image/v3-generation", handle_image_v3)
    app.router.add_post("/v1/api/image/lite", handle_image_lite)
    app.router.add_post("/", handle_native)
    app.router.add_get("/files/{name}", handle_file)

    async def _on_shutdown(_app: web.Application) -> None:
        await state.shutdown()

    # on_shutdown runs before the server waits for open handlers, so hanging requests are
    # released and background jobs cancelled before aiohttp starts waiting for them.
    app.on_shutdown.append(_on_shutdown)
    return app


def make_app(config: EmulatorConfig) -> web.Application:
    """A fresh emulator app for embedding in another aiohttp server or runner.

    Its stats are reachable via :func:`app_stats`. Background image jobs are cancelled on the
    app's shutdown.
    """
    return _build_app(EmuState(config))


def app_stats(app: web.Application) -> EmulatorStats:
    """The :class:`EmulatorStats` of an app built by :func:`make_app`."""
    return app[STATE_KEY].stats


class Emulator:
    """The emulator on a loopback (or given) port; an async context manager.

    ``start`` binds (port 0 = a free port) and returns once the server accepts connections;
    ``stop`` releases hanging requests, cancels image jobs and closes the listener within a
    couple of seconds. ``stats`` exists from construction on and survives ``stop``.
    """

    def __init__(
        self,
        *,
        config: EmulatorConfig = EmulatorConfig(),  # noqa: B008 - frozen, safe to share
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config
        self._host = host
        self._port = port
        self._state = EmuState(config)
        self.stats: EmulatorStats = self._state.stats
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"Emulator(host={self._host!r}, port={self._port}, config={self.config!r})"

    @property
    def port(self) -> int:
        """The bound port (the requested one before ``start``)."""
        return self._port

    @property
    def openai_base_url(self) -> str:
        return f"http://{self._url_host}:{self._port}/v1"

    @property
    def native_endpoint(self) -> str:
        return f"http://{self._url_host}:{self._port}"

    @property
    def openai_account(self) -> str:
        """Stats label of the Bearer account (a fingerprint, not the key)."""
        return self._state.openai_account

    @property
    def native_account(self) -> str:
        """Stats label of the SecretId account (``"sid:<SecretId>"``)."""
        return self._state.native_account

    @property
    def _url_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    @property
    def image_gate(self) -> StepGate:
        """Test hook: where image runs take their steps (held with
        ``EmulatorConfig(hold_image_runs=True)``; see :mod:`.gate`)."""
        return self._state.image_gate

    @property
    def chat_gate(self) -> StepGate:
        """Test hook: where chats wait, holding their slot (held with
        ``EmulatorConfig(hold_chats=True)``, else they wait their latency; see :mod:`.gate`)."""
        return self._state.chat_gate

    def advance_time(self, seconds: float) -> None:
        """Move the emulator's clock forward (ages result URLs; TC3 checks use real time)."""
        self._state.clock_offset += seconds

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        self._state.reset_stop()
        runner = web.AppRunner(
            _build_app(self._state),
            handler_cancellation=True,
            shutdown_timeout=2.0,
            access_log=None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self._port = int(addresses[0][1])
        _log.info("hunyuan emulator listening on %s", self.native_endpoint)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        with contextlib.suppress(Exception):
            await self._state.shutdown()
        await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
