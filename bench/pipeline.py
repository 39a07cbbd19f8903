"""Benchmark: the whole conversation core against the bare Hunyuan client, in one run.

Run: ``.venv/bin/python bench/pipeline.py`` (``--quick`` for the smoke test, ``--help`` for the
knobs). Prints each figure with its target and PASS/MISS; exits 0 either way.

Process layout: the emulator runs in a separate process (:class:`_common.EmulatorProcess`,
zero latency, zero chunk delay, the default 5 concurrent chats per account); this process
holds only the core: ``Conversation`` over a real ``HunyuanClient`` and a ``SQLiteStore`` on
a file on disk.

1. **Throughput.** Each round sends one message to every one of ``--chats`` distinct chats (one
   user per chat, DMs) through ``Conversation.handle`` with ``--concurrency`` workers (the
   core's chat governor and the emulator both allow 5 model calls), then replays the very
   message lists the core sent straight through ``HunyuanClient.stream_chat`` with the same
   workers, model and ``max_tokens``. Rounds alternate which arm goes first (the baseline
   replays the previous round's lists when it goes first) after an untimed warm-up round.
   Reported: messages/s of both arms (median over rounds) and core/baseline (target >= 0.8).
2. **Core overhead per message.** Sequentially (no other task competing for the loop),
   messages go through ``handle`` while a thin subclass of the client times every wait for
   the next chunk; overhead = time in ``handle`` minus time inside the client's stream.
   Reported: p50 and p99 (target p99 < 5 ms), and as a cross-check the difference of medians
   of the same messages through the core and straight through the client, interleaved.
3. **RSS** (psutil, after ``gc.collect()``) once ``--rss-chats`` distinct chats have been
   handled (target < 200 MB).
4. **Context assembly.** Conversations seeded through ``append_turns`` with ``--history``
   (10,000), ``HISTORY_WINDOW`` (the pipeline's read bound) and 10 turns; the pipeline's
   context step (``load_context(limit=HISTORY_WINDOW)`` + ``build_context``) is timed
   ``--context-reps`` times each, interleaved. Reported: medians and the ratio long/short
   (target <= 2, i.e. independent of history length).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import psutil  # type: ignore[import-untyped, unused-ignore]
from _common import EmulatorProcess, banner, fmt_ms, median, percentile, verdict

from core.config import BotConfig, HunyuanConfig, ModelSpec, Secret
from core.context import build_context
from core.conversation import HISTORY_WINDOW, Conversation
from core.hunyuan import HunyuanClient
from core.store import SQLiteStore
from core.store.base import TurnRecord
from core.types import (
    ChatChunk,
    ChatMessage,
    ConversationKey,
    Failure,
    Final,
    Inbound,
)

__all__ = ["Recorded", "TimedClient", "main", "run"]

PLATFORM = "bench"
MB = 1024 * 1024


# --- instruments -----------------------------------------------------------------------------


@dataclass
class Recorded:
    """What one ``handle`` call did inside the client: time spent waiting for chunks, and the
    request it made (so the baseline can replay exactly the same one)."""

    inside: float = 0.0
    calls: int = 0
    messages: tuple[ChatMessage, ...] = ()
    model: str | None = None
    max_tokens: int | None = None


# Set by the driver around one ``handle`` call; async generators run in the iterating task's
# context, so the client subclass below sees the driver's value (one per worker task).
_RECORD: ContextVar[Recorded | None] = ContextVar("bench_record", default=None)


class TimedClient(HunyuanClient):
    """``HunyuanClient`` whose ``stream_chat`` adds the time spent awaiting each chunk to the
    current :class:`Recorded` (when one is set) and records the request. Both arms use it, so
    the thin extra generator layer is paid on both sides."""

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
        record = _RECORD.get()
        if record is not None:
            record.calls += 1
            record.messages = tuple(messages)
            record.model = model
            record.max_tokens = max_tokens
        inner = cast(
            AsyncGenerator[ChatChunk, None],
            super().stream_chat(
                messages,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                extra=extra,
            ),
        )
        clock = time.perf_counter
        try:
            while True:
                start = clock()
                try:
                    chunk = await anext(inner)
                except StopAsyncIteration:
                    break
                finally:
                    if record is not None:
                        record.inside += clock() - start
                yield chunk
        finally:
            start = clock()
            await inner.aclose()
            if record is not None:
                record.inside += clock() - start


class _RetryCounter(logging.Handler):
    """Counts the client's "attempt failed, retrying" log lines (busy refusals etc.)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.count += 1


