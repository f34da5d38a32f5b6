"""A crash (SIGKILL) of a single server: what survives and what the client sees again.

A graceful restart (``test_restart.py``) keeps the consumer's state, so no delivery repeats. A
crash loses the consumer state the server had not yet written to its store: acks and delivery
counts of the last moments before the kill. After the restart the server delivers those
messages again, some with a ``num_delivered`` it already used. The guarantee left is at least
once: every stream sequence is handed out, and every ack after the restart sticks.
"""

from __future__ import annotations

import time

import pytest

import natspull
from natspull.testing import NatsServer

from ._ledger import IteratorRunner, Ledger

TOTAL = 20_000
CRASHES = 2
BUDGET = 60.0


@pytest.mark.timeout(90)
def test_crashes_during_iteration_lose_no_message(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1) as client:
        js = client.jetstream(timeout=10)
        js.add_stream(name="CR", subjects=["CR.>"], storage=natspull.StorageType.FILE)
        js.add_consumer("CR", durable_name="c", ack_wait=3)
        js.publish_many(("CR.m", b"%08d" % i) for i in range(TOTAL))  # each one PubAck'ed: stored
        ledger = Ledger(TOTAL)
        deadline = time.monotonic() + BUDGET
        msgs = js.consumer("CR", "c").messages(expires=5)
        app = IteratorRunner(msgs, ledger)
        try:
            for k in range(1, CRASHES + 1):
                ledger.wait_for(TOTAL * k // (CRASHES + 1), deadline - time.monotonic())
                nats_server.kill()  # SIGKILL: no shutdown, no final write of the consumer state
                nats_server.restart()
            ledger.settle(client, js, "CR", "c", deadline - time.monotonic())
        except BaseException:
            app.abort()
            raise
        app.finish()
        stats = msgs.stats()
    ledger.check_all_handed_out()
    assert stats.reconnects >= CRASHES
    # Repeats of a (seq, num_delivered) pair are allowed here, and only here (see the module
    # docstring); printed so that a run shows what a crash cost.
    print(f"crash: {ledger.summary()}; repeated deliveries: {len(ledger.repeated_deliveries())}")
