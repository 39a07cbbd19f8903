"""The composition root's wiring rules."""

from __future__ import annotations

from datetime import timedelta

from bots.wiring import inbox_lease
from core.config import BotConfig


def test_the_inbox_lease_outlasts_the_cores_delivery_lease() -> None:
    # A re-drive inside the dead attempt's claim would be answered with silence and then be
    # marked done: the message would be lost.
    for seconds in (1, 2, 60, 900, 86_400):
        lease = timedelta(seconds=seconds)
        margin = max(timedelta(seconds=1), lease / 10)
        assert inbox_lease(BotConfig(delivery_lease_seconds=seconds)) >= lease + margin
