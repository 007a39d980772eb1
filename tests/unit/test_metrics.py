"""Metrics, health and readiness without servers: histograms, the collector's output, readiness, the HTTP server,
and the Grafana dashboard against the metric names the code exports."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from natriton.cache import ResultCache
from natriton.catalog import ModelCatalog, RouteTable
from natriton.claimcheck import FrameStore
from natriton.errors import ErrorCode, MeshError
from natriton.messages import SourceState
from natriton.metrics import LatencyHistogram, MetricsServer, registry_for, respond, sizes_histogram
from natriton.runtime import EndpointCounters, Inbound, ServiceRuntime
from natriton.settings import CommonSettings, load_settings
from natriton.video.source import SourceStats
from natriton_ingest.app import IngestApp
from natriton_ingest.cameras import CameraCounters, CameraManager
from natriton_ingest.settings import Settings as IngestSettings
from natriton_router.app import RouterApp
from natriton_router.batching import ModelBatcher
from natriton_router.settings import Settings as RouterSettings
from tests.unit.test_runtime_micro import FakeConnection

DASHBOARD = Path(__file__).resolve().parents[2] / "services" / "deploy" / "grafana" / "dashboards" / "natriton.json"


class ConnectedFake(FakeConnection):
    is_connected = True


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape[(name, frozenset(labels.items()))]


def test_latency_histogram_buckets_are_cumulative_with_inf_last() -> None:
    hist = LatencyHistogram((0.001, 0.01))
    for ns in (500_000, 1_000_000, 5_000_000, 2_000_000_000):
        hist.observe_ns(ns)
    assert hist.buckets() == [("0.001", 2.0), ("0.01", 3.0), ("+Inf", 4.0)]  # le is inclusive
    assert hist.count == 4
    assert hist.sum_ns == 2_006_500_000


def test_sizes_histogram() -> None:
    assert sizes_histogram({1: 3, 3: 2, 500: 1}, (1, 2, 4)) == [("1", 3.0), ("2", 3.0), ("4", 5.0), ("+Inf", 6.0)]
    assert sizes_histogram({}, (1,)) == [("1", 0.0), ("+Inf", 0.0)]


def test_metrics_settings_default_and_validation() -> None:
    settings = load_settings(CommonSettings, {})
    assert (settings.metrics_port, settings.metrics_host) == (9464, "0.0.0.0")
    assert load_settings(CommonSettings, {"NATRITON_METRICS_PORT": "0"}).metrics_port == 0
    with pytest.raises(ValueError, match="metrics_port"):
        load_settings(CommonSettings, {"NATRITON_METRICS_PORT": "70000"})


@pytest.fixture
def connected(monkeypatch: pytest.MonkeyPatch) -> tuple[ServiceRuntime, ConnectedFake]:
    fake = ConnectedFake()

    async def connect(**_: Any) -> ConnectedFake:
        return fake

    monkeypatch.setattr("natriton.runtime.nats.connect", connect)
    return ServiceRuntime("demo", "1.2.3", CommonSettings(instance_id="m1", max_concurrency=1)), fake


async def test_collector_reads_the_endpoint_counters(connected: tuple[ServiceRuntime, ConnectedFake]) -> None:
    rt, fake = connected
    await rt.connect()
    gate = asyncio.Event()

    async def handler(inbound: Inbound) -> None:
        if inbound.data == b"bad":
            raise MeshError(ErrorCode.NOT_FOUND, "no such model")
        if inbound.data == b"slow":
            await gate.wait()

    async def on_overload(inbound: Inbound) -> None:
        pass

    await rt.add_endpoint("work", "demo.work", handler, queue_group="q", on_overload=on_overload)
    registry = registry_for(rt)
    before = samples(generate_latest(registry))
    assert value(before, "natriton_requests_received_total", service="demo", endpoint="work") == 0
    assert value(before, "natriton_ready", service="demo") == 0  # the app has not started
    await fake.deliver("demo.work", b"ok")
    await asyncio.sleep(0.01)
    await fake.deliver("demo.work", b"bad")
    await asyncio.sleep(0.01)
    await fake.deliver("demo.work", b"slow")
    await fake.deliver("demo.work", b"refused")  # the one slot is busy
    await asyncio.sleep(0)
    rt.app_started = True
    during = samples(generate_latest(registry))
    ep = {"service": "demo", "endpoint": "work"}
    assert value(during, "natriton_requests_received_total", **ep) == 4
    assert value(during, "natriton_requests_total", **ep, outcome="succeeded") == 1
    assert value(during, "natriton_requests_total", **ep, outcome="failed") == 1
    assert value(during, "natriton_requests_total", **ep, outcome="rejected") == 1
    assert value(during, "natriton_request_errors_total", **ep, code="not_found") == 1
    assert value(during, "natriton_request_errors_total", **ep, code="overloaded") == 1
    assert value(during, "natriton_in_flight", **ep) == 1
    assert value(during, "natriton_handling_seconds_count", **ep) == 2
    assert value(during, "natriton_handling_seconds_bucket", **ep, le="+Inf") == 2
    assert value(during, "natriton_ready", service="demo") == 1
    assert value(during, "natriton_service_info", service="demo", version="1.2.3") == 1
    gate.set()
    await asyncio.sleep(0.01)
    after = samples(generate_latest(registry))
    assert value(after, "natriton_in_flight", **ep) == 0
    assert value(after, "natriton_handling_seconds_count", **ep) == 3


async def test_readiness(connected: tuple[ServiceRuntime, ConnectedFake]) -> None:
    rt, fake = connected
    assert rt.not_ready_reason() == "connecting to NATS"
    await rt.connect()
    assert rt.not_ready_reason() == "starting"
    rt.app_started = True
    assert rt.not_ready_reason() == ""
    fake.is_connected = False
    assert rt.not_ready_reason() == "NATS disconnected"
    fake.is_connected = True
    reason = ""
    rt.readiness_checks.append(lambda: reason)
    reason = "Triton unreachable"
    assert rt.not_ready_reason() == "Triton unreachable"

    def broken() -> str:
        raise RuntimeError

    rt.readiness_checks[:] = [broken]
    assert rt.not_ready_reason() == "readiness check failed: RuntimeError"
    rt.readiness_checks.clear()
    rt.request_stop()
    assert rt.not_ready_reason() == "draining"


def test_respond() -> None:
    rt = ServiceRuntime("demo", "1.2.3", CommonSettings(instance_id="r"))
    registry = registry_for(rt)
    status, content_type, body = respond("GET", "/metrics?x=1", registry, lambda: "")
    assert status == 200 and content_type.startswith("text/plain; version=") and b"natriton_ready" in body
    assert respond("GET", "/healthz", registry, lambda: "starting")[0] == 200
    assert respond("GET", "/readyz", registry, lambda: "")[:3:2] == (200, b"ready\n")
    assert respond("HEAD", "/readyz", registry, lambda: "draining")[::2] == (503, b"not ready: draining\n")
    assert respond("POST", "/metrics", registry, lambda: "")[0] == 405
    assert respond("GET", "/other", registry, lambda: "")[0] == 404


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_server_answers_on_the_event_loop() -> None:
    rt = ServiceRuntime("demo", "1.2.3", CommonSettings(instance_id="s"))
    reason = "starting"
    server = MetricsServer(registry_for(rt), lambda: reason, "127.0.0.1", 0)
    await server.start()
    try:
        assert server.port > 0
        assert await http_get(server.port, "/healthz") == (200, b"ok\n")
        assert await http_get(server.port, "/readyz") == (503, b"not ready: starting\n")
        reason = ""
        assert await http_get(server.port, "/readyz") == (200, b"ready\n")
        assert await http_get(server.port, "/readyz", "HEAD") == (200, b"")
        status, body = await http_get(server.port, "/metrics")
        assert status == 200 and b"# TYPE natriton_requests_total counter" in body
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"garbage\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        await server.close()


def full_registry_scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A router's and an ingest's metrics with every series present (for the dashboard check)."""
    names: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    router_rt = ServiceRuntime("router", "1.2.3", CommonSettings(instance_id="r"))
    triton = SimpleNamespace(batches=Counter(shared_memory=4, grpc=1), shared_memory=None)
    router = RouterApp(
        router_rt,
        RouterSettings(),
        triton=triton,
        routes=RouteTable(),
        cache=ResultCache("redis://127.0.0.1:1/0", ttl_s=60),
    )  # type: ignore[arg-type]

    async def execute(inputs: Any, deadline: float | None) -> Any:
        return inputs

    batcher = ModelBatcher(execute, max_batch_size=8, max_wait_s=0, slots=1, output_names=("Y",))
    batcher.batch_sizes.update({1: 2, 5: 1})
    router.batchers[("m", "1")] = batcher
    router.breaker("m").record_failure()
    router.shadow["m:2"] = Counter(requests=3, agree=2, disagree=1)
    hist = router.triton_latency[("m", "1")] = LatencyHistogram()
    hist.observe_ns(3_000_000)
    router_rt.metrics_extension = router.metrics
    counters = EndpointCounters(received=3, succeeded=1, failed=1, rejected=1, errors_by_code={"unavailable": 1})
    router_rt.endpoint_counters = lambda: {"route": counters}  # type: ignore[method-assign]
    scrape = samples(generate_latest(registry_for(router_rt)))
    mv = {"service": "router", "model": "m", "version": "1"}
    assert value(scrape, "natriton_router_batch_size_count", **mv) == 3
    assert value(scrape, "natriton_router_triton_batches_total", service="router", via="shared_memory") == 4
    assert value(scrape, "natriton_router_triton_batches_total", service="router", via="grpc") == 1
    assert value(scrape, "natriton_router_batch_size_sum", **mv) == 7
    assert value(scrape, "natriton_router_batch_size_bucket", **mv, le="4") == 2
    assert value(scrape, "natriton_router_queue_depth", **mv) == 0
    assert value(scrape, "natriton_triton_call_seconds_count", **mv) == 1
    assert value(scrape, "natriton_router_breaker_state", service="router", model="m") == 0
    assert value(scrape, "natriton_router_shadow_total", service="router", model="m", version="2", outcome="agree") == 2
    assert router.not_ready_reason() == ""
    router.triton_reachable = False
    assert router.not_ready_reason().startswith("Triton unreachable")
    names.update(scrape)

    ingest_rt = ServiceRuntime("ingest", "1.2.3", CommonSettings(instance_id="i"))
    cache = ResultCache("redis://127.0.0.1:1/0", ttl_s=1)
    cache.hits, cache.misses = 3, 1
    frames = FrameStore("redis://127.0.0.1:1/0")
    ingest = IngestApp(ingest_rt, IngestSettings(), ModelCatalog(), RouteTable(), cache, frames)
    ingest.counts["coalesced"] = 2
    ingest.pending_per_model["m"] = 1
    cameras = CameraManager(ingest_rt, None, None, max_cameras=4, lease_ttl_s=10)  # type: ignore[arg-type]
    counters = CameraCounters(sent=9, answered=8, reused=3, dropped=2, errors=1, audio_s=2.5)
    counters.latencies_ms.extend([100.0, 200.0])
    reader = SimpleNamespace(stats=lambda: SourceStats(state=SourceState.LOST, frames_read=40, reconnects=2))
    cameras.workers["lobby"] = SimpleNamespace(counters=counters, reader=reader, sound=object())  # type: ignore[assignment]
    ingest.cameras = cameras
    ingest_rt.metrics_extension = ingest.metrics
    scrape = samples(generate_latest(registry_for(ingest_rt)))
    camera = {"service": "ingest", "camera": "lobby"}
    assert value(scrape, "natriton_camera_frames_total", **camera, outcome="inferred") == 7
    assert value(scrape, "natriton_camera_frames_total", **camera, outcome="failed") == 1
    assert value(scrape, "natriton_camera_frames_total", **camera, outcome="dropped") == 2
    assert value(scrape, "natriton_camera_frames_read_total", **camera) == 40
    assert value(scrape, "natriton_camera_audio_seconds_total", **camera) == 2.5
    assert value(scrape, "natriton_camera_state", **camera) == 2
    assert value(scrape, "natriton_camera_latency_seconds", **camera, quantile="0.5") == 0.15
    assert value(scrape, "natriton_ingest_cameras", service="ingest") == 1
    assert value(scrape, "natriton_ingest_cache_hits_total", service="ingest") == 3
    assert value(scrape, "natriton_ingest_coalesced_total", service="ingest") == 2
    assert value(scrape, "natriton_ingest_pending", service="ingest", model="m") == 1
    names.update(scrape)
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


