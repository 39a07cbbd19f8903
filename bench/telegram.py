"""Benchmark: the full Telegram bot against a bare python-telegram-bot echo bot, in one run.

Run: ``.venv/bin/python bench/telegram.py`` (``--quick`` for the smoke test, ``--help`` for the
knobs). Prints each figure with its target and PASS/MISS; exits 0 either way.

Process layout: the fake Bot API (``tests/fakes/telegram.py``) and the Hunyuan emulator
(zero latency, zero chunk delay, 5 concurrent chats per account) each run in a process of
their own on 127.0.0.1; this process holds only the bot being measured. Both arms poll the
same fake with the real python-telegram-bot.

- **echo**: ``Application`` with PTB's own ``Updater`` polling, ``concurrent_updates(True)``
  (otherwise PTB's defaults), and one ``MessageHandler`` that answers ``reply_text(text)``.
- **hybot**: ``TelegramAdapter`` (own ``getUpdates`` loop, every update recorded in the
  SQLite inbox first, ``BaseAdapter`` rendering with streaming on: drafts in these private
  chats) over the real core
  (``Conversation``, ``SQLiteStore`` on disk, ``HunyuanClient`` to the emulator).

1. **Throughput.** ``--messages`` messages over ``--chats`` chats (one user per chat, DMs) are
   queued at once; the time runs until the last one is answered (echo: its handler returned;
   hybot: its inbox entry is done, i.e. the core finished and the answer was rendered). Arms
   alternate over ``--rounds`` rounds after a warm-up. Reported: msgs/s (median) and
   hybot/echo (target >= 0.7).
2. **Added latency.** ``--latency-messages`` single messages, one at a time: time from queueing
   at the fake to answered, median and p90 for both arms, and the difference of medians.
3. **RSS** of this process (psutil, after ``gc.collect()``) before and after the hybot rounds.
4. **Bot API calls for one streamed 2,000-character answer** (the emulator's ``[[long=N]]``
   marker; a second emulator process paces its chunks by ``--chunk-delay`` so the answer
   streams for several seconds; the final text checked complete at the fake): every call made
   for that chat (``sendChatAction``, ``sendMessageDraft``, ``sendMessage``, and
   ``editMessageText`` where drafts are not used; target <= 12).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped, unused-ignore]

# This file is named like the ``telegram`` package: take its folder off the front of the
# import path (Python put it there), so ``import telegram`` finds python-telegram-bot, and
# append it at the end for ``_common``.
_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.append(str(_HERE))
sys.path.insert(0, str(ROOT / "tests"))

from _common import EmulatorProcess, banner, fmt_ms, median, percentile, verdict  # noqa: E402
from fakes.telegram import TOKEN, FakeTelegram  # noqa: E402
from telegram import Update  # noqa: E402
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters  # noqa: E402

from adapters.telegram.app import TelegramAdapter, TelegramOptions  # noqa: E402
from core.config import BotConfig, HunyuanConfig, Secret  # noqa: E402
from core.conversation import Conversation  # noqa: E402
from core.hunyuan import HunyuanClient  # noqa: E402
from core.inbox import Inbox  # noqa: E402
from core.store import SQLiteStore  # noqa: E402

_FAKE_CHILD = r"""
import asyncio, logging, signal, sys
sys.path.insert(0, sys.argv[1])
logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # clients hanging up at their stop
from fakes.telegram import FakeTelegram

async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)
    async with FakeTelegram(long_poll_cap=1.0) as fake:
        print("PORT", fake.port, flush=True)
        await stop.wait()

asyncio.run(main())
"""


class FakeProcess:
    """The fake Bot API in a child process, driven over its ``/_fake`` control routes."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self._http: aiohttp.ClientSession | None = None
        self._builder = FakeTelegram()  # only for its update builders (never started)

    async def __aenter__(self) -> FakeProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _FAKE_CHILD,
            str(ROOT / "tests"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await self._proc.stdout.readline()).decode().split()
        self.port = int(line[1])
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            await self._proc.wait()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def push(self, messages: list[tuple[int, str]]) -> list[int]:
        updates = [
            {"message": self._builder.text_message(chat_id=chat, user_id=chat, text=text)}
            for chat, text in messages
        ]
        assert self._http is not None
        async with self._http.post(
            f"http://127.0.0.1:{self.port}/_fake/push", data=json.dumps(updates)
        ) as resp:
            ids: list[int] = await resp.json()
        return ids

    async def stats(self, chat: int) -> dict[str, Any]:
        assert self._http is not None
        url = f"http://127.0.0.1:{self.port}/_fake/stats?chat_id={chat}"
        async with self._http.get(url) as resp:
            result: dict[str, Any] = await resp.json()
        return result