@dataclass
class _Outcome:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, ok: bool, code: str) -> None:
        if ok:
            self.ok += 1
        else:
            self.failures[code] += 1

    def __str__(self) -> str:
        bad = sum(self.failures.values())
        detail = f" ({dict(self.failures)})" if bad else ""
        return f"{self.ok} ok, {bad} failed{detail}"


_DELIVERY_IDS = itertools.count(1)  # unique delivery ids for this script run


def _inbound(chat: str, text: str) -> Inbound:
    return Inbound(
        platform=PLATFORM,
        delivery_id=f"d{next(_DELIVERY_IDS)}",
        key=ConversationKey(PLATFORM, "bot", chat, "", ""),
        user_id=f"user-{chat}",
        text=text,
        channel_id=chat,
        is_dm=True,
    )


def _text(chat: str, round_no: int) -> str:
    return (
        f"Round {round_no} in {chat}: please give me a short summary of what we discussed "
        "so far and suggest one next step for the project plan."
    )


async def _handle(conv: Conversation, inbound: Inbound) -> tuple[float, Recorded, bool, str]:
    """One delivery through the core: (wall seconds, what the client did, ok, failure code)."""
    record = Recorded()
    token = _RECORD.set(record)
    ok, code = False, "no-final"
    start = time.perf_counter()
    try:
        async for event in conv.handle(inbound):
            if isinstance(event, Final):
                ok = True
            elif isinstance(event, Failure):
                code = event.code
    finally:
        wall = time.perf_counter() - start
        _RECORD.reset(token)
    return wall, record, ok, code


async def _direct(client: HunyuanClient, rec: Recorded) -> tuple[float, bool]:
    """The same request straight through the client: (wall seconds, got a finish)."""
    start = time.perf_counter()
    finished = False
    try:
        async for chunk in client.stream_chat(
            rec.messages, model=rec.model, max_tokens=rec.max_tokens
        ):
            if chunk.finish_reason:
                finished = True
    except Exception:
        finished = False
    return time.perf_counter() - start, finished


