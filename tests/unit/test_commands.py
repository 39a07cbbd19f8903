"""The command parser, the command specs and /help."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.commands import (
    ADMIN_SUBCOMMANDS,
    CHANNEL_FIELDS,
    COMMAND_NAMES,
    LIMIT_FIELDS,
    ParsedCommand,
    admin_specs,
    command_specs,
    help_text,
    parse_command,
    with_prefix,
)
from core.config import LimitSet
from core.errors import CommandError, ImageSizeFormat
from core.i18n import CATALOGUE, LANGUAGES, error_message

# --- chat and addressing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello there", "hello there"),
        ("  padded \n", "padded"),
        ("多行\n文本", "多行\n文本"),
        ("", ""),
        ("/etc/hosts is a file", "/etc/hosts is a file"),  # a path, not a command
        ("/", "/"),
        ("/ spaced", "/ spaced"),
        ("/shrug?", "/shrug?"),
        ("not /help at the start", "not /help at the start"),
    ],
)
def test_plain_text_is_chat(text: str, expected: str) -> None:
    assert parse_command(text) == ParsedCommand("chat", text=expected)


def test_ask_is_chat_and_keeps_the_text_verbatim() -> None:
    parsed = parse_command('/ask  what is "x"?\nsecond line  ')
    assert parsed == ParsedCommand("chat", text='what is "x"?\nsecond line')


def test_ask_without_text_is_a_usage_error() -> None:
    with pytest.raises(CommandError) as info:
        parse_command("/ask   ")
    assert info.value.usage == "/ask <question>"
    assert str(info.value) == "Usage: /ask <question>"


@pytest.mark.parametrize(
    "text", ["/help@MyBot", "/HELP@mybot", "/help@MYBOT extra", "/quota@somebot"]
)
def test_command_addressed_by_name_is_ignored(text: str) -> None:
    # Adapters strip their own @botname and drop commands for other bots; one that still
    # carries a name reached the core by mistake.
    assert parse_command(text) == ParsedCommand("ignore")


def test_command_addressed_to_another_bot_is_ignored() -> None:
    assert parse_command("/help@otherbot") == ParsedCommand("ignore")
    # Even an unknown command for another bot must not make us answer.
    assert parse_command("/frobnicate@otherbot").name == "ignore"


def test_command_words_are_case_insensitive_and_fullwidth_slash_works() -> None:
    assert parse_command("/RESET").name == "reset"
    assert parse_command("／help").name == "help"


def test_unknown_command_names_help() -> None:
    with pytest.raises(CommandError) as info:
        parse_command("/frobnicate now")
    assert info.value.usage == "/help"
    assert "/help" in str(info.value)
    assert "/frobnicate" in str(info.value)
    assert "I don't know that command" in error_message(info.value, "en")
    assert "/help" in error_message(info.value, "zh")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("/reset", "reset"),
        ("/forget", "forget"),
        ("/quota", "quota"),
        ("/usage", "usage"),
        ("/cancel", "cancel"),
        ("/help", "help"),
        ("/about", "about"),
        ("/start", "help"),
        ("/start deep-link-payload", "help"),
    ],
)
def test_simple_commands(text: str, name: str) -> None:
    parsed = parse_command(text)
    assert parsed.name == name
    assert parsed.args == ()
    assert dict(parsed.options) == {}


def test_simple_commands_pass_trailing_text_along() -> None:
    assert parse_command("/usage month") == ParsedCommand("usage", text="month")


# --- image ---------------------------------------------------------------------------------

IMAGE_USAGE = "/image [--size WxH] [--style STYLE] <prompt>"


def test_image_with_options() -> None:
    parsed = parse_command('/image --size 768x1024 --style Riman a "red" fox\nat dawn')
    assert parsed.name == "image"
    assert parsed.text == 'a "red" fox\nat dawn'
    assert dict(parsed.options) == {"size": "768x1024", "style": "riman"}


def test_image_without_options_leaves_defaults_to_the_caller() -> None:
    parsed = parse_command("/image 一只橘猫")
    assert parsed == ParsedCommand("image", text="一只橘猫")


@pytest.mark.parametrize(
    ("option", "size"),
    [
        ("--size 256x256", "256x256"),
        ("--size 2048X2048", "2048x2048"),
        ("--size=1024x768", "1024x768"),
        ("--size 1024×768", "1024x768"),
        ("--size 1024:768", "1024x768"),
        ("--SIZE 0512x0512", "512x512"),
    ],
)
def test_image_size_forms(option: str, size: str) -> None:
    assert parse_command(f"/image {option} cat").options["size"] == size


@pytest.mark.parametrize(
    "text",
    [
        "/image --size 1024 cat",
        "/image --size axb cat",
        "/image --size=  cat",
        "/image --size",
        "/image --style 'two words' cat",
        "/image --style a/b cat",
        "/image --seed 3 cat",
        "/image --size 512x512",
        "/image",
        "/image   ",
        '/image ""',
        "/image -- ",
    ],
)
def test_image_usage_errors(text: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert info.value.usage == IMAGE_USAGE
    assert str(info.value) == f"Usage: {IMAGE_USAGE}"


@pytest.mark.parametrize(
    ("option", "size"),
    [
        ("--size 255x1024", "255x1024"),
        ("--size 1024x2049", "1024x2049"),
        ("--size 99999999x1", "99999999x1"),
        ("--size 3000x3000", "3000x3000"),
        ("--size 0x0", "0x0"),
        ("--size 0512x0512", "512x512"),
    ],
)
def test_image_any_wxh_size_parses_and_the_model_rule_judges_it(option: str, size: str) -> None:
    # The range is the configured model's rule (the image handler answers it with the sizes
    # the model takes), not the parser's.
    assert parse_command(f"/image {option} cat").options["size"] == size


@pytest.mark.parametrize(
    "value", ["abc", "-5x10", "1024", "10x", "x10", "1024x1024x2", "1e3x10", "''", "１０x１０"]
)
def test_image_size_not_wxh_is_a_size_format_error(value: str) -> None:
    with pytest.raises(ImageSizeFormat) as info:
        parse_command(f"/image --size {value} cat")
    assert info.value.usage == IMAGE_USAGE
    assert isinstance(info.value, CommandError)
    en = error_message(info.value, "en", image_model="hy-image-v3", image_sizes="768x768")
    zh = error_message(info.value, "zh", image_model="hy-image-v3", image_sizes="768x768")
    assert en.startswith("The size must look like 1024x1024")
    assert "Sizes for hy-image-v3: 768x768." in en and f"Usage: {IMAGE_USAGE}" in en
    assert zh.startswith("尺寸的格式应为 1024x1024") and "768x768" in zh and IMAGE_USAGE in zh
    # Written with the platform's command prefix.
    slack = error_message(info.value, "en", prefix="/hy ", image_model="m", image_sizes="s")
    assert "Usage: /hy image [--size WxH]" in slack


def test_image_double_dash_ends_options() -> None:
    parsed = parse_command("/image --size 512x512 -- --size is part of the prompt")
    assert parsed.text == "--size is part of the prompt"
    assert dict(parsed.options) == {"size": "512x512"}


def test_image_quoted_prompt_loses_only_its_outer_quotes() -> None:
    assert parse_command('/image "a red fox"').text == "a red fox"
    assert parse_command("/image “一只狐狸”").text == "一只狐狸"
    assert parse_command('/image "a" and "b"').text == '"a" and "b"'


def test_image_prompt_may_start_with_dashes_that_are_not_options() -> None:
    assert parse_command("/image --- abstract art").text == "--- abstract art"


# --- persona and lang ----------------------------------------------------------------------


def test_persona_forms() -> None:
    assert parse_command("/persona") == ParsedCommand("persona")
    assert parse_command("/persona CLEAR") == ParsedCommand("persona", args=("clear",))
    assert parse_command("/persona You are a pirate.\nAlways rhyme.") == ParsedCommand(
        "persona", text="You are a pirate.\nAlways rhyme."
    )
    # "clear" is only the keyword when it is the whole argument.
    assert parse_command("/persona clear and concise").text == "clear and concise"


@pytest.mark.parametrize(
    ("text", "lang"),
    [("/lang zh", "zh"), ("/lang EN", "en"), ("/lang auto", "auto"), ("/lang 中文", "zh")],
)
def test_lang(text: str, lang: str) -> None:
    assert parse_command(text) == ParsedCommand("lang", args=(lang,))


@pytest.mark.parametrize("text", ["/lang", "/lang fr", "/lang zh en"])
def test_lang_usage_errors(text: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert info.value.usage == "/lang zh|en|auto"


# --- admin ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("/admin grant telegram:42 tokens 5000", ("grant", "telegram:42", "tokens", "5000")),
        ("/admin GRANT alice image 3", ("grant", "alice", "images", "3")),
        ("/admin grant alice tokens 1,000,000", ("grant", "alice", "tokens", "1000000")),
        ("/admin grant alice tokens 0", ("grant", "alice", "tokens", "0")),
        (
            "/admin limit slack:U1 tokens_per_day 20_000",
            ("limit", "slack:U1", "tokens_per_day", "20000"),
        ),
        (
            "/admin limit bob requests_per_minute none",
            ("limit", "bob", "requests_per_minute", "none"),
        ),
        (
            "/admin limit bob images_per_month unlimited",
            ("limit", "bob", "images_per_month", "none"),
        ),
        ("/admin allow bob", ("allow", "bob")),
        ("/admin deny 'user with quote'", None),  # whitespace in a user id: error
        ("/admin deny bob", ("deny", "bob")),
        ("/admin role bob Power_User", ("role", "bob", "power_user")),
        ("/admin report", ("report", "day")),
        ("/admin report month", ("report", "month")),
        ("/admin report 2025-03-07", ("report", "day", "2025-03-07")),
        ("/admin report 2025-3-7", ("report", "day", "2025-03-07")),
        ("/admin report 2025-03", ("report", "month", "2025-03")),
        ("/admin report day 2025-03-07", ("report", "day", "2025-03-07")),
        ("/admin report month 2025-03", ("report", "month", "2025-03")),
        ("/admin channel enabled off", ("channel", "enabled", "false")),
        ("/admin channel mention_only YES", ("channel", "mention_only", "true")),
        ("/admin channel images on", ("channel", "images", "true")),
        ("/admin channel model hunyuan-turbo", ("channel", "model", "hunyuan-turbo")),
        ("/admin channel model default", ("channel", "model", "none")),
        ("/admin channel persona none", ("channel", "persona", "none")),
    ],
)
def test_admin_subcommands(text: str, args: tuple[str, ...] | None) -> None:
    if args is None:
        with pytest.raises(CommandError):
            parse_command(text)
        return
    parsed = parse_command(text)
    assert parsed.name == "admin"
    assert parsed.args == args


def test_admin_channel_persona_keeps_free_text() -> None:
    parsed = parse_command('/admin channel persona You answer in "haiku".\nNo prose.')
    value = 'You answer in "haiku".\nNo prose.'
    assert parsed.args == ("channel", "persona", value)
    assert parsed.text == value
    assert parse_command('/admin channel persona "be kind"').args[2] == "be kind"


@pytest.mark.parametrize(
    ("text", "usage_start"),
    [
        ("/admin", "/admin allow|channel|deny|grant|limit|report|role"),
        ("/admin explode bob", "/admin allow|channel|deny|grant|limit|report|role"),
        ("/admin grant bob", "/admin grant"),
        ("/admin grant bob coins 5", "/admin grant"),
        ("/admin grant bob tokens -5", "/admin grant"),
        ("/admin grant bob tokens 5.5", "/admin grant"),
        ("/admin grant bob tokens ５", "/admin grant"),  # full-width digit
        ("/admin grant bob tokens 1234567890123456", "/admin grant"),
        ("/admin grant bob tokens 5 extra", "/admin grant"),
        ("/admin limit bob tokens_per_year 5", "/admin limit"),
        ("/admin limit bob tokens_per_day lots", "/admin limit"),
        ("/admin allow", "/admin allow"),
        ("/admin allow a b", "/admin allow"),
        ("/admin deny " + "x" * 129, "/admin deny"),
        ("/admin role bob", "/admin role"),
        ("/admin role bob 'chief admin'", "/admin role"),
        ("/admin report week", "/admin report"),
        ("/admin report day 2025-03", "/admin report"),
        ("/admin report month 2025-03-07", "/admin report"),
        ("/admin report 2025-02-30", "/admin report"),
        ("/admin report 2025-03 2025-04", "/admin report"),
        ("/admin channel", "/admin channel"),
        ("/admin channel enabled", "/admin channel"),
        ("/admin channel enabled maybe", "/admin channel"),
        ("/admin channel volume 11", "/admin channel"),
        ("/admin channel model bad model", "/admin channel"),
        ("/admin channel model <!channel>", "/admin channel"),
        ('/admin channel persona ""', "/admin channel"),
    ],
)
def test_admin_usage_errors(text: str, usage_start: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert info.value.usage.startswith(usage_start)
    assert str(info.value) == f"Usage: {info.value.usage}"


def test_limit_fields_match_the_limit_set() -> None:
    assert set(LIMIT_FIELDS) == set(LimitSet.__dataclass_fields__)


def test_error_message_shows_the_usage_line_in_both_languages() -> None:
    with pytest.raises(CommandError) as info:
        parse_command("/admin grant bob tokens lots")
    for lang in LANGUAGES:
        assert info.value.usage in error_message(info.value, lang)


# --- immutability --------------------------------------------------------------------------


def test_parsed_command_is_immutable() -> None:
    source = {"size": "512x512"}
    parsed = ParsedCommand("image", text="x", args=["a"], options=source)  # type: ignore[arg-type]
    source["size"] = "changed"
    assert parsed.options["size"] == "512x512"
    assert parsed.args == ("a",)
    with pytest.raises(TypeError):
        parsed.options["size"] = "1x1"  # type: ignore[index]
    with pytest.raises(AttributeError):
        parsed.text = "y"  # type: ignore[misc]
    assert parsed == ParsedCommand("image", text="x", args=("a",), options={"size": "512x512"})


# --- specs and help ------------------------------------------------------------------------


def test_specs_are_valid_telegram_commands_with_descriptions_in_every_language() -> None:
    specs = command_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for spec in (*specs, *admin_specs()):
        assert re.fullmatch(r"[a-z0-9_]{1,32}", spec.name)
        assert spec.command in COMMAND_NAMES
        assert spec.usage.startswith("/")
        for lang in LANGUAGES:
            assert spec.help_key in CATALOGUE[lang]
            assert 1 <= len(spec.description(lang)) <= 256
    assert {s.name for s in specs if s.admin_only} == {"admin"}
    assert {s.name for s in admin_specs()} == set(ADMIN_SUBCOMMANDS)


def test_every_spec_parses_to_its_command() -> None:
    samples = {
        "ask": "/ask hi",
        "image": "/image cat",
        "lang": "/lang en",
        "admin": "/admin report",
    }
    for spec in command_specs():
        for word in (spec.name, *spec.aliases):
            parsed = parse_command(samples.get(spec.name, f"/{word}").replace(spec.name, word, 1))
            assert parsed.name == spec.command


def test_channel_usage_lists_every_field() -> None:
    channel = next(s for s in admin_specs() if s.name == "channel")
    for name in CHANNEL_FIELDS:
        assert name in channel.usage


def test_help_text_lists_user_commands_and_admin_ones_only_for_admins() -> None:
    for lang in LANGUAGES:
        user_help = help_text(lang, is_admin=False)
        admin_help = help_text(lang, is_admin=True)
        assert user_help.splitlines()[0] == CATALOGUE[lang]["help.header"]
        for spec in command_specs():
            if not spec.admin_only:
                assert f"{spec.usage} — {spec.description(lang)}" in user_help
        for spec in admin_specs():
            assert spec.usage not in user_help
            assert f"{spec.usage} — {spec.description(lang)}" in admin_help
        assert CATALOGUE[lang]["help.admin_header"] in admin_help
        assert CATALOGUE[lang]["help.admin_header"] not in user_help
    assert help_text("zh", is_admin=False) != help_text("en", is_admin=False)
    assert help_text("fr", is_admin=False) == help_text("en", is_admin=False)


# --- hostile input -------------------------------------------------------------------------

_WORDS = [
    "ask", "image", "persona", "lang", "admin", "help", "start", "reset", "nope",
    "admin grant", "admin limit", "admin report", "admin channel", "admin channel persona",
    "admin role", "image --size", "image --style", "image --",
]  # fmt: skip
_NOISE = st.text(
    st.one_of(
        st.characters(),
        st.sampled_from(list("\"'“”‘’「」 \n\t-=x0123456789")),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(text=_NOISE)
def test_arbitrary_text_raises_nothing_but_command_error(text: str) -> None:
    try:
        parsed = parse_command(text)
    except CommandError as err:
        assert err.usage
        assert str(err).startswith(("Usage: ", "Unknown command"))
        return
    assert parsed.name in COMMAND_NAMES


@settings(max_examples=600, deadline=None)
@given(word=st.sampled_from(_WORDS), rest=_NOISE, at=st.sampled_from(["", "@mybot", "@other"]))
def test_commands_with_arbitrary_arguments_raise_nothing_but_command_error(
    word: str, rest: str, at: str
) -> None:
    head, _, tail = word.partition(" ")
    text = f"/{head}{at} {tail} {rest}"
    try:
        parsed = parse_command(text)
    except CommandError as err:
        assert err.usage
        for lang in LANGUAGES:
            assert error_message(err, lang)
        return
    assert parsed.name in COMMAND_NAMES
    if at:
        assert parsed.name == "ignore"
    assert all(isinstance(a, str) for a in parsed.args)


# --- the platform's command syntax ----------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_help_writes_every_command_with_the_platform_prefix(lang: str) -> None:
    slack = help_text(lang, is_admin=True, prefix="/hy ")
    plain = help_text(lang, is_admin=True)
    for spec in (*[s for s in command_specs() if not s.admin_only], *admin_specs()):
        assert f"{with_prefix(spec.usage, '/hy ')} — {spec.description(lang)}" in slack
        assert f"{spec.usage} — {spec.description(lang)}" in plain
    assert "/hy image [--size WxH] [--style STYLE] <prompt>" in slack
    assert "/hy quota — " in slack and "/hy ask <question>" in slack
    # No line of the Slack help starts with a bare command the platform does not have.
    commands = [line.split(" — ")[0] for line in slack.splitlines() if " — " in line]
    assert commands and all(c.startswith("/hy ") for c in commands)
    assert help_text(lang, is_admin=False, prefix="/") == help_text(lang, is_admin=False)


def test_with_prefix_replaces_only_the_leading_slash() -> None:
    assert with_prefix("/image [--size WxH]", "/hy ") == "/hy image [--size WxH]"
    assert with_prefix("/admin a/b", "/hy ") == "/hy admin a/b"
    assert with_prefix("/help", "/") == "/help"
    assert with_prefix("help", "/hy ") == "help"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_usage_sentences_follow_the_prefix(lang: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command("/image")
    assert "/hy image [--size WxH]" in error_message(info.value, lang, prefix="/hy ")
    assert "/image [--size WxH]" in error_message(info.value, lang)
    with pytest.raises(CommandError) as unknown:
        parse_command("/nosuch")
    assert "/hy help" in error_message(unknown.value, lang, prefix="/hy ")
