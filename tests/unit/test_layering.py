"""Layering rules (design §1, §7.5): imports flow bots → adapters → core, the core never loads
a platform library, and only bots reads the environment."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import adapters
import bots
import core

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT  # the checkout: core/, adapters/ and bots/ are top-level import packages
LAYERS = ("core", "adapters", "bots")
PLATFORM_LIBS = ("telegram", "slack_bolt", "slack_sdk")


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(source: str) -> set[str]:
    """Absolute module names a source file imports (anywhere, including inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def environment_reads(source: str) -> list[str]:
    """Every way a file reads the process environment: ``os.environ``/``os.environb``/
    ``os.getenv``/``os.putenv`` attributes and ``from os import environ, getenv``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in (
            "environ",
            "environb",
            "getenv",
            "getenvb",
            "putenv",
        ):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ("environ", "environb", "getenv", "getenvb", "*"):
                    found.append(f"line {node.lineno}: from os import {alias.name}")
    return found


def test_detectors_catch_what_they_look_for() -> None:
    # Guards against a scan that silently finds nothing.
    snippet = textwrap.dedent(
        """
        import os
        from os import getenv
        from bots import settings
        def f():
            import adapters.console
            return os.environ.get("X")
        """
    )
    assert len(environment_reads(snippet)) == 2
    mods = imported_modules(snippet)
    assert "bots" in mods and "adapters.console" in mods


def test_core_never_imports_adapters_or_bots() -> None:
    files = python_files(PACKAGE / "core")
    assert len(files) > 10  # the scan really covers the core
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m
            for m in imported_modules(path.read_text(encoding="utf-8"))
            if m.startswith(("adapters", "bots")) or m.split(".")[0] in PLATFORM_LIBS
        )
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_adapters_never_import_bots() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in imported_modules(path.read_text(encoding="utf-8")) if m.startswith("bots")
        )
        for path in python_files(PACKAGE / "adapters")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_bots_reads_the_environment() -> None:
    offenders = {}
    for path in [p for layer in LAYERS for p in python_files(PACKAGE / layer)]:
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "bots":
            continue
        found = environment_reads(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(rel)] = found
    assert offenders == {}


def test_importing_the_whole_core_loads_no_platform_library_or_upper_layer() -> None:
    # A fresh interpreter: this test process may already have imported anything.
    code = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import core
        imported = []
        for info in pkgutil.walk_packages(core.__path__, "core."):
            importlib.import_module(info.name)
            imported.append(info.name)
        bad = sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("telegram", "slack_bolt", "slack_sdk")
            or m.startswith(("adapters", "bots"))
        )
        print(json.dumps({"imported": imported, "bad": bad}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "core.conversation" in result["imported"]
    assert result["bad"] == []


def test_top_level_packages_resolve_to_this_checkout() -> None:
    # core, adapters and bots are generic names: a same-named package installed elsewhere must
    # not shadow ours (hybot is installed in its own virtual environment or container).
    for module in (core, adapters, bots):
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().parent == ROOT / module.__name__
    assert not (ROOT / "hybot").exists(), "the code lives at the top level, not under hybot/"


def test_version_is_the_distributions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert bots.__version__ == project["version"]
