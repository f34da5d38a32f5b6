"""The handler a worker process runs: ``"module:function"`` or an importable top-level callable.

A spawned child cannot receive a closure or a lambda, only the name of something it can import
again, so both forms are reduced to a ``"module:qualname"`` string, resolved once in the
supervisor (a bad target fails at once, before any child starts) and again in each child.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["key_function", "load", "target_spec"]


def target_spec(target: object) -> str:
    """Check *target* and return it as ``"module:qualname"``.

    Blocks on importing the module (its top-level code runs). Raises ValueError for a malformed
    string, a module that cannot be imported or a missing attribute, TypeError for something
    that is not callable or has no importable name (a lambda, a closure, a bound method of an
    instance, anything defined in ``__main__``). Any thread.
    """
    if isinstance(target, str):
        spec = target
    elif callable(target):
        module = getattr(target, "__module__", None)
        qualname = getattr(target, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
            raise TypeError(
                f"target must be a 'module:function' string or an importable top-level callable, "
                f"got {target!r} (a lambda, closure or instance cannot be imported by a worker process)"
            )
        spec = f"{module}:{qualname}"
        found = load(spec)
        if found is not target:
            raise TypeError(f"target {target!r} is not importable as {spec!r} (it resolves to {found!r})")
        return spec
    else:
        raise TypeError(
            f"target must be a 'module:function' string or a callable, got {type(target).__name__}"
        )
    load(spec)
    return spec


def load(spec: str) -> Callable[..., Any]:
    """Import ``"module:qualname"`` and return the callable it names.

    Raises ValueError (with the reason) or TypeError as :func:`target_spec`. Any thread.
    """
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname or any(not part for part in qualname.split(".")):
        raise ValueError(f"target must look like 'module:function' (e.g. 'myapp.jobs:handle'), got {spec!r}")
    if module_name == "__main__":
        raise TypeError(
            f"target {spec!r} is defined in __main__, which a worker process cannot import: "
            f"move it to a module"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module's top-level code raised
        raise ValueError(f"target {spec!r}: cannot import module {module_name!r}: {exc!r}") from exc
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"target {spec!r}: module {module_name!r} has no attribute {qualname!r}"
            ) from None
    if not callable(obj):
        raise TypeError(f"target {spec!r} is not callable (it is a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


class _HeaderKey:
    """``key=`` for ``consume()``: a header's value (None without the header). Picklable."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, msg: Any) -> Any:
        headers = msg.headers
        return None if headers is None else headers.get(self.name)

    def __repr__(self) -> str:
        return f"<key header:{self.name}>"


def _subject_key(msg: Any) -> Any:
    """``key=`` for ``consume()``: the message's subject."""
    return msg.subject


def key_function(spec: str) -> Callable[[Any], Any]:
    """The ``consume(key=)`` function of a key spec: ``subject`` (the message's subject) or
    ``header:NAME`` (the value of header NAME; messages without it share one key, None).
    Raises ValueError for another spec. Any thread."""
    if spec == "subject":
        return _subject_key
    kind, _, name = spec.partition(":")
    if kind == "header" and name.strip():
        return _HeaderKey(name.strip())
    raise ValueError(f"key must be 'subject' or 'header:NAME', got {spec!r}")
