"""natspull.Backoff (natspull/_retry.py): the delays consume() NAKs failed messages with. No server."""

from __future__ import annotations

import dataclasses
import time

import pytest

import natspull
from natspull._engine._retry import DEFAULT_RETRY


def test_delays_grow_by_the_multiplier_up_to_the_maximum() -> None:
    backoff = natspull.Backoff(initial=0.5, maximum=5, multiplier=3, jitter=0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 5.0, 5.0]


def test_a_multiplier_of_one_is_a_constant_delay() -> None:
    backoff = natspull.Backoff(initial=2, maximum=2, multiplier=1, jitter=0)
    assert {backoff.delay(n) for n in (1, 2, 10, 10**6)} == {2.0}


@pytest.mark.timeout(5)
def test_a_huge_delivery_count_gives_the_maximum_at_once() -> None:
    backoff = natspull.Backoff(initial=1, maximum=60, multiplier=1000, jitter=0)
    started = time.monotonic()
    assert backoff.delay(10**6) == 60.0  # 1000.0 ** 999999 overflows a float
    assert backoff.delay(2**62) == 60.0
    assert time.monotonic() - started < 0.1  # not an exact int power with millions of digits


def test_jitter_stays_within_its_fraction_and_varies() -> None:
    backoff = natspull.Backoff(initial=10, maximum=10, multiplier=2, jitter=0.25)
    delays = [backoff.delay(1) for _ in range(2000)]
    assert min(delays) >= 7.5
    assert max(delays) <= 12.5
    assert len(set(delays)) > 1000
    # both sides of the base delay are used
    assert min(delays) < 9 and max(delays) > 11


def test_the_default_policy_is_documented_one() -> None:
    assert natspull.Backoff() == DEFAULT_RETRY
    assert natspull.Backoff(initial=1, maximum=60, multiplier=2, jitter=0.2) == DEFAULT_RETRY


def test_backoff_is_frozen_and_hashable() -> None:
    backoff = natspull.Backoff(initial=1, maximum=2, multiplier=2, jitter=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        backoff.initial = 5  # type: ignore[misc]
    assert hash(backoff) == hash(natspull.Backoff(initial=1, maximum=2, multiplier=2, jitter=0))


def test_zero_delay_is_allowed() -> None:
    assert natspull.Backoff(initial=0, maximum=0, jitter=0.5).delay(3) == 0.0
