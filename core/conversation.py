"""The conversation pipeline: one platform-neutral path from an :class:`Inbound` to reply events.

``Conversation.handle(inbound)`` (design §2) reads top to bottom:

1. **Claim** the delivery id in the store (insert-if-absent). A repeated delivery yields
   nothing. Nothing is charged and no model is called before the claim. A claim whose process
   died mid-turn can be taken over by a re-delivery after ``BotConfig.delivery_lease_seconds``,
   so a crash loses no message and charges nothing twice. The claim also reads the sender's
   record and the channel policy, which become the :class:`~core.subject.Subject`.
2. **Authorize**: deny list, allow-list mode, channel policy (enabled).
3. **Parse** the command and decide whether the message is addressed to the bot at all (DM,
   mention, reply to the bot, explicit command, or a channel whose policy is not mention-only).
   Anything not addressed to the bot is ignored silently, denial included. The admin role is
   checked here, once the command is known (admin-only commands from others are refused).
4. **Dispatch**: a chat turn, or a press of one of the buttons under an answer, runs as
   :class:`~core.turns.chat.ChatTurns` (the chat turn: context, reserve, stream, commit);
   commands run their handler from :data:`HANDLERS` (:mod:`core.turns`).
5. **Persist**: the delivery is marked finished once its turn ended, however it ended for the
   user, except when the database failed (a busy one above all, :class:`~core.errors.StoreBusy`):
   the user is told to try again, and the delivery is left for a re-delivery to answer. A
   failed claim is not taken at all. A turn the store stopped with nothing of it left charged
   or stored (its handler refunded, then let the :class:`~core.errors.StoreError` propagate)
   has its claim released (``BaseStore.release_delivery``), so a re-delivery is answered at
   once; one stopped where the handler could not promise that (a refund that failed too) is
   taken over after its lease. A chat turn that answered finished it already, in the same
   transaction as its turns and charge (its :class:`Final` is yielded only after that commit).

Adapters render the events; they never call the store, quota or model themselves. Every
nested event stream is closed as soon as its reader stops (:func:`~core.model.closing_stream`),
so a stream an adapter closes runs the refunds at once, not when the garbage collector finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType

from core.commands import ParsedCommand, command_specs, parse_command
from core.config import BotConfig, ModelSpec
from core.directory import UserDirectory
from core.errors import CommandError, HybotError, StoreBusy, StoreError
from core.i18n import error_message, resolve_language, t
from core.images import FairGovernor
from core.model import ChatModel, closing_stream
from core.quota import QuotaManager
from core.store.base import BaseStore, ChannelPolicy, UserRecord
from core.subject import EffectivePolicy, Subject
from core.text import scrub_surrogates
from core.turns import account, admin, images
from core.turns.base import Handler, Services, Turn, failure
from core.turns.chat import HISTORY_WINDOW, MIN_OUTPUT_TOKENS, ChatTurns
from core.types import Failure, Final, Inbound, Notice, ReplyEvent

__all__ = ["HANDLERS", "HISTORY_WINDOW", "MIN_OUTPUT_TOKENS", "Conversation", "EffectivePolicy"]

log = logging.getLogger(__name__)

HANDLERS: Mapping[str, Handler] = MappingProxyType(
    {
        "about": account.about_command,
        "admin": admin.admin_command,
        "cancel": images.cancel_command,
        "forget": account.forget_command,
        "help": account.help_command,
        "image": images.image_command,
        "lang": account.lang_command,
        "persona": account.persona_command,
        "quota": account.quota_command,
        "reset": account.reset_command,
        "usage": account.usage_command,
    }
)
"""Command name → handler. ``chat`` is the pipeline's own turn; ``ignore`` is silence."""

_ADMIN_ONLY = frozenset(spec.command for spec in command_specs() if spec.admin_only)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _scrubbed(inbound: Inbound) -> Inbound:
    """``inbound`` with every lone surrogate replaced by U+FFFD; all other text (NUL, RTL
    marks, zero-width joiners, emoji, combining marks) is kept exactly as sent."""
    key = inbound.key
    fields = (
        inbound.text,
        inbound.user_id,
        inbound.delivery_id,
        inbound.channel_id,
        inbound.user_name,
        inbound.language,
        key.workspace,
        key.chat,
        key.thread,
        key.user,
    )
    if all(scrub_surrogates(f) is f for f in fields):
        return inbound
    s = scrub_surrogates
    return replace(
        inbound,
        text=s(inbound.text),
        user_id=s(inbound.user_id),
        delivery_id=s(inbound.delivery_id),
        channel_id=s(inbound.channel_id),
        user_name=s(inbound.user_name),
        language=s(inbound.language),
        key=replace(
            key,
            workspace=s(key.workspace),
            chat=s(key.chat),
            thread=s(key.thread),
            user=s(key.user),
        ),
    )


