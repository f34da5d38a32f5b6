"""What each worker thread of a process is running, in memory the supervisor shares.

A process can die at any instruction (``os._exit`` in a handler, SIGKILL, a segfault), so the
messages in its handlers cannot be reported over the pipe after the fact, and a pipe message per
handler call would cost the supervisor a read per message. Instead the supervisor creates, for
each process it starts, a :class:`HandlerTable`: one row per worker thread in a shared
``RawArray``. A worker thread writes its row before calling the handler (stream sequence, ack
subject, start time) and clears it after; the supervisor reads the rows of a dead process (the
suspects of its death) and of live ones (``--hard-timeout``). No lock spans the processes: each
row is a seqlock (``gen`` odd while its thread writes it), so a reader retries or skips a row
caught mid-write. Start times are ``time.monotonic()``, a system-wide clock on Linux and macOS.

The :class:`SuspectList` goes the other way: the supervisor writes the stream sequences of the
messages that were in handlers when a process died (before it NAKs them), every child reads it,
and :class:`Gate` runs a suspect alone in its process - so the next death while it runs is
attributed to it and to nothing else (``_poison`` counts those deaths).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["REPLY_BYTES", "Gate", "HandlerTable", "Running", "SuspectList"]

REPLY_BYTES = 1024  # an ack subject longer than this is not kept (its message cannot be NAKed early)
SUSPECTS = 256  # the suspect list is a ring of this many stream sequences


class _Row(ctypes.Structure):
    _fields_ = [
        ("gen", ctypes.c_uint64),  # odd while the owning thread writes the row
        ("seq", ctypes.c_uint64),  # stream sequence of the message in the handler; 0: idle
        ("started", ctypes.c_double),  # time.monotonic() when the handler started
        ("reply", ctypes.c_char * REPLY_BYTES),  # the ack subject ("" when too long)
    ]


@dataclass(frozen=True)
class Running:
    """A message in a handler, as the supervisor reads it from a table."""

    seq: int
    reply: str  # "" when the ack subject did not fit
    started: float  # time.monotonic()


class HandlerTable:
    """One row per worker thread of one process. Created by the supervisor, passed to the child
    at spawn (``RawArray`` pickles only then), written by the child's worker threads.

    Writers: each thread owns the row it claimed (:meth:`claim`); readers in any process see a
    consistent row or skip it. Any thread.
    """

    def __init__(self, context: Any, rows: int) -> None:
        self.rows = rows
        self._array: Any = context.RawArray(_Row, rows)
        self._claim_lock = threading.Lock()  # guards _claimed (in the child); leaf lock
        self._claimed = 0
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"rows": self.rows, "_array": self._array}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rows, self._array = state["rows"], state["_array"]
        self._claim_lock = threading.Lock()
        self._claimed = 0
        self._local = threading.local()

    def _row(self) -> Any:
        """The calling thread's row, claimed on first use; None when every row is taken."""
        try:
            return self._local.row
        except AttributeError:
            pass
        with self._claim_lock:
            index = self._claimed
            self._claimed += 1
        row = self._array[index] if index < self.rows else None
        self._local.row = row
        return row

    def begin(self, seq: int, reply: str) -> Any:
        """Mark the calling thread as running the message *seq* (ack subject *reply*) until
        :meth:`end` with what this returns. Never blocks."""
        row = self._row()
        if row is None:  # more threads than rows (never with consume(workers=rows))
            return None
        encoded = reply.encode()
        row.gen += 1
        row.seq = seq
        row.started = time.monotonic()
        row.reply = encoded if len(encoded) < REPLY_BYTES else b""
        row.gen += 1
        return row

    def end(self, row: Any) -> None:
        """The calling thread's handler returned (or raised). Never blocks."""
        if row is not None:
            row.gen += 1
            row.seq = 0
            row.gen += 1

    @contextmanager
    def running(self, seq: int, reply: str) -> Iterator[None]:
        """:meth:`begin` and :meth:`end` around the block."""
        row = self.begin(seq, reply)
        try:
            yield
        finally:
            self.end(row)

    def snapshot(self) -> list[Running]:
        """The messages in handlers now (or when the process died). Any process."""
        found = []
        for row in self._array:
            for _ in range(3):  # a row being written is retried, then skipped
                gen = row.gen
                if gen % 2:
                    continue
                seq, started, reply = row.seq, row.started, row.reply
                if row.gen == gen:
                    if seq:
                        found.append(Running(int(seq), reply.decode(errors="replace"), float(started)))
                    break
        return found


class SuspectList:
    """A ring of stream sequences the supervisor suspects of killing a process; read by every child.

    ``add`` from the supervisor's main thread only (one writer); ``contains`` from any thread of
    any process (a reader that races a write sees the list before or after it).
    """

    def __init__(self, context: Any) -> None:
        self._array: Any = context.RawArray(ctypes.c_uint64, SUSPECTS + 1)  # [0]: entries written
        self._cached_count = -1
        self._cached: frozenset[int] = frozenset()

    def __getstate__(self) -> dict[str, Any]:
        return {"_array": self._array}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._array = state["_array"]
        self._cached_count = -1
        self._cached = frozenset()

    def add(self, seq: int) -> None:
        count = int(self._array[0])
        self._array[1 + count % SUSPECTS] = seq
        self._array[0] = count + 1  # published after the entry

    def contains(self, seq: int) -> bool:
        count = int(self._array[0])
        if count != self._cached_count:  # rebuilt only after the supervisor added one
            self._cached = frozenset(int(s) for s in self._array[1:] if s)
            self._cached_count = count
        return seq in self._cached


class Gate:
    """Runs a suspect message alone in its process: it waits for the running handlers to end
    and keeps new ones from starting until it is done. Any worker thread."""

    def __init__(self) -> None:
        # guards the three fields below; leaf lock, never held across a handler call
        self._cond = threading.Condition(threading.Lock())
        self._running = 0  # ordinary handlers running
        self._alone = False  # a suspect is running
        self._waiting = 0  # suspects waiting to run alone (ordinary handlers let them go first)

    def enter(self, alone: bool) -> None:
        """Block until a handler (alone when *alone*) may start; then :meth:`leave` after it."""
        with self._cond:
            if alone:
                self._waiting += 1
                while self._alone or self._running:
                    self._cond.wait()
                self._waiting -= 1
                self._alone = True
            else:
                while self._alone or self._waiting:
                    self._cond.wait()
                self._running += 1

    def leave(self, alone: bool) -> None:
        """The handler :meth:`enter` let start is done. Never blocks for long."""
        with self._cond:
            if alone:
                self._alone = False
            else:
                self._running -= 1
            if self._alone or self._waiting or alone:  # someone may be waiting
                self._cond.notify_all()

    def run(self, alone: bool, call: Callable[[], None]) -> None:
        """Call *call* between :meth:`enter` and :meth:`leave`."""
        self.enter(alone)
        try:
            call()
        finally:
            self.leave(alone)
