"""``hybot config check --live``: authenticate against the configured Hunyuan and make its
cheapest real calls, then say plainly what failed (key, URL, region, model) and which
variables to fix.

The calls are the client's own :meth:`~core.hunyuan.HunyuanClient.check` (it never raises for
a service, network or credential failure; it reports a :class:`~core.hunyuan.CheckResult`).
This module only words the result for operators: the ``HunyuanConfig`` fields the result
blames become the variables operators set (``api_key`` → ``HUNYUAN_API_KEY``). Nothing in it
is secret.
"""

from __future__ import annotations

from core.config import HunyuanConfig
from core.hunyuan import CheckResult, HunyuanClient

__all__ = ["describe_outcome", "live_check"]

# HunyuanConfig field → the variable an operator sets (bots.settings' names).
_FIELD_VARS = {
    "api": "HYBOT_HUNYUAN_API",
    "base_url": "HYBOT_HUNYUAN_BASE_URL",
    "api_key": "HUNYUAN_API_KEY",
    "model": "HYBOT_HUNYUAN_MODEL",
    "native_endpoint": "HYBOT_HUNYUAN_NATIVE_ENDPOINT",
    "secret_id": "TENCENTCLOUD_SECRET_ID",
    "secret_key": "TENCENTCLOUD_SECRET_KEY",
    "region": "HYBOT_HUNYUAN_REGION",
    "image_api": "HYBOT_HUNYUAN_IMAGE_API",
    "image_model": "HYBOT_HUNYUAN_IMAGE_MODEL",
    "connect_timeout": "HYBOT_HUNYUAN_CONNECT_TIMEOUT",
    "idle_timeout": "HYBOT_HUNYUAN_IDLE_TIMEOUT",
    "total_timeout": "HYBOT_HUNYUAN_TOTAL_TIMEOUT",
}


def describe_outcome(outcome: CheckResult) -> str | None:
    """``None`` when the check passed, else its sentence and the variables to look at (an
    address variable with the address that was tried)."""
    if outcome.ok:
        return None
    names = [
        f"{_FIELD_VARS[field]} ({outcome.endpoint})"
        if field in ("base_url", "native_endpoint")
        else _FIELD_VARS.get(field, field)
        for field in outcome.settings
    ]
    where = f" Check {', '.join(names)}." if names else ""
    return f"{outcome.detail.strip()}{where}"


async def live_check(config: HunyuanConfig) -> str | None:
    """Run the live check; ``None`` when it passed, else the sentence of
    :func:`describe_outcome`."""
    async with HunyuanClient(config=config) as client:
        return describe_outcome(await client.check())
