"""Every service's /metrics, /healthz and /readyz on the real stack: the counters move by exactly what was sent."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from natriton.errors import ErrorCode
from natriton.messages import ErrorReply, InferResponse
from natriton_client.aio import MeshClient
from natriton_dev.mesh import SERVICES
from natriton_dev.stack import LocalStack

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"
Scrape = list[tuple[str, dict[str, str], float]]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base_url: str) -> Scrape:
    status, text = get(f"{base_url}/metrics")
    assert status == 200
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(samples: Scrape, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, sample_labels, v in samples if n == name and labels.items() <= sample_labels.items())


async def scrape_all(urls: dict[str, str]) -> dict[str, Scrape]:
    return {service: await asyncio.to_thread(scrape, url) for service, url in urls.items()}


def moved(before: dict[str, Scrape], after: dict[str, Scrape], service: str, name: str, **labels: str) -> float:
    return total(after[service], name, **labels) - total(before[service], name, **labels)


async def quiet(urls: dict[str, str], timeout_s: float = 20.0) -> None:
    """Wait until no camera runs (earlier tests' cameras stop at their owner's next lease round) and nothing is in
    flight anywhere, twice in a row, so the counters move only by what a test sends."""
    calm = 0
    deadline = time.monotonic() + timeout_s
    while calm < 2 and time.monotonic() < deadline:
        scrapes = await scrape_all(urls)
        busy = total(scrapes["ingest"], "natriton_ingest_cameras") + sum(
            total(scrape, "natriton_in_flight") for scrape in scrapes.values()
        )
        calm = calm + 1 if busy == 0 else 0
        await asyncio.sleep(0.3)
    assert calm >= 2, "the mesh did not go quiet"


async def test_every_service_is_healthy_and_ready(stack: LocalStack) -> None:
    for process in stack.services:
        assert process.metrics_url, process.name
        assert await asyncio.to_thread(get, f"{process.metrics_url}/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, f"{process.metrics_url}/readyz") == (200, "ready\n"), process.name
    assert set(stack.metrics_urls()) >= set(SERVICES)
    assert len(set(stack.metrics_urls().values())) == len(stack.services)  # a port of its own each


async def test_counters_move_by_exactly_the_requests_sent(
    stack: LocalStack, client: MeshClient, photos: dict[str, bytes]
) -> None:
    urls = {service: stack.service(service).metrics_url for service in SERVICES}
    await quiet(urls)
    before = await scrape_all(urls)
    for _ in range(5):
        reply = await client.infer(MODEL, image=photos["coffee.jpg"], use_cache=False)
        assert isinstance(reply, InferResponse), reply
    for _ in range(2):
        reply = await client.infer("no_such_model", image=photos["coffee.jpg"], use_cache=False)
        assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.NOT_FOUND, reply

    expected = {
        ("ingest", "natriton_requests_received_total", ()): 7,
        ("ingest", "natriton_requests_total", (("outcome", "succeeded"),)): 5,
        ("ingest", "natriton_requests_total", (("outcome", "failed"),)): 2,
        ("ingest", "natriton_request_errors_total", (("code", "not_found"),)): 2,
        ("ingest", "natriton_request_errors_total", ()): 2,
        ("ingest", "natriton_handling_seconds_count", ()): 7,
        ("preprocess", "natriton_requests_total", (("outcome", "succeeded"),)): 5,
        ("router", "natriton_requests_received_total", ()): 5,
        ("router", "natriton_requests_total", (("outcome", "succeeded"),)): 5,
        ("router", "natriton_handling_seconds_count", ()): 5,
        ("router", "natriton_router_answered_total", ()): 5,  # a classifier's answer: made by the router itself
        ("postprocess", "natriton_requests_received_total", ()): 0,
    }
    deadline = time.monotonic() + 10  # a hop counts a message once its handler returns, just after it forwarded it
    while True:
        after = await scrape_all(urls)
        got = {key: moved(before, after, key[0], key[1], **dict(key[2])) for key in expected}
        if got == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert got == expected
    for service in SERVICES:
        assert moved(before, after, service, "natriton_request_errors_total") == (2 if service == "ingest" else 0)
        assert total(after[service], "natriton_in_flight") == 0
        assert total(after[service], "natriton_ready", service=service) == 1
    assert moved(before, after, "router", "natriton_router_batch_size_count", model=MODEL) > 0
    assert moved(before, after, "router", "natriton_router_batch_size_sum", model=MODEL) >= 5  # (+ any shadow)
    assert moved(before, after, "router", "natriton_triton_call_seconds_count", model=MODEL) > 0
    assert total(after["router"], "natriton_router_breaker_state", model=MODEL) == 0
    assert total(after["router"], "natriton_router_triton_reachable") == 1
    assert moved(before, after, "ingest", "natriton_ingest_cache_hits_total") == 0  # use_cache=False: no lookups


def series_names(base_url: str, **labels: str) -> dict[str, float]:
    """Series name (as Prometheus stores it: the text parser would append ``_total`` to counters) -> summed value,
    for the samples whose labels include ``labels``."""
    status, text = get(f"{base_url}/metrics")
    assert status == 200
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)", line)
        if match and all(f'{k}="{v}"' in match[2].split(",") for k, v in labels.items()):
            found[match[1]] = found.get(match[1], 0.0) + float(match[3])
    return found


async def test_triton_serves_the_metrics_the_dashboard_reads(
    stack: LocalStack, client: MeshClient, photos: dict[str, bytes]
) -> None:
    """The dashboard's Triton row reads Triton's own per-model metrics: the real server serves them, per model."""
    from tests.unit.test_metrics import TRITON_REQUEST_METRICS

    base_url = stack.triton.metrics_url.removesuffix("/metrics")
    before = await asyncio.to_thread(series_names, base_url, model=MODEL)
    reply = await client.infer(MODEL, image=photos["coffee.jpg"], use_cache=False)
    assert isinstance(reply, InferResponse), reply
    after = await asyncio.to_thread(series_names, base_url, model=MODEL)
    assert set(after) >= TRITON_REQUEST_METRICS, TRITON_REQUEST_METRICS - set(after)
    assert after["nv_inference_request_success"] - before.get("nv_inference_request_success", 0.0) >= 1
