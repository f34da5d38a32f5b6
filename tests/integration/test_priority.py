"""Pull options for priority groups (ADR-42) against a real nats-server: overflow, prioritized,
pinned_client (pin tracking, 423, keep-alive, failover between worker processes), and the
argument checks; plus max_messages with max_bytes, consume(stop_after=, on_event=) and
fetch(heartbeat=)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from conftest import fill, wait_until

import natspull
from natspull.testing import NatsServer

PINNED = natspull.PriorityPolicy.PINNED_CLIENT
OVERFLOW = natspull.PriorityPolicy.OVERFLOW
PRIORITIZED = natspull.PriorityPolicy.PRIORITIZED
WORKER = os.path.join(os.path.dirname(__file__), "priority_worker.py")


class PullSpy:
    """Pull requests on the wire: a plain nats-py connection, on its own thread, subscribed to
    ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``."""

    def __init__(self, url: str, stream: str, consumer: str) -> None:
        self.pulls: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"

        async def start() -> Any:
            nc = await nats.connect(url)

            async def on_msg(msg: Any) -> None:
                self.pulls.append(json.loads(msg.data))

            await nc.subscribe(subject, cb=on_msg)
            await nc.flush()
            return nc

        self._nc = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)

    def __enter__(self) -> PullSpy:
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def pinned_id(consumer: natspull.Consumer) -> str | None:
    groups = consumer.info().priority_groups
    assert [g.group for g in groups] == ["jobs"], groups
    return groups[0].pinned_client_id


# ------------------------------------------------------------------------ overflow


@pytest.mark.server("2.11")
def test_overflow_serves_only_past_min_pending(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="o", priority_groups=["jobs"], priority_policy=OVERFLOW)
    fill(js, stream, 60)
    with consumer.messages(group="jobs", min_pending=100, expires=2) as it:
        with pytest.raises(natspull.TimeoutError):
            it.next(timeout=1.5)  # 60 pending < 100: not served
        fill(js, stream, 90)  # 150 pending: served while num_pending >= 100
        got = [it.next(timeout=5) for _ in range(51)]
        with pytest.raises(natspull.TimeoutError):
            it.next(timeout=1.5)
    assert [m.metadata.sequence.stream for m in got] == list(range(1, 52))
    assert consumer.info().num_pending == 99
    # a fetch with the same option: one more brings it back to 100 pending -> one served
    fill(js, stream, 1)
    assert len(consumer.fetch(10, max_wait=1, group="jobs", min_pending=100)) == 1


@pytest.mark.server("2.12")
def test_prioritized_serves_priority_0_first(
    js: natspull.JetStream, stream: str, nats_server: NatsServer
) -> None:
    consumer = js.add_consumer(
        stream, durable_name="p", priority_groups=["jobs"], priority_policy=PRIORITIZED
    )
    with natspull.connect(nats_server.url) as other:
        low_consumer = other.jetstream().consumer(stream, "p")
        with low_consumer.messages(group="jobs", priority=1) as low:
            with consumer.messages(group="jobs", priority=0) as high:
                wait_until(lambda: low.stats().pulls_sent >= 1 and high.stats().pulls_sent >= 1)
                consumer.info()  # a round trip after both pulls: the server holds both
                fill(js, stream, 20)
                got = [high.next(timeout=5) for _ in range(20)]
                assert [m.metadata.sequence.stream for m in got] == list(range(1, 21))
                with pytest.raises(natspull.TimeoutError):
                    low.next(timeout=0.5)
            # the priority 0 iterator is gone: priority 1 is served now
            fill(js, stream, 1)
            assert low.next(timeout=5).metadata.sequence.stream == 21


# ------------------------------------------------------------------------- pinned


@pytest.mark.server("2.11")
def test_pinned_iterator_sends_its_pin_and_repulls_at_once_on_423(
    js: natspull.JetStream, stream: str, nats_server: NatsServer
) -> None:
    """unpin() from another connection: the iterator's next pull carries a stale pin, the
    server answers 423, and the iterator pulls again at once (no wait for a heartbeat)."""
    consumer = js.add_consumer(
        stream, durable_name="pin", priority_groups=["jobs"], priority_policy=PINNED, priority_timeout=60
    )
    fill(js, stream, 10)
    with PullSpy(nats_server.url, stream, "pin") as spy, natspull.connect(nats_server.url) as admin:
        pulls = spy.pulls
        # expires 30 s, heartbeat 15 s: without the 423 row the iterator would wait 30 s
        with consumer.messages(group="jobs", max_messages=1) as it:
            first = it.next(timeout=5)
            pin = first.headers["Nats-Pin-Id"] if first.headers else None
            assert pin and pinned_id(consumer) == pin
            wait_until(lambda: any(p.get("id") == pin for p in pulls), 5, "a pull with the pin")
            admin.jetstream().unpin_consumer(stream, "pin", "jobs")
            started = time.monotonic()
            rest = [it.next(timeout=3) for _ in range(9)]
            elapsed = time.monotonic() - started
            stats = it.stats()
        new_pin = rest[-1].headers["Nats-Pin-Id"] if rest[-1].headers else None
    assert [m.metadata.sequence.stream for m in [first, *rest]] == list(range(1, 11))
    assert new_pin and new_pin != pin
    assert elapsed < 3
    assert stats.pins_lost == 1
    assert stats.heartbeats_missed == 0
    assert all(p["group"] == "jobs" for p in pulls)
    assert any("id" not in p for p in pulls[1:]), pulls  # the re-pull after the 423, without the pin


@pytest.mark.server("2.11")
def test_an_idle_pinned_iterator_keeps_its_pin(js: natspull.JetStream, stream: str) -> None:
    """The pin's timer restarts only when a pull with the pin arrives: expires defaults to half
    of priority_timeout, so the idle iterator's requests are renewed in time."""
    consumer = js.add_consumer(
        stream, durable_name="idle", priority_groups=["jobs"], priority_policy=PINNED, priority_timeout=2
    )
    fill(js, stream, 1)
    with consumer.messages(group="jobs") as it:
        msg = it.next(timeout=5)
        pin = msg.headers["Nats-Pin-Id"] if msg.headers else None
        assert pin
        msg.ack()
        for _ in range(3):  # 3 x priority_timeout of idleness, checked each time
            with pytest.raises(natspull.TimeoutError):
                it.next(timeout=2.5)
            assert pinned_id(consumer) == pin
        fill(js, stream, 1)
        msg = it.next(timeout=5)
        assert msg.headers is not None and msg.headers["Nats-Pin-Id"] == pin
        assert it.stats().pins_lost == 0


