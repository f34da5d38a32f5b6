"""natspull.trio: server-less units of the trio-side hand-off (exact cancellation, no lost
wake-up), then, against a real nats-server, the async iterator, random cancellations, sharing,
drain/stop, the trio-flavoured management calls, and the import guard."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import textwrap
import threading
import types
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

import natspull
import natspull.trio
from natspull._engine._queue import Flow, MsgQueue
from natspull._engine._settings import pull_settings
from natspull._msg import Msg
from natspull.testing import NatsServer

_ids = iter(range(1, 1_000_000))


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[natspull.trio.Client]:
    async with natspull.trio.open_client(nats_server.url) as c:
        yield c


async def new_stream(client: natspull.trio.Client, count: int = 0) -> tuple[natspull.trio.JetStream, str]:
    js = client.jetstream()
    name = f"T{next(_ids)}"
    await js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE)
    if count:
        await js.publish_many((f"{name}.m", b"%08d" % i) for i in range(count))
    return js, name


async def new_consumer(
    js: natspull.trio.JetStream, stream: str, ack_wait: float = 30.0
) -> natspull.trio.Consumer:
    return await js.add_consumer(
        stream, durable_name="c", ack_policy=natspull.AckPolicy.EXPLICIT, ack_wait=ack_wait
    )


async def settle(client: natspull.trio.Client, consumer: natspull.trio.Consumer) -> natspull.ConsumerInfo:
    """Flush the acks sent so far and return the consumer's info once no ack is pending, or
    after 5 s (far below ack_wait, 30 s: a message dropped unacked stays pending). The server
    applies acks on the consumer's own goroutine, after the flush's PONG."""
    await client.flush()
    with trio.move_on_after(5):
        while (info := await consumer.info()).num_ack_pending:
            await trio.sleep(0.02)
    return info


def seq(msg: natspull.trio.Msg) -> int:
    return msg.metadata.sequence.stream


def threads_in_queue_get() -> list[str]:
    """Names of threads currently blocked in MsgQueue.get (the trio path must have none)."""
    frames = sys._current_frames()
    names = {t.ident: t.name for t in threading.enumerate()}
    found = []
    for ident, frame in frames.items():
        f: types.FrameType | None = frame
        while f is not None:
            if f.f_code.co_name == "get" and f.f_code.co_filename.endswith("_queue.py"):
                found.append(names.get(ident, str(ident)))
                break
            f = f.f_back
    return found


class _EngineStub:
    stream = "S"
    consumer = "C"

    def stats(self) -> dict[str, int]:
        counters = ("pulls_sent", "heartbeats_missed", "reconnects", "pins_lost", "resets", "acked")
        return dict.fromkeys(counters, 0)


class _ConsumerStub:
    stream = "S"
    name = "C"


def _nak_all(msgs: list[Msg]) -> None:
    for msg in msgs:
        if msg._sink is not None:
            msg.nak()


def queue_iterator(max_msgs: int = 10) -> tuple[MsgQueue, natspull.trio.Messages]:
    """A trio iterator on a bare queue (no server): the test plays the loop thread."""
    flow = Flow(max_msgs=max_msgs, max_bytes=0, threshold_msgs=max_msgs // 2, threshold_bytes=0)
    queue = MsgQueue(flow, on_discard=_nak_all)  # NAKs what stop() discards, as the pull engine does
    msgs = natspull.trio.Messages(_ConsumerStub(), pull_settings(), "S/C")  # type: ignore[arg-type]
    msgs._entered = True
    msgs._attach(natspull.Messages(_EngineStub(), queue), queue)  # type: ignore[arg-type]
    return queue, msgs


class _Sink:
    """Records the acks of bare messages."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish_nowait(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, payload))

    def request_ack(self, subject: str, payload: bytes, timeout: float) -> None:
        self.sent.append((subject, payload))


def bare(i: int, sink: _Sink | None = None) -> Msg:
    return Msg("s", b"x", f"r{i}", sink=sink, size=1)


# ------------------------------------------------------------------- server-less units


