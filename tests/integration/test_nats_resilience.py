"""NATS failures under load, with real nats-server processes (no fakes):

- one server stopped (gracefully, or with kill -9) and started again on the same port with the same JetStream
  store while a publisher and a service runtime work: both reconnect by themselves, the runtime's plain
  subscription and its durable stream consumer resume, and every message JetStream acknowledged is processed;
- a 3-node cluster (processes on this host) with the reliable frames stream at 3 replicas (our stream
  configuration): the stream leader is killed with kill -9 mid-run while a client connected to all three keeps
  publishing; every acknowledged message is in the stream at its acknowledged sequence, and still is once the
  killed node is back and leads the stream again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from natriton.frames import STREAM_NAMES, frames_subject, stream_config
from natriton.messages import StreamMode
from natriton.runtime import Inbound, ServiceRuntime
from natriton.settings import CommonSettings
from natriton_dev.servers import NatsCluster, NatsServer

pytestmark = pytest.mark.asyncio(loop_scope="session")
STREAM = "RESILIENCE"
SUBJECT = "resilience.work"
PINGS = "resilience-ping"  # a plain subject, outside the stream
MESSAGES = 200  # spread over 6 copies: a copy bound to the consumer is left without any with odds (5/6)^200


async def connect(servers: list[str], name: str) -> NATS:
    """A client that keeps reconnecting (like the services' runtime)."""
    return await nats.connect(servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=1)


@dataclass
class Publisher:
    """Publishes numbered messages with ``Nats-Msg-Id``, each retried until JetStream acknowledges it; remembers
    what was acknowledged, at which sequence."""

    js: JetStreamContext
    subject: str
    acked: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            msg_id = f"m{number}"
            try:
                ack = await self.js.publish(self.subject, msg_id.encode(), headers={"Nats-Msg-Id": msg_id}, timeout=1)
            except (NatsError, TimeoutError, OSError):
                self.failures += 1  # the server is away: the same message again (the id makes a retry safe)
                await asyncio.sleep(0.05)
                continue
            self.acked[msg_id] = ack.seq
            number += 1


async def until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------------------ one server
@pytest.mark.parametrize("how", ["graceful", "kill -9"])
async def test_a_restarted_server_loses_no_acknowledged_message_and_consumers_resume(tmp_path: Path, how: str) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    runtime = ServiceRuntime("resilience", "0.0.1", CommonSettings(nats_url=server.url, metrics_port=0))
    publisher_nc: NATS | None = None
    try:
        await runtime.connect()
        js = runtime.nc.jetstream()
        await js.add_stream(
            StreamConfig(name=STREAM, subjects=["resilience.>"], storage=StorageType.FILE,
                         retention=RetentionPolicy.WORK_QUEUE)
        )  # fmt: skip
        processed: set[str] = set()
        pings: list[float] = []

        async def work(inbound: Inbound) -> None:
            processed.add(inbound.data.decode())
            await runtime.publish(inbound.reply, b"")  # acknowledged once handled

        async def on_ping(msg: Msg) -> None:
            pings.append(time.monotonic())

        await runtime.add_stream_endpoint("work", STREAM, SUBJECT, work, durable="worker", ack_wait_s=2.0)
        await runtime.subscribe(PINGS, on_ping)
        publisher_nc = await connect([server.url], "publisher")
        publisher = Publisher(publisher_nc.jetstream(), SUBJECT)

        async def ping() -> None:
            while not publisher.stop.is_set():
                if publisher_nc is not None and publisher_nc.is_connected:
                    await publisher_nc.publish(PINGS, b"")
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(publisher.run()), asyncio.create_task(ping())]
        await until(lambda: len(publisher.acked) >= 200, 10, "publishing under way")
        before = len(publisher.acked)
        if how == "kill -9":
            os.kill(server.pid or 0, signal.SIGKILL)
        await asyncio.to_thread(server.stop)
        down_at = time.monotonic()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)  # the same port, the same store
        restarted_at = time.monotonic()
        await until(lambda: len(publisher.acked) >= before + 500, 15, "publishing again after the restart")
        await until(lambda: runtime.nc.is_connected, 10, "the runtime reconnected")  # by itself (every 1 s)
        await asyncio.sleep(1.0)  # under load a while longer, the runtime connected again
        publisher.stop.set()
        await asyncio.gather(*tasks)

        assert publisher.failures > 0  # the outage was felt
        assert runtime.nc.is_connected and publisher_nc.is_connected
        await until(lambda: set(publisher.acked) <= processed, 15, "every acknowledged message processed")
        assert any(t > restarted_at for t in pings)  # the plain subscription resumed
        assert not [t for t in pings if down_at < t < restarted_at]

        async def consumed() -> bool:
            info = await js.consumer_info(STREAM, "worker")
            return info.num_pending == 0 and info.num_ack_pending == 0

        deadline = time.monotonic() + 10
        while not await consumed():  # the durable consumer took (and acknowledged) the whole backlog
            assert time.monotonic() < deadline, "the consumer did not catch up"
            await asyncio.sleep(0.1)
        consumer = await js.consumer_info(STREAM, "worker")
        stream_state = (await js.stream_info(STREAM)).state
        assert consumer.ack_floor.stream_seq == stream_state.last_seq
        # what is left in the work queue was processed: now and then the server keeps a message it stored right at
        # the stop although its consumer acknowledged it (it is not delivered again: below the ack floor)
        left, seq = [], stream_state.first_seq
        for _ in range(stream_state.messages):
            msg = await js.get_msg(STREAM, seq, subject=SUBJECT, next=True)
            left.append(msg.data.decode() if msg.data else "")
            seq = (msg.seq or seq) + 1
        assert set(left) <= processed and len(left) <= 3, left
    finally:
        if publisher_nc is not None:
            await publisher_nc.close()
        await runtime.drain()
        server.stop()


