"""The chat turn, and the buttons under its answer (regenerate, new chat).

A chat turn, under the conversation's lock (so two quick messages never reach Hunyuan as two
user turns in a row): idle expiry, **build context** (an input too long is refused before
anything is charged), **reserve** quota for the prompt plus the output budget (a budget that no
longer fits shrinks to what the quota has left, down to :data:`MIN_OUTPUT_TOKENS`), **call**
the model streaming (``Partial`` events), then **commit** both turns and the real usage in one
call (``QuotaManager.commit_turn``) and yield the :class:`~core.types.Final`. On any failure
the reservation is refunded and no turn is stored, so history stays consistent. The ``Final``
is yielded only after the commit, which also finished the delivery. An answer cut by its
``max_tokens`` (finish reason ``length``) says so, and why: the user's remaining quota or the
model's maximum. An answer withdrawn as ``sensitive`` is refunded to the user, and the ledger
records what the service billed for it (its usage, else the estimate of what streamed).

Buttons: every answer's ``Final`` carries "Regenerate" and "New chat". Their payload
(:func:`answer_payload`, ≤ 64 ASCII bytes) names the answer: the conversation's epoch and a
digest of the answer turn. A press is valid only while that answer is still the newest of the
current epoch; otherwise (after ``/reset``, a newer answer or a regeneration) it is stale and
yields a notice that changes nothing.

- *Regenerate* re-asks the last user turn as a new, separately charged turn whose answer
  replaces the last one in the stored context. The store appends turns and never rewrites
  them, so the replacement is a new epoch holding the earlier turns (those of the context
  window, :data:`HISTORY_WINDOW`) and the new exchange; the old epoch stays stored for audit
  until ``/forget``, like any epoch after ``/reset``.
- *New chat* starts a new epoch, like ``/reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from core.commands import ParsedCommand
from core.config import ModelSpec
from core.context import HUNYUAN_MAX_MESSAGES, ContextPlan, build_context
from core.errors import HybotError, InputTooLong, StoreBusy, StoreError, UpstreamError
from core.i18n import t
from core.images import FairGovernor
from core.model import closing_stream
from core.quota import Charge, QuotaRefusal, Reservation
from core.store.base import Outcome, TurnRecord, failed_outcome
from core.tokens import estimate_tokens
from core.turns.base import Services, Turn, failure
from core.types import (
    Action,
    Button,
    Final,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
    Usage,
)

__all__ = ["HISTORY_WINDOW", "MIN_OUTPUT_TOKENS", "ChatTurns", "answer_payload"]

log = logging.getLogger(__name__)

#: Most turns read from the store to build one context. Hunyuan takes at most 40 messages, so
#: older turns could never be sent; the bound keeps context assembly independent of how long
#: the stored history is.
HISTORY_WINDOW = HUNYUAN_MAX_MESSAGES

#: The smallest output budget worth calling the model for when a quota is nearly spent.
MIN_OUTPUT_TOKENS = 256


def answer_payload(conversation: str, epoch: int, answer: TurnRecord) -> str:
    """The button payload naming ``answer`` (an assistant turn) of ``epoch``: ``"<epoch>:<16
    hex digits>"`` (a digest of the conversation, the epoch and the answer's delivery id, which
    is unique per answer), ASCII and at most 64 bytes whatever the ids look like."""
    basis = f"{conversation}\n{epoch}\n{answer.delivery_id}"
    digest = hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{epoch}:{digest}"


class ChatTurns:
    """Chat turns and answer buttons over the shared :class:`Services`; ``governor`` bounds
    the chat calls in flight across all conversations (Hunyuan's per-account limit)."""

    def __init__(self, *, svc: Services, governor: FairGovernor) -> None:
        self._svc = svc
        self._gov = governor

    @property
    def governor(self) -> FairGovernor:
        return self._gov

    # --- a chat message -------------------------------------------------------------------

    async def chat(
        self, svc: Services, turn: Turn, cmd: ParsedCommand
    ) -> AsyncIterator[ReplyEvent]:
        """Answer ``cmd.text`` in the turn's conversation (see the module docstring)."""
        subject = turn.subject
        key = subject.conversation
        config = svc.config
        async with svc.store.conversation_lock(key):
            now = svc.clock()
            state, stored = await svc.store.load_context(key, limit=HISTORY_WINDOW)
            epoch = state.epoch
            idle = timedelta(minutes=config.idle_reset_minutes)
            if (
                config.idle_reset_minutes > 0
                and state.last_active_at is not None
                and now - state.last_active_at > idle
            ):
                epoch = await svc.store.new_epoch(key)
                stored = []  # a new epoch starts with no turns
                minutes = int(config.idle_reset_minutes)
                idle_note = t("context.idle_reset", subject.lang, minutes=minutes)
                yield Notice(idle_note, language=subject.lang)
            persona = state.persona or subject.policy.persona or config.persona or None
            async with closing_stream(
                self._ask(turn, text=cmd.text, persona=persona, history=stored, epoch=epoch,
                          now=now, carry=None)
            ) as events:  # fmt: skip
                async for event in events:
                    yield event

    # --- a pressed button -----------------------------------------------------------------

    async def action(
        self, svc: Services, turn: Turn, cmd: ParsedCommand
    ) -> AsyncIterator[ReplyEvent]:
        """Run the button press in ``turn.inbound.action`` (see the module docstring)."""
        action = turn.inbound.action
        if action is None:  # pragma: no cover - the pipeline routes only presses here
            return
        subject = turn.subject
        key = subject.conversation
        async with svc.store.conversation_lock(key):
            now = svc.clock()
            state, stored = await svc.store.load_context(key, limit=HISTORY_WINDOW)
            if not _current(action, key, state.epoch, stored):
                yield Notice(t("action.stale", subject.lang), private=True, language=subject.lang)
                return
            if action.kind == "new_chat":
                await svc.store.new_epoch(key)
                yield Notice(t("reset.done", subject.lang), language=subject.lang)
                return
            # Regenerate: stored ends with (user, assistant); ask the user turn again.
            history, asked = list(stored[:-2]), stored[-2]
            persona = state.persona or subject.policy.persona or svc.config.persona or None
            async with closing_stream(
                self._ask(turn, text=asked.content, persona=persona, history=history,
                          epoch=state.epoch, now=now, carry=history)
            ) as events:  # fmt: skip
                async for event in events:
                    yield event

    # --- shared -------------------------------------------------------------------------

    async def _ask(
        self,
        turn: Turn,
        *,
        text: str,
        persona: str | None,
        history: Sequence[TurnRecord],
        epoch: int,
        now: datetime,
        carry: Sequence[TurnRecord] | None,
    ) -> AsyncIterator[ReplyEvent]:
        """Build the context, reserve, then stream and commit (:meth:`_answer`). ``carry``:
        the turns a regenerated answer keeps (its exchange goes to a new epoch after them)."""
        svc = self._svc
        subject = turn.subject
        spec = svc.config.model_spec(subject.policy.model)
        try:
            plan = build_context(
                persona=persona,
                history=history,  # system turns are skipped there
                user_text=text,
                spec=spec,
                max_output_tokens=spec.max_output_tokens,
            )
        except InputTooLong as err:
            yield failure(err, svc, subject, prefix=turn.inbound.command_prefix)
            return
        decision = await self._reserve_shielded(turn, spec, plan, now)
        if isinstance(decision, QuotaRefusal):
            needed = plan.prompt_tokens + MIN_OUTPUT_TOKENS if decision.metric == "tokens" else None
            yield failure(
                decision.error(needed=needed), svc, subject, prefix=turn.inbound.command_prefix
            )
            return
        reservation, max_out = decision
        # From here on _answer owns the reservation: every exit from it settles exactly once
        # (it yields Typing itself, so a stream closed at the first event is refunded too).
        async with closing_stream(
            self._answer(turn, text=text, spec=spec, plan=plan, reservation=reservation,
                         max_out=max_out, epoch=epoch, asked_at=now, carry=carry)
        ) as events:  # fmt: skip
            async for event in events:
                yield event

    async def _reserve_shielded(
        self, turn: Turn, spec: ModelSpec, plan: ContextPlan, now: datetime
    ) -> tuple[Reservation, int] | QuotaRefusal:
        """:meth:`_reserve`, finished even if this task is cancelled meanwhile (SIGTERM drain):
        a reservation the store committed after the cancellation is refunded at once instead
        of waiting for the sweeper."""
        task = asyncio.ensure_future(self._reserve(turn, spec, plan, now))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                decision = await task
                if not isinstance(decision, QuotaRefusal):
                    await self._svc.quota.refund(decision[0], outcome=Outcome.CANCELLED)
            raise

    async def _reserve(
        self, turn: Turn, spec: ModelSpec, plan: ContextPlan, now: datetime
    ) -> tuple[Reservation, int] | QuotaRefusal:
        """Reserve the prompt plus the model's output budget; when a token limit leaves less
        than that but still room for a useful answer, reserve what is left and ask the model
        for a shorter answer instead of refusing. Returns the reservation and ``max_tokens``,
        or the refusal to word for the user."""
        quota = self._svc.quota
        max_out = spec.max_output_tokens
        rid = turn.reservation_id("chat")
        decision = await quota.reserve_chat(
            turn.subject, reservation_id=rid, model=spec, tokens=plan.prompt_tokens + max_out,
            now=now,
        )  # fmt: skip
        if isinstance(decision, Reservation):
            return decision, max_out
        fit = decision.remaining - plan.prompt_tokens
        if decision.metric != "tokens" or fit < MIN_OUTPUT_TOKENS:
            return decision
        max_out = min(max_out, fit)
        retry = await quota.reserve_chat(
            turn.subject, reservation_id=rid, model=spec, tokens=plan.prompt_tokens + max_out,
            now=now,
        )  # fmt: skip
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
        carry: Sequence[TurnRecord] | None,
    ) -> AsyncIterator[ReplyEvent]:
        """Stream the model's answer, then commit it (or refund: every path settles once)."""
        svc = self._svc
        subject = turn.subject
        key = subject.conversation
        settled = new_epoch = False
        try:
            yield Typing()
            answer = ""
            usage: Usage | None = None
            note: str | None = None
            finish = ""
            async with self._gov.slot(user=subject.user_id):
                stream = svc.model.stream_chat(plan.messages, model=spec.name, max_tokens=max_out)
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
            tokens_in = usage.prompt_tokens if usage else plan.prompt_tokens
            tokens_out = usage.completion_tokens if usage else estimate_tokens(answer)
            if finish == "sensitive":
                # Withdrawn: the user is not charged, but the service billed the account for
                # the call, so the ledger records its usage (or the estimate of what streamed).
                settled = True
                await svc.quota.refund(
                    reservation,
                    outcome=failed_outcome("moderation"),
                    billed=Charge(tokens_in=tokens_in, tokens_out=tokens_out),
                    model=spec,
                )
                yield Retract(t("retract.notice", subject.lang), language=subject.lang)
                return
            if not answer.strip():
                raise UpstreamError("the model returned an empty answer")
            done_at = svc.clock()
            delivery_id = turn.inbound.delivery_id
            exchange = [
                TurnRecord("user", text, subject.user_id, estimate_tokens(text), asked_at,
                           delivery_id),
                TurnRecord("assistant", answer, subject.user_id, tokens_out, done_at,
                           delivery_id),
            ]  # fmt: skip
            if carry is not None:  # a regenerated answer replaces the last one: a new epoch
                new_epoch = True
                epoch = await svc.store.new_epoch(key)
                if carry:
                    await svc.store.append_turns(key, epoch, carry, active_at=asked_at)
            try:
                await svc.quota.commit_turn(
                    reservation,
                    Charge(tokens_in=tokens_in, tokens_out=tokens_out),
                    model=spec,
                    conversation=key,
                    epoch=epoch,
                    turns=exchange,
                    active_at=done_at,
                    delivery=(turn.inbound.platform, delivery_id),
                )
            except StoreBusy:
                raise  # nothing of the commit was written: refunded below
            except StoreError:
                # The commit may or may not have landed; the sweeper settles what stayed open.
                settled = True
                raise
            settled = True
            yield Final(
                answer + _cut_notice(finish, max_out, spec, subject.lang),
                usage or Usage(tokens_in, tokens_out, tokens_in + tokens_out),
                note if svc.config.show_note else None,
                buttons=_buttons(subject.lang, answer_payload(key, epoch, exchange[1])),
                language=subject.lang,
            )
        except HybotError as err:
            if not settled:
                settled = True
                refunded = await _refund_or_leave(svc, reservation, failed_outcome(err.kind))
                if refunded and isinstance(err, StoreError) and not new_epoch:
                    # Refunded, and nothing of the turn stored: the pipeline words the error
                    # and releases the claim, so a re-delivery is answered at once.
                    raise
            yield failure(err, svc, subject, prefix=turn.inbound.command_prefix)
        finally:
            if not settled:
                # Cancelled or closed mid-call: give the reservation back before leaving.
                await asyncio.shield(svc.quota.refund(reservation, outcome=Outcome.CANCELLED))


