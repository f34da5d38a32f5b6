"""Consumer management against a real nats-server: priority-group config and state, unpin,
pause/resume, reset, paged stream/consumer lists, their trio faces, and bad input."""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
import nats.js.api
import pytest
import trio
from conftest import connection, fill

import natspull
import natspull.trio
from natspull.testing import NatsServer
from natspull.trio._client import _AsyncList

UTC = datetime.timezone.utc  # datetime.UTC: Python >= 3.11
PINNED = natspull.PriorityPolicy.PINNED_CLIENT


def aware_now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def grouped_pull(url: str, stream: str, consumer: str, group: str) -> tuple[str, int]:
    """Pull one message for *group* and ack it; return its ``Nats-Pin-Id`` and stream sequence.

    natspull's pull engine does not send ``group`` yet, and ``Client.request`` cannot receive a
    JetStream delivery (nats-py matches replies by subject, and deliveries keep the message's
    own subject), so a second, plain nats-py connection plays the grouped client here.
    """

    async def pull() -> tuple[str, int]:
        nc = await nats.connect(url)
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            request = {"batch": 1, "expires": 5_000_000_000, "group": group}
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", json.dumps(request).encode(), reply=inbox
            )
            msg = await sub.next_msg(timeout=5)
            assert msg.headers is not None, msg
            await msg.ack_sync(timeout=5)
            return msg.headers["Nats-Pin-Id"], msg.metadata.sequence.stream
        finally:
            await nc.close()

    return asyncio.run(pull())


# ----------------------------------------------------------------- priority groups


@pytest.mark.server("2.11")
@pytest.mark.parametrize(
    ("policy", "timeout", "expected_timeout"),
    [
        (natspull.PriorityPolicy.PINNED_CLIENT, 7.5, 7.5),
        ("pinned_client", None, 120.0),  # the server's default
        (natspull.PriorityPolicy.OVERFLOW, None, None),
        pytest.param("prioritized", None, None, marks=pytest.mark.server("2.12")),
    ],
)
def test_priority_config_round_trips_through_info(
    js: natspull.JetStream, stream: str, policy: Any, timeout: float | None, expected_timeout: float | None
) -> None:
    consumer = js.add_consumer(
        stream,
        durable_name="grouped",
        priority_groups=["jobs", "a/b=c_d-E9"],
        priority_policy=policy,
        priority_timeout=timeout,
    )
    for info in (consumer.cached_info, consumer.info(), js.consumer_info(stream, "grouped")):
        assert isinstance(info, natspull.ConsumerInfo) and isinstance(info, nats.js.api.ConsumerInfo)
        assert isinstance(info.config, natspull.ConsumerConfig)
        assert info.config.priority_policy is natspull.PriorityPolicy(policy)
        assert info.config.priority_groups == ["jobs", "a/b=c_d-E9"]
        assert info.config.priority_timeout == expected_timeout
        # nats-server 2.15 reports the state of the first group only
        assert info.priority_groups == [natspull.PriorityGroupState("jobs", None, None)]
        assert (info.paused, info.pause_remaining, info.config.pause_until) == (False, None, None)
    # the info serializes back to the API's JSON shape
    as_dict = consumer.cached_info.as_dict()
    json.dumps(as_dict)
    assert as_dict["priority_groups"] == [{"group": "jobs"}]
    config = consumer.cached_info.config.as_dict()
    assert (config["priority_policy"], config["priority_groups"]) == (
        natspull.PriorityPolicy(policy).value,
        ["jobs", "a/b=c_d-E9"],
    )


@pytest.mark.server("2.11")
def test_a_config_object_and_a_nats_py_config_are_accepted(js: natspull.JetStream, stream: str) -> None:
    config = natspull.ConsumerConfig(
        durable_name="c1", priority_groups=["g"], priority_policy=PINNED, priority_timeout=3
    )
    info = js.add_consumer(stream, config).cached_info
    assert (info.config.priority_groups, info.config.priority_timeout) == (["g"], 3.0)
    # nats-py's own ConsumerConfig (what natspull.ConsumerConfig was before) still works, and
    # keywords add the priority fields it lacks
    plain = nats.js.api.ConsumerConfig(durable_name="c2", max_deliver=4)
    info = js.add_consumer(stream, plain, priority_groups=["g"], priority_policy="overflow").cached_info
    assert (info.config.max_deliver, info.config.priority_policy) == (4, natspull.PriorityPolicy.OVERFLOW)
    # a consumer without priority groups reads as before
    info = js.add_consumer(stream, durable_name="c3").cached_info
    assert (info.config.priority_groups, info.config.priority_policy, info.priority_groups) == (
        None,
        None,
        [],
    )


