"""The conversation pipeline: one platform-neutral path from an :class:`Inbound` to reply events.

``Conversation.handle(inbound)`` (design §2) reads top to bottom:

1. **Claim** the delivery id in the store (insert-if-absent). A repeated delivery yields
   nothing. Nothing is charged and no model is called before the claim. A claim whose process
   died mid-turn can be taken over by a re-delivery after ``BotConfig.delivery_lease_seconds``,
   so a crash loses no message and charges nothing twice. The claim also reads the sender's
   record and the channel policy, which become the :class:`~core.subject.Subject`.
2. **Authorize**: deny list, allow-list mode, channel policy (enabled), admin role for
   admin-only commands.
3. **Parse** the command and decide whether the message is addressed to the bot at all (DM,
   mention, reply to the bot, explicit command, or a channel whose policy is not mention-only).
   Anything not addressed to the bot is ignored silently, denial included.
4. **Dispatch**: a chat turn runs here (:meth:`Conversation._chat`); commands run their
   handler from :data:`HANDLERS` (:mod:`core.turns`).
5. **Persist**: the delivery is marked finished once its turn ended, however it ended for the
   user. A chat turn that answered finished it already, in the same transaction as its turns
   and charge (its :class:`Final` is yielded only after that commit).

The chat turn, under the conversation's lock (so two quick messages never reach Hunyuan as two
user turns in a row): idle expiry, **build context** (an input too long is refused before
anything is charged), **reserve** quota for the prompt plus the output budget (a budget that no
longer fits shrinks to what the quota has left, down to :data:`MIN_OUTPUT_TOKENS`), **call**
the model streaming (``Partial`` events), then **commit** both turns and the real usage in one
call (``QuotaManager.commit_turn``). On any failure the reservation is refunded and no turn is
stored, so history stays consistent.

Adapters render the events; they never call the store, quota or model themselves. Every
nested event stream is closed as soon as its reader stops (:func:`~core.model.closing_stream`),
so a stream an adapter closes runs the refunds at once, not when the garbage collector finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from core.commands import ParsedCommand, command_specs, parse_command
from core.config import BotConfig, ModelSpec
from core.context import HUNYUAN_MAX_MESSAGES, ContextPlan, build_context
from core.directory import UserDirectory
from core.errors import CommandError, HybotError, InputTooLong, UpstreamError
from core.i18n import resolve_language, t
from core.images import FairGovernor
from core.model import ChatModel, closing_stream
from core.quota import Charge, QuotaManager, QuotaRefusal, Reservation
from core.store.base import BaseStore, ChannelPolicy, TurnRecord, UserRecord
from core.subject import EffectivePolicy, Subject
from core.text import scrub_surrogates
from core.tokens import estimate_tokens
from core.turns import account, admin, images
from core.turns.base import Handler, Services, Turn, failure
from core.types import (
    Final,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
    Usage,
)

__all__ = ["HANDLERS", "HISTORY_WINDOW", "MIN_OUTPUT_TOKENS", "Conversation", "EffectivePolicy"]

log = logging.getLogger(__name__)

#: Most turns read from the store to build one context. Hunyuan takes at most 40 messages, so
#: older turns could never be sent; the bound keeps context assembly independent of how long
#: the stored history is.
HISTORY_WINDOW = HUNYUAN_MAX_MESSAGES

#: The smallest output budget worth calling the model for when a quota is nearly spent.
MIN_OUTPUT_TOKENS = 256

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
        self._names = UserDirectory()
        self._svc = Services(
            config=config,
            store=store,
            quota=self._quota,
            model=model,
            clock=self._clock,
            images=images.ImageJobs(config=config.images),
            names=self._names,
        )
        self._chat_gov = FairGovernor(limit=max(1, config.chat_concurrency), max_queue=100_000)
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def quota(self) -> QuotaManager:
        return self._quota

    @property
    def image_governor(self) -> FairGovernor:
        return self._svc.images.governor

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
        lease; every failure yields a :class:`Failure` or :class:`Notice` with a sentence for
        the user; nothing is charged unless a model call succeeded. Lone UTF-16 surrogates in
        the inbound strings become U+FFFD; all other text is kept as sent.
        """
        inbound = _scrubbed(inbound)

        # 1. Claim.
        turn = await self._claim(inbound)
        if turn is None:
            log.info("duplicate delivery %s:%s ignored", inbound.platform, inbound.delivery_id)
            return

        committed = ended = False
        try:
            async with closing_stream(self._authorize_parse_dispatch(turn)) as events:
                async for event in events:
                    # A chat turn's Final comes after its turns, charge and delivery committed.
                    committed = committed or isinstance(event, Final)
                    yield event
            ended = True
        finally:
            # 5. Persist. A process that dies (or a turn cancelled at shutdown) leaves the
            # delivery claimed but not finished, so the platform's re-delivery is answered
            # after the lease instead of being lost.
            if ended and not committed:
                await self._store.finish_delivery(
                    inbound.platform, inbound.delivery_id, now=self._clock()
                )

    async def _authorize_parse_dispatch(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        inbound, subject = turn.inbound, turn.subject
        addressed = inbound.is_dm or inbound.mentioned or inbound.reply_to_bot

        # 2. Authorize (worded only for a message addressed to the bot, see below).
        denial = self._authorize(subject)

        # 3. Parse.
        try:
            cmd = parse_command(inbound.text)
        except CommandError as err:
            if addressed or inbound.text.lstrip().startswith("/"):
                yield Notice(failure(err, self._svc, subject).user_message, private=True)
            return
        if cmd.name == "ignore" or (cmd.name == "chat" and not cmd.text):
            return
        if cmd.name == "chat" and not (addressed or not subject.policy.mention_only):
            return
        if denial is None and cmd.name in _ADMIN_ONLY and not subject.is_admin:
            denial = t("admin.only", subject.lang)
        if denial is not None:
            if addressed or cmd.name != "chat":
                yield Notice(denial, private=True)
            return

        # 4. Dispatch.
        handler = self._chat if cmd.name == "chat" else HANDLERS.get(cmd.name)
        if handler is None:  # a command the parser knows but this core does not serve
            yield Notice(t("unknown_command", subject.lang, usage="/help"), private=True)
            return
        try:
            async with closing_stream(handler(self._svc, turn, cmd)) as events:
                async for event in events:
                    yield event
        except HybotError as err:
            log.warning("turn failed (%s): %s", err.kind, type(err).__name__)
            yield failure(err, self._svc, subject)

    async def _claim(self, inbound: Inbound) -> Turn | None:
        """Claim the delivery and build its :class:`Turn`; ``None`` for a duplicate."""
        now = self._clock()
        user_id = f"{inbound.platform}:{inbound.user_id}"
        channel = f"{inbound.platform}:{inbound.channel_id or inbound.key.chat}"
        self._names.saw(inbound.platform, inbound.user_name, user_id)
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
        subject = self._subject(inbound, user_id, channel, start.user, start.policy)
        return Turn(inbound=inbound, subject=subject, stamp=str(int(now.timestamp() * 1000)))

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

    # --- the chat turn ------------------------------------------------------------------

    async def _chat(
        self, svc: Services, turn: Turn, cmd: ParsedCommand
    ) -> AsyncIterator[ReplyEvent]:
        subject = turn.subject
        key = subject.conversation
        lang = subject.lang
        spec = self._config.model_spec(subject.policy.model)
        async with self._store.conversation_lock(key):
            now = self._clock()
            state, stored = await self._store.load_context(key, limit=HISTORY_WINDOW)
            epoch = state.epoch
            idle = timedelta(minutes=self._config.idle_reset_minutes)
            if (
                self._config.idle_reset_minutes > 0
                and state.last_active_at is not None
                and now - state.last_active_at > idle
            ):
                epoch = await self._store.new_epoch(key)
                stored = []  # a new epoch starts with no turns
                yield Notice(
                    t("context.idle_reset", lang, minutes=int(self._config.idle_reset_minutes))
                )
            persona = state.persona or subject.policy.persona or self._config.persona or None
            try:
                plan = build_context(
                    persona=persona,
                    history=stored,  # system turns are skipped there
                    user_text=cmd.text,
                    spec=spec,
                    max_output_tokens=spec.max_output_tokens,
                )
            except InputTooLong as err:
                yield failure(err, svc, subject)
                return
            decision = await self._reserve_chat(turn, spec, plan, now)
            if isinstance(decision, QuotaRefusal):
                needed = plan.prompt_tokens + MIN_OUTPUT_TOKENS
                yield failure(
                    decision.error(needed=needed if decision.metric == "tokens" else None),
                    svc,
                    subject,
                )
                return
            reservation, max_out = decision
            yield Typing()
            async with closing_stream(
                self._answer(
                    turn,
                    text=cmd.text,
                    spec=spec,
                    plan=plan,
                    reservation=reservation,
                    max_out=max_out,
                    epoch=epoch,
                    asked_at=now,
                )
            ) as events:
                async for event in events:
                    yield event

    async def _reserve_chat(
        self, turn: Turn, spec: ModelSpec, plan: ContextPlan, now: datetime
    ) -> tuple[Reservation, int] | QuotaRefusal:
        """Reserve the prompt plus the model's output budget; when a token limit leaves less
        than that but still room for a useful answer, reserve what is left and ask the model
        for a shorter answer instead of refusing. Returns the reservation and ``max_tokens``,
        or the refusal to word for the user."""
        max_out = spec.max_output_tokens
        decision = await self._quota.reserve_chat(
            turn.subject,
            reservation_id=turn.reservation_id("chat"),
            model=spec,
            tokens=plan.prompt_tokens + max_out,
            now=now,
        )
        if isinstance(decision, Reservation):
            return decision, max_out
        fit = decision.remaining - plan.prompt_tokens
        if decision.metric != "tokens" or fit < MIN_OUTPUT_TOKENS:
            return decision
        max_out = min(max_out, fit)
        retry = await self._quota.reserve_chat(
            turn.subject,
            reservation_id=turn.reservation_id("chat"),
            model=spec,
            tokens=plan.prompt_tokens + max_out,
            now=now,
        )
        return (retry, max_out) if isinstance(retry, Reservation) else retry

    async def _answer(
        self,
        turn: Turn,
        *,
        text: str,
        spec: ModelSpec,
        plan: ContextPlan,
        reservation: Reservation,
        max_out: int,
        epoch: int,
        asked_at: datetime,
    ) -> AsyncIterator[ReplyEvent]:
        """Stream the model's answer, then commit it (or refund: every path settles once)."""
        subject = turn.subject
        settled = False
        try:
            answer = ""
            usage: Usage | None = None
            note: str | None = None
            finish = ""
            async with self._chat_gov.slot(user=subject.user_id):
                stream = self._model.stream_chat(plan.messages, model=spec.name, max_tokens=max_out)
                async with closing_stream(stream) as chunks:
                    async for chunk in chunks:
                        if chunk.note:
                            note = chunk.note
                        if chunk.usage is not None:
                            usage = chunk.usage
                        if chunk.delta:
                            answer += chunk.delta
                            yield Partial(answer, chunk.delta)
                        if chunk.finish_reason:
                            finish = chunk.finish_reason
            if finish == "sensitive":
                settled = True
                await self._quota.refund(reservation, outcome="failed:moderation")
                yield Retract(t("retract.notice", subject.lang))
                return
            if not answer.strip():
                raise UpstreamError("the model returned an empty answer")
            tokens_in = usage.prompt_tokens if usage else plan.prompt_tokens
            tokens_out = usage.completion_tokens if usage else estimate_tokens(answer)
            done_at = self._clock()
            settled = True
            await self._quota.commit_turn(
                reservation,
                Charge(tokens_in=tokens_in, tokens_out=tokens_out),
                model=spec,
                conversation=subject.conversation,
                epoch=epoch,
                turns=[
                    TurnRecord("user", text, subject.user_id, estimate_tokens(text), asked_at,
                               turn.inbound.delivery_id),
                    TurnRecord("assistant", answer, subject.user_id, tokens_out, done_at,
                               turn.inbound.delivery_id),
                ],
                active_at=done_at,
                delivery=(turn.inbound.platform, turn.inbound.delivery_id),
            )  # fmt: skip
            yield Final(
                answer,
                usage or Usage(tokens_in, tokens_out, tokens_in + tokens_out),
                note if self._config.show_note else None,
            )
        except HybotError as err:
            if not settled:
                settled = True
                await self._quota.refund(reservation, outcome=f"failed:{err.kind}")
            yield failure(err, self._svc, subject)
        finally:
            if not settled:
                # Cancelled or closed mid-call: give the reservation back before leaving.
                await asyncio.shield(self._quota.refund(reservation, outcome="cancelled"))

    # --- introspection for tests/benchmarks ---------------------------------------------

    def model_spec(self, name: str | None = None) -> ModelSpec:
        return self._config.model_spec(name or self._config.hunyuan.model)
