"""natspull._publish_window: publish_async's max_pending bound (blocking tests the CPython way)."""

from __future__ import annotations

import threading

import pytest

import natspull
from natspull._publish_window import PublishWindow


@pytest.mark.timeout(10)
def test_a_full_window_times_out() -> None:
    window = PublishWindow(2)
    window.acquire(1)
    window.acquire(1)
    assert window.in_flight == 2
    with pytest.raises(natspull.TimeoutError, match="2 publishes"):
        window.acquire(0.05)
    with pytest.raises(natspull.TimeoutError, match="2 publishes"):
        window.wait_idle(0.05)


@pytest.mark.timeout(10)
def test_acquire_blocks_until_a_release_from_another_thread() -> None:
    window = PublishWindow(1)
    window.acquire(1)
    acquired = threading.Event()

    def take() -> None:
        window.acquire(10)
        acquired.set()

    helper = threading.Thread(target=take)
    helper.start()
    try:
        assert not acquired.wait(0.1)  # it really blocks
        window.release()
        assert acquired.wait(5)
    finally:
        helper.join(5)
    assert not helper.is_alive()
    assert window.in_flight == 1


@pytest.mark.timeout(10)
def test_wait_idle_returns_once_every_slot_is_back() -> None:
    window = PublishWindow(4)
    for _ in range(3):
        window.acquire(1)
    idle = threading.Event()

    def wait() -> None:
        window.wait_idle(10)
        idle.set()

    helper = threading.Thread(target=wait)
    helper.start()
    try:
        window.release()
        window.release()
        assert not idle.wait(0.1)  # one still in flight
        window.release()
        assert idle.wait(5)
    finally:
        helper.join(5)
    assert not helper.is_alive()
    window.wait_idle(0)  # idle: returns at once


@pytest.mark.timeout(10)
def test_a_full_window_reopens_once_a_quarter_is_back_to_every_waiter() -> None:
    window = PublishWindow(8)
    assert window.reopen_at == 6
    for _ in range(8):
        window.acquire(1)
    took = threading.Semaphore(0)

    def take() -> None:
        window.acquire(10)
        took.release()

    helpers = [threading.Thread(target=take) for _ in range(2)]
    for helper in helpers:
        helper.start()
    try:
        window.release()  # 7 taken: still closed, though a slot is free
        assert not took.acquire(timeout=0.1)
        window.release()  # 6 taken: open again, both waiters take a slot
        assert took.acquire(timeout=5) and took.acquire(timeout=5)
    finally:
        for helper in helpers:
            helper.join(5)
    assert not any(helper.is_alive() for helper in helpers)
    assert window.in_flight == 8
    with pytest.raises(natspull.TimeoutError, match="8 publishes"):
        window.acquire(0.05)  # full again
