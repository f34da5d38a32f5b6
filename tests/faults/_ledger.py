"""The delivery ledger every fault test asserts, and the consuming loops that fill it.

The ledger is what the application saw: each delivery ``(stream_seq, num_delivered)``. The
guarantees a fault test checks at the end (:meth:`Ledger.settle` then :meth:`Ledger.check`):

* every stream sequence 1..total was handed to the application at least once;
* no delivery was handed out twice: a key ``(stream_seq, num_delivered)`` never repeats
  (a *redelivery* has a higher ``num_delivered``, and at-least-once allows it);
* every ack the application made is reflected on the server: after ``client.flush()`` the
  consumer's ack floor reaches the last sequence and ``num_ack_pending`` is back to 0.

An ack can be lost with a connection (acks are fire-and-forget); the server then redelivers the
message after ``ack_wait`` and the application acks it again, so :meth:`Ledger.settle` keeps the
consumer running while it waits for the server to agree.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from conftest import wait_until

import natspull

__all__ = ["Gate", "IteratorRunner", "Ledger", "consumer_state"]


class Gate:
    """Lets the application handle at most :meth:`allow`-ed first deliveries of a sequence (see
    :meth:`Ledger.handle`), so faults land mid-run.

    The test opens the gate stage by stage, a stage ahead of the fault it injects: when the
    fault hits, the application is still busy with messages it may handle.
    """

    def __init__(self, allowed: int = 0) -> None:
        self._cond = threading.Condition()  # guards _allowed and _passed; leaf lock
        self._allowed = allowed
        self._passed = 0

    def allow(self, count: int) -> None:
        with self._cond:
            self._allowed = max(self._allowed, count)
            self._cond.notify_all()

    def open(self) -> None:
        self.allow(2**62)

    def wait(self, timeout: float = 60.0) -> None:
        """Block until one more delivery may be handled (application threads)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._passed < self._allowed, timeout):
                raise AssertionError(f"the gate stayed shut for {timeout} s")
            self._passed += 1


