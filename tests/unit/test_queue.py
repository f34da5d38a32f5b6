"""Unit tests of the hand-off queue and its state machine: plain threads, no server."""

from __future__ import annotations

import random
import threading
import time

import pytest

import natspull
from natspull._engine._queue import Flow, MsgQueue, State
from natspull._msg import Msg

FLOW = Flow(max_msgs=10, max_bytes=0, threshold_msgs=5, threshold_bytes=0)


def msgs(n: int, start: int = 0) -> list[Msg]:
    return [Msg("s", b"x" * 10, f"r{start + i}", size=10) for i in range(n)]


class Recorder:
    def __init__(self) -> None:
        self.discarded: list[Msg] = []
        self.states: list[State] = []
        self.lows = 0

    def queue(self, flow: Flow = FLOW) -> MsgQueue:
        return MsgQueue(flow, on_low=self.low, on_discard=self.discarded.extend, on_state=self.states.append)

    def low(self) -> None:
        self.lows += 1


def blocked_get(q: MsgQueue, timeout: float | None = None) -> tuple[threading.Thread, list[object]]:
    """Start a thread blocked in q.get(); returns it and a list receiving the result or exception."""
    out: list[object] = []
    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            out.append(q.get(timeout))
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    started.wait(5)
    deadline = time.monotonic() + 5
    while q.stats()["waiters"] == 0 and not out:  # really blocked in wait()
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return t, out


def test_get_returns_in_order_and_times_out() -> None:
    q = Recorder().queue()
    q.put_many(msgs(3))
    assert [q.get(0).reply for _ in range(3)] == ["r0", "r1", "r2"]
    t0 = time.monotonic()
    with pytest.raises(natspull.TimeoutError) as info:
        q.get(0.05)
    assert isinstance(info.value, TimeoutError)  # also the builtin
    assert 0.04 <= time.monotonic() - t0 < 1.0


def test_blocked_get_is_woken_by_put() -> None:
    q = Recorder().queue()
    t, out = blocked_get(q)
    assert t.is_alive()  # really blocked
    q.put_many(msgs(1))
    t.join(5)
    assert isinstance(out[0], Msg)


@pytest.mark.parametrize("end", ["stop", "drain_finish", "fail"])
def test_every_waiter_wakes_at_the_end(end: str) -> None:
    q = Recorder().queue()
    waiters = [blocked_get(q) for _ in range(8)]
    err = natspull.ConsumerDeletedError("gone", 409)
    if end == "stop":
        q.stop()
    elif end == "fail":
        q.fail(err)
    else:
        q.drain()
        assert all(t.is_alive() for t, _ in waiters)  # draining: still waiting for in-flight
        q.finish()
    for t, out in waiters:
        t.join(5)
        assert not t.is_alive()
        expected = err if end == "fail" else None
        if expected is not None:
            assert out[0] is expected
        else:
            assert isinstance(out[0], natspull.IteratorClosedError)


def test_drain_hands_out_buffer_then_ends() -> None:
    rec = Recorder()
    q = rec.queue()
    q.put_many(msgs(3))
    q.drain()
    q.put_many(msgs(2, 3))  # in flight before the unsubscribe completed
    q.finish()
    assert [q.get(0).reply for _ in range(5)] == [f"r{i}" for i in range(5)]
    with pytest.raises(natspull.IteratorClosedError):
        q.get(0)
    assert rec.discarded == []
    assert rec.states == [State.DRAINING, State.CLOSED]


def test_stop_discards_buffer_and_later_arrivals() -> None:
    rec = Recorder()
    q = rec.queue()
    q.put_many(msgs(3))
    q.stop()
    q.put_many(msgs(2, 3))
    assert [m.reply for m in rec.discarded] == [f"r{i}" for i in range(5)]
    with pytest.raises(natspull.IteratorClosedError):
        q.get(0)


