"""The conversation core end to end: real client → emulator over loopback, real SQLite store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from core_harness import FakeClock, core, inbound

from core.config import (
    AccessConfig,
    BotConfig,
    ImageConfig,
    LimitSet,
    ModelSpec,
    QuotaConfig,
)
from core.hunyuan.emulator import EmulatorConfig
from core.keys import conversation_key
from core.quota import Charge, Reservation
from core.subject import EffectivePolicy, Subject
from core.tokens import estimate_tokens
from core.types import (
    Failure,
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    Retract,
    Typing,
)

USER = "telegram:u1"


def finals(events: list) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def failures(events: list) -> list[Failure]:
    return [e for e in events if isinstance(e, Failure)]


def chat_calls(c) -> int:
    stats = c.emulator.stats
    return stats.requests["/v1/chat/completions"] + stats.requests["native:ChatCompletions"]


def turn_no(text: str) -> int:
    return int(text.split("Turn ", 1)[1].split(".", 1)[0])


async def until(condition) -> None:
    """Wait for a state of the core (polled: store and HTTP work run elsewhere); nothing waits
    for a duration, and the test timeout bounds it."""
    while not condition():
        await asyncio.sleep(0.005)


def notices(events: list) -> str:
    return "\n".join(e.text for e in events if isinstance(e, Notice))


async def token_counter(c, user: str = USER) -> int:
    day = c.clock().astimezone(c.conv.quota.timezone).strftime("%Y-%m-%d")
    name = f"user:{user}|tokens|d:{day}"
    return (await c.store.counters([name]))[name]


async def ledger_tokens(c, user: str = USER) -> int:
    return sum(e.tokens_in + e.tokens_out for e in await c.store.ledger(user_id=user))


async def test_multi_turn_context_streaming_and_settlement(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        first = await c.send("My name is Ada and I like otters")
        assert isinstance(first[0], Typing)
        assert any(isinstance(e, Partial) for e in first)
        await c.send("What is the weather?")
        third = await c.send("What did I tell you first?")
        answer = finals(third)[0]
        assert "My name is Ada" in answer.text  # the emulator quotes the first user turn
        assert "Turn 3" in answer.text
        assert answer.note  # Hunyuan's AI-generated disclaimer is passed on
        partial_text = [e for e in third if isinstance(e, Partial)][-1].text
        assert partial_text == answer.text
        # Charged exactly the real usage, recorded once per call in the ledger.
        assert await token_counter(c) == await ledger_tokens(c) > 0
        rows = await c.store.ledger(user_id=USER)
        assert [r.outcome for r in rows] == ["ok", "ok", "ok"]
        assert sum(r.cost_cny for r in rows) > 0


async def test_duplicate_delivery_runs_once(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        a = await c.send("hello", delivery="same")
        b = await c.send("hello", delivery="same")
        assert finals(a) and b == []
        assert chat_calls(c) == 1
        assert len(await c.store.ledger(user_id=USER)) == 1


async def test_overlapping_messages_in_one_chat_are_serialised(tmp_path: Path) -> None:
    emu = EmulatorConfig(latency=0.2)
    async with core(tmp_path, emulator_config=emu) as c:
        results = await asyncio.gather(*(c.send(f"message {i}") for i in range(4)))
        texts = [finals(r)[0].text for r in results]
        # Each answer saw one more exchange than the previous: never two user turns in a row
        # (the emulator rejects that with 1001, which would have surfaced as a Failure).
        assert sorted(turn_no(t) for t in texts) == [1, 2, 3, 4]
        turns = await c.store.recent_turns(str(inbound("x").key), 0, limit=100)
        assert [t.role for t in turns] == ["user", "assistant"] * 4


async def test_different_conversations_run_in_parallel(tmp_path: Path) -> None:
    emu = EmulatorConfig(latency=0.5)
    async with core(tmp_path, emulator_config=emu) as c:
        results = await asyncio.gather(*(c.send("hi", chat=f"chat{i}") for i in range(5)))
        assert all(finals(r) for r in results)
        # All five calls were in flight at once (the chat governor allows 5); the ordering of
        # parallel and serial turns is pinned by events in tests/unit/test_concurrency.py.
        assert max(c.emulator.stats.max_concurrent_chats.values()) == 5


FAULTS = [
    ("429", "rate_limited"),
    ("500", "upstream"),
    ("busy", "busy"),
    ("moderation", "moderation"),
    ("credit", "out_of_credit"),
    ("badkey", "auth"),
    ("disconnect", None),
    ("stream_error", None),
    ("hang", "timeout"),
]


@pytest.mark.parametrize(("fault", "kind"), FAULTS)
async def test_every_fault_refunds_and_keeps_history_consistent(
    tmp_path: Path, fault: str, kind: str | None
) -> None:
    async with core(tmp_path) as c:
        await c.send("first message")
        before = await token_counter(c)
        events = await c.send(f"please fail [[fault:{fault}]]")
        fails = failures(events)
        assert len(fails) == 1, events
        assert fails[0].user_message and "[[" not in fails[0].user_message
        if kind:
            assert fails[0].code == kind
        assert not finals(events)
        # Refunded: the counter is back where it was and the ledger says so.
        assert await token_counter(c) == before
        assert await token_counter(c) == await ledger_tokens(c)
        last = (await c.store.ledger(user_id=USER))[-1]
        assert last.outcome.startswith("failed:") and last.tokens_in == last.tokens_out == 0
        # History unchanged: only the first exchange is stored; the next turn still works.
        key = str(inbound("x").key)
        assert len(await c.store.recent_turns(key, 0, limit=10)) == 2
        nxt = await c.send("are you back?")
        assert "Turn 2" in finals(nxt)[0].text


async def test_sensitive_finish_retracts_and_refunds(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        events = await c.send("tell me [[fault:sensitive]]")
        assert any(isinstance(e, Partial) for e in events)
        assert isinstance(events[-1], Retract)
        assert await token_counter(c) == 0
        assert (await c.store.ledger(user_id=USER))[-1].outcome == "failed:moderation"
        assert await c.store.recent_turns(str(inbound("x").key), 0, limit=10) == []


async def test_quota_refusal_names_limit_remaining_and_reset(tmp_path: Path) -> None:
    cfg = BotConfig(quota=QuotaConfig(defaults=LimitSet(tokens_per_day=200)))
    async with core(tmp_path, config=cfg) as c:
        events = await c.send("hi")
        fail = failures(events)[0]
        assert fail.code == "quota"
        assert "daily tokens" in fail.user_message
        assert "200" in fail.user_message  # nothing used yet, so all of it remains
        assert "2026-11-29" in fail.user_message  # next Shanghai midnight
        assert chat_calls(c) == 0
        assert await token_counter(c) == 0


async def test_quota_is_spent_then_refused_and_admin_exempt(tmp_path: Path) -> None:
    spec = ModelSpec("hy3-preview", 8000, 6000, 100)
    cfg = BotConfig(
        models=(spec,),
        quota=QuotaConfig(defaults=LimitSet(tokens_per_day=400)),
        access=AccessConfig(admins=("telegram:boss",)),
    )
    async with core(tmp_path, config=cfg) as c:
        outcomes = []
        for i in range(10):
            ev = await c.send(f"hello number {i}")
            outcomes.append("ok" if finals(ev) else failures(ev)[0].code)
        assert "ok" in outcomes and outcomes[-1] == "quota"
        assert await token_counter(c) <= 400
        assert await token_counter(c) == await ledger_tokens(c)
        boss = await c.send("I am exempt", user="boss", chat="c2")
        assert finals(boss)


async def test_input_too_long_is_refused_before_any_charge(tmp_path: Path) -> None:
    cfg = BotConfig(models=(ModelSpec("hy3-preview", 300, 200, 50),))
    async with core(tmp_path, config=cfg) as c:
        events = await c.send("word " * 400)
        assert failures(events)[0].code == "input_too_long"
        assert chat_calls(c) == 0
        assert await c.store.ledger(user_id=USER) == []


async def test_context_is_trimmed_to_the_window(tmp_path: Path) -> None:
    cfg = BotConfig(models=(ModelSpec("hy3-preview", 600, 500, 100),))
    async with core(tmp_path, config=cfg) as c:
        for i in range(15):
            ev = await c.send(f"turn {i} " + "blah " * 30)
            assert finals(ev), ev
        text = finals(ev)[0].text
        assert "turn 0 " not in text  # the first turn fell out of the window


async def test_persona_reset_forget_and_idle_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = BotConfig(idle_reset_minutes=30)
    async with core(tmp_path, config=cfg, clock=clock) as c:
        assert notices(await c.send("/persona"))
        await c.send("/persona You are a pirate")
        ev = await c.send("ahoy")
        assert "You are a pirate" in finals(ev)[0].text
        await c.send("/persona clear")
        assert "pirate" not in finals(await c.send("hello"))[0].text
        await c.send("/reset")
        assert "Turn 1" in finals(await c.send("fresh start"))[0].text
        clock.advance(minutes=31)
        ev = await c.send("after a break")
        assert notices(ev)  # told that a new context began
        assert "Turn 1" in finals(ev)[0].text
        key = str(inbound("x").key)
        forgot = await c.send("/forget")
        assert notices(forgot)
        state = await c.store.get_conversation(key)
        assert await c.store.recent_turns(key, state.epoch, limit=100) == []


async def test_usage_and_quota_commands(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        await c.send("hello there")
        usage = notices(await c.send("/usage"))
        quota = notices(await c.send("/quota"))
        rows = await c.store.ledger(user_id=USER)
        assert str(rows[0].tokens_in) in usage
        assert "daily tokens" in quota and "200000" in quota


async def test_chinese_user_gets_chinese_messages(tmp_path: Path) -> None:
    cfg = BotConfig(quota=QuotaConfig(defaults=LimitSet(tokens_per_day=0)))
    async with core(tmp_path, config=cfg) as c:
        zh = failures(await c.send("你好", language="zh-hans"))[0].user_message
        en = failures(await c.send("hello", user="u2", language="en"))[0].user_message
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh)
        assert not any("\u4e00" <= ch <= "\u9fff" for ch in en)
        await c.send("/lang zh", user="u2", language="en")
        again = failures(await c.send("hello", user="u2", language="en"))[0].user_message
        assert any("\u4e00" <= ch <= "\u9fff" for ch in again)


async def test_access_control_allowlist_deny_and_admin(tmp_path: Path) -> None:
    cfg = BotConfig(access=AccessConfig(mode="allowlist", admins=("telegram:boss",)))
    async with core(tmp_path, config=cfg) as c:
        assert failures(await c.send("hi")) == [] and notices(await c.send("hi"))
        assert chat_calls(c) == 0
        denied = await c.send("/admin allow telegram:u1", user="u1")
        assert "admin" in notices(denied).lower()
        await c.send("/admin allow telegram:u1", user="boss")
        assert finals(await c.send("now I may"))
        await c.send("/admin deny telegram:u1", user="boss")
        assert not finals(await c.send("and now?"))


async def test_group_mention_only_and_channel_policy(tmp_path: Path) -> None:
    cfg = BotConfig(access=AccessConfig(admins=("telegram:boss",)))
    async with core(tmp_path, config=cfg) as c:
        group = {"chat": "-100", "is_dm": False}
        assert await c.send("chatter among humans", **group) == []
        assert finals(await c.send("hey bot", mentioned=True, **group))
        await c.send("/admin channel mention_only off", user="boss", **group)
        assert finals(await c.send("no mention needed now", **group))
        await c.send("/admin channel images off", user="boss", **group)
        ev = await c.send("/image a cat", **group)
        assert notices(ev) and not any(isinstance(e, ImageReady) for e in ev)
        await c.send("/admin channel enabled off", user="boss", **group)
        assert not finals(await c.send("hello?", mentioned=True, **group))
        # The policy persisted in the store.
        policy = await c.store.get_channel_policy("telegram:-100")
        assert policy is not None and policy.enabled is False


async def test_image_job_success_charges_one_image(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        events = await c.send("/image --size 768x768 a red lantern")
        ready = [e for e in events if isinstance(e, ImageReady)]
        assert len(ready) == 1 and ready[0].data[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
        assert any(isinstance(e, ImageRunning) for e in events)
        assert "AI" in ready[0].caption or "AI" in ready[0].caption.upper()
        rows = await c.store.ledger(user_id=USER)
        assert [(r.images, r.outcome) for r in rows] == [(1, "ok")]
        jobs = await c.store.image_jobs(user_id=USER)
        assert [j.status for j in jobs] == ["done"]


async def test_image_failure_is_not_charged(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        events = await c.send("/image a thing [[fault:imagefail]]")
        assert failures(events)
        rows = await c.store.ledger(user_id=USER)
        assert [(r.images, r.outcome.startswith("failed")) for r in rows] == [(0, True)]


async def test_second_image_waits_in_queue_and_can_be_cancelled(tmp_path: Path) -> None:
    emu = EmulatorConfig(latency=0.4)
    async with core(tmp_path, emulator_config=emu) as c:
        gov = c.conv.image_governor
        first = asyncio.create_task(c.send("/image first picture", user="a", chat="a"))
        await until(lambda: gov.running == 1)
        second = asyncio.create_task(c.send("/image second picture", user="b", chat="b"))
        await until(lambda: gov.waiting == 1)
        third = asyncio.create_task(c.send("/image third picture", user="c", chat="c"))
        await until(lambda: gov.waiting == 2)
        cancel = await c.send("/cancel", user="c", chat="c")
        assert notices(cancel)
        ev1, ev2, ev3 = await asyncio.gather(first, second, third)
        assert any(isinstance(e, ImageReady) for e in ev1)
        queued = [e for e in ev2 if isinstance(e, ImageQueued)]
        assert queued and queued[0].position == 1
        assert any(isinstance(e, ImageReady) for e in ev2)
        assert not any(isinstance(e, ImageReady) for e in ev3)
        assert max(c.emulator.stats.max_image_runs.values()) == 1
        outcomes = {r.user_id: r.outcome for r in await c.store.ledger()}
        assert outcomes == {"telegram:a": "ok", "telegram:b": "ok", "telegram:c": "cancelled"}


async def test_image_deadline_refunds(tmp_path: Path) -> None:
    cfg = BotConfig(images=ImageConfig(deadline_seconds=0.5))
    async with core(tmp_path, config=cfg) as c:
        events = await c.send("/image slow [[fault:hang]]")
        assert failures(events)[0].code == "timeout"
        assert (await c.store.ledger(user_id=USER))[0].outcome == "failed:timeout"


async def test_free_image_pack_is_consumed_first(tmp_path: Path) -> None:
    cfg = BotConfig(
        quota=QuotaConfig(free_images=1, org=LimitSet(images_per_month=1)),
    )
    async with core(tmp_path, config=cfg) as c:
        for _ in range(2):
            assert any(isinstance(e, ImageReady) for e in await c.send("/image x"))
        refused = await c.send("/image y")
        assert failures(refused)[0].code == "quota"
        rows = await c.store.ledger(user_id=USER)
        assert [r.cost_cny for r in rows if r.outcome == "ok"] == [0.0, cfg.quota.image_price_cny]


async def test_sweeper_releases_a_crashed_reservation(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        subject = Subject(
            user_id=USER,
            record=None,
            is_admin=False,
            lang="en",
            platform="telegram",
            conversation="c1",
            channel="telegram:c1",
            is_dm=True,
            policy=EffectivePolicy(True, False, True, "hy3-preview", ""),
        )
        res = await c.conv.quota.reserve_chat(
            subject,
            reservation_id="crash:1",
            model=c.conv.model_spec(),
            tokens=1000,
            now=c.clock(),
        )
        assert isinstance(res, Reservation)
        assert await token_counter(c) == 1000
        c.clock.advance(hours=1)
        assert await c.conv.sweep() == 1
        assert await token_counter(c) == 0
        assert not await c.conv.quota.settle(res, Charge(tokens_in=1, tokens_out=1))


async def test_native_api_path_works_end_to_end(tmp_path: Path) -> None:
    async with core(
        tmp_path,
        tweak_hunyuan=lambda h: replace(h, api="native", model="hunyuan-lite", image_api="native"),
    ) as c:
        ev = await c.send("hello native")
        assert finals(ev) and "hello native" in finals(ev)[0].text
        img = await c.send("/image a native picture")
        assert any(isinstance(e, ImageReady) for e in img)
        assert estimate_tokens("hello native") > 0


async def test_unknown_command_and_bad_args_get_usage(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        assert "/help" in notices(await c.send("/frobnicate"))
        assert "/image" in notices(await c.send("/image"))
        assert notices(await c.send("/help"))
        assert "hy3-preview" in notices(await c.send("/about"))


async def test_nearly_spent_quota_shrinks_the_answer_budget_instead_of_refusing(
    tmp_path: Path,
) -> None:
    LIMIT = 4150  # room for one full 4,096-token answer budget, not for two
    cfg = BotConfig(quota=QuotaConfig(defaults=LimitSet(tokens_per_day=LIMIT)))
    async with core(tmp_path, config=cfg) as c:

        def sent_max_tokens() -> int:
            return c.emulator.stats.last_bodies["/v1/chat/completions"]["max_tokens"]

        assert finals(await c.send("first"))
        assert sent_max_tokens() == 4096
        used = await token_counter(c)
        assert finals(await c.send("second"))
        assert 256 <= sent_max_tokens() < 4096
        assert used + estimate_tokens("second") + sent_max_tokens() <= LIMIT
        # Keep chatting: answers get shorter budgets until not even 256 tokens fit.
        outcomes = []
        for i in range(60):
            ev = await c.send(f"more {i} " + "words " * 40)
            outcomes.append("ok" if finals(ev) else failures(ev)[0].code)
            if outcomes[-1] != "ok":
                break
        assert outcomes[-1] == "quota"
        assert await token_counter(c) <= LIMIT
        assert await token_counter(c) == await ledger_tokens(c)


async def test_group_scopes_through_the_core(tmp_path: Path) -> None:
    async with core(tmp_path) as c:

        async def say(text: str, user: str, kind: str, thread: str = "", scope: str = "shared"):
            k = conversation_key(platform="telegram", workspace="bot", chat="-5", kind=kind,
                                 user=user, thread=thread, group_scope=scope)  # fmt: skip
            msg = Inbound("telegram", f"{text}-{user}-{kind}-{thread}-{scope}", k, user, text,
                          channel_id="-5", mentioned=True)  # fmt: skip
            return finals([e async for e in c.conv.handle(msg)])[0].text

        assert turn_no(await say("a", "1", "group")) == 1
        assert turn_no(await say("b", "2", "group")) == 2  # shared group context
        assert turn_no(await say("c", "1", "group", scope="user")) == 1  # per-user context
        assert turn_no(await say("d", "1", "topic", thread="9")) == 1  # a topic is separate
        assert turn_no(await say("e", "2", "topic", thread="9")) == 2


@pytest.mark.parametrize("size", ["2048x2048", "300x300", "1024x1025x3"])
async def test_unsupported_image_size_is_refused_before_any_charge(
    tmp_path: Path, size: str
) -> None:
    async with core(tmp_path) as c:
        events = await c.send(f"/image --size {size} a cat")
        text = notices(events)
        if "Usage" in text:  # the parser already refused a malformed size
            assert "/image" in text
        else:
            assert "1024x1024" in text and "hy-image-v3" in text
        assert await c.store.ledger() == []
        assert c.emulator.stats.images_generated == 0


async def test_native_image_backend_lists_its_fixed_sizes(tmp_path: Path) -> None:
    async with core(tmp_path, tweak_hunyuan=lambda h: replace(h, image_api="native")) as c:
        text = notices(await c.send("/image --size 1024x1280 a cat"))
        assert "768x1280" in text and "1280x720" in text
        assert any(isinstance(e, ImageReady) for e in await c.send("/image --size 1280x720 x"))


async def test_admin_top_up_is_not_counted_as_a_call(tmp_path: Path) -> None:
    cfg = BotConfig(
        quota=QuotaConfig(defaults=LimitSet(images_per_day=1)),
        access=AccessConfig(admins=("telegram:boss",)),
    )
    async with core(tmp_path, config=cfg) as c:
        assert any(isinstance(e, ImageReady) for e in await c.send("/image one"))
        assert failures(await c.send("/image two"))[0].code == "quota"
        await c.send("/admin grant telegram:u1 images 1", user="boss")
        assert any(isinstance(e, ImageReady) for e in await c.send("/image three"))
        report = notices(await c.send("/admin report", user="boss"))
        line = next(ln for ln in report.splitlines() if ln.startswith(USER))
        # Two images were made; the refusal reserved nothing and the grant is not a call.
        assert line.startswith(f"{USER}: 2 calls")
        rows = await c.store.ledger(user_id=USER)
        assert [r.outcome.split(":")[0] for r in rows] == ["ok", "grant", "ok"]


HOSTILE = {
    "lone surrogate": "hi \ud800 there",
    "NUL": "a\x00b",
    "RTL and zero-width": "\u202eabc\u200b\u2060 👩\u200d👩\u200d👧 𠀀",
    "combining marks": "e" + "\u0301" * 500,
    "slash alone": "/",
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_unicode_is_answered_and_stored(tmp_path: Path, name: str) -> None:
    text = HOSTILE[name]
    async with core(tmp_path) as c:
        events = await c.send(text)
        assert finals(events), events
        turns = await c.store.recent_turns(str(inbound("x").key), 0, limit=10)
        stored = turns[0].content
        if "\ud800" in text:
            assert stored == text.replace("\ud800", "\ufffd")  # lone surrogate → U+FFFD
        else:
            assert stored == text  # everything else is kept byte-exact
        assert finals(await c.send("still fine?"))


async def test_lone_surrogates_in_commands_and_ids_do_not_crash(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        assert notices(await c.send("/persona be \udfff nice"))
        assert any(isinstance(e, ImageReady) for e in await c.send("/image a \ud83d cat"))
        assert finals(await c.send("hello", user="u\udc00", chat="c\ud801"))


async def test_a_huge_message_is_refused_before_any_charge(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        events = await c.send("x" * 1_000_000)
        assert failures(events)[0].code == "input_too_long"
        assert chat_calls(c) == 0 and await c.store.ledger() == []


async def test_finished_deliveries_stay_duplicates_after_the_lease(tmp_path: Path) -> None:
    clock = FakeClock()
    async with core(tmp_path, clock=clock) as c:
        assert finals(await c.send("answered", delivery="a"))
        assert failures(await c.send("failed [[fault:500]]", delivery="b"))
        assert notices(await c.send("/quota", delivery="c"))
        calls = chat_calls(c)
        clock.advance(minutes=20)  # past the 15-minute lease
        for delivery, text in (("a", "answered"), ("b", "failed [[fault:500]]"), ("c", "/quota")):
            assert await c.send(text, delivery=delivery) == []
        assert chat_calls(c) == calls  # no re-delivery reached the model


async def test_an_answer_cut_by_max_tokens_says_so_end_to_end(tmp_path: Path) -> None:
    cfg = BotConfig(models=(ModelSpec("hy3-preview", 8000, 6000, 5),))
    async with core(tmp_path, config=cfg) as c:
        answer = finals(await c.send("Tell me a long story about otters and rivers"))[0]
        assert "cut short" in answer.text and "5 tokens" in answer.text


async def test_a_withdrawn_answer_is_ledgered_as_billed_end_to_end(tmp_path: Path) -> None:
    async with core(tmp_path) as c:
        assert isinstance((await c.send("tell me [[fault:sensitive]]"))[-1], Retract)
        [row] = await c.store.ledger(user_id=USER)
        assert row.outcome == "failed:moderation"
        assert row.tokens_in > 0 and row.tokens_out > 0 and row.cost_cny > 0
        assert await token_counter(c) == 0
