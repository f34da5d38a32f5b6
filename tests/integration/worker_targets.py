"""Handlers for the worker processes of tests/integration/test_workers_runner.py (importable by
spawned children).

Each appends one line per event to the ledger file named by $NATSPULL_TEST_LEDGER with a single
O_APPEND write (atomic for lines this short, whichever process writes):

    load <pid> <process name>     at import (the supervisor imports the target too: MainProcess)
    start <pid> <stream seq>      a handler started (``slow`` only)
    ack <pid> <stream seq>        a handler acked the message (after the ack was sent)
    fail <pid> <stream seq> <num_delivered> <time.monotonic()>   ``fail`` raised
    init <pid>                    an init function ran (``init_record``, ``init_fails``)

    poison <pid> <stream seq>     ``poison`` is about to kill its process
    stuck <pid> <stream seq>      ``stuck`` is about to block for good
    seen <pid> <stream seq>       ``noack`` saw a message (and left it unsettled)
    batch <pid> <size>            ``batch`` got a list of that many messages
    keyed <pid> <subject> <seq>   ``keyed`` handled a message (then acked it)

``slow`` blocks until the file $NATSPULL_TEST_RELEASE exists (at most 60 s), the "slow operation"
a signal arrives during. With $NATSPULL_TEST_HOLD set, a worker process (not the supervisor)
waits at import until that file exists (at most 60 s): a process held in its start-up.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import natspull

LEDGER = os.environ.get("NATSPULL_TEST_LEDGER", "")
RELEASE = os.environ.get("NATSPULL_TEST_RELEASE", "")
SPIN = float(os.environ.get("NATSPULL_TEST_SPIN", "0.0002"))


def _write(line: str) -> None:
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


if LEDGER:
    _write(f"load {os.getpid()} {multiprocessing.current_process().name}")

HOLD = os.environ.get("NATSPULL_TEST_HOLD", "")
if HOLD and multiprocessing.current_process().name != "MainProcess":
    _held_until = time.monotonic() + 60.0
    while not os.path.exists(HOLD) and time.monotonic() < _held_until:
        time.sleep(0.01)


def record(msg: natspull.Msg) -> None:
    """Write ``acking <pid> <seq>``, ack, then write ``ack <pid> <seq>``.

    A process killed between its ack and the ``ack`` line leaves the ``acking`` line: tests that
    kill processes judge "handled at least once" by it (with nothing unacked on the server)."""
    seq = msg.metadata.sequence.stream
    _write(f"acking {os.getpid()} {seq}")
    msg.ack()
    _write(f"ack {os.getpid()} {seq}")


def paced(msg: natspull.Msg) -> None:
    """Simulated I/O of 5 ms, then :func:`record`: a run long enough to kill a child during it."""
    time.sleep(0.005)
    record(msg)


def slow(msg: natspull.Msg) -> None:
    """Write ``start``, wait for the release file, ack, write ``ack``."""
    _write(f"start {os.getpid()} {msg.metadata.sequence.stream}")
    deadline = time.monotonic() + 60.0
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.01)
    record(msg)


def fail(msg: natspull.Msg) -> None:
    """Write ``fail ...`` and raise: every delivery fails (consume() NAKs or terminates it)."""
    meta = msg.metadata
    _write(f"fail {os.getpid()} {meta.sequence.stream} {meta.num_delivered} {time.monotonic()}")
    raise RuntimeError("this handler always fails")


def crash(msg: natspull.Msg) -> None:
    """Kill the whole worker process (not an exception: a crash)."""
    os._exit(70)


def poison(msg: natspull.Msg) -> None:
    """A message whose data is ``poison`` kills the process (SIGKILL, every delivery); the
    others go to :func:`record`."""
    if msg.data == b"poison":
        _write(f"poison {os.getpid()} {msg.metadata.sequence.stream}")
        os.kill(os.getpid(), signal.SIGKILL)
    record(msg)


def stuck(msg: natspull.Msg) -> None:
    """A message whose data is ``stuck`` blocks its handler for good (well, 120 s) at its first
    delivery; the others, and its redelivery, go to :func:`record`."""
    if msg.data == b"stuck" and msg.metadata.num_delivered == 1:
        _write(f"stuck {os.getpid()} {msg.metadata.sequence.stream}")
        time.sleep(120.0)
    record(msg)


def spin(msg: natspull.Msg) -> None:
    """About SPIN seconds of pure-Python CPU work, then ack (the benchmark's handler)."""
    end = time.perf_counter() + SPIN
    total = 0
    while time.perf_counter() < end:
        total += 1
    msg.ack()


not_callable = 42


def init_record(client: natspull.Client) -> None:
    """An init function: check it got the process's connected client, write ``init <pid>``."""
    assert client is natspull.worker_client() and client.is_connected
    _write(f"init {os.getpid()}")


def init_fails(client: natspull.Client) -> None:
    """An init function that refuses to start the process; writes ``init <pid>`` first."""
    _write(f"init {os.getpid()}")
    raise RuntimeError("the database is not there")


def publish_result(msg: natspull.Msg) -> None:
    """Publish ``result.<seq>`` on the process's own client (natspull.worker_client()), ack."""
    natspull.worker_client().publish(f"result.{msg.metadata.sequence.stream}", msg.data)
    record(msg)


def noack(msg: natspull.Msg) -> None:
    """Write ``seen <pid> <seq>`` and return without settling (``--auto-ack`` acks it)."""
    _write(f"seen {os.getpid()} {msg.metadata.sequence.stream}")


def batch(msgs: list[natspull.Msg]) -> None:
    """``--batch``: write ``batch <pid> <size>``, then :func:`record` each message."""
    _write(f"batch {os.getpid()} {len(msgs)}")
    for msg in msgs:
        record(msg)


def keyed(msg: natspull.Msg) -> None:
    """``--key``: 0-2 ms of simulated I/O (shuffles the threads), write ``keyed <pid> <subject>
    <seq>``, ack."""
    time.sleep(random.random() * 0.002)
    _write(f"keyed {os.getpid()} {msg.subject} {msg.metadata.sequence.stream}")
    msg.ack()
