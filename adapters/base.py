"""The adapter contract: lifecycle plus rendering of a reply-event stream.

An adapter turns platform traffic into :class:`~core.types.Inbound` values, hands each to
the conversation core, and renders the :data:`~core.types.ReplyEvent` s that come back.
Adapters translate and never decide: no quota, model or store calls happen here.

Habit (design §7.3): the policy lives once in :class:`BaseAdapter` (:meth:`BaseAdapter.dispatch`
always closes the core's event stream, even when rendering fails, so the core's ``finally``
blocks run promptly and nothing is left half-charged); subclasses implement only the platform
primitives :meth:`~BaseAdapter.start`, :meth:`~BaseAdapter.stop` and :meth:`~BaseAdapter.render`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol, Self

from core.types import Inbound, ReplyEvent

__all__ = ["BaseAdapter", "ConversationHandler"]

log = logging.getLogger(__name__)


class ConversationHandler(Protocol):
    """What an adapter needs from the core: ``core.conversation.Conversation`` fits."""

    def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        """Yield the reply events for one inbound message, in order."""
        ...


class BaseAdapter(abc.ABC):
    """Abstract base of every platform adapter; an async context manager.

    ``async with adapter:`` calls :meth:`start`; leaving calls :meth:`stop`. If :meth:`start`
    fails, :meth:`stop` is still called (so partially acquired resources are released) and the
    error propagates. :meth:`stop` must therefore be idempotent and safe after a failed start.
    """

    def __init__(self, *, conversation: ConversationHandler) -> None:
        self._conversation = conversation

    @property
    def conversation(self) -> ConversationHandler:
        return self._conversation

    @abc.abstractmethod
    async def start(self) -> None:
        """Acquire platform resources (connections, webhooks, directories)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Drain in-flight work and release resources. Idempotent."""

    @abc.abstractmethod
    async def render(self, events: AsyncIterator[ReplyEvent], *, inbound: Inbound) -> None:
        """Show ``events`` (the answer to ``inbound``) on the platform, as they arrive.

        Implementations consume ``events`` to the end (or until they fail); they do not need to
        close it: :meth:`dispatch` does.
        """

    async def dispatch(self, inbound: Inbound) -> None:
        """Hand ``inbound`` to the core and render its answer. Called once per delivery."""
        events = self._conversation.handle(inbound)
        try:
            await self.render(events, inbound=inbound)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                # Closing runs the core's cleanup (refund, lock release) when rendering stopped
                # early; a second error from inside it is logged, not raised, so it cannot hide
                # the first one.
                try:
                    await aclose()
                except Exception:
                    log.exception("closing the reply stream failed")

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
