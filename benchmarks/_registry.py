"""The registries: benchmark cases (functions returning samples) and informational targets.

A case is a plain function ``(env) -> list[Sample]`` that runs ONE repetition and returns one
sample per row it measures (for example one per payload size). The runner calls every selected
case once per repetition, interleaved (1 2 3 ... 1 2 3 ...), so that machine drift hits all
cases alike, and aggregates the samples of each row over the repetitions.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._env import Env
    from ._report import Results

__all__ = [
    "CASES",
    "CASE_MODULES",
    "TARGETS",
    "Case",
    "Sample",
    "Skip",
    "Target",
    "case",
    "load_cases",
    "target",
]

# Modules whose import registers cases; add yours here.
CASE_MODULES = (
    "throughput",
    "consume",
    "latency",
    "publish",
    "trio_case",
    "otel_case",
    "workers",
    "js_case",
    "demo_case",
)

MSGS_PER_S = "msgs/s"
MS = "ms"
MIB = "MiB"


@dataclass(frozen=True)
class Sample:
    """One value measured in one repetition of a case.

    ``label`` names the row within the case ("128 B", "natspull p50", ...). ``baseline``
    names the row, as (case key, label), this one is divided by in the ratio column;
    ``versus`` names a row that is divided by this one instead (for a reference row such as
    nats.js: the column then reads "case 1 at 2.10x"); ``ideal`` is what a perfect
    implementation would reach (shown as a percentage).
    """

    label: str
    value: float
    unit: str
    n: int | None = None
    baseline: tuple[str, str] | None = None
    ideal: float | None = None
    versus: tuple[str, str] | None = None


CaseFn = Callable[["Env"], list[Sample]]


class Skip(Exception):
    """Raised by a case that cannot run here (a tool is missing): it returns no samples.

    The message says why, in one line. The runner prints it, does not run the case again in
    later repetitions, lists it under the table and in the JSON, and does not count it as a
    failure (the exit status stays 0).
    """


@dataclass(frozen=True)
class Case:
    number: str  # "1", "3b", "10": the numbering, used for sorting and --cases
    key: str  # a stable identifier, used in --cases, JSON and baselines
    title: str
    fn: CaseFn

    @property
    def sort_key(self) -> tuple[int, str]:
        match = re.fullmatch(r"(\d+)(.*)", self.number)
        return (int(match.group(1)), match.group(2)) if match else (10**6, self.number)


CASES: dict[str, Case] = {}


def case(number: str, key: str, title: str) -> Callable[[CaseFn], CaseFn]:
    """Register a case function under *key* (and *number*); returns the function unchanged."""

    def register(fn: CaseFn) -> CaseFn:
        for existing in CASES.values():
            if existing.key == key or existing.number == number:
                raise ValueError(
                    f"case {number} {key!r} clashes with case {existing.number} {existing.key!r}"
                )
        CASES[key] = Case(number, key, title, fn)
        return fn

    return register


def load_cases() -> list[Case]:
    """Import every module in CASE_MODULES (which registers its cases); return them in order."""
    for module in CASE_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return sorted(CASES.values(), key=lambda c: c.sort_key)


@dataclass(frozen=True)
class Target:
    """A goal printed beside the results, for information: never asserted.

    ``measure`` derives one number from the aggregated results (None when the rows it needs
    were not run); the goal is met when it is >= ``goal`` (or <= with ``lower_is_better``).
    """

    text: str
    measure: Callable[[Results], float | None]
    goal: float
    unit: str
    lower_is_better: bool = False

    def evaluate(self, results: Results) -> tuple[float | None, bool | None]:
        value = self.measure(results)
        if value is None:
            return None, None
        return value, value <= self.goal if self.lower_is_better else value >= self.goal


TARGETS: list[Target] = []


def target(
    text: str, measure: Callable[[Results], float | None], goal: float, unit: str, *, lower: bool = False
) -> None:
    """Register an informational target (see :class:`Target`)."""
    TARGETS.append(Target(text, measure, goal, unit, lower))
