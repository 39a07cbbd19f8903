"""HunyuanClient against the emulator over real loopback HTTP: every call and every fault.

Each test starts its own emulator on 127.0.0.1 (port 0). Backoff sleeps are recorded, not
slept, unless a test needs real waiting (concurrency).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from core.config import HunyuanConfig, Secret
from core.errors import (
    AuthError,
    HunyuanError,
    HunyuanTimeout,
    ImageJobFailed,
    InvalidRequest,
    ModerationRefused,
    OutOfCredit,
    RateLimited,
    ServerBusy,
    SignatureExpired,
    StreamInterrupted,
    TransportError,
    UpstreamError,
)
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.tokens import estimate_tokens
from core.types import ChatMessage

EMU = EmulatorConfig()
NOTE = "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记"

pytestmark = pytest.mark.timeout(60)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(config=EmulatorConfig(image_job_steps=0.05)) as emulator:
        yield emulator


def config_for(emulator: Emulator, api: str, **overrides) -> HunyuanConfig:
    base = HunyuanConfig(
        api=api,
        base_url=emulator.openai_base_url,
        api_key=Secret(EMU.api_key),
        model="hy3-preview" if api == "openai" else "hunyuan-lite",
        native_endpoint=emulator.native_endpoint,
        secret_id=Secret(EMU.secret_id),
        secret_key=Secret(EMU.secret_key),
        image_api="tokenhub",
        connect_timeout=2.0,
        idle_timeout=5.0,
        total_timeout=20.0,
        image_poll_interval=0.02,
        image_deadline=10.0,
        max_attempts=3,
        backoff_base=0.01,
        backoff_cap=0.05,
    )
    return replace(base, **overrides)


def client_for(emulator: Emulator, api: str = "openai", *, sleep=None, **overrides):
    sleeps = sleep if sleep is not None else Sleeps()
    return HunyuanClient(config=config_for(emulator, api, **overrides), sleep=sleeps), sleeps


def chat_route(api: str) -> str:
    return "/v1/chat/completions" if api == "openai" else "native:ChatCompletions"


APIS = ["openai", "native"]

CONVERSATION = [
    ChatMessage("system", "You are a terse pirate."),
    ChatMessage("user", "Hello, my name is Ada."),
    ChatMessage("assistant", "Ahoy Ada."),
    ChatMessage("user", "What is my name?"),
]


def expected_usage(messages: list[ChatMessage], reply: str) -> tuple[int, int, int]:
    prompt = sum(estimate_tokens(m.content) for m in messages)
    completion = estimate_tokens(reply)
    return prompt, completion, prompt + completion


# --- happy paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_chat_carries_context_usage_and_note(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api)
    async with client:
        result = await client.chat(CONVERSATION)
    assert result.text.startswith("Turn 2.")
    assert 'You first said: "Hello, my name is Ada."' in result.text
    assert 'You just said: "What is my name?"' in result.text
    assert 'System: "You are a terse pirate."' in result.text
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == expected_usage(
        CONVERSATION, result.text
    )
    assert result.finish_reason == "stop"
    assert result.note == NOTE
    assert result.request_id
    assert result.model == ("hy3-preview" if api == "openai" else "hunyuan-lite")
    assert emu.stats.requests[chat_route(api)] == 1


@pytest.mark.parametrize("api", APIS)
async def test_stream_matches_the_whole_answer(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api)
    async with client:
        whole = await client.chat(CONVERSATION)
        chunks = [c async for c in client.stream_chat(CONVERSATION)]
    assert len([c for c in chunks if c.delta]) >= 3
    assert "".join(c.delta for c in chunks) == whole.text
    assert all(c.finish_reason is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage == whole.usage
    assert final.note == NOTE
    assert emu.stats.requests[chat_route(api)] == 2


async def test_messy_history_is_normalised_before_the_emulator_sees_it(emu: Emulator) -> None:
    # Two user turns in a row would be rejected with 1001; the client merges them first.
    messy = [
        ChatMessage("user", "first"),
        ChatMessage("user", "second"),
        ChatMessage("assistant", "ok"),
        ChatMessage("assistant", ""),
        ChatMessage("user", "third"),
        ChatMessage("assistant", "dangling"),
    ]
    for api in APIS:
        client, _ = client_for(emu, api)
        async with client:
            result = await client.chat(messy)
        assert result.text.startswith("Turn 2.")
        assert 'You just said: "third"' in result.text
    assert emu.stats.errors["1001"] == 0


async def test_max_tokens_and_long_replies(emu: Emulator) -> None:
    client, _ = client_for(emu, "openai")
    async with client:
        capped = await client.chat([ChatMessage("user", "talk [[long=200]]")], max_tokens=20)
        long = [c async for c in client.stream_chat([ChatMessage("user", "talk [[long=200]]")])]
    assert capped.finish_reason == "length"
    assert capped.usage.completion_tokens <= 21
    assert long[-1].usage.completion_tokens >= 150
    assert len(long) >= 8


async def test_extra_passthrough_reaches_the_wire(emu: Emulator) -> None:
    client, _ = client_for(emu, "openai", extra_body=(("citation", False),))
    async with client:
        await client.chat([ChatMessage("user", "hi")], extra={"enable_enhancement": True})
    body = emu.stats.last_bodies["/v1/chat/completions"]
    assert body["enable_enhancement"] is True
    assert body["citation"] is False
    assert "temperature" not in body and "max_tokens" not in body


async def test_count_tokens(emu: Emulator) -> None:
    text = "你好, hybot counts tokens"
    native, _ = client_for(emu, "native")
    openai, _ = client_for(emu, "openai")
    async with native, openai:
        assert await native.count_tokens(text) == estimate_tokens(text)
        assert await openai.count_tokens(text) == estimate_tokens(text)
    assert emu.stats.requests["native:GetTokenCount"] == 1


@pytest.mark.parametrize(("ai_mark", "footnote"), [(True, "hybot"), (False, None)])
async def test_tokenhub_v3_image(emu: Emulator, ai_mark: bool, footnote: str | None) -> None:
    client, _ = client_for(emu, "openai")
    statuses: list[str] = []

    async def on_status(s: str) -> None:
        statuses.append(s)

    async with client:
        image = await client.generate_image(
            "a lighthouse at dusk",
            size="1024x768",
            seed=42,
            ai_mark=ai_mark,
            footnote=footnote,
            on_status=on_status,
        )
    assert image.mime == "image/png"
    assert (image.width, image.height) == (1024, 768)
    assert image.data.startswith(b"\x89PNG")
    assert image.model == "hy-image-v3"
    assert image.revised_prompt
    assert image.seed == 42
    assert statuses == ["running"]
    record = emu.stats.images[-1]
    assert record.mark_drawn is ai_mark
    assert (record.width, record.height) == (1024, 768)
    assert emu.stats.requests["/files"] == 1


async def test_tokenhub_lite_image(emu: Emulator) -> None:
    client, _ = client_for(emu, "openai")
    async with client:
        image = await client.generate_image("a cat", size="768x1024", model="hy-image-lite")
        plain = await client.generate_image("a dog", model="hy-image-lite", ai_mark=False)
    assert (image.width, image.height) == (768, 1024)
    assert image.model == "hy-image-lite"
    assert emu.stats.requests["/v1/api/image/lite"] == 2
    assert [r.mark_drawn for r in emu.stats.images] == [True, False]
    assert (plain.width, plain.height) == (1024, 1024)


class StatusLog:
    """``on_status`` callbacks that record what one client call heard and signal each state."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def event(self, name: str, state: str) -> asyncio.Event:
        return self._events.setdefault((name, state), asyncio.Event())

    def callback(self, name: str):
        self.seen[name] = []

        async def on_status(s: str) -> None:
            self.seen[name].append(s)
            self.event(name, s).set()

        return on_status

    async def heard(self, name: str, state: str) -> None:
        await asyncio.wait_for(self.event(name, state).wait(), 10)


