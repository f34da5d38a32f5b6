"""Consumer.consume() worker pools and shutdown_on_signals, against a real nats-server."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from typing import IO

import pytest
from conftest import fill, natspull_threads, wait_until
from test_messages import assert_printed_were_acked

import natspull
from natspull.testing import NatsServer


def test_four_workers_handle_each_message_once(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="w4", ack_wait=60)
    total = 10_000
    fill(js, stream, total)
    handled: Counter[int] = Counter()
    names: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        with lock:
            handled[msg.metadata.sequence.stream] += 1
            names.add(threading.current_thread().name)
            if len(handled) == total:
                done.set()
        msg.ack()

    with consumer.consume(handler, workers=4) as ctx:
        assert done.wait(30)
    assert ctx.closed and ctx.wait(0)
    assert sorted(handled) == list(range(1, total + 1)) and set(handled.values()) == {1}
    assert len(names) == 4 and all(n.startswith("natspull-worker-") for n in names)
    client.flush()
    wait_until(lambda: consumer.info().num_ack_pending == 0, message="all acks")
    assert ctx.stats().handled == total


def test_failing_handler_messages_are_redelivered(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="fail", ack_wait=60)
    fill(js, stream, 100)
    deliveries: Counter[int] = Counter()
    errors: list[tuple[BaseException, int]] = []
    lock = threading.Lock()
    done = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        seq = msg.metadata.sequence.stream
        with lock:
            deliveries[seq] += 1
        if seq % 10 == 0 and msg.metadata.num_delivered == 1:
            raise RuntimeError(f"boom {seq}")
        msg.ack()
        with lock:
            if len(deliveries) == 100 and all(deliveries[s] == 2 for s in range(10, 101, 10)):
                done.set()

    def on_error(exc: BaseException, msg: natspull.Msg) -> None:
        errors.append((exc, msg.metadata.sequence.stream))

    with consumer.consume(handler, workers=2, error_handler=on_error) as ctx:
        assert done.wait(20)
    assert sorted(seq for _, seq in errors) == list(range(10, 101, 10))
    assert ctx.stats().failed == 10
    client.flush()
    wait_until(lambda: consumer.info().num_ack_pending == 0, message="all acks")


def test_flow_control_bounds_buffered_plus_in_handlers(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="flow", ack_wait=60)
    fill(js, stream, 200)
    release = threading.Event()
    in_handler = threading.Semaphore(0)

    def handler(msg: natspull.Msg) -> None:
        in_handler.release()
        release.wait(10)
        msg.ack()

    ctx = consumer.consume(handler, workers=4, max_messages=20)
    for _ in range(4):
        assert in_handler.acquire(timeout=5)
    wait_until(lambda: ctx.stats().buffered == 16, message="the buffer to fill")
    stats = ctx.stats()
    assert stats.buffered + 4 <= 20
    assert consumer.info().num_ack_pending <= 20
    release.set()
    ctx.stop()
    assert ctx.wait(10)


def test_drain_mid_run_handles_every_buffered_message(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="dr", ack_wait=60)
    fill(js, stream, 1000)
    handled: list[int] = []
    lock = threading.Lock()
    started = threading.Event()

    def handler(msg: natspull.Msg) -> None:
        started.set()
        time.sleep(0.0005)  # simulated work
        with lock:
            handled.append(msg.metadata.sequence.stream)
        msg.ack()

    ctx = consumer.consume(handler, workers=4, max_messages=100)
    assert started.wait(5)
    ctx.drain()
    assert ctx.wait(10)
    assert not [t for t in natspull_threads() if t.name.startswith("natspull-worker")]
    assert len(handled) == len(set(handled)) == ctx.stats().delivered
    client.flush()
    # Every buffered message was handled and acked. The drain comes while the server is still
    # sending the first pull's batch: a message it routes to the pull while it processes the
    # inbox's UNSUB never arrives (docs/reliability.md), and waits above the ack floor.
    assert_printed_were_acked(consumer, handled, 100)


def test_stop_mid_run_returns_buffered_for_prompt_redelivery(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="st", ack_wait=30)
    fill(js, stream, 300)
    seen: Counter[int] = Counter()
    lock = threading.Lock()
    gate = threading.Event()
    running = threading.Semaphore(0)

    def slow(msg: natspull.Msg) -> None:
        running.release()
        gate.wait(10)
        with lock:
            seen[msg.metadata.sequence.stream] += 1
        msg.ack()

    ctx = consumer.consume(slow, workers=2, max_messages=100)
    assert running.acquire(timeout=10) and running.acquire(timeout=10), "both handlers running"
    wait_until(lambda: ctx.stats().buffered >= 50, message="a buffer")
    ctx.stop()
    gate.set()  # the two running handlers finish after stop()
    assert ctx.wait(10)
    first = sum(seen.values())
    assert first == 2
    done = threading.Event()

    def fast(msg: natspull.Msg) -> None:
        with lock:
            seen[msg.metadata.sequence.stream] += 1
            if len(seen) == 300:
                done.set()
        msg.ack()

    t0 = time.monotonic()
    with consumer.consume(fast, workers=2):
        assert done.wait(5)
    assert time.monotonic() - t0 < 1.5
    assert set(seen.values()) == {1}


def test_stop_and_drain_from_inside_a_handler(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="inside", ack_wait=60)
    fill(js, stream, 50)
    for end in ("stop", "drain"):
        holder: list[natspull.ConsumeContext] = []
        ready = threading.Event()

        def handler(
            msg: natspull.Msg,
            end: str = end,
            ready: threading.Event = ready,
            holder: list[natspull.ConsumeContext] = holder,
        ) -> None:
            ready.wait(5)
            msg.ack()
            getattr(holder[0], end)()

        holder.append(consumer.consume(handler, workers=3))
        ready.set()
        assert holder[0].wait(10)
        assert holder[0].closed


def test_wait_reraises_terminal_errors(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="del")
    ctx = consumer.consume(lambda m: m.ack(), workers=2)
    # The server answers a deletion with 409 only to pulls it has registered; a pull still queued
    # for the consumer when it is deleted vanishes, and only the missed heartbeats (30 s) tell.
    wait_until(lambda: consumer.info().num_waiting == 1, message="the pull to be waiting")
    js.delete_consumer(stream, "del")
    with pytest.raises(natspull.ConsumerDeletedError):
        ctx.wait(10)
    assert isinstance(ctx.errors[0], natspull.ConsumerDeletedError)


def test_consume_argument_checks(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="args")
    with pytest.raises(TypeError, match="handler"):
        consumer.consume(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        consumer.consume(print, workers=0)
    with pytest.raises(TypeError, match="error_handler"):
        consumer.consume(print, error_handler=3)  # type: ignore[arg-type]


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import faulthandler, sys, threading, natspull
    faulthandler.enable()  # on a hang the test sends SIGABRT: every thread's stack, then the end
    client = natspull.connect(sys.argv[1])
    consumer = client.jetstream().consumer("SIGC", sys.argv[3])
    lock = threading.Lock()

    def handle(msg):
        msg.ack()
        with lock:
            print(msg.metadata.sequence.stream, flush=True)

    ctx = consumer.consume(handle, workers=4, max_messages=int(sys.argv[2]))
    with natspull.shutdown_on_signals(ctx):
        with lock:  # print() writes the text and the newline separately: keep lines whole
            print("ready", flush=True)
        ctx.wait()
    client.close()
    """
)


