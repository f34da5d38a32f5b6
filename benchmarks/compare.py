"""``python -m benchmarks.compare REV [--cases 1,2,2b,3] [--rounds 5] [--quick]``.

Side by side: this working tree against git revision REV. REV is checked out into a temporary
worktree; then ``python -m benchmarks --cases C --repeat 1`` runs in each tree in turn (each
tree's own natspull and benchmark code), alternating which goes first from round to round, so
that a change in the machine's load hits both alike. Prints, per measurement, the median of
each tree over the rounds, every round's value, and the ratio (this tree / REV); for rates
above 1 is faster, for times (ms, MiB) below 1 is better.

Exit status: 0 when every run finished, 1 when one failed (its output is printed), 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # the tree this module belongs to

Key = tuple[str, str]  # (case number, measurement)
Runs = dict[str, dict[Key, list[float]]]  # tree -> measurement -> one median per round


def main(argv: Sequence[str] | None = None) -> int:
    description = "Side by side: this working tree against git revision REV."
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=description)
    parser.add_argument("rev", help="git revision to compare against, e.g. HEAD~3 or a commit")
    parser.add_argument("--cases", default="1,2,2b,3", help="comma-separated cases (default: 1,2,2b,3)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each tree (default: 5)")
    parser.add_argument("--quick", action="store_true", help="the cases' small sizes")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    with tempfile.TemporaryDirectory(prefix="natspull-compare-") as tmp:
        other = Path(tmp) / "tree"
        added = subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", "--quiet", str(other), args.rev],
            capture_output=True,
            text=True,
        )
        if added.returncode:
            print(f"cannot check out {args.rev!r}: {added.stderr.strip()}", file=sys.stderr)
            return 2
        try:
            trees = {args.rev: other, "this tree": HERE}
            results = _rounds(trees, args, Path(tmp))
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(other)], check=False)
    if results is None:
        return 1
    _print(results, list(trees))
    return 0


def _rounds(trees: dict[str, Path], args: argparse.Namespace, tmp: Path) -> Runs | None:
    names = list(trees)
    results: Runs = {name: {} for name in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            out = tmp / f"{round_}-{names.index(name)}.json"
            command = [sys.executable, "-m", "benchmarks", "--cases", args.cases, "--repeat", "1"]
            command += ["--json", str(out)] + (["--quick"] if args.quick else [])
            print(f"round {round_ + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            env = {**os.environ, "PYTHONPATH": str(trees[name])}
            run = subprocess.run(command, cwd=trees[name], env=env, capture_output=True, text=True)
            if run.returncode:
                print(f"{name}: exit status {run.returncode}\n{run.stdout}{run.stderr}", file=sys.stderr)
                return None
            for row in json.loads(out.read_text())["results"]:
                results[name].setdefault((row["case"], row["measurement"]), []).append(row["median"])
    return results


def _print(results: Runs, names: list[str]) -> None:
    before, after = names
    for key in sorted(results[after], key=lambda k: (_case_order(k[0]), k[1])):
        if key not in results[before]:
            print(f"case {key[0]:<4} {key[1]:<28} only in this tree")
            continue
        old, new = statistics.median(results[before][key]), statistics.median(results[after][key])
        ratio = f"{new / old:.3f}" if old else "-"
        print(f"case {key[0]:<4} {key[1]:<28} {before}: {_fmt(old)}  this tree: {_fmt(new)}  ratio {ratio}")
        for name in names:
            print(f"    {name}: {', '.join(_fmt(v) for v in results[name][key])}")


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"


def _case_order(number: str) -> tuple[int, str]:
    digits = "".join(c for c in number if c.isdigit())
    return (int(digits) if digits else 0, number)


if __name__ == "__main__":
    sys.exit(main())
