"""Platform facts stay out of the core: /cmd@name is ignored, admin targets are resolved ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.conversation import fake_core

from core.config import AccessConfig, BotConfig
from core.directory import UserDirectory
from core.types import Notice

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


def test_the_directory_is_bounded_and_case_insensitive() -> None:
    names = UserDirectory(max_names=2)
    names.saw("telegram", "Ann", "telegram:1")
    names.saw("telegram", "bob", "telegram:2")
    names.saw("telegram", "cy", "telegram:3")
    assert names.resolve("@ANN", platform="telegram") is None  # evicted, oldest first
    assert names.resolve("BOB", platform="telegram") == "telegram:2"
    assert names.resolve("telegram:777", platform="slack") == "telegram:777"
    assert names.resolve("", platform="telegram") is None
