"""hybot's own client meets the emulator's refusals (issue 7 item 15): a request over the
model's input limit, through both wire formats, fails as a clear :class:`InvalidRequest` and
is never retried (so a bot that sends too much is caught by its tests, not silently served)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.config import HunyuanConfig, Secret
from core.errors import InvalidRequest
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.types import ChatMessage

EMU = EmulatorConfig()

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def client_for(emu: Emulator, api: str) -> HunyuanClient:
    config = HunyuanConfig(
        api=api,
        base_url=emu.openai_base_url,
        api_key=Secret(EMU.api_key),
        model="hy-mt2-pro" if api == "openai" else "hunyuan-turbo",
        native_endpoint=emu.native_endpoint,
        secret_id=Secret(EMU.secret_id),
        secret_key=Secret(EMU.secret_key),
        max_attempts=3,
    )
    return HunyuanClient(config=config, sleep=no_sleep)


@pytest.mark.parametrize(
    ("api", "over", "route"),
    [
        # hy-mt2-pro takes 4,000 input tokens: 12,000 ASCII characters (3 per token).
        ("openai", "x" * 12_001, "/v1/chat/completions"),
        # hunyuan-turbo takes 28,000: 50,400 CJK characters (1.8 per token).
        ("native", "好" * 50_401, "native:ChatCompletions"),
    ],
)
async def test_an_over_long_request_is_refused_once(
    emu: Emulator, api: str, over: str, route: str
) -> None:
    async with client_for(emu, api) as client:
        with pytest.raises(InvalidRequest):
            await client.chat([ChatMessage("user", over)])
        assert emu.stats.requests[route] == 1  # refused, and not retried
        assert emu.stats.errors["context_length_exceeded"] == 1
        # One character less fits.
        result = await client.chat([ChatMessage("user", over[:-1])])
        assert result.text
