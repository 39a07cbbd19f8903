"""The platform-neutral core: conversations, quotas, images, storage and the Hunyuan client.

Nothing here imports from ``adapters`` or ``bots``, reads the environment, or loads a
platform SDK. Adapters hand :class:`Inbound` messages to :meth:`Conversation.handle` and render
the reply events it yields; the composition root builds :class:`BotConfig`, a store
(:mod:`core.store`) and a :class:`~core.model.ChatModel` (the
:class:`~core.hunyuan.HunyuanClient`).
"""

from core.config import BotConfig
from core.conversation import Conversation
from core.errors import HybotError
from core.keys import conversation_key
from core.model import ChatModel
from core.types import (
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
    "ChatModel",
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
