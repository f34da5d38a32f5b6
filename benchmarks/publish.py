"""Bulk publish with acks: natspull ``publish_many`` against nats-py ``publish_async`` (case 8);
natspull ``publish_async`` from 8 threads against nats-py ``publish_async`` from one asyncio
task (case 8b); one ``publish()`` at a time, each waiting for its PubAck, against nats-py's
``await js.publish()`` (case 8s).

Each library publishes the same number of 128 B messages into a fresh stream (deleted after)
with its default in-flight window, and the time ends when every PubAck is in.
"""

from __future__ import annotations

import threading
import time

import nats

import natspull

from ._env import BenchmarkError, Env, expect, run_async
from ._registry import MSGS_PER_S, Sample, case

PAYLOAD = b"x" * 128

PUBLISH = "publish"
NATS_PY_ROW = "nats-py publish_async"
NATSPULL_ROW = "natspull publish_many"
PUBLISH_ASYNC = "publish_async"
PUBLISH_ONE = "publish_sequential"
THREADS = 8


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
        theirs = run_async(nats_py_publish_async(env.url, f"{stream}.m", n), env.timeout)
    return [
        Sample(NATSPULL_ROW, n / ours, MSGS_PER_S, n=n, baseline=(PUBLISH, NATS_PY_ROW)),
        Sample(NATS_PY_ROW, n / theirs, MSGS_PER_S, n=n),
    ]


@case("8b", PUBLISH_ASYNC, "publish_async from 8 threads vs nats-py publish_async from one asyncio task")
def publish_async(env: Env) -> list[Sample]:
    n = env.sizes.publish - env.sizes.publish % THREADS
    per_thread = n // THREADS
    with env.temp_stream() as stream:
        subject = f"{stream}.m"
        with natspull.connect(env.url) as client:
            js = client.jetstream(timeout=env.timeout)
            js.publish_async(subject, PAYLOAD).result(env.timeout)  # the reply inbox, once
            start_line = threading.Barrier(THREADS + 1)
            failures: list[BaseException] = []

            def publisher() -> None:
                start_line.wait()
                try:
                    futures = [js.publish_async(subject, PAYLOAD) for _ in range(per_thread)]
                    for future in futures:
                        future.result(env.timeout)
                except BaseException as exc:
                    failures.append(exc)

            threads = [
                threading.Thread(target=publisher, name=f"bench-publisher-{i}") for i in range(THREADS)
            ]
            for t in threads:
                t.start()
            start_line.wait()
            start = time.perf_counter()
            for t in threads:
                t.join()
            ours = time.perf_counter() - start
        if failures:
            raise BenchmarkError(f"{len(failures)} publisher threads failed: {failures[0]!r}")
        expect(env.js.stream_info(stream).state.messages, n + 1, "messages stored")
    with env.temp_stream() as stream:
        theirs = run_async(nats_py_publish_async(env.url, f"{stream}.m", n), env.timeout)
    row = f"natspull publish_async, {THREADS} threads"
    theirs_row = "nats-py publish_async, 1 task"
    return [
        Sample(row, n / ours, MSGS_PER_S, n=n, baseline=(PUBLISH_ASYNC, theirs_row)),
        Sample(theirs_row, n / theirs, MSGS_PER_S, n=n),
    ]


@case("8s", PUBLISH_ONE, "JetStream publish() one at a time (each waits for its PubAck) vs nats-py")
def publish_sequential(env: Env) -> list[Sample]:
    n = env.sizes.sequential
    with env.temp_stream() as stream:
        subject = f"{stream}.m"
        with natspull.connect(env.url) as client:
            js = client.jetstream(timeout=env.timeout)
            js.publish(subject, PAYLOAD)  # the reply inbox, once
            start = time.perf_counter()
            for _ in range(n):
                js.publish(subject, PAYLOAD)
            ours = time.perf_counter() - start
        expect(env.js.stream_info(stream).state.messages, n + 1, "messages stored")
    with env.temp_stream() as stream:
        theirs = run_async(nats_py_publish_sequential(env.url, f"{stream}.m", n), env.timeout)
        expect(env.js.stream_info(stream).state.messages, n + 1, "messages stored")
    theirs_row = "nats-py js.publish()"
    return [
        Sample("natspull publish()", n / ours, MSGS_PER_S, n=n, baseline=(PUBLISH_ONE, theirs_row)),
        Sample(theirs_row, n / theirs, MSGS_PER_S, n=n),
    ]


async def nats_py_publish_sequential(url: str, subject: str, n: int) -> float:
    """nats-py's side of case 8s: ``await js.publish()`` n times from one task."""
    nc = await nats.connect(url, name="benchmarks-publish-sequential")
    try:
        js = nc.jetstream()
        await js.publish(subject, PAYLOAD)  # its reply inbox, once
        start = time.perf_counter()
        for _ in range(n):
            await js.publish(subject, PAYLOAD)
        return time.perf_counter() - start
    finally:
        await nc.close()


async def nats_py_publish_async(url: str, subject: str, n: int) -> float:
    """nats-py's side of cases 8 and 8b: publish_async n times from one task, then wait for all."""
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
