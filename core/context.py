"""Context assembly: which stored turns go to the model with a new message (pure, no I/O).

Called by the chat turn once per message, under the conversation's lock, *before* quota is
reserved (the plan's ``prompt_tokens`` sizes the reservation, and an input too long is refused
with nothing charged) and before the model call. Given the persona, a bounded window of the
conversation's recent turns (oldest first) and the new user text, :func:`build_context`
returns the messages to send.

Guarantees of :func:`build_context` (property-tested in ``tests/unit/test_context.py``):

- the messages satisfy :func:`core.tokens.valid_role_order`
  (``[system?] user (assistant user)*``, no blank content);
- the last message is the user's and its content ends with the new user text (a trailing user
  turn in history, e.g. one whose answer failed, is merged in front of it, as
  :func:`core.tokens.normalize_messages` does);
- ``prompt_tokens <= input_budget(spec, max_output_tokens)`` and ``len(messages) <= max_messages``;
- the history kept is a contiguous run of the newest turns: a turn that does not fit stops the
  walk, so the model never sees a conversation with a hole in the middle;
- :class:`core.errors.InputTooLong` is raised exactly when the persona plus the new text
  alone exceed the budget (the caller then charges nothing).

Token accounting (``prompt_tokens``): every message costs :data:`MESSAGE_OVERHEAD` tokens on top
of its content. Content costs ``HistoryTurn.tokens`` for history turns (a real count when the
store has one) and :func:`core.tokens.estimate_tokens` for the persona and the new text.
Two turns merged into one message cost their parts plus :data:`MERGE_SEPARATOR_TOKENS` for the
blank line joining them (``estimate_tokens(a + "\\n\\n" + b) <= estimate_tokens(a) +
estimate_tokens(b) + 1``), so the figure never under-counts the 1.8/3 estimate of what is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from core.config import ModelSpec
from core.errors import InputTooLong
from core.store.base import TurnRecord
from core.tokens import estimate_tokens
from core.types import ChatMessage, Role

__all__ = [
    "HUNYUAN_MAX_MESSAGES",
    "MERGE_SEPARATOR_TOKENS",
    "MESSAGE_OVERHEAD",
    "ContextPlan",
    "ContextTurn",
    "HistoryTurn",
    "build_context",
    "history_from_records",
    "input_budget",
]

MESSAGE_OVERHEAD = 4
"""Tokens charged per message for role markers and framing (chat templates add a few)."""

MERGE_SEPARATOR_TOKENS = 1
"""Tokens charged for the ``"\\n\\n"`` that joins two merged same-role turns (2 chars ≤ 1)."""

HUNYUAN_MAX_MESSAGES = 40
"""Hunyuan's native ChatCompletions accepts at most 40 messages (reference §3.1)."""

# The roles a history turn may contribute; any other (system) is skipped.
_HISTORY_ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant"}


