"""The private parts of nats-py that natspull relies on (docs/reliability.md) are still there.

A nats-py upgrade that moves one of them fails here, by name, before it fails elsewhere.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

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


def test_reply_subject_lengths(nats_server: NatsServer) -> None:
    """Client._check_line counts nats-py's reply subjects: "<inbox_prefix>.<nuid>" from
    new_inbox(), "<inbox_prefix>.<nuid>.<nuid><4 hex>" for a request."""
    with natspull.connect(nats_server.url, inbox_prefix="_P.xyz") as client:

        async def replies() -> tuple[str, str]:
            nc = client._nc
            seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            async def respond(msg: Any) -> None:
                if not seen.done():
                    seen.set_result(msg.reply)
                await msg.respond(b"")

            sub = await nc.subscribe("echo", cb=respond)
            await nc.request("echo", b"", timeout=5)
            await sub.unsubscribe()
            return nc.new_inbox(), seen.result()

        inbox, reply = client._run(replies(), 10, "inspect nats-py")
        assert inbox.startswith("_P.xyz.") and len(inbox) == client._inbox_bytes()
        assert reply.startswith("_P.xyz.") and len(reply) == client._request_reply_bytes()
