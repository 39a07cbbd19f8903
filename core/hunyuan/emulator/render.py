"""Image side of the emulator: Pillow rendering, the file store, FIFO run slots.

- :func:`render_image` is CPU work (call it through ``asyncio.to_thread``): a deterministic
  picture derived from a hash of prompt and seed, at exactly the requested size, with a visible
  AI-generated mark in the bottom-right corner unless the mark is turned off.
- :class:`FileStore` keeps generated files in memory with an expiry in emulator time; expired
  entries are purged whenever a file is added.
- :class:`SlotPool` grants at most ``limit`` concurrent run slots per account, strictly in the
  order ``enqueue`` was called (a queued image job starts only when it is at the head of its
  account's line and a slot is free).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "DEFAULT_MARK",
    "FileStore",
    "RenderedImage",
    "SlotPool",
    "StoredFile",
    "mark_text_for",
    "render_image",
]

DEFAULT_MARK = "AI generated"


@dataclass(frozen=True, slots=True)
class RenderedImage:
    """Encoded image bytes plus what was drawn (``mark`` is ``None`` when no mark was drawn)."""

    data: bytes
    mime: str
    width: int
    height: int
    mark: str | None


@dataclass(frozen=True, slots=True)
class StoredFile:
    data: bytes
    mime: str
    expires_at: float


def mark_text_for(footnote: str | None) -> str:
    """The mark to draw: the footnote when Pillow's built-in font can render it, else the default.

    The built-in font covers ASCII only; CJK footnotes (and Tencent's own "图片由 AI 生成")
    fall back to the ASCII default rather than drawing boxes.
    """
    if footnote and footnote.strip() and all(32 <= ord(c) < 127 for c in footnote):
        return footnote.strip()
    return DEFAULT_MARK


def _palette(digest: bytes, i: int) -> tuple[int, int, int]:
    return digest[i % 32], digest[(i + 1) % 32], digest[(i + 2) % 32]


def render_image(
    *, prompt: str, seed: int, width: int, height: int, fmt: str, mark: str | None
) -> RenderedImage:
    """Render a deterministic ``width``×``height`` image; ``fmt`` is ``"PNG"`` or ``"JPEG"``.

    Same prompt, seed, size, format and mark → identical bytes. Blocking: run in a thread.
    """
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    gradient = Image.linear_gradient("L").rotate(digest[0] % 360, expand=False)
    gradient = gradient.resize((width, height))
    img = ImageOps.colorize(gradient, _palette(digest, 1), _palette(digest, 4)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for k in range(6):
        b = digest[6 + 4 * k : 10 + 4 * k]
        x0, y0 = b[0] * width // 256, b[1] * height // 256
        x1 = x0 + max(8, b[2] * width // 512)
        y1 = y0 + max(8, b[3] * height // 512)
        color = _palette(digest, 7 * k + 3)
        if k % 2:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=color)
    if mark is not None:
        # A dark box behind white text keeps the mark legible on any background.
        font = ImageFont.load_default(size=max(12, min(width, height) // 32))
        left, top, right, bottom = draw.textbbox((0, 0), mark, font=font)
        pad = max(4, (bottom - top) // 3)
        tw, th = right - left, bottom - top
        x = width - tw - 3 * pad
        y = height - th - 3 * pad
        draw.rectangle((x - pad, y - pad, x + tw + pad, y + th + pad), fill=(0, 0, 0))
        draw.text((x - left, y - top), mark, font=font, fill=(255, 255, 255))
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=90)
        mime = "image/jpeg"
    else:
        img.save(buf, "PNG")
        mime = "image/png"
    return RenderedImage(buf.getvalue(), mime, width, height, mark)


class FileStore:
    """In-memory files served at ``/files/<name>``, each valid until its ``expires_at``."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._files: dict[str, StoredFile] = {}

    def put(self, name: str, data: bytes, mime: str, ttl: float) -> None:
        now = self._clock()
        # Purge here so a long-running emulator does not accumulate expired images.
        for key in [k for k, f in self._files.items() if f.expires_at <= now]:
            del self._files[key]
        self._files[name] = StoredFile(data, mime, now + ttl)

    def get(self, name: str) -> StoredFile | None:
        """The file, including an expired one (the caller decides between 403 and 404)."""
        return self._files.get(name)

    def expired(self, stored: StoredFile) -> bool:
        return self._clock() >= stored.expires_at


class _Ticket:
    __slots__ = ("granted", "wanted")

    def __init__(self) -> None:
        self.wanted = False
        self.granted = asyncio.Event()


class SlotPool:
    """Per-account FIFO run slots (image jobs and synchronous image calls).

    ``enqueue`` takes a ticket in submission order; ``acquire`` waits until the ticket is at
    the head of its account's line and fewer than ``limit`` slots are taken; ``release`` frees
    the slot (synchronous, so it is safe in ``finally`` blocks of cancelled tasks).
    ``on_change(account, running)`` is called whenever the running count changes. A ticket
    whose ``acquire`` is cancelled leaves the line (or gives its slot back) at once; a ticket
    never passed to ``acquire`` must be given back with ``withdraw``.
    """

    def __init__(self, *, limit: int, on_change: Callable[[str, int], None]) -> None:
        self._limit = limit
        self._on_change = on_change
        self._lines: dict[str, deque[_Ticket]] = {}
        self._running: dict[str, int] = {}

    def enqueue(self, account: str) -> _Ticket:
        ticket = _Ticket()
        self._lines.setdefault(account, deque()).append(ticket)
        return ticket

    def position(self, account: str, ticket: _Ticket) -> int:
        """1-based place of a waiting ticket in its line (0 when no longer waiting)."""
        line = self._lines.get(account, deque())
        return line.index(ticket) + 1 if ticket in line else 0

    def _pump(self, account: str) -> None:
        line = self._lines.get(account)
        while line and line[0].wanted and self._running.get(account, 0) < self._limit:
            ticket = line.popleft()
            self._running[account] = self._running.get(account, 0) + 1
            self._on_change(account, self._running[account])
            ticket.granted.set()

    async def acquire(self, account: str, ticket: _Ticket) -> None:
        ticket.wanted = True
        self._pump(account)
        try:
            await ticket.granted.wait()
        except BaseException:
            if ticket.granted.is_set():
                self.release(account)
            else:
                self.withdraw(account, ticket)
            raise

    def withdraw(self, account: str, ticket: _Ticket) -> None:
        line = self._lines.get(account)
        if line is not None and ticket in line:
            line.remove(ticket)
            self._pump(account)

    def release(self, account: str) -> None:
        self._running[account] = max(0, self._running.get(account, 0) - 1)
        self._on_change(account, self._running[account])
        self._pump(account)

    def running(self, account: str) -> int:
        return self._running.get(account, 0)
