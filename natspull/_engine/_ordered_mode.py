"""Ordered reads: the sequence check and the reset, composed onto a plain pull engine.

An ordered consumer reads a stream through an ephemeral, memory-storage, R1, ack-none
consumer that natspull owns. As nats.go's ``jetstream/ordered.go`` holds a ``pullConsumer``,
:class:`OrderedMode` holds a plain :class:`~natspull._engine._pull.PullEngine` and fills its two
hooks (:func:`ordered_engine`): the engine's ``mode`` (the reactions that differ, wrapping the
continuous or one-shot mode it had) and its ``accept`` step (what of a socket read reaches the
queue).

* **The check.** Every message's ack subject carries the consumer's name and the consumer
  and stream sequences (ack none still sends ``$JS.ACK`` metadata; ``_ack_subject`` reads
  them). :class:`Cursor` accepts a message only from the consumer being read and only with
  the next consumer sequence; it remembers the last message accepted. It checks a socket
  read's messages together (``Cursor.accept``): a prefix test per message and one parse of the
  last, message by message only when that does not add up.
* **The reset.** On a gap, a missed heartbeat, a reconnect, a leadership change or the
  consumer being deleted (409, or 503 and not found), the mode suspends the engine (no pull,
  no heartbeat), switches the cursor to a new consumer name at once (so nothing more of the
  old consumer is accepted), moves the engine to a fresh inbox (so the old requests' statuses -
  e.g. the 409 of deleting the old consumer - never reach it), deletes the old consumer (best
  effort), creates the new one at the last accepted stream sequence + 1 with a bounded
  backoff and retargets the engine to it. What was accepted before the gap stays buffered and
  valid; nothing after it is handed out.
* **The position.** Where the *next read* starts is another fact: the last message handed to
  the application (:class:`Position`, one per ordered consumer), which every reader advances.

``fetch()`` runs the same engine one-shot: a gap ends the request with what came before
it, and the ordered consumer (``_ordered.py``) recreates its consumer before the next one.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Callable
from typing import Any

from .. import _ack_subject as ack_subject
from .._consumer_types import format_time
from .._msg import Msg
from .._observe._events import EventThread
from .._transport._link import Link
from ..errors import (
    Error,
    OrderedConsumerResetError,
    OrderedConsumerUsageError,
    StreamNotFoundError,
)
from ._modes import Mode
from ._pull import PullEngine
from ._settings import PullSettings

__all__ = ["NO_ACKS", "Cursor", "OrderedMode", "OrderedSpec", "Position", "ordered_engine"]

log = logging.getLogger("natspull")

BACKOFF_FIRST = 0.1  # seconds before the second attempt to recreate the consumer
BACKOFF_MAX = 2.0  # the longest wait between two attempts
DELETE_TIMEOUT = 2.0  # deleting the old consumer is best effort: its inactive_threshold is the backstop

ACCEPT = 0
STALE = 1  # from a consumer no longer read: dropped silently
GAP = 2


class Position:
    """Where an ordered consumer's next read starts: the last message handed to the application.

    One per ordered consumer, shared by its reads, the one owner of this fact. Every reader
    advances it as it hands a message out: the queue's ``on_take`` (``messages()``,
    ``consume()``, ``fetch()``) or, for ``natspull.trio``'s iterator, which takes ahead, the
    iterator for each message a task receives. Single reference writes and reads: any thread.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: Msg | None = None

    def advance(self, msg: Msg) -> None:
        """*msg* was handed out (after every earlier one). Must stay a plain store: the queue
        calls it with its lock held."""
        self._last = msg

    @property
    def stream_seq(self) -> int:
        """The stream sequence of the last message handed out (0: none yet); parsed when asked."""
        last = self._last
        return 0 if last is None else ack_subject.stream_sequence(last.reply)


