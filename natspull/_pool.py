"""``Consumer.consume()``: a worker pool on the same queue and pull engine as ``messages()``."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ._engine._lease import LeaseKeeper
from ._engine._pull import PullEngine
from ._engine._queue import MsgQueue, State
from ._engine._retry import Backoff
from ._msg import Msg
from ._observe import _otel
from ._observe._events import EventThread
from ._observe._stats import ConsumeStats
from ._transport import _fork
from ._transport._loop import keep_signals_for_main_thread
from ._validate import check_timeout
from .errors import Error, IteratorClosedError

__all__ = ["ConsumeContext"]

log = logging.getLogger("natspull")

_worker_ids = itertools.count(1)


class ConsumeContext:
    """A running ``consume()``: worker threads taking messages from one queue.

    Workers take messages with a lease, so a message counts against
    ``max_messages`` until its handler returns; they exit when the queue ends.
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
        handler: Callable[[Msg], Any],
        error_handler: Callable[[BaseException, Msg], Any] | None,
        workers: int,
        events: EventThread | None = None,
        *,
        lease: LeaseKeeper | None = None,
        retry: Backoff | None = None,
        term_after: int | None = None,
        on_dead_letter: Callable[[Msg, BaseException], Any] | None = None,
    ) -> None:
        """Private: use ``Consumer.consume()`` (arguments already validated).

        *lease* is closed by the last worker to exit. ``retry=None`` NAKs a failed message
        for an immediate redelivery.
        """
        self._engine = engine
        self._events = events
        self._queue = queue
        self._handler = handler
        self._error_handler = error_handler
        self._lease = lease
        self._retry = retry
        self._term_after = term_after
        self._on_dead_letter = on_dead_letter
        # guards errors, _handled, _failed and _terminated; leaf lock; replaced in a forked child
        self._errors_lock = threading.Lock()
        self.errors: list[BaseException] = []  # terminal conditions that ended the workers
        self._handled = 0
        self._failed = 0
        self._terminated = 0  # failed messages terminated after term_after deliveries
        self._workers_left = workers  # the last worker to exit ends the event thread
        self._threads = [
            threading.Thread(target=self._work, name=f"natspull-worker-{next(_worker_ids)}", daemon=True)
            for _ in range(workers)
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
        if self._lease is not None:
            self._lease.after_fork_in_child()

    def _work(self) -> None:
        keep_signals_for_main_thread()
        try:
            self._work_loop()
        finally:
            with self._errors_lock:
                self._workers_left -= 1
                last = self._workers_left == 0
            if last and self._lease is not None:
                self._lease.close()
            if last and self._events is not None:
                self._events.close()

    def _work_loop(self) -> None:
        queue = self._queue
        lease = self._lease
        while True:
            try:
                msg = queue.get(lease=True)
            except IteratorClosedError:
                return
            except Error as exc:  # terminal (sticky: every worker sees the same one)
                with self._errors_lock:
                    if not any(e is exc for e in self.errors):
                        self.errors.append(exc)
                return
            if lease is not None:
                lease.add(msg)
            try:
                telemetry = _otel.current()
                if telemetry is None:
                    self._handler(msg)
                else:  # a CONSUMER span around the call, in the trace of the message's headers
                    telemetry.process(self._handler, msg)
                ok = True
            except Exception as exc:
                ok = False
                self._on_handler_error(exc, msg)
            finally:
                if lease is not None:
                    lease.remove(msg)
                queue.release(msg)
            with self._errors_lock:
                if ok:
                    self._handled += 1
                else:
                    self._failed += 1

    def _on_handler_error(self, exc: Exception, msg: Msg) -> None:
        """A handler raised: error_handler first; then, unless the message was acked, NAK it
        with the retry delay, or terminate it (and call on_dead_letter) after term_after
        deliveries. Worker thread."""
        log.error("natspull: handler failed on %s: %r", msg.subject, exc, exc_info=exc)
        if self._error_handler is not None:
            try:
                self._error_handler(exc, msg)
            except Exception:
                log.exception("natspull: error_handler raised")
        if msg.acked:
            return
        # The delivery count (parsed from the ack subject) only when something depends on it.
        needed = self._retry is not None or self._term_after is not None
        delivered = msg.metadata.num_delivered if needed else 0
        if self._term_after is not None and delivered >= self._term_after:
            self._dead_letter(exc, msg, delivered)
            return
        try:
            msg.nak(None if self._retry is None else self._retry.delay(delivered))
        except Error as nak_error:
            log.warning("natspull: could not NAK %s: %s", msg.subject, nak_error)

    def _dead_letter(self, exc: Exception, msg: Msg, delivered: int) -> None:
        """Delivery *delivered* (>= term_after) failed: on_dead_letter, then +TERM. Worker thread.

        The hook runs first, while the message is still unacknowledged: if the process dies
        in between, the server redelivers it and the hook sees it again (at least once)
        rather than never. A hook that acks, NAKs or terminates the message itself decides
        its fate; natspull then sends nothing.
        """
        if self._on_dead_letter is not None:
            try:
                self._on_dead_letter(msg, exc)
            except Exception:
                log.exception("natspull: on_dead_letter raised")
        if msg.acked:
            return
        # +TERM's reason shows up in the server's terminated advisory. Kept short, and
        # made UTF-8-safe (term() refuses a reason it cannot encode).
        text = f"{type(exc).__name__}: {exc}"[:200].encode("utf-8", "replace").decode()
        reason = f"natspull: handler failed on delivery {delivered} (term_after={self._term_after}): {text}"
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

    def stop(self) -> None:
        """No new handler calls; running handlers finish; buffered messages are NAKed back.

        Never blocks; safe from any thread, a handler or a signal handler. Idempotent.
        """
        self._queue.stop()

    def drain(self) -> None:
        """Stop pulling; every buffered or in-flight message is still handled; then the workers exit.

        Never blocks; same safety as :meth:`stop`. Idempotent; nothing after stop().
        """
        self._queue.drain()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every worker (and the ``on_event`` thread) has exited (after
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
        extensions, workers alive, and the iterator's counters. Never blocks but for leaf
        locks; any thread, also in a child process after os.fork()."""
        with self._errors_lock:
            handled, failed, terminated = self._handled, self._failed, self._terminated
        extensions = 0 if self._lease is None else self._lease.extensions
        alive = sum(thread.is_alive() for thread in self._threads)
        return ConsumeStats(
            **self._queue.stats(),
            **self._engine.stats(),
            handled=handled,
            failed=failed,
            terminated=terminated,
            lease_extensions=extensions,
            workers_alive=alive,
            state=self._queue.state.value,
        )
