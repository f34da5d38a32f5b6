"""Instruction counts of the hot path: ``python -m benchmarks.profile_hot``.

Wall-clock rates move with the load of a shared machine; the instructions a message costs do
not (much). This script fills a stream once (in this process, not counted), then runs each
workload in a child process under ``valgrind --tool=callgrind`` and reports the instructions
(Ir) per message of the whole child process - every thread: the loop thread, the calling
thread, the workers - counted from just before ``messages()`` until a ``flush()`` after the
last ack (as case 1 times it). The child zeroes callgrind's counters before that section with
a client request (a tiny C helper built with ``cc`` on first use) and exits at once after it,
so that callgrind's dump at exit holds the section alone, one file per thread.

Workloads (``--workloads``, default ``ack,noack``):

* ``ack``: ``for msg in consumer.messages(stop_after=n): msg.ack()`` (case 1);
* ``noack``: the same loop on an ``AckPolicy.NONE`` consumer (case 2);
* ``consume``: ``consume(handler, workers=8)``, the handler acks at once (case 3 without its sleep);
* ``trio``: ``async for msg in msgs: msg.ack()`` in one trio task (case 11);
* ``publish_async``: 8 threads each call ``js.publish_async()`` n/8 times, then wait for their
  futures (case 8b; the consumer is not read).
* ``publish_many``: one ``js.publish_many()`` of n messages (case 8); ``nats_py_publish``: case
  8's reference, nats-py's ``publish_async`` from one asyncio task (its connect counted too).
* ``publish``: ``js.publish()`` n times, one at a time (case 8s); ``nats_py_publish_one``:
  case 8s's reference, nats-py's ``await js.publish()`` n times from one task.
* ``core``: the core ceiling (case 10): nats-py's own core subscription receiving n messages
  published while its loop was blocked; only the receiving is counted (no natspull code runs).

``--tool calls`` counts Python function calls per message instead (``sys.setprofile`` on every
thread; deterministic, but the profiler makes the run itself slow), with the functions called
most. ``--tool none`` only runs the workloads: wall-clock rate and the process's CPU time per
message (every thread, user + system), which shows whether a workload is CPU-bound, and
nats-server's over the child's whole run (start-up included; for ``core``, the publishing
too). ``--annotate`` keeps the callgrind files and prints ``callgrind_annotate``'s top
functions for each. ``--gc-off`` runs the workloads with the cyclic garbage collector
disabled: an experiment that shows what the collector costs (``publish_async``'s futures),
never something natspull does.

Usage::

    python -m benchmarks.profile_hot                       # ack, noack: Ir per message
    python -m benchmarks.profile_hot --workloads ack,noack,consume,trio --n 20000
    python -m benchmarks.profile_hot --tool calls --workloads ack
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import natspull

from ._env import run_async
from .publish import nats_py_publish_async, nats_py_publish_sequential
from .throughput import core_receive

WORKLOADS = (
    "ack",
    "noack",
    "consume",
    "trio",
    "publish_async",
    "publish_many",
    "nats_py_publish",
    "publish",
    "nats_py_publish_one",
    "core",
)
PUBLISHERS = 8  # threads of the publish_async workload
PAYLOAD = 128
TIMEOUT = 600.0  # the child's bound on one run (callgrind is ~50x slower)

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void natspull_zero(void) { CALLGRIND_ZERO_STATS; }
"""


# ----------------------------------------------------------------------------- child side


def _callgrind_helper() -> Any:
    """ctypes handle of the zero/dump helper, built into a cache directory on first use."""
    cache = Path(tempfile.gettempdir()) / f"natspull-callgrind-{os.getuid()}"
    cache.mkdir(exist_ok=True)
    lib = cache / "helper.so"
    if not lib.exists():
        src = cache / "helper.c"
        src.write_text(_HELPER_C)
        subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


