"""The connection's state: one enum and the table of what moves it.

States and events::

                 connected          disconnected
    CONNECTING ─────────────▶ CONNECTED ◀──────────▶ RECONNECTING
        │                      │     reconnected       │
        │ close                │ close                 │ close
        ▼                      ▼                       ▼
        └──────────────────▶ CLOSING ◀─────────────────┘
                               │ closed   (also from CONNECTING, CONNECTED, RECONNECTING:
                               ▼           reconnects ran out, or the connect failed)
                             CLOSED

    forked: every state -> FORKED (a child process after os.fork(); nothing works there)

An event with no row for the current state changes nothing: nats-py reports a disconnect
while it closes, and a late reconnect must not reopen a closing connection. ``close`` comes
from a user thread (``Client.close()``), the rest from the loop thread (nats-py's
callbacks) or the fork hook; :meth:`StateCell.on` applies one under a small leaf lock and says
whether it moved, so that exactly one caller acts on each transition.
"""

from __future__ import annotations

import enum
import threading

__all__ = ["ConnState", "StateCell"]


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"
    FORKED = "forked"

    # Members are singletons: identity hashing (C) instead of Enum's hash of the name (a Python
    # call), for the ``state in ENDED`` test on every publish.
    __hash__ = object.__hash__


_S = ConnState
_ALIVE = (_S.CONNECTING, _S.CONNECTED, _S.RECONNECTING)

# (state, event) -> next state
_TRANSITIONS: dict[tuple[ConnState, str], ConnState] = {
    (_S.CONNECTING, "connected"): _S.CONNECTED,
    (_S.CONNECTED, "disconnected"): _S.RECONNECTING,
    (_S.RECONNECTING, "reconnected"): _S.CONNECTED,
    **{(state, "close"): _S.CLOSING for state in _ALIVE},
    **{(state, "closed"): _S.CLOSED for state in (*_ALIVE, _S.CLOSING)},
    **{(state, "forked"): _S.FORKED for state in ConnState if state is not _S.FORKED},
}
EVENTS = frozenset(event for _, event in _TRANSITIONS)

#: States in which nothing can be sent any more.
ENDED = frozenset({_S.CLOSING, _S.CLOSED, _S.FORKED})


class StateCell:
    """The current :class:`ConnState`: read from any thread, moved by :meth:`on` only."""

    __slots__ = ("_lock", "state")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # leaf: held only to look up and store
        self.state = ConnState.CONNECTING

    def on(self, event: str) -> bool:
        """Apply *event* (one of :data:`EVENTS`); True when the state changed. Any thread."""
        if event not in EVENTS:
            raise ValueError(f"unknown connection event {event!r}")
        with self._lock:
            after = _TRANSITIONS.get((self.state, event))
            if after is None:
                return False
            self.state = after
            return True

    def after_fork_in_child(self) -> None:
        """A child after os.fork(): a fresh lock (the parent's may have been held), then FORKED."""
        self._lock = threading.Lock()
        self.on("forked")
