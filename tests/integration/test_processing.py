"""Processing options of consume() and Messages.next_batch(), against a real nats-server:
batches, auto_ack and unsettled messages, handler_timeout, order per key."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from conftest import fill, wait_until

import natspull

FAST_RETRY = natspull.Backoff(initial=0.05, maximum=0.2, jitter=0)


def seq_of(msg: natspull.Msg) -> int:
    return msg.metadata.sequence.stream


def assert_all_acked(client: natspull.Client, consumer: natspull.Consumer) -> None:
    client.flush()
    wait_until(lambda: consumer.info().num_ack_pending == 0, message="every ack to reach the server")


# ----------------------------------------------------------------- next_batch


@pytest.mark.timeout(30)
def test_next_batch_takes_what_is_buffered_without_waiting(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="nb")
    fill(js, stream, 10)
    with consumer.messages(max_messages=50) as msgs:
        wait_until(lambda: msgs.stats().buffered == 10, message="10 messages buffered")
        batches = [msgs.next_batch(4, timeout=5) for _ in range(3)]
        assert [len(b) for b in batches] == [4, 4, 2]
        assert [seq_of(m) for b in batches for m in b] == list(range(1, 11))
        started = time.monotonic()
        with pytest.raises(natspull.TimeoutError):
            msgs.next_batch(4, timeout=0.2)
        assert time.monotonic() - started >= 0.2  # it really waited for the first message
        js.publish(f"{stream}.m", b"late")
        assert [seq_of(m) for m in msgs.next_batch(4, timeout=5)] == [11]  # the first, no more waiting
        for batch in batches:
            for msg in batch:
                msg.ack()
        assert msgs.stats().delivered == 11
        with pytest.raises(ValueError, match="max_messages"):
            msgs.next_batch(0)
        with pytest.raises(TypeError, match="max_messages"):
            msgs.next_batch(2.5)  # type: ignore[arg-type]
        msgs.stop()
        with pytest.raises(natspull.IteratorClosedError):
            msgs.next_batch(4, timeout=1)


@pytest.mark.timeout(60)
def test_next_batch_many_threads_each_message_once(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="nbt", ack_wait=60)
    total = 2000
    fill(js, stream, total)
    seen: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def reader(msgs: natspull.Messages) -> None:
        rng = random.Random()
        try:
            while True:
                try:
                    batch = msgs.next_batch(rng.randint(1, 40), timeout=10)
                except natspull.IteratorClosedError:
                    return
                assert len(batch) >= 1
                with lock:
                    seen.update(seq_of(m) for m in batch)
                    if len(seen) == total:
                        msgs.drain()
                for msg in batch:
                    msg.ack()
        except BaseException as exc:
            errors.append(exc)

    with consumer.messages(max_messages=100) as msgs:
        threads = [threading.Thread(target=reader, args=(msgs,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(50)
        assert not any(thread.is_alive() for thread in threads)
    assert not errors
    assert sorted(seen) == list(range(1, total + 1)) and set(seen.values()) == {1}


# ------------------------------------------------------------- batch consume


@pytest.mark.timeout(30)
def test_batch_handler_gets_lists_of_at_most_n(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="batch", ack_wait=60)
    total = 500
    fill(js, stream, total)
    sizes: list[int] = []
    seen: Counter[int] = Counter()
    lock = threading.Lock()
    done = threading.Event()

    def handler(batch: list[natspull.Msg]) -> None:
        with lock:
            sizes.append(len(batch))
            seen.update(seq_of(m) for m in batch)
            if len(seen) == total:
                done.set()
        for msg in batch:
            msg.ack()

    with consumer.consume(handler, workers=3, batch=25, batch_wait=0.2) as ctx:
        assert done.wait(20)
    assert max(sizes) <= 25 and min(sizes) >= 1 and sum(sizes) == total
    assert max(sizes) == 25  # messages were buffered: batches fill up
    assert sorted(seen) == list(range(1, total + 1)) and set(seen.values()) == {1}
    stats = ctx.stats()
    assert (stats.handled, stats.failed, stats.unsettled, stats.delivered) == (total, 0, 0, total)
    assert_all_acked(client, consumer)


@pytest.mark.timeout(30)
def test_batch_wait_gathers_messages_published_after_the_first(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="gather", ack_wait=60)
    calls: list[list[int]] = []
    got = threading.Event()
    handed: list[int] = []

    def handler(batch: list[natspull.Msg]) -> None:
        calls.append([seq_of(m) for m in batch])
        got.set()

    with consumer.consume(handler, batch=5, batch_wait=5, auto_ack=True) as ctx:
        js.publish(f"{stream}.m", b"1")
        wait_until(lambda: ctx.stats().delivered == 1, message="the first message taken")
        for i in range(4):  # arrive while the worker gathers: the call waits for all five
            js.publish(f"{stream}.m", b"%d" % i)
        assert got.wait(10)
        handed.extend(calls[0])
    assert handed == [1, 2, 3, 4, 5]
    assert ctx.stats().auto_acked == 5


@pytest.mark.timeout(30)
def test_failing_batch_is_retried_and_settles_only_what_it_left(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="failbatch", ack_wait=60)
    fill(js, stream, 10)
    calls: list[list[tuple[int, int]]] = []
    errors: list[int] = []
    done = threading.Event()

    def handler(batch: list[natspull.Msg]) -> None:
        calls.append([(seq_of(m), m.metadata.num_delivered) for m in batch])
        if len(calls) == 1:
            batch[0].ack()  # settled by the handler: not retried
            raise RuntimeError("boom")
        for msg in batch:
            msg.ack()
        if sum(len(c) for c in calls[1:]) == 9:
            done.set()

    def on_error(exc: BaseException, msg: natspull.Msg) -> None:
        errors.append(seq_of(msg))

    with consumer.consume(handler, batch=10, batch_wait=2, retry=FAST_RETRY, error_handler=on_error) as ctx:
        assert done.wait(20)
    assert [s for s, _ in calls[0]] == list(range(1, 11))
    retried = sorted(s for c in calls[1:] for s, _ in c)
    assert retried == list(range(2, 11))
    assert all(n == 2 for c in calls[1:] for _, n in c)
    assert sorted(errors) == list(range(2, 11))  # error_handler: the unsettled ones only
    stats = ctx.stats()
    assert (stats.failed, stats.handled) == (10, 9)
    assert_all_acked(client, consumer)


@pytest.mark.timeout(30)
def test_failing_batch_is_terminated_after_term_after(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="termbatch", ack_wait=60)
    fill(js, stream, 3)
    dead: list[int] = []
    done = threading.Event()

    def handler(batch: list[natspull.Msg]) -> None:
        raise RuntimeError("always")

    def park(msg: natspull.Msg, exc: BaseException) -> None:
        dead.append(seq_of(msg))
        if len(dead) == 3:
            done.set()

    with consumer.consume(
        handler, batch=3, batch_wait=1, retry=FAST_RETRY, term_after=2, on_dead_letter=park
    ) as ctx:
        assert done.wait(20)
    assert sorted(dead) == [1, 2, 3] and ctx.stats().terminated == 3


# ------------------------------------------------------------ settled or told


@pytest.mark.timeout(30)
def test_auto_ack_acks_what_the_handler_left_and_explicit_settles_win(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="auto", ack_wait=60)
    fill(js, stream, 20)
    deliveries: Counter[int] = Counter()
    done = threading.Event()
    lock = threading.Lock()

    def handler(msg: natspull.Msg) -> None:
        seq = seq_of(msg)
        with lock:
            deliveries[seq] += 1
            if len(deliveries) == 20 and all(deliveries[s] == 2 for s in range(3, 21, 4)):
                done.set()
        if seq % 4 == 0:
            msg.ack()  # explicit: not auto-acked
        elif seq % 4 == 1:
            msg.in_progress()  # not a settlement: auto-acked at return
        elif seq % 4 == 3 and msg.metadata.num_delivered == 1:
            raise RuntimeError("first delivery fails")  # NAKed with the retry policy, then auto-acked

    with consumer.consume(handler, workers=3, auto_ack=True, retry=FAST_RETRY) as ctx:
        assert done.wait(20)
        wait_until(lambda: ctx.stats().handled == 20, message="the last handler to return")
    stats = ctx.stats()
    assert (stats.auto_acked, stats.failed, stats.handled, stats.unsettled) == (15, 5, 20, 0)
    assert_all_acked(client, consumer)
    info = consumer.info()
    assert info.num_redelivered == 0 and info.delivered.stream_seq == 20


@pytest.mark.timeout(30)
def test_unsettled_messages_are_counted_and_logged_once(
    js: natspull.JetStream, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="natspull")
    consumer = js.add_consumer(stream, durable_name="forgot", ack_wait=60)
    fill(js, stream, 10)
    done = threading.Event()

    def forgetful_handler(msg: natspull.Msg) -> None:
        if seq_of(msg) % 2 == 0:
            msg.ack()

    with consumer.consume(forgetful_handler, workers=2, max_lease=60) as ctx:
        wait_until(lambda: ctx.stats().handled == 10, message="10 handled")
        done.set()
    stats = ctx.stats()
    assert (stats.unsettled, stats.auto_acked, stats.handled) == (5, 0, 10)
    lines = [r for r in caplog.records if "without acknowledging" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert (
        "test_unsettled_messages_are_counted_and_logged_once.<locals>.forgetful_handler"
        in lines[0].getMessage()
    )
    assert consumer.info().num_ack_pending == 5  # left to the server (redelivered after ack_wait)


# -------------------------------------------------------------- time limit


@pytest.mark.timeout(60)
def test_stuck_handler_is_timed_out_and_its_message_redelivered(
    client: natspull.Client, js: natspull.JetStream, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="natspull")
    consumer = js.add_consumer(stream, durable_name="stuck", ack_wait=30)
    total = 40
    fill(js, stream, total)
    release = threading.Event()  # set at teardown: no thread is left stuck
    stuck_started = threading.Event()
    times: dict[tuple[int, int], float] = {}
    late: list[BaseException | None] = []
    acked: set[int] = set()
    lock = threading.Lock()
    done = threading.Event()
    events: list[natspull.ConsumerEvent] = []

    def handler(msg: natspull.Msg) -> None:
        seq, n = seq_of(msg), msg.metadata.num_delivered
        with lock:
            times[(seq, n)] = time.monotonic()
        if seq == 1 and n == 1:
            stuck_started.set()
            release.wait(30)
            try:
                msg.ack()  # too late: ignored, counted
                late.append(None)
            except BaseException as exc:
                late.append(exc)
            return
        msg.ack()
        with lock:
            acked.add(seq)
            if len(acked) == total:
                done.set()

    try:
        with consumer.consume(
            handler, workers=3, handler_timeout=1, retry=FAST_RETRY, on_event=events.append
        ) as ctx:
            assert stuck_started.wait(10)
            assert done.wait(20), "the other workers went on and the stuck message came back"
            assert times[(1, 2)] - times[(1, 1)] < 2.5  # 1 s limit + 50 ms backoff + delivery
            stats = ctx.stats()
            assert (stats.timed_out, stats.stuck, stats.late_settles) == (1, 1, 0)
            release.set()
            wait_until(lambda: ctx.stats().stuck == 0, message="the stuck handler to return")
    finally:
        release.set()
    assert late == [None]  # the late ack raised nothing
    stats = ctx.stats()
    assert (stats.timed_out, stats.stuck, stats.late_settles, stats.handled) == (1, 0, 1, total + 1)
    assert [e.kind for e in events if e.kind == "handler_timeout"] == ["handler_timeout"]
    [line] = [r.getMessage() for r in caplog.records if "handler_timeout" in r.getMessage()]
    assert "release.wait(30)" in line and "natspull-worker-" in line  # the thread's stack
    assert_all_acked(client, consumer)


@pytest.mark.timeout(60)
def test_handler_timeout_many_calls_random_durations(js: natspull.JetStream, stream: str) -> None:
    """Calls just under and over the limit, at random: each one over is timed out exactly once,
    none under is, every message ends up acked once by a handler that was on time."""
    consumer = js.add_consumer(stream, durable_name="tmany", ack_wait=30)
    total = 60
    fill(js, stream, total)
    limit = 0.2
    rng = random.Random(7)
    slow = set(rng.sample(range(1, total + 1), 12))
    acked: Counter[int] = Counter()
    lock = threading.Lock()
    done = threading.Event()
    release = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        seq, n = seq_of(msg), msg.metadata.num_delivered
        if seq in slow and n == 1:
            release.wait(limit + random.uniform(0.1, 0.3))  # over the limit (simulated work)
        else:
            time.sleep(random.uniform(0, limit / 4))  # well under it (simulated work)
        msg.ack()
        with lock:
            if not (seq in slow and n == 1):
                acked[seq] += 1
            if len(acked) == total:
                done.set()

    try:
        with consumer.consume(handler, workers=6, handler_timeout=limit, retry=FAST_RETRY) as ctx:
            assert done.wait(40)
            wait_until(lambda: ctx.stats().stuck == 0, message="the slow handlers to return")
    finally:
        release.set()
    stats = ctx.stats()
    assert stats.timed_out == len(slow) and stats.late_settles == len(slow)
    assert set(acked.values()) == {1}


# ------------------------------------------------------------- order per key


def _first_successes(log_: list[tuple[str, int, bool]]) -> dict[str, list[int]]:
    """For each key, the stream sequences in the order of their first successful handling."""
    done: set[int] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for key, seq, ok in log_:
        if ok and seq not in done:
            done.add(seq)
            order[key].append(seq)
    return order


def _keyed_run(
    js: natspull.JetStream,
    stream: str,
    name: str,
    *,
    workers: int,
    total: int,
    keys: int,
    work: tuple[float, float],
    fail_rate: float,
    seed: int,
    **options: Any,
) -> tuple[list[tuple[str, int, bool]], float, natspull.ConsumeStats]:
    rng = random.Random(seed)
    js.publish_many((f"{stream}.k{rng.randrange(keys)}", b"x") for _ in range(total))
    consumer = js.add_consumer(stream, durable_name=name, ack_wait=30)
    record: list[tuple[str, int, bool]] = []
    in_key: set[str] = set()
    overlap: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    succeeded: set[int] = set()

    def handler(msg: natspull.Msg) -> None:
        key, seq = msg.subject, seq_of(msg)
        with lock:
            if key in in_key:
                overlap.append(key)
            in_key.add(key)
        try:
            time.sleep(random.uniform(*work))  # simulated work
            fail = msg.metadata.num_delivered == 1 and random.random() < fail_rate
            with lock:
                record.append((key, seq, not fail))
                if not fail:
                    succeeded.add(seq)
                    if len(succeeded) == total:
                        done.set()
            if fail:
                raise RuntimeError("retry me")
            msg.ack()
        finally:
            with lock:
                in_key.discard(key)

    started = time.monotonic()
    with consumer.consume(
        handler, workers=workers, key=lambda m: m.subject, retry=FAST_RETRY, **options
    ) as ctx:
        assert done.wait(90), f"{len(succeeded)} of {total} handled"
        elapsed = time.monotonic() - started
    assert not overlap, f"two handlers at once on {overlap[:5]}"
    return record, elapsed, ctx.stats()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_key_order_with_failures_and_random_timing(js: natspull.JetStream, stream: str, seed: int) -> None:
    total = 600
    record, _, stats = _keyed_run(
        js, stream, f"keys{seed}", workers=8, total=total, keys=50, work=(0, 0.004), fail_rate=0.05, seed=seed
    )
    order = _first_successes(record)
    assert sum(len(seqs) for seqs in order.values()) == total
    for key, seqs in order.items():
        assert seqs == sorted(seqs), f"{key}: {seqs}"
    failures = sum(1 for _, _, ok in record if not ok)
    assert failures > 0 and stats.failed == failures and stats.held == 0


@pytest.mark.timeout(60)
def test_key_order_runs_keys_in_parallel(js: natspull.JetStream, stream: str) -> None:
    """8 workers run the first messages of 8 keys at the same time (a barrier of 8 handlers
    breaks otherwise), while later messages of each key wait for the earlier ones."""
    workers, rounds = 8, 3
    js.publish_many((f"{stream}.k{k}", b"x") for _ in range(rounds) for k in range(workers))
    total = workers * rounds
    consumer = js.add_consumer(stream, durable_name="parallel", ack_wait=30)
    barrier = threading.Barrier(workers, timeout=30)
    broken: list[int] = []
    handled: list[tuple[str, int]] = []
    lock = threading.Lock()
    done = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        seq = seq_of(msg)
        if seq <= workers:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                broken.append(seq)
        msg.ack()
        with lock:
            handled.append((msg.subject, seq))
            if len(handled) == total:
                done.set()

    with consumer.consume(handler, workers=workers, key=lambda m: m.subject):
        assert done.wait(45), f"{len(handled)} of {total} handled"
    assert not broken, f"the first message of every key did not run at once: {broken}"
    order: dict[str, list[int]] = defaultdict(list)
    for key, seq in handled:
        order[key].append(seq)
    assert len(order) == workers
    for key, seqs in order.items():
        assert seqs == sorted(seqs) and len(seqs) == rounds, f"{key}: {seqs}"


@pytest.mark.timeout(60)
def test_key_order_holds_when_the_key_function_is_slow(js: natspull.JetStream, stream: str) -> None:
    """The worker that took message 1 is slow in the key function (as a preempted thread is)
    while another takes message 2 of the same key: 2 still runs after 1. The key function of
    message 1 waits up to 0.5 s for message 2 to be taken, which happens at once when take and
    arrival are not one step."""
    rounds = 3
    js.publish_many((f"{stream}.k", b"x") for _ in range(2 * rounds))
    consumer = js.add_consumer(stream, durable_name="slowkey", ack_wait=30)
    second_taken = {seq: threading.Event() for seq in range(2, 2 * rounds + 1, 2)}
    handled: list[int] = []
    done = threading.Event()

    def key(msg: natspull.Msg) -> str:
        seq = seq_of(msg)
        if seq % 2:  # the first of a pair: slow until its pair was taken (or 0.5 s)
            second_taken[seq + 1].wait(0.5)
        else:
            second_taken[seq].set()
        return msg.subject

    def handler(msg: natspull.Msg) -> None:
        handled.append(seq_of(msg))
        msg.ack()
        if len(handled) == 2 * rounds:
            done.set()

    with consumer.consume(handler, workers=4, key=key, max_messages=2):
        assert done.wait(45), handled
    assert handled == list(range(1, 2 * rounds + 1))


@pytest.mark.timeout(90)
def test_key_hold_is_bounded_by_max_messages(js: natspull.JetStream, stream: str) -> None:
    """One key whose first message fails: at most max_messages later ones are held; the rest
    go back to the server and still come in order."""
    max_messages = 20
    total = 100
    fill(js, stream, total)
    consumer = js.add_consumer(stream, durable_name="bound", ack_wait=30)
    record: list[tuple[str, int, bool]] = []
    held_seen: list[int] = []
    done = threading.Event()
    box: list[natspull.ConsumeContext] = []
    box_ready = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        box_ready.wait(10)
        held_seen.append(box[0].stats().held)
        seq = seq_of(msg)
        if seq == 1 and msg.metadata.num_delivered == 1:
            record.append(("k", seq, False))
            raise RuntimeError("the first one fails once")
        record.append(("k", seq, True))
        msg.ack()
        if len({s for _, s, ok in record if ok}) == total:
            done.set()

    ctx = consumer.consume(
        handler,
        workers=4,
        key=lambda m: "one key",
        max_messages=max_messages,
        retry=natspull.Backoff(initial=1, maximum=1, jitter=0),
    )
    with ctx:
        box.append(ctx)
        box_ready.set()
        wait_until(lambda: ctx.stats().held == max_messages, message="the hold to fill up")
        assert done.wait(60), f"{len({s for _, s, ok in record if ok})} of {total}"
        sent_back = ctx.stats().sent_back
    assert max(held_seen) <= max_messages
    assert sent_back > 0
    assert _first_successes(record)["k"] == list(range(1, total + 1))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("end", ["stop", "drain"])
def test_key_stop_sends_held_messages_back_in_order(js: natspull.JetStream, stream: str, end: str) -> None:
    fill(js, stream, 30)
    consumer = js.add_consumer(stream, durable_name="stopkey", ack_wait=30)
    record: list[tuple[str, int, bool]] = []
    lock = threading.Lock()

    def failing_first(msg: natspull.Msg) -> None:
        with lock:
            record.append(("k", seq_of(msg), False))
        raise RuntimeError("come back later")

    ctx = consumer.consume(
        failing_first,
        workers=4,
        key=lambda m: m.subject,
        retry=natspull.Backoff(initial=1, maximum=1, jitter=0),
    )
    wait_until(lambda: ctx.stats().held == 29, message="29 held behind the failed first")
    getattr(ctx, end)()
    assert ctx.wait(10)
    assert ctx.stats().held == 0
    done = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        with lock:
            record.append(("k", seq_of(msg), True))
            if sum(ok for _, _, ok in record) == 30:
                done.set()
        msg.ack()

    with consumer.consume(handler, workers=4, key=lambda m: m.subject):
        assert done.wait(20)
    assert _first_successes(record)["k"] == list(range(1, 31))


# ------------------------------------------------------------------ arguments


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"batch": 0}, ValueError, "batch"),
        ({"batch": 2.0}, TypeError, "batch"),
        ({"batch": True}, TypeError, "batch"),
        ({"batch": 5, "batch_wait": -1}, ValueError, "batch_wait"),
        ({"batch": 5, "batch_wait": "1"}, TypeError, "batch_wait"),
        ({"batch_wait": 1}, ValueError, "batch_wait=1 needs batch"),
        ({"key": "subject"}, TypeError, "key must be callable"),
        ({"key": lambda m: m.subject, "batch": 2}, ValueError, "key and batch"),
        ({"handler_timeout": 0}, ValueError, "handler_timeout"),
        ({"handler_timeout": "1"}, TypeError, "handler_timeout"),
        ({"auto_ack": 1}, TypeError, "auto_ack"),
    ],
)
def test_bad_processing_options_fail_at_once(
    client: natspull.Client,
    js: natspull.JetStream,
    stream: str,
    options: dict[str, Any],
    error: type,
    match: str,
) -> None:
    consumer = js.add_consumer(stream, durable_name="args")
    with pytest.raises(error, match=match):
        consumer.consume(lambda m: None, **options)
    assert client.stats().consumers_running == 0


@pytest.mark.timeout(30)
def test_auto_ack_needs_acks(client: natspull.Client, js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="noacks", ack_policy=natspull.AckPolicy.NONE)
    with pytest.raises(ValueError, match="auto_ack=True needs a consumer that takes acks"):
        consumer.consume(lambda m: None, auto_ack=True)
    assert client.stats().consumers_running == 0


# ------------------------------------------------------------ lease from arrival


def _slow_loop(consumer: natspull.Consumer, total: int, **options: Any) -> tuple[list[int], int, int]:
    """A for-loop at 50 ms per message (the work) over a buffer of *total*. Returns the
    num_delivered of the *total* messages it took, the consumer's num_redelivered before the
    last ack, and the iterator's count of redeliveries."""
    delivered: list[int] = []
    with consumer.messages(max_messages=total, **options) as msgs:
        for msg in msgs:
            time.sleep(0.05)  # the application's work, not a synchronisation
            delivered.append(msg.metadata.num_delivered)
            if len(delivered) == total:
                redelivered = consumer.info().num_redelivered  # (counts unacked redeliveries)
                msg.ack()
                return delivered, redelivered, msgs.stats().redelivered
            msg.ack()
    raise AssertionError("the iterator ended")


