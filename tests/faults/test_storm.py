"""A reconnect storm: the proxy resets every connection every few hundred ms for 20 s."""

from __future__ import annotations

import random
import threading
import time

import pytest
from conftest import wait_until

import natspull

from ._chaos import ChaosProxy
from ._ledger import IteratorRunner, Ledger

STORM = 20.0
RESET_EVERY = (0.2, 0.5)  # seconds between resets, uniformly drawn


class Publisher:
    """Publishes batches straight to the server (outside the storm) until stopped; counts them."""

    def __init__(self, js: natspull.JetStream, subject: str, batch: int = 100, pause: float = 0.02) -> None:
        self.count = 0
        self._js = js
        self._subject = subject
        self._batch = batch
        self._pause = pause
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fault-publisher")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                start = self.count
                self._js.publish_many((self._subject, b"%08d" % i) for i in range(start, start + self._batch))
                self.count += self._batch
                self._stop.wait(self._pause)  # the publishing rate, not synchronisation
        except BaseException as exc:
            self.error = exc

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.count


def _storm(proxy: ChaosProxy) -> int:
    """The fault schedule: reset every connection every 0.2-0.5 s for STORM seconds.

    It ends with a pause, not a reset: a flush() racing the last reset would hang (see
    test_flush_interrupted_by_a_reset_ends_promptly), and that is not what this test is about.
    """
    end = time.monotonic() + STORM
    resets = 0
    while True:
        time.sleep(random.uniform(*RESET_EVERY))  # the storm's rhythm, not synchronisation
        if time.monotonic() >= end:
            return resets
        resets += proxy.reset()


# A reset can land between a reconnect's TCP connect and its INFO; nats-py then drops that
# attempt's StreamWriter without closing it, and its __del__ warns (ResourceWarning).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("mode", ["iterator", "consume"])
@pytest.mark.timeout(90)
def test_reconnect_storm(chaos_proxy: ChaosProxy, admin: natspull.Client, mode: str) -> None:
    js_admin = admin.jetstream(timeout=10)
    js_admin.add_stream(name="ST", subjects=["ST.>"], storage=natspull.StorageType.FILE)
    js_admin.add_consumer("ST", durable_name="c", ack_wait=2)
    ledger = Ledger(0)
    t0 = time.monotonic()
    with natspull.connect(
        chaos_proxy.url, reconnect_time_wait=0.05, max_reconnect_attempts=-1, connect_timeout=1
    ) as client:
        consumer = client.jetstream().consumer("ST", "c")
        publisher = Publisher(js_admin, "ST.m")
        app: IteratorRunner | None = None
        ctx: natspull.ConsumeContext | None = None
        try:
            if mode == "iterator":
                app = IteratorRunner(consumer.messages(expires=2), ledger)
            else:
                ctx = consumer.consume(ledger.handle, workers=4, expires=2)
            resets = _storm(chaos_proxy)
            ledger.total = publisher.stop()
            ledger.settle(client, js_admin, "ST", "c", 30)
            stats = app.msgs.stats() if app is not None else ctx.stats()  # type: ignore[union-attr]
        finally:
            publisher.stop()
            if app is not None:
                app.finish()
            if ctx is not None:
                ctx.drain()
                assert ctx.wait(timeout=10)
    elapsed = time.monotonic() - t0
    ledger.check()
    assert resets >= STORM / RESET_EVERY[1] - 1
    assert stats.reconnects >= resets // 2  # most resets hit a live connection
    assert elapsed < STORM + 30
    print(f"storm ({mode}): {resets} resets; {ledger.summary()} in {elapsed:.1f} s; {stats}")


def test_flush_interrupted_by_a_reset_ends_promptly(chaos_proxy: ChaosProxy) -> None:
    """A connection drop during flush(): the flush should end (either way) once reconnected."""
    with natspull.connect(chaos_proxy.url, reconnect_time_wait=0.05, ping_interval=60) as client:
        client.flush(timeout=5)
        chaos_proxy.blackhole()  # the flush's PING stays in the proxy ...
        outcome: list[BaseException | None] = []

        def flush() -> None:
            try:
                client.flush(timeout=3)
                outcome.append(None)
            except natspull.Error as exc:
                outcome.append(exc)

        flusher = threading.Thread(target=flush, name="fault-flush")
        flusher.start()
        try:
            flusher.join(0.3)
            assert flusher.is_alive()  # really blocked
            chaos_proxy.reset()  # ... and dies with the connection
            chaos_proxy.heal()
            wait_until(lambda: client.is_connected, 5, "the reconnect")
            flusher.join(1.0)
            assert not flusher.is_alive(), "flush() still waiting for a PONG on a connection that is gone"
        finally:
            chaos_proxy.heal()
            flusher.join(5)
