"""Operator settings: environment, ``.env`` and ``hybot.toml`` → :class:`Settings` → the core's
:class:`~core.config.BotConfig`.

Built on **pydantic-settings**: :class:`Settings` is a ``BaseSettings`` of nested, typed sections
that mirror :mod:`core.config` (``hunyuan``, ``quota`` with ``defaults``/``org``/``roles``,
``images``, ``access``, ``database``, ``telegram``, ``slack``). Choices are ``Literal`` types and
ranges are ``Field`` constraints (``gt``, ``ge``, finite numbers only). Its sources, in this
order of precedence:

1. the environment (``load_settings(env=...)`` injects a mapping; otherwise ``os.environ``),
2. ``.env`` in the working directory (read with python-dotenv, the library pydantic-settings
   uses for ``env_file``; quoted values may hold spaces),
3. a TOML file: ``--config PATH``, else ``$HYBOT_CONFIG``, else ``./hybot.toml`` when present,
4. the defaults (those of :mod:`core.config`).

Names. Every setting has one flat name (:data:`SETTINGS` maps it to its place in the
sections). In the environment it is ``HYBOT_<NAME>`` (``HYBOT_HUNYUAN_MODEL``), except the
credentials, which keep their ecosystems' names (:data:`STANDARD_ENV_NAMES`;
``HYBOT_``-prefixed spellings are accepted too and win). In TOML it is the lower-case name
without prefix, flat (``hunyuan_model = ...``) or in a table named after its first part
(``[hunyuan]`` ``model = ...``) or a purely organisational table (``[quota]``). Empty values
(``X=`` or ``x = ""``) mean "unset" in every source.

Per-role limits (``role_limits``): ``[role_limits.<role>]`` tables in TOML, or
``HYBOT_ROLE_LIMITS`` as ``vip.tokens_per_day=1000000,vip.images_per_day=unlimited`` (or the
same as a JSON object). A role names a role given with ``/admin role <user> <role>``; limits
it leaves out are the defaults'.

Contracts:
- ``bots`` is the only layer that reads the environment or files; a :class:`Settings`
  constructed directly (``Settings(language="zh")``) reads nothing.
- Values that do not parse as their type (``HYBOT_TOKENS_PER_DAY=lots``, ``HYBOT_SHOW_NOTE=maybe``,
  ``HYBOT_ROLE_LIMITS=vip.foo=3``) and values that parse but break a rule (an unknown choice,
  ``nan``, ``inf``, a negative duration, a malformed size, an unknown time zone or database
  scheme) alike are dropped to their defaults and reported by :meth:`Settings.problems` in
  plain words, all at once, with every cross-setting problem (missing credentials, unknown
  names, ``.env`` lines that do not parse), so ``hybot config check`` lists them together
  under the full table. A :class:`Settings` therefore always holds valid values, and
  :meth:`Settings.to_bot_config` cannot fail. (:class:`SettingsError` remains only for an
  error pydantic places outside every known setting, which the sources never produce.)
- Secrets are :class:`~core.config.Secret` from the moment they are read: they never appear in
  ``repr``, :meth:`Settings.describe`, :meth:`Settings.problems` or error messages; neither do
  rejected values (only the setting's name and the rule).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.config import (
    UNLIMITED_OVERRIDE,
    AccessConfig,
    AccessMode,
    BotConfig,
    ChannelPolicyDefaults,
    ChatApi,
    DatabaseLocation,
    GroupScope,
    HunyuanConfig,
    ImageApi,
    ImageConfig,
    Language,
    LimitSet,
    QuotaConfig,
    Secret,
    mask,
    parse_database_url,
    parse_image_size,
)
from core.errors import ConfigError
from core.images import image_sizes, size_allowed

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_ENV_FILE",
    "ENV_PREFIX",
    "SETTINGS",
    "STANDARD_ENV_NAMES",
    "AccessSettings",
    "DatabaseSettings",
    "DefaultLimitSettings",
    "HunyuanSettings",
    "ImageSettings",
    "LimitSettings",
    "LogLevel",
    "QuotaSettings",
    "RoleLimits",
    "Settings",
    "SettingsError",
    "SlackSettings",
    "TelegramSettings",
    "display_name",
    "env_names",
    "load_settings",
]

ENV_PREFIX = "HYBOT_"
DEFAULT_CONFIG_FILE = "hybot.toml"
DEFAULT_ENV_FILE = ".env"
CONFIG_PATH_ENV = "HYBOT_CONFIG"

# Credentials keep the names their own ecosystems use (Tencent Cloud SDKs, PTB and bolt
# examples), so an operator's existing .env works unchanged.
STANDARD_ENV_NAMES: Mapping[str, str] = {
    "hunyuan_api_key": "HUNYUAN_API_KEY",
    "tencentcloud_secret_id": "TENCENTCLOUD_SECRET_ID",
    "tencentcloud_secret_key": "TENCENTCLOUD_SECRET_KEY",
    "telegram_bot_token": "TELEGRAM_BOT_TOKEN",
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN",
}

_UNLIMITED_WORDS = frozenset({"none", "null", "unlimited", "off"})


class LogLevel(StrEnum):
    """The log levels ``HYBOT_LOG_LEVEL`` takes (any case)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class SettingsError(ConfigError):
    """Values that cannot be placed at any setting; ``problems`` has one sentence each (never
    a value)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _printable(text: str) -> str:
    """``text`` with control, format (invisible) and unassigned characters escaped."""
    return "".join(
        c if unicodedata.category(c)[0] != "C" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


# --- field types --------------------------------------------------------------------------


def _to_secret(value: object) -> Secret:
    # Any scalar is accepted (a TOML integer key is still a key): a secret must never fail
    # validation, because an error could then carry the secret's value.
    if isinstance(value, Secret):
        return value
    if value is None:
        return Secret("")
    return Secret(str(value).strip())


def _to_list(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        return tuple(str(part).strip() for part in value if str(part).strip())
    return value


def _to_limit(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in _UNLIMITED_WORDS:
        return None
    return value


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        ok = ok and _printable(value) == value and " " not in value
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("not an http(s) URL")
    return value


def _time_zone(value: str) -> str:
    why = "not a known IANA time zone, such as Asia/Shanghai or UTC"
    # IANA names are short ASCII paths; anything else never reaches ZoneInfo, which turns the
    # name into a module path for tzdata (a very long one recursed until it crashed).
    if len(value) > 64 or not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", value):
        raise ValueError(why)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as err:
        raise ValueError(why) from err
    return value


def _database_url(value: str) -> str:
    try:
        parse_database_url(value)
    except ConfigError as err:
        raise ValueError(str(err)) from err
    return value


def _image_size(value: str) -> str:
    try:
        width, height = parse_image_size(value.lower().replace("*", "x"))
    except ConfigError as err:
        raise ValueError(str(err)) from err
    return f"{width}x{height}"


def _iso_date(value: str) -> str:
    if value:
        try:
            date.fromisoformat(value)
        except ValueError as err:
            raise ValueError("must be an ISO date such as 2027-06-30") from err
    return value


def _plain_text(value: str) -> str:
    # Names (models, regions) are single words: no control or invisible characters.
    if not value or _printable(value) != value or any(c.isspace() for c in value):
        raise ValueError("must be a non-empty name without spaces or control characters")
    return value


def _text(value: str) -> str:
    # Free text (persona, footnote, ...) may span lines but carries no terminal controls.
    bad = {c for c in value if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t"}
    if bad:
        raise ValueError("contains control characters")
    return value


Text = Annotated[str, AfterValidator(_text)]
SecretField = Annotated[Secret, BeforeValidator(_to_secret)]
ListField = Annotated[tuple[str, ...], BeforeValidator(_to_list)]
Limit = Annotated[Annotated[int, Field(ge=0)] | None, BeforeValidator(_to_limit)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Minutes = Annotated[float, Field(gt=0, allow_inf_nan=False)]
AtLeastOne = Annotated[int, Field(ge=1)]
NotNegative = Annotated[int, Field(ge=0)]
Url = Annotated[str, BeforeValidator(_strip), AfterValidator(_http_url)]
Name = Annotated[str, BeforeValidator(_strip), AfterValidator(_plain_text)]


# Choices: ``Literal`` types of core.config, matched case-insensitively.
ChatApiChoice = Annotated[ChatApi, BeforeValidator(_lower)]
ImageApiChoice = Annotated[ImageApi, BeforeValidator(_lower)]
LanguageChoice = Annotated[Language, BeforeValidator(_lower)]
AccessModeChoice = Annotated[AccessMode, BeforeValidator(_lower)]
GroupScopeChoice = Annotated[GroupScope, BeforeValidator(_lower)]


def _secret() -> Any:
    return Field(default_factory=lambda: Secret(""))


_HY = HunyuanConfig()
_QUOTA = QuotaConfig()
_IMAGES = ImageConfig()
_CHANNEL = ChannelPolicyDefaults()
_BOT = BotConfig()


# --- sections (mirror core.config) --------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        allow_inf_nan=False,
        validate_default=True,
    )


class HunyuanSettings(_Section):
    """→ :class:`~core.config.HunyuanConfig`."""

    api: ChatApiChoice = _HY.api
    base_url: Url = _HY.base_url
    model: Name = _HY.model
    api_key: SecretField = _secret()
    secret_id: SecretField = _secret()
    secret_key: SecretField = _secret()
    native_endpoint: Url = _HY.native_endpoint
    region: Name = _HY.region
    image_api: ImageApiChoice = _HY.image_api
    image_model: Name = _HY.image_model
    connect_timeout: Seconds = _HY.connect_timeout
    idle_timeout: Seconds = _HY.idle_timeout
    total_timeout: Seconds = _HY.total_timeout
    max_attempts: AtLeastOne = _HY.max_attempts


def _https_or_empty(value: str) -> str:
    if value and not value.startswith("https://"):
        raise ValueError("must be a public https:// URL")
    return _http_url(value) if value else value


Port = Annotated[int, Field(ge=0, le=65535)]


class TelegramSettings(_Section):
    """Telegram credentials, Bot API server and run mode (read by ``bots.telegram``).

    ``mode`` ``webhook`` needs ``webhook_url`` (public https) and ``webhook_secret``
    (1–256 of ``A-Z a-z 0-9 _ -``); ``webhook_host``/``webhook_port`` are where the route
    listens (normally behind a TLS-terminating reverse proxy).
    """

    bot_token: SecretField = _secret()
    base_url: Url = "https://api.telegram.org"
    mode: Annotated[Literal["polling", "webhook"], BeforeValidator(_lower)] = "polling"
    webhook_url: Annotated[str, BeforeValidator(_strip), AfterValidator(_https_or_empty)] = ""
    webhook_secret: SecretField = _secret()
    webhook_host: Name = "127.0.0.1"
    webhook_port: Port = 8443


def _slash_command(value: str) -> str:
    if not re.fullmatch(r"/[a-z0-9_-]{1,31}", value):
        raise ValueError("must be a slash command such as /hy")
    return value


class SlackSettings(_Section):
    """Slack credentials, Web API base URL and run mode (read by ``bots.slack``).

    ``mode``: ``socket`` (Socket Mode, needs the app token), ``http`` (Events API on
    ``host``:``port``, needs the signing secret), or empty: Socket Mode when an app token is
    set, else HTTP. ``command`` is the slash command the app registers.
    ``thread_follow_ups``: replies in a thread the bot answers in continue it unmentioned.
    """

    bot_token: SecretField = _secret()
    signing_secret: SecretField = _secret()
    app_token: SecretField = _secret()
    base_url: Url = "https://slack.com/api/"
    mode: Annotated[Literal["", "http", "socket"], BeforeValidator(_lower)] = ""
    host: Name = "127.0.0.1"
    port: Port = 3000
    command: Annotated[str, BeforeValidator(_lower), AfterValidator(_slash_command)] = "/hy"
    thread_follow_ups: bool = True  # replies in a thread the bot answers need no new mention


class DatabaseSettings(_Section):
    """Where the store lives; ``url`` is checked by :func:`core.config.parse_database_url`."""

    url: Annotated[str, BeforeValidator(_strip), AfterValidator(_database_url)] = (
        "sqlite:///hybot.db"
    )

    @property
    def location(self) -> DatabaseLocation:
        """The parsed URL (the SQLite path to open)."""
        return parse_database_url(self.url)


class LimitSettings(_Section):
    """→ :class:`~core.config.LimitSet` (``None`` = unlimited)."""

    tokens_per_day: Limit = None
    tokens_per_month: Limit = None
    images_per_day: Limit = None
    images_per_month: Limit = None
    requests_per_minute: Limit = None

    def to_limit_set(self) -> LimitSet:
        return LimitSet(**self.model_dump())


def _to_role_limit(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in _UNLIMITED_WORDS:
        return "unlimited"
    return value


RoleLimit = Annotated[NotNegative | Literal["unlimited"] | None, BeforeValidator(_to_role_limit)]


class RoleLimits(_Section):
    """One role's overrides: a whole number or ``"unlimited"`` per limit; a limit left out is
    the default's (``None``). :meth:`to_limit_set` turns ``"unlimited"`` into
    :data:`~core.config.UNLIMITED_OVERRIDE`."""

    tokens_per_day: RoleLimit = None
    tokens_per_month: RoleLimit = None
    images_per_day: RoleLimit = None
    images_per_month: RoleLimit = None
    requests_per_minute: RoleLimit = None

    def to_limit_set(self) -> LimitSet:
        return LimitSet(
            **{
                name: UNLIMITED_OVERRIDE if value == "unlimited" else value
                for name, value in self.model_dump().items()
            }
        )


def _role_limits(value: object) -> object:
    """``HYBOT_ROLE_LIMITS``: ``role.limit=N,...`` or a JSON object; TOML gives a table."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    roles: dict[str, dict[str, str]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, number = item.partition("=")
        role, dot, limit = key.strip().rpartition(".")
        if not (sep and dot and role.strip() and limit.strip()):
            raise ValueError("is written role.limit=number, e.g. vip.tokens_per_day=1000000")
        roles.setdefault(role.strip().lower(), {})[limit.strip()] = number.strip()
    return roles


