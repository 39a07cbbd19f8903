"""``hybot config check --live``: authenticate against the configured Hunyuan and make the
cheapest real call, then say plainly what failed (key, URL, region, model).

The probe goes through :class:`LiveCheckable` when the client offers it (the client's own
cheap live-check method), else through :func:`fallback_probe`: a native ``GetTokenCount``
(free) for ``api = "native"``, a one-token chat for ``api = "openai"`` (TokenHub has no
free call). Either way a :class:`~core.errors.HunyuanError` is translated by :func:`explain`
into one sentence naming the setting to fix; secrets never appear in it.
"""

from __future__ import annotations

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

__all__ = ["LiveCheckable", "explain", "fallback_probe", "live_check"]


@runtime_checkable
class LiveCheckable(Protocol):
    """A client that can prove its configuration with one cheap authenticated call.

    ``live_check`` returns normally when the service accepted the credentials, endpoint,
    region and model, and raises :class:`~core.errors.HunyuanError` otherwise.
    """

    async def live_check(self) -> None: ...


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
        try:
            if isinstance(client, LiveCheckable):
                await client.live_check()
            else:
                await fallback_probe(client, config)
        except HunyuanError as err:
            return explain(err, config)
    return None
