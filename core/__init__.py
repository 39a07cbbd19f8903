"""The platform-neutral core: conversations, quotas, images, storage and the Hunyuan client.

Nothing here imports from ``hybot.adapters`` or ``hybot.bots``, reads the environment, or loads a
platform SDK. Adapters hand :class:`Inbound` messages to :meth:`Conversation.handle` and render
the reply events it yields; the composition root builds :class:`BotConfig`, a store
(:mod:`hybot.core.store`) and a :class:`~hybot.core.hunyuan.HunyuanClient`.
"""

from hybot.core.config import BotConfig
from hybot.core.conversation import Conversation
from hybot.core.errors import HybotError
from hybot.core.keys import conversation_key
from hybot.core.types import (
    ConversationKey,
    Failure,
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
)

__all__ = [
    "BotConfig",
    "Conversation",
    "ConversationKey",
    "Failure",
    "Final",
    "HybotError",
    "ImageQueued",
    "ImageReady",
    "ImageRunning",
    "Inbound",
    "Notice",
    "Partial",
    "ReplyEvent",
    "Retract",
    "Typing",
    "conversation_key",
]