@pytest.mark.trio
async def test_cancelling_a_woken_waiter_loses_nothing() -> None:
    """Cancel a waiting task at every step of a hand-off: the message is received exactly once."""
    queue, msgs = queue_iterator()
    outcomes = set()
    for steps in range(8):
        got: list[str] = []
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def waiter(scope: trio.CancelScope = scope, got: list[str] = got) -> None:
                with scope:
                    got.append((await msgs.next()).reply)

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            queue.put_many([bare(steps)])  # as the loop thread does: schedules one wake-up
            for _ in range(steps):
                await trio.lowlevel.cancel_shielded_checkpoint()
            scope.cancel()
        outcomes.add(bool(got))
        if not got:  # cancelled before the hand-off: the message waits for the next receive
            with trio.fail_after(1):
                got.append((await msgs.next()).reply)
        assert got == [f"r{steps}"]
        assert msgs.stats().buffered == 0
    assert outcomes == {False, True}  # both sides of the race were exercised
    msgs.stop()


@pytest.mark.trio
async def test_a_missed_heartbeat_notice_wakes_a_waiting_task() -> None:
    queue, msgs = queue_iterator()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                with pytest.raises(natspull.NoHeartbeatError):
                    await msgs.next()

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            queue.notice(natspull.NoHeartbeatError("no heartbeat"))  # as the engine does
        queue.put_many([bare(1)])
        assert (await msgs.next()).reply == "r1"  # the iterator stays usable
    msgs.stop()


@pytest.mark.trio
async def test_stop_after_a_finished_drain_gives_everything_back() -> None:
    """stop() ends at once and NAKs both the trio-side deque and what the finished queue kept."""
    queue, msgs = queue_iterator()
    sink = _Sink()
    queue.put_many([bare(i, sink) for i in range(5)])
    assert (await msgs.next()).reply == "r0"  # r1..r4 now wait in the trio-side deque
    queue.put_many([bare(i, sink) for i in range(5, 8)])  # r5..r7 wait in the queue
    msgs.drain()
    queue.finish()  # as the engine does once nothing more can arrive: CLOSED, buffer kept
    msgs.stop()
    with pytest.raises(natspull.IteratorClosedError):
        await msgs.next()
    await trio.testing.wait_all_tasks_blocked()  # the give-back runs on the trio thread
    assert sorted(subject for subject, payload in sink.sent if payload == b"-NAK") == [
        f"r{i}" for i in range(1, 8)
    ]
    assert (queue.stats()["buffered"], msgs.stats().buffered, msgs.stats().delivered) == (0, 0, 1)


@pytest.mark.trio
async def test_no_lost_wake_up_against_a_racing_producer_thread() -> None:
    """Ping-pong with a real thread: a lost wake-up would leave the task parked for good."""
    queue, msgs = queue_iterator()
    n = 3000
    consumed = threading.Semaphore(0)
    done = threading.Event()

    def produce() -> None:
        for i in range(n):
            queue.put_many([bare(i)])
            while not consumed.acquire(timeout=0.5):
                if done.is_set():
                    return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen every race window
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, produce)
            try:
                for i in range(n):
                    with trio.fail_after(5):
                        assert (await msgs.next()).reply == f"r{i}"
                    consumed.release()
            finally:
                done.set()  # lets the producer thread end even when the test fails
    finally:
        sys.setswitchinterval(interval)
    assert msgs.stats().wakeups <= n
    msgs.stop()


# ------------------------------------------------------------------------------- module


def test_exported_members() -> None:
    assert natspull.trio.__all__ == [
        "Client",
        "Consumer",
        "JetStream",
        "Messages",
        "MessagesStats",
        "Msg",
        "OrderedConsumer",
        "OrderedMessages",
        "open_client",
    ]
    assert natspull.trio.__all__ == sorted(natspull.trio.__all__)


def test_import_without_trio_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["trio"] = None  # import trio now raises ImportError
        import natspull  # the blocking API does not need trio
        try:
            import natspull.trio
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "natspull.trio needs trio: pip install 'natspull[trio]'"


# --------------------------------------------------------------------- client, management


