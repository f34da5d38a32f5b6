"""A bound pull consumer: fetch, next, the messages() iterator and consume()."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from ._consume import ConsumeContext
from ._consumer_types import ConsumerInfo, PauseState, check_group
from ._fetch import FETCH_GRACE, fetch_steps
from ._management import Admin
from ._messages import Messages
from ._msg import Msg
from ._options import continuous_pull
from ._pull import PullEngine, PullOptions
from ._queue import Flow, MsgQueue
from ._validate import check_int, check_number
from .errors import JetStreamAPIError, TimeoutError

__all__ = ["START_TIMEOUT", "Consumer", "fetch_request", "wait_fetch"]

START_TIMEOUT = 10.0


def fetch_request(batch: Any, max_wait: Any, max_bytes: Any, no_wait: Any) -> tuple[Flow, PullOptions]:
    """Check ``fetch()``'s arguments (ValueError/TypeError naming them); the one request's sizing."""
    batch = check_int("batch", batch, maximum=1_000_000)
    max_wait = check_number("max_wait", max_wait, exclusive=not no_wait)
    max_bytes = check_int("max_bytes", max_bytes, maximum=2**40, allow_none=True)
    if not isinstance(no_wait, bool):
        raise TypeError(f"no_wait must be a bool, got {type(no_wait).__name__}")
    flow = Flow(
        max_msgs=batch, max_bytes=max_bytes or 0, threshold_msgs=batch, threshold_bytes=max_bytes or 0
    )
    return flow, PullOptions(expires=max_wait, heartbeat=None, one_shot=True, no_wait=no_wait)


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

    def _engine(
        self, flow: Flow, options: PullOptions, *, error_on_missing_heartbeat: bool = False
    ) -> PullEngine:
        engine = PullEngine(
            self._link,
            self._prefix,
            self.stream,
            self.name,
            flow,
            options,
            error_on_missing_heartbeat=error_on_missing_heartbeat,
        )
        self._link.run(engine.start(), START_TIMEOUT, "start pulling")
        return engine

    # ------------------------------------------------------------- one request

    def fetch(
        self, batch: int = 1, *, max_wait: float = 30.0, max_bytes: int | None = None, no_wait: bool = False
    ) -> list[Msg]:
        """Send one pull request and return what it brought: up to *batch* messages.

        Blocks on: the request, at most *max_wait* seconds (plus a short grace
        for the server's answer). Returns fewer messages, or none, when the
        request expires first; with ``no_wait=True`` it returns what is
        available at once. With *max_bytes* it returns as soon as the
        messages' sizes (subject + reply + header block + data, as the server
        counts them) reach it or the next message does not fit. Raises
        ConsumerDeletedError, ConsumerNotFoundError, JetStreamAPIError (e.g.
        a message larger than *max_bytes*), ConnectionClosedError. Any thread
        but the loop's.
        """
        queue, wait = self._start_fetch(batch, max_wait, max_bytes, no_wait)
        return wait_fetch(queue, wait)

    def _start_fetch(
        self, batch: int, max_wait: float, max_bytes: int | None, no_wait: bool
    ) -> tuple[MsgQueue, float]:
        """Validate fetch() arguments and send the one request; return its queue and how long
        to wait for it to close (``max_wait`` plus a grace for the server's answer)."""
        flow, options = fetch_request(batch, max_wait, max_bytes, no_wait)
        engine = self._engine(flow, options)
        return engine.queue, options.expires + FETCH_GRACE

    def next(self, timeout: float = 30.0) -> Msg:
        """Fetch one message, waiting at most *timeout* seconds.

        Raises natspull.TimeoutError when none arrives in time, and whatever
        :meth:`fetch` raises. Any thread but the loop's.
        """
        timeout = check_number("timeout", timeout)
        msgs = self.fetch(1, max_wait=timeout, no_wait=timeout == 0)
        if not msgs:
            raise TimeoutError(f"no message from {self.stream}/{self.name} within {timeout:g} s")
        return msgs[0]

    # ------------------------------------------------------------ continuous

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
        error_on_missing_heartbeat: bool = False,
    ) -> Messages:
        """Start continuous pulls and return a blocking iterator over the messages.

        Options follow nats.go: ``max_messages`` (default 500) or ``max_bytes``
        bound what is requested and not yet handed out; a new pull for the
        difference goes out when that drops below the threshold (default:
        half); pull requests expire after ``expires`` (default 30 s, min 1 s)
        with idle heartbeats every ``heartbeat`` (default expires/2, at most
        30 s); ``stop_after`` ends the iterator after that many messages.

        Use it with ``with`` or call ``stop()``: an iterator dropped while open
        is stopped when garbage-collected (its messages NAKed back) with a
        ResourceWarning naming where it was created.

        Blocks on: subscribing and sending the first pull. Raises ValueError /
        TypeError for bad options (naming them), ConnectionClosedError.
        Any thread but the loop's.
        """
        if not isinstance(error_on_missing_heartbeat, bool):
            raise TypeError("error_on_missing_heartbeat must be a bool")
        flow, options = continuous_pull(
            max_messages=max_messages,
            max_bytes=max_bytes,
            expires=expires,
            heartbeat=heartbeat,
            threshold_messages=threshold_messages,
            threshold_bytes=threshold_bytes,
            stop_after=stop_after,
        )
        engine = self._engine(flow, options, error_on_missing_heartbeat=error_on_missing_heartbeat)
        return Messages(engine, engine.queue)

    def consume(
        self,
        handler: Callable[[Msg], Any],
        *,
        workers: int = 1,
        error_handler: Callable[[BaseException, Msg], Any] | None = None,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        expires: float = 30.0,
        heartbeat: float | None = None,
        threshold_messages: int | None = None,
        threshold_bytes: int | None = None,
    ) -> ConsumeContext:
        """Run ``handler(msg)`` for every message on *workers* threads ``natspull-worker-N``.

        The handler acks. A handler exception is logged and given to
        ``error_handler(exc, msg)``, and the message is NAKed unless the
        handler had acked it. At most ``max_messages`` (or ``max_bytes``) are
        buffered plus in handlers. Pull options as :meth:`messages`.

        Blocks on: subscribing and the first pull. Returns a
        :class:`ConsumeContext` (stop, drain, wait); it runs until stopped or
        drained, even when the application drops it. Any thread but the loop's.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if error_handler is not None and not callable(error_handler):
            raise TypeError(f"error_handler must be callable or None, got {type(error_handler).__name__}")
        workers = check_int("workers", workers, maximum=1024)
        flow, options = continuous_pull(
            max_messages=max_messages,
            max_bytes=max_bytes,
            expires=expires,
            heartbeat=heartbeat,
            threshold_messages=threshold_messages,
            threshold_bytes=threshold_bytes,
        )
        engine = self._engine(flow, options)
        return ConsumeContext(engine, engine.queue, handler, error_handler, workers)

    # ---------------------------------------------------------- management

    def pause(self, until: datetime.datetime | float) -> PauseState:
        """Pause this consumer until *until* (an aware datetime, or seconds from now); see
        :meth:`JetStream.pause_consumer`. Blocks on the server. Any thread but the loop's."""
        return self._admin.pause(self.stream, self.name, until)

    def resume(self) -> PauseState:
        """Resume this consumer now; see :meth:`JetStream.resume_consumer`. Idempotent."""
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
        consumer has no such group (call :meth:`info` first if its groups changed since).
        """
        group = check_group("group", group)
        groups = self._info.config.priority_groups or []
        if group not in groups:
            raise ValueError(
                f"group {group!r} is not a priority group of consumer {self.stream}/{self.name} "
                f"(its groups, as of its cached info: {groups!r})"
            )
        self._admin.unpin(self.stream, self.name, group)
