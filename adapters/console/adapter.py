"""The console adapter: a terminal chat with the core, used by ``hybot demo``.

Who calls: the composition root (``bots``) builds a :class:`ConsoleAdapter` around a
``Conversation`` and feeds it lines, either a script (:meth:`ConsoleAdapter.run_script`) or a
live terminal (:meth:`ConsoleAdapter.run_interactive`). The script language is described in
:mod:`adapters.console.render`.

Every line becomes one :class:`~core.types.Inbound` with a fresh delivery id (uuid4),
``platform="console"``, key ``ConversationKey("console", workspace, <user>)`` and
``is_dm=True``; the user id is the bare name (the core qualifies it as ``console:<name>``).

Rendering (one line per event, so a transcript reads well; several answers may be in flight at
once, so a streamed line that another answer interrupts continues later on a line of its own,
marked with "…"):

- ``Typing``: nothing; ``Partial``: the new text, as it arrives; ``Final``: the rest of the
  text and the end of the line, then the note as a dim ``ⓘ ...`` line;
- ``Retract``: a line saying the previous answer was withdrawn, with the notice;
- ``Notice``: the text (``(private)`` marks notices only the sender would see);
- ``ImageQueued`` / ``ImageRunning``: ``⏳`` with the queue position / ``🎨``;
- ``ImageReady``: the bytes are saved under ``image_dir`` with a unique name and the extension
  of their MIME type; the path and the caption are printed;
- ``Failure``: ``✖`` and the message.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from adapters.base import BaseAdapter, ConversationHandler
from adapters.console.render import dim, extension_for, parse_script_line
from core.i18n import t
from core.types import (
    ConversationKey,
    Failure,
    Final,
    ImageQueued,
    ImageReady,
    ImageRunning,
    Inbound,
    Notice,
    Partial,
    ReplyEvent,
    Retract,
    Typing,
)

__all__ = ["ConsoleAdapter"]

log = logging.getLogger(__name__)


class _Screen:
    """Serialises output to one text stream; tracks which answer owns the open line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._owner: object | None = None

    def line(self, text: str) -> None:
        """Write a whole line, first ending any line another answer left open."""
        self._break()
        self._out.write(text + "\n")
        self._out.flush()

    def stream(self, owner: object, prefix: str, text: str) -> None:
        """Append ``text`` to ``owner``'s open line, opening it with ``prefix`` if needed."""
        if self._owner is not owner:
            self._break()
            self._out.write(prefix)
            self._owner = owner
        self._out.write(text)
        self._out.flush()

    def owns(self, owner: object) -> bool:
        return self._owner is owner

    def end(self, owner: object) -> None:
        """End ``owner``'s open line, if it has one."""
        if self._owner is owner:
            self._out.write("\n")
            self._out.flush()
            self._owner = None

    def prompt(self, text: str) -> None:
        self._break()
        self._out.write(text)
        self._out.flush()

    def _break(self) -> None:
        if self._owner is not None:
            self._out.write("\n")
            self._owner = None


