"""The ``hybot`` command line, built with **click** (the well-kept CLI library of the Pallets
project). Entry point: ``bots.cli:main`` (console script ``hybot``).

Commands:

- ``hybot demo``: the whole bot against the in-process emulator, in the terminal.
- ``hybot emulator``: the offline Hunyuan emulator as a server, until Ctrl-C / SIGTERM.
- ``hybot config check``: the effective configuration (secrets masked) and every problem.
- ``hybot usage report``: usage totals from the configured store (table, CSV or JSON).
- ``hybot run telegram [--emulator]``: the Telegram bot (``bots.telegram``).

Exit codes: 0 success; 1 a problem with configuration, storage or the run itself; 2 a usage
error (click's convention, also used by ``hybot run`` without a platform); 130 Ctrl-C.

Logging is configured here and nowhere else: one stderr handler whose
:class:`RedactingFilter` masks every configured secret and any Telegram bot token
(``bot<digits>:<token>``), with the chatty ``httpx``/``httpcore`` loggers held at WARNING.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click

from adapters.console import ConsoleAdapter
from bots import __version__
from bots import telegram as telegram_bot
from bots.settings import Settings, SettingsError, load_settings
from bots.wiring import demo_runtime
from core.errors import ConfigError, HybotError
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.quota import usage_report
from core.store import open_store
from core.store.base import UsageTotals

__all__ = ["RedactingFilter", "cli", "configure_logging", "main"]

log = logging.getLogger("hybot.cli")

_EMULATOR_DEFAULTS = EmulatorConfig()


# --- logging ------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Masks secrets in log records: every value given, and Telegram bot tokens anywhere.

    Attach it to *handlers* (a logger's own filters do not see records propagated from child
    loggers). It rewrites the formatted message, the formatted traceback and the stack text,
    so arguments and exception messages are covered too.
    """

    TELEGRAM_TOKEN = re.compile(r"bot\d+:[\w-]+")
    MASK = "****"

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret containing another is masked whole. Very short values
        # would mask half the log; real credentials are never that short.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, self.MASK)
        return self.TELEGRAM_TOKEN.sub("bot" + self.MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging itself
            message = str(record.msg)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def configure_logging(level: str, *, secrets: Iterable[str] = ()) -> logging.Handler:
    """Send logs at ``level`` to stderr through a :class:`RedactingFilter`; returns the
    handler. Replaces handlers an earlier call installed, so calling twice is harmless."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_hybot", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler._hybot = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; Telegram URLs carry the bot token.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


# --- helpers ------------------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def _load(config_path: Path | None) -> Settings:
    try:
        return load_settings(config_path=config_path)
    except ConfigError as err:
        _fail(str(err))


def _run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine; Ctrl-C exits 130 without a traceback."""
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        raise SystemExit(130) from None


def _utf8_stdout() -> TextIO:
    # Emoji and "›" must never crash a demo on a terminal with a legacy encoding.
    out = sys.stdout
    encoding = (getattr(out, "encoding", "") or "").lower().replace("-", "")
    if isinstance(out, io.TextIOWrapper) and encoding != "utf8":
        out.reconfigure(errors="replace")
    return out


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file (default: $HYBOT_CONFIG, else ./hybot.toml when present).",
)


# --- the group ----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hybot")
def cli() -> None:
    """hybot: a self-hosted chat bot for Tencent Hunyuan with per-user quotas.

    Settings come from environment variables (HUNYUAN_API_KEY, HYBOT_*) and an optional
    hybot.toml; see `hybot config check` and the README.
    """


# --- demo ---------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--script",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    help="Run the lines of FILE ('-' for stdin) as messages, then exit. "
    "Without it, an interactive chat when stdin is a terminal, else the lines of stdin.",
)
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("hybot-demo.db"),
    show_default=True,
    help="SQLite file for the demo's conversations, quotas and ledger.",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("hybot-images"),
    show_default=True,
    help="Directory where generated images are saved.",
)
@click.option(
    "--lang",
    type=click.Choice(["en", "zh"]),
    default="en",
    show_default=True,
    help="The bot's default language.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
)
def demo(*, script: Path | None, db: Path, images: Path, lang: str, log_level: str) -> None:
    """Chat with the whole bot in this terminal, against the offline emulator.

    Starts the Hunyuan emulator on a free loopback port, opens the SQLite store at --db and
    runs the conversation core with the console user `console:me` as an admin. Needs no
    credentials and no network.

    Script lines: `text` (from you), `@name text` (from user `name`), `& <line>` (in the
    background), `!wait` (wait for background answers), `# comment`.
    """
    configure_logging(
        log_level,
        secrets=(_EMULATOR_DEFAULTS.api_key, _EMULATOR_DEFAULTS.secret_key),
    )
    lines: list[str] | None = None
    if script is not None:
        try:
            if str(script) == "-":
                lines = sys.stdin.read().splitlines()
            else:
                lines = script.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            _fail(f"cannot read the script {script}: {err}")
    elif not sys.stdin.isatty():
        lines = sys.stdin.read().splitlines()
    out = _utf8_stdout()
    errors = 0

    async def go() -> None:
        nonlocal errors
        errors = await _demo(lines=lines, db=db, images=images, lang=lang, out=out)

    try:
        _run_async(go())
    except HybotError as err:
        _fail(f"the demo could not start: {err}")
    except OSError as err:  # e.g. --images names a file, or a directory we may not write
        _fail(f"the demo could not start: {err.strerror or err}: {err.filename or ''}")
    if errors:
        _fail(f"{errors} message(s) failed unexpectedly; see the log above")


