"""Messages handed to the application, and their acknowledgements.

A :class:`Msg` is cheap (``__slots__``, metadata parsed only when read). Acks
are fire-and-forget through the client's outbox (one loop wake-up per burst,
from any thread), except :meth:`Msg.ack_sync`, which waits for the server.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from . import _ack_subject as ack_subject
from ._types import Metadata, SequencePair
from ._validate import check_nanoseconds
from .errors import Error, MsgAlreadyAckedError

if TYPE_CHECKING:
    from ._observe._otel import _Handout

__all__ = ["AckSink", "Metadata", "Msg", "nak_delay", "nak_unacked", "parse_metadata"]

_ACK = b"+ACK"
_NAK = b"-NAK"
_WPI = b"+WPI"
_TERM = b"+TERM"

# Guards the check-and-set of every Msg's terminal-ack flag, so two threads
# acking one message cannot both succeed. Leaf lock: nothing is called under it.
# Replaced in a child after os.fork(): another thread may have held it at the fork.
_ack_lock = threading.Lock()


def _new_ack_lock_in_child() -> None:
    global _ack_lock
    _ack_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_new_ack_lock_in_child)


class AckSink(Protocol):
    """What a message needs from its client to acknowledge itself."""

    @property
    def max_payload(self) -> int: ...

    def publish_nowait(self, subject: str, payload: bytes) -> None: ...

    def request_ack(self, subject: str, payload: bytes, timeout: float) -> None: ...

    def check_fork(self) -> None: ...


class Msg:
    """A message from a stream (or a reply from ``Client.request``).

    Attributes:
        subject: the subject the message was published to.
        data: the payload (bytes, not copied).
        headers: a dict of headers, or None.
        reply: the ack subject of a JetStream message ("" for a core message).
    """

    __slots__ = (
        "_acked",
        "_metadata",
        "_on_late",
        "_otel",
        "_out",
        "_settled",
        "_sink",
        "data",
        "headers",
        "reply",
        "size",
        "subject",
    )

    def __init__(
        self,
        subject: str,
        data: bytes,
        reply: str = "",
        headers: dict[str, str] | None = None,
        sink: AckSink | None = None,
        size: int | None = None,
    ) -> None:
        self.subject = subject
        self.data = data
        self.reply = reply
        self.headers = headers
        #: bytes this message counts for in ``max_bytes`` flow control
        self.size = len(data) + len(subject) + len(reply) if size is None else size
        self._sink = sink
        self._acked = False
        self._settled = b""  # the terminal acknowledgement sent (+ACK, -NAK ..., +TERM ...), b"" if none
        # Set when consume() took the message back from a handler past handler_timeout: a later
        # terminal ack is then not sent but reported to it (see take_back()).
        self._on_late: Callable[[], None] | None = None
        self._metadata: Metadata | None = None
        self._otel: _Handout | None = None  # set when handed out with OpenTelemetry on (_otel.py)
        # For the lease from arrival (_engine/_lease.py): 0.0 while natspull holds the message,
        # the time.monotonic() it was handed to the application, or -1.0 once consume() let it go.
        self._out = 0.0

    def __repr__(self) -> str:
        return f"<natspull.Msg subject={self.subject!r} reply={self.reply!r} data={len(self.data)} bytes>"

    @property
    def metadata(self) -> Metadata:
        """The JetStream metadata (sequences, delivery count, ...), parsed on first use.

        Raises natspull.Error for a message that did not come from JetStream.
        """
        if self._metadata is None:
            self._metadata = parse_metadata(self.reply)
        return self._metadata

    @property
    def acked(self) -> bool:
        """True once a terminal acknowledgement (ack, nak, term) was sent."""
        return self._acked

    def ack(self) -> None:
        """Acknowledge the message. Returns at once; the ack is flushed by the loop.

        Raises MsgAlreadyAckedError after a previous ack/nak/term,
        ConnectionClosedError after the client closed, ForkedError in a child
        process after os.fork() (the message is the parent's). Any thread.
        """
        # _send(_ACK, terminal=True) with _check() inlined: one call less each, on every message.
        sink = self._sink
        if sink is None or not self.reply:
            self._send(_ACK, terminal=True)  # raises
            return
        with _ack_lock:
            acked = self._acked
            if not acked:
                self._acked = True
                self._settled = _ACK
        if acked:  # (also a message taken back: then _send reports the late ack)
            self._send(_ACK, terminal=True)  # raises MsgAlreadyAckedError (or ForkedError)
            return
        try:
            sink.publish_nowait(self.reply, _ACK)
        except BaseException:
            self._acked = False
            self._settled = b""
            raise
        if self._otel is not None:
            self._otel.settled(_ACK)

    def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery, now or after *delay* seconds. Returns at once.

        Raises as :meth:`ack`; ValueError for a negative or non-finite delay, or one longer
        than the server's int64 nanoseconds (about 292 years). Any thread.
        """
        if delay is None:
            self._send(_NAK, terminal=True)
            return
        nanoseconds = check_nanoseconds("delay", delay)
        self._send(_NAK + b" " + json.dumps({"delay": nanoseconds}).encode(), terminal=True)

    def in_progress(self) -> None:
        """Tell the server work is still going on (resets ``ack_wait``). May repeat.

        Raises MsgAlreadyAckedError after a terminal ack. Any thread.
        """
        self._send(_WPI, terminal=False)

    def term(self, reason: str | None = None) -> None:
        """Tell the server never to redeliver this message. Returns at once.

        Raises as :meth:`ack`; ValueError for a reason that is not UTF-8 or does not fit
        the server's max_payload (the server would close the connection). Any thread.
        """
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, got {type(reason).__name__}")
        payload = _TERM
        if reason:
            try:
                payload = _TERM + b" " + reason.encode()
            except UnicodeEncodeError:
                raise ValueError(f"reason {reason!r:.60} is not encodable as UTF-8") from None
            if self._sink is not None and len(payload) > self._sink.max_payload:
                raise ValueError(
                    f"reason is {len(payload) - len(_TERM) - 1} bytes: the +TERM message would exceed "
                    f"the server's max_payload of {self._sink.max_payload}"
                )
        self._send(payload, terminal=True)

    def take_back(self, delay: float | None, on_late: Callable[[], None]) -> bool:
        """NAK the message (as :meth:`nak`) on behalf of whoever handed it out, unless it was
        acknowledged already (then False). From then on a terminal ack of the message (the
        handler's, too late) is not sent and not raised: *on_late* is called instead, and a
        ``+WPI`` is ignored. Never blocks; any thread. Private to natspull (handler_timeout).
        """
        payload = (
            _NAK
            if delay is None
            else _NAK + b" " + json.dumps({"delay": check_nanoseconds("delay", delay)}).encode()
        )
        with _ack_lock:
            if self._acked:
                return False
            self._acked = True
            self._settled = payload
            self._on_late = on_late
        sink = self._sink
        if sink is None:
            return True
        with contextlib.suppress(Error):  # the connection is gone: the server redelivers after ack_wait
            sink.publish_nowait(self.reply, payload)
        return True

    def ack_sync(self, timeout: float = 5.0) -> None:
        """Acknowledge and wait until the server confirms it ("double ack").

        Blocks on: the server's confirmation, at most *timeout* seconds.
        Raises natspull.TimeoutError, MsgAlreadyAckedError, ConnectionClosedError.
        Any thread but the client's loop thread.
        """
        sink = self._check(_ACK, terminal=True)
        if sink is None:  # taken back past handler_timeout: ignored
            return
        try:
            sink.request_ack(self.reply, _ACK, timeout)
        except BaseException:
            self._acked = False  # not confirmed: the caller may retry
            self._settled = b""
            raise
        if self._otel is not None:
            self._otel.settled(_ACK)

    def _check(self, payload: bytes, *, terminal: bool) -> AckSink | None:
        """The sink to send *payload* with, after the terminal-ack check; None when the message
        was taken back (:meth:`take_back`) and the call is to be ignored."""
        sink = self._sink
        if sink is None or not self.reply:
            raise Error("not a JetStream message: it has no ack subject")
        with _ack_lock:
            on_late = self._on_late
            if self._acked and on_late is None:
                sink.check_fork()  # in a forked child the message is the parent's, acked or not
                raise MsgAlreadyAckedError(f"message {self.reply} was already acknowledged")
            if not self._acked and terminal:
                self._acked = True
                self._settled = payload
        if on_late is not None:
            if terminal:
                on_late()
            return None
        return sink

    def _send(self, payload: bytes, *, terminal: bool) -> None:
        sink = self._check(payload, terminal=terminal)
        if sink is None:
            return
        try:
            sink.publish_nowait(self.reply, payload)
        except BaseException:
            if terminal:
                self._acked = False
                self._settled = b""
            raise
        if terminal and self._otel is not None:
            self._otel.settled(payload)


def nak_delay(msg: Msg) -> float | None:
    """The delay in seconds the message's NAK asked for (0.0 for an immediate redelivery), or
    None when it was not NAKed (acked, terminated, not settled). Any thread."""
    settled = msg._settled
    if not settled.startswith(_NAK):
        return None
    body = settled[len(_NAK) :].strip()
    if not body:
        return 0.0
    try:
        return float(json.loads(body).get("delay", 0)) / 1e9
    except (ValueError, AttributeError, TypeError):
        return 0.0


def parse_metadata(reply: str) -> Metadata:
    """Parse a JetStream ack subject (v1 or v2, see ``_ack_subject``) into Metadata.

    Raises natspull.Error when *reply* is not an ack subject.
    """
    try:
        fields = ack_subject.parse(reply)
    except ValueError:
        raise Error(f"not a JetStream message: reply subject {reply!r} is not an ack subject") from None
    return Metadata(
        sequence=SequencePair(stream=fields.stream_seq, consumer=fields.consumer_seq),
        num_delivered=fields.delivered,
        num_pending=fields.pending,
        timestamp=datetime.datetime.fromtimestamp(fields.timestamp / 1e9, datetime.timezone.utc),
        stream=fields.stream,
        consumer=fields.consumer,
        domain=fields.domain,
    )


def nak_unacked(msgs: Iterable[Msg]) -> None:
    """NAK every message not acknowledged yet, so the server redelivers it now, not after ack_wait.

    Stops NAKing at the first failure (the connection is gone: the server redelivers after
    ack_wait). Never raises a natspull error; never blocks (the NAKs go through the outbox).
    Any thread. The one NAK routine of the thread and trio paths.
    """
    for msg in msgs:
        if not msg.acked:
            try:
                msg.nak()
            except Error:
                return
