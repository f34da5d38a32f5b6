"""``Consumer.messages()``: the blocking pull iterator.

A thin face over the queue (``_queue.py``, where the state machine lives) and
the pull engine (``_pull.py``). See those modules for the design; this one only
adds the iterator protocol, the context manager, argument checks and the
finalizer.

The engine is referenced by its client until it stops, so nothing but the
application refers to a :class:`Messages`: neither the engine nor the queue
holds it. When the application drops an open one (a for-loop left by
``break`` without ``with`` or ``stop()``), it is collected and stops itself,
like an unclosed file.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

from ._engine._pull import PullEngine
from ._engine._queue import MsgQueue, State
from ._msg import Msg
from ._observe import _otel
from ._observe._stats import MessagesStats
from ._validate import check_int, check_timeout
from .errors import IteratorClosedError

__all__ = ["Messages", "creation_site"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def creation_site() -> str:
    """``file:line`` of the innermost caller outside natspull, for a ResourceWarning.

    Cheap (a few frame hops, no traceback); the full allocation traceback comes
    with ``tracemalloc`` (``python -X tracemalloc``), as for files and sockets.
    """
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Messages:
    """An iterator over a pull consumer's messages, fed by continuous pulls.

    ``for msg in consumer.messages(): ...`` ends cleanly after ``stop()`` or
    ``drain()``; a broken consumer or connection raises from the loop
    (ConsumerDeletedError, ConnectionClosedError, ...). Any number of threads
    may call :meth:`next` at once; each message goes to exactly one of them.
    In a child process after ``os.fork()`` every call but :meth:`stats` raises
    ForkedError at once, and none hands out the parent's buffered messages.

    Use it with ``with`` (or call :meth:`stop`): one dropped while open is
    stopped when it is garbage-collected, its messages NAKed back, with a
    ResourceWarning naming where it was created.
    """

    def __init__(self, engine: PullEngine, queue: MsgQueue) -> None:
        """Private: use ``Consumer.messages()``."""
        self._engine = engine
        self._queue = queue
        self._created_at = creation_site()  # natspull.trio puts its own caller's here
        _otel.watch(self, engine.stream, engine.consumer)

    def __del__(self) -> None:
        # Collected: the application can no longer take what the iterator holds, so hand it
        # back (NAK) and unsubscribe; stop() never blocks, so this is safe on any thread.
        # Stopped first: with warnings turned into errors the warning raises.
        if self._queue.forked is not None:
            return  # a child's copy after os.fork(): the parent's to stop, nothing to hand back
        was_open = self._queue.state is State.OPEN
        described = repr(self)
        self.stop()
        if was_open:
            warnings.warn(
                f"unclosed {described} created at {self._created_at}: stopped when garbage-collected, "
                "its messages NAKed; use 'with consumer.messages() as msgs:' or call stop()",
                ResourceWarning,
                stacklevel=1,  # wherever the collection happened; the message names the creation site
                source=self,  # with tracemalloc: the traceback of the creation
            )

    def __repr__(self) -> str:
        return f"<natspull.Messages {self._engine.stream}/{self._engine.consumer} {self._queue.state.value}>"

    def __iter__(self) -> Messages:
        return self

    def __next__(self) -> Msg:
        self._engine.loop_thread.check_not_in_loop("iterating Messages")
        telemetry = _otel.current()
        try:
            # with telemetry: the previous message's span ends, this one's starts
            return self._queue.get() if telemetry is None else telemetry.take(self._queue.get)
        except IteratorClosedError:
            raise StopIteration from None

    def __enter__(self) -> Messages:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._queue.forked is None:  # a forked child leaving the parent's block: see Client.__exit__
            self.stop()
        telemetry = _otel.current()
        if telemetry is not None:  # the span of the last message this thread took (not settled) ends
            telemetry.next_started(threading.get_ident())

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
        timeout = check_timeout("timeout", timeout)
        telemetry = _otel.current()
        if telemetry is None:
            return self._queue.get(timeout)
        return telemetry.take(self._queue.get, timeout)  # spans: see natspull/_observe/_otel.py

    def next_batch(self, max_messages: int, timeout: float | None = None) -> list[Msg]:
        """1 to *max_messages* messages: the next one, and those already buffered after it.

        Blocks on: the iterator's condition variable, until the first message arrives (as
        :meth:`next`, bounded by *timeout*); the rest is taken at once, under the same
        acquisition of the queue's lock, without waiting for more. Raises as :meth:`next`
        (natspull.TimeoutError, IteratorClosedError once stopped or drained and empty, the
        terminal errors); ValueError/TypeError for a *max_messages* that is not an int >= 1.
        Any thread.
        """
        self._engine.loop_thread.check_not_in_loop("Messages.next_batch()")
        max_messages = check_int("max_messages", max_messages, maximum=1_000_000)
        timeout = check_timeout("timeout", timeout)
        telemetry = _otel.current()
        if telemetry is None:
            return self._queue.get_batch(max_messages, timeout)
        msgs = self._queue.get_batch(max_messages, timeout)
        owner = threading.get_ident()
        telemetry.next_started(owner)
        for msg in msgs:  # each message's span ends at its ack; the last one's also at the next read
            telemetry.handed_out(msg, owner)
        return msgs

    def stop(self) -> None:
        """End now: every waiter wakes and sees the end; no new pull is sent.

        Messages buffered but not handed out, and those still in flight, are
        NAKed so the server redelivers them at once (to another reader: the NAKs leave once
        this iterator's inbox is unsubscribed, a round trip later). Never blocks: safe from
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

    def stats(self) -> MessagesStats:
        """A snapshot (:class:`natspull.MessagesStats`): delivered, buffered, pending, pulls,
        missed heartbeats, reconnects, acks, redeliveries, state. Never blocks but for the
        queue's lock (a leaf); any thread, also in a child process after os.fork()."""
        return MessagesStats(**self._queue.stats(), **self._engine.stats(), state=self._queue.state.value)
