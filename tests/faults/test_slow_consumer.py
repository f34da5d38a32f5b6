"""A handler slower than ack_wait: in_progress() keeps the message; without it, it is redelivered."""

from __future__ import annotations

import threading
import time

import natspull

from ._ledger import Ledger

ACK_WAIT = 1.0
WORK = 1.6  # seconds of handler work per message: longer than ACK_WAIT
STEPS = 4
TOTAL = 8
WORKERS = 4


def _setup(client: natspull.Client) -> natspull.Consumer:
    js = client.jetstream()
    js.add_stream(name="SL", subjects=["SL.>"])
    consumer = js.add_consumer("SL", durable_name="c", ack_wait=ACK_WAIT)
    js.publish_many(("SL.m", b"%d" % i) for i in range(TOTAL))
    return consumer


def test_in_progress_prevents_redelivery(client: natspull.Client) -> None:
    consumer = _setup(client)
    ledger = Ledger(TOTAL)

    def handler(msg: natspull.Msg) -> None:
        ledger.record(msg)
        for _ in range(STEPS):
            time.sleep(WORK / STEPS)  # the handler's work
            msg.in_progress()
        msg.ack()

    t0 = time.monotonic()
    # At most one message per worker is requested: none waits in the buffer with its ack_wait running.
    ctx = consumer.consume(handler, workers=WORKERS, max_messages=WORKERS, threshold_messages=WORKERS)
    try:
        ledger.settle(client, client.jetstream(), "SL", "c", 15)
    finally:
        ctx.drain()
        assert ctx.wait(timeout=10)
    elapsed = time.monotonic() - t0
    ledger.check()
    assert ledger.redelivered == 0, ledger.summary()
    assert consumer.info().num_redelivered == 0
    assert elapsed < TOTAL / WORKERS * WORK + 3
    print(f"in_progress: {ledger.summary()} in {elapsed:.1f} s")


def test_without_in_progress_messages_are_redelivered(client: natspull.Client) -> None:
    consumer = _setup(client)
    ledger = Ledger(TOTAL)
    done: set[int] = set()
    lock = threading.Lock()

    def handler(msg: natspull.Msg) -> None:
        """An idempotent application: a redelivery of finished work is acked at once."""
        ledger.record(msg)
        seq = msg.metadata.sequence.stream
        with lock:
            finished = seq in done
        if not finished:
            time.sleep(WORK)  # the handler's work, longer than ack_wait
            with lock:
                done.add(seq)
        msg.ack()

    t0 = time.monotonic()
    # Pulls stay outstanding while the handlers run, so the server has somewhere to redeliver to;
    # natspull keeps no lease (max_lease=0: no +WPI for buffered messages or handlers).
    ctx = consumer.consume(handler, workers=WORKERS, max_messages=4 * WORKERS, max_lease=0)  # leases off
    try:
        ledger.settle(client, client.jetstream(), "SL", "c", 15)
    finally:
        ctx.drain()
        assert ctx.wait(timeout=10)
    elapsed = time.monotonic() - t0
    ledger.check()  # at-least-once: redelivered, but each (seq, num_delivered) handed out once
    assert ledger.redelivered >= WORKERS, ledger.summary()
    assert elapsed < TOTAL / WORKERS * WORK + 5
    print(f"no in_progress: {ledger.summary()} in {elapsed:.1f} s")
