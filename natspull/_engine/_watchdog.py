"""``consume(handler_timeout=...)``: one thread that notices handler calls running too long.

Every handler call gets the same limit, so calls expire in the order they started: the
running calls sit in an insertion-ordered dict and the thread ``natspull-watchdog-N`` waits,
on one condition, only until the oldest one's deadline. Starting and finishing a call is a
dict operation under a leaf lock; the thread is woken only when a call starts with none
running (or at close). No timer and no thread per call.

What happens to an expired call (its messages NAKed, the event, the log line) is the pool's
``on_expire`` callback, run on the watchdog thread outside the lock.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

from .._msg import Msg
from .._transport._loop import keep_signals_for_main_thread

__all__ = ["Call", "Watchdog"]

log = logging.getLogger("natspull")

_watchdog_ids = itertools.count(1)


class Call:
    """One running handler call: its messages, its thread, its deadline."""

    __slots__ = ("deadline", "msgs", "thread", "timed_out")

    def __init__(self, msgs: list[Msg], thread: threading.Thread, deadline: float) -> None:
        self.msgs = msgs
        self.thread = thread
        self.deadline = deadline  # time.monotonic()
        self.timed_out = False  # set once, under the watchdog's lock


class Watchdog:
    """Calls *on_expire(call)* once for each call still running *limit* seconds after it started.

    :meth:`start`, :meth:`finish` and :meth:`close` are for any thread and never block (but on
    the leaf lock); *on_expire* runs on the thread ``natspull-watchdog-N``.
    """

    def __init__(self, limit: float, on_expire: Callable[[Call], None]) -> None:
        self.limit = limit
        self._on_expire = on_expire
        # Guards _running, _stuck and _closed. A leaf in the lock order: on_expire runs after
        # it is released.
        self._cond = threading.Condition(threading.Lock())
        self._running: dict[Call, None] = {}  # started, not finished, not expired; oldest first
        self._stuck = 0  # expired and not finished yet
        self._closed = False
        self.thread = threading.Thread(
            target=self._run, name=f"natspull-watchdog-{next(_watchdog_ids)}", daemon=True
        )
        self.thread.start()

    def after_fork_in_child(self) -> None:
        """Child process after os.fork(): a worker may have held the lock; the thread is gone."""
        self._cond = threading.Condition(threading.Lock())

    def start(self, msgs: list[Msg]) -> Call:
        """A handler call on *msgs* starts on this thread now. Any thread; never blocks."""
        call = Call(msgs, threading.current_thread(), time.monotonic() + self.limit)
        with self._cond:
            self._running[call] = None
            if len(self._running) == 1:  # the thread may be waiting with no deadline
                self._cond.notify()
        return call

    def finish(self, call: Call) -> bool:
        """*call* returned (or raised); True if it had expired. Any thread; never blocks."""
        with self._cond:
            if call.timed_out:
                self._stuck -= 1
                return True
            del self._running[call]
            return False

    @property
    def stuck(self) -> int:
        """Calls running past the limit now. Any thread."""
        with self._cond:
            return self._stuck

    def close(self) -> None:
        """End the thread (it does not wait for running calls). Any thread; never blocks.

        This method is idempotent. Additional calls have no effect.
        """
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        keep_signals_for_main_thread()
        while True:
            with self._cond:
                expired = self._wait_expired_locked()
                if expired is None:
                    return
            for call in expired:
                try:
                    self._on_expire(call)
                except Exception:
                    log.exception("natspull: handler_timeout handling failed")

    def _wait_expired_locked(self) -> list[Call] | None:
        """Lock held. Wait for the oldest call's deadline; the calls expired then (marked), or
        None once closed."""
        while not self._closed:
            if not self._running:
                self._cond.wait()
                continue
            now = time.monotonic()
            oldest = next(iter(self._running))
            if oldest.deadline > now:
                self._cond.wait(oldest.deadline - now)
                continue
            expired = []
            for call in self._running:
                if call.deadline > now:
                    break
                expired.append(call)
            for call in expired:
                del self._running[call]
                call.timed_out = True
            self._stuck += len(expired)
            return expired
        return None
