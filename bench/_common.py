"""Helpers shared by the benchmark scripts in ``bench/`` (not part of the ``hybot`` package).

Who uses it: ``bench/hunyuan_client.py`` and ``bench/pipeline.py``, run as scripts
(``.venv/bin/python bench/<name>.py``), which put this folder first on ``sys.path``.

What it guarantees:

- :class:`EmulatorProcess` runs the Hunyuan emulator in a *separate* Python process bound to
  127.0.0.1 (port chosen by the OS), so the measured process holds only the client or the core.
  The child stops when the parent closes its stdin, sends SIGTERM, or dies; :meth:`stop` kills
  it if it has not exited within a few seconds.
- Statistics helpers (:func:`median`, :func:`percentile`) never raise on an empty sample: they
  return ``nan`` so a broken run still prints something readable.
- :func:`verdict` formats one figure against its target as ``PASS`` or ``MISS``; benchmarks
  never fail a build on a miss, they only say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

__all__ = [
    "EMULATOR_API_KEY",
    "EmulatorProcess",
    "banner",
    "fmt_ms",
    "median",
    "percentile",
    "verdict",
]

EMULATOR_API_KEY = "sk-hybot-bench"
"""The Bearer key the benchmark emulator accepts (a throwaway value, not a credential)."""

_SECRET_ID = "AKIDhybotBench"
_SECRET_KEY = "hybot-bench-secret-key"

# The child: build an EmulatorConfig from JSON, serve on 127.0.0.1:0, print the port, and run
# until stdin closes (the parent went away) or SIGTERM/SIGINT arrives.
_CHILD = r"""
import asyncio, json, signal, sys
from core.hunyuan.emulator import Emulator, EmulatorConfig

async def main() -> None:
    cfg = json.loads(sys.argv[1])
    cfg["faults"] = frozenset(cfg.get("faults", ()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    async with Emulator(config=EmulatorConfig(**cfg), host="127.0.0.1", port=0) as emu:
        print(f"PORT {emu.port}", flush=True)
        await stop.wait()
    watcher.cancel()

asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class _Endpoints:
    port: int

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def native_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class EmulatorProcess:
    """The emulator in a child process; an async context manager.

    ``chat_concurrency``, ``latency`` and ``chunk_delay`` are passed to ``EmulatorConfig``.
    After ``__aenter__``: ``port``, ``openai_base_url``, ``native_endpoint``, ``api_key``,
    ``secret_id``, ``secret_key`` and ``pid`` are set. Start-up waits at most
    ``start_timeout`` seconds for the child's ``PORT`` line, then raises ``RuntimeError``
    carrying the child's stderr.
    """

    api_key = EMULATOR_API_KEY
    secret_id = _SECRET_ID
    secret_key = _SECRET_KEY

    def __init__(
        self,
        *,
        chat_concurrency: int = 5,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        start_timeout: float = 20.0,
    ) -> None:
        self._config: dict[str, Any] = {
            "api_key": EMULATOR_API_KEY,
            "secret_id": _SECRET_ID,
            "secret_key": _SECRET_KEY,
            "chat_concurrency": chat_concurrency,
            "latency": latency,
            "chunk_delay": chunk_delay,
        }
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._endpoints: _Endpoints | None = None

    def __repr__(self) -> str:
        port = self._endpoints.port if self._endpoints else None
        return f"EmulatorProcess(port={port!r}, chat_concurrency={self.chat_concurrency})"

    @property
    def chat_concurrency(self) -> int:
        return int(self._config["chat_concurrency"])

    @property
    def _ends(self) -> _Endpoints:
        if self._endpoints is None:
            raise RuntimeError("emulator process not started")
        return self._endpoints

    @property
    def port(self) -> int:
        return self._ends.port

    @property
    def openai_base_url(self) -> str:
        return self._ends.openai_base_url

    @property
    def native_endpoint(self) -> str:
        return self._ends.native_endpoint

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("emulator process not started")
        return self._proc.pid

    async def start(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            json.dumps(self._config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._proc = proc
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(self._start_timeout):
                line = (await proc.stdout.readline()).decode().strip()
            if not line.startswith("PORT "):
                raise RuntimeError("emulator child did not report its port")
            self._endpoints = _Endpoints(int(line.split()[1]))
        except BaseException as err:
            detail = await self._kill_and_stderr()
            raise RuntimeError(f"emulator process failed to start: {detail}") from err

    async def _kill_and_stderr(self) -> str:
        proc = self._proc
        if proc is None:
            return ""
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            async with asyncio.timeout(5):
                _, err = await proc.communicate()
        except TimeoutError:
            return "(no stderr)"
        return err.decode(errors="replace")[-2000:]

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(5):
                await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def __aenter__(self) -> EmulatorProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# --- statistics and printing -----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, or ``nan`` for an empty sample."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) by linear interpolation, or ``nan`` when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * pct / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def fmt_ms(seconds: float) -> str:
    """Seconds shown as milliseconds with three decimals."""
    return f"{seconds * 1000:.3f} ms"


def verdict(ok: bool) -> str:
    """``"PASS"`` or ``"MISS"`` (a miss is reported, never raised)."""
    return "PASS" if ok else "MISS"


def banner(title: str, *, quick: bool) -> str:
    """A header naming the benchmark, the date, the machine and the mode."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count() or 0
    mode = "QUICK (smoke test; figures not meaningful)" if quick else "full"
    return (
        f"== {title} ==\n"
        f"date: {when}; python {platform.python_version()}; {cpus} CPUs; "
        f"{platform.machine()}; mode: {mode}"
    )
