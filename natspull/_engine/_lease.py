"""Lease extension for ``consume()``: keep the messages in running handlers from expiring.

One timer on the connection's loop thread (``loop.call_later``, re-armed by each tick) scans
the messages whose handlers are running and sends each one ``+WPI`` (``Msg.in_progress()``,
which resets the server's ``ack_wait`` timer). A worker registers a message when it takes it
and unregisters it when the handler (and natspull's failure handling) is done; a message the
handler acked, NAKed or terminated is dropped at the next tick. No thread and no timer per
message, no loop wake-up per message: registering is a dict operation under a leaf lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from .._msg import Msg
from .._transport._loop import LoopThread
from ..errors import Error, MsgAlreadyAckedError

__all__ = ["LEASE_FRACTION", "LeaseKeeper"]

log = logging.getLogger("natspull")

#: The timer ticks every ``ack_wait * LEASE_FRACTION``: a message registered just after a tick
#: is extended within half of ack_wait, well before the server's timer runs out.
LEASE_FRACTION = 0.5


class LeaseKeeper:
    """Sends ``+WPI`` every *interval* seconds for each registered message, for at most
    *max_lease* seconds after it was registered.

    :meth:`add`, :meth:`remove` and :meth:`close` are for any thread and never block (but on
    the leaf lock); the ticks run on the loop thread.
    """

    def __init__(self, loop_thread: LoopThread, interval: float, max_lease: float) -> None:
        """Start the timer (its first tick is *interval* seconds from now). Never blocks."""
        self._loop_thread = loop_thread
        self.interval = interval
        self.max_lease = max_lease
        # Guards _leases, _closed and extensions. A leaf in the lock order: the acks are sent
        # (and every other lock taken) only after it is released.
        self._lock = threading.Lock()
        self._leases: dict[Msg, float] = {}  # message -> time.monotonic() after which it is let go
        self._closed = False
        self._extensions = 0  # +WPI sent, ever
        self._handle: asyncio.TimerHandle | None = None  # loop thread only
        loop_thread.call_soon(self._arm)

    def after_fork_in_child(self) -> None:
        """Child process after os.fork(): a worker may have held the lock. The timer is the
        parent's loop's, which the child does not run."""
        self._lock = threading.Lock()

    def add(self, msg: Msg) -> None:
        """Keep *msg*'s lease alive from now on, for at most max_lease seconds. Any thread."""
        until = time.monotonic() + self.max_lease
        with self._lock:
            if not self._closed:
                self._leases[msg] = until

    def remove(self, msg: Msg) -> None:
        """Stop extending *msg*. Any thread; idempotent."""
        with self._lock:
            self._leases.pop(msg, None)

    def close(self) -> None:
        """Stop the timer and let every lease go. Any thread; never blocks; idempotent."""
        with self._lock:
            self._closed = True
            self._leases.clear()
        self._loop_thread.call_soon(self._cancel)

    @property
    def extensions(self) -> int:
        """How many ``+WPI`` were sent, ever. Any thread."""
        with self._lock:
            return self._extensions

    @property
    def leased(self) -> int:
        """How many messages are being extended now. Any thread."""
        with self._lock:
            return len(self._leases)

    # ------------------------------------------------------------ loop thread

    def _arm(self) -> None:
        with self._lock:
            closed = self._closed
        if not closed:
            self._handle = self._loop_thread.loop.call_later(self.interval, self._tick)

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        now = time.monotonic()
        due: list[Msg] = []
        with self._lock:
            if self._closed:
                return
            for msg, until in list(self._leases.items()):
                # Acked, NAKed or terminated by the handler, or past max_lease: the server
                # redelivers a message let go after ack_wait.
                if msg.acked or now >= until:
                    del self._leases[msg]
                else:
                    due.append(msg)
        sent = 0
        for msg in due:
            try:
                msg.in_progress()
            except MsgAlreadyAckedError:  # acked since the scan (a +WPI after the ack is harmless too)
                self.remove(msg)
            except Error as exc:  # the connection is gone: the server redelivers after ack_wait
                log.debug("natspull: could not extend the lease of %s: %s", msg.subject, exc)
                break
            else:
                sent += 1
        if sent:
            with self._lock:
                self._extensions += sent
        self._arm()