TRITON_REQUEST_METRICS = frozenset({
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
})  # fmt: skip
"""Triton's per-model metrics the dashboard reads (tests/integration/test_metrics.py finds them on a real Triton)."""
TRITON_GPU_METRICS = frozenset({"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"})
"""Triton's per-GPU metrics (Triton's metrics documentation; only a GPU build serves them, so no test here can)."""
METRIC_NAME = re.compile(r"\b(?:natriton|process|nv)_[a-z0-9_]+")


def test_dashboard_uses_only_exported_metrics() -> None:
    exported = {name for name, _ in full_registry_scrape()}
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"service", "model"} <= set(variables)
    used: set[str] = set()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, (panel["title"], target["expr"])
            unknown = names - exported - TRITON_REQUEST_METRICS - TRITON_GPU_METRICS
            assert not unknown, (panel["title"], unknown)
            used |= names
    for wanted in (
        "natriton_requests_total",
        "natriton_handling_seconds_bucket",
        "natriton_in_flight",
        "natriton_router_queue_depth",
        "natriton_router_batch_size_bucket",
        "natriton_triton_call_seconds_bucket",
        "natriton_ingest_cache_hits_total",
        "natriton_router_breaker_state",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        *TRITON_REQUEST_METRICS,
        *TRITON_GPU_METRICS,
    ):
        assert wanted in used, wanted


def test_every_service_panel_follows_the_service_variable() -> None:
    """Panels about the mesh's services filter by ``$service`` (the dashboard is one per service and model)."""
    dashboard = json.loads(DASHBOARD.read_text())
    per_service = ("natriton_requests_total", "natriton_request_errors_total", "natriton_handling_seconds", "process_")
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if any(name in expr for name in per_service):
                assert '{service=~"$service"}' in expr, (panel["title"], expr)


def test_process_metrics_carry_the_service_label() -> None:
    runtime = ServiceRuntime("preprocess", "1.2.3", CommonSettings(instance_id="p"))
    scrape = samples(generate_latest(registry_for(runtime)))
    cpu = value(scrape, "process_cpu_seconds_total", service="preprocess")
    assert cpu > 0
    assert value(scrape, "process_resident_memory_bytes", service="preprocess") > 10_000_000
    assert value(scrape, "process_open_fds", service="preprocess") >= 3
