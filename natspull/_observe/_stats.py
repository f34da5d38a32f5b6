"""Typed snapshots returned by ``stats()``: frozen dataclasses, one per kind of object.

Each is taken at one moment, from any thread, and never changes afterwards (assigning a
field raises ``dataclasses.FrozenInstanceError``). Counters count since the object was
created. :meth:`_Stats.as_dict` gives the fields as a plain dict.

No natspull imports: the layers above fill these from their plain counters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ClientStats", "ConsumeStats", "MessagesStats"]


class _Stats:
    """:meth:`as_dict`, shared by every snapshot."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields as a new dict (name -> value), e.g. for logging or JSON."""
        return {name: getattr(self, name) for name in self._names()}

    def _names(self) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(self))  # type: ignore[arg-type]


@dataclass(frozen=True)
class MessagesStats(_Stats):
    """A snapshot of a ``messages()`` iterator (also ordered consumers' iterators).

    Attributes:
        delivered: messages handed to the application (by ``next()``/iteration).
        buffered: messages received and not handed out yet.
        pending_msgs: messages requested by pulls and not yet handed out (nats.go's "pending":
            outstanding requests + buffered + leased to running handlers).
        pending_bytes: the same in bytes (only counted with ``max_bytes``).
        waiters: threads (or, on the trio side, tasks) waiting for a message now.
        pulls_sent: pull requests sent.
        heartbeats_missed: idle heartbeats that did not arrive in time.
        reconnects: reconnects of the connection while this iterator ran.
        pins_lost: times the priority group's pin was taken away (423).
        resets: times an ordered consumer recreated its server-side consumer (0 for others).
        acked: messages acknowledged with ``ack()``/``ack_sync()`` (NAKs and TERMs not counted).
        redelivered: handed-out messages the server had delivered before (``num_delivered > 1``).
        state: ``"open"``, ``"draining"`` or ``"closed"``.
    """

    delivered: int
    buffered: int
    pending_msgs: int
    pending_bytes: int
    waiters: int
    pulls_sent: int
    heartbeats_missed: int
    reconnects: int
    pins_lost: int
    resets: int
    acked: int
    redelivered: int
    state: str


@dataclass(frozen=True)
class ConsumeStats(MessagesStats):
    """A snapshot of a ``consume()`` context: every :class:`MessagesStats` field (``delivered``
    counts messages handed to handlers, ``waiters`` idle workers), and:

    Attributes:
        handled: messages whose handler call returned (each message of a batch counts).
        failed: messages whose handler call raised (each message of a batch counts).
        terminated: failed messages terminated (``+TERM``) after ``term_after`` deliveries.
        lease_extensions: ``+WPI`` sent to keep running handlers' messages leased.
        workers_alive: worker threads still running.
        auto_acked: messages acked by ``auto_ack=True`` after their handler returned.
        unsettled: messages a handler returned without acking, NAKing or terminating
            (``auto_ack=False``); their leases stopped.
        timed_out: handler calls that ran past ``handler_timeout`` (their messages were NAKed).
        stuck: worker threads running past ``handler_timeout`` now.
        late_settles: acks and NAKs of timed-out handlers, ignored.
        held: messages held back now until an earlier message of their ``key`` is done.
        sent_back: messages NAKed back because the hold was full (``key=``), ever.
    """

    handled: int
    failed: int
    terminated: int
    lease_extensions: int
    workers_alive: int
    auto_acked: int
    unsettled: int
    timed_out: int
    stuck: int
    late_settles: int
    held: int
    sent_back: int


@dataclass(frozen=True)
class ClientStats(_Stats):
    """A snapshot of a ``Client``'s connection (nats-py's counters, kept exact by natspull).

    Attributes:
        state: ``"connecting"``, ``"connected"``, ``"reconnecting"``, ``"closing"``, ``"closed"``
            (or ``"forked"`` in a child process after ``os.fork()``).
        reconnects: successful reconnects.
        in_msgs: messages received (stream messages, replies, status messages).
        in_bytes: payload bytes received.
        out_msgs: messages sent (publishes, acks, pull and API requests).
        out_bytes: payload bytes sent.
        errors_received: ``-ERR`` lines from the server.
        consumers_running: running ``messages()`` iterators, ``consume()`` contexts and
            ``fetch()`` calls on this client.
    """

    state: str
    reconnects: int
    in_msgs: int
    in_bytes: int
    out_msgs: int
    out_bytes: int
    errors_received: int
    consumers_running: int
