"""Ordered consumers through faults: 50,000 messages on 3 subjects read filtered to 2, every
matching stream sequence exactly once and in order, while the server restarts, an admin deletes
the consumer, the network is partitioned, or a cluster's stream leader is killed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import wait_until

import natspull
from natspull.testing import NatsCluster, NatsServer

from ._chaos import ChaosProxy
from ._ledger import Gate

TOTAL = 50_000
EXPECTED = [seq for seq in range(1, TOTAL + 1) if (seq - 1) % 3 != 2]  # subjects .0 and .1
STAGES = 4  # the reader is let through in STAGES + 1 steps; a fault lands at each step
BUDGET = 90.0


def _fill(js: natspull.JetStream, name: str, replicas: int = 1) -> None:
    js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE, num_replicas=replicas)
    js.publish_many((f"{name}.{i % 3}", b"%08d" % i) for i in range(TOTAL))


class Reader:
    """Reads an ordered iterator on a thread of its own, through a :class:`Gate`, recording
    every stream sequence handed out."""

    def __init__(self, msgs: natspull.OrderedMessages) -> None:
        self.msgs = msgs
        self.gate = Gate()
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ordered-reader")
        self._thread.start()

    def _run(self) -> None:
        try:
            for msg in self.msgs:
                self.gate.wait(BUDGET)
                self.seqs.append(msg.metadata.sequence.stream)
                if len(self.seqs) == len(EXPECTED):
                    return
        except BaseException as exc:
            self.error = exc

    def stage(self, k: int) -> None:
        """Let the reader through stage k+1 and wait until it passed stage k."""
        self.gate.allow(len(EXPECTED) * (k + 1) // (STAGES + 1))
        want = len(EXPECTED) * k // (STAGES + 1)
        wait_until(
            lambda: len(self.seqs) >= want or self.error is not None,
            30,
            lambda: f"{want} messages read (read {len(self.seqs)}; {self.msgs.stats()})",
        )
        assert self.error is None, self.error

    def finish(self) -> None:
        self.gate.open()
        self._thread.join(BUDGET)
        assert not self._thread.is_alive(), f"stuck after {len(self.seqs)} messages"
        self.msgs.stop()
        assert self.error is None, self.error
        assert len(self.seqs) == len(EXPECTED)
        assert self.seqs == EXPECTED  # every matching sequence once, in order

    def abort(self) -> None:
        self.msgs.stop()
        self.gate.open()
        self._thread.join(10)


def _run(msgs: natspull.OrderedMessages, faults: list[Callable[[], None]]) -> Reader:
    reader = Reader(msgs)
    try:
        for k, fault in enumerate(faults, start=1):
            reader.stage(k)
            fault()
        reader.finish()
    except BaseException:
        reader.abort()
        raise
    return reader


def _filters(name: str) -> list[str]:
    return [f"{name}.0", f"{name}.1"]


@pytest.mark.timeout(120)
def test_server_restarts(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1) as client:
        js = client.jetstream(timeout=5)
        _fill(js, "OR")
        with js.ordered_consumer("OR", filter_subjects=_filters("OR")) as oc:
            msgs = oc.messages(expires=2)
            reader = _run(msgs, [nats_server.restart] * 3)
            stats = msgs.stats()
    assert stats.reconnects >= 3
    assert stats.resets >= 3
    print(f"restarts: {len(reader.seqs)} in order; {stats}")


@pytest.mark.timeout(120)
def test_consumer_deleted_by_admin(nats_server: NatsServer, js: natspull.JetStream) -> None:
    _fill(js, "OD")

    def delete() -> None:
        names = list(js.consumer_names("OD"))
        assert len(names) == 1, names
        js.delete_consumer("OD", names[0])

    # The server does not always answer the pulls waiting on a consumer it deletes (no 409;
    # nats-server issue 3969): the reader then resets at the second missed heartbeat, so the
    # heartbeat is short here (2 s: a reset within 4 s instead of 30 s with the defaults).
    with js.ordered_consumer("OD", filter_subjects=_filters("OD")) as oc:
        msgs = oc.messages(expires=4)
        _run(msgs, [delete, delete])
        assert msgs.stats().resets >= 2  # (a missed heartbeat under load may add one)


@pytest.fixture
def admin(nats_server: NatsServer) -> Iterator[natspull.Client]:
    with natspull.connect(nats_server.url) as client:
        yield client


# Reconnect attempts into the partition time out after the TCP connect succeeded; nats-py then
# drops that attempt's StreamWriter without closing it, and its __del__ warns (ResourceWarning).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.timeout(120)
def test_partition_of_three_heartbeats(chaos_proxy: ChaosProxy, admin: natspull.Client) -> None:
    heartbeat = 0.5
    _fill(admin.jetstream(), "OP")
    with natspull.connect(
        chaos_proxy.url, ping_interval=60, reconnect_time_wait=0.1, max_reconnect_attempts=-1
    ) as client:
        js = client.jetstream(timeout=2)
        with js.ordered_consumer("OP", filter_subjects=_filters("OP")) as oc:
            msgs = oc.messages(expires=4 * heartbeat, heartbeat=heartbeat)

            def partition() -> None:
                chaos_proxy.blackhole()
                start = time.monotonic()
                wait_until(lambda: msgs.stats().heartbeats_missed >= 1, 5, "a missed heartbeat")
                # The fault schedule: keep the partition up for 3 x heartbeat in all.
                wait_until(lambda: time.monotonic() - start >= 3 * heartbeat, 5, "3 heartbeats")
                chaos_proxy.heal()

            _run(msgs, [partition])
            stats = msgs.stats()
    assert stats.heartbeats_missed >= 1
    assert stats.resets >= 1


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_stream_leader_killed(nats_cluster: NatsCluster) -> None:
    with natspull.connect(nats_cluster.urls, reconnect_time_wait=0.1, max_reconnect_attempts=-1) as client:
        js = client.jetstream(timeout=10)
        js.add_stream(name="OC", subjects=["OC.>"], storage=natspull.StorageType.FILE, num_replicas=3)
        wait_until(lambda: _stream_leader(js, "OC"), 30, "a stream leader")
        wait_until(lambda: _try_publish(js, "OC.0", b"%08d" % 0), 10, "OC to accept publishes")
        js.publish_many((f"OC.{i % 3}", b"%08d" % i) for i in range(1, TOTAL))
        killed: list[NatsServer] = []

        def kill(leader: str) -> None:
            assert leader
            victim = nats_cluster.server_for_name(leader)
            victim.kill()
            killed.append(victim)

        def restart() -> None:
            killed.pop().restart()
            # The next fault kills another server: with the restarted one still catching up, the
            # R3 stream would have no quorum and nothing (not even a consumer) could be created.
            wait_until(lambda: _stream_current(js, "OC"), 60, "the restarted server to catch up")

        with js.ordered_consumer("OC", filter_subjects=_filters("OC")) as oc:
            msgs = oc.messages(expires=2)

            def consumer_host() -> str:
                host = [""]

                def found() -> bool:
                    try:
                        info = js.consumer_info("OC", msgs._engine.consumer)
                    except natspull.ConsumerNotFoundError:
                        return False  # a reset is creating the next one
                    host[0] = info.cluster.leader if info.cluster and info.cluster.leader else ""
                    return bool(host[0])

                wait_until(found, 30, "the consumer's server")
                return host[0]

            faults = [
                lambda: kill(_stream_leader(js, "OC")),  # the acceptance case
                restart,
                lambda: kill(consumer_host()),  # the R1 consumer's server: it must be recreated
                restart,
            ]
            try:
                _run(msgs, faults)
            finally:
                for victim in killed:
                    victim.restart()
            stats = msgs.stats()
    assert stats.resets >= 1
    print(f"stream leader killed: {stats}")


def _stream_leader(js: natspull.JetStream, name: str) -> str:
    try:
        info = js.stream_info(name)
    except natspull.Error:
        return ""
    return info.cluster.leader if info.cluster and info.cluster.leader else ""


def _stream_current(js: natspull.JetStream, name: str) -> bool:
    """The stream has a leader and both other replicas are online and current."""
    try:
        info = js.stream_info(name)
    except natspull.Error:
        return False
    cluster = info.cluster
    if cluster is None or not cluster.leader:
        return False
    replicas = cluster.replicas or []
    return len(replicas) == 2 and all(peer.current and not peer.offline for peer in replicas)


def _try_publish(js: natspull.JetStream, subject: str, data: bytes) -> bool:
    try:
        js.publish(subject, data, timeout=2)
    except natspull.JetStreamAPIError as exc:
        if exc.code == 503:
            return False
        raise
    return True
