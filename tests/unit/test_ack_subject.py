"""Unit tests of the ack subject module: token positions of both forms, malformed subjects,
the fast path against the full parse."""

from __future__ import annotations

import datetime

import pytest

import natspull
from natspull import _ack_subject as ack
from natspull._msg import Msg, parse_metadata

TS = 1_700_000_000_123_456_789
V1 = f"$JS.ACK.ORDERS.worker.2.5.6.{TS}.3"
V2 = f"$JS.ACK.hub.ACCHASH.ORDERS.worker.2.5.6.{TS}.3.r4nd0m"
V2_NO_DOMAIN = f"$JS.ACK._.ACCHASH.ORDERS.worker.1.5.6.{TS}.3.r4nd0m"

MALFORMED = [
    "",
    "_INBOX.abc",
    "$JS.ACK.S.C.2",  # too short
    "$JS.ACK.S.C.1.5.6.7",  # 8 tokens
    "$JS.ACK.S.C.1.5.6.7.0.x",  # 10 tokens: neither form
    "$JS.ACK.a.b.S.C.1.5.6.7.0",  # 11 tokens: v2 without its last token
    "$JS.API.S.C.1.5.6.7.0",  # 9 tokens, not $JS.ACK
    "JS.ACK.S.C.1.5.6.7.0.x.y.z",
]


def test_v1_tokens_sit_at_the_named_positions() -> None:
    tokens = ack.tokens(V1)
    assert tokens is not None
    assert tokens[:2] == ["$JS", "ACK"]
    assert (tokens[ack.DOMAIN], tokens[ack.ACCOUNT_HASH]) == ("", "")
    assert tokens[ack.STREAM] == "ORDERS"
    assert tokens[ack.CONSUMER] == "worker"
    assert tokens[ack.DELIVERED] == "2"
    assert tokens[ack.STREAM_SEQ] == "5"
    assert tokens[ack.CONSUMER_SEQ] == "6"
    assert tokens[ack.TIMESTAMP] == str(TS)
    assert tokens[ack.PENDING] == "3"
    assert len(tokens) == ack.TOKEN  # no random token in v1


def test_v2_tokens_sit_at_the_named_positions() -> None:
    tokens = ack.tokens(V2)
    assert tokens == V2.split(".")
    assert (tokens[ack.DOMAIN], tokens[ack.ACCOUNT_HASH]) == ("hub", "ACCHASH")
    assert (tokens[ack.STREAM], tokens[ack.CONSUMER]) == ("ORDERS", "worker")
    assert (tokens[ack.DELIVERED], tokens[ack.STREAM_SEQ], tokens[ack.CONSUMER_SEQ]) == ("2", "5", "6")
    assert (tokens[ack.TIMESTAMP], tokens[ack.PENDING], tokens[ack.TOKEN]) == (str(TS), "3", "r4nd0m")


@pytest.mark.parametrize(
    ("reply", "domain", "delivered"),
    [(V1, None, 2), (V2, "hub", 2), (V2_NO_DOMAIN, "", 1), (V2 + ".more.tokens", "hub", 2)],
)
def test_parse_reads_every_field(reply: str, domain: str | None, delivered: int) -> None:
    fields = ack.parse(reply)
    assert fields == ack.AckFields(
        domain=domain,
        account_hash="" if domain is None else "ACCHASH",
        stream="ORDERS",
        consumer="worker",
        delivered=delivered,
        stream_seq=5,
        consumer_seq=6,
        timestamp=TS,
        pending=3,
    )
    assert ack.stream_sequence(reply) == 5
    metadata = parse_metadata(reply)
    assert (metadata.sequence.stream, metadata.sequence.consumer) == (5, 6)
    assert (metadata.num_delivered, metadata.num_pending, metadata.domain) == (delivered, 3, domain)
    assert (metadata.stream, metadata.consumer) == ("ORDERS", "worker")
    assert metadata.timestamp == datetime.datetime.fromtimestamp(TS / 1e9, datetime.timezone.utc)


