"""Pull settings: every option of a pull, declared here once and validated once.

nats.go parses a pull's options once (``parseConsumeOpts`` in ``jetstream/pull.go``) and
passes the result on; so does natspull. The public calls keep their keyword arguments
(``Consumer.messages()``/``consume()``/``fetch()``, ``OrderedConsumer``'s, the trio faces)
and turn them into one :class:`PullSettings` - continuous pulls through :func:`pull_settings`,
one request through :func:`fetch_settings` - which the pull engine (``_pull``), its queue
(``PullSettings.flow``) and its event thread read. Nothing validates an option twice.

The rules are nats.go's, plus the priority groups of ADR-42 checked against the consumer's
cached config (:func:`pull_group`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._consumer_types import ConsumerConfig, ConsumerInfo, PriorityPolicy, check_group
from .._observe._events import ConsumerEvent, check_on_event
from .._validate import check_int, check_number
from ._queue import Flow

__all__ = ["PullGroup", "PullSettings", "fetch_settings", "pin_keepalive", "pull_group", "pull_settings"]

MAX_PRIORITY = 9
DEFAULT_PRIORITY_TIMEOUT = 120.0  # the server's default for pinned_client
DEFAULT_MAX_MESSAGES = 500
_UNBOUNDED_MESSAGES = 1_000_000  # batch size when flow is limited by max_bytes (nats.go does the same)
MIN_EXPIRES = 1.0
DEFAULT_EXPIRES = 30.0
MIN_HEARTBEAT = 0.5
MAX_HEARTBEAT = 30.0
MAX_BATCH = 1_000_000
MAX_BYTES = 2**40


class PullGroup:
    """The priority-group fields of every pull an engine sends (ADR-42; see :func:`pull_group`).

    ``pinned`` says the consumer's policy is ``pinned_client``: the engine then tracks the pin.
    Zero means "not sent" for ``min_pending``, ``min_ack_pending`` and ``priority`` (the
    server's defaults). Immutable; any thread.
    """

    __slots__ = ("group", "min_ack_pending", "min_pending", "pinned", "priority")

    def __init__(
        self,
        group: str,
        *,
        min_pending: int = 0,
        min_ack_pending: int = 0,
        priority: int = 0,
        pinned: bool = False,
    ) -> None:
        self.group = group
        self.min_pending = min_pending
        self.min_ack_pending = min_ack_pending
        self.priority = priority
        self.pinned = pinned

    def __repr__(self) -> str:
        return (
            f"PullGroup({self.group!r}, min_pending={self.min_pending}, "
            f"min_ack_pending={self.min_ack_pending}, priority={self.priority}, pinned={self.pinned})"
        )

    def fields(self, pin_id: str | None) -> dict[str, Any]:
        """The request fields, with the pin *pin_id* as ``id`` when there is one."""
        fields: dict[str, Any] = {"group": self.group}
        if self.min_pending:
            fields["min_pending"] = self.min_pending
        if self.min_ack_pending:
            fields["min_ack_pending"] = self.min_ack_pending
        if self.priority:
            fields["priority"] = self.priority
        if pin_id:
            fields["id"] = pin_id
        return fields


@dataclass(frozen=True)
class PullSettings:
    """Everything one pull engine is told: the validated options of one read.

    Built only by :func:`pull_settings` (``messages()``, ``consume()``) and
    :func:`fetch_settings` (``fetch()``, ``next()``); the engine reads nothing else. Where each
    public option ends up:

    ==============================  =============================================================
    ``max_messages`` / ``batch``    ``flow.max_msgs``: the most messages pending (requested and
                                    not yet released by the application)
    ``max_bytes``                   ``flow.max_bytes`` (alone: the most bytes pending), or
                                    ``flow.request_bytes`` (with ``max_messages``: each pull's cap)
    ``threshold_messages`` /        ``flow.threshold_msgs`` / ``flow.threshold_bytes``: a pull for
    ``threshold_bytes``             the difference goes out when pending drops below them
    ``stop_after``                  ``flow.limit``: hand out at most that many messages
    ``expires`` / ``max_wait``      :attr:`expires`
    ``heartbeat``                   :attr:`heartbeat`
    ``no_wait``                     :attr:`no_wait`
    ``error_on_missing_heartbeat``  :attr:`error_on_missing_heartbeat`
    ``on_event``                    :attr:`on_event`
    ``group``, ``min_pending``,     :attr:`group` (a :class:`PullGroup`, checked against the
    ``min_ack_pending``,            consumer's config)
    ``priority``
    ``max_lease``                   :attr:`max_lease`
    ==============================  =============================================================

    Immutable; any thread.
    """

    #: Pull sizing, the part the queue reads (``_queue.Flow``).
    flow: Flow
    #: Seconds each pull request waits on the server before it expires (> 0).
    expires: float
    #: The idle-heartbeat interval asked of the server (seconds); None: none asked.
    heartbeat: float | None
    #: The priority-group fields of every pull; None for a consumer without groups.
    group: PullGroup | None = None
    #: Continuous pulls: raise NoHeartbeatError from ``next()`` once per missed heartbeat.
    error_on_missing_heartbeat: bool = False
    #: The application's ``on_event`` (run on a ``natspull-events-N`` thread); None: none.
    on_event: Callable[[ConsumerEvent], Any] | None = None
    #: ``fetch()``: one request, then the engine is done (mode ``_modes.OneShot``).
    one_shot: bool = False
    #: ``fetch(no_wait=True)``: the server answers at once with what it has (one-shot only).
    no_wait: bool = False
    #: Continuous pulls: lease every message from its arrival, for at most this many seconds
    #: while natspull holds it (``_lease.LeaseKeeper``); None: no bound; 0: no lease.
    max_lease: float | None = 3600.0


def pull_group(
    config: ConsumerConfig,
    where: str,
    *,
    group: Any = None,
    min_pending: Any = None,
    min_ack_pending: Any = None,
    priority: Any = None,
) -> PullGroup | None:
    """Validate the priority-group options of a pull against the consumer's *config*.

    The server answers a bad combination with a 400 that ends the pull; natspull refuses it
    before anything is sent (ValueError/TypeError naming the option and what is allowed):

    * a consumer with priority groups needs ``group=`` (one of them); one without takes none;
    * ``min_pending`` / ``min_ack_pending`` (ints >= 1) need the ``overflow`` policy;
    * ``priority`` (0-9, 0 is served first) needs the ``prioritized`` policy.

    *where* names the consumer in the messages. Returns None for a consumer without groups.
    """
    groups = list(config.priority_groups or ())
    policy = config.priority_policy
    if group is not None:
        group = check_group("group", group)
    if not groups:
        if group is not None:
            raise ValueError(f"group={group!r}: consumer {where} has no priority groups")
        for name, value in (
            ("min_pending", min_pending),
            ("min_ack_pending", min_ack_pending),
            ("priority", priority),
        ):
            if value is not None:
                raise ValueError(f"{name} needs a consumer with priority groups; {where} has none")
        return None
    if group is None:
        raise ValueError(f"consumer {where} has priority groups {groups!r}: pass group= (one of them)")
    if group not in groups:
        raise ValueError(
            f"group {group!r} is not a priority group of consumer {where} (its groups: {groups!r})"
        )
    policy_name = getattr(policy, "value", policy)
    min_pending = check_int("min_pending", min_pending, maximum=2**63 - 1, allow_none=True)
    min_ack_pending = check_int("min_ack_pending", min_ack_pending, maximum=2**63 - 1, allow_none=True)
    for name, value in (("min_pending", min_pending), ("min_ack_pending", min_ack_pending)):
        if value is not None and policy is not PriorityPolicy.OVERFLOW:
            raise ValueError(f"{name} needs priority_policy 'overflow'; consumer {where} has {policy_name!r}")
    priority = check_int("priority", priority, minimum=0, maximum=MAX_PRIORITY, allow_none=True)
    if priority is not None and policy is not PriorityPolicy.PRIORITIZED:
        raise ValueError(
            f"priority needs priority_policy 'prioritized'; consumer {where} has {policy_name!r}"
        )
    return PullGroup(
        group,
        min_pending=min_pending or 0,
        min_ack_pending=min_ack_pending or 0,
        priority=priority or 0,
        pinned=policy is PriorityPolicy.PINNED_CLIENT,
    )


def pin_keepalive(config: ConsumerConfig) -> float:
    """How long a pinned client's pull may wait (its ``expires``) so that the next pull, with
    the pin, reaches the server before ``priority_timeout`` runs out: half of it, within
    1-30 s. The server restarts the pin's timer only when a pull with the pin *arrives*."""
    timeout = config.priority_timeout or DEFAULT_PRIORITY_TIMEOUT
    return min(max(timeout / 2, MIN_EXPIRES), 30.0)


def pull_settings(
    consumer: ConsumerInfo | None = None,
    *,
    max_messages: Any = None,
    max_bytes: Any = None,
    expires: Any = None,
    heartbeat: Any = None,
    threshold_messages: Any = None,
    threshold_bytes: Any = None,
    stop_after: Any = None,
    error_on_missing_heartbeat: Any = False,
    on_event: Any = None,
    group: Any = None,
    min_pending: Any = None,
    min_ack_pending: Any = None,
    priority: Any = None,
    max_lease: Any = 3600.0,
) -> PullSettings:
    """Validate the options of continuous pulls (``messages()``/``consume()``) into settings.

    *consumer* is the cached info of the consumer the pulls go to: its priority groups and
    policy decide which group options it takes (:func:`pull_group`); None (an ordered
    consumer's own consumer) takes none.

    * ``max_messages`` (default 500) or ``max_bytes`` bound what is pending; given both,
      ``max_messages`` bounds it and every pull asks for at most ``max_bytes`` (nats.go's
      PullMaxMessagesWithBytesLimit);
    * ``expires`` >= 1 s (default 30 s; None: the default); a ``pinned_client`` consumer's
      default is its keep-alive (:func:`pin_keepalive`) and a larger value is refused;
    * ``heartbeat`` defaults to expires/2 capped at 30 s; allowed 0.5-30 s and <= expires/2;
    * thresholds default to half of the maximum and may not exceed it;
    * ``stop_after`` >= 1 limits the messages handed out (and so the pulls);
    * ``error_on_missing_heartbeat`` is a bool, ``on_event`` a callable or None;
    * ``max_lease`` seconds >= 0 (0: no lease) or None (no bound).

    Raises ValueError/TypeError naming the option(s). Never blocks; any thread.
    """
    if not isinstance(error_on_missing_heartbeat, bool):
        raise TypeError("error_on_missing_heartbeat must be a bool")
    max_lease = check_number("max_lease", max_lease, allow_none=True)
    check_on_event(on_event)
    pull = _group(consumer, group, min_pending, min_ack_pending, priority)
    # A pinned client's idle request must end (and be renewed, with the pin) before the pin's
    # timer runs out: expires defaults to, and may not exceed, the keep-alive.
    max_expires = (
        pin_keepalive(consumer.config) if consumer is not None and pull is not None and pull.pinned else None
    )
    both = max_messages is not None and max_bytes is not None
    if threshold_bytes is not None and (max_bytes is None or both):
        raise ValueError(
            "threshold_bytes needs max_bytes alone (with max_messages too, max_bytes limits each pull)"
        )
    if threshold_messages is not None and max_bytes is not None and not both:
        raise ValueError("threshold_messages goes with max_messages, not with max_bytes alone")
    if expires is None:
        expires = DEFAULT_EXPIRES if max_expires is None else max_expires
    expires = check_number("expires", expires, minimum=MIN_EXPIRES)
    if max_expires is not None and expires > max_expires:
        raise ValueError(
            f"expires ({expires:g} s) must be at most {max_expires:g} s for a pinned client: half of the "
            "consumer's priority_timeout, so that its next pull renews the pin in time"
        )
    if heartbeat is None:
        heartbeat = min(expires / 2, MAX_HEARTBEAT)
    else:
        heartbeat = check_number("heartbeat", heartbeat, minimum=MIN_HEARTBEAT)
        if heartbeat > MAX_HEARTBEAT:
            raise ValueError(
                f"heartbeat must be between {MIN_HEARTBEAT} and {MAX_HEARTBEAT} s, got {heartbeat:g}"
            )
        if heartbeat > expires / 2:
            raise ValueError(f"heartbeat ({heartbeat:g} s) must be at most half of expires ({expires:g} s)")
    stop_after = check_int("stop_after", stop_after, allow_none=True)
    if max_bytes is not None and not both:
        max_bytes = check_int("max_bytes", max_bytes, minimum=1, maximum=MAX_BYTES)
        threshold_bytes = check_int("threshold_bytes", threshold_bytes, maximum=max_bytes, allow_none=True)
        flow = Flow(
            max_msgs=_UNBOUNDED_MESSAGES,
            max_bytes=max_bytes,
            threshold_msgs=_UNBOUNDED_MESSAGES // 2,
            threshold_bytes=threshold_bytes if threshold_bytes is not None else max(max_bytes // 2, 1),
            limit=stop_after,
        )
    else:
        max_messages = check_int(
            "max_messages", DEFAULT_MAX_MESSAGES if max_messages is None else max_messages
        )
        # With max_messages too, max_bytes only caps each pull request.
        request_bytes = check_int("max_bytes", max_bytes, minimum=1, maximum=MAX_BYTES) if both else 0
        threshold_messages = check_int(
            "threshold_messages", threshold_messages, maximum=max_messages, allow_none=True
        )
        flow = Flow(
            max_msgs=max_messages,
            max_bytes=0,
            threshold_msgs=threshold_messages
            if threshold_messages is not None
            else max(max_messages // 2, 1),
            threshold_bytes=0,
            limit=stop_after,
            request_bytes=request_bytes,
        )
    return PullSettings(
        flow,
        expires,
        heartbeat,
        group=pull,
        error_on_missing_heartbeat=error_on_missing_heartbeat,
        on_event=on_event,
        max_lease=max_lease,
    )


def fetch_settings(
    consumer: ConsumerInfo | None = None,
    *,
    batch: Any = 1,
    max_wait: Any = 30.0,
    max_bytes: Any = None,
    no_wait: Any = False,
    heartbeat: Any = None,
    group: Any = None,
    min_pending: Any = None,
    min_ack_pending: Any = None,
    priority: Any = None,
) -> PullSettings:
    """Validate the options of one request (``fetch()``/``next()``) into one-shot settings.

    *consumer* as for :func:`pull_settings`. ``batch`` 1-1,000,000 messages; ``max_wait`` > 0 s
    (>= 0 with ``no_wait``); ``max_bytes`` >= 1 caps the request; ``heartbeat`` (0.5-30 s, at
    most max_wait/2, not with ``no_wait``). Raises ValueError/TypeError naming the option.
    Never blocks; any thread.
    """
    pull = _group(consumer, group, min_pending, min_ack_pending, priority)
    batch = check_int("batch", batch, maximum=MAX_BATCH)
    max_wait = check_number("max_wait", max_wait, exclusive=not no_wait)
    max_bytes = check_int("max_bytes", max_bytes, maximum=MAX_BYTES, allow_none=True)
    if not isinstance(no_wait, bool):
        raise TypeError(f"no_wait must be a bool, got {type(no_wait).__name__}")
    if heartbeat is not None:
        heartbeat = check_number("heartbeat", heartbeat, minimum=MIN_HEARTBEAT)
        if no_wait:
            raise ValueError("heartbeat does not go with no_wait=True (the request ends at once)")
        if heartbeat > MAX_HEARTBEAT or heartbeat > max_wait / 2:
            raise ValueError(
                f"heartbeat must be between {MIN_HEARTBEAT} and {MAX_HEARTBEAT} s and at most half "
                f"of max_wait ({max_wait:g} s), got {heartbeat:g}"
            )
    flow = Flow(
        max_msgs=batch, max_bytes=max_bytes or 0, threshold_msgs=batch, threshold_bytes=max_bytes or 0
    )
    return PullSettings(flow, max_wait, heartbeat, group=pull, one_shot=True, no_wait=no_wait)


def _group(
    consumer: ConsumerInfo | None, group: Any, min_pending: Any, min_ack_pending: Any, priority: Any
) -> PullGroup | None:
    """The validated priority-group options of a pull to *consumer*."""
    if consumer is None:
        return None  # an ordered consumer's own consumer: no groups (its calls take no group options)
    return pull_group(
        consumer.config,
        f"{consumer.stream_name}/{consumer.name}",
        group=group,
        min_pending=min_pending,
        min_ack_pending=min_ack_pending,
        priority=priority,
    )
