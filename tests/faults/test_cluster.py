"""A real 3-node cluster, an R3 stream: consumption carries on through leader elections."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import wait_until

import natspull
from natspull.testing import NatsCluster, NatsServer

from ._ledger import Gate, IteratorRunner, Ledger

pytestmark = pytest.mark.cluster

TOTAL = 8_000
STAGES = 8
BUDGET = 90.0  # seconds for one run, elections included


@pytest.fixture
def cluster_client(nats_cluster: NatsCluster) -> Iterator[natspull.Client]:
    """A client that knows every node, reconnecting quickly."""
    with natspull.connect(nats_cluster.urls, reconnect_time_wait=0.1, max_reconnect_attempts=-1) as client:
        yield client


def _setup(client: natspull.Client, name: str) -> natspull.JetStream:
    """An R3 stream and its consumer, both with an elected leader, holding TOTAL messages."""
    js = client.jetstream(timeout=10)
    _idempotent(
        lambda: js.add_stream(
            name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE, num_replicas=3
        )
    )
    _leader("stream", lambda: js.stream_info(name))
    _idempotent(lambda: js.add_consumer(name, durable_name="c", ack_wait=4))
    _leader("consumer", lambda: js.consumer_info(name, "c"))
    # A new stream's subject interest reaches the other nodes a moment after its leader is
    # elected: until then a publish finds no responders (503).
    wait_until(lambda: _try_publish(js, f"{name}.m", b"%08d" % 0), 10, f"{name} to accept publishes")
    js.publish_many((f"{name}.m", b"%08d" % i) for i in range(1, TOTAL))
    return js


def _idempotent(create: Callable[[], Any], attempts: int = 3) -> None:
    """Run a create call, again if it timed out.

    A request can go unanswered when the meta leader changes while it is in flight (seen once
    in CI on a loaded machine, right after the cluster had elected its first leader).
    Creating the same stream or consumer again with the same config is a no-op, so a retry is safe.
    """
    for attempt in range(1, attempts + 1):
        try:
            create()
            return
        except natspull.TimeoutError:
            if attempt == attempts:
                raise


def _try_publish(js: natspull.JetStream, subject: str, data: bytes) -> bool:
    try:
        js.publish(subject, data, timeout=2)
    except natspull.JetStreamAPIError as exc:
        if exc.code == 503:
            return False
        raise
    return True


def _leader(what: str, lookup: Callable[[], Any]) -> str:
    """Poll a stream or consumer info until its cluster has a leader; return its server name."""
    found: list[str] = []

    def has_leader() -> bool:
        try:
            info = lookup()
        except natspull.Error:  # mid-election: no answer yet
            return False
        leader = info.cluster.leader if info.cluster else None
        if leader:
            found[:] = [leader]
        return bool(leader)

    wait_until(has_leader, 30, f"a {what} leader")
    return found[0]


def _stage(ledger: Ledger, gate: Gate, k: int, deadline: float) -> None:
    """Let the application run to stage k+1 and wait until it passed stage k."""
    gate.allow(TOTAL * (k + 1) // STAGES)
    ledger.wait_for(TOTAL * k // STAGES, deadline - time.monotonic())


@pytest.mark.timeout(150)
def test_leader_kills_during_iteration(nats_cluster: NatsCluster, cluster_client: natspull.Client) -> None:
    """SIGKILL the consumer leader, then (after it came back) the stream leader, mid-run."""
    js = _setup(cluster_client, "LK")
    gate = Gate()
    ledger = Ledger(TOTAL, gate)
    t0 = time.monotonic()
    deadline = t0 + BUDGET
    msgs = js.consumer("LK", "c").messages(expires=2)
    app = IteratorRunner(msgs, ledger)
    killed: list[str] = []
    try:
        for k, what in ((1, "consumer"), (3, "stream")):
            _stage(ledger, gate, k, deadline)
            lookup = (
                (lambda: js.consumer_info("LK", "c"))
                if what == "consumer"
                else (lambda: js.stream_info("LK"))
            )
            name = _leader(what, lookup)
            killed.append(name)
            victim: NatsServer = nats_cluster.server_for_name(name)
            victim.kill()
            _stage(ledger, gate, k + 1, deadline)  # consumption goes on on the survivors
            victim.restart()
        gate.open()
        ledger.settle(cluster_client, js, "LK", "c", deadline - time.monotonic())
    except BaseException:
        app.abort()
        raise
    app.finish()
    elapsed = time.monotonic() - t0
    ledger.check()
    assert elapsed < BUDGET
    print(f"leader kills {killed}: {ledger.summary()} in {elapsed:.1f} s; {msgs.stats()}")


@pytest.mark.timeout(150)
def test_rolling_restart_during_consume(nats_cluster: NatsCluster, cluster_client: natspull.Client) -> None:
    """Restart every node in turn (SIGTERM, start, healthy) while consume() workers run."""
    js = _setup(cluster_client, "RR")
    gate = Gate()
    ledger = Ledger(TOTAL, gate)
    t0 = time.monotonic()
    deadline = t0 + BUDGET
    ctx = js.consumer("RR", "c").consume(ledger.handle, workers=4, expires=2)
    try:
        for k, server in enumerate(nats_cluster.servers, start=1):
            _stage(ledger, gate, 2 * k - 1, deadline)
            server.restart()
        gate.open()
        ledger.settle(cluster_client, js, "RR", "c", deadline - time.monotonic())
    finally:
        gate.open()
        ctx.drain()
        assert ctx.wait(timeout=10)
    elapsed = time.monotonic() - t0
    ledger.check()
    assert elapsed < BUDGET
    print(f"rolling restart: {ledger.summary()} in {elapsed:.1f} s; {ctx.stats()}")


@pytest.mark.timeout(120)
def test_consumer_leader_stepdown_is_an_event_and_pulls_go_on(
    nats_cluster: NatsCluster, cluster_client: natspull.Client
) -> None:
    """An R3 consumer's leader steps down while a pull waits on it: the iterator gets 409
    Leadership Change as a ``leadership_change`` event, pulls again, and the next message arrives."""
    js = cluster_client.jetstream(timeout=10)
    _idempotent(lambda: js.add_stream(name="SD", subjects=["SD.>"], num_replicas=3))
    _leader("stream", lambda: js.stream_info("SD"))
    _idempotent(lambda: js.add_consumer("SD", durable_name="c", ack_wait=10))
    _leader("consumer", lambda: js.consumer_info("SD", "c"))
    events: queue.Queue[natspull.ConsumerEvent] = queue.Queue()
    # The 409 comes from the new leader, for the pulls it learnt of through the consumer's raft
    # log (nats-server consumer.go: checkPendingRequests). A pull the followers have not learnt of
    # yet (the cluster just formed, or a loaded machine) is never announced: the iterator then
    # notices at its second missed heartbeat and pulls the new leader. So step down until one is
    # announced; natspull must report each announcement as leadership_change and go on.
    with js.consumer("SD", "c").messages(expires=30, heartbeat=1, on_event=events.put) as msgs:
        seen: list[natspull.ConsumerEvent] = []
        for _ in range(5):
            wait_until(lambda: js.consumer_info("SD", "c").num_waiting == 1, 10, "the pull waiting")
            before = _leader("consumer", lambda: js.consumer_info("SD", "c"))
            reply = cluster_client.request("$JS.API.CONSUMER.LEADER.STEPDOWN.SD.c", b"", timeout=10)
            assert json.loads(reply.data)["success"] is True, reply.data
            try:
                while not seen or seen[-1].kind != "leadership_change":
                    seen.append(events.get(timeout=5))
                break
            except queue.Empty:
                continue  # not announced (see above): the heartbeat check re-pulls the new leader
        assert seen and seen[-1].kind == "leadership_change", seen
        assert seen[-1].code == 409 and seen[-1].description == "Leadership Change", seen
        assert seen[0].kind == "connected", seen
        assert {e.kind for e in seen[1:-1]} <= {"heartbeat_missed"}, seen
        assert _leader("consumer", lambda: js.consumer_info("SD", "c")) != before
        wait_until(lambda: _try_publish(js, "SD.m", b"after"), 10, "SD to accept a publish")
        msg = msgs.next(timeout=15)
        assert (msg.data, msg.metadata.sequence.stream) == (b"after", 1)
        msg.ack_sync(timeout=10)
    assert events.empty(), list(events.queue)
