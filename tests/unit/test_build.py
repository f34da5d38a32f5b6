"""The compiled build (setup.py): which modules it compiles, and that every session imports the
build it expects (``nox -s compiled-3.12`` sets NATSPULL_EXPECT_COMPILED=1; elsewhere: pure)."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import os
import pathlib

SETUP_PY = pathlib.Path(__file__).resolve().parents[2] / "setup.py"


def compiled_modules() -> list[str]:
    """setup.py's COMPILED, as module names."""
    tree = ast.parse(SETUP_PY.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["COMPILED"]:
            paths: list[str] = ast.literal_eval(node.value)
            return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED = [...] list")


def test_every_compiled_module_exists_and_is_private() -> None:
    names = compiled_modules()
    assert names, "COMPILED is empty"
    for name in names:
        module = importlib.import_module(name)
        assert module.__name__ == name
        assert any(part.startswith("_") for part in name.split(".")[1:]), f"{name} is public"


def test_the_build_imported_is_the_one_the_session_expects() -> None:
    """Compiled where NATSPULL_EXPECT_COMPILED=1; elsewhere pure, so that a compiled module left
    beside its source (``NATSPULL_COMPILE=1 pip install -e .``) never stands in for it unseen."""
    compiled = os.environ.get("NATSPULL_EXPECT_COMPILED") == "1"
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in compiled_modules():
        path = importlib.import_module(name).__file__
        assert path is not None
        if compiled:
            assert path.endswith(suffixes), f"{name} is not compiled: {path}"
        else:
            assert path.endswith(".py"), f"{name} is compiled ({path}): remove it for the pure build"
