"""The console adapter (terminal chat), used by ``hybot demo``."""

from adapters.console.adapter import ConsoleAdapter
from adapters.console.render import ScriptLine, extension_for, parse_script_line

__all__ = ["ConsoleAdapter", "ScriptLine", "extension_for", "parse_script_line"]
