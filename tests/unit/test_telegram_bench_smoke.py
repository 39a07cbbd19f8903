"""Smoke test for ``bench/telegram.py``: it runs in ``--quick`` mode as documented and prints
every figure (figures are not checked against targets: quick-mode numbers mean nothing)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def test_telegram_benchmark_quick_run_prints_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "telegram.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    assert out.rstrip().endswith("done") and "QUICK" in out
    echo, bot = (float(v) for v in re.findall(r"(?:echo|hybot)\s+([0-9.]+) msgs/s", out)[-2:])
    assert echo > 0 and bot > 0
    assert re.search(r"hybot/echo [0-9.]+ .*target >= 0\.70  (PASS|MISS)", out)
    added = re.search(r"added latency \(p50 difference\) (-?[0-9.]+) ms", out)
    assert added is not None and math.isfinite(float(added.group(1)))
    assert re.search(r"RSS of the bot process: [0-9.]+ MB at start, [0-9.]+ MB after hybot", out)
    calls = re.search(
        r"streamed answer of (\d+) characters in \d+ message\(s\), streamed for [0-9.]+ s: (\d+)",
        out,
    )
    assert calls is not None and int(calls.group(1)) >= 2000 and int(calls.group(2)) >= 2
    assert re.search(r"target <= 12  (PASS|MISS)", out)
