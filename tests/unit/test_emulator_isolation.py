"""The emulator is a room of its own: the bot's import path never loads it (nor aiohttp), and
its package exports its public names (sorted ``__all__``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import core.hunyuan.emulator as emulator

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(
    name for name in sys.modules
    if name == "aiohttp" or name.startswith(("aiohttp.", "core.hunyuan.emulator"))
)))
"""


def loaded_after_import(module: str) -> list[str]:
    """Emulator/aiohttp modules in ``sys.modules`` after importing ``module`` in a fresh
    interpreter (the probe prints them as JSON)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("module", ["core.conversation", "core.hunyuan.client", "core"])
def test_the_bot_path_loads_neither_aiohttp_nor_the_emulator(module: str) -> None:
    assert loaded_after_import(module) == []


def test_the_probe_sees_the_emulator_when_it_is_imported() -> None:
    # Guards the probe itself: importing the emulator must show up in what it reports.
    loaded = loaded_after_import("core.hunyuan.emulator")
    assert "aiohttp" in loaded and "core.hunyuan.emulator.app" in loaded


def test_public_names_are_exported_sorted() -> None:
    assert emulator.__all__ == sorted(emulator.__all__)
    assert set(emulator.__all__) >= {"Emulator", "EmulatorConfig", "app_stats", "make_app"}
    for name in emulator.__all__:
        assert getattr(emulator, name).__module__.startswith("core.hunyuan.emulator.")
