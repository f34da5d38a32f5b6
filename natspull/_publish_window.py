"""The bound on ``publish_async``: at most ``max_pending`` publishes waiting for their PubAck.

One per JetStream context. User threads take a slot before they publish (blocking, with a
deadline, while the window is full) and the loop thread gives it back when the answer, a
timeout or the close has completed the future. ``wait_idle`` is ``publish_async_complete``.

Lock: ``_lock`` (a leaf, shared by the two conditions) guards ``_in_flight``; it is held only
to count and notify, never across a wait for anything else. Waiters re-check their condition
in a ``while`` loop against one monotonic deadline.
"""

from __future__ import annotations

import threading
import time

from .errors import TimeoutError

__all__ = ["PublishWindow"]


class PublishWindow:
    """A counting window of *size* slots."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()  # guards _in_flight; leaf
        self._slot_free = threading.Condition(self._lock)  # _in_flight < size
        self._idle = threading.Condition(self._lock)  # _in_flight == 0
        self._in_flight = 0
        self._slot_waiters = 0  # threads in acquire()'s wait: release() notifies only then
        self._idle_waiters = 0  # threads in wait_idle()

    @property
    def in_flight(self) -> int:
        """Slots taken now (a snapshot). Any thread."""
        return self._in_flight

    def acquire(self, timeout: float) -> None:
        """Take a slot, blocking while all *size* are taken, at most *timeout* seconds.

        Raises natspull.TimeoutError when none came free in time. Any thread but the loop's.
        """
        with self._lock:
            if self._in_flight < self.size:
                self._in_flight += 1
                return
            deadline = time.monotonic() + timeout
            self._slot_waiters += 1
            try:
                while self._in_flight >= self.size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"publish_async: {self.size} publishes (max_pending) still wait for "
                            f"their PubAck after {timeout:g} s"
                        )
                    self._slot_free.wait(remaining)
            finally:
                self._slot_waiters -= 1
            self._in_flight += 1

    def release(self) -> None:
        """Give a slot back (its publish is complete). Any thread; never blocks for long."""
        with self._lock:
            self._in_flight -= 1
            if self._slot_waiters:
                self._slot_free.notify()
            if self._in_flight == 0 and self._idle_waiters:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        """Block until no slot is taken, at most *timeout* seconds (natspull.TimeoutError)."""
        with self._lock:
            deadline = time.monotonic() + timeout
            self._idle_waiters += 1
            try:
                while self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"publish_async_complete: {self._in_flight} publishes still wait for "
                            f"their PubAck after {timeout:g} s"
                        )
                    self._idle.wait(remaining)
            finally:
                self._idle_waiters -= 1