HELD = EmulatorConfig(hold_image_runs=True)


async def test_native_image_job() -> None:
    async with Emulator(config=HELD) as emu:
        gate = emu.image_gate
        client, _ = client_for(emu, "openai", image_api="native")
        log = StatusLog()
        async with client:
            job = asyncio.create_task(
                client.generate_image("一座灯塔", size="1280x720", on_status=log.callback("a"))
            )
            await log.heard("a", "queued")
            await gate.wait_held(1)  # queued step
            gate.release(1)
            await log.heard("a", "running")
            await gate.wait_held(1)  # running step
            gate.release(1)
            image = await asyncio.wait_for(job, 10)
            gate.open()  # the second call needs no stepping
            unmarked = await client.generate_image("no mark", ai_mark=False)
    assert (image.width, image.height) == (1280, 720)
    assert image.mime in ("image/jpeg", "image/png")
    assert image.revised_prompt
    assert log.seen["a"] == ["queued", "running", "done"]
    assert emu.stats.requests["native:SubmitHunyuanImageJob"] == 2
    assert emu.stats.requests["native:QueryHunyuanImageJob"] >= 4
    assert [r.mark_drawn for r in emu.stats.images] == [True, False]
    assert (unmarked.width, unmarked.height) == (1024, 1024)


async def test_native_image_jobs_queue_behind_each_other() -> None:
    async with Emulator(config=HELD) as emu:
        gate = emu.image_gate
        client, _ = client_for(emu, "openai", image_api="native")
        log = StatusLog()
        async with client:
            first = asyncio.create_task(client.generate_image("job a", on_status=log.callback("a")))
            await log.heard("a", "queued")  # a's job exists: it was queued before b's
            second = asyncio.create_task(
                client.generate_image("job b", on_status=log.callback("b"))
            )
            await log.heard("b", "queued")
            await gate.wait_held(2)  # both in their queued step
            gate.release(2)  # a takes the one slot, b waits for it
            await log.heard("a", "running")
            await gate.wait_held(1)  # a's running step
            # With one running slot the later job must be waiting while a runs.
            assert log.seen["b"] == ["queued"] and gate.held == 1
            gate.release(1)
            await log.heard("a", "done")
            await log.heard("b", "running")
            await gate.wait_held(1)  # b's running step
            gate.release(1)
            await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert log.seen["a"] == ["queued", "running", "done"]
    assert log.seen["b"] == ["queued", "running", "done"]
    assert max(emu.stats.max_image_runs.values()) == 1


