"""Spans on disk: an OTLP/gRPC receiver that appends every exported span to a JSONL file, and its reader.

``natriton up`` runs a :class:`SpanFileRecorder` in its supervisor and points the services at it
(``OTEL_EXPORTER_OTLP_ENDPOINT``); ``natriton trace`` reads the file. One line per span::

    {"trace_id": "…32 hex…", "span_id": "…16 hex…", "parent_span_id": "" | "…", "name": "ingest infer",
     "service": "natriton-ingest", "kind": "consumer", "start_ns": 1714…, "end_ns": 1714…,
     "status": "unset" | "ok" | "error", "status_message": "", "attributes": {"natriton.request_id": "…"},
     "links": [{"trace_id": "…", "span_id": "…"}]}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}


@dataclass(slots=True)
class SpanRecord:
    """One finished span as ``natriton trace`` needs it."""

    trace_id: str
    span_id: str
    name: str
    service: str = ""
    parent_span_id: str = ""
    kind: str = ""
    start_ns: int = 0
    end_ns: int = 0
    status: str = "unset"
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    links: list[dict[str, str]] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        """End minus start (0 when the times are unknown)."""
        return (self.end_ns - self.start_ns) / 1e6 if self.end_ns and self.start_ns else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpanRecord:
        """From one JSONL line (unknown keys ignored)."""
        return cls(
            trace_id=str(data.get("trace_id", "")),
            span_id=str(data.get("span_id", "")),
            name=str(data.get("name", "")),
            service=str(data.get("service", "")),
            parent_span_id=str(data.get("parent_span_id", "")),
            kind=str(data.get("kind", "")),
            start_ns=int(data.get("start_ns") or 0),
            end_ns=int(data.get("end_ns") or 0),
            status=str(data.get("status", "unset")),
            status_message=str(data.get("status_message", "")),
            attributes=dict(data.get("attributes") or {}),
            links=[dict(link) for link in data.get("links") or ()],
        )


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as plain data."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def records_from_request(request: Any) -> Iterator[SpanRecord]:
    """The spans of one OTLP ``ExportTraceServiceRequest``."""
    for resource_spans in request.resource_spans:
        service = ""
        for attribute in resource_spans.resource.attributes:
            if attribute.key == "service.name":
                service = str(any_value(attribute.value))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield SpanRecord(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    name=span.name,
                    service=service,
                    kind=_KINDS.get(int(span.kind), str(span.kind)),
                    start_ns=int(span.start_time_unix_nano),
                    end_ns=int(span.end_time_unix_nano),
                    status=_STATUS.get(int(span.status.code), "unset"),
                    status_message=span.status.message,
                    attributes={a.key: any_value(a.value) for a in span.attributes},
                    links=[{"trace_id": k.trace_id.hex(), "span_id": k.span_id.hex()} for k in span.links],
                )


class SpanFileRecorder:
    """An OTLP/gRPC trace receiver on 127.0.0.1 that appends every span it gets to ``path`` (JSONL)."""

    def __init__(self, path: Path, *, port: int = 0) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        from natriton_dev.process import free_port

        self.path = Path(path)
        self.port = port or free_port()
        self.spans_written = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        recorder = self

        class _Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                recorder.write(records_from_request(request))
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(), self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    def write(self, records: Iterable[SpanRecord]) -> None:
        """Append spans (one JSON object per line) and flush."""
        lines = [json.dumps(r.as_dict(), separators=(",", ":"), default=str) + "\n" for r in records]
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.writelines(lines)
            self._file.flush()
            self.spans_written += len(lines)

    def start(self) -> None:
        """Start serving (the file is created on the first span)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._server.start()

    def stop(self) -> None:
        """Stop serving and close the file."""
        self._server.stop(grace=1.0).wait(2.0)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_spans(path: Path) -> list[SpanRecord]:
    """Every span in a JSONL trace file (lines that do not parse, e.g. one being written, are skipped)."""
    spans = []
    with path.open("r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("trace_id") and data.get("span_id"):
                spans.append(SpanRecord.from_dict(data))
    return spans
