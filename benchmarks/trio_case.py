"""The trio path beside the thread path: ``run_trio_case(url, n)``, self-contained.

Consumes the same *n* messages (128 B) three times, each through a fresh consumer and timed like
case 1 (from starting the iterator until every ack has reached the server, a flush):

* ``thread``: ``for msg in consumer.messages(): msg.ack()`` on the calling thread;
* ``trio``: ``async for msg in msgs: msg.ack()`` in one trio task (``natspull.trio``);
* ``trio_16_tasks``: sixteen trio tasks sharing one iterator.

Registered as case 11 (``trio_iterator``), compared with case 1's 128 B row. Run it alone
with ``python -m benchmarks.trio_case [n]``: it starts its own server. Every wait is bounded
by *timeout*: a bug fails the run, never hangs it.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any

import trio

import natspull
import natspull.trio

from ._env import Env
from ._registry import MSGS_PER_S, Sample, case

__all__ = ["run_trio_case", "trio_iterator"]

PAYLOAD = 128


def run_trio_case(url: str, n: int, *, timeout: float = 120.0) -> dict[str, Any]:
    """Measure the thread and the trio iterator on *n* messages; return msgs/s and details.

    Keys: ``n``, ``thread_msgs_per_s``, ``trio_msgs_per_s``, ``trio_16_tasks_msgs_per_s``,
    ``trio_wakeups`` and ``trio_16_tasks_wakeups`` (trio wake-ups over the run: one per burst
    at most, never one per message), ``trio_vs_thread`` (ratio of the one-task rates).
    Raises RuntimeError when a run did not see exactly *n* messages.
    """
    stream = f"TRIOBENCH{uuid.uuid4().hex[:8]}"
    with natspull.connect(url, name="bench-trio-admin") as admin:
        js = admin.jetstream(timeout=30.0)
        js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=natspull.StorageType.FILE)
        try:
            payload = b"x" * PAYLOAD
            for start in range(0, n, 10_000):
                js.publish_many([(f"{stream}.m", payload)] * min(10_000, n - start), timeout=30.0)
            thread_rate = _with_consumer(js, stream, lambda name: _thread_run(url, stream, name, n, timeout))
            trio_rate, trio_wakeups = _with_consumer(
                js, stream, lambda name: trio.run(_trio_run, url, stream, name, n, 1, timeout)
            )
            shared_rate, shared_wakeups = _with_consumer(
                js, stream, lambda name: trio.run(_trio_run, url, stream, name, n, 16, timeout)
            )
        finally:
            js.delete_stream(stream)
    return {
        "n": n,
        "thread_msgs_per_s": thread_rate,
        "trio_msgs_per_s": trio_rate,
        "trio_16_tasks_msgs_per_s": shared_rate,
        "trio_wakeups": trio_wakeups,
        "trio_16_tasks_wakeups": shared_wakeups,
        "trio_vs_thread": trio_rate / thread_rate,
    }


def _with_consumer(js: natspull.JetStream, stream: str, run: Any) -> Any:
    name = f"bench{uuid.uuid4().hex[:8]}"
    js.add_consumer(stream, name=name, ack_policy=natspull.AckPolicy.EXPLICIT)
    try:
        return run(name)
    finally:
        js.delete_consumer(stream, name)


def _check(count: int, n: int, what: str) -> None:
    if count != n:
        raise RuntimeError(f"{what}: expected {n} messages, got {count}")


def _thread_run(url: str, stream: str, name: str, n: int, timeout: float) -> float:
    with natspull.connect(url) as client:
        consumer = client.jetstream().consumer(stream, name)
        count = 0
        start = time.perf_counter()
        with consumer.messages(stop_after=n) as msgs:
            watchdog = threading.Timer(timeout, msgs.stop)  # the for-loop has no timeout of its own
            watchdog.start()
            try:
                for msg in msgs:
                    msg.ack()
                    count += 1
            finally:
                watchdog.cancel()
                watchdog.join(5.0)
        client.flush(timeout=timeout)
        elapsed = time.perf_counter() - start
    _check(count, n, "thread iterator")
    return n / elapsed


async def _trio_run(
    url: str, stream: str, name: str, n: int, tasks: int, timeout: float
) -> tuple[float, int]:
    async with natspull.trio.open_client(url) as client:
        consumer = await client.jetstream().consumer(stream, name)
        count = 0

        async def work(msgs: natspull.trio.Messages) -> None:
            nonlocal count
            async for msg in msgs:
                msg.ack()
                count += 1

        with trio.fail_after(timeout):
            start = time.perf_counter()
            async with consumer.messages(stop_after=n) as msgs:
                async with trio.open_nursery() as nursery:
                    for _ in range(tasks):
                        nursery.start_soon(work, msgs)
                wakeups = int(msgs.stats().wakeups)
            await client.flush(timeout)
            elapsed = time.perf_counter() - start
    _check(count, n, f"trio iterator, {tasks} task(s)")
    return n / elapsed, wakeups


def main() -> None:
    from natspull.testing import NatsServer

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with NatsServer() as server:
        for key, value in run_trio_case(server.url, n).items():
            print(f"{key:28} {value:,.2f}" if isinstance(value, float) else f"{key:28} {value:,}")


if __name__ == "__main__":
    main()


@case("11", "trio_iterator", "natspull.trio: async for msg in msgs: msg.ack() (1 and 16 tasks)")
def trio_iterator(env: Env) -> list[Sample]:
    result = run_trio_case(env.url, env.sizes.small, timeout=env.timeout)
    n = int(result["n"])
    return [
        Sample("trio, 1 task", result["trio_msgs_per_s"], MSGS_PER_S, n=n, baseline=("iterator", "128 B")),
        Sample(
            "trio, 16 tasks",
            result["trio_16_tasks_msgs_per_s"],
            MSGS_PER_S,
            n=n,
            baseline=("iterator", "128 B"),
        ),
    ]