@pytest.mark.server("2.11")
def test_pinned_group_state_and_unpin(js: natspull.JetStream, stream: str, nats_server: NatsServer) -> None:
    consumer = js.add_consumer(
        stream, durable_name="pinned", priority_groups=["jobs"], priority_policy=PINNED
    )
    fill(js, stream, 2)

    before = aware_now()
    pin, seq = grouped_pull(nats_server.url, stream, "pinned", "jobs")
    after = aware_now()
    assert seq == 1 and pin
    [state] = consumer.info().priority_groups
    assert (state.group, state.pinned_client_id) == ("jobs", pin)
    assert state.pinned_ts is not None and state.pinned_ts.tzinfo is not None
    assert before - datetime.timedelta(seconds=1) <= state.pinned_ts <= after + datetime.timedelta(seconds=1)

    consumer.unpin("jobs")
    assert consumer.info().priority_groups == [natspull.PriorityGroupState("jobs", None, None)]

    # a new pull pins anew, with a new id; the JetStream call unpins it too
    pin2, seq = grouped_pull(nats_server.url, stream, "pinned", "jobs")
    assert seq == 2 and pin2 != pin
    assert consumer.info().priority_groups[0].pinned_client_id == pin2
    js.unpin_consumer(stream, "pinned", "jobs")
    assert consumer.info().priority_groups == [natspull.PriorityGroupState("jobs", None, None)]

    with pytest.raises(natspull.JetStreamAPIError) as err:
        js.unpin_consumer(stream, "pinned", "other")  # the server knows the groups
    assert (err.value.code, err.value.err_code) == (400, 10160)
    with pytest.raises(natspull.ConsumerNotFoundError):
        js.unpin_consumer(stream, "nope", "jobs")
    with pytest.raises(ValueError, match=r"group 'other' is not a priority group of consumer .*\['jobs'\]"):
        consumer.unpin("other")  # the cached info knows them: nothing is sent


# ---------------------------------------------------------------------------- pause


@pytest.mark.server("2.11")
def test_pause_holds_an_iterator_until_resume(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="p")
    fill(js, stream, 5)
    sent = aware_now()
    state = js.pause_consumer(stream, "p", 3600)
    assert state.paused and state.pause_until is not None and state.pause_remaining is not None
    assert (
        sent + datetime.timedelta(seconds=3599)
        <= state.pause_until
        <= aware_now() + datetime.timedelta(seconds=3600)
    )
    assert 3500 < state.pause_remaining <= 3600
    info = consumer.info()
    assert info.paused and info.pause_remaining is not None and 3500 < info.pause_remaining <= 3600
    assert info.config.pause_until == state.pause_until

    with consumer.messages(expires=2) as msgs:  # heartbeats every second
        with pytest.raises(natspull.TimeoutError):
            msgs.next(timeout=1)
        assert consumer.info().num_pending == 5
        resumed = js.resume_consumer(stream, "p")
        assert resumed == natspull.PauseState(paused=False, pause_until=None, pause_remaining=None)
        # the waiting pull is served at its next heartbeat
        got = [msgs.next(timeout=5) for _ in range(5)]
    assert [m.metadata.sequence.stream for m in got] == [1, 2, 3, 4, 5]
    for m in got:
        m.ack_sync()
    info = consumer.info()
    assert (info.paused, info.pause_remaining, info.config.pause_until) == (False, None, None)
    assert js.resume_consumer(stream, "p").paused is False  # idempotent