@pytest.mark.trio
async def test_management_publish_fetch_and_ack_sync(client: natspull.trio.Client) -> None:
    assert client.is_connected and not client.is_closed
    js, stream = await new_stream(client)
    ack = await js.publish(f"{stream}.a", b"one", msg_id="id-1")
    assert (ack.stream, ack.seq) == (stream, 1)
    acks = await js.publish_many([(f"{stream}.b", b"%d" % i) for i in range(10)])
    assert [a.seq for a in acks] == list(range(2, 12))
    assert (await js.stream_info(stream)).state.messages == 11
    updated = await js.update_stream(name=stream, subjects=[f"{stream}.>"], max_msgs=1000)
    assert updated.config.max_msgs == 1000
    consumer = await new_consumer(js, stream)
    assert (consumer.stream, consumer.name) == (stream, "c")
    assert (await js.consumer(stream, "c")).name == "c"
    assert (await js.consumer_info(stream, "c")).num_pending == 11

    with trio.fail_after(10):
        first = await consumer.next(5)
        assert (first.data, seq(first)) == (b"one", 1)
        await first.ack_sync()
        with pytest.raises(natspull.MsgAlreadyAckedError):
            await first.ack_sync()
        batch = await consumer.fetch(20, max_wait=1.0)
    assert [seq(m) for m in batch] == list(range(2, 12))
    for m in batch:
        m.ack()
    info = await settle(client, consumer)
    assert (info.num_ack_pending, info.num_pending) == (0, 0)

    with trio.fail_after(5), pytest.raises(natspull.TimeoutError):
        await consumer.next(0.2)
    await js.purge_stream(stream)
    await js.delete_consumer(stream, "c")
    with pytest.raises(natspull.ConsumerNotFoundError):
        await js.consumer(stream, "c")
    await js.delete_stream(stream)
    with pytest.raises(natspull.StreamNotFoundError):
        await js.stream_info(stream)


@pytest.mark.trio
async def test_cancelled_fetch_returns_its_messages_at_once(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client, 5)
    consumer = await new_consumer(js, stream)
    # A fetch that waits for more than exists, cancelled: what it got goes back at once (NAK).
    with trio.move_on_after(0.5) as scope:
        await consumer.fetch(10, max_wait=30.0)
    assert scope.cancelled_caught
    with trio.fail_after(5):
        got = await consumer.fetch(5, max_wait=2.0)
    assert sorted(seq(m) for m in got) == [1, 2, 3, 4, 5]


@pytest.mark.trio
async def test_open_client_closes_even_when_cancelled(nats_server: NatsServer) -> None:
    with trio.CancelScope() as scope:
        async with natspull.trio.open_client(nats_server.url) as client:
            scope.cancel()
            await trio.sleep(10)
    assert client.is_closed


# ------------------------------------------------------------------------------ iterator


@pytest.mark.trio
async def test_async_for_5000_messages_with_acks(client: natspull.trio.Client) -> None:
    n = 5000
    js, stream = await new_stream(client, n)
    consumer = await new_consumer(js, stream)
    seen: list[int] = []
    with trio.fail_after(60):
        async with consumer.messages(max_messages=300) as msgs:
            async for msg in msgs:
                seen.append(seq(msg))
                msg.ack()
                if len(seen) == n:
                    break
            stats = msgs.stats()
    assert seen == list(range(1, n + 1))
    assert stats.delivered == n
    # One trio wake-up per burst at most, never one per message (none at all when the task
    # never found the buffer empty; test_stats_are_typed_and_count_exactly forces some).
    assert stats.wakeups < n / 10, stats
    info = await settle(client, consumer)
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)


@pytest.mark.trio
async def test_waiting_blocks_no_thread_and_fail_after_leaves_the_iterator_usable(
    client: natspull.trio.Client,
) -> None:
    js, stream = await new_stream(client)
    consumer = await new_consumer(js, stream)
    async with consumer.messages() as msgs:
        async with trio.open_nursery() as nursery:

            async def wait_one() -> None:
                with pytest.raises(trio.TooSlowError):
                    with trio.fail_after(0.5):
                        await msgs.next()

            nursery.start_soon(wait_one)
            await trio.testing.wait_all_tasks_blocked()  # wait_one is parked in next()
            assert msgs.stats().waiters == 1
            assert threads_in_queue_get() == []
        assert msgs.stats().waiters == 0
        await js.publish(f"{stream}.x", b"late")
        with trio.fail_after(5):
            msg = await msgs.next()
        assert msg.data == b"late"
        msg.ack()
        assert not msgs.closed
    assert msgs.closed


