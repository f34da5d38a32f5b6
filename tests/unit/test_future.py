"""natspull._future: LeanFuture behaves as a concurrent.futures.Future wherever one is taken.

Each behaviour is checked on the standard library's future (made running, as publish_async's
is) and on LeanFuture side by side, so a difference between them fails here; the race test
completes futures while threads wait on them in every way the standard library offers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from natspull._future import LeanFuture


def running_future() -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    assert future.set_running_or_notify_cancel()
    return future


KINDS = [pytest.param(running_future, id="stdlib"), pytest.param(LeanFuture, id="lean")]
Make = Callable[[], "concurrent.futures.Future[Any]"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", KINDS)
def test_a_running_future_cannot_be_cancelled(make: Make) -> None:
    future = make()
    assert isinstance(future, concurrent.futures.Future)
    assert (future.running(), future.done(), future.cancelled()) == (True, False, False)
    assert future.cancel() is False
    assert (future.running(), future.done(), future.cancelled()) == (True, False, False)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(0.01)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.exception(0.01)
    future.set_result(7)
    assert (future.running(), future.done(), future.cancelled()) == (False, True, False)
    assert future.cancel() is False
    assert future.result(0) == 7
    assert future.exception(0) is None


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", KINDS)
def test_an_exception_is_raised_by_result_and_returned_by_exception(make: Make) -> None:
    future = make()
    error = KeyError("boom")
    future.set_exception(error)
    assert future.done()
    assert future.exception() is error
    with pytest.raises(KeyError) as raised:
        future.result()
    assert raised.value is error


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", KINDS)
def test_a_second_completion_is_an_invalid_state(make: Make) -> None:
    future = make()
    future.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(2)
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_exception(ValueError())
    assert future.result() == 1


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", KINDS)
def test_callbacks_run_once_at_completion_or_at_once_when_done(make: Make) -> None:
    future = make()
    calls: list[tuple[str, object]] = []
    future.add_done_callback(lambda f: calls.append(("before", f.result())))
    future.add_done_callback(lambda f: 1 / 0)  # logged by the base class, the others still run
    future.add_done_callback(lambda f: calls.append(("before 2", f.result())))
    assert calls == []
    future.set_result("x")
    assert calls == [("before", "x"), ("before 2", "x")]
    future.add_done_callback(lambda f: calls.append(("after", f.result())))
    assert calls == [("before", "x"), ("before 2", "x"), ("after", "x")]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", KINDS)
def test_result_blocks_until_another_thread_completes(make: Make) -> None:
    future = make()
    got: list[object] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        got.append(future.result(10))

    helper = threading.Thread(target=wait)
    helper.start()
    try:
        assert started.wait(5)
        helper.join(0.1)
        assert helper.is_alive() and got == []  # it really blocks
        future.set_result("done")
    finally:
        helper.join(5)
    assert not helper.is_alive()
    assert got == ["done"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", KINDS)
def test_wait_and_as_completed_take_it(make: Make) -> None:
    ok, failing, pending = make(), make(), make()
    ok.set_result(1)
    done, not_done = concurrent.futures.wait([ok, pending], timeout=0.01)
    assert (done, not_done) == ({ok}, {pending})
    threading.Timer(0.05, failing.set_exception, [ValueError("no")]).start()
    done, not_done = concurrent.futures.wait(
        [failing, pending], timeout=5, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    assert (done, not_done) == ({failing}, {pending})
    threading.Timer(0.05, pending.set_result, [3]).start()
    assert {f.result() for f in concurrent.futures.as_completed([pending, ok], timeout=5)} == {1, 3}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", KINDS)
def test_asyncio_wrap_future_takes_it(make: Make) -> None:
    future = make()

    async def main() -> object:
        threading.Timer(0.02, future.set_result, ["from a thread"]).start()
        return await asyncio.wait_for(asyncio.wrap_future(future), 5)

    assert asyncio.run(main()) == "from a thread"


@pytest.mark.timeout(10)
def test_a_lean_future_makes_its_condition_only_when_waited_on() -> None:
    done = LeanFuture[int]()
    done.set_result(1)
    assert (done.result(), done.exception(), done.done()) == (1, None, True)
    assert done._made is None  # nothing waited: one object
    waited = LeanFuture[int]()
    with pytest.raises(concurrent.futures.TimeoutError):
        waited.result(0)
    assert waited._made is not None
    assert "running" in repr(LeanFuture())


WAYS = ("result", "exception", "callback", "wait", "as_completed")


def _wait_one_way(way: str, future: concurrent.futures.Future[Any], seen: list[object]) -> None:
    """Wait on *future* in one of the standard library's ways; record what was seen."""
    if way == "result":
        try:
            seen.append(future.result(5))
        except ValueError as exc:
            seen.append(exc)
    elif way == "exception":
        seen.append(future.exception(5) or future.result(0))
    elif way == "callback":
        called = threading.Event()

        def record(f: concurrent.futures.Future[Any]) -> None:
            seen.append(f.exception() or f.result())
            called.set()

        future.add_done_callback(record)
        assert called.wait(5)
    elif way == "wait":
        done, _ = concurrent.futures.wait([future], timeout=5)
        assert done == {future}
        seen.append(future.exception() or future.result())
    else:
        (f,) = concurrent.futures.as_completed([future], timeout=5)
        seen.append(f.exception() or f.result())


def _waiter(delay: float, way: str, future: concurrent.futures.Future[Any], seen: list[object]) -> None:
    time.sleep(delay)  # random timing, not synchronisation
    _wait_one_way(way, future, seen)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", KINDS)
def test_completion_racing_waiters_wakes_every_waiter_once(make: Make) -> None:
    """Randomised timing between a completing thread and waiters of every kind: each sees the
    outcome exactly once, within its timeout; no thread is left."""
    rng = random.Random(20261206)
    for _ in range(300):
        future = make()
        outcome: object = ValueError("failed") if rng.random() < 0.3 else rng.randrange(10**6)
        ways = [rng.choice(WAYS) for _ in range(rng.randint(1, 4))]
        seen: list[list[object]] = [[] for _ in ways]
        delays = [rng.random() * 3e-4 for _ in range(len(ways) + 1)]

        threads = [
            threading.Thread(target=_waiter, args=(delays[i], ways[i], future, seen[i]))
            for i in range(len(ways))
        ]
        for t in threads:
            t.start()
        time.sleep(delays[-1])  # random timing, not synchronisation
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        assert seen == [[outcome]] * len(ways), ways