@pytest.mark.server("2.11")
def test_pause_with_a_datetime_a_past_time_and_on_create(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="p")
    fill(js, stream, 1)
    until = aware_now().astimezone(datetime.timezone(datetime.timedelta(hours=-5))) + datetime.timedelta(
        hours=1
    )
    state = consumer.pause(until)
    assert (state.paused, state.pause_until) == (True, until)  # the same instant, in UTC
    assert state.pause_until is not None and state.pause_until.utcoffset() == datetime.timedelta(0)
    with pytest.raises(natspull.TimeoutError):
        consumer.next(timeout=0.5)

    past = aware_now() - datetime.timedelta(minutes=1)
    state = consumer.pause(past)  # a time in the past resumes
    assert (state.paused, state.pause_until, state.pause_remaining) == (False, past, None)
    assert consumer.info().paused is False
    assert consumer.next(timeout=5).metadata.sequence.stream == 1
    assert consumer.resume().paused is False

    # created paused
    until = aware_now() + datetime.timedelta(minutes=10)
    info = js.add_consumer(stream, durable_name="born-paused", pause_until=until).cached_info
    assert info.paused and info.config.pause_until == until


@pytest.mark.server("2.11")
def test_pause_and_resume_of_a_missing_consumer(js: natspull.JetStream, stream: str) -> None:
    with pytest.raises(natspull.ConsumerNotFoundError):
        js.pause_consumer(stream, "nope", 10)
    with pytest.raises(natspull.ConsumerNotFoundError):
        js.resume_consumer(stream, "nope")
    with pytest.raises(natspull.StreamNotFoundError):
        js.pause_consumer("NOPE", "nope", 10)


# ---------------------------------------------------------------------------- reset


@pytest.mark.server("2.14")
def test_reset_to_a_sequence_and_to_the_ack_floor(js: natspull.JetStream, stream: str) -> None:
    consumer = js.add_consumer(stream, durable_name="r", ack_policy=natspull.AckPolicy.EXPLICIT)
    fill(js, stream, 10)
    for m in consumer.fetch(10, max_wait=5):
        m.ack_sync()
    assert consumer.info().ack_floor.stream_seq == 10

    assert consumer.reset(3) == 3
    info = consumer.cached_info  # refreshed from the reply
    assert (info.ack_floor.stream_seq, info.delivered.stream_seq, info.num_pending) == (2, 2, 8)
    first = consumer.next(timeout=5)
    meta = first.metadata
    assert (meta.sequence.stream, meta.sequence.consumer, meta.num_delivered) == (3, 1, 1)
    first.ack_sync()
    consumer.next(timeout=5).ack_sync()  # 4
    unacked = consumer.next(timeout=5)
    assert unacked.metadata.sequence.stream == 5  # delivered, not acked

    assert js.reset_consumer(stream, "r") == 5  # ack floor (4) + 1
    again = consumer.next(timeout=5)
    meta = again.metadata
    assert (meta.sequence.stream, meta.sequence.consumer, meta.num_delivered) == (5, 1, 1)
    assert consumer.info().num_ack_pending == 1


@pytest.mark.server("2.14")
def test_reset_errors(client: natspull.Client, stream: str) -> None:
    js = client.jetstream(timeout=30)
    js.add_consumer(stream, durable_name="new", deliver_policy=natspull.DeliverPolicy.NEW)
    with pytest.raises(natspull.JetStreamAPIError) as err:
        js.reset_consumer(stream, "new", 1)
    assert err.value.err_code == 10204
    # the server never answers a reset of a missing consumer: natspull says so without
    # waiting out the 30 s timeout
    started = time.monotonic()
    with pytest.raises(natspull.ConsumerNotFoundError):
        js.reset_consumer(stream, "nope")
    with pytest.raises(natspull.StreamNotFoundError):
        js.reset_consumer("NOPE", "nope", 2)
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------------------- lists

LIST_STREAMS = 1030  # more than four pages of 256 infos, and two pages of 1024 names
LIST_CONSUMERS = 1030  # the same, as consumers of one stream


@pytest.fixture(scope="module")
def listing_server() -> Iterator[NatsServer]:
    """A server with LIST_STREAMS memory streams (``L0000``...) plus ``C``, which has
    LIST_CONSUMERS consumers (``c0000``...). Created by 4 threads: about 5 s."""
    with NatsServer() as server, natspull.connect(server.url) as client:
        js = client.jetstream(timeout=30)
        # nats-server 2.15.1 refuses the 1001st consumer of a stream without max_consumers (observed)
        js.add_stream(name="C", subjects=["C.>"], storage=natspull.StorageType.MEMORY, max_consumers=2000)
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda i: js.add_stream(
                        name=f"L{i:04d}", subjects=[f"L{i:04d}.>"], storage=natspull.StorageType.MEMORY
                    ),
                    range(LIST_STREAMS),
                )
            )
            list(pool.map(lambda i: js.add_consumer("C", durable_name=f"c{i:04d}"), range(LIST_CONSUMERS)))
        yield server


