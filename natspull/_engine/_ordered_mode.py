"""Ordered consumers in the pull engine: the sequence check and the reset.

An ordered consumer reads a stream through an ephemeral, memory-storage, R1, ack-none
consumer that natspull owns. :class:`OrderedEngine` is the pull engine with one strategy
added (nats.go's ``jetstream/ordered.go``):

* **The check.** Every message's ack subject carries the consumer's name and the consumer
  and stream sequences (ack none still sends ``$JS.ACK`` metadata). :class:`Cursor` accepts a
  message only from the consumer being read and only with the next consumer sequence; it
  remembers the stream sequence of the last message accepted. It checks a socket read's
  messages together when the read is handed to the queue (``Cursor.accept``): a prefix test
  per message and one parse of the last, message by message only when that does not add up.
* **The reset.** On a gap, a missed heartbeat, a reconnect, a leadership change or the
  consumer being deleted (409, or 503 and not found), the engine stops pulling, switches the
  cursor to a new consumer name at once (so nothing more of the old consumer is accepted),
  moves to a fresh inbox (so the old requests' statuses - e.g. the 409 of deleting the old
  consumer - never reach it), deletes the old consumer (best effort) and creates the new
  one at the last accepted stream sequence + 1 with a bounded backoff. What was accepted
  before the gap stays buffered and valid; nothing after it is handed out.

``fetch()`` runs the same engine one-shot: a gap ends the request with what came before
it, and the ordered consumer (``_ordered.py``) recreates its consumer before the next one.

Server behaviour relied on (nats-server 2.15.1): the ack subject is
``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>`` (9
tokens) or, with a domain, ``$JS.ACK.<domain>.<account>.<stream>.<consumer>...`` (12).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from typing import Any

from .._consumer_types import format_time
from .._msg import Msg
from .._observe._events import EventThread
from .._transport._link import Link
from ..errors import (
    ConsumerDeletedError,
    ConsumerNotFoundError,
    Error,
    OrderedConsumerResetError,
    OrderedConsumerUsageError,
    StreamNotFoundError,
)
from ._pull import Continuous, PullEngine
from ._settings import PullSettings

__all__ = ["NO_ACKS", "Cursor", "OrderedEngine", "OrderedSpec", "stream_sequence"]

log = logging.getLogger("natspull")

BACKOFF_FIRST = 0.1  # seconds before the second attempt to recreate the consumer
BACKOFF_MAX = 2.0  # the longest wait between two attempts
DELETE_TIMEOUT = 2.0  # deleting the old consumer is best effort: its inactive_threshold is the backstop

ACCEPT = 0
STALE = 1  # from a consumer no longer read: dropped silently
GAP = 2


def _tokens(reply: str) -> tuple[list[str], int]:
    """The ack subject's tokens and the index of the consumer name in them."""
    tokens = reply.split(".")
    return tokens, (3 if len(tokens) == 9 else 5)


def stream_sequence(reply: str) -> int:
    """The stream sequence in a JetStream ack subject."""
    tokens, i = _tokens(reply)
    return int(tokens[i + 2])


class Cursor:
    """Where an ordered read is: the consumer read and the last message accepted from it.

    Loop thread while an engine runs; the owner's thread before and after.
    """

    __slots__ = ("_after", "_head", "_last_reply", "broken", "consumer_seq", "name")

    def __init__(self, name: str, stream_seq: int) -> None:
        self.name = name
        self.consumer_seq = 0  # last accepted consumer sequence of *name* (0: none yet)
        self._after = stream_seq  # the stream sequence the read started after
        self._last_reply: str | None = None  # the ack subject of the last accepted message
        # The ack subjects' common start up to the consumer's name ("$JS.ACK.<stream>.<name>."),
        # learnt from the first message: checking a message is then a prefix test, and only the
        # last of a read is parsed (the stream sequence only when it is asked for).
        self._head: str | None = None
        self.broken = False  # a gap was seen (one-shot: recreate before the next fetch)

    @property
    def stream_seq(self) -> int:
        """The stream sequence of the last message accepted (before any: the starting point)."""
        last = self._last_reply
        return self._after if last is None else stream_sequence(last)

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
                try:
                    cseq = int(last[len(head) :].split(".", 3)[2])
                except (IndexError, ValueError):
                    cseq = -1  # not an ack subject: message by message
                if cseq == self.consumer_seq + len(burst):
                    self.consumer_seq = cseq
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
        try:
            tokens, i = _tokens(reply)
            if tokens[i] != self.name:
                return STALE
            cseq = int(tokens[i + 3])
            int(tokens[i + 2])  # (a stream sequence, for stream_seq)
        except (IndexError, ValueError):
            return GAP  # not an ack subject: nothing can be trusted after it
        if cseq != self.consumer_seq + 1:
            return GAP
        self._head = ".".join(tokens[: i + 1]) + "."
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


class _OrderedContinuous(Continuous):
    """Continuous pulls where a leadership change or a reconnect recreates the consumer."""

    __slots__ = ("_ordered",)

    def __init__(self, engine: OrderedEngine) -> None:
        super().__init__(engine)
        self._ordered = engine

    def on_leadership_change(self) -> None:
        self._ordered.reset("the consumer's leader changed")

    def on_reconnected(self) -> None:
        self._ordered.reset("the client reconnected")