@pytest.mark.parametrize("reply", MALFORMED)
def test_a_malformed_subject_is_not_an_ack_subject(reply: str) -> None:
    assert ack.tokens(reply) is None
    assert ack.consumer_head(reply) == ""
    assert ack.is_redelivery(reply) is False
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        ack.parse(reply)
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        ack.stream_sequence(reply)
    with pytest.raises(natspull.Error, match="not an ack subject"):
        parse_metadata(reply)


@pytest.mark.parametrize(
    "reply", [f"$JS.ACK.S.C.x.5.6.{TS}.3", f"$JS.ACK.S.C.1.5.6.{TS}.", V1.replace(".5.", "..")]
)
def test_a_number_that_is_not_one_fails_the_parse(reply: str) -> None:
    assert ack.tokens(reply) is not None  # (the form is right: numbers are checked by parse)
    with pytest.raises(ValueError):
        ack.parse(reply)
    with pytest.raises(natspull.Error):
        parse_metadata(reply)


@pytest.mark.parametrize(
    ("reply", "head"),
    [
        (V1, "$JS.ACK.ORDERS.worker."),
        (V2, "$JS.ACK.hub.ACCHASH.ORDERS.worker."),
        (V2_NO_DOMAIN, "$JS.ACK._.ACCHASH.ORDERS.worker."),
    ],
)
def test_the_fast_path_reads_what_the_parse_reads(reply: str, head: str) -> None:
    assert ack.consumer_head(reply) == head
    fields = ack.parse(reply)
    assert ack.consumer_sequence_after(reply, head) == fields.consumer_seq
    assert ack.redelivered_after(reply, head) is (fields.delivered > 1)
    assert ack.is_redelivery(reply) is (fields.delivered > 1)


def test_a_tail_that_is_not_an_ack_subjects_has_no_consumer_sequence() -> None:
    head = "$JS.ACK.S.C."
    assert ack.consumer_sequence_after(head + "1.5", head) == -1
    assert ack.consumer_sequence_after(head + "1.5.x.7.0", head) == -1
    assert ack.consumer_sequence_after(head + "1.5.12.7.0", head) == 12


@pytest.mark.parametrize(
    ("reply", "redelivered"),
    [
        (f"$JS.ACK.S.C.1.5.5.{TS}.0", False),
        (f"$JS.ACK.S.C.2.5.6.{TS}.0", True),
        (f"$JS.ACK.S.C.12.5.6.{TS}.0", True),
        (f"$JS.ACK.S.C.10.5.6.{TS}.0", True),  # "1" followed by a digit, not a dot
        (f"$JS.ACK.hub.ACCHASH.S.C.1.5.5.{TS}.0.xyz", False),
        (f"$JS.ACK._.ACCHASH.S.C.3.5.7.{TS}.0.xyz", True),
        *((reply, False) for reply in MALFORMED),
    ],
)
def test_is_redelivery(reply: str, redelivered: bool) -> None:
    assert ack.is_redelivery(reply) is redelivered


def test_the_redelivery_counter_agrees_with_is_redelivery_across_consumers() -> None:
    replies = [
        f"$JS.ACK.S.A.1.1.1.{TS}.0",
        f"$JS.ACK.S.A.2.2.2.{TS}.0",
        f"$JS.ACK.S.B.3.3.1.{TS}.0",  # another consumer: its head is learnt
        "_INBOX.junk",
        f"$JS.ACK.S.B.1.4.2.{TS}.0",
        f"$JS.ACK.hub.H.S.A.5.5.3.{TS}.0.x",
        f"$JS.ACK.S.A.10.6.4.{TS}.0",
    ]
    msgs = [Msg("s", b"", reply) for reply in replies]
    expected = sum(ack.is_redelivery(reply) for reply in replies)
    assert ack.redelivery_counter()(msgs) == expected == 4
    count = ack.redelivery_counter()
    assert sum(count([msg]) for msg in msgs) == expected  # one message per take, as get() does
