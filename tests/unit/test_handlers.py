"""natspull._workers._handlers: the shared handler table, the suspect list and the gate, in one
process (the table is the same memory in a spawned child; tests/integration/test_fleet.py)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from natspull._workers._handlers import REPLY_BYTES, Gate, HandlerTable, SuspectList

CONTEXT = multiprocessing.get_context("spawn")


def test_a_thread_shows_its_message_while_it_runs() -> None:
    table = HandlerTable(CONTEXT, 2)
    assert table.snapshot() == []
    before = time.monotonic()
    with table.running(5, "$JS.ACK.S.C.1.5.5.0.0"):
        (running,) = table.snapshot()
        assert (running.seq, running.reply) == (5, "$JS.ACK.S.C.1.5.5.0.0")
        assert before <= running.started <= time.monotonic()
    assert table.snapshot() == []


def test_too_long_an_ack_subject_is_not_kept_and_extra_threads_are_not_recorded() -> None:
    table = HandlerTable(CONTEXT, 1)
    with table.running(1, "x" * REPLY_BYTES):
        assert [r.reply for r in table.snapshot()] == [""]
        other: list[object] = []
        thread = threading.Thread(target=lambda: other.append(table.snapshot()), name="test-reader")
        writer = threading.Thread(target=lambda: table.running(2, "y").__enter__(), name="test-writer")
        writer.start()
        writer.join(10)
        thread.start()
        thread.join(10)
        assert [r.seq for r in other[0]] == [1]  # the second thread found no row


def test_the_suspect_list_keeps_the_last_entries() -> None:
    suspects = SuspectList(CONTEXT)
    assert not suspects.contains(3)
    suspects.add(3)
    assert suspects.contains(3)
    for seq in range(100, 100 + 256):
        suspects.add(seq)
    assert not suspects.contains(3) and suspects.contains(100) and suspects.contains(355)


@pytest.mark.timeout(20)
def test_a_suspect_runs_alone() -> None:
    gate = Gate()
    release = threading.Event()
    ordinary_started = threading.Event()
    order: list[str] = []

    def ordinary() -> None:
        order.append("ordinary")
        ordinary_started.set()
        assert release.wait(10)

    def suspect() -> None:
        order.append("suspect")

    first = threading.Thread(target=gate.run, args=(False, ordinary), name="test-ordinary")
    first.start()
    assert ordinary_started.wait(10)
    second = threading.Thread(target=gate.run, args=(True, suspect), name="test-suspect")
    second.start()
    third = threading.Thread(target=gate.run, args=(False, lambda: order.append("later")), name="test-later")
    third.start()
    second.join(0.2)
    assert second.is_alive()  # blocked: an ordinary handler runs
    release.set()
    for thread in (first, second, third):
        thread.join(10)
        assert not thread.is_alive()
    assert order[0] == "ordinary" and set(order) == {"ordinary", "suspect", "later"}
