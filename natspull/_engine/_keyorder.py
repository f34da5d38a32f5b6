"""``consume(key=...)``: one message of a key at a time, in stream order, retries included.

Plain data under one leaf lock; no threads, no network: the pool asks and then acts (NAKs,
leases, queue releases) after the lock is released. Unit-testable without a server.

Per key, the pool keeps:

* ``running``: one of its messages is in a handler;
* ``held``: its later messages, taken from the queue while the key was busy, sorted by
  stream sequence (kept leased with ``+WPI`` by the pool);
* ``out``: the stream sequences of its messages that went back to the server to come again
  (a failed handler's NAK with the retry backoff, a handler's own NAK, or a message sent back
  because the hold was full), each with when it is due and when to stop waiting for it.

**The rule.** The next message of a key to handle is the smallest stream sequence among
``held`` and ``out``; a key handles a held message only when no smaller sequence is out.
So after a failure the key waits for the redelivery of the failed message, which is handled
(the new delivery replaces nothing: the old one was NAKed) before any later message of the
key; later messages that arrive meanwhile are held. Redeliveries may arrive in any order:
each finds its place by sequence.

**Memory.** At most ``limit`` messages (the pool passes ``max_messages``), and with
``limit_bytes`` at most that many bytes (``max_bytes``), are held over all keys. Held messages
no longer count against the pull window, so pulls go on while keys wait (the awaited
redeliveries must be able to arrive): buffered + in handlers stay within ``max_messages``
(``max_bytes``) and held within another ``max_messages`` (``max_bytes``). A message that finds
the hold full while its key must wait is sent back (NAKed with a delay that brings it back
after the message its key waits for) and its sequence joins ``out``: order is kept, memory is
not spent. ``out`` holds ints; each is a message unacknowledged on the server, so it is bounded
by the consumer's ``max_ack_pending``. A key with nothing running, held or out is forgotten.

**Giving up.** A sequence out for longer than its delay plus *grace* (it was redelivered to
another process sharing the consumer, reached ``max_deliver``, was removed from the stream)
is given up on, so that its key goes on (:meth:`KeyOrder.expire`).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field

from .._msg import Msg

__all__ = ["Arrival", "KeyOrder"]

#: A message sent back because the hold was full comes back this long after the message its
#: key waits for is due.
SEND_BACK_PAD = 0.5
#: On the way out (stop, the end of a drain), held messages are NAKed in stream order this far
#: apart, starting RELEASE_GAP after the message their key waits for is due: the server
#: redelivers them in that order. The gap covers what the awaited NAK may have taken to reach
#: the server (the due time here is taken when its NAK was queued, not when it arrived).
RELEASE_STEP = 0.001
RELEASE_GAP = 0.1


@dataclass
class _Key:
    running: bool = False
    held: list[tuple[int, Msg]] = field(default_factory=list)  # sorted by stream sequence
    held_seqs: list[int] = field(default_factory=list)  # the same sequences (bisect without key=: 3.9)
    out: dict[int, tuple[float, float]] = field(default_factory=dict)  # seq -> (due, give up at)
    sent_back: dict[int, int] = field(default_factory=dict)  # seq -> times sent back in this run

    def next_seq(self) -> float:
        """The smallest sequence out (inf when none)."""
        return min(self.out) if self.out else float("inf")

    def idle(self) -> bool:
        return not (self.running or self.held or self.out)


@dataclass(frozen=True)
class Arrival:
    """What to do with a message taken from the queue: ``run`` it now; or it was ``held``
    (``replaced``: an older delivery of the same sequence it replaced); or send it back
    (NAK after ``delay``)."""

    run: bool = False
    held: bool = False
    replaced: Msg | None = None
    delay: float = 0.0


class KeyOrder:
    """The per-key state of a key-ordered ``consume()``. Every method takes the leaf lock only;
    any thread; none blocks, none calls out."""

    def __init__(self, limit: int, grace: float, limit_bytes: int = 0) -> None:
        self.limit = limit  # messages held at most, over all keys
        self.limit_bytes = limit_bytes  # bytes (Msg.size) held at most, over all keys; 0: no bound
        self.grace = grace  # how long past its due time an out sequence is waited for
        # Guards every field below. A leaf in the lock order: nothing is called under it.
        self._lock = threading.Lock()
        self._keys: dict[Hashable, _Key] = {}
        self._held = 0
        self._held_bytes = 0
        self._sent_back = 0  # ever
        self._given_up = 0  # ever

    def after_fork_in_child(self) -> None:
        """Child process after os.fork(): a worker may have held the lock."""
        self._lock = threading.Lock()

    def arrive(self, key: Hashable, seq: int, msg: Msg, now: float) -> Arrival:
        """*msg* (stream sequence *seq*) of *key* was taken from the queue at *now*."""
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _Key()
            state.out.pop(seq, None)  # it is back
            held = state.held
            at = bisect.bisect_left(state.held_seqs, seq)
            if at < len(held) and held[at][0] == seq:  # a newer delivery of a held message
                old = held[at][1]
                held[at] = (seq, msg)
                self._held_bytes += msg.size - old.size
                return Arrival(held=True, replaced=old)
            if not state.running and seq < state.next_seq() and (not held or seq < held[0][0]):
                state.running = True
                return Arrival(run=True)
            if self._held < self.limit and (
                not self.limit_bytes or not self._held or self._held_bytes + msg.size <= self.limit_bytes
            ):
                held.insert(at, (seq, msg))
                state.held_seqs.insert(at, seq)
                self._held += 1
                self._held_bytes += msg.size
                return Arrival(held=True)
            due = min((d for d, _ in state.out.values()), default=now)
            delay = max(due - now, 0.0) + SEND_BACK_PAD
            state.out[seq] = (now + delay, now + delay + self.grace)
            state.sent_back[seq] = state.sent_back.get(seq, 0) + 1
            self._sent_back += 1
            return Arrival(delay=delay)

    def sent_back_times(self, key: Hashable, seq: int) -> int:
        """How often *seq* of *key* was sent back for a full hold in this run (those deliveries
        were not failures)."""
        with self._lock:
            state = self._keys.get(key)
            return 0 if state is None else state.sent_back.get(seq, 0)

    def finish(self, key: Hashable, seq: int, retry_in: float | None, now: float, go_on: bool) -> Msg | None:
        """The handler of *seq* of *key* is done: it comes again after *retry_in* seconds (a NAK),
        or never (None: acked, terminated, left unsettled). Returns the key's next message to
        run on this thread, if one is held and may run (and *go_on*: the pool still runs)."""
        with self._lock:
            state = self._keys[key]
            state.running = False
            if retry_in is not None:
                if seq not in state.held_seqs:  # not back already
                    state.out[seq] = (now + retry_in, now + retry_in + self.grace)
            else:
                state.sent_back.pop(seq, None)
            return self._next_locked(key, state, go_on)

    def expire(
        self, now: float, go_on: bool
    ) -> tuple[list[tuple[Hashable, int]], list[tuple[Hashable, Msg]]]:
        """Give up on out sequences past their time. Returns what was given up on (key, seq)
        and the messages that may run now (key, msg), each marked running."""
        given_up: list[tuple[Hashable, int]] = []
        runnable: list[tuple[Hashable, Msg]] = []
        with self._lock:
            for key, state in list(self._keys.items()):
                late = [seq for seq, (_, until) in state.out.items() if until <= now]
                for seq in late:
                    del state.out[seq]
                    state.sent_back.pop(seq, None)
                    given_up.append((key, seq))
                if late and not state.running:
                    msg = self._next_locked(key, state, go_on)
                    if msg is not None:
                        runnable.append((key, msg))
            self._given_up += len(given_up)
        return given_up, runnable

    def release_all(self, now: float) -> list[tuple[Msg, float]]:
        """Empty the hold (the pool ends): each held message with the delay to NAK it with, so
        that the server brings every key's messages back in order (after the one it waits for)."""
        released: list[tuple[Msg, float]] = []
        with self._lock:
            for state in self._keys.values():
                due = max((d for d, _ in state.out.values()), default=None)
                base = 0.0 if due is None else max(due - now, 0.0) + RELEASE_GAP
                for i, (_, msg) in enumerate(state.held):
                    released.append((msg, base + (i + 1) * RELEASE_STEP))
                self._held -= len(state.held)
                self._held_bytes -= sum(msg.size for _, msg in state.held)
                state.held.clear()
                state.held_seqs.clear()
            self._keys = {key: state for key, state in self._keys.items() if not state.idle()}
        return released

    def stats(self) -> tuple[int, int, int]:
        """(held now, sent back ever, given up ever)."""
        with self._lock:
            return self._held, self._sent_back, self._given_up

    def _next_locked(self, key: Hashable, state: _Key, go_on: bool) -> Msg | None:
        """Lock held. The key's next message, marked running, if it may run; forgets an idle key."""
        if go_on and state.held and state.held[0][0] < state.next_seq():
            _, msg = state.held.pop(0)
            state.held_seqs.pop(0)
            self._held -= 1
            self._held_bytes -= msg.size
            state.running = True
            return msg
        if state.idle():
            del self._keys[key]
        return None
