"""Aggregation over repetitions, the printed table, the targets and the JSON document."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ._registry import MIB, MS, MSGS_PER_S, Case, Sample, Target

__all__ = ["Results", "Row", "render_table", "render_targets", "to_json"]


@dataclass
class Row:
    """One measured quantity of one case, with its value from every repetition."""

    case: Case
    label: str
    unit: str
    n: int | None
    baseline: tuple[str, str] | None
    ideal: float | None
    versus: tuple[str, str] | None = None
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


class Results:
    """Rows keyed by (case key, label), in the order they were first measured."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.skipped: dict[str, tuple[Case, str]] = {}  # case key -> (case, why)

    def skip(self, case: Case, why: str) -> None:
        """Record that *case* could not run here (see :class:`Skip`)."""
        self.skipped.setdefault(case.key, (case, why))

    def add(self, case: Case, samples: list[Sample]) -> None:
        for s in samples:
            row = self.rows.get((case.key, s.label))
            if row is None:
                row = Row(case, s.label, s.unit, s.n, s.baseline, s.ideal, s.versus)
                self.rows[(case.key, s.label)] = row
            row.values.append(s.value)

    def median(self, key: str, label: str) -> float | None:
        row = self.rows.get((key, label))
        return row.median if row is not None and row.values else None

    def share_of_ideal(self, key: str, label: str) -> float | None:
        """The row's median over the ideal its samples named (None: not run, or no ideal)."""
        row = self.rows.get((key, label))
        if row is None or not row.values or not row.ideal:
            return None
        return row.median / row.ideal

    def ratio(self, key: str, label: str, base_key: str, base_label: str) -> float | None:
        value, base = self.median(key, label), self.median(base_key, base_label)
        if value is None or not base:
            return None
        return value / base

    def comparison(self, row: Row) -> str:
        """The ratio to the row's baseline and/or its share of the ideal, as text."""
        parts = []
        if row.baseline is not None:
            ratio = self.ratio(row.case.key, row.label, *row.baseline)
            base = self.rows.get(row.baseline)
            if ratio is not None and base is not None:
                where = f"case {base.case.number}" if base.case.key != row.case.key else base.label
                parts.append(f"{ratio:.2f}x {where}")
        if row.versus is not None:
            ratio = self.ratio(*row.versus, row.case.key, row.label)
            other = self.rows.get(row.versus)
            if ratio is not None and other is not None:
                parts.append(f"case {other.case.number} at {ratio:.2f}x")
        if row.ideal:
            parts.append(f"{row.median / row.ideal:.0%} of ideal")
        return ", ".join(parts)

    def sorted_rows(self) -> list[Row]:
        order = {key: i for i, key in enumerate(dict.fromkeys(k for k, _ in self.rows))}
        return sorted(self.rows.values(), key=lambda r: (r.case.sort_key, order[r.case.key]))


def _fmt(value: float, unit: str) -> str:
    if unit == MSGS_PER_S:
        return f"{value:,.0f}"
    if unit == MS:
        return f"{value:.3f}"
    if unit == MIB:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render_table(results: Results) -> str:
    header = ("#", "case", "measurement", "n", "median", "min - max", "unit", "compared")
    lines = [header]
    for row in results.sorted_rows():
        spread = f"{_fmt(min(row.values), row.unit)} - {_fmt(max(row.values), row.unit)}"
        lines.append(
            (
                row.case.number,
                row.case.key,
                row.label,
                "" if row.n is None else f"{row.n:,}",
                _fmt(row.median, row.unit),
                spread,
                row.unit,
                results.comparison(row),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {3, 4, 5}  # numbers
    out = []
    for i, line in enumerate(lines):
        cells = [c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    reasons: dict[str, list[str]] = {}  # why -> cases skipped for it, one line each
    for case, why in results.skipped.values():
        reasons.setdefault(why, []).append(f"{case.number} {case.key}")
    for why, which in reasons.items():
        out.append(f"skipped: case{'s' if len(which) > 1 else ''} {', '.join(which)}: {why}")
    return "\n".join(out)


def _fmt_target(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "of ideal":
        return f"{value:.0%} of ideal"
    if unit == MSGS_PER_S:
        return f"{value:,.0f} msgs/s"
    return f"{value:.3g} {unit}"


def render_targets(results: Results, targets: list[Target]) -> str:
    lines = ["Targets (information only, never asserted):"]
    for t in targets:
        value, met = t.evaluate(results)
        status = "n/a" if met is None else "met" if met else "MISSED"
        shown = "not run" if value is None else _fmt_target(value, t.unit)
        lines.append(f"  [{status:>6}]  {t.text}: {shown}")
    return "\n".join(lines)


def to_json(results: Results, targets: list[Target], meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for row in results.sorted_rows():
        rows.append(
            {
                "case": row.case.number,
                "key": row.case.key,
                "title": row.case.title,
                "measurement": row.label,
                "unit": row.unit,
                "n": row.n,
                "values": row.values,
                "median": row.median,
                "min": min(row.values),
                "max": max(row.values),
                "baseline": None
                if row.baseline is None
                else {"key": row.baseline[0], "measurement": row.baseline[1]},
                "ratio": None
                if row.baseline is None
                else results.ratio(row.case.key, row.label, *row.baseline),
                "ideal": row.ideal,
                "versus": None
                if row.versus is None
                else {"key": row.versus[0], "measurement": row.versus[1]},
                "versus_ratio": None
                if row.versus is None
                else results.ratio(*row.versus, row.case.key, row.label),
            }
        )
    checks = []
    for t in targets:
        value, met = t.evaluate(results)
        checks.append({"target": t.text, "value": value, "goal": t.goal, "unit": t.unit, "met": met})
    skipped = [
        {"case": case.number, "key": case.key, "reason": why} for case, why in results.skipped.values()
    ]
    return {"meta": meta, "results": rows, "skipped": skipped, "targets": checks}
