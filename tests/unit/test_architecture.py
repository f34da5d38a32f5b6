"""The import-linter contracts in setup.cfg (run by `lint-imports` in .ci/run) cover every module.

A new module must be placed in a layer of its package and, unless it is part of the door to
nats-py, be forbidden to import ``nats`` (docs/architecture.md).
"""

from __future__ import annotations

import configparser
import importlib
import pkgutil
from pathlib import Path

# The door to nats-py, and the two modules that re-export (and extend) its JetStream dataclasses.
WIRE = {
    "natspull._transport._wire",
    "natspull._transport._parser",
    "natspull._transport._translate",
    "natspull._types",
    "natspull._consumer_types",
}
# Packages whose inside is theirs: the contracts treat each as one adapter.
ADAPTERS = {"natspull.cli", "natspull.testing", "natspull._workers"}
# Packages with a layers contract of their own.
LAYERED = {"natspull._transport": "transport", "natspull._engine": "engine", "natspull.trio": "trio"}


def _children(package: str) -> set[str]:
    module = importlib.import_module(package)
    return {f"{package}.{m.name}" for m in pkgutil.iter_modules(module.__path__)}


def _contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[2] / "setup.cfg")
    return config


def _placed(contract: str, package: str) -> set[str]:
    layers = _contracts()[f"importlinter:contract:{contract}"]["layers"].split()
    return {f"{package}.{name}" for name in layers if name != "|"}


def test_every_top_module_and_package_sits_in_a_layer() -> None:
    assert _placed("layers", "natspull") == _children("natspull") - {"natspull.__main__"}


def test_every_module_of_a_layered_package_sits_in_one_of_its_layers() -> None:
    for package, contract in LAYERED.items():
        assert _placed(contract, package) == _children(package), package


def test_observe_modules_are_independent() -> None:
    modules = set(_contracts()["importlinter:contract:observe"]["modules"].split())
    assert modules == _children("natspull._observe")


def test_only_the_wire_may_import_nats() -> None:
    contracts = _contracts()
    modules = contracts["importlinter:contract:nats-door"]
    packages = contracts["importlinter:contract:nats-door-packages"]  # with their submodules
    assert modules["forbidden_modules"].split() == packages["forbidden_modules"].split() == ["nats"]
    assert modules["as_packages"] == "False" and "as_packages" not in packages
    whole = set(packages["source_modules"].split())
    assert whole == ADAPTERS | {"natspull._engine", "natspull._observe", "natspull.trio"}
    every = {"natspull"} | _children("natspull") | _children("natspull._transport")
    single = every - whole - {"natspull._engine", "natspull._observe"}
    assert set(modules["source_modules"].split()) == single - WIRE
