"""Composition-root helpers: build the object graph (store, client, core) from configuration.

Who calls: ``bots.cli`` (``hybot demo`` now, ``hybot run`` once platform adapters exist)
and tests that want the same wiring. Everything is an async context manager built with
:class:`contextlib.AsyncExitStack`, so a failure half-way through start-up closes whatever was
already opened, in reverse order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from core.config import BotConfig, Language, Secret
from core.conversation import Conversation
from core.hunyuan import HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.inbox import Inbox
from core.store import open_store
from core.store.base import BaseStore

__all__ = [
    "DEMO_ADMIN",
    "DemoRuntime",
    "Runtime",
    "at_emulator",
    "demo_bot_config",
    "demo_runtime",
    "emulated",
    "inbox_lease",
    "open_runtime",
]

#: The console user of ``hybot demo``, made an admin so the tour can show admin commands.
DEMO_ADMIN = "console:me"


@dataclass(frozen=True, slots=True)
class Runtime:
    """An opened core: the config it runs with, its store, client and conversation."""

    config: BotConfig
    store: BaseStore
    client: HunyuanClient
    conversation: Conversation

    def inbox(self) -> Inbox:
        """The platform inbox over this runtime's store, leased by :func:`inbox_lease`."""
        return Inbox(store=self.store, lease=inbox_lease(self.config))


def inbox_lease(config: BotConfig) -> timedelta:
    """How long an adapter owns an inbox entry before it is re-driven: the core's delivery
    lease plus a margin of a tenth of it (at least a second; 90 s for the default 15 minutes).

    It must *exceed* the core's lease, which starts a moment after the inbox record: an entry
    re-driven while the dead attempt's claim still holds would be answered with silence and
    then marked done, and the message would be lost (``core/inbox.py``)."""
    lease = timedelta(seconds=config.delivery_lease_seconds)
    return lease + max(timedelta(seconds=1), lease / 10)


@dataclass(frozen=True, slots=True)
class DemoRuntime:
    """A :class:`Runtime` wired to an in-process emulator."""

    runtime: Runtime
    emulator: Emulator


def at_emulator(config: BotConfig, emulator: Emulator) -> BotConfig:
    """``config`` with only Hunyuan's endpoints and credentials pointed at a running
    ``emulator`` (it speaks both wire formats, so the configured API kinds stay); everything
    else (persona, language, limits, access) is the operator's."""
    keys = emulator.config
    hunyuan = replace(
        config.hunyuan,
        base_url=emulator.openai_base_url,
        api_key=Secret(keys.api_key),
        native_endpoint=emulator.native_endpoint,
        secret_id=Secret(keys.secret_id),
        secret_key=Secret(keys.secret_key),
        # The emulator finishes image jobs at once: poll it often.
        image_poll_interval=0.05,
    )
    return replace(config, hunyuan=hunyuan)


@asynccontextmanager
async def emulated(
    config: BotConfig, *, emulator_config: EmulatorConfig | None = None
) -> AsyncIterator[tuple[BotConfig, Emulator]]:
    """Start the emulator on a free loopback port; yield ``config`` pointed at it
    (:func:`at_emulator`) and the emulator. ``hybot demo`` and ``hybot run PLATFORM
    --emulator`` use it, so a team can try the bot before it has a TokenHub key."""
    async with Emulator(
        config=emulator_config or EmulatorConfig(), host="127.0.0.1", port=0
    ) as emu:
        yield at_emulator(config, emu), emu


def demo_bot_config(
    config: BotConfig,
    *,
    image_dir: Path,
    language: Language | None = None,
    admins: tuple[str, ...] = (DEMO_ADMIN,),
) -> BotConfig:
    """The demo's :class:`BotConfig`: ``config`` (the operator's settings, already pointed at
    the emulator) with ``admins`` added (the console user, so the tour can show admin
    commands), ``image_dir`` as the output directory and ``language`` when given."""
    merged_admins = (*config.access.admins, *(a for a in admins if a not in config.access.admins))
    return replace(
        config,
        images=replace(config.images, output_dir=str(image_dir)),
        access=replace(config.access, admins=merged_admins),
        language=language or config.language,
    )


@asynccontextmanager
async def open_runtime(config: BotConfig, *, database_url: str) -> AsyncIterator[Runtime]:
    """Open the store named by ``database_url``, a Hunyuan client and the core, in that
    order; close them in reverse. ``database_url`` is a URL or a plain SQLite path (the CLI
    passes :attr:`DatabaseSettings.location <bots.settings.DatabaseSettings.location>`'s
    path). Raises :class:`~core.errors.ConfigError` for an unsupported URL and
    :class:`~core.errors.StoreError` when the store cannot open."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(database_url))
        client = await stack.enter_async_context(HunyuanClient(config=config.hunyuan))
        conversation = await stack.enter_async_context(
            Conversation(config=config, store=store, model=client)
        )
        yield Runtime(config=config, store=store, client=client, conversation=conversation)


@asynccontextmanager
async def demo_runtime(
    *,
    db_path: Path,
    image_dir: Path,
    language: Language | None = None,
    emulator_config: EmulatorConfig | None = None,
    base: BotConfig | None = None,
) -> AsyncIterator[DemoRuntime]:
    """Start the emulator on a free loopback port and open a core that talks to it, with its
    SQLite store at ``db_path``; ``base`` is the configuration to run with (see
    :func:`demo_bot_config`). Needs no credentials and touches no network beyond loopback."""
    async with emulated(base or BotConfig(), emulator_config=emulator_config) as (cfg, emulator):
        config = demo_bot_config(cfg, image_dir=image_dir, language=language)
        # A plain path: open_store treats it as an SQLite file, relative or absolute alike.
        async with open_runtime(config, database_url=str(db_path)) as runtime:
            yield DemoRuntime(runtime=runtime, emulator=emulator)
