"""Context assembly: examples for each rule, and hypothesis properties over arbitrary histories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.config import ModelSpec
from core.context import (
    MESSAGE_OVERHEAD,
    ContextPlan,
    HistoryTurn,
    build_context,
    history_from_records,
    input_budget,
)
from core.errors import InputTooLong
from core.store.base import TurnRecord
from core.tokens import estimate_tokens, normalize_messages, valid_role_order
from core.types import ChatMessage


def turn(role: str, content: str, tokens: int | None = None) -> HistoryTurn:
    return HistoryTurn(role, content, estimate_tokens(content) if tokens is None else tokens)  # type: ignore[arg-type]


def spec(context: int = 1000, max_input: int = 1000, max_output: int = 100) -> ModelSpec:
    return ModelSpec("test-model", context, max_input, max_output)


def cost(text: str) -> int:
    return estimate_tokens(text) + MESSAGE_OVERHEAD


# --- input_budget --------------------------------------------------------------------------


def test_input_budget_is_min_of_input_cap_and_window_minus_output() -> None:
    assert input_budget(spec(context=1000, max_input=800), 100) == 800
    assert input_budget(spec(context=1000, max_input=950), 100) == 900
    assert input_budget(spec(context=100, max_input=100), 100) == 0
    # A window smaller than the output budget leaves nothing, never a negative budget.
    assert input_budget(spec(context=100, max_input=100), 150) == 0


# --- examples ------------------------------------------------------------------------------


def test_empty_history_no_persona_sends_only_the_user_text() -> None:
    plan = build_context(
        persona=None, history=[], user_text="hello", spec=spec(), max_output_tokens=100
    )
    assert plan == ContextPlan((ChatMessage("user", "hello"),), cost("hello"), 0)


def test_persona_becomes_the_leading_system_message() -> None:
    plan = build_context(
        persona="You are terse.",
        history=[turn("user", "hi"), turn("assistant", "hey")],
        user_text="how are you?",
        spec=spec(),
        max_output_tokens=100,
    )
    assert plan.messages == (
        ChatMessage("system", "You are terse."),
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "hey"),
        ChatMessage("user", "how are you?"),
    )
    assert plan.prompt_tokens == sum(cost(m.content) for m in plan.messages)
    assert plan.dropped_turns == 0


@pytest.mark.parametrize("persona", ["", "   \n\t", None])
def test_blank_persona_means_no_system_message(persona: str | None) -> None:
    plan = build_context(
        persona=persona, history=[], user_text="q", spec=spec(), max_output_tokens=10
    )
    assert [m.role for m in plan.messages] == ["user"]


def test_budget_keeps_the_newest_turns_and_drops_the_oldest() -> None:
    # Every history turn costs 10 + 4 tokens; the new text "new" costs 1 + 4.
    history = [
        turn("user", "u1", 10),
        turn("assistant", "a1", 10),
        turn("user", "u2", 10),
        turn("assistant", "a2", 10),
    ]
    budget = cost("new") + 2 * 14  # room for exactly two history messages
    plan = build_context(
        persona=None,
        history=history,
        user_text="new",
        spec=spec(context=budget + 50, max_input=budget),
        max_output_tokens=50,
    )
    assert [m.content for m in plan.messages] == ["u2", "a2", "new"]
    assert plan.prompt_tokens == budget
    assert plan.dropped_turns == 2


def test_odd_room_drops_the_orphaned_leading_assistant_turn() -> None:
    history = [turn("user", "u1", 10), turn("assistant", "a1", 10)]
    budget = cost("new") + 14  # room for a1 only, which cannot lead the body
    plan = build_context(
        persona=None,
        history=history,
        user_text="new",
        spec=spec(context=budget, max_input=budget),
        max_output_tokens=0,
    )
    assert plan.messages == (ChatMessage("user", "new"),)
    assert plan.prompt_tokens == cost("new")  # the dropped turn is not counted
    assert plan.dropped_turns == 2


def test_a_turn_that_does_not_fit_stops_the_walk_so_no_hole_appears() -> None:
    history = [
        turn("user", "old question", 5),
        turn("assistant", "old answer", 5),
        turn("user", "huge " * 1000),  # ~1667 tokens: does not fit in 900
        turn("assistant", "recent answer", 5),
        turn("user", "recent question", 5),
        turn("assistant", "latest answer", 5),
    ]
    plan = build_context(
        persona=None, history=history, user_text="now", spec=spec(), max_output_tokens=100
    )
    # Older small turns would fit on their own, but skipping the huge one would leave a hole.
    assert [m.content for m in plan.messages] == ["recent question", "latest answer", "now"]
    assert plan.dropped_turns == 4


def test_message_cap_counts_the_system_message() -> None:
    history = [turn("user" if i % 2 == 0 else "assistant", f"t{i}", 1) for i in range(10)]
    plan = build_context(
        persona="p",
        history=history,
        user_text="new",
        spec=spec(),
        max_output_tokens=10,
        max_messages=5,
    )
    # system + a body of 4 would start with an assistant turn, so the body shrinks to 3.
    assert [m.content for m in plan.messages] == ["p", "t8", "t9", "new"]
    assert len(plan.messages) <= 5
    assert plan.dropped_turns == 8


def test_default_message_cap_is_hunyuans_forty() -> None:
    history = [turn("user" if i % 2 == 0 else "assistant", f"t{i}", 1) for i in range(100)]
    plan = build_context(
        persona="p", history=history, user_text="new", spec=spec(), max_output_tokens=10
    )
    # system + 38 history turns (t62..t99, starting with a user turn) + the new text.
    assert len(plan.messages) == 40
    assert valid_role_order(plan.messages)
    assert plan.messages[1].content == "t62"
    assert plan.messages[-2].content == "t99"
    assert plan.dropped_turns == 62


def test_trailing_user_turn_in_history_is_merged_before_the_new_text() -> None:
    history = [
        turn("user", "first"),
        turn("assistant", "answer"),
        turn("user", "question whose answer failed"),
    ]
    plan = build_context(
        persona=None, history=history, user_text="retry", spec=spec(), max_output_tokens=10
    )
    assert plan.messages == (
        ChatMessage("user", "first"),
        ChatMessage("assistant", "answer"),
        ChatMessage("user", "question whose answer failed\n\nretry"),
    )
    assert valid_role_order(plan.messages)
    # Two messages' overhead plus one merge separator, not three overheads.
    expected = (
        cost("first")
        + cost("answer")
        + estimate_tokens("question whose answer failed")
        + 1
        + cost("retry")
    )
    assert plan.prompt_tokens == expected


def test_all_assistant_history_is_dropped() -> None:
    history = [turn("assistant", "a"), turn("assistant", "b")]
    plan = build_context(
        persona=None, history=history, user_text="q", spec=spec(), max_output_tokens=10
    )
    assert plan.messages == (ChatMessage("user", "q"),)
    assert plan.dropped_turns == 2


def test_whitespace_turns_are_skipped_and_their_neighbours_merged() -> None:
    history = [turn("user", "a"), turn("assistant", "  \n "), turn("user", "b")]
    plan = build_context(
        persona=None, history=history, user_text="c", spec=spec(), max_output_tokens=10
    )
    assert plan.messages == (ChatMessage("user", "a\n\nb\n\nc"),)
    assert plan.dropped_turns == 1


def test_input_too_long_reports_tokens_and_limit() -> None:
    s = spec(context=60, max_input=50, max_output=10)
    persona = "x" * 60  # 20 tokens
    text = "y" * 90  # 30 tokens
    with pytest.raises(InputTooLong) as info:
        build_context(persona=persona, history=[], user_text=text, spec=s, max_output_tokens=10)
    assert info.value.tokens == 20 + 4 + 30 + 4
    assert info.value.limit == 50


def test_input_exactly_at_the_budget_fits() -> None:
    text = "y" * 90  # 30 tokens + 4 overhead
    plan = build_context(
        persona=None,
        history=[turn("user", "zzz", 1)],
        user_text=text,
        spec=spec(context=34, max_input=34),
        max_output_tokens=0,
    )
    assert plan.messages == (ChatMessage("user", text),)
    assert plan.prompt_tokens == 34
    assert plan.dropped_turns == 1


def test_blank_user_text_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        build_context(persona=None, history=[], user_text=" \n", spec=spec(), max_output_tokens=1)


def test_max_messages_too_small_for_persona_and_text_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        build_context(
            persona="p", history=[], user_text="q", spec=spec(), max_output_tokens=1, max_messages=1
        )


def test_cjk_is_budgeted_by_the_1_8_rule() -> None:
    text = "你好世界" * 9  # 36 CJK chars → 20 tokens
    plan = build_context(
        persona=None, history=[], user_text=text, spec=spec(), max_output_tokens=10
    )
    assert plan.prompt_tokens == 20 + MESSAGE_OVERHEAD


class CountingHistory(Sequence[HistoryTurn]):
    """A long history that counts element reads (to prove the walk stops early)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.reads = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        if isinstance(index, slice):
            raise AssertionError("build_context must not copy the history")
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(index)
        self.reads += 1
        return turn("user" if index % 2 == 0 else "assistant", "m" * 30, 10)


