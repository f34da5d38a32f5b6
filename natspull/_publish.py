"""What a JetStream publish carries besides its payload: options, records, headers.

Protocol knowledge of publishing lives here, in one place: the headers of message
deduplication (``Nats-Msg-Id``), the expectations checked by the server before it stores a
message (``Nats-Expected-*``), the per-message TTL of ADR-43 (``Nats-TTL``) and the atomic
batches of ADR-50 (``Nats-Batch-*``). Options are parsed once, on the calling thread, into a
:class:`PublishOptions`; ``JetStream.publish``, ``publish_async``, ``publish_many`` and
``publish_batch`` (and the trio face, and the CLI) all go through it.

Facts (observed on nats-server 2.15.1, PROTOCOL.md "Publishing"):

* ``Nats-TTL`` takes whole seconds (``"1"``), a Go duration (``"1s"``) or ``"never"``; under
  one second is refused (err_code 10165), any TTL on a stream without ``allow_msg_ttl``
  too (10166).
* A wrong ``Nats-Expected-Last-Sequence`` / ``-Last-Subject-Sequence`` is 10071, a wrong
  ``Nats-Expected-Last-Msg-Id`` 10070; 0 is a real check ("nothing yet"), not "absent".
* An atomic batch: ``Nats-Batch-Id``, ``Nats-Batch-Sequence`` 1..n, ``Nats-Batch-Commit: 1``
  on the last; the first message is a request answered by an empty reply, the commit by a
  PubAck with ``batch`` and ``count``; at most 1,000 messages (10199 at the commit beyond).

Plain data, no network: any thread.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Union

from ._validate import check_header_value, check_headers, check_int, check_name

__all__ = [
    "BATCH_COMMIT",
    "BATCH_ID",
    "BATCH_SEQUENCE",
    "MAX_BATCH_MESSAGES",
    "BatchAck",
    "Item",
    "Publish",
    "PublishOptions",
    "batch_headers",
    "new_batch_id",
    "publish_item",
    "publish_options",
]

MSG_ID = "Nats-Msg-Id"
EXPECTED_STREAM = "Nats-Expected-Stream"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
TTL = "Nats-TTL"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"

#: ADR-50's limit on the messages of one atomic batch (the server's default; it refuses more
#: at the commit with err_code 10199, after holding the rest in memory).
MAX_BATCH_MESSAGES = 1000

_MAX_SEQUENCE = 2**64 - 1  # the server's sequences are uint64
_MAX_TTL = 2**63 // 10**9  # the server keeps a TTL as int64 nanoseconds

Ttl = Union[int, float, str]


@dataclass(frozen=True)
class Publish:
    """One message for ``publish_many()`` / ``publish_batch()`` with its options.

    ``natspull.Publish(subject, data=b"", headers=None, msg_id=None, ttl=None,
    expected_last_subject_sequence=None)``: the fields mean what the keywords of
    :meth:`natspull.JetStream.publish` do. Checked when published, not when built.
    """

    subject: str
    data: bytes = b""
    headers: dict[str, str] | None = field(default=None, hash=False)
    msg_id: str | None = None
    ttl: Ttl | None = None
    expected_last_subject_sequence: int | None = None


@dataclass(frozen=True)
class BatchAck:
    """The server's acknowledgement of a committed atomic batch (``publish_batch``).

    Attributes:
        stream: the stream that stored the batch.
        seq: the stream sequence of the batch's last message (the first is ``seq - count + 1``).
        count: how many messages the batch stored.
        batch_id: the batch's id (the ``Nats-Batch-Id`` header).
        domain: the JetStream domain, or None.
    """

    stream: str
    seq: int
    count: int
    batch_id: str
    domain: str | None = None


@dataclass(frozen=True)
class PublishOptions:
    """The options of one publish, checked: build it with :func:`publish_options`."""

    msg_id: str | None = None
    ttl: str | None = None  # the header's value
    expected_stream: str | None = None
    expected_last_sequence: int | None = None
    expected_last_subject_sequence: int | None = None
    expected_last_msg_id: str | None = None

    def headers(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """*headers* (checked, copied) with the options' headers added.

        Raises ValueError when *headers* already holds one of them with another value, TypeError
        for headers that are not a dict of str to str.
        """
        headers = check_headers(headers)
        if self is NO_OPTIONS:  # the usual call: nothing to add
            return headers
        extra = {
            name: (option, value)
            for option, name, value in (
                ("msg_id", MSG_ID, self.msg_id),
                ("ttl", TTL, self.ttl),
                ("expected_stream", EXPECTED_STREAM, self.expected_stream),
                ("expected_last_sequence", EXPECTED_LAST_SEQUENCE, _str(self.expected_last_sequence)),
                (
                    "expected_last_subject_sequence",
                    EXPECTED_LAST_SUBJECT_SEQUENCE,
                    _str(self.expected_last_subject_sequence),
                ),
                ("expected_last_msg_id", EXPECTED_LAST_MSG_ID, self.expected_last_msg_id),
            )
            if value is not None
        }
        if not extra:
            return headers
        headers = headers or {}
        for name, (option, value) in extra.items():
            given = headers.get(name, value)
            if given != value:
                raise ValueError(f"{option} {value!r} and headers[{name!r}] ({given!r}) differ: give one")
            headers[name] = value
        return headers


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


NO_OPTIONS = PublishOptions()


def publish_options(
    *,
    msg_id: str | None = None,
    ttl: Ttl | None = None,
    expected_stream: str | None = None,
    expected_last_sequence: int | None = None,
    expected_last_subject_sequence: int | None = None,
    expected_last_msg_id: str | None = None,
) -> PublishOptions:
    """Check the options of a publish (ValueError/TypeError naming the option) into one value."""
    if (
        msg_id is None
        and ttl is None
        and expected_stream is None
        and expected_last_sequence is None
        and expected_last_subject_sequence is None
        and expected_last_msg_id is None
    ):
        return NO_OPTIONS
    return PublishOptions(
        msg_id=_check_id("msg_id", msg_id),
        ttl=check_ttl(ttl),
        expected_stream=None if expected_stream is None else check_name("expected_stream", expected_stream),
        expected_last_sequence=check_int(
            "expected_last_sequence",
            expected_last_sequence,
            minimum=0,
            maximum=_MAX_SEQUENCE,
            allow_none=True,
        ),
        expected_last_subject_sequence=check_int(
            "expected_last_subject_sequence",
            expected_last_subject_sequence,
            minimum=0,
            maximum=_MAX_SEQUENCE,
            allow_none=True,
        ),
        expected_last_msg_id=_check_id("expected_last_msg_id", expected_last_msg_id),
    )


def _check_id(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return check_header_value(name, value)


def check_ttl(value: Any) -> str | None:
    """A message TTL: whole or fractional seconds >= 1, or ``"never"``; the ``Nats-TTL`` value.

    Fractions are rounded down to the millisecond and sent as a Go duration (``"1.5s"``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value == "never":
            return value
        raise ValueError(f'ttl must be a number of seconds >= 1 or "never", got {value!r}')
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'ttl must be a number of seconds >= 1 or "never", got {type(value).__name__}')
    if not math.isfinite(value) or value < 1 or value > _MAX_TTL:
        raise ValueError(
            f'ttl must be a number of seconds between 1 and {_MAX_TTL} or "never", got {value!r}'
        )
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return f"{math.floor(value * 1000)}ms"


