"""The Telegram adapter, on python-telegram-bot (see ``app`` for the lifecycle, ``convert``
for the addressing rules and ``render`` for the Bot API primitives)."""

from adapters.telegram.app import TelegramAdapter, TelegramOptions
from adapters.telegram.convert import BotIdentity, to_inbound

__all__ = ["BotIdentity", "TelegramAdapter", "TelegramOptions", "to_inbound"]
