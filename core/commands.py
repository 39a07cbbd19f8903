"""The platform-neutral command set and its parser (pure, no I/O).

``Conversation`` calls :func:`parse_command` on every inbound text (design §2 step 3) and acts on
the :class:`ParsedCommand`; adapters use :func:`command_specs` to register commands (Telegram
``setMyCommands``, Slack slash commands) and everyone uses :func:`help_text` for ``/help``.

Contracts of :func:`parse_command`:

- Text that does not start with ``/`` (or a full-width ``／``) followed by a command word is a
  chat turn: ``ParsedCommand("chat", text=<stripped text>)``. So ``"/etc/hosts is a file"`` is
  chat, not an unknown command. The text may be empty; the caller ignores empty chat turns.
- Text that shows nothing (only whitespace, control and invisible format characters, see
  :func:`core.text.is_blank`) is empty: a blank chat turn has ``text == ""``, a blank
  ``/image`` or ``/ask`` prompt is a usage error, a blank ``/persona`` argument shows the persona.
- ``/cmd@name`` is ``ParsedCommand("ignore")``: stay silent, whatever ``name`` is. Adapters
  resolve addressing (they strip their own ``@botname`` and drop commands for other bots), so a
  command still carrying ``@name`` reached the core by mistake and is not answered.
- Command words are case-insensitive. Free text (a chat prompt, an image prompt, a persona) is
  kept verbatim apart from surrounding whitespace, including newlines and quotes.
- Bad input raises :class:`core.errors.CommandError` and nothing else, whatever the text.
  Its message is ``"Usage: <usage line>"`` and ``usage`` is the usage line; an unknown command
  has ``usage == "/help"`` (so :func:`core.i18n.error_message` says so).
- Arguments come back canonical, so callers need no second validation: numbers as decimal
  strings without separators, ``"none"`` for "no limit" and ``"default"`` for "back to the
  default" (``/admin limit``; channel fields use ``"none"`` for "back to default"), booleans as
  ``"true"``/``"false"``, sizes as ``"WxH"`` (any positive or zero numbers: the configured image
  model's rule decides which sizes it takes, and its handler says so; a ``--size`` that is not
  ``WxH`` at all raises :class:`core.errors.ImageSizeFormat`), languages as
  ``"zh"``/``"en"``/``"auto"``.

Result shapes (``name``: ``text`` / ``args`` / ``options``):

==========  ======================================================================
chat        ``text`` = the prompt (plain text or ``/ask <text>``)
image       ``text`` = prompt; ``options`` may hold ``"size"`` (``"WxH"``) and ``"style"``
persona     ``args == ()`` and ``text == ""``: show; ``args == ("clear",)``: clear;
            ``text`` = new persona
lang        ``args == ("zh",)``, ``("en",)`` or ``("auto",)``
admin       ``args[0]`` is the subcommand: ``("grant", user, "tokens"|"images", n)``,
            ``("limit", user, field, n|"none"|"default")``, ``("allow", user)``, ``("deny", user)``,
            ``("role", user, role)``, ``("report", "day"|"month"[, date])``,
            ``("channel", field, value)`` (``field`` persona: ``text`` holds the value too)
others      reset, forget, quota, usage, cancel, help (also ``/start``), about: ``text`` =
            whatever followed the command (usually empty; callers may ignore it)
ignore      a command addressed to a bot by name (``/cmd@name``)
==========  ======================================================================

Who may run what is the caller's decision: ``CommandSpec.admin_only`` says which commands need
an admin, the parser does not know who is asking. User ids in admin commands are passed on as
typed; adapters rewrite mentions as ``platform:id`` and the core resolves the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from core.errors import CommandError, ImageSizeFormat
from core.i18n import t
from core.text import is_blank

__all__ = [
    "ADMIN_SUBCOMMANDS",
    "CHANNEL_FIELDS",
    "COMMAND_NAMES",
    "IMAGE_MAX_SIDE",
    "IMAGE_MIN_SIDE",
    "LIMIT_FIELDS",
    "CommandSpec",
    "ParsedCommand",
    "admin_specs",
    "command_specs",
    "help_text",
    "parse_command",
    "with_prefix",
]

COMMAND_NAMES: tuple[str, ...] = (
    "about",
    "admin",
    "cancel",
    "chat",
    "forget",
    "help",
    "ignore",
    "image",
    "lang",
    "persona",
    "quota",
    "reset",
    "usage",
)
"""Every value :attr:`ParsedCommand.name` can take."""

LIMIT_FIELDS: tuple[str, ...] = (
    "images_per_day",
    "images_per_month",
    "requests_per_minute",
    "tokens_per_day",
    "tokens_per_month",
)
"""Fields of ``/admin limit`` (the names of :class:`core.config.LimitSet`)."""

CHANNEL_FIELDS: tuple[str, ...] = ("enabled", "images", "mention_only", "model", "persona")
"""Fields of ``/admin channel``; ``images`` is ``ChannelPolicy.images_allowed``."""

ADMIN_SUBCOMMANDS: tuple[str, ...] = (
    "allow",
    "channel",
    "deny",
    "grant",
    "limit",
    "report",
    "role",
)

# Kept for importers; the parser no longer enforces them (any WxH parses, and the configured
# image model's rule, core.images.size_allowed, decides and is worded to the user).
IMAGE_MIN_SIDE = 256
IMAGE_MAX_SIDE = 2048

_MAX_NUMBER_DIGITS = 15  # far above any real quota; keeps int() cheap on hostile input
_MAX_USER_CHARS = 128


def _empty_options() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """One parsed inbound text (see the module docstring for each command's shape).

    Immutable: ``options`` is stored as a read-only mapping and ``args`` as a tuple whatever the
    constructor was given. ``options`` takes part in equality but not in hashing.
    """

    name: str
    text: str = ""
    args: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=_empty_options, hash=False)

    def __post_init__(self) -> None:
        # Callers may pass a plain dict or list; freeze copies so nobody shares mutable state.
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command as users type it.

    ``name`` is the word after ``/`` (lowercase, ``[a-z0-9_]``, valid for Telegram's
    ``setMyCommands``); ``command`` the :attr:`ParsedCommand.name` it produces (``"ask"`` →
    ``"chat"``); ``usage`` the usage line; ``help_key`` the i18n key of its one-line
    description (≤ 256 characters in every language); ``aliases`` other words accepted for it
    and not advertised (``/start`` → help).
    """

    name: str
    command: str
    usage: str
    admin_only: bool
    help_key: str
    aliases: tuple[str, ...] = ()

    def description(self, lang: str) -> str:
        """The one-line description in ``lang``."""
        return t(self.help_key, lang)


_IMAGE_USAGE = "/image [--size WxH] [--style STYLE] <prompt>"
_ADMIN_USAGE = "/admin " + "|".join(sorted(ADMIN_SUBCOMMANDS)) + " ..."
_LIMIT_USAGE = "/admin limit <user> " + "|".join(LIMIT_FIELDS) + " <n|none|default>"

_SPECS: tuple[CommandSpec, ...] = (
    CommandSpec("ask", "chat", "/ask <question>", False, "help.ask"),
    CommandSpec("image", "image", _IMAGE_USAGE, False, "help.image"),
    CommandSpec("reset", "reset", "/reset", False, "help.reset"),
    CommandSpec("forget", "forget", "/forget", False, "help.forget"),
    CommandSpec("persona", "persona", "/persona [<text>|clear]", False, "help.persona"),
    CommandSpec("quota", "quota", "/quota", False, "help.quota"),
    CommandSpec("usage", "usage", "/usage", False, "help.usage"),
    CommandSpec("cancel", "cancel", "/cancel", False, "help.cancel"),
    CommandSpec("lang", "lang", "/lang zh|en|auto", False, "help.lang"),
    CommandSpec("about", "about", "/about", False, "help.about"),
    CommandSpec("help", "help", "/help", False, "help.help", aliases=("start",)),
    CommandSpec("admin", "admin", _ADMIN_USAGE, True, "help.admin"),
)

_ADMIN_SPECS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "grant", "admin", "/admin grant <user> tokens|images <n>", True, "help.admin_grant"
    ),
    CommandSpec("limit", "admin", _LIMIT_USAGE, True, "help.admin_limit"),
    CommandSpec("allow", "admin", "/admin allow <user>", True, "help.admin_allow"),
    CommandSpec("deny", "admin", "/admin deny <user>", True, "help.admin_deny"),
    CommandSpec("role", "admin", "/admin role <user> <role>", True, "help.admin_role"),
    CommandSpec(
        "report",
        "admin",
        "/admin report [day|month] [YYYY-MM-DD|YYYY-MM]",
        True,
        "help.admin_report",
    ),
    CommandSpec(
        "channel",
        "admin",
        "/admin channel " + "|".join(CHANNEL_FIELDS) + " <value>",
        True,
        "help.admin_channel",
    ),
)

