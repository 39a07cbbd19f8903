"""Hostile setting values (issue 7, acceptance: settings parsing in the hostile suite).

Whatever an operator (or a compromised deploy pipeline) puts into the environment, ``.env`` or
``hybot.toml``: control characters, invisible characters, lone surrogates, right-to-left text,
4-byte CJK, ``nan``/``inf``, huge and negative numbers, very long values. The contract:
loading never raises anything but :class:`~core.errors.ConfigError`; a value is either valid
(and builds a valid core config) or a clear problem naming its variable; nothing printed
carries a raw control character; secrets stay masked; ``hybot config check`` exits 0 or 1 with
one line per problem and never a traceback.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.cli import cli
from bots.settings import SETTINGS, SettingsError, display_name, env_names, load_settings
from core.config import BotConfig
from core.errors import ConfigError

KEY = "sk-hostile-test-key-0123456789"

CONTROL = st.characters(categories=["Cc"])
INVISIBLE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e"])
RTL = st.sampled_from(["\u202e", "\u202b", "\u200f", "שלום", "مرحبا", "\u2067"])
CJK4 = st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF)
SURROGATE = st.characters(categories=["Cs"])
NUMBERS = st.sampled_from(
    [
        "nan",
        "NaN",
        "-nan",
        "inf",
        "-inf",
        "Infinity",
        "1e309",
        "-1e309",
        "-1",
        "-0",
        "0",
        "-0.0",
        "1e-320",
        str(10**30),
        str(-(10**30)),
        "9" * 5000,
        "0x10",
        "1_000",
        " 5 ",
        "５",
        "٣",
        "1e3",
        "true",
        "unlimited",
        "none",
        "1024x1024",
        "0x0",
        "99999x99999",
        "1024×1024",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://u:pw@h/db",
        "https://",
        "http://[::1",
        "vip.tokens_per_day=1,vip.images_per_day=-2",
        '{"vip": {"tokens_per_day": 1e999}}',
        "{",
    ]
)
PIECE = st.one_of(
    st.text(max_size=20), CONTROL, INVISIBLE, RTL, CJK4, NUMBERS, st.just(" "), st.just(",")
)
HOSTILE = st.one_of(
    NUMBERS,
    st.lists(PIECE, max_size=8).map("".join),
    st.builds(lambda c, n: c * n, PIECE, st.integers(100, 3000)),  # very long
)
NAMES = st.sampled_from(sorted(SETTINGS))


def printable(text: str) -> bool:
    """No control, invisible-format or surrogate character that could drive a terminal."""
    return all(unicodedata.category(c) not in ("Cc", "Cf", "Cs") for c in text)


def check_loaded(env: dict[str, str], *, config_path: Path | None = None) -> None:
    try:
        s = load_settings(env=env, env_file=None, config_path=config_path)
    except SettingsError as err:  # values of any kind are problems now, never this
        raise AssertionError(f"a value hid the other problems: {err.problems}") from err
    except ConfigError as err:  # a file that cannot be read or parsed
        assert printable(str(err)), str(err)
        return
    problems = s.problems()
    for problem in problems:
        assert "\n" not in problem and printable(problem), problem
    for name, shown in s.describe():
        assert printable(name) and printable(shown), (name, shown)
        assert len(shown) < 2000, name  # a very long value is not echoed whole
    assert KEY not in "\n".join(shown for _, shown in s.describe())
    assert isinstance(s.to_bot_config(), BotConfig)  # valid values build a valid core config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=NAMES, value=st.one_of(HOSTILE, st.lists(SURROGATE, min_size=1, max_size=3).map("".join))
)
def test_one_hostile_environment_value(name: str, value: str) -> None:
    check_loaded({"HUNYUAN_API_KEY": KEY, env_names(name)[0]: value})


@settings(max_examples=100, deadline=None)
@given(values=st.dictionaries(NAMES, HOSTILE, min_size=2, max_size=8))
def test_many_hostile_environment_values_at_once(values: dict[str, str]) -> None:
    env = {"HUNYUAN_API_KEY": KEY} | {env_names(n)[0]: v for n, v in values.items()}
    check_loaded(env)


@settings(max_examples=100, deadline=None)
@given(name=st.text(min_size=1, max_size=30), value=HOSTILE)
def test_hostile_unknown_names_are_problems_not_errors(name: str, value: str) -> None:
    check_loaded({"HUNYUAN_API_KEY": KEY, "HYBOT_" + name: value})


def toml_string(value: str) -> str:
    out = []
    for c in value:
        if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        elif unicodedata.category(c) == "Cs":
            continue  # not encodable in a UTF-8 file
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=NAMES, value=HOSTILE, table=st.booleans())
def test_one_hostile_toml_value(tmp_path: Path, name: str, value: str, table: bool) -> None:
    path = tmp_path / "hostile.toml"
    head, _, rest = name.partition("_")
    if table and rest:
        text = f"[{head}]\n{rest} = {toml_string(value)}\n"
    else:
        text = f"{name} = {toml_string(value)}\n"
    path.write_text(text, encoding="utf-8")
    check_loaded({"HUNYUAN_API_KEY": KEY}, config_path=path)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=NAMES, value=HOSTILE)
def test_config_check_never_shows_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"HUNYUAN_API_KEY": KEY, env_names(name)[0]: value.replace("\x00", "")}
    result = CliRunner().invoke(cli, ["config", "check"], env=env, catch_exceptions=False)
    assert result.exit_code in (0, 1)
    assert "Traceback" not in result.output
    assert KEY not in result.output
    if result.exit_code == 1:
        problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
        assert problems, result.stderr
        assert all(printable(line) for line in problems)
    var = display_name(name)
    # The effective configuration is always printed (a value that does not parse is shown
    # rejected, like one that breaks a rule): the setting has its row.
    assert any(line.startswith(var) for line in result.stdout.splitlines()), var
    if "(rejected: see problems)" in next(
        line for line in result.stdout.splitlines() if line.startswith(var + " ")
    ):
        assert any(line.startswith(f"problem: {var}") for line in result.stderr.splitlines())


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    lines=st.lists(
        st.one_of(
            st.builds(lambda n, v: f"{env_names(n)[0]}={v}", NAMES, HOSTILE),
            st.builds(lambda n, v: f'{env_names(n)[0]}="{v}"', NAMES, HOSTILE),
            st.text(max_size=40),
            st.just("export HYBOT_LANGUAGE=zh"),
            st.just("HYBOT_PERSONA='unterminated"),
        ),
        max_size=6,
    ),
    raw=st.binary(max_size=40),
)
def test_a_hostile_dot_env_file(tmp_path: Path, lines: list[str], raw: bytes) -> None:
    path = tmp_path / ".env"
    text = "\n".join(line for line in lines)
    path.write_bytes(text.encode("utf-8", errors="surrogatepass") + b"\n" + raw)
    try:
        s = load_settings(env={"HUNYUAN_API_KEY": KEY}, env_file=path)
    except ConfigError as err:
        assert printable(str(err)) and "\n" not in str(err), str(err)
        return
    for problem in s.problems():
        assert "\n" not in problem and printable(problem), problem
    for name, shown in s.describe():
        assert printable(name) and printable(shown), (name, shown)
    assert isinstance(s.to_bot_config(), BotConfig)


def test_a_very_long_time_zone_is_rejected_not_crashed_on() -> None:
    # Found by the property above: ZoneInfo turned a long "a/b/..." name into a module path
    # for tzdata and recursed until it crashed.
    value = "i\u00be\x98\x9b8/\u00f3ggWc" * 2591
    s = load_settings(env={"HUNYUAN_API_KEY": KEY, "HYBOT_TIMEZONE": value}, env_file=None)
    assert s.quota.timezone == "Asia/Shanghai"
    assert s.problems() == [
        "HYBOT_TIMEZONE: not a known IANA time zone, such as Asia/Shanghai or UTC"
    ]
    assert dict(s.describe())["HYBOT_TIMEZONE"].endswith("... (rejected: see problems)")
