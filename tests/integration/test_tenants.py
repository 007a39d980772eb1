"""Tenants, adversarially: two NATS accounts import the mesh's public service; neither ever gets the other's work.

A nats-server of its own with three accounts: MESH (the four services, JetStream) exporting ``natriton.v1.infer``,
and TENANT_A / TENANT_B importing it. The services use the session stack's Triton and Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from natriton_client import AsyncClient, Overloaded, RetryPolicy
from natriton_client.protocol import Classification, Header, InferResponse
from natriton_dev.mesh import SERVICES, ServiceProcess
from natriton_dev.servers import NatsServer
from natriton_dev.stack import LocalStack

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"
ACCOUNTS = """
accounts {
  MESH: {
    jetstream: enabled
    users: [{user: mesh, password: mesh-secret}]
    exports: [{service: "natriton.v1.infer"}]
  }
  TENANT_A: {
    users: [{user: alice, password: alice-secret}]
    imports: [{service: {account: MESH, subject: "natriton.v1.infer"}}]
  }
  TENANT_B: {
    users: [{user: bob, password: bob-secret}]
    imports: [{service: {account: MESH, subject: "natriton.v1.infer"}}]
  }
}
"""


def url_for(server: NatsServer, user: str) -> str:
    return f"nats://{user}:{user}-secret@127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def tenant_mesh(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """The four services in the MESH account of a NATS server with two tenant accounts."""
    workdir: Path = tmp_path_factory.mktemp("tenants")
    server = NatsServer(workdir / "nats", extra_config=ACCOUNTS)
    server.start()
    env = stack.env() | {
        "NATRITON_NATS_URL": url_for(server, "mesh"),
        "NATRITON_TENANT_LIMITS": "TENANT_B:2/s:100",
    }
    services = [ServiceProcess(service, workdir / "services", env) for service in SERVICES]
    try:
        for process in services:
            process.start()
            process.wait_ready()
        yield server
    finally:
        for process in reversed(services):
            process.stop(timeout=20.0)
        server.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tenants(tenant_mesh: NatsServer) -> AsyncIterator[dict[str, AsyncClient]]:
    clients = {
        name: await AsyncClient.connect(url_for(tenant_mesh, user), retry=RetryPolicy(max_retries=0))
        for name, user in (("A", "alice"), ("B", "bob"))
    }
    yield clients
    for client in clients.values():
        await client.close()


def top(reply: InferResponse) -> int:
    assert isinstance(reply.result, Classification)
    return reply.result.classes[0].index


async def test_same_input_same_id_different_tenants_never_share_an_answer(
    tenants: dict[str, AsyncClient], photos: dict[str, bytes]
) -> None:
    image = photos["coffee.jpg"]
    first_a = await tenants["A"].infer(MODEL, image=image, request_id="frame-1")
    assert not first_a.cached and top(first_a) == 967
    again_a = await tenants["A"].infer(MODEL, image=image, request_id="frame-1")
    assert again_a.cached, "a tenant's own repeat is a cache hit"
    await asyncio.sleep(0.6)  # B's rate limit (2/s) has room again
    first_b = await tenants["B"].infer(MODEL, image=image, request_id="frame-1")
    assert not first_b.cached, "B must not be answered from A's cache entry"
    assert top(first_b) == 967 and first_b.request_id == "frame-1"
    # at the same moment, same id, different images: each gets its own answer
    await asyncio.sleep(1.0)
    a, b = await asyncio.gather(
        tenants["A"].infer(MODEL, image=photos["grace_hopper.jpg"], request_id="same", use_cache=False),
        tenants["B"].infer(MODEL, image=photos["coffee.jpg"], request_id="same", use_cache=False),
    )
    assert top(b) == 967 and top(a) != 967


async def test_a_forged_identity_header_is_replaced_by_the_server(
    tenant_mesh: NatsServer, tenants: dict[str, AsyncClient], photos: dict[str, bytes]
) -> None:
    """Alice claims to be TENANT_B: the server stamps her real account, so she gets her own cache, not B's."""
    image = photos["chelsea.png"]
    await asyncio.sleep(1.0)
    await tenants["B"].infer(MODEL, image=image)  # B's cache now holds this answer
    forged = await tenants["A"].infer(
        MODEL, image=image, extra_headers={"Nats-Request-Info": json.dumps({"acc": "TENANT_B", "rtt": 1})}
    )
    assert not forged.cached, "a forged header must not open B's cache"
    audit = await audit_records(tenant_mesh)
    assert any(r["tenant"] == "TENANT_A" and r["request_id"] == forged.request_id for r in audit)


