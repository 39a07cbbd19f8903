"""Hostile text through the console (issue 7, item 9): whatever a user types or a model
answers, no control character, terminal escape sequence, bidirectional override, invisible
format character or lone surrogate reaches the operator's terminal raw, and newlines and tabs
keep their meaning."""

from __future__ import annotations

import asyncio
import io
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.console import ConsoleAdapter
from adapters.console.render import printable
from core.types import (
    Failure,
    Final,
    ImageReady,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
)

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
ESCAPES = [
    "\x1b[2J",  # clear the screen
    "\x1b]0;owned\x07",  # set the window title (OSC ... BEL)
    "\x1b]52;c;ZXZpbA==\x07",  # write the clipboard
    "\x9b31m",  # C1 CSI
    "\x1bP+q\x1b\\",  # DCS
    "\r\x1b[K",  # overwrite the line
]

hostile_chars = st.one_of(
    st.characters(categories=["Cc"]),
    st.characters(categories=["Cf"]),
    st.characters(categories=["Cs"]),
    st.characters(categories=["Zl", "Zp"]),
    st.sampled_from(list(BIDI)),
    st.sampled_from(["\n", "\t", "汉", "😀", "e\u0301", "\u200d", "a", " "]),
)
hostile_text = st.lists(
    st.one_of(hostile_chars.map(str), st.sampled_from(ESCAPES)), max_size=40
).map("".join)


def harmful(ch: str) -> bool:
    if ch in "\n\t\u200c\u200d":
        return False
    return ch in BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Cf", "Zl", "Zp")


class EchoCore:
    """Answers every message by quoting it in every kind of event."""

    def __init__(self, png: bytes) -> None:
        self.png = png

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        text = inbound.text
        yield Partial(text[: len(text) // 2], text[: len(text) // 2])
        yield Partial(text, text[len(text) // 2 :])
        yield Final(f"You said: {text}", note=text)
        yield Notice(f"notice {text}", private=True)
        yield Retract(f"withdrawn {text}")
        yield ImageReady(self.png, "image/png", f"Prompt: {text}\nAI-generated image")
        yield Failure(f"failed {text}")


def run_console(text: str, user: str) -> str:
    raw = io.BytesIO()
    # A strict UTF-8 terminal: a lone surrogate written raw would raise here.
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="\n")

    async def go(image_dir: Path) -> None:
        adapter = ConsoleAdapter(conversation=EchoCore(b"png"), out=out, image_dir=image_dir)
        async with adapter:
            await adapter.send(text)
            await adapter.send(text, user=user)
            adapter.send_background(text, user=user)
        assert adapter.errors == 0

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(go(Path(tmp)))
    out.flush()
    return raw.getvalue().decode("utf-8")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=hostile_text, user=hostile_text.filter(bool))
def test_nothing_raw_reaches_the_terminal(text: str, user: str) -> None:
    shown = run_console(text, user)
    bad = sorted({f"U+{ord(ch):04X}" for ch in shown if harmful(ch)})
    assert not bad, bad
    assert "\x1b" not in shown and "\x9b" not in shown


def test_escape_sequences_become_visible() -> None:
    shown = run_console("hi \x1b[2J there\x07", "eve\x1b]0;x\x07")
    assert "␛[2J" in shown and "␇" in shown
    assert "hi ␛[2J there␇" in shown  # the echo and the answers quote it visibly
    assert "hybot → eve␛]0;x␇ › " in shown


def test_printable_keeps_newlines_tabs_and_joined_emoji() -> None:
    family = "👨\u200d👩\u200d👧"
    assert printable(f"a\tb\nc {family} 汉字 e\u0301") == f"a\tb\nc {family} 汉字 e\u0301"
    assert printable("\u202eevil") == "<U+202E>evil"
    assert printable("\ud800") == "<U+D800>"
    assert printable("\x00\x7f\x85") == "␀␡<U+0085>"


@given(st.text(), st.text())
def test_printable_is_per_character(a: str, b: str) -> None:
    assert printable(a + b) == printable(a) + printable(b)
