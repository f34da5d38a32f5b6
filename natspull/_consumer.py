"""A bound pull consumer: fetch, next, the messages() iterator and consume()."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Hashable
from typing import Any

from ._admin import Admin
from ._consumer_types import ConsumerInfo, PauseState, check_group
from ._engine._lease import LEASE_FRACTION, LeaseKeeper
from ._engine._modes import FETCH_GRACE, fetch_steps
from ._engine._pull import PullEngine, start_engine
from ._engine._queue import MsgQueue
from ._engine._retry import DEFAULT_RETRY, Backoff
from ._engine._settings import PullSettings, fetch_settings, pull_settings
from ._iterator import Messages
from ._msg import Msg
from ._observe._events import ConsumerEvent, EventThread
from ._pool import ConsumeContext, ConsumeOptions
from ._server_features import CONSUMER_UNPIN
from ._types import AckPolicy
from ._validate import check_int, check_number
from .errors import JetStreamAPIError, TimeoutError

__all__ = ["Consumer", "wait_fetch"]

#: The server's ack_wait when a consumer's info does not say (nats-server's default).
DEFAULT_ACK_WAIT = 30.0
#: With consume(key=...), a key waits for a redelivery its delay + ack_wait + this long.
KEY_GRACE = 5.0


def wait_fetch(queue: MsgQueue, wait: float) -> list[Msg]:
    """Wait for a one-shot request's *queue* to close (at most *wait*, then a drain) and return
    what it brought. Blocks the calling thread; any thread but the loop's."""
    # The shared sequence (_fetch.fetch_steps), driven by blocking waits on the queue; an
    # interruption (e.g. KeyboardInterrupt) is thrown in and hands everything back.
    steps = fetch_steps(queue, wait)
    timeout = next(steps)
    while True:
        try:
            closed = queue.wait_closed(timeout)
        except BaseException as exc:
            steps.throw(exc)
            raise  # (fetch_steps re-raises what is thrown in)
        try:
            timeout = steps.send(closed)
        except StopIteration as done:
            msgs: list[Msg] = done.value
            return msgs


