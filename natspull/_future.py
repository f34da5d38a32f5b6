"""A ``concurrent.futures.Future`` that is one object until something waits on it.

``publish_async`` returns a future per message, and a publishing thread keeps thousands
alive. The standard library's future makes a ``threading.Condition`` (a lock, a deque and
five bound methods) and two lists in ``__init__``: about ten objects the cyclic garbage
collector walks again and again while the futures live, a third of the CPU of 8 threads
publishing (benchmarks/README.md). :class:`LeanFuture` is a true subclass - ``isinstance``,
``concurrent.futures.wait()``, ``as_completed()`` and ``asyncio.wrap_future()`` take it - that
makes the condition and the lists only when a thread waits on a future not yet done, or a
callback or a ``wait()`` is added to one.

It is created running (it cannot be cancelled: a sent publish cannot be taken back) and is
completed once, by natspull. The base class's methods and the standard library's ``wait()``
reach ``_condition``, ``_waiters`` and ``_done_callbacks`` only through the condition (a
property here), so they work unchanged. Completion writes the outcome, then the state, then
looks for a condition, without a lock; a waiter makes the condition (under ``_MAKING``), then
takes it and reads the state. Each side writes before it reads, so one of them sees the other:
either the completing thread finds the condition and wakes the waiter under it, or the waiter
finds the state FINISHED and does not wait. CPython 3.9-3.13 share this ``Future``; the
tests drive every method, ``wait()``, ``as_completed()`` and ``wrap_future()`` on each.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import FINISHED, RUNNING
from typing import Any, TypeVar

__all__ = ["LeanFuture"]

_T = TypeVar("_T")

# Guards the one-time making of a future's condition (any future's); a leaf, held for an
# attribute check and an assignment only.
_MAKING = threading.Lock()


class LeanFuture(Future[_T]):
    """A running, uncancellable ``concurrent.futures.Future`` whose condition and lists are
    made on first need. Its owner completes it once with :meth:`set_result` or
    :meth:`set_exception` from any thread; anyone may wait on it from any thread."""

    # Deliberately not Future.__init__: that makes the condition this class defers.
    def __init__(self) -> None:
        self._state = RUNNING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._made: threading.Condition | None = None  # the condition, once made

    @property  # the base's attribute, made on first use
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        made = self._made
        if made is None:
            with _MAKING:
                made = self._made
                if made is None:
                    self._waiters: list[Any] = []  # (before the condition is visible)
                    self._done_callbacks: list[Any] = []
                    made = self._made = threading.Condition()
        return made

    # The state only goes RUNNING -> FINISHED, once: no lock needed to read it.
    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state == FINISHED

    def result(self, timeout: float | None = None) -> _T:
        if self._state == FINISHED and self._exception is None:
            return self._result  # type: ignore[no-any-return]
        return super().result(timeout)  # waits (making the condition), or raises

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def set_running_or_notify_cancel(self) -> bool:
        raise RuntimeError("a LeanFuture is created running")

    def set_result(self, result: _T) -> None:
        """Complete with *result*. Any thread; once (InvalidStateError after that)."""
        self._finish(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        """Complete with *exception*. Any thread; once (InvalidStateError after that)."""
        self._finish(None, exception)

    def _finish(self, result: Any, exception: BaseException | None) -> None:
        if self._state == FINISHED:
            raise InvalidStateError(f"{self._state}: {self!r}")
        self._result = result
        self._exception = exception
        self._state = FINISHED  # (the outcome before the state; the state before the look)
        condition = self._made
        if condition is None:
            return  # nobody waits, no callback: a waiter from now on sees FINISHED
        with condition:
            for waiter in self._waiters:
                if exception is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
