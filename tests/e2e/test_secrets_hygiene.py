"""Secrets never appear in logs, reprs, error messages or reply events (platforms.md §4.5)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from core_harness import core

from core.config import BotConfig, Secret
from core.errors import AuthError
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import EmulatorConfig
from core.types import ChatMessage

API_KEY = "sk-TOPSECRET-apikey-0123456789"
SECRET_ID = "AKIDsecretIdValue42"
SECRET_KEY = "TOPSECRET-secretkey-abcdef"
WRONG_API_KEY = "sk-WRONGSECRET-apikey-9876543210"
WRONG_SECRET_KEY = "WRONGSECRET-secretkey-fedcba"


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
        # A client with a wrong key reaches the service and is refused with an auth error
        # that names no key (neither the wrong one it presented nor the right one).
        wrong = replace(
            c.client.config,
            api_key=Secret(WRONG_API_KEY),
            secret_key=Secret(WRONG_SECRET_KEY),
            max_attempts=1,
        )
        route = "/v1/chat/completions" if api == "openai" else "native:ChatCompletions"
        before = c.emulator.stats.requests[route]
        async with HunyuanClient(config=wrong) as client:
            seen.append(repr(client))
            seen.append(repr(wrong))
            with pytest.raises(AuthError) as info:
                await client.chat([ChatMessage("user", "hello")])
        assert c.emulator.stats.requests[route] == before + 1  # the request was really sent
        if api == "openai":
            assert info.value.status == 401
        else:
            assert info.value.code == "AuthFailure.SignatureFailure"
        err = info.value
        seen.extend([f"{type(err).__name__}: {err}", repr(err), err.user_message])
        seen.extend(repr(a) for a in err.args)
    haystack = caplog.text + "\n".join(seen) + repr(BotConfig(hunyuan=wrong))
    for secret in (API_KEY, SECRET_KEY, WRONG_API_KEY, WRONG_SECRET_KEY):
        assert secret not in haystack
    assert len(caplog.records) > 0  # the test did log something at DEBUG
