"""Server restarts during a long run: the file store survives, the client reconnects, nothing is lost."""

from __future__ import annotations

import time

import pytest

import natspull
from natspull.testing import NatsServer

from ._ledger import IteratorRunner, Ledger

TOTAL = 50_000
RESTARTS = 3
BUDGET = 60.0  # seconds for the whole run, restarts included


def _setup(client: natspull.Client, name: str) -> natspull.JetStream:
    js = client.jetstream(timeout=10)
    js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE)
    js.add_consumer(name, durable_name="c", ack_wait=3)
    js.publish_many((f"{name}.m", b"%08d" % i) for i in range(TOTAL))
    return js


def _restart_during(server: NatsServer, ledger: Ledger, deadline: float) -> None:
    """Restart the server at 1/4, 2/4 and 3/4 of the run."""
    for k in range(1, RESTARTS + 1):
        ledger.wait_for(TOTAL * k // (RESTARTS + 1), deadline - time.monotonic())
        server.restart()


@pytest.mark.timeout(90)
def test_restarts_during_iteration(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1) as client:
        js = _setup(client, "RI")
        ledger = Ledger(TOTAL)
        t0 = time.monotonic()
        deadline = t0 + BUDGET
        msgs = js.consumer("RI", "c").messages(expires=5)
        app = IteratorRunner(msgs, ledger)
        try:
            _restart_during(nats_server, ledger, deadline)
            ledger.settle(client, js, "RI", "c", deadline - time.monotonic())
        except BaseException:
            app.abort()
            raise
        app.finish()
        elapsed = time.monotonic() - t0
        stats = msgs.stats()
    ledger.check()
    assert stats.reconnects >= RESTARTS
    assert elapsed < BUDGET
    print(f"iterator: {ledger.summary()} in {elapsed:.1f} s; {stats}")


@pytest.mark.timeout(90)
def test_restarts_during_consume(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1) as client:
        js = _setup(client, "RC")
        ledger = Ledger(TOTAL)
        t0 = time.monotonic()
        deadline = t0 + BUDGET
        ctx = js.consumer("RC", "c").consume(ledger.handle, workers=4, expires=5)
        try:
            _restart_during(nats_server, ledger, deadline)
            ledger.settle(client, js, "RC", "c", deadline - time.monotonic())
        finally:
            ctx.drain()
            assert ctx.wait(timeout=10)
        elapsed = time.monotonic() - t0
        stats = ctx.stats()
    ledger.check()
    assert stats.reconnects >= RESTARTS
    assert stats.failed == 0
    assert elapsed < BUDGET
    print(f"consume: {ledger.summary()} in {elapsed:.1f} s; {stats}")
