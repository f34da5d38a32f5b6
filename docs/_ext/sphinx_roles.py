"""A griffe extension for the API reference (mkdocs.yml): natspull's docstrings are written for
Sphinx; this turns their roles into Markdown code spans before mkdocstrings renders them.

``:meth:`fetch``` and ``:class:`natspull.ConsumerEvent``` become `` `fetch` `` and
`` `natspull.ConsumerEvent` `` (``~`` keeps the last name), and a paragraph ending in ``::``
before an indented block ends in ``:`` (the indented block is a Markdown code block already).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:meth|attr|func|class|mod|data|exc|obj|const):`(~?)([^`]+)`")
LITERAL = re.compile(r"::\n(\n[ \t]+\S)")


def _role(match: re.Match[str]) -> str:
    name = match.group(2)
    return f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = LITERAL.sub(r":\n\1", ROLE.sub(_role, obj.docstring.value))