class _Answer:
    """Per-message rendering state (how much of the answer text is already on screen)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.indent = " " * len(label)
        self.shown = ""

    def block(self, text: str) -> str:
        """``text`` with its continuation lines indented under the label (blank lines stay
        empty, so a transcript carries no trailing spaces)."""
        first, *rest = text.split("\n")
        return "\n".join([first, *(self.indent + line if line else "" for line in rest)])

    def flow(self, text: str) -> str:
        """Like :meth:`block`, for streamed pieces (a piece may end a line the next continues)."""
        return text.replace("\n", "\n" + self.indent)


class ConsoleAdapter(BaseAdapter):
    """Terminal front end of the core (see the module docstring for what is shown).

    ``user_id`` is the console's own user (``"me"``: the demo makes ``console:me`` an admin),
    ``language`` the language hint passed to the core and used for the adapter's own few
    words; ``color`` enables the dim style (default: when ``out`` is a terminal).
    """

    def __init__(
        self,
        *,
        conversation: ConversationHandler,
        out: TextIO,
        image_dir: Path,
        user_id: str = "me",
        language: str = "",
        color: bool | None = None,
        workspace: str = "local",
    ) -> None:
        super().__init__(conversation=conversation)
        self._screen = _Screen(out)
        self._image_dir = image_dir
        self._user_id = user_id
        self._language = language
        self._lang = language or "en"
        self._workspace = workspace
        if color is None:
            isatty = getattr(out, "isatty", None)
            color = bool(isatty()) if callable(isatty) else False
        self._color = color
        self._background: set[asyncio.Task[None]] = set()
        self._errors = 0
        self._saved: list[Path] = []

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._image_dir.mkdir, parents=True, exist_ok=True)

    async def stop(self) -> None:
        """Wait for background messages to finish (they are answered, not dropped)."""
        await self.wait()

    # --- state for callers ----------------------------------------------------------------

    @property
    def errors(self) -> int:
        """How many messages failed with an unexpected (non-user-facing) error."""
        return self._errors

    @property
    def saved_images(self) -> tuple[Path, ...]:
        """Paths of every image saved so far, in order."""
        return tuple(self._saved)

    # --- sending ------------------------------------------------------------------------

    def make_inbound(self, text: str, *, user: str = "") -> Inbound:
        """The :class:`Inbound` for ``text`` typed by ``user`` (default: the console user)."""
        who = user or self._user_id
        return Inbound(
            platform="console",
            delivery_id=str(uuid.uuid4()),
            key=ConversationKey("console", self._workspace, who),
            user_id=who,
            text=text,
            user_name=who,
            is_dm=True,
            language=self._language,
            received_at=datetime.now(UTC),
        )

    async def send(self, text: str, *, user: str = "", echo: bool = True) -> None:
        """Send one message and render the whole answer before returning."""
        inbound = self.make_inbound(text, user=user)
        if echo:
            self._screen.line(f"{inbound.user_id} › {text}")
        await self._dispatch_safely(inbound)

    def send_background(self, text: str, *, user: str = "", echo: bool = True) -> None:
        """Start sending one message; :meth:`wait` (or :meth:`stop`) waits for its answer."""
        inbound = self.make_inbound(text, user=user)
        if echo:
            self._screen.line(
                f"{inbound.user_id} › {text}" + dim("  (in the background)", color=self._color)
            )
        task = asyncio.create_task(self._dispatch_safely(inbound), name="hybot-console-bg")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait(self) -> None:
        """Wait until every background message has been answered."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def run_line(self, line: str, *, echo: bool = True) -> bool:
        """Act on one script line; ``False`` when it asks to quit (``!quit``)."""
        parsed = parse_script_line(line)
        if parsed is None:
            return True
        if parsed.quit:
            return False
        if parsed.wait:
            await self.wait()
            return True
        if parsed.background:
            self.send_background(parsed.text, user=parsed.user, echo=echo)
        else:
            await self.send(parsed.text, user=parsed.user, echo=echo)
        return True

    async def run_script(self, lines: Iterable[str]) -> None:
        """Run every line in order, then wait for the background messages."""
        for line in lines:
            if not await self.run_line(line):
                break
        await self.wait()

    async def run_interactive(self, lines: AsyncIterator[str]) -> None:
        """Prompt, read lines from ``lines`` until it ends or ``!quit``; the terminal already
        shows what was typed, so input is not echoed."""
        self._screen.line(
            dim(
                "hybot demo. Type a message or /help; '@name text' speaks as another user, "
                "'& text' sends in the background, !wait waits, !quit or Ctrl-D leaves.",
                color=self._color,
            )
        )
        while True:
            self._screen.prompt(f"{self._user_id} › ")
            try:
                line = await anext(lines)
            except StopAsyncIteration:
                self._screen.line("")
                break
            if not await self.run_line(line, echo=False):
                break
        await self.wait()

    async def _dispatch_safely(self, inbound: Inbound) -> None:
        try:
            await self.dispatch(inbound)
        except Exception:
            # The core turns every expected failure into a Failure event; anything reaching
            # here is a bug. Keep the session alive, but count it so the demo exits non-zero.
            self._errors += 1
            log.exception("unexpected error while answering a console message")
            self._screen.line(f"{self._label(inbound.user_id)}✖ internal error (see the log)")

    # --- rendering ----------------------------------------------------------------------

    def _label(self, user: str) -> str:
        return "hybot › " if user == self._user_id else f"hybot → {user} › "

    async def render(self, events: AsyncIterator[ReplyEvent], *, inbound: Inbound) -> None:
        answer = _Answer(self._label(inbound.user_id))
        try:
            async for event in events:
                await self._render_one(event, answer)
        finally:
            self._screen.end(answer)

    async def _render_one(self, event: ReplyEvent, answer: _Answer) -> None:
        screen = self._screen
        label = answer.label
        match event:
            case Typing():
                pass
            case Partial(text=text):
                self._stream_text(answer, text)
            case Final(text=text, note=note):
                if answer.shown and not text.startswith(answer.shown):
                    # The final text is not a continuation of what streamed: show it whole.
                    screen.end(answer)
                    answer.shown = ""
                if answer.shown or screen.owns(answer):
                    self._stream_text(answer, text)
                    screen.end(answer)
                else:
                    screen.line(label + answer.block(text))
                answer.shown = ""
                if note:
                    screen.line(dim(f"{answer.indent}ⓘ {note}", color=self._color))
            case Retract(notice=notice):
                screen.end(answer)
                answer.shown = ""
                screen.line(f"{label}⚠ [previous answer withdrawn] {answer.block(notice)}")
            case Notice(text=text, private=private):
                screen.line(label + ("(private) " if private else "") + answer.block(text))
            case ImageQueued(position=position):
                screen.line(f"{label}⏳ {t('image.queued', self._lang, position=position)}")
            case ImageRunning():
                screen.line(f"{label}🎨 {t('image.running', self._lang)}")
            case ImageReady(data=data, mime=mime, caption=caption):
                path = await self._save_image(data, mime)
                screen.line(f"{label}🖼  saved {path}")
                for part in caption.splitlines():
                    if part.strip():
                        screen.line(dim(f"{answer.indent}{part}", color=self._color))
            case Failure(user_message=message):
                screen.end(answer)
                answer.shown = ""
                screen.line(f"{label}✖ {answer.block(message)}")

    def _stream_text(self, answer: _Answer, text: str) -> None:
        if not text.startswith(answer.shown):
            self._screen.end(answer)
            answer.shown = ""
        new = text[len(answer.shown) :]
        if new:
            prefix = answer.label + ("…" if answer.shown else "")
            self._screen.stream(answer, prefix, answer.flow(new))
        answer.shown = text

    async def _save_image(self, data: bytes, mime: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = self._image_dir / f"hybot-{stamp}-{uuid.uuid4().hex[:8]}{extension_for(mime)}"
        await asyncio.to_thread(self._write_new, path, data)
        self._saved.append(path)
        return path

    @staticmethod
    def _write_new(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "xb": never overwrite an earlier image, even in the unlikely case of a name clash.
        with path.open("xb") as fh:
            fh.write(data)
