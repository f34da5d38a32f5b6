"""Consumer events (``on_event=``) of iterators and consume contexts, against a real server:
their order through real faults, their thread, their log lines, and that a slow callback
holds up nothing but later events."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import fill, wait_until

import natspull
from natspull.testing import NatsServer


def pull_waiting(consumer: natspull.Consumer) -> None:
    """Wait until a pull of the iterator waits at the server: a consumer deleted while a pull
    is still on its way drops that pull silently (no 409), and the iterator would learn of the
    deletion only from its next pull (a 503, then "not found")."""
    wait_until(lambda: consumer.info().num_waiting >= 1, 10, "a waiting pull")


def kinds(events: list[natspull.ConsumerEvent]) -> list[str]:
    return [event.kind for event in list(events)]


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    rest = iter(seen)
    return all(kind in rest for kind in wanted)


def small_batch_consumer(client: natspull.Client, stream: str, name: str) -> natspull.Consumer:
    """A consumer that refuses pulls for more than 5 messages (``max_batch``, which
    natspull.ConsumerConfig does not carry: created through the API)."""
    config = {"durable_name": name, "ack_policy": "explicit", "max_batch": 5}
    body = json.dumps({"stream_name": stream, "config": config}).encode()
    reply = json.loads(client.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}", body, timeout=5).data)
    assert reply["config"]["max_batch"] == 5, reply
    return client.jetstream().consumer(stream, name)


@pytest.fixture
def restartable(nats_server: NatsServer) -> Iterator[tuple[natspull.Client, natspull.JetStream]]:
    """A client that reconnects fast, and a file stream ``EV`` (it survives a restart)."""
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1, name="events") as client:
        js = client.jetstream()
        js.add_stream(name="EV", subjects=["ev.>"], storage=natspull.StorageType.FILE)
        yield client, js


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.name != "posix", reason="SIGSTOP")
@pytest.mark.parametrize("mode", ["messages", "consume"])
def test_restart_freeze_and_delete_arrive_in_order(
    nats_server: NatsServer, restartable: tuple[natspull.Client, natspull.JetStream], mode: str
) -> None:
    """A server restart, a frozen server (SIGSTOP) and an admin delete of the consumer, seen by
    one iterator / consume context: reconnected, heartbeat_missed, consumer_deleted, in order,
    consumer_deleted last, all on the event thread."""
    _, js = restartable
    consumer = js.add_consumer("EV", durable_name="c", ack_wait=30)
    events: list[natspull.ConsumerEvent] = []
    threads: set[str] = set()

    def on_event(event: natspull.ConsumerEvent) -> None:
        threads.add(threading.current_thread().name)
        events.append(event)

    received: list[bytes] = []

    def handle(msg: natspull.Msg) -> None:
        received.append(msg.data)
        msg.ack()

    # (expires: long, so that the pull waiting when the consumer is deleted is not renewed then)
    options: dict[str, Any] = {"expires": 30, "heartbeat": 0.5, "on_event": on_event}
    msgs = consumer.messages(**options) if mode == "messages" else None
    ctx = consumer.consume(handle, **options) if mode == "consume" else None

    def receive_one(data: bytes) -> None:
        js.publish("ev.x", data)
        if msgs is not None:
            msg = msgs.next(timeout=10)
            msg.ack()
            received.append(msg.data)
        else:
            wait_until(lambda: data in received, 10, f"the handler to get {data!r}")
        assert received[-1] == data

    try:
        wait_until(lambda: "connected" in kinds(events), 5, "the connected event")
        nats_server.restart()
        wait_until(lambda: "reconnected" in kinds(events), 20, "a reconnected event")
        receive_one(b"after the restart")
        pid = nats_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: "heartbeat_missed" in kinds(events), 10, "a heartbeat_missed event")
        finally:
            os.kill(pid, signal.SIGCONT)
        receive_one(b"after the freeze")
        pull_waiting(consumer)
        js.delete_consumer("EV", "c")
        if msgs is not None:
            with pytest.raises(natspull.ConsumerDeletedError):
                msgs.next(timeout=10)
            wait_until(lambda: "consumer_deleted" in kinds(events), 5, "the consumer_deleted event")
        else:
            assert ctx is not None
            with pytest.raises(natspull.ConsumerDeletedError):
                ctx.wait(timeout=10)  # returns once on_event has seen every event
    finally:
        if msgs is not None:
            msgs.stop()
        if ctx is not None:
            ctx.stop()
            with contextlib.suppress(natspull.ConsumerDeletedError):  # (raised above already)
                assert ctx.wait(timeout=10)
    seen = kinds(events)
    assert is_subsequence(["connected", "disconnected", "reconnected", "heartbeat_missed"], seen), seen
    assert seen[0] == "connected" and seen[-1] == "consumer_deleted", seen
    assert seen.count("consumer_deleted") == 1, seen
    deleted = events[-1]
    assert (deleted.stream, deleted.consumer, deleted.code) == ("EV", "c", 409), deleted
    assert all((event.stream, event.consumer) == ("EV", "c") for event in events), events
    assert len(threads) == 1 and threads.pop().startswith("natspull-events-")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["messages", "consume"])
def test_a_slow_callback_does_not_stall_messages(js: natspull.JetStream, stream: str, mode: str) -> None:
    """on_event blocks (on the first event) while 200 messages flow through; then it runs on."""
    consumer = js.add_consumer(stream, durable_name="slow")
    release = threading.Event()
    blocked = threading.Event()
    events: list[natspull.ConsumerEvent] = []

    def on_event(event: natspull.ConsumerEvent) -> None:
        blocked.set()
        assert release.wait(30), "never released"
        events.append(event)

    got: list[int] = []
    options: dict[str, Any] = {"max_messages": 20, "on_event": on_event}  # several pulls for 200
    if mode == "messages":
        with consumer.messages(**options) as msgs:
            assert blocked.wait(5)
            fill(js, stream, 200)
            for _ in range(200):
                msg = msgs.next(timeout=10)
                got.append(msg.metadata.sequence.stream)
                msg.ack()
            assert msgs.stats().pulls_sent > 1  # the re-pulls went out with the callback blocked
            assert events == []  # still blocked
            release.set()
            wait_until(lambda: kinds(events) == ["connected"], 5, "the callback to run on")
    else:
        ctx = consumer.consume(lambda m: (got.append(m.metadata.sequence.stream), m.ack()), **options)
        try:
            assert blocked.wait(5)
            fill(js, stream, 200)
            wait_until(lambda: len(got) == 200, 20, "200 messages handled")
            assert ctx.stats().pulls_sent > 1
            assert events == []
        finally:
            release.set()
            ctx.drain()
            assert ctx.wait(timeout=10)
        assert kinds(events) == ["connected"]
    assert sorted(got) == list(range(1, 201))


@pytest.mark.timeout(30)
def test_events_are_logged(
    client: natspull.Client, js: natspull.JetStream, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a callback too: connected at INFO, a 409 status and consumer_deleted at WARNING."""
    caplog.set_level(logging.INFO, logger="natspull")
    small_consumer = small_batch_consumer(client, stream, "small")
    consumer = js.add_consumer(stream, durable_name="logged")
    small = f"natspull: {stream}/small: status (409 Exceeded MaxRequestBatch of 5)"

    def logged(start: str) -> list[tuple[str, int]]:
        return [(r.name, r.levelno) for r in list(caplog.records) if r.getMessage().startswith(start)]

    with small_consumer.messages(max_messages=10):  # its pull asks for 10: refused with a 409
        wait_until(lambda: logged(small), 10, "the status event's log line")
    with consumer.messages() as msgs:
        pull_waiting(consumer)
        js.delete_consumer(stream, "logged")
        with pytest.raises(natspull.ConsumerDeletedError):
            msgs.next(timeout=10)
    assert logged(f"natspull: {stream}/small: connected") == [("natspull", logging.INFO)]
    assert logged(small)[0] == ("natspull", logging.WARNING)
    deleted = logged(f"natspull: {stream}/logged: consumer_deleted (409 Consumer Deleted)")
    assert deleted == [("natspull", logging.WARNING)], caplog.text