# --------------------------------------------------------------------------- items

#: What publish_many()/publish_batch() take: (subject, data), (subject, data, headers), Publish.
Item = Union[tuple[str, bytes], tuple[str, bytes, "dict[str, str] | None"], Publish]


def publish_item(item: Any, expected_stream: str | None = None) -> tuple[str, bytes, dict[str, str] | None]:
    """One item of publish_many()/publish_batch() as (subject, data, headers with the options'
    headers). Raises TypeError/ValueError (the caller adds the index)."""
    if isinstance(item, Publish):
        options = publish_options(
            msg_id=item.msg_id,
            ttl=item.ttl,
            expected_stream=expected_stream,
            expected_last_subject_sequence=item.expected_last_subject_sequence,
        )
        return item.subject, item.data, options.headers(item.headers)
    if isinstance(item, tuple) and len(item) in (2, 3):
        headers = item[2] if len(item) == 3 else None
        options = NO_OPTIONS if expected_stream is None else PublishOptions(expected_stream=expected_stream)
        return item[0], item[1], options.headers(headers)
    raise TypeError(
        f"messages must yield (subject, data), (subject, data, headers) or natspull.Publish, got {item!r:.60}"
    )


def check_items(messages: object) -> Iterable[Any]:
    """The iterable of publish_many()/publish_batch(); TypeError for a str, bytes or non-iterable."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise TypeError(
            "messages must be an iterable of (subject, data) pairs, (subject, data, headers) or "
            f"natspull.Publish, got {type(messages).__name__}"
        )
    return messages


# --------------------------------------------------------------------------- batches


def new_batch_id() -> str:
    """A unique batch id (32 hex digits; the server allows up to 64 characters)."""
    return uuid.uuid4().hex


def batch_headers(
    headers: dict[str, str] | None, batch_id: str, sequence: int, commit: bool
) -> dict[str, str]:
    """*headers* (a copy) with the ADR-50 batch headers of message *sequence* (1-based).

    Raises ValueError when *headers* sets a batch header of its own.
    """
    result = dict(headers or {})
    for name in (BATCH_ID, BATCH_SEQUENCE, BATCH_COMMIT):
        if name in result:
            raise ValueError(f"headers must not set {name}: publish_batch() numbers the batch")
    result[BATCH_ID] = batch_id
    result[BATCH_SEQUENCE] = str(sequence)
    if commit:
        result[BATCH_COMMIT] = "1"
    return result
