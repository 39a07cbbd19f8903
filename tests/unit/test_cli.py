"""The `hybot` CLI (click's CliRunner, plus a real subprocess for `hybot emulator`), the
redacting log filter, and the console adapter's rendering and script handling."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from adapters.console import ConsoleAdapter, parse_script_line
from adapters.console.render import ScriptLine, extension_for
from bots.cli import RedactingFilter, cli, configure_logging
from bots.cli import run as run_group
from bots.live import describe_outcome, live_check
from bots.settings import STANDARD_ENV_NAMES
from bots.wiring import demo_runtime
from core.config import HunyuanConfig, Secret
from core.hunyuan import CheckResult, HunyuanClient
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.store import open_store
from core.types import (
    Failure,
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
)

HYBOT = Path(sys.executable).parent / "hybot"
KEY = "sk-cli-test-9f8e7d6c5b4a"
TG = "987654321:AAcliTestTelegramToken_abc"


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads os.environ and ./hybot.toml: start every test from nothing.
    for name in list(os.environ):
        if name.upper().startswith("HYBOT_") or name.upper() in STANDARD_ENV_NAMES.values():
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(args: list[str], **kw: object) -> object:
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kw)  # type: ignore[arg-type]


# --- top level ------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run(["--help"])
    assert result.exit_code == 0
    for command in ("demo", "emulator", "config", "usage", "run"):
        assert command in result.stdout
    assert run(["--version"]).stdout.strip().endswith("0.1.0")


def test_emulator_help_documents_the_defaults() -> None:
    out = run(["emulator", "--help"]).stdout
    defaults = EmulatorConfig()
    for value in ("127.0.0.1", "8765", defaults.api_key, defaults.secret_id, defaults.secret_key):
        assert value in out


def test_run_explains_that_no_adapter_exists_yet() -> None:
    # With the Telegram platform registered: still exit 2 and the explanation, naming it
    # (Slack is named once its platform command is registered too).
    result = run(["run"])
    assert result.exit_code == 2
    assert "no platform adapter" in result.stderr
    assert run_group.commands, "a platform command is registered"
    for name in run_group.commands:  # every registered platform is named (Slack, Telegram)
        assert f"{name.capitalize()}: `hybot run {name}`" in result.stderr


# --- config check -------------------------------------------------------------------------


def test_config_check_ok_masks_secrets() -> None:
    env = {"HUNYUAN_API_KEY": KEY, "TELEGRAM_BOT_TOKEN": TG, "HYBOT_LANGUAGE": "zh"}
    result = run(["config", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.stdout
    assert KEY not in result.output and TG not in result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert f"****({len(KEY)} chars)" in lines["HUNYUAN_API_KEY"]
    assert lines["HYBOT_LANGUAGE"].split()[-1] == "zh"
    assert result.stderr == ""


def test_config_check_platform_names_what_run_needs() -> None:
    base = {"HUNYUAN_API_KEY": KEY}
    # Without --platform, no platform's credentials are required.
    assert run(["config", "check"], env=base).exit_code == 0
    result = run(["config", "check", "--platform", "telegram", "--platform", "slack"], env=base)
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    for var in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        assert any(var in p for p in problems), (var, result.stderr)
    # Malformed values are named too, and never echoed.
    bad = {**base, "TELEGRAM_BOT_TOKEN": "not-a-token", "SLACK_BOT_TOKEN": "xoxp-user-token"}
    result = run(["config", "check", "--platform", "telegram", "--platform", "slack"], env=bad)
    assert "TELEGRAM_BOT_TOKEN does not look like a bot token" in result.stderr
    assert "SLACK_BOT_TOKEN does not look like a bot token" in result.stderr
    assert "not-a-token" not in result.output and "xoxp-user-token" not in result.output
    good = {**base, "TELEGRAM_BOT_TOKEN": TG}
    assert run(["config", "check", "--platform", "telegram"], env=good).exit_code == 0


def test_config_check_names_every_problem_and_exits_1() -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": TG,
        "HYBOT_LANGUAGE": "fr",
        "HYBOT_TIMEZONE": "Nowhere/Land",
        "HYBOT_DATABASE_URL": "redis://cache/0",
    }
    result = run(["config", "check"], env=env)
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 4, result.stderr
    for var in ("HUNYUAN_API_KEY", "HYBOT_LANGUAGE", "HYBOT_TIMEZONE", "HYBOT_DATABASE_URL"):
        assert any(var in p for p in problems), var
    assert "4 problems found" in result.stderr
    assert TG not in result.output
    # The effective configuration is still printed, to stdout.
    assert "HYBOT_TIMEZONE" in result.stdout


def test_config_check_reports_unparsable_values(tmp_path: Path) -> None:
    result = run(["config", "check"], env={"HYBOT_IMAGE_CONCURRENCY": "two"})
    assert result.exit_code == 1
    assert "problem: HYBOT_IMAGE_CONCURRENCY" in result.stderr


UNPARSABLE = {
    "HUNYUAN_API_KEY": KEY,
    "HYBOT_TOKEN_PER_DAY": "5",
    "HYBOT_LANGAUGE": "zh",
    "HYBOT_TOKENS_PER_DAY": "nan",
    "HYBOT_IMAGE_SIZE": "big",
    "HYBOT_SLACK_PORT": "abc",
    "HYBOT_SHOW_NOTE": "maybe",
    "HYBOT_ROLE_LIMITS": "vip.foo=3",
}


def test_an_unparsable_value_hides_no_other_problem() -> None:
    result = run(["config", "check"], env=UNPARSABLE)
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert problems == [
        "problem: HYBOT_LANGAUGE is not a known setting",
        "problem: HYBOT_TOKEN_PER_DAY is not a known setting",
        "problem: HYBOT_SLACK_PORT: must be a whole number",
        "problem: HYBOT_SHOW_NOTE: must be true or false (or yes/no, on/off, 1/0)",
        "problem: HYBOT_TOKENS_PER_DAY: must be a whole number or 'unlimited'",
        "problem: HYBOT_ROLE_LIMITS: 'foo' is not a known limit (known: tokens_per_day, "
        "tokens_per_month, images_per_day, images_per_month, requests_per_minute)",
        "problem: HYBOT_IMAGE_SIZE: an image size is written WIDTHxHEIGHT, e.g. 1024x1024",
    ]
    assert "7 problems found" in result.stderr
    table = dict(
        line.split(None, 1) for line in result.stdout.splitlines() if line.startswith("HYBOT_")
    )
    assert table["HYBOT_TOKENS_PER_DAY"] == "nan (rejected: see problems)"
    assert table["HYBOT_SLACK_PORT"] == "abc (rejected: see problems)"
    assert table["HYBOT_SHOW_NOTE"] == "maybe (rejected: see problems)"
    assert table["HYBOT_ROLE_LIMITS"] == "vip.foo=3 (rejected: see problems)"
    assert table["HYBOT_IMAGE_SIZE"] == "big (rejected: see problems)"
    # The commands that run the bot refuse, naming every problem on their one error line.
    for args in (["demo", "--script", "-"], ["run", "telegram"]):
        refused = run(args, env={**UNPARSABLE, "TELEGRAM_BOT_TOKEN": TG}, input="hi\n")
        assert refused.exit_code == 1, args
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("error: configuration has 7 problems: "), line
        for var in ("HYBOT_LANGAUGE", "HYBOT_SLACK_PORT", "HYBOT_ROLE_LIMITS", "HYBOT_IMAGE_SIZE"):
            assert var in line, (args, var)


def test_config_check_reports_dot_env_lines_that_do_not_parse(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        'HYBOT_PERSONA="unterminated sk-hidden-value\nHYBOT_LANGUAGE=zh\nthis is garbage\n'
    )
    result = run(["config", "check"], env={"HUNYUAN_API_KEY": KEY})
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert problems == [
        "problem: .env line 1 is not a NAME=value line (was a quote left open?); it was ignored",
        "problem: .env line 3 is not a NAME=value line (was a quote left open?); it was ignored",
    ]
    assert "sk-hidden-value" not in result.output and "garbage" not in result.output
    assert "configuration OK" not in result.output


def test_telegram_webhook_problems_are_named_once() -> None:
    env = {
        "HUNYUAN_API_KEY": KEY,
        "TELEGRAM_BOT_TOKEN": TG,
        "HYBOT_TELEGRAM_MODE": "webhook",
        "HYBOT_TELEGRAM_WEBHOOK_URL": "http://insecure/x",
    }
    result = run(["config", "check", "--platform", "telegram"], env=env)
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert problems == [
        "problem: HYBOT_TELEGRAM_WEBHOOK_URL: must be a public https:// URL",
        "problem: HYBOT_TELEGRAM_WEBHOOK_SECRET is not set "
        "(required by HYBOT_TELEGRAM_MODE=webhook)",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["config", "check", "--platform", "discord"],
            "error: Invalid value for '--platform': 'discord' is not one of 'telegram', "
            "'slack'. (see 'hybot config check --help')",
        ),
        (
            ["usage", "report"],
            "error: Missing option '--period'. Choose from: day, month "
            "(see 'hybot usage report --help')",
        ),
        (
            ["usage", "report", "--period", "day", "--date", "2026-13-45"],
            "error: Invalid value for --date: '2026-13-45' is not a YYYY-MM-DD date "
            "(see 'hybot usage report --help')",
        ),
        (
            ["emulator", "--fault", "nosuch"],
            "error: Invalid value for --fault: bad emulator fault: unknown emulator fault "
            "'nosuch' (see 'hybot emulator --help')",
        ),
        (
            ["emulator", "--port", "99999"],
            "error: Invalid value for '--port': 99999 is not in the range 0<=x<=65535. "
            "(see 'hybot emulator --help')",
        ),
        (["nosuch"], "error: No such command 'nosuch'. (see 'hybot --help')"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run(args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [message]
    assert result.stdout == ""


def test_help_and_bare_groups_still_print_clicks_help() -> None:
    bare = run([])
    assert bare.exit_code == 2 and "Usage: hybot [OPTIONS] COMMAND" in bare.output
    assert run(["config", "--help"]).exit_code == 0


def test_config_check_reads_the_given_toml(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[hunyuan]\napi_key = "sk-toml-abcdef"\nmodel = "hunyuan-lite"\n')
    result = run(["config", "check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout
    assert "hunyuan-lite" in result.stdout
    assert "sk-toml-abcdef" not in result.output
    missing = run(["config", "check", "--config", str(tmp_path / "missing.toml")])
    assert missing.exit_code == 1
    assert "does not exist" in missing.stderr


# --- usage report -------------------------------------------------------------------------

TOUR_SNIPPET = [
    "Hello, I am the operator.",
    "Second question.",
    "@alice Hi from Alice",
    "@alice /image a small teapot",
]


@pytest.fixture
def ledger_db(tmp_path: Path) -> Path:
    """A database the real demo wiring wrote ledger rows into (in this process)."""
    db = tmp_path / "usage.db"

    async def populate() -> None:
        async with demo_runtime(db_path=db, image_dir=tmp_path / "img") as demo:
            adapter = ConsoleAdapter(
                conversation=demo.runtime.conversation, out=io.StringIO(), image_dir=tmp_path
            )
            async with adapter:
                await adapter.run_script(TOUR_SNIPPET)
            assert adapter.errors == 0

    asyncio.run(populate())
    return db


def ledger_totals(db: Path) -> dict[str, dict[str, float]]:
    async def read() -> dict[str, dict[str, float]]:
        async with open_store(str(db)) as store:
            totals: dict[str, dict[str, float]] = {}
            for row in await store.ledger():
                t = totals.setdefault(
                    row.user_id,
                    {"calls": 0, "tokens_in": 0, "tokens_out": 0, "images": 0, "cost_cny": 0.0},
                )
                t["calls"] += 1
                t["tokens_in"] += row.tokens_in
                t["tokens_out"] += row.tokens_out
                t["images"] += row.images
                t["cost_cny"] += row.cost_cny
            return totals

    return asyncio.run(read())


def test_usage_report_formats_agree_with_the_ledger(ledger_db: Path) -> None:
    env = {"HYBOT_DATABASE_URL": f"sqlite:///{ledger_db}"}
    expected = ledger_totals(ledger_db)
    assert set(expected) == {"console:me", "console:alice"}
    assert expected["console:me"]["calls"] == 2
    assert expected["console:alice"]["images"] == 1

    as_json = run(["usage", "report", "--period", "day", "--format", "json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    records = json.loads(as_json.stdout)
    assert [r["user"] for r in records] == sorted(expected)
    for rec in records:
        want = expected[rec["user"]]
        for column in ("calls", "tokens_in", "tokens_out", "images"):
            assert rec[column] == want[column], column
        assert rec["cost_cny"] == pytest.approx(want["cost_cny"], abs=1e-6)

    as_csv = run(["usage", "report", "--period", "month", "--format", "csv"], env=env)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert list(rows[0]) == ["user", "calls", "tokens_in", "tokens_out", "images", "cost_cny"]
    assert {r["user"]: int(r["tokens_in"]) for r in rows} == {
        u: int(v["tokens_in"]) for u, v in expected.items()
    }

    table = run(["usage", "report", "--period", "day"], env=env).stdout.splitlines()
    header, rule, *body = table
    assert header.split() == ["user", "calls", "tokens_in", "tokens_out", "images", "cost_cny"]
    assert len({len(line) for line in (header, rule)}) == 1  # aligned columns
    total_line = body[-1].split()
    assert total_line[0] == "total"
    assert int(total_line[1]) == sum(v["calls"] for v in expected.values())
    # Numbers are right-aligned under their headers.
    end_of_calls = header.index("calls") + len("calls")
    assert all(line[end_of_calls - 1] != " " for line in body if line and line[0] != "-")

    by_day = run(["usage", "report", "--period", "day", "--by", "day", "--format", "json"], env=env)
    (day_row,) = json.loads(by_day.stdout)
    assert day_row["calls"] == sum(v["calls"] for v in expected.values())

    only_alice = run(
        ["usage", "report", "--period", "day", "--user", "console:alice", "--format", "csv"],
        env=env,
    )
    assert [r["user"] for r in csv.DictReader(io.StringIO(only_alice.stdout))] == ["console:alice"]

    other_day = run(
        ["usage", "report", "--period", "day", "--date", "2001-01-01", "--format", "json"],
        env=env,
    )
    assert json.loads(other_day.stdout) == []


def test_usage_report_rejects_bad_dates_and_bad_stores(tmp_path: Path) -> None:
    bad = run(["usage", "report", "--period", "month", "--date", "2026-13"])
    assert bad.exit_code == 2
    assert "YYYY-MM" in bad.stderr
    bad_day = run(["usage", "report", "--period", "day", "--date", "28/11/2026"])
    assert bad_day.exit_code == 2
    store = run(
        ["usage", "report", "--period", "day"], env={"HYBOT_DATABASE_URL": "postgresql://x/y"}
    )
    assert store.exit_code == 1
    assert "error:" in store.stderr


# --- demo through CliRunner (stdin script) -------------------------------------------------


def test_demo_reads_a_script_from_stdin(tmp_path: Path) -> None:
    script = "# comment\n\nfirst message\nsecond message\n"
    result = run(
        ["demo", "--script", "-", "--db", str(tmp_path / "d.db"), "--images", str(tmp_path)],
        input=script,
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "me › first message" in out
    assert 'Turn 2. You first said: "first message". You just said: "second message".' in out
    assert "comment" not in out
    # Without --script and with a non-terminal stdin, stdin is the script too.
    again = run(["demo", "--db", str(tmp_path / "d2.db")], input="only line\n")
    assert again.exit_code == 0
    assert 'You just said: "only line"' in again.stdout


def test_demo_fails_cleanly_on_bad_paths(tmp_path: Path) -> None:
    result = run(["demo", "--script", str(tmp_path / "nope.txt")])
    assert result.exit_code == 1
    assert "cannot read the script" in result.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad_images = run(["demo", "--images", str(blocker / "sub")], input="hi\n")
    assert bad_images.exit_code == 1
    assert "could not start" in bad_images.stderr
    bad_db = run(["demo", "--db", str(tmp_path / "no" / "such" / "dir" / "x.db")], input="hi\n")
    assert bad_db.exit_code == 1
    assert "could not start" in bad_db.stderr


# --- emulator as a real process -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_emulator_command_serves_until_sigterm() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(HYBOT),
        "emulator",
        "--port",
        str(port),
        "--api-key",
        "sk-custom-cli-key",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines = []
        while not any("native endpoint" in line for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert raw, "emulator exited early: " + (await proc.stderr.read()).decode()
            lines.append(raw.decode())
        base = f"http://127.0.0.1:{port}/v1"
        assert any(base in line for line in lines)
        assert any(f"http://127.0.0.1:{port}" in line and "native" in line for line in lines)
        body = {"model": "hy3-preview", "messages": [{"role": "user", "content": "ping"}]}
        async with httpx.AsyncClient(timeout=10) as http:
            ok = await http.post(
                f"{base}/chat/completions",
                json=body,
                headers={"Authorization": "Bearer sk-custom-cli-key"},
            )
            assert ok.status_code == 200
            assert 'You just said: "ping"' in ok.json()["choices"][0]["message"]["content"]
            wrong = await http.post(
                f"{base}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {EmulatorConfig().api_key}"},
            )
            assert wrong.status_code == 401
        proc.send_signal(signal.SIGTERM)
        # Like every long-running command: 143 after SIGTERM (README: exit codes).
        assert await asyncio.wait_for(proc.wait(), 15) == 143
        assert b"stopped (SIGTERM)" in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_emulator_exits_130_after_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(HYBOT),
        "emulator",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert raw, "emulator exited early: " + (await proc.stderr.read()).decode()
            if b"Press Ctrl-C" in raw:
                break
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 130
        assert b"Traceback" not in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_emulator_rejects_unknown_faults() -> None:
    result = run(["emulator", "--fault", "gremlins"])
    assert result.exit_code == 2
    assert "gremlins" in result.stderr


# --- logging --------------------------------------------------------------------------------


def test_redacting_filter_masks_secrets_args_tracebacks_and_telegram_tokens() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([KEY, "short"]))
    logger = logging.getLogger(f"test.redact.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.info("key is %s", KEY)
    logger.info("GET https://api.telegram.org/bot%s/getUpdates", "123456:AAbbCC-dd_ee")
    try:
        raise ValueError(f"rejected {KEY}")
    except ValueError:
        logger.exception("failed with bot42:XYZ-token")
    text = stream.getvalue()
    assert KEY not in text
    assert "AAbbCC" not in text and "XYZ-token" not in text
    assert text.count("****") >= 4
    assert "ValueError: rejected ****" in text  # the traceback is kept, redacted
    assert RedactingFilter(["short"]).redact("a short word") == "a **** word"
    assert RedactingFilter(["abc"]).redact("abc") == "abc"  # too short to be a credential


def test_configure_logging_installs_one_redacting_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        first = configure_logging("INFO", secrets=[KEY])
        second = configure_logging("DEBUG", secrets=[KEY])
        ours = [h for h in root.handlers if getattr(h, "_hybot", False)]
        assert ours == [second] and first not in root.handlers
        assert logging.getLogger("httpx").level == logging.WARNING
        assert any(isinstance(f, RedactingFilter) for f in second.filters)
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)


# --- console adapter ----------------------------------------------------------------------


def test_parse_script_line() -> None:
    assert parse_script_line("") is None
    assert parse_script_line("   # note") is None
    assert parse_script_line("hello") == ScriptLine(text="hello")
    assert parse_script_line("@alice  hi there ") == ScriptLine(text="hi there", user="alice")
    assert parse_script_line("& @bob /image x") == ScriptLine(
        text="/image x", user="bob", background=True
    )
    assert parse_script_line("& plain") == ScriptLine(text="plain", background=True)
    assert parse_script_line("!wait") == ScriptLine(wait=True)
    assert parse_script_line("!quit") == ScriptLine(quit=True)
    assert parse_script_line("email me@example.com") == ScriptLine(text="email me@example.com")
    assert extension_for("image/png") == ".png"
    assert extension_for("image/jpeg; q=1") == ".jpg"
    assert extension_for("application/x-unknown") == ".bin"


class ScriptedCore:
    """A stand-in for Conversation: yields scripted events and records what it was sent."""

    def __init__(self, events: dict[str, list[ReplyEvent]], gate: asyncio.Event | None = None):
        self.events = events
        self.gate = gate
        self.inbounds: list[Inbound] = []
        self.closed: list[str] = []
        self.waiting = 0
        self.waiting_changed = asyncio.Event()

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        self.inbounds.append(inbound)
        try:
            if self.gate is not None and inbound.text.startswith("gated"):
                self.waiting += 1
                self.waiting_changed.set()
                await self.gate.wait()
            for event in self.events.get(inbound.text, []):
                await asyncio.sleep(0)
                yield event
        finally:
            self.closed.append(inbound.text)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


async def test_console_renders_every_event_kind(tmp_path: Path) -> None:
    png = png_bytes()
    core = ScriptedCore(
        {
            "hi": [
                Typing(),
                Partial("Hel", "Hel"),
                Partial("Hello wor", "lo wor"),
                Final("Hello world", note="AI made this"),
            ],
            "bad": [Partial("risky", "risky"), Retract("withdrawn for safety")],
            "/help": [Notice("line one\nline two", private=True)],
            "/image cat": [
                ImageQueued(2),
                ImageQueued(1),
                ImageRunning(),
                ImageReady(png, "image/png", "Prompt: cat\nAI-generated image"),
            ],
            "boom": [Failure("The model is busy.", code="busy")],
        }
    )
    out = io.StringIO()
    images = tmp_path / "imgs"
    adapter = ConsoleAdapter(conversation=core, out=out, image_dir=images, color=False)
    async with adapter:
        await adapter.run_script(["hi", "bad", "/help", "@bob /image cat", "boom"])
    text = out.getvalue()
    lines = text.splitlines()
    assert "me › hi" in lines
    assert "hybot › Hello world" in lines  # streamed pieces form one line, no duplicates
    assert text.count("Hello") == 1
    assert any(line.strip() == "ⓘ AI made this" for line in lines)
    assert any("withdrawn" in line and "withdrawn for safety" in line for line in lines)
    assert "hybot › (private) line one" in lines
    assert " " * len("hybot › ") + "line two" in lines  # continuation indented under the label
    assert "bob › /image cat" in lines
    assert any("hybot → bob › ⏳" in line and "position 2" in line for line in lines)
    assert any("queued" in line and "position 1" in line for line in lines)
    assert "hybot › ✖ The model is busy." in lines
    (saved,) = adapter.saved_images
    assert saved.parent == images and saved.suffix == ".png"
    assert saved.read_bytes() == png
    with Image.open(saved) as img:
        assert img.size == (8, 8)
    assert any(str(saved) in line for line in lines)
    assert any("Prompt: cat" in line for line in lines)

    # Every message was its own delivery, as the core expects from the console.
    assert [i.text for i in core.inbounds] == ["hi", "bad", "/help", "/image cat", "boom"]
    assert len({i.delivery_id for i in core.inbounds}) == 5
    for inbound in core.inbounds:
        assert uuid.UUID(inbound.delivery_id).version == 4
        assert inbound.platform == "console" and inbound.is_dm
        assert inbound.key.platform == "console" and inbound.key.chat == inbound.user_id
    assert core.inbounds[3].user_id == "bob"
    assert core.inbounds[0].user_id == "me"
    assert adapter.errors == 0


async def test_background_messages_run_concurrently_and_are_awaited(tmp_path: Path) -> None:
    gate = asyncio.Event()
    core = ScriptedCore(
        {"gated one": [Final("first done")], "gated two": [Final("second done")]}, gate=gate
    )
    out = io.StringIO()
    adapter = ConsoleAdapter(conversation=core, out=out, image_dir=tmp_path)

    async def open_gate_when_both_wait() -> None:
        while core.waiting < 2:
            core.waiting_changed.clear()
            await core.waiting_changed.wait()
        gate.set()

    opener = asyncio.create_task(open_gate_when_both_wait())
    async with adapter:
        # Both handlers must be waiting at once before either can finish: only true
        # concurrency gets past the gate (the test times out otherwise).
        await asyncio.wait_for(
            adapter.run_script(["& gated one", "& @x gated two", "!wait", "after"]), 10
        )
        text = out.getvalue()
        assert text.index("second done") < text.index("me › after")
        assert text.index("first done") < text.index("me › after")
    await opener
    assert "(in the background)" in text


async def test_stop_waits_for_background_messages(tmp_path: Path) -> None:
    gate = asyncio.Event()
    core = ScriptedCore({"gated": [Final("finished late")]}, gate=gate)
    out = io.StringIO()
    adapter = ConsoleAdapter(conversation=core, out=out, image_dir=tmp_path)
    async with adapter:
        await adapter.run_line("& gated")
        asyncio.get_running_loop().call_later(0.05, gate.set)
    assert "finished late" in out.getvalue()


async def test_render_failure_still_closes_the_core_stream(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    core = ScriptedCore(
        {"/image": [ImageRunning(), ImageReady(b"png", "image/png", "c"), Final("never")]}
    )
    out = io.StringIO()
    # Images cannot be saved under a file: rendering fails mid-stream. That is a platform
    # failure (issue 7 item 1): the user gets a sentence, not "internal error", and the stream
    # is closed at the undelivered ImageReady so that the core refunds it.
    adapter = ConsoleAdapter(conversation=core, out=out, image_dir=blocker / "sub")
    await adapter.run_script(["/image"])
    assert core.closed == ["/image"]  # the generator's finally ran: the core cleaned up
    assert adapter.errors == 0
    assert "couldn't deliver your image" in out.getvalue()
    assert "internal error" not in out.getvalue()
    assert "never" not in out.getvalue()


async def test_a_bug_while_rendering_closes_the_stream_and_counts_an_error(
    tmp_path: Path,
) -> None:
    class Broken(ConsoleAdapter):
        async def send_text(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise RuntimeError("a bug in a primitive")

    core = ScriptedCore({"hi": [Partial("a", "a"), Final("never")]})
    out = io.StringIO()
    adapter = Broken(conversation=core, out=out, image_dir=tmp_path)
    await adapter.run_script(["hi"])
    assert core.closed == ["hi"]  # the generator's finally ran: the core cleaned up
    assert adapter.errors == 1
    assert "internal error" in out.getvalue()
    assert "never" not in out.getvalue()


# --- errors are one line, never a traceback (issue 7 item 12) ------------------------------

COMMANDS_READING_SETTINGS = [
    ["config", "check"],
    ["usage", "report", "--period", "day"],
    ["demo", "--script", "-"],
    ["chat", "--script", "-"],
]


def one_error_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error: ", "problem: "))]
    assert errors, stderr
    return errors[0]


@pytest.mark.parametrize("args", COMMANDS_READING_SETTINGS)
def test_an_undecodable_hybot_toml_is_one_line_for_every_command(
    tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "hybot.toml").write_bytes(b'language = "\xff\xfe\xfd"\n')
    result = run(args, input="hi\n")
    assert result.exit_code == 1
    assert "not UTF-8" in one_error_line(result)


def test_an_unexpected_exception_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"internal detail {KEY}")

    monkeypatch.setattr("bots.cli.load_settings", explode)
    result = run(["config", "check"], env={"HUNYUAN_API_KEY": KEY})
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "RuntimeError" in line and KEY not in result.output


def test_usage_report_in_an_unknown_time_zone_is_one_line() -> None:
    result = run(["usage", "report", "--period", "day"], env={"HYBOT_TIMEZONE": "Mars/Olympus"})
    assert result.exit_code == 1
    assert "HYBOT_TIMEZONE" in one_error_line(result)


# --- read-only commands never create a database (issue 7 item 13) ----------------------------


@pytest.mark.parametrize("url", ["sqlite:///missing.db", "missing.db", "sqlite:////{tmp}/gone.db"])
def test_usage_report_never_creates_the_database(tmp_path: Path, url: str) -> None:
    url = url.format(tmp=str(tmp_path).lstrip("/"))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(["usage", "report", "--period", "day"], env={"HYBOT_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "not found" in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- `hybot run` is a group that platforms extend --------------------------------------------


def test_run_is_a_group_platform_commands_extend() -> None:
    assert isinstance(run_group, click.Group)
    assert "platform" in run(["run", "--help"]).stdout
    seen: list[str] = []

    @run_group.command("telegram")
    def telegram() -> None:
        seen.append("telegram")

    try:
        assert run(["run", "telegram"]).exit_code == 0
        assert seen == ["telegram"]
        bare = run(["run"])
        assert bare.exit_code == 2
        assert "no platform adapter" in bare.stderr and "hybot run telegram" in bare.stderr
        assert re.search(r"name a platform: (\w+, )*telegram", bare.stderr)
        assert "Telegram" in bare.stderr
    finally:
        run_group.commands.pop("telegram")


# --- the real Hunyuan: chat and config check --live (issue 7 item 16) -----------------------


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(config=EmulatorConfig(), host="127.0.0.1", port=0) as emu:
        yield emu


def emulator_env(emu: Emulator, **extra: str) -> dict[str, str]:
    env = {
        "HUNYUAN_API_KEY": EmulatorConfig().api_key,
        "HYBOT_HUNYUAN_BASE_URL": emu.openai_base_url,
        "HYBOT_DATABASE_URL": "sqlite:///chat.db",
    }
    env.update(extra)
    return env


async def test_config_check_live_passes_against_the_emulator(emulator: Emulator) -> None:
    result = await asyncio.to_thread(run, ["config", "check", "--live"], env=emulator_env(emulator))
    assert result.exit_code == 0, result.output
    assert "live check OK" in result.stdout
    assert emulator.openai_base_url in result.stdout


async def test_config_check_live_names_the_key_when_it_is_refused(emulator: Emulator) -> None:
    env = emulator_env(emulator, HUNYUAN_API_KEY="sk-wrong-key-0000000000")
    result = await asyncio.to_thread(run, ["config", "check", "--live"], env=env)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "live check failed" in line and "HUNYUAN_API_KEY" in line
    assert "sk-wrong-key-0000000000" not in result.output


async def test_config_check_live_names_the_url_when_nothing_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = {"HUNYUAN_API_KEY": KEY, "HYBOT_HUNYUAN_BASE_URL": url, "HYBOT_HUNYUAN_MAX_ATTEMPTS": "1"}
    result = await asyncio.to_thread(run, ["config", "check", "--live"], env=env)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert url in line and "HYBOT_HUNYUAN_BASE_URL" in line


async def test_config_check_live_is_skipped_when_the_configuration_has_problems() -> None:
    result = await asyncio.to_thread(run, ["config", "check", "--live"], env={})
    assert result.exit_code == 1
    assert "live check" not in result.output


async def test_chat_talks_to_the_configured_hunyuan(tmp_path: Path, emulator: Emulator) -> None:
    env = emulator_env(emulator, HYBOT_PERSONA="You are terse.")
    result = await asyncio.to_thread(
        run, ["chat", "--script", "-"], env=env, input="first\nsecond\n"
    )
    assert result.exit_code == 0, result.output
    assert 'Turn 2. You first said: "first". You just said: "second".' in result.stdout
    assert 'System: "You are terse.' in result.stdout
    assert (tmp_path / "chat.db").is_file()  # the configured store, not the demo's
    assert not (tmp_path / "hybot-demo.db").exists()


def test_chat_refuses_a_configuration_with_problems() -> None:
    result = run(["chat", "--script", "-"], input="hi\n")
    assert result.exit_code == 1
    assert "HUNYUAN_API_KEY" in one_error_line(result)


async def test_the_live_check_names_the_variables_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    async def check(self: HunyuanClient) -> CheckResult:
        return CheckResult(
            ok=False,
            problem="key",
            detail="chat completion failed: refused (401).",
            api="openai",
            endpoint="https://tokenhub.example/v1",
            model="hy3-preview",
            settings=("api_key", "base_url"),
        )

    monkeypatch.setattr(HunyuanClient, "check", check)
    message = await live_check(HunyuanConfig(api_key=Secret(KEY)))
    assert message == (
        "chat completion failed: refused (401). Check HUNYUAN_API_KEY, "
        "HYBOT_HUNYUAN_BASE_URL (https://tokenhub.example/v1)."
    )
    fine = CheckResult(ok=True, problem=None, detail="ok", api="openai", endpoint="", model="m")
    assert describe_outcome(fine) is None


def test_a_fresh_demo_never_deletes_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("precious", encoding="utf-8")
    result = run(["demo", "--script", "-", "--db", str(notes)], input="hi\n")
    assert result.exit_code == 1
    assert "not an SQLite database" in one_error_line(result)
    assert notes.read_text(encoding="utf-8") == "precious"
