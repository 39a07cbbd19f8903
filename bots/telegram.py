"""``hybot run telegram``: the composition root of the Telegram bot.

Who calls: ``bots.cli`` (a thin ``run telegram`` branch) and the end-to-end tests that run the
bot as a subprocess. Builds store → Hunyuan client (or the in-process emulator with
``--emulator``) → core → inbox → :class:`~adapters.telegram.app.TelegramAdapter`, runs until
SIGINT/SIGTERM (``bots.cli.run_async`` cancels it; intake stops, in-flight answers drain) or a
fatal platform error.

Settings (``bots.settings``; ``hybot config check`` reports problems with them):
``TELEGRAM_BOT_TOKEN``, ``HYBOT_TELEGRAM_BASE_URL`` (the Bot API server; ``/bot`` is appended
for PTB), ``HYBOT_TELEGRAM_MODE`` (``polling`` or ``webhook``), ``HYBOT_TELEGRAM_WEBHOOK_URL``
(public ``https://`` URL registered with ``setWebhook``; its path is the route's path),
``HYBOT_TELEGRAM_WEBHOOK_SECRET``, ``HYBOT_TELEGRAM_WEBHOOK_HOST`` / ``_PORT`` (where the
route listens, normally behind a TLS-terminating reverse proxy), ``HYBOT_GROUP_SCOPE``. The
inbox lease exceeds the core's ``HYBOT_DELIVERY_LEASE_SECONDS`` (``bots.wiring.inbox_lease``).

Exit: a rejected token (401), a 409 Conflict or an unreachable server raise
:class:`~core.errors.ConfigError` / :class:`~core.errors.PlatformError`, which the CLI prints
as one ``error:`` line and exits 1.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from adapters.telegram.app import TelegramAdapter, TelegramOptions
from bots.settings import Settings
from bots.wiring import emulated, open_runtime
from core.config import BotConfig
from core.errors import ConfigError

__all__ = ["main", "options_for", "telegram_problems"]


_TOKEN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,200}")


def telegram_problems(settings: Settings) -> list[str]:
    """What stops ``hybot run telegram`` from starting, one sentence each naming the variable
    (the mode and webhook rules are :meth:`Settings.problems`'s, for every command)."""
    token = settings.telegram.bot_token.reveal()
    if not token:
        return ["TELEGRAM_BOT_TOKEN is not set (create a bot with @BotFather)"]
    if not _TOKEN.fullmatch(token):
        return [
            "TELEGRAM_BOT_TOKEN does not look like a bot token (<digits>:<secret>, from @BotFather)"
        ]
    return []


def options_for(
    settings: Settings, *, drain_timeout: float = 25.0, retry_budget: float = 60.0
) -> TelegramOptions:
    """The adapter options from the settings (``base_url`` gets PTB's ``/bot`` suffix).
    Raises :class:`ConfigError` naming the first of :func:`telegram_problems`."""
    tg = settings.telegram
    token = tg.bot_token.reveal()
    problems = telegram_problems(settings)
    if problems:
        raise ConfigError(problems[0])
    base = str(tg.base_url).rstrip("/")
    if not base.endswith("/bot"):
        base += "/bot"
    return TelegramOptions(
        token=token,
        base_url=base,
        mode=tg.mode,
        webhook_url=tg.webhook_url,
        webhook_secret=tg.webhook_secret.reveal(),
        webhook_host=tg.webhook_host,
        webhook_port=tg.webhook_port,
        drain_timeout=drain_timeout,
        retry_budget=retry_budget,
        # Look for entries a crashed run left behind a few times per lease.
        redrive_interval=max(1.0, min(60.0, settings.delivery_lease_seconds / 2)),
        group_scope=settings.group_scope,
    )


@asynccontextmanager
async def _bot_config(settings: Settings, *, emulator: bool) -> AsyncIterator[BotConfig]:
    config = settings.to_bot_config()
    if not emulator:
        yield config
        return
    async with emulated(config) as (pointed, _):
        yield pointed


async def main(
    settings: Settings,
    *,
    emulator: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the Telegram bot until ``stop`` is set or this task is cancelled (the CLI cancels it
    on SIGINT/SIGTERM); either way intake stops and in-flight answers drain.

    Raises :class:`ConfigError` (bad settings, rejected token) or
    :class:`~core.errors.PlatformError` (409 Conflict, unreachable server)."""
    options = options_for(settings)
    stop = stop or asyncio.Event()  # the CLI's run_async cancels this task on SIGINT/SIGTERM
    async with AsyncExitStack() as stack:
        config = await stack.enter_async_context(_bot_config(settings, emulator=emulator))
        runtime = await stack.enter_async_context(
            open_runtime(config, database_url=settings.database.location.path)
        )
        adapter = TelegramAdapter(
            conversation=runtime.conversation, inbox=runtime.inbox(), options=options
        )
        async with adapter:
            await adapter.serve(stop)