@pytest.mark.server("2.11")
def test_fetch_remembers_the_pin_and_retries_once_on_423(
    js: natspull.JetStream, stream: str, nats_server: NatsServer
) -> None:
    consumer = js.add_consumer(
        stream, durable_name="f", priority_groups=["jobs"], priority_policy=PINNED, priority_timeout=60
    )
    fill(js, stream, 3)
    [first] = consumer.fetch(1, max_wait=5, group="jobs")
    pin = first.headers["Nats-Pin-Id"] if first.headers else None
    assert pin and pinned_id(consumer) == pin
    [second] = consumer.fetch(1, max_wait=5, group="jobs")  # sent with the pin: still served
    assert second.headers is not None and second.headers["Nats-Pin-Id"] == pin
    with natspull.connect(nats_server.url) as admin:
        admin.jetstream().unpin_consumer(stream, "f", "jobs")
    started = time.monotonic()
    [third] = consumer.fetch(1, max_wait=10, group="jobs")  # stale pin: 423, then again without it
    assert time.monotonic() - started < 3
    assert third.headers is not None and third.headers["Nats-Pin-Id"] not in (None, pin)
    assert [m.metadata.sequence.stream for m in (first, second, third)] == [1, 2, 3]


@pytest.mark.server("2.11")
def test_resume_wakes_this_clients_waiting_iterator(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="r")
    with consumer.messages(expires=30) as it:  # heartbeat 15 s
        wait_until(lambda: it.stats().pulls_sent >= 1)
        consumer.pause(60)
        fill(js, stream, 1)
        with pytest.raises(natspull.TimeoutError):
            it.next(timeout=0.5)
        consumer.resume()
        started = time.monotonic()
        assert it.next(timeout=5).metadata.sequence.stream == 1
        assert time.monotonic() - started < 2


