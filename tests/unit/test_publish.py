"""natspull._publish: publish options into headers, TTL values, items and batch headers (no server)."""

from __future__ import annotations

import json

import pytest

import natspull
from natspull._jetstream import _USUAL_ACK, _pub_ack
from natspull._publish import (
    MAX_BATCH_MESSAGES,
    batch_headers,
    check_ttl,
    new_batch_id,
    publish_item,
    publish_options,
)
from natspull._transport._wire import Reply


@pytest.mark.timeout(10)
def test_options_become_headers() -> None:
    options = publish_options(
        msg_id="m",
        ttl=2,
        expected_stream="S",
        expected_last_sequence=0,
        expected_last_subject_sequence=7,
        expected_last_msg_id="prev",
    )
    assert options.headers({"k": "v"}) == {
        "k": "v",
        "Nats-Msg-Id": "m",
        "Nats-TTL": "2",
        "Nats-Expected-Stream": "S",
        "Nats-Expected-Last-Sequence": "0",
        "Nats-Expected-Last-Subject-Sequence": "7",
        "Nats-Expected-Last-Msg-Id": "prev",
    }
    assert publish_options().headers(None) is None
    given = {"Nats-Msg-Id": "m"}
    assert publish_options(msg_id="m").headers(given) == given  # the same value twice is fine
    assert given == {"Nats-Msg-Id": "m"}  # a copy: the caller's dict is not changed
    with pytest.raises(ValueError, match="differ"):
        publish_options(msg_id="m").headers({"Nats-Msg-Id": "other"})


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("value", "header"), [(1, "1"), (60, "60"), (2.0, "2"), (1.5, "1500ms"), ("never", "never"), (None, None)]
)
def test_ttl_values(value: object, header: str | None) -> None:
    assert check_ttl(value) == header


@pytest.mark.timeout(10)
@pytest.mark.parametrize("value", [0, 0.999, -5, float("inf"), float("nan"), "1s", "", 10**30])
def test_bad_ttls_are_value_errors(value: object) -> None:
    with pytest.raises(ValueError, match="ttl"):
        check_ttl(value)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("msg_id", "", ValueError),
        ("msg_id", " padded", ValueError),
        ("msg_id", 5, TypeError),
        ("expected_last_sequence", -1, ValueError),
        ("expected_last_sequence", True, TypeError),
        ("expected_last_subject_sequence", 2**64, ValueError),
        ("expected_last_msg_id", "a\nb", ValueError),
        ("expected_stream", "a.b", ValueError),
        ("ttl", True, TypeError),
    ],
)
def test_bad_options_name_themselves(option: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=option.replace("expected_stream", "expected_stream name")):
        publish_options(**{option: value})  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_items() -> None:
    assert publish_item(("s", b"d")) == ("s", b"d", None)
    assert publish_item(("s", b"d", {"k": "v"})) == ("s", b"d", {"k": "v"})
    assert publish_item(("s", b"d"), "STREAM") == ("s", b"d", {"Nats-Expected-Stream": "STREAM"})
    record = natspull.Publish(
        "s", b"d", {"k": "v"}, msg_id="m", ttl="never", expected_last_subject_sequence=0
    )
    assert publish_item(record) == (
        "s",
        b"d",
        {"k": "v", "Nats-Msg-Id": "m", "Nats-TTL": "never", "Nats-Expected-Last-Subject-Sequence": "0"},
    )
    assert record.headers == {"k": "v"}  # not changed by the publish
    for bad in (("s",), ("s", b"d", None, None), b"x", "s", None):
        with pytest.raises(TypeError, match=r"natspull\.Publish"):
            publish_item(bad)


@pytest.mark.timeout(10)
def test_batch_headers() -> None:
    batch_id = new_batch_id()
    assert len(batch_id) == 32 and batch_id != new_batch_id()
    assert batch_headers(None, batch_id, 1, commit=False) == {
        "Nats-Batch-Id": batch_id,
        "Nats-Batch-Sequence": "1",
    }
    assert batch_headers({"k": "v"}, batch_id, 3, commit=True) == {
        "k": "v",
        "Nats-Batch-Id": batch_id,
        "Nats-Batch-Sequence": "3",
        "Nats-Batch-Commit": "1",
    }
    with pytest.raises(ValueError, match="Nats-Batch-Sequence"):
        batch_headers({"Nats-Batch-Sequence": "9"}, batch_id, 1, commit=False)
    assert MAX_BATCH_MESSAGES == 1000


@pytest.mark.timeout(10)
def test_records_are_frozen() -> None:
    ack = natspull.BatchAck(stream="S", seq=5, count=2, batch_id="b")
    with pytest.raises(AttributeError):
        ack.seq = 6  # type: ignore[misc]
    record = natspull.Publish("s")
    assert (record.data, record.headers, record.ttl) == (b"", None, None)
    assert hash(record) == hash(natspull.Publish("s"))


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "data",
    [
        b'{"stream":"S","seq":1}',
        b'{"stream":"ORDERS","seq":18446744073709551615}',
        b'{"stream":"S","seq":7,"duplicate": true}',
        b'{"stream":"S","seq":7,"duplicate":true}',
        b'{"stream":"S","domain":"hub","seq":3}',
        b'{"stream":"S", "domain":"hub", "seq":3, "duplicate": true}',
        b'{"stream":"S","domain":"","seq":3}',
        b'{"stream":"S\\"q","seq":2}',  # an escape: through json
        b'{"stream":"S","seq":2,"duplicate":false}',  # not the usual form: through json
        b'{"seq":2,"stream":"S"}',
        b'{"stream":"S","seq":5,"batch":"b1","count":5}',
    ],
)
def test_pub_acks_read_without_json_equal_the_json_reading(data: bytes) -> None:
    """The usual PubAck is read by a regular expression; every answer must read as nats-py's
    PubAck.from_response reads the JSON (the fallback for everything else)."""
    expected = natspull.PubAck.from_response(json.loads(data))
    if b'"batch"' in data:  # natspull's names for the batch fields (nats-py keeps "batch"/"count")
        expected = natspull.PubAck(stream="S", seq=5, batch_id="b1", batch_size=5)
    assert _pub_ack(Reply("_INBOX.x.1", "", data, None), "s") == expected
    plain = data.startswith(b'{"stream"') and not any(x in data for x in (b"\\", b"false", b"batch"))
    assert (_USUAL_ACK.match(data) is not None) == plain
