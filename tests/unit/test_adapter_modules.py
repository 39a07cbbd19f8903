"""``adapters/base.py`` keeps its public names after the split into rooms (``split.py``: pure
text splitting; ``_answer.py``: one answer's rendering), and the splitter stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import adapters
import adapters.base
import adapters.split

# Every name the platform adapters (console, Telegram, Slack) and the contract tests import.
_BASE_NAMES = {
    "MARK_FAILURE",
    "MARK_NOTE",
    "MARK_QUEUED",
    "MARK_RUNNING",
    "MIN_TEXT_UNITS",
    "AdapterLimits",
    "BaseAdapter",
    "ConversationHandler",
    "MessageRef",
    "TextPart",
    "cut_text",
    "measure_units",
    "plan_parts",
    "split_text",
}


def test_base_exports_its_public_names() -> None:
    assert set(adapters.base.__all__) == _BASE_NAMES
    for name in _BASE_NAMES:
        assert getattr(adapters.base, name) is not None
    for name in adapters.__all__:
        assert getattr(adapters, name) is getattr(adapters.base, name)
    for name in adapters.split.__all__:
        if name in _BASE_NAMES:
            assert getattr(adapters.base, name) is getattr(adapters.split, name)


def test_the_splitter_is_pure() -> None:
    """``adapters/split.py`` imports only pure standard-library modules (no I/O, no core)."""
    tree = ast.parse(Path(adapters.split.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    pure = {"__future__", "bisect", "collections.abc", "dataclasses", "re", "typing", "unicodedata"}
    assert imported <= pure
