"""The hand-off queue between the loop thread (producer) and user threads.

Plain threading, no asyncio: one re-entrant lock, one condition, one deque,
and ONE state variable. It is unit-testable without a server.

States and transitions::

               drain()                finish()
      OPEN ───────────────▶ DRAINING ─────────────▶ CLOSED
        │                      │                      ▲
        └──────────────────────┴──────────────────────┘
          stop() / fail(exc) / the stop_after limit reached

    state     put_many() (loop)      get() (any thread)
    ───────── ────────────────────── ───────────────────────────────────────────
    OPEN      buffered               hands out; waits while empty
    DRAINING  buffered               hands out; waits while empty
    CLOSED    refused -> on_discard  hands out what is left; then raises the end

* ``drain()`` keeps the buffer; the producer calls ``finish()`` once nothing
  more can arrive (its unsubscribe was confirmed), and the buffer is then
  handed out to the end.
* ``stop()`` and ``fail()`` empty the buffer into ``on_discard`` (the engine
  NAKs those messages, so the server redelivers them at once).
* **The end of iteration is exactly "state is CLOSED and the buffer is
  empty".** The end raises the terminal error given to ``fail()`` (sticky: every
  later call sees it) or else IteratorClosedError. There is no second flag.

Every transition sets the state under the lock and calls ``notify_all()``;
every waiter re-checks its condition in a ``while`` loop against one monotonic
deadline, like ``queue.Queue.shutdown()`` in CPython. ``stop()``/``drain()``
never wait for anything but the lock, which nobody holds across a wait, a
network call or a callback.

Signal handlers: a Python signal handler runs on the main thread between two
bytecodes, possibly while that same thread holds the lock inside ``get()``.
Re-entering the condition there could lose the wake-up (the waiter has checked
the state but is not registered yet) or corrupt ``Condition.notify``, which is
not re-entrant. So a transition requested by a thread that already holds the
lock is handed to a short-lived helper thread, which takes the lock as soon as
the interrupted ``get()`` releases it in ``wait()``, and wakes it.

After ``os.fork()`` the child's copy of a queue is CLOSED with a ForkedError as
its terminal error, its buffer (the parent's deliveries) emptied and its lock
replaced (see ``_fork.py``): ``get()`` raises at once and hands out nothing,
``stop()``/``drain()`` raise, ``stats()`` works.

Flow control ("pending", as in nats.go): messages and bytes requested by pull
requests and not yet released by the application (``get()`` releases at once;
``get(lease=True)`` releases on ``release()``, after a handler ran). The
producer tops pending up with ``reserve()``; a release that drops pending below
the threshold calls ``on_low`` once (re-armed by the next ``reserve()``). A
message's ``size`` is what the server charged it against ``max_bytes`` (see
``_pull``), so pending bytes reach exactly zero when everything is released.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .._msg import Msg
from .._transport import _fork
from ..errors import ForkedError, IteratorClosedError, TimeoutError

__all__ = ["Flow", "MsgQueue", "State"]

_helper_ids = itertools.count(1)


class State(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"
    CLOSED = "closed"


@dataclass(frozen=True)
class Flow:
    """Pull sizing: the maximum pending and the threshold that triggers a re-pull.

    The queue's part of a read's ``_settings.PullSettings`` (``settings.flow``), built with them.
    """

    max_msgs: int
    max_bytes: int  # 0: no byte limit
    threshold_msgs: int
    threshold_bytes: int
    limit: int | None = None  # stop_after: hand out at most this many messages
    # max_messages together with max_bytes (nats.go's PullMaxMessagesWithBytesLimit): every
    # pull asks for at most this many bytes; the flow itself counts messages (max_bytes 0).
    request_bytes: int = 0


def _noop() -> None:
    return None


class MsgQueue:
    """Lock + condition + deque, guarded by one state machine (see module docstring)."""

    def __init__(
        self,
        flow: Flow,
        *,
        on_low: Callable[[], None] = _noop,
        on_discard: Callable[[list[Msg]], None] = lambda msgs: None,
        on_state: Callable[[State], None] = lambda state: None,
        on_ready: Callable[[], None] = _noop,
        on_take: Callable[[Msg], None] | None = None,
        count_redelivered: Callable[[Iterable[Msg]], int] | None = None,
        source: tuple[str, str] = ("", ""),
    ) -> None:
        self.flow = flow
        self.source = source  # (stream, consumer) the messages come from, for telemetry
        self._on_low = on_low  # called outside the lock; must not block
        self._on_discard = on_discard  # called outside the lock; must not block
        self._on_state = on_state  # called outside the lock after a transition; must not block
        # For async adapters that never block a thread in get() (natspull.trio): called outside
        # the lock after each burst is buffered, each transition and each notice; must not block.
        self.on_ready = on_ready
        # Told the last message of every take, *with the lock held*, so that when threads take
        # at once the last one told is the last one taken (an ordered read continues after it).
        # It must only store it: no lock, no blocking. An adapter that takes ahead of its own
        # readers (natspull.trio) takes it over and reports each message as it hands it out.
        self.on_take = on_take
        # How many of some messages are redeliveries (the engine knows how to tell; None: not
        # counted). Called with the lock held, once per burst buffered (and on a discard and
        # in stats(), for what is still buffered).
        self._count_redelivered = count_redelivered
        # Set (before the engine starts) when a LeaseKeeper leases the messages from their
        # arrival: each take stamps the messages it hands out (Msg._out, one monotonic per take),
        # release() those an adapter hands out, or a consume() worker lets go.
        self.stamp = False
        # _lock (_cond's lock) guards every field below. It is a leaf in the lock order:
        # nothing that takes another natspull lock is called while holding it.
        # Re-entrant only so that a signal handler can *detect* that it
        # interrupted its own thread (see module docstring), never to nest.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # get()'s hot path takes the lock alone
        self._items: deque[Msg] = deque()
        self._state = State.OPEN
        self._error: BaseException | None = None  # terminal; set only together with CLOSED
        self._notice: BaseException | None = None  # raised once by the next get(); non-terminal
        # pending = outstanding (requested, not arrived) + buffered + leased; >= 0
        self._pending_msgs = 0
        self._pending_bytes = 0
        self._buffered_bytes = 0  # sum of sizes in _items
        self._leased_msgs = 0  # handed out with lease=True, not yet released
        self._leased_bytes = 0
        self._low_armed = True  # on_low fires at most once per reserve()
        self._delivered = 0  # handed out by get(), ever
        # Redeliveries (num_delivered > 1) among the messages buffered so far, less those
        # discarded: stats() subtracts the ones still buffered, so that it reports those handed
        # out. Counted per burst in put_many(), not per take: no call per message in get().
        self._redelivered = 0
        self._waiters = 0
        self._created_in = _fork.pid
        # Set only in a child process after os.fork(), together with CLOSED (see _after_fork_in_child).
        self.forked: ForkedError | None = None
        self._fork_handle = _fork.track(self)  # None, or kept while the queue lives (compiled)

    def _after_fork_in_child(self) -> None:
        """Child process after os.fork(), single-threaded: refuse everything from now on.

        The lock is replaced (a thread of the parent may have held it at the
        fork); the buffer is dropped unseen: those deliveries are the parent's,
        which hands them out and acks them.
        """
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.forked = _fork.forked_error("this messages()/consume() iterator", self._created_in)
        self._error = self.forked
        self._state = State.CLOSED
        self._redelivered -= self._redeliveries(self._items)
        self._items.clear()
        self._notice = None
        self._buffered_bytes = self._pending_msgs = self._pending_bytes = 0
        self._leased_msgs = self._leased_bytes = self._waiters = 0

    def check_fork(self) -> None:
        """Raise ForkedError in a child process that inherited this queue. Any thread."""
        if self.forked is not None:
            raise self.forked

    # ---------------------------------------------------------------- reading

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> BaseException | None:
        """The terminal error given to ``fail()``, or None. Any thread (read without the lock)."""
        return self._error

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "delivered": self._delivered,
                "redelivered": self._redelivered - self._redeliveries(self._items),
                "buffered": len(self._items),
                "pending_msgs": self._pending_msgs,
                "pending_bytes": self._pending_bytes,
                "waiters": self._waiters,
            }

    # --------------------------------------------------------------- consumer

    def get(self, timeout: float | None = None, *, lease: bool = False) -> Msg:
        """Hand out the next message.

        Blocks on: the condition, until a message arrives, the queue ends or
        *timeout* seconds pass. Raises natspull.TimeoutError, the terminal
        error, IteratorClosedError (closed and empty), or a pending notice
        (NoHeartbeatError). With ``lease=True`` the message keeps counting as
        pending until :meth:`release`. Any thread.
        """
        # The hot path: a message is buffered. One acquisition of the lock and no call but
        # the hooks; what it does is _take_locked(1, lease) spelled out for one message
        # (a buffered message implies that stop_after's limit is not reached: see
        # _take_locked, which closes the queue when it is).
        msg: Msg | None = None
        with self._lock:
            items = self._items
            if items and self._notice is None:
                msg = items.popleft()
                size = msg.size
                if self.on_take is not None:
                    self.on_take(msg)
                if self.stamp and not lease:
                    msg._out = time.monotonic()
                self._buffered_bytes -= size
                delivered = self._delivered = self._delivered + 1
                if lease:
                    self._leased_msgs += 1
                    self._leased_bytes += size
                    low = False
                else:
                    low = self._release_locked(size)
                limit = self.flow.limit
                discard = self._close_locked(None) if limit is not None and delivered >= limit else None
        if msg is None:
            return self._get_waiting(timeout, lease)
        if discard is not None:
            self._announce(State.CLOSED, discard)
        if low:
            self._on_low()
        return msg

    def _get_waiting(self, timeout: float | None, lease: bool) -> Msg:
        """:meth:`get` when nothing was buffered: wait, or raise the notice or the end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._wait_ready_locked(deadline, timeout)
            taken, low, discard = self._take_locked(1, lease)
        self._after_take(low, discard)
        return taken[0]

    def get_batch(
        self, count: int, timeout: float | None = None, *, lease: bool = False, gather: float = 0.0
    ) -> list[Msg]:
        """Hand out 1 to *count* messages, taken under one acquisition of the lock.

        Blocks on: the condition, until the first message arrives (raising as :meth:`get`:
        TimeoutError after *timeout*, the terminal error, IteratorClosedError, a notice);
        then takes what is buffered, up to *count*. With *gather* > 0 it keeps waiting, at
        most *gather* seconds after the first message was taken, for the rest of *count*
        (waking as messages arrive); a notice or the end met then ends the gathering and is
        raised by the next call instead. Any thread.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wait_ready_locked(deadline, timeout)
            taken, low, discard = self._take_locked(count, lease)
            if gather > 0 and len(taken) < count and discard is None:
                until = time.monotonic() + gather
                while len(taken) < count and discard is None:
                    if self._notice is not None or (not self._items and self._state is State.CLOSED):
                        break
                    if self._items:
                        more, more_low, discard = self._take_locked(count - len(taken), lease)
                        taken += more
                        low = low or more_low
                        continue
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._waiters += 1
                    try:
                        self._cond.wait(remaining)
                    finally:
                        self._waiters -= 1
        self._after_take(low, discard)
        return taken

    def _wait_ready_locked(self, deadline: float | None, timeout: float | None) -> None:
        """Lock held. Wait until a message can be taken (raising as :meth:`get`)."""
        while not self._ready_locked():
            if deadline is None:
                remaining = None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no message within {timeout:g} s")
            self._waiters += 1
            try:
                self._cond.wait(remaining)
            finally:
                self._waiters -= 1

    def get_many_nowait(self, limit: int, *, lease: bool = False) -> list[Msg]:
        """Take up to *limit* buffered messages without waiting (async adapters).

        Returns [] when nothing is buffered and the queue has not ended;
        raises like :meth:`get` (notice, terminal error, IteratorClosedError)
        otherwise. Never waits but for the lock. Any thread.
        """
        with self._lock:
            if not self._ready_locked():
                return []
            taken, low, discard = self._take_locked(limit, lease)
        self._after_take(low, discard)
        return taken

    def _ready_locked(self) -> bool:
        """Lock held. True when a message can be taken; raises the notice or the end."""
        if self._notice is not None:
            notice, self._notice = self._notice, None
            raise notice
        if self._items:
            return True
        if self._state is State.CLOSED:
            raise self._error or IteratorClosedError("the iterator is stopped or drained")
        return False

    def _take_locked(self, count: int, lease: bool) -> tuple[list[Msg], bool, list[Msg] | None]:
        """Lock held. Take up to *count* messages (honouring stop_after).

        Returns (messages, call on_low?, messages discarded because the limit was reached or None).
        """
        limit = self.flow.limit
        if limit is not None:
            count = min(count, limit - self._delivered)
        items = self._items
        taken = [items.popleft() for _ in range(min(count, len(items)))]
        if taken:
            on_take = self.on_take
            if on_take is not None:
                on_take(taken[-1])
        low = False
        if self.stamp and not lease:
            now = time.monotonic()
            for msg in taken:
                msg._out = now
        for msg in taken:
            self._buffered_bytes -= msg.size
            if lease:
                self._leased_msgs += 1
                self._leased_bytes += msg.size
            else:
                low = self._release_locked(msg.size) or low
        self._delivered += len(taken)
        discard = None
        if limit is not None and self._delivered >= limit:
            discard = self._close_locked(None)
        return taken, low, discard

    def _after_take(self, low: bool, discard: list[Msg] | None) -> None:
        """Outside the lock, after a take: announce a stop_after close, ask for a re-pull."""
        if discard is not None:
            self._announce(State.CLOSED, discard)
        if low:
            self._on_low()

    def release(self, msg: Msg, *, let_go: bool = False) -> None:
        """Stop counting a leased message as pending: an adapter handed it to the application
        (its lease from arrival runs on for ack_wait), or, with *let_go*, a consume() worker is
        done with it (its lease from arrival ends). Any thread."""
        if self.stamp:
            msg._out = -1.0 if let_go else time.monotonic()
        with self._lock:
            self._leased_msgs -= 1
            self._leased_bytes -= msg.size
            low = self._release_locked(msg.size)
        if low:
            self._on_low()

    def wait_closed(self, timeout: float | None) -> bool:
        """Block until the state is CLOSED or *timeout* passes; True if closed. Any thread."""
        with self._lock:
            return self._cond.wait_for(lambda: self._state is State.CLOSED, timeout)

    def take_all(self) -> list[Msg]:
        """Hand out everything buffered at once (``fetch()``). Raises the terminal error, if any."""
        with self._lock:
            if self._error is not None and not self._items:
                raise self._error
            taken, low, discard = self._take_locked(len(self._items), lease=False)
        self._after_take(low, discard)
        return taken

    # --------------------------------------------------------------- producer

    def put_many(self, msgs: list[Msg]) -> None:
        """Buffer a burst of messages and wake that many waiters. Loop thread; O(1) per message.

        A CLOSED queue refuses them: they go to ``on_discard`` (NAK) instead.
        """
        with self._lock:
            accepted = self._state is not State.CLOSED
            if accepted:
                self._items.extend(msgs)
                self._redelivered += self._redeliveries(msgs)
                self._buffered_bytes += sum(msg.size for msg in msgs)
                if self.flow.max_bytes and self._pending_bytes <= self._buffered_bytes + self._leased_bytes:
                    # Every requested byte has arrived. The server ends a request whose bytes
                    # are used up exactly without telling (no 409), so no requested message
                    # is outstanding either; counting them would hold back the pulls that
                    # stop_after still allows.
                    self._pending_msgs = len(self._items) + self._leased_msgs
                if self._waiters:
                    self._cond.notify(len(msgs))
        if accepted:
            self.on_ready()
        else:
            self._on_discard(msgs)

    def reserve(self) -> tuple[int, int]:
        """Top pending up to the maximum if it fell below the threshold; return (msgs, bytes) to pull.

        Returns (0, 0) when no pull is due or the queue no longer pulls
        (DRAINING/CLOSED). Re-arms ``on_low``. Loop thread.
        """
        flow = self.flow
        with self._lock:
            self._low_armed = True
            if self._state is not State.OPEN or not self._below_threshold_locked():
                return 0, 0
            msgs = flow.max_msgs - self._pending_msgs
            if flow.limit is not None:
                msgs = min(msgs, flow.limit - self._delivered - self._pending_msgs)
            if msgs <= 0:
                return 0, 0
            nbytes = max(flow.max_bytes - self._pending_bytes, 0) if flow.max_bytes else 0
            if flow.max_bytes and nbytes <= 0:
                return 0, 0
            self._pending_msgs += msgs
            self._pending_bytes += nbytes
            return msgs, nbytes

    def book(self, msgs: int) -> bool:
        """Count *msgs* more as requested, beyond the threshold rule (a pull that must reach
        the server now). False, booking nothing, unless OPEN. Loop thread."""
        with self._lock:
            if self._state is not State.OPEN:
                return False
            self._pending_msgs += msgs
            return True

    def adjust_pending(self, msgs: int, nbytes: int) -> None:
        """Subtract what the server says a pull left unfilled (408/409). Loop thread."""
        with self._lock:
            self._pending_msgs = max(self._pending_msgs - msgs, 0)
            self._pending_bytes = max(self._pending_bytes - nbytes, 0)

    def forget_outstanding(self) -> None:
        """Forget every outstanding pull (reconnect, leadership change, missed heartbeat).

        Buffered and leased messages stay valid and keep counting. Loop thread.
        """
        with self._lock:
            self._pending_msgs = len(self._items) + self._leased_msgs
            self._pending_bytes = self._buffered_bytes + self._leased_bytes

    def holds_messages(self) -> bool:
        """True while messages are buffered or leased to handlers."""
        with self._lock:
            return bool(self._items) or self._leased_msgs > 0

    def has_outstanding(self) -> bool:
        """True while some requested message has not arrived (so heartbeats are due).

        A byte-limited flow asks by bytes: a live request always has bytes left
        (the server ends it when they are used up), while its message count may
        be left over from a request that ended so.
        """
        with self._lock:
            if self.flow.max_bytes:
                return self._pending_bytes > self._buffered_bytes + self._leased_bytes
            return self._pending_msgs > len(self._items) + self._leased_msgs

    def notice(self, exc: BaseException) -> None:
        """Have the next get() raise *exc* once (non-terminal). Any thread."""
        with self._lock:
            if self._state is State.CLOSED:
                return
            self._notice = exc
            self._cond.notify()
        self.on_ready()

    # ------------------------------------------------------------ transitions

    def drain(self) -> None:
        """OPEN -> DRAINING: no new pulls; what is buffered or in flight is still handed out.

        Never blocks (see the module docstring about signal handlers).
        Idempotent; does nothing after stop(). Any thread. Raises
        ForkedError in a child process that inherited the queue.
        """
        self._transition(self._drain_locked)

    def stop(self) -> None:
        """-> CLOSED now: every waiter wakes and sees the end; buffered messages go to on_discard.

        Never blocks. Idempotent; cuts a drain short. Any thread. Raises
        ForkedError in a child process that inherited the queue.
        """
        self._transition(lambda: self._close_locked(None))

    def fail(self, exc: BaseException) -> None:
        """-> CLOSED with a terminal error raised by every later get(). Idempotent. Any thread."""
        self._transition(lambda: self._close_locked(exc))

    def finish(self) -> None:
        """DRAINING -> CLOSED, keeping the buffer: nothing more can arrive. Producer side."""

        def finish_locked() -> list[Msg] | None:
            if self._state is not State.DRAINING:
                return None
            self._set_state_locked(State.CLOSED)
            return []

        self._transition(finish_locked)

    # ---------------------------------------------------------------- helpers

    def _transition(self, change: Callable[[], list[Msg] | None]) -> None:
        self.check_fork()
        if self._cond._is_owned():  # type: ignore[attr-defined]
            # A signal handler interrupted this thread while it held the lock.
            threading.Thread(
                target=self._transition, args=(change,), name=f"natspull-signal-{next(_helper_ids)}"
            ).start()
            return
        with self._lock:
            discard = change()
            state = self._state
        if discard is not None:
            self._announce(state, discard)

    def _announce(self, state: State, discard: list[Msg]) -> None:
        """Outside the lock: hand discarded messages back and tell the producer and async waiters."""
        if discard:
            self._on_discard(discard)
        self._on_state(state)
        self.on_ready()

    def _drain_locked(self) -> list[Msg] | None:
        """Lock held. Returns [] when the state changed, None when nothing happened."""
        if self._state is not State.OPEN:
            return None
        self._set_state_locked(State.DRAINING)
        return []

    def _close_locked(self, exc: BaseException | None) -> list[Msg] | None:
        """Lock held. -> CLOSED; returns the discarded buffer, or None if nothing changed.

        stop() on a queue that a finished drain left CLOSED with a buffer still
        discards that buffer: stop() always means "hand out nothing more".
        """
        if self._state is State.CLOSED:
            if exc is not None or not self._items:
                return None
            discard = list(self._items)
            self._items.clear()
            self._buffered_bytes = 0
            self._redelivered -= self._redeliveries(discard)
            return discard
        self._error = exc
        discard = list(self._items)
        self._redelivered -= self._redeliveries(discard)
        self._items.clear()
        self._buffered_bytes = 0
        self._notice = None
        self._set_state_locked(State.CLOSED)
        return discard

    def _redeliveries(self, msgs: Iterable[Msg]) -> int:
        """Lock held. How many of *msgs* are redeliveries (0 when the queue does not count)."""
        count = self._count_redelivered
        return 0 if count is None or not msgs else count(msgs)

    def _set_state_locked(self, state: State) -> None:
        """Lock held."""
        self._state = state
        self._cond.notify_all()

    def _below_threshold_locked(self) -> bool:
        """Lock held."""
        flow = self.flow
        if flow.max_bytes:  # byte-limited flow decides on bytes alone
            return self._pending_bytes < flow.threshold_bytes
        return self._pending_msgs < flow.threshold_msgs

    def _release_locked(self, size: int) -> bool:
        """Lock held. Returns True when on_low must be called (after releasing the lock)."""
        pending = self._pending_msgs - 1
        self._pending_msgs = pending = pending if pending > 0 else 0
        nbytes = self._pending_bytes - size
        self._pending_bytes = nbytes = nbytes if nbytes > 0 else 0
        if self._low_armed and self._state is State.OPEN:
            flow = self.flow  # _below_threshold_locked(), inlined: once per message
            if nbytes < flow.threshold_bytes if flow.max_bytes else pending < flow.threshold_msgs:
                self._low_armed = False
                return True
        return False
