"""Every service's /metrics, /healthz and /readyz on the real stack: the counters move by exactly what was sent."""

from __future__ import annotations

import asyncio
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
        ("postprocess", "natriton_requests_received_total", ()): 5,
        ("postprocess", "natriton_requests_total", (("outcome", "succeeded"),)): 5,
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