async def test_signature_is_accepted_and_clock_skew_is_detected(emu: Emulator) -> None:
    client = HunyuanClient(
        config=config_for(emu, "native", max_attempts=5),
        sleep=Sleeps(),
        clock=lambda: time.time() - 600,
    )
    async with client:
        with pytest.raises(SignatureExpired):
            await client.chat([ChatMessage("user", "hi")])
    # Retried exactly once after re-signing, then given up.
    assert emu.stats.errors["AuthFailure.SignatureExpire"] == 2

    client = HunyuanClient(
        config=config_for(emu, "native", secret_key=Secret("wrong-key")), sleep=Sleeps()
    )
    async with client:
        with pytest.raises(AuthError) as info:
            await client.chat([ChatMessage("user", "hi")])
    assert info.value.code == "AuthFailure.SignatureFailure"
    assert "wrong-key" not in str(info.value)


async def test_wrong_bearer_key(emu: Emulator) -> None:
    client, _ = client_for(emu, "openai", api_key=Secret("sk-wrong"))
    async with client:
        with pytest.raises(AuthError) as info:
            await client.chat([ChatMessage("user", "hi")])
    assert info.value.status == 401
    assert emu.stats.requests["/v1/chat/completions"] == 1


async def test_concurrency_overflow_is_retried_until_a_slot_frees() -> None:
    cfg = EmulatorConfig(chat_concurrency=2, hold_chats=True)
    async with Emulator(config=cfg) as emulator:
        refused = asyncio.Event()
        slots_free = asyncio.Event()
        backoffs: list[float] = []

        async def backoff(seconds: float) -> None:
            backoffs.append(seconds)
            refused.set()  # a call was refused as busy and backs off ...
            await slots_free.wait()  # ... until the held chats have answered

        client = HunyuanClient(
            config=config_for(
                emulator, "openai", max_attempts=30, backoff_base=0.1, backoff_cap=0.4
            ),
            sleep=backoff,
        )
        async with client:

            async def one(i: int) -> str:
                chunks = [c async for c in client.stream_chat([ChatMessage("user", f"n{i}")])]
                return "".join(c.delta for c in chunks)

            calls = [asyncio.create_task(one(i)) for i in range(4)]
            await emulator.chat_gate.wait_held(2)  # two chats hold both slots
            await asyncio.wait_for(refused.wait(), 10)
            emulator.chat_gate.open()
            await emulator.chat_gate.wait_finished(2)  # the two held chats answered and left
            slots_free.set()
            texts = await asyncio.wait_for(asyncio.gather(*calls), 10)
        assert backoffs and all(0 <= s <= 0.4 for s in backoffs)
        assert all(f'You just said: "n{i}"' in t for i, t in enumerate(texts))
        assert emulator.stats.busy_rejections >= 1
        assert max(emulator.stats.max_concurrent_chats.values()) == 2