@pytest.mark.trio
async def test_200_random_cancellations_lose_and_duplicate_nothing(client: natspull.trio.Client) -> None:
    n = 600
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    js, stream = await new_stream(client)
    consumer = await new_consumer(js, stream)
    received: list[int] = []
    cancellations = 0

    async def publisher() -> None:
        for i in range(n):
            await js.publish(f"{stream}.m", b"%d" % i)
            if i % 3 == 0:
                await trio.sleep(rng.uniform(0, 0.004))

    async def receive_one(msgs: natspull.trio.Messages, done: trio.CancelScope | None = None) -> None:
        nonlocal cancellations
        try:
            msg = await msgs.next()
        except trio.Cancelled:
            cancellations += 1
            raise
        received.append(seq(msg))
        msg.ack()
        if done is not None:
            done.cancel()

    with trio.fail_after(90):
        async with consumer.messages(max_messages=20) as msgs, trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            progress = (0, trio.current_time())
            while len(received) < n or cancellations < 200:
                if len(received) != progress[0]:
                    progress = (len(received), trio.current_time())
                elif cancellations >= 200 and trio.current_time() - progress[1] > 5.0:
                    break  # a lost message would only come back after ack_wait (30 s)
                delay = rng.uniform(0, 0.003)
                if rng.random() < 0.5:
                    with trio.move_on_after(delay):
                        await receive_one(msgs)
                else:
                    # A task waiting in next(), cancelled by its nursery from another task.
                    async with trio.open_nursery() as inner:
                        inner.start_soon(receive_one, msgs, inner.cancel_scope)
                        await trio.sleep(delay)
                        inner.cancel_scope.cancel()
            assert msgs.stats().buffered == 0
    assert cancellations >= 200, f"seed {seed}"
    assert sorted(received) == list(range(1, n + 1)), f"seed {seed}: {Counter(received).most_common(3)}"
    info = await settle(client, consumer)
    # Nothing was handed to a cancelled task and then dropped: nothing waited for ack_wait.
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0), f"seed {seed}"


@pytest.mark.trio
async def test_16_tasks_share_one_iterator(client: natspull.trio.Client) -> None:
    n = 3000
    js, stream = await new_stream(client, n)
    consumer = await new_consumer(js, stream)
    per_task: list[list[int]] = [[] for _ in range(16)]

    async def worker(mine: list[int], msgs: natspull.trio.Messages) -> None:
        async for msg in msgs:
            mine.append(seq(msg))
            msg.ack()
            if sum(map(len, per_task)) == n:
                msgs.drain()
            await trio.sleep(0)

    with trio.fail_after(60):
        async with consumer.messages(max_messages=100) as msgs, trio.open_nursery() as nursery:
            for mine in per_task:
                nursery.start_soon(worker, mine, msgs)
    everything = [s for mine in per_task for s in mine]
    assert sorted(everything) == list(range(1, n + 1))
    assert sum(1 for mine in per_task if mine) > 1  # really shared
    info = await settle(client, consumer)
    assert (info.num_ack_pending, info.num_pending) == (0, 0)


@pytest.mark.trio
async def test_drain_from_another_task_ends_after_the_buffered_messages(client: natspull.trio.Client) -> None:
    n = 200
    js, stream = await new_stream(client, n)
    consumer = await new_consumer(js, stream)
    received: list[int] = []
    with trio.fail_after(20):
        async with consumer.messages(max_messages=50) as msgs:
            first = await msgs.next()
            received.append(seq(first))
            first.ack()
            while msgs.stats().buffered < 49:  # the first pull of 50 arrived
                await trio.sleep(0.01)

            async def drainer() -> None:
                msgs.drain()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drainer)
            assert msgs.closed
            async for msg in msgs:
                received.append(seq(msg))
                msg.ack()
            with pytest.raises(natspull.IteratorClosedError):
                await msgs.next()
    # Everything buffered or in flight was handed out; nothing more was pulled.
    assert received == list(range(1, len(received) + 1))
    assert 50 <= len(received) < n
    info = await settle(client, consumer)
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, n - len(received), 0)


@pytest.mark.trio
async def test_stop_ends_at_once_and_the_trio_buffer_is_redelivered_promptly(
    client: natspull.trio.Client,
) -> None:
    n = 100
    js, stream = await new_stream(client, n)
    consumer = await new_consumer(js, stream, ack_wait=30.0)
    received: list[int] = []
    with trio.fail_after(20):
        async with consumer.messages(max_messages=n) as msgs:
            while msgs.stats().buffered < n:
                await trio.sleep(0.01)
            three = trio.Event()
            async with trio.open_nursery() as nursery:

                async def stopper() -> None:
                    await three.wait()
                    assert msgs._local  # messages wait in the trio-side deque
                    msgs.stop()

                nursery.start_soon(stopper)
                async for msg in msgs:
                    received.append(seq(msg))
                    msg.ack()
                    if len(received) == 3:
                        three.set()
                        while not msgs.closed:  # the stopper runs meanwhile
                            await trio.sleep(0.01)
                assert len(received) == 3  # nothing after stop(), although 97 were buffered
            assert msgs.closed
            assert msgs.stats().buffered == 0
            with pytest.raises(natspull.IteratorClosedError):
                await msgs.next()
    # NAKed, not left to ack_wait (30 s): a second iterator gets them within a second.
    redelivered: list[natspull.trio.Msg] = []
    with trio.fail_after(1.0):
        async with consumer.messages(max_messages=n) as again:
            async for msg in again:
                redelivered.append(msg)
                msg.ack()
                if len(redelivered) == n - 3:
                    break
    assert sorted(seq(m) for m in redelivered) == list(range(4, n + 1))
    assert all(m.metadata.num_delivered == 2 for m in redelivered)


