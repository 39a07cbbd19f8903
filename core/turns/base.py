"""What every command handler gets: the delivery (:class:`Turn`) and the core's services.

A handler is ``async def handler(svc: Services, turn: Turn, cmd: ParsedCommand)``, an async
generator of :data:`~core.types.ReplyEvent` s. ``Conversation`` looks it up in its handler
table by ``cmd.name`` once the delivery is claimed, authorized and parsed; a handler never
claims, authorizes or finishes deliveries itself, and it turns any failure into a sentence
(:func:`failure`) or lets a :class:`~core.errors.HybotError` propagate for the pipeline to word.
A :class:`~core.errors.StoreError` (a busy database above all) may propagate only when nothing
of the turn stayed charged or stored (its refund done first, no partial write): the pipeline
then releases the delivery's claim (``BaseStore.release_delivery``) so that a re-delivery is
answered at once. A handler that cannot promise that words the failure itself, and the claim is
left to its lease. Only the chat turn yields :class:`~core.types.Final` (the pipeline reads a
``Final`` as "the delivery was finished with the answer's commit"); commands answer with
``Notice`` s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from core.commands import ParsedCommand
from core.config import BotConfig
from core.directory import UserDirectory
from core.errors import HybotError
from core.i18n import error_message, t
from core.images import image_sizes
from core.model import ChatModel
from core.quota import QuotaManager, QuotaRefusal, Reservation
from core.store.base import BaseStore, Outcome
from core.subject import Subject
from core.types import Failure, Inbound, ReplyEvent

if TYPE_CHECKING:
    from core.turns.images import ImageJobs

__all__ = ["Handler", "Services", "Turn", "failure", "reserve_shielded", "size_rule"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One claimed delivery: what arrived, who sent it, and the claim's ``stamp`` (the claim
    time in milliseconds and a random suffix, unique per claim: a delivery re-claimed after a
    crash or a released claim gets a new one, so it reserves afresh instead of reusing the
    earlier attempt's reservation, even within the same millisecond)."""

    inbound: Inbound
    subject: Subject
    stamp: str

    def reservation_id(self, kind: str) -> str:
        """The quota reservation id of this attempt's ``kind`` (``"chat"``/``"image"``)."""
        return f"{self.inbound.platform}:{self.inbound.delivery_id}:{self.stamp}:{kind}"


@dataclass(frozen=True, slots=True)
class Services:
    """The core's collaborators, shared by every handler (built once by ``Conversation``)."""

    config: BotConfig
    store: BaseStore
    quota: QuotaManager
    model: ChatModel
    clock: Callable[[], datetime]
    images: ImageJobs
    names: UserDirectory


class Handler(Protocol):
    def __call__(
        self, svc: Services, turn: Turn, cmd: ParsedCommand, /
    ) -> AsyncIterator[ReplyEvent]: ...


def size_rule(svc: Services, lang: str) -> str:
    """The configured image model's size rule in ``lang``: its list of sizes, or its range."""
    hy = svc.config.hunyuan
    return image_sizes(api=hy.image_api, model=hy.image_model) or t("image.sizes_range", lang)


def failure(err: HybotError, svc: Services, subject: Subject, *, prefix: str = "/") -> Failure:
    """``err`` as a :class:`Failure` in the subject's language (reset times in quota time,
    commands written with ``prefix``, ``Inbound.command_prefix``)."""
    lang = subject.lang
    text = error_message(
        err,
        lang,
        tz=svc.quota.timezone,
        prefix=prefix,
        image_model=svc.config.hunyuan.image_model,
        image_sizes=size_rule(svc, lang),
    )
    return Failure(text, code=err.kind, language=lang)


async def reserve_shielded(
    svc: Services, reserve: Coroutine[Any, Any, Reservation | QuotaRefusal]
) -> Reservation | QuotaRefusal:
    """Await ``reserve`` to its end even if the caller is cancelled meanwhile (SIGTERM drain):
    a reservation the store committed after the cancellation is refunded at once instead of
    waiting for the sweeper, and the cancellation is re-raised."""
    task = asyncio.ensure_future(reserve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            decision = await task
            if isinstance(decision, Reservation):
                await svc.quota.refund(decision, outcome=Outcome.CANCELLED)
        raise
