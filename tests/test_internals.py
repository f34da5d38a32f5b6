"""The private parts of nats-py that natspull relies on (docs/reliability.md) are still there.

A nats-py upgrade that moves one of them fails here, by name, before it fails elsewhere.
"""

from __future__ import annotations

import asyncio
import inspect

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

import natspull
from natspull._parser import FastParser
from natspull.testing import NatsServer


def test_parser_interface() -> None:
    parser = Parser()
    parser.reset()
    assert isinstance(parser.buf, bytearray)
    assert parser.state == AWAITING_CONTROL_LINE
    assert inspect.iscoroutinefunction(Parser.parse)


def test_client_private_methods() -> None:
    for name in ("_send_command", "_flush_pending", "_send_unsubscribe", "_process_msg"):
        assert inspect.iscoroutinefunction(getattr(NatsClient, name)), name


def test_connected_client_and_subscription_state(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url) as client:

        async def inspect_nc() -> None:
            nc = client._nc
            assert nc._ps is client._parser and isinstance(nc._ps, FastParser)
            assert isinstance(nc._pending, list)
            assert nc._transport is not None and callable(nc._transport.write)
            assert isinstance(nc._flusher_task, asyncio.Task) and not nc._flusher_task.done()
            sub = await nc.subscribe("x")
            assert isinstance(sub, Subscription)
            assert isinstance(sub._id, int) and nc._subs[sub._id] is sub
            assert isinstance(sub._pending_queue, asyncio.Queue)
            await sub.unsubscribe()

        client._run(inspect_nc(), 5, "inspect nats-py")
