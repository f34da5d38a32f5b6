"""``natspull worker``: a CPU-bound handler in 1 and 2 worker processes (case 13).

The handler spins SPIN seconds of pure Python, then acks. Threads of one process share the GIL,
so only processes add CPU: on a machine with two free cores, 2 processes should handle close to
twice as many messages per second as 1. The supervisor runs as ``python -m natspull worker``
(as in production). The messages are published before it starts (a publisher running during
the measurement would take CPU from the workers); the clock starts once every process is
consuming, at the ack floor of that moment, and stops when the ack floor reaches the last
message (polled every 10 ms): the rate counts the messages acked in between.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import natspull

from ._env import BenchmarkError, Env
from ._registry import MSGS_PER_S, Sample, case, target

if TYPE_CHECKING:
    from ._report import Results

SPIN = 0.0002  # seconds of CPU per message
PROCESSES = (1, 2)
THREADS = 2
POLL = 0.01
WORKERS = "worker_processes"


def spin(msg: natspull.Msg) -> None:
    """The handler the worker processes import (``benchmarks.workers:spin``)."""
    end = time.perf_counter() + SPIN
    while time.perf_counter() < end:
        pass
    msg.ack()


def _poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll every 10 ms (the workers need the CPU more than a tight poll); bounded by *timeout*."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


def _rate(env: Env, n: int, processes: int) -> float:
    """Handle *n* messages with *processes* worker processes; return messages per second."""
    root = str(Path(__file__).resolve().parent.parent)
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(env.temp_stream())
        # Ephemeral: without a longer inactive_threshold the server deletes it after 5 s without
        # a reader, which publishing and starting the workers can outlast on a loaded machine.
        policy = natspull.AckPolicy.EXPLICIT
        config = {"ack_policy": policy, "inactive_threshold": 2 * env.timeout}
        name = stack.enter_context(env.temp_consumer(stream, **config))
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="natspull-bench-"))
        out_path = os.path.join(tmp, "stdout")
        argv = [sys.executable, "-m", "natspull", "worker", "benchmarks.workers:spin", "--stream", stream]
        argv += ["--consumer", name, "--server", env.url, "--processes", str(processes)]
        argv += ["--threads", str(THREADS), "--status", "lines", "--status-interval", "3600"]
        pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        acks = env.js.publish_many([(f"{stream}.m", b"x" * 128)] * n, timeout=env.timeout)
        last = acks[-1].seq
        consumer = env.js.consumer(stream, name)

        def acked() -> int:
            floor = consumer.info().ack_floor
            return 0 if floor is None else floor.stream_seq

        with open(out_path, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, env={**os.environ, "PYTHONPATH": pythonpath})
        try:

            def consuming() -> bool:
                if proc.poll() is not None:
                    raise BenchmarkError(f"natspull worker exited with {proc.returncode}")
                return Path(out_path).read_text().count("consuming") >= processes

            _poll(consuming, env.timeout, f"{processes} worker process(es) consuming")
            start = time.perf_counter()
            first = acked()
            if last - first < n // 2:
                raise BenchmarkError(f"{first} of {n} messages were acked before every process consumed")
            _poll(lambda: acked() >= last, env.timeout, f"{n} messages acked")
            elapsed = time.perf_counter() - start
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(env.timeout)
            if code != 0:
                raise BenchmarkError(f"natspull worker exited with {code} after SIGTERM")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(env.timeout)
    return (last - first) / elapsed


@case("13", WORKERS, "natspull worker: ~200 us CPU-bound handler in 1 and 2 processes (2 threads each)")
def worker_processes(env: Env) -> list[Sample]:
    n = env.sizes.workers
    baseline = (WORKERS, "processes=1")
    return [
        Sample(f"processes={p}", _rate(env, n, p), MSGS_PER_S, n=n, baseline=baseline, ideal=p / SPIN)
        for p in PROCESSES
    ]


def _speedup(results: Results) -> float | None:
    one = results.median(WORKERS, "processes=1")
    two = results.median(WORKERS, "processes=2")
    return None if one is None or two is None else two / one


target("case 13: 2 processes >= 1.7x 1 process (CPU-bound handler, 2 cores)", _speedup, 1.7, "x")
