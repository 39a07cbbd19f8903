"""hybot's own client meets the emulator's refusals (issue 7 item 15): a request over the
model's input limit, through both wire formats, fails as :class:`InputTooLong` (a
:class:`~core.errors.ContextLengthExceeded`, also an :class:`InvalidRequest`) and is never
retried, so a bot that sends too much is caught by its tests, not silently served; through the
conversation the user reads that the message is too long for the model, and nothing is charged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from core_harness import core, inbound

from core.config import BotConfig, HunyuanConfig, Secret
from core.errors import ContextLengthExceeded, InputTooLong, InvalidRequest
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.i18n import CATALOGUE
from core.types import ChatMessage, Failure, Final

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
        with pytest.raises(InputTooLong) as info:
            await client.chat([ChatMessage("user", over)])
        assert isinstance(info.value, ContextLengthExceeded | InvalidRequest)
        assert info.value.kind == "input_too_long"
        assert emu.stats.requests[route] == 1  # refused, and not retried
        assert emu.stats.errors["context_length_exceeded"] == 1
        # One character less fits.
        result = await client.chat([ChatMessage("user", over[:-1])])
        assert result.text


@pytest.mark.parametrize(
    ("api", "model", "over"),
    [
        # The operator overstates each model's window; the service (here the emulator) knows.
        ("openai", "hy-mt2-pro", "x" * 12_300),
        ("native", "hunyuan-turbo", "好" * 51_000),
    ],
)
async def test_the_user_reads_too_long_when_the_service_refuses_the_window(
    tmp_path: Path, api: str, model: str, over: str
) -> None:
    base = BotConfig()
    specs = tuple(
        replace(s, context_tokens=400_000, max_input_tokens=300_000) if s.name == model else s
        for s in base.models
    )
    config = replace(base, models=specs, hunyuan=replace(base.hunyuan, api=api, model=model))
    async with core(tmp_path, config=config) as c:
        events = [e async for e in c.conv.handle(inbound(over, language="zh"))]
        failures = [e for e in events if isinstance(e, Failure)]
        assert [f.code for f in failures] == ["input_too_long"]
        assert failures[0].user_message == CATALOGUE["zh"]["error.input_too_long"]
        assert not any(isinstance(e, Final) for e in events)
        route = "/v1/chat/completions" if api == "openai" else "native:ChatCompletions"
        assert c.emulator.stats.requests[route] == 1  # refused, and not retried
        rows = await c.store.ledger(user_id="telegram:u1")
        assert rows and all(r.tokens_in + r.tokens_out == 0 and r.cost_cny == 0 for r in rows)