def _role_names(value: dict[str, RoleLimits]) -> dict[str, RoleLimits]:
    out: dict[str, RoleLimits] = {}
    for name, limits in value.items():
        role = name.strip().lower()
        if not role or _printable(role) != role or any(c.isspace() for c in role):
            raise ValueError("role names are single words without control characters")
        out[role] = limits
    return out


RolesField = Annotated[
    dict[str, RoleLimits], BeforeValidator(_role_limits), AfterValidator(_role_names)
]

_DEFAULTS = _QUOTA.defaults


class DefaultLimitSettings(LimitSettings):
    """The per-user defaults: :class:`LimitSettings` with the core's default numbers."""

    tokens_per_day: Limit = _DEFAULTS.tokens_per_day
    tokens_per_month: Limit = _DEFAULTS.tokens_per_month
    images_per_day: Limit = _DEFAULTS.images_per_day
    images_per_month: Limit = _DEFAULTS.images_per_month
    requests_per_minute: Limit = _DEFAULTS.requests_per_minute


class QuotaSettings(_Section):
    """→ :class:`~core.config.QuotaConfig`."""

    timezone: Annotated[str, BeforeValidator(_strip), AfterValidator(_time_zone)] = _QUOTA.timezone
    defaults: DefaultLimitSettings = DefaultLimitSettings()
    org: LimitSettings = LimitSettings()
    roles: RolesField = Field(default_factory=dict)
    admins_exempt: bool = _QUOTA.admins_exempt
    free_images: NotNegative = _QUOTA.free_images
    free_images_expire: Annotated[str, BeforeValidator(_strip), AfterValidator(_iso_date)] = (
        _QUOTA.free_images_expire
    )
    image_price_cny: Annotated[float, Field(ge=0, allow_inf_nan=False)] = _QUOTA.image_price_cny


