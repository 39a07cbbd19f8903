"""Secrets never appear in logs, reprs, error messages or reply events (platforms.md §4.5)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from core_harness import core

from core.config import BotConfig, HunyuanConfig, Secret
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import EmulatorConfig

API_KEY = "sk-TOPSECRET-apikey-0123456789"
SECRET_ID = "AKIDsecretIdValue42"
SECRET_KEY = "TOPSECRET-secretkey-abcdef"


@pytest.mark.parametrize("api", ["openai", "native"])
async def test_no_secret_in_logs_events_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    caplog.set_level(logging.DEBUG)
    emu = EmulatorConfig(api_key=API_KEY, secret_id=SECRET_ID, secret_key=SECRET_KEY)
    seen: list[str] = []
    async with core(
        tmp_path,
        emulator_config=emu,
        tweak_hunyuan=lambda h: replace(
            h, api=api, image_api="native" if api == "native" else "tokenhub"
        ),
    ) as c:
        for text in (
            "hello",
            "again [[fault:badkey]]",
            "fail [[fault:500]]",
            "cut [[fault:disconnect]]",
            "/image a cat",
            "/image broken [[fault:imagefail]]",
            "/quota",
            "/usage",
            "/about",
        ):
            for event in await c.send(text):
                seen.append(repr(event))
        seen.append(repr(c.client))
    # A client configured with a wrong key fails with an auth error that names no key.
    wrong = HunyuanConfig(
        base_url="http://127.0.0.1:9/v1",
        api_key=Secret(API_KEY),
        secret_id=Secret(SECRET_ID),
        secret_key=Secret(SECRET_KEY),
        max_attempts=1,
        connect_timeout=0.5,
    )
    async with HunyuanClient(config=wrong) as client:
        seen.append(repr(client))
        seen.append(repr(wrong))
        try:
            await client.chat([])
        except Exception as err:
            seen.append(f"{type(err).__name__}: {err}")
    haystack = caplog.text + "\n".join(seen) + repr(BotConfig(hunyuan=wrong))
    for secret in (API_KEY, SECRET_KEY):
        assert secret not in haystack
    assert len(caplog.records) > 0  # the test did log something at DEBUG