@dataclass
class Tracker:
    """When each update id was queued and answered."""

    queued: dict[int, float] = field(default_factory=dict)
    answered: dict[int, float] = field(default_factory=dict)
    wanted: set[int] = field(default_factory=set)
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, ids: list[int], at: float) -> None:
        self.all_done.clear()
        for uid in ids:
            self.queued[uid] = at
        self.wanted = set(ids)

    def done(self, uid: int) -> None:
        self.answered[uid] = time.perf_counter()
        self.wanted.discard(uid)
        if not self.wanted:
            self.all_done.set()


class CountingInbox(Inbox):
    """The real inbox, telling the tracker when an update is done."""

    tracker: Tracker

    async def done(self, platform: str, delivery_id: str) -> None:
        await super().done(platform, delivery_id)
        self.tracker.done(int(delivery_id))


@asynccontextmanager
async def echo_bot(fake: FakeProcess, tracker: Tracker) -> AsyncIterator[None]:
    async def reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        await update.message.reply_text(update.message.text)
        tracker.done(update.update_id)

    app = ApplicationBuilder().token(TOKEN).base_url(fake.base_url).concurrent_updates(True).build()
    app.add_handler(MessageHandler(filters.TEXT, reply))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=1, poll_interval=0)
        try:
            yield
        finally:
            await app.updater.stop()
            await app.stop()


@asynccontextmanager
async def hybot(
    fake: FakeProcess, emu: EmulatorProcess, db: Path, tracker: Tracker
) -> AsyncIterator[None]:
    hy = HunyuanConfig(base_url=emu.openai_base_url, api_key=Secret(emu.api_key), max_attempts=2)
    async with (
        SQLiteStore(path=db) as store,
        HunyuanClient(config=hy) as client,
        Conversation(config=BotConfig(hunyuan=hy), store=store, model=client) as conv,
    ):
        inbox = CountingInbox(store=store)
        inbox.tracker = tracker
        # The fake enforces no overall flood limit and the echo bot keeps to none, so for a
        # like-for-like comparison hybot's overall pacing (30 new messages/s) is off here.
        options = TelegramOptions(
            token=TOKEN, base_url=fake.base_url, poll_timeout=1, sends_per_second=0
        )
        async with TelegramAdapter(conversation=conv, inbox=inbox, options=options):
            yield


async def flood(
    fake: FakeProcess, tracker: Tracker, *, messages: int, chats: int, base: int, tag: str
) -> tuple[float, float]:
    """Messages per second, and CPU seconds of this process per message."""
    batch = [(base + i % chats, f"{tag} message {i}") for i in range(messages)]
    cpu = time.process_time()
    start = time.perf_counter()
    ids = await fake.push(batch)
    tracker.expect(ids, start)
    await asyncio.wait_for(tracker.all_done.wait(), 600)
    elapsed = time.perf_counter() - start
    return messages / elapsed, (time.process_time() - cpu) / messages