_BY_WORD: Mapping[str, CommandSpec] = MappingProxyType(
    {word: spec for spec in _SPECS for word in (spec.name, *spec.aliases)}
)
_ADMIN_BY_NAME: Mapping[str, CommandSpec] = MappingProxyType({s.name: s for s in _ADMIN_SPECS})


def command_specs() -> tuple[CommandSpec, ...]:
    """All commands in display order (for ``/help``, ``setMyCommands``, Slack manifests)."""
    return _SPECS


def admin_specs() -> tuple[CommandSpec, ...]:
    """The ``/admin`` subcommands in display order (``name`` is the subcommand word)."""
    return _ADMIN_SPECS


def with_prefix(usage: str, prefix: str = "/") -> str:
    """A usage line as the user types it on their platform: the leading ``/`` of ``usage``
    (every :attr:`CommandSpec.usage` has one) replaced by ``prefix`` (``Inbound.command_prefix``:
    ``"/"``, or ``"/hy "`` for Slack's slash command). Other text is returned unchanged."""
    if usage.startswith("/") and prefix != "/":
        return prefix + usage[1:]
    return usage


def help_text(lang: str, *, is_admin: bool, image_sizes: str = "", prefix: str = "/") -> str:
    """The ``/help`` answer in ``lang``: a header and one ``usage — description`` line per
    command; admins also get the admin subcommands. ``image_sizes`` (in ``lang``) is the
    configured image model's size rule, shown under ``/image`` when given. Each usage line
    starts with ``prefix`` instead of ``/`` (see :func:`with_prefix`)."""
    lines = [t("help.header", lang)]
    for spec in _SPECS:
        if spec.admin_only:
            continue
        lines.append(f"{with_prefix(spec.usage, prefix)} — {spec.description(lang)}")
        if spec.command == "image" and image_sizes:
            lines.append(t("help.image_sizes", lang, sizes=image_sizes))
    if is_admin:
        lines.append("")
        lines.append(t("help.admin_header", lang))
        lines.extend(
            f"{with_prefix(s.usage, prefix)} — {s.description(lang)}" for s in _ADMIN_SPECS
        )
    return "\n".join(lines)


