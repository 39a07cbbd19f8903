"""Smoke tests for ``bench/``: each benchmark runs in ``--quick`` mode and prints its figures.

Benchmarks are not timed tests: nothing here checks a figure against a target. What is
checked is that each script runs as documented (``.venv/bin/python bench/<name>.py``, a real
subprocess that starts the emulator in a process of its own on 127.0.0.1), exits 0, prints
every figure with a finite value, and that the work measured was real and correct (no failed
messages, both clients received the same text, every parser rebuilt the streamed text).
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"

pytestmark = pytest.mark.timeout(60)

_NUMBER = r"([0-9][0-9,]*\.?[0-9]*)"


def _run(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.rstrip().endswith("done"), proc.stdout
    return proc.stdout


def _figures(pattern: str, text: str) -> list[float]:
    values = [float(m.replace(",", "")) for m in re.findall(pattern, text)]
    assert values, f"no match for {pattern!r} in:\n{text}"
    for value in values:
        assert math.isfinite(value) and value > 0, (pattern, value)
    return values


def _load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being built.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_client_benchmark_quick_run_prints_every_figure() -> None:
    out = _run("hunyuan_client.py")
    assert "QUICK" in out
    # Emulator part: sequential and concurrent streams, and non-streamed answers.
    assert "(concurrency 1," in out and "(concurrency 5," in out
    assert out.count("ratio hybot/openai (median time):") == 3
    ratios = _figures(r"ratio hybot/openai \(median time\): " + _NUMBER, out)
    assert len(ratios) == 3
    assert out.count("same text in both arms: yes") == 3, out
    errors = [int(e) for e in re.findall(r"errors (\d+)", out)]
    assert len(errors) == 6 and not any(errors), out
    _figures(r"median " + _NUMBER + " ms, p90", out)
    # SSE part: both formats, every parser, text rebuilt correctly everywhere.
    assert "openai format" in out and "native format" in out
    rates = _figures(_NUMBER + r" chunks/s", out)
    assert len(rates) == 5  # hybot, floor, openai (OpenAI format); hybot, floor (native)
    assert "WRONG TEXT" not in out
    assert re.search(r"hybot/openai: [0-9.]+ \(target <= 1\.00: (PASS|MISS)\)", out)
    assert out.count("target: hybot no slower than openai (ratio <= 1.00): ") == 3


def test_core_benchmark_quick_run_prints_every_figure() -> None:
    out = _run("pipeline.py")
    assert "QUICK" in out
    assert "emulator: separate process pid" in out
    core, base = _figures(r"(?:core|baseline)\s+" + _NUMBER + r" msgs/s", out)
    assert core > 0 and base > 0
    # Every message went through the whole core and got a final answer.
    assert "20 ok, 0 failed" in out  # throughput round and the sequential overhead phase
    assert re.search(r"RSS after 40 distinct chats \(20 new ones here: 20 ok, 0 failed\)", out)
    _figures(r"ratio core/baseline: " + _NUMBER, out)
    assert re.search(r"target >= 0\.80: (PASS|MISS)", out)
    _figures(r"p50 " + _NUMBER + r" ms, p90", out)
    assert re.search(r"target p99 < 5 ms: (PASS|MISS)", out)
    (rss,) = _figures(r"  RSS " + _NUMBER + r" MB", out)
    assert 10 < rss < 4096
    assert re.search(r"target < 200 MB: (PASS|MISS)", out)
    medians = _figures(r"stored turns: median " + _NUMBER + " ms", out)
    assert len(medians) == 3
    assert "(300 turns read" not in out  # the window bounds the read
    _figures(r"ratio 300/10 turns: " + _NUMBER, out)
    assert re.search(r"target 300/10 within 2x: (PASS|MISS)", out)


def test_percentile_and_median_helpers() -> None:
    common = _load_common()
    assert common.percentile([3.0, 1.0, 2.0, 4.0], 50) == pytest.approx(2.5)
    assert common.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert common.percentile([7.0], 99) == 7.0
    assert math.isnan(common.percentile([], 50))
    assert math.isnan(common.median([]))
    assert common.median([5.0, 1.0, 3.0]) == 3.0
    assert common.verdict(True) == "PASS" and common.verdict(False) == "MISS"
