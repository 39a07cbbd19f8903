"""The adapter contract (design §7.3): every rendering policy of ``BaseAdapter``, run through
``dispatch`` against a recording fake that implements only the primitives, with a scripted
async-generator conversation and virtual time (no real waiting)."""

from __future__ import annotations

import asyncio
import itertools
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fakes.adapter import FakeAdapter, FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import (
    MARK_FAILURE,
    MARK_NOTE,
    MARK_QUEUED,
    MARK_RUNNING,
    AdapterLimits,
    BaseAdapter,
    MessageRef,
    measure_units,
    plan_parts,
    split_text,
)
from core.errors import PlatformError, PlatformRetryAfter
from core.i18n import t
from core.types import (
    Action,
    Button,
    ConversationKey,
    Failure,
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
)

Script = Callable[[Inbound], AsyncIterator[ReplyEvent]]


def limits(**changes: Any) -> AdapterLimits:
    base: dict[str, Any] = {
        "max_text_units": 4096,
        "unit": "utf16",
        "min_edit_interval": 1.0,
        "caption_units": 1024,
    }
    return AdapterLimits(**(base | changes))


def inbound(text: str = "hi", *, action: Action | None = None, is_dm: bool = False) -> Inbound:
    return Inbound(
        platform="fake",
        delivery_id=str(uuid.uuid4()),
        key=ConversationKey("fake", "w", "chat-1"),
        user_id="u1",
        text=text,
        message_id="7",
        action=action,
        is_dm=is_dm,
    )


