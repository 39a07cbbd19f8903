"""End to end: the installed `hybot` runs the scripted tour against its in-process emulator,
in a fresh working directory, then `hybot usage report` reads the ledger it wrote."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from PIL import Image

from core.hunyuan.emulator import EmulatorConfig

HYBOT = Path(sys.executable).parent / "hybot"
REPO = Path(__file__).resolve().parents[2]
TOUR = REPO / "examples" / "tour.txt"
FIRST = "Hi! My name is Ada and my favourite tea is oolong."
PERSONA = "You are a cheerful tea sommelier"
RESET_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("HYBOT_", "HUNYUAN_", "TENCENTCLOUD_", "TELEGRAM_", "SLACK_"))
    }
    # Proxies would be a way off the machine; the demo must not need (or use) any.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def hybot(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HYBOT), *args],
        cwd=cwd,
        env=env or clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    assert HYBOT.exists(), f"the hybot console script is not installed at {HYBOT}"
    cwd = tmp_path_factory.mktemp("demo")
    return cwd, hybot("demo", "--script", str(TOUR), cwd=cwd)


def answers(out: str, who: str = "hybot › ") -> list[str]:
    return [line for line in out.splitlines() if line.startswith(who)]


def test_tour_exits_cleanly(tour: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, proc = tour
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "internal error" not in proc.stdout


def test_third_answer_quotes_the_first_message(
    tour: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out = tour[1].stdout
    lines = out.splitlines()
    i = lines.index("me › Remind me: what did I tell you at the very start?")
    third = lines[i + 1]
    assert third.startswith("hybot › Turn 3.")
    assert f'You first said: "{FIRST}"' in third


def test_image_saved_and_readable(tour: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, proc = tour
    files = sorted((cwd / "hybot-images").iterdir())
    assert len(files) == 3  # the tour's own picture, then Bob's and Carol's
    for path in files:
        assert path.suffix in (".png", ".jpg")
        with Image.open(path) as img:
            img.load()
            assert img.width >= 256 and img.height >= 256
        assert path.name in proc.stdout  # the path is printed
    assert "AI-generated image" in proc.stdout


def test_second_image_waits_in_the_queue(
    tour: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    queued = [line for line in tour[1].stdout.splitlines() if "⏳" in line]
    assert queued, "no queue position shown"
    assert any("queued" in line and "position 1" in line for line in queued)
    assert all(line.startswith(("hybot → bob", "hybot → carol")) for line in queued)


def test_persona_reaches_the_model(tour: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    lines = tour[1].stdout.splitlines()
    i = lines.index("me › Which tea should I try next?")
    assert f'System: "{PERSONA}' in lines[i + 1]
    before = lines[: lines.index("me › /persona " + PERSONA + " who answers in one sentence.")]
    assert all('System: "none"' in a for a in answers("\n".join(before)) if "Turn" in a)


def test_quota_refusal_names_the_reset_time(
    tour: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    alice = answers(tour[1].stdout, "hybot → alice › ")
    served = [a for a in alice if "Turn" in a]
    refused = [a for a in alice if a.startswith("hybot → alice › ✖")]
    assert len(served) >= 1, alice  # Alice chats first...
    assert refused, alice  # ...until the limit refuses her
    assert "reset" in refused[0].lower()
    assert RESET_TIME.search(refused[0])


def test_retract_reset_and_help(tour: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out = tour[1].stdout
    assert "[previous answer withdrawn]" in out
    lines = out.splitlines()
    after_reset = lines[lines.index("me › Hello again!") + 1]
    assert after_reset.startswith("hybot › Turn 1.")
    assert 'You first said: "Hello again!"' in after_reset
    assert "/image" in out.split("me › /help", 1)[1]
    assert "/admin limit" in out.split("me › /help", 1)[1]


def test_usage_report_reads_what_the_demo_wrote(
    tour: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cwd, _ = tour
    env = clean_env() | {"HYBOT_DATABASE_URL": "sqlite:///hybot-demo.db"}
    proc = hybot("usage", "report", "--period", "day", "--format", "json", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["user"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"console:me", "console:alice", "console:bob", "console:carol"}
    assert rows["console:bob"]["images"] == 1 and rows["console:carol"]["images"] == 1
    assert rows["console:me"]["images"] == 1
    assert rows["console:alice"]["tokens_out"] > 0
    table = hybot("usage", "report", "--period", "month", "--by", "day", cwd=cwd, env=env)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[0] == "day"
    assert "total" in table.stdout


def test_demo_runs_again_on_the_same_database(
    tour: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cwd, _ = tour
    proc = hybot("demo", cwd=cwd, stdin="Still there?\n")  # stdin is not a TTY: a script
    assert proc.returncode == 0, proc.stderr
    # The conversation continued from the stored history (persistence across restarts).
    assert 'You first said: "Hello again!"' in proc.stdout


def test_debug_logging_never_shows_the_credentials(tmp_path: Path) -> None:
    script = "hello\n/image a kite\nbye [[fault:429]]\n"
    proc = hybot("demo", "--log-level", "DEBUG", cwd=tmp_path, stdin=script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " DEBUG " in proc.stderr  # logging really ran at DEBUG
    defaults = EmulatorConfig()
    for secret in (defaults.api_key, defaults.secret_key):
        assert secret not in proc.stderr
        assert secret not in proc.stdout


# --- the tour is repeatable (issue 7 item 19) ------------------------------------------------

SAVED_IMAGE = re.compile(r"hybot-\d{8}-\d{6}-[0-9a-f]+\.(png|jpg)")


def normalised(out: str) -> str:
    """The transcript without what differs by design: image file names (time and random id)
    and reset times."""
    return RESET_TIME.sub("<time>", SAVED_IMAGE.sub("<image>", out))


def test_the_tour_reads_the_same_when_run_twice(tmp_path: Path) -> None:
    first = hybot("demo", "--script", str(TOUR), cwd=tmp_path)
    second = hybot("demo", "--script", str(TOUR), cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    assert "Turn 3." in second.stdout
    assert normalised(second.stdout) == normalised(first.stdout)
    # ...and --keep continues the stored database instead of starting afresh.
    kept = hybot("demo", "--keep", "--script", "-", cwd=tmp_path, stdin="Still there?\n")
    assert 'You first said: "Hello again!"' in kept.stdout


# --- the demo uses the operator's settings (issue 7 item 17) ---------------------------------


def test_demo_uses_hybot_toml_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "hybot.toml").write_text(
        'persona = "You are a terse lighthouse keeper."\n'
        "[quota]\ntokens_per_day = 300\n"
        # Only the endpoint is overridden: a real key and URL here are never used.
        '[hunyuan]\nbase_url = "https://tokenhub.example.invalid/v1"\napi_key = "sk-unused-xyz"\n',
        encoding="utf-8",
    )
    env = clean_env() | {"HYBOT_LANGUAGE": "zh"}
    proc = hybot("demo", cwd=tmp_path, env=env, stdin="hello\n@alice hi\n@alice again\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'System: "You are a terse lighthouse keeper."' in proc.stdout
    alice = answers(proc.stdout, "hybot → alice › ")
    assert any(a.startswith("hybot → alice › ✖") for a in alice), alice  # 300 tokens a day
    assert re.search(r"[\u4e00-\u9fff]", "\n".join(alice))  # the bot speaks Chinese


# --- SIGTERM drains and refunds like SIGINT (issue 7 item 2) ---------------------------------


def reservation_states(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT state, count(*) FROM reservations GROUP BY state").fetchall()
    finally:
        conn.close()
    return {state: count for state, count in rows}


def model_calls_in_flight(pid: int) -> int:
    """Client connections from the demo process to its own in-process emulator: each is a
    chat request on the wire (the model call, after the reservation), in a fresh process
    with one connection per concurrent request."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    listening = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
    return sum(
        1
        for c in conns
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in listening
    )


