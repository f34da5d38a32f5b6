"""Throughput: the natspull iterator (cases 1, 2), nats-py baselines (4, 5), the core ceiling (10).

Every repetition consumes a full stream through a fresh consumer. Timing starts before the
subscription is set up (``messages()`` / the first ``fetch``) and ends once every ack has
reached the server (a flush), so that acks count in the time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import nats

import natspull

from ._env import KIB, BenchmarkError, Env, LoopThread, Watchdog, expect, run_async
from ._registry import MSGS_PER_S, Sample, case, target
from ._report import Results

SMALL = "128 B"
LARGE = "16 KiB"
PAYLOADS = {SMALL: 128, LARGE: 16 * KIB}
BATCH = 500  # nats-py fetch size, and natspull's default max_messages
FETCH_TIMEOUT = 5.0

ITERATOR = "iterator"
NATS_PY = "nats_py_fetch"
WRAPPER = "thread_wrapper"
CEILING = "core_ceiling"


def _runs(env: Env) -> list[tuple[str, int, int]]:
    """(label, payload size, messages) for each payload size."""
    return [(SMALL, PAYLOADS[SMALL], env.sizes.small), (LARGE, PAYLOADS[LARGE], env.sizes.large)]


# ----------------------------------------------------------------------------- natspull


@case("1", ITERATOR, "natspull: for msg in consumer.messages(): msg.ack()")
def iterator_ack(env: Env) -> list[Sample]:
    return [iterate(env, label, size, n, ack=True) for label, size, n in _runs(env)]


@case("2", "iterator_noack", "natspull: messages() with AckPolicy.NONE")
def iterator_noack(env: Env) -> list[Sample]:
    return [iterate(env, label, size, n, ack=False) for label, size, n in _runs(env)]


def iterate(env: Env, label: str, size: int, n: int, *, ack: bool) -> Sample:
    stream = env.filled_stream(size, n)
    policy = natspull.AckPolicy.EXPLICIT if ack else natspull.AckPolicy.NONE
    with env.temp_consumer(stream, ack_policy=policy) as name, natspull.connect(env.url) as client:
        consumer = client.jetstream().consumer(stream, name)
        count = 0
        start = time.perf_counter()
        # The for-loop has no timeout of its own: the watchdog stops the iterator instead.
        with consumer.messages(stop_after=n) as msgs, Watchdog(env.timeout, msgs.stop):
            if ack:
                for msg in msgs:
                    msg.ack()
                    count += 1
            else:
                for _msg in msgs:
                    count += 1
        client.flush(timeout=env.timeout)
        elapsed = time.perf_counter() - start
    expect(count, n, "messages")
    return Sample(label, n / elapsed, MSGS_PER_S, n=n, baseline=(NATS_PY, label))


@case("2b", "iterator_ordered", "natspull: ordered_consumer().messages() (no acks) vs case 2")
def iterator_ordered(env: Env) -> list[Sample]:
    return [_ordered(env, label, size, n) for label, size, n in _runs(env)]


def _ordered(env: Env, label: str, size: int, n: int) -> Sample:
    """Case 2's for-loop through an ordered consumer: the sequence check is the difference."""
    stream = env.filled_stream(size, n)
    with natspull.connect(env.url) as client:
        count = 0
        start = time.perf_counter()
        ordered = client.jetstream().ordered_consumer(stream)  # nothing sent yet
        with ordered, ordered.messages(stop_after=n) as msgs, Watchdog(env.timeout, msgs.stop):
            for _msg in msgs:
                count += 1
        elapsed = time.perf_counter() - start
    expect(count, n, "messages")
    return Sample(label, n / elapsed, MSGS_PER_S, n=n, baseline=("iterator_noack", label))


# ------------------------------------------------------------------------------ nats-py


@case("4", NATS_PY, "nats-py asyncio: pull_subscribe_bind + fetch(500) + await msg.ack()")
def nats_py_fetch(env: Env) -> list[Sample]:
    samples = []
    for label, size, n in _runs(env):
        stream = env.filled_stream(size, n)
        with env.temp_consumer(stream, ack_policy=natspull.AckPolicy.EXPLICIT) as name:
            elapsed = run_async(_fetch_loop(env.url, stream, name, n, env.timeout), env.timeout)
        samples.append(Sample(label, n / elapsed, MSGS_PER_S, n=n))
    return samples


async def _fetch_loop(url: str, stream: str, consumer: str, n: int, timeout: float) -> float:
    nc = await nats.connect(url, name="benchmarks-nats-py")
    try:
        psub = await nc.jetstream().pull_subscribe_bind(consumer, stream=stream)
        count = 0
        start = time.perf_counter()
        while count < n:
            msgs = await psub.fetch(min(BATCH, n - count), timeout=FETCH_TIMEOUT)
            for msg in msgs:
                await msg.ack()
            count += len(msgs)
        await nc.flush(timeout=int(timeout))
        elapsed = time.perf_counter() - start
        expect(count, n, "messages")
        return elapsed
    finally:
        await nc.close()


