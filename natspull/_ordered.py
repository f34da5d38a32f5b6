"""``JetStream.ordered_consumer()``: read a stream in order, surviving every fault.

An :class:`OrderedConsumer` owns no server-side state the application sees: each read
(a ``messages()`` iterator, ``consume()``, a run of ``fetch()``/``next()`` calls) goes
through an ephemeral consumer natspull creates, checks and recreates (``_engine/_ordered_mode``),
starting after the last message handed to the application (its ``Position``). A read's
consumers are named ``<random>_<n>``, n counting up with every reset.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ._admin import MAX_SEQUENCE, Admin
from ._consumer import wait_fetch
from ._consumer_types import check_time
from ._engine._modes import FETCH_GRACE
from ._engine._ordered_mode import Cursor, OrderedSpec, Position, ordered_engine
from ._engine._pull import PullEngine, start_engine
from ._engine._queue import MsgQueue, State
from ._engine._settings import PullSettings, fetch_settings, pull_settings
from ._iterator import Messages
from ._msg import Msg
from ._observe._events import ConsumerEvent
from ._pool import ConsumeContext, ConsumeOptions
from ._ports import FetchResult, FetchSteps
from ._types import DeliverPolicy, ReplayPolicy
from ._validate import check_int, check_name, check_number
from .errors import (
    ConsumerDeletedError,
    ConsumerNotFoundError,
    Error,
    OrderedConsumerResetError,
    OrderedConsumerUsageError,
    TimeoutError,
)

__all__ = [
    "OrderedConsumer",
    "OrderedMessages",
    "check_max_reset_attempts",
    "ordered_spec",
]

log = logging.getLogger("natspull")

DEFAULT_INACTIVE_THRESHOLD = 10.0  # seconds: an abandoned ordered consumer is gone soon after


def _policy(name: str, value: Any, kind: type[DeliverPolicy] | type[ReplayPolicy]) -> str:
    if isinstance(value, kind):
        return str(value.value)
    allowed = ", ".join(str(p.value) for p in kind)
    if isinstance(value, str) and value in {str(p.value) for p in kind}:
        return value
    raise ValueError(f"{name} must be a {kind.__name__} or one of {allowed}, got {value!r}")


def _filters(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"filter_subjects must be a str, a list of str or None, got {type(value).__name__}")
    for item in items:
        if not isinstance(item, str) or not item or any(c in item for c in " \t\r\n"):
            raise ValueError(f"filter_subjects: {item!r} is not a subject (non-empty, no whitespace)")
    return list(items)


def ordered_spec(
    *,
    filter_subjects: Any,
    deliver_policy: Any,
    opt_start_seq: Any,
    opt_start_time: Any,
    headers_only: Any,
    replay_policy: Any,
    inactive_threshold: Any,
) -> OrderedSpec:
    """Check ``ordered_consumer()``'s options (ValueError/TypeError naming them)."""
    if opt_start_seq is not None:
        opt_start_seq = check_int("opt_start_seq", opt_start_seq, maximum=MAX_SEQUENCE)
    if opt_start_time is not None:
        if not isinstance(opt_start_time, datetime.datetime):
            raise TypeError(f"opt_start_time must be an aware datetime, got {type(opt_start_time).__name__}")
        opt_start_time = check_time("opt_start_time", opt_start_time)
    if deliver_policy is None:  # inferred from a starting point, else all
        if opt_start_seq is not None:
            deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        elif opt_start_time is not None:
            deliver_policy = DeliverPolicy.BY_START_TIME
        else:
            deliver_policy = DeliverPolicy.ALL
    policy = _policy("deliver_policy", deliver_policy, DeliverPolicy)
    if policy == "last_per_subject":
        raise ValueError("deliver_policy last_per_subject is not supported by ordered consumers")
    if (policy == "by_start_sequence") != (opt_start_seq is not None):
        raise ValueError("opt_start_seq is required with deliver_policy by_start_sequence, and only with it")
    if (policy == "by_start_time") != (opt_start_time is not None):
        raise ValueError("opt_start_time is required with deliver_policy by_start_time, and only with it")
    if not isinstance(headers_only, bool):
        raise TypeError(f"headers_only must be a bool, got {type(headers_only).__name__}")
    return OrderedSpec(
        filter_subjects=_filters(filter_subjects),
        deliver_policy=policy,
        opt_start_seq=opt_start_seq,
        opt_start_time=opt_start_time,
        headers_only=headers_only,
        replay_policy=_policy("replay_policy", replay_policy, ReplayPolicy),
        inactive_threshold=check_number("inactive_threshold", inactive_threshold, exclusive=True),
    )


