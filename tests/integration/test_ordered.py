"""Ordered consumers: order, starting points, resets, acks refused, closing, no leak."""

from __future__ import annotations

import datetime
import threading

import pytest
from conftest import natspull_threads, pull_inboxes, wait_until

import natspull
from natspull.testing import NatsServer

UTC = datetime.timezone.utc  # datetime.UTC: Python >= 3.11


def _seqs(msgs: list[natspull.Msg]) -> list[int]:
    return [m.metadata.sequence.stream for m in msgs]


def _read(it: natspull.OrderedMessages, count: int) -> list[int]:
    return [it.next(timeout=10).metadata.sequence.stream for _ in range(count)]


def _publish(js: natspull.JetStream, stream: str, count: int, subjects: int = 3) -> None:
    js.publish_many((f"{stream}.{i % subjects}", b"%d" % i) for i in range(count))


def test_filtered_in_order_across_deletes(js: natspull.JetStream, stream: str) -> None:
    """Two of three subjects; the consumer is deleted by an admin twice: every matching
    sequence once, increasing."""
    _publish(js, stream, 3_000)
    expected = [s for s in range(1, 3_001) if (s - 1) % 3 != 2]
    with js.ordered_consumer(stream, filter_subjects=[f"{stream}.0", f"{stream}.1"]) as oc:
        # The server does not always answer the pulls waiting on a consumer an administrator
        # deletes (nats-server 3969): the reader then notices at its second missed heartbeat,
        # 2 x 2 s with expires=4, inside _read's 10 s (the default, 2 x 15 s, is not).
        it = oc.messages(max_messages=100, expires=4)
        got = _read(it, 500)
        for _ in range(2):
            js.delete_consumer(stream, it._engine.consumer)
            got += _read(it, 500)
        got += _read(it, len(expected) - len(got))
        assert got == expected
        assert it.stats().resets == 2
        with pytest.raises(natspull.TimeoutError):
            it.next(timeout=0.2)


def test_gap_is_never_handed_out(js: natspull.JetStream, stream: str) -> None:
    """A message skipped on the wire (consumer sequence jumps) resets; the app sees no gap."""
    _publish(js, stream, 200, subjects=1)
    with js.ordered_consumer(stream) as oc:
        it = oc.messages(max_messages=10)
        assert _read(it, 5) == [1, 2, 3, 4, 5]
        engine = it._engine
        # Make the engine expect a later consumer sequence than the server sends next: the
        # next message looks like a gap to it.
        engine.loop_thread.run(_bump(engine), 5)
        assert _read(it, 195) == list(range(6, 201))
        assert it.stats().resets == 1


async def _bump(engine: natspull.OrderedMessages | object) -> None:
    engine.mode.cursor.consumer_seq -= 1  # type: ignore[attr-defined]  # (the ordered mode's cursor)


@pytest.mark.parametrize("how", ["last", "new", "by_start_sequence", "by_start_time"])
def test_starting_points(js: natspull.JetStream, stream: str, how: str) -> None:
    js.publish_many([(f"{stream}.a", b"1"), (f"{stream}.b", b"2"), (f"{stream}.a", b"3")])
    before = datetime.datetime.now(UTC)  # the server's clock is this machine's
    middle = js.publish(f"{stream}.b", b"4")  # seq 4
    js.publish(f"{stream}.c", b"5")  # seq 5, not matched by the filters below
    options: dict[str, object] = {"filter_subjects": [f"{stream}.a", f"{stream}.b"]}
    if how == "last":
        options["deliver_policy"] = natspull.DeliverPolicy.LAST
        want_first = 4  # the newest message matching any filter
    elif how == "new":
        options["deliver_policy"] = "new"
        want_first = 7
    elif how == "by_start_sequence":
        options["opt_start_seq"] = 2
        want_first = 2
    else:
        options["opt_start_time"] = before  # between seq 3 and seq 4
        want_first = middle.seq
    with js.ordered_consumer(stream, **options) as oc:  # type: ignore[arg-type]
        it = oc.messages()
        if how == "new":
            wait_until(lambda: js.stream_info(stream).state.consumer_count == 1, 5, "the consumer")
            js.publish(f"{stream}.c", b"6")
            js.publish(f"{stream}.a", b"7")
        assert it.next(timeout=5).metadata.sequence.stream == want_first


def test_last_with_several_filters_starts_at_newest_match(js: natspull.JetStream, stream: str) -> None:
    js.publish_many([(f"{stream}.a", b"1"), (f"{stream}.b", b"2"), (f"{stream}.c", b"3")])
    with js.ordered_consumer(
        stream, filter_subjects=[f"{stream}.a", f"{stream}.b"], deliver_policy="last"
    ) as oc:
        assert oc.next(timeout=5).metadata.sequence.stream == 2


