"""The console adapter: a terminal chat with the core, used by ``hybot demo``.

Who calls: the composition root (``bots``) builds a :class:`ConsoleAdapter` around a
``Conversation`` and feeds it lines, either a script (:meth:`ConsoleAdapter.run_script`) or a
live terminal (:meth:`ConsoleAdapter.run_interactive`). The script language is described in
:mod:`adapters.console.render`.

Every line becomes one :class:`~core.types.Inbound` with a fresh delivery id (uuid4),
``platform="console"``, key ``ConversationKey("console", workspace, <user>)`` and
``is_dm=True``; the user id is the bare name (the core qualifies it as ``console:<name>``).

The console implements only the primitives of :class:`~adapters.base.BaseAdapter` (the base
renders every event); the terminal is its "platform", and a transcript reads one line per
message. Several answers may be in flight at once, so a message another answer interrupted
continues later on a line of its own, marked with "…".

- ``send_text``: ``<label><text>``, the line left open; ``private`` adds "(private)";
- ``edit_text``: an edit that extends the text prints only the new text (so a streamed answer
  grows on its line); one that replaces it prints the new text on a fresh line, marked
  "[previous answer withdrawn]" unless it replaces an image status line;
- ``delete``: a withdrawal line (nothing for an image status line: the image line follows it);
- ``send_image``: the bytes are saved under ``image_dir`` with a unique name and the extension
  of their MIME type; "saved <path>" and the caption are printed. A file that cannot be saved
  raises ``PlatformError`` (the base tells the user and closes the stream, and the core
  refunds the image);
- ``send_typing``: nothing (buttons are not shown either: a terminal cannot press them).

Every user- or model-derived text goes through :func:`~adapters.console.render.printable`
before it reaches the terminal, and every sentence of the console's own comes from
``core.i18n`` in the language of the user it is shown to: the language the core's last reply
to that user said it was in (``language`` of a ``Notice``, ``Final``, ``Retract`` or
``Failure``, so ``/lang zh`` switches the
labels with the answer that confirms it), until then the console's own (``language``, else
English).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

from adapters.base import (
    MARK_QUEUED,
    MARK_RUNNING,
    AdapterLimits,
    BaseAdapter,
    ConversationHandler,
    MessageRef,
)
from adapters.console.render import dim, extension_for, parse_script_line, printable
from core.errors import PlatformError
from core.i18n import t
from core.model import closing_stream
from core.types import (
    Button,
    ConversationKey,
    Failure,
    Final,
    Inbound,
    Notice,
    ReplyEvent,
    Retract,
)

__all__ = ["ConsoleAdapter"]

log = logging.getLogger(__name__)

_STATUS = (MARK_QUEUED, MARK_RUNNING)


class _LanguageWatch:
    """The core as the base sees it, noting the language each reply event says it is in (for
    the user it answers) before the base renders it. Passes every event on unchanged, pulls
    the next only when asked, and closes the core's stream when its own is closed."""

    def __init__(self, inner: ConversationHandler, langs: MutableMapping[str, str]) -> None:
        self._inner = inner
        self._langs = langs

    async def handle(self, inbound: Inbound) -> AsyncIterator[ReplyEvent]:
        async with closing_stream(self._inner.handle(inbound)) as events:
            async for event in events:
                # Image status events default to "en" (indistinguishable from unset); these
                # four say "" when unset, and the core always sets them.
                if isinstance(event, Notice | Retract | Failure | Final) and event.language:
                    self._langs[inbound.user_id] = event.language
                yield event


