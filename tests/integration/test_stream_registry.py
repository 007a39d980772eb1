"""The camera registry on a real nats-server with JetStream: sources, status, and leases that exactly one ingest
copy holds, that expire when their owner stops renewing them, and that a compare-and-set keeps from being stolen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from natriton.errors import MeshError
from natriton.messages import SourceState, StreamMode, StreamSource, StreamStatus
from natriton.streams import StreamRegistry, StreamSources, open_registry
from natriton_dev.servers import NatsServer

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEASE_TTL_S = 2.0


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("streams-nats")) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


@pytest_asyncio.fixture(loop_scope="session")
async def registry(nc: NATS) -> StreamRegistry:
    return await open_registry(nc, lease_ttl_s=LEASE_TTL_S)


async def test_sources_are_added_listed_and_removed(registry: StreamRegistry, nc: NATS) -> None:
    view = StreamSources()
    await view.start(nc)
    try:
        lobby = StreamSource(camera="lobby", url="rtsp://cam/lobby", fps=5, mode=StreamMode.RELIABLE)
        await registry.put_source(lobby)
        await registry.put_source(StreamSource(camera="gate-2", url="/data/gate.mp4", loop=True))
        assert [s.camera for s in await registry.list_sources()] == ["gate-2", "lobby"]
        assert await registry.get_source("lobby") == lobby
        async with asyncio.timeout(5):
            assert await view.wait_for("lobby") == lobby  # every ingest copy sees it at once
        assert await registry.remove_source("lobby") is True
        assert await registry.remove_source("lobby") is False
        assert [s.camera for s in await registry.list_sources()] == ["gate-2"]
        await asyncio.sleep(0.2)
        assert view.names() == ["gate-2"]
    finally:
        await view.stop()
        await registry.remove_source("gate-2")


@pytest.mark.parametrize(
    "bad",
    [
        StreamSource(camera="a.b", url="x"),  # a dot would split the subject
        StreamSource(camera="", url="x"),
        StreamSource(camera="x" * 65, url="x"),
        StreamSource(camera="cam", url=" "),
        StreamSource(camera="cam", url="x", fps=-1),
        StreamSource(camera="cam", url="x", model=""),
    ],
)
async def test_invalid_sources_are_refused(registry: StreamRegistry, bad: StreamSource) -> None:
    with pytest.raises(MeshError) as raised:
        await registry.put_source(bad)
    assert raised.value.code == "invalid_argument"
    assert await registry.get_source(bad.camera) is None


async def test_status_round_trips(registry: StreamRegistry) -> None:
    status = StreamStatus(camera="dock", state=SourceState.LOST, owner="ingest-a", reconnects=3, last_error="refused")
    await registry.put_status(status)
    assert await registry.get_status("dock") == status
    await registry.remove_status("dock")
    assert await registry.get_status("dock") is None


async def test_exactly_one_copy_holds_a_camera(registry: StreamRegistry) -> None:
    leases = await asyncio.gather(*(registry.acquire("yard", f"ingest-{i}") for i in range(8)))
    held = [lease for lease in leases if lease is not None]
    assert len(held) == 1
    assert await registry.holder("yard") == held[0].owner
    renewed = await registry.renew(held[0])
    assert renewed is not None and renewed.revision > held[0].revision
    assert await registry.renew(held[0]) is None  # a stale revision: the compare-and-set refuses it
    await registry.release(renewed)
    assert await registry.holder("yard") == ""
    assert await registry.acquire("yard", "ingest-9") is not None


async def test_a_lease_its_owner_stops_renewing_expires_and_another_copy_takes_over(registry: StreamRegistry) -> None:
    first = await registry.acquire("roof", "ingest-a")
    assert first is not None
    assert await registry.acquire("roof", "ingest-b") is None
    taken = None
    async with asyncio.timeout(LEASE_TTL_S * 4):
        while taken is None:  # ingest-a died: nobody renews
            await asyncio.sleep(0.2)
            taken = await registry.acquire("roof", "ingest-b")
    assert await registry.holder("roof") == "ingest-b"
    assert await registry.renew(first) is None  # the old owner learns it lost the camera
    await registry.release(taken)


async def test_a_renewed_lease_does_not_expire(registry: StreamRegistry) -> None:
    lease = await registry.acquire("hall", "ingest-a")
    assert lease is not None
    for _ in range(int(LEASE_TTL_S * 3 / 0.5)):  # renewing every 0.5 s for three TTLs
        await asyncio.sleep(0.5)
        lease = await registry.renew(lease)
        assert lease is not None
        assert await registry.acquire("hall", "ingest-b") is None
    await registry.release(lease)