class Core:
    """A scripted conversation: records how many events were pulled and how the stream ended."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls = 0
        self.pulled = 0
        self.closed = 0
        self.ended_by = ""

    def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        self.calls += 1
        return self._run(inbound)

    async def _run(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        try:
            async for event in self.script(inbound):
                self.pulled += 1
                yield event
            self.ended_by = "end"
        except GeneratorExit:
            self.ended_by = "close"
            raise
        except asyncio.CancelledError:
            self.ended_by = "cancel"
            raise
        finally:
            self.closed += 1


def events(*items: ReplyEvent) -> Script:
    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        for item in items:
            yield item

    return script


def streamed(text: str, step: int) -> list[ReplyEvent]:
    return [Partial(text[:i], text[i - step : i]) for i in range(step, len(text), step)]


def make(script: Script, **kwargs: Any) -> tuple[FakeAdapter, Core]:
    core = Core(script)
    return FakeAdapter(conversation=core, **kwargs), core


LONG = "\n\n".join(
    " ".join(f"w{p}{i}" for i in range(12)) for p in range(6)
)  # six paragraphs of ~45 chars


# --- the reply-stream rule ------------------------------------------------------------------


async def test_next_event_is_pulled_only_after_the_previous_was_rendered() -> None:
    seen: list[list[str]] = []
    fake: FakeAdapter

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        yield Notice("one")
        seen.append([c.text for c in fake.ok_calls("send_text")])
        yield Notice("two")
        seen.append([c.text for c in fake.ok_calls("send_text")])

    fake, core = make(script)
    assert await fake.dispatch(inbound()) is True
    assert seen == [["one"], ["one", "two"]]
    assert core.ended_by == "end" and core.closed == 1


async def test_an_undeliverable_event_closes_the_stream_without_pulling_more() -> None:
    fake, core = make(events(Notice("one"), Notice("two"), Final("three")))
    fake.fail("send_text", 1, PlatformError("chat not found"))
    assert await fake.dispatch(inbound()) is True  # handled by the core; logged, not raised
    assert core.pulled == 1
    assert core.ended_by == "close" and core.closed == 1
    assert fake.visible() == []


async def test_a_bug_in_a_primitive_propagates_after_closing_the_stream() -> None:
    fake, core = make(events(Notice("one"), Notice("two")))
    fake.fail("send_text", 1, RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        await fake.dispatch(inbound())
    assert core.pulled == 1 and core.ended_by == "close"


async def test_a_bug_in_a_background_flush_or_typing_is_not_swallowed() -> None:
    fake: FakeAdapter

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        yield Partial("a", "a")
        yield Partial("ab", "b")  # coalesced: shown by the flusher task
        await fake.wait_for(lambda f: any(not c.ok for c in f.calls))
        yield Partial("abc", "c")
        yield Final("never")

    fake, core = make(script)
    fake.fail("edit_text", 1, RuntimeError("bug in edit"))
    with pytest.raises(RuntimeError, match="bug in edit"):
        await fake.dispatch(inbound())
    assert core.ended_by == "close" and core.pulled == 3

    async def typing_script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        yield Typing()
        await fake.wait_for(lambda f: any(not c.ok for c in f.calls))
        yield Final("x")

    fake, core = make(typing_script, limits=limits(typing_interval=4.0))
    fake.fail("send_typing", 2, RuntimeError("bug in typing"))
    with pytest.raises(RuntimeError, match="bug in typing"):
        await fake.dispatch(inbound())


def test_policy_methods_are_final() -> None:
    for name in ("dispatch", "render", "drain"):
        with pytest.raises(TypeError, match=name):
            type("Sneaky", (FakeAdapter,), {name: lambda self: None})


# --- coalescing -----------------------------------------------------------------------------


async def test_many_partials_become_few_spaced_edits_and_the_newest_text_wins() -> None:
    clock = FakeClock(auto=False)  # time moves only as the model streams
    text = ""
    pieces = [f"w{i} " for i in range(200)]

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        nonlocal text
        for piece in pieces:
            text += piece
            clock.advance(0.05)  # ten seconds of streaming
            yield Partial(text, piece)
            await asyncio.sleep(0)  # the model's next chunk arrives later: the flusher may run
        clock.auto = True  # the Final may wait out the interval
        yield Final(text)

    fake, _ = make(script, clock=clock, limits=limits(min_edit_interval=1.0))
    await fake.dispatch(inbound())
    changes = fake.ok_calls("send_text", "edit_text")
    assert len(fake.ok_calls("send_text")) == 1
    times = [c.time for c in changes]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))
    assert 3 <= len(changes) <= clock.now / 1.0 + 2
    assert len(changes) < len(pieces) / 5
    lengths = [len(c.text) for c in changes]
    assert lengths == sorted(set(lengths))  # every change shows newer text than the last
    assert all(text.startswith(c.text) for c in changes)
    assert fake.visible() == [text]


async def test_coalesced_partials_show_only_the_newest_text() -> None:
    fake: FakeAdapter

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        for s in ("a", "ab", "abc", "abcd", "abcde"):
            yield Partial(s, s[-1])
        await fake.wait_for(lambda f: len(f.ok_calls("edit_text")) >= 1)
        yield Final("abcdef")

    fake, _ = make(script)
    await fake.dispatch(inbound())
    shown = [(c.op, c.text, c.time) for c in fake.ok_calls()]
    assert shown == [
        ("send_text", "a", 0.0),
        ("edit_text", "abcde", 1.0),
        ("edit_text", "abcdef", 2.0),
    ]


async def test_stream_false_shows_only_the_final() -> None:
    fake, _ = make(
        events(Typing(), *streamed("hello world", 2), Final("hello world")),
        limits=limits(stream=False, typing_interval=0.0),
    )
    await fake.dispatch(inbound())
    assert [(c.op, c.text) for c in fake.ok_calls("send_text", "edit_text")] == [
        ("send_text", "hello world")
    ]


async def test_final_shows_the_note_under_the_text() -> None:
    fake, _ = make(events(Partial("answer", "answer"), Final("answer", note="AI made this")))
    await fake.dispatch(inbound())
    assert fake.visible() == [f"answer\n\n{MARK_NOTE}AI made this"]


# --- splitting ------------------------------------------------------------------------------


def test_utf16_counts_astral_characters_twice_and_chars_once() -> None:
    text = "😀" * 40  # 40 characters, 80 UTF-16 units
    assert measure_units(text, "utf16") == 80 and measure_units(text, "chars") == 40
    assert split_text(text, 64, lambda s: measure_units(s, "chars")) == [text]
    parts = split_text(text, 64, lambda s: measure_units(s, "utf16"))
    assert len(parts) == 2 and "".join(parts) == text
    assert all(measure_units(p, "utf16") <= 64 for p in parts)


def test_cjk_and_emoji_sequences_are_not_cut_inside_a_character() -> None:
    family = "👨\u200d👩\u200d👧"
    text = ("汉字" * 20 + family + "e\u0301" + "🇨🇳") * 5
    parts = plan_parts(text, 64, lambda s: measure_units(s, "utf16"))
    assert "".join(p.body for p in parts) == text
    for part in parts[1:]:
        assert not unicodedata.combining(part.body[0]) and part.body[0] != "\u200d"
        assert not part.body.startswith("🇳")  # a flag is a pair of regional indicators
    for part in parts:
        assert not part.body.endswith("\u200d")


def test_paragraphs_then_lines_are_preferred_to_hard_cuts() -> None:
    para = ("a" * 30 + "\n") * 2  # 62 chars, two lines
    text = para + "\n" + para
    parts = split_text(text, 64, len)
    assert parts == [para + "\n", para]
    lines = "x" * 40 + "\n" + "y" * 40 + "\n"
    assert split_text(lines, 64, len) == ["x" * 40 + "\n", "y" * 40 + "\n"]
    hard = "z" * 150
    assert [len(p) for p in split_text(hard, 64, len)] == [64, 64, 22]


def test_no_message_is_only_whitespace() -> None:
    text = "x" * 63 + "\n\n" + " " * 70 + "\n"
    parts = split_text(text, 64, len)
    assert parts and all(p.strip() for p in parts)
    assert parts[0] == "x" * 63 + "\n"
    assert split_text("", 64, len) == [""]


def test_a_cut_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})" for i in range(20))
    text = f"Here:\n\n```python\n{code}\n```\nDone."
    parts = split_text(text, 64, len)
    assert len(parts) > 2
    assert parts[0].endswith("```") and parts[1].startswith("```python\n")
    for part in parts:
        assert len(part) <= 64
        assert fence_state(part) is None, part
    assert parts[-1].endswith("```\nDone.")


def fence_state(text: str) -> str | None:
    """An independent reading of ``` fences: the open fence's ticks at the end, or None."""
    ticks: str | None = None
    for line in text.split("\n"):
        m = re.fullmatch(r" {0,3}(`{3,})(.*)", line)
        if not m:
            continue
        if ticks is None and "`" not in m.group(2):
            ticks = m.group(1)
        elif ticks is not None and not m.group(2).strip() and len(m.group(1)) >= len(ticks):
            ticks = None
    return ticks


