"""The router's brain against real Triton: routing policies, shadow traffic, admission control, the circuit
breaker, coalescing and batch tracing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client as NATS

from natriton.errors import ErrorCode
from natriton.messages import ErrorReply, InferResponse, RawOutputs, Reply
from natriton.tensors import to_array, to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.images import encode_png
from natriton_dev.otlp import OtlpSink
from natriton_dev.stack import LocalStack
from tests.integration.conftest import triton_inference_count

pytestmark = pytest.mark.asyncio(loop_scope="session")
DATA = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def routes_cli(stack: LocalStack, *args: str) -> str:
    """Run the operators' CLI (``natriton routes``) as a separate process, exactly as documented."""
    env = {**os.environ, "NATRITON_NATS_URL": stack.nats_url}
    natriton = Path(sys.executable).parent / "natriton"
    done = subprocess.run([str(natriton), "routes", *args], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def answered_by(reply: Reply) -> str:
    """Which version of ``versioned`` produced the reply (OUT = DATA * version)."""
    assert isinstance(reply, InferResponse), reply
    assert isinstance(reply.result, RawOutputs)
    factor = float(to_array(reply.result.tensors[0])[0, 0])
    assert reply.version == str(int(factor)), "the reply names the version that answered"
    return reply.version


async def ask_versioned(client: MeshClient, version: str = "") -> Reply:
    return await client.infer("versioned", tensors=[to_tensor("DATA", DATA)], version=version, use_cache=False)


async def router_stats(nc: NATS) -> dict[str, Any]:
    stats = json.loads((await nc.request("$SRV.STATS.natriton-router", b"", timeout=2)).data)
    app: dict[str, Any] = stats["endpoints"][0]["data"]["app"]
    return app


async def test_explicit_version_and_latest(client: MeshClient, stack: LocalStack) -> None:
    routes_cli(stack, "clear", "versioned")
    assert answered_by(await ask_versioned(client, "1")) == "1"
    assert answered_by(await ask_versioned(client, "2")) == "2"
    assert answered_by(await ask_versioned(client)) == "2", "no policy: the latest version answers"


async def test_weighted_split_is_hot_reloaded(client: MeshClient, stack: LocalStack) -> None:
    try:
        routes_cli(stack, "set", "versioned", "--weights", "1=50,2=50")
        await asyncio.sleep(0.3)  # KV watchers see the change within milliseconds
        counts = Counter([answered_by(r) for r in await asyncio.gather(*(ask_versioned(client) for _ in range(60)))])
        assert counts["1"] >= 10 and counts["2"] >= 10, counts
        routes_cli(stack, "set", "versioned", "--weights", "1=100")
        await asyncio.sleep(0.3)
        counts = Counter([answered_by(await ask_versioned(client)) for _ in range(10)])
        assert counts == {"1": 10}
        # a request naming a version is never re-routed
        assert answered_by(await ask_versioned(client, "2")) == "2"
    finally:
        routes_cli(stack, "clear", "versioned")


async def test_shadow_traffic_is_compared_and_never_returned(client: MeshClient, stack: LocalStack, nc: NATS) -> None:
    try:
        revision = (await router_stats(nc))["route_revisions"].get("versioned", 0)
        out = routes_cli(stack, "set", "versioned", "--weights", "1=100", "--shadow", "2")
        assert '"shadow_version":"2"' in out
        for _ in range(50):  # the router applies the new policy once its KV watch has seen it
            if (await router_stats(nc))["route_revisions"].get("versioned", 0) > revision:
                break
            await asyncio.sleep(0.1)
        before = (await router_stats(nc))["shadow"].get("versioned:2", {})
        replies = [await ask_versioned(client) for _ in range(8)]
        assert {answered_by(r) for r in replies} == {"1"}, "shadow answers must never reach the caller"
        for _ in range(50):
            after = (await router_stats(nc))["shadow"].get("versioned:2", {})
            if after.get("disagree", 0) - before.get("disagree", 0) >= 8:
                break
            await asyncio.sleep(0.1)
        assert after.get("requests", 0) - before.get("requests", 0) == 8
        assert after.get("disagree", 0) - before.get("disagree", 0) == 8  # v2 doubles, v1 does not
        assert after.get("agree", 0) == before.get("agree", 0)
    finally:
        routes_cli(stack, "clear", "versioned")


async def test_overload_is_refused_at_once_with_a_typed_error(client: MeshClient) -> None:
    """``slow`` runs 4 items per 100 ms; 200 at once overflow the router's per-model queue (48 in tests)."""

    async def timed() -> tuple[Reply, float]:
        started = time.perf_counter()
        reply = await client.infer("slow", tensors=[to_tensor("DATA", DATA)], use_cache=False, timeout_s=30)
        return reply, time.perf_counter() - started

    results = await asyncio.gather(*(timed() for _ in range(200)))
    rejected = [(r, s) for r, s in results if isinstance(r, ErrorReply)]
    accepted = [(r, s) for r, s in results if isinstance(r, InferResponse)]
    assert len(rejected) + len(accepted) == 200, "every request gets exactly one reply"
    assert rejected and accepted
    for reply, _ in rejected:
        assert reply.code == ErrorCode.OVERLOADED, reply
        assert reply.retry_after_ms and reply.retry_after_ms > 0
    slowest_reject = max(s for _, s in rejected)
    fastest_accept = min(s for _, s in accepted)
    assert slowest_reject < 2.0, f"refusals must not wait in a queue ({slowest_reject:.3f} s)"
    assert fastest_accept < 1.0


async def test_identical_requests_in_flight_share_one_inference(client: MeshClient, stack: LocalStack) -> None:
    noise = np.random.default_rng(7).integers(0, 255, (180, 240, 3), dtype=np.uint8)
    image = encode_png(noise)  # never seen before: a cache miss
    before = triton_inference_count(stack, "mobilenet_v2")
    replies = await asyncio.gather(*(client.infer("mobilenet_v2", image=image, request_id=f"co-{i}") for i in range(8)))
    # (a request arriving after the first answer was cached is a cache hit: also no second inference)
    assert all(isinstance(r, InferResponse) for r in replies), replies
    assert sorted(r.request_id for r in replies) == sorted(f"co-{i}" for i in range(8)), "each keeps its own id"
    assert len({r.result for r in replies if isinstance(r, InferResponse)}) == 1
    assert triton_inference_count(stack, "mobilenet_v2") == before + 1


async def test_batch_span_is_linked_to_every_member(
    client: MeshClient, otlp_sink: OtlpSink, photos: dict[str, bytes]
) -> None:
    replies = await asyncio.gather(
        *(client.infer("mobilenet_v2", image=photos["coffee.jpg"], use_cache=False, top_k=1) for _ in range(6))
    )
    assert all(isinstance(r, InferResponse) for r in replies)
    for _ in range(50):
        batches = [s for s in otlp_sink.spans() if s.name == "batch mobilenet_v2:1" and s.links]
        route_spans = {(s.trace_id, s.span_id): s for s in otlp_sink.spans() if s.name == "router route"}
        linked = [b for b in batches if any(link in route_spans for link in b.links)]
        if linked:
            break
        await asyncio.sleep(0.1)
    assert linked, "a batch span links to the route spans of its member requests"
    batch = linked[-1]
    member_traces = {trace for trace, _ in batch.links}
    assert batch.trace_id not in member_traces, "the batch span is not nested under one member"
    for trace_id in member_traces:
        names = {s.name for s in otlp_sink.spans(trace_id)}
        assert {"queue wait", "inference", "router route"} <= names, names


async def test_circuit_breaker_opens_while_triton_is_down_and_recovers(
    client: MeshClient, stack: LocalStack, photos: dict[str, bytes], nc: NATS
) -> None:
    pids = {p.name: p.pid for p in stack.services}
    image = photos["chelsea.png"]
    assert isinstance(await client.infer("mobilenet_v2", image=image, use_cache=False, timeout_s=5), InferResponse)
    before = await router_stats(nc)
    assert before["shared_memory"]["regions"] >= 1, "Triton shares this host: batches go through shared memory"
    await asyncio.to_thread(stack.triton.stop)
    try:
        codes = []
        for _ in range(8):
            reply = await client.infer("mobilenet_v2", image=image, use_cache=False, timeout_s=5)
            assert isinstance(reply, ErrorReply), reply
            codes.append(reply.code)
        assert set(codes) == {ErrorCode.UNAVAILABLE}, codes
        started = time.perf_counter()
        reply = await client.infer("mobilenet_v2", image=image, use_cache=False, timeout_s=5)
        assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.UNAVAILABLE
        assert "circuit open" in reply.message and reply.retry_after_ms
        assert time.perf_counter() - started < 0.5, "an open circuit refuses at once"
    finally:
        # traffic goes on while Triton restarts: each probe the breaker lets through fails and opens it again
        starting = asyncio.ensure_future(asyncio.to_thread(stack.triton.start))  # done once Triton is ready
        while not starting.done():
            await client.infer("mobilenet_v2", image=image, use_cache=False, timeout_s=2)
            await asyncio.sleep(0.2)
        await starting
    ready = time.monotonic()
    while True:
        reply = await client.infer("mobilenet_v2", image=image, use_cache=False, timeout_s=5)
        if isinstance(reply, InferResponse):
            break
        assert time.monotonic() - ready < 60, f"no recovery: {reply}"
        await asyncio.sleep(0.1)
    # the router checks an open circuit's model for readiness every 0.25 s and probes at once, instead of waiting
    # out the breaker's reset (10 s in this stack) after the last failed probe; and it reconnects to Triton at most
    # 1 s apart
    assert time.monotonic() - ready < 2.5, f"recovered {time.monotonic() - ready:.1f} s after Triton was ready"
    assert {p.name: p.pid for p in stack.services} == pids, "recovered without restarting any service"
    # the restarted Triton forgot the router's shared-memory regions: they were registered again, and are used
    sent = (await router_stats(nc))["triton_batches"].get("shared_memory", 0)
    for _ in range(3):
        assert isinstance(await client.infer("mobilenet_v2", image=image, use_cache=False, timeout_s=5), InferResponse)
    after = await router_stats(nc)
    assert after["shared_memory"]["reregistered"] > before["shared_memory"]["reregistered"]
    assert after["triton_batches"]["shared_memory"] >= sent + 3