@pytest.mark.timeout(30)
def test_a_refused_pull_is_a_status_event(client: natspull.Client, stream: str) -> None:
    consumer = small_batch_consumer(client, stream, "batch")
    events: list[natspull.ConsumerEvent] = []
    with consumer.messages(max_messages=10, on_event=events.append):
        wait_until(lambda: "status" in kinds(events), 10, "a status event")
    assert kinds(events) == ["connected", "status"]
    status = events[1]
    assert (status.code, status.description) == (409, "Exceeded MaxRequestBatch of 5"), status


@pytest.mark.timeout(30)
def test_a_raising_callback_is_logged_and_the_events_go_on(
    js: natspull.JetStream, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = js.add_consumer(stream, durable_name="raising")
    seen: list[str] = []

    def on_event(event: natspull.ConsumerEvent) -> None:
        seen.append(event.kind)
        raise RuntimeError(f"callback failed on {event.kind}")

    with consumer.messages(on_event=on_event):
        wait_until(lambda: seen == ["connected"], 5, "the connected event")
        pull_waiting(consumer)
        js.delete_consumer(stream, "raising")
        wait_until(lambda: seen == ["connected", "consumer_deleted"], 10, "the consumer_deleted event")
    # (the callback appends before it raises: its log record follows on the event thread)
    wait_until(lambda: len(_raised(caplog)) == 2, 5, "both failures logged")
    assert all(r.exc_info for r in _raised(caplog))


def test_on_event_must_be_callable(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="bad")
    with pytest.raises(TypeError, match="on_event must be callable or None, got int"):
        consumer.messages(on_event=5)  # type: ignore[arg-type]
    with js.ordered_consumer(stream) as ordered, pytest.raises(TypeError, match="on_event must be callable"):
        ordered.messages(on_event="x")  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_ordered_iterator_reports_its_resets(js: natspull.JetStream, stream: str) -> None:
    """An ordered consumer whose consumer is deleted resets (a ``reset`` event), and reads on."""
    fill(js, stream, 3)
    events: list[natspull.ConsumerEvent] = []
    with js.ordered_consumer(stream) as ordered, ordered.messages(on_event=events.append) as msgs:
        assert [msgs.next(timeout=5).metadata.sequence.stream for _ in range(3)] == [1, 2, 3]
        [first] = list(js.consumer_names(stream))
        js.delete_consumer(stream, first)
        wait_until(lambda: msgs.stats().resets == 1, 10, "the reset")
        fill(js, stream, 1)
        assert msgs.next(timeout=10).metadata.sequence.stream == 4
    # (callbacks run on the event thread: the with block does not wait for them)
    wait_until(lambda: "reset" in kinds(events), 10, "the reset event")
    seen = kinds(events)
    assert seen[:1] == ["connected"] and "reset" in seen, seen
    reset = next(event for event in events if event.kind == "reset")
    assert reset.consumer == first


@pytest.mark.timeout(30)
def test_closing_the_client_ends_the_event_thread(nats_server: NatsServer) -> None:
    """An iterator left open when its client closes: its event thread ends too (the autouse
    guard fails a test that leaves a natspull thread behind)."""
    events: list[natspull.ConsumerEvent] = []
    with natspull.connect(nats_server.url) as client:
        js = client.jetstream()
        js.add_stream(name="CL", subjects=["cl.>"])
        msgs = js.add_consumer("CL", durable_name="c").messages(on_event=events.append)
        wait_until(lambda: kinds(events) == ["connected"], 5, "the connected event")
    with pytest.raises(natspull.ConnectionClosedError):
        msgs.next(timeout=5)
    assert kinds(events) == ["connected"]  # closing is no disconnect


def _raised(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "natspull: on_event raised"]
