"""publish_async across server faults: a restart (futures complete, fail with the server's
answer or time out; none is left pending) and a server gone for good (every future fails with
ConnectionClosedError)."""

from __future__ import annotations

import concurrent.futures

import pytest

import natspull
from natspull.testing import NatsServer


def outcome(future: concurrent.futures.Future[natspull.PubAck]) -> str:
    try:
        future.result(0)
    except natspull.TimeoutError:
        return "timeout"
    except natspull.JetStreamAPIError as exc:
        return f"api {exc.code}"
    except natspull.Error as exc:
        return type(exc).__name__
    return "acked"


@pytest.mark.timeout(60)
def test_publishes_across_a_restart_are_acked_or_time_out(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1) as client:
        js = client.jetstream(timeout=5)
        js.add_stream(name="R", subjects=["R.>"], storage=natspull.StorageType.FILE)
        before = [js.publish_async("R.a", b"%d" % i) for i in range(200)]
        nats_server.restart()
        after = [js.publish_async("R.b", b"%d" % i, timeout=10) for i in range(200)]
        js.publish_async_complete(timeout=30)
        outcomes = [outcome(f) for f in before + after]
        # (503: the restarted server's JetStream had not recovered the stream yet: no responders)
        assert set(outcomes) <= {"acked", "timeout", "api 503"}, outcomes
        assert js.publish_async_pending == 0
        stored = js.stream_info("R").state.messages
        assert stored >= outcomes.count("acked")  # an ack lost in the restart may have been stored
        # The reply subscription came back with the connection.
        assert js.publish_async("R.c", b"").result(10).seq == stored + 1


@pytest.mark.timeout(60)
def test_a_server_gone_for_good_fails_every_future(nats_server: NatsServer) -> None:
    client = natspull.connect(
        nats_server.url, max_reconnect_attempts=2, reconnect_time_wait=0.1, connect_timeout=0.5
    )
    try:
        js = client.jetstream(timeout=30)
        js.add_stream(name="G", subjects=["G.>"])
        js.publish_async("G.a", b"").result(5)
        nats_server.kill()
        futures = [js.publish_async("G.a", b"%d" % i) for i in range(50)]
        for future in futures:  # long before their 30 s timeout
            with pytest.raises(natspull.ConnectionClosedError):
                future.result(20)
        assert js.publish_async_pending == 0
    finally:
        client.close()
