"""Prometheus metrics, liveness and readiness of one service process, served by a tiny HTTP server on its event loop.

``GET /metrics`` (Prometheus text format), ``GET /healthz`` (200 while the event loop runs) and ``GET /readyz``
(200 ``ready``, or 503 with the reason: connecting, starting, NATS disconnected, draining, or the app's own
reason) on ``NATRITON_METRICS_HOST:NATRITON_METRICS_PORT``. :func:`natriton.service.run_service` starts it.
An app may serve more paths there: ``runtime.http_routes`` maps a path prefix to an async :data:`RouteHandler`
(ingest's live page, ``/streams``); the three paths above always answer as described.

Nothing is counted twice: the numbers already kept for ``$SRV.STATS`` (the runtime's per-endpoint counters, the
apps' caches, batchers, breakers, shadow counts) are read when Prometheus scrapes, by :class:`RuntimeCollector`
and the app's ``runtime.metrics_extension``. On the request path a latency histogram costs two integer additions
(:class:`LatencyHistogram`, no lock: everything runs on the one event loop, and scrapes are answered there too).
Each process has its own :class:`~prometheus_client.CollectorRegistry` (nothing global).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "LATENCY_BUCKETS_S",
    "LatencyHistogram",
    "Metric",
    "MetricsServer",
    "MetricsSource",
    "ProcessResourceCollector",
    "ReadinessCheck",
    "Request",
    "Response",
    "RouteHandler",
    "RuntimeCollector",
    "add_latency",
    "counter",
    "cumulative",
    "first_reason",
    "gauge",
    "histogram",
    "registry_for",
    "respond",
    "route_for",
    "sizes_histogram",
    "with_label",
]

if TYPE_CHECKING:
    from natriton.runtime import ServiceRuntime

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Upper bounds (seconds) of the latency histograms (hop handling, Triton calls)."""
BATCH_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Upper bounds of the batch-size histogram."""
MetricsSource = Callable[[], Iterable[Metric]]
"""An app's extra metrics, made at scrape time (without the ``service`` label: the collector adds it)."""
ReadinessCheck = Callable[[], str]
"""'' when ready, else a short reason."""


