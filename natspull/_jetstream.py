"""JetStream: stream and consumer management; publish with acks, pipelined (publish_many,
publish_async) and atomic (publish_batch)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

from . import errors
from ._admin import Admin, pages
from ._consumer import Consumer
from ._consumer_types import (
    ConsumerConfig,
    ConsumerInfo,
    PauseState,
    as_consumer_config,
    check_consumer_config,
)
from ._future import LeanFuture
from ._observe import _otel
from ._ordered import DEFAULT_INACTIVE_THRESHOLD, OrderedConsumer, check_max_reset_attempts, ordered_spec
from ._publish import (
    MAX_BATCH_MESSAGES,
    BatchAck,
    Item,
    batch_headers,
    check_items,
    new_batch_id,
    publish_item,
    publish_options,
)
from ._publish_window import PublishWindow
from ._server_features import (
    Feature,
    consumer_features,
    dropped_fields,
    header_features,
    stream_features,
    unknown_field,
)
from ._transport._link import Link
from ._transport._translate import api_error
from ._transport._wire import Reply
from ._types import DeliverPolicy, PubAck, ReplayPolicy, StreamConfig, StreamConsumerLimits, StreamInfo
from ._types import stream_info as _stream_info
from ._validate import (
    check_int,
    check_name,
    check_nanoseconds,
    check_number,
    check_subject,
)
from .errors import JetStreamAPIError, NotSupportedError

__all__ = ["DEFAULT_MAX_PENDING", "JetStream"]

#: publish_async's default bound on publishes waiting for their PubAck (as nats.go's).
DEFAULT_MAX_PENDING = 4000

_T = TypeVar("_T")


class JetStream:
    """JetStream on one client: management calls, publish, and pull consumers.

    Every call blocks the calling thread until the server answers, at most the
    context's *timeout*; raises natspull.TimeoutError, the matching
    JetStreamAPIError subclass, or ConnectionClosedError. Any thread but the
    client's loop thread.
    """

    def __init__(
        self,
        link: Link,
        *,
        domain: str | None,
        api_prefix: str | None,
        timeout: float,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        """Private: use ``Client.jetstream()``."""
        if domain is not None and api_prefix is not None:
            raise ValueError("give domain or api_prefix, not both")
        if domain is not None:
            check_name("domain", domain)
            api_prefix = f"$JS.{domain}.API"
        elif api_prefix is not None:
            check_subject("api_prefix", api_prefix)
        self._link = link
        self._prefix = api_prefix or "$JS.API"
        self._timeout: float = check_number("timeout", timeout, exclusive=True)
        # API requests with this context's prefix and timeout, shared with its consumers
        self._admin = Admin(link, self._prefix, self._timeout)
        # publish_async's bound on unanswered publishes of this context
        self._window = PublishWindow(check_int("max_pending", max_pending, minimum=1, maximum=1_000_000))

    def __repr__(self) -> str:
        return f"<natspull.JetStream prefix={self._prefix!r}>"

    @property
    def api_prefix(self) -> str:
        return self._prefix

    def _api(
        self, api: str, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Blocking JetStream API request (see the class docstring)."""
        return self._admin.request(api, body, timeout)

    # ------------------------------------------------------------------ streams

    def add_stream(self, config: StreamConfig | None = None, **params: Any) -> StreamInfo:
        """Create a stream (``StreamConfig`` and/or its fields as keywords).

        Fields that need a newer server than the one connected (``allow_msg_ttl``,
        ``subject_delete_marker_ttl``: 2.11; ``allow_atomic``, ``allow_msg_counter``,
        ``allow_msg_schedules``, ``persist_mode``: 2.12; ``allow_batched``: 2.14) raise
        NotSupportedError before the stream is created; so does a field the server's answer
        lacks (2.10 and 2.11 drop fields they do not know; the stream then exists without it).
        """
        config = _config(StreamConfig, config, params)
        return _stream_info(self._configure("add_stream", f"STREAM.CREATE.{config.name}", config.as_dict()))

    def update_stream(self, config: StreamConfig | None = None, **params: Any) -> StreamInfo:
        """Update a stream's configuration; newer fields are checked as by :meth:`add_stream`."""
        config = _config(StreamConfig, config, params)
        return _stream_info(
            self._configure("update_stream", f"STREAM.UPDATE.{config.name}", config.as_dict())
        )

    def _configure(
        self, action: str, api: str, config: dict[str, Any], stream: str | None = None
    ) -> dict[str, Any]:
        """Create/update a stream (or, with *stream*, a consumer of it) with *config*, checked
        against the server: features it lacks (NotSupportedError before anything is sent), a
        field it refuses as unknown (2.12+) or drops silently (2.10, 2.11): NotSupportedError."""
        if stream is None:
            features: list[Feature] = stream_features(config)
            body = config
        else:
            features = consumer_features(config)
            body = {"stream_name": stream, "config": config}
        headers = self._admin.require(features, action)
        try:
            response = self._admin.request(api, body, headers=headers)
        except JetStreamAPIError as exc:
            field = unknown_field(exc.description, exc.err_code)
            if field is None:
                raise
            raise self._not_supported(
                f"{action}: the server does not know the field {field!r} ({exc})", field
            ) from exc
        dropped = dropped_fields(config, response.get("config") or {})
        if dropped:
            what = "stream" if stream is None else "consumer"
            raise self._not_supported(
                f"{action}: the server left {', '.join(dropped)} out of its answer: it ignored them "
                f"(too old for them, or they do not apply here); the {what} exists without them",
                ", ".join(dropped),
            )
        return response

    def _not_supported(self, message: str, fields: str) -> NotSupportedError:
        connected = str(self._link.server_info.get("version", "unknown"))
        return NotSupportedError(
            f"{message}; connected to nats-server {connected}",
            feature=fields,
            required=None,
            connected=connected,
        )

    def delete_stream(self, name: str) -> None:
        """Delete a stream. Raises StreamNotFoundError if there is none."""
        self._api(f"STREAM.DELETE.{check_name('stream', name)}")

    def purge_stream(self, name: str) -> None:
        """Remove every message of a stream. Raises StreamNotFoundError if there is none."""
        self._api(f"STREAM.PURGE.{check_name('stream', name)}", {})

    def stream_info(self, name: str) -> StreamInfo:
        """The stream's configuration and state. Raises StreamNotFoundError."""
        return _stream_info(self._api(f"STREAM.INFO.{check_name('stream', name)}"))

    # ---------------------------------------------------------------- consumers

    def add_consumer(self, stream: str, config: ConsumerConfig | None = None, **params: Any) -> Consumer:
        """Create (or update) a pull consumer and bind to it.

        *config* is a ``natspull.ConsumerConfig`` (a nats-py one is accepted too); with it or
        alone, keywords set its fields, among them the priority groups: ``priority_groups``,
        ``priority_policy`` (:class:`natspull.PriorityPolicy` or its string) and
        ``priority_timeout`` (seconds, ``pinned_client`` only).

        Raises StreamNotFoundError, JetStreamAPIError (invalid config), ValueError/TypeError
        for a bad field (before anything is sent), ValueError for a push consumer
        (``deliver_subject`` set), NotSupportedError for a field the server is too old for
        (priority groups and ``pause_until``: 2.11, ``prioritized``: 2.12; before anything is
        sent) or that its answer lacks.
        """
        check_name("stream", stream)
        config = check_consumer_config(_config(ConsumerConfig, as_consumer_config(config), params))
        if config.deliver_subject:
            raise ValueError("natspull consumes pull consumers: deliver_subject must not be set")
        name = config.name or config.durable_name
        if name:
            check_name("consumer", name)
            if config.name is None:
                config = config.evolve(name=name)
        api = f"CONSUMER.CREATE.{stream}.{name}" if name else f"CONSUMER.CREATE.{stream}"
        response = self._configure("add_consumer", api, config.as_dict(), stream)
        return Consumer(self._admin, ConsumerInfo.from_response(response))

    def ordered_consumer(
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
        """An ordered consumer: every message of *stream* (matching any of *filter_subjects*)
        exactly once, in stream order, whatever happens to the server or the network.

        Nothing is sent until the first read (``messages()``, ``consume()``, ``fetch()``,
        ``next()``). Starting points (*deliver_policy*, default ``all``; inferred from
        *opt_start_seq* / *opt_start_time* when given alone): ``all`` the first message;
        ``last`` the newest message matching any filter; ``new`` the first message published
        after the consumer is created; ``by_start_sequence`` the first matching message at or
        after *opt_start_seq*; ``by_start_time`` the first at or after *opt_start_time* (an
        aware datetime). ``last_per_subject`` is refused. *max_reset_attempts* bounds the
        attempts to recreate the consumer after a fault (None: no bound); the server removes
        a consumer idle for *inactive_threshold* seconds (one whose reader vanished).

        Raises ValueError/TypeError for bad options, at once. Any thread but the loop's.
        """
        spec = ordered_spec(
            filter_subjects=filter_subjects,
            deliver_policy=deliver_policy,
            opt_start_seq=opt_start_seq,
            opt_start_time=opt_start_time,
            headers_only=headers_only,
            replay_policy=replay_policy,
            inactive_threshold=inactive_threshold,
        )
        return OrderedConsumer(self._admin, stream, spec, check_max_reset_attempts(max_reset_attempts))

    def consumer(self, stream: str, name: str) -> Consumer:
        """Bind to an existing pull consumer. Raises ConsumerNotFoundError / StreamNotFoundError."""
        return Consumer(self._admin, self.consumer_info(stream, name))

    def consumer_info(self, stream: str, name: str) -> ConsumerInfo:
        """The consumer's configuration and state. Raises ConsumerNotFoundError."""
        return self._admin.consumer_info(stream, name)

    def delete_consumer(self, stream: str, name: str) -> None:
        """Delete a consumer. Raises ConsumerNotFoundError if there is none."""
        check_name("stream", stream)
        self._api(f"CONSUMER.DELETE.{stream}.{check_name('consumer', name)}")

    # ------------------------------------------- consumer management: pause, reset, unpin

    def pause_consumer(self, stream: str, name: str, until: datetime.datetime | float) -> PauseState:
        """Pause a consumer: it delivers nothing until *until* (an aware datetime, or seconds
        from now). Returns the new :class:`natspull.PauseState`.

        While paused, waiting pull requests get only heartbeats. A time in the past resumes.
        Raises ValueError/TypeError (a naive datetime, a negative or non-finite number) before
        anything is sent; ConsumerNotFoundError, StreamNotFoundError; NotSupportedError on a
        server older than 2.11 (first call per connected server: one ``$JS.API.INFO`` request).
        Any thread but the loop's.
        """
        return self._admin.pause(stream, name, until)

    def resume_consumer(self, stream: str, name: str) -> PauseState:
        """Resume a paused consumer now (idempotent). Returns the new :class:`natspull.PauseState`.

        Pull requests already waiting are not woken: the server serves them at their next
        heartbeat, or when a new pull arrives. Raises ConsumerNotFoundError, StreamNotFoundError,
        NotSupportedError (a server older than 2.11).
        """
        return self._admin.resume(stream, name)

    def reset_consumer(self, stream: str, name: str, seq: int | None = None) -> int:
        """Reset a consumer's delivery state (ADR-60, nats-server >= 2.14); returns the stream
        sequence delivery restarts from.

        The next message delivered is stream sequence *seq* (or the first one after it), with
        ``num_delivered`` 1; without *seq*, the one after the ack floor. Pending acks and
        redelivery counts are dropped. Refused by the server (JetStreamAPIError, err_code
        10204) below a consumer's start sequence, and with a *seq* for deliver policy new/last.

        Blocks on two requests: the server does not answer a reset of a missing consumer, so
        its existence is checked first (ConsumerNotFoundError, StreamNotFoundError at once).
        Raises ValueError/TypeError for *seq* < 1 or not an int, natspull.TimeoutError,
        NotSupportedError on a server older than 2.14 (before anything else is sent: an older
        server never answers a reset).
        """
        return self._admin.reset(stream, name, seq)[0]

    def unpin_consumer(self, stream: str, name: str, group: str) -> None:
        """Unpin the client pinned in priority *group* of a ``pinned_client`` consumer: the
        next pull of that group pins a client anew. Pulls still carrying the old pin id get
        status 423.

        Raises ValueError/TypeError for a malformed group name (before anything is sent),
        JetStreamAPIError (err_code 10160) when the consumer has no such group,
        ConsumerNotFoundError, StreamNotFoundError, NotSupportedError (a server older than 2.11).
        """
        self._admin.unpin(stream, name, group)

    # ------------------------------------------------------------------ lists

    def streams(self) -> Iterator[StreamInfo]:
        """Iterate over the info of every stream, fetching pages of 256 as it goes.

        Each page is one request on the iterating thread, bounded by the context's timeout
        (natspull.TimeoutError); the first is sent by the first ``next()``. Streams created or
        deleted meanwhile may be missed or seen twice. Use from one thread at a time.
        """
        return (_stream_info(item) for page in self._pages("STREAM.LIST", "streams") for item in page)

    def stream_names(self) -> Iterator[str]:
        """Iterate over the name of every stream, fetching pages of 1024; as :meth:`streams`."""
        return (name for page in self._pages("STREAM.NAMES", "streams") for name in page)

    def consumers(self, stream: str) -> Iterator[ConsumerInfo]:
        """Iterate over the info of every consumer of *stream*, pages of 256; as :meth:`streams`.

        The first page raises StreamNotFoundError for a missing stream.
        """
        check_name("stream", stream)
        api = f"CONSUMER.LIST.{stream}"
        return (ConsumerInfo.from_response(item) for page in self._pages(api, "consumers") for item in page)

    def consumer_names(self, stream: str) -> Iterator[str]:
        """Iterate over the name of every consumer of *stream*, pages of 1024; as :meth:`consumers`."""
        check_name("stream", stream)
        return (name for page in self._pages(f"CONSUMER.NAMES.{stream}", "consumers") for name in page)

    def _pages(self, api: str, key: str) -> Iterator[list[Any]]:
        """The lazy pages of a list API (natspull._admin.pages), one request per page."""
        return pages(self._api, api, key)

    # ------------------------------------------------------------------ publish

    def publish(
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
        """Publish to a stream and block until it is stored (the PubAck).

        Options, each a header the server checks before it stores anything:
        *msg_id* deduplicates (``Nats-Msg-Id``: a repeat within the stream's duplicate window
        gets ``duplicate=True``); *ttl* is the message's time to live (ADR-43, nats-server >=
        2.11, a stream with ``allow_msg_ttl``): seconds >= 1 or ``"never"``; *expected_stream*,
        *expected_last_sequence* (the stream's last sequence), *expected_last_subject_sequence*
        (the last sequence of *subject*; 0: none yet) and *expected_last_msg_id* store the
        message only if the stream is as expected.

        Blocks on the PubAck, at most *timeout* (default: the context's). Raises
        JetStreamAPIError with the server's code (no stream for the subject: code 503; a
        failed expectation: err_code 10071, or 10070 for the msg id; a TTL the stream does not
        allow: 10166), natspull.TimeoutError, ValueError/TypeError for bad options (before
        anything is sent). Headers an older server would ignore (``Nats-TTL``, from *ttl* too:
        2.11; ``Nats-Batch-Id``, ``Nats-Incr``, ``Nats-Schedule``: 2.12) raise NotSupportedError
        before the publish. Any thread but the loop's.
        """
        options = publish_options(
            msg_id=msg_id,
            ttl=ttl,
            expected_stream=expected_stream,
            expected_last_sequence=expected_last_sequence,
            expected_last_subject_sequence=expected_last_subject_sequence,
            expected_last_msg_id=expected_last_msg_id,
        )
        timeout = self._timeout if timeout is None else check_number("timeout", timeout, exclusive=True)
        headers = options.headers(headers)
        # An older server stores such a message as a plain one: a TTL that never expires.
        self._admin.require(header_features(headers), "publish")

        def publish(headers: dict[str, str] | None) -> PubAck:
            entry = self._entry(0, subject, data, headers, self._link.async_reply_bytes())
            return self._publish_pipelined([entry], 1, timeout, "JetStream.publish()")[0]

        telemetry = _otel.current()
        if telemetry is None:
            return publish(headers)
        return telemetry.send("publish", subject, data, headers, publish)  # a PRODUCER span

    def publish_many(
        self,
        messages: Iterable[Item],
        *,
        window: int = 256,
        timeout: float | None = None,
        expected_stream: str | None = None,
    ) -> list[PubAck]:
        """Publish many messages with up to *window* in flight; return the acks in order.

        Each item is ``(subject, data)``, ``(subject, data, headers)`` or a
        :class:`natspull.Publish` (with ``msg_id``, ``ttl``, ``expected_last_subject_sequence``);
        a PubAck's ``duplicate`` says a ``msg_id`` was seen before. The iterable is consumed
        (and validated) on the calling thread before the first publish. Blocks until every
        message is acknowledged; each ack may take at most *timeout* seconds. Raises the first
        error (JetStreamAPIError, natspull.TimeoutError); messages published before it stay
        stored. Any thread but the loop's.
        """
        window = check_int("window", window, minimum=1, maximum=65536)
        timeout = self._timeout if timeout is None else check_number("timeout", timeout, exclusive=True)
        if expected_stream is not None:
            check_name("expected_stream", expected_stream)
        entries = self._entries(messages, expected_stream, batch=None)
        if not entries:
            return []
        self._admin.require(_features_of([h for _, _, h in entries]), "publish_many")  # Nats-TTL: 2.11
        return self._traced(
            "publish_many",
            entries,
            lambda checked: self._publish_pipelined(checked, window, timeout, "JetStream.publish_many()"),
            reply_bytes=self._link.async_reply_bytes(),
        )

    def _entries(
        self, messages: Iterable[Item], expected_stream: str | None, batch: str | None
    ) -> list[tuple[str, bytes, dict[str, str] | None]]:
        """Check every item of publish_many()/publish_batch() (TypeError/ValueError naming its index)."""
        entries = []
        for index, item in enumerate(check_items(messages)):
            try:
                subject, data, headers = publish_item(item, expected_stream)
                entries.append((subject, data, headers))
                if batch is not None and index >= MAX_BATCH_MESSAGES:
                    raise ValueError(
                        f"an atomic batch holds at most {MAX_BATCH_MESSAGES} messages (the server's "
                        "limit): split it, or use publish_many() (not atomic)"
                    )
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"messages[{index}]: {exc}") from None
        return entries

    def _traced(
        self,
        operation: str,
        entries: list[tuple[str, bytes, dict[str, str] | None]],
        run: Callable[[list[tuple[str, bytes, dict[str, str] | None]]], _T],
        prepare: Callable[[int, dict[str, str] | None], dict[str, str] | None] | None = None,
        reply_bytes: int = 0,
    ) -> _T:
        """Check the entries (their headers through *prepare* first) against the connection's
        limits and run; with telemetry, in a batch span of *operation* (a create span per message)."""
        telemetry = _otel.current()
        batch = None if telemetry is None else telemetry.batch(operation)
        checked = []
        for index, (subject, data, headers) in enumerate(entries):
            try:
                if batch is not None:
                    context = batch.create(subject, data)
                    if context:
                        headers = {**(headers or {}), **context}
                if prepare is not None:
                    headers = prepare(index, headers)
                checked.append(self._entry(index, subject, data, headers, reply_bytes))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"messages[{index}]: {exc}") from None
        if batch is None:
            return run(checked)
        return batch.send(lambda: run(checked))

    def _entry(
        self, index: int, subject: str, data: bytes, headers: dict[str, str] | None, reply_bytes: int = 0
    ) -> tuple[str, bytes, dict[str, str] | None]:
        """Validate message *index* of a publish: sizes, the PUB line (reply "<inbox>.<index>")."""
        reply_bytes = reply_bytes or self._link.inbox_bytes() + 1 + len(str(index))
        data, headers = self._link.check_message(subject, data, headers, reply_bytes)
        return subject, data, headers

    def _publish_pipelined(
        self, entries: list[tuple[str, bytes, dict[str, str] | None]], window: int, timeout: float, what: str
    ) -> list[PubAck]:
        """publish_many's (and publish's) pipeline, on the calling thread: each message goes to
        the outbox with a reply subject of the connection's reply router (as publish_async's,
        without a future each), at most *window* unanswered; then wait for the rest.

        A slot waits at most *timeout*, as does each answer (the router's deadline); raises the
        first error in the order of the messages once all are answered, or natspull.TimeoutError
        naming the first unanswered message. Any thread but the loop's (RuntimeError naming
        *what*: its answers could never be read while it blocks there).
        """
        self._link.loop_thread.check_not_in_loop(what)
        slots = PublishWindow(window)
        answers: list[Reply | BaseException | None] = [None] * len(entries)

        def answered(index: int, reply: Reply | None, error: BaseException | None) -> None:
            answers[index] = reply if error is None else error  # (loop thread, or the closing one)
            slots.release()

        try:
            for index, (subject, data, headers) in enumerate(entries):
                self._send(slots, timeout, functools.partial(answered, index), subject, data, headers)
            slots.wait_idle(timeout)
        except errors.TimeoutError:
            missing = next(i for i, answer in enumerate(answers) if answer is None)
            raise errors.TimeoutError(f"publish of message {missing}: timed out") from None
        acks = []
        for index, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                if isinstance(answer, errors.TimeoutError):
                    raise errors.TimeoutError(f"publish of message {index}: timed out")
                raise answer
            acks.append(_pub_ack(cast(Reply, answer), entries[index][0]))
        return acks

    # ------------------------------------------------------------ publish_async

    def publish_async(
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
    ) -> concurrent.futures.Future[PubAck]:
        """Publish without waiting: return a ``concurrent.futures.Future`` of the PubAck at once.

        The options are :meth:`publish`'s. Publishes from any number of threads are pipelined
        (one reply subscription per connection, no round trip per call). At most
        ``max_pending`` (see ``Client.jetstream()``) of this context wait for their PubAck:
        once they do, calls block until a quarter of them is answered (so that blocked threads
        go on in runs, not one wake-up per PubAck), at most *timeout* (default: the
        context's), then raise natspull.TimeoutError. The future fails with the server's
        JetStreamAPIError, natspull.TimeoutError (no PubAck within *timeout*), or
        ConnectionClosedError (closed with the publish in flight: ``Client.close()`` first waits
        for the acks on their way, within its timeout); it cannot be cancelled. Callbacks added
        with ``add_done_callback`` run on the loop thread (or the closing thread): keep them
        short and never call a blocking natspull method there (the publishes refuse with
        RuntimeError).

        Raises at once ValueError/TypeError for bad arguments, NotSupportedError for headers the
        server is too old for (as :meth:`publish`), ConnectionClosedError once closed
        (ForkedError in a forked child). Any thread but the loop's.
        """
        self._link.check_fork()
        options = publish_options(
            msg_id=msg_id,
            ttl=ttl,
            expected_stream=expected_stream,
            expected_last_sequence=expected_last_sequence,
            expected_last_subject_sequence=expected_last_subject_sequence,
            expected_last_msg_id=expected_last_msg_id,
        )
        timeout = self._timeout if timeout is None else check_number("timeout", timeout, exclusive=True)
        headers = options.headers(headers)
        telemetry = _otel.current()
        sending = None
        if telemetry is not None:
            sending, headers = telemetry.send_later("publish_async", subject, data, headers)
        if sending is None:  # no telemetry, or suppressed
            return self._publish_async(subject, data, headers, timeout)
        try:
            future = self._publish_async(subject, data, headers, timeout)
        except BaseException as exc:
            sending.failed(exc)
            raise
        future.add_done_callback(sending.done)
        return future

    def _publish_async(
        self, subject: str, data: bytes, headers: dict[str, str] | None, timeout: float
    ) -> concurrent.futures.Future[PubAck]:
        """publish_async once the options are headers: check, take a slot, publish."""
        self._link.loop_thread.check_not_in_loop("JetStream.publish_async()")  # (it may block)
        data, headers = self._link.check_message(subject, data, headers, self._link.async_reply_bytes())
        if headers:
            self._admin.require(header_features(headers), "publish_async")  # Nats-TTL: 2.11
        window = self._window
        future: LeanFuture[PubAck] = LeanFuture()  # running: a sent publish cannot be taken back
        self._send(
            window, timeout, functools.partial(_complete, future, subject, window), subject, data, headers
        )
        return future

    def _send(
        self,
        slots: PublishWindow,
        timeout: float,
        on_reply: Callable[[Reply | None, BaseException | None], None],
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
    ) -> None:
        """Take a slot of *slots* (blocking at most *timeout* while it is full), have *on_reply*
        answered through the connection's reply router (the answer, the router's TimeoutError
        after *timeout*, or the close; it must release the slot) and queue the publish. A slot
        taken for a publish that could not be queued goes back at once. Any thread but the loop's."""
        link = self._link
        slots.acquire(timeout)
        try:
            reply = link.expect_reply(timeout, on_reply)
        except BaseException:
            slots.release()
            raise
        try:
            link.publish_nowait(subject, data, reply, headers)
        except BaseException:
            if link.forget_reply(reply):  # else the close has answered it (and released the slot)
                slots.release()
            raise

    def publish_async_complete(self, timeout: float | None = None) -> None:
        """Block until every ``publish_async`` of this context is complete (acked or failed).

        Blocks at most *timeout* seconds (default: the context's), then raises
        natspull.TimeoutError naming how many still wait. Any thread but the loop's.
        """
        self._link.check_fork()
        self._link.loop_thread.check_not_in_loop("JetStream.publish_async_complete()")
        timeout = self._timeout if timeout is None else check_number("timeout", timeout)
        self._window.wait_idle(timeout)

    @property
    def publish_async_pending(self) -> int:
        """How many ``publish_async`` of this context wait for their PubAck now. Any thread."""
        return self._window.in_flight

    # ------------------------------------------------------------- atomic batch

    def publish_batch(self, messages: Iterable[Item], *, timeout: float | None = None) -> BatchAck:
        """Publish an atomic batch (ADR-50, nats-server >= 2.12): the stream stores every
        message or none; return the :class:`natspull.BatchAck`.

        Items as :meth:`publish_many`'s, at most 1,000 (the server's limit; more is a
        ValueError before anything is sent), all stored by one stream with ``allow_atomic``.
        The server checks expectations (``expected_last_subject_sequence``, ``Nats-Expected-*``
        headers) at the commit against the stream as it was before the batch; one that fails
        stores none of the batch (JetStreamAPIError, err_code 10071, or 10164 when an earlier
        message of the batch wrote that subject).

        Blocks on two round trips (the first message, which opens the batch, and the commit),
        each at most *timeout* (default: the context's). Raises JetStreamAPIError (a stream
        without ``allow_atomic``: err_code 10174; no stream: code 503), natspull.TimeoutError,
        ValueError/TypeError (bad items, none at all, a batch header given). Any thread but
        the loop's.
        """
        timeout = self._timeout if timeout is None else check_number("timeout", timeout, exclusive=True)
        entries = self._entries(messages, None, batch="atomic")
        if not entries:
            raise ValueError("publish_batch needs at least one message")
        batch_id = new_batch_id()
        count = len(entries)
        # An older server would store every message on its own (not atomic): refused before.
        # The server checks the API level header on batch messages (a cluster's older node).
        features = _features_of([batch_headers(h, batch_id, 1, False) for _, _, h in entries])
        level = self._admin.require(features, "publish_batch")

        def numbered(index: int, headers: dict[str, str] | None) -> dict[str, str]:
            headers = batch_headers(headers, batch_id, index + 1, commit=index + 1 == count)
            if level:
                headers.update(level)
            return headers

        ack = self._traced(
            "publish_batch",
            entries,
            lambda checked: self._link.run(
                self._publish_batch(checked, timeout), 2 * timeout + 1.0, "publish_batch"
            ),
            numbered,
            self._link.request_reply_bytes(),
        )
        return BatchAck(
            stream=ack.stream,
            seq=ack.seq,
            count=ack.batch_size if ack.batch_size is not None else count,
            batch_id=ack.batch_id or batch_id,
            domain=ack.domain,
        )

    async def _publish_batch(
        self, entries: list[tuple[str, bytes, dict[str, str] | None]], timeout: float
    ) -> PubAck:
        """Loop thread: open the batch with a request, send the middle without replies, commit."""
        link = self._link
        if len(entries) > 1:
            subject, data, headers = entries[0]
            opened = await link.request(subject, data, timeout, headers)
            if opened.data or (opened.headers or {}).get("Status"):
                ack = _pub_ack(opened, subject)  # raises the server's error
                # (a node older than 2.12, the feature check notwithstanding: stored on its own)
                raise JetStreamAPIError(
                    f"the server stored the first message of the batch on its own (seq {ack.seq}): it "
                    "does not support atomic batches (nats-server >= 2.12); nothing else was sent"
                )
            for subject, data, headers in entries[1:-1]:
                await link.publish(subject, data, "", headers)
        subject, data, headers = entries[-1]
        return _pub_ack(await link.request(subject, data, timeout, headers), subject)


