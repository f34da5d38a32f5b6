"""The supervisor's aggregated state, and its Prometheus exposition (``/metrics``).

The main thread builds a frozen :class:`Snapshot` on every tick from the processes' reports (its
counters add the final counts of dead processes to the live ones', so they never go down) and
hands it to the HTTP thread; :func:`render` turns the latest one, and the consumer's lag from the
supervisor's own connection, into the text format with a custom ``prometheus_client`` collector
on a registry of its own (not the global one, and not its multiprocess mode: the supervisor
already has every number). ``prometheus_client`` is imported only here, only when
``/metrics`` is asked for (the ``metrics`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._child import DURATION_BUCKETS
from ._supervisor_client import LAG_MAX_AGE, Lag

__all__ = ["MetricsUnavailable", "Snapshot", "render"]


class MetricsUnavailable(Exception):
    """prometheus_client is not installed."""


@dataclass(frozen=True)
class Snapshot:
    """What the supervisor knows at one tick. Built by the main thread, read by any."""

    live: bool = True  # running, not ending on a crash loop or an error
    ready: bool = False  # every process connected and consuming
    processes: int = 0  # alive
    restarts: int = 0
    handled: int = 0
    failed: int = 0
    terminated: int = 0  # +TERM sent by consume()'s term_after and for poison messages
    poison: int = 0
    in_flight: int = 0
    # handler durations: a count per DURATION_BUCKETS bound (not cumulative), then the rest
    buckets: tuple[int, ...] = field(default=(0,) * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0


def render(snapshot: Snapshot, lag: Lag | None, stream: str, consumer: str) -> tuple[bytes, str]:
    """The exposition body and its content type. Raises MetricsUnavailable without the extra."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    except ImportError:
        raise MetricsUnavailable(
            "/metrics needs prometheus_client: pip install 'natspull[metrics]'"
        ) from None
    labels = ["stream", "consumer"]
    values = [stream, consumer]

    class Collector:
        def collect(self) -> Iterator[Any]:
            def gauge(name: str, doc: str, value: float) -> Any:
                family = GaugeMetricFamily(name, doc, labels=labels)
                family.add_metric(values, value)
                return family

            def counter(name: str, doc: str, value: float) -> Any:
                family = CounterMetricFamily(name, doc, labels=labels)
                family.add_metric(values, value)
                return family

            s = snapshot
            yield gauge("natspull_worker_processes", "Worker processes alive.", s.processes)
            yield counter("natspull_worker_restarts", "Worker processes restarted.", s.restarts)
            yield counter("natspull_messages_handled", "Handler calls that returned.", s.handled)
            yield counter("natspull_messages_failed", "Handler calls that raised.", s.failed)
            yield counter(
                "natspull_messages_terminated",
                "Messages terminated (+TERM): after --term-after failed deliveries, or as poison.",
                s.terminated,
            )
            yield counter(
                "natspull_poison_messages",
                "Messages terminated for being in a handler at --poison-after process deaths.",
                s.poison,
            )
            yield gauge("natspull_messages_in_flight", "Messages in handlers now.", s.in_flight)
            histogram = HistogramMetricFamily(
                "natspull_handler_duration_seconds", "Handler call durations.", labels=labels
            )
            cumulative, total = [], 0
            for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], s.buckets):
                total += count
                cumulative.append((bound, total))
            histogram.add_metric(values, cumulative, s.duration_sum)
            yield histogram
            if lag is not None and time.monotonic() - lag.at <= LAG_MAX_AGE:
                yield gauge(
                    "natspull_consumer_pending_messages",
                    "The consumer's num_pending: stream messages not yet delivered.",
                    lag.pending,
                )
                yield gauge(
                    "natspull_consumer_ack_pending_messages",
                    "The consumer's num_ack_pending: delivered, not yet acknowledged.",
                    lag.ack_pending,
                )

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