async def _demo(*, lines: list[str] | None, db: Path, images: Path, lang: str, out: TextIO) -> int:
    async with demo_runtime(db_path=db, image_dir=images, language=lang) as demo_rt:
        adapter = ConsoleAdapter(
            conversation=demo_rt.runtime.conversation,
            out=out,
            image_dir=images,
            user_id="me",
            language=lang,
        )
        async with adapter:
            if lines is None:
                await adapter.run_interactive(_stdin_lines(sys.stdin))
            else:
                await adapter.run_script(lines)
        return adapter.errors


async def _stdin_lines(stream: TextIO) -> AsyncIterator[str]:
    """Lines typed on a terminal, read without blocking the event loop.

    Uses the loop's reader callback on the raw descriptor (no thread that could hang the exit,
    and no O_NONBLOCK flag left on a terminal shared with stdout).
    """
    loop = asyncio.get_running_loop()
    fd = stream.fileno()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        queue.put_nowait(data)
        if not data:
            loop.remove_reader(fd)

    loop.add_reader(fd, readable)
    buffer = b""
    try:
        while True:
            data = await queue.get()
            if not data:
                if buffer:
                    yield buffer.decode("utf-8", errors="replace")
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode("utf-8", errors="replace")
    finally:
        loop.remove_reader(fd)


# --- emulator -----------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    default=_EMULATOR_DEFAULTS.api_key,
    show_default=True,
    help="Bearer key the OpenAI-compatible routes accept.",
)
@click.option(
    "--secret-id",
    default=_EMULATOR_DEFAULTS.secret_id,
    show_default=True,
    help="SecretId the native (TC3-signed) route accepts.",
)
@click.option(
    "--secret-key",
    default=_EMULATOR_DEFAULTS.secret_key,
    show_default=True,
    help="SecretKey the native route verifies signatures with.",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait before answering each request.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Apply a fault to every request (repeatable): 429, 500, badkey, busy, credit, "
    "disconnect, hang, imagefail, latency=SECONDS, moderation, sensitive, stream_error.",
)
def emulator(
    *,
    host: str,
    port: int,
    api_key: str,
    secret_id: str,
    secret_key: str,
    latency: float,
    faults: tuple[str, ...],
) -> None:
    """Run the offline Hunyuan emulator until Ctrl-C or SIGTERM.

    It speaks the OpenAI-compatible wire format (Bearer key) under /v1 and the native API 3.0
    (TC3-signed) at /, with deterministic replies that quote the conversation they were sent.
    """
    configure_logging("INFO", secrets=(api_key, secret_key))
    try:
        config = EmulatorConfig(
            api_key=api_key,
            secret_id=secret_id,
            secret_key=secret_key,
            latency=latency,
            faults=frozenset(faults),
        )
    except ConfigError as err:
        raise click.BadParameter(str(err)) from err
    try:
        _run_async(_serve_emulator(config, host=host, port=port))
    except OSError as err:
        _fail(f"cannot listen on {host}:{port}: {err.strerror or err}")


