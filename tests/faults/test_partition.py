"""A network partition through the chaos proxy: missed heartbeats are detected, nothing is lost."""

from __future__ import annotations

import time

import pytest
from conftest import wait_until

import natspull

from ._chaos import ChaosProxy
from ._ledger import IteratorRunner, Ledger

HEARTBEAT = 0.5
PARTITION = 3 * HEARTBEAT
BATCH = 1_000


def _is_heartbeat_notice(exc: natspull.Error) -> bool:
    return isinstance(exc, natspull.NoHeartbeatError)


def _publish(js: natspull.JetStream, name: str, start: int) -> None:
    js.publish_many((f"{name}.m", b"%08d" % i) for i in range(start, start + BATCH))


# Reconnect attempts into the partition time out after the TCP connect succeeded; nats-py then
# drops that attempt's StreamWriter without closing it, and its __del__ warns (ResourceWarning).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize(
    ("ping_interval", "error_on_missing_heartbeat"),
    [(60.0, False), (60.0, True), (0.3, False)],
    ids=["connection-kept", "heartbeat-errors", "connection-stale"],
)
def test_partition_of_three_heartbeats(
    chaos_proxy: ChaosProxy,
    admin: natspull.Client,
    ping_interval: float,
    error_on_missing_heartbeat: bool,
) -> None:
    """Partition the consumer's connection for 3 x heartbeat while the server gets new messages.

    With a long ping interval the connection outlives the partition and only the pull's missed
    heartbeats notice it; with a short one the client also declares the connection stale and
    reconnects once the partition heals. Either way: re-pull, nothing lost, every ack lands.
    """
    js_admin = admin.jetstream()
    js_admin.add_stream(name="P", subjects=["P.>"])
    js_admin.add_consumer("P", durable_name="c", ack_wait=5)
    ledger = Ledger(3 * BATCH)
    t0 = time.monotonic()
    with natspull.connect(
        chaos_proxy.url, ping_interval=ping_interval, reconnect_time_wait=0.1, max_reconnect_attempts=-1
    ) as client:
        msgs = (
            client.jetstream()
            .consumer("P", "c")
            .messages(
                expires=2 * HEARTBEAT * 2,
                heartbeat=HEARTBEAT,
                error_on_missing_heartbeat=error_on_missing_heartbeat,
            )
        )
        app = IteratorRunner(msgs, ledger, on_error=_is_heartbeat_notice)
        try:
            _publish(js_admin, "P", 0)
            ledger.wait_for(BATCH, 10)
            chaos_proxy.blackhole()
            partitioned = time.monotonic()
            _publish(js_admin, "P", BATCH)  # the server sends them into the partition
            if ping_interval > PARTITION:
                wait_until(lambda: msgs.stats().heartbeats_missed >= 1, 5, "a missed heartbeat")
            else:
                wait_until(lambda: not client.is_connected, 5, "the client to find the connection stale")
            # The fault schedule: keep the partition up for 3 x heartbeat in all.
            time.sleep(max(partitioned + PARTITION - time.monotonic(), 0))
            held = ledger.unique
            pulls = msgs.stats().pulls_sent
            chaos_proxy.heal()
            _publish(js_admin, "P", 2 * BATCH)
            ledger.settle(client, js_admin, "P", "c", 20)
            stats = msgs.stats()
        except BaseException:
            app.abort()
            raise
        app.finish()
    elapsed = time.monotonic() - t0
    ledger.check()
    assert held <= BATCH  # nothing crossed the partition
    assert stats.pulls_sent > pulls  # pulled again after the partition healed
    if error_on_missing_heartbeat:
        assert app.notices, "NoHeartbeatError never surfaced from next()"
    else:
        assert not app.notices
    if ping_interval > PARTITION:
        assert stats.heartbeats_missed >= 1
        assert stats.reconnects == 0  # the connection outlived the partition
    else:  # the reconnect, not the heartbeat, noticed it (no heartbeat is checked while disconnected)
        assert stats.reconnects >= 1
    assert elapsed < 20
    print(f"partition: {ledger.summary()} in {elapsed:.1f} s; {stats}; notices {len(app.notices)}")


def test_flush_timeout_during_partition_leaves_the_connection_usable(chaos_proxy: ChaosProxy) -> None:
    with natspull.connect(chaos_proxy.url, ping_interval=60) as client:
        client.flush(timeout=5)
        chaos_proxy.blackhole()
        with pytest.raises(natspull.TimeoutError):
            client.flush(timeout=0.3)
        chaos_proxy.heal()
        client.flush(timeout=2)  # the PONG of the timed-out flush arrives first and breaks the reader


def test_stop_during_long_partition_leaves_the_connection_usable(
    chaos_proxy: ChaosProxy, admin: natspull.Client
) -> None:
    js_admin = admin.jetstream()
    js_admin.add_stream(name="PS", subjects=["PS.>"])
    js_admin.add_consumer("PS", durable_name="c")
    with natspull.connect(chaos_proxy.url, ping_interval=60) as client:
        consumer = client.jetstream().consumer("PS", "c")
        msgs = consumer.messages(expires=10)
        client.flush(timeout=5)
        chaos_proxy.blackhole()
        msgs.stop()
        # the engine gives up draining after its 5 s timeout, and unsubscribes
        wait_until(lambda: not client._conn.engines, 10, "the engine to give up draining")
        chaos_proxy.heal()
        # The held UNSUB reaches the server with the heal. Until the server has processed it,
        # the old pull (expires=10) may still take the message into the dead inbox (a server-side
        # race, docs/reliability.md): a round trip on this connection orders the two.
        client.flush(timeout=5)
        js_admin.publish("PS.m", b"after")
        with consumer.messages() as again:
            assert again.next(timeout=3).data == b"after"


def test_publish_many_times_out_cleanly_during_partition(
    chaos_proxy: ChaosProxy, admin: natspull.Client
) -> None:
    """Regression: LoopThread.run took the coroutine's own TimeoutError for its unbounded wait
    running out, and formatting ``timeout=None`` raised TypeError instead."""
    admin.jetstream().add_stream(name="PM", subjects=["PM.>"])
    with natspull.connect(chaos_proxy.url, ping_interval=60) as client:
        js = client.jetstream()
        js.publish_many([("PM.m", b"before")], timeout=2)
        chaos_proxy.blackhole()
        try:
            with pytest.raises(natspull.TimeoutError):
                js.publish_many([("PM.m", b"lost")], timeout=0.3)
        finally:
            chaos_proxy.heal()
