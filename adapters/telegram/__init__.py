"""The Telegram adapter, on python-telegram-bot (see ``app`` for the lifecycle, ``convert``
for the addressing rules and ``render`` for the Bot API primitives)."""
