"""``max_bytes`` flow control against a real nats-server, with exact sizes.

The server charges each message it delivers to a pull request as
``len(subject) + len(reply) + len(header block) + len(payload)`` (nats-server consumer.go,
``getNextMsg``/``nextWaiting``), where the header block is the raw ``NATS/1.0\\r\\n...\\r\\n\\r\\n``
it stored. The expected sizes here are computed from those parts, with the header block read
back from the server (``STREAM.MSG.GET``), never from natspull's own count.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from typing import Any

import pytest
from conftest import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import natspull

HEADERS = {"Trace-Id": "4bf92f3577b34da6", "K": "v"}
FIVE = [b"%010d" % i for i in range(5)]  # five 10-byte payloads


def server_size(client: natspull.Client, stream: str, msg: natspull.Msg) -> int:
    """What the server charged *msg* against ``max_bytes``, from the parts of the message."""
    reply = client.request(
        f"$JS.API.STREAM.MSG.GET.{stream}",
        json.dumps({"seq": msg.metadata.sequence.stream}).encode(),
        timeout=5,
    )
    stored = json.loads(reply.data)["message"]
    assert base64.b64decode(stored["data"]) == msg.data
    header_block = base64.b64decode(stored["hdrs"]) if msg.headers else b""
    if msg.headers:
        assert header_block.startswith(b"NATS/1.0\r\n") and header_block.endswith(b"\r\n\r\n")
    else:
        assert "hdrs" not in stored
    return len(msg.subject.encode()) + len(msg.reply.encode()) + len(header_block) + len(msg.data)


def publish(
    js: natspull.JetStream, subject: str, payloads: list[bytes], headers: dict[str, str] | None
) -> None:
    for data in payloads:
        js.publish(subject, data, headers=headers)


def probe_sizes(
    client: natspull.Client, js: natspull.JetStream, stream: str, name: str, count: int, **config: Any
) -> list[int]:
    """The server sizes of the first *count* messages as delivered to a fresh consumer called *name*.

    A consumer whose name has the same length (and the same *config*) gets the same sizes: its
    ack subjects differ only in the name (same sequences, timestamps and pending counts).
    """
    probe = js.add_consumer(stream, durable_name=name, **config)
    msgs = probe.fetch(count, max_wait=5)
    assert len(msgs) == count
    return [server_size(client, stream, m) for m in msgs]


def fits(sizes: list[int], max_bytes: int) -> int:
    """How many messages, in order, one request for *max_bytes* gets (the server fills greedily)."""
    used = count = 0
    for size in sizes:
        if used + size > max_bytes:
            break
        used += size
        count += 1
    return count


def final_pending(sizes: list[int], max_bytes: int) -> int:
    """pending_bytes once every message is handed out, with ``threshold_bytes=1``.

    A new request for all of ``max_bytes`` goes out only when nothing is pending; the server
    fills it greedily and ends it when the next message does not fit (409) or its bytes are
    used up exactly (no status). The last request waits for messages with what it has left.
    """
    left = list(sizes)
    while True:
        count = fits(left, max_bytes)
        if count == len(left):
            remaining = max_bytes - sum(left)
            return remaining if remaining else max_bytes  # used up exactly: one more full request
        left = left[count:]


@pytest.mark.parametrize("headers", [None, HEADERS], ids=["plain", "headers"])
def test_messages_max_bytes_hands_out_every_message(
    client: natspull.Client, js: natspull.JetStream, stream: str, headers: dict[str, str] | None
) -> None:
    """The report: messages(max_bytes=150) over five 10-byte messages handed out two, then stalled."""
    consumer = js.add_consumer(stream, durable_name="c", ack_wait=60)
    publish(js, f"{stream}.m", FIVE, headers)
    got = []
    with consumer.messages(max_bytes=150) as msgs:
        for _ in range(5):
            m = msgs.next(timeout=5)
            assert 0 <= msgs.stats().pending_bytes <= 150
            got.append(m)
            m.ack()
    assert [m.data for m in got] == FIVE
    assert [m.size for m in got] == [server_size(client, stream, m) for m in got]


@pytest.mark.parametrize("headers", [None, HEADERS], ids=["plain", "headers"])
def test_pending_bytes_follow_the_server_exactly(
    client: natspull.Client, js: natspull.JetStream, stream: str, headers: dict[str, str] | None
) -> None:
    """With threshold_bytes=1 a pull goes out only when nothing is pending: any byte counted
    differently from the server either stalls the iterator or ends with another pending_bytes."""
    consumer = js.add_consumer(stream, durable_name="c", ack_wait=60)
    publish(js, f"{stream}.m", FIVE, headers)
    sizes = []
    with consumer.messages(max_bytes=150, threshold_bytes=1) as msgs:
        for _ in range(5):
            m = msgs.next(timeout=5)
            sizes.append(server_size(client, stream, m))
            assert m.size == sizes[-1]
            m.ack()
        expected = final_pending(sizes, 150)
        wait_until(lambda: msgs.stats().pending_bytes == expected, message=f"pending_bytes == {expected}")
        assert msgs.stats().buffered == 0


def test_consume_max_bytes_handles_every_message(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="c", ack_wait=60)
    publish(js, f"{stream}.m", FIVE, HEADERS)
    handled: list[bytes] = []

    def handler(m: natspull.Msg) -> None:
        handled.append(m.data)
        m.ack()

    with consumer.consume(handler, max_bytes=150) as ctx:
        wait_until(lambda: ctx.stats().handled == 5, message="five messages handled")
    assert ctx.wait(5)
    assert handled == FIVE
    assert ctx.stats().pending_bytes >= 0


@pytest.mark.parametrize("headers", [None, HEADERS], ids=["plain", "headers"])
@pytest.mark.parametrize("limit", ["300", "exact"])
def test_fetch_max_bytes_returns_when_the_server_filled_the_request(
    client: natspull.Client, js: natspull.JetStream, stream: str, headers: dict[str, str] | None, limit: str
) -> None:
    """fetch() ends when the request is filled, not at max_wait: the server ends a request whose
    bytes are used up exactly without any status message ("exact": max_bytes = 4 messages)."""
    publish(js, f"{stream}.m", [b"%010d" % i for i in range(10)], headers)
    sizes = probe_sizes(client, js, stream, "probe", 10)
    max_bytes = 300 if limit == "300" else sum(sizes[:4])
    expected = fits(sizes, max_bytes)
    assert 0 < expected < 10

    consumer = js.add_consumer(stream, durable_name="fetch")  # as long a name as "probe"
    t0 = time.monotonic()
    got = consumer.fetch(1_000_000, max_bytes=max_bytes, max_wait=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"fetch took {elapsed:.1f} s"
    assert [m.metadata.sequence.stream for m in got] == list(range(1, expected + 1))
    assert [m.size for m in got] == sizes[:expected]


def test_stop_after_with_max_bytes_used_up_exactly(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    """A request that got exactly its max_bytes ended: its unfilled message count must not
    hold back the pulls that stop_after allows."""
    publish(js, f"{stream}.m", [b"%010d" % i for i in range(8)], None)
    sizes = probe_sizes(client, js, stream, "probe", 8)
    assert len(set(sizes)) == 1  # same-length ack subjects (single-digit sequences and pending)
    consumer = js.add_consumer(stream, durable_name="limit", ack_wait=60)
    with consumer.messages(max_bytes=3 * sizes[0], stop_after=5) as msgs:
        for i in range(5):
            m = msgs.next(timeout=5)
            assert m.metadata.sequence.stream == i + 1
            m.ack()
        with pytest.raises(natspull.IteratorClosedError):
            msgs.next(timeout=5)


def test_a_budget_split_over_too_small_requests_is_pulled_whole_again(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    """A small message, then one that needs all of max_bytes, with threshold_bytes=max_bytes:
    releasing the small one pulls for its bytes while the first request is still open, so
    the budget is split over two requests, each too small for the big message (409 each).
    Re-pulling each part again at once was a storm of pulls that never fetched it."""
    for trial in range(10):
        subject = f"{stream}.t{trial}"
        publish(js, subject, [b"0:", b"1:x"], None)
        big = probe_sizes(client, js, stream, f"p{trial}", 2, filter_subject=subject)[1]
        consumer = js.add_consumer(stream, durable_name=f"c{trial}", filter_subject=subject, ack_wait=60)
        with consumer.messages(max_bytes=big, threshold_bytes=big) as msgs:
            for data in (b"0:", b"1:x"):
                m = msgs.next(timeout=5)
                assert m.data == data
                m.ack()
            assert msgs.stats().pulls_sent <= 4


_header_sets = st.none() | st.dictionaries(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=12),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=40),
    min_size=1,
    max_size=3,
)
_runs = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    messages=st.lists(st.tuples(st.integers(0, 120), _header_sets), min_size=1, max_size=12),
    extra_bytes=st.integers(0, 400),
    threshold=st.sampled_from(["default", "one", "max"]),
)
def test_random_sizes_every_message_is_handed_out(
    client: natspull.Client,
    js: natspull.JetStream,
    stream: str,
    messages: list[tuple[int, dict[str, str] | None]],
    extra_bytes: int,
    threshold: str,
) -> None:
    """Random payload and header sizes and budgets: every message is handed out in order, each
    counted as the server counts it, pending_bytes stays within 0..max_bytes, and with
    threshold_bytes=1 it ends at exactly what the server still owes."""
    run = next(_runs)
    subject = f"{stream}.r{run}"
    for i, (size, headers) in enumerate(messages):
        js.publish(subject, (b"%d:" % i).ljust(size, b"x"), headers=headers)
    sizes = probe_sizes(client, js, stream, f"p{run:05d}", len(messages), filter_subject=subject)
    consumer = js.add_consumer(stream, durable_name=f"c{run:05d}", filter_subject=subject, ack_wait=60)
    max_bytes = max(sizes) + extra_bytes
    threshold_bytes = {"default": None, "one": 1, "max": max_bytes}[threshold]
    with consumer.messages(max_bytes=max_bytes, threshold_bytes=threshold_bytes) as msgs:
        for i in range(len(messages)):
            m = msgs.next(timeout=5)
            assert m.data.startswith(b"%d:" % i)
            assert m.size == sizes[i]
            assert 0 <= msgs.stats().pending_bytes <= max_bytes
            m.ack()
        if threshold == "one":
            expected = final_pending(sizes, max_bytes)
            wait_until(lambda: msgs.stats().pending_bytes == expected, message=f"pending_bytes == {expected}")
