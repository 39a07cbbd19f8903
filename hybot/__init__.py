"""hybot: a self-hosted Slack and Telegram chat-bot framework for Tencent Hunyuan.

Layers (imports flow one way): ``hybot.bots`` → ``hybot.adapters`` → ``hybot.core``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
