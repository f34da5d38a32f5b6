"""The trio side of the pull iterator: a trio-local deque fed in bursts, parked tasks, exact hand-off.

Public through :mod:`natspull.trio`, whose docstring explains the design: no thread blocks
while a task waits, one trio wake-up per burst, and why cancellation loses no message.
Imported only after :mod:`natspull.trio` has checked that trio is installed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import trio

from .._engine._modes import fetch_steps
from .._engine._queue import MsgQueue, State
from .._engine._settings import PullSettings
from .._iterator import creation_site
from .._msg import Metadata, nak_unacked
from .._msg import Msg as _SyncMsg
from .._observe import _otel, _stats
from .._ports import ConsumerPort, OrderedConsumerPort
from .._transport import _fork
from .._validate import check_int, check_timeout
from ..errors import Error, IteratorClosedError, TimeoutError

if TYPE_CHECKING:
    from types import TracebackType

    from .._iterator import Messages as _SyncMessages

__all__ = [
    "Messages",
    "MessagesStats",
    "Msg",
    "OrderedMessages",
    "Waker",
    "in_thread",
    "wait_closed",
    "wait_fetch",
]

T = TypeVar("T")

# Most messages moved from the queue to the trio-local deque under one acquisition of the
# queue's lock: big enough to make the lock rare, small enough not to hold up the loop thread.
_BURST = 512


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a short, bounded blocking natspull call on a trio worker thread.

    A cancellation waits for the call to finish (its own timeout bounds it) and is delivered
    at the caller's next checkpoint.
    """
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=False)


class Waker:
    """Parks trio tasks and wakes them from any thread, at most one trio wake-up per burst.

    ``sleepers`` and the parking lot are used on the trio thread only; ``on_ready`` is called
    from any thread (the loop thread, a thread calling stop()) and only reads ``sleepers``.
    """

    __slots__ = ("_lot", "_token", "sleepers", "wakeups")

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._lot = trio.lowlevel.ParkingLot()
        # Tasks interested in the next wake-up: incremented *before* a task's last look at the
        # queue (see "Wake-ups" in natspull.trio's docstring), so that on_ready cannot miss it.
        self.sleepers = 0
        self.wakeups = 0  # wake() calls, for stats()

    def on_ready(self) -> None:
        """The queue got a burst or changed state. Any thread; never blocks."""
        if self.sleepers:
            self.call_soon(self.wake)

    def call_soon(self, fn: Callable[[], None]) -> bool:
        """Run *fn* soon on the trio thread (coalesced); False if the trio run has ended. Never blocks."""
        try:
            self._token.run_sync_soon(fn, idempotent=True)
        except trio.RunFinishedError:
            return False
        return True

    def wake(self) -> None:
        """Unpark every waiting task (each re-checks). Trio thread only."""
        self.wakeups += 1
        self._lot.unpark_all()

    async def park(self) -> None:
        """Wait for the next wake(). A cancel point; takes nothing. Trio thread only."""
        await self._lot.park()

    @property
    def parked(self) -> int:
        return len(self._lot)


def _give_back(queue: MsgQueue, msgs: Iterable[_SyncMsg]) -> None:
    """NAK leased messages that no task will receive (the server redelivers them now) and release them.

    Never blocks. Once a NAK fails (the connection is gone) the rest are only released: the
    server redelivers them after ack_wait anyway.
    """
    msgs = list(msgs)
    nak_unacked(msgs)
    for msg in msgs:
        queue.release(msg)


async def wait_closed(queue: MsgQueue, waker: Waker, timeout: float) -> bool:
    """Park until *queue* is CLOSED or *timeout* seconds pass; True if closed. Trio thread."""
    with trio.move_on_after(timeout):
        while queue.state is not State.CLOSED:
            await waker.park()
    return queue.state is State.CLOSED