class LatencyHistogram:
    """A fixed-bucket histogram of durations: one list increment and one addition per observation."""

    __slots__ = ("_bounds_ns", "bounds_s", "counts", "sum_ns")

    def __init__(self, bounds_s: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds_s = tuple(bounds_s)
        self._bounds_ns = [int(b * 1e9) for b in self.bounds_s]
        self.counts = [0] * (len(self.bounds_s) + 1)
        """Observations per bucket (not cumulative); the last is above every bound."""
        self.sum_ns = 0

    def observe_ns(self, duration_ns: int) -> None:
        """Count one duration (ns)."""
        self.counts[bisect_left(self._bounds_ns, duration_ns)] += 1
        self.sum_ns += duration_ns

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs as Prometheus wants them, ``+Inf`` last."""
        return cumulative(zip([*map(str, self.bounds_s), "+Inf"], self.counts, strict=True))


def cumulative(pairs: Iterable[tuple[str, int]]) -> list[tuple[str, float]]:
    """Running totals of per-bucket counts."""
    total = 0
    out: list[tuple[str, float]] = []
    for le, n in pairs:
        total += n
        out.append((le, float(total)))
    return out


def sizes_histogram(sizes: Mapping[int, int], bounds: Sequence[int] = BATCH_SIZE_BUCKETS) -> list[tuple[str, float]]:
    """Cumulative buckets of a ``{size: times seen}`` count (the batchers' ``batch_sizes``)."""
    per_bucket = [0] * (len(bounds) + 1)
    for size, n in sizes.items():
        per_bucket[bisect_left(bounds, size)] += n
    return cumulative(zip([*map(str, bounds), "+Inf"], per_bucket, strict=True))


def counter(name: str, doc: str, labels: Sequence[str]) -> CounterMetricFamily:
    """A counter family (``_total`` is appended to ``name``)."""
    return CounterMetricFamily(name, doc, labels=list(labels))


def gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    """A gauge family."""
    return GaugeMetricFamily(name, doc, labels=list(labels))


def histogram(name: str, doc: str, labels: Sequence[str]) -> HistogramMetricFamily:
    """A histogram family; add series with :func:`add_latency` or ``add_metric(values, buckets, sum)``."""
    return HistogramMetricFamily(name, doc, labels=list(labels))


def add_latency(family: HistogramMetricFamily, values: Sequence[str], hist: LatencyHistogram) -> None:
    """One series of a latency histogram (seconds)."""
    family.add_metric(list(values), hist.buckets(), hist.sum_ns / 1e9)


def with_label(metric: Metric, name: str, value: str) -> Metric:
    """``metric`` with one more label on every sample (first in order)."""
    metric.samples = [
        Sample(s.name, {name: value, **s.labels}, s.value, s.timestamp, s.exemplar, s.native_histogram)
        for s in metric.samples
    ]
    return metric


class RuntimeCollector(Collector):
    """The runtime's per-endpoint counters, readiness and the app's extra metrics, read at scrape time."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterable[Metric]:
        runtime = self.runtime
        service = runtime.name
        labels = ("service", "endpoint")
        received = counter("natriton_requests_received", "Messages taken by an endpoint.", labels)
        requests = counter(
            "natriton_requests",
            "Messages finished by an endpoint, by outcome: succeeded, failed (answered with an error) or rejected "
            "(refused at once: all slots busy).",
            (*labels, "outcome"),
        )
        errors = counter(
            "natriton_request_errors",
            "Messages answered with an error, by error code (rejected ones count as overloaded).",
            (*labels, "code"),
        )
        in_flight = gauge("natriton_in_flight", "Messages being handled by an endpoint now.", labels)
        latency = histogram("natriton_handling_seconds", "Time an endpoint spent on a message (this hop only).", labels)
        for name, counters in runtime.endpoint_counters().items():
            values = (service, name)
            received.add_metric(values, counters.received)
            requests.add_metric((*values, "succeeded"), counters.succeeded)
            requests.add_metric((*values, "failed"), counters.failed)
            requests.add_metric((*values, "rejected"), counters.rejected)
            by_code = dict(counters.errors_by_code)
            if counters.rejected:
                by_code["overloaded"] = by_code.get("overloaded", 0) + counters.rejected
            for code, n in sorted(by_code.items()):
                errors.add_metric((*values, code), n)
            in_flight.add_metric(values, counters.in_flight)
            add_latency(latency, values, counters.latency)
        reason = runtime.not_ready_reason()
        ready = gauge("natriton_ready", "1 when the process is ready to take requests (/readyz is 200).", ["service"])
        ready.add_metric([service], 0 if reason else 1)
        info = gauge("natriton_service_info", "Always 1: which version of a service this process runs.", [])
        info.add_metric([], 1)
        outbox = runtime.outbox
        sent = counter(
            "natriton_wire_messages_sent",
            "Messages published with publish_soon, by how they travelled: packed (as an item of a pack of several, "
            "one NATS message per pack) or single.",
            ("service", "how"),
        )
        sent.add_metric((service, "packed"), outbox.packed_items)
        sent.add_metric((service, "single"), outbox.singles)
        packs = counter("natriton_wire_packs_sent", "NATS messages that each carried several packed messages.", [])
        packs.add_metric([], outbox.packs)
        yield from (received, requests, errors, in_flight, latency, ready, sent)
        yield with_label(packs, "service", service)
        yield with_label(with_label(info, "version", runtime.version), "service", service)
        if runtime.metrics_extension is not None:
            try:
                extra = list(runtime.metrics_extension())
            except Exception:
                log.exception("%s: metrics_extension failed", service)
                return
            for metric in extra:
                yield with_label(metric, "service", service)


class ProcessResourceCollector(Collector):
    """The standard ``process_*`` metrics (CPU seconds, resident memory, open file descriptors, start time), with
    the ``service`` label like every other metric, so CPU per request is one PromQL division per service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._process = ProcessCollector(registry=None)

    def collect(self) -> Iterable[Metric]:
        for metric in self._process.collect():
            yield with_label(metric, "service", self.service)


def registry_for(runtime: ServiceRuntime) -> CollectorRegistry:
    """A fresh registry of one process: the runtime's (and through it the app's) metrics and the process's
    resource use."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    registry.register(ProcessResourceCollector(runtime.name))
    return registry


def first_reason(checks: Iterable[ReadinessCheck]) -> str:
    """The first non-empty reason of ``checks`` ('' when all pass; a failing check is a reason too)."""
    for check in checks:
        try:
            reason = check()
        except Exception as exc:
            return f"readiness check failed: {type(exc).__name__}"
        if reason:
            return reason
    return ""


Response = tuple[int, str, bytes]
"""Status, content type and body."""
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    401: "Unauthorized",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"
BUILTIN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
"""Paths no route can take over."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request to an app's route: the method, the path as sent (not decoded) and the query's values."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    """The first value of each query parameter (decoded)."""

    @classmethod
    def parse(cls, method: str, target: str) -> Request:
        """From the request line's method and target (``/path?query``)."""
        path, _, query = target.partition("?")
        return cls(method, path, dict(reversed(parse_qsl(query, keep_blank_values=True))))


RouteHandler = Callable[[Request], Awaitable[Response]]
"""An app's handler for the paths under one prefix (runs on the event loop: hand slow work to a thread)."""


def route_for(routes: Mapping[str, RouteHandler], path: str) -> RouteHandler | None:
    """The handler of the longest prefix in ``routes`` that is ``path`` itself or a folder of it
    (``/streams`` takes ``/streams`` and ``/streams/a.jpg``, not ``/streamsx``); None for the built-in paths."""
    if path in BUILTIN_PATHS:
        return None
    best = ""
    for prefix in routes:
        if (path == prefix or path.startswith(prefix.rstrip("/") + "/")) and len(prefix) > len(best):
            best = prefix
    return routes[best] if best else None


def respond(method: str, path: str, registry: CollectorRegistry, not_ready: Callable[[], str]) -> Response:
    """Status, content type and body for one request (GET or HEAD; the query string is ignored)."""
    if method not in ("GET", "HEAD"):
        return 405, _TEXT, b"only GET and HEAD\n"
    path = path.split("?", 1)[0]
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    if path == "/healthz":
        return 200, _TEXT, b"ok\n"
    if path == "/readyz":
        reason = not_ready()
        return (503, _TEXT, f"not ready: {reason}\n".encode()) if reason else (200, _TEXT, b"ready\n")
    return 404, _TEXT, b"see /metrics, /healthz, /readyz\n"


class MetricsServer:
    """HTTP/1.0-style server (one request per connection) on the running event loop.

    ``routes`` (prefix → handler) is read on every request, so an app may add routes after the server started.
    """

    REQUEST_TIMEOUT_S = 5.0
    WRITE_TIMEOUT_S = 60.0
    MAX_HEAD_BYTES = 16 * 1024
    MAX_BODY_BYTES = 64 * 1024

    def __init__(
        self,
        registry: CollectorRegistry,
        not_ready: Callable[[], str],
        host: str = "0.0.0.0",
        port: int = 9464,
        *,
        routes: Mapping[str, RouteHandler] | None = None,
    ) -> None:
        self.registry = registry
        self.not_ready = not_ready
        self.host = host
        self.port = port
        self.routes: Mapping[str, RouteHandler] = {} if routes is None else routes
        """The port asked for; after :meth:`start` the one bound (``port=0`` binds any free port)."""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (raises ``OSError`` when the port is taken)."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=self.MAX_HEAD_BYTES, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
                if len(parts) != 3:
                    status, content_type, body = 400, _TEXT, b"bad request\n"
                    method = "GET"
                else:
                    method = parts[0]
                    status, content_type, body = await self._answer(reader, head, method, parts[1])
            header = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            async with asyncio.timeout(self.WRITE_TIMEOUT_S):  # a big body (a recording) to a slow client
                writer.write(header.encode("latin-1") + (b"" if method == "HEAD" else body))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics server: request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, head: bytes, method: str, target: str) -> Response:
        """The built-in paths, else an app's route, else 404."""
        handler = route_for(self.routes, target.split("?", 1)[0])
        if handler is None:
            return respond(method, target, self.registry, self.not_ready)
        length = _content_length(head)
        if length > self.MAX_BODY_BYTES:
            return 400, _TEXT, b"request body too large\n"
        if length:  # no route reads a body; read it anyway, so closing does not reset the connection
            await reader.readexactly(length)
        try:
            return await handler(Request.parse(method, target))
        except Exception:
            log.exception("http route %s failed", target.split("?", 1)[0][:200])
            return 500, _TEXT, b"internal error\n"


def _content_length(head: bytes) -> int:
    """The request's Content-Length (0 when absent or malformed)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return max(0, int(value.strip()))
            except ValueError:
                return 0
    return 0
