"""Property-based tests: subject and name validation, and the pull-threshold arithmetic of the queue."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from strategies import names, subjects, tokens, whitespace

import natspull
from natspull import _validate
from natspull._engine._ordered_mode import ACCEPT, GAP, Cursor
from natspull._engine._queue import MsgQueue, State
from natspull._engine._settings import pull_settings
from natspull._msg import Msg
from natspull._validate import check_name, check_subject

FAST = settings(max_examples=100, deadline=None)

# ------------------------------------------------------------------ subjects and names


@FAST
@given(subjects)
def test_valid_subjects_are_accepted(subject: str) -> None:
    assert check_subject("subject", subject) == subject
    assert check_subject("subject", subject, wildcards=True) == subject


@FAST
@given(st.lists(st.one_of(tokens, st.just("*")), min_size=1, max_size=5), st.booleans())
def test_whole_token_wildcards_are_accepted_where_allowed(parts: list[str], full: bool) -> None:
    subject = ".".join([*parts, ">"] if full else parts)
    assert check_subject("filter", subject, wildcards=True) == subject
    if "*" in parts or full:
        with pytest.raises(ValueError, match="filter"):
            check_subject("filter", subject)


@FAST
@given(subjects, whitespace)
def test_a_checked_subject_is_remembered_without_changing_any_answer(subject: str, space: str) -> None:
    for _ in range(2):  # the second time from the cache of checked subjects
        assert check_subject("subject", subject) == subject
        assert check_subject("subject", subject, wildcards=True) == subject
        with pytest.raises(ValueError, match="wildcards"):
            check_subject("subject", f"{subject}.*")
        with pytest.raises(ValueError, match="whitespace"):
            check_subject("subject", subject + space)
    assert subject in _validate._CHECKED_SUBJECTS


def test_the_cache_of_checked_subjects_is_bounded() -> None:
    for i in range(3 * _validate._CHECKED_MAX):
        check_subject("subject", f"bounded.{i}")
    assert 0 < len(_validate._CHECKED_SUBJECTS) <= _validate._CHECKED_MAX
    with pytest.raises(TypeError, match="str"):
        check_subject("subject", b"bounded.1")


@FAST
@given(subjects, whitespace, st.data())
def test_subjects_with_whitespace_are_rejected(subject: str, space: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(subject)))
    bad = subject[:at] + space + subject[at:]
    with pytest.raises(ValueError, match="subject"):
        check_subject("subject", bad)


@FAST
@given(st.lists(tokens, min_size=1, max_size=5), st.data())
def test_subjects_with_an_empty_token_are_rejected(parts: list[str], data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(parts)))
    bad = ".".join([*parts[:at], "", *parts[at:]])
    with pytest.raises(ValueError, match="subject"):
        check_subject("subject", bad, wildcards=True)


@FAST
@given(tokens, st.sampled_from(["*", ">"]), st.data())
def test_partial_token_wildcards_are_rejected(token: str, wildcard: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(token)))
    bad = token[:at] + wildcard + token[at:]
    for wildcards in (False, True):
        with pytest.raises(ValueError, match="subject"):
            check_subject("subject", bad, wildcards=wildcards)


@FAST
@given(st.lists(tokens, min_size=1, max_size=4))
def test_gt_must_be_the_last_token(parts: list[str]) -> None:
    with pytest.raises(ValueError, match="last token"):
        check_subject("subject", ".".join([">", *parts]), wildcards=True)


@FAST
@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_subjects_and_names_must_be_str(value: Any) -> None:
    with pytest.raises(TypeError, match="subject"):
        check_subject("subject", value)
    with pytest.raises(TypeError, match="stream name"):
        check_name("stream", value)


@FAST
@given(names)
def test_valid_names_are_accepted(name: str) -> None:
    assert check_name("stream", name) == name


@FAST
@given(names, st.one_of(st.sampled_from(" .*>/\\\t\r\n"), whitespace), st.data())
def test_names_with_forbidden_characters_are_rejected(name: str, bad_char: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(name)))
    with pytest.raises(ValueError, match="consumer name"):
        check_name("consumer", name[:at] + bad_char + name[at:])


@FAST
@given(names, st.integers(256, 400))
def test_names_longer_than_255_are_rejected(name: str, length: int) -> None:
    with pytest.raises(ValueError, match="at most 255"):
        check_name("stream", (name * length)[:length])


# -------------------------------------------------------------- pull-threshold arithmetic


def _msg_flows(stop_after: st.SearchStrategy[int | None]) -> st.SearchStrategy[dict[str, Any]]:
    return st.integers(1, 20).flatmap(
        lambda m: st.fixed_dictionaries(
            {
                "max_messages": st.just(m),
                "threshold_messages": st.none() | st.integers(1, m),
                "stop_after": stop_after,
            }
        )
    )


def _byte_flows() -> st.SearchStrategy[dict[str, Any]]:
    # (max_bytes=1 with the default threshold has its own test below)
    return st.integers(2, 200).flatmap(
        lambda b: st.fixed_dictionaries(
            {
                "max_bytes": st.just(b),
                "threshold_bytes": st.none() | st.integers(1, b),
                "stop_after": st.none() | st.integers(1, 30),
            }
        )
    )


flows = st.one_of(_msg_flows(st.none() | st.integers(1, 40)), _byte_flows())


class PullFlow(RuleBasedStateMachine):
    """Drive a MsgQueue like the pull engine and the application do, against a model of the server.

    The "server" only delivers what pulls asked for (messages and, with max_bytes, bytes), may
    leave part of a pull unfilled (adjust_pending, as a 408/409 does) and, after a forgotten pull
    (missed heartbeat), may still deliver some of it late.
    """

    def __init__(self) -> None:
        super().__init__()
        self.q: MsgQueue
        self.ids = itertools.count()

    @initialize(options=flows)
    def start(self, options: dict[str, Any]) -> None:
        self.flow = pull_settings(**options).flow
        self.bytes_mode = self.flow.max_bytes > 0
        self.lows = 0
        self.discarded: list[Msg] = []
        self.q = MsgQueue(self.flow, on_low=self._on_low, on_discard=self.discarded.extend)
        self.outstanding_msgs = 0  # requested by live pulls, not delivered
        self.outstanding_bytes = 0
        self.stale = 0  # messages of forgotten pulls that the server may still deliver
        self.buffered: deque[Msg] = deque()
        self.leased: list[Msg] = []
        self.delivered = 0
        self.low_since_reserve = False
        self.exact = True  # False once a stale delivery made the model's accounting approximate

    def _on_low(self) -> None:
        self.lows += 1
        self.low_since_reserve = True

    # ------------------------------------------------------------------ helpers

    @property
    def stats(self) -> dict[str, int]:
        return self.q.stats()

    def below_threshold(self, pending_msgs: int, pending_bytes: int) -> bool:
        """The re-pull condition: a byte-limited flow decides on bytes alone, as in nats.go."""
        if self.bytes_mode:
            return pending_bytes < self.flow.threshold_bytes
        return pending_msgs < self.flow.threshold_msgs

    def new_msg(self, size: int) -> Msg:
        return Msg("s", b"x" * size, f"r{next(self.ids)}", size=size)

    def took(self, msg: Msg) -> None:
        assert msg is self.buffered.popleft()  # FIFO, each message handed out once
        self.delivered += 1
        if self.delivered == self.flow.limit and self.buffered:  # stop_after reached: the rest goes back
            assert self.discarded[-len(self.buffered) :] == list(self.buffered)
            self.buffered.clear()

    def check_low_water(self) -> None:
        """Liveness: pending below the threshold in OPEN means on_low was called since the last reserve."""
        s = self.stats
        if self.q.state is State.OPEN and self.below_threshold(s["pending_msgs"], s["pending_bytes"]):
            assert self.low_since_reserve, f"no on_low although pending fell below the threshold: {s}"

    # ------------------------------------------------------------- engine side

    @rule()
    def reserve(self) -> None:
        before = self.stats
        state = self.q.state
        msgs, nbytes = self.q.reserve()
        after = self.stats
        self.low_since_reserve = False
        assert msgs >= 0 and nbytes >= 0
        assert after["pending_msgs"] == before["pending_msgs"] + msgs
        assert after["pending_bytes"] == before["pending_bytes"] + nbytes
        below = self.below_threshold(before["pending_msgs"], before["pending_bytes"])
        limit = self.flow.limit
        if msgs:
            assert state is State.OPEN
            assert below, f"pulled {msgs} although pending {before} was not below the threshold"
            assert after["pending_msgs"] <= self.flow.max_msgs
            if limit is None:
                assert after["pending_msgs"] == self.flow.max_msgs  # topped up to the maximum
            else:
                assert self.delivered + after["pending_msgs"] <= limit  # never beyond stop_after
            if self.bytes_mode:
                assert nbytes > 0 and after["pending_bytes"] == self.flow.max_bytes
            else:
                assert nbytes == 0
        elif state is State.OPEN and self.exact and not self.leased:
            # Liveness: below the threshold - and always when nothing at all is pending - a pull
            # goes out unless the budget is used up; otherwise the iterator would stall.
            idle = before["pending_msgs"] == 0 and before["pending_bytes"] == 0
            room = limit is None or self.delivered + before["pending_msgs"] < limit
            budget = not self.bytes_mode or before["pending_bytes"] < self.flow.max_bytes
            assert not ((below or idle) and room and budget), f"no pull although pending is {before}"
        self.outstanding_msgs += msgs
        self.outstanding_bytes += nbytes

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """The server delivers a burst within what the live pulls asked for."""
        burst: list[Msg] = []
        for _ in range(data.draw(st.integers(1, 5))):
            if self.outstanding_msgs == 0:
                break
            if self.bytes_mode:
                if self.outstanding_bytes == 0:
                    break
                size = data.draw(st.integers(1, min(self.outstanding_bytes, 40)))
                self.outstanding_bytes -= size
            else:
                size = data.draw(st.integers(1, 40))
            self.outstanding_msgs -= 1
            burst.append(self.new_msg(size))
        if burst and self.bytes_mode and self.outstanding_bytes == 0:
            self.outstanding_msgs = 0  # requests whose bytes are used up end (without a status)
        if burst:
            closed = self.q.state is State.CLOSED
            self.q.put_many(burst)
            if closed:
                assert self.discarded[-len(burst) :] == burst
            else:
                self.buffered.extend(burst)

    @precondition(lambda self: self.stale > 0)
    @rule(data=st.data())
    def deliver_stale(self, data: st.DataObject) -> None:
        """A forgotten pull delivers after all (the heartbeat was only late)."""
        count = data.draw(st.integers(1, self.stale))
        self.stale -= count
        burst = [self.new_msg(data.draw(st.integers(1, 40))) for _ in range(count)]
        closed = self.q.state is State.CLOSED
        self.q.put_many(burst)
        if not closed:
            self.buffered.extend(burst)
        self.exact = False

    @rule(data=st.data())
    def pull_expires(self, data: st.DataObject) -> None:
        """A 408/409: the server reports what it left unfilled.

        Without max_bytes, any part of what is outstanding. With max_bytes, all of it: this
        model keeps one sum for all open requests, and a request ends with both of its
        remainders, messages and bytes; a part of the sum drawn at random could leave a state
        no server makes (bytes outstanding below the threshold with every message of the
        budget still outstanding, so that nothing can be pulled)."""
        if self.bytes_mode:
            msgs, nbytes = self.outstanding_msgs, self.outstanding_bytes
        else:
            msgs, nbytes = data.draw(st.integers(0, self.outstanding_msgs)), 0
        self.q.adjust_pending(msgs, nbytes)
        self.outstanding_msgs -= msgs
        self.outstanding_bytes -= nbytes

    @rule()
    def forget_outstanding(self) -> None:
        self.q.forget_outstanding()
        self.stale += min(self.outstanding_msgs, 10)
        self.outstanding_msgs = self.outstanding_bytes = 0
        if self.exact:
            s = self.stats
            assert s["pending_msgs"] == len(self.buffered) + len(self.leased)

    # -------------------------------------------------------- application side

    @precondition(lambda self: self.buffered)
    @rule()
    def get(self) -> None:
        msg = self.q.get(0)
        self.took(msg)
        self.check_low_water()

    @precondition(lambda self: self.buffered and self.flow.limit is None)
    @rule()
    def get_leased(self) -> None:
        # consume() leases; it has no stop_after, so leases never meet a limit.
        msg = self.q.get(0, lease=True)
        self.took(msg)
        self.leased.append(msg)

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        msg = self.leased.pop(data.draw(st.integers(0, len(self.leased) - 1)))
        self.q.release(msg)
        self.check_low_water()

    @precondition(lambda self: not self.buffered)
    @rule()
    def get_empty(self) -> None:
        expected: type[BaseException] = (
            natspull.IteratorClosedError if self.q.state is State.CLOSED else natspull.TimeoutError
        )
        with pytest.raises(expected):
            self.q.get(0)

    @precondition(lambda self: self.flow.limit is None)
    @rule()
    def take_all(self) -> None:
        taken = self.q.take_all()
        assert taken == list(self.buffered)
        self.buffered.clear()
        self.delivered += len(taken)
        if taken:
            self.check_low_water()

    @rule()
    def drain(self) -> None:
        state = self.q.state
        self.q.drain()
        assert self.q.state is (State.DRAINING if state is State.OPEN else state)

    @precondition(lambda self: self.q.state is State.DRAINING)
    @rule()
    def finish(self) -> None:
        self.q.finish()
        assert self.q.state is State.CLOSED

    @rule()
    def stop(self) -> None:
        """Stop hands nothing more out: whatever is buffered goes back (NAK), even after a drain."""
        discarded = len(self.discarded)
        self.q.stop()
        assert self.q.state is State.CLOSED
        assert self.discarded[discarded:] == list(self.buffered)
        self.buffered.clear()

    # ---------------------------------------------------------------- invariants

    @invariant()
    def pending_is_never_negative(self) -> None:
        s = self.stats
        assert s["pending_msgs"] >= 0 and s["pending_bytes"] >= 0

    @invariant()
    def buffer_matches_the_model(self) -> None:
        assert self.stats["buffered"] == len(self.buffered)

    @invariant()
    def stop_after_is_honoured(self) -> None:
        if self.flow.limit is not None:
            assert self.delivered <= self.flow.limit
            if self.delivered == self.flow.limit:
                assert self.q.state is State.CLOSED

    @invariant()
    def pending_is_exact_while_the_model_is(self) -> None:
        if not self.exact or self.q.state is State.CLOSED:
            return
        s = self.stats
        assert s["pending_msgs"] == self.outstanding_msgs + len(self.buffered) + len(self.leased)
        if self.bytes_mode:  # (without max_bytes, pending_bytes is not used and not kept exact)
            in_hand = sum(m.size for m in self.buffered) + sum(m.size for m in self.leased)
            assert s["pending_bytes"] == self.outstanding_bytes + in_hand


def test_the_smallest_byte_budget_still_pulls() -> None:
    flow = pull_settings(max_bytes=1).flow
    assert MsgQueue(flow).reserve() == (flow.max_msgs, 1)


# No "explain" phase: on Python < 3.12 its tracing makes a failing run take minutes.
PullFlow.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestPullFlow = PullFlow.TestCase


# ------------------------------------------------------------- the ordered sequence check

# What one inbox of an ordered read can receive: the current consumer's deliveries, whose
# consumer sequences strictly increase (ack none: never a redelivery) and may skip (a lost
# message: the gap the check exists for); late ones of an older consumer; something that is
# not an ack subject at all.
deliveries = st.lists(
    st.one_of(
        st.just(("next", 1)),
        st.just(("next", 1)),
        st.just(("next", 1)),
        st.tuples(st.just("skip"), st.integers(2, 3)),
        st.tuples(st.just("stale"), st.integers(1, 9)),
        st.just(("junk", 0)),
    ),
    max_size=60,
)


def _ordered_burst(events: list[tuple[str, int]]) -> list[Msg]:
    msgs, cseq, sseq = [], 0, 100
    for kind, step in events:
        sseq += 1 + step
        if kind == "junk":
            reply = "_INBOX.not.an.ack.subject"
        elif kind == "stale":
            reply = f"$JS.ACK.S.old_1.1.{sseq}.{step}.1700000000000000000.0"
        else:
            cseq += step
            reply = f"$JS.ACK.S.abc_2.1.{sseq}.{cseq}.1700000000000000000.{1000 - cseq}"
        msgs.append(Msg("S.x", b"", reply, None, None, 0))
    return msgs


@settings(max_examples=500, deadline=None)
@given(deliveries, st.lists(st.integers(1, 12), max_size=10))
@example([("next", 1), ("next", 1), ("stale", 1), ("skip", 2)], [1])  # a stale one hides a gap
@example([("next", 1), ("next", 1), ("junk", 0), ("skip", 2)], [1])
def test_a_burst_is_checked_like_its_messages_one_by_one(
    events: list[tuple[str, int]], cuts: list[int]
) -> None:
    """Cursor.accept checks a whole read at its ends; its verdict is always the one the
    message-by-message check gives (the same accepted messages, the same break)."""
    msgs = _ordered_burst(events)
    fast, slow = Cursor("abc_2", 7), Cursor("abc_2", 7)
    start = 0
    for cut in [*cuts, len(msgs)]:
        burst, start = msgs[start : start + cut], start + cut
        if not burst:
            continue
        accepted, broken = fast.accept(burst)
        expected: list[Msg] = []
        expected_broken = None
        for msg in burst:
            verdict = slow._check(msg.reply)
            if verdict == ACCEPT:
                expected.append(msg)
            elif verdict == GAP:
                expected_broken = msg.reply
                break
        assert (accepted, broken) == (expected, expected_broken)
        assert (fast.consumer_seq, fast.stream_seq) == (slow.consumer_seq, slow.stream_seq)
        if broken is not None:
            return  # the engine resets here: a new consumer, a new cursor