def api_requests(server: NatsServer) -> int:
    total: int = server.jsz()["api"]["total"]
    return total


def test_streams_and_stream_names_page_through_every_stream(listing_server: NatsServer) -> None:
    expected = sorted(["C", *(f"L{i:04d}" for i in range(LIST_STREAMS))])
    with natspull.connect(listing_server.url) as client:
        js = client.jetstream(timeout=10)
        start = api_requests(listing_server)
        infos = js.streams()
        assert api_requests(listing_server) == start  # lazy: nothing asked yet
        first = next(infos)
        assert isinstance(first, natspull.StreamInfo) and first.config.name == "C"
        assert api_requests(listing_server) == start + 1
        rest = [next(infos) for _ in range(255)]
        assert api_requests(listing_server) == start + 1  # still the first page of 256
        rest += list(infos)
        assert [i.config.name for i in [first, *rest]] == expected
        assert api_requests(listing_server) == start + math.ceil(len(expected) / 256)  # 5 pages

        start = api_requests(listing_server)
        assert list(js.stream_names()) == expected
        assert api_requests(listing_server) == start + 2  # pages of 1024


def test_consumers_and_consumer_names_page_through_every_consumer(listing_server: NatsServer) -> None:
    expected = [f"c{i:04d}" for i in range(LIST_CONSUMERS)]
    with natspull.connect(listing_server.url) as client:
        js = client.jetstream(timeout=10)
        start = api_requests(listing_server)
        infos = list(js.consumers("C"))
        assert all(isinstance(i, natspull.ConsumerInfo) and i.stream_name == "C" for i in infos)
        assert sorted(i.name for i in infos) == expected
        assert api_requests(listing_server) == start + math.ceil(LIST_CONSUMERS / 256)
        start = api_requests(listing_server)
        assert sorted(js.consumer_names("C")) == expected
        assert api_requests(listing_server) == start + 2
        assert list(js.consumer_names("L0000")) == []
        assert list(js.consumers("L0000")) == []
        missing = js.consumers("NOPE")  # the stream is looked up by the first page
        with pytest.raises(natspull.StreamNotFoundError):
            next(missing)
        with pytest.raises(natspull.StreamNotFoundError):
            next(js.consumer_names("NOPE"))


# ------------------------------------------------------------------------------ trio


@pytest.mark.server("2.14")
@pytest.mark.trio
async def test_trio_management_calls(nats_server: NatsServer) -> None:
    async with natspull.trio.open_client(nats_server.url) as client:
        js = client.jetstream()
        await js.add_stream(name="T", subjects=["T.>"], storage=natspull.StorageType.MEMORY)
        await js.publish_many([("T.x", b"%d" % i) for i in range(5)])
        consumer = await js.add_consumer(
            "T", durable_name="t", priority_groups=["jobs"], priority_policy="pinned_client"
        )
        for name in ("u", "v"):
            await js.add_consumer("T", durable_name=name)
        with trio.fail_after(20):
            assert (await js.pause_consumer("T", "t", 60)).paused
            assert (await consumer.info()).paused
            assert (await js.resume_consumer("T", "t")).paused is False
            assert (await consumer.pause(aware_now() + datetime.timedelta(seconds=60))).paused
            assert (await consumer.resume()).paused is False
            assert await js.reset_consumer("T", "t", 4) == 4
            assert await consumer.reset() == 4  # the ack floor the reset to 4 left (3) + 1
            await consumer.unpin("jobs")
            await js.unpin_consumer("T", "t", "jobs")
            with pytest.raises(ValueError, match="group 'x'"):
                await consumer.unpin("x")
            assert [s.config.name async for s in js.streams()] == ["T"]
            assert [s async for s in js.stream_names()] == ["T"]
            assert sorted([c.name async for c in js.consumers("T")]) == ["t", "u", "v"]
            assert sorted([c async for c in js.consumer_names("T")]) == ["t", "u", "v"]
            with pytest.raises(natspull.StreamNotFoundError):
                [c async for c in js.consumers("NOPE")]
        with pytest.raises(ValueError, match="stream name"):
            js.consumers("a.b")


