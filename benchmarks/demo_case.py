"""The CLI's demo beside case 1: the consume rate ``natspull demo`` prints (case 14).

Runs ``python -m natspull demo --messages N --size 128 --server URL`` against the benchmark's
server (the demo creates its own stream and deletes it) and reads the rate from the ``consume``
line it prints. The demo times a for-loop over ``consumer.messages()`` with an ack per message,
as case 1 does, with its progress display on top; the row's ratio is against case 1 at 128 B.
"""

from __future__ import annotations

import re
import subprocess
import sys

from ._env import BenchmarkError, Env
from ._registry import MSGS_PER_S, Sample, case, target
from ._report import Results
from .throughput import ITERATOR, PAYLOADS, SMALL

__all__ = ["demo"]

DEMO = "demo"
# "consume  100,000 msgs in 1.52 s: 65,789 msgs/s, 8.42 MB/s"
_CONSUME_LINE = re.compile(r"^consume\s+([\d,]+) msgs in [\d.]+ s: ([\d,]+) msgs/s", re.MULTILINE)


@case("14", DEMO, "natspull demo: the consume rate it prints (for-loop + ack), vs case 1")
def demo(env: Env) -> list[Sample]:
    n = env.sizes.small
    command = [sys.executable, "-m", "natspull", "demo", "--messages", str(n), "--size", str(PAYLOADS[SMALL])]
    try:
        run = subprocess.run(
            [*command, "--server", env.url], capture_output=True, text=True, timeout=env.timeout
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"natspull demo did not finish within {env.timeout:g} s") from None
    found = _CONSUME_LINE.search(run.stdout)
    if run.returncode or found is None:
        raise BenchmarkError(f"natspull demo: exit status {run.returncode}\n{run.stdout}{run.stderr}")
    consumed, rate = (int(group.replace(",", "")) for group in found.groups())
    if consumed != n:
        raise BenchmarkError(f"natspull demo consumed {consumed:,} of {n:,} messages")
    return [Sample(SMALL, rate, MSGS_PER_S, n=n, baseline=(ITERATOR, SMALL))]


def _demo_ratio(results: Results) -> float | None:
    return results.ratio(DEMO, SMALL, ITERATOR, SMALL)


target("case 14 (natspull demo's printed consume rate) >= 0.9x case 1, 128 B", _demo_ratio, 0.9, "x")
