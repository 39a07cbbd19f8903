"""Settings: environment names, prefix, TOML, precedence, problems, masking, BotConfig."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from bots.settings import (
    SETTINGS,
    STANDARD_ENV_NAMES,
    Settings,
    load_settings,
)
from core.config import (
    UNLIMITED_OVERRIDE,
    AccessConfig,
    BotConfig,
    HunyuanConfig,
    ImageConfig,
    LimitSet,
    QuotaConfig,
    Secret,
    parse_database_url,
)
from core.errors import ConfigError
from core.store import open_store

KEY = "sk-test-Zq8vX2pLmN4rT6yU"
SID = "AKIDtestQwErTy123456"
SKEY = "tc-secret-key-Hj7Kl9Mn0Pq"
TG = "123456789:AAFakeTelegramTokenValue_xyz"
SLACK_BOT = "xoxb-1111-2222-FakeSlackBot"
SLACK_SIGN = "fake-signing-secret-abc123"
SLACK_APP = "xapp-1-A111-fake-app-token"
ALL_SECRETS = (KEY, SID, SKEY, TG, SLACK_BOT, SLACK_SIGN, SLACK_APP)


def full_env(**extra: str) -> dict[str, str]:
    env = {
        "HUNYUAN_API_KEY": KEY,
        "TENCENTCLOUD_SECRET_ID": SID,
        "TENCENTCLOUD_SECRET_KEY": SKEY,
        "TELEGRAM_BOT_TOKEN": TG,
        "SLACK_BOT_TOKEN": SLACK_BOT,
        "SLACK_SIGNING_SECRET": SLACK_SIGN,
        "SLACK_APP_TOKEN": SLACK_APP,
    }
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings looks for ./hybot.toml; run each test in an empty directory.
    monkeypatch.chdir(tmp_path)


def test_defaults_without_anything() -> None:
    s = load_settings(env={})
    assert s.hunyuan.base_url == "https://tokenhub.tencentmaas.com/v1"
    assert s.hunyuan.model == "hy3-preview"
    assert s.hunyuan.api == "openai"
    assert s.database.url == "sqlite:///hybot.db"
    assert s.quota.timezone == "Asia/Shanghai"
    assert s.images.concurrency == 1
    assert s.chat_concurrency == 5
    assert s.config_file is None
    assert not s.hunyuan.api_key
    # The only problem of an empty environment is the missing key for the default API.
    assert s.problems() == ["HUNYUAN_API_KEY is not set (required by HYBOT_HUNYUAN_API=openai)"]


def test_standard_names_without_prefix_become_secrets() -> None:
    s = load_settings(env=full_env())
    fields = {
        "hunyuan_api_key": KEY,
        "tencentcloud_secret_id": SID,
        "tencentcloud_secret_key": SKEY,
        "telegram_bot_token": TG,
        "slack_bot_token": SLACK_BOT,
        "slack_signing_secret": SLACK_SIGN,
        "slack_app_token": SLACK_APP,
    }
    assert set(fields) == set(STANDARD_ENV_NAMES)
    for name, value in fields.items():
        secret = s.value(name)
        assert isinstance(secret, Secret)
        assert secret.reveal() == value
    assert s.problems() == []


def test_prefixed_names_and_their_types() -> None:
    env = full_env(
        HYBOT_HUNYUAN_BASE_URL="https://api.hunyuan.cloud.tencent.com/v1",
        HYBOT_HUNYUAN_MODEL="hunyuan-a13b",
        HYBOT_HUNYUAN_API="native",
        HYBOT_HUNYUAN_NATIVE_ENDPOINT="http://127.0.0.1:9000",
        HYBOT_HUNYUAN_IMAGE_API="native",
        HYBOT_DATABASE_URL="sqlite:////var/lib/hybot/hybot.db",
        HYBOT_LANGUAGE="zh",
        HYBOT_TIMEZONE="Europe/Berlin",
        HYBOT_ADMINS="telegram:42, slack:U123",
        HYBOT_ACCESS_MODE="allowlist",
        HYBOT_ALLOW="telegram:7",
        HYBOT_DENY="slack:U999",
        HYBOT_TOKENS_PER_DAY="5000",
        HYBOT_IMAGES_PER_MONTH="unlimited",
        HYBOT_IMAGE_CONCURRENCY="3",
        HYBOT_CHAT_CONCURRENCY="8",
        HYBOT_FREE_IMAGES="50",
        HYBOT_FREE_IMAGES_EXPIRE="2027-06-30",
        HYBOT_SERVICE_REGISTRATION="Beijing-HY-2026-0001",
        HYBOT_TELEGRAM_BASE_URL="http://127.0.0.1:8081",
        HYBOT_SLACK_BASE_URL="http://127.0.0.1:8082/api/",
        HYBOT_LOG_LEVEL="debug",
        HYBOT_SHOW_NOTE="false",
        HYBOT_DELIVERY_LEASE_SECONDS="1800",
    )
    s = load_settings(env=env)
    assert s.problems() == []
    assert s.hunyuan.api == "native"
    assert s.access.admins == ("telegram:42", "slack:U123")
    assert s.access.allow == ("telegram:7",)
    assert s.quota.defaults.tokens_per_day == 5000
    assert s.quota.defaults.images_per_month is None
    assert s.images.concurrency == 3
    assert s.show_note is False

    cfg = s.to_bot_config()
    assert isinstance(cfg, BotConfig)
    assert cfg.hunyuan.api == "native"
    assert cfg.hunyuan.base_url == "https://api.hunyuan.cloud.tencent.com/v1"
    assert cfg.hunyuan.model == "hunyuan-a13b"
    assert cfg.hunyuan.native_endpoint == "http://127.0.0.1:9000"
    assert cfg.hunyuan.image_api == "native"
    assert cfg.hunyuan.api_key.reveal() == KEY
    assert cfg.hunyuan.secret_id.reveal() == SID
    assert cfg.hunyuan.secret_key.reveal() == SKEY
    assert cfg.language == "zh"
    assert cfg.quota.timezone == "Europe/Berlin"
    assert cfg.quota.defaults.tokens_per_day == 5000
    assert cfg.quota.defaults.images_per_month is None
    assert cfg.quota.free_images == 50
    assert cfg.quota.free_images_expire == "2027-06-30"
    assert cfg.images.max_concurrent_jobs == 3
    assert cfg.chat_concurrency == 8
    assert cfg.access.mode == "allowlist"
    assert cfg.access.admins == ("telegram:42", "slack:U123")
    assert cfg.access.allow == ("telegram:7",)
    assert cfg.access.deny == ("slack:U999",)
    assert cfg.service_registration == "Beijing-HY-2026-0001"
    assert cfg.show_note is False
    assert cfg.delivery_lease_seconds == 1800.0


def test_env_names_are_case_insensitive_and_empty_means_unset() -> None:
    s = load_settings(env={"hybot_hunyuan_model": "hunyuan-lite", "HYBOT_LANGUAGE": ""})
    assert s.hunyuan.model == "hunyuan-lite"
    assert s.language == "en"


def test_prefixed_spelling_of_a_credential_wins_over_the_standard_one() -> None:
    s = load_settings(env={"HUNYUAN_API_KEY": "sk-standard", "HYBOT_HUNYUAN_API_KEY": "sk-own"})
    assert s.hunyuan.api_key.reveal() == "sk-own"


def test_toml_flat_and_sections(tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text(
        """