def _features_of(headers: Iterable[dict[str, str] | None]) -> list[Feature]:
    """The server features the headers of some messages need, each once, oldest first."""
    needed: list[Feature] = []
    for each in headers:
        for feature in header_features(each):
            if feature not in needed:
                needed.append(feature)
    return needed


def _complete(
    future: LeanFuture[PubAck],
    subject: str,
    window: PublishWindow,
    reply: Reply | None,
    error: BaseException | None,
) -> None:
    """Loop thread (or the closing thread): a publish_async's answer completes its future."""
    try:
        if reply is None:  # (then error is set)
            if isinstance(error, errors.TimeoutError):
                error = errors.TimeoutError(f"publish_async to {subject!r}: {error}")
            future.set_exception(error)
        else:
            try:
                ack = _pub_ack(reply, subject)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(ack)
    finally:
        window.release()


_C = TypeVar("_C", StreamConfig, ConsumerConfig)

# Config fields in seconds (nats-py converts them to nanoseconds, the server's int64).
_DURATIONS = (
    "ack_wait",
    "max_age",
    "duplicate_window",
    "inactive_threshold",
    "idle_heartbeat",
    "max_expires",
    "subject_delete_marker_ttl",
)


def _config(kind: type[_C], config: _C | None, params: dict[str, Any]) -> _C:
    """A StreamConfig/ConsumerConfig from *config* and keyword fields, with the checks nats-py lacks."""
    if config is not None and not isinstance(config, kind):
        raise TypeError(f"config must be a natspull.{kind.__name__} or None, got {type(config).__name__}")
    try:
        result = (config or kind()).evolve(**params)
    except TypeError as exc:
        raise TypeError(f"{kind.__name__}: {exc}") from None
    for field in _DURATIONS:
        value = getattr(result, field, None)
        if value is not None:
            check_nanoseconds(field, value)
    backoff = getattr(result, "backoff", None)
    if backoff is not None:
        # (a str would make nats-py compute "x" * 10**9 for each character)
        if not isinstance(backoff, (list, tuple)):
            raise TypeError(f"backoff must be a list of seconds, got {type(backoff).__name__}")
        for i, value in enumerate(backoff):
            check_nanoseconds(f"backoff[{i}]", value)
    limits = getattr(result, "consumer_limits", None)
    if isinstance(limits, StreamConsumerLimits) and limits.inactive_threshold is not None:
        check_nanoseconds("consumer_limits.inactive_threshold", limits.inactive_threshold)
    if kind is StreamConfig:
        check_name("stream", result.name)
    return result


