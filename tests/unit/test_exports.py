"""The public surface: pinned ``__all__`` lists, and no private module leaking through a public name.

In the spirit of httpx's ``tests/test_exported_members.py`` and trio's ``_tests/test_exports.py``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import natspull
import natspull.errors
import natspull.testing

EXPECTED_ALL = [
    "AckPolicy",
    "Backoff",
    "BatchAck",
    "Client",
    "ClientStats",
    "ConnectError",
    "ConnectionClosedError",
    "ConsumeContext",
    "ConsumeStats",
    "Consumer",
    "ConsumerConfig",
    "ConsumerDeletedError",
    "ConsumerEvent",
    "ConsumerInfo",
    "ConsumerNotFoundError",
    "DeliverPolicy",
    "DiscardPolicy",
    "Error",
    "ForkedError",
    "IteratorClosedError",
    "JetStream",
    "JetStreamAPIError",
    "LazyClient",
    "Messages",
    "MessagesStats",
    "Metadata",
    "Msg",
    "MsgAlreadyAckedError",
    "NoHeartbeatError",
    "NotSupportedError",
    "OrderedConsumer",
    "OrderedConsumerResetError",
    "OrderedConsumerUsageError",
    "OrderedMessages",
    "PauseState",
    "PermissionError",
    "PriorityGroupState",
    "PriorityPolicy",
    "PubAck",
    "Publish",
    "ReplayPolicy",
    "RetentionPolicy",
    "StorageType",
    "StreamConfig",
    "StreamInfo",
    "StreamNotFoundError",
    "TimeoutError",
    "__version__",
    "connect",
    "run_workers",
    "shutdown_on_signals",
    "worker_client",
]

EXPECTED_TESTING_ALL = ["NatsCluster", "NatsServer", "find_server_binary", "server_binary", "server_version"]

PUBLIC_MODULES = sorted(
    f"natspull.{info.name}"
    for info in pkgutil.iter_modules(natspull.__path__)
    if not info.name.startswith("_")
)


def _public_names(module: types.ModuleType) -> list[str]:
    """Public attribute names (pytest's assertion rewriting adds '@py_builtins' and the like to
    natspull's modules, because natspull is a pytest plugin: those are not identifiers)."""
    return [name for name in vars(module) if name.isidentifier() and not name.startswith("_")]


def _is_private(module_name: str) -> bool:
    return any(part.startswith("_") for part in module_name.split("."))


def test_all_is_pinned_and_sorted() -> None:
    assert natspull.__all__ == EXPECTED_ALL
    assert natspull.__all__ == sorted(natspull.__all__)


def test_testing_all_is_pinned_and_sorted() -> None:
    assert natspull.testing.__all__ == EXPECTED_TESTING_ALL


def test_public_modules_are_known() -> None:
    """A new public module is a deliberate decision: add it here (and to the docs)."""
    assert PUBLIC_MODULES == ["natspull.cli", "natspull.errors", "natspull.testing", "natspull.trio"]


def test_every_exported_name_exists() -> None:
    for name in natspull.__all__:
        assert hasattr(natspull, name), name
    assert natspull.__version__ == importlib.import_module("natspull._version").__version__


def test_the_package_namespace_has_no_unlisted_public_names() -> None:
    """Like httpx: every public name in ``natspull`` is in ``__all__``, or is a public submodule."""
    submodules = {name.rpartition(".")[2] for name in PUBLIC_MODULES}
    extra = {
        name for name in _public_names(natspull) if name not in natspull.__all__ and name not in submodules
    }
    assert not extra, f"public names missing from natspull.__all__: {sorted(extra)}"


@pytest.mark.parametrize(
    "module_name",
    ["natspull", *PUBLIC_MODULES],
)
def test_public_modules_leak_no_private_module(module_name: str) -> None:
    if module_name == "natspull.trio":
        pytest.importorskip("trio")
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert exported == sorted(exported), f"{module_name}.__all__ is not sorted"
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ has duplicates"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which does not exist"
        value = getattr(module, name)
        assert not isinstance(value, types.ModuleType), f"{module_name}.{name} is a module"
    for name in _public_names(module):
        value = getattr(module, name)
        if isinstance(value, types.ModuleType):
            assert not _is_private(value.__name__) or value.__name__.startswith(module_name + "._"), (
                f"{module_name}.{name} exposes the private module {value.__name__}"
            )
        elif (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == module_name:
            # defined here and public: it must be declared
            assert name in exported, f"{module_name}.{name} is public but not in __all__"


def test_private_modules_are_not_public_attributes() -> None:
    for name in _public_names(natspull):
        value = getattr(natspull, name)
        if isinstance(value, types.ModuleType):
            assert not _is_private(value.__name__), f"natspull.{name} is the private module {value.__name__}"


def test_errors_are_exported_and_form_one_hierarchy() -> None:
    assert set(natspull.errors.__all__) <= set(natspull.__all__)
    for name in natspull.errors.__all__:
        exc = getattr(natspull, name)
        assert exc is getattr(natspull.errors, name)
        assert issubclass(exc, natspull.Error), name
    assert issubclass(natspull.TimeoutError, TimeoutError)  # also the builtin
    assert natspull.PermissionError is not PermissionError  # ours, not the builtin OSError one
