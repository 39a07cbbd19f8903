"""TEMPORARY stand-ins for Contract 1 names not yet on main (``adapters.base.MessageRef``,
``AdapterLimits``, ``core.errors.PlatformError``, ``PlatformRetryAfter``), with the exact shapes
the brief gives. Deleted, and imports switched, as soon as the adapter helper's work lands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import HybotError

__all__ = ["AdapterLimits", "MessageRef", "PlatformError", "PlatformRetryAfter"]


@dataclass(frozen=True, slots=True)
class MessageRef:
    chat: str
    id: str
    thread: str = ""


@dataclass(frozen=True, slots=True)
class AdapterLimits:
    max_text_units: int
    unit: Literal["utf16", "chars"]
    min_edit_interval: float
    caption_units: int
    typing_interval: float = 4.0
    stream: bool = True


class PlatformError(HybotError):
    kind = "platform"
    default_user_message = "The chat platform failed to deliver a message. Please try again."


class PlatformRetryAfter(PlatformError):
    retryable = True

    def __init__(self, message: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(message or f"the platform asked to retry after {retry_after} s")
        self.retry_after = retry_after