@case("5", WRAPPER, "naive thread wrapper: run_coroutine_threadsafe(fetch / ack).result()")
def thread_wrapper(env: Env) -> list[Sample]:
    n = env.sizes.wrapper
    stream = env.filled_stream(PAYLOADS[SMALL], n)
    timeout = env.timeout
    with (
        env.temp_consumer(stream, ack_policy=natspull.AckPolicy.EXPLICIT) as name,
        LoopThread("bench-wrapper-loop") as wrapper,
    ):
        nc = wrapper.call(nats.connect(env.url, name="benchmarks-wrapper"), timeout)
        try:
            psub = wrapper.call(nc.jetstream().pull_subscribe_bind(name, stream=stream), timeout)
            count = 0
            start = time.perf_counter()
            while count < n:
                msgs = wrapper.call(psub.fetch(min(BATCH, n - count), timeout=FETCH_TIMEOUT), timeout)
                for msg in msgs:
                    wrapper.call(msg.ack(), timeout)
                count += len(msgs)
            wrapper.call(nc.flush(timeout=int(timeout)), timeout)
            elapsed = time.perf_counter() - start
        finally:
            wrapper.call(nc.close(), timeout)
    expect(count, n, "messages")
    return [Sample(SMALL, n / elapsed, MSGS_PER_S, n=n, baseline=(NATS_PY, SMALL))]


@case("10", CEILING, "ceiling: nats-py core subscribe (no JetStream), callback per message")
def core_ceiling(env: Env) -> list[Sample]:
    n = env.sizes.core
    elapsed = run_async(core_receive(env.url, n, PAYLOADS[SMALL], env.timeout), env.timeout * 2)
    return [Sample(SMALL, n / elapsed, MSGS_PER_S, n=n, baseline=(NATS_PY, SMALL))]


async def core_receive(
    url: str, n: int, size: int, timeout: float, on_start: Callable[[], object] = lambda: None
) -> float:
    """Receive *n* core messages that were all published while this loop was blocked.

    The publisher runs on its own thread and connection while this event loop is blocked on
    it, so the messages pile up in the socket and the server's buffer for this connection,
    and the timed part is pure receiving: nats-py's parser, subscription task and callback.
    *on_start* is called as the clock starts (``profile_hot`` zeroes callgrind's counters).
    """
    subject = f"bench.core.{time.monotonic_ns()}"
    received = 0
    done = asyncio.Event()

    async def on_msg(msg: object) -> None:
        nonlocal received
        received += 1
        if received == n:
            done.set()

    nc = await nats.connect(url, name="benchmarks-core-sub")
    try:
        sub = await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=0, pending_bytes_limit=0)
        await nc.flush(timeout=int(timeout))
        with LoopThread("bench-core-publisher") as publisher:
            publisher.call(_publish_core(url, subject, n, size, timeout), timeout)  # blocks this loop
        on_start()
        start = time.perf_counter()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            raise BenchmarkError(f"received {received} of {n} core messages in {timeout:g} s") from None
        elapsed = time.perf_counter() - start
        await sub.unsubscribe()
        return elapsed
    finally:
        await nc.close()


async def _publish_core(url: str, subject: str, n: int, size: int, timeout: float) -> None:
    nc = await nats.connect(url, name="benchmarks-core-pub")
    try:
        payload = b"x" * size
        for _ in range(n):
            await nc.publish(subject, payload)
        await nc.flush(timeout=int(timeout))  # the server has routed every message
    finally:
        await nc.close()


# ------------------------------------------------------------------------------ targets

target(
    "case 1 >= 2.5x case 4 (nats-py fetch), 128 B",
    lambda r: r.ratio(ITERATOR, SMALL, NATS_PY, SMALL),
    2.5,
    "x",
)
target(
    "case 1 >= 10x case 5 (naive thread wrapper), 128 B",
    lambda r: r.ratio(ITERATOR, SMALL, WRAPPER, SMALL),
    10.0,
    "x",
)
target(
    "case 1 >= 70k msgs/s (JS client reference), 128 B", lambda r: r.median(ITERATOR, SMALL), 70_000, "msgs/s"
)
target(
    "stretch: case 1 >= 50% of case 10 (core ceiling), 128 B",
    lambda r: r.ratio(ITERATOR, SMALL, CEILING, SMALL),
    0.5,
    "x",
)


def _ordered_ratio(size: str) -> Callable[[Results], float | None]:
    return lambda r: r.ratio("iterator_ordered", size, "iterator_noack", size)


for _size in (SMALL, LARGE):
    target(f"case 2b >= 0.9x case 2 (ordered vs durable, no acks), {_size}", _ordered_ratio(_size), 0.9, "x")
