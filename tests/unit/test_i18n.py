"""The zh/en message catalogue, language resolution and error sentences."""

from __future__ import annotations

import inspect
import re
import string
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from fakes.conversation import fake_core

from core import errors
from core.config import AccessConfig, BotConfig, LimitSet, QuotaConfig
from core.errors import (
    CommandError,
    HybotError,
    InputTooLong,
    QuotaExceeded,
    RateLimited,
    ServerBusy,
    SignatureExpired,
)
from core.i18n import (
    CATALOGUE,
    LANGUAGES,
    error_message,
    format_reset,
    limit_label,
    normalize_language,
    resolve_language,
    t,
)
from core.tokens import is_cjk
from core.types import Final, Partial

# Keys the conversation core, quota and images code use, with their parameters.
REQUIRED: dict[str, set[str]] = {
    "quota.exceeded": {"limit", "remaining", "resets"},
    "quota.status_line": {"name", "used", "limit", "remaining", "resets"},
    "quota.unlimited": set(),
    "usage.header": {"period"},
    "usage.line": {"answered", "failed", "tokens_in", "tokens_out", "images", "cost"},
    "usage.none": set(),
    "reset.done": set(),
    "forget.done": {"turns"},
    "persona.set": set(),
    "persona.cleared": set(),
    "persona.show": {"persona"},
    "persona.none": set(),
    "context.idle_reset": {"minutes"},
    "image.queued": {"position"},
    "image.running": set(),
    "image.caption": {"prompt", "mark"},
    "image.mark": set(),
    "image.not_allowed": set(),
    "image.too_many": set(),
    "cancel.done": set(),
    "cancel.nothing": set(),
    "about.text": {"model", "image_model", "registration"},
    "retract.notice": set(),
    "stream.interrupted_suffix": set(),
    "lang.set": {"lang"},
    "channel.disabled": set(),
    "admin.only": set(),
    "admin.done": {"what"},
    "admin.report_header": {"period"},
    "admin.report_line": {"key", "calls", "tokens_in", "tokens_out", "images", "cost"},
    "unknown_command": {"usage"},
    "note.prefix": set(),
    "help.header": set(),
    "help.admin_header": set(),
}


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def error_kinds() -> set[str]:
    classes = [
        obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, HybotError)
    ]
    return {cls.kind for cls in classes}


# --- catalogue shape -----------------------------------------------------------------------


def test_languages() -> None:
    assert LANGUAGES == ("en", "zh")
    assert set(CATALOGUE) == set(LANGUAGES)


def test_both_languages_have_the_same_keys() -> None:
    assert set(CATALOGUE["en"]) == set(CATALOGUE["zh"])


def test_each_key_has_the_same_placeholders_in_both_languages() -> None:
    for key, english in CATALOGUE["en"].items():
        assert placeholders(english) == placeholders(CATALOGUE["zh"][key]), key


def test_placeholders_are_bare_names() -> None:
    # A format spec or conversion would break when a caller passes a preformatted string.
    for lang in LANGUAGES:
        for key, template in CATALOGUE[lang].items():
            for _, name, spec, conversion in string.Formatter().parse(template):
                if name is not None:
                    assert name.isidentifier(), (lang, key, name)
                    assert not spec and conversion is None, (lang, key)


def test_required_keys_exist_with_their_parameters() -> None:
    for key, params in REQUIRED.items():
        assert placeholders(CATALOGUE["en"][key]) == params, key


def test_every_error_kind_has_a_parameterless_entry() -> None:
    kinds = error_kinds()
    assert {"quota", "command", "moderation", "auth", "internal"} <= kinds
    for kind in kinds:
        for lang in LANGUAGES:
            template = CATALOGUE[lang][f"error.{kind}"]
            assert template and not placeholders(template), (lang, kind)


def test_every_command_has_a_help_key() -> None:
    for name in ("ask", "image", "reset", "forget", "persona", "quota", "usage", "cancel"):
        assert f"help.{name}" in CATALOGUE["en"]
    for name in ("help", "about", "lang", "admin"):
        assert f"help.{name}" in CATALOGUE["en"]


def test_chinese_entries_are_chinese_and_english_entries_are_not() -> None:
    for key, text in CATALOGUE["zh"].items():
        visible = string.Formatter().parse(text)
        literal = "".join(part for part, _, _, _ in visible)
        assert any(is_cjk(ch) for ch in literal), f"zh {key!r} has no Chinese text"
        # Chinese sentences use full-width punctuation after Chinese characters.
        assert not re.search(r"[\u4e00-\u9fff][,.:;!?]", literal), f"zh {key!r}: {literal!r}"
    for key, text in CATALOGUE["en"].items():
        assert not any(is_cjk(ch) for ch in text), f"en {key!r} contains CJK"


def test_no_empty_entries() -> None:
    for lang in LANGUAGES:
        for key, text in CATALOGUE[lang].items():
            assert text.strip(), (lang, key)


