"""Benchmark: the Slack adapter (HTTP mode) against bolt's own minimal app, in one run.

Run: ``.venv/bin/python bench/slack.py`` (``--quick`` for the smoke test, ``--help`` for the
knobs). Prints each figure with its target and PASS/MISS; exits 0 either way.

Process layout: the Hunyuan emulator and the Slack Web API fake (``tests/fakes/slack.py``) each
run in a child process on 127.0.0.1; this process holds the app under test, its aiohttp server
and the load generator (signed ``app_mention`` events POSTed over loopback).

1. **Events per second.** ``--events`` signed mentions (each in a thread of its own, so each
   is a conversation of its own), ``--concurrency`` posters, into (a) bolt's minimal app: an
   ``AsyncApp`` whose only listener does nothing, behind bolt's aiohttp adapter, with bolt's
   own signature verification; (b) hybot's intake alone: the Slack adapter over a core that
   answers nothing (guard, inbox record and done, two committed SQLite writes, bolt, ack);
   (c) the full hybot app: the same intake and in the background the whole answer (core,
   emulator, Web API calls to the fake). Rounds alternate the order, after a warm-up round.
   Reported: acknowledged events/s of each arm (median over rounds), full/minimal, and for the
   full app the time until every answer was delivered (answered events/s).
2. **Ack latency under a slow model.** The emulator answers after 5 s (``latency``); mentions
   arrive at ``--rate`` per second for ``--seconds``; the time from sending a request to its
   HTTP 200 is recorded for each. Reported: p50 and p99 (target p99 < 100 ms).
3. **Web API calls per streamed answer.** A DM asks for a reply of about 2,000 characters,
   streamed by the emulator over a few seconds (``chunk_delay``), once at the top of the DM
   (``chat.postMessage`` + throttled ``chat.update``) and once in a DM thread (the assistant
   pane: native ``chat.startStream`` / ``appendStream`` / ``stopStream``); every Web API call
   the fake received for each is counted by method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from _common import EmulatorProcess, banner, fmt_ms, median, percentile, verdict
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes.slack import BOT_TOKEN, BOT_USER, SIGNING_SECRET, event_body, signed_headers  # noqa: E402

from adapters.slack import SlackAdapter, SlackServe  # noqa: E402
from core.config import BotConfig, HunyuanConfig, Secret  # noqa: E402
from core.conversation import Conversation  # noqa: E402
from core.hunyuan import HunyuanClient  # noqa: E402
from core.inbox import Inbox  # noqa: E402
from core.store import SQLiteStore  # noqa: E402

_FAKE_CHILD = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from fakes.slack import FakeSlack

async def main():
    async with FakeSlack() as fake:
        print("PORT", fake.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@asynccontextmanager
async def fake_slack_process() -> AsyncIterator[str]:
    """The Slack fake in a child process; yields its base URL (``http://127.0.0.1:P``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FAKE_CHILD,
        str(ROOT / "tests"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line.startswith("PORT "):
            raise RuntimeError("the Slack fake did not start")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def fake_stats(session: aiohttp.ClientSession, url: str, *, reset: bool) -> dict[str, Any]:
    async with session.get(f"{url}/_stats", params={"reset": "1"} if reset else {}) as resp:
        data: dict[str, Any] = await resp.json()
        return data


def hunyuan(emu: EmulatorProcess) -> HunyuanConfig:
    return HunyuanConfig(
        api="openai",
        base_url=emu.openai_base_url,
        api_key=Secret(emu.api_key),
        idle_timeout=60.0,
        total_timeout=120.0,
        max_attempts=1,
    )


@asynccontextmanager
async def full_app(
    emu: EmulatorProcess, slack_url: str, db_dir: Path
) -> AsyncIterator[SlackAdapter]:
    config = BotConfig(hunyuan=hunyuan(emu), chat_concurrency=64)
    async with (
        SQLiteStore(path=db_dir / f"bench-{time.monotonic_ns()}.db") as store,
        HunyuanClient(config=config.hunyuan) as client,
        Conversation(config=config, store=store, model=client) as conv,
    ):
        adapter = SlackAdapter(
            conversation=conv,
            client=AsyncWebClient(token=BOT_TOKEN, base_url=f"{slack_url}/api/"),
            signing_secret=SIGNING_SECRET,
            inbox=Inbox(store=store),
            serve=SlackServe(port=0, grace=0.5, redrive_interval=3600),
        )
        async with adapter:
            yield adapter


class _NoAnswer:
    """A core that answers nothing: isolates the intake (guard, inbox, bolt, ack)."""

    async def handle(self, inbound: object) -> AsyncIterator[object]:
        return
        yield


@asynccontextmanager
async def intake_app(slack_url: str, db_dir: Path) -> AsyncIterator[SlackAdapter]:
    async with SQLiteStore(path=db_dir / f"intake-{time.monotonic_ns()}.db") as store:
        adapter = SlackAdapter(
            conversation=_NoAnswer(),  # type: ignore[arg-type]
            client=AsyncWebClient(token=BOT_TOKEN, base_url=f"{slack_url}/api/"),
            signing_secret=SIGNING_SECRET,
            inbox=Inbox(store=store),
            serve=SlackServe(port=0, grace=0.5, redrive_interval=3600),
        )
        async with adapter:
            yield adapter


@asynccontextmanager
async def minimal_app(slack_url: str) -> AsyncIterator[int]:
    """bolt's own minimal app: one listener that does nothing; bolt verifies signatures."""
    app = AsyncApp(
        signing_secret=SIGNING_SECRET,
        client=AsyncWebClient(token=BOT_TOKEN, base_url=f"{slack_url}/api/"),
    )

    @app.event("app_mention")
    async def _noop() -> None:
        return None

    async def handle(request: web.Request) -> web.Response:
        bolt_req = await to_bolt_request(request)
        return await to_aiohttp_response(await app.async_dispatch(bolt_req))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


_seq = iter(range(1, 10**9))


def mention_body(text: str = "hello") -> str:
    n = next(_seq)
    return event_body(
        {
            "type": "app_mention",
            "user": f"U{n % 50}",
            "text": f"<@{BOT_USER}> {text} {n}",
            "ts": f"{1_700_000_000 + n}.000100",
            "channel": "C1",
        }
    )


async def post(session: aiohttp.ClientSession, port: int, body: str) -> float:
    """POST one signed event; return the seconds until its response (raises unless 200)."""
    headers = signed_headers(body)
    started = time.perf_counter()
    async with session.post(
        f"http://127.0.0.1:{port}/slack/events", data=body.encode(), headers=headers
    ) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - started


async def blast(session: aiohttp.ClientSession, port: int, events: int, workers: int) -> float:
    """Send ``events`` signed mentions with ``workers`` concurrent posters; return seconds."""
    bodies = [mention_body() for _ in range(events)]
    queue = iter(bodies)

    async def worker() -> None:
        for body in queue:
            await post(session, port, body)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


async def throughput(args: argparse.Namespace, slack_url: str, db_dir: Path) -> None:
    print("\n1. Events per second (signed app_mention, HTTP mode)")
    full_rates: list[float] = []
    min_rates: list[float] = []
    intake_rates: list[float] = []
    answered: list[float] = []
    async with (
        EmulatorProcess(chat_concurrency=64) as emu,
        aiohttp.ClientSession() as session,
        full_app(emu, slack_url, db_dir) as adapter,
        intake_app(slack_url, db_dir) as intake,
        minimal_app(slack_url) as min_port,
    ):
        await blast(session, adapter.port, args.events // 4, args.concurrency)  # warm-up
        await blast(session, min_port, args.events // 4, args.concurrency)
        await blast(session, intake.port, args.events // 4, args.concurrency)
        if warm := {*adapter._tasks, *intake._tasks}:
            await asyncio.wait(warm)
        for rnd in range(args.rounds):
            order = ("full", "intake", "min") if rnd % 2 == 0 else ("min", "intake", "full")
            for arm in order:
                if arm == "min":
                    took = await blast(session, min_port, args.events, args.concurrency)
                    min_rates.append(args.events / took)
                    continue
                if arm == "intake":
                    took = await blast(session, intake.port, args.events, args.concurrency)
                    intake_rates.append(args.events / took)
                    if intake._tasks:
                        await asyncio.wait(set(intake._tasks))
                    continue
                started = time.perf_counter()
                acked = await blast(session, adapter.port, args.events, args.concurrency)
                full_rates.append(args.events / acked)
                if adapter._tasks:
                    await asyncio.wait(set(adapter._tasks))
                answered.append(args.events / (time.perf_counter() - started))
        stats = await fake_stats(session, slack_url, reset=True)
    ratio = median(full_rates) / median(min_rates)
    print(f"   bolt minimal app (ack only) : {median(min_rates):8.0f} events/s acknowledged")
    print(f"   hybot intake only (no answer): {median(intake_rates):7.0f} events/s acknowledged")
    print(f"   hybot full app              : {median(full_rates):8.0f} events/s acknowledged")
    print(f"   hybot full app, answered    : {median(answered):8.0f} events/s (all answers shown)")
    ratios = [f / m for f, m in zip(full_rates, min_rates, strict=False)]
    spread = f"per round {min(ratios):.2f}-{max(ratios):.2f}"
    print(f"   full/minimal (acknowledged) : {ratio:8.2f}  ({spread})")
    print(f"   intake/minimal              : {median(intake_rates) / median(min_rates):8.2f}")
    print(f"   Web API calls seen by the fake: {stats['counts']}")


async def ack_latency(args: argparse.Namespace, slack_url: str, db_dir: Path) -> None:
    print(f"\n2. Ack latency while every model call takes {args.model_latency:g} s")
    latencies: list[float] = []
    async with (
        EmulatorProcess(chat_concurrency=256, latency=args.model_latency) as emu,
        aiohttp.ClientSession() as session,
        full_app(emu, slack_url, db_dir) as adapter,
    ):
        total = int(args.rate * args.seconds)
        interval = 1.0 / args.rate
        pending: list[asyncio.Task[float]] = []
        started = time.perf_counter()
        for i in range(total):
            # open-loop arrivals: each request leaves on its schedule, whatever the others do
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(post(session, adapter.port, mention_body())))
        latencies = list(await asyncio.gather(*pending))
        in_flight = len(adapter._tasks)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"   {total} events at {args.rate:g}/s; answers still waiting for the model: {in_flight}")
    target = verdict(p99 < 0.1)
    print(f"   ack latency p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}  (target p99 < 100 ms) {target}")


async def stream_calls(args: argparse.Namespace, slack_url: str, db_dir: Path) -> None:
    print("\n3. Web API calls for one streamed answer of about 2,000 characters")
    async with (
        EmulatorProcess(chunk_delay=args.chunk_delay) as emu,
        aiohttp.ClientSession() as session,
        full_app(emu, slack_url, db_dir) as adapter,
    ):
        for label, thread in (
            ("top-level DM (chat.update)", None),
            ("assistant thread (native stream)", "1800000000.000001"),
        ):
            await fake_stats(session, slack_url, reset=True)
            event = {
                "type": "message",
                "channel_type": "im",
                "user": "U1",
                "channel": "D1",
                "text": "[[long=667]] a long answer please",
                "ts": f"{1_800_000_000 + next(_seq)}.000100",
            }
            if thread:
                event["thread_ts"] = thread
            started = time.perf_counter()
            await post(session, adapter.port, event_body(event))
            await asyncio.sleep(0)
            if adapter._tasks:
                await asyncio.wait(set(adapter._tasks))
            took = time.perf_counter() - started
            if thread:  # the stream ends after the idle time; that is not answer time
                await adapter._p.close()
            stats = await fake_stats(session, slack_url, reset=True)
            counts = {k: v for k, v in stats["counts"].items() if k != "auth.test"}
            print(f"   {label}: {stats['longest_text']} characters streamed in {took:.1f} s")
            print(f"      Web API calls: {sum(counts.values())} in all: {counts}")
    interval = SlackAdapter.limits.min_edit_interval
    print(f"   (at most one edit or append per {interval:g} s: the adapter's min_edit_interval)")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--events", type=int, default=400, help="events per arm per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s in part 2")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of part 2")
    parser.add_argument("--model-latency", type=float, default=5.0)
    parser.add_argument("--chunk-delay", type=float, default=0.02)
    parser.add_argument("--db-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.rate, args.seconds = 20, 2, 10.0, 1.0
        args.model_latency, args.chunk_delay = 1.0, 0.0
    logging.basicConfig(level=logging.ERROR)
    print(banner("bench/slack.py: the Slack adapter against bolt's minimal app", quick=args.quick))
    with tempfile.TemporaryDirectory(dir=args.db_dir) as tmp:
        async with fake_slack_process() as slack_url:
            await throughput(args, slack_url, Path(tmp))
            await ack_latency(args, slack_url, Path(tmp))
            await stream_calls(args, slack_url, Path(tmp))
    print("\ndone")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
