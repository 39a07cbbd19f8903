"""Buttons under an answer: regenerate and new chat, and stale presses."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.conversation import FakeCore, fake_core

from core.store.base import TurnRecord
from core.types import Action, Final, Notice, Usage

KEY = "telegram/bot/c1//"


def final(events: list) -> Final:
    [answer] = [e for e in events if isinstance(e, Final)]
    return answer


async def press(c: FakeCore, kind: str, payload: str, **kw) -> list:
    return await c.send("", action=Action(kind, payload), **kw)  # type: ignore[arg-type]


async def stored(c: FakeCore) -> list[TurnRecord]:
    state = await c.store.get_conversation(KEY)
    return await c.store.recent_turns(KEY, state.epoch, limit=100)


async def test_an_answer_carries_regenerate_and_new_chat_buttons(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        for lang, labels in (("en", ["Regenerate", "New chat"]), ("zh", ["重新生成", "新对话"])):
            answer = final(await c.send("hi", language=lang, delivery=f"long-{'é' * 80}-{lang}"))
            assert [b.action for b in answer.buttons] == ["regenerate", "new_chat"]
            assert [b.label for b in answer.buttons] == labels
            for b in answer.buttons:
                assert b.payload.isascii() and len(b.payload.encode()) <= 64


async def test_regenerate_reasks_as_a_new_charged_turn_that_replaces_the_answer(
    tmp_path: Path,
) -> None:
    async with fake_core(tmp_path) as c:
        await c.send("first question")
        c.model.answer("first answer", usage=Usage(10, 5, 15))
        c.model.answer("second answer", usage=Usage(10, 7, 17))
        payload = final(await c.send("what is 2+2?")).buttons[0].payload
        before = await c.counter()
        events = await press(c, "regenerate", payload)
        again = final(events)
        assert again.text == "second answer"
        assert c.model.chat_calls[-1].last_user_text == "what is 2+2?"
        # The regenerated call saw the earlier exchange but not the replaced answer.
        assert "first answer" not in [m.content for m in c.model.chat_calls[-1].messages]
        assert await c.counter() == before + 17  # a new, separately charged turn
        turns = await stored(c)
        assert [t.content for t in turns] == [
            "first question", "echo: first question", "what is 2+2?", "second answer",
        ]  # fmt: skip
        # The replaced answer's buttons are now stale; the new answer's work.
        assert "earlier answer" in "".join(
            e.text for e in await press(c, "regenerate", payload) if isinstance(e, Notice)
        )
        assert final(await press(c, "regenerate", again.buttons[0].payload)).text.startswith(
            "echo:"
        )


async def test_new_chat_starts_a_new_epoch(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        payload = final(await c.send("remember me")).buttons[1].payload
        events = await press(c, "new_chat", payload)
        assert any(isinstance(e, Notice) for e in events)
        assert await stored(c) == []
        await c.send("fresh")
        assert [m.content for m in c.model.chat_calls[-1].messages] == ["fresh"]


@pytest.mark.parametrize("after", ["/reset", "newer answer", "garbage"])
@pytest.mark.parametrize("kind", ["regenerate", "new_chat"])
async def test_a_stale_press_says_so_and_changes_nothing(
    tmp_path: Path, after: str, kind: str
) -> None:
    async with fake_core(tmp_path) as c:
        payload = final(await c.send("question")).buttons[0].payload
        if after == "garbage":
            payload = "0:" + "f" * 16
        else:
            await c.send(after)
        turns, calls, counted = await stored(c), len(c.model.chat_calls), await c.counter()
        events = await press(c, kind, payload)
        assert [type(e) for e in events] == [Notice]
        assert "earlier answer" in events[0].text
        assert await stored(c) == turns
        assert len(c.model.chat_calls) == calls and await c.counter() == counted


async def test_a_press_is_claimed_like_any_delivery(tmp_path: Path) -> None:
    async with fake_core(tmp_path) as c:
        payload = final(await c.send("q")).buttons[0].payload
        assert final(await press(c, "regenerate", payload, delivery="press-1"))
        assert await press(c, "regenerate", payload, delivery="press-1") == []
        assert len(c.model.chat_calls) == 2