class ImageSettings(_Section):
    """→ :class:`~core.config.ImageConfig`; ``dir`` is where the console saves pictures."""

    concurrency: AtLeastOne = _IMAGES.max_concurrent_jobs
    queue: NotNegative = _IMAGES.max_queue
    dir: Annotated[str, BeforeValidator(_strip), Field(min_length=1)] = _IMAGES.output_dir
    size: Annotated[str, BeforeValidator(_strip), AfterValidator(_image_size)] = (
        _IMAGES.default_size
    )
    ai_mark: bool = _IMAGES.ai_mark
    footnote: Text = _IMAGES.footnote


class AccessSettings(_Section):
    """→ :class:`~core.config.AccessConfig` (with its channel defaults)."""

    mode: AccessModeChoice = AccessConfig().mode
    allow: ListField = ()
    deny: ListField = ()
    admins: ListField = ()
    mention_only: bool = _CHANNEL.mention_only
    images_allowed: bool = _CHANNEL.images_allowed


# --- flat names ---------------------------------------------------------------------------

# The prefix a section adds to its fields' flat names, and the names that break the pattern.
_PREFIXES: Mapping[tuple[str, ...], str] = {
    (): "",
    ("hunyuan",): "hunyuan_",
    ("telegram",): "telegram_",
    ("slack",): "slack_",
    ("database",): "database_",
    ("quota",): "",
    ("quota", "defaults"): "",
    ("quota", "org"): "org_",
    ("images",): "image_",
    ("access",): "",
}
_RENAMED: Mapping[tuple[str, ...], str] = {
    ("hunyuan", "secret_id"): "tencentcloud_secret_id",
    ("hunyuan", "secret_key"): "tencentcloud_secret_key",
    ("access", "mode"): "access_mode",
    ("quota", "roles"): "role_limits",
}


