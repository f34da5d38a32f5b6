"""natspull.trio calls the blocking side only through its public API and ``natspull._ports``.

An AST scan of ``natspull/trio/*.py``: an attribute with a leading underscore (``x._y``, dunder
names aside) may only be reached through ``self`` or ``cls`` - the adapter's own state. Reaching
into another object (``self._sync._queue``, ``msg._sink``) is what the interface in
``_ports.py`` replaces; module attributes (``_otel.current``) are public names of private
modules and are not attributes with a leading underscore.
"""

from __future__ import annotations

import ast
from pathlib import Path

import natspull.trio

TRIO = Path(natspull.trio.__file__).parent


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_accesses(source: str) -> list[str]:
    """``line: expression`` for every private attribute reached through something else than
    ``self``, ``cls`` or ``super()``."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue  # this object's own, as its base class defines it
        found.append((node.lineno, node.col_offset, f"{node.lineno}: {ast.unparse(node)}"))
    return [text for *_, text in sorted(found)]


def test_the_scan_sees_what_it_must() -> None:
    source = "\n".join(
        [
            "self._queue.get()",  # own state: allowed
            "cls._lock",  # allowed
            "x.__class__",  # dunder: allowed
            "_otel.current()",  # a private module's public name: allowed
            "super()._take()",  # own state, through the base class: allowed
            "self._sync._queue.state",  # another object's private state
            "msg._sink",
            "other.__private",  # name-mangled, still private
            "getattr(self, 'x')._y",
        ]
    )
    assert private_accesses(source) == [
        "6: self._sync._queue",
        "7: msg._sink",
        "8: other.__private",
        "9: getattr(self, 'x')._y",
    ]


def test_trio_adapter_touches_no_private_attribute_of_another_object() -> None:
    files = sorted(TRIO.glob("*.py"))
    assert {path.name for path in files} >= {"__init__.py", "_client.py", "_iterator.py"}
    found = {path.name: private_accesses(path.read_text()) for path in files}
    assert not any(found.values()), f"use the interface in natspull/_ports.py instead: {found}"
