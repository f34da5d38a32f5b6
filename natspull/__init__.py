"""natspull: blocking, thread-safe JetStream pull consumers for Python.

::

    import natspull

    with natspull.connect("nats://127.0.0.1:4222") as client:
        js = client.jetstream()
        consumer = js.consumer("ORDERS", "worker")
        with consumer.messages() as msgs:
            for msg in msgs:
                print(msg.data)
                msg.ack()

Public names are re-exported here; modules starting with ``_`` are private.
"""

from ._client import Client, connect
from ._consumer import Consumer
from ._consumer_types import ConsumerConfig, ConsumerInfo, PauseState, PriorityGroupState, PriorityPolicy
from ._engine._retry import Backoff
from ._iterator import Messages
from ._jetstream import JetStream
from ._lazy import LazyClient
from ._msg import Metadata, Msg
from ._observe._events import ConsumerEvent
from ._observe._stats import ClientStats, ConsumeStats, MessagesStats
from ._ordered import OrderedConsumer, OrderedMessages
from ._pool import ConsumeContext
from ._publish import BatchAck, Publish
from ._signals import shutdown_on_signals
from ._types import (
    AckPolicy,
    DeliverPolicy,
    DiscardPolicy,
    PubAck,
    ReplayPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from ._version import __version__
from ._workers import run_workers, worker_client
from .errors import (
    ConnectError,
    ConnectionClosedError,
    ConsumerDeletedError,
    ConsumerNotFoundError,
    Error,
    ForkedError,
    IteratorClosedError,
    JetStreamAPIError,
    MsgAlreadyAckedError,
    NoHeartbeatError,
    NotSupportedError,
    OrderedConsumerResetError,
    OrderedConsumerUsageError,
    PermissionError,
    StreamNotFoundError,
    TimeoutError,
)

__all__ = [
    "AckPolicy",
    "Backoff",
    "BatchAck",
    "Client",
    "ClientStats",
    "ConnectError",
    "ConnectionClosedError",
    "ConsumeContext",
    "ConsumeStats",
    "Consumer",
    "ConsumerConfig",
    "ConsumerDeletedError",
    "ConsumerEvent",
    "ConsumerInfo",
    "ConsumerNotFoundError",
    "DeliverPolicy",
    "DiscardPolicy",
    "Error",
    "ForkedError",
    "IteratorClosedError",
    "JetStream",
    "JetStreamAPIError",
    "LazyClient",
    "Messages",
    "MessagesStats",
    "Metadata",
    "Msg",
    "MsgAlreadyAckedError",
    "NoHeartbeatError",
    "NotSupportedError",
    "OrderedConsumer",
    "OrderedConsumerResetError",
    "OrderedConsumerUsageError",
    "OrderedMessages",
    "PauseState",
    "PermissionError",
    "PriorityGroupState",
    "PriorityPolicy",
    "PubAck",
    "Publish",
    "ReplayPolicy",
    "RetentionPolicy",
    "StorageType",
    "StreamConfig",
    "StreamInfo",
    "StreamNotFoundError",
    "TimeoutError",
    "__version__",
    "connect",
    "run_workers",
    "shutdown_on_signals",
    "worker_client",
]