@pytest.mark.trio
async def test_a_cancelled_trio_list_step_loses_no_entry() -> None:
    """A cancellation while a worker thread fetches a page: the page waits for the next step."""
    entered, release = threading.Event(), threading.Event()

    def entries() -> Iterator[str]:
        entered.set()
        assert release.wait(10)
        yield from ["a", "b", "c"]

    names = _AsyncList(entries(), 2)

    async def cancel_during_the_fetch(scope: trio.CancelScope) -> None:
        assert await trio.to_thread.run_sync(entered.wait, 10)
        scope.cancel()
        release.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(cancel_during_the_fetch, scope)
                await names.__anext__()
        assert scope.cancelled_caught
        assert [name async for name in names] == ["a", "b", "c"]


# ------------------------------------------------------------------------- bad input

NAIVE = datetime.datetime(2030, 1, 1)
FUTURE = aware_now() + datetime.timedelta(days=1)

Call = Callable[[natspull.JetStream, natspull.Consumer], object]


def _add(**params: Any) -> Call:
    return lambda js, c: js.add_consumer("BAD", durable_name="x", **params)


BAD_INPUT: list[tuple[str, Call, type[Exception], str]] = [
    # priority groups on add_consumer
    (
        "groups str",
        _add(priority_groups="jobs", priority_policy=PINNED),
        TypeError,
        "priority_groups must be a list",
    ),
    (
        "groups int entry",
        _add(priority_groups=[1], priority_policy=PINNED),
        TypeError,
        "priority_groups entry",
    ),
    (
        "groups empty",
        _add(priority_groups=[], priority_policy=PINNED),
        ValueError,
        "priority_groups must name",
    ),
    (
        "group empty",
        _add(priority_groups=[""], priority_policy=PINNED),
        ValueError,
        "priority_groups entry ''",
    ),
    ("group +", _add(priority_groups=["a+b"], priority_policy=PINNED), ValueError, "'a\\+b' is not a valid"),
    ("group )", _add(priority_groups=["a)"], priority_policy=PINNED), ValueError, "priority_groups entry"),
    ("group .", _add(priority_groups=["a.b"], priority_policy=PINNED), ValueError, "1-16 characters"),
    ("group 17", _add(priority_groups=["x" * 17], priority_policy=PINNED), ValueError, "1-16 characters"),
    (
        "groups repeat",
        _add(priority_groups=["a", "a"], priority_policy=PINNED),
        ValueError,
        "must not repeat",
    ),
    ("groups no policy", _add(priority_groups=["a"]), ValueError, "priority_groups needs a priority_policy"),
    ("policy no groups", _add(priority_policy=PINNED), ValueError, "needs priority_groups"),
    (
        "policy unknown",
        _add(priority_groups=["a"], priority_policy="bogus"),
        ValueError,
        "priority_policy must be one",
    ),
    (
        "policy case",
        _add(priority_groups=["a"], priority_policy="PINNED_CLIENT"),
        ValueError,
        "priority_policy",
    ),
    (
        "policy none",
        _add(priority_groups=["a"], priority_policy="none"),
        ValueError,
        "priority_policy must be one",
    ),
    ("policy int", _add(priority_groups=["a"], priority_policy=2), TypeError, "priority_policy must be a"),
    (
        "timeout overflow policy",
        _add(priority_groups=["a"], priority_policy="overflow", priority_timeout=5),
        ValueError,
        "priority_timeout applies to priority_policy 'pinned_client' only",
    ),
    *[
        (
            f"timeout {value!r}",
            _add(priority_groups=["a"], priority_policy=PINNED, priority_timeout=value),
            error,
            "priority_timeout",
        )
        for value, error in [
            (-1, ValueError),
            (0, ValueError),
            (math.nan, ValueError),
            (math.inf, ValueError),
            (1e10, ValueError),  # 1e19 ns: more than int64
            (9_223_372_037, ValueError),
            ("5", TypeError),
            (True, TypeError),
        ]
    ],
    ("pause_until naive", _add(pause_until=NAIVE), ValueError, "pause_until must be a timezone-aware"),
    ("pause_until garbage", _add(pause_until="soon"), ValueError, "pause_until must be an aware datetime"),
    ("pause_until int", _add(pause_until=5), TypeError, "pause_until must be a timezone-aware"),
    # pause / resume
    *[
        (f"until {value!r}", lambda js, c, v=value: js.pause_consumer("BAD", "ok", v), error, match)
        for value, error, match in [
            (NAIVE, ValueError, "until must be a timezone-aware datetime"),
            (-1, ValueError, "until must be a finite number of seconds >= 0"),
            (math.nan, ValueError, "until must be a finite"),
            (math.inf, ValueError, "until must be a finite"),
            (1e10, ValueError, "until must be at most 9223372037 s"),
            ("2030-01-01T00:00:00Z", TypeError, "until must be an aware datetime or a number of seconds"),
            (None, TypeError, "until must be"),
            (True, TypeError, "until must be"),
            (datetime.date(2030, 1, 1), TypeError, "until must be"),
            (datetime.timedelta(seconds=5), TypeError, "until must be"),
        ]
    ],
    ("consumer pause naive", lambda js, c: c.pause(NAIVE), ValueError, "until must be a timezone-aware"),
    ("pause stream name", lambda js, c: js.pause_consumer("a.b", "ok", FUTURE), ValueError, "stream name"),
    ("pause consumer name", lambda js, c: js.pause_consumer("BAD", "", FUTURE), ValueError, "consumer name"),
    ("resume name type", lambda js, c: js.resume_consumer("BAD", 5), TypeError, "consumer name"),  # type: ignore[arg-type]
    # reset
    *[
        (f"seq {value!r}", lambda js, c, v=value: js.reset_consumer("BAD", "ok", v), error, match)
        for value, error, match in [
            (0, ValueError, "seq must be a stream sequence between 1 and 18446744073709551615, got 0"),
            (-3, ValueError, "seq must be a stream sequence between 1"),
            (2**64, ValueError, "seq must be a stream sequence between 1"),
            ("3", TypeError, "seq must be an int"),
            (3.0, TypeError, "seq must be an int"),
            (True, TypeError, "seq must be an int"),
        ]
    ],
    ("consumer reset seq", lambda js, c: c.reset(0), ValueError, "seq must be"),
    ("reset stream name", lambda js, c: js.reset_consumer("a b", "ok"), ValueError, "stream name"),
    # unpin
    *[
        (f"group {value!r}", lambda js, c, v=value: js.unpin_consumer("BAD", "ok", v), error, match)
        for value, error, match in [
            ("", ValueError, "group '' is not a valid priority group name"),
            ("a+b", ValueError, "group 'a\\+b' is not a valid"),
            ("x" * 17, ValueError, "1-16 characters"),
            (5, TypeError, "group must be a str"),
            (None, TypeError, "group must be a str"),
        ]
    ],
    ("consumer unpin unknown", lambda js, c: c.unpin("other"), ValueError, "group 'other' is not a priority"),
    ("consumer unpin bad", lambda js, c: c.unpin("a b"), ValueError, "group 'a b' is not a valid"),
    # lists
    ("consumers stream", lambda js, c: js.consumers("a.b"), ValueError, "stream name 'a.b'"),
    (
        "consumer_names stream",
        lambda js, c: js.consumer_names(""),
        ValueError,
        "stream name must not be empty",
    ),
    ("consumers type", lambda js, c: js.consumers(5), TypeError, "stream name must be a str"),  # type: ignore[arg-type]
]


@pytest.mark.server("2.11")
def test_bad_input_is_rejected_before_anything_is_sent(nats_server: NatsServer) -> None:
    with natspull.connect(nats_server.url, name="bad-input") as client:
        js = client.jetstream()
        js.add_stream(name="BAD", subjects=["BAD.>"], storage=natspull.StorageType.MEMORY)
        consumer = js.add_consumer("BAD", durable_name="ok", priority_groups=["jobs"], priority_policy=PINNED)
        client.flush()
        sent = connection(nats_server, "bad-input")
        assert sent is not None
        failures = []
        for case, call, error, match in BAD_INPUT:
            try:
                call(js, consumer)
            except error as exc:
                if not re.search(match, str(exc)):
                    failures.append(f"{case}: {type(exc).__name__}: {exc} (expected /{match}/)")
            except Exception as exc:
                failures.append(f"{case}: {type(exc).__name__}: {exc} (expected {error.__name__})")
            else:
                failures.append(f"{case}: no error (expected {error.__name__})")
        assert not failures, "\n".join(failures)
        client.flush()
        after = connection(nats_server, "bad-input")
        assert after is not None
        assert after["in_msgs"] == sent["in_msgs"]  # PING/PONG is not a message