# --- faults: every marker -------------------------------------------------------------------


def ask(marker: str, text: str = "hello") -> list[ChatMessage]:
    return [ChatMessage("user", f"{text} [[fault:{marker}]]")]


@pytest.mark.parametrize("api", APIS)
async def test_fault_latency(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api)
    loop = asyncio.get_running_loop()
    async with client:
        start = loop.time()
        result = await client.chat(ask("latency=0.3"))
        elapsed = loop.time() - start
    assert elapsed >= 0.3
    assert "[[fault" not in result.text
    assert 'You just said: "hello"' in result.text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_fault_429(emu: Emulator, api: str, stream: bool) -> None:
    client, sleeps = client_for(emu, api, max_attempts=2)
    async with client:
        with pytest.raises(RateLimited) as info:
            if stream:
                [c async for c in client.stream_chat(ask("429"))]
            else:
                await client.chat(ask("429"))
    assert emu.stats.requests[chat_route(api)] == 2
    assert len(sleeps.calls) == 1
    if api == "openai":
        assert info.value.retry_after == 1.0
        assert sleeps.calls[0] >= 1.0  # Retry-After honoured as a lower bound
        assert info.value.status == 429
    else:
        assert info.value.code == "RequestLimitExceeded"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_fault_500(emu: Emulator, api: str, stream: bool) -> None:
    client, sleeps = client_for(emu, api, max_attempts=3)
    async with client:
        with pytest.raises(UpstreamError) as info:
            if stream:
                [c async for c in client.stream_chat(ask("500"))]
            else:
                await client.chat(ask("500"))
    assert info.value.status in (500, 502)
    assert emu.stats.requests[chat_route(api)] == 3
    assert len(sleeps.calls) == 2
    assert all(0 <= s <= 0.05 for s in sleeps.calls)


@pytest.mark.parametrize("api", APIS)
async def test_fault_busy(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api, max_attempts=2)
    async with client:
        with pytest.raises(ServerBusy):
            await client.chat(ask("busy"))
        with pytest.raises(ServerBusy):
            [c async for c in client.stream_chat(ask("busy"))]
    assert emu.stats.requests[chat_route(api)] == 4


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_fault_hang(emu: Emulator, api: str, stream: bool) -> None:
    client, _ = client_for(emu, api, idle_timeout=0.3, max_attempts=1)
    async with client:
        with pytest.raises(HunyuanTimeout) as info:
            if stream:
                [c async for c in client.stream_chat(ask("hang"))]
            else:
                await client.chat(ask("hang"))
    # The idle timeout (0.3 s) ended the wait, not the call's 20 s deadline.
    if stream:
        assert str(info.value) == "no response headers before the timeout"
    else:
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert emu.stats.requests[chat_route(api)] == 1


async def test_fault_hang_total_timeout(emu: Emulator) -> None:
    client, sleeps = client_for(emu, "openai", idle_timeout=30.0, total_timeout=0.4, max_attempts=3)
    async with client:
        with pytest.raises(HunyuanTimeout) as info:
            await client.chat(ask("hang"))
    # The call's deadline ended it (not the 30 s idle timeout), and nothing was retried past it.
    assert str(info.value) == "call deadline exceeded"
    assert sleeps.calls == []
    assert emu.stats.requests["/v1/chat/completions"] == 1