class Ledger:
    """Thread-safe record of every delivery the application received.

    Compact, so that a soak test can keep one for hours: a byte per stream sequence for first
    deliveries, and a Counter only for redeliveries (num_delivered > 1), which are rare.
    """

    def __init__(self, total: int, gate: Gate | None = None) -> None:
        self.total = total
        self.gate = gate
        self._lock = threading.Lock()  # guards the fields below; leaf lock
        self._first = bytearray()  # [seq]: deliveries with num_delivered == 1 (saturates at 255)
        self._again: Counter[tuple[int, int]] = Counter()  # (seq, num_delivered > 1): deliveries
        self._unique = 0  # sequences handed out at least once
        self._seen = bytearray()  # [seq]: 1 once handed out with any num_delivered
        self.deliveries = 0
        self.acked = 0

    def record(self, msg: natspull.Msg) -> None:
        """Note one delivery (call it once per message handed out, before acking it)."""
        meta = msg.metadata
        seq, delivered = meta.sequence.stream, meta.num_delivered
        with self._lock:
            if seq >= len(self._seen):
                grow = max(seq + 1 - len(self._seen), len(self._seen))
                self._seen.extend(bytes(grow))
                self._first.extend(bytes(grow))
            if delivered == 1:
                self._first[seq] = min(self._first[seq] + 1, 255)
            else:
                self._again[(seq, delivered)] += 1
            if not self._seen[seq]:
                self._seen[seq] = 1
                self._unique += 1
            self.deliveries += 1

    def handle(self, msg: natspull.Msg) -> None:
        """The application: (wait at the gate,) record the delivery, then ack it.

        A sequence handed out before passes the gate without using it up: the test waits for
        distinct sequences a stage behind the gate, and a leader change can redeliver more than
        a stage's worth (acks the old leader had not replicated), which stalled the run."""
        if self.gate is not None and not self._handed_out(msg.metadata.sequence.stream):
            self.gate.wait()
        self.record(msg)
        msg.ack()
        with self._lock:
            self.acked += 1

    def _handed_out(self, seq: int) -> bool:
        with self._lock:
            return seq < len(self._seen) and bool(self._seen[seq])

    @property
    def unique(self) -> int:
        with self._lock:
            return self._unique

    @property
    def redelivered(self) -> int:
        """Deliveries with num_delivered > 1."""
        with self._lock:
            return sum(self._again.values())

    def complete(self) -> bool:
        return self.unique >= self.total

    def wait_for(self, count: int, timeout: float, what: str = "") -> None:
        """Block until *count* distinct sequences were handed out (at most *timeout* s)."""
        wait_until(lambda: self.unique >= count, timeout, what or f"{count} of {self.total} messages")

    def settle(
        self, client: natspull.Client, js: natspull.JetStream, stream: str, name: str, timeout: float
    ) -> None:
        """Wait until every sequence was handed out and the server agrees every one is acked.

        *client* is the consuming client (its acks are flushed); *js* asks the server (it may
        belong to another client, outside a partition). The consumer must still be running: a
        lost ack means a redelivery to ack again.
        """
        deadline = time.monotonic() + timeout
        try:
            self.wait_for(self.total, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; ledger: {self.summary()}") from None
        client.flush(timeout=max(deadline - time.monotonic(), 0.1))
        last: list[Any] = []

        def acked_on_server() -> bool:
            try:
                state = consumer_state(js, stream, name)
            except natspull.Error:  # e.g. a leader election still going on
                return False
            last[:] = [state]
            return (
                state["ack_floor"] >= self.total
                and state["num_ack_pending"] == 0
                and state["num_pending"] == 0
            )

        try:
            wait_until(acked_on_server, max(deadline - time.monotonic(), 0.1), "the server to see every ack")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; consumer state {last}; ledger: {self.summary()}") from None

    def check(self) -> None:
        """Assert the ledger itself: everything handed out, no delivery handed out twice."""
        self.check_all_handed_out()
        twice = self.repeated_deliveries()
        assert not twice, f"handed out twice within one delivery (seq, num_delivered): {twice[:20]}"

    def check_all_handed_out(self) -> None:
        """Assert that every stream sequence 1..total was handed out at least once."""
        with self._lock:
            seen = self._seen
            missing = [seq for seq in range(1, self.total + 1) if seq >= len(seen) or not seen[seq]]
        assert not missing, f"never handed out: {missing[:20]} ({len(missing)} in all)"

    def repeated_deliveries(self) -> list[tuple[int, int]]:
        """Deliveries ``(seq, num_delivered)`` handed out more than once."""
        with self._lock:
            twice = [(seq, 1) for seq, n in enumerate(self._first) if n > 1]
            twice += [key for key, n in self._again.items() if n > 1]
        return twice

    def summary(self) -> str:
        return (
            f"{self.unique}/{self.total} sequences, {self.deliveries} deliveries, "
            f"{self.redelivered} redelivered"
        )


def consumer_state(js: natspull.JetStream, stream: str, name: str) -> dict[str, int]:
    """The consumer's server-side counters that the ledger is checked against."""
    info = js.consumer_info(stream, name)
    return {
        "ack_floor": info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0,
        "delivered": info.delivered.stream_seq if info.delivered and info.delivered.stream_seq else 0,
        "num_ack_pending": info.num_ack_pending or 0,
        "num_pending": info.num_pending or 0,
        "num_redelivered": info.num_redelivered or 0,
    }


class IteratorRunner:
    """The application loop on a thread: ``msgs.next()`` -> ledger -> ack, until the iterator ends.

    ``on_error`` decides about a non-terminal error from next() (e.g. NoHeartbeatError): return True
    to keep going. Terminal errors end the loop and are kept in :attr:`error`.
    """

    def __init__(
        self,
        msgs: natspull.Messages,
        ledger: Ledger,
        *,
        on_error: Callable[[natspull.Error], bool] = lambda exc: False,
        handle: Callable[[natspull.Msg], None] | None = None,
    ) -> None:
        self.msgs = msgs
        self.ledger = ledger
        self.error: BaseException | None = None
        self.notices: list[natspull.Error] = []
        self._on_error = on_error
        self._handle = handle or ledger.handle
        self._thread = threading.Thread(target=self._run, name="fault-app")
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                msg = self.msgs.next(timeout=60)
            except natspull.IteratorClosedError:
                return
            except natspull.Error as exc:
                if self._on_error(exc):
                    self.notices.append(exc)
                    continue
                self.error = exc
                return
            except BaseException as exc:
                self.error = exc
                return
            try:
                self._handle(msg)
            except BaseException as exc:
                self.error = exc
                return

    def finish(self, timeout: float = 10.0) -> None:
        """Drain the iterator, join the thread and re-raise what ended it, if anything."""
        if self.ledger.gate is not None:
            self.ledger.gate.open()
        self.msgs.drain()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the application thread did not end after drain()"
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop the iterator and join the thread (cleanup after a failure)."""
        if self.ledger.gate is not None:
            self.ledger.gate.open()
        self.msgs.stop()
        self._thread.join(10)
