"""Frozen value types that cross layers.

Everything an adapter hands to the core, everything the core hands back, and everything the
Hunyuan client returns is one of these slotted, frozen dataclasses. No loose dicts cross a layer.

Contracts:
- :class:`ConversationKey` identifies one conversation context. Its string form (``str(key)``)
  is stable and is what the store indexes; adapters build keys, the core never parses platform ids.
- :class:`Inbound` is one platform delivery. ``delivery_id`` is the platform's own id for the
  delivery (Telegram ``update_id``, Slack ``event_id``); the core claims it before any charge.
- Reply events (:data:`ReplyEvent`) are yielded by ``Conversation.handle`` in order; adapters render
  them and decide nothing. An adapter asks for the next event only after it has shown the one
  before; when showing an event fails it closes the stream instead (``aclose``), so the core
  knows that event never reached the user (an ``ImageReady`` that was not delivered is refunded).
- Buttons: a :class:`Final` may carry :class:`Button` s (regenerate, new chat). Pressing one
  comes back as an :class:`Inbound` whose ``action`` is an :class:`Action` with the button's
  ``payload``; the core decides whether the press is still valid (stale after ``/reset``).
- Platform syntax never reaches the core: an adapter resolves mentions to ``platform:id``
  strings (``Inbound.mentions``, and in the text), strips its own ``@botname`` from commands
  and drops commands addressed to another bot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "Action",
    "ActionKind",
    "Button",
    "ChatChunk",
    "ChatMessage",
    "ChatResult",
    "ConversationKey",
    "Failure",
    "Final",
    "ImageQueued",
    "ImageReady",
    "ImageResult",
    "ImageRunning",
    "Inbound",
    "Notice",
    "Partial",
    "ReplyEvent",
    "Retract",
    "Role",
    "Typing",
    "Usage",
]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation lives: platform + workspace/bot + chat + thread/topic (+ user).

    Empty strings mean "not part of the key" (e.g. no thread in a Telegram private chat, no
    user when a group shares one context). ``str(key)`` is a stable, unambiguous encoding.
    """

    platform: str
    workspace: str
    chat: str
    thread: str = ""
    user: str = ""

    def __str__(self) -> str:
        parts = (self.platform, self.workspace, self.chat, self.thread, self.user)
        return "/".join(p.replace("%", "%25").replace("/", "%2F") for p in parts)


ActionKind = Literal["regenerate", "new_chat"]
"""What a button under an answer does."""


@dataclass(frozen=True, slots=True)
class Button:
    """A button under an answer. ``label`` is in the user's language; ``payload`` is an opaque
    token of at most 64 ASCII bytes (Telegram's ``callback_data`` limit) that the core gives
    back in :class:`Action` to check whether the press is still valid."""

    action: ActionKind
    label: str
    payload: str


@dataclass(frozen=True, slots=True)
class Action:
    """A pressed :class:`Button`, delivered as :attr:`Inbound.action`."""

    kind: ActionKind
    payload: str


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message (or button press) delivered by a platform, translated by an adapter.

    ``raw`` keeps the platform payload for audit/debugging; it never influences decisions and is
    excluded from equality. ``language`` is the platform's language hint for the user (e.g.
    Telegram ``language_code``), or ``""``.

    Addressing, resolved by the adapter: ``message_id`` is the platform's id of the user's
    message (Telegram ``message_id``, Slack ``ts``) that an answer replies to, or of the bot's
    message whose button was pressed; ``bot_id`` is the bot's own identity on the platform
    (``platform:id``); ``mentions`` are the ``platform:id`` of every user the message mentions,
    in order, the bot itself excluded. ``action`` is set for a button press (``text`` is then
    ``""``).

    ``command_prefix`` is how a command is typed where this message came from: ``"/"``
    (Telegram, the console, Slack messages) or the platform's command and a space (``"/hy "``
    for Slack's slash command, whose subcommands are the core's commands). The core writes the
    commands it shows (``/help``, usage lines) with it; the text itself still reaches the core
    as ``/<command> ...``.
    """

    platform: str
    delivery_id: str
    key: ConversationKey
    user_id: str
    text: str
    channel_id: str = ""
    user_name: str = ""
    is_dm: bool = False
    mentioned: bool = False
    reply_to_bot: bool = False
    language: str = ""
    received_at: datetime | None = None
    message_id: str = ""
    bot_id: str = ""
    mentions: tuple[str, ...] = ()
    action: Action | None = None
    command_prefix: str = "/"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one model call (``total_tokens`` is what Tencent bills)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message in a chat-completions request (Hunyuan role rules apply to lists of these)."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """One streamed piece of a completion.

    ``delta`` is the new text. ``finish_reason`` is ``None`` until the last chunk (``"stop"``,
    ``"length"``, ``"sensitive"``, ``"tool_calls"``). ``usage`` is cumulative when present.
    """

    delta: str
    finish_reason: str | None = None
    usage: Usage | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A complete model answer."""

    text: str
    usage: Usage
    finish_reason: str
    model: str
    note: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ImageResult:
    """A generated image, already downloaded (result URLs expire within hours)."""

    data: bytes
    mime: str
    width: int
    height: int
    model: str
    revised_prompt: str | None = None
    seed: int | None = None


# --- reply events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Typing:
    """The bot is working; adapters show a typing indicator."""


@dataclass(frozen=True, slots=True)
class Partial:
    """Streamed text so far. ``text`` is the whole answer up to now; ``delta`` the newest piece."""

    text: str
    delta: str


@dataclass(frozen=True, slots=True)
class Final:
    """The finished answer. ``note`` is the model's AI-generated disclaimer, if any;
    ``buttons`` go under the answer (empty: none). ``language`` is the user's language
    (``"en"``/``"zh"``) for any words the adapter adds itself; ``""``: not said, the adapter
    keeps its own (the core always says it)."""

    text: str
    usage: Usage | None = None
    note: str | None = None
    buttons: tuple[Button, ...] = ()
    language: str = ""


@dataclass(frozen=True, slots=True)
class Retract:
    """Text already shown failed moderation: replace it with ``notice``. ``language`` as for
    :class:`Final`."""

    notice: str
    language: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """A message from the bot itself (help, usage, confirmations). ``private``: only the user
    should see it (Slack ephemeral, Telegram DM where possible). ``language`` as for
    :class:`Final` (a ``/lang`` answer carries the new language)."""

    text: str
    private: bool = False
    language: str = ""


@dataclass(frozen=True, slots=True)
class ImageQueued:
    """An image job waits; ``position`` 1 means next in line. ``language`` is the user's
    language (``"en"``/``"zh"``) for any sentence the adapter shows with it."""

    position: int
    job_id: str = ""
    language: str = "en"


@dataclass(frozen=True, slots=True)
class ImageRunning:
    """The image job has started. ``language`` as for :class:`ImageQueued`."""

    job_id: str = ""
    language: str = "en"


@dataclass(frozen=True, slots=True)
class ImageReady:
    """A finished image with its caption (the caption carries the AI-generated disclosure)."""

    data: bytes
    mime: str
    caption: str
    job_id: str = ""
    language: str = "en"


@dataclass(frozen=True, slots=True)
class Failure:
    """Something went wrong; ``user_message`` is safe to show, ``code`` is for logs/metrics.
    ``language`` as for :class:`Final`."""

    user_message: str
    code: str = ""
    language: str = ""


ReplyEvent = (
    Typing | Partial | Final | Retract | Notice | ImageQueued | ImageRunning | ImageReady | Failure
)
