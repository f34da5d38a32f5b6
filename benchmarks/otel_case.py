"""OpenTelemetry overhead (case 12): the 128 B for-loop and a no-sleep consume(), three ways.

- ``off``: natspull's instrumentation switched off (what ``NATSPULL_OTEL=0`` does), the
  baseline of the other rows;
- ``no SDK``: instrumentation on, ``opentelemetry-api`` installed (when it is) but no SDK
  configured: the state of every application that does not use OpenTelemetry;
- ``SDK``: an SDK tracer provider (batch span processor, an exporter that drops everything)
  and meter provider (an in-memory reader that is never read), set as the global providers
  for the row and unset afterwards through the API's private globals (as the API's own test
  utilities do), so that the rows can alternate in one process.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from natspull._observe import _otel

from ._env import Env
from ._registry import MSGS_PER_S, Sample, case
from .consume import consume_rate
from .throughput import iterate

SIZE = 128
OTEL = "otel"
OFF = "off"
NO_SDK = "no SDK" if importlib.util.find_spec("opentelemetry") else "not installed"
SDK = "SDK"


@contextmanager
def _mode(mode: str) -> Iterator[None]:
    if mode == OFF:
        _otel.set_enabled(False)
        try:
            yield
        finally:
            _otel.set_enabled(True)
    elif mode == SDK:
        with _sdk_providers():
            yield
    else:
        _otel.current()  # the one-time import of the API: not part of the per-message cost
        yield


@contextmanager
def _sdk_providers() -> Iterator[None]:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.util._once import Once

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    saved = (trace._TRACER_PROVIDER, metrics_internal._METER_PROVIDER)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _otel.current()  # builds the spans' and instruments' state once, outside the timing
    try:
        yield
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        trace._TRACER_PROVIDER, metrics_internal._METER_PROVIDER = saved
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        metrics_internal._METER_PROVIDER_SET_ONCE = Once()


def _modes() -> list[str]:
    sdk = importlib.util.find_spec("opentelemetry.sdk") is not None
    return [OFF, NO_SDK, SDK] if sdk else [OFF, NO_SDK]


@case("12", OTEL, "natspull with OpenTelemetry off / API without SDK / SDK: 128 B for-loop, consume()")
def otel_overhead(env: Env) -> list[Sample]:
    samples = []
    for run, kind, n in ((_iterate, "for-loop", env.sizes.small), (_consume, "consume", env.sizes.consume)):
        for mode in _modes():
            with _mode(mode):
                rate = run(env, n)
            baseline = None if mode == OFF else (OTEL, f"{kind}, {OFF}")
            samples.append(Sample(f"{kind}, {mode}", rate, MSGS_PER_S, n=n, baseline=baseline))
    return samples


def _iterate(env: Env, n: int) -> float:
    return iterate(env, "", SIZE, n, ack=True).value


def _consume(env: Env, n: int) -> float:
    return consume_rate(env, n, workers=1, pause=0)
