"""nats-py's JetStream dataclasses, re-exported: the one non-wire module allowed to import ``nats``.

natspull reuses ``nats.js.api`` (stream configs and infos, PubAck, the policy enums) and
``nats.aio.msg.Msg.Metadata`` as its public types instead of copying them
(``_consumer_types.py`` extends nats-py's consumer config and info the same way). They
are plain dataclasses and enums with no behaviour that touches the network, so the rest of
natspull may type against them; everything that *does* talk to nats-py goes through the wire
modules (``_wire.py``, ``_parser.py``, ``_translate.py``). The import-linter contract in
``setup.cfg`` allows exactly this module and ``_consumer_types.py`` besides those.
"""

from __future__ import annotations

from typing import Any, cast

from nats.aio.msg import Msg as _NatsMsg
from nats.js.api import (
    AckPolicy,
    DeliverPolicy,
    DiscardPolicy,
    PubAck,
    ReplayPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerLimits,
    StreamInfo,
)

__all__ = [
    "AckPolicy",
    "DeliverPolicy",
    "DiscardPolicy",
    "Metadata",
    "PubAck",
    "ReplayPolicy",
    "RetentionPolicy",
    "SequencePair",
    "StorageType",
    "StreamConfig",
    "StreamConsumerLimits",
    "StreamInfo",
    "stream_info",
]

Metadata = _NatsMsg.Metadata
SequencePair = _NatsMsg.Metadata.SequencePair


def stream_info(response: dict[str, Any]) -> StreamInfo:
    """A StreamInfo from a JetStream API response."""
    return cast(StreamInfo, StreamInfo.from_response(response))