async def one_by_one(fake: FakeProcess, tracker: Tracker, *, count: int, base: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        ids = await fake.push([(base + i, f"latency {i}")])
        tracker.expect(ids, start)
        await asyncio.wait_for(tracker.all_done.wait(), 60)
        times.append(tracker.answered[ids[0]] - start)
    return times


def rss_mb() -> float:
    gc.collect()
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


async def run(args: argparse.Namespace) -> None:
    print(banner("hybot Telegram benchmark", quick=args.quick))
    tmp = Path(tempfile.mkdtemp(prefix="hybot-bench-tg-"))
    async with FakeProcess() as fake, EmulatorProcess(chat_concurrency=5) as emu:
        print(
            f"fake Bot API: process {fake.pid} on 127.0.0.1:{fake.port}; emulator: process "
            f"{emu.pid} on 127.0.0.1:{emu.port} (zero latency, 5 concurrent chats)"
        )
        rates: dict[str, list[float]] = {"echo": [], "hybot": []}
        lat: dict[str, list[float]] = {"echo": [], "hybot": []}
        cpus: dict[str, list[float]] = {"echo": [], "hybot": []}
        rss_start = rss_mb()
        base = 10_000
        rounds = [("warm-up", ("echo", "hybot"))] + [
            (f"round {r + 1}", ("echo", "hybot") if r % 2 else ("hybot", "echo"))
            for r in range(args.rounds)
        ]
        rss_after = rss_start
        for label, order in rounds:
            for arm in order:
                tracker = Tracker()
                base += args.chats + args.latency_messages
                if arm == "echo":
                    ctx = echo_bot(fake, tracker)
                else:
                    ctx = hybot(fake, emu, tmp / "bench.db", tracker)
                async with ctx:
                    rate, cpu = await flood(
                        fake, tracker, messages=args.messages, chats=args.chats, base=base, tag=arm
                    )
                    if label != "warm-up":
                        rates[arm].append(rate)
                        cpus[arm].append(cpu)
                        lat[arm] += await one_by_one(
                            fake, tracker, count=args.latency_messages, base=base + args.chats
                        )
                    if arm == "hybot":
                        rss_after = rss_mb()
                print(f"  {label}: {arm:<5} {rate:8.1f} msgs/s  CPU {fmt_ms(cpu)}/msg")

        # One streamed 2,000-character answer, counted at the fake. A second emulator paces
        # its chunks so that the answer streams for several seconds, as a real model does.
        tracker = Tracker()
        chat = base + 10_000
        async with (
            EmulatorProcess(chat_concurrency=5, chunk_delay=args.chunk_delay) as paced,
            hybot(fake, paced, tmp / "bench.db", tracker),
        ):
            start = time.perf_counter()
            ids = await fake.push([(chat, "write at length [[long=700]]")])
            tracker.expect(ids, start)
            await asyncio.wait_for(tracker.all_done.wait(), 120)
            streamed_for = time.perf_counter() - start
        stats = await fake.stats(chat)
        calls = stats["calls"]
        texts = stats["texts"]
        answer_chars = sum(len(t) for t in texts)

    echo_rate, bot_rate = median(rates["echo"]), median(rates["hybot"])
    ratio = bot_rate / echo_rate
    spread = [h / e for h, e in zip(rates["hybot"], rates["echo"], strict=False)]
    e50, b50 = median(lat["echo"]), median(lat["hybot"])
    total_calls = sum(calls.values())
    print()
    print(f"throughput ({args.messages} messages over {args.chats} chats, {args.rounds} rounds):")
    print(f"  echo  {echo_rate:8.1f} msgs/s   hybot {bot_rate:8.1f} msgs/s")
    print(
        f"  CPU of the bot process per message: echo {fmt_ms(median(cpus['echo']))}, "
        f"hybot {fmt_ms(median(cpus['hybot']))}"
    )
    print(
        f"  hybot/echo {ratio:.3f} (rounds {min(spread):.3f}-{max(spread):.3f})"
        f"  target >= 0.70  {verdict(ratio >= 0.7)}"
    )
    print(f"latency per message, one at a time ({len(lat['hybot'])} per arm):")
    print(f"  echo  p50 {fmt_ms(e50)}  p90 {fmt_ms(percentile(lat['echo'], 90))}")
    print(f"  hybot p50 {fmt_ms(b50)}  p90 {fmt_ms(percentile(lat['hybot'], 90))}")
    print(f"  added latency (p50 difference) {fmt_ms(b50 - e50)}")
    print(f"RSS of the bot process: {rss_start:.1f} MB at start, {rss_after:.1f} MB after hybot")
    print(
        f"Bot API calls for one streamed answer of {answer_chars} characters in "
        f"{len(texts)} message(s), streamed for {streamed_for:.1f} s: {total_calls} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))})"
        f"  target <= 12  {verdict(total_calls <= 12 and answer_chars >= 2000)}"
    )
    print("done")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--chats", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up")
    p.add_argument("--latency-messages", type=int, default=50)
    p.add_argument(
        "--chunk-delay",
        type=float,
        default=0.02,
        help="seconds between the chunks of the streamed answer (figure 4)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.chats, args.rounds, args.latency_messages = 20, 5, 1, 3
        args.chunk_delay = 0.005
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    asyncio.run(run(_parse_args(argv)))


if __name__ == "__main__":
    main()
