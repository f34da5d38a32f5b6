"""Publishing against a real server: options (TTL, expectations), publish_many items,
publish_async, atomic batches, LazyClient (fork, gunicorn) and the CLI's publish options."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import multiprocessing
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from typing import Any

import pytest
from conftest import server_stopped, wait_until

import natspull
from natspull.testing import NatsServer

_ids = itertools.count(1)


def new_stream(js: natspull.JetStream, **config: object) -> str:
    name = f"P{next(_ids)}"
    js.add_stream(name=name, subjects=[f"{name}.>"], **config)
    return name


def state(js: natspull.JetStream, stream: str) -> tuple[int, int]:
    info = js.stream_info(stream)
    return info.state.messages, info.state.last_seq


# ----------------------------------------------------------------------------- options


@pytest.mark.timeout(30)
def test_a_message_with_a_ttl_is_gone_after_it(js: natspull.JetStream) -> None:
    stream = new_stream(js, allow_msg_ttl=True)
    js.publish(f"{stream}.keep", b"forever", ttl="never")
    ack = js.publish(f"{stream}.short", b"brief", ttl=1)
    assert ack.seq == 2
    assert state(js, stream) == (2, 2)
    wait_until(lambda: js.stream_info(stream).state.messages == 1, 10.0, "the TTL to remove the message")
    assert js.stream_info(stream).state.first_seq == 1  # the one without a TTL stays


@pytest.mark.timeout(20)
def test_ttl_is_checked_here_and_by_the_server(js: natspull.JetStream, stream: str) -> None:
    with pytest.raises(natspull.JetStreamAPIError) as info:
        js.publish(f"{stream}.a", b"x", ttl=5)  # the stream does not allow per-message TTLs
    assert info.value.err_code == 10166
    for bad in (0, 0.5, -1, float("nan"), "1s", "forever"):
        with pytest.raises(ValueError, match="ttl"):
            js.publish(f"{stream}.a", b"x", ttl=bad)
    for wrong in (True, b"1", [1]):
        with pytest.raises(TypeError, match="ttl"):
            js.publish(f"{stream}.a", b"x", ttl=wrong)  # type: ignore[arg-type]
    assert state(js, stream) == (0, 0)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("option", "value", "err_code"),
    [
        ("expected_last_sequence", 5, 10071),
        ("expected_last_sequence", 0, 10071),  # 0 is a check ("empty stream"), not "absent"
        ("expected_last_subject_sequence", 1, 10071),
        ("expected_last_subject_sequence", 0, 10071),
        ("expected_last_msg_id", "nope", 10070),
        ("expected_stream", "OTHER", None),
    ],
)
def test_each_wrong_expectation_stores_nothing(
    js: natspull.JetStream, stream: str, option: str, value: object, err_code: int | None
) -> None:
    js.publish(f"{stream}.a", b"1", msg_id="first")
    js.publish(f"{stream}.b", b"2")
    before = state(js, stream)
    with pytest.raises(natspull.JetStreamAPIError) as info:
        js.publish(f"{stream}.b", b"3", **{option: value})  # type: ignore[arg-type]
    assert info.value.code == 400
    if err_code is not None:
        assert info.value.err_code == err_code
    assert state(js, stream) == before
    with pytest.raises(natspull.JetStreamAPIError):
        js.publish_async(f"{stream}.b", b"3", **{option: value}).result(5)  # type: ignore[arg-type]
    assert state(js, stream) == before


@pytest.mark.timeout(20)
def test_right_expectations_store(js: natspull.JetStream, stream: str) -> None:
    assert js.publish(f"{stream}.a", b"1", expected_last_sequence=0, msg_id="m1").seq == 1
    assert js.publish(f"{stream}.b", b"2", expected_last_subject_sequence=0, msg_id="m2").seq == 2
    ack = js.publish(
        f"{stream}.a",
        b"3",
        expected_stream=stream,
        expected_last_sequence=2,
        expected_last_subject_sequence=1,
        expected_last_msg_id="m2",
    )
    assert ack.seq == 3
    with pytest.raises(ValueError, match="differ"):
        js.publish(f"{stream}.a", b"x", {"Nats-Msg-Id": "a"}, msg_id="b")
    with pytest.raises(ValueError, match="expected_last_sequence"):
        js.publish(f"{stream}.a", b"x", expected_last_sequence=-1)
    with pytest.raises(TypeError, match="expected_last_subject_sequence"):
        js.publish(f"{stream}.a", b"x", expected_last_subject_sequence="1")  # type: ignore[arg-type]


@pytest.mark.timeout(20)
def test_publish_many_takes_every_item_form_and_keeps_duplicate(js: natspull.JetStream) -> None:
    stream = new_stream(js, allow_msg_ttl=True)
    acks = js.publish_many(
        [
            (f"{stream}.a", b"pair"),
            (f"{stream}.b", b"triple", {"k": "v"}),
            (f"{stream}.c", b"triple", None),
            natspull.Publish(f"{stream}.d", b"record", {"k": "w"}, msg_id="d1"),
            natspull.Publish(f"{stream}.d", b"again", msg_id="d1"),
            natspull.Publish(f"{stream}.e", ttl=60, expected_last_subject_sequence=0),
        ]
    )
    assert [a.seq for a in acks] == [1, 2, 3, 4, 4, 5]
    assert [bool(a.duplicate) for a in acks] == [False, False, False, False, True, False]
    consumer = js.add_consumer(stream, durable_name="reader")
    msgs = consumer.fetch(5, max_wait=5)
    assert [(m.subject.rpartition(".")[2], m.data) for m in msgs] == [
        ("a", b"pair"),
        ("b", b"triple"),
        ("c", b"triple"),
        ("d", b"record"),
        ("e", b""),
    ]
    assert msgs[1].headers is not None and msgs[1].headers["k"] == "v"
    assert msgs[3].headers is not None and msgs[3].headers["Nats-Msg-Id"] == "d1"
    assert msgs[4].headers is not None and msgs[4].headers["Nats-TTL"] == "60"
    for msg in msgs:
        msg.ack()
    with pytest.raises(TypeError, match=r"messages\[1\]"):
        js.publish_many([(f"{stream}.a", b"x"), (f"{stream}.a",)])  # type: ignore[list-item]
    with pytest.raises(natspull.JetStreamAPIError) as info:  # a failed expectation in the middle
        js.publish_many([natspull.Publish(f"{stream}.a", expected_last_subject_sequence=99)])
    assert info.value.err_code == 10071


# ------------------------------------------------------------------------- publish_async


@pytest.mark.timeout(60)
def test_publish_async_from_8_threads_gets_exact_sequences(js: natspull.JetStream, stream: str) -> None:
    per_thread = 500
    results: dict[int, list[concurrent.futures.Future[natspull.PubAck]]] = {}
    start = threading.Barrier(8)

    def publisher(n: int) -> None:
        start.wait(10)
        results[n] = [js.publish_async(f"{stream}.t{n}", b"%d" % i) for i in range(per_thread)]

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    js.publish_async_complete(timeout=20)
    assert js.publish_async_pending == 0
    seqs = []
    for futures in results.values():
        acks = [f.result(0) for f in futures]
        thread_seqs = [a.seq for a in acks]
        assert thread_seqs == sorted(thread_seqs)  # one thread's publishes keep their order
        seqs.extend(thread_seqs)
    assert sorted(seqs) == list(range(1, 8 * per_thread + 1))
    assert state(js, stream) == (8 * per_thread, 8 * per_thread)


@pytest.mark.timeout(30)
def test_publish_async_futures_work_with_the_standard_library(js: natspull.JetStream, stream: str) -> None:
    """wait(), as_completed(), callbacks and asyncio.wrap_future() take publish_async's futures."""
    futures = [js.publish_async(f"{stream}.a", b"%d" % i) for i in range(200)]
    assert all(isinstance(f, concurrent.futures.Future) and not f.cancel() for f in futures)
    called = threading.Event()
    futures[-1].add_done_callback(lambda f: called.set() if f.result().seq == 200 else None)
    done, not_done = concurrent.futures.wait(futures, timeout=10)
    assert (len(done), not_done) == (200, set())
    completed = concurrent.futures.as_completed(futures, timeout=10)
    assert sorted(f.result().seq for f in completed) == list(range(1, 201))
    assert called.wait(5)

    async def awaited() -> natspull.PubAck:
        return await asyncio.wait_for(asyncio.wrap_future(js.publish_async(f"{stream}.a", b"last")), 10)

    assert asyncio.run(awaited()).seq == 201
    assert state(js, stream) == (201, 201)