async def test_a_tenant_over_its_rate_is_refused_and_the_other_is_not_held_back(
    tenants: dict[str, AsyncClient], photos: dict[str, bytes]
) -> None:
    await asyncio.sleep(1.0)
    image = photos["astronaut.jpg"]
    outcomes = await asyncio.gather(*(tenants["B"].infer(MODEL, image=image) for _ in range(6)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    assert 3 <= len(refused) <= 4, outcomes  # 2 per second, bursts of 2
    assert all("tenant TENANT_B" in str(o) for o in refused)
    answers = await asyncio.gather(*(tenants["A"].infer(MODEL, image=image) for _ in range(6)))
    assert all(isinstance(a, InferResponse) for a in answers), "A has no limit"


async def test_fire_and_forget_from_a_tenant_goes_nowhere_shared(
    tenant_mesh: NatsServer, photos: dict[str, bytes]
) -> None:
    mesh = await nats.connect(url_for(tenant_mesh, "mesh"))
    alice = await nats.connect(url_for(tenant_mesh, "alice"))
    try:
        shared = await mesh.subscribe(f"natriton.v1.results.{MODEL}")
        await alice.publish(
            "natriton.v1.infer",
            json.dumps({"type": "infer_request", "model": MODEL, "input": {"type": "text", "text": "x"}}).encode(),
            headers={Header.RESULTS_TO: "shared", Header.CONTENT_TYPE: "application/json"},
        )
        await alice.flush()
        with pytest.raises(nats.errors.TimeoutError):
            await shared.next_msg(timeout=1.5)
    finally:
        await alice.close()
        await mesh.close()


async def test_every_answer_has_an_audit_record_with_its_tenant(
    tenant_mesh: NatsServer, tenants: dict[str, AsyncClient], photos: dict[str, bytes]
) -> None:
    await asyncio.sleep(1.0)
    reply = await tenants["B"].infer(MODEL, image=photos["grace_hopper.jpg"], request_id="audited-1")
    records = await audit_records(tenant_mesh)
    mine = [r for r in records if r["request_id"] == "audited-1"]
    assert len(mine) == 1, mine
    record = mine[0]
    assert (record["tenant"], record["model"], record["version"], record["outcome"]) == (
        "TENANT_B",
        MODEL,
        reply.version,
        "ok",
    )
    assert record["latency_ms"] > 0 and record["ingest"]
    assert any(r["tenant"] == "TENANT_B" and r["outcome"] == "overloaded" for r in records), "refusals are audited"


async def audit_records(server: NatsServer) -> list[dict[str, object]]:
    """Every record in the audit stream so far (read in the MESH account)."""
    nc = await nats.connect(url_for(server, "mesh"))
    try:
        js = nc.jetstream()
        await asyncio.sleep(0.3)  # the last record is published after the answer
        info = await js.stream_info("NATRITON_AUDIT")
        subscription = await js.subscribe("natriton.v1.audit.>", ordered_consumer=True)
        records = []
        for _ in range(info.state.messages):
            msg = await subscription.next_msg(timeout=5)
            records.append(json.loads(msg.data))
        await subscription.unsubscribe()
        return records
    finally:
        await nc.close()