# -------------------------------------------------------------- failover (processes)


class Worker:
    """A priority_worker.py process; its stdout lines with the time they were read."""

    def __init__(self, url: str, stream: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, url, stream, "workers", "jobs"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def has(self, text: str) -> bool:
        return any(line == text for _, line in list(self.lines))

    def ledger(self) -> list[tuple[float, int, int]]:
        result = []
        for at, line in list(self.lines):
            if line.startswith("msg "):
                _, seq, delivered = line.split()
                result.append((at, int(seq), int(delivered)))
        return result

    def drain(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("drain\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def workers(nats_server: NatsServer) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


@pytest.mark.server("2.11")
@pytest.mark.parametrize("how", ["kill", "drain", "unpin"])
def test_failover_between_worker_processes(
    how: str, js: natspull.JetStream, stream: str, nats_server: NatsServer, workers: list[Worker]
) -> None:
    timeout = 2.0
    consumer = js.add_consumer(
        stream,
        durable_name="workers",
        priority_groups=["jobs"],
        priority_policy=PINNED,
        priority_timeout=timeout,
        ack_wait=2,
    )
    fill(js, stream, 20)
    a = Worker(nats_server.url, stream)
    workers.append(a)
    wait_until(lambda: len(a.ledger()) >= 20, 15, "worker A to handle the first 20")
    assert any(line.startswith("event pinned ") for _, line in a.lines)
    b = Worker(nats_server.url, stream)
    workers.append(b)
    wait_until(lambda: b.has("ready"), 15, "worker B to start")
    fill(js, stream, 20)
    wait_until(lambda: len(a.ledger()) >= 40, 10, "worker A to handle 40")
    assert b.ledger() == []  # the standby got nothing
    pin = pinned_id(consumer)
    assert pin is not None

    if how == "kill":
        a.proc.send_signal(signal.SIGKILL)
    elif how == "drain":
        a.drain()
    else:
        with natspull.connect(nats_server.url) as admin:
            admin.jetstream().unpin_consumer(stream, "workers", "jobs")
    acted = time.monotonic()
    fill(js, stream, 20)
    wait_until(lambda: b.ledger() != [], timeout + 5, "worker B to take over")
    took = b.ledger()[0][0] - acted
    print(f"{how}: the standby took over after {took:.2f} s")
    # 2.0 s on a quiet machine (0.02 s when unpinned); the margin is for a loaded one (3.04 s
    # was seen beside two busy loops), still far below a pull's expiry.
    assert took <= timeout + 2.0, f"the standby took {took:.2f} s"
    wait_until(lambda: {s for _, s, _ in a.ledger() + b.ledger()} >= set(range(1, 61)), 15, "all 60")
    wait_until(lambda: consumer.info().num_ack_pending == 0, 10, "every ack")
    new_pin = pinned_id(consumer)
    assert new_pin not in (None, pin)

    b.drain()
    wait_until(lambda: b.has("done"), 15, "worker B to drain")
    assert b.proc.wait(timeout=10) == 0
    if how == "drain":
        assert a.has("done") and a.proc.wait(timeout=10) == 0
    elif how == "unpin":
        assert any(line.startswith("event pin_lost ") for _, line in a.lines)
        assert all(seq <= 40 for _, seq, _ in a.ledger())  # A got nothing after the unpin
        a.drain()
        assert a.proc.wait(timeout=10) == 0
    else:
        assert a.proc.wait(timeout=10) == -signal.SIGKILL
    entries = [(seq, delivered) for _, seq, delivered in a.ledger() + b.ledger()]
    assert len(entries) == len(set(entries)), "a message was handed out twice in one delivery"
    assert {seq for seq, _ in entries} == set(range(1, 61))


# ------------------------------------------------------------ other pull options


def test_max_messages_with_max_bytes_limits_each_pull(
    js: natspull.JetStream, stream: str, nats_server: NatsServer
) -> None:
    consumer = js.add_consumer(stream, durable_name="mb")
    fill(js, stream, 30, size=100)
    with PullSpy(nats_server.url, stream, "mb") as spy:
        pulls = spy.pulls
        with consumer.messages(max_messages=10, max_bytes=1000) as it:
            got = [it.next(timeout=5) for _ in range(30)]
            wait_until(lambda: len(pulls) >= 2)
    assert [m.metadata.sequence.stream for m in got] == list(range(1, 31))
    assert pulls[0]["batch"] == 10 and pulls[0]["max_bytes"] == 1000
    assert all(p["max_bytes"] == 1000 and p["batch"] <= 10 for p in pulls), pulls


def test_consume_stop_after_and_on_event(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="sa")
    fill(js, stream, 10)
    handled: list[int] = []
    events: list[tuple[str, str]] = []
    ctx = consumer.consume(
        lambda m: (handled.append(m.metadata.sequence.stream), m.ack()),
        stop_after=4,
        on_event=lambda e: events.append((e.kind, threading.current_thread().name)),
    )
    assert ctx.wait(timeout=10)
    assert handled == [1, 2, 3, 4]
    wait_until(lambda: consumer.info().ack_floor.stream_seq == 4, 5, "the 4 acks")
    assert consumer.info().num_ack_pending == 0


def test_on_event_reports_a_reconnect_on_a_natspull_thread(
    js: natspull.JetStream, stream: str, nats_server: NatsServer
) -> None:
    consumer = js.add_consumer(stream, durable_name="ev")
    events: list[tuple[str, str]] = []
    ctx = consumer.consume(
        lambda m: m.ack(),
        on_event=lambda e: events.append((e.kind, threading.current_thread().name)),
    )
    try:
        nats_server.restart()
        wait_until(lambda: any(kind == "reconnected" for kind, _ in events), 20, "a reconnected event")
        fill(js, stream, 1)
        wait_until(lambda: consumer.info().num_ack_pending == 0 and consumer.info().num_pending == 0, 20)
    finally:
        ctx.drain()
        assert ctx.wait(timeout=10)
    assert all(name.startswith("natspull-events-") for _, name in events), events


def test_fetch_heartbeat(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="hb")
    fill(js, stream, 2)
    assert len(consumer.fetch(5, max_wait=2, heartbeat=0.5)) == 2


# ----------------------------------------------------------------------- bad input


def _consumers(js: natspull.JetStream, stream: str) -> dict[str, natspull.Consumer]:
    return {
        "plain": js.add_consumer(stream, durable_name="plain"),
        "pinned": js.add_consumer(
            stream,
            durable_name="pinned",
            priority_groups=["jobs"],
            priority_policy=PINNED,
            priority_timeout=4,
        ),
        "overflow": js.add_consumer(
            stream, durable_name="over", priority_groups=["jobs"], priority_policy=OVERFLOW
        ),
        "prioritized": js.add_consumer(
            stream, durable_name="prio", priority_groups=["jobs"], priority_policy=PRIORITIZED
        ),
    }


BAD_PULLS = [
    # (consumer, options, error, message)
    ("plain", {"group": "jobs"}, ValueError, "has no priority groups"),
    ("plain", {"min_pending": 5}, ValueError, "min_pending needs a consumer with priority groups"),
    ("plain", {"min_ack_pending": 5}, ValueError, "min_ack_pending needs a consumer with priority"),
    ("plain", {"priority": 1}, ValueError, "priority needs a consumer with priority groups"),
    ("pinned", {}, ValueError, r"has priority groups \['jobs'\]: pass group="),
    ("pinned", {"group": "other"}, ValueError, "'other' is not a priority group"),
    ("pinned", {"group": "a.b"}, ValueError, "not a valid priority group name"),
    ("pinned", {"group": "x" * 17}, ValueError, "1-16 characters"),
    ("pinned", {"group": 5}, TypeError, "group must be a str"),
    (
        "pinned",
        {"group": "jobs", "min_pending": 5},
        ValueError,
        "min_pending needs priority_policy 'overflow'",
    ),
    ("pinned", {"group": "jobs", "priority": 0}, ValueError, "priority needs priority_policy 'prioritized'"),
    ("prioritized", {"group": "jobs", "min_ack_pending": 1}, ValueError, "needs priority_policy 'overflow'"),
    ("prioritized", {"group": "jobs", "priority": 10}, ValueError, "priority must be between 0 and 9"),
    ("prioritized", {"group": "jobs", "priority": -1}, ValueError, "priority must be between 0 and 9"),
    ("prioritized", {"group": "jobs", "priority": 1.0}, TypeError, "priority must be an int"),
    ("prioritized", {"group": "jobs", "priority": True}, TypeError, "priority must be an int"),
    ("overflow", {"group": "jobs", "min_pending": 0}, ValueError, "min_pending must be between 1"),
    ("overflow", {"group": "jobs", "min_ack_pending": "3"}, TypeError, "min_ack_pending must be an int"),
    (
        "overflow",
        {"group": "jobs", "priority": 1},
        ValueError,
        "priority needs priority_policy 'prioritized'",
    ),
]

CONTINUOUS_ONLY = [
    ("pinned", {"group": "jobs", "expires": 5}, ValueError, "expires .5 s. must be at most 2 s for a pinned"),
    (
        "plain",
        {"threshold_bytes": 5, "max_bytes": 10, "max_messages": 5},
        ValueError,
        "threshold_bytes needs",
    ),
    ("plain", {"threshold_messages": 5, "max_bytes": 10}, ValueError, "threshold_messages goes with"),
    ("plain", {"max_messages": 5, "max_bytes": 0}, ValueError, "max_bytes must be between 1"),
    ("plain", {"stop_after": 0}, ValueError, "stop_after must be between 1"),
]


@pytest.mark.server("2.12")
@pytest.mark.parametrize("kind, options, error, match", BAD_PULLS + CONTINUOUS_ONLY)
def test_bad_pull_options_are_refused_before_anything_is_sent(
    client: natspull.Client,
    js: natspull.JetStream,
    stream: str,
    kind: str,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    consumer = _consumers(js, stream)[kind]
    with pytest.raises(error, match=match):
        consumer.messages(**options)
    with pytest.raises(error, match=match):
        consumer.consume(lambda m: None, **options)
    if (kind, options, error, match) in BAD_PULLS:
        with pytest.raises(error, match=match):
            consumer.fetch(1, max_wait=1, **options)
        with pytest.raises(error, match=match):
            consumer.next(timeout=1, **options)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"heartbeat": 0.1}, ValueError, "heartbeat must be"),
        ({"heartbeat": 1.5}, ValueError, "at most half of max_wait"),
        ({"heartbeat": "1"}, TypeError, "heartbeat must be a number"),
        ({"heartbeat": 0.5, "no_wait": True}, ValueError, "does not go with no_wait"),
    ],
)
def test_bad_fetch_heartbeat(
    js: natspull.JetStream, stream: str, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="c")
    with pytest.raises(error, match=match):
        consumer.fetch(1, max_wait=2, **options)


def test_on_event_must_be_callable(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="c")
    with pytest.raises(TypeError, match="on_event must be callable"):
        consumer.consume(lambda m: None, on_event=5)  # type: ignore[arg-type]
