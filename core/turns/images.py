"""Image jobs: reserve one image, wait in the account-wide fair queue, generate, deliver.

``/image`` (design §2, §4): the job reserves one image before anything else (refused: a
sentence, nothing queued), waits in the :class:`~core.images.FairGovernor` shared by every
user of the account (``ImageQueued`` with the position whenever it changes), runs under
``ImageConfig.deadline_seconds`` counted from the request, and can be cancelled with
``/cancel``. It is charged only once the image was generated and handed on; on any failure,
cancel or deadline the reservation is refunded and the job record says why. "Handed on"
means the adapter asked for the event after ``ImageReady`` (reply-stream rule, ``core.types``):
an image the adapter could not deliver (it closed the stream at that event) is refunded and
ledgered as ``failed:undelivered``; the adapter tells the user. A store failure before the
image was shown (a busy database) is refunded first and then propagated, so the pipeline
releases the delivery's claim and a re-delivery is answered at once; if the refund itself
failed, the failure is worded here and the claim is left to its lease (the sweeper refunds).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

from core.commands import ParsedCommand
from core.config import ImageConfig
from core.errors import Busy, HunyuanTimeout, HybotError, StoreError
from core.i18n import t
from core.images import FairGovernor, Ticket, image_sizes, size_allowed
from core.quota import Charge, QuotaRefusal, Reservation
from core.store.base import ImageJobRecord, ImageJobStatus, Outcome, failed_outcome
from core.turns.base import Services, Turn, failure, reserve_shielded
from core.types import (
    Failure,
    ImageQueued,
    ImageReady,
    ImageResult,
    ImageRunning,
    Notice,
    ReplyEvent,
)

__all__ = ["ImageJobs", "cancel_command", "image_command", "size_rule"]

log = logging.getLogger(__name__)


class ImageJobs:
    """The image queue of one process: the governor plus who holds which ticket (for
    ``/cancel``). All methods run on the event loop thread."""

    def __init__(self, *, config: ImageConfig) -> None:
        self.governor = FairGovernor(
            limit=max(1, config.max_concurrent_jobs), max_queue=config.max_queue
        )
        self._tickets: dict[str, set[Ticket]] = {}
        self._tasks: dict[Ticket, asyncio.Task[ImageResult]] = {}

    def cancel(self, user_id: str) -> bool:
        """Cancel the user's queued and running image jobs. ``True`` if there were any."""
        tickets = list(self._tickets.get(user_id, ()))
        for ticket in tickets:
            self.governor.cancel(ticket)
            task = self._tasks.get(ticket)
            if task is not None:
                task.cancel()
        return bool(tickets)

    def track(self, ticket: Ticket, task: asyncio.Task[ImageResult]) -> None:
        """Remember the running generation of ``ticket`` so ``/cancel`` can stop it."""
        self._tasks[ticket] = task

    def join(self, user_id: str, job_id: str) -> Ticket:
        """A ticket in the fair queue for ``user_id`` (raises ``Busy`` when the queue is full)."""
        ticket = self.governor.join(user=user_id, job_id=job_id)
        self._tickets.setdefault(user_id, set()).add(ticket)
        return ticket

    def leave(self, user_id: str, ticket: Ticket) -> None:
        """Release ``ticket`` (its slot or its place in the queue). Idempotent."""
        self.governor.release(ticket)
        self._tasks.pop(ticket, None)
        tickets = self._tickets.get(user_id)
        if tickets is not None:
            tickets.discard(ticket)
            if not tickets:
                del self._tickets[user_id]


def size_rule(svc: Services, lang: str) -> str:
    """The configured image model's size rule in ``lang``: its list of sizes, or its range."""
    hy = svc.config.hunyuan
    return image_sizes(api=hy.image_api, model=hy.image_model) or t("image.sizes_range", lang)


async def cancel_command(
    svc: Services, turn: Turn, cmd: ParsedCommand
) -> AsyncIterator[ReplyEvent]:
    """``/cancel``: cancel the user's image jobs."""
    done = svc.images.cancel(turn.subject.user_id)
    yield Notice(t("cancel.done" if done else "cancel.nothing", turn.subject.lang))


