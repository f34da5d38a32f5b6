"""The pull iterator, Consumer.messages(), against a real nats-server."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from typing import Any

import pytest
from conftest import connection, fill, natspull_threads, pull_inboxes, wait_until

import natspull
from natspull._transport import _wire
from natspull.testing import NatsServer


def blocked_next(msgs: natspull.Messages, timeout: float | None = 30) -> tuple[threading.Thread, list[Any]]:
    """A thread blocked in msgs.next(); returns it and a list that receives (result, monotonic time)."""
    out: list[Any] = []

    def run() -> None:
        try:
            result: Any = msgs.next(timeout=timeout)
        except BaseException as exc:
            result = exc
        out.append((result, time.monotonic()))

    before = msgs.stats().waiters
    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: msgs.stats().waiters > before or out, message="next() to block")
    return t, out


@pytest.mark.parametrize("end", ["drain", "stop"])
def test_go_regression_end_wakes_a_blocked_next(js: natspull.JetStream, stream: str, end: str) -> None:
    """A thread blocked in next(); drain()/stop() from another thread ends it at once. 200 times.

    "At once": stop() closes the queue and wakes the waiter (no network: < 0.5 s even on a
    loaded CI machine); drain() ends it once the server confirmed the inbox's UNSUB (a round
    trip: < 2 s). Go's bug was a next() that never returned."""
    bound = {"stop": 0.5, "drain": 2.0}[end]
    consumer = js.add_consumer(stream, durable_name="go")
    for _ in range(200):
        msgs = consumer.messages(expires=5)
        t, out = blocked_next(msgs)
        time.sleep(random.random() / 500)  # random phase of the wait, not synchronisation
        t0 = time.monotonic()
        getattr(msgs, end)()
        t.join(5)
        assert not t.is_alive()
        result, woke = out[0]
        assert isinstance(result, natspull.IteratorClosedError), result
        assert woke - t0 < bound, f"{end}() took {(woke - t0) * 1000:.1f} ms to wake next()"
        msgs.stop()


def test_blocked_next_does_not_spin(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="idle")
    with consumer.messages(expires=5) as msgs:
        cpu0, wall0 = time.process_time(), time.monotonic()
        with pytest.raises(natspull.TimeoutError):
            msgs.next(timeout=1.0)
        cpu = time.process_time() - cpu0
        assert time.monotonic() - wall0 >= 1.0
        assert cpu < 0.1, f"blocked next() used {cpu:.3f} s of CPU in 1 s"


def test_drain_hands_out_everything_buffered_then_ends(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="dr")
    fill(js, stream, 50)
    msgs = consumer.messages(max_messages=100)
    first = msgs.next(timeout=5)
    wait_until(lambda: msgs.stats().buffered == 49, message="the batch to be buffered")
    msgs.drain()
    rest = list(msgs)
    for m in [first, *rest]:
        m.ack()
    assert [m.metadata.sequence.stream for m in [first, *rest]] == list(range(1, 51))
    with pytest.raises(natspull.IteratorClosedError):
        msgs.next(timeout=1)
    assert msgs.closed


def test_stop_returns_buffered_messages_for_prompt_redelivery(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="st", ack_wait=30)
    fill(js, stream, 50)
    msgs = consumer.messages(max_messages=100)
    first = msgs.next(timeout=5)
    first.ack()
    wait_until(lambda: msgs.stats().buffered == 49, message="the batch to be buffered")
    msgs.stop()
    with pytest.raises(natspull.IteratorClosedError):
        msgs.next(timeout=1)
    assert list(msgs) == []
    t0 = time.monotonic()
    seqs = []
    with consumer.messages() as second:
        while len(seqs) < 49:
            m = second.next(timeout=1.0)
            seqs.append(m.metadata.sequence.stream)
            m.ack()
    assert time.monotonic() - t0 < 1.0
    assert sorted(seqs) == list(range(2, 51))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("portable", [False, True], ids=["fast", "portable"])