async def _refund_or_leave(svc: Services, reservation: Reservation, outcome: str) -> bool:
    """Refund (``True``); when the store itself is failing, leave the reservation to the
    sweeper (``False``)."""
    try:
        await svc.quota.refund(reservation, outcome=outcome)
    except StoreError as err:
        log.warning("refund failed (%s); the sweeper will release it", err.kind)
        return False
    return True


def _cut_notice(finish: str, max_out: int, spec: ModelSpec, lang: str) -> str:
    """For an answer cut by ``max_tokens`` (finish reason ``length``): why it was cut. The
    budget was the model's maximum unless the user's remaining quota shrank it."""
    if finish != "length":
        return ""
    if max_out < spec.max_output_tokens:
        return t("answer.cut_quota", lang)
    return t("answer.cut_model", lang, tokens=spec.max_output_tokens)


def _buttons(lang: str, payload: str) -> tuple[Button, ...]:
    return (
        Button("regenerate", t("button.regenerate", lang), payload),
        Button("new_chat", t("button.new_chat", lang), payload),
    )


def _current(action: Action, key: str, epoch: int, stored: Sequence[TurnRecord]) -> bool:
    """Whether ``action`` names the newest answer of the current ``epoch``."""
    if len(stored) < 2 or stored[-1].role != "assistant" or stored[-2].role != "user":
        return False
    return action.payload == answer_payload(key, epoch, stored[-1])