async def image_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """``/image [--size WxH] [--style S] <prompt>`` (see the module docstring)."""
    subject = turn.subject
    lang = subject.lang
    cfg = svc.config.images
    hy = svc.config.hunyuan
    if not subject.policy.images_allowed and not subject.is_admin:
        yield Notice(t("image.not_allowed", lang))
        return
    size = cmd.options.get("size", cfg.default_size)
    if not size_allowed(size, api=hy.image_api, model=hy.image_model):
        sizes = size_rule(svc, lang)
        yield Notice(t("image.bad_size", lang, model=hy.image_model, sizes=sizes), private=True)
        return
    now = svc.clock()
    decision = await reserve_shielded(
        svc, svc.quota.reserve_image(subject, reservation_id=turn.reservation_id("image"), now=now)
    )
    if isinstance(decision, QuotaRefusal):
        yield failure(decision.error(), svc, subject)
        return
    reservation = decision
    job = ImageJobRecord(
        job_id=uuid.uuid4().hex[:12],
        user_id=subject.user_id,
        conversation=subject.conversation,
        prompt=cmd.text,
        size=size,
        status="queued",
        created_at=now,
    )
    jobs = svc.images
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.deadline_seconds
    ticket: Ticket | None = None
    outcome: str = Outcome.CANCELLED
    shown = closed = False
    # From here on every exit settles the reservation exactly once (the finally below).
    try:
        await svc.store.put_image_job(job)
        try:
            ticket = jobs.join(subject.user_id, job.job_id)
        except Busy:
            outcome = failed_outcome("busy")
            yield Failure(t("image.too_many", lang), code="busy")
            return
        last = -1
        while not ticket.granted:
            if ticket.cancelled:
                break
            pos = jobs.governor.position(ticket)
            if pos != last and pos > 0:
                last = pos
                yield ImageQueued(pos, job.job_id, lang)
            remaining = deadline - loop.time()
            if remaining <= 0 or not await jobs.governor.wait_change(ticket, max_wait=remaining):
                raise HunyuanTimeout("image job waited past its deadline")
        if ticket.cancelled:
            yield Notice(t("cancel.done", lang))
            return
        # Announced the moment the slot is granted, before the bookkeeping write: a queued job
        # announces its place at once too, so the order users see follows the queue's order.
        yield ImageRunning(job.job_id, lang)
        await svc.store.put_image_job(replace(job, status="running"))
        task: asyncio.Task[ImageResult] = asyncio.create_task(
            svc.model.generate_image(
                cmd.text,
                size=size,
                style=cmd.options.get("style"),
                ai_mark=cfg.ai_mark,
                footnote=cfg.footnote if cfg.ai_mark else None,
            )
        )
        jobs.track(ticket, task)
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
        mark = t("image.mark", lang) if cfg.ai_mark else ""
        caption = t("image.caption", lang, prompt=cmd.text[:900], mark=mark)
        # Charged only once the adapter asks for the next event, i.e. it delivered the image.
        # If it could not, it closes the stream here (GeneratorExit at this yield) or the turn
        # is cancelled: the finally below refunds and records the failure instead.
        outcome = failed_outcome("undelivered")
        yield ImageReady(result.data, result.mime, caption, job.job_id, lang)
        shown = True
        outcome = Outcome.OK
        await svc.quota.settle(reservation, Charge(images=1))
        await svc.store.put_image_job(replace(job, status="done", finished_at=svc.clock()))
    except HybotError as err:
        outcome = failed_outcome(err.kind)
        if isinstance(err, StoreError) and not shown:
            closed = True
            if await asyncio.shield(_failed(svc, reservation, job, outcome)):
                raise  # refunded, nothing shown: the pipeline releases the claim
        yield failure(err, svc, subject)
    finally:
        if ticket is not None:
            jobs.leave(subject.user_id, ticket)
        if outcome != Outcome.OK and not closed:
            await asyncio.shield(_failed(svc, reservation, job, outcome))


async def _failed(
    svc: Services, reservation: Reservation, job: ImageJobRecord, outcome: str
) -> bool:
    """Refund and record why; ``True`` when the refund was done. A store that fails here
    leaves what it could not do to the sweeper (the refund, or ending the job record)."""
    status: ImageJobStatus = "cancelled" if outcome == Outcome.CANCELLED else "failed"
    try:
        await svc.quota.refund(reservation, outcome=outcome)
    except StoreError as err:
        log.warning("image job %s: refund failed (%s); the sweeper ends it", job.job_id, err.kind)
        return False
    try:
        await svc.store.put_image_job(
            replace(job, status=status, finished_at=svc.clock(), error=outcome)
        )
    except StoreError as err:
        log.warning("image job %s: not ended (%s); the sweeper ends it", job.job_id, err.kind)
    return True