def test_a_message_handed_back_at_stop_goes_to_the_next_reader_at_once(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, portable: bool
) -> None:
    """stop() hands buffered messages back (NAK) while the reader's own pull request still waits
    on the server, which redelivers a NAKed message to the oldest request waiting. Each round, a
    reader stops with one message buffered and a second reader starts at once: the second must
    get that message, delivered twice (not bounced through the stopping inbox), long before
    ack_wait could bring it back. Before the NAKs waited for the first reader's UNSUB to settle,
    the message went back to that inbox's request first (delivered 3 times), and in the portable
    mode about 2 % of rounds lost it there until ack_wait: nats-py's drain() writes its PING
    ahead of its UNSUB, so the PONG can come back before the server has seen the UNSUB."""
    if portable:
        monkeypatch.setenv(_wire.PORTABLE_ENV, "1")
    else:
        monkeypatch.delenv(_wire.PORTABLE_ENV, raising=False)
    rounds = 100
    with natspull.connect(nats_server.url) as client:
        assert client._conn.wire.portable is portable
        js = client.jetstream()
        stream = f"HANDBACK{int(portable)}"
        js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=natspull.StorageType.MEMORY)
        consumer = js.add_consumer(stream, durable_name="handback", ack_wait=5)
        try:
            for round_ in range(rounds):
                js.publish_many([(f"{stream}.m", b"taken"), (f"{stream}.m", b"handed back")])
                with consumer.messages() as first:
                    taken = first.next(timeout=5)
                    wait_until(lambda: first.stats().buffered == 1, 5, "the second message buffered")
                started = time.monotonic()
                with consumer.messages() as second:
                    try:
                        again = second.next(timeout=4)  # (ack_wait is 5 s)
                    except natspull.TimeoutError:
                        pytest.fail(f"round {round_}: the handed-back message did not come back at once")
                assert (again.data, again.metadata.num_delivered) == (b"handed back", 2)
                assert again.metadata.sequence.stream == taken.metadata.sequence.stream + 1
                assert time.monotonic() - started < 4
                taken.ack_sync()
                again.ack_sync()
        finally:
            js.delete_stream(stream)


def test_eight_threads_share_one_iterator(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="eight", ack_wait=60)
    total = 20_000
    fill(js, stream, total)
    seen: list[int] = []
    lock = threading.Lock()
    msgs = consumer.messages()

    def work() -> None:
        for m in msgs:
            with lock:
                seen.append(m.metadata.sequence.stream)
                if len(seen) == total:
                    msgs.drain()
            m.ack()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert sorted(seen) == list(range(1, total + 1))
    client.flush()
    wait_until(lambda: consumer.info().num_ack_pending == 0, message="all acks")


def test_concurrent_drain_at_random_moments_ends_all_threads(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="rnd", ack_wait=60)
    fill(js, stream, 5_000)
    handed: Counter[tuple[int, int]] = Counter()
    lock = threading.Lock()
    for _ in range(10):
        msgs = consumer.messages(max_messages=random.choice([10, 100, 500]))

        def work(msgs: natspull.Messages = msgs) -> None:
            for m in msgs:
                with lock:
                    handed[(m.metadata.sequence.stream, m.metadata.num_delivered)] += 1
                m.ack()

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(random.random() / 20)  # a random moment, not synchronisation
        msgs.drain()
        for t in threads:
            t.join(10)
            assert not t.is_alive()
    assert max(handed.values()) == 1  # never twice within one delivery


def test_server_restart_mid_iteration_loses_nothing(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1) as client:
        js = client.jetstream()
        js.add_stream(name="R", subjects=["r.>"])
        consumer = js.add_consumer("R", durable_name="c", ack_wait=5)
        js.publish_many(("r.m", b"%d" % i) for i in range(2_000))
        seen: set[int] = set()
        with consumer.messages(max_messages=50, expires=2) as msgs:
            for m in msgs:
                seen.add(m.metadata.sequence.stream)
                m.ack()
                if len(seen) == 500:
                    nats_server.restart()
                if len(seen) == 2_000:
                    break
            assert msgs.stats().reconnects >= 1
        assert seen == set(range(1, 2_001))


