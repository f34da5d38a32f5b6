"""Pull option rules, as in nats.go's ``jetstream`` package: continuous pulls, priority groups."""

from __future__ import annotations

from typing import Any

from .._consumer_types import ConsumerConfig, PriorityPolicy, check_group
from .._validate import check_int, check_number
from ._pull import PullGroup, PullOptions
from ._queue import Flow

__all__ = ["continuous_pull", "pin_keepalive", "pull_group"]

MAX_PRIORITY = 9
DEFAULT_PRIORITY_TIMEOUT = 120.0  # the server's default for pinned_client


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


DEFAULT_MAX_MESSAGES = 500
_UNBOUNDED_MESSAGES = 1_000_000  # batch size when flow is limited by max_bytes (nats.go does the same)
MIN_EXPIRES = 1.0
DEFAULT_EXPIRES = 30.0
MIN_HEARTBEAT = 0.5
MAX_HEARTBEAT = 30.0


def continuous_pull(
    *,
    max_messages: Any = None,
    max_bytes: Any = None,
    expires: Any = 30.0,
    heartbeat: Any = None,
    threshold_messages: Any = None,
    threshold_bytes: Any = None,
    stop_after: Any = None,
    group: PullGroup | None = None,
    max_expires: float | None = None,
) -> tuple[Flow, PullOptions]:
    """Validate the options of ``messages()``/``consume()`` and derive the pull settings.

    * ``max_messages`` (default 500) or ``max_bytes`` bound what is pending; given both,
      ``max_messages`` bounds it and every pull asks for at most ``max_bytes`` (nats.go's
      PullMaxMessagesWithBytesLimit);
    * ``expires`` >= 1 s (default 30 s; None: the default); with *max_expires* (a pinned
      client's keep-alive, see :func:`pin_keepalive`) the default is that and a larger value is
      refused;
    * ``heartbeat`` defaults to expires/2 capped at 30 s; allowed 0.5-30 s and <= expires/2;
    * thresholds default to half of the maximum and may not exceed it;
    * ``stop_after`` >= 1 limits the messages handed out (and so the pulls).

    Raises ValueError/TypeError naming the option(s).
    """
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
        max_bytes = check_int("max_bytes", max_bytes, minimum=1, maximum=2**40)
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
        request_bytes = check_int("max_bytes", max_bytes, minimum=1, maximum=2**40) if both else 0
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
    return flow, PullOptions(expires=expires, heartbeat=heartbeat, group=group)
