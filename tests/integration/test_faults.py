"""Faults: Redis going away, a service restarted mid-traffic. Every request still gets exactly one reply."""

from __future__ import annotations

import asyncio

import pytest

from natriton.errors import ErrorCode
from natriton.messages import ErrorReply, InferResponse
from natriton_client.aio import MeshClient
from natriton_dev.stack import LocalStack

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"


async def test_redis_down_degrades_to_no_cache(client: MeshClient, stack: LocalStack, photos: dict[str, bytes]) -> None:
    stack.redis.stop()
    try:
        for _ in range(2):
            reply = await client.infer(MODEL, image=photos["coffee.jpg"], top_k=4, timeout_s=5)
            assert isinstance(reply, InferResponse), reply
            assert not reply.cached
    finally:
        stack.redis.start()
    # once Redis is back, caching resumes without restarting any service
    for _ in range(20):
        await client.infer(MODEL, image=photos["coffee.jpg"], top_k=4)
        reply = await client.infer(MODEL, image=photos["coffee.jpg"], top_k=4)
        if isinstance(reply, InferResponse) and reply.cached:
            break
        await asyncio.sleep(0.5)
    assert isinstance(reply, InferResponse) and reply.cached


async def test_sigterm_under_load_answers_every_request_once(
    client: MeshClient, stack: LocalStack, photos: dict[str, bytes]
) -> None:
    """Stop preprocess while requests are in flight: each request gets one reply (result or typed error)."""
    preprocess = stack.service("preprocess")
    requests = [
        client.infer(MODEL, image=photos["grace_hopper.jpg"], use_cache=False, timeout_s=4, request_id=f"drain-{i}")
        for i in range(24)
    ]
    tasks = [asyncio.ensure_future(r) for r in requests]
    await asyncio.sleep(0.05)
    await asyncio.to_thread(preprocess.stop, 20.0)
    replies = await asyncio.gather(*tasks)
    try:
        assert sorted(r.request_id for r in replies) == sorted(f"drain-{i}" for i in range(24))
        for reply in replies:
            if isinstance(reply, ErrorReply):
                assert reply.code == ErrorCode.DEADLINE_EXCEEDED, reply
        assert preprocess.returncode == 0, "preprocess should exit cleanly after draining"
        assert any(isinstance(r, InferResponse) for r in replies), "work accepted before SIGTERM must finish"
    finally:
        preprocess.start()
        await asyncio.to_thread(preprocess.wait_ready, 30.0)
    reply = await client.infer(MODEL, image=photos["coffee.jpg"], use_cache=False)
    assert isinstance(reply, InferResponse)