@pytest.mark.trio
async def test_leaving_async_with_gives_the_buffer_back(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client, 50)
    consumer = await new_consumer(js, stream, ack_wait=30.0)
    with trio.fail_after(10):
        async with consumer.messages(max_messages=50) as msgs:
            msg = await msgs.next()
            msg.ack()
            while msgs.stats().buffered < 49:
                await trio.sleep(0.01)
    stats = msgs.stats()
    assert (stats.delivered, stats.buffered, stats.state) == (1, 0, "closed")
    with trio.fail_after(1.0):
        got = await consumer.fetch(49, max_wait=0.9)
    assert sorted(seq(m) for m in got) == list(range(2, 51))
    assert all(m.metadata.num_delivered == 2 for m in got)


@pytest.mark.trio
async def test_stop_after_and_a_deleted_consumer(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client, 20)
    consumer = await new_consumer(js, stream)
    with trio.fail_after(10):
        async with consumer.messages(stop_after=7) as msgs:
            got = [seq(m) async for m in msgs]
        assert got == [1, 2, 3, 4, 5, 6, 7]
        async with consumer.messages() as msgs:
            await msgs.next()
            await js.delete_consumer(stream, "c")
            with pytest.raises(natspull.ConsumerDeletedError):
                while True:
                    await msgs.next()
            with pytest.raises(natspull.ConsumerDeletedError):  # sticky
                await msgs.next()


@pytest.mark.trio
async def test_client_close_breaks_a_waiting_iterator(nats_server: NatsServer) -> None:
    async with natspull.trio.open_client(nats_server.url) as client:
        js, stream = await new_stream(client)
        consumer = await new_consumer(js, stream)
        async with consumer.messages() as msgs, trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            with trio.fail_after(10), pytest.raises(natspull.ConnectionClosedError):
                await msgs.next()


@pytest.mark.trio
async def test_messages_rejects_bad_options_and_use_before_entering(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client)
    consumer = await new_consumer(js, stream)
    with pytest.raises(ValueError, match="max_bytes must be between 1"):
        consumer.messages(max_messages=1, max_bytes=0)
    msgs = consumer.messages()
    with pytest.raises(RuntimeError, match="async with"):
        await msgs.next()
    async with msgs:
        msgs.drain()
        msgs.drain()
        msgs.stop()
        msgs.stop()
        with pytest.raises(natspull.IteratorClosedError):
            await msgs.next()
    with pytest.raises(RuntimeError, match="only once"):
        async with msgs:
            pass


@pytest.mark.trio
async def test_stop_wakes_every_waiting_task_at_once(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client)
    consumer = await new_consumer(js, stream)
    ended: list[float] = []

    async def waiter(msgs: natspull.trio.Messages) -> None:
        async for _ in msgs:
            raise AssertionError("no message was published")
        ended.append(trio.current_time())

    with trio.fail_after(10):
        async with consumer.messages() as msgs, trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(waiter, msgs)
            while msgs.stats().waiters < 4:
                await trio.sleep(0.01)
            stopped_at = trio.current_time()
            msgs.stop()
    assert len(ended) == 4
    assert max(ended) - stopped_at < 0.5


@pytest.mark.trio
async def test_bad_headers_and_too_long_lines_are_refused_at_once(nats_server: NatsServer) -> None:
    async with natspull.trio.open_client(nats_server.url, inbox_prefix="I" * 2500) as client:
        js, stream = await new_stream(client)
        client_id = client.server_info["client_id"]
        with pytest.raises(ValueError, match="header name 'é'"):
            client.publish(f"{stream}.a", b"", {"é": "v"})
        with pytest.raises(ValueError, match=r"header name 'a\(b\)'"):
            await client.request(f"{stream}.a", b"", timeout=1, headers={"a(b)": "v"})
        with pytest.raises(ValueError, match="header 'K' value 'v '"):
            await js.publish(f"{stream}.a", b"", {"K": "v "})
        with pytest.raises(ValueError, match="msg_id 'order-1 '"):
            await js.publish(f"{stream}.a", b"", msg_id="order-1 ")
        with pytest.raises(ValueError, match="max_control_line"):
            await client.request("ctl." + "x" * 3000, timeout=1)
        with pytest.raises(ValueError, match=r"messages\[0\]: .*max_control_line"):
            await js.publish_many([(f"{stream}." + "x" * 1600, b"")])
        # nothing was sent, the connection was never lost, and it still publishes
        ack = await js.publish(f"{stream}.a", b"ok", {"K": "a  b"}, msg_id="order-1")
        assert (ack.stream, ack.seq) == (stream, 1)
        await client.flush()
        assert client.server_info["client_id"] == client_id
        consumer = await new_consumer(js, stream)
        msg = await consumer.next(timeout=5)
        assert (msg.data, msg.headers) == (b"ok", {"K": "a  b", "Nats-Msg-Id": "order-1"})
        await msg.ack_sync()


