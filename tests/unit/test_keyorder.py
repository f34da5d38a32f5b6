"""Unit tests of the per-key order of consume(key=...): a simulated server, no threads."""

from __future__ import annotations

import heapq
import random
from collections import defaultdict

import pytest

from natspull._engine._keyorder import RELEASE_GAP, SEND_BACK_PAD, KeyOrder
from natspull._msg import Msg


def msg(seq: int) -> Msg:
    return Msg("s", b"", f"r{seq}")


def test_failed_message_is_waited_for_and_later_ones_are_held() -> None:
    order = KeyOrder(limit=10, grace=5)
    assert order.arrive("a", 1, msg(1), now=0).run
    held = order.arrive("a", 2, msg(2), now=0)
    assert held.held and not held.run
    assert order.arrive("b", 3, msg(3), now=0).run  # another key runs in parallel
    assert order.finish("a", 1, retry_in=1.0, now=0, go_on=True) is None  # waits for 1
    assert order.arrive("a", 4, msg(4), now=0.5).held
    assert order.stats() == (2, 0, 0)
    back = order.arrive("a", 1, msg(1), now=1.0)  # the redelivery runs first
    assert back.run
    nxt = order.finish("a", 1, retry_in=None, now=1.1, go_on=True)
    assert nxt is not None and nxt.reply == "r2"
    nxt = order.finish("a", 2, retry_in=None, now=1.2, go_on=True)
    assert nxt is not None and nxt.reply == "r4"
    assert order.finish("a", 4, retry_in=None, now=1.3, go_on=True) is None
    assert order.finish("b", 3, retry_in=None, now=1.3, go_on=True) is None
    assert order.stats() == (0, 0, 0) and not order._keys  # idle keys are forgotten


def test_full_hold_sends_back_after_the_awaited_message() -> None:
    order = KeyOrder(limit=1, grace=5)
    assert order.arrive("a", 1, msg(1), now=0).run
    assert order.finish("a", 1, retry_in=2.0, now=0, go_on=True) is None
    assert order.arrive("a", 2, msg(2), now=0).held
    back = order.arrive("a", 3, msg(3), now=0.5)
    assert not back.run and not back.held and back.delay == pytest.approx(1.5 + SEND_BACK_PAD)
    assert order.sent_back_times("a", 3) == 1 and order.stats()[:2] == (1, 1)
    # 3 comes back early: held is full, so it goes back again, still after 1
    again = order.arrive("a", 3, msg(3), now=1.0)
    assert again.delay == pytest.approx(1.0 + SEND_BACK_PAD) and order.sent_back_times("a", 3) == 2


def test_newer_delivery_replaces_the_held_one() -> None:
    order = KeyOrder(limit=5, grace=5)
    assert order.arrive("a", 1, msg(1), now=0).run
    first, second = msg(2), msg(2)
    assert order.arrive("a", 2, first, now=0).held
    arrival = order.arrive("a", 2, second, now=1)
    assert arrival.held and arrival.replaced is first and order.stats()[0] == 1
    assert order.finish("a", 1, retry_in=None, now=1, go_on=True) is second


def test_a_redelivery_that_never_comes_is_given_up_on() -> None:
    order = KeyOrder(limit=5, grace=2)
    assert order.arrive("a", 1, msg(1), now=0).run
    assert order.finish("a", 1, retry_in=1.0, now=0, go_on=True) is None
    held = msg(2)
    assert order.arrive("a", 2, held, now=0).held
    assert order.expire(now=2.9, go_on=True) == ([], [])
    given_up, runnable = order.expire(now=3.0, go_on=True)
    assert given_up == [("a", 1)] and runnable == [("a", held)]
    assert order.finish("a", 2, retry_in=None, now=3.1, go_on=True) is None


def test_stop_keeps_held_and_release_all_orders_them_after_the_awaited() -> None:
    order = KeyOrder(limit=5, grace=5)
    assert order.arrive("a", 1, msg(1), now=0).run
    assert order.arrive("a", 2, msg(2), now=0).held
    assert order.arrive("a", 3, msg(3), now=0).held
    assert order.finish("a", 1, retry_in=None, now=0, go_on=False) is None  # stopping: no new call
    assert order.arrive("b", 4, msg(4), now=0).run
    assert order.finish("b", 4, retry_in=3.0, now=0, go_on=True) is None
    assert order.arrive("b", 5, msg(5), now=1).held
    released = order.release_all(now=1)
    delays = {m.reply: d for m, d in released}
    assert delays["r2"] < delays["r3"] < 0.1
    assert delays["r5"] > 2.0 + RELEASE_GAP  # after b's awaited message 4 (due at 3)
    assert order.stats()[0] == 0


@pytest.mark.parametrize("seed", range(30))
def test_simulated_server_keeps_key_order_and_bound(seed: int) -> None:
    """Random arrivals, finishes, failures and redelivery delays: for each key the first
    successful handlings are in stream order, and the hold never exceeds its limit."""
    rng = random.Random(seed)
    total, keys, limit = 300, rng.randint(1, 12), rng.randint(1, 15)
    key_of = {seq: f"k{rng.randrange(keys)}" for seq in range(1, total + 1)}
    order = KeyOrder(limit=limit, grace=1e9)
    now = 0.0
    fresh = list(range(total, 0, -1))  # new deliveries, in stream order (pop from the end)
    redeliveries: list[tuple[float, int]] = []  # (due, seq)
    running: list[tuple[str, int]] = []
    done: set[int] = set()
    first: dict[str, list[int]] = defaultdict(list)
    for _ in range(200_000):
        if len(done) == total:
            break
        now += rng.uniform(0, 0.05)
        assert order.stats()[0] <= limit
        action = rng.random()
        if action < 0.5 and (fresh or (redeliveries and redeliveries[0][0] <= now)):
            if redeliveries and redeliveries[0][0] <= now:
                _, seq = heapq.heappop(redeliveries)
            else:
                seq = fresh.pop()
            arrival = order.arrive(key_of[seq], seq, msg(seq), now)
            if arrival.run:
                assert all(k != key_of[seq] for k, _ in running)
                running.append((key_of[seq], seq))
            elif not arrival.held:
                heapq.heappush(redeliveries, (now + arrival.delay, seq))
        elif running:
            key, seq = running.pop(rng.randrange(len(running)))
            fail = rng.random() < 0.2
            retry_in = rng.uniform(0, 1) if fail else None
            if fail:
                heapq.heappush(redeliveries, (now + retry_in, seq))  # type: ignore[operator]
            elif seq not in done:
                done.add(seq)
                first[key].append(seq)
            nxt = order.finish(key, seq, retry_in, now, go_on=True)
            if nxt is not None:
                running.append((key, int(nxt.reply[1:])))
    assert len(done) == total
    for key, seqs in first.items():
        assert seqs == sorted(seqs), key
    assert order.stats()[0] == 0


def test_bytes_bound_the_hold_too() -> None:
    order = KeyOrder(limit=100, grace=5, limit_bytes=25)
    assert order.arrive("a", 1, Msg("s", b"x" * 10, "r1", size=10), now=0).run
    assert order.arrive("a", 2, Msg("s", b"x" * 10, "r2", size=10), now=0).held
    assert order.arrive("a", 3, Msg("s", b"x" * 10, "r3", size=10), now=0).held
    assert not order.arrive("a", 4, Msg("s", b"x" * 10, "r4", size=10), now=0).held  # 30 > 25: sent back
    nxt = order.finish("a", 1, retry_in=None, now=0, go_on=True)
    assert nxt is not None and order._held_bytes == 10