@pytest.mark.parametrize("api", APIS)
async def test_fault_disconnect(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api, max_attempts=2)
    got: list[str] = []
    async with client:
        with pytest.raises(StreamInterrupted):
            async for chunk in client.stream_chat(ask("disconnect")):
                got.append(chunk.delta)
        assert got  # text had been delivered, so no retry
        assert emu.stats.requests[chat_route(api)] == 1
        with pytest.raises(TransportError) as info:
            await client.chat(ask("disconnect"))
    assert type(info.value) is TransportError
    assert emu.stats.requests[chat_route(api)] == 3  # non-stream: retried once


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_fault_moderation(emu: Emulator, api: str, stream: bool) -> None:
    client, sleeps = client_for(emu, api)
    async with client:
        with pytest.raises(ModerationRefused) as info:
            if stream:
                [c async for c in client.stream_chat(ask("moderation"))]
            else:
                await client.chat(ask("moderation"))
    assert emu.stats.requests[chat_route(api)] == 1
    assert sleeps.calls == []
    assert "hello" not in info.value.user_message
    if api == "native":
        assert info.value.code == "OperationDenied.TextIllegalDetected"
    else:
        assert info.value.status == 451


@pytest.mark.parametrize("api", APIS)
async def test_fault_sensitive(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api)
    async with client:
        chunks = [c async for c in client.stream_chat(ask("sensitive"))]
        whole = await client.chat(ask("sensitive"))
        full = await client.chat([ChatMessage("user", "hello")])
    assert chunks[-1].finish_reason == "sensitive"
    assert any(c.delta for c in chunks)
    assert whole.finish_reason == "sensitive"
    assert 0 < len(whole.text) < len(full.text)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_fault_credit(emu: Emulator, api: str, stream: bool) -> None:
    client, _ = client_for(emu, api)
    async with client:
        with pytest.raises(OutOfCredit) as info:
            if stream:
                [c async for c in client.stream_chat(ask("credit"))]
            else:
                await client.chat(ask("credit"))
    assert emu.stats.requests[chat_route(api)] == 1
    expected = "FailedOperation.ResourcePackExhausted" if api == "native" else "401007"
    assert info.value.code == expected


@pytest.mark.parametrize("api", APIS)
async def test_fault_badkey(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api)
    async with client:
        with pytest.raises(AuthError) as info:
            await client.chat(ask("badkey"))
        with pytest.raises(AuthError):
            [c async for c in client.stream_chat(ask("badkey"))]
    assert emu.stats.requests[chat_route(api)] == 2
    expected = "AuthFailure.SecretIdNotFound" if api == "native" else "401002"
    assert info.value.code == expected
    assert EMU.api_key not in str(info.value) and EMU.secret_key not in str(info.value)


@pytest.mark.parametrize("api", APIS)
async def test_fault_stream_error(emu: Emulator, api: str) -> None:
    client, _ = client_for(emu, api)
    got: list[str] = []
    async with client:
        with pytest.raises(HunyuanTimeout) as info:
            async for chunk in client.stream_chat(ask("stream_error")):
                got.append(chunk.delta)
        assert got
        assert info.value.code == "4001"
        assert emu.stats.requests[chat_route(api)] == 1  # never retried after text
        # Non-stream: answered like an engine timeout, which is retried.
        with pytest.raises(HunyuanTimeout):
            await client.chat(ask("stream_error"))
    assert emu.stats.requests[chat_route(api)] == 1 + 3


async def test_fault_imagefail_tokenhub(emu: Emulator) -> None:
    client, _ = client_for(emu, "openai")
    async with client:
        with pytest.raises((ModerationRefused, UpstreamError, ImageJobFailed)):
            await client.generate_image("a ship [[fault:imagefail]]")
        with pytest.raises((ModerationRefused, UpstreamError, ImageJobFailed)):
            await client.generate_image("a ship [[fault:imagefail]]", model="hy-image-lite")
    # A failed synchronous generation may have been billed: it is not retried.
    assert emu.stats.requests["/v1/wand/hunyuan-image/v3-generation"] == 1
    assert emu.stats.requests["/v1/api/image/lite"] == 1
    assert emu.stats.images_generated == 0


