"""The console adapter on the base's primitives: its own sentences come from the catalogue
(issue 7, item 20), replaced and withdrawn text reads as such in a transcript."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

from adapters.console import ConsoleAdapter
from core.i18n import CATALOGUE, t
from core.types import (
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
)

CONSOLE_KEYS = [k for k in CATALOGUE["en"] if k.startswith("console.")]


class Core:
    def __init__(self, script: dict[str, list[ReplyEvent]]) -> None:
        self.script = script

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        for event in self.script.get(inbound.text, []):
            yield event


SCRIPT: dict[str, list[ReplyEvent]] = {
    "private": [Notice("p", private=True)],
    "edgy": [Partial("risky", "risky"), Retract("gone")],
    "image": [
        ImageQueued(1, language="zh"),
        ImageRunning(language="zh"),
        ImageReady(b"png", "image/png", "c", language="zh"),
    ],
    "chat": [Partial("Hel", "Hel"), Final("Hello")],
}


async def transcript(lang: str, image_dir: Path) -> str:
    out = io.StringIO()
    adapter = ConsoleAdapter(
        conversation=Core(SCRIPT), out=out, image_dir=image_dir, language=lang, color=False
    )
    async with adapter:
        await adapter.run_script(["private", "edgy", "image", "& chat", "!wait"])
    return out.getvalue()


async def test_console_sentences_follow_the_language(tmp_path: Path) -> None:
    zh = await transcript("zh", tmp_path)
    en = await transcript("en", tmp_path)
    for key in ("console.private", "console.withdrawn", "console.background"):
        assert t(key, "zh") in zh and t(key, "en") not in zh, key
        assert t(key, "en") in en, key
    assert t("console.saved", "zh", path="").strip() in zh
    assert "saved" not in zh and "saved" in en
    assert t("image.queued", "zh", position=1) in zh  # the event's language


def test_console_keys_exist_in_both_languages() -> None:
    assert {"console.banner", "console.private", "console.saved"} <= set(CONSOLE_KEYS)
    for key in CONSOLE_KEYS:
        assert CATALOGUE["zh"][key] != CATALOGUE["en"][key]


async def test_a_replaced_answer_is_marked_and_a_status_line_is_not(tmp_path: Path) -> None:
    text = await transcript("en", tmp_path)
    lines = text.splitlines()
    assert "hybot › risky" in lines
    assert "hybot › [previous answer withdrawn] gone" in lines
    assert "hybot › ⏳ " + t("image.queued", "zh", position=1) in lines  # edited in place...
    assert "hybot › 🎨 " + t("image.running", "zh") in lines  # ...shows as a fresh status line
    assert sum("withdrawn" in line for line in lines) == 1  # the deleted status is silent
    assert "hybot › Hello" in lines  # streamed in two pieces, one line
    assert text.endswith("\n")


async def test_an_interrupted_stream_continues_on_a_line_of_its_own(tmp_path: Path) -> None:
    out = io.StringIO()
    adapter = ConsoleAdapter(conversation=Core({}), out=out, image_dir=tmp_path)
    a = adapter.make_inbound("x")
    b = adapter.make_inbound("y", user="bob")
    ref = await adapter.send_text(a, "Hello")
    await adapter.send_text(b, "Hi Bob")
    await adapter.edit_text(ref, "Hello world")
    await adapter.delete(ref)
    assert out.getvalue().splitlines() == [
        "hybot › Hello",
        "hybot → bob › Hi Bob",
        "hybot › … world",
        "hybot › ⚠ [previous answer withdrawn]",
    ]
