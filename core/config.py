"""Settings dataclasses for the core.

These never read the environment or files: ``bots.settings`` builds them. Every field has
a safe default so tests can construct exactly what they need with keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = [
    "DEFAULT_MODELS",
    "LIMIT_NAMES",
    "AccessConfig",
    "BotConfig",
    "ChannelPolicyDefaults",
    "HunyuanConfig",
    "ImageConfig",
    "LimitSet",
    "ModelSpec",
    "QuotaConfig",
    "Secret",
]


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
    first byte), ``total_timeout`` for one whole call.
    """

    api: str = "openai"
    base_url: str = "https://tokenhub.tencentmaas.com/v1"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    model: str = "hy3-preview"
    native_endpoint: str = "https://hunyuan.tencentcloudapi.com"
    secret_id: Secret = field(default_factory=lambda: Secret(""))
    secret_key: Secret = field(default_factory=lambda: Secret(""))
    region: str = "ap-guangzhou"
    image_api: str = "tokenhub"
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


@dataclass(frozen=True, slots=True)
class LimitSet:
    """Limits for one subject. ``None`` = unlimited; ``0`` = nothing allowed."""

    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    images_per_day: int | None = None
    images_per_month: int | None = None
    requests_per_minute: int | None = None


#: The field names of :class:`LimitSet`, in declaration order (for code that walks them).
LIMIT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LimitSet))


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """Quota policy (design §4).

    ``defaults`` apply to everyone; ``roles`` override per role name; per-user overrides live in
    the store (set by admins). ``org`` is the account-wide budget above all users.
    ``free_images`` is a pack of image calls consumed before the org image budget, valid until
    ``free_images_expire`` (ISO date, in ``timezone``) or forever when empty.
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


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """Image job policy: the account-wide governor and what a picture carries."""

    max_concurrent_jobs: int = 1
    max_queue: int = 50
    deadline_seconds: float = 300.0
    default_size: str = "1024x1024"
    ai_mark: bool = True
    footnote: str = "AI generated"
    output_dir: str = "hybot-images"


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

    mode: str = "open"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    channel_defaults: ChannelPolicyDefaults = field(default_factory=ChannelPolicyDefaults)


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
    """

    hunyuan: HunyuanConfig = field(default_factory=HunyuanConfig)
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    language: str = "en"
    persona: str = ""
    persona_max_chars: int = 4000
    idle_reset_minutes: float = 240.0
    chat_concurrency: int = 5
    dedupe_ttl_seconds: float = 86_400.0
    delivery_lease_seconds: float = 900.0
    service_registration: str = ""
    show_note: bool = True
    group_scope: str = "shared"
    about_extra: str = ""

    def model_spec(self, name: str) -> ModelSpec:
        """The spec for ``name``; unknown models get a conservative 32k window."""
        for spec in self.models:
            if spec.name == name:
                return spec
        return ModelSpec(name, 32_000, 28_000, 2_000)
