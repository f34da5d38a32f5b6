"""OpenTelemetry traces and metrics, when the application configured an OpenTelemetry SDK.

Optional: ``pip install natspull[otel]`` brings ``opentelemetry-api``; the application installs
and configures the SDK (``opentelemetry-sdk``) and sets the global tracer and/or meter provider,
before or after ``import natspull``. Nothing here is imported, or looked up, at import time:
:func:`current` imports the API on first use and then checks, per call, whether a global
provider was set since (two attribute reads: the API's ``_TRACER_PROVIDER`` and
``_METER_PROVIDER`` globals, which ``set_*_provider`` sets exactly once). Without the API
package, with only the API's default (proxy / no-op) providers, or with ``NATSPULL_OTEL=0``
in the environment, :func:`current` returns None and the callers do nothing else: no span, no
header, no metric.

What is recorded (names in docs/observability.md):

- ``Client.publish`` / ``JetStream.publish``: a PRODUCER span ``send <subject>`` around the
  call; its context is injected into the message headers (W3C ``traceparent``/``tracestate``
  through the global propagator) unless the caller set a ``traceparent`` header.
- ``JetStream.publish_async``: a PRODUCER span ``send <subject>`` from the call until its future
  completes (the PubAck's sequence, or the error), its context injected as for ``publish``.
- ``JetStream.publish_many`` and ``publish_batch``: a PRODUCER span ``create <subject>`` per
  message (ended at once, injected into that message), and a CLIENT span ``send [<subject>]``
  around the whole batch, linked to them.
- ``consume()``: a CONSUMER span ``process <subject>`` around each handler call, child of the
  context in the message's headers (and linked to it); an exception is recorded on it with
  status ERROR.
- ``messages()`` (thread and trio): a CONSUMER span ``process <subject>`` per message handed
  out, ended by its ack/nak/term, or when the same thread (trio task) asks the iterator for
  its next message, whichever comes first.
- ``fetch()``/``next()`` (thread and trio, ordered consumers too): a CLIENT span
  ``receive <stream>`` per request, from the request to its answer, linked to the context in
  each message's headers (``messaging.batch.message_count``: how many it brought).
- Metrics on the meter ``natspull``: counters of sent, consumed, acked, NAKed, terminated and
  redelivered messages, a histogram of handler durations, and observable gauges/counters read
  from each open iterator's or consume()'s ``stats()``.

Any thread. Instrumentation never raises into natspull's callers (the OpenTelemetry API does not
raise); a failing handler's exception is re-raised unchanged after being recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .._version import __version__

__all__ = ["Telemetry", "current", "set_enabled", "watch"]

T = TypeVar("T")

# Semantic-convention attribute names (messaging, v1.26+), and natspull's NATS-specific ones.
SYSTEM = "messaging.system"
OPERATION_NAME = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
DESTINATION = "messaging.destination.name"
CONSUMER_GROUP = "messaging.consumer.group.name"
BODY_SIZE = "messaging.message.body.size"
BATCH_COUNT = "messaging.batch.message_count"
STREAM_NAME = "messaging.nats.stream.name"
STREAM_SEQUENCE = "messaging.nats.stream.sequence"
NUM_DELIVERED = "messaging.nats.num_delivered"
ACK_KIND = "natspull.ack.kind"

_TRACEPARENT = "traceparent"
_ACK_PAYLOADS = (("+ACK", "ack"), ("-NAK", "nak"), ("+TERM", "term"))

# Module state: written only under _state_lock; read without it on the fast path (each a single
# reference read; a reader that sees a half-done refresh takes the slow path once more).
# _state_lock is held across the API's import and the SDK's get_tracer/get_meter and instrument
# creation (so that instruments are created once), and is taken nowhere else: in particular not
# by the observable callbacks, which the SDK calls under its own locks. Lock order: _state_lock,
# then the SDK's locks; _watch_lock is a leaf.
_state_lock = threading.Lock()
_watch_lock = threading.Lock()  # guards _watched; leaf lock
_enabled = os.environ.get("NATSPULL_OTEL", "1").strip().lower() not in ("0", "false", "no", "off")
_unavailable = False  # the API package is not installed: never try again
_trace: Any = None  # opentelemetry.trace once loaded (its _TRACER_PROVIDER global is the probe)
_metrics: Any = None  # opentelemetry.metrics._internal once loaded (_METER_PROVIDER)
_always_refresh = False  # an API without those globals: ask get_*_provider() every time
_seen_tracer: object = object()  # the raw globals _telemetry was built for
_seen_meter: object = object()
_telemetry: Telemetry | None = None
# Open iterators and consume() contexts, for the observable instruments: object -> attributes.
_watched: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
# The iterator message this thread (trio task) was handed last, whose span is still open, with
# its owner (thread id, trio task): a trio task or a thread started with a copy of another's
# context sees the other's value, which is not its own to end.
_last_handout: contextvars.ContextVar[tuple[object, _Handout] | None] = contextvars.ContextVar(
    "natspull_last_handout", default=None
)


def _new_locks_in_child() -> None:
    """Child process after os.fork(): another thread may have held a lock at the fork."""
    global _state_lock, _watch_lock
    _state_lock = threading.Lock()
    _watch_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_new_locks_in_child)


def current() -> Telemetry | None:
    """The telemetry for the global providers, or None when there is nothing to record.

    The fast path (nothing configured, or nothing changed) costs two attribute reads and
    two identity checks. Never blocks for long (the first call imports the API). Any thread.
    """
    trace = _trace
    if trace is None:
        if _always_refresh:
            return _refresh()
        return None if (_unavailable or not _enabled) else _load()
    if trace._TRACER_PROVIDER is _seen_tracer and _metrics._METER_PROVIDER is _seen_meter:
        return _telemetry
    return _refresh()


def set_enabled(enabled: bool) -> None:
    """Private switch (benchmarks, tests): False makes :func:`current` return None. Any thread."""
    global _enabled, _trace, _always_refresh, _telemetry
    with _state_lock:
        _enabled = enabled
        if not enabled:
            _trace = None
            _always_refresh = False
            _telemetry = None


def watch(obj: Any, stream: str, consumer: str) -> None:
    """Report *obj*'s ``stats()`` in the observable instruments while it lives and is open.

    Cheap (a weak reference; no OpenTelemetry import). Any thread.
    """
    if _enabled and not _unavailable:
        with _watch_lock:
            _watched[obj] = {SYSTEM: "nats", STREAM_NAME: stream, CONSUMER_GROUP: consumer}


def _load() -> Telemetry | None:
    global _unavailable, _trace, _metrics, _always_refresh
    with _state_lock:
        if _trace is None and not _always_refresh and not _unavailable and _enabled:
            try:
                import opentelemetry.metrics._internal as metrics_internal
                import opentelemetry.trace as trace
            except ImportError:
                _unavailable = True
                return None
            if hasattr(trace, "_TRACER_PROVIDER") and hasattr(metrics_internal, "_METER_PROVIDER"):
                _metrics = metrics_internal
                _trace = trace
            else:
                _always_refresh = True
    return current()


def _refresh() -> Telemetry | None:
    """Slow path: build (or drop) the telemetry for the providers now set globally."""
    global _seen_tracer, _seen_meter, _telemetry
    from opentelemetry import metrics, trace

    with _state_lock:
        if not _enabled:
            return None
        # get_*_provider() may set the globals first (from OTEL_PYTHON_*_PROVIDER): read them after.
        tracer_provider = trace.get_tracer_provider()
        meter_provider = metrics.get_meter_provider()
        raw_tracer = getattr(_trace, "_TRACER_PROVIDER", None)
        raw_meter = getattr(_metrics, "_METER_PROVIDER", None)
        telemetry = _telemetry
        if (
            telemetry is None
            or telemetry.tracer_provider is not tracer_provider
            or telemetry.meter_provider is not meter_provider
        ):
            telemetry = Telemetry.build(tracer_provider, meter_provider)
        _telemetry = telemetry
        _seen_meter = raw_meter
        _seen_tracer = raw_tracer
        return telemetry


def _is_api_default(provider: object) -> bool:
    """The API's own providers (proxy until an SDK is set, no-op) record nothing."""
    return type(provider).__module__.startswith(("opentelemetry.trace", "opentelemetry.metrics"))


