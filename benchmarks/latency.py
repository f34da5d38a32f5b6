"""Latency: publish -> receive on an idle consumer (case 6), drain()/stop() wake-up (case 7).

Case 6 uses one publisher for both libraries: its own thread, event loop and nats-py
connection. It stamps ``time.perf_counter_ns()`` into the payload just before the publish; the
receiver subtracts that stamp from the time its blocking call returned. Between samples the
consumer idles for a random 2-6 ms, so every message finds a waiting pull request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time

import nats
import nats.errors
from nats.aio.msg import Msg as NatsMsg

import natspull

from ._env import BenchmarkError, Env, LoopThread, percentile, run_async, wait_until
from ._registry import MS, Sample, case, target

PAYLOAD = 128
GAP = (0.002, 0.006)  # idle time before each publish, seconds
SETTLE = 0.05  # let the first pull request reach the server
NATS_PY_FETCH_TIMEOUT = 5.0  # lingering fetch(1) request lifetime

LATENCY = "latency"
WAKEUP = "wakeup"


def _stamp_of(data: bytes) -> int:
    return int.from_bytes(data[:8], "big")


class _Publisher:
    """Publishes stamped messages from its own thread and nats-py connection."""

    def __init__(self, url: str, subject: str, timeout: float) -> None:
        self._subject = subject
        self._padding = b"x" * (PAYLOAD - 8)
        self._thread = LoopThread("bench-publisher")
        try:
            self._nc = self._thread.call(nats.connect(url, name="benchmarks-publisher"), timeout)
        except BaseException:
            self._thread.close()
            raise
        self._timeout = timeout

    def publish(self) -> concurrent.futures.Future[None]:
        """Schedule one stamped publish; returns at once (the stamp is taken on the publisher's loop)."""
        return self._thread.submit(self._publish())

    async def _publish(self) -> None:
        await self._nc.publish(self._subject, time.perf_counter_ns().to_bytes(8, "big") + self._padding)

    def close(self) -> None:
        try:
            self._thread.call(self._nc.close(), self._timeout)
        finally:
            self._thread.close()


@case("6", LATENCY, "publish -> receive latency, idle consumer: natspull next() vs nats-py fetch(1)")
def latency(env: Env) -> list[Sample]:
    stream = env.empty_stream("LATENCY")
    samples = env.sizes.latency
    publisher = _Publisher(env.url, f"{stream}.m", env.timeout)
    try:
        ours = _natspull_latency(env, stream, samples, publisher)
        theirs = run_async(_nats_py_latency(env, stream, samples, publisher), env.timeout * 4)
    finally:
        publisher.close()
    rows = []
    for who, values, baseline in (("natspull", ours, True), ("nats-py", theirs, False)):
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            base = (LATENCY, f"nats-py {name}") if baseline else None
            rows.append(Sample(f"{who} {name}", percentile(values, q) / 1e6, MS, n=samples, baseline=base))
    return rows


def _natspull_latency(env: Env, stream: str, samples: int, publisher: _Publisher) -> list[float]:
    rng = random.Random(6)
    latencies: list[float] = []
    config = {"ack_policy": natspull.AckPolicy.EXPLICIT, "deliver_policy": natspull.DeliverPolicy.NEW}
    with env.temp_consumer(stream, **config) as name, natspull.connect(env.url) as client:
        consumer = client.jetstream().consumer(stream, name)
        with consumer.messages() as msgs:
            time.sleep(SETTLE)
            for _ in range(samples):
                time.sleep(rng.uniform(*GAP))
                sent = publisher.publish()
                msg = msgs.next(timeout=env.timeout)
                received = time.perf_counter_ns()
                latencies.append(received - _stamp_of(msg.data))
                msg.ack()
                sent.result(env.timeout)
    return latencies


async def _nats_py_latency(env: Env, stream: str, samples: int, publisher: _Publisher) -> list[float]:
    """The same measurement with nats-py's lingering ``fetch(1)`` loop in a task."""
    rng = random.Random(6)
    latencies: list[float] = []
    received: asyncio.Queue[tuple[int, NatsMsg]] = asyncio.Queue()
    config = {"ack_policy": natspull.AckPolicy.EXPLICIT, "deliver_policy": natspull.DeliverPolicy.NEW}
    with env.temp_consumer(stream, **config) as name:
        nc = await nats.connect(env.url, name="benchmarks-nats-py-latency")
        try:
            psub = await nc.jetstream().pull_subscribe_bind(name, stream=stream)

            async def fetch_forever() -> None:
                while True:
                    try:
                        msgs = await psub.fetch(1, timeout=NATS_PY_FETCH_TIMEOUT)
                    except nats.errors.TimeoutError:
                        continue
                    now = time.perf_counter_ns()
                    for msg in msgs:
                        received.put_nowait((now, msg))

            fetcher = asyncio.create_task(fetch_forever())
            try:
                await asyncio.sleep(SETTLE)
                for _ in range(samples):
                    await asyncio.sleep(rng.uniform(*GAP))
                    sent = publisher.publish()
                    try:
                        now, msg = await asyncio.wait_for(received.get(), env.timeout)
                    except asyncio.TimeoutError:
                        raise BenchmarkError(f"nats-py fetch(1) got nothing in {env.timeout:g} s") from None
                    latencies.append(now - _stamp_of(msg.data))
                    await msg.ack()
                    await asyncio.wait_for(asyncio.wrap_future(sent), env.timeout)
            finally:
                fetcher.cancel()
                await asyncio.gather(fetcher, return_exceptions=True)
        finally:
            await nc.close()
    return latencies


@case("7", WAKEUP, "natspull: a next() blocked on an empty stream woken by drain() / stop()")
def wakeup(env: Env) -> list[Sample]:
    stream = env.empty_stream("EMPTY")
    samples = env.sizes.wakeup
    latencies: dict[str, list[float]] = {"drain": [], "stop": []}
    with (
        env.temp_consumer(stream, ack_policy=natspull.AckPolicy.EXPLICIT) as name,
        natspull.connect(env.url) as client,
    ):
        consumer = client.jetstream().consumer(stream, name)
        for _ in range(samples):
            for how in ("drain", "stop"):  # interleaved: drain stop drain stop ...
                latencies[how].append(_wake_once(consumer, how, env.timeout))
    rows = []
    for how, values in latencies.items():
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            rows.append(Sample(f"{how}() {label}", percentile(values, q) / 1e6, MS, n=samples))
    return rows


def _wake_once(consumer: natspull.Consumer, how: str, timeout: float) -> float:
    """Block a thread in ``next()`` on a fresh iterator, call drain()/stop(); ns until it raised."""
    msgs = consumer.messages()
    woke: list[int] = []
    errors: list[BaseException] = []

    def wait_for_message() -> None:
        try:
            msgs.next(timeout=timeout)
        except natspull.IteratorClosedError:
            woke.append(time.perf_counter_ns())
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_message, name="bench-waiter", daemon=True)
    waiter.start()
    try:
        # stats() takes the queue's lock, which the waiter releases only inside its wait():
        # once it counts one waiter, the waiter is blocked.
        wait_until(lambda: msgs.stats().waiters == 1 or not waiter.is_alive(), timeout, "next() to block")
        start = time.perf_counter_ns()
        getattr(msgs, how)()
        waiter.join(timeout)
    finally:
        msgs.stop()
        waiter.join(timeout)
    if errors:
        raise BenchmarkError(f"next() raised {errors[0]!r} instead of IteratorClosedError")
    if not woke:
        raise BenchmarkError(f"next() was not woken by {how}() within {timeout:g} s")
    return woke[0] - start


target(
    "case 6 natspull p50 <= nats-py p50",
    lambda r: r.ratio(LATENCY, "natspull p50", LATENCY, "nats-py p50"),
    1.0,
    "x",
    lower=True,
)
target("case 7 drain() p99 <= 5 ms", lambda r: r.median(WAKEUP, "drain() p99"), 5.0, "ms", lower=True)
target("case 7 stop() p99 <= 5 ms", lambda r: r.median(WAKEUP, "stop() p99"), 5.0, "ms", lower=True)
