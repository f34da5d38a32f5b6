"""The fast parser (natspull/_transport/_parser.py) against a real server's frames."""

from __future__ import annotations

import json

import pytest
from conftest import wait_until

import natspull
from natspull.testing import NatsServer


@pytest.mark.timeout(30)
def test_messages_with_and_without_headers_interleave_in_order(nats_server: NatsServer) -> None:
    """On the real wire: plain messages take the fast path, ones with headers nats-py's; order holds."""
    with natspull.connect(nats_server.url) as client:
        js = client.jetstream()
        js.add_stream(name="P", subjects=["P.>"])
        consumer = js.add_consumer("P", durable_name="c")
        for i in range(200):
            headers = {"N": str(i)} if i % 3 == 0 else None
            js.publish("P.m", json.dumps(i).encode(), headers=headers)
        got = []
        with consumer.messages(max_messages=37) as msgs:
            for msg in msgs:
                got.append((json.loads(msg.data), msg.headers))
                msg.ack()
                if len(got) == 200:
                    break
        assert [n for n, _ in got] == list(range(200))
        assert all((h or {}).get("N") == (str(n) if n % 3 == 0 else None) for n, h in got)
        # What may stay routed is the reply router's inbox (the publishes' PubAcks; no route at
        # all in the portable mode)
        router_inbox = client._conn.replies._inbox
        assert router_inbox is not None
        wait_until(
            lambda: set(client._conn.wire.routes) <= {router_inbox._sub._id},
            message="the engine to take its route away",
        )
