"""``/admin``: grants, limits, access, roles, reports and channel policy (admins only).

The pipeline lets only admins reach :func:`admin_command`. User arguments are resolved by
:class:`~core.directory.UserDirectory`: a ``platform:id`` (adapters write mentions so) or the
name of exactly one user seen on this platform (recorded in the store, so it survives a
restart); a name nobody has is answered "unknown user", a name several users share "ambiguous,
write platform:id", and nothing changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from core.commands import ParsedCommand
from core.config import LIMIT_NAMES, LimitSet
from core.errors import CommandError, StoreError
from core.i18n import t, t_count
from core.quota import UNLIMITED, usage_report
from core.store.base import Access, ChannelPolicy, UserRecord
from core.turns.account import persona_refusal
from core.turns.base import Services, Turn, failure
from core.types import Failure, Notice, ReplyEvent

__all__ = ["admin_command"]


async def admin_command(svc: Services, turn: Turn, cmd: ParsedCommand) -> AsyncIterator[ReplyEvent]:
    """Run one ``/admin`` subcommand (shapes in :mod:`core.commands`)."""
    sub, *args = cmd.args
    if sub == "report":
        yield await _report(svc, turn, args)
    elif sub == "channel":
        yield await _channel(svc, turn, args)
    else:
        yield await _user_command(svc, turn, sub, args)


async def _report(svc: Services, turn: Turn, args: list[str]) -> Notice:
    lang = turn.subject.lang
    period = args[0] if args else "day"
    date = args[1] if len(args) > 1 else None
    rows = await usage_report(
        svc.store,
        period=period,
        date=date,
        user=None,
        group_by="user",
        timezone=svc.config.quota.timezone,
        now=svc.clock(),
    )
    lines = [t("admin.report_header", lang, period=date or t(f"period.{period}", lang))]
    lines += [
        t(
            "admin.report_line",
            lang,
            key=row.key,
            calls=t_count("count.calls", lang, row.calls),
            tokens_in=row.tokens_in,
            tokens_out=row.tokens_out,
            images=t_count("count.images", lang, row.images),
            cost=f"{row.cost_cny:.4f}",
        )
        for row in rows
    ]
    if not rows:
        lines.append(t("usage.none", lang))
    return Notice("\n".join(lines), private=True, language=lang)


async def _channel(svc: Services, turn: Turn, args: list[str]) -> Notice:
    subject = turn.subject
    lang = subject.lang
    if subject.is_dm:
        return Notice(t("admin.channel_in_dm", lang), private=True, language=lang)
    field_name, value = args[0], args[1] if len(args) > 1 else ""
    policy = await svc.store.get_channel_policy(subject.channel) or ChannelPolicy(
        channel=subject.channel
    )
    flag = value.lower() in ("on", "true", "yes", "1")
    text_value = None if value.lower() in ("clear", "none", "default", "") else value
    if field_name == "enabled":
        policy = replace(policy, enabled=flag)
    elif field_name == "mention_only":
        policy = replace(policy, mention_only=flag)
    elif field_name == "images":
        policy = replace(policy, images_allowed=flag)
    elif field_name == "model":
        policy = replace(policy, model=text_value)
    elif field_name == "persona":
        limit = svc.config.persona_max_chars
        refusal = text_value and persona_refusal(text_value, limit=limit, lang=lang)
        if refusal:
            return Notice(refusal, private=True, language=lang)
        policy = replace(policy, persona=text_value)
    else:
        raise CommandError(t("unknown_command", lang, usage="/help"))
    await svc.store.put_channel_policy(policy)
    return Notice(
        t("admin.done", lang, what=f"{subject.channel} {field_name} = {value}"), language=lang
    )


async def _user_command(svc: Services, turn: Turn, sub: str, args: list[str]) -> Notice | Failure:
    lang = turn.subject.lang
    inbound = turn.inbound
    found = await svc.names.resolve(args[0], platform=inbound.platform, mentions=inbound.mentions)
    target = found.user_id
    if target is None:
        if found.ambiguous:
            users = ", ".join(found.candidates)
            return Notice(
                t("admin.ambiguous_user", lang, user=args[0], users=users),
                private=True,
                language=lang,
            )
        return Notice(t("admin.unknown_user", lang, user=args[0]), private=True, language=lang)
    record = await svc.store.get_user(target) or UserRecord(user_id=target)
    if sub == "grant":
        metric, amount = args[1], int(args[2])
        try:
            await svc.quota.top_up(user_id=target, metric=metric, amount=amount, now=svc.clock())
        except StoreError as err:
            # A top-up is two writes; the first may have landed. Worded here rather than
            # propagated, so the claim is not released and a re-delivery cannot grant twice.
            return failure(err, svc, turn.subject, prefix=turn.inbound.command_prefix)
        return Notice(t("admin.done", lang, what=f"{target} +{amount} {metric}"), language=lang)
    if sub == "limit":
        field_name, raw = args[1], args[2]
        if field_name not in LIMIT_NAMES:
            raise CommandError(t("unknown_command", lang, usage="/help"))
        # "none": no limit for this user; "default": back to the role's or the default limit.
        limit: int | None = {"none": UNLIMITED, "default": None}.get(raw.lower())
        if raw.lower() not in ("none", "default"):
            limit = int(raw)
        limits: LimitSet = replace(record.limits, **{field_name: limit})
        await svc.store.put_user(replace(record, limits=limits))
        return Notice(t("admin.done", lang, what=f"{target} {field_name} = {raw}"), language=lang)
    if sub == "deny" and (target in svc.config.access.admins or record.role == "admin"):
        return Notice(t("admin.deny_admin", lang, user=target), private=True, language=lang)
    if sub in ("allow", "deny"):
        access: Access = "allow" if sub == "allow" else "deny"
        await svc.store.put_user(replace(record, access=access))
        return Notice(t("admin.done", lang, what=f"{target} {sub}"), language=lang)
    if sub == "role":
        await svc.store.put_user(replace(record, role=args[1]))
        return Notice(t("admin.done", lang, what=f"{target} role = {args[1]}"), language=lang)
    raise CommandError(t("unknown_command", lang, usage="/help"))