@dataclass(frozen=True, slots=True)
class _Setting:
    name: str  # flat name, e.g. "hunyuan_model"
    path: tuple[str, ...]  # place in the sections, e.g. ("hunyuan", "model")
    secret: bool
    mapping: bool  # takes a table (role_limits)


class Settings(BaseSettings):
    """Every operator setting, validated, in sections that mirror :mod:`core.config`.

    Build it with :func:`load_settings`. Constructed directly it reads nothing (no
    environment, no files): only keyword arguments (sections, or flat names through
    :meth:`from_flat`) and defaults, which is what tests use.
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        allow_inf_nan=False,
        validate_default=True,
    )

    hunyuan: HunyuanSettings = HunyuanSettings()
    telegram: TelegramSettings = TelegramSettings()
    slack: SlackSettings = SlackSettings()
    database: DatabaseSettings = DatabaseSettings()
    language: LanguageChoice = _BOT.language
    persona: Text = _BOT.persona
    persona_max_chars: AtLeastOne = _BOT.persona_max_chars
    idle_reset_minutes: Minutes = _BOT.idle_reset_minutes
    # A delivery claimed by a turn that never finished (its process died) may be answered
    # again on re-delivery after this; must exceed the longest turn.
    delivery_lease_seconds: Seconds = _BOT.delivery_lease_seconds
    show_note: bool = _BOT.show_note
    group_scope: GroupScopeChoice = _BOT.group_scope
    service_registration: Text = _BOT.service_registration
    about: Text = _BOT.about_extra
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = LogLevel.INFO
    chat_concurrency: AtLeastOne = _BOT.chat_concurrency
    access: AccessSettings = AccessSettings()
    quota: QuotaSettings = QuotaSettings()
    images: ImageSettings = ImageSettings()

    _config_file: Path | None = PrivateAttr(default=None)
    _unknown: tuple[str, ...] = PrivateAttr(default=())
    _file_problems: tuple[str, ...] = PrivateAttr(default=())  # .env lines that do not parse
    _rejected: tuple[tuple[str, str], ...] = PrivateAttr(default=())  # (name, reason)
    _rejected_values: dict[str, str] = PrivateAttr(default_factory=dict)  # name → shown

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Direct construction reads nothing; load_settings() supplies its own sources.
        return (init_settings,)

    @classmethod
    def from_flat(cls, **values: Any) -> Settings:
        """Settings from flat names (``Settings.from_flat(hunyuan_model="x")``); reads nothing."""
        return cls(**_nest(values))

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Secrets mask themselves; a database URL may carry a password in its userinfo.
        for name, value in super().__repr_args__():
            if name == "database":
                yield name, f"DatabaseSettings(url={_redact_url(self.database.url)!r})"
            else:
                yield name, value

    # --- views ----------------------------------------------------------------------

    def rejected(self) -> list[str]:
        """The problems of values that were rejected (and replaced by their defaults)."""
        return [f"{display_name(name)}: {why}" for name, why in self._rejected]

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from, if any."""
        return self._config_file

    def value(self, name: str) -> Any:
        """The effective value of the setting with flat ``name`` (e.g. ``"tokens_per_day"``)."""
        node: Any = self
        for part in SETTINGS[name].path:
            node = getattr(node, part)
        return node

    def secrets(self) -> list[str]:
        """Every configured secret value (for the logging redaction filter; never print)."""
        values = [self.value(s.name).reveal() for s in SETTINGS.values() if s.secret]
        return [v for v in values if v]

    def to_bot_config(self) -> BotConfig:
        """The core's configuration (always valid: rejected values were reset to defaults;
        call :meth:`problems` first to know whether to run at all)."""
        hy, quota, img, acc = self.hunyuan, self.quota, self.images, self.access
        roles = tuple((role, limits.to_limit_set()) for role, limits in sorted(quota.roles.items()))
        return BotConfig(
            hunyuan=HunyuanConfig(
                api=hy.api,
                base_url=hy.base_url,
                api_key=hy.api_key,
                model=hy.model,
                native_endpoint=hy.native_endpoint,
                secret_id=hy.secret_id,
                secret_key=hy.secret_key,
                region=hy.region,
                image_api=hy.image_api,
                image_model=hy.image_model,
                connect_timeout=hy.connect_timeout,
                idle_timeout=hy.idle_timeout,
                total_timeout=hy.total_timeout,
                max_attempts=hy.max_attempts,
            ),
            quota=QuotaConfig(
                timezone=quota.timezone,
                defaults=quota.defaults.to_limit_set(),
                roles=roles,
                admins_exempt=quota.admins_exempt,
                org=quota.org.to_limit_set(),
                free_images=quota.free_images,
                free_images_expire=quota.free_images_expire,
                image_price_cny=quota.image_price_cny,
            ),
            images=ImageConfig(
                max_concurrent_jobs=img.concurrency,
                max_queue=img.queue,
                default_size=img.size,
                ai_mark=img.ai_mark,
                footnote=img.footnote,
                output_dir=img.dir,
            ),
            access=AccessConfig(
                mode=acc.mode,
                allow=acc.allow,
                deny=acc.deny,
                admins=acc.admins,
                channel_defaults=ChannelPolicyDefaults(
                    mention_only=acc.mention_only, images_allowed=acc.images_allowed
                ),
            ),
            language=self.language,
            persona=self.persona[: self.persona_max_chars],
            persona_max_chars=self.persona_max_chars,
            idle_reset_minutes=self.idle_reset_minutes,
            delivery_lease_seconds=self.delivery_lease_seconds,
            chat_concurrency=self.chat_concurrency,
            service_registration=self.service_registration,
            show_note=self.show_note,
            group_scope=self.group_scope,
            about_extra=self.about,
        )

    def describe(self) -> list[tuple[str, str]]:
        """Effective values as ``(variable name, shown value)``, secrets masked, in a stable
        order (the config file first, then every setting of :data:`SETTINGS`). A value that
        was rejected shows as given, marked ``(rejected: see problems)``; its default is in
        effect."""
        rows = [("config file", _printable(str(self._config_file or "(none)")))]
        rejected = {name for name, _ in self._rejected}
        for setting in SETTINGS.values():
            shown = _show(self.value(setting.name), secret=setting.secret)
            if setting.name in rejected:
                given = self._rejected_values.get(setting.name, shown)
                shown = f"{given} (rejected: see problems)"
            rows.append((display_name(setting.name), shown))
        return rows

    def problems(self, *, credentials: bool = True) -> list[str]:
        """Every problem found, as sentences naming the variable; ``[]`` when all is well.

        ``.env`` lines that do not parse, unknown names, rejected values (of the wrong kind, or
        breaking a rule: choices, ranges, URLs, the time zone, the database URL, sizes, dates),
        credentials missing for the chosen APIs (unless ``credentials``
        is false: the demo brings the emulator's), user-id formats, an allowlist nobody is on,
        and a default image size the configured image model refuses.
        """
        out: list[str] = list(self._file_problems)
        out += [f"{name} is not a known setting" for name in self._unknown]
        out += [f"{display_name(name)}: {why}" for name, why in self._rejected]
        if credentials:
            out += self._credential_problems()
        acc = self.access
        for var, ids in (("HYBOT_ADMINS", acc.admins), ("HYBOT_ALLOW", acc.allow)):
            out += [
                f"{var} entry {_quote(i)} is not of the form platform:id"
                for i in ids
                if not _uid(i)
            ]
        out += [
            f"HYBOT_DENY entry {_quote(i)} is not of the form platform:id"
            for i in acc.deny
            if not _uid(i)
        ]
        if len(self.persona) > self.persona_max_chars:
            out.append(
                f"HYBOT_PERSONA is {len(self.persona)} characters long; the most is "
                f"HYBOT_PERSONA_MAX_CHARS ({self.persona_max_chars})"
            )
        out += self._webhook_problems()
        if acc.mode == "allowlist" and not (acc.allow or acc.admins):
            out.append(
                "HYBOT_ACCESS_MODE is allowlist but HYBOT_ALLOW and HYBOT_ADMINS are empty: "
                "nobody could use the bot"
            )
        hy, size = self.hunyuan, self.images.size
        if not size_allowed(size, api=hy.image_api, model=hy.image_model):
            sizes = image_sizes(api=hy.image_api, model=hy.image_model)
            rule = sizes or "512 to 2048 per side, at most 1024x1024 pixels in all"
            out.append(f"HYBOT_IMAGE_SIZE {size} is not a size {hy.image_model} makes ({rule})")
        return out

    def _webhook_problems(self) -> list[str]:
        """What ``HYBOT_TELEGRAM_MODE=webhook`` needs; a URL already rejected (and reported)
        is not reported again as missing."""
        tg = self.telegram
        if tg.mode != "webhook":
            return []
        out: list[str] = []
        why = "(required by HYBOT_TELEGRAM_MODE=webhook)"
        rejected = {name for name, _ in self._rejected}
        if not tg.webhook_url and "telegram_webhook_url" not in rejected:
            out.append(f"HYBOT_TELEGRAM_WEBHOOK_URL is not set {why}: the public https:// URL")
        secret = tg.webhook_secret.reveal()
        if not secret:
            out.append(f"HYBOT_TELEGRAM_WEBHOOK_SECRET is not set {why}")
        elif not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            out.append(
                f"HYBOT_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ - {why}"
            )
        return out

    def _credential_problems(self) -> list[str]:
        hy = self.hunyuan
        out: list[str] = []
        if hy.api == "openai" and not hy.api_key:
            out.append("HUNYUAN_API_KEY is not set (required by HYBOT_HUNYUAN_API=openai)")
        needs_tc3 = [
            var
            for var, kind in (
                ("HYBOT_HUNYUAN_API", hy.api),
                ("HYBOT_HUNYUAN_IMAGE_API", hy.image_api),
            )
            if kind == "native"
        ]
        if needs_tc3:
            why = " and ".join(f"{v}=native" for v in needs_tc3)
            if not hy.secret_id:
                out.append(f"TENCENTCLOUD_SECRET_ID is not set (required by {why})")
            if not hy.secret_key:
                out.append(f"TENCENTCLOUD_SECRET_KEY is not set (required by {why})")
        if hy.image_api == "tokenhub" and hy.api != "openai" and not hy.api_key:
            out.append("HUNYUAN_API_KEY is not set (required by HYBOT_HUNYUAN_IMAGE_API=tokenhub)")
        return out