def _message_attributes(operation: str, operation_type: str, subject: str, data: object) -> dict[str, Any]:
    """The attributes of a span about one message: system, operation, destination, body size."""
    attributes: dict[str, Any] = {
        SYSTEM: "nats",
        OPERATION_NAME: operation,
        OPERATION_TYPE: operation_type,
        DESTINATION: subject,
    }
    size = _body_size(data)
    if size is not None:
        attributes[BODY_SIZE] = size
    return attributes


def _body_size(data: object) -> int | None:
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else None


class Telemetry:
    """Spans and instruments for one pair of global providers. Build with :meth:`build`."""

    def __init__(self, tracer_provider: object, meter_provider: object, tracer: Any, meter: Any) -> None:
        from opentelemetry import context, propagate, trace

        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._tracer = tracer  # None: metrics only
        self._propagate = propagate
        self._trace = trace
        self._context = context
        # set by exporters around their own sends (OTLP exporters do): an exporter that
        # publishes through natspull must not trace its own publishes
        self._suppress_key = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
        self._meter = meter  # None: traces only
        if meter is None:
            return
        self._sent = meter.create_counter(
            "messaging.client.sent.messages", "{message}", "Messages published by natspull."
        )
        self._consumed = meter.create_counter(
            "messaging.client.consumed.messages", "{message}", "Messages handed to the application."
        )
        self._duration = meter.create_histogram(
            "messaging.process.duration", "s", "Duration of consume() handler calls."
        )
        self._acks = meter.create_counter("natspull.acks", "{message}", "Messages acknowledged (+ACK).")
        self._naks = meter.create_counter("natspull.naks", "{message}", "Messages NAKed (-NAK).")
        self._terms = meter.create_counter("natspull.terms", "{message}", "Messages terminated (+TERM).")
        self._redeliveries = meter.create_counter(
            "natspull.redeliveries", "{message}", "Messages handed out with num_delivered > 1."
        )
        self._settled = {"ack": self._acks, "nak": self._naks, "term": self._terms}
        meter.create_observable_counter(
            "natspull.consumer.pull_requests",
            [self._observe("pulls_sent")],
            "{request}",
            "Pull requests sent.",
        )
        meter.create_observable_gauge(
            "natspull.consumer.buffered", [self._observe("buffered")], "{message}", "Messages buffered."
        )
        meter.create_observable_gauge(
            "natspull.consumer.pending.messages",
            [self._observe("pending_msgs")],
            "{message}",
            "Messages requested by pulls and not handed out yet.",
        )
        meter.create_observable_gauge(
            "natspull.consumer.pending.bytes",
            [self._observe("pending_bytes")],
            "By",
            "Bytes requested by pulls and not handed out yet.",
        )

    @classmethod
    def build(cls, tracer_provider: Any, meter_provider: Any) -> Telemetry | None:
        """Telemetry for these providers; None when both are the API's defaults."""
        tracer = (
            None if _is_api_default(tracer_provider) else tracer_provider.get_tracer("natspull", __version__)
        )
        meter = None if _is_api_default(meter_provider) else meter_provider.get_meter("natspull", __version__)
        if tracer is None and meter is None:
            return None
        return cls(tracer_provider, meter_provider, tracer, meter)

    def _observe(self, key: str) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        def callback(options: Any) -> Iterator[Any]:
            with _watch_lock:
                watched = list(_watched.items())
            for obj, attributes in watched:
                if obj.closed:
                    continue
                try:
                    value = getattr(obj.stats(), key)
                except Exception:  # a forked child's copy, a stats() without this key: skip it
                    continue
                yield Observation(value, attributes)

        return callback

    # ------------------------------------------------------------------ publish

    def send(
        self,
        operation: str,
        subject: str,
        data: object,
        headers: dict[str, str] | None,
        publish: Callable[[dict[str, str] | None], T],
    ) -> T:
        """Run ``publish(headers)`` in a PRODUCER span ``send <subject>`` whose context is in the
        headers passed (a copy; *headers* not a dict: passed unchanged, for publish to reject)."""
        if self._suppressed():
            return publish(headers)
        attributes = _message_attributes(operation, "send", subject, data)
        if self._tracer is None:
            result = publish(headers)
        else:
            with self._tracer.start_as_current_span(
                f"send {subject}", kind=self._trace.SpanKind.PRODUCER, attributes=attributes
            ) as span:
                result = publish(self._inject(headers))
                seq = getattr(result, "seq", None)
                if isinstance(seq, int):  # a PubAck
                    span.set_attribute(STREAM_SEQUENCE, seq)
                    span.set_attribute(STREAM_NAME, result.stream)  # type: ignore[attr-defined]
        self._count_sent(operation, 1)
        return result

    def _count_sent(self, operation: str, count: int) -> None:
        """Add *count* messages of *operation* to the sent counter (when metrics are on)."""
        if self._meter is not None:
            self._sent.add(count, {SYSTEM: "nats", OPERATION_NAME: operation})

    def send_later(
        self, operation: str, subject: str, data: object, headers: dict[str, str] | None
    ) -> tuple[Sending | None, dict[str, str] | None]:
        """For a publish answered later (``publish_async``): a PRODUCER span ``send <subject>``
        started now (a child of the current span, not made current) and the headers carrying
        its context (as :meth:`send`); the :class:`Sending` ends it. (None, *headers*):
        instrumentation suppressed."""
        if self._suppressed():
            return None, headers
        span = None
        if self._tracer is not None:
            span = self._tracer.start_span(
                f"send {subject}",
                kind=self._trace.SpanKind.PRODUCER,
                attributes=_message_attributes(operation, "send", subject, data),
            )
            token = self._context.attach(self._trace.set_span_in_context(span))
            try:
                headers = self._inject(headers)
            finally:
                self._context.detach(token)
        return Sending(self, operation, span), headers

    def _inject(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """A copy of *headers* with the current context; unchanged if it has a traceparent or is
        not a dict (the publish rejects it)."""
        if headers is None:
            headers = {}
        elif not isinstance(headers, dict) or any(
            isinstance(k, str) and k.lower() == _TRACEPARENT for k in headers
        ):
            return headers
        else:
            headers = dict(headers)
        self._propagate.inject(headers)
        return headers or None

    def batch(self, operation: str) -> Batch | None:
        """A ``publish_many`` or ``publish_batch`` (*operation*) batch: :meth:`Batch.create` per
        message, then :meth:`Batch.send` (None: instrumentation suppressed)."""
        return None if self._suppressed() else Batch(self, operation)

    def _suppressed(self) -> bool:
        return self._suppress_key is not None and bool(self._context.get_value(self._suppress_key))

    # ------------------------------------------------------------------ consume

    def process(self, handler: Callable[[Any], Any], msg: Any) -> None:
        """Call ``handler(msg)`` in a CONSUMER span ``process <subject>`` (parent: the context in
        the message's headers) and time it. Re-raises what the handler raised."""
        span, attributes = self._handout(msg, owns_span=False)
        start = time.perf_counter()
        try:
            if span is None:
                handler(msg)
            else:
                with self._trace.use_span(
                    span, end_on_exit=True, record_exception=True, set_status_on_exception=True
                ):
                    try:
                        handler(msg)
                    except Exception as exc:
                        span.set_attribute("error.type", type(exc).__qualname__)
                        raise
        finally:
            if self._meter is not None:
                self._duration.record(time.perf_counter() - start, attributes)

    def received(self, stream: str, consumer: str, msgs: list[Any], started: int) -> None:
        """A ``fetch()`` that began at *started* (``time.time_ns()``) brought *msgs*: a CLIENT
        span ``receive <stream>`` from then to now, linked to each message's producer context;
        the messages count as consumed (and their acks, NAKs and terms as settled)."""
        attributes: dict[str, Any] = {SYSTEM: "nats", CONSUMER_GROUP: consumer, STREAM_NAME: stream}
        redelivered = 0
        links = []
        trace = self._trace
        for msg in msgs:
            with contextlib.suppress(Exception):  # (not a JetStream message: a test's hand-made Msg)
                redelivered += msg.metadata.num_delivered > 1
            msg._otel = _Handout(self, None, False, attributes)
            if self._tracer is not None and msg.headers:
                context = trace.get_current_span(self._propagate.extract(msg.headers)).get_span_context()
                if context.is_valid:
                    links.append(trace.Link(context))
        if self._tracer is not None:
            span = self._tracer.start_span(
                f"receive {stream}",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    **attributes,
                    OPERATION_NAME: "fetch",
                    OPERATION_TYPE: "receive",
                    BATCH_COUNT: len(msgs),
                },
                links=links,
                start_time=started,
            )
            span.end()
        if self._meter is not None:
            if msgs:
                self._consumed.add(len(msgs), {**attributes, OPERATION_NAME: "fetch"})
            if redelivered:
                self._redeliveries.add(redelivered, attributes)

    def take(self, get: Callable[..., T], *args: Any) -> T:
        """An iterator's ``get(*args)``: end this thread's previous span, start the new message's."""
        owner = threading.get_ident()
        self.next_started(owner)
        msg = get(*args)
        self.handed_out(msg, owner)
        return msg

    def next_started(self, owner: object) -> None:
        """*owner* (a thread's id, a trio task) asks an iterator for its next message: the span of
        the message it was handed last ends."""
        last = _last_handout.get()
        if last is not None and last[0] == owner:
            _last_handout.set(None)
            last[1].end()

    def handed_out(self, msg: Any, owner: object) -> None:
        """An iterator handed *msg* to *owner*: its span runs until its ack/nak/term or the
        owner's next next()."""
        span, _ = self._handout(msg, owns_span=True)
        if span is not None:
            _last_handout.set((owner, msg._otel))

    def _handout(self, msg: Any, *, owns_span: bool) -> tuple[Any, dict[str, Any]]:
        """Start *msg*'s span (None without a tracer), count it, and tie it to the message
        (``msg._otel``, for its ack): the span and the metric attributes."""
        attributes: dict[str, Any] = {SYSTEM: "nats"}  # of the ack counters; + operation: the others
        span_attributes = {
            OPERATION_NAME: "process",
            OPERATION_TYPE: "process",
            DESTINATION: msg.subject,
            BODY_SIZE: len(msg.data),
        }
        delivered = 1
        try:
            metadata = msg.metadata
        except Exception:  # not a JetStream message (a test's hand-made Msg)
            pass
        else:
            delivered = metadata.num_delivered
            attributes[CONSUMER_GROUP] = metadata.consumer
            attributes[STREAM_NAME] = metadata.stream
            span_attributes[STREAM_SEQUENCE] = metadata.sequence.stream
            span_attributes[NUM_DELIVERED] = delivered
        span = None
        if self._tracer is not None:
            trace = self._trace
            parent = self._propagate.extract(msg.headers or {})
            link = trace.get_current_span(parent).get_span_context()
            span = self._tracer.start_span(
                f"process {msg.subject}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={**span_attributes, **attributes},
                links=[trace.Link(link)] if link.is_valid else None,
            )
        if self._meter is not None:
            self._consumed.add(1, {**attributes, OPERATION_NAME: "process"})
            if delivered > 1:
                self._redeliveries.add(1, attributes)
        msg._otel = _Handout(self, span, owns_span, attributes)
        return span, {**attributes, OPERATION_NAME: "process"}