class _Screen:
    """Serialises output to one text stream; tracks which message owns the open line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._owner: object | None = None
        self._indent_next = False

    def line(self, text: str) -> None:
        """Write a whole line, first ending any line a message left open."""
        self._break()
        self._out.write(text + "\n")
        self._out.flush()

    def stream(self, owner: object, prefix: str, text: str, indent: str) -> None:
        """Append ``text`` to ``owner``'s open line, opening it with ``prefix`` if another
        owner holds the line. Lines after the first are indented with ``indent`` (blank lines
        stay empty, so a transcript carries no trailing spaces)."""
        if self._owner is not owner:
            self._break()
            self._out.write(prefix)
            self._owner = owner
            self._indent_next = False
        pieces: list[str] = []
        for i, chunk in enumerate(text.split("\n")):
            if i:
                pieces.append("\n")
                self._indent_next = True
            if chunk:
                if self._indent_next:
                    pieces.append(indent)
                    self._indent_next = False
                pieces.append(chunk)
        self._out.write("".join(pieces))
        self._out.flush()

    def owns(self, owner: object) -> bool:
        return self._owner is owner

    def release(self) -> None:
        """End the open line, if any (nothing may continue it any more)."""
        if self._owner is not None:
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


@dataclass(slots=True)
class _Message:
    """A message the console has shown: whose line it is and the text it holds."""

    label: str
    text: str
    user: str = ""

    @property
    def indent(self) -> str:
        return " " * len(self.label)


class ConsoleAdapter(BaseAdapter):
    """Terminal front end of the core (see the module docstring for what is shown).

    ``user_id`` is the console's own user (``"me"``: the demo makes ``console:me`` an admin),
    ``language`` the language hint passed to the core and used for the console's own few
    words; ``color`` enables the dim style (default: when ``out`` is a terminal).
    """

    # A terminal has no message size limit worth splitting at, no rate limit and no typing
    # indicator: every streamed piece is shown as it arrives.
    limits = AdapterLimits(
        max_text_units=1_000_000,
        unit="chars",
        min_edit_interval=0.0,
        caption_units=1_000_000,
        typing_interval=0.0,
    )

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
        self._langs: dict[str, str] = {}  # user → the language the core last answered in
        super().__init__(conversation=_LanguageWatch(conversation, self._langs))
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
        self._messages: dict[MessageRef, _Message] = {}
        self._ids = itertools.count(1)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._image_dir.mkdir, parents=True, exist_ok=True)

    async def stop(self) -> None:
        """Wait for background messages (they are answered, not dropped), drain, and end the
        last line. Idempotent."""
        await self.wait()
        await self.drain()
        self._screen.release()

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
            message_id=str(next(self._ids)),
        )

    async def send(self, text: str, *, user: str = "", echo: bool = True) -> None:
        """Send one message and render the whole answer before returning."""
        inbound = self.make_inbound(text, user=user)
        if echo:
            self._screen.line(printable(f"{inbound.user_id} › {text}"))
        await self._dispatch_safely(inbound)

    def send_background(self, text: str, *, user: str = "", echo: bool = True) -> None:
        """Start sending one message; :meth:`wait` (or :meth:`stop`) waits for its answer."""
        inbound = self.make_inbound(text, user=user)
        if echo:
            note = dim(
                "  " + t("console.background", self._lang_of(inbound.user_id)), color=self._color
            )
            self._screen.line(printable(f"{inbound.user_id} › {text}") + note)
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
        self._screen.release()

    async def run_interactive(self, lines: AsyncIterator[str]) -> None:
        """Prompt, read lines from ``lines`` until it ends or ``!quit``; the terminal already
        shows what was typed, so input is not echoed."""
        self._screen.line(dim(t("console.banner", self._lang), color=self._color))
        while True:
            self._screen.prompt(printable(f"{self._user_id} › "))
            try:
                line = await anext(lines)
            except StopAsyncIteration:
                self._screen.line("")
                break
            if not await self.run_line(line, echo=False):
                break
        await self.wait()
        self._screen.release()

    async def _dispatch_safely(self, inbound: Inbound) -> None:
        try:
            await self.dispatch(inbound)
        except Exception:
            # The core turns every expected failure into a Failure event and the base handles
            # platform errors; anything reaching here is a bug. Keep the session alive, but
            # count it so the demo exits non-zero.
            self._errors += 1
            log.exception("unexpected error while answering a console message")
            label = self._label(inbound.user_id)
            lang = self._lang_of(inbound.user_id)
            self._screen.line(f"{label}✖ {t('console.internal_error', lang)}")

    # --- primitives ---------------------------------------------------------------------

    def _lang_of(self, user: str) -> str:
        """The language of the console's own words for ``user`` (see the module docstring)."""
        return self._langs.get(user or self._user_id, self._lang)

    def _label(self, user: str) -> str:
        return "hybot › " if user == self._user_id else printable(f"hybot → {user} › ")

    def _new_ref(self, inbound: Inbound) -> MessageRef:
        return MessageRef(chat=inbound.key.chat, id=str(next(self._ids)))

    async def send_text(
        self,
        inbound: Inbound,
        text: str,
        *,
        private: bool = False,
        buttons: tuple[Button, ...] = (),
    ) -> MessageRef:
        ref = self._new_ref(inbound)
        message = _Message(self._label(inbound.user_id), text, inbound.user_id)
        self._messages[ref] = message
        lang = self._lang_of(inbound.user_id)
        shown = (t("console.private", lang) + " " if private else "") + printable(text)
        self._screen.stream(ref, message.label, shown, message.indent)
        return ref

    async def edit_text(
        self, ref: MessageRef, text: str, *, buttons: tuple[Button, ...] = ()
    ) -> None:
        message = self._messages.get(ref)
        if message is None:
            raise PlatformError("edit_text: the console never showed that message")
        old, message.text = message.text, text
        if text.startswith(old):
            new = text[len(old) :]
            if new:
                prefix = message.label + "…"
                self._screen.stream(ref, prefix, printable(new), message.indent)
            return
        withdrawn = t("console.withdrawn", self._lang_of(message.user))
        marker = "" if old.startswith(_STATUS) else withdrawn + " "
        self._screen.release()  # the replacement starts a line of its own
        self._screen.stream(ref, message.label, marker + printable(text), message.indent)

    async def delete(self, ref: MessageRef) -> None:
        message = self._messages.pop(ref, None)
        if message is None or message.text.startswith(_STATUS):
            return
        withdrawn = t("console.withdrawn", self._lang_of(message.user))
        self._screen.line(f"{message.label}⚠ {withdrawn}")

    async def send_image(
        self, inbound: Inbound, data: bytes, mime: str, caption: str
    ) -> MessageRef:
        try:
            path = await self._save_image(data, mime)
        except OSError as err:
            raise PlatformError(
                f"send_image: cannot save the image: {err.strerror or type(err).__name__}"
            ) from err
        label = self._label(inbound.user_id)
        indent = " " * len(label)
        saved = t("console.saved", self._lang_of(inbound.user_id), path=path)
        self._screen.line(f"{label}🖼  {printable(saved)}")
        for part in caption.splitlines():
            if part.strip():
                self._screen.line(dim(f"{indent}{printable(part)}", color=self._color))
        return self._new_ref(inbound)

    async def send_typing(
        self, inbound: Inbound, *, action: Literal["typing", "upload_photo"] = "typing"
    ) -> None:
        return None

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
