"""The model seam: the client satisfies ChatModel, and the core runs on the scripted fake."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.conversation import fake_core
from fakes.model import ChatCall, FakeModel, Gate

from core.config import BotConfig, HunyuanConfig, Secret
from core.errors import RateLimited, StreamInterrupted
from core.hunyuan import HunyuanClient
from core.model import ChatModel
from core.types import ChatChunk, Failure, Final, Partial, Retract, Typing, Usage


def test_the_client_satisfies_the_protocol() -> None:
    client = HunyuanClient(config=HunyuanConfig(api_key=Secret("k")))
    model: ChatModel = client  # typed assignment; mypy proves it in core/model.py too
    assert isinstance(model, ChatModel)
    for name in ("stream_chat", "generate_image", "count_tokens"):
        wanted = inspect.signature(getattr(ChatModel, name))
        got = inspect.signature(getattr(HunyuanClient, name))
        for param in wanted.parameters.values():
            assert param.name in got.parameters, (name, param.name)
            assert got.parameters[param.name].kind == param.kind, (name, param.name)
    assert inspect.isasyncgenfunction(HunyuanClient.stream_chat)
    assert inspect.iscoroutinefunction(HunyuanClient.generate_image)


def test_the_fake_satisfies_the_protocol() -> None:
    assert isinstance(FakeModel(), ChatModel)


@pytest.mark.parametrize("module", ["core.model", "core.conversation"])
def test_importing_the_core_loads_no_http_library_nor_the_client(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('httpx', 'aiohttp', "
    code += "'core.hunyuan') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_chat_turn_streams_and_charges_what_the_model_reported(tmp_path: Path) -> None:
    model = FakeModel().answer("Hello there, friend", pieces=3, usage=Usage(40, 6, 46))
    async with fake_core(tmp_path, model=model) as c:
        events = await c.send("hi")
        assert isinstance(events[0], Typing)
        partials = [e for e in events if isinstance(e, Partial)]
        assert len(partials) == 3 and partials[-1].text == "Hello there, friend"
        final = next(e for e in events if isinstance(e, Final))
        assert final.text == "Hello there, friend" and final.usage == Usage(40, 6, 46)
        assert await c.counter() == 46
        [row] = await c.store.ledger(user_id="telegram:u1")
        assert (row.tokens_in, row.tokens_out, row.outcome) == (40, 6, "ok")
        assert model.open_streams == 0


async def test_the_model_gets_the_context_and_the_budget(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        await c.send("/persona You are terse")
        await c.send("first")
        await c.send("second")
        call: ChatCall = c.model.chat_calls[-1]
        assert [m.role for m in call.messages] == ["system", "user", "assistant", "user"]
        assert call.messages[0].content == "You are terse"
        assert call.messages[2].content == "echo: first"
        assert call.last_user_text == "second"
        assert call.model == "hy3-preview" and call.max_tokens == 4096


async def test_a_failure_before_the_first_chunk_refunds(tmp_path: Path) -> None:
    model = FakeModel().fail(RateLimited("slow down"))
    async with fake_core(tmp_path, model=model) as c:
        events = await c.send("hi")
        [fail] = [e for e in events if isinstance(e, Failure)]
        assert fail.code == "rate_limited" and "slow" not in fail.user_message
        assert await c.counter() == 0
        assert (await c.store.ledger(user_id="telegram:u1"))[-1].outcome == "failed:rate_limited"


async def test_a_stream_broken_after_text_refunds_and_stores_nothing(tmp_path: Path) -> None:
    model = FakeModel().add_chat("partial ", StreamInterrupted("cut"))
    async with fake_core(tmp_path, model=model) as c:
        events = await c.send("hi")
        assert any(isinstance(e, Partial) for e in events)
        assert isinstance(events[-1], Failure) and events[-1].code == "interrupted"
        assert await c.counter() == 0
        state = await c.store.get_conversation("telegram/bot/c1//")
        assert await c.store.recent_turns(state.key, state.epoch, limit=10) == []


async def test_a_sensitive_finish_retracts(tmp_path: Path) -> None:
    model = FakeModel().add_chat("bad words", ChatChunk("", finish_reason="sensitive"))
    async with fake_core(tmp_path, model=model) as c:
        events = await c.send("hi")
        assert isinstance(events[-1], Retract)
        assert not any(isinstance(e, Final) for e in events)


async def test_closing_the_stream_mid_answer_refunds_and_closes_the_model_call(
    tmp_path: Path,
) -> None:

    gate = Gate(asyncio.Event())
    model = FakeModel().add_chat("first piece ", gate, "never shown")
    async with fake_core(tmp_path, model=model) as c:
        stream = c.stream("hi")
        async for event in stream:
            if isinstance(event, Partial):
                break
        await stream.aclose()  # type: ignore[attr-defined]
        assert model.open_streams == 0
        assert await c.counter() == 0
        assert (await c.store.ledger(user_id="telegram:u1"))[-1].outcome == "cancelled"


@pytest.mark.parametrize("image_error", [None, RateLimited("x")])
async def test_images_run_on_the_fake(tmp_path: Path, image_error: Exception | None) -> None:
    model = FakeModel()
    if image_error is not None:
        model.add_image(image_error)
    async with fake_core(tmp_path, model=model, config=BotConfig()) as c:
        events = await c.send("/image --size 1024x1024 a fox")
        assert model.image_calls[0].prompt == "a fox"
        assert model.image_calls[0].size == "1024x1024"
        rows = await c.store.ledger(user_id="telegram:u1")
        if image_error is None:
            assert [(r.images, r.outcome) for r in rows] == [(1, "ok")]
        else:
            assert isinstance(events[-1], Failure)
            assert [(r.images, r.outcome) for r in rows] == [(0, "failed:rate_limited")]