def test_work_is_proportional_to_turns_used_not_history_length() -> None:
    history = CountingHistory(1_000_000)
    plan = build_context(
        persona=None,
        history=history,
        user_text="q",
        spec=spec(context=200, max_input=200),
        max_output_tokens=0,
    )
    assert len(plan.messages) > 1
    assert history.reads <= len(plan.messages) + 2
    assert plan.dropped_turns == 1_000_000 - (len(plan.messages) - 1)


# --- properties ----------------------------------------------------------------------------

_ALPHABET = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),  # ASCII
    st.sampled_from(list("你好世界中文字符测试。，！？「」")),  # CJK and CJK punctuation
    # Emoji and the code points that build sequences (skin tone, regional indicators, ZWJ).
    st.sampled_from(["😀", "🎉", "👍", "\U0001f3fd", "\U0001f1e8", "\U0001f1f3", "\u200d"]),
    st.sampled_from([" ", "\n", "\t", "\u3000"]),  # whitespace, incl. ideographic space
)
_TEXT = st.one_of(
    st.text(_ALPHABET, max_size=40),
    st.sampled_from(["", " ", "\n\n", "\u3000 \t"]),  # whitespace-only turns
    # Huge turns, built by repetition so generation stays fast.
    st.builds(lambda s, n: s * n, st.text(_ALPHABET, min_size=1, max_size=8), st.integers(50, 400)),
)
_USER_TEXT = _TEXT.filter(lambda s: s.strip() != "")
_ROLE = st.sampled_from(["user", "assistant"])


