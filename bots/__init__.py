"""Composition roots: the only layer that reads the environment and configuration files.

``settings`` turns environment variables and ``hybot.toml`` into a validated
:class:`~bots.settings.Settings` (and from it the core's ``BotConfig``); ``wiring``
builds the object graph; ``cli`` is the ``hybot`` command.
"""

from bots.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "__version__", "load_settings"]

__version__ = "0.1.0"
"""The hybot distribution's version (pyproject.toml's; a test keeps the two equal)."""
