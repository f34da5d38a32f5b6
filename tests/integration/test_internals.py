"""The private parts of nats-py that natspull relies on (natspull/_wire.py, its door) are still
there, and natspull still works when they are not (portable mode).

A nats-py upgrade that moves one of them fails here, by name, before it fails elsewhere.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
import time
from typing import Any

import pytest
from conftest import fill, wait_until
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

import natspull
from natspull._server_features import ServerVersion
from natspull._transport import _wire
from natspull._transport._parser import FastParser
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
    assert sorted(_wire.REQUIRED_CLIENT_COROUTINES) == sorted(
        ["_send_command", "_flush_pending", "_send_unsubscribe", "_process_msg"]
    )


def test_the_door_finds_every_internal_it_uses() -> None:
    async def check() -> str | None:
        return _wire.check_internals()

    assert asyncio.run(check()) is None


FAST_PATH_ONLY = pytest.mark.skipif(
    os.environ.get(_wire.PORTABLE_ENV) == "1",
    reason="the fast path's internals; NATSPULL_PORTABLE=1 runs nats-py's public API only",
)


@FAST_PATH_ONLY
def test_connected_client_and_subscription_state(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url) as client:

        async def inspect_nc() -> None:
            wire = client._conn.wire
            nc = wire.nc
            assert not wire.portable
            assert isinstance(nc._ps, FastParser) and nc._ps.routes is wire.routes
            assert isinstance(nc._pending, list)
            assert isinstance(nc._server_info, dict) and nc._server_info["max_payload"] > 0
            assert nc.stats["in_msgs"] >= 0 and nc.stats["in_bytes"] >= 0
            transport = nc._transport
            assert isinstance(transport, TcpTransport) and callable(transport.write)
            assert transport._io_writer.transport.get_write_buffer_size() >= 0
            assert isinstance(nc._flusher_task, asyncio.Task) and not nc._flusher_task.done()
            sub = await nc.subscribe("x")
            assert isinstance(sub, Subscription)
            assert isinstance(sub._id, int) and nc._subs[sub._id] is sub
            assert isinstance(sub._pending_queue, asyncio.Queue)
            await sub.unsubscribe()

        client._conn.run(inspect_nc(), 5, "inspect nats-py")


def _exercise(server: NatsServer, client: natspull.Client) -> None:
    """Publish, fetch, messages, consume and every ack kind, with exact counts."""
    js = client.jetstream()
    js.add_stream(name="P", subjects=["P.>"])
    consumer = js.add_consumer("P", durable_name="c", ack_wait=30)
    fill(js, "P", 30)
    client.publish("P.core", b"core")  # a core publish, stored by the stream
    client.flush(timeout=5)
    fetched = consumer.fetch(10, max_wait=5)
    assert len(fetched) == 10
    for msg in fetched[:8]:
        msg.ack()
    fetched[8].term()
    fetched[9].ack_sync(timeout=5)
    seen: list[bytes] = []
    with consumer.messages(max_messages=5) as msgs:
        for _ in range(10):
            msg = msgs.next(timeout=5)
            msg.in_progress()
            msg.ack()
            seen.append(msg.data)
    lock = threading.Lock()
    handled: list[bytes] = []

    def handler(msg: natspull.Msg) -> None:
        with lock:
            handled.append(msg.data)
        msg.ack()

    ctx = consumer.consume(handler, workers=2)
    wait_until(lambda: len(handled) >= 11, message="consume to handle the rest")
    ctx.drain()
    assert ctx.wait(timeout=10)
    client.flush(timeout=5)
    wait_until(lambda: consumer.info().num_ack_pending == 0, message="all acks")
    info = consumer.info()
    assert len(seen) == 10 and len(handled) == 11
    assert info.delivered.stream_seq == 31 and info.ack_floor.stream_seq == 31
    assert info.num_pending == 0


def test_portable_mode_when_the_internals_check_fails(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """natspull asks for an internal this nats-py does not have: it runs on the public API only."""
    monkeypatch.delenv(_wire.PORTABLE_ENV, raising=False)
    monkeypatch.setattr(
        _wire, "REQUIRED_CLIENT_COROUTINES", [*_wire.REQUIRED_CLIENT_COROUTINES, "_natspull_missing"]
    )
    with caplog.at_level(logging.INFO, logger="natspull"):
        client = natspull.connect(nats_server.url)
    with client:
        wire = client._conn.wire
        assert wire.portable
        assert type(wire.nc._ps) is Parser  # nats-py's own parser, untouched
        assert wire.routes == {}
        lines = [r.getMessage() for r in caplog.records if "public API only" in r.getMessage()]
        assert lines == [
            "natspull: running on nats-py's public API only (slower): "
            "the installed nats-py lacks Client._natspull_missing()"
        ]
        _exercise(nats_server, client)
        assert client.server_info["max_payload"] == client.max_payload
        # The version from nats-py's public ServerVersion (whose str() is "<nats server v...>"):
        # read wrongly, every feature check took the server for the oldest supported release.
        version = nats_server.varz()["version"]
        assert client.server_info["version"] == version
        assert client.jetstream()._admin.server().version == ServerVersion.parse(version)


def test_portable_mode_on_request(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(_wire.PORTABLE_ENV, "1")
    with caplog.at_level(logging.INFO, logger="natspull"), natspull.connect(nats_server.url) as client:
        assert client._conn.wire.portable
        assert [r.getMessage() for r in caplog.records if "public API only" in r.getMessage()] == [
            "natspull: running on nats-py's public API only (slower): NATSPULL_PORTABLE=1"
        ]
        _exercise(nats_server, client)


@FAST_PATH_ONLY
@pytest.mark.skipif(os.name != "posix", reason="SIGSTOP")
def test_direct_writes_stop_at_the_high_water_mark(nats_server: NatsServer) -> None:
    """A server that stops reading: the direct path hands what does not fit below the mark to
    nats-py's flusher, which waits for the socket, instead of growing the transport's buffer
    by everything the application acks or publishes. Nothing is dropped."""
    payload = b"x" * 60_000
    count = 1000  # 60 MB: far more than the kernel's socket buffers
    with natspull.connect(nats_server.url) as client:
        conn = client._conn
        client.flush(timeout=5)
        before = nats_server.varz()["in_msgs"]

        async def buffered() -> int:
            return int(conn.wire.nc._transport._io_writer.transport.get_write_buffer_size())

        pid = nats_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(count):
                conn.publish_nowait("bulk", payload)
            sizes = [-1]

            def settled() -> bool:
                sizes.append(conn.run(buffered(), 5, "buffered"))
                time.sleep(0.02)  # the polling rhythm: a stable size is one seen 3 times 20 ms apart
                # (stable above or below the mark: nats-py's flusher may have written a small
                # buffer before it began to wait for the socket - CI once saw 206,867 bytes)
                return len(set(sizes[-3:])) == 1 and sizes[-1] > 0

            wait_until(settled, 30, lambda: f"the socket to stop draining (last sizes {sizes[-5:]})")
            # The mark, one entry past it, and what nats-py's flusher writes before it waits
            # for the socket (its pending buffer is bounded: 2 MiB by default).
            assert sizes[-1] < _wire.WRITE_HIGH_WATER + len(payload) + 4 * 1024 * 1024, sizes[-1]
            assert len(conn.outbox._entries) > 0  # the rest waits in the outbox, none dropped
        finally:
            os.kill(pid, signal.SIGCONT)
        client.flush(timeout=60)
        wait_until(lambda: nats_server.varz()["in_msgs"] - before == count, 30, "every publish")


def test_reply_subject_lengths(nats_server: NatsServer) -> None:
    """Connection.check_line counts nats-py's reply subjects: "<inbox_prefix>.<nuid>" from
    new_inbox(), "<inbox_prefix>.<nuid>.<nuid><4 hex>" for a request."""
    with natspull.connect(nats_server.url, inbox_prefix="_P.xyz") as client:

        async def replies() -> tuple[str, str]:
            nc = client._conn.wire.nc
            seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            async def respond(msg: Any) -> None:
                if not seen.done():
                    seen.set_result(msg.reply)
                await msg.respond(b"")

            sub = await nc.subscribe("echo", cb=respond)
            await nc.request("echo", b"", timeout=5)
            await sub.unsubscribe()
            return nc.new_inbox(), seen.result()

        inbox, reply = client._conn.run(replies(), 10, "inspect nats-py")
        assert inbox.startswith("_P.xyz.") and len(inbox) == client._conn.inbox_bytes()
        assert reply.startswith("_P.xyz.") and len(reply) == client._conn.request_reply_bytes()
