"""``Consumer.consume()``: a worker pool on the same queue and pull engine as ``messages()``.

A worker takes a message (or, with ``batch``, up to that many) with a lease, calls the
handler, and settles what the handler left: :meth:`ConsumeContext._call` is the one path
every mode goes through (lease, watchdog, handler, settle, counters). The modes differ only
in how a worker takes its next call:

* plain: ``queue.get(lease=True)``;
* ``batch``: ``queue.get_batch(batch, lease=True, gather=batch_wait)``;
* ``key``: ``queue.get(lease=True)``, then :class:`~natspull._engine._keyorder.KeyOrder`
  says whether the message runs now, is held for its key or is sent back; a worker that
  finishes a key's message goes on with the key's next held one itself (no dispatcher
  thread, no hand-off between workers).
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ._engine._keyorder import KeyOrder
from ._engine._lease import LeaseKeeper
from ._engine._pull import PullEngine
from ._engine._queue import MsgQueue, State
from ._engine._retry import Backoff
from ._engine._watchdog import Call, Watchdog
from ._msg import Msg, nak_delay
from ._observe import _otel
from ._observe._events import ConsumerEvent, EventThread
from ._observe._stats import ConsumeStats
from ._transport import _fork
from ._transport._loop import keep_signals_for_main_thread
from ._validate import check_timeout
from .errors import Error, IteratorClosedError, TimeoutError

__all__ = ["ConsumeContext", "ConsumeOptions"]

log = logging.getLogger("natspull")

_worker_ids = itertools.count(1)

#: How often a key-ordered pool looks for redeliveries it waited for too long (KeyOrder.expire).
KEY_SWEEP = 1.0


@dataclass(frozen=True)
class ConsumeOptions:
    """``consume()``'s worker-side options, validated once by ``Consumer.consume()``.

    ``acks`` is False for consumers that take no acks (``AckPolicy.NONE``, ordered readers):
    nothing is then settled, counted unsettled or taken back. ``explicit`` is True for
    ``AckPolicy.EXPLICIT``, where each message must be settled on its own (with
    ``AckPolicy.ALL`` one ack settles those before it: nothing is counted unsettled).
    """

    handler: Callable[[Any], Any]
    workers: int = 1
    error_handler: Callable[[BaseException, Msg], Any] | None = None
    retry: Backoff | None = None
    term_after: int | None = None
    on_dead_letter: Callable[[Msg, BaseException], Any] | None = None
    acks: bool = True
    explicit: bool = True
    auto_ack: bool = False
    handler_timeout: float | None = None
    batch: int | None = None
    batch_wait: float = 0.0
    key: Callable[[Msg], Hashable] | None = None
    key_grace: float = 30.0  # how long past its due time a key waits for a redelivery


class ConsumeContext:
    """A running ``consume()``: worker threads taking messages from one queue.

    Workers take messages with a lease, so a message counts against
    ``max_messages`` until its handler returns (a message held for its key stops
    counting: see ``_keyorder``); they exit when the queue ends.
    While a handler runs, a :class:`~natspull._engine._lease.LeaseKeeper` (if any) keeps the
    message's server-side ack timer alive. A failed handler's message is NAKed with the
    *retry* backoff, or terminated and given to *on_dead_letter* once it was delivered
    *term_after* times.

    Unlike a dropped :class:`~natspull.Messages`, a dropped context is never
    collected: its worker threads refer to it and run until :meth:`stop`,
    :meth:`drain` (or leaving ``with``) or a terminal error ends the queue, the
    way a running ``threading.Thread`` is not stopped by dropping it.
    """

    def __init__(
        self,
        engine: PullEngine,
        queue: MsgQueue,
        options: ConsumeOptions,
        events: EventThread | None = None,
        *,
        lease: LeaseKeeper | None = None,
    ) -> None:
        """Private: use ``Consumer.consume()`` (options already validated).

        *lease* is closed by the last worker to exit.
        """
        self._engine = engine
        self._events = events
        self._queue = queue
        self._options = options
        self._handler = options.handler
        self._lease = lease
        self._stopping = False  # stop() was called: no new handler calls, held messages go back
        # guards errors and every counter below; leaf lock; replaced in a forked child
        self._errors_lock = threading.Lock()
        # key=: a worker takes a message and registers it with KeyOrder under this lock, so
        # messages arrive in the order they left the queue (a worker preempted between the two
        # let a later message of the key run first). Held across the queue's wait, at most
        # KEY_SWEEP; taken before the queue's lock, never the other way.
        self._take_lock = threading.Lock()
        self.errors: list[BaseException] = []  # terminal conditions that ended the workers
        self._handled = 0
        self._failed = 0
        self._terminated = 0  # failed messages terminated after term_after deliveries
        self._unsettled = 0  # messages a handler returned without settling (auto_ack=False)
        self._unsettled_logged = False
        self._auto_acked = 0
        self._timed_out = 0
        self._late_settles = 0
        self._workers_left = options.workers  # the last worker to exit ends the event thread
        self._keys = (
            KeyOrder(queue.flow.max_msgs, options.key_grace, queue.flow.max_bytes)
            if options.key is not None
            else None
        )
        self._next_sweep = time.monotonic() + KEY_SWEEP  # key mode; read and written without a lock
        self._watchdog = (
            Watchdog(options.handler_timeout, self._on_timeout)
            if options.handler_timeout is not None
            else None
        )
        target = self._work_keyed if self._keys is not None else self._work_loop
        self._threads = [
            threading.Thread(
                target=self._work, args=(target,), name=f"natspull-worker-{next(_worker_ids)}", daemon=True
            )
            for _ in range(options.workers)
        ]
        for thread in self._threads:
            thread.start()
        _fork.track(self)
        _otel.watch(self, engine.stream, engine.consumer)

    def __repr__(self) -> str:
        engine = self._engine
        return f"<natspull.ConsumeContext {engine.stream}/{engine.consumer} {self._queue.state.value}>"

    def __enter__(self) -> ConsumeContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._queue.forked is not None:  # a forked child leaving the parent's block: see Client.__exit__
            return
        self.drain()
        self.wait()

    def _after_fork_in_child(self) -> None:
        """Child process after os.fork(), single-threaded: a worker may have held the lock.

        The workers did not survive the fork; the queue refuses every call (ForkedError).
        """
        self._errors_lock = threading.Lock()
        self._take_lock = threading.Lock()
        if self._lease is not None:
            self._lease.after_fork_in_child()
        if self._watchdog is not None:
            self._watchdog.after_fork_in_child()
        if self._keys is not None:
            self._keys.after_fork_in_child()

    # ---------------------------------------------------------------- workers

    def _work(self, target: Callable[[], None]) -> None:
        keep_signals_for_main_thread()
        try:
            target()
        finally:
            with self._errors_lock:
                self._workers_left -= 1
                last = self._workers_left == 0
            if last:
                self._last_worker_out()

    def _last_worker_out(self) -> None:
        """The last worker exits: send held messages back in order; end the helpers."""
        if self._keys is not None:
            for msg, delay in self._keys.release_all(time.monotonic()):
                if self._lease is not None:
                    self._lease.remove(msg)
                if not msg.acked:
                    try:
                        msg.nak(delay)
                    except Error:
                        break  # the connection is gone: the server redelivers after ack_wait
        if self._watchdog is not None:
            self._watchdog.close()
        if self._lease is not None:
            self._lease.close()
        if self._events is not None:
            self._events.close()

    def _take(self) -> list[Msg] | None:
        """The next call's messages (blocking), or None when the workers are to exit."""
        options = self._options
        try:
            if options.batch is None:
                return [self._queue.get(lease=True)]
            return self._queue.get_batch(options.batch, lease=True, gather=options.batch_wait)
        except IteratorClosedError:
            return None
        except Error as exc:  # terminal (sticky: every worker sees the same one)
            self._record_error(exc)
            return None

    def _record_error(self, exc: Error) -> None:
        with self._errors_lock:
            if not any(e is exc for e in self.errors):
                self.errors.append(exc)

    def _work_loop(self) -> None:
        while True:
            msgs = self._take()
            if msgs is None:
                return
            self._call(msgs)

    def _work_keyed(self) -> None:
        keys = self._keys
        key = self._options.key
        assert keys is not None and key is not None
        queue = self._queue
        while True:
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + KEY_SWEEP
                self._sweep(keys, now)
            if not self._take_lock.acquire(timeout=KEY_SWEEP):
                continue
            try:
                msg = queue.get(KEY_SWEEP, lease=True)
                try:
                    name = key(msg)
                    seq = msg.metadata.sequence.stream
                    hash(name)
                except Exception as exc:  # the key function failed: a failure of this message
                    failed: Exception | None = exc
                else:
                    failed = None
                    arrival = keys.arrive(name, seq, msg, time.monotonic())
            except TimeoutError:
                continue
            except IteratorClosedError:
                return
            except Error as exc:
                self._record_error(exc)
                return
            finally:
                self._take_lock.release()
            if failed is not None:
                self._call([msg], failed=failed)
                continue
            if arrival.run:
                self._run_key(keys, name, msg)
                continue
            queue.release(msg, let_go=True)  # held or sent back: no longer in the pull window
            if arrival.held:
                if arrival.replaced is not None and self._lease is not None:
                    self._lease.remove(arrival.replaced)
                if self._lease is not None:
                    self._lease.add(msg)
            else:
                try:
                    msg.nak(arrival.delay)
                except Error as exc:
                    log.warning("natspull: could not send %s back: %s", msg.subject, exc)

    def _sweep(self, keys: KeyOrder, now: float) -> None:
        given_up, runnable = keys.expire(now, self._going_on())
        for name, seq in given_up:
            log.warning(
                "natspull: key %r: stream sequence %d did not come back in time; the key goes on without it",
                name,
                seq,
            )
        for name, msg in runnable:
            self._run_key(keys, name, msg, held=True)

    def _going_on(self) -> bool:
        """False once the pool stops handing out (stop(), a terminal error)."""
        return not self._stopping and self._queue.error is None

    def _run_key(self, keys: KeyOrder, name: Hashable, msg: Msg, *, held: bool = False) -> None:
        """Run *msg* of key *name*, then the key's held messages while they may run."""
        current: Msg | None = msg
        while current is not None:
            seq = current.metadata.sequence.stream
            retry_in = self._call([current], released=held, key=name)
            held = True  # the rest comes from the hold (already out of the pull window)
            current = keys.finish(name, seq, retry_in, time.monotonic(), self._going_on())

    # ------------------------------------------------------------------- call

    def _call(
        self,
        msgs: list[Msg],
        *,
        released: bool = False,
        key: Hashable = None,
        failed: Exception | None = None,
    ) -> float | None:
        """Call the handler on *msgs* (one message, or a batch) and settle what it left.

        *released*: the messages no longer count in the queue's pull window (held for a key).
        *failed*: do not call the handler; the call failed with this. Returns, for a single
        message, the delay after which it comes again (it was NAKed), else None. Worker thread.
        """
        options = self._options
        lease = self._lease
        if lease is not None:
            for msg in msgs:
                lease.add(msg)
        watch = self._watchdog.start(msgs) if self._watchdog is not None and failed is None else None
        error: Exception | None = failed
        if failed is None:
            try:
                telemetry = _otel.current()
                if options.batch is not None:
                    self._handler(msgs)
                elif telemetry is None:
                    self._handler(msgs[0])
                else:  # a CONSUMER span around the call, in the trace of the message's headers
                    telemetry.process(self._handler, msgs[0])
            except Exception as exc:
                error = exc
        timed_out = watch is not None and self._watchdog is not None and self._watchdog.finish(watch)
        try:
            if timed_out:
                pass  # taken back by the watchdog: nothing to settle
            elif error is not None:
                self._on_handler_error(error, msgs, key)
            elif options.acks:
                self._settle_returned(msgs)
        finally:
            if lease is not None:
                for msg in msgs:
                    lease.remove(msg)
            if not released:
                for msg in msgs:
                    self._queue.release(msg, let_go=True)
        with self._errors_lock:
            if error is None:
                self._handled += len(msgs)
            else:
                self._failed += len(msgs)
        return nak_delay(msgs[0]) if len(msgs) == 1 else None

    def _settle_returned(self, msgs: list[Msg]) -> None:
        """The handler returned: ack what it left (auto_ack), or count it unsettled. Worker thread."""
        left = [msg for msg in msgs if not msg.acked]
        if not left:
            return
        options = self._options
        if not options.auto_ack and not options.explicit:
            return
        if options.auto_ack:
            acked = 0
            for msg in left:
                try:
                    msg.ack()
                    acked += 1
                except Error as exc:  # settled meanwhile, or the connection is gone
                    log.debug("natspull: could not auto-ack %s: %s", msg.subject, exc)
            with self._errors_lock:
                self._auto_acked += acked
            return
        with self._errors_lock:
            self._unsettled += len(left)
            first, self._unsettled_logged = not self._unsettled_logged, True
        if first:
            handler = self._handler
            log.warning(
                "natspull: %s/%s: handler %s returned without acknowledging %s; its lease stops and the "
                "server redelivers it after ack_wait (ack, nak or term it, or pass auto_ack=True). "
                "Logged once per consume(); ConsumeStats.unsettled counts them",
                self._engine.stream,
                self._engine.consumer,
                getattr(handler, "__qualname__", repr(handler)),
                left[0].subject,
            )

    def _on_handler_error(self, exc: Exception, msgs: list[Msg], key: Hashable = None) -> None:
        """A handler raised: error_handler first (for each message a batch left unsettled); then, unless the
        message was settled, NAK it with the retry delay, or terminate it (and call
        on_dead_letter) after term_after deliveries. Worker thread."""
        what = msgs[0].subject if len(msgs) == 1 else f"a batch of {len(msgs)} from {msgs[0].subject}"
        log.error("natspull: handler failed on %s: %r", what, exc, exc_info=exc)
        options = self._options
        for msg in msgs:
            if options.error_handler is not None and (options.batch is None or not msg.acked):
                try:
                    options.error_handler(exc, msg)
                except Exception:
                    log.exception("natspull: error_handler raised")
            if msg.acked or not options.acks:
                continue
            # The delivery count (parsed from the ack subject) only when something depends on it.
            needed = options.retry is not None or options.term_after is not None
            delivered = msg.metadata.num_delivered if needed else 0
            if needed and self._keys is not None:  # deliveries sent back for a full hold did not fail
                delivered = max(delivered - self._keys.sent_back_times(key, msg.metadata.sequence.stream), 1)
            if options.term_after is not None and delivered >= options.term_after:
                self._dead_letter(exc, msg, delivered)
                continue
            try:
                msg.nak(None if options.retry is None else options.retry.delay(delivered))
            except Error as nak_error:
                log.warning("natspull: could not NAK %s: %s", msg.subject, nak_error)

    def _dead_letter(self, exc: Exception, msg: Msg, delivered: int) -> None:
        """Delivery *delivered* (>= term_after) failed: on_dead_letter, then +TERM. Worker thread.

        The hook runs first, while the message is still unacknowledged: if the process dies
        in between, the server redelivers it and the hook sees it again (at least once)
        rather than never. A hook that acks, NAKs or terminates the message itself decides
        its fate; natspull then sends nothing.
        """
        options = self._options
        if options.on_dead_letter is not None:
            try:
                options.on_dead_letter(msg, exc)
            except Exception:
                log.exception("natspull: on_dead_letter raised")
        if msg.acked:
            return
        # +TERM's reason shows up in the server's terminated advisory. Kept short, and
        # made UTF-8-safe (term() refuses a reason it cannot encode).
        text = f"{type(exc).__name__}: {exc}"[:200].encode("utf-8", "replace").decode()
        reason = f"natspull: handler failed on delivery {delivered} (term_after={options.term_after}): {text}"
        try:
            try:
                msg.term(reason)
            except ValueError:  # a server with a tiny max_payload: terminate without the reason
                msg.term()
        except Error as term_error:
            log.warning("natspull: could not terminate %s: %s", msg.subject, term_error)
            return
        log.warning("natspull: terminated %s after %d deliveries", msg.subject, delivered)
        with self._errors_lock:
            self._terminated += 1

    # --------------------------------------------------------------- watchdog

    def _on_timeout(self, call: Call) -> None:
        """A handler call ran past handler_timeout: NAK its unsettled messages with the retry
        backoff (a later ack or NAK of the handler is ignored and counted), let their leases
        go, report ``handler_timeout``. Watchdog thread."""
        options = self._options
        taken = 0
        for msg in call.msgs:
            if self._lease is not None:
                self._lease.remove(msg)
            if not options.acks:
                continue
            delivered = msg.metadata.num_delivered if options.retry is not None else 1
            delay = None if options.retry is None else options.retry.delay(delivered)
            if msg.take_back(delay, self._late_settle):
                taken += 1
        with self._errors_lock:
            self._timed_out += 1
        first = call.msgs[0]
        description = (
            f"handler on {first.subject}{f' (and {len(call.msgs) - 1} more)' if len(call.msgs) > 1 else ''} "
            f"ran past handler_timeout={options.handler_timeout:g} s on {call.thread.name}; "
            f"{taken} message(s) NAKed for redelivery"
        )
        frame = sys._current_frames().get(call.thread.ident or 0)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(the thread has ended)\n"
        engine = self._engine
        log.warning(
            "natspull: %s/%s: handler_timeout (%s); its stack:\n%s",
            engine.stream,
            engine.consumer,
            description,
            stack.rstrip("\n"),
        )
        if self._events is not None:
            self._events.put(
                ConsumerEvent("handler_timeout", engine.stream, engine.consumer, description=description)
            )

    def _late_settle(self) -> None:
        """A handler acked or NAKed a message taken back past handler_timeout. Any thread."""
        with self._errors_lock:
            self._late_settles += 1

    # ----------------------------------------------------------------- public

    def stop(self) -> None:
        """No new handler calls; running handlers finish; buffered messages are NAKed back
        (messages held for their key too, in stream order, after the one each key waits for).

        Never blocks; safe from any thread, a handler or a signal handler. Idempotent.
        """
        self._stopping = True
        self._queue.stop()

    def drain(self) -> None:
        """Stop pulling; every buffered or in-flight message is still handled; then the workers exit.

        With ``key=``, a key waiting for a redelivery when the pulls have ended sends its held
        messages back in order (as :meth:`stop`). Never blocks; same safety as :meth:`stop`.
        Idempotent; nothing after stop().
        """
        self._queue.drain()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every worker (and the ``on_event`` and watchdog threads) has exited (after
        stop/drain, ``stop_after`` or a terminal error).

        Returns False if *timeout* passed first. Re-raises the first terminal
        error (ConsumerDeletedError, ConnectionClosedError, ...) once the
        workers are gone. Any thread but a worker's own. Raises ForkedError in
        a child process after os.fork() (as stop() and drain() do).
        """
        self._queue.check_fork()
        timeout = check_timeout("timeout", timeout)
        if threading.current_thread() in self._threads:
            raise RuntimeError("wait() called from a natspull worker would wait for itself")
        deadline = None if timeout is None else time.monotonic() + timeout
        threads = list(self._threads)
        if self._events is not None:
            threads.append(self._events.thread)  # ends after the last worker
        if self._watchdog is not None:
            threads.append(self._watchdog.thread)
        for thread in threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
            if thread.is_alive():
                return False
        if self.errors:
            raise self.errors[0]
        return True

    @property
    def closed(self) -> bool:
        """True once stop() or drain() was called or a terminal error ended the consumption."""
        return self._queue.state is not State.OPEN

    def stats(self) -> ConsumeStats:
        """A snapshot (:class:`natspull.ConsumeStats`): handled, failed, terminated, lease
        extensions, workers alive, unsettled, timeouts, held messages, and the iterator's
        counters. Never blocks but for leaf locks; any thread, also in a child process after
        os.fork()."""
        with self._errors_lock:
            handled, failed, terminated = self._handled, self._failed, self._terminated
            unsettled, auto_acked = self._unsettled, self._auto_acked
            timed_out, late = self._timed_out, self._late_settles
        extensions = 0 if self._lease is None else self._lease.extensions
        alive = sum(thread.is_alive() for thread in self._threads)
        held, sent_back = self._keys.stats()[:2] if self._keys is not None else (0, 0)
        return ConsumeStats(
            **self._queue.stats(),
            **self._engine.stats(),
            handled=handled,
            failed=failed,
            terminated=terminated,
            lease_extensions=extensions,
            workers_alive=alive,
            auto_acked=auto_acked,
            unsettled=unsettled,
            timed_out=timed_out,
            stuck=0 if self._watchdog is None else self._watchdog.stuck,
            late_settles=late,
            held=held,
            sent_back=sent_back,
            state=self._queue.state.value,
        )
