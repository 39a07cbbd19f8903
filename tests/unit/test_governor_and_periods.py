"""The fair governor and quota period arithmetic (pure, no I/O)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.config import LimitSet
from core.errors import Busy
from core.images import FairGovernor
from core.quota import Periods, merge_limits, next_reset, periods

SH = ZoneInfo("Asia/Shanghai")


def test_periods_use_the_configured_time_zone() -> None:
    # 2026-11-28 17:30 UTC is already 2026-11-29 01:30 in Shanghai.
    now = datetime(2026, 11, 28, 17, 30, tzinfo=UTC)
    p = periods(now, SH)
    assert (p.day, p.month, p.minute) == ("2026-11-29", "2026-11", "2026-11-29T01:30")
    assert periods(now, ZoneInfo("UTC")).day == "2026-11-28"


def test_next_reset_day_month_minute() -> None:
    now = datetime(2026, 12, 31, 16, 59, 30, tzinfo=UTC)  # 2027-01-01 00:59:30 Shanghai
    assert next_reset(now, SH, "day") == datetime(2027, 1, 2, tzinfo=SH)
    assert next_reset(now, SH, "month") == datetime(2027, 2, 1, tzinfo=SH)
    assert next_reset(now, SH, "minute") == datetime(2027, 1, 1, 1, 0, tzinfo=SH)
    dec = datetime(2026, 12, 5, tzinfo=UTC)
    assert next_reset(dec, SH, "month") == datetime(2027, 1, 1, tzinfo=SH)
    with pytest.raises(ValueError):
        next_reset(now, SH, "year")


def test_merge_limits_first_set_wins_and_zero_is_a_value() -> None:
    user = LimitSet(tokens_per_day=0)
    role = LimitSet(tokens_per_day=500, images_per_day=3)
    default = LimitSet(tokens_per_day=100, images_per_day=1, requests_per_minute=5)
    merged = merge_limits(user, role, default)
    assert merged.tokens_per_day == 0
    assert merged.images_per_day == 3
    assert merged.requests_per_minute == 5
    assert merged.tokens_per_month is None


async def test_governor_grants_up_to_limit_then_queues_fifo() -> None:
    gov = FairGovernor(limit=1)
    a = gov.join(user="u1")
    b = gov.join(user="u2")
    c = gov.join(user="u3")
    assert a.granted and not b.granted and not c.granted
    assert (gov.position(a), gov.position(b), gov.position(c)) == (0, 1, 2)
    gov.release(a)
    assert b.granted and gov.position(c) == 1
    gov.release(b)
    assert c.granted


async def test_governor_is_fair_across_users() -> None:
    gov = FairGovernor(limit=1)
    running = gov.join(user="busy")
    flood = [gov.join(user="greedy") for _ in range(3)]
    late = gov.join(user="polite")
    # The polite user's first job goes before the greedy user's second and third.
    assert gov.position(flood[0]) == 1
    assert gov.position(late) == 2
    assert gov.position(flood[1]) == 3
    order = []
    gov.release(running)
    for _ in range(4):
        holder = next(t for t in [*flood, late] if t.granted)
        order.append(holder)
        gov.release(holder)
    assert order == [flood[0], late, flood[1], flood[2]]


async def test_governor_queue_bound_and_cancel() -> None:
    gov = FairGovernor(limit=1, max_queue=1)
    gov.join(user="a")
    waiting = gov.join(user="b")
    with pytest.raises(Busy):
        gov.join(user="c")
    gov.cancel(waiting)
    assert waiting.cancelled and gov.waiting == 0
    assert await gov.wait_change(waiting, max_wait=0.01)


async def test_governor_wait_change_wakes_on_release_and_times_out() -> None:
    gov = FairGovernor(limit=1)
    first = gov.join(user="a")
    second = gov.join(user="b")
    assert not await gov.wait_change(second, max_wait=0.01)
    waiting = asyncio.Event()

    async def wait() -> bool:
        waiting.set()  # wait_change runs on to its wait before this task yields
        return await gov.wait_change(second, max_wait=30)

    waiter = asyncio.create_task(wait())
    await asyncio.wait_for(waiting.wait(), 5)
    assert not waiter.done() and not second.granted  # it is waiting, not yet woken
    gov.release(first)
    assert await asyncio.wait_for(waiter, 5) and second.granted


async def test_governor_slot_limits_concurrency() -> None:
    gov = FairGovernor(limit=2)
    active = 0
    peak = 0
    inside: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def work(i: int) -> None:
        nonlocal active, peak
        async with gov.slot(user=f"u{i % 3}"):
            active += 1
            peak = max(peak, active)
            leave = asyncio.get_running_loop().create_future()
            await inside.put(leave)
            await leave  # hold the slot until the test lets this holder go
            active -= 1

    tasks = [asyncio.create_task(work(i)) for i in range(10)]
    for _ in range(5):
        holders = [await asyncio.wait_for(inside.get(), 5) for _ in range(2)]
        assert active == 2 and gov.running == 2  # two hold the slots, the others wait
        for leave in holders:
            leave.set_result(None)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert peak == 2
    assert gov.running == 0 and gov.waiting == 0


def test_periods_cache_follows_the_minute_and_the_zone() -> None:
    """The per-minute cache never serves another minute's or another zone's keys, including
    across a DST change and for historic offsets that are not whole minutes."""
    berlin, shanghai = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Shanghai")
    start = datetime(2026, 3, 29, 0, 58, 30, tzinfo=UTC)  # Berlin jumps 02:00 -> 03:00 at 01:00Z
    for step in range(0, 240, 7):
        now = start + timedelta(seconds=step)
        for tz in (berlin, shanghai, berlin):
            local = now.astimezone(tz)
            assert periods(now, tz) == Periods(
                local.strftime("%Y-%m-%d"),
                local.strftime("%Y-%m"),
                local.strftime("%Y-%m-%dT%H:%M"),
            )
    old = datetime(1890, 1, 1, 0, 0, 10, tzinfo=UTC)  # Shanghai LMT: +08:05:43
    for second in range(0, 60, 5):
        now = old + timedelta(seconds=second)
        assert periods(now, shanghai).minute == now.astimezone(shanghai).strftime("%Y-%m-%dT%H:%M")
