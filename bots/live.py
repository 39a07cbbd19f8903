"""``hybot config check --live``: authenticate against the configured Hunyuan and make the
cheapest real call, then say plainly what failed (key, URL, region, model).

The probe goes through :class:`LiveCheckable` when the client offers it (the client's own
``check()``, returning a :class:`CheckOutcome`: ok, a plain ``detail`` sentence and the
``HunyuanConfig`` fields to look at, which :func:`describe_outcome` turns into the variables
operators set). Until that method is merged, :func:`fallback_probe` makes the call itself: a
native ``GetTokenCount`` (free) for ``api = "native"``, a one-token chat for ``api =
"openai"`` (TokenHub has no free call), and :func:`explain` turns a
:class:`~core.errors.HunyuanError` into one sentence naming the setting to fix. Secrets never
appear in either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from core.config import HunyuanConfig
from core.errors import (
    AuthError,
    HunyuanError,
    HunyuanTimeout,
    InvalidRequest,
    ModelUnavailable,
    OutOfCredit,
    RateLimited,
    ServerBusy,
    TransportError,
)
from core.hunyuan import HunyuanClient
from core.types import ChatMessage

__all__ = [
    "CheckOutcome",
    "LiveCheckable",
    "describe_outcome",
    "explain",
    "fallback_probe",
    "live_check",
]

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


class CheckOutcome(Protocol):
    """What the client's live check reports (structurally ``core.hunyuan.CheckResult``)."""

    @property
    def ok(self) -> bool: ...
    @property
    def detail(self) -> str: ...
    @property
    def settings(self) -> Sequence[str]: ...
    @property
    def endpoint(self) -> str: ...


@runtime_checkable
class LiveCheckable(Protocol):
    """A client that proves its configuration with its cheapest real calls.

    ``check`` never raises for a service, network or credential failure; it reports it.
    """

    async def check(self) -> CheckOutcome: ...


def describe_outcome(outcome: CheckOutcome) -> str | None:
    """``None`` when the check passed, else its sentence and the variables to look at."""
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


async def fallback_probe(client: HunyuanClient, config: HunyuanConfig) -> None:
    """The cheapest real call this client version can make (see the module docstring)."""
    if config.api == "native":
        await client.count_tokens("ping")
    else:
        await client.chat([ChatMessage("user", "ping")], max_tokens=1)


def explain(err: HunyuanError, config: HunyuanConfig) -> str:
    """One sentence: what failed and which setting to look at (never a secret)."""
    native = config.api == "native"
    url = config.native_endpoint if native else config.base_url
    url_var = "HYBOT_HUNYUAN_NATIVE_ENDPOINT" if native else "HYBOT_HUNYUAN_BASE_URL"
    key_vars = "TENCENTCLOUD_SECRET_ID/TENCENTCLOUD_SECRET_KEY" if native else "HUNYUAN_API_KEY"
    detail = f" ({err.code})" if err.code else ""
    if isinstance(err, AuthError):
        return f"the service refused the credentials{detail}: check {key_vars}"
    if isinstance(err, HunyuanTimeout):
        return f"{url} did not answer in time: check {url_var} and the network"
    if isinstance(err, TransportError):
        return f"cannot reach {url}: check {url_var} and the network"
    if isinstance(err, ModelUnavailable):
        return (
            f"the model {config.model!r} or the endpoint is not available to this account"
            f"{detail}: check HYBOT_HUNYUAN_MODEL and {url_var}"
        )
    if isinstance(err, OutOfCredit):
        return f"the account has no credit left{detail}: top it up in the Tencent Cloud console"
    if isinstance(err, RateLimited | ServerBusy):
        return f"the service is rate-limiting or busy{detail}; the credentials were not refused"
    if isinstance(err, InvalidRequest):
        hint = "HYBOT_HUNYUAN_REGION and HYBOT_HUNYUAN_MODEL" if native else "HYBOT_HUNYUAN_MODEL"
        return f"the service refused the request{detail}: check {hint}"
    return f"the service answered with an error{detail}: {type(err).__name__}"


async def live_check(config: HunyuanConfig) -> str | None:
    """Run the live check; ``None`` when it passed, else the sentence of :func:`explain`."""
    async with HunyuanClient(config=config) as client:
        if isinstance(client, LiveCheckable):
            return describe_outcome(await client.check())
        try:
            await fallback_probe(client, config)
        except HunyuanError as err:
            return explain(err, config)
    return None