# --- parsing ------------------------------------------------------------------------------

# Telegram allows [A-Za-z0-9_]{1,32} for commands and usernames; 64 leaves room for Slack and
# still rejects paths and prose ("/etc/hosts", "/shrug?").
_HEAD_RE = re.compile(r"[/／]([A-Za-z0-9_]{1,64})(?:@([A-Za-z0-9_]{1,64}))?", re.ASCII)
_QUOTES: Mapping[str, str] = MappingProxyType(
    {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」"}  # phones type curly quotes
)
_NUMBER_RE = re.compile(r"[0-9][0-9_,]*", re.ASCII)
# Any WxH-shaped size is taken (the image model's rule decides the range, and says it); a
# value of another shape is an ImageSizeFormat error.
_SIZE_RE = re.compile(r"([0-9]{1,9})[xX×*:]([0-9]{1,9})", re.ASCII)
# Style names may be in any script ("--style 水墨"): letters, digits, "_" and "-", ≤ 32.
_STYLE_RE = re.compile(r"[\w-]{1,32}")
_OPTION_RE = re.compile(r"--([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?", re.ASCII | re.DOTALL)
_ROLE_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}", re.ASCII)
_MODEL_RE = re.compile(r"[A-Za-z0-9._:/-]{1,64}", re.ASCII)
_TRUE = frozenset({"on", "true", "yes", "1", "enable", "enabled"})
_FALSE = frozenset({"off", "false", "no", "0", "disable", "disabled"})
_NONE = frozenset({"none", "unlimited", "default", "clear"})
_UNLIMITED = frozenset({"none", "unlimited"})
_DEFAULT = frozenset({"default", "clear"})
_LANG_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "zh": "zh",
        "cn": "zh",
        "chinese": "zh",
        "中文": "zh",
        "简体中文": "zh",
        "en": "en",
        "english": "en",
        "英文": "en",
        "英语": "en",
        "auto": "auto",
        "自动": "auto",
    }
)


@dataclass(frozen=True, slots=True)
class _Token:
    value: str  # quotes removed
    start: int  # offsets into the parsed string, quotes included
    end: int


