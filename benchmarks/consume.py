"""consume(): the worker pool with simulated I/O (cases 3, 3b, 3k: ordered per key) and memory
under a slow handler (9).

The handler sleeps 1 ms (simulated I/O) and acks, so *w* workers can at best handle
``w * 1000`` messages per second; the cases report the share of that ideal they reach.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

import natspull

from ._env import KIB, MIB, BenchmarkError, Counter, Env, rss_mib
from ._registry import MIB as MIB_UNIT
from ._registry import MSGS_PER_S, Sample, case, target

SLEEP = 0.001
SCALING_WORKERS = (1, 2, 4, 8, 16, 32)
KEYS = 64
MEMORY_PAYLOAD = 64 * KIB
MEMORY_MAX_BYTES = 1 * MIB
MEMORY_SLEEP = 0.002
RSS_INTERVAL = 0.01

CONSUME = "consume"
SCALING = "consume_scaling"
MEMORY = "memory"
PEAK_GROWTH = "RSS growth, peak"


def consume_rate(
    env: Env, n: int, workers: int, pause: float = SLEEP, key: Callable[[natspull.Msg], object] | None = None
) -> float:
    """Handle *n* 128 B messages with ``consume(handler, workers=..., key=...)``, the handler
    sleeping *pause* seconds (0: not at all) and acking; return messages per second."""
    stream = env.filled_stream(128, n)
    counter = Counter(n)

    def handler(msg: natspull.Msg) -> None:
        if pause:
            time.sleep(pause)
        msg.ack()
        counter.hit()

    with (
        env.temp_consumer(stream, ack_policy=natspull.AckPolicy.EXPLICIT) as name,
        natspull.connect(env.url) as client,
    ):
        consumer = client.jetstream().consumer(stream, name)
        start = time.perf_counter()
        end = _run_until_handled(env, client, consumer.consume(handler, workers=workers, key=key), counter)
    return n / (end - start)


def _run_until_handled(
    env: Env, client: natspull.Client, ctx: natspull.ConsumeContext, counter: Counter
) -> float:
    """Wait until *counter* reached its goal, stop *ctx*, flush the acks, join the workers.

    Returns ``time.perf_counter()`` after the flush: every ack has then reached the server.

    Raises BenchmarkError on a timeout, or the error that ended the workers early.
    """
    deadline = time.monotonic() + env.timeout
    try:
        while not counter.done.wait(0.01):
            if ctx.closed or time.monotonic() > deadline:  # ended early (an error) or too slow
                break
    finally:
        ctx.stop()
    client.flush(timeout=env.timeout)
    flushed = time.perf_counter()
    if not ctx.wait(env.timeout):  # re-raises what ended the workers early, if anything
        raise BenchmarkError(f"consume workers did not exit within {env.timeout:g} s")
    if not counter.done.is_set():
        raise BenchmarkError(f"handled {counter.count} of {counter.goal} messages within {env.timeout:g} s")
    return flushed


@case("3", CONSUME, "natspull: consume(handler, workers=8); handler sleeps 1 ms, then acks")
def consume_8(env: Env) -> list[Sample]:
    n = env.sizes.consume
    return [Sample("workers=8", consume_rate(env, n, 8), MSGS_PER_S, n=n, ideal=8 / SLEEP)]


@case("3b", SCALING, "natspull: consume() scaling with workers; handler sleeps 1 ms")
def consume_scaling(env: Env) -> list[Sample]:
    samples = []
    for w in SCALING_WORKERS:
        n = env.sizes.scaling * max(1, w // 8)  # above 8 workers: as long a run as with 8
        samples.append(Sample(f"workers={w}", consume_rate(env, n, w), MSGS_PER_S, n=n, ideal=w / SLEEP))
    return samples


def _key_of(msg: natspull.Msg) -> int:
    """64 keys, round robin over the stream: the messages of a key are 64 apart."""
    return msg.metadata.sequence.stream % KEYS


@case("3k", "consume_keyed", "natspull: consume(handler, workers=8, key=...) over 64 keys; sleeps 1 ms")
def consume_keyed(env: Env) -> list[Sample]:
    n = env.sizes.consume
    return [
        Sample(
            f"workers=8, {KEYS} keys",
            consume_rate(env, n, 8, key=_key_of),
            MSGS_PER_S,
            n=n,
            baseline=(CONSUME, "workers=8"),
            ideal=8 / SLEEP,
        )
    ]


class _RssSampler:
    """Records the peak RSS every RSS_INTERVAL seconds on a thread until stopped."""

    def __init__(self) -> None:
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            self.peak = max(self.peak, rss_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5.0)
        return max(self.peak, rss_mib())


@case("9", MEMORY, "natspull: RSS, slow consume() (sleeps 2 ms), 64 KiB payloads, max_bytes=1 MiB")
def memory(env: Env) -> list[Sample]:
    return _memory(env, max_bytes=MEMORY_MAX_BYTES, max_messages=None)


@case("9b", "memory_msgs", "natspull: as case 9, bounded by max_messages=16 (also 1 MiB) instead")
def memory_msgs(env: Env) -> list[Sample]:
    return _memory(env, max_bytes=None, max_messages=MEMORY_MAX_BYTES // MEMORY_PAYLOAD)


def _memory(env: Env, *, max_bytes: int | None, max_messages: int | None) -> list[Sample]:
    """RSS before and growth while one slow worker handles 64 KiB messages under the given bound."""
    n = env.sizes.memory
    stream = env.filled_stream(MEMORY_PAYLOAD, n)
    counter = Counter(n)

    def handler(msg: natspull.Msg) -> None:
        time.sleep(MEMORY_SLEEP)
        msg.ack()
        counter.hit()

    with (
        env.temp_consumer(stream, ack_policy=natspull.AckPolicy.EXPLICIT) as name,
        natspull.connect(env.url) as client,
    ):
        consumer = client.jetstream().consumer(stream, name)
        gc.collect()
        baseline = rss_mib()
        sampler = _RssSampler()
        try:
            _run_until_handled(
                env,
                client,
                consumer.consume(handler, workers=1, max_bytes=max_bytes, max_messages=max_messages),
                counter,
            )
        finally:
            peak = sampler.stop()
        end = rss_mib()
    return [
        Sample("RSS before the run", baseline, MIB_UNIT),
        Sample(PEAK_GROWTH, peak - baseline, MIB_UNIT, n=n),
        Sample("RSS growth, at the end", end - baseline, MIB_UNIT, n=n),
    ]


target(
    "case 3 >= 85% of the ideal 8,000 msgs/s",
    lambda r: r.share_of_ideal(CONSUME, "workers=8"),
    0.85,
    "of ideal",
)
target(
    "case 3b workers=32 >= 90% of the ideal 32,000 msgs/s",
    lambda r: r.share_of_ideal(SCALING, "workers=32"),
    0.9,
    "of ideal",
)
target("case 9 RSS growth <= 4 MiB", lambda r: r.median(MEMORY, PEAK_GROWTH), 4.0, "MiB", lower=True)
target(
    "case 9b RSS growth <= 4 MiB (max_messages bound)",
    lambda r: r.median("memory_msgs", PEAK_GROWTH),
    4.0,
    "MiB",
    lower=True,
)
