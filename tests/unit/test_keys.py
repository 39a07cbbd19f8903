"""Conversation scopes (core.keys)."""

from __future__ import annotations

import pytest

from core.keys import conversation_key


def key(**kw: str) -> str:
    base = {"platform": "telegram", "workspace": "bot1", "chat": "-100", "user": "42"}
    base.update(kw)
    return str(conversation_key(**base))  # type: ignore[arg-type]


def test_dm_and_slash() -> None:
    assert key(kind="dm", chat="42") == "telegram/bot1/42//"
    assert key(kind="slash", platform="slack", chat="C1", user="U1") == "slack/bot1/C1//U1"


def test_group_shared_or_per_user() -> None:
    assert key(kind="group") == key(kind="group", user="43")
    assert key(kind="group", group_scope="user") != key(kind="group", user="43", group_scope="user")


def test_topics_and_threads_are_separate_conversations() -> None:
    t1 = key(kind="topic", thread="7")
    t2 = key(kind="topic", thread="8")
    assert len({t1, t2, key(kind="group")}) == 3
    assert key(kind="thread", thread="1.5", group_scope="user").endswith("/1.5/42")


def test_ids_cannot_collide_through_separators() -> None:
    # A chat id containing "/" must not produce the same key as a chat + thread pair.
    assert key(kind="group", chat="a/b") != key(kind="topic", chat="a", thread="b")


@pytest.mark.parametrize(
    "kw",
    [
        {"kind": "topic"},
        {"kind": "thread"},
        {"kind": "nope"},
        {"kind": "group", "group_scope": "x"},
    ],
)
def test_bad_input_is_refused(kw: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        key(**kw)
