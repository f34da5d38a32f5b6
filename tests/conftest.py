"""Shared fixtures: a real nats-server per test (from the natspull pytest plugin), clients, streams,
and a guard that fails any test leaving a ``natspull-*`` thread alive."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import natspull
from natspull.testing import NatsServer

_ids = itertools.count(1)


def natspull_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("natspull")]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, message: str = "condition") -> None:
    """Poll *predicate* until true, failing the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = set(natspull_threads())
    yield
    # Threads end promptly after close()/stop(); give them a bounded moment to be joined.
    wait_until(lambda: not (set(natspull_threads()) - before), 5.0, "natspull threads to exit")


@pytest.fixture
def client(nats_server: NatsServer) -> Iterator[natspull.Client]:
    with natspull.connect(nats_server.url) as c:
        yield c


@pytest.fixture
def js(client: natspull.Client) -> natspull.JetStream:
    return client.jetstream()


@pytest.fixture
def stream(js: natspull.JetStream) -> str:
    """A fresh file-storage stream on subjects ``<name>.>``."""
    name = f"S{next(_ids)}"
    js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.FILE)
    return name


def fill(js: natspull.JetStream, stream: str, count: int, size: int = 16) -> None:
    js.publish_many((f"{stream}.m", b"%0*d" % (size, i)) for i in range(count))