# --- the registry of flat names -----------------------------------------------------------


def _walk(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[_Setting]:
    for field_name, info in model.model_fields.items():
        here = (*path, field_name)
        annotation = info.annotation
        if (
            isinstance(annotation, type)
            and issubclass(annotation, _Section)
            and (here in _PREFIXES)
        ):
            yield from _walk(annotation, here)
            continue
        name = _RENAMED.get(here) or _PREFIXES[path] + field_name
        secret = annotation is Secret
        yield _Setting(name=name, path=here, secret=secret, mapping=here == ("quota", "roles"))


#: Every setting by flat name, in the order ``describe`` and the docs list them.
SETTINGS: Mapping[str, _Setting] = {s.name: s for s in _walk(Settings, ())}
_BY_PATH: Mapping[tuple[str, ...], _Setting] = {s.path: s for s in SETTINGS.values()}


def env_names(name: str) -> tuple[str, ...]:
    """Environment variable names for the setting with flat ``name``, in precedence order."""
    names = [ENV_PREFIX + name.upper()]
    standard = STANDARD_ENV_NAMES.get(name)
    if standard:
        names.append(standard)
    return tuple(names)


def display_name(name: str) -> str:
    """The variable operators are told to set for flat ``name`` (credentials: the standard
    one)."""
    return STANDARD_ENV_NAMES.get(name) or ENV_PREFIX + name.upper()


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names → the nested mapping the sections validate (unknown names are kept flat,
    so ``extra="forbid"`` names them)."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        setting = SETTINGS.get(name)
        path = setting.path if setting else (name,)
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return nested


# --- helpers ------------------------------------------------------------------------------


def _quote(text: str) -> str:
    shown = _printable(text)
    return repr(shown if len(shown) <= 60 else shown[:57] + "...")


def _show(value: object, *, secret: bool) -> str:
    """How ``describe`` shows a value: printable, secrets masked, long values clipped."""
    text = _show_whole(value, secret=secret)
    return text if len(text) <= 200 else f"{text[:160]}... ({len(text)} characters)"


def _show_whole(value: object, *, secret: bool) -> str:
    if secret:
        return mask(value.reveal()) if isinstance(value, Secret) else mask(str(value))
    if value is None:
        return "unlimited"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(_printable(str(v)) for v in value) or "(empty)"
    if isinstance(value, dict):
        parts = [
            f"{role}.{limit}={number}"
            for role, limits in value.items()
            for limit, number in limits.model_dump(exclude_none=True).items()
        ]
        return _printable(",".join(parts)) or "(empty)"
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, str):
        if "://" in value:
            return _printable(_redact_url(value))
        return _printable(value) if value else "(empty)"
    return str(value)