def test_ai_generated_disclosure_is_in_about_and_image_mark() -> None:
    about_en = t(
        "about.text", "en", model="hy3-preview", image_model="hy-image-v3", registration=""
    )
    about_zh = t(
        "about.text", "zh", model="hy3-preview", image_model="hy-image-v3", registration=""
    )
    assert "generated by AI" in about_en and "hy3-preview" in about_en
    assert "AI 生成" in about_zh and "hy-image-v3" in about_zh
    assert "AI" in t("image.mark", "en") and "AI 生成" in t("image.mark", "zh")
    reg = t("about.text", "zh", model="m", image_model="i", registration="网信算备 123 号")
    assert reg.endswith("网信算备 123 号")


# --- t -------------------------------------------------------------------------------------


def test_t_formats_parameters() -> None:
    assert t("image.queued", "en", position=3) == "Your image is queued (position 3)."
    assert t("image.queued", "zh", position=3) == "图片任务已排队（第 3 位）。"


@pytest.mark.parametrize("lang", ["fr", "", "xx-YY", "EN"])
def test_t_falls_back_to_english(lang: str) -> None:
    assert t("reset.done", lang) == CATALOGUE["en"]["reset.done"]


@pytest.mark.parametrize("lang", ["zh-CN", "zh_TW", "ZH-Hans"])
def test_t_accepts_chinese_tags(lang: str) -> None:
    assert t("reset.done", lang) == CATALOGUE["zh"]["reset.done"]


def test_t_unknown_key_raises_key_error() -> None:
    with pytest.raises(KeyError):
        t("no.such.key", "en")


def test_t_missing_parameter_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="position"):
        t("image.queued", "zh")


def test_t_ignores_extra_parameters_and_does_not_reinterpret_values() -> None:
    text = t("persona.show", "en", persona="{secret} {0} {persona}", unused=1)
    assert text == "Current persona:\n{secret} {0} {persona}"


# --- resolve_language ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "en"),
        ({"default": "zh"}, "zh"),
        ({"default": "fr"}, "en"),
        ({"platform_hint": "zh-hans"}, "zh"),
        ({"platform_hint": "zh-CN"}, "zh"),
        ({"platform_hint": "zh_TW"}, "zh"),
        ({"platform_hint": "zh"}, "zh"),
        ({"platform_hint": "en-US", "default": "zh"}, "en"),
        ({"platform_hint": "ja", "default": "zh"}, "zh"),
        ({"platform_hint": "", "default": "zh"}, "zh"),
        ({"user_setting": "en", "platform_hint": "zh-CN", "default": "zh"}, "en"),
        ({"user_setting": "zh", "platform_hint": "en-US"}, "zh"),
        ({"user_setting": "auto", "platform_hint": "zh-CN"}, "zh"),
        ({"user_setting": "auto", "platform_hint": "de", "default": "zh"}, "zh"),
        ({"user_setting": "", "platform_hint": "EN-gb", "default": "zh"}, "en"),
    ],
)
def test_resolve_language(kwargs: dict[str, str], expected: str) -> None:
    assert resolve_language(**kwargs) == expected


def test_normalize_language() -> None:
    assert normalize_language("zh-Hant-TW") == "zh"
    assert normalize_language(" en ") == "en"
    assert normalize_language("zho") == ""
    assert normalize_language("auto") == ""


# --- error_message -------------------------------------------------------------------------


def test_quota_error_names_limit_remaining_and_reset_time() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    err = QuotaExceeded(
        "tokens/day",
        limit=200_000,
        remaining=1234,
        resets_at=datetime(2025, 3, 7, 16, 0, tzinfo=UTC),
    )
    en = error_message(err, "en", tz=shanghai)
    zh = error_message(err, "zh", tz=shanghai)
    assert "1234" in en and "1234" in zh
    assert "2025-03-08 00:00 UTC+08:00" in en
    assert "2025-03-08 00:00 UTC+08:00" in zh
    assert "daily tokens" in en and "每日 token" in zh
    # Without a time zone the reset time keeps its own offset.
    assert "2025-03-07 16:00 UTC" in error_message(err, "en")


def test_quota_error_without_reset_says_so() -> None:
    err = QuotaExceeded("org/images/month", limit=50, remaining=0, resets_at=None)
    en = error_message(err, "en")
    zh = error_message(err, "zh")
    assert t("quota.never", "en") in en and "shared monthly images" in en
    assert t("quota.never", "zh") in zh and "全局每月图片" in zh
    assert "0" in en


def test_negative_remaining_is_shown_as_zero() -> None:
    err = QuotaExceeded("rpm", limit=5, remaining=-2, resets_at=None)
    assert "(0 left)" in error_message(err, "en")


def test_limit_label() -> None:
    assert limit_label("images/month", "zh") == "每月图片"
    assert limit_label("org/tokens/day", "en") == "shared daily tokens"
    assert limit_label("weird/thing", "en") == "weird/thing"


def test_format_reset_offsets() -> None:
    west = timezone(timedelta(hours=-5, minutes=-30))
    when = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert format_reset(when, "en", tz=west) == "2025-01-01 06:30 UTC-05:30"
    assert format_reset(datetime(2025, 1, 1, 12, 0), "en") == "2025-01-01 12:00"


