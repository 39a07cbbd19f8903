"""Crash mid-answer (platforms.md §5.3 item 3): the Slack bot runs as a subprocess, is killed
with SIGKILL while the model is working, and a restarted process answers the event exactly once
from the inbox (Slack is not asked to deliver it again)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from fakes.slack import BOT_TOKEN, BOT_USER, SIGNING_SECRET, FakeSlack, event_body, signed_headers

from core.hunyuan.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.slow

_CHILD = r"""
import asyncio, json, sys
from bots.slack import SlackRun, serve_slack
from core.config import BotConfig, HunyuanConfig, Secret

args = json.loads(sys.argv[1])
config = BotConfig(
    hunyuan=HunyuanConfig(
        api="openai", base_url=args["hy"], api_key=Secret(args["key"]),
        idle_timeout=120.0, total_timeout=120.0, max_attempts=1,
    ),
    delivery_lease_seconds=args["lease"],
)
run = SlackRun(
    bot_token=Secret(args["token"]), signing_secret=Secret(args["secret"]),
    base_url=args["slack"], mode="http", port=0, redrive_interval=0.2, grace=1.0,
)

def ready(adapter):
    print("READY", adapter.port, flush=True)

asyncio.run(serve_slack(run=run, config=config, database_url=args["db"], ready=ready))
"""


async def _start(args: dict[str, object]) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[2]),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line.startswith(b"READY"):
        assert proc.stderr is not None
        err = await proc.stderr.read()
        raise AssertionError(f"child did not start: {line!r} {err.decode()[-2000:]}")
    return proc, int(line.split()[1])


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.02)


def _inbox_done(db: Path, delivery_id: str) -> bool:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT done_at FROM inbox WHERE platform = 'slack' AND delivery_id = ?",
            (delivery_id,),
        ).fetchone()
    return row is not None and row[0] is not None


async def test_sigkill_mid_answer_is_answered_once_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    slow_cfg = EmulatorConfig(latency=120.0)
    fast_cfg = EmulatorConfig()
    async with (
        FakeSlack() as fake,
        Emulator(config=slow_cfg) as slow,
        Emulator(config=fast_cfg) as fast,
        aiohttp.ClientSession() as session,
    ):
        base = {
            "key": slow_cfg.api_key,
            "token": BOT_TOKEN,
            "secret": SIGNING_SECRET,
            "slack": fake.base_url,
            "db": str(db),
            "lease": 2.0,
        }
        proc, port = await _start({**base, "hy": slow.openai_base_url})
        try:
            body = event_body(
                {
                    "type": "app_mention",
                    "user": "U1",
                    "text": f"<@{BOT_USER}> survive this",
                    "ts": "9000.0001",
                    "channel": "C1",
                }
            )
            url = f"http://127.0.0.1:{port}/slack/events"
            async with session.post(url, data=body.encode(), headers=signed_headers(body)) as r:
                assert r.status == 200  # acknowledged: Slack will not deliver it again
            await _until(lambda: slow.stats.requests["/v1/chat/completions"] >= 1)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not fake.of("chat.postMessage")  # nothing reached the user yet

        proc2, _ = await _start({**base, "hy": fast.openai_base_url})
        try:

            def answered() -> bool:
                return any(
                    'You just said: "survive this"' in str(m.get("text"))
                    for m in fake.messages.values()
                )

            await fake.wait_for(lambda f: answered(), timeout=60)
            # the re-driven entry is marked done, so no later re-drive round answers it again
            await _until(lambda: _inbox_done(db, "msg:T1:C1:9000.0001"))
            posts_before = len(fake.of("chat.postMessage"))
        finally:
            proc2.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc2.wait(), 30)
        answers = [m for m in fake.messages.values() if "survive this" in str(m.get("text"))]
        assert len(answers) == 1
        assert answers[0]["thread_ts"] == "9000.0001"
        assert len(fake.of("chat.postMessage")) == posts_before
        assert fast.stats.requests["/v1/chat/completions"] == 1
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