def _show_raw(value: object) -> str:
    """A rejected value as given, printable, URL passwords masked, at most 80 characters."""
    text = _printable(_redact_url(str(value)) if "://" in str(value) else str(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _redact_url(url: str) -> str:
    """``url`` with any password in its userinfo masked (database URLs may carry one)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:****@{netloc}"))
    except ValueError:
        return "(unparsable URL)"


def _uid(value: str) -> bool:
    platform, sep, ident = value.partition(":")
    return bool(sep and platform.strip() and ident.strip()) and _printable(value) == value


def _empty(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


# --- sources ------------------------------------------------------------------------------


class _FlatSource(PydanticBaseSettingsSource):
    """Settings already keyed by flat name (one source: environment, .env or TOML), nested
    for the sections. Empty values count as unset."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = {k: v for k, v in values.items() if not _empty(v)}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._nested().get(field_name), field_name, False

    def _nested(self) -> dict[str, Any]:
        return _nest(self._values)

    def __call__(self) -> dict[str, Any]:
        return self._nested()


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Flat values from environment-style names (``HYBOT_*`` and the standard names)."""
    upper = {k.upper(): v for k, v in environ.items() if isinstance(v, str) and v.strip()}
    values: dict[str, str] = {}
    for name in SETTINGS:
        for var in env_names(name):
            if var in upper:
                values[name] = upper[var]
                break
    return values


def _unknown_env(environ: Mapping[str, str], where: str = "") -> list[str]:
    known = {n for name in SETTINGS for n in env_names(name)} | {CONFIG_PATH_ENV}
    return sorted(
        _printable(k) + where
        for k in environ
        if k.upper().startswith(ENV_PREFIX) and k.upper() not in known
    )


def _flatten_toml(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map TOML keys (flat or in tables) to flat names; return values and unknown keys."""
    values: dict[str, Any] = {}
    unknown: list[str] = []

    def take(name: str, value: Any, key: str) -> None:
        setting = SETTINGS.get(name)
        if setting is None or (isinstance(value, dict) and not setting.mapping):
            unknown.append(key)
        else:
            values[name] = value

    for key, value in data.items():
        name = key.lower()
        if isinstance(value, dict) and not (name in SETTINGS and SETTINGS[name].mapping):
            for sub, sub_value in value.items():
                candidates = (f"{name}_{sub.lower()}", sub.lower())
                match = next((c for c in candidates if c in SETTINGS), candidates[-1])
                take(match, sub_value, f"{_printable(key)}.{_printable(sub)}")
        else:
            take(name, value, _printable(key))
    return values, unknown


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError(f"configuration file {path} does not exist") from err
    except IsADirectoryError as err:
        raise ConfigError(f"configuration file {path} is a directory") from err
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"configuration file {path} is not UTF-8 text") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"configuration file {path} is not valid TOML: {err}") from err