class ContextTurn(Protocol):
    """What :func:`build_context` reads from a history turn: :class:`HistoryTurn`, or a stored
    :class:`~core.store.base.TurnRecord` as the store returns it (no copy needed).
    Turns whose role is neither ``"user"`` nor ``"assistant"`` are skipped."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...

    @property
    def tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """What the context builder needs from a stored turn.

    ``tokens`` is the turn's known token count, or ``estimate_tokens(content)``; negative values
    are treated as 0. :func:`history_from_records` builds these from stored turns.
    """

    role: Literal["user", "assistant"]
    content: str
    tokens: int


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """The result of :func:`build_context`.

    ``messages`` is ready to send: ``[system?] user (assistant user)*``, ending with the new user
    text. ``prompt_tokens`` is the estimated input size of ``messages`` (see the module
    docstring). ``dropped_turns`` counts history turns left out: those that did not fit the
    budget or the message cap, plus blank turns, turns of other roles (system) and a leading
    assistant turn that normalisation removes.
    """

    messages: tuple[ChatMessage, ...]
    prompt_tokens: int
    dropped_turns: int


def history_from_records(records: Iterable[TurnRecord]) -> list[HistoryTurn]:
    """Stored turns (oldest first, as ``BaseStore.recent_turns`` returns them) as history.

    System turns are skipped (the persona is passed separately); a record without a token
    count (``tokens <= 0``) gets the :func:`estimate_tokens` figure.
    """
    history: list[HistoryTurn] = []
    for record in records:
        if record.role == "system":
            continue
        tokens = record.tokens if record.tokens > 0 else estimate_tokens(record.content)
        history.append(HistoryTurn(record.role, record.content, tokens))
    return history


def input_budget(spec: ModelSpec, max_output_tokens: int) -> int:
    """Input tokens a request may use: ``min(spec.max_input_tokens, spec.context_tokens -
    max_output_tokens)``, never below 0 (a window too small for the output fits no input)."""
    return max(0, min(spec.max_input_tokens, spec.context_tokens - max_output_tokens))


def build_context(
    *,
    persona: str | None,
    history: Sequence[ContextTurn],
    user_text: str,
    spec: ModelSpec,
    max_output_tokens: int,
    max_messages: int = HUNYUAN_MAX_MESSAGES,
) -> ContextPlan:
    """Assemble the messages for one chat turn (see the module docstring for the guarantees).

    ``persona`` (blank or ``None``: no system message) and ``user_text`` are always included;
    ``history`` is oldest first and is walked newest-first only as far as turns fit, so the cost
    is O(turns used). Raises :class:`InputTooLong` when the persona and ``user_text`` alone
    exceed :func:`input_budget`. Raises ``ValueError`` for caller bugs: blank ``user_text`` (the
    caller must not start a model turn for it) or a ``max_messages`` too small to hold the
    mandatory messages.
    """
    if not user_text.strip():
        raise ValueError("build_context needs non-blank user_text")
    budget = input_budget(spec, max_output_tokens)
    system = persona if persona is not None and persona.strip() else None

    mandatory_messages = 2 if system is not None else 1
    if max_messages < mandatory_messages:
        raise ValueError(f"max_messages={max_messages} cannot hold the mandatory messages")

    system_cost = estimate_tokens(system) + MESSAGE_OVERHEAD if system is not None else 0
    mandatory = system_cost + estimate_tokens(user_text) + MESSAGE_OVERHEAD
    if mandatory > budget:
        raise InputTooLong(tokens=mandatory, limit=budget)

    # Kept history turns, newest first, as (role, content, cost). The walk tracks the role of
    # the oldest message so far: a turn of the same role merges into it (a blank line), another
    # role starts a message. Tuples, not objects: this loop runs for every turn of every chat.
    kept: list[tuple[Role, str, int]] = []
    keep = kept.append
    used = mandatory
    message_count = mandatory_messages
    oldest_role: Role = "user"  # the new text is the newest message
    for turn in reversed(history):
        role = _HISTORY_ROLES.get(turn.role)
        if role is None:
            continue  # a system turn: the persona is passed separately
        content = turn.content
        if not content or content.isspace():
            # Normalisation drops blank turns; skipping one keeps the run contiguous.
            continue
        tokens = turn.tokens if turn.tokens > 0 else 0
        if role == oldest_role:
            cost = tokens + MERGE_SEPARATOR_TOKENS
            if used + cost > budget:
                break
        else:
            cost = tokens + MESSAGE_OVERHEAD
            if used + cost > budget or message_count >= max_messages:
                break
            message_count += 1
            oldest_role = role
        keep((role, content, cost))
        used += cost

    # Hunyuan requires the first non-system message to be the user's.
    while kept and kept[-1][0] == "assistant":
        used -= kept.pop()[2]

    # Oldest first, same-role neighbours joined by a blank line, the new text last: the normal
    # form of normalize_messages by construction (the property tests check that
    # normalize_messages leaves the result unchanged, so the two cannot drift apart).
    messages: list[ChatMessage] = []
    if system is not None:
        messages.append(ChatMessage("system", system))
    run_role: Role = "system"  # no run yet
    run_parts: list[str] = []
    for role, content, _ in reversed(kept):
        if role == run_role:
            run_parts.append(content)
            continue
        if run_parts:
            messages.append(ChatMessage(run_role, "\n\n".join(run_parts)))
        run_role, run_parts = role, [content]
    if run_role == "user":
        run_parts.append(user_text)
    else:
        if run_parts:
            messages.append(ChatMessage(run_role, "\n\n".join(run_parts)))
        run_parts = [user_text]
    messages.append(ChatMessage("user", "\n\n".join(run_parts)))

    return ContextPlan(
        messages=tuple(messages),
        prompt_tokens=used,
        dropped_turns=len(history) - len(kept),
    )