class Consumer:
    """A pull consumer on a stream. Get one from ``JetStream.consumer()`` or ``add_consumer()``.

    Every method may be called from any thread but the client's loop thread.
    """

    def __init__(self, admin: Admin, info: ConsumerInfo) -> None:
        """Private: use ``JetStream.consumer()`` / ``JetStream.add_consumer()``.

        *admin* carries the JetStream context's connection, API prefix and timeout: the
        timeout bounds :meth:`info` and the management calls.
        """
        if info.config.deliver_subject:
            raise JetStreamAPIError(
                f"consumer {info.stream_name}/{info.name} is a push consumer; natspull needs a pull consumer"
            )
        self._admin = admin
        self._link = admin.link
        self._prefix = admin.prefix
        self.stream: str = info.stream_name
        self.name: str = info.name
        self._info = info
        # The Nats-Pin-Id this object's pulls last saw, per group (pinned_client): a new fetch,
        # iterator or consume() starts with it. Written by the engines on the loop thread, read
        # by user threads starting one: single dict operations, no lock needed.
        self._pins: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<natspull.Consumer {self.stream}/{self.name}>"

    @property
    def cached_info(self) -> ConsumerInfo:
        """The ConsumerInfo from when this object was created or last refreshed by :meth:`info`."""
        return self._info

    def info(self) -> ConsumerInfo:
        """Fetch the consumer's current info (num_pending, num_ack_pending, ...).

        Blocks on the server, at most the JetStream context's timeout. Raises
        ConsumerNotFoundError, natspull.TimeoutError, ConnectionClosedError. Any thread but
        the loop's.
        """
        self._info = self._admin.consumer_info(self.stream, self.name)
        return self._info

    def _engine(self, settings: PullSettings) -> PullEngine:
        return start_engine(self._link, settings, lambda events: self._build_engine(settings, events))

    def _build_engine(self, settings: PullSettings, events: EventThread | None) -> PullEngine:
        engine = PullEngine(
            self._link, self._prefix, self.stream, self.name, settings, pin_store=self._pins, events=events
        )
        interval = self._lease_interval()
        if not settings.one_shot and settings.max_lease != 0 and interval is not None:
            # Leased from arrival (messages(), consume(), natspull.trio): see _engine/_lease.py.
            engine.lease = LeaseKeeper(
                engine.loop_thread,
                interval,
                settings.max_lease,
                ack_wait=self._ack_wait(),
                ack_all=self._info.config.ack_policy == AckPolicy.ALL,
            )
            engine.queue.stamp = True
        return engine

    # ------------------------------------------------------------- one request

    def fetch(
        self,
        batch: int = 1,
        *,
        max_wait: float = 30.0,
        max_bytes: int | None = None,
        no_wait: bool = False,
        heartbeat: float | None = None,
        group: str | None = None,
        min_pending: int | None = None,
        min_ack_pending: int | None = None,
        priority: int | None = None,
    ) -> list[Msg]:
        """Send one pull request and return what it brought: up to *batch* messages.

        Blocks on: the request, at most *max_wait* seconds (plus a short grace
        for the server's answer). Returns fewer messages, or none, when the
        request expires first; with ``no_wait=True`` it returns what is
        available at once. With *max_bytes* it returns as soon as the
        messages' sizes (subject + reply + header block + data, as the server
        counts them) reach it or the next message does not fit. ``heartbeat`` (0.5-30 s, at
        most max_wait/2) asks for idle heartbeats: when two intervals pass in silence the
        fetch ends early (NoHeartbeatError if nothing came). Priority groups: see
        :meth:`messages` (``group`` and its options); on a ``pinned_client`` consumer the pulls
        of this Consumer object share the pin they last saw (so the next fetch sends it), and
        a 423 (the pin moved on) re-sends the request once, at once, without it. Raises
        ValueError/TypeError for bad arguments, ConsumerDeletedError, ConsumerNotFoundError,
        JetStreamAPIError (e.g. a message larger than *max_bytes*), NoHeartbeatError,
        ConnectionClosedError. Any thread but the loop's.
        """
        settings = fetch_settings(
            self._info,
            batch=batch,
            max_wait=max_wait,
            max_bytes=max_bytes,
            no_wait=no_wait,
            heartbeat=heartbeat,
            group=group,
            min_pending=min_pending,
            min_ack_pending=min_ack_pending,
            priority=priority,
        )
        return wait_fetch(*self.start_fetch(settings))

    def start_fetch(self, settings: PullSettings) -> tuple[MsgQueue, float]:
        """Internal (``_ports.ConsumerPort``, for natspull.trio): send the one request of
        one-shot *settings*; return its queue and how long to wait for it to close
        (``max_wait`` plus a grace for the server's answer). Blocks on the subscription and
        the request. Any thread but the loop's."""
        engine = self._engine(settings)
        return engine.queue, settings.expires + FETCH_GRACE

    def next(
        self,
        timeout: float = 30.0,
        *,
        group: str | None = None,
        min_pending: int | None = None,
        min_ack_pending: int | None = None,
        priority: int | None = None,
    ) -> Msg:
        """Fetch one message, waiting at most *timeout* seconds.

        Raises natspull.TimeoutError when none arrives in time, and whatever
        :meth:`fetch` raises. Priority-group options as :meth:`fetch`. Any thread but the loop's.
        """
        timeout = check_number("timeout", timeout)
        msgs = self.fetch(
            1,
            max_wait=timeout,
            no_wait=timeout == 0,
            group=group,
            min_pending=min_pending,
            min_ack_pending=min_ack_pending,
            priority=priority,
        )
        if not msgs:
            raise TimeoutError(f"no message from {self.stream}/{self.name} within {timeout:g} s")
        return msgs[0]

    # ------------------------------------------------------------ continuous

    def messages(
        self,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        expires: float | None = None,
        heartbeat: float | None = None,
        threshold_messages: int | None = None,
        threshold_bytes: int | None = None,
        stop_after: int | None = None,
        error_on_missing_heartbeat: bool = False,
        on_event: Callable[[ConsumerEvent], Any] | None = None,
        group: str | None = None,
        min_pending: int | None = None,
        min_ack_pending: int | None = None,
        priority: int | None = None,
        max_lease: float | None = 3600.0,
    ) -> Messages:
        """Start continuous pulls and return a blocking iterator over the messages.

        Options follow nats.go: ``max_messages`` (default 500) or ``max_bytes``
        bound what is requested and not yet handed out (given both, ``max_messages`` does
        and every pull asks for at most ``max_bytes``); a new pull for the
        difference goes out when that drops below the threshold (default:
        half); pull requests expire after ``expires`` (default 30 s, min 1 s)
        with idle heartbeats every ``heartbeat`` (default expires/2, at most
        30 s); ``stop_after`` ends the iterator after that many messages.

        Priority groups (ADR-42), checked against :attr:`cached_info` before anything is
        sent: a consumer with groups needs ``group`` (one of them). ``min_pending`` /
        ``min_ack_pending`` (``overflow`` policy) have the server serve these pulls only while
        the consumer has at least that many messages pending / unacknowledged; ``priority``
        (0-9, ``prioritized`` policy) serves lower numbers first. With ``pinned_client`` the
        iterator keeps the pin it is given (``Nats-Pin-Id``; shared with the other pulls of this
        Consumer object) and sends it on every pull; a 423
        makes it forget the pin and pull again at once; ``expires`` then defaults to half of
        the consumer's ``priority_timeout`` (1-30 s) - a larger value is refused - so that an
        idle iterator renews its pin in time.

        Leases: natspull keeps every message it holds from being redelivered, from its
        arrival: one timer on the loop thread sends ``+WPI`` to buffered messages before half
        of the consumer's ``ack_wait`` passes (the smallest of ack_wait and its ``backoff``
        values), for at most ``max_lease`` seconds after the arrival (default an hour; None:
        no bound; ``0`` turns leases off), so a message never comes back because it waited
        in the buffer. A message handed out by ``next()`` and not settled is extended for
        ``ack_wait`` seconds after ``next()`` - the application always has one whole ack_wait
        from ``next()`` - and then let go: the server redelivers it ack_wait after the last
        ``+WPI`` (between ack_wait and twice ack_wait after ``next()``). Nothing is extended
        for ``AckPolicy.NONE``; with ``AckPolicy.ALL`` each message is extended on its own
        (the server applies ``+WPI`` to one message) and an ack ends the leases of the
        messages before it.

        ``on_event(event)`` receives a :class:`natspull.ConsumerEvent` for each thing that
        happens to the iterator - connected, disconnected, reconnected, a missed heartbeat, a
        status the pulls go on after (e.g. 409 ``Exceeded MaxWaiting``), a leadership change,
        the pin gained or lost, the consumer deleted (before the iterator raises) - one at a
        time, in order, on a thread ``natspull-events-N`` (never on the loop, so a slow
        callback holds up nothing but later events); what it raises is logged. Every event
        is also logged on logger ``"natspull"``, with or without a callback.

        Use it with ``with`` or call ``stop()``: an iterator dropped while open
        is stopped when garbage-collected (its messages NAKed back) with a
        ResourceWarning naming where it was created.

        Blocks on: subscribing and sending the first pull. Raises ValueError /
        TypeError for bad options (naming them), ConnectionClosedError.
        Any thread but the loop's.
        """
        settings = pull_settings(
            self._info,
            max_messages=max_messages,
            max_bytes=max_bytes,
            expires=expires,
            heartbeat=heartbeat,
            threshold_messages=threshold_messages,
            threshold_bytes=threshold_bytes,
            stop_after=stop_after,
            error_on_missing_heartbeat=error_on_missing_heartbeat,
            on_event=on_event,
            group=group,
            min_pending=min_pending,
            min_ack_pending=min_ack_pending,
            priority=priority,
            max_lease=max_lease,
        )
        return self.start_messages(settings)[0]

    def start_messages(self, settings: PullSettings) -> tuple[Messages, MsgQueue]:
        """Internal (``_ports.ConsumerPort``, for natspull.trio): start continuous pulls with
        *settings*; return the iterator and its queue. Blocks on the subscription and the
        first pull. Any thread but the loop's."""
        engine = self._engine(settings)
        return Messages(engine, engine.queue), engine.queue

    def consume(
        self,
        handler: Callable[[Msg], Any],
        *,
        workers: int = 1,
        error_handler: Callable[[BaseException, Msg], Any] | None = None,
        on_event: Callable[[ConsumerEvent], Any] | None = None,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        expires: float | None = None,
        heartbeat: float | None = None,
        threshold_messages: int | None = None,
        threshold_bytes: int | None = None,
        stop_after: int | None = None,
        group: str | None = None,
        min_pending: int | None = None,
        min_ack_pending: int | None = None,
        priority: int | None = None,
        max_lease: float = 3600.0,
        retry: Backoff | None = DEFAULT_RETRY,
        term_after: int | None = None,
        on_dead_letter: Callable[[Msg, BaseException], Any] | None = None,
        auto_ack: bool = False,
        handler_timeout: float | None = None,
        batch: int | None = None,
        batch_wait: float = 0.0,
        key: Callable[[Msg], Hashable] | None = None,
    ) -> ConsumeContext:
        """Run ``handler(msg)`` for every message on *workers* threads ``natspull-worker-N``.

        The handler acks (or NAKs, or terminates). With ``auto_ack=True`` a message the
        handler left unsettled is acked when the handler returns (NAKed with the retry policy
        when it raises); an ack, NAK or term inside the handler wins; ``in_progress()`` alone
        settles nothing, so the message is still acked at return. With ``auto_ack=False`` a
        message left unsettled is counted (``ConsumeStats.unsettled``), logged once per
        ``consume()`` (WARNING, naming the handler) and its lease stops: the server
        redelivers it after ``ack_wait`` unless something else settles it.

        At most ``max_messages`` (or ``max_bytes``) are buffered plus in handlers.
        ``stop_after`` ends the consumption (as a drain) after that many messages were
        handed to the handler. Pull and priority-group options as :meth:`messages`.

        Leases: while a handler runs, natspull keeps its message from being redelivered by
        sending ``+WPI`` (``msg.in_progress()``) every half of the consumer's ``ack_wait``
        (the smallest of ack_wait and its ``backoff`` values, from :attr:`cached_info`), for
        at most ``max_lease`` seconds (default an hour; ``0`` turns leases off) after the
        handler started; after that the server redelivers the message ``ack_wait`` after
        the last extension. One timer on the loop thread serves every message; a message
        the handler acks, NAKs or terminates is let go. Not for ``AckPolicy.NONE``
        consumers. A buffered message is leased from its arrival too (as :meth:`messages`,
        for at most ``max_lease`` seconds after it arrived): waiting for a worker never gets
        it redelivered.

        Retries: a handler exception is logged and given to ``error_handler(exc, msg)``
        first; then, unless the message was acked (or NAKed/terminated), it is NAKed with a
        delay of ``retry.delay(msg.metadata.num_delivered)`` (:class:`natspull.Backoff`; the
        default ``Backoff(initial=1, maximum=60, multiplier=2, jitter=0.2)`` waits about
        1 s, 2 s, 4 s ... 60 s; ``retry=None`` NAKs for an immediate redelivery). With
        ``term_after=N`` a message whose N-th (or later) delivery fails is terminated
        instead (``+TERM`` with a reason naming the exception; never redelivered), after
        ``on_dead_letter(msg, exc)`` ran on the worker thread (what it raises is logged; a
        hook that acks or NAKs the message itself decides instead). The consumer's own
        ``max_deliver`` still applies: a ``term_after`` above it is never reached.

        Batches: with ``batch=N`` the handler gets a list of 1 to N messages, ``handler(msgs)``:
        the first one waited for, then up to N, gathered for at most ``batch_wait`` seconds
        (default 0: only those already buffered). The lease and ``handler_timeout`` cover the
        whole batch; ``auto_ack`` acks what is left; an exception settles every unsettled
        message of the batch as a failure (``error_handler`` per message, the retry backoff,
        ``term_after``).

        Time limit: with ``handler_timeout=SECONDS`` a handler call running longer has its
        unsettled messages NAKed (retry backoff) and their leases stopped, reports a
        ``handler_timeout`` event (its log line has the thread's stack) and counts in
        ``ConsumeStats.timed_out``; its thread counts in ``ConsumeStats.stuck`` until the
        handler returns; what the handler acks or NAKs afterwards is ignored
        (``ConsumeStats.late_settles``). Python cannot stop a thread: the handler keeps running.
        One watchdog thread ``natspull-watchdog-N`` serves every worker.

        Order per key: with ``key=callable`` (e.g. ``lambda m: m.subject``) messages with the
        same ``key(msg)`` are handled one at a time in stream order, different keys in
        parallel; ``key`` is called on the worker threads one at a time (keep it cheap). A
        failed message is retried before the next one of its key: it is NAKed with the retry
        backoff and the key waits for its redelivery, holding its later
        messages (leased, ``ConsumeStats.held``); held messages leave the pull window, and at
        most ``max_messages`` (or ``max_bytes``) are held over all keys: past that a message
        whose key waits is NAKed back (``sent_back``) to come after the one its key waits for;
        those deliveries do not count towards ``term_after`` but do towards the consumer's
        ``max_deliver``. A redelivery that does not come within its delay plus the consumer's
        ``ack_wait`` + 5 s (another process got it, ``max_deliver``) is given up on with a
        warning. A handler that NAKs its message
        is retried the same way; a stuck handler (``handler_timeout``) keeps its key busy
        until it returns. ``stop()``/the end of a drain NAK held messages back in stream order.
        Not with ``batch``. Order holds within one consume() and one process.

        ``on_event(event)`` receives a :class:`natspull.ConsumerEvent` for each thing that
        happens to the pulls, as for :meth:`messages`; :meth:`ConsumeContext.wait` returns
        once the callback has seen them all.

        Blocks on: subscribing and the first pull. Returns a
        :class:`ConsumeContext` (stop, drain, wait); it runs until stopped or
        drained, even when the application drops it. Raises ValueError/TypeError for bad
        arguments (naming them) before anything is sent, ConnectionClosedError. Any thread
        but the loop's.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if error_handler is not None and not callable(error_handler):
            raise TypeError(f"error_handler must be callable or None, got {type(error_handler).__name__}")
        workers = check_int("workers", workers, maximum=1024)
        max_lease = check_number("max_lease", max_lease)
        if retry is not None and not isinstance(retry, Backoff):
            raise TypeError(f"retry must be a natspull.Backoff or None, got {type(retry).__name__}")
        term_after = check_int("term_after", term_after, allow_none=True)
        if on_dead_letter is not None and not callable(on_dead_letter):
            raise TypeError(f"on_dead_letter must be callable or None, got {type(on_dead_letter).__name__}")
        if on_dead_letter is not None and term_after is None:
            raise ValueError("on_dead_letter needs term_after (without it no message is ever dead-lettered)")
        if not isinstance(auto_ack, bool):
            raise TypeError(f"auto_ack must be a bool, got {type(auto_ack).__name__}")
        handler_timeout = check_number("handler_timeout", handler_timeout, allow_none=True, exclusive=True)
        batch = check_int("batch", batch, maximum=1_000_000, allow_none=True)
        batch_wait = check_number("batch_wait", batch_wait)
        if batch_wait and batch is None:
            raise ValueError(
                f"batch_wait={batch_wait:g} needs batch (the number of messages per handler call)"
            )
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable or None, got {type(key).__name__}")
        if key is not None and batch is not None:
            raise ValueError("key and batch do not go together: key= hands each key's messages one at a time")
        acks = self._info.config.ack_policy != AckPolicy.NONE
        if auto_ack and not acks:
            raise ValueError(
                f"auto_ack=True needs a consumer that takes acks; {self.stream}/{self.name} "
                "has AckPolicy.NONE"
            )
        settings = pull_settings(
            self._info,
            max_messages=max_messages,
            max_bytes=max_bytes,
            expires=expires,
            heartbeat=heartbeat,
            threshold_messages=threshold_messages,
            threshold_bytes=threshold_bytes,
            stop_after=stop_after,
            on_event=on_event,
            group=group,
            min_pending=min_pending,
            min_ack_pending=min_ack_pending,
            priority=priority,
            max_lease=max_lease,
        )
        engine = self._engine(settings)
        consume_options = ConsumeOptions(
            handler,
            workers=workers,
            error_handler=error_handler,
            retry=retry,
            term_after=term_after,
            on_dead_letter=on_dead_letter,
            acks=acks,
            explicit=self._info.config.ack_policy == AckPolicy.EXPLICIT,
            auto_ack=auto_ack,
            handler_timeout=handler_timeout,
            batch=batch,
            batch_wait=batch_wait,
            key=key,
            key_grace=self._ack_wait() + KEY_GRACE,
        )
        return ConsumeContext(engine, engine.queue, consume_options, engine.events, lease=engine.lease)

    def _ack_wait(self) -> float:
        """The consumer's ack_wait from :attr:`cached_info` (the server's default if unset)."""
        wait = self._info.config.ack_wait
        return float(wait) if wait and wait > 0 else DEFAULT_ACK_WAIT

    def _lease_interval(self) -> float | None:
        """How often consume() extends a message's lease, from :attr:`cached_info`: a fraction
        of the shortest ack timer the server may apply (ack_wait, or a ``backoff`` step);
        None for a consumer without acks."""
        config = self._info.config
        if config.ack_policy == AckPolicy.NONE:
            return None
        waits = [wait for wait in (config.ack_wait, *(config.backoff or [])) if wait and wait > 0]
        return min(waits or [DEFAULT_ACK_WAIT]) * LEASE_FRACTION

    # ---------------------------------------------------------- management

    def pause(self, until: datetime.datetime | float) -> PauseState:
        """Pause this consumer until *until* (an aware datetime, or seconds from now); see
        :meth:`JetStream.pause_consumer`. Blocks on the server. Any thread but the loop's."""
        return self._admin.pause(self.stream, self.name, until)

    def resume(self) -> PauseState:
        """Resume this consumer now; see :meth:`JetStream.resume_consumer`. Idempotent.

        This client's running iterators and consume() contexts on the consumer pull at once
        (the server does not wake requests that were waiting during the pause).
        """
        return self._admin.resume(self.stream, self.name)

    def reset(self, seq: int | None = None) -> int:
        """Reset this consumer to stream sequence *seq* (default: its ack floor + 1) and
        return the sequence delivery restarts from; see :meth:`JetStream.reset_consumer`.

        Also refreshes :attr:`cached_info` from the server's reply. Blocks on two requests.
        Any thread but the loop's.
        """
        reset_seq, self._info = self._admin.reset(self.stream, self.name, seq)
        return reset_seq

    def unpin(self, group: str) -> None:
        """Unpin the client pinned in priority *group*; see :meth:`JetStream.unpin_consumer`.

        Raises ValueError before sending anything when :attr:`cached_info` shows that the
        consumer has no such group (call :meth:`info` first if its groups changed since), and
        NotSupportedError on a server older than 2.11.
        """
        group = check_group("group", group)
        self._admin.require([CONSUMER_UNPIN], "unpin")  # a 2.10 consumer has no groups: say why
        groups = self._info.config.priority_groups or []
        if group not in groups:
            raise ValueError(
                f"group {group!r} is not a priority group of consumer {self.stream}/{self.name} "
                f"(its groups, as of its cached info: {groups!r})"
            )
        self._admin.unpin(self.stream, self.name, group)