async def test_fault_imagefail_native_job(emu: Emulator) -> None:
    client, _ = client_for(emu, "openai", image_api="native")
    async with client:
        with pytest.raises(ImageJobFailed) as info:
            await client.generate_image("a ship [[fault:imagefail]]")
    assert info.value.code == "FailedOperation.GenerateImageFailed"
    assert emu.stats.requests["native:SubmitHunyuanImageJob"] == 1


@pytest.mark.parametrize("image_api", ["tokenhub", "native"])
async def test_image_rate_limit_is_retried(emu: Emulator, image_api: str) -> None:
    client, _ = client_for(emu, "openai", image_api=image_api, max_attempts=2)
    async with client:
        with pytest.raises(RateLimited):
            await client.generate_image("x [[fault:429]]")
    route = (
        "/v1/wand/hunyuan-image/v3-generation"
        if image_api == "tokenhub"
        else "native:SubmitHunyuanImageJob"
    )
    assert emu.stats.requests[route] == 2


@pytest.mark.parametrize("image_api", ["tokenhub", "native"])
async def test_image_500_is_not_retried(emu: Emulator, image_api: str) -> None:
    client, _ = client_for(emu, "openai", image_api=image_api, max_attempts=3)
    async with client:
        with pytest.raises(UpstreamError):
            await client.generate_image("x [[fault:500]]")
    route = (
        "/v1/wand/hunyuan-image/v3-generation"
        if image_api == "tokenhub"
        else "native:SubmitHunyuanImageJob"
    )
    assert emu.stats.requests[route] == 1


@pytest.mark.parametrize("image_api", ["tokenhub", "native"])
async def test_image_badkey_and_moderation(emu: Emulator, image_api: str) -> None:
    client, _ = client_for(emu, "openai", image_api=image_api)
    async with client:
        with pytest.raises(AuthError):
            await client.generate_image("x [[fault:badkey]]")
        with pytest.raises(ModerationRefused):
            await client.generate_image("x [[fault:moderation]]")
        with pytest.raises(OutOfCredit):
            await client.generate_image("x [[fault:credit]]")


async def test_server_wide_faults() -> None:
    cfg = EmulatorConfig(faults=frozenset({"429"}))
    async with Emulator(config=cfg) as emulator:
        client, _ = client_for(emulator, "native", max_attempts=2)
        async with client:
            with pytest.raises(RateLimited):
                await client.count_tokens("hello")
            with pytest.raises(RateLimited):
                await client.chat([ChatMessage("user", "plain, no marker")])
        assert emulator.stats.requests["native:GetTokenCount"] == 2

    cfg = EmulatorConfig(latency=0.2)
    async with Emulator(config=cfg) as emulator:
        client, _ = client_for(emulator, "openai")
        loop = asyncio.get_running_loop()
        async with client:
            start = loop.time()
            await client.chat([ChatMessage("user", "slow server")])
        assert loop.time() - start >= 0.2


async def test_invalid_request_from_the_server_is_not_retried(emu: Emulator) -> None:
    client, _ = client_for(emu, "native")
    async with client:
        with pytest.raises(InvalidRequest):
            await client.chat([ChatMessage("user", "hi")], temperature=3.0)
        with pytest.raises(HunyuanError) as info:
            await client.chat([ChatMessage("user", "hi")], model="no-such-model")
    assert emu.stats.requests["native:ChatCompletions"] == 2
    assert not info.value.retryable
    assert re.match(r"^[A-Za-z.]+$", info.value.code)


@pytest.mark.parametrize("api", APIS)
async def test_sequential_streams_reuse_one_connection(emu: Emulator, api: str) -> None:
    # A finished stream must leave its connection reusable: otherwise every answer pays a new
    # TCP (and, against TokenHub, TLS) handshake.
    client, _ = client_for(emu, api)
    before = len(emu.stats.connections)
    async with client:
        for i in range(10):
            chunks = [c async for c in client.stream_chat([ChatMessage("user", f"hi {i}")])]
            assert chunks[-1].finish_reason == "stop"
        await client.chat([ChatMessage("user", "and a plain one")])
    assert len(emu.stats.connections) - before == 1
