"""The chaos proxy itself: each fault does what the fault tests rely on."""

from __future__ import annotations

import threading
import time

from conftest import wait_until

import natspull

from ._chaos import ChaosProxy


def test_pass_through_and_latency(chaos_proxy: ChaosProxy) -> None:
    with natspull.connect(chaos_proxy.url) as client:
        t0 = time.monotonic()
        client.flush(timeout=5)
        fast = time.monotonic() - t0
        chaos_proxy.latency(0.2)
        t0 = time.monotonic()
        client.flush(timeout=5)
        slow = time.monotonic() - t0
        chaos_proxy.pass_through()
        assert fast < 0.2
        assert 0.4 <= slow < 1.5  # 0.2 s each way


def test_blackhole_holds_bytes_until_heal(chaos_proxy: ChaosProxy) -> None:
    with natspull.connect(chaos_proxy.url, ping_interval=60) as client:
        client.flush(timeout=5)
        chaos_proxy.blackhole()
        done = threading.Event()

        def flush() -> None:
            client.flush(timeout=10)
            done.set()

        flusher = threading.Thread(target=flush)
        flusher.start()
        try:
            assert not done.wait(0.5)  # the PING is held
            assert client.is_connected  # a partition closes nothing
            chaos_proxy.heal()
            assert done.wait(5)
        finally:
            chaos_proxy.heal()
            flusher.join(10)


def test_reset_drops_connections_and_new_ones_are_accepted(chaos_proxy: ChaosProxy) -> None:
    reconnected = threading.Event()
    with natspull.connect(
        chaos_proxy.url, reconnect_time_wait=0.05, reconnected_cb=reconnected.set
    ) as client:
        client.flush(timeout=5)
        assert chaos_proxy.reset() == 1
        assert reconnected.wait(5)
        client.flush(timeout=5)
        assert chaos_proxy.accepted == 2
        assert chaos_proxy.resets == 1


def test_close_joins_the_thread_and_is_idempotent(nats_server: natspull.testing.NatsServer) -> None:
    proxy = ChaosProxy(nats_server.port).start()
    with natspull.connect(proxy.url, allow_reconnect=False) as client:
        client.flush(timeout=5)
        proxy.close()
        wait_until(lambda: client.is_closed, 5, "the client to see the proxy go")
    proxy.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("chaos-proxy")]