async def _serve_emulator(config: EmulatorConfig, *, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(config=config, host=host, port=port) as emu:
            click.echo(f"hybot emulator listening on {host}:{emu.port}")
            click.echo(f"  OpenAI-compatible base URL: {emu.openai_base_url}")
            click.echo(f"  native endpoint:            {emu.native_endpoint}")
            click.echo("Press Ctrl-C to stop.")
            sys.stdout.flush()
            await stop.wait()
            click.echo("stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# --- config -------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@config_option
def config_check(*, config_path: Path | None) -> None:
    """Print the effective configuration (secrets masked) and every problem.

    Exits 0 when there is no problem, 1 otherwise (problems go to stderr).
    """
    try:
        settings = load_settings(config_path=config_path)
    except SettingsError as err:
        _report_problems(err.problems)
        return
    except ConfigError as err:
        _report_problems([str(err)])
        return
    rows = settings.describe()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
    problems = settings.problems()
    if problems:
        _report_problems(problems)
        return
    click.echo("configuration OK")


def _report_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    noun = "problem" if len(problems) == 1 else "problems"
    click.echo(f"{len(problems)} {noun} found", err=True)
    raise SystemExit(1)


# --- usage --------------------------------------------------------------------------------


@cli.group()
def usage() -> None:
    """Usage reports from the ledger."""


_COLUMNS = ("calls", "tokens_in", "tokens_out", "images", "cost_cny")


@usage.command("report")
@click.option("--period", type=click.Choice(["day", "month"]), required=True)
@click.option(
    "--date",
    "when",
    default=None,
    help="YYYY-MM-DD for --period day, YYYY-MM for month (default: the current one, in "
    "the configured time zone).",
)
@click.option("--user", default=None, help="Only this user, e.g. telegram:42 or console:me.")
@click.option(
    "--by", "group_by", type=click.Choice(["user", "day"]), default="user", show_default=True
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@config_option
def usage_report_cmd(
    *,
    period: str,
    when: str | None,
    user: str | None,
    group_by: str,
    fmt: str,
    config_path: Path | None,
) -> None:
    """Print usage totals per user or per day from the configured store."""
    if when is not None:
        _check_date(period, when)
    settings = _load(config_path)
    configure_logging(settings.log_level, secrets=settings.secrets())
    rows: list[UsageTotals] = []

    async def go() -> None:
        nonlocal rows
        rows = await _usage_rows(
            settings.database_url,
            period=period,
            when=when,
            user=user,
            group_by=group_by,
            timezone=settings.timezone,
        )

    try:
        _run_async(go())
    except HybotError as err:
        _fail(f"cannot read usage: {err}")
    click.echo(_format_usage(rows, group_by=group_by, fmt=fmt), nl=False)


def _check_date(period: str, when: str) -> None:
    try:
        if period == "day":
            ok = date.fromisoformat(when).isoformat() == when
        else:
            ok = re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", when) is not None
    except ValueError:
        ok = False
    if not ok:
        shape = "YYYY-MM-DD" if period == "day" else "YYYY-MM"
        raise click.BadParameter(f"{when!r} is not a {shape} date", param_hint="--date")


async def _usage_rows(
    database_url: str,
    *,
    period: str,
    when: str | None,
    user: str | None,
    group_by: str,
    timezone: str,
) -> list[UsageTotals]:
    async with open_store(database_url) as store:
        return await usage_report(
            store,
            period=period,
            date=when,
            user=user,
            group_by=group_by,
            timezone=timezone,
            now=datetime.now(UTC),
        )


def _format_usage(rows: Sequence[UsageTotals], *, group_by: str, fmt: str) -> str:
    """Render report rows: aligned ``table``, ``csv`` with a header, or a ``json`` list."""
    records = [
        {
            group_by: r.key,
            "calls": r.calls,
            "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out,
            "images": r.images,
            "cost_cny": round(r.cost_cny, 6),
        }
        for r in rows
    ]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    header = (group_by, *_COLUMNS)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for rec in records:
            writer.writerow([rec[h] for h in header])
        return buf.getvalue()
    if not records:
        return "no usage recorded in this period\n"
    total = {
        group_by: "total",
        "calls": sum(r.calls for r in rows),
        "tokens_in": sum(r.tokens_in for r in rows),
        "tokens_out": sum(r.tokens_out for r in rows),
        "images": sum(r.images for r in rows),
        "cost_cny": round(sum(r.cost_cny for r in rows), 6),
    }
    table = [[_cell(rec[h], h) for h in header] for rec in [*records, total]]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]

    def fmt_row(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    lines = [fmt_row(header), fmt_row(["-" * w for w in widths])]
    lines += [fmt_row(row) for row in table[:-1]]
    lines += [fmt_row(["-" * w for w in widths]), fmt_row(table[-1])]
    return "\n".join(lines) + "\n"


def _cell(value: object, column: str) -> str:
    if column == "cost_cny" and isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# --- run ----------------------------------------------------------------------------------


@cli.command()
@click.argument("platform", required=False, type=click.Choice(["telegram"]))
@click.option(
    "--emulator",
    is_flag=True,
    help="Answer with the in-process Hunyuan emulator instead of Tencent (no API key needed).",
)
@config_option
def run(*, platform: str | None, emulator: bool, config_path: Path | None) -> None:
    """Run the bot on a chat platform: `hybot run telegram [--emulator]`."""
    if platform == "telegram":
        _run_telegram(config_path=config_path, emulator=emulator)
        return
    click.echo("hybot run: name a platform: telegram", err=True)
    raise SystemExit(2)


def _run_telegram(*, config_path: Path | None, emulator: bool) -> None:
    settings = _load(config_path)
    problems = [
        p
        for p in settings.problems()
        if not (emulator and p.startswith(("HUNYUAN_", "TENCENTCLOUD_")))
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        _fail(f"configuration: {problems[0]}{more}; see `hybot config check`")
    configure_logging(settings.log_level, secrets=settings.secrets())
    try:
        _run_async(telegram_bot.main(settings, emulator=emulator))
    except HybotError as err:
        _fail(" ".join(str(err).split()))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="hybot")