language = "zh"
admins = ["telegram:1", "slack:U2"]

[hunyuan]
model = "hunyuan-role-latest"
api_key = "sk-from-toml-1234"

[quota]
tokens_per_day = 1234
images_per_day = "unlimited"

[org]
tokens_per_month = 9000000

[image]
concurrency = 2

[database]
url = "sqlite:///data/bot.db"
""",
        encoding="utf-8",
    )
    s = load_settings(config_path=path, env={})
    assert s.config_file == path
    assert s.language == "zh"
    assert s.access.admins == ("telegram:1", "slack:U2")
    assert s.hunyuan.model == "hunyuan-role-latest"
    assert s.hunyuan.api_key.reveal() == "sk-from-toml-1234"
    assert s.quota.defaults.tokens_per_day == 1234
    assert s.quota.defaults.images_per_day is None
    assert s.quota.org.tokens_per_month == 9_000_000
    assert s.images.concurrency == 2
    assert s.database.url == "sqlite:///data/bot.db"
    assert s.problems() == []


def test_environment_overrides_toml(tmp_path: Path) -> None:
    path = tmp_path / "hybot.toml"
    path.write_text('hunyuan_model = "from-toml"\nlanguage = "zh"\n', encoding="utf-8")
    s = load_settings(config_path=path, env={"HYBOT_HUNYUAN_MODEL": "from-env"})
    assert s.hunyuan.model == "from-env"
    assert s.language == "zh"


def test_hybot_toml_in_working_directory_is_found(tmp_path: Path) -> None:
    (tmp_path / "hybot.toml").write_text('timezone = "UTC"\n', encoding="utf-8")
    s = load_settings(env={})
    assert s.quota.timezone == "UTC"
    assert s.config_file is not None and s.config_file.name == "hybot.toml"


def test_hybot_config_env_names_the_file(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('language = "zh"\n', encoding="utf-8")
    s = load_settings(env={"HYBOT_CONFIG": str(other)})
    assert s.language == "zh"


def test_missing_or_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_path=tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("language = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_path=bad, env={})


def test_unknown_settings_are_problems(tmp_path: Path) -> None:
    path = tmp_path / "hybot.toml"
    path.write_text('colour = "blue"\n[hunyuan]\nflavour = "x"\n', encoding="utf-8")
    s = load_settings(config_path=path, env={"HUNYUAN_API_KEY": KEY, "HYBOT_TOKEN_PER_DAY": "5"})
    problems = s.problems()
    assert any("HYBOT_TOKEN_PER_DAY" in p and "not a known setting" in p for p in problems)
    assert any("colour" in p for p in problems)
    assert any("hunyuan.flavour" in p for p in problems)


def test_unparsable_values_are_rejected_like_broken_rules_and_all_listed() -> None:
    # Issue: one value that did not parse used to hide every other problem (and the table).
    s = load_settings(
        env={
            "HUNYUAN_API_KEY": KEY,
            "HYBOT_TOKENS_PER_DAY": "lots",
            "HYBOT_SHOW_NOTE": "perhaps",
            "HYBOT_CHAT_CONCURRENCY": "five",
            "HYBOT_IDLE_RESET_MINUTES": "soon",
            "HYBOT_SLACK_PORT": "abc",
            "HYBOT_IMAGE_SIZE": "big",
            "HYBOT_TOKEN_PER_DAY": "5",
            "HYBOT_LANGAUGE": "zh",
        },
        env_file=None,
    )
    problems = s.problems()
    assert problems == [
        "HYBOT_LANGAUGE is not a known setting",
        "HYBOT_TOKEN_PER_DAY is not a known setting",
        "HYBOT_SLACK_PORT: must be a whole number",
        "HYBOT_IDLE_RESET_MINUTES: must be a number",
        "HYBOT_SHOW_NOTE: must be true or false (or yes/no, on/off, 1/0)",
        "HYBOT_CHAT_CONCURRENCY: must be a whole number",
        "HYBOT_TOKENS_PER_DAY: must be a whole number or 'unlimited'",
        "HYBOT_IMAGE_SIZE: an image size is written WIDTHxHEIGHT, e.g. 1024x1024",
    ]
    joined = "\n".join(problems)
    # The rejected values themselves are not repeated back in the problems ...
    assert "lots" not in joined and "perhaps" not in joined and "five" not in joined
    # ... but shown as given in the table, marked, with the default in effect.
    shown = dict(s.describe())
    assert shown["HYBOT_TOKENS_PER_DAY"] == "lots (rejected: see problems)"
    assert shown["HYBOT_SHOW_NOTE"] == "perhaps (rejected: see problems)"
    assert shown["HYBOT_SLACK_PORT"] == "abc (rejected: see problems)"
    defaults = Settings()
    assert s.quota.defaults.tokens_per_day == defaults.quota.defaults.tokens_per_day
    assert s.show_note == defaults.show_note and s.slack.port == defaults.slack.port
    assert s.chat_concurrency == defaults.chat_concurrency


def test_unparsable_toml_values_do_not_hide_typos(tmp_path: Path) -> None:
    path = tmp_path / "hybot.toml"
    path.write_text('images_per_day = "lots"\ntokens_per_dya = 5\n[hunyuan]\nmodle = "x"\n')
    s = load_settings(config_path=path, env={"HUNYUAN_API_KEY": KEY}, env_file=None)
    problems = s.problems()
    assert any(p.startswith("tokens_per_dya (in ") for p in problems), problems
    assert any(p.startswith("hunyuan.modle (in ") for p in problems), problems
    assert "HYBOT_IMAGES_PER_DAY: must be a whole number or 'unlimited'" in problems
    assert len(problems) == 3
    assert dict(s.describe())["HYBOT_IMAGES_PER_DAY"] == "lots (rejected: see problems)"


def test_a_dot_env_line_that_does_not_parse_is_a_problem_without_its_value(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".env"
    path.write_text(
        'HYBOT_PERSONA="unterminated sk-secret-in-env\n\nHYBOT_LANGUAGE=zh\nthis is garbage\n'
        "HYBOT_ABOUT=${HYBOT_LANGUAGE}!\n"
    )
    s = load_settings(env={"HUNYUAN_API_KEY": KEY}, env_file=path)
    problems = s.problems()
    assert problems == [
        f"{path} line 1 is not a NAME=value line (was a quote left open?); it was ignored",
        f"{path} line 4 is not a NAME=value line (was a quote left open?); it was ignored",
    ]
    assert "sk-secret-in-env" not in "\n".join(problems)
    # The lines that parse still count, interpolation included.
    assert s.language == "zh" and s.about == "zh!"


def test_every_semantic_problem_is_listed() -> None:
    env = {
        "HYBOT_HUNYUAN_API": "native",  # needs SecretId + SecretKey: both missing
        "HYBOT_HUNYUAN_BASE_URL": "tokenhub.example/v1",
        "HYBOT_TELEGRAM_BASE_URL": "ftp://127.0.0.1",
        "HYBOT_LANGUAGE": "fr",
        "HYBOT_TIMEZONE": "Mars/Olympus",
        "HYBOT_TOKENS_PER_DAY": "-5",
        "HYBOT_IMAGE_CONCURRENCY": "0",
        "HYBOT_DATABASE_URL": "mysql://db/hybot",
        "HYBOT_ADMINS": "alice",
        "HYBOT_ACCESS_MODE": "closed",
        "HYBOT_FREE_IMAGES_EXPIRE": "next year",
        "HYBOT_LOG_LEVEL": "loud",
        "HYBOT_DELIVERY_LEASE_SECONDS": "0",
    }
    problems = load_settings(env=env).problems()
    expected = [
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
        "HYBOT_HUNYUAN_BASE_URL",
        "HYBOT_TELEGRAM_BASE_URL",
        "HYBOT_LANGUAGE",
        "HYBOT_TIMEZONE",
        "HYBOT_TOKENS_PER_DAY",
        "HYBOT_IMAGE_CONCURRENCY",
        "HYBOT_DATABASE_URL",
        "HYBOT_ADMINS",
        "HYBOT_ACCESS_MODE",
        "HYBOT_FREE_IMAGES_EXPIRE",
        "HYBOT_LOG_LEVEL",
        "HYBOT_DELIVERY_LEASE_SECONDS",
    ]
    for var in expected:
        assert sum(var in p for p in problems) >= 1, (var, problems)
    # The API key is not required for the native API unless images go through TokenHub.
    assert any("HUNYUAN_API_KEY" in p and "tokenhub" in p.lower() for p in problems)
    assert len(problems) == len(expected) + 1


def test_credentials_required_follow_the_chosen_api() -> None:
    native_only = load_settings(
        env={
            "HYBOT_HUNYUAN_API": "native",
            "HYBOT_HUNYUAN_IMAGE_API": "native",
            "TENCENTCLOUD_SECRET_ID": SID,
            "TENCENTCLOUD_SECRET_KEY": SKEY,
        }
    )
    assert native_only.problems() == []
    openai_key = load_settings(env={"HUNYUAN_API_KEY": KEY})
    assert openai_key.problems() == []
    native_images = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_HUNYUAN_IMAGE_API": "native"})
    assert {p.split()[0] for p in native_images.problems()} == {
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
    }


def test_plain_path_and_sqlite_urls_are_supported_databases() -> None:
    for url in ("hybot.db", "/tmp/x/hybot.db", "sqlite:///rel.db", "sqlite:////abs/path.db"):
        s = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_DATABASE_URL": url})
        assert s.problems() == [], url
    s = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_DATABASE_URL": "postgresql://u:pw@h/db"})
    (problem,) = s.problems()
    assert "postgresql" in problem and "pw" not in problem


def test_no_secret_appears_in_repr_describe_or_problems() -> None:
    s = load_settings(
        env=full_env(
            HYBOT_LANGUAGE="xx",  # make sure problems() has content to scan
            HYBOT_DATABASE_URL="postgresql://hybot:db-Pa55word-9@db/hybot",
        )
    )
    texts = [repr(s), str(s), repr(s.to_bot_config()), *s.problems()]
    texts += [f"{name}={value}" for name, value in s.describe()]
    blob = "\n".join(texts)
    for secret in (*ALL_SECRETS, "db-Pa55word-9"):
        assert secret not in blob, secret
    shown = dict(s.describe())
    assert shown["HUNYUAN_API_KEY"] == f"****({len(KEY)} chars)"
    assert shown["TELEGRAM_BOT_TOKEN"] == f"****({len(TG)} chars)"
    assert shown["SLACK_APP_TOKEN"] == f"****({len(SLACK_APP)} chars)"
    assert shown["TENCENTCLOUD_SECRET_KEY"].startswith("****")
    assert "****" in shown["HYBOT_DATABASE_URL"]
    assert sorted(s.secrets()) == sorted(ALL_SECRETS)


def test_describe_shows_every_setting_with_effective_values() -> None:
    s = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_IMAGES_PER_DAY": "none"})
    shown = dict(s.describe())
    assert shown["config file"] == "(none)"
    assert shown["HYBOT_HUNYUAN_MODEL"] == "hy3-preview"
    assert shown["HYBOT_IMAGES_PER_DAY"] == "unlimited"
    assert shown["HYBOT_TOKENS_PER_DAY"] == "200000"
    assert shown["TENCENTCLOUD_SECRET_ID"] == "(unset)"
    assert shown["HYBOT_ADMINS"] == "(empty)"
    assert len(shown) == len(SETTINGS) + 1


def test_direct_construction_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBOT_LANGUAGE", "zh")
    monkeypatch.setenv("HUNYUAN_API_KEY", KEY)
    s = Settings()
    assert s.language == "en"
    assert not s.hunyuan.api_key
    # ...while load_settings() without an explicit env reads os.environ.
    loaded = load_settings()
    assert loaded.language == "zh"
    assert loaded.hunyuan.api_key.reveal() == KEY


REPO = Path(__file__).resolve().parents[2]


def parse_env_file(path: Path) -> dict[str, str]:
    """The example as `set -a; . ./.env` would read it: NAME=value lines, shell quoting."""
    env = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not NAME=value: {line!r}"
        (word,) = shlex.split(value) or [""]  # a value with a space must be quoted
        env[name.strip()] = word
    return env


def test_env_example_names_every_setting_and_only_known_ones() -> None:
    env = parse_env_file(REPO / "deploy" / ".env.example")
    s = load_settings(env=env)
    # The only problem of the example as shipped: no API key filled in.
    assert s.problems() == ["HUNYUAN_API_KEY is not set (required by HYBOT_HUNYUAN_API=openai)"]
    documented = set(env)
    for name in SETTINGS:
        assert {f"HYBOT_{name.upper()}", STANDARD_ENV_NAMES.get(name)} & documented, name
    # Its values are the defaults.
    assert s.describe()[1:] == Settings().describe()[1:]


def test_toml_example_loads_with_no_unknown_keys_and_default_values() -> None:
    s = load_settings(config_path=REPO / "deploy" / "hybot.toml.example", env={})
    assert s.problems() == ["HUNYUAN_API_KEY is not set (required by HYBOT_HUNYUAN_API=openai)"]
    assert s.describe()[1:] == Settings().describe()[1:]


def test_readme_quick_start_and_settings_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    assert quick.strip().splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && "
        ".venv/bin/hybot demo --script examples/tour.txt",
        "bash .ci/run",
    ]
    table = readme.split("## Configuration", 1)[1]
    for name in SETTINGS:
        var = STANDARD_ENV_NAMES.get(name) or f"HYBOT_{name.upper()}"
        assert f"| `{var}` |" in table, var
    # Commands to copy run the virtualenv's hybot: a bare `hybot` is not on PATH unless the
    # .venv is activated (the emulator section once had one).
    bare = re.compile(r"(?<![\w/.-])hybot (config|demo|chat|emulator|run|usage)\b")
    for block in readme.split("```")[1::2]:
        for line in block.splitlines():
            assert not bare.search(line.split("#", 1)[0]), line


# --- sections, roles, empty values, nonsense (issue 6 item 7, issue 7 items 11 and 18) -------


def test_sections_mirror_the_core_config() -> None:
    s = load_settings(env={"HUNYUAN_API_KEY": KEY})
    cfg = s.to_bot_config()
    assert s.hunyuan.model == cfg.hunyuan.model
    assert s.quota.defaults.tokens_per_day == cfg.quota.defaults.tokens_per_day == 200_000
    assert s.quota.org.tokens_per_day is None and cfg.quota.org.tokens_per_day is None
    assert s.images.dir == cfg.images.output_dir == "hybot-images"
    assert s.access.mode == cfg.access.mode == "open"
    assert s.database.location.path == "hybot.db"
    # Every flat name reaches exactly one place, and Settings.from_flat takes them.
    assert len({setting.path for setting in SETTINGS.values()}) == len(SETTINGS)
    assert Settings.from_flat(hunyuan_model="hunyuan-lite").hunyuan.model == "hunyuan-lite"


def test_role_limits_from_the_environment_and_from_toml(tmp_path: Path) -> None:
    compact = load_settings(
        env={"HYBOT_ROLE_LIMITS": "VIP.tokens_per_day=1000000, vip.images_per_day=50"}
    )
    as_json = load_settings(
        env={"HYBOT_ROLE_LIMITS": '{"vip": {"tokens_per_day": 1000000, "images_per_day": 50}}'}
    )
    path = tmp_path / "hybot.toml"
    path.write_text("[role_limits.vip]\ntokens_per_day = 1000000\nimages_per_day = 50\n")
    from_toml = load_settings(env={})
    for s in (compact, as_json, from_toml):
        (role,) = s.to_bot_config().quota.roles
        assert role[0] == "vip"
        assert role[1].tokens_per_day == 1_000_000 and role[1].images_per_day == 50
        assert role[1].tokens_per_month is None  # left out: the default applies (core merges)
        assert dict(s.describe())["HYBOT_ROLE_LIMITS"] == (
            "vip.tokens_per_day=1000000,vip.images_per_day=50"
        )
    bad = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_ROLE_LIMITS": "vip=5"})
    (problem,) = bad.problems()
    assert problem.startswith("HYBOT_ROLE_LIMITS") and "role.limit=number" in problem
    lots = load_settings(
        env={"HUNYUAN_API_KEY": KEY, "HYBOT_ROLE_LIMITS": "vip.tokens_per_day=lots"}
    )
    assert lots.problems() == [
        "HYBOT_ROLE_LIMITS: vip.tokens_per_day must be a whole number or 'unlimited'"
    ]
    unknown = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_ROLE_LIMITS": "vip.foo=3"})
    assert unknown.problems() == [
        "HYBOT_ROLE_LIMITS: 'foo' is not a known limit (known: tokens_per_day, "
        "tokens_per_month, images_per_day, images_per_month, requests_per_minute)"
    ]
    assert dict(unknown.describe())["HYBOT_ROLE_LIMITS"] == "vip.foo=3 (rejected: see problems)"
    assert unknown.quota.roles == {}
    negative = load_settings(
        env={"HUNYUAN_API_KEY": KEY, "HYBOT_ROLE_LIMITS": "vip.images_per_day=-1"}
    )
    assert [p.split(":")[0] for p in negative.problems()] == ["HYBOT_ROLE_LIMITS"]


def test_empty_values_mean_unset_in_toml_as_in_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "hybot.toml"
    path.write_text(
        'tokens_per_day = ""\n[hunyuan]\nmodel = "  "\n[image]\nsize = ""\n', encoding="utf-8"
    )
    from_file = load_settings(env={"HYBOT_IMAGES_PER_DAY": ""})
    assert from_file.quota.defaults.tokens_per_day == 200_000  # not "unlimited"
    assert from_file.quota.defaults.images_per_day == 10
    assert from_file.hunyuan.model == "hy3-preview"
    assert from_file.images.size == "1024x1024"


NONSENSE = [
    ("HYBOT_HUNYUAN_IDLE_TIMEOUT", "nan"),
    ("HYBOT_HUNYUAN_TOTAL_TIMEOUT", "inf"),
    ("HYBOT_HUNYUAN_CONNECT_TIMEOUT", "-1"),
    ("HYBOT_IDLE_RESET_MINUTES", "-inf"),
    ("HYBOT_DELIVERY_LEASE_SECONDS", "-30"),
    ("HYBOT_IMAGE_PRICE_CNY", "NaN"),
    ("HYBOT_IMAGE_SIZE", "big"),
    ("HYBOT_IMAGE_SIZE", "1024x"),
    ("HYBOT_IMAGE_SIZE", "0x1024"),
    ("HYBOT_IMAGE_SIZE", "1024x1024x2"),
    ("HYBOT_HUNYUAN_MAX_ATTEMPTS", "0"),
    ("HYBOT_IMAGES_PER_DAY", "-3"),
    ("HYBOT_HUNYUAN_BASE_URL", "https://"),
    ("HYBOT_HUNYUAN_MODEL", "hy3\x1b[31m"),
    ("HYBOT_DATABASE_URL", "sqlite://host/x.db"),
    ("HYBOT_PERSONA", "be kind\x1b[2J\x07"),
    ("HYBOT_TIMEZONE", "," * 300),
]


@pytest.mark.parametrize(("var", "value"), NONSENSE)
def test_nonsense_is_a_problem_and_the_default_stays_in_effect(var: str, value: str) -> None:
    s = load_settings(env={"HUNYUAN_API_KEY": KEY, var: value})
    problems = s.problems()
    assert len(problems) == 1 and problems[0].startswith(var), problems
    assert "(rejected: see problems)" in dict(s.describe())[var]
    assert s.describe()[1:] != Settings().describe()[1:]  # the rejection shows
    s.to_bot_config()  # the defaults in effect build a valid core config


@pytest.mark.parametrize(
    "build",
    [
        lambda: HunyuanConfig(idle_timeout=float("nan")),
        lambda: HunyuanConfig(total_timeout=float("inf")),
        lambda: HunyuanConfig(connect_timeout=-1.0),
        lambda: HunyuanConfig(max_attempts=0),
        lambda: HunyuanConfig(api="grpc"),  # type: ignore[arg-type]
        lambda: ImageConfig(default_size="big"),
        lambda: ImageConfig(max_concurrent_jobs=0),
        lambda: ImageConfig(deadline_seconds=float("nan")),
        lambda: LimitSet(tokens_per_day=-2),  # -1 is UNLIMITED_OVERRIDE
        lambda: QuotaConfig(timezone="Mars/Olympus"),
        lambda: QuotaConfig(free_images_expire="next year"),
        lambda: QuotaConfig(image_price_cny=float("inf")),
        lambda: BotConfig(language="fr"),  # type: ignore[arg-type]
        lambda: BotConfig(delivery_lease_seconds=-5.0),
        lambda: BotConfig(idle_reset_minutes=float("nan")),
        lambda: AccessConfig(mode="closed"),  # type: ignore[arg-type]
    ],
)
def test_core_config_constructors_refuse_nonsense(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigError):
        build()


def test_one_database_url_parser_agrees_with_the_store() -> None:
    urls = [
        "hybot.db",
        "/tmp/x/hybot.db",
        "sqlite:///rel.db",
        "sqlite:////abs/path.db",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite://host/x.db",
        "postgresql://u:pw@h/db",
        "redis://cache/0",
    ]
    for url in urls:
        settings_ok = not load_settings(
            env={"HUNYUAN_API_KEY": KEY, "HYBOT_DATABASE_URL": url}
        ).problems()
        try:
            open_store(url)
            store_ok = True
        except ConfigError:
            store_ok = False
        assert settings_ok == store_ok, url
    assert parse_database_url("sqlite://").in_memory
    assert parse_database_url("sqlite:////abs/path.db").path == "/abs/path.db"


def test_dot_env_in_the_working_directory_is_read_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text(
        "# comment\n"
        "HUNYUAN_API_KEY=sk-from-dotenv-123456\n"
        'HYBOT_PERSONA="You are a kind tea sommelier"\n'
        "HYBOT_LANGUAGE=zh\n"
        "HYBOT_TOKNES_PER_DAY=5\n",
        encoding="utf-8",
    )
    s = load_settings(env={"HYBOT_LANGUAGE": "en"})
    assert s.hunyuan.api_key.reveal() == "sk-from-dotenv-123456"
    assert s.persona == "You are a kind tea sommelier"
    assert s.language == "en"
    assert s.problems() == ["HYBOT_TOKNES_PER_DAY (in .env) is not a known setting"]
    assert load_settings(env={}, env_file=None).persona == ""


def test_undecodable_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "hybot.toml"
    bad.write_bytes(b'persona = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(env={})
    bad.unlink()
    (tmp_path / ".env").write_bytes(b"HYBOT_PERSONA=\xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(env={})


def test_platform_run_settings_telegram_and_slack() -> None:
    s = load_settings(
        env={
            "HUNYUAN_API_KEY": KEY,
            "HYBOT_TELEGRAM_MODE": "Webhook",
            "HYBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/tg",
            "HYBOT_TELEGRAM_WEBHOOK_SECRET": "s3cret_-token",
            "HYBOT_TELEGRAM_WEBHOOK_PORT": "8080",
            "HYBOT_SLACK_MODE": "socket",
            "HYBOT_SLACK_PORT": "3001",
            "HYBOT_SLACK_COMMAND": "/Ask",
        }
    )
    assert s.problems() == []
    assert s.telegram.mode == "webhook" and s.telegram.webhook_port == 8080
    assert s.telegram.webhook_secret.reveal() == "s3cret_-token"
    assert s.slack.mode == "socket" and s.slack.port == 3001 and s.slack.command == "/ask"
    assert "s3cret_-token" not in "\n".join(v for _, v in s.describe())
    bad = load_settings(
        env={
            "HUNYUAN_API_KEY": KEY,
            "HYBOT_TELEGRAM_MODE": "webhook",
            "HYBOT_TELEGRAM_WEBHOOK_URL": "http://bot.example.com/tg",
            "HYBOT_TELEGRAM_WEBHOOK_PORT": "70000",
            "HYBOT_SLACK_MODE": "carrier-pigeon",
            "HYBOT_SLACK_COMMAND": "hy",
        }
    )
    named = sorted({p.split()[0].rstrip(":") for p in bad.problems()})
    assert named == [
        "HYBOT_SLACK_COMMAND",
        "HYBOT_SLACK_MODE",
        "HYBOT_TELEGRAM_WEBHOOK_PORT",
        "HYBOT_TELEGRAM_WEBHOOK_SECRET",
        "HYBOT_TELEGRAM_WEBHOOK_URL",
    ]
    # The http:// URL is reported once (rejected), not again as missing; the unset secret is
    # said to be unset.
    webhook = [p for p in bad.problems() if p.startswith("HYBOT_TELEGRAM_WEBHOOK_")]
    assert [p for p in webhook if "WEBHOOK_URL" in p] == [
        "HYBOT_TELEGRAM_WEBHOOK_URL: must be a public https:// URL"
    ]
    assert "HYBOT_TELEGRAM_WEBHOOK_SECRET is not set (required by HYBOT_TELEGRAM_MODE=webhook)" in (
        webhook
    )
    unset_url = load_settings(
        env={
            "HUNYUAN_API_KEY": KEY,
            "HYBOT_TELEGRAM_MODE": "webhook",
            "HYBOT_TELEGRAM_WEBHOOK_SECRET": "bad secret!",
        },
        env_file=None,
    )
    assert unset_url.problems() == [
        "HYBOT_TELEGRAM_WEBHOOK_URL is not set (required by HYBOT_TELEGRAM_MODE=webhook): "
        "the public https:// URL",
        "HYBOT_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ - "
        "(required by HYBOT_TELEGRAM_MODE=webhook)",
    ]


def test_the_configured_persona_is_bounded() -> None:
    long = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_PERSONA": "tea " * 1250})
    (problem,) = long.problems()
    assert problem.startswith("HYBOT_PERSONA is 5000 characters") and "4000" in problem
    roomy = load_settings(
        env={
            "HUNYUAN_API_KEY": KEY,
            "HYBOT_PERSONA": "tea " * 1250,
            "HYBOT_PERSONA_MAX_CHARS": "6000",
        }
    )
    assert roomy.problems() == []
    assert roomy.to_bot_config().persona_max_chars == 6000
    with pytest.raises(ConfigError, match="persona"):
        BotConfig(persona="x" * 4001)


def test_a_role_can_be_unlimited_over_the_defaults() -> None:
    s = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_ROLE_LIMITS": "vip.tokens_per_day=none"})
    assert s.problems() == []
    ((role, limits),) = s.to_bot_config().quota.roles
    assert (role, limits.tokens_per_day) == ("vip", UNLIMITED_OVERRIDE)
    assert limits.images_per_day is None  # not set: the default applies
    assert dict(s.describe())["HYBOT_ROLE_LIMITS"] == "vip.tokens_per_day=unlimited"
    assert LimitSet(tokens_per_day=UNLIMITED_OVERRIDE).tokens_per_day == -1
    with pytest.raises(ConfigError):
        LimitSet(tokens_per_day=-2)