class _Calls:
    """Counts Python calls (``call`` and ``c_call`` profile events) per thread name and function."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.on = False

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if not self.on:
            return
        if event == "call":
            code = frame.f_code
            where = f"{code.co_qualname} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})"
        elif event == "c_call":
            where = f"{getattr(arg, '__qualname__', arg)} [C]"
        else:
            return
        self.counts[(threading.current_thread().name, where)] += 1

    def install(self) -> None:
        threading.setprofile(self.profile)
        sys.setprofile(self.profile)


def _child(args: argparse.Namespace) -> None:
    if args.gc_off:
        gc.disable()
    calls = _Calls() if args.tool == "calls" else None
    if calls is not None:
        calls.install()  # before connect(): the loop thread inherits it
    helper = _callgrind_helper() if args.tool == "callgrind" else None
    n = args.n
    with natspull.connect(args.url) as client:
        consumer = client.jetstream().consumer(args.stream, args.consumer)
        client.flush(timeout=TIMEOUT)
        count = 0
        if helper is not None:
            helper.natspull_zero()
        if calls is not None:
            calls.on = True
        start, cpu = time.perf_counter(), _cpu()
        if args.workload in ("ack", "noack"):
            with consumer.messages(stop_after=n) as msgs:
                watchdog = threading.Timer(TIMEOUT, msgs.stop)
                watchdog.start()
                if args.workload == "ack":
                    for msg in msgs:
                        msg.ack()
                        count += 1
                else:
                    for _msg in msgs:
                        count += 1
                watchdog.cancel()
        elif args.workload == "consume":
            done = threading.Event()
            lock = threading.Lock()

            def handler(msg: natspull.Msg) -> None:
                nonlocal count
                msg.ack()
                with lock:
                    count += 1
                    if count == n:
                        done.set()

            with consumer.consume(handler, workers=8, stop_after=n) as ctx:
                done.wait(TIMEOUT)
            ctx.wait(TIMEOUT)
        elif args.workload == "trio":
            count = _trio_run(args.url, args.stream, args.consumer, n)
        elif args.workload == "publish_async":
            count = _publish_async_run(client, f"{args.stream}.pub", n, args.size)
        elif args.workload == "publish_many":
            entries = [(f"{args.stream}.pub", b"x" * args.size)] * n
            count = len(client.jetstream(timeout=TIMEOUT).publish_many(entries))
        elif args.workload == "nats_py_publish":
            run_async(nats_py_publish_async(args.url, f"{args.stream}.pub", n), TIMEOUT)
            count = n
        elif args.workload == "publish":
            js = client.jetstream(timeout=TIMEOUT)
            payload = b"x" * args.size
            count = sum(1 for _ in range(n) if js.publish(f"{args.stream}.pub", payload).seq)
        elif args.workload == "nats_py_publish_one":
            run_async(nats_py_publish_sequential(args.url, f"{args.stream}.pub", n), TIMEOUT)
            count = n
        elif args.workload == "core":
            began: list[float] = []

            def begin() -> None:  # the receive alone: the publishing before it is not counted
                if helper is not None:
                    helper.natspull_zero()
                began[:] = [time.perf_counter(), _cpu()]

            run_async(core_receive(args.url, n, args.size, TIMEOUT, on_start=begin), TIMEOUT)
            count = n
            start, cpu = began
        client.flush(timeout=TIMEOUT)
        elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
        if calls is not None:
            calls.on = False
        result: dict[str, Any] = {"count": count, "elapsed": elapsed, "cpu": cpu}
        if calls is not None:
            sys.setprofile(None)
            threading.setprofile(None)
            result["calls"] = [[t, f, c] for (t, f), c in calls.counts.most_common()]
        Path(args.out).write_text(json.dumps(result))
        if helper is not None:
            # callgrind's dump request writes the calling thread's counters only; its dump at
            # exit writes every thread's (since the zero): exit now, before any teardown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _publish_async_run(client: natspull.Client, subject: str, n: int, size: int) -> int:
    js = client.jetstream(timeout=TIMEOUT)
    payload = b"x" * size
    counts: list[int] = []

    def publisher(k: int) -> None:
        futures = [js.publish_async(subject, payload) for _ in range(k)]
        counts.append(sum(1 for future in futures if future.result(TIMEOUT).seq))

    shares = [n // PUBLISHERS + (i < n % PUBLISHERS) for i in range(PUBLISHERS)]
    threads = [
        threading.Thread(target=publisher, args=(k,), name=f"publisher-{i}") for i, k in enumerate(shares)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def _process_cpu(pid: int | None) -> float | None:
    """CPU seconds of process *pid* so far (user + system; Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    """CPU seconds of this process so far, every thread, user + system."""
    times = os.times()
    return times.user + times.system


def _trio_run(url: str, stream: str, name: str, n: int) -> int:
    import trio

    import natspull.trio

    async def run() -> int:
        count = 0
        async with natspull.trio.open_client(url) as client:
            consumer = await client.jetstream().consumer(stream, name)
            with trio.fail_after(TIMEOUT):
                async with consumer.messages(stop_after=n) as msgs:
                    async for msg in msgs:
                        msg.ack()
                        count += 1
                await client.flush(TIMEOUT)
        return count

    return trio.run(run)


# ---------------------------------------------------------------------------- driver side


def _total_ir(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _run_one(
    args: argparse.Namespace, url: str, stream: str, js: natspull.JetStream, workload: str
) -> dict[str, Any]:
    name = f"prof{uuid.uuid4().hex[:8]}"
    policy = natspull.AckPolicy.NONE if workload == "noack" else natspull.AckPolicy.EXPLICIT
    # durable: an ephemeral consumer could expire while valgrind starts the child
    js.add_consumer(stream, durable_name=name, ack_policy=policy)
    work = Path(tempfile.mkdtemp(prefix=f"natspull-prof-{workload}-"))
    out = work / "result.json"
    child = [
        sys.executable, "-m", "benchmarks.profile_hot", "--child",
        "--workload", workload, "--url", url, "--stream", stream, "--consumer", name,
        "--n", str(args.n), "--tool", args.tool, "--out", str(out),
    ]  # fmt: skip
    if args.gc_off:
        child.append("--gc-off")
    if args.tool == "callgrind":
        child = [
            "valgrind", "--tool=callgrind", "--separate-threads=yes",
            f"--callgrind-out-file={work}/callgrind.out.%p", *child,
        ]  # fmt: skip
    env = dict(os.environ, PYTHONHASHSEED="0")
    try:
        proc = subprocess.run(child, env=env, capture_output=True, text=True, timeout=TIMEOUT * 2)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{workload}: the child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    finally:
        js.delete_consumer(stream, name)
    result: dict[str, Any] = json.loads(out.read_text())
    if result["count"] != args.n:
        raise RuntimeError(f"{workload}: expected {args.n} messages, got {result['count']}")
    result["workload"] = workload
    if args.tool == "callgrind":
        # One file per thread, written at exit: callgrind.out.<pid>-<thread>
        parts = sorted(work.glob("callgrind.out.*-*"))
        per_thread = {re.sub(r".*-0*", "t", p.name): _total_ir(p) for p in parts}
        result["ir"] = sum(per_thread.values())
        result["threads"] = per_thread
        result["dir"] = str(work)
        if args.annotate:
            text = []
            for part in parts:  # callgrind_annotate reads one file: one per thread
                ann = subprocess.run(
                    ["callgrind_annotate", "--inclusive=no", "--threshold=95", str(part)],
                    capture_output=True, text=True,
                )  # fmt: skip
                text.append(ann.stdout)
            merged = work / "annotate.txt"
            merged.write_text("\n".join(text))
            result["annotate"] = str(merged)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    n = args.n
    if args.tool == "callgrind":
        print(f"\n{'workload':10} {'Ir/msg':>9}   per thread (Ir/msg; t1 = the calling thread)")
        for r in results:
            busy = [(t, ir) for t, ir in sorted(r["threads"].items()) if ir / n >= 50]
            threads = "  ".join(f"{t}={ir / n:,.0f}" for t, ir in busy)
            print(f"{r['workload']:10} {r['ir'] / n:>9,.0f}   {threads}")
            if args.annotate:
                print(f"           annotate: {r['annotate']}")
    elif args.tool == "calls":
        for r in results:
            by_thread: collections.Counter[str] = collections.Counter()
            by_role: collections.Counter[tuple[str, str]] = collections.Counter()  # threads of a role
            for thread, func, c in r["calls"]:
                role = re.sub(r"-\d+.*|\(.*", "", thread)
                by_thread[role] += c
                by_role[(role, func)] += c
            total = sum(by_thread.values())
            split = ", ".join(f"{t} {c / n:.1f}" for t, c in by_thread.most_common())
            print(f"\n{r['workload']}: {total / n:.1f} Python calls per message ({split})")
            for (role, func), c in by_role.most_common(args.top):
                if c / n >= 0.01:
                    print(f"  {c / n:7.2f}  {role[:22]:22}  {func}")
    else:
        for r in results:
            rate, cpu_us = n / r["elapsed"], r["cpu"] / n * 1e6
            server = r.get("server_cpu")
            beside = "" if server is None else f"; nats-server {server / n * 1e6:.1f} us (whole child run)"
            print(
                f"{r['workload']:10} {rate:,.0f} msgs/s, {cpu_us:.1f} us of process CPU per message{beside} "
                f"(wall clock: not comparable across loads)"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_hot", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--n", type=int, default=20_000, help="messages per workload (default 20,000)")
    parser.add_argument("--size", type=int, default=PAYLOAD, help=f"payload bytes (default {PAYLOAD})")
    parser.add_argument("--workloads", default="ack,noack", help=f"comma-separated, of {','.join(WORKLOADS)}")
    parser.add_argument("--tool", choices=("callgrind", "calls", "none"), default="callgrind")
    parser.add_argument("--annotate", action="store_true", help="keep callgrind's files, annotate them")
    parser.add_argument("--top", type=int, default=40, help="functions listed by --tool calls")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="run the workloads with the cyclic garbage collector disabled (an experiment: "
        "what the collector costs; never something natspull does)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--workload", "--url", "--stream", "--consumer", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.tool == "callgrind" and shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (try --tool calls)")
    from natspull.testing import NatsServer

    with NatsServer() as server, natspull.connect(server.url) as admin:
        js = admin.jetstream(timeout=60.0)
        stream = "PROFHOT"
        js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=natspull.StorageType.FILE)
        payload = b"x" * args.size
        for start in range(0, args.n, 10_000):
            js.publish_many([(f"{stream}.m", payload)] * min(10_000, args.n - start), timeout=60.0)
        results = []
        for workload in workloads:
            print(f"running {workload} ({args.tool}) ...", file=sys.stderr, flush=True)
            before = _process_cpu(server.pid)
            result = _run_one(args, server.url, stream, js, workload)
            after = _process_cpu(server.pid)
            if before is not None and after is not None:
                result["server_cpu"] = after - before
            results.append(result)
    _report(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
