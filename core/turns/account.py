"""The user's own commands: help, about, reset, forget, persona, quota, usage, language.

Each is a handler (see :mod:`core.turns.base`): it answers with :class:`~core.types.Notice` s
in the user's language and changes only the user's own data or the conversation it was sent in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from core.commands import ParsedCommand, help_text
from core.i18n import format_reset, limit_label, resolve_language, t, t_count
from core.quota import periods
from core.store.base import Outcome, UserRecord
from core.text import control_characters
from core.turns.base import Services, Turn, size_rule
from core.types import Notice, ReplyEvent

__all__ = [
    "about_command",
    "forget_command",
    "help_command",
    "lang_command",
    "persona_command",
    "persona_refusal",
    "quota_command",
    "reset_command",
    "usage_command",
]


async def help_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """``/help`` (and ``/start``): the commands this user may run."""
    subject = turn.subject
    sizes = size_rule(svc, subject.lang)
    text = help_text(
        subject.lang,
        is_admin=subject.is_admin,
        image_sizes=sizes,
        prefix=turn.inbound.command_prefix,
    )
    yield Notice(text, private=True, language=subject.lang)


async def about_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """``/about``: the models in use, the AI-generated-content statement, and the operator's
    own text (``BotConfig.about_extra``, ``HYBOT_ABOUT``) under it when there is one."""
    text = t(
        "about.text",
        turn.subject.lang,
        model=turn.subject.policy.model,
        image_model=svc.config.hunyuan.image_model,
        registration=svc.config.service_registration,
    ).strip()
    extra = svc.config.about_extra.strip()
    yield Notice(f"{text}\n\n{extra}" if extra else text, language=turn.subject.lang)


async def reset_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """``/reset``: a new epoch; earlier turns stay stored but are no longer context."""
    key = turn.subject.conversation
    async with svc.store.conversation_lock(key):
        await svc.store.new_epoch(key)
    yield Notice(t("reset.done", turn.subject.lang), language=turn.subject.lang)


async def forget_command(
    svc: Services, turn: Turn, cmd: ParsedCommand
) -> AsyncIterator[ReplyEvent]:
    """``/forget``: delete every stored turn of this user, in every conversation."""
    turns = await svc.store.forget_user(turn.subject.user_id)
    lang = turn.subject.lang
    text = t("forget.done", lang, turns=t_count("count.stored_messages", lang, turns))
    yield Notice(text, private=True, language=lang)


async def persona_command(
    svc: Services, turn: Turn, cmd: ParsedCommand
) -> AsyncIterator[ReplyEvent]:
    """``/persona``: show, set (``text``) or clear (``args == ("clear",)``) this
    conversation's persona; shown is the one in effect (conversation, channel or default)."""
    key = turn.subject.conversation
    lang = turn.subject.lang
    if cmd.args and cmd.args[0] == "clear":
        await svc.store.set_persona(key, None)
        yield Notice(t("persona.cleared", lang), language=lang)
        return
    if cmd.text:
        refusal = persona_refusal(cmd.text, limit=svc.config.persona_max_chars, lang=lang)
        if refusal is not None:
            yield Notice(refusal, private=True, language=lang)
            return
        await svc.store.set_persona(key, cmd.text)
        yield Notice(t("persona.set", lang), language=lang)
        return
    state = await svc.store.get_conversation(key)
    persona = state.persona or turn.subject.policy.persona or svc.config.persona
    shown = t("persona.show", lang, persona=persona) if persona else t("persona.none", lang)
    yield Notice(shown, language=lang)


def persona_refusal(persona: str, *, limit: int, lang: str) -> str | None:
    """Why ``persona`` may not be set (too long, control characters), or ``None``. A persona
    is sent with every message of the conversation, so its size is paid on every call."""
    if len(persona) > limit:
        return t("persona.too_long", lang, chars=len(persona), limit=limit)
    if control_characters(persona):
        return t("persona.bad_chars", lang)
    return None


async def quota_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """``/quota``: each limit with what is used, what is left and when it resets."""
    lang = turn.subject.lang
    lines = [t("quota.header", lang)]
    for row in await svc.quota.status(turn.subject, now=svc.clock()):
        name = limit_label(row.name, lang)
        if row.limit is None:
            lines.append(t("quota.unlimited_line", lang, name=name))
            continue
        resets = format_reset(row.resets_at, lang, tz=svc.quota.timezone)
        lines.append(
            t(
                "quota.status_line",
                lang,
                name=name,
                used=row.used,
                limit=row.limit,
                remaining=row.remaining,
                resets=resets,
            )
        )
    yield Notice("\n".join(lines), private=True, language=lang)


async def usage_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """``/usage``: today's and this month's answered calls (what was charged: tokens, images,
    cost) and, separately, the calls that failed or were refunded (not charged)."""
    lang = turn.subject.lang
    per = periods(svc.clock(), svc.quota.timezone)
    out = []
    for period, key in (("day", per.day), ("month", per.month)):
        rows = await svc.store.ledger(
            user_id=turn.subject.user_id,
            day=key if period == "day" else None,
            month=key if period == "month" else None,
        )
        out.append(t("usage.header", lang, period=t(f"period.{period}", lang)))
        calls = [
            r
            for r in rows
            if r.outcome != Outcome.RESERVED and not r.outcome.startswith(Outcome.GRANT)
        ]
        if not calls:
            out.append(t("usage.none", lang))
            continue
        answered = [r for r in calls if r.outcome == Outcome.OK]
        out.append(
            t(
                "usage.line",
                lang,
                answered=len(answered),
                failed=len(calls) - len(answered),
                tokens_in=t_count("count.tokens_in", lang, sum(r.tokens_in for r in answered)),
                tokens_out=t_count("count.tokens_out", lang, sum(r.tokens_out for r in answered)),
                images=t_count("count.images", lang, sum(r.images for r in answered)),
                cost=f"{sum(r.cost_cny for r in answered):.4f}",
            )
        )
    yield Notice("\n".join(out), private=True, language=lang)


async def lang_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """``/lang zh|en|auto``: store the user's language; answered in the new language."""
    subject = turn.subject
    choice = cmd.args[0] if cmd.args else "auto"
    setting = "" if choice == "auto" else choice
    record = subject.record or UserRecord(user_id=subject.user_id)
    await svc.store.put_user(replace(record, language=setting))
    shown = resolve_language(
        user_setting=setting,
        platform_hint=turn.inbound.language,
        default=svc.config.language,
    )
    name = t("lang.name_auto" if choice == "auto" else f"lang.name_{shown}", shown)
    yield Notice(t("lang.set", shown, lang=name), private=True, language=shown)
