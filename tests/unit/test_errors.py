"""The error tree drawn in ``core/errors.py`` is the tree the code defines, and every class in it
is put to use outside that module (issue 6 item 7: errors that are never raised are removed)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from core import errors
from core.errors import HybotError

ROOT = Path(__file__).resolve().parents[2]


def _classes() -> dict[str, type[HybotError]]:
    return {
        name: obj
        for name, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, HybotError)
    }


def _drawn_parents() -> dict[str, str]:
    """``class name → parent name`` as drawn in the module docstring."""
    doc = errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) of the open ancestors
    for line in doc.splitlines():
        # A branch (``├── Name`` / ``└── Name``) or the root alone on its line; other lines
        # continue a description.
        match = re.match(r"^[ │]*[├└]── ([A-Z]\w+)", line) or re.match(r"^ +([A-Z]\w+)$", line)
        if match is None:
            continue
        column = match.start(1)
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match.group(1)] = stack[-1][1] if stack else ""
        stack.append((column, match.group(1)))
    return parents


def test_the_drawn_tree_is_the_class_tree() -> None:
    classes = _classes()
    drawn = _drawn_parents()
    assert set(drawn) == set(classes)
    assert set(errors.__all__) == set(classes)
    for name, cls in classes.items():
        parent = cls.__mro__[1].__name__ if cls is not HybotError else ""
        assert drawn[name] == parent, name


def _names_used(path: Path) -> set[str]:
    """Names the code of ``path`` refers to (not its imports, strings or comments)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
    return used


def test_every_error_class_is_used_outside_the_tree() -> None:
    """Each class is raised, mapped to or caught by code in ``core``, ``adapters`` or ``bots``
    (a platform adapter raises ``PlatformRetryAfter``; the base catches it)."""
    used: set[str] = set()
    for folder in ("core", "adapters", "bots"):
        for path in (ROOT / folder).rglob("*.py"):
            if path != ROOT / "core" / "errors.py":
                used |= _names_used(path)
    assert sorted(set(_classes()) - used - {"HybotError"}) == []
