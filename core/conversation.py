"""The conversation pipeline: one platform-neutral path from an :class:`Inbound` to reply events.

``Conversation.handle(inbound)`` (design §2), in order:

1. **Claim** the delivery id in the store (insert-if-absent). A repeated delivery yields nothing.
   Nothing is charged and no model is called before the claim. The claim is marked done when
   the turn ends (atomically with the stored turns and the charge on the chat path); a claim
   whose process died mid-turn can be taken over by a re-delivery after
   ``BotConfig.delivery_lease_seconds``, so a crash loses no message and charges nothing twice.
2. **Parse** the command and decide whether the message is addressed to the bot at all (DM,
   mention, reply to the bot, explicit command, or a channel whose policy is not mention-only).
3. **Authorize**: deny list, allow-list mode, channel policy (enabled, images allowed), admin
   role for ``/admin``.
4. For a chat turn, under the conversation's lock (so two quick messages never reach Hunyuan as
   two user turns in a row): idle expiry, **build context** (refusing an input too long before
   anything is charged), **reserve** quota, **call** the model streaming (``Partial`` events),
   **persist** both turns and **settle** with the real usage. On any failure the reservation is
   refunded and no turn is stored, so history stays consistent.
5. Image jobs reserve one image, wait in the account-wide fair queue (``ImageQueued`` with the
   position), run under a deadline, can be cancelled with ``/cancel``, and are charged only on
   success.

Adapters render the events; they never call the store, quota or model themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from core.commands import ParsedCommand, help_text, parse_command
from core.config import LIMIT_NAMES, BotConfig, LimitSet, ModelSpec
from core.context import HUNYUAN_MAX_MESSAGES, ContextPlan, build_context
from core.directory import UserDirectory
from core.errors import (
    Busy,
    CommandError,
    HunyuanTimeout,
    HybotError,
    InputTooLong,
    QuotaExceeded,
    UpstreamError,
)
from core.i18n import error_message, format_reset, limit_label, resolve_language, t
from core.images import FairGovernor, Ticket, image_sizes, size_allowed
from core.model import ChatModel, closing_stream
from core.quota import QuotaManager, Reservation, usage_report
from core.store.base import (
    BaseStore,
    ChannelPolicy,
    ImageJobRecord,
    TurnRecord,
    UserRecord,
)
from core.tokens import estimate_tokens
from core.types import (
    Failure,
    Final,
    ImageQueued,
    ImageReady,
    ImageResult,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
    Usage,
)

__all__ = ["Conversation", "EffectivePolicy"]

log = logging.getLogger(__name__)

#: Most turns read from the store to build one context. Hunyuan takes at most 40 messages, so
#: older turns could never be sent; the bound keeps context assembly independent of how long
#: the stored history is.
HISTORY_WINDOW = HUNYUAN_MAX_MESSAGES

#: The smallest output budget worth calling the model for when a quota is nearly spent.
MIN_OUTPUT_TOKENS = 256


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: Lone UTF-16 surrogates: legal in JSON ("\\ud800") and so in what platforms deliver, but not
#: encodable as UTF-8, so SQLite and HTTP would fail on them.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value


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
    if not any(_LONE_SURROGATE.search(f) for f in fields):
        return inbound
    return replace(
        inbound,
        text=_scrub(inbound.text),
        user_id=_scrub(inbound.user_id),
        delivery_id=_scrub(inbound.delivery_id),
        channel_id=_scrub(inbound.channel_id),
        user_name=_scrub(inbound.user_name),
        language=_scrub(inbound.language),
        key=replace(
            key,
            workspace=_scrub(key.workspace),
            chat=_scrub(key.chat),
            thread=_scrub(key.thread),
            user=_scrub(key.user),
        ),
    )


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """Channel policy after stored overrides are merged over configured defaults."""

    enabled: bool
    mention_only: bool
    images_allowed: bool
    model: str
    persona: str


@dataclass(slots=True)
class _Attempt:
    """One claim of a delivery. ``stamp`` (the claim time) tells attempts apart, so a delivery
    re-claimed after a crash reserves afresh instead of reusing the dead attempt's reservation;
    ``done`` is set once the delivery was marked finished together with the turn."""

    stamp: str
    done: bool = False


@dataclass(frozen=True, slots=True)
class _Who:
    """Everything about the sender that one delivery needs, looked up once."""

    user_id: str
    record: UserRecord | None
    is_admin: bool
    lang: str
    channel: str
    policy: EffectivePolicy
    attempt: _Attempt


def _reservation_id(inbound: Inbound, who: _Who, kind: str) -> str:
    """Quota reservations are keyed by the delivery and its claim attempt: a repeated delivery
    is stopped by the claim, and a re-claim after a crash starts a fresh reservation."""
    return f"{inbound.platform}:{inbound.delivery_id}:{who.attempt.stamp}:{kind}"


class Conversation:
    """The core. One instance serves every platform adapter of a process.

    ``clock`` returns the current aware UTC time (tests inject a fake one). Use as an async
    context manager: it starts the sweeper that refunds reservations left by a crash and
    purges expired delivery claims.
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
        self._names = UserDirectory()
        self._sweep_interval = sweep_interval
        self._quota = QuotaManager(
            config=config.quota, store=store, image_model=config.hunyuan.image_model
        )
        self._chat_gov = FairGovernor(limit=max(1, config.chat_concurrency), max_queue=100_000)
        self._image_gov = FairGovernor(
            limit=max(1, config.images.max_concurrent_jobs), max_queue=config.images.max_queue
        )
        self._image_tickets: dict[str, set[Ticket]] = {}
        self._image_tasks: dict[Ticket, asyncio.Task[ImageResult]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def quota(self) -> QuotaManager:
        return self._quota

    @property
    def image_governor(self) -> FairGovernor:
        return self._image_gov

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

    # --- entry point --------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        """Process one delivery and yield what to show (see the module docstring).

        Guarantees: a ``(platform, delivery_id)`` whose turn ended is never processed again;
        one whose process died mid-turn is processed again only by a re-delivery after the
        lease; every failure yields a :class:`Failure` or :class:`Notice` with a sentence for
        the user; nothing is charged unless a model call succeeded. Lone UTF-16 surrogates in
        the inbound strings become U+FFFD; all other text is kept as sent.
        """
        inbound = _scrubbed(inbound)
        now = self._clock()
        user_id = f"{inbound.platform}:{inbound.user_id}"
        self._names.saw(inbound.platform, inbound.user_name, user_id)
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
            log.info("duplicate delivery %s:%s ignored", inbound.platform, inbound.delivery_id)
            return
        who = self._who(
            inbound,
            user_id=user_id,
            channel=channel,
            record=start.user,
            stored=start.policy,
            now=now,
        )
        ended = False
        try:
            async with closing_stream(self._process(inbound, who)) as events:
                async for event in events:
                    yield event
            ended = True
        finally:
            # A delivery is done once its turn ended, however it ended for the user. A process
            # that dies (or a turn cancelled at shutdown) leaves it claimed but not done, so
            # the platform's re-delivery is answered after the lease instead of being lost.
            if ended and not who.attempt.done:
                await self._store.finish_delivery(
                    inbound.platform, inbound.delivery_id, now=self._clock()
                )

    async def _process(self, inbound: Inbound, who: _Who) -> AsyncIterator[ReplyEvent]:
        addressed = inbound.is_dm or inbound.mentioned or inbound.reply_to_bot
        try:
            cmd = parse_command(inbound.text)
        except CommandError as err:
            if addressed or inbound.text.lstrip().startswith("/"):
                yield Notice(err.user_message, private=True)
            return
        if cmd.name == "ignore" or (cmd.name == "chat" and not cmd.text):
            return
        if cmd.name == "chat" and not (addressed or not who.policy.mention_only):
            return
        denial = self._authorize(who, inbound)
        if denial is not None:
            if addressed or cmd.name != "chat":
                yield Notice(denial, private=True)
            return
        try:
            async with closing_stream(self._dispatch(cmd, inbound, who)) as events:
                async for event in events:
                    yield event
        except HybotError as err:
            log.warning("turn failed (%s): %s", err.kind, type(err).__name__)
            yield Failure(error_message(err, who.lang, tz=self._quota.timezone), code=err.kind)

    def _who(
        self,
        inbound: Inbound,
        *,
        user_id: str,
        channel: str,
        record: UserRecord | None,
        stored: ChannelPolicy | None,
        now: datetime,
    ) -> _Who:
        is_admin = user_id in self._config.access.admins or (
            record is not None and record.role == "admin"
        )
        lang = resolve_language(
            user_setting=record.language if record else "",
            platform_hint=inbound.language,
            default=self._config.language,
        )
        attempt = _Attempt(stamp=str(int(now.timestamp() * 1000)))
        return _Who(user_id, record, is_admin, lang, channel, self._policy(stored), attempt)

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

    def _authorize(self, who: _Who, inbound: Inbound) -> str | None:
        """``None`` when allowed, else the sentence to show."""
        access = self._config.access
        if who.is_admin:
            return None
        denied = who.user_id in access.deny or (
            who.record is not None and who.record.access == "deny"
        )
        if denied:
            return t("error.access_denied", who.lang)
        if access.mode == "allowlist":
            allowed = who.user_id in access.allow or (
                who.record is not None and who.record.access == "allow"
            )
            if not allowed:
                return t("error.access_denied", who.lang)
        if not inbound.is_dm and not who.policy.enabled:
            return t("channel.disabled", who.lang)
        return None

    def _dispatch(
        self, cmd: ParsedCommand, inbound: Inbound, who: _Who
    ) -> AsyncIterator[ReplyEvent]:
        """The events of ``cmd``. A chat turn gets :meth:`_chat`'s own iterator, not one wrapped
        in another generator: every streamed chunk passes each layer once."""
        if cmd.name == "chat":
            return self._chat(cmd.text, inbound, who)
        return self._command(cmd, inbound, who)

    async def _command(
        self, cmd: ParsedCommand, inbound: Inbound, who: _Who
    ) -> AsyncIterator[ReplyEvent]:
        lang = who.lang
        name = cmd.name
        if name == "image":
            async with closing_stream(self._image(cmd, inbound, who)) as events:
                async for event in events:
                    yield event
        elif name in ("help", "start"):
            yield Notice(help_text(lang, is_admin=who.is_admin), private=True)
        elif name == "about":
            yield Notice(
                t(
                    "about.text",
                    lang,
                    model=who.policy.model,
                    image_model=self._config.hunyuan.image_model,
                    registration=self._config.service_registration,
                ).strip()
            )
        elif name == "reset":
            async with self._store.conversation_lock(str(inbound.key)):
                await self._store.new_epoch(str(inbound.key))
            yield Notice(t("reset.done", lang))
        elif name == "forget":
            turns = await self._store.forget_user(who.user_id)
            yield Notice(t("forget.done", lang, turns=turns), private=True)
        elif name == "persona":
            yield await self._persona(cmd, inbound, who)
        elif name == "quota":
            yield Notice(await self._quota_text(who), private=True)
        elif name == "usage":
            yield Notice(await self._usage_text(who), private=True)
        elif name == "cancel":
            yield Notice(t("cancel.done" if self._cancel(who.user_id) else "cancel.nothing", lang))
        elif name == "lang":
            choice = cmd.args[0] if cmd.args else "auto"
            record = who.record or UserRecord(user_id=who.user_id)
            await self._store.put_user(replace(record, language="" if choice == "auto" else choice))
            shown = resolve_language(
                user_setting="" if choice == "auto" else choice,
                platform_hint=inbound.language,
                default=self._config.language,
            )
            name = t(f"lang.name_{choice}" if choice == "auto" else f"lang.name_{shown}", shown)
            yield Notice(t("lang.set", shown, lang=name), private=True)
        elif name == "admin":
            if not who.is_admin:
                yield Notice(t("admin.only", lang), private=True)
                return
            yield await self._admin(cmd, inbound, who)
        else:  # a command the parser knows but this core does not serve
            yield Notice(t("unknown_command", lang, usage="/help"), private=True)

    # --- chat ---------------------------------------------------------------------------

    async def _chat(self, text: str, inbound: Inbound, who: _Who) -> AsyncIterator[ReplyEvent]:
        key = str(inbound.key)
        lang = who.lang
        spec = self._config.model_spec(who.policy.model)
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
            persona = state.persona or who.policy.persona or self._config.persona or None
            try:
                plan = build_context(
                    persona=persona,
                    history=stored,  # system turns are skipped there
                    user_text=text,
                    spec=spec,
                    max_output_tokens=spec.max_output_tokens,
                )
            except InputTooLong as err:
                yield Failure(error_message(err, lang, tz=self._quota.timezone), code=err.kind)
                return
            try:
                reservation, max_out = await self._reserve_chat(inbound, who, spec, plan, now)
            except QuotaExceeded as err:
                yield Failure(error_message(err, lang, tz=self._quota.timezone), code=err.kind)
                return
            yield Typing()
            settled = False
            try:
                answer = ""
                usage: Usage | None = None
                note: str | None = None
                finish = ""
                async with self._chat_gov.slot(user=who.user_id):
                    stream = self._model.stream_chat(
                        plan.messages, model=spec.name, max_tokens=max_out
                    )
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
                    yield Retract(t("retract.notice", lang))
                    return
                if not answer.strip():
                    raise UpstreamError("the model returned an empty answer")
                tokens_in = usage.prompt_tokens if usage else plan.prompt_tokens
                tokens_out = usage.completion_tokens if usage else estimate_tokens(answer)
                done_at = self._clock()
                actual, entry = self._quota.settlement(
                    reservation, tokens_in=tokens_in, tokens_out=tokens_out, images=0, model=spec
                )
                settled = True
                # The turns and the charge land in one transaction: no answer is stored without
                # being billed, and none is billed without being stored.
                await self._store.finish_turn(
                    key,
                    epoch,
                    [
                        TurnRecord("user", text, who.user_id, estimate_tokens(text), now,
                                   inbound.delivery_id),
                        TurnRecord("assistant", answer, who.user_id, tokens_out, done_at,
                                   inbound.delivery_id),
                    ],
                    active_at=done_at,
                    reservation_id=reservation.id,
                    actual=actual,
                    entry=entry,
                    delivery=(inbound.platform, inbound.delivery_id),
                )  # fmt: skip
                who.attempt.done = True
                yield Final(
                    answer,
                    usage or Usage(tokens_in, tokens_out, tokens_in + tokens_out),
                    note if self._config.show_note else None,
                )
            except HybotError as err:
                if not settled:
                    settled = True
                    await self._quota.refund(reservation, outcome=f"failed:{err.kind}")
                yield Failure(error_message(err, lang, tz=self._quota.timezone), code=err.kind)
            finally:
                if not settled:
                    # Cancelled or closed mid-call: give the reservation back before leaving.
                    await asyncio.shield(self._quota.refund(reservation, outcome="cancelled"))

    async def _reserve_chat(
        self, inbound: Inbound, who: _Who, spec: ModelSpec, plan: ContextPlan, now: datetime
    ) -> tuple[Reservation, int]:
        """Reserve the prompt plus the model's output budget; when a token limit leaves less
        than that but still room for a useful answer, reserve what is left and ask the model
        for a shorter answer instead of refusing. Returns the reservation and ``max_tokens``."""
        max_out = spec.max_output_tokens
        for attempt in (1, 2):
            try:
                reservation = await self._quota.reserve_chat(
                    reservation_id=_reservation_id(inbound, who, "chat"),
                    user=who.record,
                    user_id=who.user_id,
                    is_admin=who.is_admin,
                    platform=inbound.platform,
                    chat=str(inbound.key),
                    model=spec,
                    tokens=plan.prompt_tokens + max_out,
                    now=now,
                )
                return reservation, max_out
            except QuotaExceeded as err:
                fit = err.remaining - plan.prompt_tokens
                if "tokens" in err.limit_name and err.needed is None:
                    err.needed = plan.prompt_tokens + MIN_OUTPUT_TOKENS
                if attempt == 2 or "tokens" not in err.limit_name or fit < MIN_OUTPUT_TOKENS:
                    raise
                max_out = min(max_out, fit)
        raise AssertionError("unreachable")

    # --- images -------------------------------------------------------------------------

    async def _image(
        self, cmd: ParsedCommand, inbound: Inbound, who: _Who
    ) -> AsyncIterator[ReplyEvent]:
        lang = who.lang
        cfg = self._config.images
        if not who.policy.images_allowed and not who.is_admin:
            yield Notice(t("image.not_allowed", lang))
            return
        size = cmd.options.get("size", cfg.default_size)
        hy = self._config.hunyuan
        if not size_allowed(size, api=hy.image_api, model=hy.image_model):
            sizes = image_sizes(api=hy.image_api, model=hy.image_model) or t(
                "image.sizes_range", lang
            )
            yield Notice(t("image.bad_size", lang, model=hy.image_model, sizes=sizes), private=True)
            return
        now = self._clock()
        try:
            reservation = await self._quota.reserve_image(
                reservation_id=_reservation_id(inbound, who, "image"),
                user=who.record,
                user_id=who.user_id,
                is_admin=who.is_admin,
                platform=inbound.platform,
                chat=str(inbound.key),
                now=now,
            )
        except QuotaExceeded as err:
            yield Failure(error_message(err, lang, tz=self._quota.timezone), code=err.kind)
            return
        job = ImageJobRecord(
            job_id=uuid.uuid4().hex[:12],
            user_id=who.user_id,
            conversation=str(inbound.key),
            prompt=cmd.text,
            size=size,
            status="queued",
            created_at=now,
        )
        await self._store.put_image_job(job)
        try:
            ticket = self._image_gov.join(user=who.user_id, job_id=job.job_id)
        except Busy:
            await self._quota.refund(reservation, outcome="failed:busy")
            await self._store.put_image_job(replace(job, status="failed", error="queue full"))
            yield Failure(t("image.too_many", lang), code="busy")
            return
        self._image_tickets.setdefault(who.user_id, set()).add(ticket)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.deadline_seconds
        outcome = "cancelled"
        try:
            last = -1
            while not ticket.granted:
                if ticket.cancelled:
                    break
                pos = self._image_gov.position(ticket)
                if pos != last and pos > 0:
                    last = pos
                    yield ImageQueued(pos, job.job_id)
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self._image_gov.wait_change(
                    ticket, max_wait=remaining
                ):
                    raise HunyuanTimeout("image job waited past its deadline")
            if ticket.cancelled:
                yield Notice(t("cancel.done", lang))
                return
            await self._store.put_image_job(replace(job, status="running"))
            yield ImageRunning(job.job_id)
            task: asyncio.Task[ImageResult] = asyncio.create_task(
                self._model.generate_image(
                    cmd.text,
                    size=size,
                    style=cmd.options.get("style"),
                    ai_mark=cfg.ai_mark,
                    footnote=cfg.footnote if cfg.ai_mark else None,
                )
            )
            self._image_tasks[ticket] = task
            try:
                result = await asyncio.wait_for(task, max(0.0, deadline - loop.time()))
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if ticket.cancelled and current is not None and not current.cancelling():
                    yield Notice(t("cancel.done", lang))
                    return
                raise
            except TimeoutError as err:
                raise HunyuanTimeout("image job ran past its deadline") from err
            outcome = "ok"
            await self._quota.settle(reservation, tokens_in=0, tokens_out=0, images=1)
            await self._store.put_image_job(replace(job, status="done", finished_at=self._clock()))
            mark = t("image.mark", lang) if cfg.ai_mark else ""
            yield ImageReady(
                result.data,
                result.mime,
                t("image.caption", lang, prompt=cmd.text[:900], mark=mark),
                job.job_id,
            )
        except HybotError as err:
            outcome = f"failed:{err.kind}"
            yield Failure(error_message(err, lang, tz=self._quota.timezone), code=err.kind)
        finally:
            self._image_gov.release(ticket)
            self._image_tasks.pop(ticket, None)
            tickets = self._image_tickets.get(who.user_id)
            if tickets is not None:
                tickets.discard(ticket)
                if not tickets:
                    del self._image_tickets[who.user_id]
            if outcome != "ok":
                await asyncio.shield(self._image_failed(reservation, job, outcome))

    async def _image_failed(
        self, reservation: Reservation, job: ImageJobRecord, outcome: str
    ) -> None:
        await self._quota.refund(reservation, outcome=outcome)
        status = "cancelled" if outcome == "cancelled" else "failed"
        await self._store.put_image_job(
            replace(job, status=status, finished_at=self._clock(), error=outcome)
        )

    def _cancel(self, user_id: str) -> bool:
        """Cancel the user's queued and running image jobs. ``True`` if there were any."""
        tickets = list(self._image_tickets.get(user_id, ()))
        for ticket in tickets:
            self._image_gov.cancel(ticket)
            task = self._image_tasks.get(ticket)
            if task is not None:
                task.cancel()
        return bool(tickets)

    # --- small commands -----------------------------------------------------------------

    async def _persona(self, cmd: ParsedCommand, inbound: Inbound, who: _Who) -> Notice:
        key = str(inbound.key)
        lang = who.lang
        if cmd.args and cmd.args[0] == "clear":
            await self._store.set_persona(key, None)
            return Notice(t("persona.cleared", lang))
        if cmd.text:
            await self._store.set_persona(key, cmd.text)
            return Notice(t("persona.set", lang))
        state = await self._store.get_conversation(key)
        persona = state.persona or who.policy.persona or self._config.persona
        return Notice(
            t("persona.show", lang, persona=persona) if persona else t("persona.none", lang)
        )

    async def _quota_text(self, who: _Who) -> str:
        lines = [t("quota.header", who.lang)]
        for row in await self._quota.status(
            user=who.record, user_id=who.user_id, is_admin=who.is_admin, now=self._clock()
        ):
            if row.limit is None:
                lines.append(
                    t("quota.unlimited_line", who.lang, name=limit_label(row.name, who.lang))
                )
                continue
            resets = format_reset(row.resets_at, who.lang, tz=self._quota.timezone)
            lines.append(
                t(
                    "quota.status_line",
                    who.lang,
                    name=limit_label(row.name, who.lang),
                    used=row.used,
                    limit=row.limit,
                    remaining=row.remaining,
                    resets=resets,
                )
            )
        return "\n".join(lines)

    async def _usage_text(self, who: _Who) -> str:
        now = self._clock()
        out = []
        for period in ("day", "month"):
            rows = await usage_report(
                self._store,
                period=period,
                date=None,
                user=who.user_id,
                group_by="user",
                timezone=self._config.quota.timezone,
                now=now,
            )
            out.append(t("usage.header", who.lang, period=period))
            if not rows:
                out.append(t("usage.none", who.lang))
            for row in rows:
                out.append(
                    t(
                        "usage.line",
                        who.lang,
                        calls=row.calls,
                        tokens_in=row.tokens_in,
                        tokens_out=row.tokens_out,
                        images=row.images,
                        cost=f"{row.cost_cny:.4f}",
                    )
                )
        return "\n".join(out)

    # --- admin --------------------------------------------------------------------------

    async def _admin(self, cmd: ParsedCommand, inbound: Inbound, who: _Who) -> Notice:
        lang = who.lang
        sub, *args = cmd.args
        if sub == "report":
            period = args[0] if args else "day"
            date = args[1] if len(args) > 1 else None
            rows = await usage_report(
                self._store,
                period=period,
                date=date,
                user=None,
                group_by="user",
                timezone=self._config.quota.timezone,
                now=self._clock(),
            )
            lines = [t("admin.report_header", lang, period=date or period)]
            lines += [
                t(
                    "admin.report_line",
                    lang,
                    key=row.key,
                    calls=row.calls,
                    tokens_in=row.tokens_in,
                    tokens_out=row.tokens_out,
                    images=row.images,
                    cost=f"{row.cost_cny:.4f}",
                )
                for row in rows
            ]
            if not rows:
                lines.append(t("usage.none", lang))
            return Notice("\n".join(lines), private=True)
        if sub == "channel":
            field_name, value = args[0], args[1] if len(args) > 1 else ""
            policy = await self._store.get_channel_policy(who.channel) or ChannelPolicy(
                channel=who.channel
            )
            flag = value.lower() in ("on", "true", "yes", "1")
            text_value = None if value.lower() in ("clear", "none", "default", "") else value
            if field_name == "enabled":
                policy = replace(policy, enabled=flag)
            elif field_name == "mention_only":
                policy = replace(policy, mention_only=flag)
            elif field_name == "images":
                policy = replace(policy, images_allowed=flag)
            elif field_name == "model":
                policy = replace(policy, model=text_value)
            elif field_name == "persona":
                policy = replace(policy, persona=text_value)
            else:
                raise CommandError(t("unknown_command", lang, usage="/help"))
            await self._store.put_channel_policy(policy)
            return Notice(t("admin.done", lang, what=f"{who.channel} {field_name} = {value}"))
        target = self._names.resolve(args[0], platform=inbound.platform, mentions=inbound.mentions)
        if target is None:
            return Notice(t("admin.unknown_user", lang, user=args[0]), private=True)
        record = await self._store.get_user(target) or UserRecord(user_id=target)
        if sub == "grant":
            metric, amount = args[1], int(args[2])
            await self._quota.top_up(
                user_id=target, metric=metric, amount=amount, now=self._clock()
            )
            return Notice(t("admin.done", lang, what=f"{target} +{amount} {metric}"))
        if sub == "limit":
            field_name, raw = args[1], args[2]
            limit: int | None = None if raw.lower() in ("none", "default") else int(raw)
            if field_name not in LIMIT_NAMES:
                raise CommandError(t("unknown_command", lang, usage="/help"))
            limits: LimitSet = replace(record.limits, **{field_name: limit})
            await self._store.put_user(replace(record, limits=limits))
            return Notice(t("admin.done", lang, what=f"{target} {field_name} = {raw}"))
        if sub in ("allow", "deny"):
            await self._store.put_user(replace(record, access=sub))
            return Notice(t("admin.done", lang, what=f"{target} {sub}"))
        if sub == "role":
            await self._store.put_user(replace(record, role=args[1]))
            return Notice(t("admin.done", lang, what=f"{target} role = {args[1]}"))
        raise CommandError(t("unknown_command", lang, usage="/help"))

    # --- introspection for tests/benchmarks ---------------------------------------------

    def model_spec(self, name: str | None = None) -> ModelSpec:
        return self._config.model_spec(name or self._config.hunyuan.model)