def test_consumer_deleted_mid_iteration(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="del")
    fill(js, stream, 3)
    msgs = consumer.messages(max_messages=10)
    for _ in range(3):
        msgs.next(timeout=5).ack()
    js.delete_consumer(stream, "del")
    with pytest.raises(natspull.ConsumerDeletedError):
        msgs.next(timeout=5)
    with pytest.raises(natspull.ConsumerDeletedError):  # sticky
        msgs.next(timeout=5)
    assert msgs.closed
    with pytest.raises(natspull.ConsumerDeletedError):
        for _ in msgs:
            pass


def test_missing_consumer_is_a_clear_error_from_first_next(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="tmp")
    js.delete_consumer(stream, "tmp")
    msgs = consumer.messages()
    with pytest.raises(natspull.ConsumerNotFoundError):
        msgs.next(timeout=5)


def test_message_larger_than_max_bytes_is_a_clear_error(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="big")
    fill(js, stream, 1, size=2000)
    msgs = consumer.messages(max_bytes=1000)
    with pytest.raises(natspull.JetStreamAPIError, match="larger than max_bytes"):
        msgs.next(timeout=5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"max_messages": 10, "max_bytes": 100, "threshold_bytes": 50},
            "threshold_bytes needs max_bytes alone",
        ),
        ({"expires": 0.5}, "expires"),
        ({"heartbeat": 0.1}, "heartbeat"),
        ({"heartbeat": 31, "expires": 100}, "heartbeat"),
        ({"heartbeat": 10, "expires": 15}, "half of expires"),
        ({"max_messages": 0}, "max_messages"),
        ({"threshold_messages": 600}, "threshold_messages"),
        ({"threshold_bytes": 10}, "threshold_bytes needs max_bytes"),
        ({"stop_after": 0}, "stop_after"),
        ({"expires": float("nan")}, "expires"),
        ({"max_messages": "10"}, "max_messages"),
    ],
)
def test_option_rules(js: natspull.JetStream, stream: str, options: dict[str, Any], message: str) -> None:
    consumer = js.add_consumer(stream, durable_name="opts")
    with pytest.raises((ValueError, TypeError), match=message):
        consumer.messages(**options)


def test_heartbeat_defaults(js: natspull.JetStream, stream: str) -> None:
    from natspull._engine._settings import pull_settings

    assert pull_settings().heartbeat == 15.0
    assert pull_settings(expires=100).heartbeat == 30.0
    assert pull_settings(expires=1).heartbeat == 0.5
    flow = pull_settings(max_bytes=1000).flow
    assert (flow.max_bytes, flow.threshold_bytes) == (1000, 500)


@pytest.mark.parametrize("raise_error", [False, True])
def test_missed_heartbeats_repull_and_optionally_raise(nats_server: NatsServer, raise_error: bool) -> None:
    """Freeze the server (SIGSTOP): the connection stays up, but no heartbeat arrives."""
    with natspull.connect(nats_server.url) as client:
        js = client.jetstream()
        js.add_stream(name="HB", subjects=["hb.>"])
        consumer = js.add_consumer("HB", durable_name="c")
        with consumer.messages(expires=2, heartbeat=0.5, error_on_missing_heartbeat=raise_error) as msgs:
            with pytest.raises(natspull.TimeoutError):
                msgs.next(timeout=0.3)
            pulls = msgs.stats().pulls_sent
            assert nats_server.pid is not None
            os.kill(nats_server.pid, signal.SIGSTOP)
            try:
                if raise_error:
                    with pytest.raises(natspull.NoHeartbeatError):
                        msgs.next(timeout=5)
                else:
                    wait_until(lambda: msgs.stats().heartbeats_missed >= 1, 5, "a missed heartbeat")
            finally:
                os.kill(nats_server.pid, signal.SIGCONT)
            # (the engine counts the missed heartbeat, then pulls again: wait for the pull too)
            wait_until(lambda: msgs.stats().pulls_sent > pulls, 5, "the re-pull")
            js.publish("hb.x", b"after")
            assert msgs.next(timeout=5).data == b"after"  # still usable


def test_stop_after(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="sa", ack_wait=30)
    fill(js, stream, 100)
    got = [m.metadata.sequence.stream for m in consumer.messages(stop_after=7)]
    assert got == list(range(1, 8))
    with consumer.messages() as msgs:  # nothing was left waiting for ack_wait
        assert msgs.next(timeout=1).metadata.sequence.stream == 8


