"""``Consumer.messages()``: the blocking pull iterator.

A thin face over the queue (``_queue.py``, where the state machine lives) and
the pull engine (``_pull.py``). See those modules for the design; this one only
adds the iterator protocol, the context manager and argument checks.
"""

from __future__ import annotations

from typing import Any

from ._msg import Msg
from ._pull import PullEngine
from ._queue import MsgQueue, State
from ._validate import check_timeout
from .errors import IteratorClosedError

__all__ = ["Messages"]


class Messages:
    """An iterator over a pull consumer's messages, fed by continuous pulls.

    ``for msg in consumer.messages(): ...`` ends cleanly after ``stop()`` or
    ``drain()``; a broken consumer or connection raises from the loop
    (ConsumerDeletedError, ConnectionClosedError, ...). Any number of threads
    may call :meth:`next` at once; each message goes to exactly one of them.
    In a child process after ``os.fork()`` every call but :meth:`stats` raises
    ForkedError at once, and none hands out the parent's buffered messages.
    """

    def __init__(self, engine: PullEngine, queue: MsgQueue) -> None:
        """Private: use ``Consumer.messages()``."""
        self._engine = engine
        self._queue = queue

    def __repr__(self) -> str:
        return f"<natspull.Messages {self._engine.stream}/{self._engine.consumer} {self._queue.state.value}>"

    def __iter__(self) -> Messages:
        return self

    def __next__(self) -> Msg:
        self._engine.loop_thread.check_not_in_loop("iterating Messages")
        try:
            return self._queue.get()
        except IteratorClosedError:
            raise StopIteration from None

    def __enter__(self) -> Messages:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._queue.forked is None:  # a forked child leaving the parent's block: see Client.__exit__
            self.stop()

    def next(self, timeout: float | None = None) -> Msg:
        """The next message.

        Blocks on: the iterator's condition variable, until a message arrives,
        the iterator ends, or *timeout* seconds pass (None: no bound). Never
        spins. Raises natspull.TimeoutError; IteratorClosedError once stopped
        or drained and empty; ConsumerDeletedError, ConsumerNotFoundError,
        ConnectionClosedError, PermissionError, JetStreamAPIError when the
        consumer or connection broke (every later call raises it again);
        NoHeartbeatError once per missed heartbeat with
        ``error_on_missing_heartbeat=True`` (the iterator stays usable).
        Any thread.
        """
        self._engine.loop_thread.check_not_in_loop("Messages.next()")
        return self._queue.get(check_timeout("timeout", timeout))

    def stop(self) -> None:
        """End now: every waiter wakes and sees the end; no new pull is sent.

        Messages buffered but not handed out, and those still in flight, are
        NAKed so the server redelivers them at once. Never blocks: safe from
        any thread, a signal handler, a client callback or the loop body.
        This method is idempotent, and cuts a running drain short.
        """
        self._queue.stop()

    def drain(self) -> None:
        """Stop pulling and end after handing out everything buffered or already in flight.

        Returns at once; never blocks (same safety as :meth:`stop`). This
        method is idempotent and does nothing after :meth:`stop`.
        """
        self._queue.drain()

    @property
    def closed(self) -> bool:
        """True once stop() or drain() was called or the iterator broke (it may still hold messages)."""
        return self._queue.state is not State.OPEN

    def stats(self) -> dict[str, Any]:
        """A snapshot: delivered, buffered, pending_msgs/pending_bytes (requested, not handed out),
        pulls_sent, heartbeats_missed, reconnects, state. Any thread."""
        return {**self._queue.stats(), **self._engine.stats(), "state": self._queue.state.value}