@st.composite
def _histories(draw: st.DrawFn, *, exact_tokens: bool) -> list[HistoryTurn]:
    shape = draw(st.sampled_from(["mixed", "alternating", "all-user", "all-assistant"]))
    n = draw(st.integers(0, 25))
    turns = []
    for i in range(n):
        if shape == "mixed":
            role = draw(_ROLE)
        elif shape == "alternating":
            role = "user" if i % 2 == 0 else "assistant"
        else:
            role = "user" if shape == "all-user" else "assistant"
        content = draw(_TEXT)
        tokens = estimate_tokens(content)
        if not exact_tokens:
            # A real count from the service differs from the estimate by a little.
            tokens = max(0, tokens + draw(st.integers(-3, 3)))
        turns.append(HistoryTurn(role, content, tokens))  # type: ignore[arg-type]
    return turns


_SPECS = st.builds(
    lambda ctx, inp: ModelSpec("tiny", ctx, inp, 0),
    st.integers(0, 600),
    st.integers(0, 600),
)
_PERSONA = st.one_of(st.none(), _TEXT)


def _mandatory(persona: str | None, user_text: str) -> int:
    system = cost(persona) if persona is not None and persona.strip() else 0
    return system + cost(user_text)


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(
    persona=_PERSONA,
    history=_histories(exact_tokens=False),
    user_text=_USER_TEXT,
    model=_SPECS,
    max_output=st.integers(0, 200),
    max_messages=st.integers(2, 40),
)
def test_plan_is_always_valid_and_within_limits(
    persona: str | None,
    history: list[HistoryTurn],
    user_text: str,
    model: ModelSpec,
    max_output: int,
    max_messages: int,
) -> None:
    budget = input_budget(model, max_output)
    too_long = _mandatory(persona, user_text) > budget
    try:
        plan = build_context(
            persona=persona,
            history=history,
            user_text=user_text,
            spec=model,
            max_output_tokens=max_output,
            max_messages=max_messages,
        )
    except InputTooLong as err:
        assert too_long, "InputTooLong although persona + input fit"
        assert err.tokens == _mandatory(persona, user_text)
        assert err.limit == budget
        return
    assert not too_long, "persona + input exceed the budget but no InputTooLong"
    assert valid_role_order(plan.messages)
    assert plan.prompt_tokens <= budget
    assert len(plan.messages) <= max_messages
    assert plan.messages[-1].role == "user"
    assert plan.messages[-1].content.endswith(user_text)
    assert 0 <= plan.dropped_turns <= len(history)
    if persona is not None and persona.strip():
        assert plan.messages[0] == ChatMessage("system", persona)
    else:
        assert plan.messages[0].role == "user"
    # Built in normal form directly: normalisation changes nothing.
    assert tuple(normalize_messages(plan.messages)) == plan.messages


