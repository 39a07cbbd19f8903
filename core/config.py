"""Settings dataclasses for the core.

These never read the environment or files: ``bots.settings`` builds them. Every field has
a safe default so tests can construct exactly what they need with keyword arguments.

Contract: every constructor validates its values in ``__post_init__`` and raises
:class:`~core.errors.ConfigError` naming the field for nonsense: unknown choices, ``nan``,
``inf``, negative or zero durations, negative limits, malformed image sizes, unknown time
zones, malformed dates. A config object that exists is usable. Choices are ``Literal`` types
(the type checker sees them; ``__post_init__`` checks them at run time).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import ConfigError

__all__ = [
    "ACCESS_MODES",
    "CHAT_APIS",
    "DEFAULT_MODELS",
    "GROUP_SCOPES",
    "IMAGE_APIS",
    "LANGUAGES",
    "LIMIT_NAMES",
    "UNLIMITED_OVERRIDE",
    "AccessConfig",
    "AccessMode",
    "BotConfig",
    "ChannelPolicyDefaults",
    "ChatApi",
    "DatabaseLocation",
    "GroupScope",
    "HunyuanConfig",
    "ImageApi",
    "ImageConfig",
    "Language",
    "LimitSet",
    "ModelSpec",
    "QuotaConfig",
    "Secret",
    "mask",
    "parse_database_url",
    "parse_image_size",
]

ChatApi = Literal["openai", "native"]
ImageApi = Literal["tokenhub", "native"]
Language = Literal["en", "zh"]
AccessMode = Literal["open", "allowlist"]
GroupScope = Literal["shared", "user"]

CHAT_APIS: Final[tuple[str, ...]] = get_args(ChatApi)
IMAGE_APIS: Final[tuple[str, ...]] = get_args(ImageApi)
LANGUAGES: Final[tuple[str, ...]] = get_args(Language)
ACCESS_MODES: Final[tuple[str, ...]] = get_args(AccessMode)
GROUP_SCOPES: Final[tuple[str, ...]] = get_args(GroupScope)


# --- validation helpers (raise ConfigError naming the field, never echoing secrets) ---------


def _choice(owner: str, name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{owner}.{name} must be one of {', '.join(allowed)} (got {value!r})")


def _number(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{owner}.{name} must be a number (got {type(value).__name__})")
    if not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be a finite number (got {value})")
    return float(value)


def _positive(owner: str, name: str, value: object) -> None:
    if _number(owner, name, value) <= 0:
        raise ConfigError(f"{owner}.{name} must be positive (got {value})")


def _non_negative(owner: str, name: str, value: object) -> None:
    if _number(owner, name, value) < 0:
        raise ConfigError(f"{owner}.{name} must not be negative (got {value})")


def _count(owner: str, name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}.{name} must be a whole number (got {type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{owner}.{name} must be at least {minimum} (got {value})")


_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")


def parse_image_size(text: str) -> tuple[int, int]:
    """``"WxH"`` → ``(W, H)``: two positive whole numbers of at most five digits joined by
    ``x``. Raises :class:`ConfigError` otherwise. Which sizes a model takes is a separate rule
    (:func:`core.images.size_allowed`)."""
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError("an image size is written WIDTHxHEIGHT, e.g. 1024x1024")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True, slots=True)
class DatabaseLocation:
    """Where the store lives, parsed from a database URL by :func:`parse_database_url`.

    ``path`` is an SQLite file path (relative to the working directory, or absolute), or
    ``":memory:"`` for a private in-memory database.
    """

    path: str

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"


_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg")


def parse_database_url(url: str) -> DatabaseLocation:
    """The one database-URL parser (``bots.settings`` validates with it; ``bots`` opens the
    store at the path it returns).

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``sqlite:///:memory:`` and ``sqlite://`` (a private in-memory database), and a plain file
    path. Raises :class:`ConfigError` for an empty URL, ``sqlite://host/...``, PostgreSQL (not
    yet supported) and any other scheme. Messages never echo the URL (it may hold a password).
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ConfigError("the database URL is empty")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return DatabaseLocation(path=text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if rest in ("", "/", "/:memory:"):
            return DatabaseLocation(path=":memory:")
        if not rest.startswith("/"):
            raise ConfigError("SQLite database URLs look like sqlite:///path/to/file.db")
        return DatabaseLocation(path=rest[1:])
    if scheme in _POSTGRES_SCHEMES:
        raise ConfigError(
            f"the database URL uses the unsupported scheme {scheme!r} (PostgreSQL is not yet "
            "supported); use sqlite:///path/to/hybot.db or a plain file path"
        )
    safe = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]{0,30}", scheme) else "?"
    raise ConfigError(
        f"the database URL uses the unsupported scheme {safe!r}; "
        "use sqlite:///path/to/hybot.db or a plain file path"
    )


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string that never shows itself in ``repr``/``str``/logs.

    ``reveal()`` is the only way to read it, and only transport code calls it.
    """

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return mask(self._value)

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"


def mask(value: str) -> str:
    """Mask a secret for display: ``""`` → ``"(unset)"``; otherwise only its length shows."""
    if not value:
        return "(unset)"
    return f"****({len(value)} chars)"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the core needs to know about one chat model.

    ``context_tokens`` is the whole window; ``max_input_tokens`` the most input it takes;
    ``max_output_tokens`` the output we ask for (and reserve quota for). Prices are CNY per
    1,000 tokens.
    """

    name: str
    context_tokens: int
    max_input_tokens: int
    max_output_tokens: int
    price_in_per_1k: float = 0.0
    price_out_per_1k: float = 0.0

    def __post_init__(self) -> None:
        owner = f"ModelSpec({self.name!r})"
        _count(owner, "context_tokens", self.context_tokens, minimum=0)
        _count(owner, "max_input_tokens", self.max_input_tokens, minimum=0)
        _count(owner, "max_output_tokens", self.max_output_tokens, minimum=0)
        _non_negative(owner, "price_in_per_1k", self.price_in_per_1k)
        _non_negative(owner, "price_out_per_1k", self.price_out_per_1k)


