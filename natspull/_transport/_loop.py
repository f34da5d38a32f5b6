"""The background event-loop thread: the only thread that touches nats-py.

Each :class:`~natspull.Client` owns one :class:`LoopThread`. User threads hand
work to it in exactly two ways:

* :meth:`LoopThread.run` - submit a coroutine and block on a
  ``concurrent.futures.Future`` with a timeout (management calls, connect,
  close, ``ack_sync``);
* :meth:`LoopThread.call_soon` - schedule a plain callback and return at once
  (ack/publish flushes, re-pulls, stop/drain); never blocks, so it is safe
  from signal handlers and from inside locks.

Blocking calls made *from* the loop thread would deadlock (the loop waits on
itself), so :meth:`run` rejects them with a precise error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import ConnectionClosedError, TimeoutError

__all__ = ["LoopThread", "keep_signals_for_main_thread"]

# Asynchronous signals a program may handle (shutdown_on_signals, Ctrl-C, reload).
_PROCESS_SIGNALS = {
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
}


def keep_signals_for_main_thread() -> None:
    """Block the usual process signals in the calling natspull thread.

    Python runs signal handlers on the main thread only, and only once that
    thread gets back to the interpreter. If the kernel hands a process signal
    to another thread while the main thread sleeps in a lock wait (``next()``,
    ``ConsumeContext.wait()``), nothing wakes the main thread and the handler
    (e.g. drain on SIGTERM) never runs. With the signals blocked in every
    thread natspull starts, the kernel delivers them to the main thread.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)


T = TypeVar("T")

_ids = itertools.count(1)

#: Bound on the wait for a new loop thread to run its loop (it normally takes microseconds).
START_TIMEOUT = 10.0


class LoopThread:
    """One asyncio event loop running forever in one daemon thread ``natspull-loop-N``.

    The thread is a daemon so that a script which never closes its client can
    still exit; :class:`~natspull.Client` registers an ``atexit`` hook that
    flushes and stops it first.
    """

    def __init__(self, start_timeout: float = START_TIMEOUT) -> None:
        """Start the thread and wait until its loop runs.

        Blocks on: the thread's start-up, at most *start_timeout* seconds. Raises
        natspull.TimeoutError when the loop does not run in time (the thread is left to end
        by itself), or the error that stopped it from starting. Any thread.
        """
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"natspull-loop-{next(_ids)}", daemon=True)
        # Resolved from inside the loop once it runs, or with the start-up error (see _run).
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread.start()
        self._ident = self._thread.ident  # (set once start() returns; read per message below)
        try:
            self._ready.result(start_timeout)
        except concurrent.futures.TimeoutError:
            self.call_soon(self.loop.stop)
            raise TimeoutError(f"the natspull loop thread did not start within {start_timeout:g} s") from None

    def in_loop_thread(self) -> bool:
        """True when called on the loop thread itself."""
        # Not by thread id: ids are reused once the loop thread has ended.
        return threading.current_thread() is self._thread

    def check_not_in_loop(self, what: str) -> None:
        """Raise RuntimeError if a blocking call named *what* is made on the loop thread."""
        # The id first (one C call; every message of an iterator passes here), the thread
        # object only when it matches: an id may be reused once the loop thread has ended.
        if threading.get_ident() == self._ident and self.in_loop_thread():
            raise RuntimeError(
                f"{what} blocks and cannot be called from the natspull event-loop thread "
                f"({self._thread.name}); call it from another thread"
            )

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str = "operation") -> T:
        """Run *coro* on the loop and block the calling thread until it finishes.

        Blocks on: the coroutine, at most *timeout* seconds (None: no bound).
        Raises: natspull.TimeoutError when the time runs out (the coroutine is
        cancelled), ConnectionClosedError when the loop has stopped,
        RuntimeError when called from the loop thread, and whatever the
        coroutine raises. Any thread but the loop thread.
        """
        if self.in_loop_thread():
            coro.close()
            self.check_not_in_loop(what)
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # loop closed
            coro.close()
            raise ConnectionClosedError("the connection is closed") from None
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if fut.done():  # the coroutine's own timeout, with its own message
                raise
            fut.cancel()
            raise TimeoutError(f"{what} timed out after {timeout:g} s") from None
        except concurrent.futures.CancelledError:
            raise ConnectionClosedError("the connection is closed") from None

    def call_soon(self, fn: Callable[..., object], *args: object) -> bool:
        """Schedule ``fn(*args)`` on the loop; never blocks. Returns False if the loop is gone.

        Safe from any thread, including signal handlers and the loop thread.
        """
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        return True

    def _prepare(self) -> None:
        """Loop thread, before the loop runs: signals stay with the main thread; bind the loop."""
        keep_signals_for_main_thread()
        asyncio.set_event_loop(self.loop)

    def _set_ready(self) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def stop(self, timeout: float) -> None:
        """Stop the loop, cancel what is left on it and join the thread. Idempotent."""
        if self._thread.is_alive():
            self.call_soon(self.loop.stop)
            if not self.in_loop_thread():
                self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._prepare()
            # The first callback the loop runs: the loop is running from here on.
            self.loop.call_soon(self._set_ready)
        except BaseException as exc:
            self._ready.set_exception(exc)
            self.loop.close()
            return
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