@_SETTINGS
@given(
    persona=_PERSONA,
    history=_histories(exact_tokens=True),
    user_text=_USER_TEXT,
    model=_SPECS,
    max_messages=st.integers(2, 40),
)
def test_plan_is_a_normalised_contiguous_suffix_and_never_undercounts(
    persona: str | None,
    history: list[HistoryTurn],
    user_text: str,
    model: ModelSpec,
    max_messages: int,
) -> None:
    assume(_mandatory(persona, user_text) <= input_budget(model, 0))
    plan = build_context(
        persona=persona,
        history=history,
        user_text=user_text,
        spec=model,
        max_output_tokens=0,
        max_messages=max_messages,
    )
    # With token counts equal to the estimate, the plan's figure covers the estimate of what
    # is actually sent (per-message overhead included).
    assert plan.prompt_tokens >= sum(cost(m.content) for m in plan.messages)

    # The messages are exactly the normalisation of (persona, some newest run of history, new
    # text): no turn in the middle was skipped and nothing was reordered or rewritten.
    system = [ChatMessage("system", persona)] if persona is not None else []
    suffixes = [
        k
        for k in range(len(history) + 1)
        if tuple(
            normalize_messages(
                [
                    *system,
                    *(ChatMessage(h.role, h.content) for h in history[k:]),
                    ChatMessage("user", user_text),
                ]
            )
        )
        == plan.messages
    ]
    assert suffixes, "messages are not a normalised suffix of the history"
    # dropped_turns counts every history turn that is not in the plan: older ones, blank ones
    # and a leading assistant turn normalisation removed.
    for k in suffixes:
        body = [h for h in history[k:] if h.content.strip()]
        while body and body[0].role == "assistant":
            body.pop(0)
        assert plan.dropped_turns == len(history) - len(body)


