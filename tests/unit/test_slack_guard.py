"""The request guard's window and replay rule at its exact edges, on an injected clock (the
end-to-end test in tests/e2e/test_slack.py uses timestamps well outside the window, since
wall-clock seconds pass between building a request and checking it)."""

from __future__ import annotations

import hashlib
import hmac

from adapters.slack.app import RequestGuard

SECRET = "guard-test-secret"
BODY = b'{"type":"event_callback"}'


def sign(timestamp: str, body: bytes = BODY, secret: str = SECRET) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def test_the_window_is_300_seconds_either_way() -> None:
    now = 1_800_000_000.0
    for skew, expected in ((-301, 401), (-300, None), (300, None), (301, 401)):
        guard = RequestGuard(signing_secret=SECRET, clock=lambda: now)
        ts = str(int(now) + skew)
        assert guard.check(BODY, ts, sign(ts)) == expected, skew


def test_a_replay_is_refused_until_it_falls_out_of_the_window() -> None:
    clock = [1_800_000_000.0]
    guard = RequestGuard(signing_secret=SECRET, clock=lambda: clock[0])
    ts = str(int(clock[0]))
    assert guard.check(BODY, ts, sign(ts)) is None
    assert guard.check(BODY, ts, sign(ts)) == 401  # exact replay
    clock[0] += 299
    assert guard.check(BODY, ts, sign(ts)) == 401  # still remembered
    clock[0] += 2  # now outside the window: refused by the timestamp rule, not the memory
    assert guard.check(BODY, ts, sign(ts)) == 401
    fresh = str(int(clock[0]))
    assert guard.check(BODY, fresh, sign(fresh)) is None


def test_forged_and_malformed_headers_are_refused() -> None:
    now = 1_800_000_000.0
    guard = RequestGuard(signing_secret=SECRET, clock=lambda: now)
    ts = str(int(now))
    assert guard.check(BODY, ts, sign(ts, secret="wrong")) == 401
    assert guard.check(BODY + b" ", ts, sign(ts)) == 401
    for bad_ts in (None, "", "abc", "-5", "1e9", "１２３", "9" * 13):
        assert guard.check(BODY, bad_ts, sign(str(bad_ts))) == 401, bad_ts
    for bad_sig in (None, "", "v0=" + "0" * 64, "x" * 101, "v0=é"):
        assert guard.check(BODY, ts, bad_sig) == 401, bad_sig
