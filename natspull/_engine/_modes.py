"""``fetch()``: the one-shot pull strategy, and the fetch sequence the thread and trio paths share.

A pull engine runs in one of two modes (:class:`Mode`): continuous (``messages()``,
``consume()``: ``_pull.Continuous``) or one-shot (:class:`OneShot`, ``fetch()``/``next()``):
one request, and the engine is done when the request is - filled, expired (404/408/409
Batch Completed), cut by a leadership change or a reconnect. The engine asks its mode at each
point where the two differ; nothing else in the engine knows which one it runs.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Protocol

from .._msg import Msg
from .._observe import _otel
from ..errors import Error, JetStreamAPIError
from ._queue import MsgQueue

__all__ = ["FETCH_DRAIN_WAIT", "FETCH_GRACE", "Mode", "OneShot", "Ops", "fetch_steps"]

FETCH_GRACE = 1.0  # how long past max_wait a fetch waits for the server's 408
FETCH_DRAIN_WAIT = 6.0  # then, after drain(), how long for what is in flight


class Ops(Protocol):
    """What a mode may do to its engine. Loop thread."""

    @property
    def queue(self) -> MsgQueue: ...

    def pull(self) -> None:
        """Send a pull for whatever the queue reserves."""

    def request_done(self) -> None:
        """The single request is complete: hand out what came, then end."""

    def fail(self, exc: Error) -> None:
        """End the queue with a terminal error."""


class Mode(Protocol):
    """The engine's reactions that differ between continuous pulls and one fetch. Loop thread."""

    def may_pull(self, pulls_sent: int) -> bool: ...

    def on_delivered(self, size: int) -> None:
        """A message of *size* bytes (as the server counts them) arrived for the application."""

    def on_request_ended(self, msgs: int, nbytes: int) -> None:
        """404 No Messages, 408 Request Timeout, 409 Batch Completed (unfilled part given)."""

    def on_leadership_change(self) -> None: ...

    def on_max_bytes(self, msgs: int, nbytes: int, describe: str) -> None:
        """409 Message Size Exceeds MaxBytes; *describe* is the error text if it is fatal."""

    def on_unknown_status(self, code: str, description: str) -> None: ...

    def on_pin_lost(self, msgs: int, nbytes: int, exact: bool) -> None:
        """423: the pin the request carried is not the group's pin; the engine forgot it.
        *exact*: the unfilled part (*msgs*, *nbytes*) is known; else the whole request."""

    def on_heartbeat_missed(self, error: Error) -> None:
        """Two heartbeat intervals passed in silence while a request was outstanding."""

    def on_no_responders(self) -> None:
        """503 while the consumer exists (JetStream away)."""

    def on_reconnected(self) -> None: ...

    def on_consumer_gone(self, error: Error) -> None:
        """The consumer was deleted (409) or is not found (503); *error* says which."""

    async def on_stopped(self) -> None:
        """Continuous pulls: the engine stopped (inbox down, queue finished, events closed)."""


class OneShot:
    """``fetch()``: one request for ``flow.max_msgs`` messages (and bytes), then done."""

    __slots__ = ("_ops", "_pulls_allowed", "received", "received_bytes")

    def __init__(self, ops: Ops) -> None:
        self._ops = ops
        self.received = 0  # messages received for the single request
        self.received_bytes = 0  # and their size as the server counts it
        self._pulls_allowed = 1  # 2 after a 423 refused the first one

    def may_pull(self, pulls_sent: int) -> bool:
        return pulls_sent < self._pulls_allowed

    def on_delivered(self, size: int) -> None:
        self.received += 1
        self.received_bytes += size
        flow = self._ops.queue.flow
        # A request whose bytes are used up exactly ends without a status message
        # (nats-server consumer.go, nextWaiting): count it done here, as nats.go does.
        if self.received >= flow.max_msgs or (flow.max_bytes and self.received_bytes >= flow.max_bytes):
            self._ops.request_done()

    def on_request_ended(self, msgs: int, nbytes: int) -> None:
        self._ops.request_done()

    def on_leadership_change(self) -> None:
        self._ops.request_done()

    def on_max_bytes(self, msgs: int, nbytes: int, describe: str) -> None:
        max_bytes = self._ops.queue.flow.max_bytes
        # Fatal when nothing of the request could be filled: no fetch could ever get it.
        if (max_bytes and nbytes >= max_bytes) or (not self.received and not nbytes):
            self._ops.fail(JetStreamAPIError(describe, 409))
            return
        self._ops.request_done()

    def on_unknown_status(self, code: str, description: str) -> None:
        self._ops.fail(JetStreamAPIError(description or f"pull failed with status {code}", code=int(code)))

    def on_pin_lost(self, msgs: int, nbytes: int, exact: bool) -> None:
        # The request carried a stale pin: ask once more, without it, at once (unless
        # something came already: then the fetch returns that).
        if self.received or self._pulls_allowed > 1:
            self._ops.request_done()
            return
        self._pulls_allowed = 2
        self._ops.queue.forget_outstanding()
        self._ops.pull()

    def on_heartbeat_missed(self, error: Error) -> None:
        # The request is presumed lost: return what came, or say why nothing did.
        if self.received:
            self._ops.request_done()
        else:
            self._ops.fail(error)

    def on_no_responders(self) -> None:
        self._ops.fail(JetStreamAPIError("JetStream did not answer the pull request (no responders)", 503))

    def on_reconnected(self) -> None:
        self._ops.request_done()

    def on_consumer_gone(self, error: Error) -> None:
        self._ops.fail(error)

    async def on_stopped(self) -> None:
        pass  # (a one-shot engine ends with its request, not through a stop)


def fetch_steps(queue: MsgQueue, wait: float) -> Generator[float, bool, list[Msg]]:
    """The sequence of one ``fetch()``, for a driver that knows how to wait (thread or trio).

    Yields how long to wait for *queue* to close; the driver sends back whether it closed.
    Returns what the request brought (telemetry on: a ``receive`` span from the start to now,
    see ``_otel.Telemetry.received``). The driver throws an exception it got while waiting
    (e.g. KeyboardInterrupt, ``trio.Cancelled``) into the generator, which hands everything
    back to the server (``queue.stop()`` NAKs it) and re-raises.
    """
    started = time.time_ns()
    try:
        if not (yield wait):
            queue.drain()  # the server never answered: keep what is in flight, then end
            yield FETCH_DRAIN_WAIT
        msgs = queue.take_all()
    except BaseException:
        queue.stop()
        raise
    telemetry = _otel.current()
    if telemetry is not None:
        telemetry.received(*queue.source, msgs, started)
    return msgs