class _Handout:
    """A message handed out while telemetry was on (``Msg._otel``): counts its settlement and,
    for an iterator's message, ends its span."""

    __slots__ = ("_owns_span", "_telemetry", "attributes", "span")

    def __init__(self, telemetry: Telemetry, span: Any, owns_span: bool, attributes: dict[str, Any]) -> None:
        self._telemetry = telemetry
        self.span = span  # the message's process span, or None (no tracer)
        self._owns_span = owns_span  # an iterator's: end() ends it; consume()'s ends with the handler
        self.attributes = attributes

    def end(self) -> None:
        """End the span if this handout owns it (once). Any thread."""
        span, self.span = self.span, None
        if span is not None and self._owns_span:
            span.end()

    def settled(self, payload: bytes) -> None:
        """The message got its terminal ack *payload* (+ACK, -NAK..., +TERM...). Any thread."""
        text = payload[:5].decode("ascii", "replace")
        kind = next((kind for prefix, kind in _ACK_PAYLOADS if text.startswith(prefix)), None)
        if kind is not None:
            if self._telemetry._meter is not None:
                self._telemetry._settled[kind].add(1, self.attributes)
            span = self.span
            if span is not None and span.is_recording():  # consume()'s may have ended already
                span.set_attribute(ACK_KIND, kind)
        self.end()


