"""Typed ``stats()`` snapshots against a real server: exact counts after runs of known size,
immutability, documented fields, and the deprecated dict-style access."""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading

import pytest
from conftest import fill, wait_until

import natspull
from natspull._ack_subject import is_redelivery
from natspull._msg import parse_metadata
from natspull.testing import NatsServer

TOTAL = 100
NAKED = 7  # the first NAKED stream sequences are NAKed once, then acked

MESSAGES_FIELDS = [
    "delivered",
    "buffered",
    "pending_msgs",
    "pending_bytes",
    "waiters",
    "pulls_sent",
    "heartbeats_missed",
    "reconnects",
    "pins_lost",
    "resets",
    "acked",
    "redelivered",
    "state",
]
CONSUME_FIELDS = [
    *MESSAGES_FIELDS,
    "handled",
    "failed",
    "terminated",
    "lease_extensions",
    "workers_alive",
    "auto_acked",
    "unsettled",
    "timed_out",
    "stuck",
    "late_settles",
    "held",
    "sent_back",
]
CLIENT_FIELDS = [
    "state",
    "reconnects",
    "in_msgs",
    "in_bytes",
    "out_msgs",
    "out_bytes",
    "errors_received",
    "consumers_running",
]


def documented(cls: type) -> list[str]:
    """The names under ``Attributes:`` in the docstrings of *cls* and its bases."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        # cleandoc: Python 3.13 strips the indentation of docstrings at compile time, 3.9-3.12 do not
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        _, _, attributes = doc.partition("Attributes:")
        names += re.findall(r"^ {4}(\w+):", attributes, re.M)
    return names


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (natspull.MessagesStats, MESSAGES_FIELDS),
        (natspull.ConsumeStats, CONSUME_FIELDS),
        (natspull.ClientStats, CLIENT_FIELDS),
    ],
)
def test_every_field_is_there_and_documented(cls: type, fields: list[str]) -> None:
    assert [f.name for f in dataclasses.fields(cls)] == fields
    assert documented(cls) == fields


@pytest.mark.parametrize(
    ("reply", "redelivered"),
    [
        ("$JS.ACK.S.C.1.5.5.1700000000000000000.0", False),
        ("$JS.ACK.S.C.2.5.6.1700000000000000000.0", True),
        ("$JS.ACK.S.C.12.5.6.1700000000000000000.0", True),
        ("$JS.ACK.hub.ACCHASH.S.C.1.5.5.1700000000000000000.0.xyz", False),
        ("$JS.ACK._.ACCHASH.S.C.3.5.7.1700000000000000000.0.xyz", True),
        ("$JS.ACK.S.C.2", False),  # too short: not an ack subject
        ("", False),
        ("_INBOX.abc", False),
    ],
)
def test_redelivery_is_read_from_the_ack_subject(reply: str, redelivered: bool) -> None:
    """The cheap check the queue runs per message agrees with the metadata parser."""
    assert is_redelivery(reply) is redelivered
    if redelivered:
        assert parse_metadata(reply).num_delivered > 1


def handle(msg: natspull.Msg) -> None:
    """NAK the first delivery of the first NAKED sequences; ack everything else."""
    if msg.metadata.num_delivered == 1 and msg.metadata.sequence.stream <= NAKED:
        msg.nak()
    else:
        msg.ack()


@pytest.mark.timeout(60)
def test_messages_stats_count_exactly(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="exact")
    fill(js, stream, TOTAL)
    with consumer.messages(max_messages=50) as msgs:
        acked: set[int] = set()
        while len(acked) < TOTAL:
            msg = msgs.next(timeout=10)
            handle(msg)
            if msg.metadata.num_delivered > 1 or msg.metadata.sequence.stream > NAKED:
                acked.add(msg.metadata.sequence.stream)
        wait_until(lambda: consumer.info().num_ack_pending == 0, 10, "the acks to arrive")
        stats = msgs.stats()
    assert isinstance(stats, natspull.MessagesStats)
    assert (stats.delivered, stats.acked, stats.redelivered) == (TOTAL + NAKED, TOTAL, NAKED)
    assert (stats.buffered, stats.waiters) == (0, 0)
    assert (stats.heartbeats_missed, stats.reconnects, stats.pins_lost, stats.resets) == (0, 0, 0, 0)
    assert stats.pulls_sent >= 3  # 107 messages, at most 50 per pull
    assert stats.state == "open"
    assert msgs.stats().state == "closed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.delivered = 0  # type: ignore[misc]


@pytest.mark.timeout(60)
def test_ack_sync_counts_and_nak_term_do_not(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="kinds", ack_wait=30)
    fill(js, stream, 4)
    with consumer.messages() as msgs:
        msgs.next(timeout=5).ack_sync(timeout=5)
        msgs.next(timeout=5).term()
        msgs.next(timeout=5).in_progress()
        msgs.next(timeout=5).nak(delay=30)
        stats = msgs.stats()
    assert (stats.delivered, stats.acked, stats.redelivered) == (4, 1, 0)


@pytest.mark.timeout(60)
def test_consume_stats_count_exactly(js: natspull.JetStream, stream: str) -> None:
    """Handlers NAK NAKED messages once and raise on NAKED more (NAKed by the context)."""
    consumer = js.add_consumer(stream, durable_name="pool")
    fill(js, stream, TOTAL)
    raised: set[int] = set()
    lock = threading.Lock()  # guards raised (several workers)

    def handler(msg: natspull.Msg) -> None:
        seq, delivered = msg.metadata.sequence.stream, msg.metadata.num_delivered
        if delivered == 1 and NAKED < seq <= 2 * NAKED:
            with lock:
                raised.add(seq)
            raise RuntimeError(f"failing {seq} once")
        handle(msg)

    with consumer.consume(handler, workers=4, max_messages=30) as ctx:
        wait_until(lambda: ctx.stats().acked == TOTAL, 20, f"{TOTAL} acks")
        ctx.drain()
        assert ctx.wait(timeout=10)
    stats = ctx.stats()
    assert isinstance(stats, natspull.ConsumeStats)
    assert len(raised) == NAKED
    assert (stats.delivered, stats.handled, stats.failed) == (TOTAL + 2 * NAKED, TOTAL + NAKED, NAKED)
    assert (stats.acked, stats.redelivered) == (TOTAL, 2 * NAKED)
    assert (stats.workers_alive, stats.buffered, stats.state) == (0, 0, "closed")
    wait_until(lambda: consumer.info().num_ack_pending == 0, 10, "the acks to arrive")


@pytest.mark.timeout(60)
def test_ordered_stats(js: natspull.JetStream, stream: str) -> None:
    fill(js, stream, 10)
    with js.ordered_consumer(stream) as ordered, ordered.messages() as msgs:
        for _ in range(10):
            msgs.next(timeout=5)
        stats = msgs.stats()
    assert isinstance(stats, natspull.MessagesStats)
    assert (stats.delivered, stats.acked, stats.redelivered, stats.resets) == (10, 0, 0, 0)


def test_as_dict_is_a_plain_dict_and_item_access_is_gone(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="plain")
    fill(js, stream, 3)
    with consumer.messages() as msgs:
        wait_until(lambda: msgs.stats().buffered == 3, 10, "three buffered")
        stats = msgs.stats()
    as_dict = stats.as_dict()
    assert list(as_dict) == MESSAGES_FIELDS and as_dict["buffered"] == 3 and as_dict["state"] == "open"
    with pytest.raises(TypeError):
        stats["buffered"]  # type: ignore[index]


@pytest.mark.timeout(60)
def test_client_stats(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1) as client:
        before = client.stats()
        assert isinstance(before, natspull.ClientStats)
        assert (before.state, before.reconnects, before.errors_received, before.consumers_running) == (
            "connected",
            0,
            0,
            0,
        )
        for _ in range(10):
            client.publish("core.x", b"x" * 16)
        client.flush(timeout=5)
        after = client.stats()
        assert (after.out_msgs - before.out_msgs, after.out_bytes - before.out_bytes) == (10, 160)
        assert (after.in_msgs, after.in_bytes) == (before.in_msgs, before.in_bytes)

        js = client.jetstream()
        js.add_stream(name="CS", subjects=["cs.>"])
        consumer = js.add_consumer("CS", durable_name="c")
        js.publish("cs.x", b"y" * 8)
        mark = client.stats()
        with consumer.messages() as msgs:
            msgs.next(timeout=5)
            assert client.stats().consumers_running == 1
            received = client.stats()
            assert received.in_msgs - mark.in_msgs == 1
            assert received.in_bytes - mark.in_bytes == 8
        wait_until(lambda: client.stats().consumers_running == 0, 5, "the iterator to end")

        nats_server.restart()
        wait_until(lambda: client.stats().reconnects == 1, 20, "the reconnect")
        wait_until(lambda: client.stats().state == "connected", 20, "connected again")
    closed = client.stats()
    assert closed.state == "closed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        closed.state = "connected"  # type: ignore[misc]