@pytest.mark.timeout(60)
def test_buffered_messages_are_leased_from_arrival(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    """200 buffered messages read at 50 ms each (10 s) with ack_wait=2 s: none is redelivered."""
    consumer = js.add_consumer(stream, durable_name="lease", ack_wait=2)
    fill(js, stream, 200)
    delivered, redelivered, counted = _slow_loop(consumer, 200)
    assert delivered == [1] * 200
    assert (redelivered, counted) == (0, 0)
    assert_all_acked(client, consumer)
    assert consumer.info().num_pending == 0


@pytest.mark.timeout(60)
def test_without_the_lease_buffered_messages_are_redelivered(js: natspull.JetStream, stream: str) -> None:
    """The same loop with max_lease=0 (lease off): the messages that waited are redelivered."""
    consumer = js.add_consumer(stream, durable_name="nolease", ack_wait=2)
    fill(js, stream, 200)
    delivered, redelivered, counted = _slow_loop(consumer, 200, max_lease=0)
    assert redelivered > 0 or counted > 0, (delivered, redelivered, counted)


@pytest.mark.timeout(60)
def test_a_handed_out_message_left_unsettled_is_leased_for_ack_wait_then_redelivered(
    js: natspull.JetStream, stream: str
) -> None:
    """The application has one whole ack_wait from next() (even for a message that waited in the
    buffer); a message it never settles then stops being leased and comes back."""
    consumer = js.add_consumer(stream, durable_name="unsettled", ack_wait=2)
    fill(js, stream, 1)
    with consumer.messages() as msgs:
        wait_until(lambda: msgs.stats().buffered == 1, message="the message to be buffered")
        time.sleep(1.5)  # the application is busy: the message ages in the buffer
        first = msgs.next(5)
        taken = time.monotonic()
        again = msgs.next(10)
        came_back = time.monotonic() - taken
        assert seq_of(again) == seq_of(first) == 1
        assert (first.metadata.num_delivered, again.metadata.num_delivered) == (1, 2)
        # Not before ack_wait after next() (without the lease: 0.5 s after it), and the lease ends.
        assert 2.0 <= came_back < 6.0, came_back
        again.ack()