TOKENS = st.one_of(
    st.sampled_from(
        [
            " ",
            "\n",
            "\n\n",
            "\n```python\n",
            "\n```\n",
            "\n````\n",
            "汉字",
            "😀",
            "👍🏽",
            "👨\u200d👩\u200d👧",
            "🇨🇳",
            "e\u0301",
            "\u0915\u094d\u0937",
            "\ud83d\ude00",  # a surrogate pair as two code points (decoded with surrogatepass)
            "\t",
        ]
    ),
    st.text(alphabet="abcdefghij", min_size=1, max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(
    tokens=st.lists(TOKENS, max_size=120),
    limit=st.integers(min_value=64, max_value=200),
    unit=st.sampled_from(["utf16", "chars"]),
)
def test_split_property(tokens: list[str], limit: int, unit: Any) -> None:
    text = "".join(tokens)

    def measure(s: str) -> int:
        return measure_units(s, unit)

    parts = plan_parts(text, limit, measure)
    assert "".join(p.body for p in parts) == text
    for i, part in enumerate(parts):
        assert part.body
        assert measure(part.text) <= limit
        assert part.reopen == "" or re.fullmatch(r"`{3,}[^`\n]*\n", part.reopen)
        assert part.close == "" or re.fullmatch(r"\n?`{3,}", part.close)
        if i < len(parts) - 1:
            assert fence_state(part.text) is None, part
        if i > 0:
            first = part.body[0]
            assert not unicodedata.combining(first) and first not in "\u200d\U0001f3fd\ude00"
    if parts:
        assert (fence_state(parts[-1].text) is None) == (fence_state(text) is None)
        room = (limit - limit // 4 - 9) / 2 - 8
        assert len(parts) <= 1 + measure(text) / room


async def test_a_streamed_answer_that_outgrows_a_message_continues_in_a_new_one() -> None:
    fake, _ = make(
        events(*streamed(LONG, 7), Final(LONG)),
        limits=limits(max_text_units=64, unit="chars", min_edit_interval=0.0),
    )
    await fake.dispatch(inbound())
    shown = fake.visible()
    assert len(shown) > 3 and "".join(shown) == LONG
    assert all(len(s) <= 64 for s in shown)
    # A part is frozen once the next message exists: no edit of it after a later send.
    created = {c.ref: c.seq for c in fake.ok_calls("send_text")}
    for edit in fake.ok_calls("edit_text"):
        later = [seq for ref, seq in created.items() if seq > created[edit.ref]]
        assert all(seq > edit.seq for seq in later), edit


async def test_parts_fit_the_platforms_own_measure() -> None:
    def formatted(text: str) -> int:  # e.g. MarkdownV2: every special character is escaped
        return len(text) + sum(1 for ch in text if ch in "_*[].!-")

    text = "\n".join(f"- item_{i}. *done*!" for i in range(30))
    fake, _ = make(
        events(Final(text)), limits=limits(max_text_units=64, unit="chars"), measure=formatted
    )
    await fake.dispatch(inbound())
    shown = fake.visible()
    assert len(shown) > 1 and "".join(shown) == text
    assert all(formatted(s) <= 64 for s in shown)
    assert len(shown) > len(split_text(text, 64, len))  # the formatted size, not the raw one
    assert all(s.endswith("\n") for s in shown[:-1])  # at line boundaries


async def test_final_shorter_than_the_stream_deletes_the_surplus_parts() -> None:
    fake, _ = make(
        events(*streamed(LONG, 9), Final("In short: no.")),
        limits=limits(max_text_units=64, unit="chars", min_edit_interval=0.0),
    )
    await fake.dispatch(inbound())
    sent = fake.ok_calls("send_text")
    assert len(sent) > 2
    assert fake.visible() == ["In short: no."]
    assert {c.ref for c in fake.ok_calls("delete")} == {c.ref for c in sent[1:]}


async def test_final_buttons_go_on_the_last_part_only() -> None:
    button = Button("regenerate", "↻", "p1")
    fake, _ = make(
        events(Final(LONG, buttons=(button,))), limits=limits(max_text_units=64, unit="chars")
    )
    await fake.dispatch(inbound())
    buttons = fake.buttons_of()
    assert len(buttons) > 2
    assert buttons[-1] == (button,) and all(b == () for b in buttons[:-1])


async def test_final_buttons_are_added_to_a_streamed_message() -> None:
    button = Button("new_chat", "New chat", "p2")
    fake, _ = make(events(Partial("done", "done"), Final("done", buttons=(button,))))
    await fake.dispatch(inbound())
    assert [c.op for c in fake.ok_calls()] == ["send_text", "edit_text"]
    assert fake.buttons_of() == [(button,)]


# --- Final always complete ------------------------------------------------------------------


async def test_final_is_complete_although_streaming_edits_failed() -> None:
    fake, _ = make(
        events(*streamed("abcdefgh", 1), Final("abcdefgh!")),
        limits=limits(min_edit_interval=0.0),
    )
    fake.fail("edit_text", 1, PlatformError("flood"), times=5)
    await fake.dispatch(inbound())
    assert [c.ok for c in fake.calls if c.op == "edit_text"][:5] == [False] * 5
    assert fake.visible() == ["abcdefgh!"]


async def test_final_is_sent_anew_in_order_when_its_edits_fail() -> None:
    fake, core = make(
        events(*streamed(LONG, 9), Final(LONG), Notice("after")),
        limits=limits(max_text_units=64, unit="chars", min_edit_interval=0.0),
    )
    # Every edit fails from the start (the messages were deleted by a moderator, say).
    fake.fail("edit_text", 1, PlatformError("message to edit not found"), times=10_000)
    await fake.dispatch(inbound())
    shown = fake.visible()
    assert "".join(shown[:-1]) == LONG and shown[-1] == "after"
    assert all(len(s) <= 64 for s in shown)
    assert core.ended_by == "end"


# --- retraction -----------------------------------------------------------------------------


async def test_retract_replaces_every_part_shown() -> None:
    fake, _ = make(
        events(*streamed(LONG, 9), Retract("withdrawn")),
        limits=limits(max_text_units=64, unit="chars", min_edit_interval=0.0),
    )
    await fake.dispatch(inbound())
    parts = fake.ok_calls("send_text")
    assert len(parts) > 2
    assert fake.visible() == ["withdrawn"]
    edits = [c for c in fake.ok_calls("edit_text") if c.text == "withdrawn"]
    assert [c.ref for c in edits] == [parts[0].ref]
    assert {c.ref for c in fake.ok_calls("delete")} == {c.ref for c in parts[1:]}


async def test_retract_after_the_final_withdraws_that_answer() -> None:
    fake, _ = make(
        events(Final(LONG), Retract("withdrawn")),
        limits=limits(max_text_units=64, unit="chars"),
    )
    await fake.dispatch(inbound())
    assert fake.visible() == ["withdrawn"]


async def test_retract_with_nothing_shown_sends_the_notice() -> None:
    fake, _ = make(events(Typing(), Retract("withdrawn")), limits=limits(typing_interval=0.0))
    await fake.dispatch(inbound())
    assert fake.visible() == ["withdrawn"]


# --- notices and failures -------------------------------------------------------------------


async def test_notice_passes_the_private_flag() -> None:
    fake, _ = make(events(Notice("for you", private=True), Notice("for all")))
    await fake.dispatch(inbound())
    assert [(c.text, c.private) for c in fake.ok_calls("send_text")] == [
        ("for you", True),
        ("for all", False),
    ]


async def test_failure_after_streamed_text_edits_that_message() -> None:
    fake, _ = make(events(Partial("half an ans", "x"), Failure("It broke.")))
    await fake.dispatch(inbound())
    assert [c.op for c in fake.ok_calls()] == ["send_text", "edit_text"]
    assert fake.visible() == [f"half an ans\n\n{MARK_FAILURE}It broke."]


async def test_failure_without_text_is_sent() -> None:
    fake, _ = make(events(Typing(), Failure("It broke.")), limits=limits(typing_interval=0.0))
    await fake.dispatch(inbound())
    assert fake.visible() == [f"{MARK_FAILURE}It broke."]
    assert [c.private for c in fake.ok_calls("send_text")] == [False]


async def test_failure_without_text_is_private_where_the_platform_says_so() -> None:
    # Slack: an error is the asker's business (ephemeral); once answer text was shown, the
    # failure still ends that public message.
    private = limits(typing_interval=0.0, private_failures=True)
    fake, _ = make(events(Typing(), Failure("It broke.")), limits=private)
    await fake.dispatch(inbound())
    assert [(c.text, c.private) for c in fake.ok_calls("send_text")] == [
        (f"{MARK_FAILURE}It broke.", True)
    ]
    fake, _ = make(events(Partial("half", "half"), Failure("It broke.")), limits=private)
    await fake.dispatch(inbound())
    assert [c.private for c in fake.ok_calls("send_text")] == [False]


# --- typing ---------------------------------------------------------------------------------


async def test_typing_is_renewed_until_the_first_text() -> None:
    fake: FakeAdapter

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        yield Typing()
        await fake.wait_for(lambda f: len(f.ok_calls("send_typing")) >= 3)
        yield Partial("hello", "hello")
        yield Final("hello")

    fake, _ = make(script, limits=limits(typing_interval=4.0))
    await fake.dispatch(inbound())
    typing = fake.ok_calls("send_typing")
    first_text = fake.ok_calls("send_text")[0]
    assert len(typing) >= 3
    assert all(c.action == "typing" for c in typing)
    assert all(b.time - a.time >= 4.0 for a, b in itertools.pairwise(typing))
    assert all(c.seq < first_text.seq for c in typing)


# --- 429 ------------------------------------------------------------------------------------


async def test_retry_after_waits_and_retries_the_same_operation_in_order() -> None:
    script = events(*streamed("one two three four", 3), Final("one two three four."))

    calm, _ = make(script, limits=limits(min_edit_interval=0.0))
    await calm.dispatch(inbound())
    busy, _ = make(script, limits=limits(min_edit_interval=0.0))
    busy.fail("edit_text", 2, PlatformRetryAfter(retry_after=3.0))
    await busy.dispatch(inbound())

    def seen(fake: FakeAdapter) -> list[tuple[str, str]]:
        return [(c.op, c.text) for c in fake.ok_calls()]

    assert seen(busy) == seen(calm)
    failed = next(i for i, c in enumerate(busy.calls) if not c.ok)
    assert busy.calls[failed + 1].text == busy.calls[failed].text  # the same edit, next
    assert busy.calls[failed + 1].time - busy.calls[failed].time == 3.0
    assert busy.clock.sleeps == [3.0]


async def test_retry_after_is_bounded() -> None:
    fake, core = make(events(Final("x"), Notice("never pulled")), retry_attempts=3)
    fake.fail("send_text", 1, PlatformRetryAfter(retry_after=2.0), times=100)
    await fake.dispatch(inbound())
    assert len([c for c in fake.calls if c.op == "send_text"]) == 3
    assert fake.clock.sleeps == [2.0, 2.0]
    assert core.pulled == 1 and core.ended_by == "close"

    fake, _ = make(events(Final("x")), max_retry_after=60.0)
    fake.fail("send_text", 1, PlatformRetryAfter(retry_after=3600.0))
    await fake.dispatch(inbound())
    assert fake.clock.sleeps == []  # an hour is not waited for
    assert len(fake.calls) == 1


# --- images ---------------------------------------------------------------------------------


async def test_image_status_is_edited_in_place_then_the_image_sent_then_the_status_deleted() -> (
    None
):
    caption = "Prompt: a cat\nAI-generated image"
    fake, _ = make(
        events(
            ImageQueued(2, language="zh"),
            ImageQueued(1, language="zh"),
            ImageRunning(language="zh"),
            ImageReady(b"png", "image/png", caption, language="zh"),
        )
    )
    await fake.dispatch(inbound())
    calls = [c for c in fake.ok_calls() if c.op != "send_typing"]
    assert [c.op for c in calls] == ["send_text", "edit_text", "edit_text", "send_image", "delete"]
    status = calls[0].ref
    assert calls[0].text == MARK_QUEUED + t("image.queued", "zh", position=2)
    assert calls[1].text == MARK_QUEUED + t("image.queued", "zh", position=1)
    assert calls[2].text == MARK_RUNNING + t("image.running", "zh")
    assert calls[1].ref == calls[2].ref == calls[4].ref == status
    assert calls[3].caption == caption
    assert fake.visible() == [f"[image {caption}]"]
    uploads = fake.ok_calls("send_typing")
    assert uploads and all(c.action == "upload_photo" for c in uploads)
    assert all(c.seq < calls[3].seq for c in uploads)


async def test_caption_is_cut_to_the_limit_keeping_the_mark() -> None:
    caption = "Prompt: " + "很长的提示词" * 40 + "\nAI-generated image"
    fake, _ = make(
        events(ImageReady(b"png", "image/png", caption)), limits=limits(caption_units=64)
    )
    await fake.dispatch(inbound())
    (sent,) = fake.ok_calls("send_image")
    assert measure_units(sent.caption, "utf16") <= 64
    assert sent.caption.endswith("…\nAI-generated image")
    assert sent.caption.startswith("Prompt: 很长")


async def test_an_image_that_cannot_be_sent_is_reported_and_closes_the_stream() -> None:
    fake, core = make(events(ImageRunning(), ImageReady(b"png", "image/png", "c"), Notice("never")))
    fake.fail("send_image", 1, PlatformError("file too large"))
    await fake.dispatch(inbound())
    assert fake.visible() == [MARK_FAILURE + t("adapter.image_undelivered", "en")]
    assert core.pulled == 2 and core.ended_by == "close"


# --- regenerate -----------------------------------------------------------------------------


async def test_regenerate_edits_the_pressed_message() -> None:
    pressed = MessageRef("chat-1", "55")
    fake, _ = make(
        events(Typing(), Partial("new", "new"), Final("new answer")),
        pressed=pressed,
        limits=limits(typing_interval=0.0),
    )
    fake.show(pressed, "old answer")
    await fake.dispatch(inbound("", action=Action("regenerate", "p")))
    texts = fake.ok_calls("send_text", "edit_text")
    assert texts and all(c.op == "edit_text" and c.ref == pressed for c in texts)
    assert fake.visible() == ["new answer"]

    other, _ = make(events(Final("plain")), pressed=pressed)
    await other.dispatch(inbound("hello"))
    assert [c.op for c in other.ok_calls()] == ["send_text"]


# --- drafts ---------------------------------------------------------------------------------


def drafting(**changes: Any) -> AdapterLimits:
    base: dict[str, Any] = {"drafts": True, "draft_interval": 0.5, "typing_interval": 0.0}
    return limits(**(base | changes))


def dm() -> Inbound:
    return inbound(is_dm=True)


async def test_drafts_stream_a_dm_answer_and_the_final_is_sent_once() -> None:
    clock = FakeClock(auto=False)
    text = ""
    pieces = [f"w{i} " for i in range(100)]
    button = Button("regenerate", "↻", "p1")

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        nonlocal text
        for piece in pieces:
            text += piece
            clock.advance(0.05)  # five seconds of streaming
            yield Partial(text, piece)
            await asyncio.sleep(0)
        clock.auto = True
        yield Final(text, buttons=(button,))

    fake, _ = make(script, clock=clock, limits=drafting())
    await fake.dispatch(dm())
    drafts = fake.ok_calls("send_draft")
    assert [c.op for c in fake.ok_calls()] == ["send_draft"] * len(drafts) + ["send_text"]
    assert 5 <= len(drafts) <= clock.now / 0.5 + 2
    assert len({c.draft_id for c in drafts}) == 1 and drafts[0].draft_id != 0  # one draft
    times = [c.time for c in drafts]
    assert all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(times))
    lengths = [len(c.text) for c in drafts]
    assert lengths == sorted(set(lengths)) and all(text.startswith(c.text) for c in drafts)
    final = fake.ok_calls("send_text")[0]
    assert final.time == drafts[-1].time or final.time - drafts[-1].time < 0.5  # not held back
    assert fake.visible() == [text] and fake.buttons_of() == [(button,)]


async def test_drafts_final_is_one_send_per_part_with_buttons_on_the_last() -> None:
    button = Button("new_chat", "New chat", "p2")
    fake, _ = make(
        events(*streamed(LONG, 7), Final(LONG, buttons=(button,))),
        limits=drafting(max_text_units=64, unit="chars", draft_interval=0.0),
    )
    await fake.dispatch(dm())
    sent = fake.ok_calls("send_text")
    assert fake.ok_calls("edit_text", "delete") == []
    assert [c.text for c in sent] == split_text(LONG, 64, len)  # each part sent once
    assert "".join(fake.visible()) == LONG
    assert fake.buttons_of()[-1] == (button,) and all(b == () for b in fake.buttons_of()[:-1])
    # The draft shows the part being streamed; a new part gets a draft id of its own.
    drafts = fake.ok_calls("send_draft")
    assert all(len(c.text) <= 64 for c in drafts)
    assert len({c.draft_id for c in drafts}) > 1


async def test_drafts_only_in_dms_and_never_for_a_regenerate() -> None:
    script = events(*streamed("one two three four", 3), Final("one two three four."))
    group, _ = make(script, limits=drafting(min_edit_interval=0.0))
    await group.dispatch(inbound())  # not a DM
    assert group.ok_calls("send_draft") == []
    assert len(group.ok_calls("send_text")) == 1 and group.ok_calls("edit_text")

    pressed = MessageRef("chat-1", "55")
    regen, _ = make(script, limits=drafting(), pressed=pressed)
    regen.show(pressed, "old answer")
    await regen.dispatch(inbound("", action=Action("regenerate", "p"), is_dm=True))
    assert regen.ok_calls("send_draft") == [] and regen.ok_calls("send_text") == []
    assert regen.visible() == ["one two three four."]

    plain, _ = make(script, limits=limits(min_edit_interval=0.0))  # no drafts declared
    await plain.dispatch(dm())
    assert plain.ok_calls("send_draft") == [] and plain.ok_calls("edit_text")


async def test_drafts_retract_before_any_message_sends_the_notice() -> None:
    fake, _ = make(
        events(Partial("bad", "bad"), Partial("bad words", " words"), Retract("withdrawn")),
        limits=drafting(),
    )
    await fake.dispatch(dm())
    assert fake.ok_calls("send_draft")
    assert [(c.op, c.text) for c in fake.ok_calls("send_text", "edit_text", "delete")] == [
        ("send_text", "withdrawn")
    ]
    assert fake.visible() == ["withdrawn"]


async def test_drafts_failure_sends_the_drafted_text_with_the_sentence() -> None:
    fake, _ = make(events(Partial("half an ans", "x"), Failure("It broke.")), limits=drafting())
    await fake.dispatch(dm())
    assert [c.op for c in fake.ok_calls()] == ["send_draft", "send_text"]
    assert fake.visible() == [f"half an ans\n\n{MARK_FAILURE}It broke."]

    fake, _ = make(events(Typing(), Failure("It broke.")), limits=drafting())
    await fake.dispatch(dm())
    assert [c.op for c in fake.ok_calls() if c.op != "send_typing"] == ["send_text"]
    assert fake.visible() == [f"{MARK_FAILURE}It broke."]


async def test_a_failing_draft_falls_back_to_edits_and_drafts_stay_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = events(*streamed("one two three four", 3), Final("one two three four."))
    fake, _ = make(script, limits=drafting(min_edit_interval=0.0))
    fake.fail("send_draft", 1, PlatformError("telegram sendMessageDraft: Not Found"))
    with caplog.at_level("WARNING", logger="adapters.base"):
        await fake.dispatch(dm())
        assert [c.ok for c in fake.calls if c.op == "send_draft"] == [False]
        ops = [c.op for c in fake.ok_calls()]
        assert ops[0] == "send_text" and "edit_text" in ops  # this answer: send, then edit
        assert fake.visible() == ["one two three four."]
        # the text the draft could not show is sent at once, in the same flush
        assert (fake.calls[1].op, fake.calls[1].text) == ("send_text", fake.calls[0].text)

        before = len(fake.calls)
        await fake.dispatch(dm())  # the next answer does not try drafts again
        later = fake.calls[before:]
        assert later and all(c.op != "send_draft" for c in later)
        assert fake.visible()[-1] == "one two three four."
    assert sum("drafts are off" in r.getMessage() for r in caplog.records) == 1


async def test_retry_after_on_a_draft_skips_it_and_never_delays_the_final() -> None:
    fake: FakeAdapter

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        yield Partial("one", "one")
        await fake.wait_for(lambda f: any(not c.ok for c in f.calls))
        yield Partial("one two", " two")
        yield Partial("one two three", " three")
        yield Final("one two three four")

    fake, core = make(script, limits=drafting())
    fake.fail("send_draft", 1, PlatformRetryAfter(retry_after=30.0))
    await fake.dispatch(dm())
    assert [c.ok for c in fake.calls if c.op == "send_draft"] == [False]  # skipped, not retried
    final = fake.ok_calls("send_text")
    assert [c.text for c in final] == ["one two three four"]
    assert final[0].time < 30.0 and all(s < 30.0 for s in fake.clock.sleeps)
    assert fake.visible() == ["one two three four"] and core.ended_by == "end"


async def test_typing_is_kept_until_the_first_draft() -> None:
    fake: FakeAdapter

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        yield Typing()
        await fake.wait_for(lambda f: len(f.ok_calls("send_typing")) >= 2)
        yield Partial("hel", "hel")  # the draft is refused: typing goes on
        await fake.wait_for(lambda f: len(f.ok_calls("send_typing")) >= 3)
        yield Partial("hello", "lo")
        yield Partial("hello wor", " wor")
        await fake.wait_for(lambda f: len(f.ok_calls("send_draft")) >= 2)
        yield Final("hello world")

    fake, _ = make(script, limits=drafting(typing_interval=4.0, draft_interval=0.0))
    fake.fail("send_draft", 1, PlatformRetryAfter(retry_after=1.0))
    await fake.dispatch(dm())
    first = fake.ok_calls("send_draft")[0]
    typing = fake.ok_calls("send_typing")
    assert len(typing) >= 3 and all(c.seq < first.seq for c in typing)
    assert fake.visible() == ["hello world"]


# --- drain ----------------------------------------------------------------------------------


async def test_drain_refuses_new_dispatches_and_waits_for_running_ones() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        entered.set()
        await gate.wait()
        yield Final("done")

    clock = FakeClock(auto=False)
    fake, core = make(script, clock=clock)
    running = asyncio.create_task(fake.dispatch(inbound()))
    await entered.wait()
    draining = asyncio.create_task(fake.drain(timeout=5.0))
    await clock.wait_sleeping(1)  # drain started: its timeout is running
    assert fake.draining
    assert await fake.dispatch(inbound("late")) is False
    assert core.calls == 1  # the core never saw the late delivery
    assert not draining.done()
    gate.set()
    assert await running is True
    await draining
    assert fake.visible() == ["done"] and core.ended_by == "end"


async def test_drain_cancels_dispatches_past_the_timeout_and_the_core_cleans_up() -> None:
    entered = asyncio.Event()

    async def script(_: Inbound) -> AsyncIterator[ReplyEvent]:
        entered.set()
        await asyncio.Event().wait()  # a model that never answers
        yield Final("never")

    clock = FakeClock(auto=False)
    fake, core = make(script, clock=clock)
    running = asyncio.create_task(fake.dispatch(inbound()))
    await entered.wait()
    draining = asyncio.create_task(fake.drain(timeout=5.0))
    await clock.wait_sleeping(1)  # drain's timeout is running
    clock.advance(5.0)
    await draining
    assert core.ended_by == "cancel" and core.closed == 1
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_leaving_the_context_drains() -> None:
    fake, core = make(events(Final("bye")))
    async with fake:
        assert fake.started
        assert await fake.dispatch(inbound()) is True
    assert fake.stopped and fake.draining
    assert await fake.dispatch(inbound()) is False
    assert core.calls == 1


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        limits(max_text_units=10)
    with pytest.raises(ValueError):
        limits(min_edit_interval=float("nan"))
    with pytest.raises(ValueError):
        limits(unit="bytes")
    assert issubclass(FakeAdapter, BaseAdapter)
