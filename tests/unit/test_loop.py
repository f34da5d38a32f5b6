"""LoopThread start-up: the caller learns at once, and within a bound, whether the loop runs."""

from __future__ import annotations

import threading

import pytest

from natspull._transport._loop import LoopThread


def test_the_loop_runs_when_the_constructor_returns() -> None:
    loop_thread = LoopThread()
    try:
        assert loop_thread.loop.is_running()
        assert loop_thread.run(_answer(), 5, "answer") == 42
    finally:
        loop_thread.stop(5)
    assert not any(t.name.startswith("natspull-loop") and t.is_alive() for t in threading.enumerate())


async def _answer() -> int:
    return 42


class _BrokenStart(LoopThread):
    def _prepare(self) -> None:
        raise OSError("no signal mask for this thread")


def test_a_start_up_error_is_raised_in_the_caller_not_a_hang() -> None:
    """Regression: the ready future was resolved by a callback on a loop that never ran."""
    with pytest.raises(OSError, match="no signal mask"):
        _BrokenStart(start_timeout=5)
