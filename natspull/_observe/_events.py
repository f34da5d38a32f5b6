"""Consumer events: what happens to a running pull iterator or ``consume()`` context.

A pull engine (``_pull.py``, on the loop thread) turns what it sees - connection callbacks,
status messages, missed heartbeats, pins - into :class:`ConsumerEvent` objects. It logs each
(logger ``"natspull"``, at :data:`LEVELS`) and, when the application passed ``on_event``,
hands it to an :class:`EventThread`, which runs the callback on its own thread
``natspull-events-N``: the loop only appends to a queue, so a slow callback never holds up
pulls or messages. Events reach the callback one at a time, in the order they happened.

The thread ends after the engine is done (stopped, drained, failed, closed) and everything
handed over before has run.
"""

from __future__ import annotations

import itertools
import logging
import queue as _queue_module
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._transport._loop import keep_signals_for_main_thread

__all__ = ["KINDS", "LEVELS", "ConsumerEvent", "EventThread", "check_on_event", "log_event"]

log = logging.getLogger("natspull")

_event_ids = itertools.count(1)

#: kind -> logging level of its log line. The docstring of :class:`ConsumerEvent` says what
#: each kind means.
LEVELS: dict[str, int] = {
    "connected": logging.INFO,
    "disconnected": logging.WARNING,
    "reconnected": logging.INFO,
    "heartbeat_missed": logging.WARNING,
    "status": logging.WARNING,
    "leadership_change": logging.INFO,
    "pinned": logging.INFO,
    "pin_lost": logging.INFO,
    "reset": logging.WARNING,
    "consumer_deleted": logging.WARNING,
    "handler_timeout": logging.WARNING,
}

KINDS = frozenset(LEVELS)


@dataclass(frozen=True)
class ConsumerEvent:
    """Something that happened to a running ``messages()`` iterator or ``consume()`` context
    (its ``on_event`` callback). Immutable.

    ``kind`` is one of:

    * ``"connected"``: the iterator subscribed and sent its first pull (always the first event);
    * ``"disconnected"``: the connection dropped; its pulls died with it; the client reconnects;
    * ``"reconnected"``: the connection is back; the engine pulled again;
    * ``"heartbeat_missed"``: no idle heartbeat for ``2 x heartbeat`` while connected (a
      frozen or partitioned server); the engine pulled again;
    * ``"status"``: a status the pulls go on after (``code``, ``description``), e.g. 409
      ``Exceeded MaxWaiting``, ``Exceeded MaxRequestBatch``, ``Server Shutdown``;
    * ``"leadership_change"``: 409 ``Leadership Change``: the consumer's leader moved; the
      outstanding pulls are void and the engine pulled again;
    * ``"pinned"``: this client is now the pinned client of its priority group (``pin_id``);
    * ``"pin_lost"``: the pin moved on (423 ``description``, or unpinned by this client); the
      engine forgot it (``pin_id``: the one lost) and pulled again at once, without it;
    * ``"reset"``: an ordered consumer recreates its server-side consumer (``description``
      says why);
    * ``"consumer_deleted"``: the consumer is gone (409 ``Consumer Deleted``, or a 503 no
      responders followed by "consumer not found": ``code`` 404). Handed over before the
      iterator raises ConsumerDeletedError / ConsumerNotFoundError (an ordered consumer
      resets instead).
    * ``"handler_timeout"``: a ``consume()`` handler ran past ``handler_timeout``; its
      unsettled messages were NAKed for redelivery (``description`` names the subject and the
      worker thread; the log line also has the thread's stack).

    ``stream`` and ``consumer`` name the consumer; ``code`` is the status code (0 when there
    is none).
    """

    kind: str
    stream: str
    consumer: str
    code: int = 0
    description: str = ""
    pin_id: str | None = None


def check_on_event(on_event: object) -> None:
    """Raise TypeError unless *on_event* is a callable or None."""
    if on_event is not None and not callable(on_event):
        raise TypeError(f"on_event must be callable or None, got {type(on_event).__name__}")


def log_event(event: ConsumerEvent) -> None:
    """Log *event* on logger ``"natspull"`` at its kind's level. Any thread."""
    level = LEVELS.get(event.kind, logging.INFO)
    if not log.isEnabledFor(level):
        return
    details = " ".join(
        part
        for part in (
            str(event.code) if event.code else "",
            event.description,
            f"pin {event.pin_id}" if event.pin_id else "",
        )
        if part
    )
    log.log(
        level,
        "natspull: %s/%s: %s%s",
        event.stream,
        event.consumer,
        event.kind,
        f" ({details})" if details else "",
    )


class EventThread:
    """Runs ``on_event(event)`` for each :class:`ConsumerEvent`, in order, on a thread
    ``natspull-events-N``: the loop thread only hands events over (:meth:`put`).

    Unbounded, since events are rare and the loop must never wait for the application: a
    callback that blocks delays only the events after it.
    """

    _CLOSE = object()

    def __init__(self, on_event: Callable[[ConsumerEvent], Any]) -> None:
        self._on_event = on_event
        # SimpleQueue is thread-safe on its own: no natspull lock here.
        self._queue: _queue_module.SimpleQueue[object] = _queue_module.SimpleQueue()
        self._closed = False  # set once by close(); a later put() is dropped
        self.thread = threading.Thread(
            target=self._run, name=f"natspull-events-{next(_event_ids)}", daemon=True
        )
        self.thread.start()

    def put(self, event: ConsumerEvent) -> None:
        """Hand *event* over. Any thread (the loop's); never blocks."""
        if not self._closed:
            self._queue.put(event)

    def close(self) -> None:
        """Run what was handed over, then end the thread. Any thread; never blocks.

        This method is idempotent. Additional calls have no effect.
        """
        if not self._closed:
            self._closed = True
            self._queue.put(self._CLOSE)

    def _run(self) -> None:
        keep_signals_for_main_thread()
        while True:
            event = self._queue.get()
            if event is self._CLOSE:
                return
            try:
                self._on_event(event)  # type: ignore[arg-type]
            except Exception:
                log.exception("natspull: on_event raised")
