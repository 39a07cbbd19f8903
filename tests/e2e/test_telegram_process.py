"""``hybot run telegram`` as a real process against the fake Bot API and the emulator: the
SIGKILL crash test (issue 8 acceptance) and the one-line fatal errors (401, 409, settings)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fakes.telegram import FakeTelegram

from core.hunyuan.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.slow

LEASE = 2.0  # HYBOT_DELIVERY_LEASE_SECONDS: the inbox re-drives after this long


def bot_env(tg: FakeTelegram, emu: Emulator, db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBOT_", "HUNYUAN_"))}
    env.update(
        TELEGRAM_BOT_TOKEN=tg.token,
        HYBOT_TELEGRAM_BASE_URL=f"http://127.0.0.1:{tg.port}",
        HUNYUAN_API_KEY=EmulatorConfig().api_key,
        HYBOT_HUNYUAN_BASE_URL=emu.openai_base_url,
        HYBOT_HUNYUAN_MAX_ATTEMPTS="1",
        HYBOT_HUNYUAN_IDLE_TIMEOUT="120",
        HYBOT_DATABASE_URL=str(db),
        HYBOT_DELIVERY_LEASE_SECONDS=str(LEASE),
        HYBOT_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@asynccontextmanager
async def bot_process(env: dict[str, str], *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from bots.cli import main; main(sys.argv[1:])",
        "run",
        "telegram",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def answered(tg: FakeTelegram, chat: int) -> bool:
    return any('System: "none"' in text for text in tg.texts(chat))


async def test_sigkill_mid_answer_then_restart_answers_each_update_once(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    chats = [101, 102, 103]
    async with FakeTelegram() as tg:
        updates = [tg.send_text(chat_id=c, user_id=c, text=f"question {c}") for c in chats]
        ids = [u["update_id"] for u in updates]
        async with Emulator(config=EmulatorConfig(latency=60.0)) as slow:
            async with bot_process(bot_env(tg, slow, db)) as proc:
                # Every update was fetched and confirmed to Telegram (offset past it), and the
                # model calls are in flight: the answers have begun but none is complete.
                await tg.wait_for(lambda: set(ids) <= set(tg.confirmed), timeout=60)
                for _ in range(3000):
                    if sum(slow.stats.chats_in_flight.values()) == len(chats):
                        break
                    await asyncio.sleep(0.01)
                assert sum(slow.stats.chats_in_flight.values()) == len(chats)
                assert tg.calls_of("sendChatAction")  # typing shown: mid-answer
                assert not any(answered(tg, c) for c in chats)
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            pending = raw.execute("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL").fetchone()
            assert pending[0] == len(chats)

        # Telegram will never send these updates again: only the inbox can answer them.
        await asyncio.sleep(LEASE + 0.5)  # let the dead process's leases run out
        later = tg.send_text(chat_id=104, user_id=104, text="question 104")
        async with Emulator(config=EmulatorConfig()) as healthy:
            async with bot_process(bot_env(tg, healthy, db)) as proc:
                await tg.wait_for(lambda: all(answered(tg, c) for c in [*chats, 104]), timeout=60)
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode in (0, 143), err.decode()
            assert healthy.stats.requests["/v1/chat/completions"] == len(chats) + 1

    for chat in [*chats, 104]:
        assert len(tg.bot_messages(chat)) == 1, (chat, tg.texts(chat))
        assert len(tg.calls_of("sendMessage", chat_id=chat)) == 1
    assert later["update_id"] in tg.confirmed
    with sqlite3.connect(db) as raw:
        outcomes = [r[0] for r in raw.execute("SELECT outcome FROM ledger ORDER BY id")]
        assert outcomes.count("ok") == len(chats) + 1  # each answer charged once
        users = raw.execute(
            "SELECT COUNT(*), COUNT(DISTINCT content) FROM turns WHERE role = 'user'"
        ).fetchone()
        assert users == (len(chats) + 1, len(chats) + 1)
        left = raw.execute("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL").fetchone()[0]
        assert left == 0


async def test_wrong_token_exits_1_with_one_line(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, Emulator(config=EmulatorConfig()) as emu:
        env = bot_env(tg, emu, tmp_path / "b.db", TELEGRAM_BOT_TOKEN="42:revoked-token")
        async with bot_process(env) as proc:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("error: ") and "401" in last and "TELEGRAM_BOT_TOKEN" in last
    assert "revoked-token" not in err.decode()


async def test_conflict_exits_1_without_looping(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, Emulator(config=EmulatorConfig()) as emu:
        tg.fail("getUpdates", "conflict", times=10_000)
        async with bot_process(bot_env(tg, emu, tmp_path / "b.db")) as proc:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1
        assert "409 Conflict" in err.decode().strip().splitlines()[-1]
        assert len([c for c in tg.calls if c.method == "getUpdates"]) == 1


async def test_emulator_mode_answers_without_tencent_and_config_errors(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, Emulator(config=EmulatorConfig()) as emu:
        env = bot_env(tg, emu, tmp_path / "b.db", HUNYUAN_API_KEY="", HYBOT_HUNYUAN_BASE_URL="")
        env.pop("HUNYUAN_API_KEY")
        async with bot_process(env, "--emulator") as proc:
            tg.send_text(chat_id=5, text="hello emulator")
            await tg.wait_for(lambda: answered(tg, 5), timeout=60)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode in (0, 143)
        assert emu.stats.requests.get("/v1/chat/completions", 0) == 0  # its own emulator

        webhook = bot_env(tg, emu, tmp_path / "c.db", HYBOT_TELEGRAM_MODE="webhook")
        async with bot_process(webhook) as proc:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1
        assert "HYBOT_TELEGRAM_WEBHOOK_URL" in err.decode()
        missing = bot_env(tg, emu, tmp_path / "d.db")
        missing.pop("TELEGRAM_BOT_TOKEN")
        async with bot_process(missing) as proc:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1 and "TELEGRAM_BOT_TOKEN is not set" in err.decode()


async def test_sigterm_finishes_the_answer_in_flight_then_exits(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, Emulator(config=EmulatorConfig(latency=2.0)) as emu:
        async with bot_process(bot_env(tg, emu, tmp_path / "b.db")) as proc:
            update = tg.send_text(chat_id=7, user_id=7, text="slow question")
            await tg.wait_for(lambda: update["update_id"] in tg.confirmed, timeout=60)
            await tg.wait_for(lambda: bool(tg.calls_of("sendChatAction", chat_id=7)), timeout=60)
            assert not answered(tg, 7)  # the model is still thinking
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 143, err.decode()
        assert answered(tg, 7)  # the answer in flight was completed before the exit
        with sqlite3.connect(tmp_path / "b.db") as raw:
            assert raw.execute("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL").fetchone() == (
                0,
            )