class OrderedEngine(PullEngine):
    """A pull engine that hands out one consumer's messages strictly in order, or resets.

    Loop thread, like the engine. :attr:`cursor` belongs to this engine while it runs.
    """

    def __init__(
        self,
        link: Link,
        api_prefix: str,
        stream: str,
        spec: OrderedSpec,
        cursor: Cursor,
        settings: PullSettings,
        *,
        api_timeout: float,
        max_reset_attempts: int | None,
        events: EventThread | None = None,
    ) -> None:
        super().__init__(link, api_prefix, stream, cursor.name, settings, events=events)
        self.acks = None
        self.ack_sink = NO_ACKS
        self.cursor = cursor
        self._spec = spec
        self._api_timeout = api_timeout
        self._max_reset_attempts = max_reset_attempts
        self._resetting = False
        self.resets = 0
        if not settings.one_shot:
            self._mode = _OrderedContinuous(self)

    # ------------------------------------------------------------ the check

    def _flush_burst(self) -> None:
        burst = self._burst
        if not burst:
            return
        self._burst = []
        accepted, broken = self.cursor.accept(burst)
        if accepted:
            self._touch()
            self.queue.put_many(accepted)
        if broken is None or self._resetting:
            return
        expected = self.cursor.consumer_seq + 1
        self.cursor.broken = True
        if self.settings.one_shot:
            log.info(
                "natspull: %s/%s: gap after consumer sequence %d", self.stream, self.consumer, expected - 1
            )
            self.request_done()
        else:
            self.reset(f"a gap: expected consumer sequence {expected}, got {broken}")

    def _on_msg(
        self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None, size: int
    ) -> None:
        if headers and not data and not reply and "Status" in headers and subject != self.inbox:
            return  # a status for a request of a consumer no longer read (old inbox)
        super()._on_msg(subject, reply, data, headers, size)

    def _nak_all(self, msgs: list[Msg]) -> None:
        pass  # ack none: nothing to give back

    # ---------------------------------------------------- what leads to a reset

    def fail(self, exc: BaseException) -> None:
        if not self.settings.one_shot and isinstance(exc, (ConsumerDeletedError, ConsumerNotFoundError)):
            self.reset(str(exc))
            return
        super().fail(exc)

    def _on_heartbeat_missed(self) -> None:
        if self._resetting:
            return
        if not self.queue.has_outstanding():
            super()._on_heartbeat_missed()  # nothing was due: just pull
            return
        self.heartbeats_missed += 1
        assert self._heartbeat is not None
        why = f"no heartbeat for {self._heartbeat.interval:g} s"
        self._emit("heartbeat_missed", description=why)
        self.reset(why)

    def pull(self) -> None:
        if not self._resetting:
            super().pull()

    # ------------------------------------------------------------- the reset

    def reset(self, why: str) -> None:
        """Recreate the consumer after the last accepted message. Idempotent while one runs."""
        if self._resetting or self._stopping or self._sub is None:
            return
        self._resetting = True
        old = self.consumer
        self.cursor.restart(_next_name(old))  # from here on nothing of *old* is accepted
        self._emit("reset", description=why)
        self.loop_thread.loop.create_task(self._recreate(old))

    async def _recreate(self, old: str) -> None:
        link = self._link
        try:
            inbox = link.new_inbox()
            sub = await link.subscribe_inbox(inbox, self._on_msg, self._deliver)
        except Error as exc:
            self.fail(exc)  # the connection is closed
            return
        if self._stopping or self._sub is None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            return
        stale, self._sub, self.inbox = self._sub, sub, inbox
        stale.unroute()
        with contextlib.suppress(Exception):
            await stale.unsubscribe()
        self.loop_thread.loop.create_task(self._delete(old))
        name = self.cursor.name
        delay = BACKOFF_FIRST
        attempts = 0
        while not self._stopping:
            attempts += 1
            api, body = self._spec.create(self.stream, name, self.cursor.stream_seq)
            try:
                await link.api_request(self._js_prefix, api, json.dumps(body).encode(), self._api_timeout)
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
                    self.stream,
                    name,
                    exc,
                    delay,
                )
                # The next attempt under a new name: an unanswered create may have been placed on
                # a server that just died (its leader had not noticed yet), and every create of
                # that name then waits for it. The orphan expires (inactive_threshold).
                self.loop_thread.loop.create_task(self._delete(name))
                name = _next_name(name)
                self.cursor.restart(name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        if self._stopping:
            await self._delete(name)  # created while the reader stopped
            return
        self.consumer = name
        self.subject = f"{self._js_prefix}.CONSUMER.MSG.NEXT.{self.stream}.{name}"
        self.resets += 1
        self._resetting = False
        self._touch()
        self.queue.forget_outstanding()
        self.pull()

    def _give_up(self, exc: Error) -> None:
        self._resetting = False
        super().fail(
            OrderedConsumerResetError(
                f"ordered consumer on {self.stream}: could not recreate the consumer after stream "
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
                self._js_prefix, f"CONSUMER.DELETE.{self.stream}.{name}", b"", DELETE_TIMEOUT
            )
        except Error as exc:
            log.debug("natspull: %s/%s: delete failed: %s", self.stream, name, exc)

    async def _shutdown(self) -> None:
        await super()._shutdown()
        if not self.settings.one_shot:
            await self._delete(self.consumer)

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "resets": self.resets}


def _next_name(name: str) -> str:
    """``<prefix>_<n>`` -> ``<prefix>_<n+1>`` (nats.go's naming of an ordered consumer's consumers)."""
    prefix, _, serial = name.rpartition("_")
    return f"{prefix}_{int(serial) + 1}"
