"""Triton replicas behind one name: the router's gateway spreads its calls over every replica (gRPC round robin),
with two real tritonservers. ``NATRITON_TRITON_GRPC_URL=dns:///triton-headless:8001`` does this in Kubernetes; a
static ``ipv4:`` address list exercises the same load-balancing policy here without a DNS server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from natriton_dev.stack import DEFAULT_MODEL_REPOSITORY
from natriton_dev.triton import TritonServer
from natriton_router.triton import TritonGateway, channel_args
from tests.integration.test_metrics import series_names

MODEL = "noop"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TritonServer]]:
    servers = [
        TritonServer(
            DEFAULT_MODEL_REPOSITORY,
            tmp_path_factory.mktemp(f"triton-replica-{i}"),
            model_control_mode="explicit",
            load_models=(MODEL,),
        )
        for i in range(2)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def successes(server: TritonServer) -> float:
    base_url = server.metrics_url.removesuffix("/metrics")
    return series_names(base_url, model=MODEL).get("nv_inference_request_success", 0.0)


def test_only_name_targets_get_round_robin() -> None:
    single = dict(channel_args("127.0.0.1:8001"))
    assert "grpc.lb_policy_name" not in single  # one connection
    assert single["grpc.max_reconnect_backoff_ms"] <= 1000  # a restarted Triton is reached again within a second
    for url in ("dns:///triton:8001", "ipv4:10.0.0.1:8001,10.0.0.2:8001"):
        args = dict(channel_args(url) or [])
        assert args["grpc.lb_policy_name"] == "round_robin"
        assert args["grpc.max_receive_message_length"] == args["grpc.max_send_message_length"] > 2**30


@pytest.mark.asyncio(loop_scope="session")
async def test_calls_are_spread_over_every_replica(replicas: list[TritonServer]) -> None:
    targets = ",".join(server.grpc_url for server in replicas)
    gateway = TritonGateway(f"ipv4:{targets}", timeout_s=10.0)
    try:
        await gateway.wait_ready(30)
        before = [await asyncio.to_thread(successes, server) for server in replicas]
        data = np.zeros((1, 16), dtype=np.uint8)
        for _ in range(20):
            out = await gateway.infer(MODEL, "1", {"DATA": data}, ("SIZE",))
            assert out["SIZE"].tolist() == [[16]]
        after = [await asyncio.to_thread(successes, server) for server in replicas]
    finally:
        await gateway.close()
    per_replica = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(per_replica) == 20
    assert min(per_replica) >= 5, per_replica  # round robin: both take a share (one channel would pin one)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_single_address_pins_one_replica(replicas: list[TritonServer]) -> None:
    """The control: a plain host:port goes to that one server only."""
    gateway = TritonGateway(replicas[0].grpc_url, timeout_s=10.0)
    try:
        before = [await asyncio.to_thread(successes, server) for server in replicas]
        for _ in range(5):
            await gateway.infer(MODEL, "1", {"DATA": np.zeros((1, 4), dtype=np.uint8)}, ("SIZE",))
        after = [await asyncio.to_thread(successes, server) for server in replicas]
    finally:
        await gateway.close()
    assert [a - b for a, b in zip(after, before, strict=True)] == [5, 0]
