"""A test hook that lets tests drive image runs and chats step by step instead of racing the
clock.

Each image run waits ``image_job_steps`` seconds of real time at its steps: a native job once
while queued (before it may take a run slot) and once while running (after rendering, before it
reports done); a synchronous image call (TokenHub, TextToImageLite) once while it holds its slot.
A chat waits its latency while holding its chat slot. A test asserting on progress (queued →
running → done, FIFO run slots, a busy error while the slots are taken) would then depend on
how fast a loaded machine sends and polls. With ``EmulatorConfig(hold_image_runs=True)`` every
image step waits at ``Emulator.image_gate`` instead, and with ``hold_chats=True`` every chat
waits at ``Emulator.chat_gate`` (holding its slot, in place of its latency), in arrival order,
until the test lets it go with :meth:`StepGate.release` (or stops holding with
:meth:`StepGate.open`). Shutdown opens both gates.

Guarantees: steps are released first-in first-out; a held step that is cancelled (emulator
shutdown, client gone) leaves the gate at once. The counts :attr:`StepGate.held` and
:attr:`StepGate.finished` and the waits on them work whether the gate holds or not, so a test
can await "the job finished" rather than poll for it. Single event loop; no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["StepGate"]


class StepGate:
    """Where image runs (or chats) wait for their steps; see the module docstring."""

    def __init__(self, *, holding: bool = False) -> None:
        self._holding = holding
        self._held: deque[asyncio.Future[None]] = deque()
        self._finished = 0
        self._changed: asyncio.Event | None = None

    @property
    def holding(self) -> bool:
        """Whether steps wait for :meth:`release` (else they take their real time)."""
        return self._holding

    @property
    def held(self) -> int:
        """How many steps wait at the gate now (a cancelled one no longer counts)."""
        self._forget_cancelled()
        return len(self._held)

    @property
    def finished(self) -> int:
        """How many runs reached an outcome (done or failed) since the emulator started."""
        return self._finished

    # --- the emulator's side ------------------------------------------------------------

    async def step(self, seconds: float) -> None:
        """One step of a run: ``seconds`` of real time, or, while holding, a wait at the gate
        until :meth:`release` lets it go."""
        if not self._holding:
            if seconds > 0:
                await asyncio.sleep(seconds)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held.append(future)
        self._notify()
        try:
            await future
        finally:
            if future in self._held:  # cancelled while held
                self._held.remove(future)
                self._notify()

    def run_finished(self) -> None:
        """Called by the emulator when a run (image run, chat) reached its outcome."""
        self._finished += 1
        self._notify()

    # --- the test's side ----------------------------------------------------------------

    def release(self, steps: int = 1) -> None:
        """Let the ``steps`` oldest held steps go on. Raises ``ValueError`` if fewer are held
        (a test that releases what never arrived has lost track)."""
        if steps > self.held:
            raise ValueError(f"{steps} steps to release but {len(self._held)} held")
        for _ in range(steps):
            self._held.popleft().set_result(None)
        self._notify()

    def open(self) -> None:
        """Stop holding: release every held step; later steps take their real time."""
        self._holding = False
        self.release(self.held)

    async def wait_held(self, steps: int, *, within: float = 10.0) -> None:
        """Wait until at least ``steps`` steps are held (``TimeoutError`` after ``within`` s)."""
        await self._wait(lambda: self.held >= steps, within)

    async def wait_finished(self, runs: int, *, within: float = 10.0) -> None:
        """Wait until at least ``runs`` runs finished (``TimeoutError`` after ``within``
        s)."""
        await self._wait(lambda: self._finished >= runs, within)

    async def _wait(self, ready: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not ready():
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

    def _forget_cancelled(self) -> None:
        # A step whose task was cancelled has a cancelled future until its task runs its
        # ``finally``; it must neither count as held nor be released.
        if any(future.done() for future in self._held):
            self._held = deque(future for future in self._held if not future.done())

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
