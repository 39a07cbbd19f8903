"""estimate_tokens: the 1.8/3 rule, counted in C, agrees with the per-character definition."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from core.tokens import estimate_tokens, is_cjk


def _by_definition(text: str) -> int:
    if not text:
        return 0
    cjk = sum(1 for ch in text if is_cjk(ch))
    return max(1, math.ceil(cjk / 1.8 + (len(text) - cjk) / 3))


def test_examples() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcdef") == 2
    assert estimate_tokens("你好世界") == 3  # 4 / 1.8 = 2.2 -> 3
    assert estimate_tokens("你好, world") == math.ceil(2 / 1.8 + 7 / 3)
    assert estimate_tokens("\u1100\u11ff\U00020000\U0003ffff") == 3  # range ends count
    assert estimate_tokens("\u10ff\u1200\U00040000") == 1  # just outside: 3 / 3


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.characters(),
            st.characters(min_codepoint=0x1000, max_codepoint=0xFFFF),
            st.characters(min_codepoint=0x1FFF0, max_codepoint=0x40010),
        )
    )
)
def test_matches_the_per_character_definition(text: str) -> None:
    assert estimate_tokens(text) == _by_definition(text)
