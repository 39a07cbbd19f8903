"""Issue 7 items owned by the core, through the public surface (Conversation.handle, the
console adapter) with the scripted fake model."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from fakes.conversation import FakeCore, fake_core
from fakes.model import FakeModel

from adapters.console import ConsoleAdapter
from core.config import AccessConfig, BotConfig, HunyuanConfig, LimitSet, QuotaConfig
from core.errors import UpstreamError
from core.types import (
    ChatChunk,
    Failure,
    Final,
    ImageReady,
    Notice,
    Retract,
    Usage,
)

ADMIN = BotConfig(access=AccessConfig(admins=("telegram:boss",)))
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u200e\u202e\u3164\u2800 \t\n"


def notices(events: list) -> str:
    return "\n".join(e.text for e in events if isinstance(e, Notice))


async def ledger(c: FakeCore, user: str = "telegram:u1") -> list[tuple[int, int, int, str]]:
    return [
        (r.tokens_in, r.tokens_out, r.images, r.outcome) for r in await c.store.ledger(user_id=user)
    ]


# --- 1. an image the adapter could not deliver is refunded ---------------------------------


async def test_an_image_the_adapter_closed_the_stream_at_is_refunded(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        stream = c.stream("/image a red fox")
        async for event in stream:
            if isinstance(event, ImageReady):
                break
        await stream.aclose()  # type: ignore[attr-defined]
        assert await ledger(c) == [(0, 0, 0, "failed:undelivered")]
        assert await c.counter("images") == 0
        [job] = await c.store.image_jobs(user_id="telegram:u1")
        assert (job.status, job.error) == ("failed", "failed:undelivered")
        # Pulling past the image (it was shown) charges it.
        assert any(isinstance(e, ImageReady) for e in await c.send("/image another"))
        assert (await ledger(c))[-1] == (0, 0, 1, "ok")


async def test_an_image_that_cannot_be_saved_is_a_sentence_and_refunded(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        out = io.StringIO()
        images = tmp_path / "imgs"
        adapter = ConsoleAdapter(conversation=c.conv, out=out, image_dir=images, color=False)
        async with adapter:
            shutil.rmtree(images)
            images.write_text("not a directory")  # the disk refuses every image now
            await adapter.run_script(["/image a red fox"])
        text = out.getvalue()
        assert "Traceback" not in text and "internal error" not in text
        assert "couldn't deliver your image" in text
        assert await ledger(c, "console:me") == [(0, 0, 0, "failed:undelivered")]
        assert await c.counter("images", user="console:me") == 0


# --- 5. withdrawn answers are ledgered as billed --------------------------------------------


@pytest.mark.parametrize("reported", [Usage(30, 12, 42), None])
async def test_a_withdrawn_answer_ledgers_what_was_billed(
    tmp_path: Path, reported: Usage | None
) -> None:
    model = FakeModel().add_chat(
        "some risky words here", ChatChunk("", finish_reason="sensitive", usage=reported)
    )
    async with fake_core(tmp_path, model=model) as c:
        events = await c.send("tell me")
        assert isinstance(events[-1], Retract)
        [(tokens_in, tokens_out, _, outcome)] = await ledger(c)
        assert outcome == "failed:moderation"
        if reported is not None:
            assert (tokens_in, tokens_out) == (30, 12)
        else:
            assert tokens_in > 0 and tokens_out > 0  # the estimate of what was sent/streamed
        [row] = await c.store.ledger(user_id="telegram:u1")
        assert row.cost_cny > 0
        assert await c.counter() == 0  # the user is not charged for a withdrawn answer


# --- 6. a truncated answer says so, and why --------------------------------------------------


async def test_an_answer_cut_at_the_model_maximum_says_so(tmp_path: Path) -> None:
    model = FakeModel().answer(
        "The beginning of a long", finish="length", usage=Usage(5, 4096, 4101)
    )
    async with fake_core(tmp_path, model=model) as c:
        final = next(e for e in await c.send("write a novel") if isinstance(e, Final))
        assert final.text.startswith("The beginning of a long")
        assert "cut short" in final.text and "maximum" in final.text and "4096" in final.text
        state = await c.store.get_conversation("telegram/bot/c1//")
        turns = await c.store.recent_turns(state.key, state.epoch, limit=10)
        assert turns[-1].content == "The beginning of a long"  # the context keeps the answer


async def test_an_answer_cut_by_the_remaining_quota_says_so_in_chinese(tmp_path: Path) -> None:
    cfg = BotConfig(quota=QuotaConfig(defaults=LimitSet(tokens_per_day=1000)))
    model = FakeModel().answer("开头", finish="length", usage=Usage(5, 900, 905))
    async with fake_core(tmp_path, model=model, config=cfg) as c:
        final = next(e for e in await c.send("写一本小说", language="zh") if isinstance(e, Final))
        assert c.model.chat_calls[0].max_tokens < 4096  # the quota shrank the budget
        assert "截断" in final.text and "额度" in final.text


# --- 7, 8. persona bounds, invisible-only input --------------------------------------------


async def test_a_persona_over_the_bound_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    cfg = BotConfig(persona_max_chars=50)
    async with fake_core(tmp_path, config=cfg) as c:
        refused = notices(await c.send("/persona " + "x" * 51))
        assert "too long" in refused and "50" in refused
        assert (await c.store.get_conversation("telegram/bot/c1//")).persona is None
        assert "set" in notices(await c.send("/persona " + "x" * 50))
    (tmp_path / "default").mkdir()
    async with fake_core(tmp_path / "default") as c:
        assert "too long" in notices(await c.send("/persona " + "y" * 1_000_000))
        assert (await c.store.get_conversation("telegram/bot/c1//")).persona is None


@pytest.mark.parametrize("bad", ["a\x00b", "hi \x1b[2J there", "\x07bell"])
async def test_a_persona_with_control_characters_is_refused(tmp_path: Path, bad: str) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        assert "control characters" in notices(await c.send(f"/persona {bad}"))
        assert (await c.store.get_conversation("telegram/bot/c1//")).persona is None
        group = {"chat": "g", "is_dm": False, "user": "boss"}
        assert "control characters" in notices(
            await c.send(f"/admin channel persona {bad}", **group)
        )
        assert await c.store.get_channel_policy("telegram:g") is None


async def test_a_channel_persona_over_the_bound_is_refused(tmp_path: Path) -> None:
    cfg = BotConfig(access=ADMIN.access, persona_max_chars=10)
    async with fake_core(tmp_path, config=cfg) as c:
        events = await c.send("/admin channel persona " + "z" * 11, chat="g", is_dm=False,
                              user="boss")  # fmt: skip
        assert "too long" in notices(events)
        assert await c.store.get_channel_policy("telegram:g") is None


async def test_invisible_only_input_is_empty(tmp_path: Path) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        assert await c.send(ZERO_WIDTH) == []  # no message at all
        usage = notices(await c.send(f"/image {ZERO_WIDTH}"))
        assert "/image" in usage
        assert "/ask" in notices(await c.send(f"/ask {ZERO_WIDTH}"))
        assert "persona" in notices(await c.send(f"/persona {ZERO_WIDTH}")).lower()
        channel = await c.send(f"/admin channel persona {ZERO_WIDTH}", chat="g", is_dm=False,
                               user="boss")  # fmt: skip
        assert "/admin channel" in notices(channel)
        assert await c.store.get_channel_policy("telegram:g") is None
        assert c.model.chat_calls == [] and c.model.image_calls == []
        assert await c.store.ledger() == []


# --- 10. /admin limit none/default, deny of an admin, channel commands in a DM ---------------


async def test_limit_none_means_unlimited_and_default_restores_it(tmp_path: Path) -> None:
    cfg = BotConfig(access=ADMIN.access, quota=QuotaConfig(defaults=LimitSet(tokens_per_day=1000)))
    async with fake_core(tmp_path, config=cfg) as c:
        await c.send("/admin limit telegram:u1 tokens_per_day none", user="boss")
        assert "daily tokens: unlimited" in notices(await c.send("/quota"))
        c.model.answer("long answer", usage=Usage(10, 5000, 5010))
        assert any(isinstance(e, Final) for e in await c.send("spend a lot"))
        await c.send("/admin limit telegram:u1 tokens_per_day default", user="boss")
        quota = notices(await c.send("/quota"))
        assert "daily tokens: 5010 of 1000 used" in quota


async def test_deny_of_an_admin_is_refused_with_the_reason(tmp_path: Path) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        await c.send("/admin role telegram:u2 admin", user="boss")
        for target in ("telegram:boss", "telegram:u2"):
            said = notices(await c.send(f"/admin deny {target}", user="boss"))
            assert "is an admin" in said and "Done" not in said
        assert (await c.store.get_user("telegram:u2")).access == ""  # type: ignore[union-attr]
        assert await c.store.get_user("telegram:boss") is None


async def test_channel_settings_in_a_dm_are_refused_with_the_reason(tmp_path: Path) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        said = notices(await c.send("/admin channel enabled false", user="boss", chat="boss"))
        assert "groups and channels" in said and "Done" not in said
        assert await c.store.get_channel_policy("telegram:boss") is None


# --- 14. the image size rule of the configured model, in the user's language ---------------


@pytest.mark.parametrize(
    ("hunyuan", "expect"),
    [
        (HunyuanConfig(), "512–2048"),
        (HunyuanConfig(image_api="native"), "1280x720"),
        (HunyuanConfig(image_model="hy-image-lite"), "1920x1080"),
    ],
)
async def test_help_states_the_configured_image_size_rule(
    tmp_path: Path, hunyuan: HunyuanConfig, expect: str
) -> None:
    async with fake_core(tmp_path, config=BotConfig(hunyuan=hunyuan)) as c:
        for lang in ("en", "zh"):
            text = notices(await c.send("/help", language=lang))
            assert expect in text and "256" not in text
        zh = notices(await c.send("/image --size 300x300 猫", language="zh"))
        assert "不支持" in zh and expect in zh


async def test_non_ascii_style_names_are_accepted(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        events = await c.send("/image --style 水墨 a mountain")
        assert any(isinstance(e, ImageReady) for e in events)
        assert c.model.image_calls[0].style == "水墨"


# --- 20, 21. /usage in the user's language, answered calls apart from failures --------------


async def test_usage_localises_the_period_and_separates_failures(tmp_path: Path) -> None:
    model = FakeModel().answer("ok", usage=Usage(10, 2, 12)).fail(UpstreamError("x"))
    model.fail(UpstreamError("y"))
    async with fake_core(tmp_path, model=model) as c:
        await c.send("one")
        assert any(isinstance(e, Failure) for e in await c.send("two"))
        assert any(isinstance(e, Failure) for e in await c.send("three"))
        en = notices(await c.send("/usage"))
        assert "Your usage (today)" in en and "Your usage (this month)" in en
        assert "1 answered · 2 failed" in en and "10 tokens in · 2 tokens out" in en
        zh = notices(await c.send("/usage", language="zh"))
        assert "你的用量（今日）" in zh and "（day）" not in zh
        assert "成功 1 次 · 失败 2 次" in zh
        assert not re.search(r"[A-Za-z]{3,}", zh.replace("token", "")), zh


# --- HYBOT_ABOUT: the operator's own text is shown by /about ------------------------------


async def test_about_shows_the_operators_text_only_when_set(tmp_path: Path) -> None:
    cfg = BotConfig(about_extra="Run by the platform team; questions to #ai-help.")
    async with fake_core(tmp_path, config=cfg) as c:
        text = notices(await c.send("/about"))
        assert text.endswith("Run by the platform team; questions to #ai-help.")
        assert "hy3-preview" in text  # the usual statement is still there, above it
    (tmp_path / "plain").mkdir()
    async with fake_core(tmp_path / "plain") as c:
        assert "#ai-help" not in notices(await c.send("/about"))
