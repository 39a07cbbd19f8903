"""The ``hybot`` command line, built with **click** (the well-kept CLI library of the Pallets
project). Entry point: ``bots.cli:main`` (console script ``hybot``).

Commands:

- ``hybot demo``: the whole bot against the in-process emulator, in the terminal, with the
  operator's settings (``hybot.toml``, ``.env``, the environment) except Hunyuan's endpoint.
- ``hybot chat``: the same console against the configured (real) Hunyuan.
- ``hybot emulator``: the offline Hunyuan emulator as a server, until Ctrl-C / SIGTERM.
- ``hybot config check [--live]``: the effective configuration (secrets masked), every
  problem, and with ``--live`` one cheap authenticated call to Hunyuan.
- ``hybot usage report``: usage totals from the configured store (table, CSV or JSON).
- ``hybot run``: the production bot; a group that platform commands extend
  (``hybot run telegram``, ``hybot run slack``), see :func:`run`.

Exit codes: 0 success; 1 a problem with configuration, storage or the run itself; 2 a usage
error (click's convention, also used by ``hybot run`` without a platform); 130 after Ctrl-C
(SIGINT) and 143 after SIGTERM (``demo``, ``chat``, ``emulator``, ``run``), both once
in-flight work was drained and refunded.

Errors: every failure is one ``error: ...`` line on stderr and a non-zero exit, never a
traceback (:class:`_Guarded` is the top-level guard; an unexpected exception's traceback is
logged at DEBUG only, through the redacting handler). Usage errors too: ``error: <click's
message> (see 'hybot ... --help')``, exit 2, instead of click's usage block.

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
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import click

from adapters.console import ConsoleAdapter
from bots import __version__
from bots import slack as slack_bot
from bots import telegram as telegram_bot
from bots.live import live_check
from bots.settings import Settings, SettingsError, load_settings
from bots.wiring import Runtime, demo_runtime, open_runtime
from core.config import BotConfig, Language
from core.errors import ConfigError, HybotError
from core.hunyuan.emulator import Emulator, EmulatorConfig
from core.quota import usage_report
from core.store import open_store
from core.store.base import UsageTotals

__all__ = [
    "RedactingFilter",
    "cli",
    "configure_logging",
    "load_for_run",
    "main",
    "run",
    "run_async",
]

log = logging.getLogger("hybot.cli")

_EMULATOR_DEFAULTS = EmulatorConfig()

_NO_ADAPTER_MESSAGE = (
    "no platform adapter is available in this release. "
    "Telegram and Slack adapters arrive in later releases. Meanwhile try `hybot demo` "
    "(the whole bot in your terminal, against the offline emulator) or `hybot chat` "
    "(the same console, against the configured Hunyuan)."
)

#: Exit status after a signal, once in-flight work was drained (128 + signal number).
_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


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
    click.echo(f"error: {_one_line(message)}", err=True)
    raise SystemExit(code)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def _load(config_path: Path | None) -> Settings:
    try:
        return load_settings(config_path=config_path)
    except SettingsError as err:
        _fail_with_problems(err.problems)
    except ConfigError as err:
        _fail(str(err))


def _fail_with_problems(problems: Sequence[str]) -> NoReturn:
    """Every problem, on the one ``error:`` line (``; ``-separated), then exit 1."""
    if len(problems) == 1:
        head = f"configuration: {problems[0]}"
    else:
        head = f"configuration has {len(problems)} problems: {'; '.join(problems)}"
    _fail(f"{head} (see `hybot config check`)")


def load_for_run(config_path: Path | None, *, ignore_hunyuan: bool = False) -> Settings:
    """Settings for a command that runs the bot: loaded, free of problems (else one
    ``error:`` line and exit 1), logging configured with every secret redacted. Platform
    commands (``hybot run telegram``) call this first. ``ignore_hunyuan`` skips the Hunyuan
    credential checks (the demo replaces them with the emulator's)."""
    settings = _load(config_path)
    problems = settings.problems(credentials=not ignore_hunyuan)
    if problems:
        _fail_with_problems(problems)
    configure_logging(settings.log_level, secrets=settings.secrets())
    return settings


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived and the main task was cancelled (and has cleaned up)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` as the main task. SIGINT and SIGTERM are handled alike: the main task is
    cancelled, so every ``async with`` unwinds (adapters drain, reservations of unfinished
    turns are refunded, the store closes), then the process exits 130 (SIGINT) or 143
    (SIGTERM) without a traceback. A second signal cancels the clean-up too."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        # Signal handlers exist only in the main thread (tests run commands in others).
        main_thread = threading.current_thread() is threading.main_thread()
        handled = (signal.SIGINT, signal.SIGTERM) if main_thread else ()
        for sig in handled:
            loop.add_signal_handler(sig, stop, sig)
        try:
            await coro
        except asyncio.CancelledError:
            if received:
                raise _Stopped(received[0]) from None
            raise
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(main())
    except _Stopped as stopped:
        click.echo(f"\nstopped ({stopped}): in-flight work was drained", err=True)
        raise SystemExit(_SIGNAL_EXIT.get(signal.Signals(stopped.signum), 1)) from None
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


class _Guarded(click.Group):
    """The top-level guard: any error a command lets escape becomes one ``error:`` line and
    exit 1; click's usage errors become one line too, ``error: <message> (see 'hybot ...
    --help')``, exit 2 (instead of click's usage block)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as err:
            err.show()  # `hybot` alone (or a bare group): the help, as click prints it
            raise SystemExit(err.exit_code) from None
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else (prog_name or "hybot")
            _fail(f"{err.format_message()} (see '{where} --help')", err.exit_code)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except click.Abort:
            click.echo("\naborted", err=True)
            raise SystemExit(1) from None
        # click returns the code of ``ctx.exit(code)`` (--help, --version) or the command's
        # return value (None) when it does not exit itself.
        raise SystemExit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            raise SystemExit(130) from None
        except HybotError as err:
            _fail(str(err))
        except OSError as err:
            where = f": {err.filename}" if err.filename else ""
            _fail(f"{err.strerror or type(err).__name__}{where}")
        except Exception as err:
            log.debug("unexpected error", exc_info=True)
            _fail(
                f"unexpected {type(err).__name__}; run with HYBOT_LOG_LEVEL=DEBUG "
                "(or --log-level DEBUG) to see where"
            )


@click.group(name="hybot", cls=_Guarded, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hybot")
def cli() -> None:
    """hybot: a self-hosted chat bot for Tencent Hunyuan with per-user quotas.

    Settings come from environment variables (HUNYUAN_API_KEY, HYBOT_*), ./.env and an
    optional hybot.toml; see `hybot config check` and the README.
    """


# --- demo and chat ------------------------------------------------------------------------

_DEMO_DB = Path("hybot-demo.db")


def _read_lines(script: Path | None) -> list[str] | None:
    """The script's lines; stdin's when it is not a terminal; ``None`` for interactive."""
    try:
        if script is not None:
            if str(script) == "-":
                return sys.stdin.read().splitlines()
            return script.read_text(encoding="utf-8").splitlines()
        if not sys.stdin.isatty():
            return sys.stdin.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        _fail(f"cannot read the script {script or 'on stdin'}: {reason}")
    return None


def _remove_database(db: Path) -> None:
    """Delete an SQLite file and its journal files (the demo's fresh start). Refuses a file
    that is not an SQLite database, so a mistyped --db never deletes someone's document."""
    try:
        with db.open("rb") as fh:
            header = fh.read(16)
    except FileNotFoundError:
        header = b""
    if header and header != b"SQLite format 3\x00":
        _fail(f"--db {db} is not an SQLite database; refusing to replace it")
    for path in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
        path.unlink(missing_ok=True)


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
    default=_DEMO_DB,
    show_default=True,
    help="SQLite file for the demo's conversations, quotas and ledger (never the configured "
    "HYBOT_DATABASE_URL).",
)
@click.option(
    "--fresh/--keep",
    default=None,
    help="Start from an empty --db (deleting the file) or keep it. Default: fresh with "
    "--script, so a tour reads the same every time; kept otherwise.",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory where generated images are saved. [default: HYBOT_IMAGE_DIR]",
)
@click.option(
    "--lang",
    type=click.Choice(["en", "zh"]),
    default=None,
    help="The bot's default language. [default: HYBOT_LANGUAGE]",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
)
@config_option
def demo(
    *,
    script: Path | None,
    db: Path,
    fresh: bool | None,
    images: Path | None,
    lang: str | None,
    log_level: str,
    config_path: Path | None,
) -> None:
    """Chat with the whole bot in this terminal, against the offline emulator.

    Uses your settings (hybot.toml, .env, the environment: persona, language, limits, ...)
    with only Hunyuan's endpoint and credentials replaced by an emulator on a free loopback
    port, its own SQLite file (--db) and the console user `console:me` as an admin. Needs no
    credentials and no network.

    Script lines: `text` (from you), `@name text` (from user `name`), `& <line>` (in the
    background), `!wait` (wait for background answers), `# comment`.
    """
    settings = load_for_run(config_path, ignore_hunyuan=True)
    configure_logging(
        log_level,
        secrets=(*settings.secrets(), _EMULATOR_DEFAULTS.api_key, _EMULATOR_DEFAULTS.secret_key),
    )
    lines = _read_lines(script)
    if fresh if fresh is not None else script is not None:
        _remove_database(db)
    image_dir = images or Path(settings.images.dir)
    language = cast(Language | None, lang)
    out = _utf8_stdout()
    errors = 0

    async def go() -> None:
        nonlocal errors
        async with demo_runtime(
            db_path=db, image_dir=image_dir, language=language, base=settings.to_bot_config()
        ) as demo_rt:
            errors = await _console(
                demo_rt.runtime.config, demo_rt.runtime, lines=lines, image_dir=image_dir, out=out
            )

    try:
        run_async(go())
    except HybotError as err:
        _fail(f"the demo could not start: {err}")
    except OSError as err:  # e.g. --images names a file, or a directory we may not write
        _fail(f"the demo could not start: {err.strerror or err}: {err.filename or ''}")
    if errors:
        _fail(f"{errors} message(s) failed unexpectedly; see the log above")


@cli.command()
@click.option(
    "--script",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    help="Send the lines of FILE ('-' for stdin) as messages, then exit.",
)
@config_option
def chat(*, script: Path | None, config_path: Path | None) -> None:
    """Chat with the bot in this terminal, against the configured (real) Hunyuan.

    The same console as `hybot demo`, with your settings as they are: the store at
    HYBOT_DATABASE_URL, the credentials and endpoint you configured (check them first with
    `hybot config check --live`). You are the user `console:me`; make it an admin with
    HYBOT_ADMINS=console:me to try admin commands.
    """
    settings = load_for_run(config_path)
    lines = _read_lines(script)
    config = settings.to_bot_config()
    image_dir = Path(settings.images.dir)
    out = _utf8_stdout()
    errors = 0

    async def go() -> None:
        nonlocal errors
        async with open_runtime(config, database_url=settings.database.location.path) as rt:
            errors = await _console(config, rt, lines=lines, image_dir=image_dir, out=out)

    try:
        run_async(go())
    except HybotError as err:
        _fail(f"the chat could not start: {err}")
    except OSError as err:
        _fail(f"the chat could not start: {err.strerror or err}: {err.filename or ''}")
    if errors:
        _fail(f"{errors} message(s) failed unexpectedly; see the log above")


async def _console(
    config: BotConfig, runtime: Runtime, *, lines: list[str] | None, image_dir: Path, out: TextIO
) -> int:
    """Run the console adapter on ``runtime``'s conversation; returns its error count."""
    adapter = ConsoleAdapter(
        conversation=runtime.conversation,
        out=out,
        image_dir=image_dir,
        user_id="me",
        language=config.language,
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
        raise click.BadParameter(str(err), param_hint="--fault") from err
    try:
        run_async(_serve_emulator(config, host=host, port=port))
    except OSError as err:
        _fail(f"cannot listen on {host}:{port}: {err.strerror or err}")


async def _serve_emulator(config: EmulatorConfig, *, host: str, port: int) -> None:
    """Serve until cancelled: :func:`run_async` cancels on SIGINT/SIGTERM, the server closes,
    and the process exits 130/143 like every long-running command."""
    async with Emulator(config=config, host=host, port=port) as emu:
        click.echo(f"hybot emulator listening on {host}:{emu.port}")
        click.echo(f"  OpenAI-compatible base URL: {emu.openai_base_url}")
        click.echo(f"  native endpoint:            {emu.native_endpoint}")
        click.echo("Press Ctrl-C to stop.")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until cancelled


# --- config -------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@config_option
@click.option(
    "--live",
    is_flag=True,
    help="Also authenticate against the configured Hunyuan and make its cheapest real call.",
)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    type=click.Choice(["telegram", "slack"]),
    help="Also check what `hybot run PLATFORM` needs (repeatable).",
)
def config_check(*, config_path: Path | None, live: bool, platforms: tuple[str, ...]) -> None:
    """Print the effective configuration (secrets masked) and every problem.

    Exits 0 when there is no problem, 1 otherwise (problems go to stderr). --platform adds what
    `hybot run PLATFORM` needs (tokens, secrets, mode). With --live, and only when the
    configuration itself has no problem, one cheap authenticated call checks the key, URL,
    region and model for real.
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
    if "telegram" in platforms:
        problems += telegram_bot.telegram_problems(settings)
    if "slack" in platforms:
        problems += slack_bot.slack_problems(slack_bot.run_from_settings(settings))
    if problems:
        _report_problems(problems)
        return
    if live:
        hunyuan = settings.to_bot_config().hunyuan
        where = hunyuan.native_endpoint if hunyuan.api == "native" else hunyuan.base_url
        click.echo(f"live check: {hunyuan.api} API at {where}, model {hunyuan.model}")
        failure: list[str] = []

        async def go() -> None:
            outcome = await live_check(hunyuan)
            if outcome is not None:
                failure.append(f"live check failed: {outcome}")

        run_async(go())
        if failure:
            _report_problems(failure)
            return
        click.echo("live check OK: Hunyuan accepted the credentials and answered")
    click.echo("configuration OK")


def _report_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        click.echo(f"problem: {_one_line(problem)}", err=True)
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
    rejected = [
        p for p in settings.rejected() if p.startswith(("HYBOT_DATABASE_URL", "HYBOT_TIMEZONE"))
    ]
    if rejected:  # never report in the wrong time zone or from the wrong store
        _fail_with_problems(rejected)
    configure_logging(settings.log_level, secrets=settings.secrets())
    location = settings.database.location
    if not location.in_memory and not Path(location.path).is_file():
        # Read-only: never create a database just to report that it is empty.
        _fail(f"the database {location.path} was not found (HYBOT_DATABASE_URL)")
    rows: list[UsageTotals] = []

    async def go() -> None:
        nonlocal rows
        rows = await _usage_rows(
            location.path,
            period=period,
            when=when,
            user=user,
            group_by=group_by,
            timezone=settings.quota.timezone,
        )

    try:
        run_async(go())
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


@cli.group(invoke_without_command=True)
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the bot on a chat platform: `hybot run telegram`, `hybot run slack`.

    SIGINT and SIGTERM stop it alike: intake stops, answers in flight are drained and their
    unused quota refunded.

    \f
    For platform helpers: platform commands are thin: they take `@config_option`, call
    :func:`load_for_run` (settings without problems, logging with secrets redacted), and hand
    an async main to :func:`run_async` (SIGINT and SIGTERM drain and refund alike). Without a
    platform this explains what exists and exits 2.
    """
    if ctx.invoked_subcommand is not None:
        return
    platforms = list(run.commands) if isinstance(run, click.Group) else []
    if platforms:
        how = ", ".join(f"{p.capitalize()}: `hybot run {p}`" for p in platforms)
        _fail(f"name a platform: {', '.join(platforms)} (no platform adapter was named; {how})", 2)
    _fail(_NO_ADAPTER_MESSAGE, 2)


@run.command("slack")
@config_option
@click.option(
    "--emulator",
    is_flag=True,
    help="Answer with the in-process Hunyuan emulator (no TokenHub key needed).",
)
def run_slack(*, config_path: Path | None, emulator: bool) -> None:
    """Run the Slack bot: HTTP Events API, or Socket Mode with SLACK_APP_TOKEN (README: Slack)."""
    settings = load_for_run(config_path, ignore_hunyuan=emulator)
    run_async(slack_bot.slack_main(settings, emulator=emulator))


@run.command("telegram")
@click.option(
    "--emulator",
    is_flag=True,
    help="Answer with the in-process Hunyuan emulator instead of Tencent (no API key needed).",
)
@config_option
def run_telegram(*, emulator: bool, config_path: Path | None) -> None:
    """Run the Telegram bot (long polling, or a webhook with HYBOT_TELEGRAM_MODE=webhook)."""
    settings = load_for_run(config_path, ignore_hunyuan=emulator)
    run_async(telegram_bot.main(settings, emulator=emulator))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="hybot")
