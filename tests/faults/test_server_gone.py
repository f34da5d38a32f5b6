"""The server goes away for good: every blocked call ends with ConnectionClosedError, in time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import wait_until

import natspull
from natspull.testing import NatsServer

ATTEMPTS = 3
WAIT = 0.1
CONNECT_TIMEOUT = 0.5
# Refused connections fail at once; the budget also covers a connect that hangs, plus slack.
BUDGET = (ATTEMPTS + 1) * (WAIT + CONNECT_TIMEOUT) + 2.0


class Blocked:
    """A thread blocked in one call; keeps what the call returned or raised, and when."""

    def __init__(self, name: str, call: Callable[[], Any]) -> None:
        self.name = name
        self.outcome: Any = None
        self.ended = 0.0
        self._call = call
        self.thread = threading.Thread(target=self._run, name=f"fault-{name}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.outcome = self._call()
        except BaseException as exc:
            self.outcome = exc
        self.ended = time.monotonic()


@pytest.mark.parametrize(
    "how",
    [
        "crash",
        "shutdown",
    ],
)
def test_every_blocked_call_ends_when_the_server_is_gone(nats_server: NatsServer, how: str) -> None:
    """The server crashes (SIGKILL) or shuts down (SIGTERM) and never comes back."""
    client = natspull.connect(
        nats_server.url,
        max_reconnect_attempts=ATTEMPTS,
        reconnect_time_wait=WAIT,
        connect_timeout=CONNECT_TIMEOUT,
    )
    try:
        js = client.jetstream()
        js.add_stream(name="G", subjects=["G.>"])
        for name in ("it", "co", "fe"):
            js.add_consumer("G", durable_name=name)
        msgs = js.consumer("G", "it").messages(expires=30)
        ctx = js.consumer("G", "co").consume(lambda msg: msg.ack(), workers=2, expires=30)
        fetcher = js.consumer("G", "fe")

        blocked = [
            Blocked("next", lambda: msgs.next(timeout=60)),
            Blocked("wait", lambda: ctx.wait(timeout=60)),
            Blocked("fetch", lambda: fetcher.fetch(10, max_wait=60)),
        ]
        # Prove each call is really blocked before the server goes.
        wait_until(lambda: msgs.stats().waiters == 1, 5, "next() to block")
        wait_until(lambda: ctx.stats().waiters == 2, 5, "the consume workers to block")
        wait_until(
            lambda: (fetcher.info().num_waiting or 0) >= 1, 5, "the fetch's pull to wait on the server"
        )
        assert all(b.thread.is_alive() for b in blocked)

        gone = time.monotonic()
        if how == "crash":
            nats_server.kill()
        else:
            nats_server.stop()
        for b in blocked:
            b.thread.join(BUDGET + 5)
            assert not b.thread.is_alive(), f"{b.name}() still blocked"
        wait_until(lambda: client.is_closed, BUDGET, "the client to give up")
    finally:
        t0 = time.monotonic()
        client.close()
        closed_in = time.monotonic() - t0

    for b in blocked:
        assert b.ended - gone < BUDGET, f"{b.name}() ended {b.ended - gone:.2f} s after the server went"
    assert closed_in < 2.0
    # Later calls fail at once, with the same error.
    for call in (
        lambda: msgs.next(timeout=1),
        lambda: fetcher.fetch(1, max_wait=1),
        lambda: js.stream_info("G"),
    ):
        t0 = time.monotonic()
        try:
            call()
        except natspull.ConnectionClosedError:
            pass
        else:
            raise AssertionError("a call on a closed client succeeded")
        assert time.monotonic() - t0 < 0.5
    print(f"ended after {max(b.ended for b in blocked) - gone:.2f} s (budget {BUDGET:.1f} s)")
    for b in blocked:  # fetch last: with a graceful shutdown it is the one that goes wrong
        assert isinstance(b.outcome, natspull.ConnectionClosedError), f"{b.name}(): {b.outcome!r}"


def test_close_while_reconnecting_ends_blocked_calls(nats_server: NatsServer) -> None:
    """Unlimited reconnects: the application gives up itself; close() ends every blocked call."""
    client = natspull.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=WAIT)
    try:
        js = client.jetstream()
        js.add_stream(name="GR", subjects=["GR.>"])
        for name in ("it", "fe"):
            js.add_consumer("GR", durable_name=name)
        msgs = js.consumer("GR", "it").messages(expires=30)
        fetcher = js.consumer("GR", "fe")
        blocked = [
            Blocked("next", lambda: msgs.next(timeout=60)),
            Blocked("fetch", lambda: fetcher.fetch(10, max_wait=60)),
        ]
        wait_until(lambda: msgs.stats().waiters == 1, 5, "next() to block")
        wait_until(
            lambda: (fetcher.info().num_waiting or 0) >= 1, 5, "the fetch's pull to wait on the server"
        )
        nats_server.kill()
        wait_until(lambda: not client.is_connected, 5, "the client to notice")
        assert all(b.thread.is_alive() for b in blocked)  # reconnecting: still waiting
    finally:
        t0 = time.monotonic()
        client.close()
        closed = time.monotonic()
    assert closed - t0 < 2.0
    for b in blocked:
        b.thread.join(5)
        assert not b.thread.is_alive(), f"{b.name}() still blocked after close()"
        assert isinstance(b.outcome, natspull.ConnectionClosedError), f"{b.name}(): {b.outcome!r}"
        assert b.ended - t0 < 2.0
