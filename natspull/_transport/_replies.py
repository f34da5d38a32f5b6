"""Replies to many publishes on one subscription: the machinery under ``JetStream.publish``,
``publish_many`` and ``publish_async``.

As nats.go's async publish does, a connection subscribes one wildcard inbox
``<inbox>.*`` (on first use) and gives every publish waiting for an answer its own reply
subject ``<inbox>.<n>``; a map from reply subject to callback routes the answer. So a
publish costs no subscription and no round trip of its own: user threads register and queue
the publish (through the outbox, one loop wake-up per burst) and return at once.

Threads and data (no lock on the hot path):

* :meth:`ReplyRouter.expect` (any thread) stores the callback in ``_pending`` (a dict:
  single stores and pops are atomic), then appends ``(deadline, subject)`` to the lane of its
  timeout (a deque: appends and ``popleft`` from two threads are safe). Only the loop thread
  pops lane heads.
* The loop thread resolves answers (pop from ``_pending``, then drop answered lane heads),
  and one timer fails what outlived its deadline with natspull.TimeoutError. Lanes hold one
  timeout each, so each lane is in deadline order and only heads are ever looked at.
* :meth:`fail_all` pops every entry with ``popitem()``: from the loop thread when the
  connection closes, or from the closing thread once the loop has stopped.

Invariant: a subject is in a lane only after it is in ``_pending``; a lane head whose subject
is no longer in ``_pending`` was answered, timed out or failed, and may be dropped.

Callbacks run on the loop thread (or the closing thread): short, never blocking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from ..errors import TimeoutError
from ._loop import LoopThread
from ._wire import Inbox, Reply, Wire

__all__ = ["OnReply", "ReplyRouter"]

log = logging.getLogger("natspull")

#: (reply, None) with the answer, or (None, error): TimeoutError, ConnectionClosedError.
OnReply = Callable[["Reply | None", "BaseException | None"], None]

#: The reply subject's last token: a decimal counter, at most this long (a uint64).
TOKEN_BYTES = 20

_START_TIMEOUT = 10.0  # subscribing the inbox: one SUB on a live connection


class ReplyRouter:
    """One connection's wildcard reply inbox and the callbacks waiting on it."""

    def __init__(self, loop_thread: LoopThread, wire: Wire) -> None:
        self._loop_thread = loop_thread
        self._wire = wire
        self._ids = itertools.count(1)  # next() is atomic
        self._prefix: str | None = None  # "<inbox>." once subscribed
        # Guards _starting only (the one-time subscription); leaf, never held across a wait.
        self._start_lock = threading.Lock()
        self._starting: concurrent.futures.Future[str] | None = None
        self._inbox: Inbox | None = None  # loop thread
        self._pending: dict[str, tuple[OnReply, deque[tuple[float, str]]]] = {}
        self._lanes: dict[float, deque[tuple[float, str]]] = {}  # timeout -> (deadline, subject)
        self._armed = False  # a sweep is scheduled or running (see _arm)
        self._timer: asyncio.TimerHandle | None = None  # loop thread
        self._timer_at = math.inf  # when _timer fires (written on the loop, read anywhere)
        self._idle: asyncio.Future[None] | None = None  # loop thread: settled() waits here

    def __len__(self) -> int:
        """Replies awaited now. Any thread."""
        return len(self._pending)

    # --------------------------------------------------------------- any thread

    def expect(self, timeout: float, on_reply: OnReply) -> str:
        """Register *on_reply* for a new reply subject, returned; it is called once, with the
        answer, or with natspull.TimeoutError *timeout* seconds from now, or with the error
        that closed the connection. Any thread but the loop's: the first call per connection
        blocks on subscribing the inbox (raises what subscribing raised)."""
        prefix = self._prefix or self._start()
        subject = f"{prefix}{next(self._ids)}"
        lane = self._lanes.get(timeout)
        if lane is None:
            lane = self._lanes.setdefault(timeout, deque())
        self._pending[subject] = (on_reply, lane)
        deadline = time.monotonic() + timeout
        lane.append((deadline, subject))  # (after _pending: the invariant)
        # (a lane's deadlines only grow: only a shorter timeout than the timer's needs it earlier)
        if not self._armed or deadline < self._timer_at:
            self._loop_thread.call_soon(self._arm)
        return subject

    def forget(self, subject: str) -> bool:
        """Drop the callback of *subject* (its publish was refused); False when it was already
        called. Any thread."""
        return self._pending.pop(subject, None) is not None

    def fail_all(self, exc: BaseException) -> None:
        """Call every waiting callback with *exc*: the loop thread, or any thread once the loop
        has stopped. This method is idempotent."""
        while True:
            try:
                _, (on_reply, _lane) = self._pending.popitem()
            except KeyError:
                break
            _call(on_reply, None, exc)
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def after_fork_in_child(self) -> None:
        """Child process after os.fork(): the parent's publishes are not the child's to answer."""
        self._start_lock = threading.Lock()
        self._pending.clear()
        self._lanes.clear()

    def reply_bytes(self, inbox_bytes: int) -> int:
        """The length of a reply subject, with inboxes of *inbox_bytes*. Any thread."""
        return inbox_bytes + 1 + TOKEN_BYTES

    def _start(self) -> str:
        """Subscribe the wildcard inbox once per connection; other threads wait for the first."""
        with self._start_lock:
            starting = self._starting
            first = starting is None or (starting.done() and starting.exception() is not None)
            if first:
                starting = self._starting = concurrent.futures.Future()
        assert starting is not None
        if not first:
            try:
                return starting.result(_START_TIMEOUT)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(
                    f"subscribing the reply inbox took more than {_START_TIMEOUT:g} s"
                ) from None
        try:
            prefix = self._loop_thread.run(self._subscribe(), _START_TIMEOUT, "publish_async")
        except BaseException as exc:
            starting.set_exception(exc)
            raise
        self._prefix = prefix
        starting.set_result(prefix)
        return prefix

    async def _subscribe(self) -> str:
        inbox = self._wire.new_inbox()
        self._inbox = await self._wire.subscribe_inbox(f"{inbox}.*", self._on_msg, self._deliver)
        return f"{inbox}."

    # ---------------------------------------------------------------- loop side

    def _deliver(self, subject: str, reply: str, data: bytes, size: int) -> None:
        self._resolve(subject, Reply(subject, reply, data, None))

    def _on_msg(
        self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None, size: int
    ) -> None:
        self._resolve(subject, Reply(subject, reply, data, headers))

    def _resolve(self, subject: str, msg: Reply) -> None:
        entry = self._pending.pop(subject, None)
        if entry is None:
            return  # answered after its timeout, or after a close failed it
        on_reply, lane = entry
        _drop_answered(lane, self._pending)
        _call(on_reply, msg, None)
        if not self._pending and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _arm(self) -> None:
        """Loop thread: have the sweep run at the earliest deadline (sooner than scheduled, if
        need be), or stop sweeping when nothing waits.

        ``expect()`` appends, then reads ``_armed``; here ``_armed`` is cleared, then the
        lanes are read again: an entry is seen by one side or the other, never missed.
        """
        self._armed = True
        earliest = self._earliest()
        if earliest is None:
            if self._timer is not None:
                return  # it fires, finds nothing, and stops sweeping then
            self._armed = False
            earliest = self._earliest()
            if earliest is None:
                return
            self._armed = True
        if self._timer is not None:
            if earliest >= self._timer_at:
                return
            self._timer.cancel()
        self._timer_at = earliest
        self._timer = self._loop_thread.loop.call_at(earliest, self._sweep)

    def _earliest(self) -> float | None:
        """Loop thread: the first deadline of a publish still waiting (answered heads dropped)."""
        heads = []
        for lane in list(self._lanes.values()):
            _drop_answered(lane, self._pending)
            if lane:
                heads.append(lane[0][0])
        return min(heads, default=None)

    def _sweep(self) -> None:
        """Loop thread: fail every publish whose deadline has passed, then re-arm."""
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        for timeout, lane in list(self._lanes.items()):
            while lane and lane[0][0] <= now:
                _, subject = lane.popleft()
                entry = self._pending.pop(subject, None)
                if entry is not None:
                    _call(entry[0], None, TimeoutError(f"no answer within {timeout:g} s"))
        if not self._pending and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        self._arm()

    async def settled(self, timeout: float) -> None:
        """Loop thread: wait until no reply is awaited, at most *timeout* seconds (no error)."""
        if not self._pending:
            return
        self._idle = asyncio.get_running_loop().create_future()
        if not self._pending:
            return
        await asyncio.wait({self._idle}, timeout=timeout)


def _drop_answered(lane: deque[tuple[float, str]], pending: Mapping[str, object]) -> None:
    """Loop thread: drop the lane's heads that are no longer waited for (amortised O(1))."""
    while lane and lane[0][1] not in pending:
        lane.popleft()


def _call(on_reply: OnReply, reply: Reply | None, error: BaseException | None) -> None:
    try:
        on_reply(reply, error)
    except Exception:  # a bug there must not break the reader or the close
        log.exception("natspull: a publish reply callback failed")
