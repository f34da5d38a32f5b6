"""The trio client, JetStream context and consumer: thin async faces over the blocking ones.

Public through :mod:`natspull.trio` (see its docstring). Calls that wait for the server run
the blocking natspull call on a trio worker thread; ``Consumer.fetch()`` waits on the trio
side, like the iterator in ``_trio_messages.py``.
"""

from __future__ import annotations

import datetime
import functools
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from .._client import Client as _SyncClient
from .._client import connect as _sync_connect
from .._consumer import Consumer as _SyncConsumer
from .._consumer_types import ConsumerConfig, ConsumerInfo, PauseState
from .._engine._queue import MsgQueue
from .._engine._settings import fetch_settings, pull_settings
from .._jetstream import JetStream as _SyncJetStream
from .._msg import Msg as _SyncMsg
from .._observe._events import ConsumerEvent
from .._observe._stats import ClientStats
from .._ordered import DEFAULT_INACTIVE_THRESHOLD
from .._ordered import OrderedConsumer as _SyncOrderedConsumer
from .._ports import ConsumerPort, FetchResult, FetchSteps, OrderedConsumerPort
from .._publish import BatchAck, Item
from .._types import DeliverPolicy, PubAck, ReplayPolicy, StreamConfig, StreamInfo
from .._validate import check_number
from ..errors import ConsumerDeletedError, ConsumerNotFoundError, TimeoutError
from ._iterator import Messages, Msg, OrderedMessages, in_thread, wait_fetch

__all__ = ["Client", "Consumer", "JetStream", "OrderedConsumer", "open_client"]

T = TypeVar("T")


