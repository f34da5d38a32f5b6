"""The hierarchy drawn in natspull/errors.py's docstring is the module's real one. No server."""

from __future__ import annotations

import builtins
import re

import natspull.errors


def _drawn() -> dict[str, str | None]:
    """Each class in the docstring's tree, mapped to the class it hangs from (None for the root)."""
    doc = natspull.errors.__doc__ or ""
    tree = doc[doc.index("Hierarchy::") :].split("\n\n")[1]
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in tree.splitlines():
        match = re.match(r"^(\s*(?:[│ ]\s*)*(?:[├└]── )?)(\w+)", line)
        assert match, line
        depth = len(match.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
    return parents


def test_the_drawn_tree_is_the_module() -> None:
    drawn = _drawn()
    assert set(drawn) == set(natspull.errors.__all__)
    for name, parent in drawn.items():
        cls = getattr(natspull.errors, name)
        own = [base.__name__ for base in cls.__bases__ if base.__module__ == "natspull.errors"]
        assert own == ([parent] if parent else []), name


def test_no_error_shadows_a_builtin_without_being_one() -> None:
    for name in natspull.errors.__all__:
        builtin = getattr(builtins, name, None)
        if builtin is not None:
            assert issubclass(getattr(natspull.errors, name), builtin), name
