"""The core speaks the platform's command syntax, explains bad image sizes, counts in good
grammar and says which language every reply is in (the console's labels follow it).

Through the public surface (``Conversation.handle`` and the console adapter) with the scripted
fake model.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes.conversation import fake_core
from fakes.model import FakeModel

from adapters.console import ConsoleAdapter
from core.config import BotConfig, HunyuanConfig
from core.errors import UpstreamError
from core.types import (
    Failure,
    Final,
    ImageReady,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Usage,
)

SLACK = "/hy "


def notices(events: list[object]) -> str:
    return "\n".join(e.text for e in events if isinstance(e, Notice))


def replies(events: list[object]) -> str:
    out = []
    for e in events:
        if isinstance(e, Notice):
            out.append(e.text)
        elif isinstance(e, Failure):
            out.append(e.user_message)
    return "\n".join(out)


# --- 1. the platform's command syntax ------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "header"), [("en", "Here's what I can do"), ("zh", "我能做这些事")]
)
async def test_help_in_slack_shows_the_slash_commands_subcommands(
    tmp_path: Path, lang: str, header: str
) -> None:
    async with fake_core(tmp_path) as c:
        slack = notices(await c.send("/help", language=lang, command_prefix=SLACK))
        plain = notices(await c.send("/help", language=lang))
    assert slack.startswith(header) and plain.startswith(header)
    assert "/hy image [--size WxH] [--style STYLE] <prompt> — " in slack
    assert "/hy quota — " in slack and "/hy usage — " in slack and "/hy ask <question> — " in slack
    commands = [line.split(" — ")[0] for line in slack.splitlines() if " — " in line]
    assert len(commands) >= 10 and all(cmd.startswith("/hy ") for cmd in commands), commands
    # Telegram and the console keep "/".
    assert "/image [--size WxH]" in plain and "/hy" not in plain
    assert re.search(r"^/quota — ", plain, re.M)


@pytest.mark.parametrize(("lang", "usage"), [("en", "Usage: "), ("zh", "用法：")])
async def test_usage_sentences_follow_the_prefix(tmp_path: Path, lang: str, usage: str) -> None:
    async with fake_core(tmp_path) as c:
        slack = replies(await c.send("/image", language=lang, command_prefix=SLACK))
        assert f"{usage}/hy image [--size WxH]" in slack
        plain = replies(await c.send("/image", language=lang))
        assert f"{usage}/image [--size WxH]" in plain
        unknown = replies(await c.send("/nosuch", language=lang, command_prefix=SLACK))
        assert "/hy help" in unknown
        lang_usage = replies(await c.send("/lang klingon", language=lang, command_prefix=SLACK))
        assert "/hy lang zh|en|auto" in lang_usage


# --- 2. a bad image size says what is wrong ------------------------------------------------

V3 = BotConfig()  # hy-image-v3 via the OpenAI-compatible API: a range rule
LITE = BotConfig(hunyuan=HunyuanConfig(image_model="hy-image-lite"))


@pytest.mark.parametrize("size", ["3000x3000", "0x0", "4000x4000", "255x1024"])
@pytest.mark.parametrize(
    ("lang", "said"),
    [
        ("en", "The size {size} isn't available for hy-image-v3. Sizes: each side 512–2048"),
        ("zh", "hy-image-v3 不支持 {size} 这个尺寸。可用尺寸：每边 512–2048"),
    ],
)
async def test_a_wxh_size_the_model_refuses_gets_the_models_rule(
    tmp_path: Path, size: str, lang: str, said: str
) -> None:
    async with fake_core(tmp_path, config=V3) as c:
        text = replies(await c.send(f"/image --size {size} cat", language=lang))
        assert said.format(size=size) in text, text
        assert "isn't quite right" not in text and "命令格式不对" not in text
        assert c.model.image_calls == []
        assert await c.counter("images") == 0


async def test_a_listed_model_names_its_sizes(tmp_path: Path) -> None:
    async with fake_core(tmp_path, config=LITE) as c:
        text = replies(await c.send("/image --size 3000x3000 cat"))
        assert "The size 3000x3000 isn't available for hy-image-lite. Sizes: " in text
        assert "x" in text.split("Sizes: ", 1)[1]


@pytest.mark.parametrize("size", ["-5x10", "abc", "1024", "10x10x10"])
@pytest.mark.parametrize(
    ("lang", "said", "rule"),
    [
        ("en", "The size must look like 1024x1024", "Sizes for hy-image-v3: each side 512–2048"),
        ("zh", "尺寸的格式应为 1024x1024", "hy-image-v3 可用尺寸：每边 512–2048"),
    ],
)
async def test_a_size_that_is_not_wxh_says_what_a_size_looks_like(
    tmp_path: Path, size: str, lang: str, said: str, rule: str
) -> None:
    async with fake_core(tmp_path, config=V3) as c:
        text = replies(await c.send(f"/image --size {size} cat", language=lang))
        assert text.startswith(said), text
        assert rule in text
        assert "/image [--size WxH]" in text
        slack = replies(
            await c.send(f"/image --size {size} cat", language=lang, command_prefix=SLACK)
        )
        assert "/hy image [--size WxH]" in slack
        assert c.model.image_calls == []


# --- 3. counts in good grammar ---------------------------------------------------------------


async def test_usage_counts_one_image_and_one_token_in_the_singular(tmp_path: Path) -> None:
    model = FakeModel().answer("ok", usage=Usage(1, 1, 2))
    async with fake_core(tmp_path, model=model) as c:
        await c.send("hello")
        assert any(isinstance(e, ImageReady) for e in await c.send("/image a cat"))
        en = notices(await c.send("/usage"))
        assert "1 token in · 1 token out · 1 image · " in en, en
        assert "1 images" not in en and "1 tokens" not in en
        zh = notices(await c.send("/usage", language="zh"))
        assert "输入 1 token · 输出 1 token · 图片 1 张" in zh, zh
        await c.send("again")  # the default echo answer uses several tokens
        await c.send("/image a dog")
        en = notices(await c.send("/usage"))
        assert re.search(r"\d+ tokens in · \d+ tokens out · 2 images · ", en), en


async def test_forget_counts_in_good_grammar(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        assert "Deleted 0 stored messages of yours." in notices(await c.send("/forget"))
        await c.send("hello")
        assert "Deleted 2 stored messages of yours." in notices(await c.send("/forget"))
        assert "已删除你的 0 条已存储消息。" in notices(await c.send("/forget", language="zh"))


# --- 4. every reply says its language ---------------------------------------------------------


async def test_every_reply_event_carries_the_users_language(tmp_path: Path) -> None:
    model = FakeModel().answer("ok").fail(UpstreamError("x"))
    model.answer("bad", finish="sensitive")
    async with fake_core(tmp_path, model=model) as c:
        events = await c.send("hi")
        events += await c.send("again")
        events += await c.send("more")
        events += await c.send("/quota")
        events += await c.send("/image --size abc cat")
        events += await c.send("/nosuch")
        kinds = {type(e) for e in events if isinstance(e, Notice | Failure | Final | Retract)}
        assert kinds == {Notice, Failure, Final, Retract}
        for e in events:
            if isinstance(e, Notice | Failure | Final | Retract):
                assert e.language == "en", e
        changed = await c.send("/lang zh")
        assert [e.language for e in changed if isinstance(e, Notice)] == ["zh"]
        events = await c.send("/usage") + await c.send("/help") + await c.send("hello")
        langs = {e.language for e in events if isinstance(e, Notice | Failure | Final | Retract)}
        assert langs == {"zh"}
        back = await c.send("/lang en")
        assert [e.language for e in back if isinstance(e, Notice)] == ["en"]


async def test_console_labels_follow_lang(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        out = io.StringIO()
        console = ConsoleAdapter(conversation=c.conv, out=out, image_dir=tmp_path / "img")
        async with console:
            await console.send("/lang zh")
            await console.send("/quota")
        text = out.getvalue()
        assert "（仅你可见） 语言已设置为简体中文。" in text, text
        assert "(private)" not in text

        out = io.StringIO()
        console = ConsoleAdapter(
            conversation=c.conv, out=out, image_dir=tmp_path / "img", language="zh", user_id="u2"
        )
        async with console:
            await console.send("/quota")
            await console.send("/lang en")
            await console.send("/quota")
        lines = out.getvalue().splitlines()
        first = next(line for line in lines if "你的额度" in line)
        assert "（仅你可见）" in first
        assert any("(private) Language set to English." in line for line in lines), lines
        last = [line for line in lines if "Your limits:" in line]
        assert last and all("(private)" in line for line in last)


class _Scripted:
    """A core that answers each text with scripted events."""

    def __init__(self, script: dict[str, list[object]]) -> None:
        self.script = script

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        for event in self.script.get(inbound.text, []):
            yield event  # type: ignore[misc]


async def test_console_withdrawn_and_saved_labels_follow_the_replies_language(
    tmp_path: Path,
) -> None:
    script: dict[str, list[object]] = {
        "before": [Partial("risky", "risky"), Retract("gone")],
        "/lang zh": [Notice("语言已设置为简体中文。", private=True, language="zh")],
        "edgy": [Partial("risky", "risky"), Retract("已撤回", language="zh")],
        "pic": [ImageReady(b"png", "image/png", "c", language="zh")],
        "/lang en": [Notice("Language set to English.", private=True, language="en")],
        "again": [Partial("x", "x"), Retract("gone", language="en")],
        "unsaid": [Notice("n", private=True)],  # no language said: the last one stays
    }
    out = io.StringIO()
    console = ConsoleAdapter(conversation=_Scripted(script), out=out, image_dir=tmp_path)
    async with console:
        await console.run_script(["before", "/lang zh", "edgy", "pic", "/lang en", "again"])
        await console.send("unsaid")
    lines = out.getvalue().splitlines()
    withdrawn = [line for line in lines if "撤回" in line or "withdrawn" in line]
    assert "[previous answer withdrawn] gone" in withdrawn[0]
    assert "［上一条回答已撤回］ 已撤回" in withdrawn[1]
    assert "[previous answer withdrawn] gone" in withdrawn[-1]
    assert any("🖼  已保存 " in line for line in lines), lines
    assert lines[-1].endswith("(private) n")
