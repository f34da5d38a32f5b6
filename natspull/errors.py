"""The exceptions natspull raises.

Every error natspull raises on purpose derives from :class:`Error`; no nats-py
or asyncio exception crosses the public API. Bad arguments are the exception
to the rule: they raise the builtin :class:`ValueError` / :class:`TypeError`
at once, naming the argument and what is allowed.

Hierarchy::

    Error
    ├── ConnectError                  could not connect (names the servers tried)
    ├── ConnectionClosedError         the connection is closed (by close() or for good)
    │   └── ForkedError               a client created before os.fork() used in the child
    ├── TimeoutError                  a bounded wait ran out (also a builtin TimeoutError)
    ├── NoHeartbeatError              no traffic for 2 x heartbeat on a pull (recoverable)
    ├── MsgAlreadyAckedError          a second terminal ack of one message
    ├── IteratorClosedError           you stopped/drained the iterator and it is empty
    ├── PermissionError               the server refused a subject (also a builtin PermissionError)
    ├── OrderedConsumerUsageError     an ordered consumer used as it cannot be (ack, two reads, closed)
    ├── OrderedConsumerResetError     an ordered consumer could not be recreated (terminal)
    ├── NotSupportedError             the connected nats-server is too old for what was asked
    └── JetStreamAPIError             the JetStream API answered with an error
        ├── StreamNotFoundError
        ├── ConsumerNotFoundError
        └── ConsumerDeletedError      the consumer went away under a pull

As trio separates ``ClosedResourceError`` (you closed it) from
``BrokenResourceError`` (it broke), natspull keeps three endings apart:
:class:`IteratorClosedError` (you called ``stop()``/``drain()``),
:class:`ConnectionClosedError` / :class:`ConsumerDeletedError` (it broke), and
``StopIteration`` (the clean end of a ``for`` loop).
"""

from __future__ import annotations

import builtins

__all__ = [
    "ConnectError",
    "ConnectionClosedError",
    "ConsumerDeletedError",
    "ConsumerNotFoundError",
    "Error",
    "ForkedError",
    "IteratorClosedError",
    "JetStreamAPIError",
    "MsgAlreadyAckedError",
    "NoHeartbeatError",
    "NotSupportedError",
    "OrderedConsumerResetError",
    "OrderedConsumerUsageError",
    "PermissionError",
    "StreamNotFoundError",
    "TimeoutError",
]


class Error(Exception):
    """Base class of every natspull error."""


class ConnectError(Error):
    """Connecting failed: servers unreachable, TLS or authentication refused."""


class ConnectionClosedError(Error):
    """The connection is closed: by ``Client.close()`` or for good after reconnects ran out."""


class ForkedError(ConnectionClosedError):
    """A natspull object created before ``os.fork()`` was used in the child process.

    A client is a socket, an event-loop thread and locks: ``fork()`` copies none of them usefully
    (the thread is gone, the socket is the parent's). Every call on an inherited Client,
    JetStream, Consumer, iterator, consume() context or Msg raises this at once; the child calls
    ``natspull.connect()`` for its own client. A ConnectionClosedError, so code that reconnects
    when the connection is gone does the right thing.
    """


class TimeoutError(Error, builtins.TimeoutError):
    """A bounded wait ran out. Also an instance of the builtin :class:`TimeoutError`."""


class NoHeartbeatError(Error):
    """No message and no heartbeat for 2 x heartbeat while a pull was outstanding.

    Raised by ``next()`` only with ``error_on_missing_heartbeat=True``; the
    iterator has already re-pulled and stays usable.
    """


class MsgAlreadyAckedError(Error):
    """A terminal acknowledgement (ack, nak, term) was already sent for this message."""


class IteratorClosedError(Error):
    """The iterator was stopped or drained and has nothing left to hand out."""


class PermissionError(Error, builtins.PermissionError):
    """The server refused the operation on a subject for lack of permissions.

    Also an instance of the builtin :class:`PermissionError`, whose name it carries.
    """


class NotSupportedError(Error):
    """The connected nats-server cannot do what was asked: the feature needs a newer one.

    Raised before the request is sent when the server's version or JetStream API level is too
    low; after it when the server refused it for that reason (a node of a cluster that is older
    than the rest: code 412, err_code 10185), refused a field it does not know (2.12+), or
    answered without a field that was asked for (2.10 and 2.11 drop unknown fields silently).
    The message names the feature or field, the version it needs and the one connected.

    Attributes:
        feature: what was asked for (``"consumer reset"``, ``"priority_policy 'prioritized'"``,
            or the name of a config field).
        required: the first nats-server version that has it (``"2.14.0"``), or None if unknown.
        connected: the version of the server connected to (``"2.10.26"``).
    """

    def __init__(self, message: str, *, feature: str, required: str | None, connected: str) -> None:
        self.feature = feature
        self.required = required
        self.connected = connected
        super().__init__(message)


class JetStreamAPIError(Error):
    """The JetStream API answered with an error.

    Attributes:
        code: the HTTP-like status code (404, 400, 503, ...), or None.
        err_code: the JetStream error code (10059 stream not found, ...), or None.
        description: the server's description.
    """

    def __init__(self, description: str, code: int | None = None, err_code: int | None = None) -> None:
        self.description = description
        self.code = code
        self.err_code = err_code
        super().__init__(description)

    def __str__(self) -> str:
        parts = [self.description]
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.err_code is not None:
            parts.append(f"err_code={self.err_code}")
        return " ".join(parts)


class StreamNotFoundError(JetStreamAPIError):
    """The stream does not exist."""


class ConsumerNotFoundError(JetStreamAPIError):
    """The consumer does not exist."""


class ConsumerDeletedError(JetStreamAPIError):
    """The consumer was deleted while a pull was outstanding. Terminal for an iterator."""


class OrderedConsumerUsageError(Error):
    """An ordered consumer was used in a way it does not allow: one of its messages acked (it
    has nothing to acknowledge), a second read while one runs, or a read after ``close()``."""


class OrderedConsumerResetError(Error):
    """An ordered consumer could not be recreated within ``max_reset_attempts``. Terminal for
    the read that raised it; the next read starts again after the last message handed out."""
