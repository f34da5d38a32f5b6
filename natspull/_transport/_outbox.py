"""Fire-and-forget publishes (acks and core publishes) from any thread, coalesced.

``Msg.ack()`` and ``Client.publish()`` must return without waiting for the
loop, and thousands of them per second from many threads must not cost one
cross-thread wake-up each. They append to a deque; the first append after a
flush schedules one flush callback on the loop, which writes everything that
has accumulated by then to the socket. One wake-up and one write per burst.

Ordering: entries leave in the order they were appended.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ..errors import ConnectionClosedError
from ._loop import LoopThread
from ._wire import Entry, Wire

__all__ = ["Outbox"]


class Outbox:
    """A multi-producer queue of publishes drained by the loop thread."""

    def __init__(self, loop_thread: LoopThread, wire: Wire) -> None:
        self._loop_thread = loop_thread
        self._wire = wire
        # deque append/popleft are atomic; the lock only guards _scheduled and
        # _closed, and is never held while calling into the loop or nats-py.
        self._entries: deque[Entry] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        # Set only in a child process after os.fork(), with _closed: raises the ForkedError.
        self._check_fork: Callable[[], None] | None = None

    def put(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Accept one publish; returns at once. Any thread.

        Raises ConnectionClosedError once the client is closing: an accepted
        entry is always flushed, a refused one is reported, none is dropped;
        ForkedError in a child process after os.fork().
        """
        if self._closed:
            if self._check_fork is not None:
                self._check_fork()
            raise ConnectionClosedError("the connection is closed")
        self._entries.append((subject, payload, reply, headers))
        # Benign race: _flush clears _scheduled *before* it takes entries, so an
        # append that reads a stale True is taken by that flush.
        if not self._scheduled:
            with self._lock:
                if self._scheduled:
                    return
                self._scheduled = True
            self._loop_thread.call_soon(self._start_flush)

    def close(self) -> None:
        """Refuse new entries (accepted ones are still flushed by :meth:`flush`). Any thread."""
        with self._lock:
            self._closed = True

    def after_fork_in_child(self, check_fork: Callable[[], None]) -> None:
        """Child process after os.fork(), single-threaded: every put() calls *check_fork*, which raises.

        The lock is replaced (the loop thread or an acking thread may have held
        it at the fork); the entries are the parent's to send, not the child's.
        """
        self._lock = threading.Lock()
        self._entries.clear()
        self._check_fork = check_fork
        self._closed = True

    def _start_flush(self) -> None:
        """Loop thread: the callback that the first put() after a flush scheduled."""
        if not self._write_now():
            self._loop_thread.loop.create_task(self.flush())

    def _write_now(self) -> bool:
        """Loop thread: write what was accepted straight to the socket (``Wire.write_now``);
        False when :meth:`flush` must take the rest through nats-py's buffer."""
        with self._lock:
            self._scheduled = False
        # (an entry appended after this callback was scheduled is taken here or by its own flush)
        return self._wire.write_now(self._entries)

    async def flush(self) -> None:
        """Write every accepted entry, then kick nats-py's flusher. Loop thread only.

        The direct path first; otherwise ``Wire.write`` hands the entries to nats-py's
        buffer and flusher, one buffer per burst (see benchmarks/README.md).
        """
        if self._write_now():
            return
        await self._wire.write(self._entries)