# Figures from reference/hunyuan-api.md §3.4. Output budgets are what we *ask for* per turn
# (reserving 128k tokens of quota per message would make quotas useless), so they are capped.
DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("hy3-preview", 256_000, 192_000, 4_096, 0.0008, 0.002),
    ModelSpec("hunyuan-role-latest", 32_000, 28_000, 4_000, 0.004, 0.008),
    ModelSpec("hy-mt2-pro", 8_000, 4_000, 4_000, 0.004, 0.008),
    ModelSpec("hunyuan-lite", 256_000, 250_000, 6_000, 0.0, 0.0),
    ModelSpec("hunyuan-standard", 32_000, 30_000, 2_000, 0.0008, 0.002),
    ModelSpec("hunyuan-turbo", 32_000, 28_000, 4_000, 0.015, 0.05),
    ModelSpec("hunyuan-a13b", 224_000, 200_000, 8_000, 0.0005, 0.002),
)


@dataclass(frozen=True, slots=True)
class HunyuanConfig:
    """How to reach Hunyuan.

    ``api`` selects the chat wire format: ``"openai"`` (TokenHub / legacy OpenAI-compatible,
    Bearer ``api_key``) or ``"native"`` (API 3.0, TC3-signed with ``secret_id``/``secret_key``).
    ``image_api`` selects the image backend: ``"tokenhub"`` (synchronous) or ``"native"``
    (Submit/QueryHunyuanImageJob). Timeouts are seconds: ``connect_timeout`` to open a
    connection, ``idle_timeout`` between two stream chunks (or for a whole non-stream answer's
    first byte), ``total_timeout`` for one whole call. Durations are finite and positive;
    ``backoff_*`` finite and not negative; ``max_attempts`` at least 1.
    """

    api: ChatApi = "openai"
    base_url: str = "https://tokenhub.tencentmaas.com/v1"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    model: str = "hy3-preview"
    native_endpoint: str = "https://hunyuan.tencentcloudapi.com"
    secret_id: Secret = field(default_factory=lambda: Secret(""))
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    region: str = "ap-guangzhou"
    image_api: ImageApi = "tokenhub"
    image_model: str = "hy-image-v3"
    connect_timeout: float = 10.0
    idle_timeout: float = 60.0
    total_timeout: float = 400.0
    image_poll_interval: float = 2.0
    image_deadline: float = 180.0
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    extra_body: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        owner = "HunyuanConfig"
        _choice(owner, "api", self.api, CHAT_APIS)
        _choice(owner, "image_api", self.image_api, IMAGE_APIS)
        for name in (
            "connect_timeout",
            "idle_timeout",
            "total_timeout",
            "image_poll_interval",
            "image_deadline",
        ):
            _positive(owner, name, getattr(self, name))
        _non_negative(owner, "backoff_base", self.backoff_base)
        _non_negative(owner, "backoff_cap", self.backoff_cap)
        _count(owner, "max_attempts", self.max_attempts, minimum=1)