@pytest.mark.trio
async def test_trio_pull_options_for_priority_groups(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client, 2)
    consumer = await js.add_consumer(
        stream,
        durable_name="p",
        priority_groups=["jobs"],
        priority_policy=natspull.PriorityPolicy.PINNED_CLIENT,
    )
    with pytest.raises(ValueError, match="pass group="):
        consumer.messages()
    with pytest.raises(ValueError, match="priority needs priority_policy 'prioritized'"):
        await consumer.fetch(1, max_wait=1, group="jobs", priority=1)
    first = await consumer.next(timeout=5, group="jobs")
    assert first.headers is not None and first.headers["Nats-Pin-Id"]
    # the iterator of the same Consumer object starts with the pin the fetch saw
    with trio.fail_after(10):
        async with consumer.messages(group="jobs") as msgs:
            second = await msgs.next()
    assert (seq(first), seq(second)) == (1, 2)
    assert second.headers is not None and second.headers["Nats-Pin-Id"] == first.headers["Nats-Pin-Id"]


# ------------------------------------------------------------------------------- ordered


async def consumer_names(js: natspull.trio.JetStream, stream: str) -> list[str]:
    return sorted([name async for name in js.consumer_names(stream)])


@pytest.mark.trio
async def test_ordered_filtered_in_order_and_resets_are_invisible(client: natspull.trio.Client) -> None:
    """Two of three subjects; an admin deletes the consumer twice mid-read: every matching
    sequence once, increasing, and the consumer is gone after the read."""
    js, stream = await new_stream(client)
    await js.publish_many((f"{stream}.{i % 3}", b"%d" % i) for i in range(3000))
    expected = [s for s in range(1, 3001) if (s - 1) % 3 != 2]
    with trio.fail_after(30):
        oc = await js.ordered_consumer(stream, filter_subjects=[f"{stream}.0", f"{stream}.1"])
        async with oc, oc.messages(max_messages=100) as msgs:
            got = [seq(await msgs.next()) for _ in range(500)]
            for _ in range(2):
                (name,) = await consumer_names(js, stream)
                await js.delete_consumer(stream, name)
                got += [seq(await msgs.next()) for _ in range(500)]
            got += [seq(await msgs.next()) for _ in range(len(expected) - len(got))]
            assert got == expected
            assert msgs.stats().resets == 2
            assert oc.last_sequence == expected[-1]
            with trio.move_on_after(0.3) as idle:
                await msgs.next()
            assert idle.cancelled_caught  # nothing more
        assert await consumer_names(js, stream) == []


@pytest.mark.trio
async def test_ordered_fetch_next_and_messages_continue_in_order(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client, 50)
    with trio.fail_after(30):
        async with await js.ordered_consumer(stream) as oc:
            assert [seq(m) for m in await oc.fetch(10, max_wait=5)] == list(range(1, 11))
            # Deleted between two fetches: recreated after the last message handed out.
            (name,) = await consumer_names(js, stream)
            await js.delete_consumer(stream, name)
            assert seq(await oc.next(5)) == 11
            async with oc.messages() as msgs:
                assert [seq(await msgs.next()) for _ in range(3)] == [12, 13, 14]
                with pytest.raises(natspull.OrderedConsumerUsageError, match="another read"):
                    await oc.fetch(1, max_wait=1)
            # The iterator's buffer was dropped: the next read continues after what a task got.
            assert [seq(m) for m in await oc.fetch(5, max_wait=5)] == [15, 16, 17, 18, 19]
            assert oc.last_sequence == 19
        assert await consumer_names(js, stream) == []