class Cursor:
    """Where an ordered read's engine is: the consumer read and the last message accepted from it.

    Loop thread while an engine runs; the owner's thread before and after.
    """

    __slots__ = ("_after", "_head", "_last_reply", "broken", "consumer_seq", "name")

    def __init__(self, name: str, stream_seq: int) -> None:
        self.name = name
        self.consumer_seq = 0  # last accepted consumer sequence of *name* (0: none yet)
        self._after = stream_seq  # the stream sequence the read started after
        self._last_reply: str | None = None  # the ack subject of the last accepted message
        # The consumer's ack subjects' common start (ack_subject.consumer_head), learnt from the
        # first message: checking a message is then a prefix test, and only the last of a read
        # is parsed (the stream sequence only when it is asked for).
        self._head: str | None = None
        self.broken = False  # a gap was seen (one-shot: recreate before the next fetch)

    @property
    def stream_seq(self) -> int:
        """The stream sequence of the last message accepted (before any: the starting point)."""
        last = self._last_reply
        return self._after if last is None else ack_subject.stream_sequence(last)

    def accept(self, burst: list[Msg]) -> tuple[list[Msg], str | None]:
        """The messages of *burst* (one read, in arrival order, not empty) that continue the
        sequence, and the ack subject of the first that breaks it (None: nothing broke it).
        The cursor moves past the accepted ones; the rest is dropped (a reset re-reads it).

        A consumer numbers its deliveries 1, 2, 3, ... and never goes back (ack none: no
        redelivery; each reset reads a consumer of a new name). So when every message of the
        burst is this consumer's (a prefix test each) and the last one's number is the next
        expected + len - 1, the burst is exactly the next len deliveries: no gap, no duplicate.
        Anything else goes message by message.
        """
        head = self._head
        if head is not None:
            for msg in burst:
                if not msg.reply.startswith(head):
                    break
            else:
                last = burst[-1].reply
                if ack_subject.consumer_sequence_after(last, head) == self.consumer_seq + len(burst):
                    self.consumer_seq += len(burst)
                    self._last_reply = last
                    return burst, None
        accepted: list[Msg] = []
        for msg in burst:
            verdict = self._check(msg.reply)
            if verdict == GAP:
                return accepted, msg.reply
            if verdict == ACCEPT:
                accepted.append(msg)
        return accepted, None

    def _check(self, reply: str) -> int:
        """ACCEPT (and advance), STALE or GAP for one message with ack subject *reply*."""
        tokens = ack_subject.tokens(reply)
        if tokens is None:
            return GAP  # not an ack subject: nothing can be trusted after it
        if tokens[ack_subject.CONSUMER] != self.name:
            return STALE
        try:
            cseq = int(tokens[ack_subject.CONSUMER_SEQ])
            int(tokens[ack_subject.STREAM_SEQ])  # (a stream sequence, for stream_seq)
        except ValueError:
            return GAP
        if cseq != self.consumer_seq + 1:
            return GAP
        self._head = ack_subject.consumer_head(reply)
        self.consumer_seq = cseq
        self._last_reply = reply
        return ACCEPT

    def restart(self, name: str) -> None:
        """Read consumer *name* from now on (its first message has consumer sequence 1)."""
        self.name = name
        self.consumer_seq = 0
        self._head = None
        self.broken = False


class OrderedSpec:
    """The ordered consumer's configuration (validated by the caller) and its create request."""

    __slots__ = (
        "deliver_policy",
        "filter_subjects",
        "headers_only",
        "inactive_threshold",
        "opt_start_seq",
        "opt_start_time",
        "replay_policy",
    )

    def __init__(
        self,
        *,
        filter_subjects: list[str],
        deliver_policy: str,
        opt_start_seq: int | None,
        opt_start_time: datetime.datetime | None,
        headers_only: bool,
        replay_policy: str,
        inactive_threshold: float,
    ) -> None:
        self.filter_subjects = filter_subjects
        self.deliver_policy = deliver_policy
        self.opt_start_seq = opt_start_seq
        self.opt_start_time = opt_start_time
        self.headers_only = headers_only
        self.replay_policy = replay_policy
        self.inactive_threshold = inactive_threshold

    def create(self, stream: str, name: str, after: int) -> tuple[str, dict[str, Any]]:
        """The API (under the prefix) and body creating consumer *name*: from the configured
        starting point while nothing was handed out (*after* = 0), else at *after* + 1."""
        config: dict[str, Any] = {
            "name": name,
            "ack_policy": "none",
            "max_deliver": -1,
            "num_replicas": 1,
            "mem_storage": True,
            "inactive_threshold": int(self.inactive_threshold * 1e9),
            "replay_policy": self.replay_policy,
        }
        if after:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = after + 1
        else:
            config["deliver_policy"] = self.deliver_policy
            if self.opt_start_seq is not None:
                config["opt_start_seq"] = self.opt_start_seq
            if self.opt_start_time is not None:
                config["opt_start_time"] = format_time(self.opt_start_time)
        if self.headers_only:
            config["headers_only"] = True
        if len(self.filter_subjects) == 1:
            config["filter_subject"] = self.filter_subjects[0]
        elif self.filter_subjects:
            config["filter_subjects"] = self.filter_subjects
        return f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": config}