class Consumer:
    """A pull consumer for trio tasks. Get one from :meth:`JetStream.consumer` or ``add_consumer``."""

    def __init__(self, sync: _SyncConsumer) -> None:
        """Private: use ``JetStream.consumer()`` / ``JetStream.add_consumer()``."""
        self._sync = sync
        self._port: ConsumerPort = sync  # what this adapter may call beyond the public API

    def __repr__(self) -> str:
        return f"<natspull.trio.Consumer {self.stream}/{self.name}>"

    @property
    def sync(self) -> _SyncConsumer:
        """The wrapped blocking :class:`natspull.Consumer`."""
        return self._sync

    @property
    def stream(self) -> str:
        return self._sync.stream

    @property
    def name(self) -> str:
        return self._sync.name

    @property
    def cached_info(self) -> ConsumerInfo:
        return self._sync.cached_info

    async def info(self) -> ConsumerInfo:
        """Fetch the consumer's current info (on a worker thread)."""
        return await in_thread(self._sync.info)

    async def fetch(
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

        As :meth:`natspull.Consumer.fetch` (priority-group options included), but the wait
        for the answer blocks no thread. A cancellation raises ``trio.Cancelled`` promptly
        and NAKs whatever the request brought, so the server redelivers it at once.
        """
        settings = fetch_settings(
            self._port.cached_info,
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
        queue, wait = await in_thread(functools.partial(self._port.start_fetch, settings))
        return [Msg(msg) for msg in await wait_fetch(queue, wait)]

    async def next(
        self,
        timeout: float = 30.0,
        *,
        group: str | None = None,
        min_pending: int | None = None,
        min_ack_pending: int | None = None,
        priority: int | None = None,
    ) -> Msg:
        """Fetch one message, waiting at most *timeout* seconds; raises natspull.TimeoutError."""
        timeout = check_number("timeout", timeout)
        msgs = await self.fetch(
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
        """An async iterator over the messages; options as :meth:`natspull.Consumer.messages`,
        leases too: every message is kept leased (``+WPI``) from its arrival while it waits -
        buffered or in the trio-side deque - for at most ``max_lease`` seconds (None: no bound;
        0: off), and for ``ack_wait`` after a task received it.

        ``on_event`` runs on a thread ``natspull-events-N``, not in trio: to reach trio from it,
        use ``trio.from_thread.run_sync(..., trio_token=...)`` or a memory channel's
        ``send_nowait`` through it.

        Returns at once (options are checked here: ValueError/TypeError); ``async with``
        starts the pulls::

            async with consumer.messages(max_messages=100) as msgs:
                async for msg in msgs:
                    ...
        """
        settings = pull_settings(
            self._port.cached_info,
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
        return Messages(self._port, settings, f"{self.stream}/{self.name}")

    # ---------------------------------------------------------- management

    async def pause(self, until: datetime.datetime | float) -> PauseState:
        """Pause this consumer until *until*; see :meth:`natspull.Consumer.pause`."""
        return await in_thread(functools.partial(self._sync.pause, until))

    async def resume(self) -> PauseState:
        """Resume this consumer now; see :meth:`natspull.Consumer.resume`."""
        return await in_thread(self._sync.resume)

    async def reset(self, seq: int | None = None) -> int:
        """Reset this consumer's delivery state; see :meth:`natspull.Consumer.reset`."""
        return await in_thread(functools.partial(self._sync.reset, seq))

    async def unpin(self, group: str) -> None:
        """Unpin the client pinned in priority *group*; see :meth:`natspull.Consumer.unpin`."""
        await in_thread(functools.partial(self._sync.unpin, group))


# ------------------------------------------------------------------------------ ordered


class OrderedConsumer:
    """Reads a stream in order, for trio tasks: every matching stream sequence once, increasing.

    Get one from :meth:`JetStream.ordered_consumer`; it wraps a :class:`natspull.OrderedConsumer`
    (``sync``) and behaves like it: one read at a time (an entered ``messages()`` iterator or a
    ``fetch()`` in progress; another raises OrderedConsumerUsageError), each continuing after the
    last message a task received; its messages cannot be acked (OrderedConsumerUsageError).
    :meth:`aclose` (or leaving ``async with``) ends the read and deletes the server-side
    consumer. Trio tasks of one run.
    """

    def __init__(self, sync: _SyncOrderedConsumer) -> None:
        """Private: use :meth:`JetStream.ordered_consumer`."""
        self._sync = sync
        self._port: OrderedConsumerPort = sync  # what this adapter may call beyond the public API
        self._iterator: OrderedMessages | None = None  # the last messages() iterator (trio thread)

    def __repr__(self) -> str:
        return f"<natspull.trio.OrderedConsumer {self.stream}>"

    async def __aenter__(self) -> OrderedConsumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def sync(self) -> _SyncOrderedConsumer:
        """The wrapped blocking :class:`natspull.OrderedConsumer`."""
        return self._sync

    @property
    def stream(self) -> str:
        return self._sync.stream

    @property
    def last_sequence(self) -> int:
        """The stream sequence of the last message handed out (0: none yet)."""
        return self._sync.last_sequence

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
        """An async iterator over the messages in order; options as :meth:`Consumer.messages`.

        Returns at once (options are checked here: ValueError/TypeError); ``async with``
        creates the consumer and starts the pulls (on a worker thread; OrderedConsumerUsageError if
        another read runs), and leaving it deletes the consumer. Resets after a fault are
        invisible: the iterator goes on with the next stream sequence.
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
        self._iterator = OrderedMessages(self._port, settings, self.stream)
        return self._iterator

    async def fetch(
        self, batch: int = 1, *, max_wait: float = 30.0, max_bytes: int | None = None, no_wait: bool = False
    ) -> list[Msg]:
        """One pull request, as :meth:`natspull.OrderedConsumer.fetch`: up to *batch* messages, in order.

        The wait for the answer blocks no thread; creating, recreating and deleting the
        consumer run on a worker thread. A cancellation raises ``trio.Cancelled`` promptly
        (after deleting the consumer, bounded by the JetStream context's timeout); the next
        read continues after the last message handed out. Raises as the blocking one.
        """
        steps = self._port.fetch_steps(
            fetch_settings(batch=batch, max_wait=max_wait, max_bytes=max_bytes, no_wait=no_wait)
        )
        got: FetchResult | None = None
        try:
            while True:
                step = await in_thread(functools.partial(_fetch_step, steps, got))
                if isinstance(step, list):
                    return [Msg(msg) for msg in step]
                queue, wait = step
                try:
                    got = (await wait_fetch(queue, wait), None)
                except (ConsumerNotFoundError, ConsumerDeletedError) as exc:
                    got = ([], exc)  # expired or deleted: the next step recreates it
        except BaseException:
            # Interrupted (e.g. trio.Cancelled) while the sequence holds a consumer: where it
            # stands is unknown, so it is deleted - on a worker thread, not by the garbage
            # collector on the trio thread. (A finished or unstarted sequence ignores close().)
            with trio.CancelScope(shield=True):
                await in_thread(steps.close)
            raise

    async def next(self, timeout: float = 30.0) -> Msg:
        """The next message in order, waiting at most *timeout* seconds; raises natspull.TimeoutError."""
        timeout = check_number("timeout", timeout)
        msgs = await self.fetch(1, max_wait=timeout, no_wait=timeout == 0)
        if not msgs:
            raise TimeoutError(f"no message from the ordered consumer on {self.stream} within {timeout:g} s")
        return msgs[0]

    async def aclose(self) -> None:
        """Stop the running read and delete the server-side consumer (on a worker thread).

        Always completes, even when cancelled (shielded; bounded by the JetStream context's
        timeout). This method is idempotent.
        """
        if self._iterator is not None:
            self._iterator.stop()  # what its deque holds is no longer handed out
        with trio.CancelScope(shield=True):
            await in_thread(self._sync.close)


def _fetch_step(steps: FetchSteps, got: FetchResult | None) -> tuple[MsgQueue, float] | list[_SyncMsg]:
    """Advance an ordered fetch by one step (a worker thread: it blocks on the server).

    Returns the next request to wait for, or the fetch's messages once it is done.
    """
    try:
        return next(steps) if got is None else steps.send(got)
    except StopIteration as done:
        msgs: list[_SyncMsg] = done.value
        return msgs


# --------------------------------------------------------------------------------- jetstream


class JetStream:
    """JetStream for trio tasks: every call that waits for the server is ``async``.

    Each runs the blocking :class:`natspull.JetStream` call on a worker thread; it raises the
    same errors. A cancellation waits for the call, which the context's timeout bounds.
    """

    def __init__(self, sync: _SyncJetStream) -> None:
        """Private: use :meth:`Client.jetstream`."""
        self._sync = sync

    def __repr__(self) -> str:
        return f"<natspull.trio.JetStream prefix={self.api_prefix!r}>"

    @property
    def sync(self) -> _SyncJetStream:
        """The wrapped blocking :class:`natspull.JetStream`."""
        return self._sync

    @property
    def api_prefix(self) -> str:
        return self._sync.api_prefix

    async def add_stream(self, config: StreamConfig | None = None, **params: Any) -> StreamInfo:
        return await in_thread(functools.partial(self._sync.add_stream, config, **params))

    async def update_stream(self, config: StreamConfig | None = None, **params: Any) -> StreamInfo:
        return await in_thread(functools.partial(self._sync.update_stream, config, **params))

    async def delete_stream(self, name: str) -> None:
        await in_thread(functools.partial(self._sync.delete_stream, name))

    async def purge_stream(self, name: str) -> None:
        await in_thread(functools.partial(self._sync.purge_stream, name))

    async def stream_info(self, name: str) -> StreamInfo:
        return await in_thread(functools.partial(self._sync.stream_info, name))

    async def add_consumer(
        self, stream: str, config: ConsumerConfig | None = None, **params: Any
    ) -> Consumer:
        return Consumer(await in_thread(functools.partial(self._sync.add_consumer, stream, config, **params)))

    async def consumer(self, stream: str, name: str) -> Consumer:
        return Consumer(await in_thread(functools.partial(self._sync.consumer, stream, name)))

    async def ordered_consumer(
        self,
        stream: str,
        *,
        filter_subjects: str | list[str] | None = None,
        deliver_policy: DeliverPolicy | str | None = None,
        opt_start_seq: int | None = None,
        opt_start_time: datetime.datetime | None = None,
        headers_only: bool = False,
        replay_policy: ReplayPolicy | str = ReplayPolicy.INSTANT,
        max_reset_attempts: int | None = None,
        inactive_threshold: float = DEFAULT_INACTIVE_THRESHOLD,
    ) -> OrderedConsumer:
        """An ordered consumer; see :meth:`natspull.JetStream.ordered_consumer`.

        Nothing is sent until the first read. Raises ValueError/TypeError for bad options.
        """
        await trio.lowlevel.checkpoint()
        return OrderedConsumer(
            self._sync.ordered_consumer(
                stream,
                filter_subjects=filter_subjects,
                deliver_policy=deliver_policy,
                opt_start_seq=opt_start_seq,
                opt_start_time=opt_start_time,
                headers_only=headers_only,
                replay_policy=replay_policy,
                max_reset_attempts=max_reset_attempts,
                inactive_threshold=inactive_threshold,
            )
        )

    async def consumer_info(self, stream: str, name: str) -> ConsumerInfo:
        return await in_thread(functools.partial(self._sync.consumer_info, stream, name))

    async def delete_consumer(self, stream: str, name: str) -> None:
        await in_thread(functools.partial(self._sync.delete_consumer, stream, name))

    # ------------------------------------------- consumer management: pause, reset, unpin

    async def pause_consumer(self, stream: str, name: str, until: datetime.datetime | float) -> PauseState:
        """See :meth:`natspull.JetStream.pause_consumer`."""
        return await in_thread(functools.partial(self._sync.pause_consumer, stream, name, until))

    async def resume_consumer(self, stream: str, name: str) -> PauseState:
        """See :meth:`natspull.JetStream.resume_consumer`."""
        return await in_thread(functools.partial(self._sync.resume_consumer, stream, name))

    async def reset_consumer(self, stream: str, name: str, seq: int | None = None) -> int:
        """See :meth:`natspull.JetStream.reset_consumer`."""
        return await in_thread(functools.partial(self._sync.reset_consumer, stream, name, seq))

    async def unpin_consumer(self, stream: str, name: str, group: str) -> None:
        """See :meth:`natspull.JetStream.unpin_consumer`."""
        await in_thread(functools.partial(self._sync.unpin_consumer, stream, name, group))

    # ------------------------------------------------------------------ lists

    def streams(self) -> AsyncIterator[StreamInfo]:
        """``async for info in js.streams()``: every stream's info; see
        :meth:`natspull.JetStream.streams`. Each page is fetched on a worker thread."""
        return _AsyncList(self._sync.streams(), _INFO_PAGE)

    def stream_names(self) -> AsyncIterator[str]:
        """``async for name in js.stream_names()``; see :meth:`natspull.JetStream.stream_names`."""
        return _AsyncList(self._sync.stream_names(), _NAME_PAGE)

    def consumers(self, stream: str) -> AsyncIterator[ConsumerInfo]:
        """``async for info in js.consumers(stream)``; see :meth:`natspull.JetStream.consumers`."""
        return _AsyncList(self._sync.consumers(stream), _INFO_PAGE)

    def consumer_names(self, stream: str) -> AsyncIterator[str]:
        """``async for name in js.consumer_names(stream)``; see
        :meth:`natspull.JetStream.consumer_names`."""
        return _AsyncList(self._sync.consumer_names(stream), _NAME_PAGE)

    async def publish(
        self,
        subject: str,
        data: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
        ttl: float | str | None = None,
        expected_stream: str | None = None,
        expected_last_sequence: int | None = None,
        expected_last_subject_sequence: int | None = None,
        expected_last_msg_id: str | None = None,
        timeout: float | None = None,
    ) -> PubAck:
        """Publish to a stream and wait until it is stored; options and errors as
        :meth:`natspull.JetStream.publish` (msg_id, ttl, the expectations)."""
        return await in_thread(
            functools.partial(
                self._sync.publish,
                subject,
                data,
                headers,
                msg_id=msg_id,
                ttl=ttl,
                expected_stream=expected_stream,
                expected_last_sequence=expected_last_sequence,
                expected_last_subject_sequence=expected_last_subject_sequence,
                expected_last_msg_id=expected_last_msg_id,
                timeout=timeout,
            )
        )

    async def publish_many(
        self,
        messages: Iterable[Item],
        *,
        window: int = 256,
        timeout: float | None = None,
        expected_stream: str | None = None,
    ) -> list[PubAck]:
        """Publish many messages, pipelined; see :meth:`natspull.JetStream.publish_many`.

        Items are ``(subject, data)``, ``(subject, data, headers)`` or :class:`natspull.Publish`.
        The iterable is consumed on the worker thread.
        """
        return await in_thread(
            functools.partial(
                self._sync.publish_many,
                messages,
                window=window,
                timeout=timeout,
                expected_stream=expected_stream,
            )
        )

    async def publish_batch(self, messages: Iterable[Item], *, timeout: float | None = None) -> BatchAck:
        """Publish an atomic batch (all stored or none); see :meth:`natspull.JetStream.publish_batch`."""
        return await in_thread(functools.partial(self._sync.publish_batch, messages, timeout=timeout))


# ------------------------------------------------------------------------------------ client


class Client:
    """A natspull client for trio programs. Get one from :func:`open_client`."""

    def __init__(self, sync: _SyncClient) -> None:
        """Private: use :func:`open_client`."""
        self._sync = sync

    def __repr__(self) -> str:
        return repr(self._sync).replace("<natspull.Client", "<natspull.trio.Client", 1)

    @property
    def sync(self) -> _SyncClient:
        """The wrapped blocking :class:`natspull.Client` (for code running on worker threads)."""
        return self._sync

    @property
    def is_connected(self) -> bool:
        return self._sync.is_connected

    @property
    def is_closed(self) -> bool:
        return self._sync.is_closed

    @property
    def server_info(self) -> dict[str, Any]:
        return self._sync.server_info

    @property
    def max_payload(self) -> int:
        return self._sync.max_payload

    def stats(self) -> ClientStats:
        """A snapshot of the connection's counters, as :meth:`natspull.Client.stats`. Never blocks."""
        return self._sync.stats()

    def jetstream(
        self, domain: str | None = None, api_prefix: str | None = None, timeout: float = 5.0
    ) -> JetStream:
        """A trio JetStream context. Cheap; no network call."""
        return JetStream(self._sync.jetstream(domain=domain, api_prefix=api_prefix, timeout=timeout))

    def publish(self, subject: str, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Publish a core NATS message; returns at once (see :meth:`natspull.Client.publish`)."""
        self._sync.publish(subject, data, headers)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every publish and ack accepted so far has reached the server."""
        await in_thread(functools.partial(self._sync.flush, timeout))

    async def request(
        self, subject: str, data: bytes = b"", timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> _SyncMsg:
        """Send a request and return the reply (a plain :class:`natspull.Msg`)."""
        return await in_thread(functools.partial(self._sync.request, subject, data, timeout, headers))

    async def aclose(self) -> None:
        """Flush and close (see :meth:`natspull.Client.close`). Always completes, even when
        cancelled (shielded; bounded by ``close_timeout``). This method is idempotent."""
        with trio.CancelScope(shield=True):
            await in_thread(self._sync.close)


@asynccontextmanager
async def open_client(servers: str | list[str] | None = None, **options: Any) -> AsyncIterator[Client]:
    """Connect (on a worker thread) and close on exit: ``async with open_client(url) as client:``.

    Arguments and errors as :func:`natspull.connect`. Client callbacks (``error_cb``, ...) run
    on a natspull thread, not in trio: use ``trio.from_thread.run_sync(fn, trio_token=...)``
    to get back into the run.
    """
    client = Client(await in_thread(functools.partial(_sync_connect, servers, **options)))
    try:
        yield client
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------------- lists

_INFO_PAGE = 256  # the server's page of infos (STREAM.LIST, CONSUMER.LIST)
_NAME_PAGE = 1024  # and of names (STREAM.NAMES, CONSUMER.NAMES)


class _AsyncList(AsyncIterator[T]):
    """An async iterator over a blocking, lazily paged JetStream list.

    Takes up to one server page of entries per worker-thread hop (so at most one request per
    hop while the pages line up) and hands them out from a buffer on the trio side. Use it
    from one task at a time; a cancelled ``__anext__`` loses no entry.
    """

    def __init__(self, entries: Iterator[T], chunk: int) -> None:
        self._entries = entries
        self._chunk = chunk
        self._buffer: deque[T] = deque()
        self._done = False

    async def __anext__(self) -> T:
        if not self._buffer and not self._done:
            # A cancellation waits for the hop (in_thread) and is delivered at the checkpoint
            # below, once the entries taken from the blocking iterator are in the buffer.
            chunk = await in_thread(lambda: list(itertools.islice(self._entries, self._chunk)))
            self._buffer.extend(chunk)
            self._done = len(chunk) < self._chunk
        await trio.lowlevel.checkpoint()  # the cancel point, where nothing is held
        if not self._buffer:
            raise StopAsyncIteration
        return self._buffer.popleft()