class Batch:
    """The spans of one ``publish_many``: a ``create`` span per message, one ``send`` span."""

    def __init__(self, telemetry: Telemetry, operation: str) -> None:
        self._telemetry = telemetry
        self._operation = operation
        self._links: list[Any] = []
        self._subjects: set[str] = set()
        self._count = 0

    def create(self, subject: str, data: object) -> dict[str, str] | None:
        """A PRODUCER span ``create <subject>``, ended at once: the headers carrying its context."""
        telemetry = self._telemetry
        self._subjects.add(subject)
        self._count += 1
        tracer = telemetry._tracer
        if tracer is None:
            return None
        attributes = _message_attributes("create", "create", subject, data)
        trace = telemetry._trace
        span = tracer.start_span(f"create {subject}", kind=trace.SpanKind.PRODUCER, attributes=attributes)
        headers: dict[str, str] = {}
        telemetry._propagate.inject(headers, context=trace.set_span_in_context(span))
        span.end()
        self._links.append(trace.Link(span.get_span_context()))
        return headers or None

    def send(self, run: Callable[[], T]) -> T:
        """``run()`` (the batch's publishes) in a CLIENT span ``send [<subject>]``, linked to the
        create spans; counts the messages sent once it returned."""
        telemetry = self._telemetry
        operation = self._operation
        attributes: dict[str, Any] = {SYSTEM: "nats", OPERATION_NAME: operation, OPERATION_TYPE: "send"}
        name = "send"
        if len(self._subjects) == 1:
            (subject,) = self._subjects
            name = f"send {subject}"
            attributes[DESTINATION] = subject
        if telemetry._tracer is None:
            result = run()
        else:
            attributes[BATCH_COUNT] = self._count
            with telemetry._tracer.start_as_current_span(
                name, kind=telemetry._trace.SpanKind.CLIENT, attributes=attributes, links=self._links
            ):
                result = run()
        telemetry._count_sent(operation, self._count)
        return result


class Sending:
    """The PRODUCER span of one ``publish_async`` (None: metrics only), ended by :meth:`done`
    (a done callback of its future: the loop thread, or the closing thread) or :meth:`failed`."""

    __slots__ = ("_operation", "_span", "_telemetry")

    def __init__(self, telemetry: Telemetry, operation: str, span: Any) -> None:
        self._telemetry = telemetry
        self._operation = operation
        self._span = span

    def done(self, future: Any) -> None:
        """End with the future's outcome: the PubAck's stream and sequence (and count the
        message sent), or its error."""
        error = future.exception()
        if error is not None:
            self.failed(error)
            return
        ack = future.result()
        span = self._span
        if span is not None:
            span.set_attribute(STREAM_SEQUENCE, ack.seq)
            span.set_attribute(STREAM_NAME, ack.stream)
            span.end()
        self._telemetry._count_sent(self._operation, 1)

    def failed(self, error: BaseException) -> None:
        """End with *error* recorded, status ERROR (nothing counted as sent)."""
        span = self._span
        if span is not None:
            span.record_exception(error)
            span.set_status(self._telemetry._trace.Status(self._telemetry._trace.StatusCode.ERROR))
            span.end()