@pytest.mark.timeout(30)
def test_publish_async_pipelines_and_blocks_beyond_max_pending(
    nats_server: NatsServer, client: natspull.Client, stream: str
) -> None:
    js = client.jetstream(max_pending=50)
    js.publish_async(f"{stream}.warm", b"").result(5)  # the reply inbox is subscribed once
    with server_stopped(nats_server):
        # No round trip per call: 50 publishes return while the server answers nothing.
        futures = [js.publish_async(f"{stream}.a", b"%d" % i) for i in range(50)]
        assert not any(f.done() for f in futures)
        assert js.publish_async_pending == 50
        with pytest.raises(natspull.TimeoutError, match="max_pending"):
            js.publish_async(f"{stream}.a", b"late", timeout=0.2)
        with pytest.raises(natspull.TimeoutError, match="50 publishes"):
            js.publish_async_complete(timeout=0.2)
        blocked: list[object] = []
        helper = threading.Thread(
            target=lambda: blocked.append(js.publish_async(f"{stream}.a", b"51", timeout=20))
        )
        helper.start()
        helper.join(0.3)
        assert helper.is_alive() and not blocked  # it waits for a free slot
    helper.join(20)  # the server answers: slots come free
    assert not helper.is_alive()
    js.publish_async_complete(timeout=10)
    assert [f.result(0).seq for f in futures] == list(range(2, 52))
    assert isinstance(blocked[0], concurrent.futures.Future)
    assert blocked[0].result(0).seq == 52


