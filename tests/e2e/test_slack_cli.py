"""``hybot run slack`` as an operator runs it: a subprocess configured by environment variables,
against the Slack fake, with ``--emulator`` (no Hunyuan key needed)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from fakes.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    FakeSlack,
    event_body,
    signed_headers,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, fake: FakeSlack, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HYBOT_", "SLACK_", "HUNYUAN_", "TENCENTCLOUD_"))
    }
    env.update(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "HYBOT_SLACK_BASE_URL": fake.base_url,
            "HYBOT_SLACK_PORT": "0",
            "HYBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
            "HYBOT_IMAGE_DIR": str(tmp_path / "images"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


async def _hybot(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bots.cli import main; main()",
        *args,
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_revoked_token_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        proc = await _hybot(
            _env(tmp_path, fake, SLACK_BOT_TOKEN="xoxb-revoked-SECRET"),
            "run",
            "slack",
            "--emulator",
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert lines == ["error: Slack rejected SLACK_BOT_TOKEN (invalid_auth); check the bot token"], (
        err.decode()
    )
    assert "Traceback" not in err.decode()
    assert "xoxb-revoked-SECRET" not in (out + err).decode()


async def test_rejected_app_token_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    # Socket Mode (an app token is set); the fake answers invalid_auth to apps.connections.open
    async with FakeSlack() as fake:
        proc = await _hybot(
            _env(tmp_path, fake, SLACK_APP_TOKEN="xapp-WRONG-SECRET"), "run", "slack", "--emulator"
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        opened = [c for c in fake.calls if c.method == "apps.connections.open"]
    text = err.decode()
    assert proc.returncode == 1, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: Slack rejected SLACK_APP_TOKEN (invalid_auth); check the app-level token"
    ], text
    assert len(opened) == 1  # asked once, not retried
    assert "Traceback" not in text
    assert "Retrying" not in text
    assert "xapp-WRONG-SECRET" not in (out + err).decode()


async def test_socket_mode_start_logs_no_client_and_token_warning(tmp_path: Path) -> None:
    # SLACK_BOT_TOKEN is in the environment, which bolt's AsyncApp reads by itself
    async with FakeSlack() as fake:
        proc = await _hybot(
            _env(tmp_path, fake, SLACK_APP_TOKEN=APP_TOKEN),
            "run",
            "slack",
            "--emulator",
        )
        assert proc.stderr is not None
        seen: list[str] = []
        while not any("Slack Socket Mode connected" in line for line in seen):
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "".join(seen)
            seen.append(line)
        await fake.wait_socket()
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 60)
    text = "".join(seen) + rest.decode()
    assert proc.returncode == 143, text
    assert "Traceback" not in text
    assert "will be unused" not in text
    for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
        assert secret not in text


async def test_unreachable_slack_api_names_the_setting_and_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/api/"
    async with FakeSlack() as fake:
        proc = await _hybot(
            _env(tmp_path, fake, HYBOT_SLACK_BASE_URL=base_url), "run", "slack", "--emulator"
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 1, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    assert "HYBOT_SLACK_BASE_URL" in lines[0]
    assert base_url in lines[0]
    assert "cannot reach the Slack API" in lines[0]
    assert "Traceback" not in text
    assert BOT_TOKEN not in (out + err).decode()


async def test_missing_signing_secret_is_named(tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        proc = await _hybot(
            _env(tmp_path, fake, SLACK_SIGNING_SECRET=""), "run", "slack", "--emulator"
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "SLACK_SIGNING_SECRET is not set" in err.decode()


async def test_run_slack_answers_then_drains_on_sigterm(tmp_path: Path) -> None:
    async with FakeSlack() as fake, aiohttp.ClientSession() as session:
        proc = await _hybot(_env(tmp_path, fake), "run", "slack", "--emulator")
        assert proc.stderr is not None
        port = 0
        seen: list[str] = []
        while not port:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "".join(seen)
            seen.append(line)
            match = re.search(r"Slack events served on 127\.0\.0\.1:(\d+)/slack/events", line)
            port = int(match.group(1)) if match else 0
        body = event_body(
            {
                "type": "app_mention",
                "user": "U1",
                "text": f"<@{BOT_USER}> hello from the cli",
                "ts": "9300.0001",
                "channel": "C1",
            }
        )
        url = f"http://127.0.0.1:{port}/slack/events"
        async with session.post(url, data=body.encode(), headers=signed_headers(body)) as resp:
            assert resp.status == 200
        await fake.wait_for(
            lambda f: any(
                'You just said: "hello from the cli"' in str(m.get("text"))
                for m in f.messages.values()
            ),
            timeout=60,
        )
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 143
    text = "".join(seen) + rest.decode()
    assert "Traceback" not in text
    assert "will be unused" not in text  # bolt's client-and-token warning (HTTP mode too)
    for secret in (BOT_TOKEN, SIGNING_SECRET):
        assert secret not in text


async def test_sigterm_mid_answer_refuses_new_events_and_finishes_the_answer(
    tmp_path: Path,
) -> None:
    async with FakeSlack() as fake, aiohttp.ClientSession() as session:
        proc = await _hybot(_env(tmp_path, fake), "run", "slack", "--emulator")
        assert proc.stderr is not None
        port = 0
        while not port:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line
            match = re.search(r"Slack events served on 127\.0\.0\.1:(\d+)/slack/events", line)
            port = int(match.group(1)) if match else 0
        url = f"http://127.0.0.1:{port}/slack/events"

        def mention(text: str, ts: str) -> str:
            return event_body(
                {
                    "type": "app_mention",
                    "user": "U1",
                    "text": f"<@{BOT_USER}> {text}",
                    "ts": ts,
                    "channel": "C1",
                }
            )

        # the emulator waits 3 s before answering this one
        slow = mention("[[fault:latency=3]] take your time", "9310.0001")
        async with session.post(url, data=slow.encode(), headers=signed_headers(slow)) as resp:
            assert resp.status == 200
        await fake.wait_calls("assistant.threads.setStatus")  # the answer is in flight
        proc.send_signal(signal.SIGTERM)
        refused = ""
        for n in range(2, 52):  # until the signal has been handled: then 503 (or port closed)
            late = mention(f"too late {n}", f"9310.{n:04d}")
            try:
                async with session.post(
                    url, data=late.encode(), headers=signed_headers(late)
                ) as resp:
                    if resp.status == 503:
                        refused = f"too late {n}"
                        break
            except aiohttp.ClientConnectionError:
                refused = f"too late {n}"
                break
        assert refused
        _, rest = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 143, rest.decode()
        texts = [str(m.get("text")) for m in fake.messages.values()]
    assert any('You just said: "take your time"' in t for t in texts), texts
    assert not any(f'"{refused}"' in t for t in texts)  # refused: never answered here
