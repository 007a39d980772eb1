"""Pieces shared by the relays and the driver: the wire message, subjects, tracing setup."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HOPS = 4
QUEUE = "relay"
PROPAGATOR = TraceContextTextMapPropagator()
"""W3C trace-context propagator; every relay extracts and injects ``traceparent`` with it."""


class Hop(msgspec.Struct, frozen=True, kw_only=True, tag="bench_hop", tag_field="type"):
    """The message every hop decodes and re-encodes: a request id and an opaque payload."""

    request_id: str
    payload: bytes


def chain_subjects(prefix: str) -> list[str]:
    """Subjects of one chain: ``<prefix>.hop1`` … ``<prefix>.hop4`` then ``<prefix>.sink``."""
    return [f"{prefix}.hop{i}" for i in range(1, HOPS + 1)] + [f"{prefix}.sink"]


class NoopExporter(SpanExporter):
    """Span exporter that drops everything: shows the cost of recording spans without any I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def parse_sampler(spec: str) -> Sampler:
    """``always_off``, ``always_on`` or ``ratio:<0..1>`` (trace-id ratio, not parent-based)."""
    if spec == "always_off":
        return ALWAYS_OFF
    if spec == "always_on":
        return ALWAYS_ON
    if spec.startswith("ratio:"):
        return TraceIdRatioBased(float(spec.removeprefix("ratio:")))
    raise ValueError(f"unknown sampler {spec!r}: use always_off, always_on or ratio:<float>")


def build_tracer_provider(sampler: str) -> TracerProvider:
    """SDK provider with the given sampler; anything that may sample exports through a batch processor."""
    provider = TracerProvider(sampler=parse_sampler(sampler))
    if sampler != "always_off":
        provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    return provider
