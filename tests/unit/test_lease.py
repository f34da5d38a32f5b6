"""LeaseKeeper's walk over the arrivals (the lease from arrival), without a server or a loop."""

from __future__ import annotations

from typing import Any

import pytest

from natspull._engine._lease import LeaseKeeper
from natspull._msg import Msg


class _Loop:
    """Stands in for the LoopThread: records what would be scheduled."""

    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.soon.append(fn)


def keeper(max_lease: float | None = 3600.0, ack_all: bool = False) -> LeaseKeeper:
    # ack_wait 2 s: ticks every 1 s; a buffered message is due from 0.5 s of age
    return LeaseKeeper(_Loop(), 1.0, max_lease, ack_wait=2.0, ack_all=ack_all)  # type: ignore[arg-type]


def msgs(n: int) -> list[Msg]:
    return [Msg("s", b"", f"$JS.ACK.S.C.1.{i}.{i}.0.0") for i in range(1, n + 1)]


def track(k: LeaseKeeper, at: float, burst: list[Msg]) -> None:
    k._arrivals.append((at, burst))
    k._tracked += len(burst)


@pytest.mark.timeout(10)
def test_buffered_messages_are_due_from_a_quarter_of_ack_wait_until_max_lease() -> None:
    k = keeper(max_lease=10.0)
    old, new = msgs(3), msgs(2)
    track(k, 100.0, old)
    track(k, 100.4, new)
    assert k._walk(100.45, set()) == []  # both bursts younger than 0.5 s
    assert k._walk(100.5, set()) == old
    assert k._walk(101.0, set()) == old + new
    assert k._walk(101.0, {old[0]}) == old[1:] + new  # in a handler: add() leases it
    assert k._walk(110.0, set()) == new  # the first burst is past max_lease: let go
    assert k._tracked == 2
    assert k._walk(111.0, set()) == []
    assert not k._arrivals


@pytest.mark.timeout(10)
def test_no_bound_without_max_lease() -> None:
    k = keeper(max_lease=None)
    burst = msgs(1)
    track(k, 0.0, burst)
    assert k._walk(1e6, set()) == burst


@pytest.mark.timeout(10)
def test_handed_out_messages_are_leased_for_ack_wait_then_let_go() -> None:
    k = keeper()
    burst = msgs(4)
    track(k, 100.0, burst)
    burst[0]._out = 100.1  # handed out (fresh: due all the same, for a whole ack_wait from next())
    burst[1]._out = 100.1
    burst[1]._acked = True  # settled: dropped
    burst[2]._out = -1.0  # let go by consume(): dropped
    assert k._walk(100.2, set()) == [burst[0]]  # the buffered one is not due yet
    assert k._walk(102.0, set()) == [burst[0], burst[3]]
    assert k._walk(102.1, set()) == [burst[3]]  # ack_wait after next(): let go
    assert k._tracked == 1


@pytest.mark.timeout(10)
def test_ack_all_settles_what_came_before_an_ack() -> None:
    k = keeper(ack_all=True)
    first, second = msgs(3), msgs(3)
    track(k, 100.0, first)
    track(k, 100.0, second)
    for msg in first + second[:2]:
        msg._out = 100.5
    second[0]._acked = True  # acks the whole first burst too
    assert k._walk(101.0, set()) == second[1:]
    assert k._tracked == 2


@pytest.mark.timeout(10)
def test_a_walk_without_handlers_only_prunes() -> None:
    k = keeper()
    burst = msgs(3)
    track(k, 0.0, burst)
    burst[0]._acked = True
    assert k._walk(5.0, None) == []
    assert k._tracked == 2


@pytest.mark.timeout(10)
def test_settled_large_messages_are_pruned_by_bytes_too() -> None:
    """A fast reader of 64 KiB messages: the arrivals stay bounded in bytes, not only in
    messages (4,096 settled messages of 64 KiB would keep 256 MiB alive until a tick)."""
    k = keeper()
    k._armed = True  # no timer: there is no loop here
    size = 65536
    held: list[Msg] = []
    for i in range(1, 3001):
        msg = Msg("s", b"x" * size, f"$JS.ACK.S.C.1.{i}.{i}.0.0")
        k.arrived([msg])
        if i % 100 == 0:
            held.append(msg)  # still the application's (buffered or not acked yet)
        else:
            msg._acked = True
        live = {id(m) for _, burst in k._arrivals for m in burst}
        assert {id(m) for m in held} <= live  # a message still held is never dropped
        held_bytes = sum(m.size for m in held)
        # settled messages wait for the next walk: at most 1 MiB, or as much as is held
        assert k._tracked_bytes - held_bytes <= max(1 << 20, held_bytes) + 2 * size, (i, k._tracked_bytes)
        assert k._tracked_bytes == sum(m.size for _, burst in k._arrivals for m in burst)
