"""The import-linter contracts in setup.cfg (run by `lint-imports` in .ci/run) cover every module.

A new module must be placed in a layer and, unless it is part of the door to nats-py, be
forbidden to import ``nats`` (docs/architecture.md).
"""

from __future__ import annotations

import configparser
import pkgutil
from pathlib import Path

import natspull

# The door to nats-py, and the two modules that re-export (and extend) its JetStream dataclasses.
WIRE = {
    "natspull._wire",
    "natspull._parser",
    "natspull._translate",
    "natspull._types",
    "natspull._consumer_types",
}


def _modules() -> set[str]:
    return {"natspull"} | {f"natspull.{m.name}" for m in pkgutil.iter_modules(natspull.__path__)}


def _contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(Path(__file__).parent.parent / "setup.cfg")
    return config


def test_every_module_sits_in_a_layer() -> None:
    layers = _contracts()["importlinter:contract:layers"]["layers"].split()
    placed = {f"natspull.{name}" for name in layers if name != "|"}
    assert placed == _modules() - {"natspull", "natspull.__main__"}


def test_only_the_wire_may_import_nats() -> None:
    contracts = _contracts()
    modules = contracts["importlinter:contract:nats-door"]
    packages = contracts["importlinter:contract:nats-door-adapters"]  # with their submodules
    assert modules["forbidden_modules"].split() == packages["forbidden_modules"].split() == ["nats"]
    assert modules["as_packages"] == "False" and "as_packages" not in packages
    assert set(packages["source_modules"].split()) == {
        "natspull._workers",
        "natspull.cli",
        "natspull.testing",
    }
    assert set(modules["source_modules"].split()) == _modules() - WIRE