@pytest.mark.trio
async def test_ordered_messages_cannot_be_acked(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client, 2)
    with trio.fail_after(10):
        async with await js.ordered_consumer(stream) as oc:
            msg = await oc.next(5)
            for act in (msg.ack, msg.nak, msg.in_progress, msg.term):
                with pytest.raises(natspull.OrderedConsumerUsageError, match="cannot be acknowledged"):
                    act()
            with pytest.raises(natspull.OrderedConsumerUsageError, match="cannot be acknowledged"):
                await msg.ack_sync()
            assert not msg.acked
            async with oc.messages() as msgs:
                with pytest.raises(natspull.OrderedConsumerUsageError, match="cannot be acknowledged"):
                    (await msgs.next()).ack()


@pytest.mark.trio
async def test_ordered_aclose_deletes_the_consumer_and_ends_a_waiting_task(
    client: natspull.trio.Client,
) -> None:
    js, stream = await new_stream(client, 3)
    with trio.fail_after(10):
        oc = await js.ordered_consumer(stream)
        got: list[int] = []
        async with oc.messages() as msgs, trio.open_nursery() as nursery:

            async def read_all() -> None:
                async for msg in msgs:  # ends when aclose() stops the iterator
                    got.append(seq(msg))

            nursery.start_soon(read_all)
            while len(got) < 3 or msgs.stats().waiters != 1:
                await trio.sleep(0.01)  # polls until the reader waits for a fourth message
            assert len(await consumer_names(js, stream)) == 1
            await oc.aclose()
        assert got == [1, 2, 3]
        assert await consumer_names(js, stream) == []
        await oc.aclose()  # idempotent
        with pytest.raises(natspull.OrderedConsumerUsageError, match="closed"):
            await oc.fetch(1, max_wait=1)


