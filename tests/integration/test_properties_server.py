"""Property tests that a real server judges: what natspull's checks accept, the server accepts."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from strategies import header_dicts, names, subjects

import natspull
from natspull._validate import check_name, check_subject
from natspull.testing import NatsServer


def test_the_server_accepts_what_the_checks_accept(nats_server_session: NatsServer) -> None:
    """A sample: every name and subject the checks accept also works on a real server."""
    counter = itertools.count()
    with natspull.connect(nats_server_session.url) as client:
        js = client.jetstream(timeout=5)

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(names, subjects)
        def check(name: str, subject: str) -> None:
            subject = f"props.{next(counter)}.{subject}"
            js.add_stream(name=check_name("stream", name), subjects=[check_subject("subject", subject)])
            try:
                assert js.publish(subject, b"x", timeout=5).stream == name
                consumer = js.add_consumer(name, durable_name=name)
                assert [m.data for m in consumer.fetch(1, max_wait=5)] == [b"x"]
            finally:
                js.delete_stream(name)

        check()


def test_headers_are_delivered_exactly_or_refused(nats_server_session: NatsServer) -> None:
    """Any headers: publish() refuses them with ValueError at once, or they arrive unchanged."""
    counter = itertools.count()
    with natspull.connect(nats_server_session.url) as client:
        js = client.jetstream(timeout=5)
        js.add_stream(name="HEADERS", subjects=["headers.>"])
        try:
            consumer = js.add_consumer("HEADERS", durable_name="c")

            @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(header_dicts)
            def check(headers: dict[str, str]) -> None:
                payload = b"%d" % next(counter)
                try:
                    client.publish("headers.x", payload, headers)
                except ValueError as exc:
                    assert "header" in str(exc)
                    return
                msg = consumer.next(timeout=5)
                msg.ack()
                assert (msg.data, msg.headers) == (payload, headers)

            check()
        finally:
            js.delete_stream("HEADERS")