def _pub_ack(reply: Reply, subject: str) -> PubAck:
    usual = _USUAL_ACK.match(reply.data)
    if usual is not None:  # (no json.loads, no dict: ~10k instructions fewer per PubAck)
        stream, domain, seq, duplicate = usual.groups()
        return PubAck(
            stream=stream.decode(),
            seq=int(seq),
            domain=None if domain is None else domain.decode(),
            duplicate=True if duplicate else None,
        )
    headers = reply.headers or {}
    if not reply.data and headers.get("Status") == "503":
        raise JetStreamAPIError(f"no stream stores subject {subject!r} (no responders)", 503)
    response = json.loads(reply.data.decode())
    error = response.get("error")
    if error:
        raise api_error(error.get("description", "publish failed"), error.get("code"), error.get("err_code"))
    if response.keys() <= _PLAIN_ACK:  # the usual answer: no per-call dataclasses.fields() walk
        return PubAck(**response)
    return PubAck.from_response(response)


#: The server's usual PubAck, as nats-server writes it: ``{"stream":"S","seq":1}``, a domain
#: after the stream, ``,"duplicate": true`` at the end (a space after a comma allowed). Any
#: other answer (an error, a batch's, new fields, escapes) goes through json.
_USUAL_ACK = re.compile(
    rb'\{"stream":"([^"\\]+)", ?(?:"domain":"([^"\\]*)", ?)?"seq":(\d+)(, ?"duplicate": ?true)?\}\Z'
)

#: PubAck fields the server sends under their own name (from_response renames batch/count).
_PLAIN_ACK = frozenset(field.name for field in dataclasses.fields(PubAck)) - {"batch_id", "batch_size"}
