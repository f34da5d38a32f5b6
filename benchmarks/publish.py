"""Bulk publish with acks: natspull ``publish_many`` against nats-py ``publish_async`` (case 8).

Each library publishes the same number of 128 B messages into a fresh stream (deleted after)
with its default in-flight window, and the time ends when every PubAck is in.
"""

from __future__ import annotations

import time

import nats

import natspull

from ._env import BenchmarkError, Env, expect, run_async
from ._registry import MSGS_PER_S, Sample, case

PAYLOAD = b"x" * 128

PUBLISH = "publish"
NATS_PY_ROW = "nats-py publish_async"
NATSPULL_ROW = "natspull publish_many"


@case("8", PUBLISH, "JetStream publish with acks: publish_many vs nats-py publish_async")
def publish(env: Env) -> list[Sample]:
    n = env.sizes.publish
    with env.temp_stream() as stream:
        entries = [(f"{stream}.m", PAYLOAD)] * n
        with natspull.connect(env.url) as client:
            js = client.jetstream(timeout=env.timeout)
            start = time.perf_counter()
            acks = js.publish_many(entries)
            ours = time.perf_counter() - start
        expect(len(acks), n, "PubAcks")
    with env.temp_stream() as stream:
        theirs = run_async(_publish_async(env.url, f"{stream}.m", n), env.timeout)
    return [
        Sample(NATSPULL_ROW, n / ours, MSGS_PER_S, n=n, baseline=(PUBLISH, NATS_PY_ROW)),
        Sample(NATS_PY_ROW, n / theirs, MSGS_PER_S, n=n),
    ]


async def _publish_async(url: str, subject: str, n: int) -> float:
    nc = await nats.connect(url, name="benchmarks-publish-async")
    try:
        js = nc.jetstream()
        futures = []
        start = time.perf_counter()
        for _ in range(n):
            futures.append(await js.publish_async(subject, PAYLOAD))
        await js.publish_async_completed()
        elapsed = time.perf_counter() - start
        failed = [f for f in futures if f.cancelled() or f.exception() is not None]
        if failed:
            raise BenchmarkError(f"{len(failed)} of {n} publish_async calls failed")
        return elapsed
    finally:
        await nc.close()
