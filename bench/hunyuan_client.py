"""Benchmark: hybot's Hunyuan client against the ``openai`` package, and SSE parse throughput.

Run: ``.venv/bin/python bench/hunyuan_client.py`` (``--quick`` for the smoke test, ``--help``
for the knobs). Prints figures and ratios; always exits 0 unless the benchmark itself broke.

Part 1 — streamed completions over loopback. The emulator runs in a separate process
(:class:`_common.EmulatorProcess`; zero latency, zero chunk delay, a chat concurrency limit
high enough never to refuse). The same messages go ``--completions`` times per round through
``HunyuanClient.stream_chat`` (``max_attempts=1``) and through
``openai.AsyncOpenAI(max_retries=0).chat.completions.create(stream=True)``, every chunk
iterated, sequentially and with ``--concurrency`` workers. Rounds alternate which arm goes
first (ABBA...), after one untimed warm-up round. Reported per arm: per-completion time
median and p90 over all rounds, completions per second; and the ratio ours/openai of the
medians (< 1 means ours is faster) with the range of the per-round ratios. Non-streamed
completions (``chat`` vs ``create(stream=False)``) are measured the same way, sequentially.

Part 2 — SSE parse throughput without a network. A pre-built event stream of
``--sse-chunks`` chunks (the emulator's byte format: OpenAI-compatible, and native API 3.0)
is served by ``httpx.MockTransport`` in 64 KiB pieces and consumed by: our client; the
``openai`` package (OpenAI format only) on an ``httpx.AsyncClient`` with the same transport;
and a floor of bare ``httpx`` + ``httpx_sse`` + ``json.loads``. Reported: chunks per second
(median over rounds) and the time ratios ours/openai and ours/floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai
from _common import EmulatorProcess, banner, fmt_ms, median, percentile, verdict
from httpx_sse import EventSource
from openai.types.chat import ChatCompletionMessageParam

from core.config import HunyuanConfig, Secret
from core.hunyuan import HunyuanClient
from core.types import ChatMessage

__all__ = ["Arm", "build_native_stream", "build_openai_stream", "main", "run"]

MODEL = "hy3-preview"
NOTE = "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记"
PIECE = 64 * 1024  # httpcore reads at most 64 KiB from a socket at a time

Completion = Callable[[], Awaitable[str]]


# --- part 1: streamed completions against the emulator process ------------------------------


@dataclass
class Arm:
    """Samples of one arm (ours or openai) at one concurrency level, over all rounds."""

    name: str
    latencies: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    errors: int = 0

    def line(self) -> str:
        return (
            f"  {self.name:<8} per completion: median {fmt_ms(median(self.latencies))}, "
            f"p90 {fmt_ms(percentile(self.latencies, 90))}; "
            f"{median(self.rates):7.1f}/s; CPU {fmt_ms(median(self.cpu))} per completion "
            f"(this process); errors {self.errors}"
        )


def _messages(long_tokens: int) -> list[ChatMessage]:
    marker = f" [[long={long_tokens}]]" if long_tokens > 0 else ""
    return [
        ChatMessage("system", "You are a concise, helpful assistant for a small team."),
        ChatMessage("user", "What is the capital of France, and why is it famous?"),
        ChatMessage("assistant", "Paris. It is famous for art, food and the Eiffel Tower."),
        ChatMessage("user", "Tell me more about its museums, in a few sentences." + marker),
    ]


async def _run_arm(arm: Arm, call: Completion, *, n: int, concurrency: int) -> set[str]:
    """``n`` completions by ``concurrency`` workers; returns the distinct texts received."""
    latencies: list[float] = []
    texts: set[str] = set()
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                text = await call()
            except Exception:
                arm.errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            texts.add(text)

    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    arm.cpu.append((time.process_time() - cpu) / max(1, len(latencies)))
    arm.latencies += latencies
    arm.round_medians.append(median(latencies))
    arm.rates.append(len(latencies) / wall if wall > 0 else 0.0)
    return texts


async def _compare(
    title: str,
    ours: Completion,
    theirs: Completion,
    *,
    n: int,
    rounds: int,
    concurrency: int,
) -> tuple[float, bool]:
    """ABBA rounds of ``ours`` vs ``theirs``; prints the figures, returns (ratio, same text)."""
    warm_a, warm_b = Arm("warm"), Arm("warm")
    await _run_arm(warm_a, ours, n=max(5, n // 10), concurrency=concurrency)
    await _run_arm(warm_b, theirs, n=max(5, n // 10), concurrency=concurrency)
    a, b = Arm("hybot"), Arm("openai")
    texts: set[str] = set()
    for r in range(rounds):
        order = [(a, ours), (b, theirs)]
        if r % 2:
            order.reverse()
        for arm, call in order:
            texts |= await _run_arm(arm, call, n=n, concurrency=concurrency)
    ratio = median(a.latencies) / median(b.latencies)
    per_round = [x / y for x, y in zip(a.round_medians, b.round_medians, strict=True)]
    same = len(texts) == 1
    print(f"{title} (concurrency {concurrency}, {rounds} rounds x {n} per arm):")
    print(a.line())
    print(b.line())
    print(
        f"  ratio hybot/openai (median time): {ratio:.3f} "
        f"(per-round {min(per_round):.3f}..{max(per_round):.3f}); "
        f"throughput ratio hybot/openai: {median(a.rates) / median(b.rates):.3f}; "
        f"same text in both arms: {'yes' if same else 'NO'}"
    )
    print(f"  target: hybot no slower than openai (ratio <= 1.00): {verdict(ratio <= 1.0)}")
    return ratio, same


async def bench_emulator(
    *, n: int, rounds: int, concurrency: int, long_tokens: int, non_stream: bool
) -> dict[str, float]:
    messages = _messages(long_tokens)
    wire_messages = cast(
        list[ChatCompletionMessageParam],
        [{"role": m.role, "content": m.content} for m in messages],
    )
    results: dict[str, float] = {}
    # A limit above any concurrency used here: a busy refusal would measure the emulator.
    async with EmulatorProcess(chat_concurrency=max(64, concurrency * 4)) as emu:
        print(f"emulator: separate process pid {emu.pid} on 127.0.0.1:{emu.port}")
        cfg = HunyuanConfig(
            base_url=emu.openai_base_url,
            api_key=Secret(emu.api_key),
            model=MODEL,
            max_attempts=1,
            idle_timeout=30.0,
        )
        theirs_http = openai.DefaultAsyncHttpxClient(trust_env=False)
        async with (
            HunyuanClient(config=cfg) as ours_client,
            openai.AsyncOpenAI(
                api_key=emu.api_key,
                base_url=emu.openai_base_url,
                max_retries=0,
                http_client=theirs_http,
            ) as theirs_client,
        ):

            async def ours_stream() -> str:
                parts: list[str] = []
                async for chunk in ours_client.stream_chat(messages):
                    parts.append(chunk.delta)
                return "".join(parts)

            async def theirs_stream() -> str:
                parts: list[str] = []
                stream = await theirs_client.chat.completions.create(
                    model=MODEL,
                    messages=wire_messages,
                    stream=True,
                )
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                return "".join(parts)

            async def ours_whole() -> str:
                return (await ours_client.chat(messages)).text

            async def theirs_whole() -> str:
                answer = await theirs_client.chat.completions.create(
                    model=MODEL,
                    messages=wire_messages,
                )
                return answer.choices[0].message.content or ""

            for c in sorted({1, concurrency}):
                ratio, _ = await _compare(
                    "streamed completions",
                    ours_stream,
                    theirs_stream,
                    n=n,
                    rounds=rounds,
                    concurrency=c,
                )
                results[f"stream_c{c}"] = ratio
            if non_stream:
                ratio, _ = await _compare(
                    "non-streamed completions",
                    ours_whole,
                    theirs_whole,
                    n=n,
                    rounds=rounds,
                    concurrency=1,
                )
                results["whole_c1"] = ratio
    return results


# --- part 2: SSE parse throughput over httpx.MockTransport ----------------------------------


def _deltas(count: int) -> Iterator[str]:
    # Mixed English and Chinese deltas, like real Hunyuan output.
    words = (" the", " model", " 回答", " streams", "，", " text", " 中文", " here")
    for i in range(count):
        yield words[i % len(words)]


def _dumps(obj: object) -> bytes:
    # The emulator's encoding: compact separators, UTF-8, no ASCII escaping.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def build_openai_stream(count: int) -> tuple[bytes, str]:
    """``count`` OpenAI-format delta events, a final event with usage, ``[DONE]``; and the text.

    The shape is the emulator's (``emulator.openai_compat.OpenAIWire``): each chunk repeats id,
    created, model, an empty ``system_fingerprint`` and Hunyuan's ``note``.
    """
    parts: list[bytes] = []
    text: list[str] = []
    base = {
        "id": "bench-0001",
        "object": "chat.completion.chunk",
        "created": 1_790_000_000,
        "model": MODEL,
        "system_fingerprint": "",
    }
    for delta in _deltas(count):
        text.append(delta)
        obj = {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": delta},
                    "finish_reason": None,
                }
            ],
            "note": NOTE,
        }
        parts.append(b"data: " + _dumps(obj) + b"\n\n")
    final = {
        **base,
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
        ],
        "note": NOTE,
        "usage": {"prompt_tokens": 20, "completion_tokens": count, "total_tokens": 20 + count},
    }
    parts.append(b"data: " + _dumps(final) + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts), "".join(text)


def build_native_stream(count: int) -> tuple[bytes, str]:
    """``count`` native API 3.0 delta events (cumulative ``Usage`` in each) and a final one.

    The shape is the emulator's (``emulator.native.NativeWire``); no ``[DONE]``.
    """
    parts: list[bytes] = []
    text: list[str] = []
    for i, delta in enumerate(_deltas(count)):
        text.append(delta)
        parts.append(b"data: " + _dumps(_native_chunk(delta, "", i + 1)) + b"\n\n")
    parts.append(b"data: " + _dumps(_native_chunk("", "stop", count)) + b"\n\n")
    return b"".join(parts), "".join(text)


def _native_chunk(delta: str, finish: str, done: int) -> dict[str, object]:
    return {
        "Note": NOTE,
        "Choices": [
            {"Index": 0, "FinishReason": finish, "Delta": {"Role": "assistant", "Content": delta}}
        ],
        "Created": 1_790_000_000,
        "Id": "bench-0001",
        "Usage": {"PromptTokens": 20, "CompletionTokens": done, "TotalTokens": 20 + done},
    }


def _transport(data: bytes, http: Any = httpx) -> Any:
    """A ``MockTransport`` of the HTTP module ``http`` (``httpx``, or ``httpx2`` which the
    ``openai`` package ships on) answering every request with ``data`` as an event stream,
    delivered in :data:`PIECE`-sized pieces like socket reads."""

    class Pieces(http.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(0, len(data), PIECE):
                yield data[i : i + PIECE]

    def handler(request: Any) -> Any:
        return http.Response(
            200,
            headers={"content-type": "text/event-stream", "x-request-id": "bench-0001"},
            stream=Pieces(),
        )

    return http.MockTransport(handler)


Parser = Callable[[], Awaitable[str]]


async def _ours_parser(data: bytes, *, api: str) -> tuple[Parser, Callable[[], Awaitable[None]]]:
    cfg = HunyuanConfig(
        api=api,
        base_url="http://bench.invalid/v1",
        native_endpoint="http://bench.invalid",
        api_key=Secret("sk-bench"),
        secret_id=Secret("AKIDbench"),
        secret_key=Secret("bench-secret"),
        model=MODEL,
        max_attempts=1,
    )
    client = HunyuanClient(config=cfg, transport=_transport(data))
    messages = [ChatMessage("user", "stream please")]

    async def parse() -> str:
        parts: list[str] = []
        async for chunk in client.stream_chat(messages):
            parts.append(chunk.delta)
        return "".join(parts)

    return parse, client.aclose


async def _openai_parser(data: bytes) -> tuple[Parser, Callable[[], Awaitable[None]]]:
    # The openai package's own HTTP stack: openai 3.x imports httpx2, older releases httpx.
    stack: Any = sys.modules.get("httpx2", httpx)
    http = stack.AsyncClient(transport=_transport(data, stack))
    client = openai.AsyncOpenAI(
        api_key="sk-bench", base_url="http://bench.invalid/v1", max_retries=0, http_client=http
    )

    async def parse() -> str:
        parts: list[str] = []
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)

    return parse, client.close


async def _floor_parser(data: bytes, *, api: str) -> tuple[Parser, Callable[[], Awaitable[None]]]:
    http = httpx.AsyncClient(transport=_transport(data))

    async def parse() -> str:
        parts: list[str] = []
        async with http.stream("POST", "http://bench.invalid/v1/chat/completions") as response:
            async for sse in EventSource(response).aiter_sse():
                if sse.data == "[DONE]":
                    break
                obj = json.loads(sse.data)
                if api == "openai":
                    content = obj["choices"][0]["delta"].get("content")
                else:
                    content = obj["Choices"][0]["Delta"].get("Content")
                if content:
                    parts.append(content)
        return "".join(parts)

    return parse, http.aclose


async def bench_sse(*, chunks: int, rounds: int) -> dict[str, float]:
    print(f"SSE parse throughput ({chunks} chunks per stream, {rounds} rounds, no network):")
    results: dict[str, float] = {}
    for fmt in ("openai", "native"):
        data, expected = (build_openai_stream if fmt == "openai" else build_native_stream)(chunks)
        arms: dict[str, tuple[Parser, Callable[[], Awaitable[None]]]] = {
            "hybot": await _ours_parser(data, api=fmt),
            "floor": await _floor_parser(data, api=fmt),
        }
        if fmt == "openai":
            arms["openai"] = await _openai_parser(data)
        times: dict[str, list[float]] = {name: [] for name in arms}
        wrong: set[str] = set()
        try:
            for r in range(rounds + 1):  # round 0 is a warm-up
                names = list(arms)
                # Rotate the order so no arm always runs first (or right after a GC-heavy one).
                names = names[r % len(names) :] + names[: r % len(names)]
                for name in names:
                    start = time.perf_counter()
                    text = await arms[name][0]()
                    elapsed = time.perf_counter() - start
                    if text != expected:
                        wrong.add(name)
                    if r:
                        times[name].append(elapsed)
        finally:
            for _, close in arms.values():
                await close()
        print(f"  {fmt} format ({len(data) / 1e6:.1f} MB):")
        for name, samples in times.items():
            rate = chunks / median(samples)
            print(
                f"    {name:<7} {rate:12,.0f} chunks/s  (median {fmt_ms(median(samples))} "
                f"per stream){'  WRONG TEXT' if name in wrong else ''}"
            )
        ours = median(times["hybot"])
        line = f"    time ratio hybot/floor: {ours / median(times['floor']):.3f}"
        if "openai" in times:
            ratio = ours / median(times["openai"])
            results[f"sse_{fmt}_vs_openai"] = ratio
            line += f"; hybot/openai: {ratio:.3f} (target <= 1.00: {verdict(ratio <= 1.0)})"
        print(line)
        results[f"sse_{fmt}_chunks_per_s"] = chunks / ours
    return results


# --- entry point ----------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    p.add_argument("--completions", type=int, default=200, help="per arm per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=5)
    p.add_argument("--long", type=int, default=300, help="reply length in tokens (0: short)")
    p.add_argument("--sse-chunks", type=int, default=50_000)
    p.add_argument("--sse-rounds", type=int, default=5)
    p.add_argument("--no-non-stream", action="store_true", help="skip non-streamed completions")
    args = p.parse_args(argv)
    if args.quick:
        args.completions, args.rounds = 10, 2
        args.sse_chunks, args.sse_rounds = 500, 1
    return args


async def run(args: argparse.Namespace) -> dict[str, float]:
    """Run both parts with ``args`` (see :func:`main`); returns the headline ratios."""
    print(banner("hybot Hunyuan client benchmark", quick=args.quick))
    results = await bench_emulator(
        n=args.completions,
        rounds=args.rounds,
        concurrency=args.concurrency,
        long_tokens=args.long,
        non_stream=not args.no_non_stream,
    )
    results |= await bench_sse(chunks=args.sse_chunks, rounds=args.sse_rounds)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 whatever the figures (benchmarks never fail CI)."""
    args = _parse_args(argv)
    asyncio.run(run(args))
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
