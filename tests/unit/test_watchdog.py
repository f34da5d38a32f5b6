"""Unit tests of the handler_timeout watchdog: plain threads, no server."""

from __future__ import annotations

import random
import threading
import time

import pytest

from natspull._engine._watchdog import Call, Watchdog
from natspull._msg import Msg


@pytest.mark.timeout(60)
def test_calls_over_the_limit_expire_once_and_calls_under_never() -> None:
    expired: list[Call] = []
    lock = threading.Lock()

    def on_expire(call: Call) -> None:
        with lock:
            expired.append(call)

    limit = 0.05
    dog = Watchdog(limit, on_expire)
    results: list[tuple[str, bool]] = []
    release = threading.Event()

    def worker(i: int) -> None:
        rng = random.Random(i)
        for j in range(20):
            slow = rng.random() < 0.2
            call = dog.start([Msg("s", b"", f"r{i}.{j}")])
            if slow:  # held until the watchdog has seen it (simulated stuck work)
                deadline = time.monotonic() + 5
                while not call.timed_out and time.monotonic() < deadline:
                    release.wait(0.005)
            else:
                time.sleep(rng.uniform(0, limit / 10))  # simulated work, well under the limit
            timed_out = dog.finish(call)
            with lock:
                results.append((call.msgs[0].reply, timed_out))
            if slow:
                assert timed_out
            else:
                assert not timed_out or time.monotonic() >= call.deadline

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    dog.close()
    dog.thread.join(5)
    assert not dog.thread.is_alive()
    timed = sorted(reply for reply, out in results if out)
    assert sorted(c.msgs[0].reply for c in expired) == timed  # once each, no other
    assert dog.stuck == 0 and len(results) == 120


@pytest.mark.timeout(10)
def test_stuck_counts_until_finished_and_close_is_idempotent() -> None:
    seen = threading.Event()
    dog = Watchdog(0.01, lambda call: seen.set())
    call = dog.start([Msg("s", b"", "r")])
    assert seen.wait(5)
    assert dog.stuck == 1
    assert dog.finish(call) and dog.stuck == 0
    dog.close()
    dog.close()
    dog.thread.join(5)
    assert not dog.thread.is_alive()