class OrderedMessages(Messages):
    """``OrderedConsumer.messages()``: a :class:`Messages` iterator whose messages come strictly
    in stream order, each once. ``stop()``/``drain()`` (and leaving a ``with`` block) delete
    its server-side consumer. ``stats().resets`` counts its recreations."""

    def __init__(self, engine: PullEngine) -> None:
        super().__init__(engine, engine.queue)

    def __repr__(self) -> str:
        return f"<natspull.OrderedMessages {self._engine.stream} {self._queue.state.value}>"


class OrderedConsumer:
    """Reads a stream in order: every matching stream sequence once, increasing, no gap.

    Get one from :meth:`JetStream.ordered_consumer`. Only one read runs at a time: a
    ``messages()`` iterator or ``consume()`` that has not ended, or a ``fetch()`` in
    progress, makes another raise OrderedConsumerUsageError. Each read continues after the last
    message this object handed out. Its messages cannot be acked (OrderedConsumerUsageError).
    ``close()`` (or the end of a ``with`` block) ends the read and deletes the server-side
    consumer. Every method may be called from any thread but the client's loop thread.
    """

    def __init__(self, admin: Admin, stream: str, spec: OrderedSpec, max_reset_attempts: int | None) -> None:
        """Private: use ``JetStream.ordered_consumer()``."""
        self._admin = admin
        self._link = admin.link
        self.stream: str = check_name("stream", stream)
        self._spec = spec
        self._max_reset_attempts = max_reset_attempts
        # The last message handed out, where the next read starts: advanced by every read's
        # queue (on_take), or by natspull.trio's iterator as tasks receive messages.
        self._position = Position()
        # _lock guards _reader, _fetching, _fetch_cursor, _closed. A leaf: never held across a
        # network call or a wait.
        self._lock = threading.Lock()
        self._reader: OrderedMessages | ConsumeContext | None = None
        self._reader_engine: PullEngine | None = None
        self._fetching = False
        self._fetch_cursor: Cursor | None = None  # the consumer fetch() reads, while valid
        self._closed = False

    def __repr__(self) -> str:
        return f"<natspull.OrderedConsumer {self.stream}>"

    def __enter__(self) -> OrderedConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def last_sequence(self) -> int:
        """The stream sequence of the last message handed out (0: none yet)."""
        return self._position.stream_seq

    # ------------------------------------------------------------ the consumer

    def _create(self) -> Cursor:
        """Create a consumer after the last message handed out. Blocks on the server."""
        name = f"{secrets.token_hex(8)}_1"
        after = self.last_sequence
        api, body = self._spec.create(self.stream, name, after)
        self._admin.request(api, body)
        return Cursor(name, after)

    def _delete(self, name: str) -> None:
        try:
            self._admin.request(f"CONSUMER.DELETE.{self.stream}.{name}")
        except (ConsumerNotFoundError, ConsumerDeletedError):
            pass
        except Error as exc:
            log.debug("natspull: %s/%s: delete failed: %s", self.stream, name, exc)

    def _begin(self) -> None:
        """Lock held: refuse a second concurrent read, or a read after close()."""
        if self._closed:
            raise OrderedConsumerUsageError(f"ordered consumer on {self.stream} is closed")
        engine = self._reader_engine
        if self._fetching or (engine is not None and engine.queue.state is not State.CLOSED):
            raise OrderedConsumerUsageError(f"ordered consumer on {self.stream}: another read is running")
        if engine is not None:
            # What is still taken from the ended read (a drain hands out its rest) no longer moves
            # the position: the next read starts after what the ended one handed out so far.
            engine.queue.on_take = None
        self._reader = self._reader_engine = None

    def _engine(self, cursor: Cursor, settings: PullSettings) -> PullEngine:
        return start_engine(
            self._link,
            settings,
            lambda events: ordered_engine(
                self._link,
                self._admin.prefix,
                self.stream,
                self._spec,
                cursor,
                self._position,
                settings,
                api_timeout=self._admin.timeout,
                max_reset_attempts=self._max_reset_attempts,
                events=events,
            ),
        )

    # -------------------------------------------------------------- continuous

    def _start_continuous(self, settings: PullSettings) -> PullEngine:
        with self._lock:
            self._begin()
            self._fetching = True  # reserve: no other read starts meanwhile
            stale, self._fetch_cursor = self._fetch_cursor, None
        try:
            if stale is not None:
                self._delete(stale.name)
            return self._engine(self._create(), settings)
        finally:
            with self._lock:
                self._fetching = False

    def messages(
        self,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        expires: float = 30.0,
        heartbeat: float | None = None,
        threshold_messages: int | None = None,
        threshold_bytes: int | None = None,
        stop_after: int | None = None,
        on_event: Callable[[ConsumerEvent], Any] | None = None,
    ) -> OrderedMessages:
        """Start reading and return a blocking iterator, as :meth:`Consumer.messages`.

        Blocks on: creating the consumer and the first pull. Raises ValueError/TypeError for
        bad options, StreamNotFoundError, JetStreamAPIError (e.g. a filter outside the
        stream), OrderedConsumerUsageError (another read runs, or closed). The iterator raises
        OrderedConsumerResetError when the consumer could not be recreated within
        ``max_reset_attempts``. ``on_event`` as for :meth:`Consumer.messages`, plus ``reset``
        events. Any thread but the loop's.
        """
        settings = pull_settings(
            max_messages=max_messages,
            max_bytes=max_bytes,
            expires=expires,
            heartbeat=heartbeat,
            threshold_messages=threshold_messages,
            threshold_bytes=threshold_bytes,
            stop_after=stop_after,
            on_event=on_event,
        )
        return self.start_messages(settings)[0]

    def start_messages(self, settings: PullSettings) -> tuple[OrderedMessages, MsgQueue]:
        """Internal (``_ports.OrderedConsumerPort``, for natspull.trio): start a read with
        *settings*; return the iterator and its queue (whose ``on_take`` advances the position:
        an adapter that takes ahead takes it over). Blocks on creating the consumer and the
        first pull. Any thread but the loop's."""
        engine = self._start_continuous(settings)
        reader = OrderedMessages(engine)
        with self._lock:
            self._reader, self._reader_engine = reader, engine
        return reader, engine.queue

    def consume(
        self,
        handler: Callable[[Msg], Any],
        *,
        error_handler: Callable[[BaseException, Msg], Any] | None = None,
        on_event: Callable[[ConsumerEvent], Any] | None = None,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        expires: float = 30.0,
        heartbeat: float | None = None,
        threshold_messages: int | None = None,
        threshold_bytes: int | None = None,
    ) -> ConsumeContext:
        """Run ``handler(msg)`` for every message, one at a time and in order, on one thread
        ``natspull-worker-N``. A handler exception is logged and given to
        ``error_handler(exc, msg)``; the read goes on with the next message (nothing is
        redelivered: there are no acks). Returns a :class:`ConsumeContext`; its stop()/drain()
        delete the consumer. ``on_event`` as for :meth:`messages`. Blocks on creating the
        consumer and the first pull.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if error_handler is not None and not callable(error_handler):
            raise TypeError(f"error_handler must be callable or None, got {type(error_handler).__name__}")
        settings = pull_settings(
            max_messages=max_messages,
            max_bytes=max_bytes,
            expires=expires,
            heartbeat=heartbeat,
            threshold_messages=threshold_messages,
            threshold_bytes=threshold_bytes,
            on_event=on_event,
        )

        def run(msg: Msg) -> None:  # (the queue's take advanced the position)
            try:
                handler(msg)
            except Exception as exc:
                log.warning("natspull: ordered consumer on %s: handler failed: %r", self.stream, exc)
                if error_handler is not None:
                    error_handler(exc, msg)

        engine = self._start_continuous(settings)
        context = ConsumeContext(engine, engine.queue, ConsumeOptions(run, acks=False), engine.events)
        with self._lock:
            self._reader, self._reader_engine = context, engine
        return context

    # ------------------------------------------------------------- one request

    def fetch(
        self, batch: int = 1, *, max_wait: float = 30.0, max_bytes: int | None = None, no_wait: bool = False
    ) -> list[Msg]:
        """One pull request, as :meth:`Consumer.fetch`: up to *batch* messages, in order.

        The consumer is created by the first call and reused while it stays in step; after a
        gap, a reconnect or when it expired (``inactive_threshold``) between two calls, it is
        recreated after the last message handed out. Blocks on the request, at most
        *max_wait* (plus a grace for the server's answer, and the consumer's creation).
        Raises OrderedConsumerUsageError (another read runs), OrderedConsumerResetError (the
        consumer could not be recreated), StreamNotFoundError, JetStreamAPIError, ConnectionClosedError.
        """
        steps = self.fetch_steps(
            fetch_settings(batch=batch, max_wait=max_wait, max_bytes=max_bytes, no_wait=no_wait)
        )
        try:
            queue, wait = next(steps)
            while True:
                try:
                    got: FetchResult = (wait_fetch(queue, wait), None)
                except (ConsumerNotFoundError, ConsumerDeletedError) as exc:
                    got = ([], exc)  # expired or deleted: recreated by the next step
                except BaseException:
                    steps.close()  # interrupted: the consumer is deleted
                    raise
                queue, wait = steps.send(got)
        except StopIteration as done:
            msgs: list[Msg] = done.value
            return msgs

    def fetch_steps(self, settings: PullSettings) -> FetchSteps:
        """The sequence of one :meth:`fetch`, for a driver that knows how to wait (thread or trio;
        internal: ``_ports.OrderedConsumerPort``).

        Yields a one-shot request's queue and how long to wait for it; the driver sends back
        what it brought (``_consumer.wait_fetch`` or the trio side's) with the
        ConsumerNotFoundError/ConsumerDeletedError that ended it, if any, and on any other
        error closes the generator (which deletes the consumer) and raises it. Returns the
        messages. Raises OrderedConsumerUsageError at the first step when another read runs. Each
        step blocks on the server (creating, starting, deleting the consumer): a trio driver
        runs the steps on a worker thread.
        """
        with self._lock:
            self._begin()
            self._fetching = True
        try:
            deadline = time.monotonic() + settings.expires
            attempts = 0
            while True:
                cursor = self._fetch_cursor
                if cursor is None:
                    cursor = self._fetch_cursor = self._create()
                engine = self._engine(cursor, settings)
                try:
                    msgs, gone = yield engine.queue, settings.expires + FETCH_GRACE
                except BaseException:
                    self._fetch_cursor = None  # interrupted: where it stands is unknown
                    self._delete(cursor.name)
                    raise
                if gone is None and not cursor.broken:
                    return msgs
                self._fetch_cursor = None
                if gone is None:
                    self._delete(cursor.name)
                if msgs or settings.no_wait:
                    return msgs
                attempts += 1
                remaining = deadline - time.monotonic()
                limit = self._max_reset_attempts
                if limit is not None and attempts > limit:
                    raise OrderedConsumerResetError(
                        f"ordered consumer on {self.stream}: recreated {limit} times in one fetch: "
                        f"{gone or 'gaps'}"
                    )
                if remaining <= 0:
                    return msgs
                settings = dataclasses.replace(settings, expires=max(remaining, 0.001))
        finally:
            with self._lock:
                self._fetching = False

    def next(self, timeout: float = 30.0) -> Msg:
        """The next message in order, waiting at most *timeout* seconds.

        Raises natspull.TimeoutError when none arrives in time, and whatever :meth:`fetch`
        raises. Any thread but the loop's.
        """
        timeout = check_number("timeout", timeout)
        msgs = self.fetch(1, max_wait=timeout, no_wait=timeout == 0)
        if not msgs:
            raise TimeoutError(f"no message from the ordered consumer on {self.stream} within {timeout:g} s")
        return msgs[0]

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        """End the running read (as its ``stop()``) and delete the server-side consumer.

        Blocks on the delete request (at most the JetStream context's timeout; a failure is
        logged: the consumer's ``inactive_threshold`` removes it). Idempotent. Any thread but
        the loop's.
        """
        with self._lock:
            self._closed = True
            reader, engine = self._reader, self._reader_engine
            cursor, self._fetch_cursor = self._fetch_cursor, None
        if reader is not None and engine is not None:
            reader.stop()
            self._delete(engine.consumer)
        if cursor is not None:
            self._delete(cursor.name)


def check_max_reset_attempts(value: Any) -> int | None:
    if value is None:
        return None
    attempts: int = check_int("max_reset_attempts", value, maximum=1_000_000)
    return attempts
