"""Operator settings: environment variables and an optional TOML file → :class:`BotConfig`.

Built on **pydantic-settings** (the well-kept settings library of the pydantic project): the
:class:`Settings` model declares every setting with its type and default, and two settings
sources feed it, in this order of precedence:

1. environment variables (``load_settings(env=...)`` injects a mapping; otherwise
   ``os.environ``),
2. a TOML file (stdlib :mod:`tomllib`): ``--config PATH``, else ``$HYBOT_CONFIG``, else
   ``hybot.toml`` in the working directory when it exists,
3. the defaults below (which mirror :mod:`core.config`).

Names. Credentials use the standard names of their ecosystems, without prefix:
``HUNYUAN_API_KEY``, ``TENCENTCLOUD_SECRET_ID``, ``TENCENTCLOUD_SECRET_KEY``,
``TELEGRAM_BOT_TOKEN``, ``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``
(``HYBOT_``-prefixed spellings are accepted too and win when both are set). Every other setting
is ``HYBOT_<NAME>``, e.g. ``HYBOT_HUNYUAN_MODEL``. In TOML the same names are written in lower
case without prefix (``hunyuan_model = "hy3-preview"``), either flat or inside a table whose
name is the first part of the setting name (``[hunyuan]`` ``model = ...``) or a purely
organisational table (``[quota]`` ``tokens_per_day = ...``). ``deploy/hybot.toml.example``
shows every key.

Contracts:
- This module (and the rest of ``bots``) is the only place that reads the environment
  or configuration files; :class:`Settings` constructed directly (``Settings(language="zh")``)
  reads nothing.
- Values that do not parse (``HYBOT_TOKENS_PER_DAY=lots``) make :func:`load_settings` raise one
  :class:`~core.errors.ConfigError` that names every such setting. Values that parse but
  make no sense (unknown language, bad URL, missing credentials, ...) are reported by
  :meth:`Settings.problems`, all at once, so ``hybot config check`` can list them together.
- Secrets are :class:`~core.config.Secret` from the moment they are read: they never
  appear in ``repr``, :meth:`Settings.describe`, :meth:`Settings.problems` or error messages.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.config import (
    AccessConfig,
    BotConfig,
    ChannelPolicyDefaults,
    HunyuanConfig,
    ImageConfig,
    LimitSet,
    QuotaConfig,
    Secret,
    mask,
)
from core.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "STANDARD_ENV_NAMES",
    "Settings",
    "SettingsError",
    "env_names",
    "load_settings",
]

ENV_PREFIX = "HYBOT_"
DEFAULT_CONFIG_FILE = "hybot.toml"
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

_UNLIMITED_WORDS = frozenset({"", "none", "null", "unlimited", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_HY = HunyuanConfig()
_QUOTA = QuotaConfig()
_IMAGES = ImageConfig()
_CHANNEL = ChannelPolicyDefaults()
_BOT = BotConfig()


def env_names(field_name: str) -> tuple[str, ...]:
    """Environment variable names for a setting, in precedence order."""
    names = [ENV_PREFIX + field_name.upper()]
    standard = STANDARD_ENV_NAMES.get(field_name)
    if standard:
        names.append(standard)
    return tuple(names)


def _display_name(field_name: str) -> str:
    """The name operators are told to set (the standard one for credentials)."""
    return STANDARD_ENV_NAMES.get(field_name) or ENV_PREFIX + field_name.upper()


class SettingsError(ConfigError):
    """Values that do not parse; ``problems`` has one sentence per setting (never a value)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


# --- field types --------------------------------------------------------------------------


def _to_secret(value: object) -> Secret:
    # Any scalar is accepted (a TOML integer key is still a key): a secret must never fail
    # validation, because pydantic's error text would then carry the secret's value.
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


SecretField = Annotated[Secret, BeforeValidator(_to_secret)]
ListField = Annotated[tuple[str, ...], BeforeValidator(_to_list)]
LimitField = Annotated[int | None, BeforeValidator(_to_limit)]


def _secret() -> Any:
    return Field(default_factory=lambda: Secret(""))


# --- sources ------------------------------------------------------------------------------


class _EnvSource(PydanticBaseSettingsSource):
    """Reads settings from an injected environment mapping (``HYBOT_*`` and standard names)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        # Empty values count as unset: compose files and systemd units often carry `X=` lines.
        self._env = {k.upper(): v for k, v in environ.items() if v != ""}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in env_names(field_name):
            if name in self._env:
                return self._env[name], field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                data[key] = value
        return data


class _MappingSource(PydanticBaseSettingsSource):
    """Settings already keyed by field name (the flattened TOML file)."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