def _tokenize(s: str) -> list[_Token]:
    """Split like a forgiving shell: quotes group words and are removed; an unbalanced quote
    is an ordinary character (hostile or sloppy input never fails here)."""
    tokens: list[_Token] = []
    n = len(s)
    pos = 0
    while True:
        while pos < n and s[pos].isspace():
            pos += 1
        if pos >= n:
            return tokens
        start = pos
        parts: list[str] = []
        while pos < n and not s[pos].isspace():
            ch = s[pos]
            close = _QUOTES.get(ch)
            end = s.find(close, pos + 1) if close is not None else -1
            if end == -1:
                parts.append(ch)
                pos += 1
            else:
                parts.append(s[pos + 1 : end])
                pos = end + 1
        tokens.append(_Token("".join(parts), start, pos))


def _usage_error(usage: str) -> CommandError:
    return CommandError(f"Usage: {usage}", usage=usage)


def _number(raw: str, usage: str) -> str:
    """A non-negative integer in canonical form (``"10,000"`` → ``"10000"``)."""
    if not _NUMBER_RE.fullmatch(raw):
        raise _usage_error(usage)
    digits = raw.replace("_", "").replace(",", "")
    if len(digits) > _MAX_NUMBER_DIGITS:
        raise _usage_error(usage)
    return str(int(digits))


def _user(raw: str, usage: str) -> str:
    if not raw or len(raw) > _MAX_USER_CHARS or any(ch.isspace() for ch in raw):
        raise _usage_error(usage)
    return raw


def parse_command(text: str) -> ParsedCommand:
    """Parse one inbound text (see the module docstring). Raises only ``CommandError``."""
    stripped = text.strip()
    if is_blank(stripped):
        return ParsedCommand("chat")
    if stripped[0] not in "/／":
        return ParsedCommand("chat", text=stripped)
    head_end = next((i for i, ch in enumerate(stripped) if ch.isspace()), len(stripped))
    match = _HEAD_RE.fullmatch(stripped[:head_end])
    if match is None:
        return ParsedCommand("chat", text=stripped)
    word, target = match.group(1).lower(), match.group(2)
    if target is not None:
        return ParsedCommand("ignore")
    spec = _BY_WORD.get(word)
    if spec is None:
        raise CommandError(
            f"Unknown command /{word}. Send /help to see the commands.", usage="/help"
        )
    rest = stripped[head_end:].strip()
    if spec.command == "chat":
        if is_blank(rest):
            raise _usage_error(spec.usage)
        return ParsedCommand("chat", text=rest)
    if spec.command == "image":
        return _parse_image(rest)
    if spec.command == "persona":
        if is_blank(rest):
            return ParsedCommand("persona")
        if rest.lower() == "clear":
            return ParsedCommand("persona", args=("clear",))
        return ParsedCommand("persona", text=rest)
    if spec.command == "lang":
        tokens = _tokenize(rest)
        lang = _LANG_ALIASES.get(tokens[0].value.lower()) if len(tokens) == 1 else None
        if lang is None:
            raise _usage_error(spec.usage)
        return ParsedCommand("lang", args=(lang,))
    if spec.command == "admin":
        return _parse_admin(rest)
    return ParsedCommand(spec.command, text=rest)


def _parse_image(rest: str) -> ParsedCommand:
    options: dict[str, str] = {}
    tokens = _tokenize(rest)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.value == "--" and rest[token.start : token.end] == "--":
            i += 1
            break
        option = _OPTION_RE.fullmatch(token.value)
        if option is None:
            break
        name, value = option.group(1).lower(), option.group(2)
        if value is None:
            if i + 1 >= len(tokens):
                raise _usage_error(_IMAGE_USAGE)
            value = tokens[i + 1].value
            i += 1
        if name == "size":
            size = _SIZE_RE.fullmatch(value.strip())
            if size is None:
                raise ImageSizeFormat(f"Usage: {_IMAGE_USAGE}", usage=_IMAGE_USAGE)
            options["size"] = f"{int(size.group(1))}x{int(size.group(2))}"
        elif name == "style":
            if _STYLE_RE.fullmatch(value) is None:
                raise _usage_error(_IMAGE_USAGE)
            options["style"] = value.lower()
        else:
            raise _usage_error(_IMAGE_USAGE)
        i += 1
    if i >= len(tokens):
        raise _usage_error(_IMAGE_USAGE)
    prompt = rest[tokens[i].start :].strip()
    close = _QUOTES.get(prompt[:1])
    if close is not None and len(prompt) > 1 and prompt.find(close, 1) == len(prompt) - 1:
        # The whole prompt was quoted ("/image "a red fox""): drop the quotes.
        prompt = prompt[1:-1].strip()
    if is_blank(prompt):
        raise _usage_error(_IMAGE_USAGE)
    return ParsedCommand("image", text=prompt, options=options)