@_SETTINGS
@given(
    persona=_PERSONA,
    history=_histories(exact_tokens=True),
    user_text=_USER_TEXT,
)
def test_everything_is_kept_when_the_window_is_roomy(
    persona: str | None, history: list[HistoryTurn], user_text: str
) -> None:
    roomy = ModelSpec("big", 10_000_000, 10_000_000, 0)
    plan = build_context(
        persona=persona,
        history=history,
        user_text=user_text,
        spec=roomy,
        max_output_tokens=0,
        max_messages=10_000,
    )
    system = [ChatMessage("system", persona)] if persona is not None else []
    everything = normalize_messages(
        [
            *system,
            *(ChatMessage(h.role, h.content) for h in history),
            ChatMessage("user", user_text),
        ]
    )
    assert plan.messages == tuple(everything)
    body = [h for h in history if h.content.strip()]
    leading_assistant = 0
    for h in body:
        if h.role == "user":
            break
        leading_assistant += 1
    blank = len(history) - len(body)
    assert plan.dropped_turns == blank + leading_assistant


@_SETTINGS
@given(
    persona=st.one_of(st.none(), st.just("be brief")),
    roles=st.lists(_ROLE, max_size=40),
    max_messages=st.integers(2, 12),
)
def test_message_cap_binds_when_tokens_do_not(
    persona: str | None, roles: list[str], max_messages: int
) -> None:
    history = [turn(role, f"{role[0]}{i}") for i, role in enumerate(roles)]
    plan = build_context(
        persona=persona,
        history=history,
        user_text="new",
        spec=ModelSpec("big", 100_000, 100_000, 0),
        max_output_tokens=0,
        max_messages=max_messages,
    )
    assert valid_role_order(plan.messages)
    assert len(plan.messages) <= max_messages
    uncapped = build_context(
        persona=persona,
        history=history,
        user_text="new",
        spec=ModelSpec("big", 100_000, 100_000, 0),
        max_output_tokens=0,
        max_messages=10_000,
    )
    if plan.messages != uncapped.messages:
        # The cap is used as fully as the role rules allow (an odd body length may cost one).
        assert len(plan.messages) >= max_messages - 1
        assert (
            uncapped.messages[-len(plan.messages) + (persona is not None) :]
            == (plan.messages[(persona is not None) :])
        )


def test_history_from_records_skips_system_turns_and_fills_missing_counts() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    records = [
        TurnRecord("system", "old persona", "u", 3, now),
        TurnRecord("user", "hello there", "u", 0, now),
        TurnRecord("assistant", "hi", "u", 17, now),
    ]
    assert history_from_records(records) == [
        HistoryTurn("user", "hello there", estimate_tokens("hello there")),
        HistoryTurn("assistant", "hi", 17),
    ]


@_SETTINGS
@given(
    persona=_PERSONA,
    history=_histories(exact_tokens=True),
    user_text=_USER_TEXT,
    model=_SPECS,
    where=st.lists(st.integers(0, 60), max_size=4),
)
def test_stored_records_with_system_turns_plan_like_their_history(
    persona: str | None,
    history: list[HistoryTurn],
    user_text: str,
    model: ModelSpec,
    where: list[int],
) -> None:
    """The pipeline passes the store's TurnRecords straight in: system turns among them are
    skipped, and the plan is the one their user/assistant turns give."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    records = [TurnRecord(h.role, h.content, "u", h.tokens, now) for h in history]
    for position in where:
        records.insert(
            min(position, len(records)), TurnRecord("system", "old persona", "u", 3, now)
        )
    kwargs = {"persona": persona, "user_text": user_text, "spec": model, "max_output_tokens": 0}
    try:
        expected = build_context(history=history, **kwargs)
    except InputTooLong:
        with pytest.raises(InputTooLong):
            build_context(history=records, **kwargs)
        return
    plan = build_context(history=records, **kwargs)
    assert plan.messages == expected.messages
    assert plan.prompt_tokens == expected.prompt_tokens
    assert plan.dropped_turns == expected.dropped_turns + len(where)
