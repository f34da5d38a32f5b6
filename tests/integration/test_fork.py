"""natspull across ``os.fork()``: real children of this process against a real nats-server.

What was created before a fork refuses every call in the child at once (``ForkedError``),
never hands the child the parent's buffered messages, never delays the child's exit, and
never leaves the child stuck on a lock another thread held at the fork; a client the child
connects itself works; the parent is unaffected.

Each child runs a body and reports through a pipe, then ``os._exit()``s (it never returns into
pytest). The parent waits with a deadline; a child that hangs gets SIGABRT (faulthandler dumps
its threads) and the test fails naming the hang.
"""

from __future__ import annotations

import gc
import itertools
import os
import pickle
import random
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from conftest import fill, wait_until

import natspull
from natspull._transport import _fork
from natspull.testing import NatsServer

T = TypeVar("T")

# Seconds: "at once", half the 5 s that a call or an at-exit close would wait for a loop thread
# that did not survive the fork (1.002 s was seen beside two busy loops).
AT_ONCE = 2.5


def run_in_child(body: Callable[[], T], timeout: float = 10.0) -> T:
    """Fork; run ``body()`` in the child and return its result (pickled through a pipe).

    Blocks on: the child's result and exit, at most *timeout* seconds in all; a hung child is
    killed with SIGABRT and the test fails. A body that raised fails the test with its traceback.
    """
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a multi-threaded process may deadlock the child:
        # that is what these tests check.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            try:
                outcome: tuple[str, object] = ("returned", body())
            except BaseException:
                outcome = ("raised", traceback.format_exc())
            with os.fdopen(write_fd, "wb") as pipe:
                pickle.dump(outcome, pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read_fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                _abort(pid, f"the child (pid {pid}) hung: no result within {timeout:g} s")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    if not _reaped(pid, deadline):
        _abort(pid, f"the child (pid {pid}) reported but did not exit within {timeout:g} s")
    if not chunks:
        pytest.fail(f"the child (pid {pid}) exited without a result")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "raised":
        pytest.fail(f"the body raised in the child (pid {pid}):\n{value}")
    return value  # type: ignore[no-any-return]


def _reaped(pid: int, deadline: float) -> bool:
    """Poll until the child exited (and reap it); False at the deadline."""
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _abort(pid: int, message: str) -> None:
    os.kill(pid, signal.SIGABRT)  # faulthandler (inherited from pytest) dumps the child's threads
    os.waitpid(pid, 0)
    pytest.fail(message)


def attempt(call: Callable[[], object]) -> dict[str, Any]:
    """In the child: make one call; what it raised (or that it returned) and how long it took."""
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:
        error, closed, message = type(exc).__name__, isinstance(exc, natspull.ConnectionClosedError), str(exc)
    else:
        error, closed, message = "returned", False, ""
    seconds = time.monotonic() - start
    return {"error": error, "closed": closed, "message": message, "seconds": seconds, "pid": os.getpid()}


def assert_forked(result: dict[str, Any], what: str) -> None:
    """The call raised ForkedError at once, naming the parent, the fork and the child."""
    assert result["error"] == "ForkedError", f"{what} in the child: {result}"
    assert result["closed"], f"{what}: ForkedError must be a ConnectionClosedError"
    assert result["seconds"] < AT_ONCE, f"{what} took {result['seconds']:.2f} s in the child"
    message = result["message"]
    assert f"created in process {os.getpid()} before os.fork()" in message, message
    assert f"call natspull.connect() in the child (pid {result['pid']})" in message, message


# ------------------------------------------------------------------ every call refuses


@dataclass
class World:
    """Objects of every kind, created (and busy) before the fork."""

    client: natspull.Client
    js: natspull.JetStream
    stream: str
    consumer: natspull.Consumer
    msgs: natspull.Messages
    held: natspull.Msg  # handed out by msgs, not acked
    acked: natspull.Msg  # handed out by msgs and acked by the parent
    idle: natspull.Messages  # nothing to deliver: next() waits
    ctx: natspull.ConsumeContext


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with NatsServer() as server, natspull.connect(server.url) as client:
        js = client.jetstream()
        js.add_stream(name="FORK", subjects=["FORK.>"])
        fill(js, "FORK", 100)
        consumer = js.add_consumer("FORK", durable_name="iter", ack_wait=60)
        pool = js.add_consumer("FORK", durable_name="pool", ack_wait=60)
        empty = js.add_consumer("FORK", durable_name="empty", filter_subject="FORK.nothing")
        with consumer.messages(max_messages=20) as msgs, empty.messages() as idle:
            held = msgs.next(timeout=5)
            acked = msgs.next(timeout=5)
            acked.ack()
            wait_until(lambda: msgs.stats().buffered > 0, message="buffered messages")
            with pool.consume(lambda msg: msg.ack(), workers=2) as ctx:
                wait_until(lambda: ctx.stats().handled == 100, message="the pool to handle 100")
                yield World(client, js, "FORK", consumer, msgs, held, acked, idle, ctx)
                ctx.stop()


INHERITED_CALLS: dict[str, Callable[[World], object]] = {
    "Client.publish": lambda w: w.client.publish("FORK.child", b"x"),
    "Client.request": lambda w: w.client.request("nobody.listens", b"", timeout=5),
    "Client.flush": lambda w: w.client.flush(timeout=5),
    "Client.jetstream": lambda w: w.client.jetstream(),
    "Client.close": lambda w: w.client.close(timeout=5),
    "JetStream.publish": lambda w: w.js.publish("FORK.child", b"x", timeout=5),
    "JetStream.publish_many": lambda w: w.js.publish_many([("FORK.child", b"x")], timeout=5),
    "JetStream.publish_async": lambda w: w.js.publish_async("FORK.child", b"x", timeout=5),
    "JetStream.publish_async_complete": lambda w: w.js.publish_async_complete(timeout=5),
    "JetStream.publish_batch": lambda w: w.js.publish_batch([("FORK.child", b"x")], timeout=5),
    "JetStream.stream_info": lambda w: w.js.stream_info(w.stream),
    "JetStream.add_consumer": lambda w: w.js.add_consumer(w.stream, durable_name="child"),
    "Consumer.info": lambda w: w.consumer.info(),
    "Consumer.fetch": lambda w: w.consumer.fetch(1, max_wait=5),
    "Consumer.next": lambda w: w.consumer.next(timeout=5),
    "Consumer.messages": lambda w: w.consumer.messages(),
    "Consumer.consume": lambda w: w.consumer.consume(lambda msg: None),
    "Messages.next()": lambda w: w.msgs.next(),
    "Messages.next(timeout)": lambda w: w.msgs.next(timeout=5),
    "Messages.next() with nothing buffered": lambda w: w.idle.next(),
    "Messages iteration": lambda w: next(iter(w.msgs)),
    "Messages.stop": lambda w: w.msgs.stop(),
    "Messages.drain": lambda w: w.msgs.drain(),
    "Msg.ack": lambda w: w.held.ack(),
    "Msg.ack_sync": lambda w: w.held.ack_sync(timeout=5),
    "Msg.nak": lambda w: w.held.nak(),
    "Msg.term": lambda w: w.held.term(),
    "Msg.in_progress": lambda w: w.held.in_progress(),
    "Msg.ack (acked by the parent)": lambda w: w.acked.ack(),
    "ConsumeContext.wait": lambda w: w.ctx.wait(timeout=5),
    "ConsumeContext.stop": lambda w: w.ctx.stop(),
    "ConsumeContext.drain": lambda w: w.ctx.drain(),
}


@pytest.mark.parametrize("name", list(INHERITED_CALLS))
def test_an_inherited_call_raises_forked_error_at_once(world: World, name: str) -> None:
    call = INHERITED_CALLS[name]
    assert_forked(run_in_child(lambda: attempt(lambda: call(world))), name)


def test_a_grandchild_is_refused_too(world: World) -> None:
    """Forked twice: the grandchild's error still names the process that created the client."""
    result = run_in_child(lambda: run_in_child(lambda: attempt(lambda: world.client.publish("FORK.x"))))
    assert_forked(result, "Client.publish in a grandchild")


def test_in_the_child_stats_work_and_leaving_the_parents_with_blocks_does_nothing(world: World) -> None:
    def body() -> dict[str, Any]:
        out: dict[str, Any] = {
            "msgs": world.msgs.stats(),
            "ctx": world.ctx.stats(),
            "connected": world.client.is_connected,
            "closed": world.client.is_closed,
            "repr": repr(world.client),
        }
        try:
            with world.client, world.msgs, world.ctx:
                raise KeyError("the child's own error")
        except KeyError as exc:
            out["kept"] = exc.args[0]
        return out

    out = run_in_child(body)
    assert out["msgs"].buffered == 0  # the parent's buffered deliveries are not the child's
    assert out["msgs"].state == "closed"
    assert out["ctx"].workers_alive == 0
    assert out["ctx"].state == "closed"
    assert (out["connected"], out["closed"]) == (False, True)
    assert "state=forked" in out["repr"]
    assert out["kept"] == "the child's own error"
    # the parent is unaffected
    assert world.msgs.stats().buffered > 0
    assert world.msgs.stats().state == "open"
    assert world.client.is_connected
    assert world.ctx.stats().workers_alive == 2


# ---------------------------------------------------------------- the parent's messages


def test_the_child_never_gets_the_parents_messages_and_the_parent_acks_them_all(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    total = 200
    fill(js, stream, total)
    consumer = js.add_consumer(stream, durable_name="ledger", ack_wait=60)
    ledger: list[tuple[int, int]] = []  # (stream sequence, num_delivered) handed to the parent
    with consumer.messages(max_messages=50, stop_after=total) as msgs:
        first = msgs.next(timeout=5)  # handed out before the fork; the parent acks it after
        wait_until(lambda: msgs.stats().buffered >= 10, message="buffered messages")

        def body() -> dict[str, Any]:
            got: list[int] = []
            errors: list[str] = []
            for take in (msgs.next, lambda: msgs.next(timeout=0.5), lambda: next(iter(msgs))):
                try:
                    got.append(take().metadata.sequence.stream)
                except natspull.Error as exc:
                    errors.append(type(exc).__name__)
            errors.append(attempt(first.ack)["error"])
            return {"got": got, "errors": errors, "buffered": msgs.stats().buffered}

        child = run_in_child(body)
        assert child == {"got": [], "errors": ["ForkedError"] * 4, "buffered": 0}

        for msg in itertools.chain([first], msgs):
            ledger.append((msg.metadata.sequence.stream, msg.metadata.num_delivered))
            msg.ack()
    client.flush(timeout=5)
    assert sorted(ledger) == [(seq, 1) for seq in range(1, total + 1)]  # each delivered once
    info = consumer.info()
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0
    assert info.ack_floor.stream_seq == total


# ----------------------------------------------------------------------- exit, connect

EXIT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time, warnings
    import natspull

    clients = [natspull.connect(sys.argv[1]) for _ in range(3)]
    for client in clients:
        client.publish("exit.test", b"x")
        client.flush(timeout=5)
    warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12: fork with threads
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        sys.exit(7)  # a normal interpreter exit: the atexit hooks run
    deadline = start + 10
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("hung", flush=True)
            sys.exit(1)
        time.sleep(0.005)
    print(f"exited {time.monotonic() - start:.3f}", flush=True)
    for client in clients:  # the parent's clients are unaffected
        client.publish("exit.test", b"y")
        client.flush(timeout=5)
        client.close()
    print("parent ok", flush=True)
    """
)


def test_a_child_that_never_touches_natspull_exits_at_once(nats_server: NatsServer) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, nats_server.url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    exited, parent = proc.stdout.split("\n", 1)
    assert exited.startswith("exited "), proc.stdout
    assert float(exited.split()[1]) < AT_ONCE, f"the child took {exited.split()[1]} s to exit"
    assert parent.strip() == "parent ok"
    assert "natspull" not in proc.stderr, proc.stderr  # no at-exit close attempt logged


def test_connect_in_the_child_works_end_to_end(
    nats_server: NatsServer, client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    consumer = js.add_consumer(stream, durable_name="child", ack_wait=60)

    def body() -> dict[str, Any]:
        inherited = attempt(lambda: client.publish(f"{stream}.x", b"x"))
        with natspull.connect(nats_server.url) as own:
            own_js = own.jetstream()
            first = own_js.publish(f"{stream}.child", b"one", timeout=5).seq
            own_js.publish(f"{stream}.child", b"two", timeout=5)
            bound = own_js.consumer(stream, "child")
            fetched = bound.fetch(1, max_wait=5)
            fetched[0].ack_sync(timeout=5)
            with bound.messages() as msgs:
                second = msgs.next(timeout=5)
                second.ack()
            own.flush(timeout=5)
        return {
            "inherited": inherited,
            "first": first,
            "got": [(m.metadata.sequence.stream, m.data) for m in (fetched[0], second)],
        }

    out = run_in_child(body)
    assert_forked(out["inherited"], "the inherited client, next to a new one")
    assert out["first"] == 1
    assert out["got"] == [(1, b"one"), (2, b"two")]
    info = consumer.info()  # the parent sees the child's acks
    assert (info.num_ack_pending, info.ack_floor.stream_seq, info.delivered.stream_seq) == (0, 2, 2)
    assert js.publish(f"{stream}.parent", b"three", timeout=5).seq == 3  # the parent is unaffected


# ------------------------------------------------------------------ locks held at the fork


def test_forks_under_load_never_leave_the_child_on_a_held_lock(
    client: natspull.Client, js: natspull.JetStream, stream: str
) -> None:
    """80 forks at random moments while the loop thread delivers and other threads ack and
    publish: each child touches every kind of inherited lock and is refused at once."""
    forks = 80
    pool = js.add_consumer(stream, durable_name="pool", ack_wait=60)
    reader = js.add_consumer(stream, durable_name="reader", ack_wait=60)
    pool_ledger: list[tuple[int, int]] = []
    reader_ledger: list[tuple[int, int]] = []
    published = 0
    stop_publishing = threading.Event()

    def publish() -> None:
        nonlocal published
        while not stop_publishing.is_set():
            js.publish_many(((f"{stream}.m", b"x") for _ in range(100)), timeout=10)
            published += 100

    def handle(msg: natspull.Msg) -> None:
        pool_ledger.append((msg.metadata.sequence.stream, msg.metadata.num_delivered))
        msg.ack()

    def read(msgs: natspull.Messages) -> None:
        for msg in msgs:
            reader_ledger.append((msg.metadata.sequence.stream, msg.metadata.num_delivered))
            msg.ack()

    publisher = threading.Thread(target=publish, name="test-publisher")
    publisher.start()
    try:
        with reader.messages(max_messages=100) as msgs, pool.consume(handle, workers=3) as ctx:
            held = msgs.next(timeout=5)  # a message only the parent acks, at the end
            reading = threading.Thread(target=read, args=(msgs,), name="test-reader")
            reading.start()

            def body() -> dict[str, Any]:
                calls: dict[str, Callable[[], object]] = {
                    "stats": lambda: (msgs.stats(), ctx.stats()),  # the queue's and the pool's locks
                    "next": msgs.next,  # the queue's lock
                    "ack": held.ack,  # Msg's ack lock, the outbox's lock
                    "publish": lambda: client.publish(f"{stream}.child", b"x"),  # the outbox's lock
                    "wait": lambda: ctx.wait(timeout=5),
                    "close": client.close,  # the close lock
                }
                return {name: attempt(call) for name, call in calls.items()}

            for _ in range(forks):
                mark = len(pool_ledger) + random.randint(1, 100)
                wait_until(lambda mark=mark: len(pool_ledger) >= mark, message="the pool to handle more")
                results = run_in_child(body)
                assert results.pop("stats")["error"] == "returned"
                for name, result in results.items():
                    assert_forked(result, name)
            stop_publishing.set()
            publisher.join(timeout=15)
            assert not publisher.is_alive()
            total = published
            wait_until(lambda: len(pool_ledger) >= total and len(reader_ledger) >= total - 1, 30.0)
            held.ack()
            msgs.stop()
            reading.join(timeout=5)
            assert not reading.is_alive()
    finally:
        stop_publishing.set()
        publisher.join(timeout=15)
    reader_ledger.append((held.metadata.sequence.stream, held.metadata.num_delivered))
    client.flush(timeout=5)
    for consumer, ledger in ((pool, pool_ledger), (reader, reader_ledger)):
        assert sorted(ledger) == [(seq, 1) for seq in range(1, total + 1)], consumer.name
        info = consumer.info()
        assert (info.num_ack_pending, info.num_redelivered, info.ack_floor.stream_seq) == (0, 0, total)


# ------------------------------------------------------------------------------- trio


def test_the_trio_adapter_refuses_in_the_child(nats_server: NatsServer) -> None:
    trio = pytest.importorskip("trio")
    import natspull.trio

    async def main() -> None:
        async with natspull.trio.open_client(nats_server.url) as client:
            js = client.jetstream()
            await js.add_stream(name="TRIOFORK", subjects=["triofork.>"])
            await js.publish_many(("triofork.m", b"x") for _ in range(20))
            consumer = await js.add_consumer("TRIOFORK", durable_name="c", ack_wait=60)
            async with consumer.messages(max_messages=10) as msgs:
                msg = await msgs.next()
                await msgs.next()  # takes a burst into the trio-side deque

                def body() -> dict[str, Any]:
                    calls: dict[str, Callable[[], object]] = {
                        "Msg.ack": msg.ack,
                        "Msg.nak": msg.nak,
                        "Msg.in_progress": msg.in_progress,
                        "Client.publish": lambda: client.publish("triofork.child", b"x"),
                        "Messages.drain": msgs.drain,
                        "Messages.stop": msgs.stop,
                    }
                    out = {name: attempt(call) for name, call in calls.items()}
                    out["buffered"] = msgs.stats().buffered
                    return out

                assert msgs.stats().buffered > 0
                out = run_in_child(body)
                assert out.pop("buffered") == 0  # the deque and the queue held the parent's messages
                for name, result in out.items():
                    assert_forked(result, f"natspull.trio {name}")
                msg.ack()  # the parent's message is still the parent's to ack
                await client.flush()

    trio.run(main)


def test_an_inherited_iterator_collected_in_the_child_is_silent(nats_server: NatsServer) -> None:
    """A child dropping the parent's iterator (gc) neither raises in __del__ nor warns."""
    script = textwrap.dedent(
        """
        import gc, os, sys, warnings
        import natspull
        client = natspull.connect(sys.argv[1])
        js = client.jetstream()
        js.add_stream(name="GC", subjects=["gc.>"])
        msgs = js.add_consumer("GC", durable_name="c").messages()
        pid = os.fork()
        if pid == 0:
            warnings.simplefilter("error")
            del msgs
            gc.collect()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        msgs.stop()
        client.close()
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", script, nats_server.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    assert "ResourceWarning" not in result.stderr, result.stderr


class _NoWeakReference:
    """Like a class of the compiled build: it takes no weak reference."""

    __slots__ = ("_fork_handle", "forked")

    def __init__(self) -> None:
        self.forked = False
        self._fork_handle = _fork.track(self)

    def _after_fork_in_child(self) -> None:
        self.forked = True


def test_an_object_without_weak_references_is_marked_in_the_child_and_freed_in_the_parent() -> None:
    """The registry takes it through a handle: the child marks it, the parent frees the two."""
    obj = _NoWeakReference()
    with pytest.raises(TypeError):
        weakref.ref(obj)
    assert obj._fork_handle is not None, "track() returned no handle"
    assert run_in_child(lambda o=obj: o.forked) is True  # (a default: obj is deleted below)
    assert obj.forked is False
    handle = weakref.ref(obj._fork_handle)
    del obj
    gc.collect()
    assert handle() is None, "the handle outlived its object"