@pytest.mark.timeout(30)
def test_publish_async_futures_fail_with_a_timeout_and_on_close(nats_server: NatsServer, stream: str) -> None:
    client = natspull.connect(nats_server.url)
    try:
        js = client.jetstream()
        with pytest.raises(natspull.JetStreamAPIError) as info:
            js.publish_async("nowhere.x", b"").result(5)
        assert info.value.code == 503
        with server_stopped(nats_server):
            # (after a publish with the context's 5 s timeout: the shorter one must not wait for it)
            started = time.monotonic()
            slow = js.publish_async(f"{stream}.a", b"slow", timeout=0.3)
            with pytest.raises(natspull.TimeoutError, match="publish_async"):
                slow.result(5)
            assert time.monotonic() - started < 2.5
            futures = [js.publish_async(f"{stream}.a", b"%d" % i) for i in range(10)]
            assert not any(f.done() for f in futures)
            client.close(timeout=0.5)
        for future in futures:
            with pytest.raises(natspull.ConnectionClosedError):
                future.result(5)
        assert js.publish_async_pending == 0
        with pytest.raises(natspull.ConnectionClosedError):
            js.publish_async(f"{stream}.a", b"after")
    finally:
        client.close()


@pytest.mark.timeout(20)
def test_publish_async_checks_arguments_before_taking_a_slot(js: natspull.JetStream, stream: str) -> None:
    with pytest.raises(ValueError, match="ttl"):
        js.publish_async(f"{stream}.a", b"", ttl=0)
    with pytest.raises(TypeError, match="data"):
        js.publish_async(f"{stream}.a", "text")  # type: ignore[arg-type]
    assert js.publish_async_pending == 0


