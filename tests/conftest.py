"""Shared fixtures: a real nats-server per test (from the natspull pytest plugin), clients, streams,
and a guard that fails any test leaving a ``natspull-*`` thread alive."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import natspull
from natspull.testing import NatsServer

_ids = itertools.count(1)


def natspull_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("natspull")]


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, message: str | Callable[[], str] = "condition"
) -> None:
    """Poll *predicate* until true, failing the test after *timeout* seconds (*message*, or what
    it returns when called then, says what was waited for)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def appended_lines(path: os.PathLike[str] | str) -> list[str]:
    """The complete lines of a file that other processes append to ([] before it exists).

    A read racing an append can see part of it: a last line without its newline is still being
    written and is left for the next read.
    """
    try:
        with open(path) as file:
            text = file.read()
    except FileNotFoundError:
        return []
    return text[: text.rfind("\n") + 1].splitlines()


def connection(server: NatsServer, name: str) -> dict[str, Any] | None:
    """The ``/connz?subs=1`` entry of the client connection named *name*, None once it is gone.

    Strict: keys are read with ``[]`` so a renamed monitoring field fails the test instead of
    reading as a default. (The server omits ``name`` for unnamed connections and
    ``subscriptions_list`` when there are none; ``subscriptions`` is always there.)
    """
    found = [c for c in server.connz(subs=1)["connections"] if c.get("name") == name]
    assert len(found) <= 1, f"{len(found)} connections named {name!r}"
    if not found:
        return None
    conn = found[0]
    assert isinstance(conn["subscriptions"], int), conn
    conn.setdefault("subscriptions_list", [])
    assert len(conn["subscriptions_list"]) == conn["subscriptions"], conn
    return conn


def pull_inboxes(server: NatsServer, name: str) -> list[str]:
    """Subscriptions of connection *name* besides nats-py's one request inbox (``<prefix>.*``)."""
    conn = connection(server, name)
    assert conn is not None, f"no connection named {name!r}"
    subs: list[str] = conn["subscriptions_list"]
    return [s for s in subs if not s.endswith(".*")]


@pytest.fixture(autouse=True)
def terminal_signal_dispositions() -> Iterator[None]:
    """Programs the tests start get the signal dispositions a shell in a terminal gives them.

    An ignored signal stays ignored across fork and exec, and a non-interactive shell starts
    background jobs with SIGINT ignored (as ``nohup`` does SIGHUP): a test run started that way
    (some CI runners) would start every child deaf to the Ctrl-C or hang-up it sends. Only
    dispositions that are ignored are changed, for the test's duration (pytest runs tests on
    the main thread, so this is allowed).
    """
    saved = {}
    for signum, handler in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGHUP, signal.SIG_DFL),
        (signal.SIGTERM, signal.SIG_DFL),
    ):
        if signal.getsignal(signum) == signal.SIG_IGN:
            saved[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


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


@contextlib.contextmanager
def server_stopped(server: NatsServer) -> Iterator[None]:
    """SIGSTOP the server: it reads and answers nothing until the block ends (SIGCONT)."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        # kill() returns before every thread of the server has stopped: wait until they have
        wait_until(lambda: _all_stopped(pid), 10.0, "the server's threads to stop")
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def _all_stopped(pid: int) -> bool:
    tasks = os.listdir(f"/proc/{pid}/task")
    states = []
    for task in tasks:
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/stat") as f:
            states.append(f.read().rpartition(")")[2].split()[0])
    return bool(states) and all(state in "tT" for state in states)