def test_transitions_are_idempotent_and_stop_cuts_drain_short() -> None:
    rec = Recorder()
    q = rec.queue()
    q.put_many(msgs(2))
    q.drain()
    q.drain()
    q.stop()
    q.stop()
    q.drain()  # nothing after stop
    q.finish()
    assert q.state is State.CLOSED
    assert rec.states == [State.DRAINING, State.CLOSED]
    assert len(rec.discarded) == 2


def test_terminal_error_is_sticky() -> None:
    q = Recorder().queue()
    err = natspull.ConnectionClosedError("closed")
    q.fail(err)
    for _ in range(3):
        with pytest.raises(natspull.ConnectionClosedError):
            q.get(0)


def test_notice_is_raised_once_and_queue_stays_usable() -> None:
    q = Recorder().queue()
    q.notice(natspull.NoHeartbeatError("missed"))
    with pytest.raises(natspull.NoHeartbeatError):
        q.get(0)
    q.put_many(msgs(1))
    assert q.get(0).reply == "r0"


def test_flow_reserve_threshold_and_low_water() -> None:
    rec = Recorder()
    q = rec.queue()
    assert q.reserve() == (10, 0)  # first pull: the whole maximum
    assert q.reserve() == (0, 0)  # pending 10 >= threshold 5
    q.put_many(msgs(10))
    for _ in range(5):
        q.get(0)
    assert rec.lows == 0  # pending 5: not below the threshold yet
    q.get(0)
    assert rec.lows == 1  # pending 4 < 5: one wake-up
    q.get(0)
    assert rec.lows == 1  # not re-armed until reserve()
    assert q.reserve() == (7, 0)  # top up to 10
    q.adjust_pending(7, 0)  # the server says 7 were never filled (408)
    assert q.reserve() == (7, 0)


def test_forget_outstanding_keeps_buffered_and_leased() -> None:
    q = Recorder().queue()
    q.reserve()
    q.put_many(msgs(4))
    leased = q.get(0, lease=True)
    assert q.has_outstanding()  # 10 requested, 3 buffered + 1 leased
    q.forget_outstanding()
    assert not q.has_outstanding()
    assert q.stats()["pending_msgs"] == 4
    q.release(leased)
    assert q.stats()["pending_msgs"] == 3


def test_bytes_flow() -> None:
    flow = Flow(max_msgs=1000, max_bytes=100, threshold_msgs=500, threshold_bytes=50)
    q = Recorder().queue(flow)
    assert q.reserve() == (1000, 100)


def test_bytes_flow_request_used_up_exactly_leaves_nothing_outstanding() -> None:
    """The server ends a byte-limited request whose bytes are used up exactly, without a status:
    its unfilled message count is no longer outstanding (heartbeat check, stop_after sizing)."""
    q = Recorder().queue(Flow(max_msgs=1000, max_bytes=30, threshold_msgs=500, threshold_bytes=15, limit=5))
    assert q.reserve() == (5, 30)
    q.put_many(msgs(2))  # 20 of 30 bytes
    assert q.has_outstanding()
    q.put_many(msgs(1, 2))  # 30 of 30: the request ended
    assert not q.has_outstanding()
    assert q.stats()["pending_msgs"] == 3
    q.get(0)
    q.get(0)  # 10 bytes pending, below the threshold
    assert q.reserve() == (2, 20)  # stop_after=5: 2 handed out, 1 buffered, 2 more


def test_stop_after_limit_closes_and_discards_the_rest() -> None:
    rec = Recorder()
    q = rec.queue(Flow(max_msgs=10, max_bytes=0, threshold_msgs=5, threshold_bytes=0, limit=3))
    assert q.reserve() == (3, 0)
    q.put_many(msgs(4))
    assert [q.get(0).reply for _ in range(3)] == ["r0", "r1", "r2"]
    with pytest.raises(natspull.IteratorClosedError):
        q.get(0)
    assert [m.reply for m in rec.discarded] == ["r3"]


