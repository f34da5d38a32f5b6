"""The blocking client against a real nats-server: connect, close, threads, publish/request, hygiene."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import connection, natspull_threads, pull_inboxes, wait_until

import natspull
from natspull.testing import NatsServer


def assert_ours(exc: BaseException) -> None:
    """No nats-py or asyncio exception type crosses the public API."""
    assert type(exc).__module__.startswith(("natspull", "builtins")), type(exc)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_failure_names_servers_within_timeout() -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(natspull.ConnectError) as info:
        natspull.connect(url, connect_timeout=1.0)
    assert time.monotonic() - t0 < 1.5
    assert url in str(info.value)
    assert_ours(info.value)
    assert not natspull_threads()


def test_connect_rejects_bad_options() -> None:
    with pytest.raises(TypeError, match="unknown option 'colour'"):
        natspull.connect("nats://127.0.0.1:1", colour="red")
    with pytest.raises(ValueError, match="connect_timeout"):
        natspull.connect("nats://127.0.0.1:1", connect_timeout=-1)
    with pytest.raises(TypeError, match="servers"):
        natspull.connect(42)  # type: ignore[arg-type]


def test_repr_and_errors_never_show_secrets(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, name="svc") as client:
        assert "state=connected" in repr(client)
    url = f"nats://alice:s3cret@127.0.0.1:{closed_port()}"
    with pytest.raises(natspull.ConnectError) as info:
        natspull.connect(url, connect_timeout=0.5, password="hunter2")
    assert "s3cret" not in str(info.value)
    assert "***@127.0.0.1" in str(info.value)


def test_close_is_idempotent_joins_threads_and_leaves_no_subscription(nats_server: NatsServer) -> None:
    client = natspull.connect(nats_server.url, name="hygiene")
    js = client.jetstream()
    js.add_stream(name="H", subjects=["h.>"])
    consumer = js.add_consumer("H", durable_name="c")
    msgs = consumer.messages()
    client.flush()  # the server has processed the inbox's SUB
    assert len(pull_inboxes(nats_server, "hygiene")) == 1
    msgs.stop()
    client.close()
    client.close()
    assert client.is_closed
    assert not natspull_threads()
    wait_until(
        lambda: connection(nats_server, "hygiene") is None,
        message="the connection to disappear from /connz",
    )


def test_close_from_another_thread_wakes_a_blocked_next(nats_server: NatsServer) -> None:
    client = natspull.connect(nats_server.url)
    js = client.jetstream()
    js.add_stream(name="W", subjects=["w.>"])
    msgs = js.add_consumer("W", durable_name="c").messages()
    result: list[BaseException] = []
    waiting = threading.Event()

    def wait() -> None:
        waiting.set()
        try:
            msgs.next(timeout=30)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    waiting.wait(5)
    wait_until(lambda: msgs.stats().waiters == 1, message="next() to block")
    t0 = time.monotonic()
    client.close()
    t.join(5)
    assert time.monotonic() - t0 < 2.0
    assert isinstance(result[0], natspull.ConnectionClosedError)
    with pytest.raises(natspull.ConnectionClosedError):
        js.stream_info("W")


def test_close_from_the_loop_thread_is_rejected(client: natspull.Client) -> None:
    seen: list[BaseException] = []
    done = threading.Event()

    def on_loop() -> None:
        try:
            client.close()
        except BaseException as exc:
            seen.append(exc)
        done.set()

    client._loop_thread.call_soon(on_loop)
    done.wait(5)
    assert isinstance(seen[0], RuntimeError)
    assert "loop thread" in str(seen[0])


def test_publish_flush_request(client: natspull.Client) -> None:
    received = client.jetstream()  # management works
    assert received.api_prefix == "$JS.API"
    with pytest.raises(natspull.Error) as info:
        client.request("nobody.home", b"?", timeout=0.5)
    assert_ours(info.value)
    client.publish("a.b", b"x", headers={"k": "v"})
    client.flush(timeout=2)
    with pytest.raises(ValueError, match="subject"):
        client.publish("bad subject", b"")
    with pytest.raises(TypeError, match="data must be bytes"):
        client.publish("a", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_payload"):
        client.publish("a", b"x" * (client.max_payload + 1))
    assert client.server_info["max_payload"] == client.max_payload


def test_callbacks_run_on_a_natspull_thread(nats_server: NatsServer) -> None:
    events: list[tuple[str, str]] = []
    reconnected = threading.Event()

    def on(name: str) -> object:
        def cb(*args: object) -> None:
            events.append((name, threading.current_thread().name))
            if name == "reconnected":
                reconnected.set()

        return cb

    with natspull.connect(
        nats_server.url,
        disconnected_cb=on("disconnected"),
        reconnected_cb=on("reconnected"),
        reconnect_time_wait=0.1,
    ) as client:
        nats_server.restart()
        assert reconnected.wait(10)
        wait_until(lambda: client.is_connected)
    assert {name for name, _ in events} >= {"disconnected", "reconnected"}
    assert all(thread.startswith("natspull-callbacks-") for _, thread in events)


SCRIPT = textwrap.dedent(
    """
    import sys, natspull
    client = natspull.connect(sys.argv[1])
    consumer = client.jetstream().consumer("EXIT", "c")
    for msg in consumer.fetch(100, max_wait=5):
        msg.ack()
    print("acked", flush=True)
    # no close(): the atexit hook must flush the acks and let the process exit
    """
)


def test_script_without_close_exits_fast_and_flushes_acks(nats_server: NatsServer, tmp_path: object) -> None:
    with natspull.connect(nats_server.url) as client:
        js = client.jetstream()
        js.add_stream(name="EXIT", subjects=["exit.>"])
        consumer = js.add_consumer("EXIT", durable_name="c", ack_wait=60)
        js.publish_many(("exit.m", b"%d" % i) for i in range(100))
        with subprocess.Popen(
            [sys.executable, "-c", SCRIPT, nats_server.url], stdout=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "acked"
            t0 = time.monotonic()
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - t0 < 2.0
        info = consumer.info()
        assert info.num_ack_pending == 0
        assert info.ack_floor.stream_seq == 100
