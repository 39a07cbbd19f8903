"""Platform adapters: they translate platform traffic to and from the core, and decide nothing.

Imports flow one way: ``bots`` → ``adapters`` → ``core``. Platform
libraries (python-telegram-bot, slack-bolt) are imported only inside their own adapter
packages, never here, so importing this package stays cheap.
"""

from adapters.base import AdapterLimits, BaseAdapter, ConversationHandler, MessageRef

__all__ = ["AdapterLimits", "BaseAdapter", "ConversationHandler", "MessageRef"]
