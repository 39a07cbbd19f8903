"""The work each command family does, one module each (design §1).

:mod:`core.turns.base` defines what a handler gets (:class:`Turn`, :class:`Services`);
:mod:`core.turns.chat` the chat turn and the buttons under an answer (``ChatTurns``);
:mod:`core.turns.account` the user's own commands; :mod:`core.turns.admin` ``/admin``;
:mod:`core.turns.images` image jobs and ``/cancel``. ``Conversation`` (the pipeline) maps
command names to these handlers and hands chat turns and button presses to ``ChatTurns``.
"""

from core.turns.base import Handler, Services, Turn, failure
from core.turns.images import ImageJobs

__all__ = ["Handler", "ImageJobs", "Services", "Turn", "failure"]