async def _pool(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> float:
    """Run ``jobs`` with ``concurrency`` workers; returns the wall time."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:
            await job()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def _cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` (all its threads) so far."""
    times = proc.cpu_times()
    return float(times.user + times.system)


def _rss() -> int:
    gc.collect()
    return int(psutil.Process(os.getpid()).memory_info().rss)


def _fs_of(path: Path) -> str:
    """The file system holding ``path`` (to show the database is on disk, not tmpfs)."""
    best, fstype = "", "?"
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        if path.resolve().is_relative_to(mount) and len(mount) > len(best):
            best, fstype = mount, part.fstype
    return f"{fstype} at {best or '?'}"


# --- phases ----------------------------------------------------------------------------------


async def phase_throughput(
    conv: Conversation,
    client: HunyuanClient,
    *,
    chats: list[str],
    rounds: int,
    concurrency: int,
    retries: _RetryCounter,
    emulator_pid: int,
) -> float:
    core_rates: list[float] = []
    base_rates: list[float] = []
    me, emu = psutil.Process(os.getpid()), psutil.Process(emulator_pid)
    # CPU seconds per message, (this process, emulator process), per timed round.
    core_cpu: list[tuple[float, float]] = []
    base_cpu: list[tuple[float, float]] = []
    core_out, base_out = _Outcome(), _Outcome()
    core_retries = base_retries = 0
    lists: list[Recorded] = []

    async def core_arm(round_no: int) -> float:
        nonlocal core_retries, lists
        recorded: list[Recorded] = []

        def job(chat: str) -> Callable[[], Awaitable[None]]:
            async def go() -> None:
                _, rec, ok, code = await _handle(conv, _inbound(chat, _text(chat, round_no)))
                core_out.add(ok, code)
                if rec.calls:
                    recorded.append(rec)

            return go

        before = retries.count
        cpu = _cpu(me), _cpu(emu)
        wall = await _pool([job(c) for c in chats], concurrency)
        core_cpu.append(((_cpu(me) - cpu[0]) / len(chats), (_cpu(emu) - cpu[1]) / len(chats)))
        core_retries += retries.count - before
        lists = recorded
        return len(chats) / wall

    async def base_arm() -> float:
        nonlocal base_retries

        def job(rec: Recorded) -> Callable[[], Awaitable[None]]:
            async def go() -> None:
                _, ok = await _direct(client, rec)
                base_out.add(ok, "stream-failed")

            return go

        before = retries.count
        cpu = _cpu(me), _cpu(emu)
        wall = await _pool([job(r) for r in lists], concurrency)
        n = max(1, len(lists))
        base_cpu.append(((_cpu(me) - cpu[0]) / n, (_cpu(emu) - cpu[1]) / n))
        base_retries += retries.count - before
        return len(lists) / wall

    for r in range(rounds + 1):
        if r % 2 == 1 and lists:
            base, core = await base_arm(), await core_arm(r)
        else:
            core = await core_arm(r)
            base = await base_arm()
        if r == 0:  # warm-up: connection pool, caches, SQLite pages
            core_out, base_out = _Outcome(), _Outcome()
            core_retries = base_retries = 0
            core_cpu.clear()
            base_cpu.clear()
            continue
        core_rates.append(core)
        base_rates.append(base)
    ratio = median(core_rates) / median(base_rates)
    per_round = [c / b for c, b in zip(core_rates, base_rates, strict=True)]
    print(
        f"throughput ({len(chats)} distinct chats, {rounds} rounds after a warm-up, "
        f"concurrency {concurrency}):"
    )
    print(
        f"  core     {median(core_rates):8.1f} msgs/s  (rounds: "
        f"{', '.join(f'{x:.0f}' for x in core_rates)}); {core_out}; client retries {core_retries}"
    )
    print(
        f"  baseline {median(base_rates):8.1f} msgs/s  (rounds: "
        f"{', '.join(f'{x:.0f}' for x in base_rates)}); {base_out}; client retries {base_retries}"
    )
    print(
        "  CPU per message (this process / emulator process): "
        f"core {fmt_ms(median([c for c, _ in core_cpu]))} / "
        f"{fmt_ms(median([e for _, e in core_cpu]))}; "
        f"baseline {fmt_ms(median([c for c, _ in base_cpu]))} / "
        f"{fmt_ms(median([e for _, e in base_cpu]))}"
    )
    print(
        f"  ratio core/baseline: {ratio:.3f} (per-round {min(per_round):.3f}..{max(per_round):.3f})"
        f"; target >= 0.80: {verdict(ratio >= 0.8)}"
    )
    return ratio


async def phase_overhead(
    conv: Conversation, client: HunyuanClient, *, chats: list[str], messages: int
) -> float:
    overheads: list[float] = []
    core_walls: list[float] = []
    direct_walls: list[float] = []
    insides: list[float] = []
    outcome = _Outcome()
    for i in range(messages):
        chat = chats[i % len(chats)]
        wall, rec, ok, code = await _handle(conv, _inbound(chat, _text(chat, 100 + i)))
        outcome.add(ok, code)
        if not ok or rec.calls != 1:
            continue
        overheads.append(wall - rec.inside)
        insides.append(rec.inside)
        core_walls.append(wall)
        direct, finished = await _direct(client, rec)
        if finished:
            direct_walls.append(direct)
    p50, p99 = percentile(overheads, 50), percentile(overheads, 99)
    print(f"core overhead per message (sequential, {messages} messages; {outcome}):")
    print(
        f"  handle() minus time inside the client stream: p50 {fmt_ms(p50)}, "
        f"p90 {fmt_ms(percentile(overheads, 90))}, p99 {fmt_ms(p99)}, "
        f"max {fmt_ms(max(overheads, default=float('nan')))}"
    )
    print(
        f"  for scale: time inside the client stream p50 {fmt_ms(median(insides))}; "
        f"whole handle() p50 {fmt_ms(median(core_walls))}"
    )
    print(
        f"  cross-check: median(handle) - median(same request straight through the client) = "
        f"{fmt_ms(median(core_walls) - median(direct_walls))}"
    )
    print(f"  target p99 < 5 ms: {verdict(p99 < 0.005)}")
    return p99


async def phase_rss(
    conv: Conversation, *, start_index: int, total_chats: int, concurrency: int, rss_start: int
) -> int:
    outcome = _Outcome()
    new = [f"r{i:06d}" for i in range(start_index, total_chats)]

    def job(chat: str) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            _, _, ok, code = await _handle(conv, _inbound(chat, _text(chat, 0)))
            outcome.add(ok, code)

        return go

    before = _rss()
    wall = await _pool([job(c) for c in new], concurrency)
    after = _rss()
    rate = len(new) / wall if wall > 0 else 0.0
    print(f"RSS after {total_chats} distinct chats ({len(new)} new ones here: {outcome}):")
    print(
        f"  RSS {after / MB:.1f} MB (at start {rss_start / MB:.1f} MB, before this phase "
        f"{before / MB:.1f} MB; this phase ran at {rate:.0f} msgs/s)"
    )
    print(f"  target < 200 MB: {verdict(after < 200 * MB)}")
    return after


def _seed_turns(count: int, user_id: str) -> list[TurnRecord]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    turns: list[TurnRecord] = []
    for i in range(count):
        when = start + timedelta(seconds=i)
        if i % 2 == 0:
            content = f"Question {i}: how should we plan the next sprint for the data team?"
            turns.append(TurnRecord("user", content, user_id, 20, when, f"seed{i}"))
        else:
            content = (
                f"Answer {i}: split the work into three streams, review them on Monday, and "
                "keep one day free for bugs. " * 3
            )
            turns.append(TurnRecord("assistant", content, user_id, 80, when, f"seed{i}"))
    return turns


async def phase_context(store: SQLiteStore, spec: ModelSpec, *, history: int, reps: int) -> float:
    sizes = {"short": 10, "window": HISTORY_WINDOW, "long": history}
    keys: dict[str, str] = {}
    for name, size in sizes.items():
        key = str(ConversationKey(PLATFORM, "bot", f"ctx-{name}", "", ""))
        state = await store.get_conversation(key)
        batch = _seed_turns(size, f"{PLATFORM}:ctx-{name}")
        for i in range(0, len(batch), 1000):
            await store.append_turns(
                key, state.epoch, batch[i : i + 1000], active_at=batch[-1].created_at
            )
        keys[name] = key

    async def assemble(key: str) -> int:
        # The pipeline's context step (Conversation._chat), nothing more: one load_context
        # (as in the pipeline) and build_context over the stored records.
        _, stored = await store.load_context(key, limit=HISTORY_WINDOW)
        plan = build_context(
            persona=None,
            history=stored,
            user_text="And what should we do about the backlog?",
            spec=spec,
            max_output_tokens=spec.max_output_tokens,
        )
        return len(plan.messages)

    times: dict[str, list[float]] = {name: [] for name in sizes}
    sent: dict[str, int] = {}
    names = list(sizes)
    for i in range(reps + 10):  # the first 10 are a warm-up
        order = names[i % 3 :] + names[: i % 3]
        for name in order:
            start = time.perf_counter()
            sent[name] = await assemble(keys[name])
            if i >= 10:
                times[name].append(time.perf_counter() - start)
    print(f"context assembly ({reps} interleaved repetitions each):")
    for name, size in sizes.items():
        print(
            f"  {size:>6} stored turns: median {fmt_ms(median(times[name]))}, "
            f"p90 {fmt_ms(percentile(times[name], 90))} "
            f"({min(size, HISTORY_WINDOW)} turns read, {sent[name]} messages built)"
        )
    ratio = median(times["long"]) / median(times["short"])
    window = median(times["long"]) / median(times["window"])
    print(
        f"  ratio {history}/10 turns: {ratio:.2f}; {history}/{HISTORY_WINDOW} turns: {window:.2f}"
    )
    print(f"  target {history}/10 within 2x: {verdict(ratio <= 2.0)}")
    return ratio


# --- entry point ----------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    p.add_argument("--chats", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up")
    p.add_argument("--concurrency", type=int, default=5)
    p.add_argument("--overhead-messages", type=int, default=500)
    p.add_argument("--rss-chats", type=int, default=10_000)
    p.add_argument("--history", type=int, default=10_000)
    p.add_argument("--context-reps", type=int, default=300)
    p.add_argument("--db-dir", type=Path, default=None, help="where the SQLite file goes")
    args = p.parse_args(argv)
    if args.quick:
        args.chats, args.rounds, args.overhead_messages = 20, 1, 20
        args.rss_chats, args.history, args.context_reps = 40, 300, 10
    args.rss_chats = max(args.rss_chats, args.chats)
    return args


async def run(args: argparse.Namespace) -> dict[str, float]:
    """Run every phase with ``args`` (see :func:`main`); returns the headline figures."""
    print(banner("hybot core benchmark", quick=args.quick))
    rss_start = _rss()
    retries = _RetryCounter()
    client_log = logging.getLogger("core.hunyuan.client")
    client_log.addHandler(retries)
    client_log.setLevel(logging.INFO)
    client_log.propagate = False
    results: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        db_dir = args.db_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="hybot-bench-"))
        )
        db_path = Path(db_dir) / "bench.db"
        async with EmulatorProcess(chat_concurrency=5) as emu:
            print(
                f"emulator: separate process pid {emu.pid} on 127.0.0.1:{emu.port} "
                f"(5 concurrent chats per account, zero latency); "
                f"SQLite file {db_path} ({_fs_of(db_path)})"
            )
            hy = HunyuanConfig(
                base_url=emu.openai_base_url,
                api_key=Secret(emu.api_key),
                # A busy refusal (the emulator frees a slot a moment after the last byte) is
                # retried quickly; the count is reported so it cannot hide.
                max_attempts=3,
                backoff_base=0.005,
                backoff_cap=0.02,
                idle_timeout=30.0,
            )
            config = replace(BotConfig(), hunyuan=hy, chat_concurrency=args.concurrency)
            spec = config.model_spec(hy.model)
            async with (
                SQLiteStore(path=db_path) as store,
                TimedClient(config=hy) as core_client,
                TimedClient(config=hy) as base_client,
                Conversation(config=config, store=store, model=core_client) as conv,
            ):
                chats = [f"c{i:05d}" for i in range(args.chats)]
                results["throughput_ratio"] = await phase_throughput(
                    conv,
                    base_client,
                    chats=chats,
                    rounds=args.rounds,
                    concurrency=args.concurrency,
                    retries=retries,
                    emulator_pid=emu.pid,
                )
                results["overhead_p99_s"] = await phase_overhead(
                    conv, base_client, chats=chats, messages=args.overhead_messages
                )
                results["rss_bytes"] = await phase_rss(
                    conv,
                    start_index=args.chats,
                    total_chats=args.rss_chats,
                    concurrency=args.concurrency,
                    rss_start=rss_start,
                )
                results["context_ratio"] = await phase_context(
                    store, spec, history=args.history, reps=args.context_reps
                )
    client_log.removeHandler(retries)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 whatever the figures (benchmarks never fail CI)."""
    args = _parse_args(argv)
    asyncio.run(run(args))
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
