"""Composition roots: the only layer that reads the environment and configuration files.

``settings`` turns environment variables and ``hybot.toml`` into a validated
:class:`~hybot.bots.settings.Settings` (and from it the core's ``BotConfig``); ``wiring``
builds the object graph; ``cli`` is the ``hybot`` command.
"""

from hybot.bots.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
