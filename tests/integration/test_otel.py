"""OpenTelemetry instrumentation (natspull/_otel.py) against a real server and the OTel SDK.

The API lets a process set its global providers once, so this module sets SDK providers with an
in-memory span exporter and metric reader (delta temporality: each read returns what changed
since the previous one) for the whole module, and turns natspull's instrumentation off again
when it is done (``_otel.set_enabled(False)``), so later test modules run uninstrumented. The
"no SDK" and "no opentelemetry at all" cases run in subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

pytest.importorskip("opentelemetry.sdk")

from conftest import fill, wait_until
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import natspull
import natspull.trio
from natspull._observe import _otel
from natspull.testing import NatsServer

TIMEOUT = 10.0


class Otel:
    def __init__(self, exporter: InMemorySpanExporter, reader: InMemoryMetricReader) -> None:
        self.exporter = exporter
        self.reader = reader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def wait_spans(self, name: str, count: int) -> list[ReadableSpan]:
        wait_until(lambda: len(self.spans(name)) >= count, TIMEOUT, f"{count} spans {name!r}")
        spans = self.spans(name)
        assert len(spans) == count, [s.name for s in spans]
        return spans

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], float]]]:
        """natspull's data points since the previous call: name -> [(attributes, value or count)]."""
        found: dict[str, list[tuple[dict[str, Any], float]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                if scope.scope.name != "natspull":
                    continue
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = point.count if hasattr(point, "count") else point.value
                        found.setdefault(metric.name, []).append((dict(point.attributes), value))
        return found


@pytest.fixture(scope="module")
def otel_sdk() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(
        preferred_temporality={
            kind: delta
            for kind in (
                Counter,
                UpDownCounter,
                Histogram,
                ObservableCounter,
                ObservableUpDownCounter,
                ObservableGauge,
            )
        }
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    if (
        trace.get_tracer_provider() is not tracer_provider
        or metrics.get_meter_provider() is not meter_provider
    ):
        pytest.fail("another test set the global OpenTelemetry providers first")
    _otel.set_enabled(True)
    try:
        yield Otel(exporter, reader)
    finally:
        _otel.set_enabled(False)  # the rest of the run: uninstrumented, as without an SDK
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture
def otel(otel_sdk: Otel) -> Otel:
    otel_sdk.exporter.clear()
    otel_sdk.metrics()  # reset the deltas
    return otel_sdk


def traceparent(span: ReadableSpan) -> str:
    """The W3C header carrying *span*'s context."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def batch_spans(otel: Otel, subject: str, operation: str, count: int) -> list[ReadableSpan]:
    """The *count* create spans of a publish_many/publish_batch to *subject*, after checking its
    one CLIENT send span (attributes, a link to each create span)."""
    (send,) = otel.spans(f"send {subject}")
    creates = otel.spans(f"create {subject}")
    assert len(creates) == count
    assert send.kind is SpanKind.CLIENT
    assert dict(send.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.operation.name": operation,
        "messaging.operation.type": "send",
        "messaging.destination.name": subject,
        "messaging.batch.message_count": count,
    }
    assert [link.context.span_id for link in send.links] == [c.context.span_id for c in creates]
    return creates


def common(stream: str, consumer: str) -> dict[str, Any]:
    return {
        "messaging.system": "nats",
        "messaging.consumer.group.name": consumer,
        "messaging.nats.stream.name": stream,
    }


def test_one_trace_from_publish_to_the_consume_handler(
    otel: Otel, js: natspull.JetStream, stream: str
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        ack = js.publish(f"{stream}.a", b"hello", timeout=TIMEOUT)
    consumer = js.add_consumer(stream, durable_name="c1", ack_wait=60)
    seen: list[Any] = []

    def handler(msg: natspull.Msg) -> None:
        seen.append((trace.get_current_span().get_span_context(), dict(msg.headers or {})))
        msg.ack()

    with consumer.consume(handler) as ctx:
        (process,) = otel.wait_spans(f"process {stream}.a", 1)
        ctx.stop()
        assert ctx.wait(TIMEOUT)

    (send,) = otel.spans(f"send {stream}.a")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": f"{stream}.a",
        "messaging.message.body.size": 5,
        "messaging.nats.stream.sequence": ack.seq,
        "messaging.nats.stream.name": stream,
    }
    # the consumer span continues the producer's trace, as its child and linked to it
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == request.get_span_context().trace_id == send.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.status.status_code is StatusCode.UNSET
    assert dict(process.attributes or {}) == {
        **common(stream, "c1"),
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": f"{stream}.a",
        "messaging.message.body.size": 5,
        "messaging.nats.stream.sequence": 1,
        "messaging.nats.num_delivered": 1,
        "natspull.ack.kind": "ack",
    }
    # the handler runs with the process span current; the headers carried the send span
    ((current, headers),) = seen
    assert current.span_id == process.context.span_id
    assert headers == {"traceparent": traceparent(send)}


@pytest.mark.trio
async def test_trio_iterator_spans_end_per_task(otel: Otel, nats_server: NatsServer) -> None:
    async with natspull.trio.open_client(nats_server.url) as client:
        js = client.jetstream()
        await js.add_stream(name="TR", subjects=["TR.>"])
        await js.publish_many([("TR.m", b"%d" % i) for i in range(3)])
        consumer = await js.add_consumer("TR", durable_name="t", ack_wait=60)
        name = "process TR.m"
        with trio.fail_after(TIMEOUT):
            async with consumer.messages() as msgs:
                first = await msgs.next()  # this task's message, not acked
                taken: list[natspull.trio.Msg] = []

                async def other_task() -> None:
                    taken.append(await msgs.next())
                    taken.append(await msgs.next())  # ends the span of this task's previous message

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(other_task)
                second, third = taken
                (span,) = otel.spans(name)  # only the other task's first message's span ended
                assert span.attributes is not None
                assert span.attributes["messaging.nats.stream.sequence"] == second.metadata.sequence.stream
                first.ack()
                third.term()
                spans = otel.spans(name)
        assert [s.attributes["messaging.nats.stream.sequence"] for s in spans if s.attributes] == [
            second.metadata.sequence.stream,
            first.metadata.sequence.stream,
            third.metadata.sequence.stream,
        ]
        assert [s.attributes.get("natspull.ack.kind") for s in spans if s.attributes] == [None, "ack", "term"]
        await js.delete_stream("TR")


def _nats_py_publish(url: str, subject: str, headers: dict[str, str]) -> None:
    """Publish with nats-py's own client (its own loop, on a thread of its own)."""
    import nats

    async def publish() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish(subject, b"raw", headers=headers, timeout=TIMEOUT)
        finally:
            await nc.close()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(publish())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-nats-py")
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert not errors, errors


TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


@pytest.mark.parametrize("publisher", ["nats-py", "natspull"])
def test_a_traceparent_set_by_the_publisher_is_continued(
    otel: Otel, nats_server: NatsServer, js: natspull.JetStream, stream: str, publisher: str
) -> None:
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    if publisher == "nats-py":
        _nats_py_publish(nats_server.url, f"{stream}.raw", headers)
    else:  # an explicit header is not overwritten by natspull's own send span
        js.publish(f"{stream}.raw", b"raw", headers=headers, timeout=TIMEOUT)
        assert len(otel.spans(f"send {stream}.raw")) == 1
    received: list[dict[str, str]] = []

    def handler(msg: natspull.Msg) -> None:
        received.append(dict(msg.headers or {}))
        msg.ack()

    with js.add_consumer(stream, durable_name="raw").consume(handler) as ctx:
        (process,) = otel.wait_spans(f"process {stream}.raw", 1)
        ctx.stop()
        assert ctx.wait(TIMEOUT)
    assert received == [headers]
    assert process.context.trace_id == TRACE_ID
    assert process.parent is not None and process.parent.span_id == SPAN_ID
    assert process.parent.is_remote
    assert process.context.trace_state.to_header() == "vendor=1"


def test_core_publish_span_and_header(
    otel: Otel, client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    # a core publish to a stream's subject is stored: read it back through a consumer
    client.publish(f"{stream}.core", b"abc", headers={"k": "v"})
    client.flush(TIMEOUT)
    (send,) = otel.spans(f"send {stream}.core")
    assert send.kind is SpanKind.PRODUCER
    assert dict(send.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": f"{stream}.core",
        "messaging.message.body.size": 3,
    }
    (msg,) = js.add_consumer(stream, durable_name="core").fetch(1, max_wait=TIMEOUT)
    msg.ack()
    assert msg.headers == {
        "k": "v",
        "traceparent": traceparent(send),
    }


def test_publish_async_spans_end_with_their_pubacks_and_travel_in_the_headers(
    otel: Otel, js: natspull.JetStream, stream: str
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        futures = [js.publish_async(f"{stream}.a", b"%d" % i) for i in range(3)]
        # a wrong expectation: the server refuses it, its span ends with the error
        refused = js.publish_async(f"{stream}.a", b"x", expected_last_sequence=99)
    acks = [f.result(TIMEOUT) for f in futures]
    with pytest.raises(natspull.JetStreamAPIError) as info:
        refused.result(TIMEOUT)
    sends = otel.wait_spans(f"send {stream}.a", 4)
    by_seq = {dict(s.attributes or {}).get("messaging.nats.stream.sequence"): s for s in sends}
    failed = by_seq.pop(None)
    assert sorted(by_seq) == [ack.seq for ack in acks] == [1, 2, 3]
    for ack in acks:
        span = by_seq[ack.seq]
        assert span.kind is SpanKind.PRODUCER
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
        assert span.status.status_code is StatusCode.UNSET
        assert dict(span.attributes or {}) == {
            "messaging.system": "nats",
            "messaging.operation.name": "publish_async",
            "messaging.operation.type": "send",
            "messaging.destination.name": f"{stream}.a",
            "messaging.message.body.size": 1,
            "messaging.nats.stream.sequence": ack.seq,
            "messaging.nats.stream.name": stream,
        }
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    assert dict(failed.events[0].attributes or {})["exception.message"] == str(info.value)
    # each stored message carries its own span's context
    msgs = js.add_consumer(stream, durable_name="pa").fetch(3, max_wait=TIMEOUT)
    expected = [{"traceparent": traceparent(by_seq[m.metadata.sequence.stream])} for m in msgs]
    assert [m.headers for m in msgs] == expected
    for msg in msgs:
        msg.ack()
    # counted as sent once acknowledged: the refused one is not
    assert otel.metrics()["messaging.client.sent.messages"] == [
        ({"messaging.system": "nats", "messaging.operation.name": "publish_async"}, 3)
    ]


def test_publish_batch_spans(otel: Otel, js: natspull.JetStream) -> None:
    stream = "OB"
    js.add_stream(name=stream, subjects=[f"{stream}.>"], allow_atomic=True)
    try:
        ack = js.publish_batch([(f"{stream}.m", b"1"), (f"{stream}.m", b"22", {"k": "v"})], timeout=TIMEOUT)
        creates = batch_spans(otel, f"{stream}.m", "publish_batch", 2)
        assert [dict(c.attributes or {})["messaging.message.body.size"] for c in creates] == [1, 2]
        msgs = js.add_consumer(stream, durable_name="b").fetch(2, max_wait=TIMEOUT)
        assert [m.metadata.sequence.stream for m in msgs] == [ack.seq - 1, ack.seq]
        assert [(m.headers or {})["traceparent"] for m in msgs] == [traceparent(c) for c in creates]
        assert (msgs[1].headers or {})["k"] == "v"
        for msg in msgs:
            msg.ack()
        assert otel.metrics()["messaging.client.sent.messages"] == [
            ({"messaging.system": "nats", "messaging.operation.name": "publish_batch"}, 2)
        ]
    finally:
        js.delete_stream(stream)


def test_publishes_of_an_exporter_are_not_traced(otel: Otel, js: natspull.JetStream, stream: str) -> None:
    from opentelemetry import context

    # what OTLP exporters do around their sends: an exporter publishing through natspull
    token = context.attach(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        js.publish(f"{stream}.x", b"1", timeout=TIMEOUT)
        js.publish_many([(f"{stream}.x", b"2")], timeout=TIMEOUT)
    finally:
        context.detach(token)
    assert otel.spans() == []
    msgs = js.add_consumer(stream, durable_name="x").fetch(2, max_wait=TIMEOUT)
    assert [m.headers for m in msgs] == [None, None]
    for msg in msgs:
        msg.ack()


def test_iterator_spans_end_at_the_ack_or_at_the_next_next(
    otel: Otel, js: natspull.JetStream, stream: str
) -> None:
    fill(js, stream, 3, size=4)
    creates = batch_spans(otel, f"{stream}.m", "publish_many", 3)
    assert all(c.kind is SpanKind.PRODUCER for c in creates)
    assert dict(creates[0].attributes or {}) == {
        "messaging.system": "nats",
        "messaging.operation.name": "create",
        "messaging.operation.type": "create",
        "messaging.destination.name": f"{stream}.m",
        "messaging.message.body.size": 4,
    }
    name = f"process {stream}.m"
    with js.add_consumer(stream, durable_name="it", ack_wait=60).messages() as msgs:
        first = msgs.next(TIMEOUT)
        assert otel.spans(name) == []  # open while the application holds the message
        first.ack()
        (span1,) = otel.spans(name)
        second = msgs.next(TIMEOUT)
        assert len(otel.spans(name)) == 1
        third = msgs.next(TIMEOUT)  # not acked: the next next() ended the second message's span
        span2 = otel.spans(name)[1]
        third.nak(delay=30)
        span3 = otel.spans(name)[2]
        second.ack()
        assert len(otel.spans(name)) == 3  # an ack after the span ended adds nothing
    for index, (span, create) in enumerate(zip([span1, span2, span3], creates)):
        assert span.kind is SpanKind.CONSUMER
        assert span.context.trace_id == create.context.trace_id
        assert span.parent is not None and span.parent.span_id == create.context.span_id
        expected = {
            **common(stream, "it"),
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": f"{stream}.m",
            "messaging.message.body.size": 4,
            "messaging.nats.stream.sequence": index + 1,
            "messaging.nats.num_delivered": 1,
        }
        if index != 1:
            expected["natspull.ack.kind"] = ["ack", None, "nak"][index]
        assert dict(span.attributes or {}) == expected


def test_leaving_the_with_block_ends_the_last_span(otel: Otel, js: natspull.JetStream, stream: str) -> None:
    """A loop left with break: the message taken last, never settled, gets no next(); its span
    ends with the block (the ordered consumer's messages are never settled at all)."""
    fill(js, stream, 5, size=4)
    name = f"process {stream}.m"
    with js.add_consumer(stream, durable_name="it", ack_wait=60).messages() as msgs:
        for msg in msgs:
            if msg.metadata.sequence.stream == 2:
                break
        assert len(otel.spans(name)) == 1  # the first, ended by the second next()
    spans = otel.spans(name)
    assert [s.attributes["messaging.nats.stream.sequence"] for s in spans if s.attributes] == [1, 2]
    with js.ordered_consumer(stream) as ordered, ordered.messages() as msgs:
        assert msgs.next(TIMEOUT).metadata.sequence.stream == 1
        assert len(otel.spans(name)) == 2
    spans = otel.spans(name)[2:]
    assert [s.attributes["messaging.nats.stream.sequence"] for s in spans if s.attributes] == [1]
    assert all("natspull.ack.kind" not in (s.attributes or {}) for s in otel.spans(name))


@pytest.mark.trio
async def test_trio_leaving_the_block_ends_the_last_span(otel: Otel, nats_server: NatsServer) -> None:
    async with natspull.trio.open_client(nats_server.url) as client:
        js = client.jetstream()
        await js.add_stream(name="TL", subjects=["TL.>"])
        await js.publish_many([("TL.m", b"%d" % i) for i in range(3)])
        consumer = await js.add_consumer("TL", durable_name="t", ack_wait=60)
        name = "process TL.m"
        with trio.fail_after(TIMEOUT):
            async with consumer.messages() as msgs:
                taken = await msgs.next()  # never settled
                assert otel.spans(name) == []
            (span,) = otel.spans(name)
        assert span.attributes is not None
        assert span.attributes["messaging.nats.stream.sequence"] == taken.metadata.sequence.stream
        await js.delete_stream("TL")


def test_a_failing_handler_is_recorded_on_its_span(otel: Otel, js: natspull.JetStream, stream: str) -> None:
    js.publish(f"{stream}.bad", b"x", timeout=TIMEOUT)

    def handler(msg: natspull.Msg) -> None:
        raise KeyError("boom")

    consumer = js.add_consumer(stream, durable_name="bad", ack_wait=60, max_deliver=1)
    with consumer.consume(handler, error_handler=lambda exc, msg: None) as ctx:
        (span,) = otel.wait_spans(f"process {stream}.bad", 1)
        wait_until(lambda: ctx.stats().failed == 1, TIMEOUT, "the failure to be counted")
        ctx.stop()
        assert ctx.wait(TIMEOUT)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "KeyError"
    assert [event.name for event in span.events] == ["exception"]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"] == "KeyError"
    found = otel.metrics()
    assert found["natspull.naks"] == [(common(stream, "bad"), 1)]  # consume() NAKed it


def test_metrics_after_a_run_of_known_size(otel: Otel, js: natspull.JetStream, stream: str) -> None:
    fill(js, stream, 50)
    naked = {5, 10, 15}  # stream sequences NAKed on their first delivery

    def handler(msg: natspull.Msg) -> None:
        if msg.metadata.sequence.stream in naked and msg.metadata.num_delivered == 1:
            msg.nak()
        else:
            msg.ack()

    with js.add_consumer(stream, durable_name="m", ack_wait=60).consume(handler, workers=2) as ctx:
        wait_until(lambda: ctx.stats().handled == 53, TIMEOUT, "53 handler calls")
        ctx.drain()
        assert ctx.wait(TIMEOUT)
    otel.wait_spans(f"process {stream}.m", 53)
    found = otel.metrics()
    attributes = common(stream, "m")
    processing = {**attributes, "messaging.operation.name": "process"}
    assert found["messaging.client.sent.messages"] == [
        ({"messaging.system": "nats", "messaging.operation.name": "publish_many"}, 50)
    ]
    assert found["messaging.client.consumed.messages"] == [(processing, 53)]
    assert found["messaging.process.duration"] == [(processing, 53)]  # a histogram: its count
    assert found["natspull.acks"] == [(attributes, 50)]
    assert found["natspull.naks"] == [(attributes, 3)]
    assert found["natspull.redeliveries"] == [(attributes, 3)]
    assert "natspull.terms" not in found


def test_fetch_and_next_are_receive_spans(otel: Otel, js: natspull.JetStream, stream: str) -> None:
    """fetch()/next(): one CLIENT span ``receive <stream>`` per request, over the wait, linked to
    the messages' producer spans; the messages count as consumed and their acks as settled."""
    sends = [js.publish(f"{stream}.m", b"%d" % i, timeout=TIMEOUT) for i in range(3)]
    assert len(sends) == 3
    creates = otel.spans(f"send {stream}.m")
    assert len(creates) == 3
    consumer = js.add_consumer(stream, durable_name="f", ack_wait=60)
    otel.metrics()  # (the publishes)
    msgs = consumer.fetch(5, max_wait=0.5)
    assert len(msgs) == 3
    (span,) = otel.spans(f"receive {stream}")
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        **common(stream, "f"),
        "messaging.operation.name": "fetch",
        "messaging.operation.type": "receive",
        "messaging.batch.message_count": 3,
    }
    assert [link.context.span_id for link in span.links] == [c.context.span_id for c in creates]
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time - span.start_time >= 0.4e9  # it waited for the (unfilled) request to expire
    msgs[0].ack()
    msgs[1].ack()
    msgs[2].nak(delay=30)
    again = consumer.fetch(1, no_wait=True)
    assert again == []
    assert dict(otel.spans(f"receive {stream}")[1].attributes or {})["messaging.batch.message_count"] == 0
    js.publish(f"{stream}.m", b"3", timeout=TIMEOUT)
    consumer.next(timeout=TIMEOUT).term()
    spans = otel.spans(f"receive {stream}")
    assert [dict(s.attributes or {})["messaging.batch.message_count"] for s in spans] == [3, 0, 1]
    assert otel.spans(f"process {stream}.m") == []  # fetched messages have no process span
    found = otel.metrics()
    attributes = common(stream, "f")
    assert found["messaging.client.consumed.messages"] == [
        ({**attributes, "messaging.operation.name": "fetch"}, 4)
    ]
    assert found["natspull.acks"] == [(attributes, 2)]
    assert found["natspull.naks"] == [(attributes, 1)]
    assert found["natspull.terms"] == [(attributes, 1)]


@pytest.mark.trio
async def test_trio_fetch_is_a_receive_span(otel: Otel, nats_server: NatsServer) -> None:
    async with natspull.trio.open_client(nats_server.url) as client:
        js = client.jetstream()
        await js.add_stream(name="TF", subjects=["TF.>"])
        await js.publish_many([("TF.m", b"%d" % i) for i in range(2)])
        consumer = await js.add_consumer("TF", durable_name="t", ack_wait=60)
        with trio.fail_after(TIMEOUT):
            msgs = await consumer.fetch(5, max_wait=0.5)
        assert len(msgs) == 2
        (span,) = otel.spans("receive TF")
        assert dict(span.attributes or {})["messaging.batch.message_count"] == 2
        assert [link.context.span_id for link in span.links] == [
            c.context.span_id for c in otel.spans("create TF.m")
        ]
        await js.delete_stream("TF")


def test_observable_instruments_read_the_iterator_stats(
    otel: Otel, js: natspull.JetStream, stream: str
) -> None:
    fill(js, stream, 10)
    with js.add_consumer(stream, durable_name="obs").messages(max_messages=100) as msgs:
        wait_until(lambda: msgs.stats().buffered == 10, TIMEOUT, "10 buffered messages")
        found = otel.metrics()
        stats = msgs.stats()
        attributes = common(stream, "obs")
        assert found["natspull.consumer.buffered"] == [(attributes, 10)]
        assert found["natspull.consumer.pending.messages"] == [(attributes, stats.pending_msgs)]
        assert found["natspull.consumer.pending.bytes"] == [(attributes, stats.pending_bytes)]
        assert found["natspull.consumer.pull_requests"] == [(attributes, stats.pulls_sent)]
        assert (stats.pending_msgs, stats.pulls_sent) == (100, 1)  # requested, not handed out
        msgs.stop()
    assert "natspull.consumer.buffered" not in otel.metrics()  # a stopped iterator is not reported


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# Publishes (core, JetStream, publish_many) and receives (iterator, consume()) in a subprocess;
# prints the subjects and headers received. sys.argv[1]: the server's URL.
_ROUND_TRIP = """
import threading

import natspull

with natspull.connect(sys.argv[1]) as client:
    js = client.jetstream()
    js.add_stream(name="P", subjects=["P.>"])
    js.publish("P.js", b"1", timeout=10)
    js.publish_many([("P.many", b"2")], timeout=10)
    client.publish("P.core", b"3")
    client.flush(10)
    consumer = js.add_consumer("P", durable_name="p")
    with consumer.messages() as msgs:
        got = [msgs.next(10) for _ in range(2)]
    handled = []
    done = threading.Event()
    with consumer.consume(lambda m: (handled.append(m), m.ack(), done.set())):
        assert done.wait(10)
    for msg in got:
        msg.ack()
    js.delete_stream("P")
print([m.subject for m in got + handled], [m.headers for m in got + handled])
"""
_NO_HEADERS = "['P.js', 'P.many', 'P.core'] [None, None, None]\n"
# natspull imports nothing of OpenTelemetry at import time (None: imports blocked, see below)
_NOT_AT_IMPORT = 'import sys\nimport natspull\nassert sys.modules.get("opentelemetry") is None\n'


def test_with_the_api_but_no_sdk_nothing_is_added(nats_server: NatsServer) -> None:
    after = (
        "from natspull._observe import _otel\n"
        "assert _otel.current() is None\n"
        "assert 'opentelemetry.trace' in sys.modules  # looked up, and found unconfigured\n"
    )
    assert _run(_NOT_AT_IMPORT + _ROUND_TRIP + after, nats_server.url) == _NO_HEADERS


def test_without_opentelemetry_installed_everything_works(nats_server: NatsServer) -> None:
    blocked = (
        "import sys\nsys.modules['opentelemetry'] = None  # import opentelemetry... raises ImportError\n"
    )
    after = "from natspull._observe import _otel\nassert _otel.current() is None and _otel._unavailable\n"
    assert _run(blocked + _NOT_AT_IMPORT + _ROUND_TRIP + after, nats_server.url) == _NO_HEADERS


def test_natspull_otel_0_switches_it_off(nats_server: NatsServer) -> None:
    sdk = textwrap.dedent("""
        import sys
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    """)
    after = "assert exporter.get_finished_spans() == ()\n"
    assert _run(sdk + _ROUND_TRIP + after, nats_server.url, env={"NATSPULL_OTEL": "0"}) == _NO_HEADERS
