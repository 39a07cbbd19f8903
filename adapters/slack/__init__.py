"""The Slack adapter: slack-bolt's ``AsyncApp`` inside (see :mod:`adapters.slack.app`)."""

from __future__ import annotations

__all__: list[str] = []
