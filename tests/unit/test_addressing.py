"""Platform facts stay out of the core: /cmd@name is ignored, admin targets are resolved ids."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.conversation import fake_core

from core.config import AccessConfig, BotConfig
from core.directory import Resolution, UserDirectory
from core.store import SQLiteStore
from core.types import Notice

NOW = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
ADMIN = BotConfig(access=AccessConfig(admins=("telegram:boss", "slack:boss")))


def text_of(events: list) -> str:
    return "\n".join(e.text for e in events if isinstance(e, Notice))


@pytest.mark.parametrize("text", ["/help@otherbot", "/help@mybot", "/frobnicate@otherbot x"])
async def test_a_command_addressed_by_name_is_ignored(tmp_path: Path, text: str) -> None:
    async with fake_core(tmp_path) as c:
        assert await c.send(text) == []
        assert await c.send(text, is_dm=False, mentioned=True) == []
        assert c.model.chat_calls == []


@pytest.mark.parametrize("who", ["@nobody", "nobody", "<@U123|bob>", "@", "telegram"])
async def test_admin_naming_an_unknown_user_says_so_and_changes_nothing(
    tmp_path: Path, who: str
) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        for command in (f"/admin grant {who} tokens 5", f"/admin deny {who}"):
            events = await c.send(command, user="boss")
            assert "don't know the user" in text_of(events), events
        assert await c.store.ledger() == []
        assert await c.store.get_user("telegram:nobody") is None


async def test_admin_names_a_user_by_resolved_id_mention_or_seen_name(tmp_path: Path) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        await c.send("hello", user="42", user_name="Alice")
        assert "Done" in text_of(await c.send("/admin deny @alice", user="boss"))
        record = await c.store.get_user("telegram:42")
        assert record is not None and record.access == "deny"
        mention = await c.send("/admin allow slack:U9", user="boss", mentions=("slack:U9",))
        assert "Done" in text_of(mention)
        assert (await c.store.get_user("slack:U9")).access == "allow"  # type: ignore[union-attr]
        # A name seen on another platform is not this platform's user.
        assert "don't know" in text_of(await c.send("/admin deny alice", user="boss",
                                                     platform="slack"))  # fmt: skip


async def test_the_directory_is_bounded_and_case_insensitive(tmp_path: Path) -> None:
    # The process remembers at most ``max_names`` names it recorded; the store keeps them all,
    # so a name evicted from the process still resolves.
    async with SQLiteStore(path=tmp_path / "names.db") as store:
        names = UserDirectory(store=store, max_names=2)
        await names.saw("telegram:1", "Ann", now=NOW)
        await names.saw("telegram:2", "bob", now=NOW)
        await names.saw("telegram:3", "cy", now=NOW)
        assert (await names.resolve("@ANN", platform="telegram")).user_id == "telegram:1"
        assert (await names.resolve("BOB", platform="telegram")).user_id == "telegram:2"
        assert (await names.resolve("telegram:777", platform="slack")).user_id == "telegram:777"
        assert await names.resolve("", platform="telegram") == Resolution(None)
        assert await names.resolve("ann", platform="slack") == Resolution(None)


async def test_the_directory_writes_a_name_once_per_process_and_again_when_it_changes(
    tmp_path: Path,
) -> None:
    class CountingStore(SQLiteStore):
        writes = 0

        async def record_user_name(self, user_id: str, name: str, *, now: datetime) -> None:
            CountingStore.writes += 1
            await super().record_user_name(user_id, name, now=now)

    async with CountingStore(path=tmp_path / "names.db") as store:
        names = UserDirectory(store=store)
        for _ in range(3):
            await names.saw("telegram:1", "Ann", now=NOW)
        await names.saw("telegram:1", "", now=NOW)  # no name: nothing recorded
        await names.saw("telegram:2", "x" * 257, now=NOW)  # not a display name: not recorded
        assert CountingStore.writes == 1
        assert (await names.resolve("x" * 257, platform="telegram")).user_id is None
        await names.saw("telegram:1", "Anna", now=NOW)
        assert CountingStore.writes == 2
        assert (await names.resolve("anna", platform="telegram")).user_id == "telegram:1"
        assert (await names.resolve("ann", platform="telegram")).user_id is None


async def test_a_name_seen_before_a_restart_still_names_the_user(tmp_path: Path) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        await c.send("hello", user="42", user_name="Alice")
    # A new process over the same database: Alice has not spoken since.
    async with fake_core(tmp_path, config=ADMIN) as c:
        assert "Done" in text_of(await c.send("/admin deny @alice", user="boss"))
        record = await c.store.get_user("telegram:42")
        assert record is not None and record.access == "deny"


@pytest.mark.parametrize(
    ("language", "expected"), [("en", "Several users here are called"), ("zh", "多位用户")]
)
async def test_a_name_several_users_share_is_ambiguous_and_changes_nothing(
    tmp_path: Path, language: str, expected: str
) -> None:
    async with fake_core(tmp_path, config=ADMIN) as c:
        await c.send("hello", user="42", user_name="Alex")
        await c.send("hello", user="43", user_name="alex")
        await c.send("hello", user="44", user_name="Alexandra")
        events = await c.send("/admin deny @alex", user="boss", language=language)
        text = text_of(events)
        assert expected in text, events
        assert "telegram:42" in text and "telegram:43" in text and "telegram:44" not in text
        assert await c.store.get_user("telegram:42") is None
        assert await c.store.get_user("telegram:43") is None
        # platform:id picks one of them.
        assert "Done" in text_of(await c.send("/admin deny telegram:43", user="boss"))
        assert (await c.store.get_user("telegram:43")).access == "deny"  # type: ignore[union-attr]
