"""The environment shared by all cases, and small helpers.

:class:`Env` holds the server URL, the run sizes (full or quick) and a management client. It
fills the payload streams on first use (outside any timed section) and creates a fresh consumer
per repetition, so that every repetition consumes the same messages from the start.

Every helper that waits does so with a timeout: a bug must fail the benchmark, not hang it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import natspull

__all__ = [
    "FULL",
    "QUICK",
    "BenchmarkError",
    "Counter",
    "Env",
    "LoopThread",
    "Sizes",
    "Watchdog",
    "expect",
    "percentile",
    "rss_mib",
    "run_async",
    "wait_until",
]

T = TypeVar("T")

KIB = 1024
MIB = 1024 * 1024


class BenchmarkError(Exception):
    """A case could not measure what it should (a timeout, a wrong count)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each case does per repetition."""

    small: int  # 128 B messages per throughput run (cases 1, 2, 4)
    large: int  # 16 KiB messages per throughput run (cases 1, 2, 4)
    wrapper: int  # 128 B messages through the naive thread wrapper (case 5)
    consume: int  # messages through consume(workers=8) (case 3)
    scaling: int  # messages per worker count in the scaling table (case 3b)
    latency: int  # publish -> receive samples per library (case 6)
    wakeup: int  # samples per drain()/stop() (case 7)
    publish: int  # 128 B messages published per library (case 8)
    sequential: int  # 128 B messages published one at a time per library (case 8s)
    memory: int  # 64 KiB messages through the slow consumer (case 9)
    core: int  # 128 B core messages received (case 10)
    workers: int  # messages through the CPU-bound handler per process count (case 13)
    repeat: int  # default repetitions


FULL = Sizes(
    small=100_000,
    large=10_000,
    wrapper=20_000,
    consume=16_000,
    scaling=2_000,
    latency=500,
    wakeup=200,
    publish=100_000,
    sequential=5_000,
    memory=1_000,
    core=100_000,
    workers=20_000,
    repeat=5,
)
QUICK = Sizes(
    small=10_000,
    large=1_000,
    wrapper=2_000,
    consume=1_600,
    scaling=200,
    latency=50,
    wakeup=20,
    publish=10_000,
    sequential=500,
    memory=100,
    core=10_000,
    workers=2_000,
    repeat=1,
)


class Env:
    """The server, the sizes and a management client (``js``) shared by every case.

    ``timeout`` bounds every single blocking wait inside a case. Use from the main thread.
    """

    def __init__(self, url: str, sizes: Sizes, *, quick: bool, timeout: float) -> None:
        self.url = url
        self.sizes = sizes
        self.quick = quick
        self.timeout = timeout
        self.client = natspull.connect(url, name="benchmarks-admin")
        self.js = self.client.jetstream(timeout=30.0)
        self._filled: dict[int, tuple[str, int]] = {}  # payload size -> (stream, messages)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.client.close()

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def filled_stream(self, size: int, count: int) -> str:
        """A file-storage stream holding at least *count* messages of *size* bytes (filled once)."""
        name, stored = self._filled.get(size, (f"FILL_{size}", 0))
        if stored == 0:
            self.js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE)
        if stored < count:
            payload = b"x" * size
            # Bounded batches keep the list (and nats-py's write buffer) small for big payloads.
            batch = max(1, min(count - stored, (64 * MIB) // size))
            while stored < count:
                todo = min(batch, count - stored)
                self.js.publish_many([(f"{name}.m", payload)] * todo, timeout=30.0)
                stored += todo
            self._filled[size] = (name, stored)
        return name

    def empty_stream(self, name: str) -> str:
        """A file-storage stream on ``<name>.>``, created once; nothing is published to it here."""
        with contextlib.suppress(natspull.StreamNotFoundError):
            self.js.stream_info(name)
            return name
        self.js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE)
        return name

    @contextlib.contextmanager
    def temp_stream(self) -> Iterator[str]:
        """A new empty file-storage stream, deleted on exit."""
        name = self.unique("PUB")
        self.js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE)
        try:
            yield name
        finally:
            self.js.delete_stream(name)

    @contextlib.contextmanager
    def temp_consumer(self, stream: str, **config: Any) -> Iterator[str]:
        """A new pull consumer on *stream* (deliver all, unless *config* says otherwise), deleted on exit.

        Yields its name; bind to it with ``client.jetstream().consumer(stream, name)``.
        """
        name = self.unique("bench")
        self.js.add_consumer(stream, name=name, **config)
        try:
            yield name
        finally:
            self.js.delete_consumer(stream, name)


class LoopThread:
    """An asyncio event loop running in its own thread: the 'naive wrapper' pattern.

    :meth:`call` runs a coroutine on the loop and blocks on
    ``asyncio.run_coroutine_threadsafe(...).result(timeout)``. A context manager.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BenchmarkError(f"no result within {timeout:g} s on {self._thread.name}") from None

    def close(self, timeout: float = 10.0) -> None:
        """Cancel what is left, stop the loop and join the thread (bounded by *timeout*)."""
        if not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(BenchmarkError):
            self.call(cancel_all(), timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


def run_async(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """``asyncio.run`` the coroutine in this thread, cancelled after *timeout* seconds."""

    async def bounded() -> T:
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise BenchmarkError(f"asyncio part did not finish within {timeout:g} s") from None

    return asyncio.run(bounded())


class Watchdog:
    """Calls *action* from a timer thread if the ``with`` block lasts longer than *timeout*.

    Used to stop an iterator whose ``for`` loop has no timeout of its own; the case then
    sees a short count and fails instead of hanging.
    """

    def __init__(self, timeout: float, action: Callable[[], object]) -> None:
        self.fired = False

        def fire() -> None:
            self.fired = True
            action()

        self._timer = threading.Timer(timeout, fire)
        self._timer.name = "bench-watchdog"
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        self._timer.join(5.0)


class Counter:
    """Counts handler calls from many threads; ``done`` is set at the *goal*-th call."""

    def __init__(self, goal: int) -> None:
        self._lock = threading.Lock()  # guards count; leaf lock
        self.count = 0
        self.goal = goal
        self.done = threading.Event()

    def hit(self) -> None:
        with self._lock:
            self.count += 1
            if self.count == self.goal:
                self.done.set()


def expect(got: int, wanted: int, what: str) -> None:
    if got != wanted:
        raise BenchmarkError(f"expected {wanted} {what}, got {got}")


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank *q*-quantile (0 < q <= 1) of *values*."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def rss_mib() -> float:
    """This process's resident set size (VmRSS from /proc/self/status) in MiB; NaN if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *predicate* every 0.2 ms until true; BenchmarkError after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.0002)