async def wait_fetch(queue: MsgQueue, wait: float) -> list[_SyncMsg]:
    """Wait for a one-shot request's *queue* to close (at most *wait*, then a drain) and return
    what it brought: ``_consumer.wait_fetch`` on the trio side, blocking no thread.

    A cancellation raises ``trio.Cancelled`` promptly and stops the queue (its messages are
    NAKed, so the server redelivers them at once). Trio thread.
    """
    waker = Waker()
    waker.sleepers = 1  # for the whole wait: every burst and the end wake it
    queue.on_ready = waker.on_ready
    # The shared sequence (_fetch.fetch_steps), driven by waits on the trio side; a
    # cancellation is thrown in and hands everything back to the server.
    steps = fetch_steps(queue, wait)
    timeout = next(steps)
    while True:
        try:
            closed = await wait_closed(queue, waker, timeout)
        except BaseException as exc:
            steps.throw(exc)
            raise  # (fetch_steps re-raises what is thrown in)
        try:
            timeout = steps.send(closed)
        except StopIteration as done:
            msgs: list[_SyncMsg] = done.value
            return msgs


# ---------------------------------------------------------------------------------- messages


class Msg:
    """A message handed to a trio task: a thin wrapper of :class:`natspull.Msg`.

    ``ack()``, ``nak()``, ``term()`` and ``in_progress()`` return at once (the loop flushes
    them), so they are plain methods; only :meth:`ack_sync`, which waits for the server, is
    ``async``. ``sync`` is the wrapped :class:`natspull.Msg`.
    """

    __slots__ = ("_msg",)

    def __init__(self, msg: _SyncMsg) -> None:
        self._msg = msg

    def __repr__(self) -> str:
        return (
            f"<natspull.trio.Msg subject={self.subject!r} reply={self.reply!r} data={len(self.data)} bytes>"
        )

    @property
    def sync(self) -> _SyncMsg:
        """The wrapped blocking :class:`natspull.Msg`."""
        return self._msg

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def headers(self) -> dict[str, str] | None:
        return self._msg.headers

    @property
    def reply(self) -> str:
        """The ack subject ("" for a core message)."""
        return self._msg.reply

    @property
    def size(self) -> int:
        return self._msg.size

    @property
    def metadata(self) -> Metadata:
        """The JetStream metadata (sequences, delivery count, ...). See :attr:`natspull.Msg.metadata`."""
        return self._msg.metadata

    @property
    def acked(self) -> bool:
        """True once a terminal acknowledgement (ack, nak, term) was sent."""
        return self._msg.acked

    def ack(self) -> None:
        """Acknowledge; returns at once. Raises MsgAlreadyAckedError, ConnectionClosedError."""
        self._msg.ack()

    def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery, now or after *delay* seconds; returns at once."""
        self._msg.nak(delay)

    def in_progress(self) -> None:
        """Reset the server's ack_wait timer; returns at once. May repeat."""
        self._msg.in_progress()

    def term(self, reason: str | None = None) -> None:
        """Tell the server never to redeliver this message; returns at once."""
        self._msg.term(reason)

    async def ack_sync(self, timeout: float = 5.0) -> None:
        """Acknowledge and wait until the server confirms it, at most *timeout* seconds.

        Waits on a worker thread; a cancellation waits for the answer (bounded by *timeout*).
        Raises natspull.TimeoutError (the message may then be acked again),
        MsgAlreadyAckedError, ConnectionClosedError.
        """
        await in_thread(functools.partial(self._msg.ack_sync, timeout))