def test_command_errors() -> None:
    usage = "/lang zh|en|auto"
    err = CommandError(f"Usage: {usage}", usage=usage)
    assert error_message(err, "en") == f"That command isn't quite right. Usage: {usage}"
    assert error_message(err, "zh") == f"命令格式不对。用法：{usage}"
    unknown = CommandError("Unknown command /x", usage="/help")
    assert error_message(unknown, "zh") == t("unknown_command", "zh", usage="/help")
    assert error_message(CommandError("bad"), "en") == CATALOGUE["en"]["error.command"]


def test_input_too_long_states_size_and_limit() -> None:
    msg = error_message(InputTooLong(tokens=5000, limit=4000), "zh")
    assert "5000" in msg and "4000" in msg
    assert error_message(InputTooLong(), "en") == CATALOGUE["en"]["error.input_too_long"]


def test_every_error_class_gets_a_sentence_in_each_language() -> None:
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, HybotError) and obj not in (QuotaExceeded, CommandError, InputTooLong)
    ]
    assert len(classes) >= 18
    for cls in classes:
        err = cls("upstream said: secret-ish detail")
        for lang in LANGUAGES:
            msg = error_message(err, lang)
            assert msg == CATALOGUE[lang][f"error.{cls.kind}"]
            assert "secret-ish" not in msg


def test_related_errors_share_a_sentence_by_kind() -> None:
    assert error_message(ServerBusy(), "zh") == error_message(errors.Busy(), "zh")
    assert error_message(SignatureExpired(), "en") == error_message(errors.AuthError(), "en")
    assert (
        error_message(RateLimited(retry_after=3.0), "zh") == CATALOGUE["zh"]["error.rate_limited"]
    )


def test_unknown_kind_falls_back_to_the_english_user_message() -> None:
    class Novel(HybotError):
        kind = "novel"
        default_user_message = "Something novel happened."

    assert error_message(Novel(), "zh") == "Something novel happened."


# --- no English sentence in Chinese output (issue 7 item 20) --------------------------------

#: Identifiers may appear in Chinese text: commands and options, ``platform:id``, model names,
#: sizes, placeholders' values. They all carry punctuation or digits; a bare English word does not.
_IDENTIFIER = re.compile(r"\S*[/:_.@!<>|\[\]0-9-]\S*")
_WORD = re.compile(r"[A-Za-z]{2,}")
#: English words a Chinese sentence uses as they are.
_ALLOWED = frozenset(
    {"token", "AI", "NUL", "hybot", "Ctrl", "ID", "platform", "id", "none", "default"}
)


def english_runs(text: str) -> list[str]:
    """English words in ``text`` that are not identifiers (commands, ids, model names, the
    usage lines of /help) nor loanwords Chinese text uses as they are."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith(("/", "／"))]
    bare = _IDENTIFIER.sub(" ", "\n".join(kept))
    return [w for w in _WORD.findall(bare) if w not in _ALLOWED]


def test_the_detector_catches_an_english_sentence() -> None:
    assert english_runs("你的用量（day）：")
    assert english_runs("出错了：Something went wrong here")
    assert not english_runs("模型 hy3-preview · 约 ¥0.1 · 输入 12 token")


def test_no_chinese_entry_holds_an_english_sentence() -> None:
    for key, template in CATALOGUE["zh"].items():
        params = {name: "1" for name in placeholders(template)}
        assert not english_runs(template.format_map(params)), f"zh {key!r}: {template!r}"


async def test_what_the_core_says_in_chinese_has_no_english_sentence(tmp_path) -> None:
    cfg = BotConfig(
        access=AccessConfig(admins=("telegram:boss",)),
        quota=QuotaConfig(defaults=LimitSet(tokens_per_day=5000, images_per_day=0), free_images=5),
    )
    said: list[str] = []
    async with fake_core(tmp_path, config=cfg) as c:
        script = [
            ("hello", {}),
            ("/help", {"user": "boss"}),
            ("/about", {}),
            ("/quota", {}),
            ("/usage", {}),
            ("/persona", {}),
            ("/persona 你是一只猫", {}),
            ("/persona clear", {}),
            ("/image --size 300x300 猫", {}),
            ("/image 猫", {}),
            ("/cancel", {}),
            ("/reset", {}),
            ("/forget", {}),
            ("/frobnicate", {}),
            ("/admin report", {"user": "boss"}),
            ("/admin report month", {"user": "boss"}),
            ("/admin grant @nobody tokens 5", {"user": "boss"}),
            ("/admin deny telegram:boss", {"user": "boss"}),
            ("/admin channel enabled off", {"user": "boss"}),
            ("/admin allow telegram:u1", {}),
            ("x" * 100_000, {}),
            ("/lang zh", {}),
        ]
        for text, kw in script:
            for event in await c.send(text, language="zh", **kw):
                if isinstance(event, (Final, Partial)):
                    continue  # the model's words, not the core's
                for attr in ("text", "user_message", "notice", "caption"):
                    value = getattr(event, attr, None)
                    if isinstance(value, str):
                        said.append(value)
    assert len(said) >= 20  # nearly every line was answered (the chat answer is the model's)
    for text in said:
        assert not english_runs(text), text