async def test_copies_that_start_together_share_one_durable_consumer(tmp_path: Path) -> None:
    """Several copies of a service start at once and race to create their stream's durable consumer: none fails,
    each message goes to exactly one of them, and every copy takes a share (none is left bound to a deliver subject
    that a later copy replaced)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    copies = [ServiceRuntime("starter", "0.0.1", CommonSettings(nats_url=server.url, metrics_port=0)) for _ in range(6)]
    taken: list[tuple[int, str]] = []
    try:
        await asyncio.gather(*(runtime.connect() for runtime in copies))
        await copies[0].nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["resilience.>"]))

        def worker(number: int, runtime: ServiceRuntime) -> Callable[[Inbound], Awaitable[None]]:
            async def work(inbound: Inbound) -> None:
                taken.append((number, inbound.data.decode()))
                await runtime.publish(inbound.reply, b"")

            return work

        for attempt in range(3):  # a race is lost only now and then: several tries, a new consumer each
            durable = f"together-{attempt}"
            await asyncio.gather(
                *(
                    runtime.add_stream_endpoint(f"work{attempt}", STREAM, SUBJECT, worker(i, runtime), durable=durable)
                    for i, runtime in enumerate(copies)
                )
            )
            info = await copies[0].nc.jetstream().consumer_info(STREAM, durable)
            assert info.config.deliver_group == durable
        js = copies[0].nc.jetstream()
        for n in range(MESSAGES):
            await js.publish(SUBJECT, f"m{n}".encode())
        await until(lambda: len(taken) >= 3 * MESSAGES, 10, "every message taken by each consumer")
        await asyncio.sleep(0.3)
        assert sorted(m for _, m in taken) == sorted(f"m{n}" for n in range(MESSAGES) for _ in range(3))
        idle = set(range(len(copies))) - {number for number, _ in taken}
        assert not idle, f"copies {sorted(idle)} took nothing"
    finally:
        for runtime in copies:
            await runtime.drain()
        server.stop()


# ------------------------------------------------------------------------------------------------ a cluster
async def missing_acknowledged(js: JetStreamContext, stream: str, acked: dict[str, int]) -> list[str]:
    """Acknowledged message ids not found at their acknowledged sequence (read through the stream leader)."""
    items = list(acked.items())
    missing: list[str] = []
    for start in range(0, len(items), 200):
        chunk = items[start : start + 200]
        found = await asyncio.gather(*(js.get_msg(stream, seq) for _, seq in chunk), return_exceptions=True)
        for (msg_id, _), msg in zip(chunk, found, strict=True):
            if isinstance(msg, BaseException) or msg.data != msg_id.encode():
                missing.append(msg_id)
    return missing


async def stream_leader(js: JetStreamContext, stream: str) -> str:
    info = await js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster", size=3)
    await asyncio.to_thread(nodes.start)
    yield nodes
    await asyncio.to_thread(nodes.stop)


async def test_killing_the_stream_leader_of_a_3_node_cluster_loses_no_acknowledged_message(
    cluster: NatsCluster,
) -> None:
    nc = await connect(cluster.urls, "cluster-publisher")
    try:
        js = nc.jetstream(timeout=2.0)
        stream = STREAM_NAMES[StreamMode.RELIABLE]
        await js.add_stream(stream_config(StreamMode.RELIABLE, replicas=3))
        publisher = Publisher(js, frames_subject(StreamMode.RELIABLE, "cam"))
        task = asyncio.create_task(publisher.run())
        await until(lambda: len(publisher.acked) >= 300, 10, "publishing under way")
        leader = await stream_leader(js, stream)
        victim = cluster.node(leader)
        at_kill = len(publisher.acked)
        await asyncio.to_thread(victim.kill)
        await until(lambda: len(publisher.acked) >= at_kill + 1000, 20, "publishing through the new leader")
        publisher.stop.set()
        await task

        new_leader = await stream_leader(js, stream)
        assert new_leader != leader
        assert await missing_acknowledged(js, stream, publisher.acked) == []
        info = await js.stream_info(stream)
        assert info.state.messages >= len(publisher.acked)

        # the killed node comes back, catches up, and serves every acknowledged message as the leader
        await asyncio.to_thread(victim.start)
        await asyncio.to_thread(cluster.wait_healthy)

        async def caught_up() -> bool:
            cluster_info = (await js.stream_info(stream)).cluster
            replicas = cluster_info.replicas if cluster_info is not None else None
            return any(peer.name == leader and peer.current for peer in replicas or [])

        deadline = time.monotonic() + 15
        while not await caught_up():
            assert time.monotonic() < deadline, f"{leader} did not catch up"
            await asyncio.sleep(0.2)
        for _ in range(12):  # step the leader down until the node that was killed leads
            if await stream_leader(js, stream) == leader:
                break
            request = json.dumps({"placement": {"preferred": leader}}).encode()
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
            await asyncio.sleep(0.5)
        assert await stream_leader(js, stream) == leader
        assert await missing_acknowledged(js, stream, publisher.acked) == []
    finally:
        await nc.close()


async def test_a_stream_is_created_with_the_replicas_asked_for_and_kept_by_callers_without_the_setting(
    cluster: NatsCluster,
) -> None:
    from natriton import deadletters
    from natriton.frames import ensure_results_stream, ensure_streams
    from natriton_client.protocol import CAMERA_RESULTS_STREAM

    nc = await connect(cluster.urls, "replicas")
    try:
        js = nc.jetstream(timeout=5.0)
        await ensure_streams(js, 3)
        await deadletters.ensure_dead_letter_stream(js, 3)
        await ensure_results_stream(js)  # a caller without the setting (ingest today): a new stream gets 1
        await ensure_results_stream(js, 3)  # preprocess with NATRITON_STREAM_REPLICAS=3
        await ensure_results_stream(js)  # ingest again: keeps 3
        for name in (*STREAM_NAMES.values(), deadletters.STREAM, CAMERA_RESULTS_STREAM):
            assert (await js.stream_info(name)).config.num_replicas == 3, name
        with pytest.raises(NotFoundError):
            await js.stream_info("NO_SUCH_STREAM")
    finally:
        await nc.close()