def test_pull_sizes_on_the_wire_follow_the_threshold_rule(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="wire")
    requests: list[dict[str, Any]] = []

    async def spy() -> Any:
        async def record(msg: Any) -> None:
            requests.append(json.loads(msg.data))

        return await client._conn.wire.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.wire", cb=record)

    sub = client._loop_thread.run(spy(), 5)
    fill(js, stream, 100)
    with consumer.messages(max_messages=20, threshold_messages=5, expires=5) as msgs:
        wait_until(lambda: msgs.stats().buffered == 20, message="the first batch")
        for _ in range(15):
            msgs.next(timeout=5).ack()
        assert msgs.stats().pulls_sent == 1  # pending 5: not below the threshold
        msgs.next(timeout=5).ack()  # pending 4 < 5: re-pull 20 - 4
        wait_until(lambda: len(requests) == 2, message="the re-pull")
        for _ in range(84):
            msgs.next(timeout=5).ack()
        client.flush()
    client._loop_thread.run(sub.unsubscribe(), 5)
    assert requests[0] == {"batch": 20, "expires": 5_000_000_000, "idle_heartbeat": 2_500_000_000}
    assert requests[1]["batch"] == 16
    # Every re-pull happens below the threshold and tops pending up to the maximum: 16..20.
    assert all(16 <= r["batch"] <= 20 for r in requests[1:]), requests
    assert sum(r["batch"] for r in requests) >= 100


