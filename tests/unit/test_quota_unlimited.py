""" "Unlimited" means the same in every layer: a role configured ``unlimited`` (settings give
``UNLIMITED_OVERRIDE``) and a user set to ``none`` by ``/admin limit`` (``UNLIMITED``, the same
value) are both reported as no limit and never refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fakes.conversation import fake_core

from core.config import UNLIMITED_OVERRIDE, BotConfig, LimitSet, QuotaConfig
from core.quota import UNLIMITED, Reservation
from core.store.base import UserRecord
from core.subject import EffectivePolicy, Subject


def _subject(record: UserRecord) -> Subject:
    return Subject(
        user_id=record.user_id,
        record=record,
        is_admin=False,
        lang="en",
        platform="telegram",
        conversation="k",
        channel="telegram:c",
        is_dm=True,
        policy=EffectivePolicy(True, False, True, "hy3-preview", ""),
    )


@pytest.mark.parametrize(
    ("role_limit", "user_limit"),
    [(UNLIMITED_OVERRIDE, None), (100, UNLIMITED), (100, UNLIMITED_OVERRIDE)],
)
async def test_unlimited_in_any_layer_is_no_limit(
    tmp_path: Path, role_limit: int, user_limit: int | None
) -> None:
    quota = QuotaConfig(
        defaults=LimitSet(tokens_per_day=100),
        roles=(("vip", LimitSet(tokens_per_day=role_limit)),),
    )
    record = UserRecord("telegram:u1", role="vip", limits=LimitSet(tokens_per_day=user_limit))
    async with fake_core(tmp_path, config=BotConfig(quota=quota)) as c:
        assert c.conv.quota.limits_for(record, is_admin=False) == LimitSet()
        granted = await c.conv.quota.reserve_chat(
            _subject(record),
            reservation_id="r1",
            model=c.conv.model_spec(),
            tokens=5_000,
            now=c.clock(),
        )
        assert isinstance(granted, Reservation)


async def test_a_role_limit_still_applies(tmp_path: Path) -> None:
    quota = QuotaConfig(
        defaults=LimitSet(tokens_per_day=UNLIMITED_OVERRIDE),
        roles=(("trial", LimitSet(tokens_per_day=100)),),
    )
    record = replace(UserRecord("telegram:u2"), role="trial")
    async with fake_core(tmp_path, config=BotConfig(quota=quota)) as c:
        assert c.conv.quota.limits_for(record, is_admin=False).tokens_per_day == 100
        assert c.conv.quota.limits_for(None, is_admin=False).tokens_per_day is None