def test_fetch_and_next_continue_in_order(js: natspull.JetStream, stream: str) -> None:
    _publish(js, stream, 50, subjects=1)
    with js.ordered_consumer(stream, inactive_threshold=0.5) as oc:
        assert _seqs(oc.fetch(10, max_wait=5)) == list(range(1, 11))
        assert oc.next(timeout=5).metadata.sequence.stream == 11
        # It expires between two calls: recreated after the last message handed out.
        wait_until(lambda: js.stream_info(stream).state.consumer_count == 0, 10, "the consumer to expire")
        assert _seqs(oc.fetch(10, max_wait=5)) == list(range(12, 22))
        # A messages() iterator continues after them, and fetch after it.
        it = oc.messages()
        assert _read(it, 3) == [22, 23, 24]
        with pytest.raises(natspull.OrderedConsumerUsageError, match="another read"):
            oc.fetch(1, max_wait=1)
        assert oc.last_sequence == 24  # while it runs: what it handed out, not what it holds
        it.stop()
        assert _seqs(oc.fetch(5, max_wait=5)) == [25, 26, 27, 28, 29]
        assert oc.last_sequence == 29
        # A for-loop left with break: the next read continues after the message it broke on.
        with oc.messages() as it:
            for msg in it:
                if msg.metadata.sequence.stream == 31:
                    break
        assert oc.last_sequence == 31
        assert oc.next(timeout=5).metadata.sequence.stream == 32


def test_ordered_messages_cannot_be_acked(js: natspull.JetStream, stream: str) -> None:
    _publish(js, stream, 1)
    with js.ordered_consumer(stream) as oc:
        msg = oc.next(timeout=5)
        for act in (msg.ack, msg.nak, msg.in_progress, msg.term, msg.ack_sync):
            with pytest.raises(natspull.OrderedConsumerUsageError, match="cannot be acknowledged"):
                act()
        assert not msg.acked


def test_consume_runs_handlers_in_order(js: natspull.JetStream, stream: str) -> None:
    _publish(js, stream, 500)
    got: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def handler(msg: natspull.Msg) -> None:
        got.append(msg.metadata.sequence.stream)
        if len(got) == 10:
            raise RuntimeError("boom")
        if len(got) == 500:
            done.set()

    with js.ordered_consumer(stream) as oc:
        ctx = oc.consume(handler, error_handler=lambda exc, msg: errors.append(exc))
        assert done.wait(10)
        ctx.drain()
        assert ctx.wait(timeout=5)
    assert got == list(range(1, 501))
    assert [str(e) for e in errors] == ["boom"]


def test_close_deletes_and_no_leak(nats_server: NatsServer, js: natspull.JetStream, stream: str) -> None:
    """200 create/stop cycles: no consumer, no inbox subscription, no thread left."""
    _publish(js, stream, 10, subjects=1)
    threads = set(natspull_threads())
    with natspull.connect(nats_server.url, name="ordered-leak") as client:
        ojs = client.jetstream()
        for i in range(200):
            oc = ojs.ordered_consumer(stream)
            it = oc.messages(max_messages=5)
            assert it.next(timeout=5).metadata.sequence.stream == 1
            if i % 2:
                it.stop()  # the iterator's stop deletes it
            else:
                oc.close()
        wait_until(lambda: js.stream_info(stream).state.consumer_count == 0, 10, "every consumer gone")
        wait_until(lambda: not pull_inboxes(nats_server, "ordered-leak"), 10, "every inbox gone")
        extra = sorted(t.name.rsplit("-", 1)[0] for t in set(natspull_threads()) - threads)
        assert extra == ["natspull-loop"]  # the client's own, nothing more
    wait_until(lambda: set(natspull_threads()) <= threads, 5, "no thread left")


def test_bad_options(js: natspull.JetStream, stream: str) -> None:
    with pytest.raises(ValueError, match="last_per_subject"):
        js.ordered_consumer(stream, deliver_policy="last_per_subject")
    with pytest.raises(ValueError, match="opt_start_seq is required"):
        js.ordered_consumer(stream, deliver_policy="by_start_sequence")
    with pytest.raises(ValueError, match="opt_start_seq"):
        js.ordered_consumer(stream, deliver_policy="last", opt_start_seq=3)
    with pytest.raises(ValueError, match="aware"):
        js.ordered_consumer(stream, opt_start_time=datetime.datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="filter_subjects"):
        js.ordered_consumer(stream, filter_subjects=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="deliver_policy must be"):
        js.ordered_consumer(stream, deliver_policy="sometimes")
    with pytest.raises(ValueError, match="max_reset_attempts"):
        js.ordered_consumer(stream, max_reset_attempts=0)
    with pytest.raises(natspull.StreamNotFoundError):
        js.ordered_consumer("NOPE").messages()


def test_stream_deleted_ends_the_iterator(js: natspull.JetStream, stream: str) -> None:
    """The stream is gone: the consumer cannot be recreated; the iterator ends with a clear error."""
    _publish(js, stream, 3, subjects=1)
    with js.ordered_consumer(stream, max_reset_attempts=2) as oc:
        it = oc.messages()
        assert _read(it, 3) == [1, 2, 3]
        js.delete_stream(stream)
        with pytest.raises(natspull.OrderedConsumerResetError, match="could not recreate"):
            it.next(timeout=10)