def _read_rest(proc: subprocess.Popen[str], stderr: IO[bytes], timeout: float = 10) -> str:
    """The rest of the child's stdout; if it does not exit in time, fail with its threads' stacks.

    (Not ``communicate()``: it reads the pipe itself and would skip what ``readline()`` buffered.)
    """
    assert proc.stdout is not None
    hung = threading.Event()

    def dump_and_kill() -> None:
        hung.set()
        proc.send_signal(signal.SIGABRT)  # faulthandler in the child dumps every thread, then it dies
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()

    watchdog = threading.Timer(timeout, dump_and_kill)
    watchdog.start()
    try:
        out = proc.stdout.read()
    finally:
        watchdog.cancel()
    if hung.is_set():
        watchdog.join()
        stderr.seek(0)
        threads = stderr.read().decode(errors="replace")
        pytest.fail(f"the child did not exit {timeout:g} s after SIGTERM; its threads:\n{threads}")
    return out


def test_sigterm_drains_a_consume_context(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url) as client:
        js = client.jetstream()
        js.add_stream(name="SIGC", subjects=["sigc.>"])
        js.publish_many(("sigc.m", b"x") for _ in range(3_000))
        for run, max_messages in enumerate([1, 10, 100, 500, 50]):
            consumer = js.add_consumer("SIGC", durable_name=f"c{run}", ack_wait=60)
            with (
                tempfile.TemporaryFile() as stderr,
                subprocess.Popen(
                    [sys.executable, "-c", SIGNAL_SCRIPT, nats_server.url, str(max_messages), consumer.name],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                ) as proc,
            ):
                assert proc.stdout is not None
                lines = []
                while (line := proc.stdout.readline()).strip() != "ready":
                    assert line, f"run {run}: the process ended before it was ready"
                    lines.append(line)
                lines += [proc.stdout.readline() for _ in range(50 * run)]
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                lines += _read_rest(proc, stderr).split()
                assert proc.wait(timeout=10) == 0
                assert time.monotonic() - t0 < 5.0  # prompt: a drain that hung would take the 10 s wait
            assert_printed_were_acked(consumer, [int(x) for x in lines], max_messages)


def test_shutdown_on_signals_restores_handlers_and_second_signal_stops(
    js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="sig")
    previous = signal.getsignal(signal.SIGUSR1)
    msgs = consumer.messages()
    with natspull.shutdown_on_signals(msgs, signals=(signal.SIGUSR1,)) as guard:
        assert signal.getsignal(signal.SIGUSR1) is not previous
        signal.raise_signal(signal.SIGUSR1)
        assert msgs.closed and msgs.stats().state in ("draining", "closed")
        signal.raise_signal(signal.SIGUSR1)
        assert msgs.stats().state == "closed"
        assert guard.received == 2
        assert signal.getsignal(signal.SIGUSR1) is previous  # the second signal restored them
    with pytest.raises(TypeError, match="drain"):
        natspull.shutdown_on_signals(object())  # type: ignore[arg-type]