#: A limit meaning "no limit" where ``None`` means "not set here, fall through": per-role
#: overrides from the settings and per-user ones from ``/admin limit ... none`` alike
#: (``core.quota.UNLIMITED`` is this value).
UNLIMITED_OVERRIDE: Final = -1


@dataclass(frozen=True, slots=True)
class LimitSet:
    """Limits for one subject. ``None`` = unlimited (in an override layer: not set, the next
    layer decides); :data:`UNLIMITED_OVERRIDE` (``-1``) = unlimited even over a lower layer;
    ``0`` = nothing allowed; no other negative value."""

    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    images_per_day: int | None = None
    images_per_month: int | None = None
    requests_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in LIMIT_NAMES:
            value = getattr(self, name)
            if value is not None and value != UNLIMITED_OVERRIDE:
                _count("LimitSet", name, value, minimum=0)


#: The field names of :class:`LimitSet`, in declaration order (for code that walks them).
LIMIT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LimitSet))


def _zone(owner: str, name: str, value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as err:
        raise ConfigError(f"{owner}.{name} {value!r} is not a known time zone") from err


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """Quota policy (design §4).

    ``defaults`` apply to everyone; ``roles`` override per role name (a role's ``None`` field
    falls through to ``defaults``; ``bots.settings`` resolves "unlimited" and "inherit" before
    building this); per-user overrides live in the store (set by admins). ``org`` is the
    account-wide budget above all users. ``free_images`` is a pack of image calls consumed
    before the org image budget, valid until ``free_images_expire`` (ISO date, in
    ``timezone``) or forever when empty.
    """

    timezone: str = "Asia/Shanghai"
    defaults: LimitSet = field(
        default_factory=lambda: LimitSet(
            tokens_per_day=200_000,
            tokens_per_month=2_000_000,
            images_per_day=10,
            images_per_month=100,
            requests_per_minute=20,
        )
    )
    roles: tuple[tuple[str, LimitSet], ...] = ()
    admins_exempt: bool = True
    org: LimitSet = field(default_factory=LimitSet)
    free_images: int = 0
    free_images_expire: str = ""
    reservation_ttl_seconds: float = 900.0
    image_price_cny: float = 0.2

    def __post_init__(self) -> None:
        owner = "QuotaConfig"
        _zone(owner, "timezone", self.timezone)
        for role, limits in self.roles:
            if not isinstance(role, str) or not role.strip():
                raise ConfigError(f"{owner}.roles has a role without a name")
            if not isinstance(limits, LimitSet):
                raise ConfigError(f"{owner}.roles[{role!r}] must be a LimitSet")
        _count(owner, "free_images", self.free_images, minimum=0)
        if self.free_images_expire:
            try:
                date.fromisoformat(self.free_images_expire)
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"{owner}.free_images_expire must be an ISO date such as 2027-06-30"
                ) from err
        _positive(owner, "reservation_ttl_seconds", self.reservation_ttl_seconds)
        _non_negative(owner, "image_price_cny", self.image_price_cny)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """Image job policy: the account-wide governor and what a picture carries.

    ``default_size`` is ``WxH`` (:func:`parse_image_size`); ``output_dir`` is where the
    console saves pictures (platform adapters send them instead).
    """

    max_concurrent_jobs: int = 1
    max_queue: int = 50
    deadline_seconds: float = 300.0
    default_size: str = "1024x1024"
    ai_mark: bool = True
    footnote: str = "AI generated"
    output_dir: str = "hybot-images"

    def __post_init__(self) -> None:
        owner = "ImageConfig"
        _count(owner, "max_concurrent_jobs", self.max_concurrent_jobs, minimum=1)
        _count(owner, "max_queue", self.max_queue, minimum=0)
        _positive(owner, "deadline_seconds", self.deadline_seconds)
        try:
            parse_image_size(self.default_size)
        except ConfigError as err:
            raise ConfigError(f"{owner}.default_size: {err}") from err