def _parse_admin(rest: str) -> ParsedCommand:
    tokens = _tokenize(rest)
    if not tokens:
        raise _usage_error(_ADMIN_USAGE)
    sub = tokens[0].value.lower()
    spec = _ADMIN_BY_NAME.get(sub)
    if spec is None:
        raise _usage_error(_ADMIN_USAGE)
    usage = spec.usage
    values = [tok.value for tok in tokens[1:]]

    if sub == "grant":
        if len(values) != 3:
            raise _usage_error(usage)
        kind = {"tokens": "tokens", "token": "tokens", "images": "images", "image": "images"}.get(
            values[1].lower()
        )
        if kind is None:
            raise _usage_error(usage)
        return ParsedCommand(
            "admin", args=("grant", _user(values[0], usage), kind, _number(values[2], usage))
        )
    if sub == "limit":
        if len(values) != 3 or values[1].lower() not in LIMIT_FIELDS:
            raise _usage_error(usage)
        word = values[2].lower()
        if word in _UNLIMITED:
            amount = "none"
        elif word in _DEFAULT:
            amount = "default"
        else:
            amount = _number(values[2], usage)
        return ParsedCommand(
            "admin", args=("limit", _user(values[0], usage), values[1].lower(), amount)
        )
    if sub in ("allow", "deny"):
        if len(values) != 1:
            raise _usage_error(usage)
        return ParsedCommand("admin", args=(sub, _user(values[0], usage)))
    if sub == "role":
        if len(values) != 2 or _ROLE_RE.fullmatch(values[1]) is None:
            raise _usage_error(usage)
        return ParsedCommand("admin", args=("role", _user(values[0], usage), values[1].lower()))
    if sub == "report":
        return ParsedCommand("admin", args=("report", *_report_args(values, usage)))
    return _parse_channel(rest, tokens, usage)


def _report_args(values: list[str], usage: str) -> tuple[str, ...]:
    period = ""
    if values and values[0].lower() in ("day", "month"):
        period = values.pop(0).lower()
    if len(values) > 1:
        raise _usage_error(usage)
    if not values:
        return (period or "day",)
    date = values[0]
    for candidate, fmt in (("day", "%Y-%m-%d"), ("month", "%Y-%m")):
        if period not in ("", candidate):
            continue
        try:
            parsed = datetime.strptime(date, fmt)
        except ValueError:
            continue
        # strptime accepts "2025-1-5" and year 999; the canonical form is ISO, zero-padded.
        canonical = f"{parsed.year:04d}-{parsed.month:02d}"
        if candidate == "day":
            canonical += f"-{parsed.day:02d}"
        return (candidate, canonical)
    raise _usage_error(usage)


def _parse_channel(rest: str, tokens: list[_Token], usage: str) -> ParsedCommand:
    if len(tokens) < 3:
        raise _usage_error(usage)
    name = tokens[1].value.lower()
    if name == "persona":
        # Free text: keep it verbatim (newlines, quotes) from after the field word.
        value = rest[tokens[2].start :].strip()
        if len(tokens) == 3:
            value = tokens[2].value.strip()
        if is_blank(value):
            raise _usage_error(usage)
        if value.lower() in _NONE:
            return ParsedCommand("admin", args=("channel", "persona", "none"))
        return ParsedCommand("admin", text=value, args=("channel", "persona", value))
    if len(tokens) != 3 or name not in CHANNEL_FIELDS:
        raise _usage_error(usage)
    raw = tokens[2].value
    if name == "model":
        if raw.lower() in _NONE:
            return ParsedCommand("admin", args=("channel", "model", "none"))
        if _MODEL_RE.fullmatch(raw) is None:
            raise _usage_error(usage)
        return ParsedCommand("admin", args=("channel", "model", raw))
    if raw.lower() in _TRUE:
        flag = "true"
    elif raw.lower() in _FALSE:
        flag = "false"
    else:
        raise _usage_error(usage)
    return ParsedCommand("admin", args=("channel", name, flag))
