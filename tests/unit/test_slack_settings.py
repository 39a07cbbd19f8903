"""bots.slack: the Slack run settings are checked, naming every variable and no secret."""

from __future__ import annotations

from pathlib import Path

from bots.settings import Settings
from bots.slack import SlackRun, run_from_settings, slack_problems
from core.config import Secret


def test_slack_settings_problems_name_every_variable() -> None:
    assert slack_problems(SlackRun(bot_token=Secret("xoxb-1"), signing_secret=Secret("s"))) == []
    problems = slack_problems(SlackRun(mode="socket", command="hy", port=70000))
    text = "\n".join(problems)
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "HYBOT_SLACK_COMMAND", "HYBOT_SLACK_PORT"):
        assert name in text
    wrong = slack_problems(
        SlackRun(bot_token=Secret("xoxp-user"), app_token=Secret("xoxb-not-app"))
    )
    assert any("xoxb-" in p for p in wrong) and any("xapp-" in p for p in wrong)
    assert all("xoxp-user" not in p and "xoxb-not-app" not in p for p in wrong)
    http = slack_problems(SlackRun(bot_token=Secret("xoxb-1"), mode="http"))
    assert http == ["SLACK_SIGNING_SECRET is not set (required in HTTP mode)"]


def test_run_from_settings_carries_every_slack_setting() -> None:
    settings = Settings.from_flat(
        slack_bot_token="xoxb-1",
        slack_mode="socket",
        slack_port=4000,
        slack_command="/ai",
        slack_thread_follow_ups=False,
    )
    run = run_from_settings(settings)
    assert run.bot_token.reveal() == "xoxb-1"
    assert (run.effective_mode, run.port, run.command) == ("socket", 4000, "/ai")
    assert run.thread_follow_ups is False


def test_manifest_matches_what_the_adapter_handles() -> None:
    text = (Path(__file__).resolve().parents[2] / "deploy" / "slack" / "manifest.yaml").read_text()
    lines = {line.split("#", 1)[0].strip() for line in text.splitlines()}
    assert f"- command: {SlackRun().command}" in lines
    for event in ("app_mention", "message.channels", "message.groups", "message.im",
                  "assistant_thread_started"):  # fmt: skip
        assert f"- {event}" in lines, event
    # one scope per Web API method family the adapter calls
    scopes = ("chat:write", "chat:write.public", "commands", "files:write",
              "assistant:write", "app_mentions:read", "im:history", "channels:history",
              # conversations.replies (thread follow-ups after a restart) in every kind of chat
              "groups:history", "mpim:history")  # fmt: skip
    for scope in scopes:
        assert f"- {scope}" in lines, scope
    assert "is_enabled: true" in lines  # interactivity (buttons)
    assert "socket_mode_enabled: false" in lines
    assert text.count("https://YOUR-HOST/slack/events") == 3  # events, interactivity, command