class Conversation:
    """The core. One instance serves every platform adapter of a process.

    ``model`` is anything that satisfies :class:`~core.model.ChatModel` (the Hunyuan client in
    production, a scripted fake in tests). ``clock`` returns the current aware UTC time (tests
    inject a fake one). Use as an async context manager: it starts the sweeper that refunds
    reservations left by a crash and purges expired delivery claims.
    """

    def __init__(
        self,
        *,
        config: BotConfig,
        store: BaseStore,
        model: ChatModel,
        clock: Callable[[], datetime] | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        self._config = config
        self._store = store
        self._model = model
        self._clock = clock or _utcnow
        self._sweep_interval = sweep_interval
        self._quota = QuotaManager(
            config=config.quota, store=store, image_model=config.hunyuan.image_model
        )
        self._names = UserDirectory(store=store)
        self._svc = Services(
            config=config,
            store=store,
            quota=self._quota,
            model=model,
            clock=self._clock,
            images=images.ImageJobs(config=config.images),
            names=self._names,
        )
        self._chat = ChatTurns(
            svc=self._svc,
            governor=FairGovernor(limit=max(1, config.chat_concurrency), max_queue=100_000),
        )
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def quota(self) -> QuotaManager:
        return self._quota

    @property
    def image_governor(self) -> FairGovernor:
        return self._svc.images.governor

    @property
    def chat_governor(self) -> FairGovernor:
        return self._chat.governor

    async def __aenter__(self) -> Conversation:
        await self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="hybot-sweeper")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def sweep(self) -> int:
        """Refund stale reservations, purge expired delivery claims and checkpoint the store's
        write-ahead log once (so message commits rarely pay for a checkpoint)."""
        now = self._clock()
        swept = await self._quota.sweep(now=now)
        await self._store.purge_deliveries(now=now)
        await self._store.checkpoint()
        if swept:
            log.warning("released %d stale quota reservations", swept)
        return swept

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except HybotError:
                log.exception("sweeper failed; will retry")

    # --- the pipeline -------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        """Process one delivery and yield what to show (see the module docstring).

        Guarantees: a ``(platform, delivery_id)`` whose turn ended is never processed again;
        one whose process died mid-turn is processed again only by a re-delivery after the
        lease; one the store stopped with nothing charged or stored is processed again by the
        next re-delivery (its claim released, see step 5); every failure yields a
        :class:`Failure` or :class:`Notice` with a sentence for the user; nothing is charged
        unless a model call succeeded. Lone UTF-16 surrogates in the inbound strings become
        U+FFFD; all other text is kept as sent.
        """
        inbound = _scrubbed(inbound)

        # 1. Claim.
        try:
            turn = await self._claim(inbound)
        except StoreError as err:
            # The claim rolled back (StoreBusy: the database stayed locked; or the store failed
            # outright): the delivery stays unclaimed, so a re-delivery is answered.
            log.warning("%s; delivery %s:%s left unclaimed", err.kind, inbound.platform,
                        inbound.delivery_id)  # fmt: skip
            lang = resolve_language(platform_hint=inbound.language, default=self._config.language)
            yield Failure(error_message(err, lang), code=err.kind)
            return
        if turn is None:
            log.info("duplicate delivery %s:%s ignored", inbound.platform, inbound.delivery_id)
            return

        committed = busy = ended = False
        try:
            try:
                async with closing_stream(self._authorize_parse_dispatch(turn)) as events:
                    async for event in events:
                        # A chat turn's Final comes after its turns, charge and delivery
                        # were committed.
                        committed = committed or isinstance(event, Final)
                        busy = busy or (isinstance(event, Failure) and event.code == StoreBusy.kind)
                        yield event
            except StoreError as err:
                # Nothing of the turn is left charged or stored (the handler's promise, see
                # core.turns.base): release the claim first, so that a re-delivery arriving
                # as soon as the user reads the sentence is answered.
                log.warning("turn stopped (%s); releasing delivery %s:%s", err.kind,
                            inbound.platform, inbound.delivery_id)  # fmt: skip
                await self._release(inbound)
                yield failure(err, self._svc, turn.subject)
                return
            ended = True
        finally:
            # 5. Persist. A process that dies (or a turn cancelled at shutdown) leaves the
            # delivery claimed but not finished, so the platform's re-delivery is answered
            # after the lease instead of being lost; so does a turn the busy database stopped.
            if ended and not committed and not busy:
                await self._finish(inbound)

    async def _release(self, inbound: Inbound) -> None:
        try:
            await self._store.release_delivery(inbound.platform, inbound.delivery_id)
        except StoreError as err:
            # Still claimed, the delivery is taken over by a re-delivery after its lease.
            log.warning("could not release delivery %s:%s (%s)", inbound.platform,
                        inbound.delivery_id, err.kind)  # fmt: skip

    async def _finish(self, inbound: Inbound) -> None:
        try:
            await self._store.finish_delivery(
                inbound.platform, inbound.delivery_id, now=self._clock()
            )
        except StoreError as err:
            # Unfinished, the delivery is taken over by a re-delivery after its lease.
            log.warning("could not finish delivery %s:%s (%s)", inbound.platform,
                        inbound.delivery_id, err.kind)  # fmt: skip

    async def _authorize_parse_dispatch(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        inbound, subject = turn.inbound, turn.subject
        addressed = inbound.is_dm or inbound.mentioned or inbound.reply_to_bot

        # 2. Authorize (worded only for a message addressed to the bot, see below).
        denial = self._authorize(subject)

        # 3. Parse (a button press carries no text: it is its own command).
        try:
            cmd = ParsedCommand("action") if inbound.action else parse_command(inbound.text)
        except CommandError as err:
            if addressed or inbound.text.lstrip().startswith("/"):
                yield Notice(failure(err, self._svc, subject).user_message, private=True)
            return
        if cmd.name == "ignore" or (cmd.name == "chat" and not cmd.text):
            return
        if cmd.name == "chat" and not (addressed or not subject.policy.mention_only):
            return
        addressed = addressed or cmd.name == "action"  # the user pressed one of our buttons
        if denial is None and cmd.name in _ADMIN_ONLY and not subject.is_admin:
            denial = t("admin.only", subject.lang)
        if denial is not None:
            if addressed or cmd.name != "chat":
                yield Notice(denial, private=True)
            return

        # 4. Dispatch.
        handler: Handler | None = HANDLERS.get(cmd.name)
        if cmd.name in ("chat", "action"):
            handler = self._chat.chat if cmd.name == "chat" else self._chat.action
        if handler is None:  # a command the parser knows but this core does not serve
            yield Notice(t("unknown_command", subject.lang, usage="/help"), private=True)
            return
        try:
            async with closing_stream(handler(self._svc, turn, cmd)) as events:
                async for event in events:
                    yield event
        except StoreError:
            raise  # nothing of the turn left behind: handle() releases the claim
        except HybotError as err:
            log.warning("turn failed (%s): %s", err.kind, type(err).__name__)
            yield failure(err, self._svc, subject)

    async def _claim(self, inbound: Inbound) -> Turn | None:
        """Claim the delivery and build its :class:`Turn`; ``None`` for a duplicate."""
        now = self._clock()
        user_id = f"{inbound.platform}:{inbound.user_id}"
        channel = f"{inbound.platform}:{inbound.channel_id or inbound.key.chat}"
        start = await self._store.begin_delivery(
            inbound.platform,
            inbound.delivery_id,
            now=now,
            ttl_seconds=self._config.dedupe_ttl_seconds,
            user_id=user_id,
            channel=channel,
            lease_seconds=self._config.delivery_lease_seconds,
        )
        if not start.claimed:
            return None
        await self._names.saw(user_id, inbound.user_name, now=now)
        subject = self._subject(inbound, user_id, channel, start.user, start.policy)
        # Unique per claim, even for a re-claim within the same millisecond (a released claim).
        stamp = f"{int(now.timestamp() * 1000)}-{uuid.uuid4().hex[:8]}"
        return Turn(inbound=inbound, subject=subject, stamp=stamp)

    def _subject(
        self,
        inbound: Inbound,
        user_id: str,
        channel: str,
        record: UserRecord | None,
        stored: ChannelPolicy | None,
    ) -> Subject:
        is_admin = user_id in self._config.access.admins or (
            record is not None and record.role == "admin"
        )
        lang = resolve_language(
            user_setting=record.language if record else "",
            platform_hint=inbound.language,
            default=self._config.language,
        )
        return Subject(
            user_id=user_id,
            record=record,
            is_admin=is_admin,
            lang=lang,
            platform=inbound.platform,
            conversation=str(inbound.key),
            channel=channel,
            is_dm=inbound.is_dm,
            policy=self._policy(stored),
        )

    def _policy(self, stored: ChannelPolicy | None) -> EffectivePolicy:
        d = self._config.access.channel_defaults
        s = stored or ChannelPolicy(channel="")
        return EffectivePolicy(
            enabled=d.enabled if s.enabled is None else s.enabled,
            mention_only=d.mention_only if s.mention_only is None else s.mention_only,
            images_allowed=d.images_allowed if s.images_allowed is None else s.images_allowed,
            model=(d.model if s.model is None else s.model) or self._config.hunyuan.model,
            persona=d.persona if s.persona is None else s.persona,
        )

    def _authorize(self, subject: Subject) -> str | None:
        """``None`` when allowed, else the sentence to show."""
        access = self._config.access
        if subject.is_admin:
            return None
        record = subject.record
        if subject.user_id in access.deny or (record is not None and record.access == "deny"):
            return t("error.access_denied", subject.lang)
        if access.mode == "allowlist":
            allowed = subject.user_id in access.allow or (
                record is not None and record.access == "allow"
            )
            if not allowed:
                return t("error.access_denied", subject.lang)
        if not subject.is_dm and not subject.policy.enabled:
            return t("channel.disabled", subject.lang)
        return None

    # --- introspection for tests/benchmarks ---------------------------------------------

    def model_spec(self, name: str | None = None) -> ModelSpec:
        return self._config.model_spec(name or self._config.hunyuan.model)