@pytest.mark.timeout(20)
def test_max_pending_is_checked(client: natspull.Client) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        client.jetstream(max_pending=0)
    with pytest.raises(TypeError, match="max_pending"):
        client.jetstream(max_pending=1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- atomic batches


@pytest.mark.timeout(20)
def test_a_batch_stores_every_message(js: natspull.JetStream) -> None:
    stream = new_stream(js, allow_atomic=True)
    js.publish(f"{stream}.x", b"before")
    ack = js.publish_batch(
        [
            (f"{stream}.a", b"1"),
            (f"{stream}.b", b"2", {"k": "v"}),
            natspull.Publish(f"{stream}.c", b"3", expected_last_subject_sequence=0),
        ]
    )
    assert isinstance(ack, natspull.BatchAck)
    assert (ack.stream, ack.seq, ack.count) == (stream, 4, 3)
    assert len(ack.batch_id) == 32
    assert state(js, stream) == (4, 4)
    single = js.publish_batch([natspull.Publish(f"{stream}.d", b"4")])
    assert (single.seq, single.count) == (5, 1)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_batch_with_a_failing_expectation_stores_none_of_its_messages(
    js: natspull.JetStream, position: int
) -> None:
    stream = new_stream(js, allow_atomic=True)
    js.publish(f"{stream}.x", b"before")
    items: list[natspull.Publish] = [natspull.Publish(f"{stream}.{s}", b"m") for s in "abc"]
    items[position] = natspull.Publish(f"{stream}.x", b"m", expected_last_subject_sequence=7)
    with pytest.raises(natspull.JetStreamAPIError) as info:
        js.publish_batch(items)
    assert info.value.err_code == 10071
    assert state(js, stream) == (1, 1)


@pytest.mark.timeout(20)
def test_a_batch_too_large_is_refused_before_anything_is_sent(
    client: natspull.Client, js: natspull.JetStream
) -> None:
    stream = new_stream(js, allow_atomic=True)
    js.publish_batch((f"{stream}.a", b"%d" % i) for i in range(1000))  # the limit passes
    assert state(js, stream) == (1000, 1000)
    client.flush(5)
    sent = client.stats().out_msgs
    with pytest.raises(ValueError, match=r"messages\[1000\].*at most 1000"):
        js.publish_batch((f"{stream}.a", b"%d" % i) for i in range(1001))
    with pytest.raises(ValueError, match="at least one"):
        js.publish_batch([])
    with pytest.raises(ValueError, match="Nats-Batch-Id"):
        js.publish_batch([(f"{stream}.a", b"", {"Nats-Batch-Id": "mine"})])
    assert client.stats().out_msgs == sent
    assert state(js, stream) == (1000, 1000)


@pytest.mark.timeout(20)
def test_a_batch_on_a_stream_without_allow_atomic_is_a_clear_error(
    js: natspull.JetStream, stream: str
) -> None:
    with pytest.raises(natspull.JetStreamAPIError, match="atomic publish is disabled") as info:
        js.publish_batch([(f"{stream}.a", b"1"), (f"{stream}.a", b"2")])
    assert info.value.err_code == 10174
    with pytest.raises(natspull.JetStreamAPIError) as info:
        js.publish_batch([(f"{stream}.a", b"1")])
    assert info.value.err_code == 10174
    with pytest.raises(natspull.JetStreamAPIError) as info:
        js.publish_batch([("nowhere.a", b"1"), ("nowhere.b", b"2")])
    assert info.value.code == 503
    assert state(js, stream) == (0, 0)


# ---------------------------------------------------------------------------- LazyClient


def _child_publishes(lazy: natspull.LazyClient, subject: str, conn: Any) -> None:
    """A forked child's body: the inherited LazyClient connects anew and publishes."""
    ack = lazy.jetstream().publish(subject, b"child")
    conn.send((lazy.server_info["client_id"], ack.seq, os.getpid()))
    lazy.close()  # (a multiprocessing child ends with os._exit: no atexit hooks)


@pytest.mark.timeout(60)
def test_lazy_client_connects_once_per_process(
    nats_server: NatsServer, js: natspull.JetStream, stream: str
) -> None:
    lazy = natspull.LazyClient(nats_server.url, name="lazy")
    try:
        assert lazy.is_closed and not lazy.is_connected  # nothing connects before the first use
        start = threading.Barrier(8)
        clients: list[natspull.Client] = []

        def first_use() -> None:
            start.wait(10)
            clients.append(lazy.client)

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(clients) == 8 and len({id(c) for c in clients}) == 1  # one connection
        assert len([c for c in nats_server.connz()["connections"] if c.get("name") == "lazy"]) == 1
        parent_id = lazy.server_info["client_id"]
        assert lazy.jetstream().publish(f"{stream}.parent", b"1").seq == 1

        context = multiprocessing.get_context("fork")
        reader, writer = context.Pipe(duplex=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
            child = context.Process(target=_child_publishes, args=(lazy, f"{stream}.child", writer))
            child.start()
        assert reader.poll(20), "the child reported nothing"
        child_id, child_seq, child_pid = reader.recv()
        child.join(20)
        assert child.exitcode == 0
        assert child_pid != os.getpid() and child_id != parent_id and child_seq == 2
        # The parent's connection survived the child (its socket was not closed there).
        assert lazy.is_connected and lazy.server_info["client_id"] == parent_id
        assert lazy.jetstream().publish(f"{stream}.parent", b"3").seq == 3
        lazy.close()
        assert lazy.is_closed
        assert lazy.jetstream().publish(f"{stream}.parent", b"4").seq == 4  # connects anew
        assert lazy.server_info["client_id"] != parent_id
    finally:
        lazy.close()
    lazy.close()  # idempotent


@pytest.mark.timeout(30)
def test_lazy_client_checks_arguments_at_once_and_flushes_at_exit(
    nats_server: NatsServer, js: natspull.JetStream, stream: str
) -> None:
    with pytest.raises(TypeError, match="unknown option"):
        natspull.LazyClient(nats_server.url, colour="blue")
    with pytest.raises(ValueError, match="connect_timeout"):
        natspull.LazyClient(nats_server.url, connect_timeout=-1)
    script = (
        "import sys, natspull\n"
        "lazy = natspull.LazyClient(sys.argv[1])\n"
        "for i in range(100):\n"
        "    lazy.publish(sys.argv[2], b'%d' % i)  # fire and forget: flushed by the atexit close\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, nats_server.url, f"{stream}.exit"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert state(js, stream) == (100, 100)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _readme_flask_app() -> str:
    """The Flask example of the web apps guide (it was the README's)."""
    guide = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "guides" / "web-apps.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "LazyClient(URL)" in b]
    assert len(blocks) == 1, "the Flask example of docs/guides/web-apps.md"
    return blocks[0]


@pytest.mark.timeout(120)
def test_the_readme_flask_app_under_gunicorn_preload(
    nats_server: NatsServer, js: natspull.JetStream, tmp_path: pathlib.Path
) -> None:
    js.add_stream(name="ORDERS", subjects=["orders.>"])
    (tmp_path / "app.py").write_text(_readme_flask_app())
    port = _free_port()
    url = f"http://127.0.0.1:{port}/orders"
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "-w", "3", "--threads", "4", "--preload"),
            *("-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "app:app"),
        ],
        cwd=tmp_path,
        env={**os.environ, "NATS_URL": nats_server.url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def answers() -> bool:
            try:
                urllib.request.urlopen(url, timeout=1)  # a GET: 405 once gunicorn serves
            except urllib.error.HTTPError:
                return True
            except OSError:
                assert server.poll() is None, "gunicorn exited"
                return False
            return True

        wait_until(answers, 30.0, "gunicorn to serve")

        def post(n: int) -> dict[str, Any]:
            body = b"req-%d" % n
            req = urllib.request.Request(url, data=body, headers={"Idempotency-Key": f"req-{n}"})
            with urllib.request.urlopen(req, timeout=30) as response:
                assert response.status == 200
                result: dict[str, Any] = json.loads(response.read())
                return result

        n = 120
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(post, range(n)))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert server.returncode == 0, err.decode(errors="replace")[-2000:]
    assert sorted(r["seq"] for r in replies) == list(range(1, n + 1))
    assert not any(r["duplicate"] for r in replies)
    assert len({r["pid"] for r in replies}) >= 2, "one worker served every request"
    assert state(js, "ORDERS") == (n, n)
    consumer = js.add_consumer("ORDERS", durable_name="check")
    bodies = [m.data for m in consumer.fetch(n, max_wait=5)]
    assert sorted(bodies) == sorted(b"req-%d" % i for i in range(n))  # each request once


# ----------------------------------------------------------------------------------- CLI


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "natspull", "publish", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.timeout(120)
def test_cli_publish_options(nats_server: NatsServer, js: natspull.JetStream) -> None:
    stream = new_stream(js, allow_msg_ttl=True)
    url = ("--server", nats_server.url)
    result = cli(f"{stream}.a", "one", "--header", "Trace:abc", "--header", "X-N: 1", "--msg-id", "m1", *url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"published 1 message to stream {stream}, last seq 1"
    again = cli(f"{stream}.a", "one", "--msg-id", "m1", *url)
    assert again.returncode == 0 and "duplicate" in again.stdout, again
    refused = cli(f"{stream}.a", "two", "--expect-last-seq", "5", *url)
    assert refused.returncode == 1 and "wrong last sequence" in refused.stderr, refused
    assert "Traceback" not in refused.stderr
    expected = cli(f"{stream}.a", "two", "--expect-last-seq", "1", "--ttl", "60", *url)
    assert expected.returncode == 0 and "last seq 2" in expected.stdout, expected
    many = cli(f"{stream}.b", "x", "--count", "3", "--ttl", "never", "--header", "K:V", *url)
    assert many.returncode == 0 and "published 3 messages" in many.stdout, many
    for bad in (
        ["--ttl", "0.5"],
        ["--ttl", "soon"],
        ["--header", "novalue"],
        ["--expect-last-seq", "-1"],
        ["--count", "2", "--msg-id", "x"],
        ["--count", "2", "--expect-last-seq", "1"],
    ):
        usage = cli(f"{stream}.a", "x", *bad, *url)
        assert usage.returncode == 2 and "usage:" in usage.stderr, (bad, usage)
    bad_name = cli(f"{stream}.a", "x", "--header", "bad name:v", *url)
    assert bad_name.returncode == 2 and "header name" in bad_name.stderr, bad_name
    consumer = js.add_consumer(stream, durable_name="cli")
    msgs = consumer.fetch(5, max_wait=5)
    assert [m.data for m in msgs] == [b"one", b"two", b"x", b"x", b"x"]
    assert msgs[0].headers is not None
    assert (msgs[0].headers["Trace"], msgs[0].headers["X-N"], msgs[0].headers["Nats-Msg-Id"]) == (
        "abc",
        "1",
        "m1",
    )
    assert msgs[1].headers is not None and msgs[1].headers["Nats-TTL"] == "60"
    assert msgs[2].headers is not None and msgs[2].headers["Nats-TTL"] == "never"
    assert msgs[2].headers["K"] == "V"
