"""Hostile payloads: the Slack converters and the request guard never raise, whatever arrives
(a verified signature says who sent a body, not that its fields have the expected types)."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.slack.app import RequestGuard, _parse_body
from adapters.slack.convert import (
    SlackIdentity,
    action_to_inbound,
    clean_text,
    event_to_inbound,
    slash_to_inbound,
)

ME = SlackIdentity(team="T1", user_id="UBOT")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
keys = st.sampled_from(
    ["type", "event", "user", "channel", "ts", "thread_ts", "text", "subtype", "channel_type",
     "team_id", "command", "user_id", "channel_id", "trigger_id", "actions", "container",
     "message", "team", "bot_id", "parent_user_id", "response_url"]
)  # fmt: skip
shaped = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=8)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.dictionaries(keys, shaped, max_size=8), json_values))
def test_converters_never_raise(body: Any) -> None:
    if not isinstance(body, dict):
        body = {"event": body}
    for convert in (event_to_inbound, slash_to_inbound, action_to_inbound):
        result = convert(body, me=ME)
        assert result is None or result.platform == "slack"
    event = dict(body)
    event.setdefault("type", "app_mention")
    result = event_to_inbound({"type": "event_callback", "event": event}, me=ME)
    assert result is None or result.platform == "slack"


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(["<!channel>", "<!here>", "<!subteam^S1|@devs>", "<@U1>", "<@UBOT>",
                         "<https://x.io|y>", "a", " ", "<", ">", "!", "&amp;"]),
        max_size=12,
    ).map("".join)
)  # fmt: skip
def test_clean_text_never_leaves_a_slack_token(text: str) -> None:
    out, _, mentions = clean_text(text, bot_user="UBOT")
    # Slack delivers literal < and > as &lt; &gt;, so a raw "<" only opens a token; the
    # broadcast and mention tokens must never survive (links are rewritten as "label (url)")
    for token in re.findall(r"<[!@][^<>]*>", text):
        assert token not in out
    assert all(m.startswith("slack:") for m in mentions)


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=300), ctype=st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
))  # fmt: skip
def test_parse_body_never_raises(raw: str, ctype: str) -> None:
    result = _parse_body(raw, ctype)
    assert result is None or isinstance(result, dict)


def test_parse_body_payload_forms() -> None:
    assert _parse_body("payload=" + json.dumps({"type": "block_actions"}), "") == {
        "type": "block_actions"
    }
    assert _parse_body("payload=%5B%5D", "application/x-www-form-urlencoded") is None
    assert _parse_body('{"a": 1}', "application/json") == {"a": 1}


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=100),
    ts=st.one_of(st.none(), st.text(max_size=20)),
    sig=st.one_of(st.none(), st.text(max_size=120)),
)
def test_guard_never_raises_and_refuses_unsigned(
    raw: bytes, ts: str | None, sig: str | None
) -> None:
    guard = RequestGuard(signing_secret="secret", clock=lambda: 1_700_000_000.0)
    assert guard.check(raw, ts, sig) == 401
