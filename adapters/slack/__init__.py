"""The Slack adapter: slack-bolt's ``AsyncApp`` inside (see :mod:`adapters.slack.app`)."""

from __future__ import annotations

from adapters.slack.app import RequestGuard, SlackAdapter, SlackServe
from adapters.slack.convert import SlackIdentity, SlackOptions

__all__ = ["RequestGuard", "SlackAdapter", "SlackIdentity", "SlackOptions", "SlackServe"]
