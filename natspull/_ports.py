"""The internal interface between the blocking consumers and an async adapter (``natspull.trio``).

The trio adapter drives the same pull engines as the blocking API but waits on the trio side:
it validates a call's options into a ``PullSettings`` (``_engine._settings``), starts the
engine through the blocking object and takes messages from the engine's queue itself. It calls
nothing else of the blocking side that is not public API: only the methods named here, which
:class:`natspull.Consumer` and :class:`natspull.OrderedConsumer` implement (checked by mypy
where the adapter stores them as these protocols; ``tests/unit/test_trio_boundary.py`` fails if
the adapter touches a private attribute of another object).

These names are internal: not exported by ``natspull``, not documented for applications, and
free to change with the adapter.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Optional, Protocol

from ._consumer_types import ConsumerInfo
from ._engine._queue import MsgQueue
from ._engine._settings import PullSettings
from ._iterator import Messages
from ._msg import Msg
from .errors import Error

__all__ = ["ConsumerPort", "FetchResult", "FetchSteps", "OrderedConsumerPort"]

# What a fetch driver sends back: the request's messages, and the error that ended it, if any.
FetchResult = tuple[list[Msg], Optional[Error]]
#: An ordered fetch as a sequence of steps (:meth:`OrderedConsumerPort.fetch_steps`): yields a
#: one-shot request's queue and how long to wait for it, receives a :data:`FetchResult`,
#: returns the messages.
FetchSteps = Generator[tuple[MsgQueue, float], FetchResult, list[Msg]]


class ConsumerPort(Protocol):
    """What an adapter calls on a :class:`natspull.Consumer` besides its public API."""

    @property
    def cached_info(self) -> ConsumerInfo:
        """The info the options are validated against (``pull_settings(consumer.cached_info, ...)``)."""

    def start_messages(self, settings: PullSettings) -> tuple[Messages, MsgQueue]:
        """Start continuous pulls; return the iterator and the queue its engine fills.

        The adapter takes messages from the queue itself and ends the read through the
        iterator (``stop()``/``drain()``). Blocks on subscribing and the first pull; any
        thread but the loop's.
        """

    def start_fetch(self, settings: PullSettings) -> tuple[MsgQueue, float]:
        """Send the one request of one-shot *settings*; return its queue and how long to wait
        for the queue to close (the request's expiry plus a grace for the server's answer).

        The adapter drives ``_modes.fetch_steps`` over the queue. Blocks on subscribing and
        sending the request; any thread but the loop's.
        """


class OrderedConsumerPort(Protocol):
    """What an adapter calls on a :class:`natspull.OrderedConsumer` besides its public API."""

    def start_messages(self, settings: PullSettings) -> tuple[Messages, MsgQueue]:
        """Start an ordered read; return the iterator and the queue its engine fills.

        The queue's ``on_take`` advances the consumer's position (where the next read starts):
        an adapter that moves messages into a buffer of its own first takes it over and calls
        it for each message it hands out. Blocks on creating the consumer and the first pull;
        raises as ``OrderedConsumer.messages()``. Any thread but the loop's.
        """

    def fetch_steps(self, settings: PullSettings) -> FetchSteps:
        """The steps of one ordered fetch of one-shot *settings* (see :data:`FetchSteps`).

        Each step blocks on the server (creating, starting, deleting a consumer): run it on a
        worker thread. On an error other than the ConsumerNotFoundError/ConsumerDeletedError
        sent back, close the generator (it deletes the consumer).
        """