# --- the model ----------------------------------------------------------------------------


class Settings(BaseSettings):
    """Every operator setting, validated. Build it with :func:`load_settings`.

    Constructed directly, it reads nothing (no environment, no files): only keyword arguments
    and defaults, which is what tests use.
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        validate_default=True,
    )

    # Hunyuan
    hunyuan_api: str = Field(_HY.api, description="chat wire format: openai | native")
    hunyuan_base_url: str = Field(_HY.base_url, description="OpenAI-compatible base URL")
    hunyuan_model: str = Field(_HY.model, description="chat model")
    hunyuan_api_key: SecretField = _secret()
    tencentcloud_secret_id: SecretField = _secret()
    tencentcloud_secret_key: SecretField = _secret()
    hunyuan_native_endpoint: str = Field(_HY.native_endpoint, description="API 3.0 endpoint")
    hunyuan_region: str = _HY.region
    hunyuan_image_api: str = Field(_HY.image_api, description="tokenhub | native")
    hunyuan_image_model: str = _HY.image_model
    hunyuan_connect_timeout: float = _HY.connect_timeout
    hunyuan_idle_timeout: float = _HY.idle_timeout
    hunyuan_total_timeout: float = _HY.total_timeout
    hunyuan_max_attempts: int = _HY.max_attempts

    # Platforms (adapters arrive in later releases; their settings are accepted now)
    telegram_bot_token: SecretField = _secret()
    telegram_base_url: str = "https://api.telegram.org"
    # Telegram run options (owner: the Telegram adapter; read by bots/telegram.py)
    telegram_mode: str = "polling"
    telegram_webhook_url: str = ""
    telegram_webhook_secret: SecretField = _secret()
    telegram_webhook_host: str = "127.0.0.1"
    telegram_webhook_port: int = 8443
    slack_bot_token: SecretField = _secret()
    slack_signing_secret: SecretField = _secret()
    slack_app_token: SecretField = _secret()
    slack_base_url: str = "https://slack.com/api/"

    # Storage
    database_url: str = "sqlite:///hybot.db"

    # Bot behaviour
    language: str = _BOT.language
    timezone: str = _QUOTA.timezone
    persona: str = _BOT.persona
    idle_reset_minutes: float = _BOT.idle_reset_minutes
    # How long a delivery claimed by a turn that never finished (its process died) stays
    # claimed before the platform's re-delivery may answer it; must exceed the longest turn.
    delivery_lease_seconds: float = _BOT.delivery_lease_seconds
    show_note: bool = _BOT.show_note
    group_scope: str = _BOT.group_scope
    service_registration: str = _BOT.service_registration
    about: str = _BOT.about_extra
    log_level: str = "INFO"

    # Access
    access_mode: str = AccessConfig().mode
    allow: ListField = ()
    deny: ListField = ()
    admins: ListField = ()
    admins_exempt: bool = _QUOTA.admins_exempt
    mention_only: bool = _CHANNEL.mention_only
    images_allowed: bool = _CHANNEL.images_allowed

    # Quota: per-user defaults
    tokens_per_day: LimitField = _QUOTA.defaults.tokens_per_day
    tokens_per_month: LimitField = _QUOTA.defaults.tokens_per_month
    images_per_day: LimitField = _QUOTA.defaults.images_per_day
    images_per_month: LimitField = _QUOTA.defaults.images_per_month
    requests_per_minute: LimitField = _QUOTA.defaults.requests_per_minute
    # Quota: the account-wide (organisation) budget
    org_tokens_per_day: LimitField = _QUOTA.org.tokens_per_day
    org_tokens_per_month: LimitField = _QUOTA.org.tokens_per_month
    org_images_per_day: LimitField = _QUOTA.org.images_per_day
    org_images_per_month: LimitField = _QUOTA.org.images_per_month
    org_requests_per_minute: LimitField = _QUOTA.org.requests_per_minute
    free_images: int = _QUOTA.free_images
    free_images_expire: str = _QUOTA.free_images_expire
    image_price_cny: float = _QUOTA.image_price_cny

    # Concurrency and images
    chat_concurrency: int = _BOT.chat_concurrency
    image_concurrency: int = _IMAGES.max_concurrent_jobs
    image_queue: int = _IMAGES.max_queue
    image_dir: str = _IMAGES.output_dir
    image_size: str = _IMAGES.default_size
    image_ai_mark: bool = _IMAGES.ai_mark
    image_footnote: str = _IMAGES.footnote

    _config_file: Path | None = PrivateAttr(default=None)
    _unknown: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Direct construction reads nothing; load_settings() supplies env and file sources.
        return (init_settings,)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Secrets mask themselves; a database URL may carry a password in its userinfo.
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                yield name, _redact_url(value)
            else:
                yield name, value

    # --- views ----------------------------------------------------------------------

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from, if any."""
        return self._config_file

    def secrets(self) -> list[str]:
        """Every configured secret value (for the logging redaction filter; never print)."""
        values = [
            getattr(self, name).reveal()
            for name, info in type(self).model_fields.items()
            if _is_secret(info)
        ]
        return [v for v in values if v]

    def to_bot_config(self) -> BotConfig:
        """The core's configuration. Call :meth:`problems` first; this does not validate."""
        hunyuan = HunyuanConfig(
            api=self.hunyuan_api,
            base_url=self.hunyuan_base_url,
            api_key=self.hunyuan_api_key,
            model=self.hunyuan_model,
            native_endpoint=self.hunyuan_native_endpoint,
            secret_id=self.tencentcloud_secret_id,
            secret_key=self.tencentcloud_secret_key,
            region=self.hunyuan_region,
            image_api=self.hunyuan_image_api,
            image_model=self.hunyuan_image_model,
            connect_timeout=self.hunyuan_connect_timeout,
            idle_timeout=self.hunyuan_idle_timeout,
            total_timeout=self.hunyuan_total_timeout,
            max_attempts=self.hunyuan_max_attempts,
        )
        quota = QuotaConfig(
            timezone=self.timezone,
            defaults=LimitSet(
                tokens_per_day=self.tokens_per_day,
                tokens_per_month=self.tokens_per_month,
                images_per_day=self.images_per_day,
                images_per_month=self.images_per_month,
                requests_per_minute=self.requests_per_minute,
            ),
            admins_exempt=self.admins_exempt,
            org=LimitSet(
                tokens_per_day=self.org_tokens_per_day,
                tokens_per_month=self.org_tokens_per_month,
                images_per_day=self.org_images_per_day,
                images_per_month=self.org_images_per_month,
                requests_per_minute=self.org_requests_per_minute,
            ),
            free_images=self.free_images,
            free_images_expire=self.free_images_expire,
            image_price_cny=self.image_price_cny,
        )
        images = ImageConfig(
            max_concurrent_jobs=self.image_concurrency,
            max_queue=self.image_queue,
            default_size=self.image_size,
            ai_mark=self.image_ai_mark,
            footnote=self.image_footnote,
            output_dir=self.image_dir,
        )
        access = AccessConfig(
            mode=self.access_mode,
            allow=self.allow,
            deny=self.deny,
            admins=self.admins,
            channel_defaults=ChannelPolicyDefaults(
                mention_only=self.mention_only,
                images_allowed=self.images_allowed,
            ),
        )
        return BotConfig(
            hunyuan=hunyuan,
            quota=quota,
            images=images,
            access=access,
            language=self.language,
            persona=self.persona,
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
        order (the config file first, then every setting as declared)."""
        rows = [("config file", str(self._config_file) if self._config_file else "(none)")]
        for name, info in type(self).model_fields.items():
            rows.append((_display_name(name), _show(getattr(self, name), secret=_is_secret(info))))
        return rows

    def problems(self) -> list[str]:
        """Every problem found, as sentences naming the variable; ``[]`` when all is well.

        Checks credentials for the chosen APIs, choices (API kinds, language, access mode,
        group scope, log level), URLs, the time zone, the database URL scheme, numeric ranges,
        user-id formats, the free-image expiry date and unknown settings.
        """
        out: list[str] = [f"{name} is not a known setting" for name in self._unknown]
        out += self._credential_problems()
        out += self._choice_problems()
        out += self._url_problems()
        out += self._number_problems()
        out += self._telegram_problems()
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            out.append(f"HYBOT_TIMEZONE {self.timezone!r} is not a known time zone")
        scheme = _database_scheme(self.database_url)
        if scheme != "sqlite":
            out.append(
                f"HYBOT_DATABASE_URL uses the unsupported scheme {scheme!r}; "
                "use sqlite:///path/to/hybot.db or a plain file path"
            )
        elif not _database_path(self.database_url):
            out.append("HYBOT_DATABASE_URL names no database file")
        for var, ids in (("HYBOT_ADMINS", self.admins), ("HYBOT_ALLOW", self.allow)):
            out += [f"{var} entry {i!r} is not of the form platform:id" for i in ids if not _uid(i)]
        out += [
            f"HYBOT_DENY entry {i!r} is not of the form platform:id"
            for i in self.deny
            if not _uid(i)
        ]
        if self.access_mode == "allowlist" and not (self.allow or self.admins):
            out.append(
                "HYBOT_ACCESS_MODE is allowlist but HYBOT_ALLOW and HYBOT_ADMINS are empty: "
                "nobody could use the bot"
            )
        if self.free_images_expire:
            try:
                date.fromisoformat(self.free_images_expire)
            except ValueError:
                out.append("HYBOT_FREE_IMAGES_EXPIRE must be an ISO date such as 2027-06-30")
        return out

    def _telegram_problems(self) -> list[str]:
        out: list[str] = []
        if self.telegram_mode not in ("polling", "webhook"):
            out.append("HYBOT_TELEGRAM_MODE must be polling or webhook")
        if not 0 <= self.telegram_webhook_port <= 65535:
            out.append("HYBOT_TELEGRAM_WEBHOOK_PORT must be a port number (0-65535)")
        if self.telegram_mode == "webhook":
            if not self.telegram_webhook_url.startswith("https://"):
                out.append(
                    "HYBOT_TELEGRAM_WEBHOOK_URL must be the public https:// URL of the webhook "
                    "(required by HYBOT_TELEGRAM_MODE=webhook)"
                )
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", self.telegram_webhook_secret.reveal()):
                out.append(
                    "HYBOT_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ - "
                    "(required by HYBOT_TELEGRAM_MODE=webhook)"
                )
        return out

    def _credential_problems(self) -> list[str]:
        out: list[str] = []
        if self.hunyuan_api == "openai" and not self.hunyuan_api_key:
            out.append("HUNYUAN_API_KEY is not set (required by HYBOT_HUNYUAN_API=openai)")
        needs_tc3 = [
            var
            for var, kind in (
                ("HYBOT_HUNYUAN_API", self.hunyuan_api),
                ("HYBOT_HUNYUAN_IMAGE_API", self.hunyuan_image_api),
            )
            if kind == "native"
        ]
        if needs_tc3:
            why = " and ".join(f"{v}=native" for v in needs_tc3)
            if not self.tencentcloud_secret_id:
                out.append(f"TENCENTCLOUD_SECRET_ID is not set (required by {why})")
            if not self.tencentcloud_secret_key:
                out.append(f"TENCENTCLOUD_SECRET_KEY is not set (required by {why})")
        if (
            self.hunyuan_image_api == "tokenhub"
            and self.hunyuan_api != "openai"
            and not self.hunyuan_api_key
        ):
            out.append("HUNYUAN_API_KEY is not set (required by HYBOT_HUNYUAN_IMAGE_API=tokenhub)")
        return out

    def _choice_problems(self) -> list[str]:
        choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("HYBOT_HUNYUAN_API", self.hunyuan_api, ("openai", "native")),
            ("HYBOT_HUNYUAN_IMAGE_API", self.hunyuan_image_api, ("tokenhub", "native")),
            ("HYBOT_LANGUAGE", self.language, ("en", "zh")),
            ("HYBOT_ACCESS_MODE", self.access_mode, ("open", "allowlist")),
            ("HYBOT_GROUP_SCOPE", self.group_scope, ("shared", "user")),
            ("HYBOT_LOG_LEVEL", self.log_level.upper(), _LOG_LEVELS),
        )
        return [
            f"{var} must be one of {', '.join(allowed)} (got {value!r})"
            for var, value, allowed in choices
            if value not in allowed
        ]

    def _url_problems(self) -> list[str]:
        urls = (
            ("HYBOT_HUNYUAN_BASE_URL", self.hunyuan_base_url),
            ("HYBOT_HUNYUAN_NATIVE_ENDPOINT", self.hunyuan_native_endpoint),
            ("HYBOT_TELEGRAM_BASE_URL", self.telegram_base_url),
            ("HYBOT_SLACK_BASE_URL", self.slack_base_url),
        )
        out = []
        for var, url in urls:
            try:
                parts = urlsplit(url)
                ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            except ValueError:
                ok = False
            if not ok:
                out.append(f"{var} {_redact_url(url)!r} is not an http(s) URL")
        return out

    def _number_problems(self) -> list[str]:
        out = []
        limits = (
            "tokens_per_day",
            "tokens_per_month",
            "images_per_day",
            "images_per_month",
            "requests_per_minute",
            "org_tokens_per_day",
            "org_tokens_per_month",
            "org_images_per_day",
            "org_images_per_month",
            "org_requests_per_minute",
            "free_images",
            "image_queue",
        )
        for name in limits:
            value = getattr(self, name)
            if value is not None and value < 0:
                out.append(f"{_display_name(name)} must not be negative (got {value})")
        at_least_one = ("chat_concurrency", "image_concurrency", "hunyuan_max_attempts")
        for name in at_least_one:
            value = getattr(self, name)
            if value < 1:
                out.append(f"{_display_name(name)} must be at least 1 (got {value})")
        positive = (
            "hunyuan_connect_timeout",
            "hunyuan_idle_timeout",
            "hunyuan_total_timeout",
            "idle_reset_minutes",
            "delivery_lease_seconds",
        )
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                out.append(f"{_display_name(name)} must be positive (got {value})")
        if self.image_price_cny < 0:
            out.append(f"HYBOT_IMAGE_PRICE_CNY must not be negative (got {self.image_price_cny})")
        return out


# --- helpers ------------------------------------------------------------------------------


def _is_secret(info: FieldInfo) -> bool:
    return info.annotation is Secret


def _show(value: object, *, secret: bool) -> str:
    if secret:
        return mask(value.reveal()) if isinstance(value, Secret) else mask(str(value))
    if value is None:
        return "unlimited"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(empty)"
    if isinstance(value, str):
        if "://" in value:
            return _redact_url(value)
        return value if value else "(empty)"
    return str(value)


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
    return bool(sep and platform.strip() and ident.strip())


def _database_scheme(url: str) -> str:
    if "://" not in url:
        return "sqlite"  # a plain file path
    return url.split("://", 1)[0].lower()


def _database_path(url: str) -> str:
    if "://" not in url:
        return url.strip()
    return url.split("://", 1)[1].lstrip("/") if url.lower().startswith("sqlite://") else ""


def _flatten_toml(
    data: Mapping[str, Any], fields: Mapping[str, FieldInfo]
) -> tuple[dict[str, Any], list[str]]:
    """Map TOML keys (flat or in tables) to field names; return values and unknown keys."""
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        name = key.lower()
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                candidates = (f"{name}_{sub.lower()}", sub.lower())
                match = next((c for c in candidates if c in fields), None)
                if match is None or isinstance(sub_value, dict):
                    unknown.append(f"{key}.{sub}")
                else:
                    values[match] = sub_value
        elif name in fields:
            values[name] = value
        else:
            unknown.append(key)
    return values, unknown


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError(f"configuration file {path} does not exist") from err
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"configuration file {path} is not valid TOML: {err}") from err


def _resolve_config_path(config_path: Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_path is not None:
        return config_path
    from_env = environ.get(CONFIG_PATH_ENV, "")
    if from_env:
        return Path(from_env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(
    *, config_path: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from ``env`` (default ``os.environ``) over the TOML file over defaults.

    Called by the CLI before the event loop starts (it reads a small file synchronously).
    ``config_path`` names the TOML file explicitly (it must exist); without it ``$HYBOT_CONFIG``
    or ``./hybot.toml`` (when present) is used. Raises :class:`ConfigError` naming every value
    that does not parse; semantic problems are left to :meth:`Settings.problems`.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    path = _resolve_config_path(config_path, environ)
    fields = Settings.model_fields
    file_values: dict[str, Any] = {}
    unknown: list[str] = []
    if path is not None:
        file_values, unknown_keys = _flatten_toml(_read_toml(path), fields)
        unknown += [f"{k} (in {path})" for k in unknown_keys]
    known_env = {n for name in fields for n in env_names(name)} | {CONFIG_PATH_ENV}
    unknown += sorted(
        k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known_env
    )
    sources = (_EnvSource(Settings, environ), _MappingSource(Settings, file_values))
    try:
        # _build_sources is BaseSettings' documented hook for pre-built sources; mypy only
        # sees the synthesized field-based __init__.
        settings = Settings(_build_sources=(sources, {}))  # type: ignore[call-arg]
    except ValidationError as err:
        raise SettingsError(_describe_validation(err)) from err
    settings._config_file = path
    settings._unknown = tuple(unknown)
    logging.getLogger(__name__).debug("settings loaded (config file: %s)", path)
    return settings


def _describe_validation(err: ValidationError) -> list[str]:
    # Only the location and pydantic's sentence: never the input, which might be a secret
    # someone pasted into the wrong variable.
    out = []
    for item in err.errors(include_url=False, include_input=False):
        loc = item.get("loc") or ("?",)
        name = str(loc[0])
        var = _display_name(name) if name in Settings.model_fields else name
        out.append(f"{var}: {item.get('msg', 'invalid value')}")
    return out
