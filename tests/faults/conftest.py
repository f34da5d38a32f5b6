"""Fixtures for the fault tests: the chaos proxy, and a guard against any thread left behind."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
from conftest import wait_until

import natspull
from natspull.testing import NatsServer

from ._chaos import ChaosProxy


@pytest.fixture(autouse=True)
def no_thread_of_any_kind_left() -> Iterator[None]:
    """Stricter than the natspull-* check: the proxy and the test's own helper threads must end too."""
    before = set(threading.enumerate())
    yield
    # Collect what the test left in reference cycles now, under this test's warning filters, so
    # that an unclosed transport is reported here rather than in whichever test runs next.
    gc.collect()
    wait_until(lambda: not (set(threading.enumerate()) - before), 5.0, "every test thread to exit")


@pytest.fixture
def chaos_proxy(nats_server: NatsServer) -> Iterator[ChaosProxy]:
    """A :class:`ChaosProxy` in front of ``nats_server``, forwarding; closed and joined afterwards."""
    with ChaosProxy(nats_server.port) as proxy:
        yield proxy


@pytest.fixture
def admin(nats_server: NatsServer) -> Iterator[natspull.Client]:
    """A client straight to ``nats_server``, outside any proxy fault: publishes and inspects."""
    with natspull.connect(nats_server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1) as client:
        yield client
