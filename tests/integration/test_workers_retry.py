"""consume() as a production worker pool: lease extension (+WPI) and retries with backoff.

Real nats-server; the consumer's state is read from the server's CONSUMER.INFO reply.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from conftest import fill, wait_until

import natspull

# Timing slack for the server's timers and a loaded machine (2 cores, several test runs).
TOLERANCE = 0.05


def raw_info(client: natspull.Client, stream: str, name: str) -> dict[str, Any]:
    """The server's CONSUMER.INFO reply as a dict (read it with [] so a missing key fails)."""
    reply = client.request(f"$JS.API.CONSUMER.INFO.{stream}.{name}", timeout=5)
    info: dict[str, Any] = json.loads(reply.data)
    assert "error" not in info, info
    return info


# ---------------------------------------------------------------------------------- leases


@pytest.mark.timeout(60)
def test_leases_keep_slow_handlers_messages_from_redelivery(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    """Handlers that take 3.5 x ack_wait: natspull's +WPI keeps every message with its worker."""
    consumer = js.add_consumer(stream, durable_name="slow", ack_wait=2)
    fill(js, stream, 3)
    work = threading.Event()  # never set: waiting on it with a timeout is the "work"
    lock = threading.Lock()
    seen: list[tuple[int, int]] = []  # (stream seq, num_delivered) per handler call
    done = threading.Semaphore(0)

    def handler(msg: natspull.Msg) -> None:
        with lock:
            seen.append((msg.metadata.sequence.stream, msg.metadata.num_delivered))
        work.wait(7)
        msg.ack()
        done.release()

    with consumer.consume(handler, workers=3) as ctx:
        for _ in range(3):
            assert done.acquire(timeout=20)
        stats = ctx.stats()
    client.flush()
    wait_until(lambda: raw_info(client, stream, "slow")["num_ack_pending"] == 0, message="the acks")
    info = raw_info(client, stream, "slow")
    assert sorted(seen) == [(1, 1), (2, 1), (3, 1)]
    assert info["num_redelivered"] == 0
    assert info["delivered"]["consumer_seq"] == 3
    assert info["ack_floor"]["stream_seq"] == 3
    # 7 s with ack_wait 2 s needs at least 3 extensions per message
    assert stats.lease_extensions >= 9
    assert stats.handled == 3 and stats.failed == 0


@pytest.mark.timeout(60)
def test_max_lease_ends_the_extensions_and_the_server_redelivers(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="capped", ack_wait=2)
    fill(js, stream, 1)
    redelivered = threading.Event()
    lock = threading.Lock()
    calls: list[tuple[int, float]] = []  # (num_delivered, when)

    def handler(msg: natspull.Msg) -> None:
        delivered = msg.metadata.num_delivered
        with lock:
            calls.append((delivered, time.monotonic()))
        if delivered == 1:
            redelivered.wait(15)  # the work: outlives max_lease; gives up once the copy arrived
            return  # no ack: the redelivered copy is acked
        msg.ack()
        redelivered.set()

    with consumer.consume(handler, workers=2, max_lease=3) as ctx:
        assert redelivered.wait(15), f"no redelivery after max_lease; calls {calls}"
    assert [n for n, _ in calls] == [1, 2]
    gap = calls[1][1] - calls[0][1]
    # extended until max_lease (3 s), then ack_wait (2 s) after the last +WPI: never before
    # 3 s (without leases: ~2 s), and not much after 3 + 2 s
    assert 3.0 <= gap <= 8.0, gap
    assert ctx.stats().lease_extensions >= 2
    client.flush()
    wait_until(lambda: raw_info(client, stream, "capped")["num_ack_pending"] == 0, message="the ack")
    assert raw_info(client, stream, "capped")["delivered"]["consumer_seq"] == 2


@pytest.mark.timeout(30)
def test_no_lease_for_a_consumer_without_acks(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="noack", ack_policy=natspull.AckPolicy.NONE, ack_wait=1)
    fill(js, stream, 1)
    work = threading.Event()  # never set: waiting on it with a timeout is the "work"
    done = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        work.wait(1.5)  # three half-ack_wait ticks: a lease would have been extended
        done.set()

    with consumer.consume(handler) as ctx:
        assert done.wait(10)
    assert ctx.stats().lease_extensions == 0
    assert ctx.stats().handled == 1


# --------------------------------------------------------------------------------- retries


@pytest.mark.timeout(60)
def test_failing_handler_is_retried_with_backoff_then_terminated(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    n = 2
    # The server's MSG_TERMINATED advisories (with the +TERM reason), captured in a stream.
    js.add_stream(name=f"{stream}ADV", subjects=[f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.>"])
    advisories = js.add_consumer(f"{stream}ADV", durable_name="adv")
    consumer = js.add_consumer(stream, durable_name="failing", ack_wait=30)
    fill(js, stream, n)
    lock = threading.Lock()
    calls: dict[int, list[float]] = defaultdict(list)  # stream seq -> time of each handler call
    dead: list[tuple[natspull.Msg, BaseException]] = []
    errors: list[BaseException] = []
    all_dead = threading.Event()
    extra_call = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        seq = msg.metadata.sequence.stream
        with lock:
            calls[seq].append(time.monotonic())
            if len(calls[seq]) > 3:
                extra_call.set()
        raise RuntimeError(f"boom {seq}")

    def on_error(exc: BaseException, msg: natspull.Msg) -> None:
        with lock:
            errors.append(exc)

    def on_dead_letter(msg: natspull.Msg, exc: BaseException) -> None:
        with lock:
            dead.append((msg, exc))
            if len(dead) == n:
                all_dead.set()

    backoff = natspull.Backoff(initial=0.3, maximum=10, multiplier=2, jitter=0)
    with consumer.consume(
        handler,
        workers=2,
        error_handler=on_error,
        retry=backoff,
        term_after=3,
        on_dead_letter=on_dead_letter,
    ) as ctx:
        assert all_dead.wait(20), f"calls {dict(calls)}"
        client.flush()
        wait_until(lambda: raw_info(client, stream, "failing")["num_ack_pending"] == 0, message="the TERMs")
        # The next redelivery would have come 1.2 s after the third call: nothing comes.
        assert not extra_call.wait(2.0), f"a terminated message came back: {dict(calls)}"
        stats = ctx.stats()

    assert sorted(calls) == [1, 2]
    for seq, times in calls.items():
        assert len(times) == 3, (seq, times)
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        assert gaps[0] >= 0.3 - TOLERANCE, gaps
        assert gaps[1] >= 0.6 - TOLERANCE, gaps
        assert gaps[0] < gaps[1], gaps
    assert len(errors) == 3 * n  # error_handler still sees every failure
    assert sorted(msg.metadata.sequence.stream for msg, _ in dead) == [1, 2]
    for msg, exc in dead:
        assert msg.metadata.num_delivered == 3
        assert isinstance(exc, RuntimeError) and str(exc) == f"boom {msg.metadata.sequence.stream}"
        assert msg.acked
    info = raw_info(client, stream, "failing")
    assert info["delivered"]["consumer_seq"] == 3 * n  # nothing spins
    assert info["num_ack_pending"] == 0
    assert info["num_pending"] == 0
    assert info["num_redelivered"] == 0
    assert info["ack_floor"]["stream_seq"] == n
    assert (stats.failed, stats.terminated, stats.handled) == (3 * n, n, 0)
    reasons = sorted(json.loads(adv.data)["reason"] for adv in advisories.fetch(n, max_wait=5))
    assert len(reasons) == n
    for reason in reasons:
        assert "RuntimeError: boom" in reason and "delivery 3" in reason, reason
    for adv in advisories.fetch(n, max_wait=0.5):
        adv.ack()


@pytest.mark.timeout(30)
def test_dead_letter_hook_that_raises_is_logged_and_the_worker_goes_on(
    client: natspull.Client, js: natspull.JetStream, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = js.add_consumer(stream, durable_name="hook", ack_wait=30)
    fill(js, stream, 3)
    lock = threading.Lock()
    hooked: list[int] = []
    all_hooked = threading.Semaphore(0)

    def handler(msg: natspull.Msg) -> None:
        raise ValueError("bad message")

    def on_dead_letter(msg: natspull.Msg, exc: BaseException) -> None:
        with lock:
            hooked.append(msg.metadata.sequence.stream)
        all_hooked.release()
        raise OSError("the dead-letter store is down")

    with consumer.consume(handler, workers=1, term_after=1, on_dead_letter=on_dead_letter) as ctx:
        for _ in range(3):
            assert all_hooked.acquire(timeout=10)
        wait_until(lambda: ctx.stats().terminated == 3, message="the TERMs")
        assert ctx.stats().workers_alive == 1
    assert hooked == [1, 2, 3]
    assert sum("on_dead_letter raised" in record.getMessage() for record in caplog.records) == 3
    client.flush()
    wait_until(lambda: raw_info(client, stream, "hook")["num_ack_pending"] == 0, message="the TERMs")
    assert raw_info(client, stream, "hook")["delivered"]["consumer_seq"] == 3


def _two_deliveries(js: natspull.JetStream, stream: str, name: str, **options: Any) -> float:
    """Seconds between the first (failing) and the second delivery of one message."""
    consumer = js.add_consumer(stream, durable_name=name, ack_wait=30)
    fill(js, stream, 1)
    times: list[float] = []
    second = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        times.append(time.monotonic())
        if msg.metadata.num_delivered == 1:
            raise RuntimeError("first try fails")
        msg.ack()
        second.set()

    with consumer.consume(handler, **options):
        assert second.wait(10)
    assert len(times) == 2
    return times[1] - times[0]


@pytest.mark.timeout(30)
def test_retry_none_naks_for_an_immediate_redelivery(js: natspull.JetStream, stream: str) -> None:
    assert _two_deliveries(js, stream, "now", retry=None) < 0.5


@pytest.mark.timeout(30)
def test_the_default_retry_waits_the_initial_delay(js: natspull.JetStream, stream: str) -> None:
    """Default Backoff(initial=1, jitter=0.2): the redelivery comes at least 0.8 s later."""
    assert _two_deliveries(js, stream, "default") >= 0.8 - TOLERANCE
