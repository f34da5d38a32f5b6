"""Leases: keep the messages natspull holds for the application from being redelivered.

One timer on the connection's loop thread (``loop.call_later``, re-armed by each tick while
something is leased) sends ``+WPI`` (``Msg.in_progress()``, which resets the server's
``ack_wait`` timer) to two kinds of messages:

* **From arrival** (``messages()``, ``consume()``, ``natspull.trio``): the engine reports every
  burst it buffers (:meth:`LeaseKeeper.arrived`, loop thread, one deque append per burst).
  A tick walks the bursts: a message still natspull's - buffered, in the trio adapter's deque,
  or taken by a worker - is extended once it is older than a quarter of ack_wait (every tick
  is then at most half an ack_wait after the last ``+WPI``), for at most ``max_lease``
  seconds after its arrival; a message the application took (the queue stamps
  ``Msg._out`` when it hands it out) and has not settled is extended at the ticks of the
  ``ack_wait`` seconds after it was handed out, so the application has one whole ack_wait
  from ``next()``, and is then let go (the server redelivers it after ack_wait); a message
  let go by ``consume()`` (``_out < 0``: its handler returned) or settled (``Msg.acked``)
  is dropped. With ``AckPolicy.ALL`` an ack also settles every message that came before it
  (nats-server applies ``+WPI`` to one sequence only, so each message is extended on its own).
* **In a handler** (``consume()``): a worker registers a message when it calls the handler
  (:meth:`LeaseKeeper.add`) and unregisters it when done; it is extended every tick for at
  most ``max_lease`` seconds after the handler started.

No thread and no timer per message, no loop wake-up per message: the hot path is one
monotonic stamp per take (the queue) and a dict operation under a leaf lock (a handler).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque

from .._msg import Msg
from .._transport._loop import LoopThread
from ..errors import ConnectionClosedError, Error, MsgAlreadyAckedError

__all__ = ["LEASE_FRACTION", "LeaseKeeper"]

log = logging.getLogger("natspull")

#: The timer ticks every ``ack_wait * LEASE_FRACTION``: a message registered just after a tick
#: is extended within half of ack_wait, well before the server's timer runs out.
LEASE_FRACTION = 0.5

#: Walk the arrivals to drop what is settled when this many messages, or this many bytes, are
#: tracked (then at twice what is left): bounds the memory of a fast reader between two ticks.
#: The bytes matter with large messages: 4096 settled messages of 64 KiB are 256 MiB kept alive.
_PRUNE_AT = 4096
_PRUNE_BYTES = 1 << 20


class LeaseKeeper:
    """Sends ``+WPI`` every *interval* seconds to the messages natspull holds (see the module
    docstring): those registered with :meth:`add`, for at most *max_lease* seconds after
    that, and those reported by :meth:`arrived`, for at most *max_lease* seconds after their
    arrival (None: no bound) while natspull holds them, and *ack_wait* seconds after they were
    handed out.

    :meth:`add`, :meth:`remove` and :meth:`close` are for any thread and never block (but on
    the leaf lock); :meth:`arrived` and the ticks run on the loop thread.
    """

    def __init__(
        self,
        loop_thread: LoopThread,
        interval: float,
        max_lease: float | None,
        *,
        ack_wait: float | None = None,
        ack_all: bool = False,
    ) -> None:
        """Never blocks. The timer is armed by the first message to lease."""
        self._loop_thread = loop_thread
        self.interval = interval
        self.max_lease = max_lease
        self.ack_wait = 2 * interval if ack_wait is None else ack_wait
        self.ack_all = ack_all
        # Guards _leases, _closed, _armed and _extensions. A leaf in the lock order: the acks
        # are sent (and every other lock taken) only after it is released.
        self._lock = threading.Lock()
        self._leases: dict[Msg, float] = {}  # message -> time.monotonic() after which it is let go
        self._closed = False
        self._armed = False  # a tick is due (or being scheduled)
        self._extensions = 0  # +WPI sent, ever
        self._handle: asyncio.TimerHandle | None = None  # loop thread only
        # Loop thread only: (arrival time, messages) of every burst with a message still leased.
        self._arrivals: deque[tuple[float, list[Msg]]] = deque()
        self._tracked = 0  # messages in _arrivals
        self._tracked_bytes = 0  # their sizes
        self._prune_at = _PRUNE_AT
        self._prune_bytes_at = _PRUNE_BYTES

    def after_fork_in_child(self) -> None:
        """Child process after os.fork(): a worker may have held the lock. The timer is the
        parent's loop's, which the child does not run."""
        self._lock = threading.Lock()

    def add(self, msg: Msg) -> None:
        """Keep *msg*'s lease alive from now on, for at most max_lease seconds. Any thread."""
        until = time.monotonic() + (math.inf if self.max_lease is None else self.max_lease)
        with self._lock:
            if self._closed:
                return
            self._leases[msg] = until
            wake = not self._armed
            self._armed = True
        if wake:
            self._loop_thread.call_soon(self._arm)

    def remove(self, msg: Msg) -> None:
        """Stop extending *msg*. Any thread; idempotent."""
        with self._lock:
            self._leases.pop(msg, None)

    def arrived(self, msgs: list[Msg]) -> None:
        """A burst was buffered: lease it from now on. Loop thread; never blocks."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            wake = not self._armed
            self._armed = True
        self._arrivals.append((now, msgs))
        self._tracked += len(msgs)
        self._tracked_bytes += sum(msg.size for msg in msgs)
        if self._tracked >= self._prune_at or self._tracked_bytes >= self._prune_bytes_at:
            self._walk(now, None)
            self._prune_at = max(_PRUNE_AT, 2 * self._tracked)
            self._prune_bytes_at = max(_PRUNE_BYTES, 2 * self._tracked_bytes)
        if wake:
            self._arm()

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
        """How many messages are being extended in handlers now. Any thread."""
        with self._lock:
            return len(self._leases)

    # ------------------------------------------------------------ loop thread

    def _arm(self) -> None:
        with self._lock:
            closed = self._closed
        if not closed and self._handle is None:
            self._handle = self._loop_thread.loop.call_later(self.interval, self._tick)

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._arrivals.clear()
        self._tracked = self._tracked_bytes = 0

    def _walk(self, now: float, handled: set[Msg] | None) -> list[Msg]:
        """Drop from the arrivals what needs no lease any more; return (with *handled*, the
        messages in handlers, which :meth:`add` leases) those due for a ``+WPI`` now."""
        due: list[Msg] = []
        arrivals = self._arrivals
        if self.ack_all:  # an ack settles everything before it (FIFO: everything that arrived before)
            for index in range(len(arrivals) - 1, -1, -1):
                msgs = arrivals[index][1]
                last = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].acked), None)
                if last is not None:
                    for _ in range(index):
                        arrivals.popleft()
                    arrivals[0] = (arrivals[0][0], msgs[last + 1 :])
                    break
        collect = handled is not None
        in_handlers: set[Msg] = handled if handled is not None else set()
        ack_wait = self.ack_wait
        min_age = self.interval * 0.5
        max_lease = math.inf if self.max_lease is None else self.max_lease
        kept: deque[tuple[float, list[Msg]]] = deque()
        tracked = tracked_bytes = 0
        for arrival, msgs in arrivals:
            age = now - arrival
            held_due = collect and age >= min_age
            held_live = age < max_lease
            live: list[Msg] = []
            for msg in msgs:
                if msg._acked:
                    continue
                out = msg._out
                if out == 0.0:  # natspull's: buffered, in the trio deque or taken by a worker
                    if held_live:
                        live.append(msg)
                        if held_due and msg not in in_handlers:
                            due.append(msg)
                elif out > 0.0 and now - out < ack_wait:  # the application's: one ack_wait from next()
                    live.append(msg)
                    if collect:
                        due.append(msg)
            if live:
                kept.append((arrival, live))
                tracked += len(live)
                tracked_bytes += sum(msg.size for msg in live)
        self._arrivals = kept
        self._tracked = tracked
        self._tracked_bytes = tracked_bytes
        return due

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
            handled = set(self._leases)
        if self._arrivals:
            due += self._walk(now, handled)
        sent = 0
        closed = False
        for msg in due:
            try:
                msg.in_progress()
            except MsgAlreadyAckedError:  # acked since the scan (a +WPI after the ack is harmless too)
                self.remove(msg)
            except ConnectionClosedError:  # for good: nothing to lease any more
                closed = True
                break
            except Error as exc:  # the connection is gone: the server redelivers after ack_wait
                log.debug("natspull: could not extend the lease of %s: %s", msg.subject, exc)
                break
            else:
                sent += 1
        with self._lock:
            self._extensions += sent
            idle = not self._leases and not self._arrivals
            if idle or closed:
                self._armed = False
        if closed:
            self.close()
        elif not idle:
            self._arm()
