"""An iterator dropped while open is stopped when it is garbage-collected, against a real server.

Like an unclosed file or socket: its inbox is unsubscribed, what it held is NAKed back (so the
server redelivers it at once, not after ack_wait) and a ResourceWarning names where it was created.
"""

from __future__ import annotations

import functools
import gc
import re
import sys
import time
import warnings
import weakref

import pytest
import trio
from conftest import fill, wait_until

import natspull
import natspull.trio
from natspull.testing import NatsServer


def take_one(consumer: natspull.Consumer) -> int:
    """Ack the first message of a for-loop left without ``with`` or ``stop()``; its stream seq."""
    for msg in consumer.messages(max_messages=5):  # the creation site: line TAKE_ONE_LINE
        msg.ack()
        return msg.metadata.sequence.stream
    raise AssertionError("the iterator ended without a message")


TAKE_ONE_LINE = take_one.__code__.co_firstlineno + 2


def pull_inboxes(server: NatsServer, client: natspull.Client) -> list[str]:
    """The client's subscriptions on the server but its two wildcard inboxes (``_INBOX.<id>.*``):
    nats-py's request inbox and natspull's reply router (publish_many, publish_async)."""
    cid = client.server_info["client_id"]
    (conn,) = [c for c in server.connz(subs=1)["connections"] if c["cid"] == cid]
    subs = conn["subscriptions_list"]
    request_inboxes = [s for s in subs if s.startswith("_INBOX.") and s.endswith(".*")]
    assert len(request_inboxes) == 2, subs
    return sorted(set(subs) - set(request_inboxes))


def buffered(msgs: natspull.Messages, count: int) -> bool:
    return bool(msgs.stats().buffered == count)


def test_dropped_iterators_are_stopped_and_warn(
    nats_server: NatsServer, client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    """The report: 50 times ``for m in consumer.messages(max_messages=5): m.ack(); break``.

    ack_wait is 60 s, so only NAKs explain that the 200 messages the iterators held are
    delivered again at once. (A NAKed message stays in num_ack_pending until the server
    redelivers it: nats-server's processNak only queues it for redelivery.)
    """
    consumer = js.add_consumer(stream, durable_name="d", ack_policy=natspull.AckPolicy.EXPLICIT, ack_wait=60)
    fill(js, stream, 250)
    with pytest.warns(ResourceWarning) as record:
        acked = [take_one(consumer) for _ in range(50)]
        gc.collect()
    assert len(set(acked)) == 50
    assert len(record) == 50
    for warning in record:
        assert issubclass(warning.category, ResourceWarning)
        assert f"created at {__file__}:{TAKE_ONE_LINE}" in str(warning.message), str(warning.message)
    wait_until(lambda: pull_inboxes(nats_server, client) == [], message="every pull inbox unsubscribed")
    client.flush()  # the NAKs
    before = consumer.info()
    assert before.num_ack_pending + before.num_pending == 200  # NAKed (to redeliver) + never delivered

    t0 = time.monotonic()
    rest = consumer.fetch(200, max_wait=10)  # returns once 200 arrived
    assert time.monotonic() - t0 < 5
    assert len(rest) == 200
    assert sorted(acked + [m.metadata.sequence.stream for m in rest]) == list(range(1, 251))
    assert sum(m.metadata.num_delivered > 1 for m in rest) == before.num_ack_pending
    for m in rest:
        m.ack()
    client.flush()
    after = consumer.info()
    assert (after.num_ack_pending, after.num_pending) == (0, 0)


def test_only_an_open_iterator_warns_and_nothing_keeps_it_alive(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="w", ack_wait=60)
    msgs = consumer.messages()
    ref = weakref.ref(msgs)
    with pytest.warns(ResourceWarning, match=r"unclosed <natspull\.Messages .* open> created at .*:\d+"):
        del msgs  # no gc.collect(): nothing the engine or the client holds refers back to it
    assert ref() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with consumer.messages() as msgs:
            pass
        del msgs
        msgs = consumer.messages()
        msgs.stop()
        del msgs
        gc.collect()


def test_a_drained_iterator_dropped_with_messages_left_hands_them_back(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    """drain() asked for an end, so no warning; what the application never took is NAKed."""
    consumer = js.add_consumer(stream, durable_name="dr", ack_policy=natspull.AckPolicy.EXPLICIT, ack_wait=60)
    fill(js, stream, 5)
    msgs = consumer.messages(max_messages=5)
    # (a partial, not a closure: nothing may keep a reference to msgs after `del msgs`)
    wait_until(functools.partial(buffered, msgs, 5), message="five messages buffered")
    msgs.drain()
    msgs.next(timeout=5).ack()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del msgs
    client.flush()  # the NAKs
    t0 = time.monotonic()
    again = consumer.fetch(4, max_wait=10)  # ack_wait is 60 s: only the NAKs explain this
    assert time.monotonic() - t0 < 5
    assert [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in again] == [
        (2, 2),
        (3, 2),
        (4, 2),
        (5, 2),
    ]


@pytest.mark.trio
async def test_a_trio_iterator_entered_by_hand_and_dropped_is_stopped(nats_server: NatsServer) -> None:
    """``async with`` always stops it; one entered by hand and dropped is stopped when collected,
    and what it held - buffered, or taken into its trio-side deque - is NAKed back."""
    async with natspull.trio.open_client(nats_server.url) as client:
        js = client.jetstream()
        await js.add_stream(name="TD", subjects=["TD.>"])
        await js.publish_many(("TD.m", b"%d" % i) for i in range(5))
        consumer = await js.add_consumer(
            "TD", durable_name="d", ack_policy=natspull.AckPolicy.EXPLICIT, ack_wait=60
        )
        created_line = sys._getframe().f_lineno + 1
        msgs = consumer.messages(max_messages=5)
        await msgs.__aenter__()
        with trio.fail_after(5):
            first = await msgs.next()
        first.ack()
        with pytest.warns(
            ResourceWarning, match=rf"unclosed .* created at {re.escape(__file__)}:{created_line}:"
        ) as warned:
            del msgs
            # A wake-up the loop thread queued for it (trio's run_sync_soon) may still hold a
            # reference: let trio run what is queued until the iterator is collected.
            with trio.fail_after(5):
                while not any(issubclass(w.category, ResourceWarning) for w in warned):
                    gc.collect()
                    await trio.sleep(0.01)
        await client.flush()  # the NAKs
        t0 = time.monotonic()
        again = await consumer.fetch(4, max_wait=10)  # ack_wait is 60 s: only the NAKs explain this
        assert time.monotonic() - t0 < 5
        assert [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in again] == [
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 2),
        ]
        for m in again:
            m.ack()