class _NoAcks:
    """The ack sink of ordered messages: there is nothing to acknowledge (ack policy none)."""

    max_payload = 0

    def _refuse(self) -> None:
        raise OrderedConsumerUsageError(
            "a message of an ordered consumer cannot be acknowledged: its consumer's ack policy is none"
        )

    def publish_nowait(self, subject: str, payload: bytes) -> None:
        self._refuse()

    def request_ack(self, subject: str, payload: bytes, timeout: float) -> None:
        self._refuse()

    def check_fork(self) -> None:
        pass


NO_ACKS = _NoAcks()


class OrderedMode:
    """The ordered part of a plain pull engine: its mode (wrapping the one it had) and its
    ``accept`` step. Installed by :func:`ordered_engine`. Loop thread, like the engine;
    :attr:`cursor` belongs to it while the engine runs.

    Continuous pulls reset where the plain mode would re-pull or fail (a gap, a missed
    heartbeat, a leadership change, a reconnect, the consumer gone) and delete the consumer
    when the engine stops; one-shot (``fetch()``) ends its request at a gap and otherwise reacts
    as the plain one-shot mode, but for a missed heartbeat, which resets.
    """

    __slots__ = (
        "_api_prefix",
        "_api_timeout",
        "_engine",
        "_inner",
        "_link",
        "_max_reset_attempts",
        "_one_shot",
        "_resetting",
        "_spec",
        "cursor",
        "on_delivered",
    )

    def __init__(
        self,
        engine: PullEngine,
        link: Link,
        api_prefix: str,
        spec: OrderedSpec,
        cursor: Cursor,
        *,
        one_shot: bool,
        api_timeout: float,
        max_reset_attempts: int | None,
    ) -> None:
        self._engine = engine
        self._inner: Mode = engine.mode
        self._link = link
        self._api_prefix = api_prefix
        self._spec = spec
        self.cursor = cursor
        self._one_shot = one_shot
        self._api_timeout = api_timeout
        self._max_reset_attempts = max_reset_attempts
        self._resetting = False
        # Called per message: the inner mode's own method, not a call through this one.
        self.on_delivered: Callable[[int], None] = self._inner.on_delivered

    # ------------------------------------------------------------ the check

    def accept(self, burst: list[Msg]) -> list[Msg]:
        """The engine's accept step: what of one socket read continues the sequence. A break
        ends a one-shot request (after what came before it) or resets."""
        accepted, broken = self.cursor.accept(burst)
        if broken is not None and not self._resetting:
            expected = self.cursor.consumer_seq + 1
            self.cursor.broken = True
            engine = self._engine
            if self._one_shot:
                log.info(
                    "natspull: %s/%s: gap after consumer sequence %d",
                    engine.stream,
                    engine.consumer,
                    expected - 1,
                )
                engine.request_done()
            else:
                self.reset(f"a gap: expected consumer sequence {expected}, got {broken}")
        return accepted

    # ------------------------------------------------------------ the mode

    def may_pull(self, pulls_sent: int) -> bool:
        return self._inner.may_pull(pulls_sent)

    def on_request_ended(self, msgs: int, nbytes: int) -> None:
        self._inner.on_request_ended(msgs, nbytes)

    def on_leadership_change(self) -> None:
        if self._one_shot:
            self._inner.on_leadership_change()
        else:
            self.reset("the consumer's leader changed")

    def on_max_bytes(self, msgs: int, nbytes: int, describe: str) -> None:
        self._inner.on_max_bytes(msgs, nbytes, describe)

    def on_unknown_status(self, code: str, description: str) -> None:
        self._inner.on_unknown_status(code, description)

    def on_pin_lost(self, msgs: int, nbytes: int, exact: bool) -> None:
        self._inner.on_pin_lost(msgs, nbytes, exact)

    def on_heartbeat_missed(self, error: Error) -> None:
        self.reset(f"no heartbeat for {self._engine.heartbeat_interval:g} s")

    def on_no_responders(self) -> None:
        self._inner.on_no_responders()

    def on_reconnected(self) -> None:
        if self._one_shot:
            self._inner.on_reconnected()
        else:
            self.reset("the client reconnected")

    def on_consumer_gone(self, error: Error) -> None:
        if self._one_shot:
            self._inner.on_consumer_gone(error)
        else:
            self.reset(str(error))

    async def on_stopped(self) -> None:
        if not self._one_shot:
            await self._delete(self._engine.consumer)

    # ------------------------------------------------------------- the reset

    def reset(self, why: str) -> None:
        """Recreate the consumer after the last accepted message. Idempotent while one runs."""
        engine = self._engine
        if self._resetting or not engine.running:
            return
        self._resetting = True
        engine.suspend()
        old = engine.consumer
        self.cursor.restart(_next_name(old))  # from here on nothing of *old* is accepted
        engine.emit("reset", description=why)
        engine.loop_thread.loop.create_task(self._recreate(old))

    async def _recreate(self, old: str) -> None:
        engine, link = self._engine, self._link
        try:
            if not await engine.move_inbox():
                return  # stopped meanwhile
        except Error as exc:
            engine.fail(exc)  # the connection is closed
            return
        engine.loop_thread.loop.create_task(self._delete(old))
        name = self.cursor.name
        delay = BACKOFF_FIRST
        attempts = 0
        while engine.running:
            attempts += 1
            api, body = self._spec.create(engine.stream, name, self.cursor.stream_seq)
            try:
                await link.api_request(self._api_prefix, api, json.dumps(body).encode(), self._api_timeout)
                break
            except StreamNotFoundError as exc:
                self._give_up(exc)
                return
            except Error as exc:
                if link.is_closed:
                    return  # on_closed ends the queue
                limit = self._max_reset_attempts
                if limit is not None and attempts >= limit:
                    self._give_up(exc)
                    return
                log.info(
                    "natspull: %s/%s: creating the consumer failed (%s); again in %.1f s",
                    engine.stream,
                    name,
                    exc,
                    delay,
                )
                # The next attempt under a new name: an unanswered create may have been placed on
                # a server that just died (its leader had not noticed yet), and every create of
                # that name then waits for it. The orphan expires (inactive_threshold).
                engine.loop_thread.loop.create_task(self._delete(name))
                name = _next_name(name)
                self.cursor.restart(name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        if not engine.running:
            await self._delete(name)  # created while the reader stopped
            return
        engine.resets += 1
        self._resetting = False
        engine.retarget(name)

    def _give_up(self, exc: Error) -> None:
        self._resetting = False
        engine = self._engine
        engine.fail(
            OrderedConsumerResetError(
                f"ordered consumer on {engine.stream}: could not recreate the consumer after stream "
                f"sequence {self.cursor.stream_seq}: {exc}"
            )
        )

    async def _delete(self, name: str) -> None:
        """Delete consumer *name*, best effort (its inactive_threshold removes it otherwise)."""
        link = self._link
        if link.is_closed or not link.is_connected:
            return
        try:
            await link.api_request(
                self._api_prefix, f"CONSUMER.DELETE.{self._engine.stream}.{name}", b"", DELETE_TIMEOUT
            )
        except Error as exc:
            log.debug("natspull: %s/%s: delete failed: %s", self._engine.stream, name, exc)


def ordered_engine(
    link: Link,
    api_prefix: str,
    stream: str,
    spec: OrderedSpec,
    cursor: Cursor,
    position: Position,
    settings: PullSettings,
    *,
    api_timeout: float,
    max_reset_attempts: int | None,
    events: EventThread | None = None,
) -> PullEngine:
    """A plain pull engine that hands out consumer *cursor.name*'s messages strictly in order
    (or resets), its takes advancing *position*. Not started. Any thread."""
    engine = PullEngine(
        link,
        api_prefix,
        stream,
        cursor.name,
        settings,
        events=events,
        ack_sink=NO_ACKS,
        on_take=position.advance,
    )
    mode = OrderedMode(
        engine,
        link,
        api_prefix,
        spec,
        cursor,
        one_shot=settings.one_shot,
        api_timeout=api_timeout,
        max_reset_attempts=max_reset_attempts,
    )
    engine.mode, engine.accept = mode, mode.accept
    return engine


def _next_name(name: str) -> str:
    """``<prefix>_<n>`` -> ``<prefix>_<n+1>`` (nats.go's naming of an ordered consumer's consumers)."""
    prefix, _, serial = name.rpartition("_")
    return f"{prefix}_{int(serial) + 1}"