async def wait_all_in_flight(proc: asyncio.subprocess.Process, db: Path, count: int) -> None:
    """Poll the child until ``count`` turns have reserved their quota and their model calls
    are on the wire (the demo prints nothing at that moment, so its store and its sockets are
    the observables); fail at once if the child exits."""
    while True:
        if proc.returncode is not None:
            raise AssertionError(f"the demo exited early with status {proc.returncode}")
        reserved = 0
        if db.exists():
            try:
                reserved = reservation_states(db).get("reserved", 0)
            except sqlite3.Error:
                pass  # the file or its schema is still being created
        if reserved >= count and model_calls_in_flight(proc.pid) >= count:
            return
        await asyncio.sleep(0.05)  # a poll interval on a condition, not an ordering


# Generous bounds for a loaded machine: the demo's start-up, then its drain after the signal.
IN_FLIGHT_WITHIN = 120
DRAINED_WITHIN = 120


@pytest.mark.timeout(IN_FLIGHT_WITHIN + DRAINED_WITHIN + 60)
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_drains_and_refunds_every_reservation(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    db = tmp_path / "demo.db"
    slow = 4
    script = "".join(f"& @u{i} a slow question [[fault:latency=300]]\n" for i in range(slow))
    proc = await asyncio.create_subprocess_exec(
        str(HYBOT),
        "demo",
        "--script",
        "-",
        "--db",
        str(db),
        cwd=tmp_path,
        env=clean_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write((script + "!wait\n").encode())
        proc.stdin.close()

        # Every slow turn has reserved its quota and its model call is on the wire (they wait
        # 300 s for the model, so none settles before the signal).
        await asyncio.wait_for(wait_all_in_flight(proc, db, slow), IN_FLIGHT_WITHIN)
        assert reservation_states(db).get("reserved", 0) == slow
        proc.send_signal(signum)
        _, err = await asyncio.wait_for(proc.communicate(), DRAINED_WITHIN)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == status, err.decode()[-2000:]
    assert b"Traceback" not in err
    states = reservation_states(db)
    assert states.get("reserved", 0) == 0, states
    assert states.get("refunded", 0) == slow, states
