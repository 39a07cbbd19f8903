"""Smoke test for ``bench/slack.py``: it runs in ``--quick`` mode and prints every figure.

Not a timed test: no figure is checked against a target, only that the script ran as
documented (a real subprocess with the emulator and the Slack fake in processes of their own)
and that the work measured was real (answers delivered, Web API calls counted)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def test_slack_benchmark_quick_run_prints_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "slack.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    assert out.rstrip().endswith("done") and "QUICK" in out
    rates = [float(x) for x in re.findall(r"([0-9.]+) events/s", out)]
    assert len(rates) == 4 and all(math.isfinite(r) and r > 0 for r in rates)
    assert re.search(r"full/minimal \(acknowledged\) :\s+[0-9.]+", out)
    assert re.search(r"ack latency p50 [0-9.]+ ms, p99 [0-9.]+ ms .*(PASS|MISS)", out)
    chars = re.findall(r": (\d+) characters streamed", out)
    assert len(chars) == 2 and all(1500 <= int(c) <= 2600 for c in chars)
    calls = re.findall(r"Web API calls: (\d+) in all", out)
    assert len(calls) == 2 and all(int(c) >= 2 for c in calls)  # a message and its end
    assert "chat.startStream" in out and "chat.stopStream" in out