def test_thousand_create_stop_cycles_leave_nothing_behind(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, name="cycles") as client:
        js = client.jetstream()
        js.add_stream(name="CY", subjects=["cy.>"])
        consumer = js.add_consumer("CY", durable_name="c")
        threads = len(natspull_threads())
        for _ in range(1000):
            consumer.messages(expires=30).stop()
        client.flush()
        assert len(natspull_threads()) == threads

        # What is left is nats-py's one request inbox (JetStream API calls use it).
        wait_until(lambda: pull_inboxes(nats_server, "cycles") == [], message="inbox subscriptions to go")
        conn = connection(nats_server, "cycles")
        assert conn is not None and conn["subscriptions"] == 1, conn
        wait_until(lambda: consumer.info().num_waiting == 0, message="no waiting pull request")


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import signal, sys, natspull
    client = natspull.connect(sys.argv[1])
    consumer = client.jetstream().consumer("SIG", sys.argv[3])
    msgs = consumer.messages(max_messages=int(sys.argv[2]))
    signal.signal(signal.SIGTERM, lambda *a: msgs.drain())
    print("ready", flush=True)
    for msg in msgs:
        msg.ack()
        print(msg.metadata.sequence.stream, flush=True)
    client.close()
    """
)


def assert_printed_were_acked(consumer: natspull.Consumer, printed: list[int], max_messages: int) -> None:
    """The ledger of one signalled run: every message printed as handled is acked, none twice.

    Each run has its own consumer, so the printed sequences start at 1 and are contiguous; the
    ack floor reaching the last one proves them all acked. A message the server hands to a pull
    request while its inbox is being unsubscribed is never received by the client: nats-server
    counts it as delivered and redelivers it after ack_wait (docs/reliability.md). Such
    stragglers sit above the ack floor and are bounded by what one pull may have in flight.
    """
    assert len(set(printed)) == len(printed), "a message was handed out twice"
    assert sorted(printed) == list(range(1, len(printed) + 1)), "a message was skipped"
    # the server applies acks asynchronously after the PONG of close(): poll briefly
    wait_until(
        lambda: consumer.info().ack_floor.stream_seq >= len(printed), 3.0, "every printed message to be acked"
    )
    info = consumer.info()
    assert info.num_ack_pending <= max_messages
    assert info.ack_floor.stream_seq == info.delivered.stream_seq - info.num_ack_pending


def _sigterm_run(url: str, name: str, max_messages: int, early_lines: int) -> tuple[list[int], float]:
    """One process draining at a random moment: what it printed as handled, and how long it took
    from SIGTERM to its exit."""
    with subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SCRIPT, url, str(max_messages), name], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # a random moment in the stream of messages
        early = [proc.stdout.readline() for _ in range(early_lines)]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()  # to EOF; communicate() would skip what readline() buffered
        assert proc.wait(timeout=10) == 0, name
        took = time.monotonic() - t0
    return [int(line) for line in [*early, *out.split()]], took


@pytest.mark.timeout(240)
def test_sigterm_drain_at_random_moments(nats_server: NatsServer) -> None:
    """30 processes, 5 at a time (each starts an interpreter and imports natspull, about 0.5 s of
    CPU: the test's cost), each drained by SIGTERM at a random moment."""
    with natspull.connect(nats_server.url) as client:
        js = client.jetstream()
        js.add_stream(name="SIG", subjects=["sig.>"])
        js.publish_many(("sig.m", b"x") for _ in range(2_000))
        runs = []
        for run in range(30):
            consumer = js.add_consumer("SIG", durable_name=f"c{run}", ack_wait=60)
            runs.append((consumer, random.choice([1, 50, 500]), random.randint(0, 200)))
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            results = list(pool.map(lambda r: _sigterm_run(nats_server.url, r[0].name, r[1], r[2]), runs))
        for (consumer, max_messages, _), (printed, took) in zip(runs, results):
            assert took < 5.0, (consumer.name, took)  # a drain that hung would take the 10 s wait
            assert_printed_were_acked(consumer, printed, max_messages)


INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import sys, natspull
    client = natspull.connect(sys.argv[1])
    js = client.jetstream()
    js.add_stream(name="INT", subjects=["int.>"])
    msgs = js.add_consumer("INT", durable_name="c").messages()
    try:
        print("waiting", flush=True)
        msgs.next()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise
    """
)


def test_ctrl_c_during_blocking_next(nats_server: NatsServer) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", INTERRUPT_SCRIPT, nats_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
        # the main thread is asleep in next()'s wait (its state in /proc is S)
        stat = pathlib.Path(f"/proc/{proc.pid}/stat")
        wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "S", message="next() to sleep")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 2.0
    assert "interrupted" in out
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0


def test_max_bytes_flow_pulls_by_bytes_without_spinning(js: natspull.JetStream, stream: str) -> None:
    """64 KiB messages with max_bytes=1 MiB: 409 "Message Size Exceeds MaxBytes" is a normal end of a
    request (the next message did not fit what was left of it), not an error, and no pull storm."""
    consumer = js.add_consumer(stream, durable_name="bytes")
    fill(js, stream, 100, size=64 * 1024)
    seqs = []
    with consumer.messages(max_bytes=1024 * 1024) as msgs:
        for _ in range(100):
            m = msgs.next(timeout=5)
            seqs.append(m.metadata.sequence.stream)
            m.ack()
            assert msgs.stats().buffered <= 16  # 16 x 64 KiB = 1 MiB
        assert msgs.stats().pulls_sent < 40
    assert seqs == list(range(1, 101))


def test_an_empty_message_with_a_status_header_is_a_message(js: natspull.JetStream, stream: str) -> None:
    """Only a message without a reply subject is a server status; a stream message has its ack
    subject, so an application header named Status on an empty payload must not swallow it."""
    consumer = js.add_consumer(stream, durable_name="status", ack_wait=60)
    statuses = [{"Status": "100", "Description": "Idle Heartbeat"}, {"Status": "408"}]
    for headers in statuses:
        js.publish(f"{stream}.m", b"", headers=headers)
    with consumer.messages(max_messages=10) as msgs:
        got = [msgs.next(timeout=5) for _ in range(2)]
    assert [m.headers for m in got] == statuses
    assert [m.metadata.sequence.stream for m in got] == [1, 2]
    for m in got:
        m.ack()
    for headers in statuses:  # and through fetch()
        js.publish(f"{stream}.m", b"", headers=headers)
    fetched = consumer.fetch(2, max_wait=5)
    assert [m.headers for m in fetched] == statuses
    assert [m.metadata.sequence.stream for m in fetched] == [3, 4]
