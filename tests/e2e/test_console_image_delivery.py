"""End to end through the real core and the emulator: an image the console cannot save
(issue 7, item 1) reaches the user as a sentence, not a traceback, and must not be charged."""

from __future__ import annotations

import io
from pathlib import Path

from adapters.console import ConsoleAdapter
from bots.wiring import demo_runtime
from core.store.base import LedgerEntry


async def run(tmp_path: Path) -> tuple[str, list[LedgerEntry], int]:
    images = tmp_path / "imgs"
    async with demo_runtime(db_path=tmp_path / "hybot.db", image_dir=images) as demo:
        out = io.StringIO()
        adapter = ConsoleAdapter(
            conversation=demo.runtime.conversation, out=out, image_dir=images, color=False
        )
        async with adapter:
            images.rmdir()  # the disk "fills up" after start: nothing can be saved any more
            images.write_text("not a directory")
            await adapter.send("/image a kite")
        rows = await demo.runtime.store.ledger(user_id="console:me")
        return out.getvalue(), rows, adapter.errors


async def test_an_unsaveable_image_is_a_sentence_not_a_traceback(tmp_path: Path) -> None:
    text, _, errors = await run(tmp_path)
    assert "couldn't deliver your image" in text
    assert "internal error" not in text and "Traceback" not in text
    assert errors == 0


async def test_an_unsaveable_image_is_not_charged(tmp_path: Path) -> None:
    _, rows, _ = await run(tmp_path)
    assert rows, "the attempt is in the ledger"
    assert not [r for r in rows if r.images > 0 and r.outcome == "ok"], rows