def _read_env_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """The values of a ``.env`` file (python-dotenv, with its interpolation) and one problem
    per line python-dotenv could not parse (it drops them silently). A problem gives the line
    number only: the line may hold a secret."""
    if not path.is_file():
        return {}, []
    try:
        raw = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text") from err
    statements = list(parse_stream(io.StringIO(raw)))
    where = _printable(str(path))
    bad = [
        # ``original.line`` is where the statement's leading blank lines begin.
        f"{where} line {b.original.line + _leading_newlines(b.original.string)} is not a "
        "NAME=value line (was a quote left open?); it was ignored"
        for b in statements
        if b.error
    ]
    # The statements that parse, verbatim, through dotenv_values (its ${VAR} interpolation),
    # which then has no unparsable line to log a warning about.
    good = "".join(b.original.string for b in statements if not b.error)
    parsed = dotenv_values(stream=io.StringIO(good))
    return {k: v for k, v in parsed.items() if v is not None}, bad


def _leading_newlines(text: str) -> int:
    stripped = text.lstrip()
    return text[: len(text) - len(stripped)].count("\n")


def _resolve_config_path(config_path: Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_path is not None:
        return config_path
    from_env = next((v for k, v in environ.items() if k.upper() == CONFIG_PATH_ENV), "")
    if from_env.strip():
        return Path(from_env.strip())
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(
    *,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    env_file: Path | None = Path(DEFAULT_ENV_FILE),
) -> Settings:
    """Read settings from ``env`` (default ``os.environ``) over ``env_file`` (default
    ``./.env`` when present; ``None`` to skip) over the TOML file over the defaults.

    Called by the CLI before the event loop starts (it reads small files synchronously).
    ``config_path`` names the TOML file explicitly (it must exist); without it
    ``$HYBOT_CONFIG`` or ``./hybot.toml`` (when present) is used. Raises
    :class:`ConfigError` for a file that cannot be read or parsed at all; values that do not
    parse or break a rule are reset to their defaults and listed by :meth:`Settings.problems`
    (as are ``.env`` lines that do not parse), so one run reports every problem.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    dotenv, env_file_problems = _read_env_file(env_file) if env_file is not None else ({}, [])
    merged_env = {**dotenv, **environ}
    path = _resolve_config_path(config_path, merged_env)
    file_values: dict[str, Any] = {}
    unknown: list[str] = []
    if path is not None:
        file_values, unknown_keys = _flatten_toml(_read_toml(path))
        unknown += [f"{k} (in {_printable(str(path))})" for k in unknown_keys]
    unknown += _unknown_env(environ)
    if env_file is not None:
        unknown += _unknown_env({k: v for k, v in dotenv.items() if k not in environ}, " (in .env)")
    layers: tuple[dict[str, Any], ...] = (
        _from_environ(environ),
        _from_environ(dotenv),
        file_values,
    )
    rejected: dict[str, str] = {}
    shown_values: dict[str, str] = {}
    while True:
        sources = tuple(_FlatSource(Settings, layer) for layer in layers)
        try:
            # _build_sources is BaseSettings' hook for pre-built sources; mypy only sees the
            # synthesized field-based __init__.
            settings = Settings(_build_sources=(sources, {}))  # type: ignore[call-arg]
            break
        except ValidationError as err:
            broken, strays = _classify(err)
            if strays:  # pragma: no cover - the sources only produce known settings
                raise SettingsError(strays) from err
            fresh = {name: why for name, why in broken.items() if name not in rejected}
            if not fresh:  # pragma: no cover - a default that breaks its own rule
                raise SettingsError(list(broken.values())) from err
            rejected.update(fresh)
            for name in fresh:
                raw = next((layer[name] for layer in layers if name in layer), None)
                if raw is not None and not SETTINGS[name].secret:
                    shown_values[name] = _show_raw(raw)
            layers = tuple(
                {k: v for k, v in layer.items() if k not in rejected} for layer in layers
            )
    settings._config_file = path
    settings._unknown = tuple(unknown)
    settings._file_problems = tuple(env_file_problems)
    settings._rejected = tuple(rejected.items())
    settings._rejected_values = shown_values
    logging.getLogger(__name__).debug("settings loaded (config file: %s)", path)
    return settings


def _classify(err: ValidationError) -> tuple[dict[str, str], list[str]]:
    """Validation errors as flat name → plain reason (values that do not parse and values
    that break a rule alike), and sentences for errors at no known setting. Only the location
    and the rule, never the input."""
    broken: dict[str, str] = {}
    strays: list[str] = []
    for item in err.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(str(part) for part in item.get("loc") or ("?",))
        setting = next(
            (_BY_PATH[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in _BY_PATH), None
        )
        if setting is None:
            strays.append(f"{_printable('.'.join(loc))}: {_reason(item)}")
        elif setting.name == "role_limits" and len(loc) >= 4:
            broken.setdefault(setting.name, _role_limit_reason(loc[2], loc[3], item))
        else:
            broken.setdefault(setting.name, _plain_reason(setting, item))
    return broken, strays


_LIMIT_NAMES = tuple(LimitSettings.model_fields)


def _plain_reason(setting: _Setting, item: Any) -> str:
    """What the setting expects, in plain words, for a value of the wrong kind; pydantic's
    own sentence for a broken rule (it names the choices or the bound)."""
    kind = item.get("type")
    if kind in ("int_parsing", "int_from_float", "int_type"):
        limit = setting.path[:2] in (("quota", "defaults"), ("quota", "org"))
        return "must be a whole number or 'unlimited'" if limit else "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false (or yes/no, on/off, 1/0)"
    if kind == "string_type":
        return "must be text (in TOML, in quotes)"
    if kind in ("tuple_type", "list_type"):
        return "must be a list (comma-separated, or a TOML array)"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a table of roles, e.g. vip.tokens_per_day=1000000"
    return _reason(item)


def _role_limit_reason(role: str, limit: str, item: Any) -> str:
    if limit not in _LIMIT_NAMES:
        return f"{_quote(limit)} is not a known limit (known: {', '.join(_LIMIT_NAMES)})"
    where = f"{_printable(role)}.{limit}"
    if item.get("type") == "greater_than_equal":
        return f"{where} must be 0 or more, or 'unlimited'"
    return f"{where} must be a whole number or 'unlimited'"


def _reason(item: Any) -> str:
    msg = str(item.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")