class Messages:
    """An async iterator over a pull consumer's messages. Get one from :meth:`Consumer.messages`.

    Use it as ``async with consumer.messages() as msgs: async for msg in msgs: ...``;
    entering starts the pulls, leaving stops them. Any number of tasks may receive from it at
    once; each message goes to exactly one. The design is in :mod:`natspull.trio`'s docstring.
    One entered by hand (``__aenter__``) and dropped without ``__aexit__`` is stopped when it is
    garbage-collected, its messages NAKed back, with a ResourceWarning naming where it was created.
    """

    def __init__(self, port: ConsumerPort | OrderedConsumerPort, settings: PullSettings, where: str) -> None:
        """Private: use :meth:`Consumer.messages`. *where* names the consumer in ``repr()``."""
        self._port = port
        self._settings = settings
        self._where = where
        self._created_at = creation_site()
        self._entered = False
        # Set once by __aenter__, on the trio thread.
        self._sync: _SyncMessages | None = None
        self._queue: MsgQueue | None = None
        self._waker: Waker | None = None
        self._previous_on_ready: Callable[[], None] | None = None
        # The queue's on_take, taken over by _attach: the deque takes ahead, so a message counts
        # as handed out (an ordered consumer's position) when a task receives it, in _take.
        self._on_take: Callable[[_SyncMsg], None] | None = None
        # Trio thread only: messages taken from the queue (leased) and not yet handed to a task.
        self._local: deque[_SyncMsg] = deque()
        # Trio thread only: the queue is CLOSED without a terminal error (checked once).
        self._clean_close = False
        self._returned = 0  # trio thread only: taken from the queue, then given back (for stats)
        # Trio thread only: what next_batch() met after its first message, raised by the next call.
        self._deferred: Error | None = None
        # Written by stop()/drain() from any thread; read on the trio thread.
        self._stopped = False
        self._drain_requested = False
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        """Child process after os.fork(): the deque holds the parent's deliveries; drop them.

        Every call then reaches the wrapped queue, which raises ForkedError.
        """
        self._local.clear()
        self._clean_close = False

    def __repr__(self) -> str:
        return f"<natspull.trio.{type(self).__name__} {self._where} {self._state()}>"

    def __del__(self) -> None:
        # Entered and never exited: as natspull.Messages does, stop and hand back what it holds -
        # the trio-side deque too: no task can reach this object (or its deque) any more.
        sync, queue = self._sync, self._queue  # (None before __aenter__, which starts the pulls)
        if sync is None or queue is None or self._stopped or queue.forked is not None:
            return  # (a child's copy after os.fork() is the parent's to stop)
        was_open = not self._drain_requested and queue.state is State.OPEN
        described = repr(self)
        self._stopped = True
        sync.stop()
        _give_back(queue, list(self._local))
        self._local.clear()
        if was_open:
            warnings.warn(
                f"unclosed {described} created at {self._created_at}: stopped when garbage-collected, "
                "its messages NAKed; use 'async with consumer.messages() as msgs:'",
                ResourceWarning,
                stacklevel=1,  # wherever the collection happened; the message names the creation site
                source=self,
            )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Messages:
        """Subscribe and send the first pull (on a worker thread). Enter once."""
        if self._entered:
            raise RuntimeError("a natspull.trio.Messages can be entered only once")
        self._entered = True
        self._attach(*await in_thread(self._start))
        return self

    def _start(self) -> tuple[_SyncMessages, MsgQueue]:
        """Start the pulls (a worker thread: it blocks on the server)."""
        return self._port.start_messages(self._settings)

    def _attach(self, sync: _SyncMessages, queue: MsgQueue) -> None:
        """Trio thread: take over the started iterator's queue (its on_ready hook)."""
        waker = Waker()
        self._previous_on_ready = queue.on_ready
        queue.on_ready = waker.on_ready
        self._on_take, queue.on_take = queue.on_take, None
        self._sync, self._queue, self._waker = sync, queue, waker
        if self._stopped:
            self.stop()
        elif self._drain_requested:
            sync.drain()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """stop(), give the deque back now, and restore ``queue.on_ready``."""
        self.stop()
        telemetry = _otel.current()
        if telemetry is not None:  # the span of the last message this task took (not settled) ends
            telemetry.next_started(trio.lowlevel.current_task())
        if self._queue is not None:
            self._give_back_all()
            if self._previous_on_ready is not None:
                self._queue.on_ready = self._previous_on_ready

    def __aiter__(self) -> Messages:
        return self

    @trio.lowlevel.enable_ki_protection
    async def __anext__(self) -> Msg:
        # next() without its own coroutine when a message is ready and telemetry is off (the
        # common case of ``async for``): the same checkpoints, one coroutine less per message.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            msg = None if self._waker is None or _otel.current() is not None else self._take()
            if msg is None:
                return await self.next()  # (waits; its checkpoint_if_cancelled() is a no-op now)
        except IteratorClosedError:
            raise StopAsyncIteration from None
        await trio.lowlevel.cancel_shielded_checkpoint()
        return Msg(msg)

    # ------------------------------------------------------------------ receiving

    @trio.lowlevel.enable_ki_protection
    async def next(self) -> Msg:
        """The next message.

        Waits on the trio side (no thread) until a message arrives or the iterator ends; bound
        the wait with ``trio.fail_after``/``move_on_after``. A cancellation raises
        ``trio.Cancelled`` here and loses no message. Raises IteratorClosedError once stopped,
        or drained and empty; ConsumerDeletedError, ConnectionClosedError, ... when the
        iterator broke (every later call raises it again); NoHeartbeatError once per missed
        heartbeat with ``error_on_missing_heartbeat=True``. Trio tasks of the run that entered
        the iterator.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waker = self._waker
        if waker is None:
            raise RuntimeError("use 'async with consumer.messages() as msgs:' before receiving")
        telemetry = _otel.current()
        task = None if telemetry is None else trio.lowlevel.current_task()
        if telemetry is not None:
            telemetry.next_started(task)  # this task's previous message's span ends
        waker.sleepers += 1
        try:
            while (msg := self._take()) is None:
                await waker.park()
        finally:
            waker.sleepers -= 1
        if telemetry is not None:
            telemetry.handed_out(msg, task)  # its span: until its ack/nak/term or this task's next next()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return Msg(msg)

    @trio.lowlevel.enable_ki_protection
    async def next_batch(self, max_messages: int, timeout: float | None = None) -> list[Msg]:
        """1 to *max_messages* messages: the next one (waited for as :meth:`next`, at most
        *timeout* seconds if given: natspull.TimeoutError), then those already in the trio-side
        deque or buffered, without waiting for more. An end or a notice met after the first
        message is raised by the next call. Raises as :meth:`next`; ValueError/TypeError for a
        *max_messages* that is not an int >= 1. Trio tasks of the run that entered the iterator.
        """
        max_messages = check_int("max_messages", max_messages, maximum=1_000_000)
        timeout = check_timeout("timeout", timeout)
        await trio.lowlevel.checkpoint_if_cancelled()
        waker = self._waker
        if waker is None:
            raise RuntimeError("use 'async with consumer.messages() as msgs:' before receiving")
        telemetry = _otel.current()
        task = None if telemetry is None else trio.lowlevel.current_task()
        if telemetry is not None:
            telemetry.next_started(task)
        waker.sleepers += 1
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                while (first := self._take()) is None:
                    await waker.park()
        except trio.TooSlowError:
            raise TimeoutError(f"no message within {timeout:g} s") from None
        finally:
            waker.sleepers -= 1
        batch = [first]
        while len(batch) < max_messages:
            try:
                msg = self._take()
            except Error as exc:  # the end or a notice: for the next call
                self._deferred = exc
                break
            if msg is None:
                break
            batch.append(msg)
        if telemetry is not None:
            for msg in batch:
                telemetry.handed_out(msg, task)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return [Msg(msg) for msg in batch]

    def _take(self) -> _SyncMsg | None:
        """Trio thread, no await: hand exactly one message over, or take nothing (None).

        Raises the end (IteratorClosedError or the terminal error) or a notice.
        """
        queue = self._queue
        assert queue is not None
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            raise deferred
        local = self._local
        if self._stopped:
            queue.get_many_nowait(0)  # raises the terminal error, if the iterator broke first
            raise IteratorClosedError("the iterator is stopped")
        if local:
            if not self._clean_close and queue.state is State.CLOSED:
                self._check_broken(queue)
            msg = local.popleft()
        else:
            batch = queue.get_many_nowait(_BURST, lease=True)
            if not batch:
                return None
            msg = batch[0]
            local.extend(batch[1:])
        queue.release(msg)  # from now on a task holds it: it stops counting as pending
        if self._on_take is not None:
            self._on_take(msg)
        return msg

    def _check_broken(self, queue: MsgQueue) -> None:
        """Trio thread, queue CLOSED, deque not empty: a broken iterator gives the deque back and raises.

        The queue keeps the terminal error: asking it for nothing raises that error when the
        queue is empty; a queue closed cleanly (drain finished, stop_after reached) stays clean.
        """
        try:
            queue.get_many_nowait(0)
        except IteratorClosedError:
            pass
        except Error:
            self._give_back_all()
            raise
        self._clean_close = True

    def _give_back_all(self) -> None:
        """Trio thread (or after the run ended): NAK and release the trio-side deque. Never raises.

        What the queue itself still holds is NAKed by ``queue.stop()``.
        """
        queue = self._queue
        if queue is None:
            return
        msgs = list(self._local)
        self._local.clear()
        self._returned += len(msgs)
        _give_back(queue, msgs)
        if self._waker is not None:
            self._waker.wake()

    # ----------------------------------------------------------------- ending

    def stop(self) -> None:
        """End now: every waiting task wakes and sees the end; no new pull is sent.

        Messages not handed to a task yet - in the trio-side deque, buffered, or in flight - are
        NAKed so the server redelivers them at once. Never blocks; any task or thread. This
        method is idempotent, and cuts a running drain short.
        """
        self._stopped = True
        sync, waker = self._sync, self._waker
        if sync is None or waker is None:
            return  # not entered yet: __aenter__ stops it
        sync.stop()
        # The deque belongs to the trio thread: give it back there (coalesced, never blocks).
        if not waker.call_soon(self._give_back_all):
            self._give_back_all()  # the run is over: no task can touch the deque any more

    def drain(self) -> None:
        """Stop pulling and end after handing out everything in the deque, buffered or in flight.

        Returns at once; never blocks; any task or thread. This method is idempotent and does
        nothing after :meth:`stop`.
        """
        self._drain_requested = True
        if self._sync is not None:
            self._sync.drain()

    @property
    def closed(self) -> bool:
        """True once stop() or drain() was called or the iterator broke (it may still hold messages)."""
        return self._stopped or self._drain_requested or (self._sync is not None and self._sync.closed)

    def _state(self) -> str:
        if self._queue is None:
            return "closed" if self._stopped else "not started"
        return "closed" if self._stopped else self._queue.state.value

    def stats(self) -> MessagesStats:
        """A snapshot (:class:`natspull.trio.MessagesStats`), as :meth:`natspull.Messages.stats`:
        delivered (to tasks), buffered (including the trio-side deque), waiters (parked tasks),
        wakeups (trio wake-ups so far), ...; all counters 0 and state ``"not started"`` before
        ``async with``. ``redelivered`` counts messages moved to the trio side. Never blocks;
        any thread, but exact only on the trio thread."""
        if self._sync is None or self._waker is None:
            return MessagesStats(**dict.fromkeys(_COUNTERS, 0), state=self._state())
        stats = self._sync.stats()
        local = len(self._local)
        return MessagesStats(
            **{name: getattr(stats, name) for name in _COUNTERS if name not in _TRIO_SIDE},
            delivered=stats.delivered - local - self._returned,
            buffered=stats.buffered + local,
            waiters=self._waker.parked,
            wakeups=self._waker.wakeups,
            state=self._state(),
        )


@dataclass(frozen=True)
class MessagesStats(_stats.MessagesStats):
    """A snapshot of a :class:`natspull.trio.Messages`: every field of
    :class:`natspull.MessagesStats` (``waiters``: parked tasks), and:

    Attributes:
        wakeups: trio wake-ups so far (at most one per burst of messages).
    """

    wakeups: int


_COUNTERS = tuple(f.name for f in dataclasses.fields(MessagesStats) if f.name != "state")
_TRIO_SIDE = ("delivered", "buffered", "waiters", "wakeups")


class OrderedMessages(Messages):
    """An async iterator over an ordered consumer's messages: :class:`Messages` whose messages
    come strictly in stream order, each once. Get one from :meth:`OrderedConsumer.messages`.

    Leaving ``async with`` (or ``stop()``/``drain()``) deletes its server-side consumer. Its
    messages cannot be acked (OrderedConsumerUsageError); what the deque holds when it stops is
    dropped, not NAKed, and the next read of the ordered consumer continues after the last
    message a task received.
    """

    def __init__(self, ordered: OrderedConsumerPort, settings: PullSettings, where: str) -> None:
        """Private: use :meth:`OrderedConsumer.messages`."""
        super().__init__(ordered, settings, where)
        self._ordered = ordered

    def _start(self) -> tuple[_SyncMessages, MsgQueue]:
        # The queue's on_take advances the consumer's position; _attach takes it over, so that
        # a message counts as handed out when a task receives it.
        return self._ordered.start_messages(self._settings)
