"""The connection's state table (natspull/_transport/_state.py). No server."""

from __future__ import annotations

import random
import threading

import pytest

from natspull._transport._state import ENDED, EVENTS, ConnState, StateCell

S = ConnState


def _walk(*events: str) -> tuple[ConnState, list[bool]]:
    cell = StateCell()
    moved = [cell.on(event) for event in events]
    return cell.state, moved


def test_a_connection_lives_and_closes() -> None:
    state, moved = _walk("connected", "disconnected", "reconnected", "close", "closed")
    assert state is S.CLOSED and moved == [True] * 5


@pytest.mark.parametrize(
    ("events", "state", "moved"),
    [
        (["connected", "close", "disconnected"], S.CLOSING, [True, True, False]),  # nats-py on close
        (["connected", "close", "disconnected", "reconnected"], S.CLOSING, [True, True, False, False]),
        (["connected", "disconnected", "disconnected"], S.RECONNECTING, [True, True, False]),
        (["connected", "closed", "close"], S.CLOSED, [True, True, False]),  # reconnects ran out
        (["closed"], S.CLOSED, [True]),  # the connect failed
        (["connected", "reconnected"], S.CONNECTED, [True, False]),
        (["connected", "forked", "closed", "close"], S.FORKED, [True, True, False, False]),
    ],
)
def test_events_without_a_row_change_nothing(events: list[str], state: ConnState, moved: list[bool]) -> None:
    assert _walk(*events) == (state, moved)


def test_every_state_forks_and_forked_is_final() -> None:
    for start in ConnState:
        cell = StateCell()
        cell.state = start
        cell.after_fork_in_child()
        assert cell.state is S.FORKED
        assert not any(cell.on(event) for event in EVENTS)


def test_ended_states_are_those_no_event_leaves_but_closed_and_forked() -> None:
    assert {S.CLOSING, S.CLOSED, S.FORKED} == ENDED


def test_an_unknown_event_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown connection event 'open'"):
        StateCell().on("open")


@pytest.mark.timeout(60)
def test_one_mover_per_transition_under_races() -> None:
    """close() from user threads against nats-py's callbacks: each transition is applied once."""
    for _ in range(200):
        cell = StateCell()
        cell.on("connected")
        events = ["close"] * 4 + ["disconnected"] * 4 + ["closed"] * 2
        random.shuffle(events)
        moves: list[str] = []
        barrier = threading.Barrier(len(events))

        def fire(cell: StateCell, barrier: threading.Barrier, moves: list[str], event: str) -> None:
            barrier.wait()
            if cell.on(event):
                moves.append(event)

        threads = [threading.Thread(target=fire, args=(cell, barrier, moves, event)) for event in events]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert cell.state is S.CLOSED
        assert moves.count("closed") == 1 and moves.count("close") <= 1 and moves.count("disconnected") <= 1