def test_transition_from_a_thread_holding_the_lock_is_deferred() -> None:
    """What a signal handler does when it interrupts get(): it must neither deadlock nor lose the wake-up."""
    q = Recorder().queue()
    t, out = blocked_get(q)
    with q._cond:  # this thread now holds the lock, like an interrupted get()
        q.stop()
        assert q.state is State.OPEN  # deferred to a helper thread
    t.join(5)
    assert isinstance(out[0], natspull.IteratorClosedError)


def test_many_threads_random_timing_each_message_once() -> None:
    """Invariant under random interleavings: every message handed out at most once; all waiters woken."""
    for iteration in range(30):
        rec = Recorder()
        q = rec.queue(Flow(max_msgs=1000, max_bytes=0, threshold_msgs=500, threshold_bytes=0))
        got: list[str] = []
        lock = threading.Lock()

        def consume(q: MsgQueue = q, got: list[str] = got, lock: threading.Lock = lock) -> None:
            while True:
                try:
                    m = q.get(5)
                except natspull.IteratorClosedError:
                    return
                with lock:
                    got.append(m.reply)

        threads = [threading.Thread(target=consume) for _ in range(6)]
        for t in threads:
            t.start()
        sent = 0
        for _ in range(20):
            n = random.randint(1, 20)
            q.put_many(msgs(n, sent))
            sent += n
            if random.random() < 0.3:
                time.sleep(random.random() / 1000)
        end = random.choice(["stop", "drain"])
        if end == "stop":
            q.stop()
        else:
            q.drain()
            q.finish()
        for t in threads:
            t.join(5)
            assert not t.is_alive(), f"iteration {iteration}: a waiter was not woken"
        handed = got + [m.reply for m in rec.discarded]
        assert len(handed) == len(set(handed)) == sent, f"iteration {iteration}"
        if end == "drain":
            assert not rec.discarded


def test_stop_after_a_finished_drain_discards_what_is_left() -> None:
    rec = Recorder()
    q = rec.queue()
    q.put_many(msgs(3))
    q.drain()
    q.finish()
    assert q.get(0).reply == "r0"
    q.stop()
    assert [m.reply for m in rec.discarded] == ["r1", "r2"]
    with pytest.raises(natspull.IteratorClosedError):
        q.get(0)


def test_get_batch_takes_what_is_buffered_up_to_count() -> None:
    q = Recorder().queue()
    q.put_many(msgs(5))
    assert [m.reply for m in q.get_batch(3, 0)] == ["r0", "r1", "r2"]
    assert [m.reply for m in q.get_batch(3, 0)] == ["r3", "r4"]  # no waiting for a third
    with pytest.raises(natspull.TimeoutError):
        q.get_batch(3, 0.01)
    assert q.stats()["delivered"] == 5


def test_get_batch_blocks_for_the_first_and_gathers_until_the_deadline() -> None:
    q = Recorder().queue()
    out: list[object] = []

    def run() -> None:
        out.append(q.get_batch(4, 5, gather=5))

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 5
    while q.stats()["waiters"] == 0:  # really blocked for the first message
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for i in range(4):  # each wakes the gathering thread; the fourth completes the batch
        q.put_many(msgs(1, i))
    t.join(5)
    assert not t.is_alive()
    assert [m.reply for m in out[0]] == ["r0", "r1", "r2", "r3"]  # type: ignore[attr-defined]


def test_get_batch_gathering_ends_at_the_end_and_leaves_it_for_the_next_call() -> None:
    q = Recorder().queue()
    q.put_many(msgs(2))
    q.drain()
    q.finish()
    assert len(q.get_batch(5, 1, gather=5)) == 2  # no waiting: closed
    with pytest.raises(natspull.IteratorClosedError):
        q.get_batch(5, 1)


def test_get_batch_honours_stop_after() -> None:
    rec = Recorder()
    q = rec.queue(Flow(max_msgs=10, max_bytes=0, threshold_msgs=5, threshold_bytes=0, limit=3))
    q.put_many(msgs(5))
    assert len(q.get_batch(10, 0, lease=True, gather=1)) == 3
    assert q.state is State.CLOSED and len(rec.discarded) == 2
