"""An offline Hunyuan (see :mod:`core.hunyuan.emulator.app` for what it guarantees)."""

from core.hunyuan.emulator.app import (
    Emulator,
    EmulatorConfig,
    EmulatorStats,
    ImageRecord,
    app_stats,
    make_app,
)

__all__ = ["Emulator", "EmulatorConfig", "EmulatorStats", "ImageRecord", "app_stats", "make_app"]
