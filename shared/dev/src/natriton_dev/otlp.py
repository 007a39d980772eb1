"""A minimal in-process OTLP/gRPC trace receiver: tests and the demo see the spans services export."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from natriton_dev.process import free_port


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """The parts of an exported span the checks need."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...] = ()
    """(trace id, span id) of each linked span."""


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: OtlpSink) -> None:
        self._sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            service = ""
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    service = attr.value.string_value
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self._sink.add(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: str(a.value) for a in span.attributes},
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpSink:
    """Collects spans sent to ``endpoint`` (set it as ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        """OTLP/gRPC endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, span: ReceivedSpan) -> None:
        """Record one span (called by the gRPC handler)."""
        with self._lock:
            self._spans.append(span)

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        """All spans received so far, or those of one trace."""
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def start(self) -> None:
        """Start serving."""
        self._server.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop(grace=1.0)