@dataclass(frozen=True, slots=True)
class ChannelPolicyDefaults:
    """Defaults of per-channel policy; admins override per channel in chat (persisted)."""

    enabled: bool = True
    mention_only: bool = True
    images_allowed: bool = True
    model: str = ""
    persona: str = ""


@dataclass(frozen=True, slots=True)
class AccessConfig:
    """Who may use the bot. ``mode`` is ``"open"`` or ``"allowlist"``. User ids are
    ``"<platform>:<id>"`` strings (e.g. ``"telegram:42"``, ``"slack:U123"``, ``"console:me"``)."""

    mode: AccessMode = "open"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    channel_defaults: ChannelPolicyDefaults = field(default_factory=ChannelPolicyDefaults)

    def __post_init__(self) -> None:
        _choice("AccessConfig", "mode", self.mode, ACCESS_MODES)


@dataclass(frozen=True, slots=True)
class BotConfig:
    """Everything the conversation core needs, in one object.

    ``dedupe_ttl_seconds``: how long a delivery id is remembered (repeats are ignored).
    ``delivery_lease_seconds``: a delivery claimed by a turn that never finished (the process
    died) may be claimed again by a re-delivery after this long; it must exceed the longest
    turn (model call and image job deadlines).
    ``persona_max_chars``: the longest persona a user or admin may set (``/persona``,
    ``/admin channel persona``); longer ones are refused when set. A persona is sent with every
    message, so its size is paid on every call.
    ``about_extra``: operator text that ``/about`` shows after the service registration.
    Durations are finite and positive; ``persona`` is at most ``persona_max_chars`` long.
    """

    hunyuan: HunyuanConfig = field(default_factory=HunyuanConfig)
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    language: Language = "en"
    persona: str = ""
    persona_max_chars: int = 4000
    idle_reset_minutes: float = 240.0
    chat_concurrency: int = 5
    dedupe_ttl_seconds: float = 86_400.0
    delivery_lease_seconds: float = 900.0
    service_registration: str = ""
    show_note: bool = True
    group_scope: GroupScope = "shared"
    about_extra: str = ""

    def __post_init__(self) -> None:
        owner = "BotConfig"
        _choice(owner, "language", self.language, LANGUAGES)
        _choice(owner, "group_scope", self.group_scope, GROUP_SCOPES)
        _positive(owner, "idle_reset_minutes", self.idle_reset_minutes)
        _count(owner, "chat_concurrency", self.chat_concurrency, minimum=1)
        _positive(owner, "dedupe_ttl_seconds", self.dedupe_ttl_seconds)
        _positive(owner, "delivery_lease_seconds", self.delivery_lease_seconds)
        _count(owner, "persona_max_chars", self.persona_max_chars, minimum=1)
        if len(self.persona) > self.persona_max_chars:
            raise ConfigError(
                f"{owner}.persona is longer than persona_max_chars ({self.persona_max_chars})"
            )

    def model_spec(self, name: str) -> ModelSpec:
        """The spec for ``name``; unknown models get a conservative 32k window."""
        for spec in self.models:
            if spec.name == name:
                return spec
        return ModelSpec(name, 32_000, 28_000, 2_000)
