"""natspull._workers._poison: deaths counted per stream sequence (no server, no process)."""

from __future__ import annotations

from natspull._workers._poison import REMEMBERED, DeathCounts


def test_a_message_is_poison_at_the_nth_death_and_only_once() -> None:
    deaths = DeathCounts(3)
    assert deaths.died([7, 8]) == []
    assert deaths.died([7]) == []
    assert (deaths.deaths(7), deaths.deaths(8)) == (2, 1)
    assert deaths.died([7, 9]) == [7]
    assert deaths.deaths(7) == 3
    assert deaths.died([7]) == []  # terminated: not counted again


def test_none_never_terminates() -> None:
    deaths = DeathCounts(None)
    for _ in range(10):
        assert deaths.died([1]) == []
    assert deaths.deaths(1) == 10


def test_old_sequences_are_forgotten_first() -> None:
    deaths = DeathCounts(2)
    deaths.died([0])
    deaths.died(range(1, REMEMBERED + 1))
    assert deaths.deaths(0) == 0
    assert deaths.deaths(REMEMBERED) == 1
