"""Continuous-pull option rules, as in nats.go's ``jetstream`` package."""

from __future__ import annotations

from typing import Any

from ._pull import PullOptions
from ._queue import Flow
from ._validate import check_int, check_number

__all__ = ["continuous_pull"]

DEFAULT_MAX_MESSAGES = 500
_UNBOUNDED_MESSAGES = 1_000_000  # batch size when flow is limited by max_bytes (nats.go does the same)
MIN_EXPIRES = 1.0
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
) -> tuple[Flow, PullOptions]:
    """Validate the options of ``messages()``/``consume()`` and derive the pull settings.

    * ``max_messages`` (default 500) and ``max_bytes`` are exclusive;
    * ``expires`` >= 1 s (default 30 s);
    * ``heartbeat`` defaults to expires/2 capped at 30 s; allowed 0.5-30 s and <= expires/2;
    * thresholds default to half of the maximum and may not exceed it;
    * ``stop_after`` >= 1 limits the messages handed out (and so the pulls).

    Raises ValueError/TypeError naming the option(s).
    """
    if max_messages is not None and max_bytes is not None:
        raise ValueError("max_messages and max_bytes are exclusive: give one of them")
    if threshold_bytes is not None and max_bytes is None:
        raise ValueError("threshold_bytes needs max_bytes")
    if threshold_messages is not None and max_bytes is not None:
        raise ValueError("threshold_messages goes with max_messages, not with max_bytes")
    expires = check_number("expires", expires, minimum=MIN_EXPIRES)
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
    if max_bytes is not None:
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
        )
    return flow, PullOptions(expires=expires, heartbeat=heartbeat)
