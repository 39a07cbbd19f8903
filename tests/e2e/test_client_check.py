"""HunyuanClient.check (the live configuration check) against the emulator over loopback HTTP.

Each case breaks one setting and asserts the check blames exactly that one, calls each
endpoint once (no retries), and leaks no secret.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from core.config import HunyuanConfig, Secret
from core.hunyuan import CheckResult, HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig

EMU = EmulatorConfig()

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(config=EmulatorConfig(image_job_steps=0.05)) as emulator:
        yield emulator


async def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"the check must not back off (asked to sleep {seconds}s)")


def config_for(emulator: Emulator, api: str, **overrides: object) -> HunyuanConfig:
    base = HunyuanConfig(
        api=api,
        base_url=emulator.openai_base_url,
        api_key=Secret(EMU.api_key),
        model="hy3-preview" if api == "openai" else "hunyuan-lite",
        native_endpoint=emulator.native_endpoint,
        secret_id=Secret(EMU.secret_id),
        secret_key=Secret(EMU.secret_key),
        image_api="tokenhub",
        connect_timeout=2.0,
        idle_timeout=5.0,
        total_timeout=20.0,
        max_attempts=3,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


async def run_check(config: HunyuanConfig) -> CheckResult:
    async with HunyuanClient(config=config, sleep=_no_sleep) as client:
        result = await client.check()
    blob = repr(result)
    for secret in (config.api_key, config.secret_id, config.secret_key):
        if secret.reveal():
            assert secret.reveal() not in blob
    return result


def free_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_openai_good_settings(emu: Emulator) -> None:
    result = await run_check(config_for(emu, "openai"))
    assert result.ok and result.problem is None
    assert result.verified == ("url", "key", "model")
    assert (result.api, result.model, result.endpoint) == (
        "openai",
        "hy3-preview",
        emu.openai_base_url,
    )
    assert result.region == "" and result.settings == ()
    assert emu.stats.requests["/v1/chat/completions"] == 1
    assert emu.stats.last_bodies["/v1/chat/completions"]["max_tokens"] == 1


async def test_native_good_settings_with_native_images(emu: Emulator) -> None:
    result = await run_check(config_for(emu, "native", image_api="native"))
    assert result.ok, result.detail
    assert result.verified == ("url", "key", "clock", "model", "region")
    assert result.region == "ap-guangzhou"
    assert emu.stats.requests["native:GetTokenCount"] == 1
    assert emu.stats.requests["native:ChatCompletions"] == 1
    assert emu.stats.requests["native:QueryHunyuanImageJob"] == 1
    assert emu.stats.requests["native:SubmitHunyuanImageJob"] == 0  # nothing was created
    assert emu.stats.last_bodies["native:ChatCompletions"]["Stream"] is True


async def test_openai_bad_key(emu: Emulator) -> None:
    config = config_for(emu, "openai", api_key=Secret("sk-wrong-key-1234567890"))
    result = await run_check(config)
    assert not result.ok
    assert result.problem == "key"
    assert result.settings == ("api_key",)
    assert result.status == 401
    assert result.verified == ()
    assert "credentials" in result.detail
    assert emu.stats.requests["/v1/chat/completions"] == 1  # not retried


async def test_missing_key_needs_no_network(emu: Emulator) -> None:
    result = await run_check(config_for(emu, "openai", api_key=Secret("")))
    assert result.problem == "key"
    assert emu.stats.requests["/v1/chat/completions"] == 0


@pytest.mark.parametrize("broken", ["secret_key", "secret_id"])
async def test_native_bad_credentials(emu: Emulator, broken: str) -> None:
    config = config_for(emu, "native", **{broken: Secret("not-the-right-one")})
    result = await run_check(config)
    assert result.problem == "key"
    assert result.settings == ("secret_id", "secret_key")
    assert result.code.startswith("AuthFailure.")
    assert result.detail.startswith("GetTokenCount failed")
    assert emu.stats.requests["native:GetTokenCount"] == 1
    assert emu.stats.requests["native:ChatCompletions"] == 0


async def test_native_clock_skew(emu: Emulator) -> None:
    config = config_for(emu, "native")
    async with HunyuanClient(config=config, sleep=_no_sleep, clock=lambda: 1_000_000.0) as c:
        result = await c.check()
    assert result.problem == "clock"
    assert result.code == "AuthFailure.SignatureExpire"
    assert emu.stats.requests["native:GetTokenCount"] == 1  # an expired signature: no retry


@pytest.mark.parametrize("api", ["openai", "native"])
async def test_unreachable_address(api: str) -> None:
    port = free_port()
    config = HunyuanConfig(
        api=api,
        base_url=f"http://127.0.0.1:{port}/v1",
        native_endpoint=f"http://127.0.0.1:{port}",
        api_key=Secret("sk-some-key"),
        secret_id=Secret("AKIDsome"),
        secret_key=Secret("some-secret"),
        connect_timeout=2.0,
        max_attempts=5,
    )
    result = await run_check(config)
    assert result.problem == "url"
    assert result.settings == ("base_url" if api == "openai" else "native_endpoint",)
    assert result.endpoint == (config.base_url if api == "openai" else config.native_endpoint)
    assert "could not be reached" in result.detail
    assert result.code == "" and result.status is None


@pytest.mark.parametrize("api", ["openai", "native"])
async def test_wrong_path_is_a_url_problem(emu: Emulator, api: str) -> None:
    config = config_for(
        emu,
        api,
        base_url=emu.openai_base_url + "/nowhere",
        native_endpoint=emu.native_endpoint + "/nowhere",
    )
    result = await run_check(config)
    assert result.problem == "url"
    assert result.settings == ("base_url" if api == "openai" else "native_endpoint",)
    assert result.status == 404


@pytest.mark.parametrize("api", ["openai", "native"])
async def test_unknown_model(emu: Emulator, api: str) -> None:
    result = await run_check(config_for(emu, api, model="no-such-model"))
    assert result.problem == "model"
    assert result.settings == ("model",)
    assert result.model == "no-such-model"
    if api == "native":
        assert result.verified == ("url", "key", "clock")  # GetTokenCount passed first
        assert result.code == "InvalidParameterValue.Model"
    else:
        assert result.code == "model_not_found"


async def test_wrong_region_for_native_images(emu: Emulator) -> None:
    config = config_for(emu, "openai", image_api="native", region="ap-nowhere")
    result = await run_check(config)
    assert result.problem == "region"
    assert result.settings == ("region",)
    assert result.region == "ap-nowhere"
    assert result.code == "UnsupportedRegion"
    assert result.verified == ("url", "key", "model")  # the chat half was fine
    assert result.detail.startswith("QueryHunyuanImageJob failed")


@pytest.mark.parametrize(("fault", "problem"), [("credit", "credit"), ("429", "busy")])
async def test_account_and_load_problems_are_reported_not_raised(fault: str, problem: str) -> None:
    async with Emulator(config=EmulatorConfig(faults=frozenset({fault}))) as emulator:
        result = await run_check(config_for(emulator, "openai"))
        assert emulator.stats.requests["/v1/chat/completions"] == 1  # not retried
    assert result.problem == problem
    assert result.settings == ()
    assert not result.ok
