"""``python -m benchmarks [--quick] [--cases a,b] [--repeat N] [--json out.json]``.

Starts its own nats-server (``natspull.testing.NatsServer``, file storage), runs the selected
cases in this process, interleaving the repetitions (1 2 ... 10, 1 2 ... 10, ...), prints a
table of medians and min-max with ratios against nats-py, and optionally writes JSON.

Exit status: 0 when every case ran, 1 when a case failed, 2 for bad arguments; a case that
exceeds its hard deadline dumps every thread's stack and exits with status 3.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import importlib.metadata
import json
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import natspull
from natspull.testing import NatsServer

from ._env import FULL, QUICK, Env, Sizes
from ._registry import TARGETS, Case, Sample, Skip, load_cases
from ._report import Results, render_table, render_targets, to_json

WAIT_TIMEOUT = {False: 60.0, True: 30.0}  # bound of one blocking wait inside a case
CASE_DEADLINE = {False: 600.0, True: 120.0}  # hard bound of one case repetition


def _parse(argv: Sequence[str] | None, cases: list[Case]) -> argparse.Namespace:
    width = max((len(c.key) for c in cases), default=0)
    listing = "\n".join(f"  {c.number:>4}  {c.key:<{width}}  {c.title}" for c in cases)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark natspull against nats-py on a nats-server started for the run.",
        epilog=f"cases:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 1 repetition (CI: keeps the suite alive)"
    )
    parser.add_argument("--cases", help="comma-separated case numbers or keys (default: all)")
    parser.add_argument("--repeat", type=int, help="repetitions of every case (default: 5, quick: 1)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.cases:
        by_name = {c.key: c for c in cases} | {c.number: c for c in cases}
        wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in by_name]
        if unknown or not wanted:
            parser.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}; choose from:\n{listing}")
        chosen = {by_name[w].key for w in wanted}
        args.selected = [c for c in cases if c.key in chosen]
    else:
        args.selected = cases
    return args


class _HardDeadline:
    """If a case repetition outlives *seconds*: dump all stacks, kill the server, exit(3).

    The cases bound their own waits; this is the last resort that keeps CI from hanging.
    """

    def __init__(self, seconds: float, what: str, server: NatsServer) -> None:
        def expire() -> None:
            print(f"\nbenchmarks: {what} exceeded its {seconds:g} s deadline; stacks:", file=sys.stderr)
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            server.kill()
            os._exit(3)

        self._timer = threading.Timer(seconds, expire)
        self._timer.name = "bench-deadline"
        self._timer.daemon = True

    def __enter__(self) -> None:
        self._timer.start()

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()


def _meta(env: Env, args: argparse.Namespace, sizes: Sizes, repeat: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "python": platform.python_version(),
        "natspull": natspull.__version__,
        "nats-py": importlib.metadata.version("nats-py"),
        "nats-server": env.client.server_info.get("version", "?"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mode": "quick" if args.quick else "full",
        "repeat": repeat,
        "sizes": sizes.__dict__,
        "cases": [c.key for c in args.selected],
        "sleep_1ms_takes_ms": round(_sleep_ms(), 4),
        "loadavg_before": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages: other work on the machine skews every number."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _sleep_ms(seconds: float = 0.001, times: int = 200) -> float:
    """How long ``time.sleep(seconds)`` really takes here, in ms (the cases 3 and 9 handlers sleep)."""
    start = time.perf_counter()
    for _ in range(times):
        time.sleep(seconds)
    return (time.perf_counter() - start) / times * 1e3


def _summary(samples: list[Sample]) -> str:
    return "; ".join(f"{s.label} {s.value:,.3g} {s.unit}" for s in samples)


def main(argv: Sequence[str] | None = None) -> int:
    cases = load_cases()
    args = _parse(argv, cases)
    sizes = QUICK if args.quick else FULL
    repeat = args.repeat or sizes.repeat
    results = Results()
    failures: list[str] = []
    started = time.monotonic()
    with NatsServer() as server:
        env = Env(server.url, sizes, quick=args.quick, timeout=WAIT_TIMEOUT[args.quick])
        try:
            meta = _meta(env, args, sizes, repeat)
            print(
                f"benchmarks ({meta['mode']}, {repeat} repetition(s)): python {meta['python']}, "
                f"nats-py {meta['nats-py']}, nats-server {meta['nats-server']}, "
                f"natspull {meta['natspull']}, {meta['cpus']} CPU(s) {meta['cpu']}",
                flush=True,
            )
            print(
                f"time.sleep(0.001) takes {meta['sleep_1ms_takes_ms']:.3f} ms here: the sleep alone "
                f"caps cases 3/3b at {1 / meta['sleep_1ms_takes_ms']:.0%} of their ideal; "
                f"load average {meta['loadavg_before']}",
                flush=True,
            )
            for rep in range(1, repeat + 1):
                for case in args.selected:
                    if case.key in results.skipped:
                        continue
                    t0 = time.monotonic()
                    try:
                        with _HardDeadline(
                            CASE_DEADLINE[args.quick], f"case {case.number} {case.key}", server
                        ):
                            samples = case.fn(env)
                    except Skip as skip:
                        results.skip(case, str(skip))
                        print(f"[{rep}/{repeat}] {case.number:>3} {case.key}: skipped: {skip}", flush=True)
                        continue
                    except Exception:
                        failures.append(f"case {case.number} {case.key} (repetition {rep})")
                        print(f"[{rep}/{repeat}] {case.number:>3} {case.key}: FAILED", flush=True)
                        traceback.print_exc()
                        continue
                    results.add(case, samples)
                    took = time.monotonic() - t0
                    print(
                        f"[{rep}/{repeat}] {case.number:>3} {case.key} ({took:.1f} s): {_summary(samples)}",
                        flush=True,
                    )
        finally:
            env.close()
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["loadavg_after"] = _loadavg()
    meta["failures"] = failures
    print()
    print(render_table(results))
    print()
    print(render_targets(results, TARGETS))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(to_json(results, TARGETS, meta), out, indent=2)
            out.write("\n")
        print(f"\nwrote {args.json}")
    if failures:
        print(f"\n{len(failures)} case run(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
