"""JetStream ack subjects: the one module that knows their tokens (ADR-15).

A stream message's reply subject carries its metadata::

    v1, 9 tokens:   $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>
    v2, 12 tokens:  $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>
                        .<consumer seq>.<timestamp>.<pending>.<token>

v2 may grow more tokens at the end; its domain ``_`` means "no domain". Any other count of
tokens is not an ack subject (as nats.go's ``internal/parser``). The positions below are v2's;
:func:`tokens` puts a v1 subject in them (empty domain and account hash).

Two ways to read one:

* :func:`tokens` / :func:`parse`: split it, for metadata and for checks that run rarely.
* The fast path, for per-message checks: :func:`consumer_head` is the subject up to and
  including the consumer token and its dot. Every ack subject of that consumer starts with it,
  so a prefix test identifies one, and what follows the head is
  ``<delivered>.<stream seq>.<consumer seq>....`` (:func:`redelivered_after`,
  :func:`consumer_sequence_after`). The queue's redelivery count (:func:`redelivery_counter`) and
  the ordered consumer's sequence check use it.

Plain functions of strings; any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

__all__ = [
    "ACCOUNT_HASH",
    "CONSUMER",
    "CONSUMER_SEQ",
    "DELIVERED",
    "DOMAIN",
    "PENDING",
    "PREFIX",
    "STREAM",
    "STREAM_SEQ",
    "TIMESTAMP",
    "TOKEN",
    "AckFields",
    "consumer_head",
    "consumer_sequence_after",
    "is_redelivery",
    "parse",
    "redelivered_after",
    "redelivery_counter",
    "stream_sequence",
    "tokens",
]

PREFIX = "$JS.ACK."
V1_TOKENS = 9
V2_MIN_TOKENS = 12

# Token positions (v2; tokens() shifts a v1 subject into them).
DOMAIN = 2
ACCOUNT_HASH = 3
STREAM = 4
CONSUMER = 5
DELIVERED = 6
STREAM_SEQ = 7
CONSUMER_SEQ = 8
TIMESTAMP = 9
PENDING = 10
TOKEN = 11  # v2 only

# Positions in what follows consumer_head(): "<delivered>.<stream seq>.<consumer seq>...."
_AFTER_HEAD_CONSUMER_SEQ = CONSUMER_SEQ - CONSUMER - 1
_V1_SHIFT = ["", ""]  # the domain and account hash a v1 subject lacks
_V1_SHIFTED = V1_TOKENS + len(_V1_SHIFT)  # (fewer than V2_MIN_TOKENS: a shifted v1 stays recognisable)


class AckFields(NamedTuple):
    """An ack subject's fields; ``domain`` is None for v1, "" for v2's ``_``."""

    domain: str | None
    account_hash: str
    stream: str
    consumer: str
    delivered: int
    stream_seq: int
    consumer_seq: int
    timestamp: int  # nanoseconds since the epoch
    pending: int


def tokens(reply: str) -> list[str] | None:
    """The tokens of ack subject *reply* at the v2 positions above (a v1 subject gets "" for
    domain and account hash), or None when *reply* is not an ack subject. Numbers unchecked."""
    if not reply.startswith(PREFIX):
        return None
    parts = reply.split(".")
    if len(parts) == V1_TOKENS:
        parts[DOMAIN:DOMAIN] = _V1_SHIFT
        return parts
    if len(parts) >= V2_MIN_TOKENS:
        return parts
    return None


def parse(reply: str) -> AckFields:
    """Every field of ack subject *reply*. Raises ValueError when it is not one (a token count
    of neither form, or a number that is not one)."""
    parts = tokens(reply)
    if parts is None:
        raise ValueError(f"{reply!r} is not a JetStream ack subject")
    if len(parts) == _V1_SHIFTED:
        domain: str | None = None
    else:
        domain = "" if parts[DOMAIN] == "_" else parts[DOMAIN]
    return AckFields(
        domain=domain,
        account_hash=parts[ACCOUNT_HASH],
        stream=parts[STREAM],
        consumer=parts[CONSUMER],
        delivered=int(parts[DELIVERED]),
        stream_seq=int(parts[STREAM_SEQ]),
        consumer_seq=int(parts[CONSUMER_SEQ]),
        timestamp=int(parts[TIMESTAMP]),
        pending=int(parts[PENDING]),
    )


def stream_sequence(reply: str) -> int:
    """The stream sequence of ack subject *reply*. Raises ValueError when it is not one."""
    parts = tokens(reply)
    if parts is None:
        raise ValueError(f"{reply!r} is not a JetStream ack subject")
    return int(parts[STREAM_SEQ])


# ------------------------------------------------------------------------------- fast path


def consumer_head(reply: str) -> str:
    """*reply* up to and including its consumer token and the dot after it
    (``"$JS.ACK.<stream>.<consumer>."``, v2: with ``<domain>.<account hash>.``), or "" when it
    is not an ack subject."""
    if not reply.startswith(PREFIX):
        return ""
    parts = reply.split(".")
    if len(parts) == V1_TOKENS:
        end = CONSUMER + 1 - len(_V1_SHIFT)
    elif len(parts) >= V2_MIN_TOKENS:
        end = CONSUMER + 1
    else:
        return ""
    return ".".join(parts[:end]) + "."


def redelivered_after(reply: str, head: str) -> bool:
    """True when ack subject *reply*, which starts with *head* (:func:`consumer_head`), says
    ``delivered > 1``: one prefix test, no split."""
    return not reply.startswith("1.", len(head))


def consumer_sequence_after(reply: str, head: str) -> int:
    """The consumer sequence of ack subject *reply*, which starts with *head*
    (:func:`consumer_head`); -1 when the tokens after the head are not an ack subject's."""
    try:
        return int(reply[len(head) :].split(".", _AFTER_HEAD_CONSUMER_SEQ + 1)[_AFTER_HEAD_CONSUMER_SEQ])
    except (IndexError, ValueError):
        return -1


def is_redelivery(reply: str) -> bool:
    """True when ack subject *reply* says ``delivered > 1`` (False for anything else)."""
    head = consumer_head(reply)
    return bool(head) and redelivered_after(reply, head)


class _Replied(Protocol):
    @property
    def reply(self) -> str: ...


def redelivery_counter() -> Callable[[Iterable[_Replied]], int]:
    """A function counting the redeliveries (``delivered > 1``) among messages, by their ack
    subjects. It remembers the last consumer head it saw, so for one consumer's messages the
    count costs two prefix tests each. One per queue: the head is its only state, kept under
    the caller's lock."""
    head = ""

    def count(msgs: Iterable[_Replied]) -> int:
        nonlocal head
        found = 0
        for msg in msgs:
            reply = msg.reply
            if not (head and reply.startswith(head)):
                head = consumer_head(reply)  # another consumer's (or not an ack subject)
            if head and not reply.startswith("1.", len(head)):  # redelivered_after(), inlined
                found += 1
        return found

    return count
