"""The bound on pipelined publishes: at most *size* waiting for their PubAck.

One per JetStream context for ``publish_async`` (``max_pending``; ``wait_idle`` is
``publish_async_complete``), and one per ``publish_many`` call (its ``window``) or
``publish`` call (one slot). User threads take a slot before they publish (blocking, with a
deadline, while the window is full) and the loop thread gives it back when the answer, a
timeout or the close has come.

A full window reopens only once a quarter of it is answered (``reopen_at``), and then to every
waiting thread at once: publishers that outrun the server take turns in runs of many publishes,
not in one thread switch per PubAck (which made 8 publishing threads pay a wake-up of a
blocked thread for each message).

Lock: ``_lock`` (a leaf, shared by the two conditions) guards ``_in_flight`` and ``_full``; it
is held only to count and notify, never across a wait for anything else. Waiters re-check
their condition in a ``while`` loop against one monotonic deadline.
"""

from __future__ import annotations

import threading
import time

from .errors import TimeoutError

__all__ = ["PublishWindow"]


class PublishWindow:
    """A counting window of *size* slots that, once full, reopens at ``reopen_at`` taken."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reopen_at = size - max(1, size // 4)
        self._lock = threading.Lock()  # guards _in_flight, _full; leaf
        self._slot_free = threading.Condition(self._lock)  # not _full
        self._idle = threading.Condition(self._lock)  # _in_flight == 0
        self._in_flight = 0
        self._full = False  # an acquire found every slot taken, and not reopen_at reached since
        self._idle_waiters = 0  # threads in wait_idle()

    @property
    def in_flight(self) -> int:
        """Slots taken now (a snapshot). Any thread."""
        return self._in_flight

    def acquire(self, timeout: float) -> None:
        """Take a slot; once all *size* are taken, block until the window reopens (at
        ``reopen_at`` taken), at most *timeout* seconds.

        Raises natspull.TimeoutError when it did not reopen in time. Any thread but the loop's.
        """
        with self._lock:
            deadline: float | None = None
            while True:
                if not self._full:
                    if self._in_flight < self.size:
                        self._in_flight += 1
                        return
                    self._full = True
                if deadline is None:
                    deadline = time.monotonic() + timeout
                waiting = f"publish_async: {self.size} publishes (max_pending)"
                _wait(self._slot_free, deadline, waiting, timeout)

    def release(self) -> None:
        """Give a slot back (its publish is complete). Any thread; never blocks for long."""
        with self._lock:
            self._in_flight -= 1
            if self._full and self._in_flight <= self.reopen_at:
                self._full = False
                self._slot_free.notify_all()
            if self._in_flight == 0 and self._idle_waiters:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        """Block until no slot is taken, at most *timeout* seconds (natspull.TimeoutError)."""
        with self._lock:
            deadline = time.monotonic() + timeout
            self._idle_waiters += 1
            try:
                while self._in_flight:
                    waiting = f"publish_async_complete: {self._in_flight} publishes"
                    _wait(self._idle, deadline, waiting, timeout)
            finally:
                self._idle_waiters -= 1


def _wait(condition: threading.Condition, deadline: float, waiting: str, timeout: float) -> None:
    """Lock held: one wait on *condition*, or natspull.TimeoutError (*waiting* "still wait for
    their PubAck") once the monotonic *deadline* has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"{waiting} still wait for their PubAck after {timeout:g} s")
    condition.wait(remaining)
