"""JetStream management, publish, fetch/next and every ack kind, against a real server."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import fill, server_stopped, wait_until
from test_client import assert_ours

import natspull
from natspull.testing import NatsServer


def test_stream_management_and_not_found_errors(js: natspull.JetStream) -> None:
    info = js.add_stream(name="M", subjects=["m.>"])
    assert info.config.name == "M"
    assert js.update_stream(name="M", subjects=["m.>", "n.>"]).config.subjects == ["m.>", "n.>"]
    js.publish("m.1", b"x")
    assert js.stream_info("M").state.messages == 1
    js.purge_stream("M")
    assert js.stream_info("M").state.messages == 0
    js.delete_stream("M")
    for call in (lambda: js.stream_info("M"), lambda: js.delete_stream("M"), lambda: js.purge_stream("M")):
        with pytest.raises(natspull.StreamNotFoundError) as info_:
            call()
        assert info_.value.code == 404 and info_.value.err_code == 10059
        assert_ours(info_.value)


def test_consumer_management_and_not_found_errors(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="c1", ack_policy=natspull.AckPolicy.EXPLICIT)
    assert (consumer.stream, consumer.name) == (stream, "c1")
    assert js.consumer(stream, "c1").info().name == "c1"
    # create-or-update
    js.add_consumer(stream, durable_name="c1", ack_policy=natspull.AckPolicy.EXPLICIT, max_deliver=5)
    assert consumer.info().config.max_deliver == 5
    js.delete_consumer(stream, "c1")
    for call in (lambda: js.consumer(stream, "c1"), lambda: js.delete_consumer(stream, "c1")):
        with pytest.raises(natspull.ConsumerNotFoundError) as info:
            call()
        assert info.value.err_code == 10014
        assert_ours(info.value)
    with pytest.raises(natspull.StreamNotFoundError):
        js.consumer("NOPE", "c1")
    with pytest.raises(ValueError, match="deliver_subject"):
        js.add_consumer(stream, durable_name="push", deliver_subject="push.here")
    with pytest.raises(ValueError, match=r"consumer name 'a\.b'"):
        js.consumer(stream, "a.b")


def test_publish_and_publish_many_acks(js: natspull.JetStream, stream: str) -> None:
    ack = js.publish(f"{stream}.a", b"one", headers={"h": "1"}, msg_id="id-1")
    assert (ack.stream, ack.seq, ack.duplicate) == (stream, 1, None)
    assert js.publish(f"{stream}.a", b"one", msg_id="id-1").duplicate is True
    acks = js.publish_many([(f"{stream}.b", b"%d" % i) for i in range(1000)], window=64)
    assert [a.seq for a in acks] == list(range(2, 1002))
    with pytest.raises(natspull.JetStreamAPIError) as info:
        js.publish("nostream.here", b"x")
    assert info.value.code == 503
    with pytest.raises(natspull.JetStreamAPIError):
        js.publish(f"{stream}.a", b"x", expected_stream="OTHER")
    assert js.publish_many([]) == []
    with pytest.raises(TypeError, match=r"messages\[0\].*natspull.Publish"):
        js.publish_many([b"x"])  # type: ignore[list-item]


def test_fetch_full_partial_empty_and_no_wait(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="f")
    fill(js, stream, 15)
    assert len(consumer.fetch(10, max_wait=5)) == 10  # full: returns at once
    partial = consumer.fetch(10, max_wait=0.5)  # only 5 left: returns them on expiry
    assert [m.metadata.sequence.stream for m in partial] == list(range(11, 16))
    assert consumer.fetch(10, max_wait=0.3) == []  # empty: no exception
    assert consumer.fetch(10, no_wait=True) == []
    fill(js, stream, 3)
    # the consumer learns of new stream messages asynchronously; no_wait answers from that view
    wait_until(lambda: consumer.info().num_pending == 3, message="the consumer to see 3 messages")
    assert len(consumer.fetch(10, no_wait=True)) == 3
    with pytest.raises(natspull.TimeoutError):
        consumer.next(timeout=0.2)
    fill(js, stream, 1)
    msg = consumer.next(timeout=5)
    assert msg.metadata.sequence.stream == 19
    assert msg.metadata.stream == stream and msg.metadata.consumer == "f"
    with pytest.raises(ValueError, match="batch"):
        consumer.fetch(0)


def test_fetch_max_bytes(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="b")
    fill(js, stream, 10, size=1000)
    got = consumer.fetch(10, max_wait=1, max_bytes=3500)
    assert 1 <= len(got) <= 3
    with pytest.raises(natspull.JetStreamAPIError, match="larger than max_bytes"):
        consumer.fetch(1, max_wait=1, max_bytes=100)


def test_every_ack_kind_is_seen_by_the_server(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="a", ack_wait=30, ack_policy=natspull.AckPolicy.EXPLICIT)
    fill(js, stream, 4)
    m1, m2, m3, m4 = consumer.fetch(4, max_wait=2)
    m1.ack()
    m2.ack_sync(timeout=2)
    with pytest.raises(natspull.MsgAlreadyAckedError):
        m2.ack()
    m3.in_progress()
    m3.in_progress()
    m3.term(reason="poison")
    with pytest.raises(natspull.MsgAlreadyAckedError):
        m3.nak()
    m4.nak()
    client.flush()
    redelivered = consumer.fetch(1, max_wait=2)  # nak: redelivered now, not after ack_wait=30
    assert [m.metadata.sequence.stream for m in redelivered] == [4]
    assert redelivered[0].metadata.num_delivered == 2
    redelivered[0].ack_sync()
    info = consumer.info()
    assert info.num_ack_pending == 0
    assert info.ack_floor.stream_seq == 4


def test_nak_with_delay(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="d", ack_wait=30)
    fill(js, stream, 1)
    consumer.next(timeout=2).nak(delay=0.3)
    assert consumer.fetch(1, max_wait=0.1) == []  # not yet
    assert consumer.next(timeout=3).metadata.num_delivered == 2
    with pytest.raises(ValueError, match="delay"):
        consumer.fetch(1, no_wait=True)  # nothing; then check validation on a fresh message
        natspull.Msg("s", b"", "$JS.ACK.S.C.1.1.1.1.0").nak(delay=-1)


def test_deleted_consumer_during_fetch_raises_consumer_deleted(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="gone")
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            consumer.fetch(10, max_wait=20)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=fetch)
    t.start()
    wait_until(lambda: consumer.info().num_waiting == 1, message="the pull to be waiting")
    js.delete_consumer(stream, "gone")
    t.join(5)
    assert not t.is_alive()
    assert isinstance(errors[0], natspull.ConsumerDeletedError)
    assert_ours(errors[0])


def test_fetch_on_missing_consumer_is_a_clear_error(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="tmp")
    js.delete_consumer(stream, "tmp")
    with pytest.raises(natspull.ConsumerNotFoundError):
        consumer.fetch(1, max_wait=2)


def test_consumer_info_waits_the_contexts_timeout(nats_server: NatsServer) -> None:
    """Regression: Consumer.info() built its own JetStream with a fixed 5 s timeout."""
    with natspull.connect(nats_server.url) as client:
        setup = client.jetstream()  # (the default timeout: creating a file stream may take > 0.5 s)
        setup.add_stream(name="T", subjects=["t.>"])
        setup.add_consumer("T", durable_name="c")
        consumer = client.jetstream(timeout=0.5).consumer("T", "c")
        with server_stopped(nats_server):  # the server answers nothing
            start = time.monotonic()
            with pytest.raises(natspull.TimeoutError):
                consumer.info()
            elapsed = time.monotonic() - start
        assert 0.5 <= elapsed < 2.5, elapsed
