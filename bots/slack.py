"""Composition root of the Slack bot: settings → store, core, inbox, Slack adapter → serve.

Who calls: ``hybot run slack [--emulator]`` (``bots.cli``) builds a :class:`SlackRun` from the
settings (``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``,
``HYBOT_SLACK_MODE``, ``HYBOT_SLACK_HOST``, ``HYBOT_SLACK_PORT``, ``HYBOT_SLACK_BASE_URL``,
``HYBOT_SLACK_COMMAND``) and awaits :func:`serve_slack` until SIGINT/SIGTERM cancels it; then
the adapter stops intake (HTTP 503 / no Socket Mode acks), drains in-flight answers within
``grace`` seconds and everything closes in reverse order. Tests call :func:`serve_slack`
directly (also in a subprocess for the crash test).

Mode: Socket Mode when ``mode == "socket"``, or when ``mode`` is empty and an app-level token
is set; else HTTP (Events API at ``http://host:port/slack/events``).

Start-up failures are :class:`~core.errors.ConfigError` with one sentence and no secret: a
rejected bot token (``invalid_auth``) or app token (checked once with
``apps.connections.open`` before Socket Mode connects), an unreachable Slack API (naming
``HYBOT_SLACK_BASE_URL`` and its URL), a missing signing secret in HTTP mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Literal

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import SlackAdapter, SlackOptions, SlackServe
from bots.settings import Settings, SettingsError
from bots.wiring import emulated, open_runtime
from core.config import BotConfig, Secret

__all__ = ["SlackRun", "run_from_settings", "serve_slack", "slack_main", "slack_problems"]

_UNSET = Secret("")


@dataclass(frozen=True, slots=True)
class SlackRun:
    """What ``hybot run slack`` needs beyond the core's configuration."""

    bot_token: Secret = _UNSET
    signing_secret: Secret = _UNSET
    app_token: Secret = _UNSET
    base_url: str = "https://slack.com/api/"
    mode: Literal["", "http", "socket"] = ""
    host: str = "127.0.0.1"
    port: int = 3000
    command: str = "/hy"
    thread_follow_ups: bool = True
    grace: float = 25.0
    redrive_interval: float = 60.0

    @property
    def effective_mode(self) -> Literal["http", "socket"]:
        if self.mode:
            return self.mode
        return "socket" if self.app_token else "http"


def slack_problems(run: SlackRun) -> list[str]:
    """Every problem with the Slack settings, one sentence each, naming the variable."""
    out: list[str] = []
    if not run.bot_token:
        out.append("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
    elif not run.bot_token.reveal().startswith("xoxb-"):
        out.append("SLACK_BOT_TOKEN does not look like a bot token (it starts with xoxb-)")
    if run.effective_mode == "http" and not run.signing_secret:
        out.append("SLACK_SIGNING_SECRET is not set (required in HTTP mode)")
    if run.effective_mode == "socket":
        if not run.app_token:
            out.append("SLACK_APP_TOKEN is not set (required by HYBOT_SLACK_MODE=socket)")
        elif not run.app_token.reveal().startswith("xapp-"):
            out.append("SLACK_APP_TOKEN does not look like an app-level token (xapp-…)")
    if run.mode not in ("", "http", "socket"):
        out.append("HYBOT_SLACK_MODE must be http or socket")
    if not 0 <= run.port <= 65535:
        out.append("HYBOT_SLACK_PORT must be a port number (0-65535)")
    if not run.command.startswith("/") or len(run.command) < 2 or " " in run.command:
        out.append("HYBOT_SLACK_COMMAND must be a slash command such as /hy")
    if not run.base_url.startswith(("http://", "https://")):
        out.append("HYBOT_SLACK_BASE_URL is not an http(s) URL")
    return out


async def serve_slack(
    *,
    run: SlackRun,
    config: BotConfig,
    database_url: str,
    emulator: bool = False,
    ready: Callable[[SlackAdapter], None] | None = None,
) -> None:
    """Run the Slack bot until cancelled. ``emulator``: talk to an in-process Hunyuan
    emulator instead of the configured Hunyuan. ``ready`` is called once the adapter serves.
    Raises :class:`~core.errors.ConfigError` for unusable settings or rejected tokens."""
    problems = slack_problems(run)
    if problems:
        raise SettingsError(problems)  # a ConfigError naming every problem at once
    async with AsyncExitStack() as stack:
        if emulator:
            config, _ = await stack.enter_async_context(emulated(config))
        runtime = await stack.enter_async_context(open_runtime(config, database_url=database_url))
        inbox = runtime.inbox()  # leased a margin beyond the core's delivery lease
        client = AsyncWebClient(token=run.bot_token.reveal(), base_url=run.base_url)
        adapter = SlackAdapter(
            conversation=runtime.conversation,
            client=client,
            signing_secret=run.signing_secret.reveal(),
            inbox=inbox,
            options=SlackOptions(
                thread_follow_ups=run.thread_follow_ups,
                group_scope=config.group_scope,
                command=run.command,
                language=config.language,
            ),
            serve=SlackServe(
                mode=run.effective_mode,
                host=run.host,
                port=run.port,
                app_token=run.app_token.reveal(),
                grace=run.grace,
                redrive_interval=run.redrive_interval,
            ),
        )
        await stack.enter_async_context(adapter)
        if ready is not None:
            ready(adapter)
        await asyncio.Event().wait()


def run_from_settings(settings: Settings) -> SlackRun:
    """The :class:`SlackRun` of the operator's settings (``settings.slack``)."""
    sl = settings.slack
    return SlackRun(
        bot_token=sl.bot_token,
        signing_secret=sl.signing_secret,
        app_token=sl.app_token,
        base_url=sl.base_url,
        mode=sl.mode,
        host=sl.host,
        port=sl.port,
        command=sl.command,
        thread_follow_ups=sl.thread_follow_ups,
    )


async def slack_main(settings: Settings, *, emulator: bool = False) -> None:
    """What ``hybot run slack [--emulator]`` runs (until cancelled by SIGINT/SIGTERM)."""
    await serve_slack(
        run=run_from_settings(settings),
        config=settings.to_bot_config(),
        database_url=settings.database.location.path,
        emulator=emulator,
    )