@pytest.mark.trio
async def test_ordered_cancelled_fetch_deletes_and_the_next_continues(client: natspull.trio.Client) -> None:
    js, stream = await new_stream(client, 5)
    with trio.fail_after(20):
        async with await js.ordered_consumer(stream) as oc:
            assert [seq(m) for m in await oc.fetch(5, max_wait=5)] == [1, 2, 3, 4, 5]
            began = trio.current_time()
            with trio.move_on_after(0.5) as scope:
                await oc.fetch(10, max_wait=30.0)  # waits for more than exists
            assert scope.cancelled_caught
            assert trio.current_time() - began < 5  # promptly, not after max_wait
            assert await consumer_names(js, stream) == []
            await js.publish_many((f"{stream}.m", b"x") for _ in range(3))
            assert [seq(m) for m in await oc.fetch(10, max_wait=1)] == [6, 7, 8]


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_stats_are_typed_and_count_exactly(client: natspull.trio.Client) -> None:
    """100 messages, the first 7 NAKed once: exact delivered/acked/redelivered (test_stats.py
    does the same for the blocking side)."""
    total, naked = 100, 7
    fields = [f.name for f in dataclasses.fields(natspull.MessagesStats)]
    assert [f.name for f in dataclasses.fields(natspull.trio.MessagesStats)] == [*fields, "wakeups"]
    assert "wakeups:" in (natspull.trio.MessagesStats.__doc__ or "")
    js, stream = await new_stream(client)  # empty: the first read parks until a wake-up
    consumer = await js.add_consumer(stream, durable_name="stats")
    msgs = consumer.messages(max_messages=50)
    before = msgs.stats()
    assert isinstance(before, natspull.trio.MessagesStats)
    assert (before.state, before.delivered, before.wakeups) == ("not started", 0, 0)

    async def publish_once_parked() -> None:
        while msgs.stats().waiters == 0:
            await trio.sleep(0.01)
        await js.publish_many((f"{stream}.m", b"%08d" % i) for i in range(total))

    acked = 0
    async with msgs, trio.open_nursery() as nursery:
        nursery.start_soon(publish_once_parked)
        async for msg in msgs:
            if msg.metadata.num_delivered == 1 and seq(msg) <= naked:
                msg.nak()
                continue
            msg.ack()
            acked += 1
            if acked == total:
                break
        stats = msgs.stats()
    assert isinstance(stats, natspull.MessagesStats)
    assert (stats.delivered, stats.acked, stats.redelivered) == (total + naked, total, naked)
    assert (stats.buffered, stats.waiters, stats.state) == (0, 0, "open")
    assert stats.wakeups > 0
    assert msgs.stats().state == "closed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.wakeups = 0  # type: ignore[misc]
    assert stats.as_dict()["wakeups"] == stats.wakeups
    client_stats = client.stats()
    assert isinstance(client_stats, natspull.ClientStats)
    assert client_stats.state == "connected"
    assert client_stats.out_msgs >= total + naked  # at least the acks and NAKs


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_on_event_of_a_trio_iterator(client: natspull.trio.Client) -> None:
    """on_event runs on a natspull-events thread; consumer_deleted comes before the end."""
    js, stream = await new_stream(client)
    consumer = await new_consumer(js, stream)
    events: list[tuple[str, str]] = []

    def on_event(event: natspull.ConsumerEvent) -> None:
        events.append((event.kind, threading.current_thread().name))

    async with consumer.messages(on_event=on_event) as msgs:
        with trio.fail_after(10):
            while (await consumer.info()).num_waiting < 1:  # the pull waits at the server
                await trio.sleep(0.005)
        await js.delete_consumer(stream, "c")
        with trio.fail_after(10), pytest.raises(natspull.ConsumerDeletedError):
            await msgs.next()
    with trio.fail_after(5):
        while len(events) < 2:  # (the callback runs on its own thread: poll)
            await trio.sleep(0.005)
    assert [kind for kind, _ in events] == ["connected", "consumer_deleted"]
    assert all(name.startswith("natspull-events-") for _, name in events), events


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_publish_options_items_and_atomic_batches(client: natspull.trio.Client) -> None:
    js = client.jetstream()
    await js.add_stream(name="TPUB", subjects=["tpub.>"], allow_msg_ttl=True, allow_atomic=True)
    ack = await js.publish("tpub.a", b"1", msg_id="a", ttl=60, expected_last_subject_sequence=0)
    assert ack.seq == 1
    with pytest.raises(natspull.JetStreamAPIError) as info:
        await js.publish("tpub.a", b"2", expected_last_sequence=5)
    assert info.value.err_code == 10071
    acks = await js.publish_many(
        [("tpub.b", b"x"), ("tpub.c", b"y", {"k": "v"}), natspull.Publish("tpub.a", msg_id="a")]
    )
    assert [a.seq for a in acks] == [2, 3, 1] and acks[2].duplicate
    batch = await js.publish_batch([("tpub.d", b"1"), ("tpub.d", b"2")])
    assert (batch.stream, batch.seq, batch.count) == ("TPUB", 5, 2)
    with pytest.raises(ValueError, match="ttl"):
        await js.publish("tpub.a", b"", ttl=0.5)
    assert (await js.stream_info("TPUB")).state.messages == 5


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_next_batch_takes_what_is_there_without_waiting(client: natspull.trio.Client) -> None:
    """next_batch(n): waits for the first message, then takes what is buffered, up to n."""
    js, stream = await new_stream(client, 25)
    consumer = await new_consumer(js, stream)
    async with consumer.messages(max_messages=50) as msgs:
        with pytest.raises(ValueError, match="max_messages"):
            await msgs.next_batch(0)
        with trio.fail_after(10):
            while msgs.stats().buffered < 25:  # every message has arrived
                await trio.sleep(0.005)
        sizes = []
        for _ in range(3):
            batch = await msgs.next_batch(10)
            sizes.append(len(batch))
            for msg in batch:
                msg.ack()
        assert sizes == [10, 10, 5]
        with pytest.raises(natspull.TimeoutError):
            await msgs.next_batch(10, timeout=0.3)
        await js.publish(f"{stream}.m", b"late")
        batch = await msgs.next_batch(10, timeout=10)
        assert [m.data for m in batch] == [b"late"]
        batch[0].ack()
    info = await settle(client, consumer)
    assert (info.num_ack_pending, info.num_redelivered) == (0, 0)


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_trio_messages_are_leased_from_arrival(client: natspull.trio.Client) -> None:
    """A task at 50 ms per message over 100 buffered messages (5 s) with ack_wait=2 s: the
    messages waiting in the queue or the trio-side deque are never redelivered."""
    js, stream = await new_stream(client, 100)
    consumer = await new_consumer(js, stream, ack_wait=2)
    delivered = []
    async with consumer.messages(max_messages=100) as msgs:
        async for msg in msgs:
            await trio.sleep(0.05)  # the task's work, not a synchronisation
            delivered.append(msg.metadata.num_delivered)
            if len(delivered) == 100:
                assert (await consumer.info()).num_redelivered == 0
            msg.ack()
            if len(delivered) == 100:
                break
        assert msgs.stats().redelivered == 0
    assert delivered == [1] * 100
    info = await settle(client, consumer)
    assert info.num_ack_pending == 0
