"""Cameras under faults, on a stack of their own (two copies of preprocess and postprocess, the face detector):

- reliable mode: kill -9 a preprocess copy and then a postprocess copy mid-stream; every frame number still
  appears in the results exactly once, in order (frames a dead copy held are delivered again by JetStream, their
  acknowledgement only ever comes from the hop that answered them);
- a live HTTP stream that stops and comes back: the camera goes ``lost`` and recovers by itself, with no restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy

from natriton.frames import STREAM_NAMES
from natriton.messages import SourceState, StreamMode, StreamSource
from natriton.streams import StreamRegistry, open_registry
from natriton_client.protocol import CAMERA_RESULTS_STREAM, FrameResult, detections_subject
from natriton_dev.media import StreamServer, sample_clip
from natriton_dev.stack import LocalStack
from tests.integration.conftest import model_repository_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
RESULTS = msgspec.msgpack.Decoder(FrameResult)
ACK_WAIT_S = 2.0


@pytest.fixture(scope="module")
def camera_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir: Path = tmp_path_factory.mktemp("camera-faults")
    repository = model_repository_of(workdir, "face_detector")
    # a busy host may need many short ack waits before a frame is answered: no dead letters for slowness here
    env = {"NATRITON_FRAME_ACK_WAIT_S": str(ACK_WAIT_S), "NATRITON_RELIABLE_MAX_DELIVER": "50"}
    with LocalStack(
        workdir, model_repository=repository, copies={"preprocess": 2, "postprocess": 2}, service_env=env
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def camera_nc(camera_stack: LocalStack) -> AsyncIterator[NATS]:
    connection = await nats.connect(camera_stack.nats_url)
    yield connection
    await connection.close()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def registry(camera_nc: NATS) -> StreamRegistry:
    return await open_registry(camera_nc)


async def hang_then_kill(stack: LocalStack, service: str, copy: int, hang_s: float = 1.5) -> None:
    """Freeze a copy (frames keep being delivered to it and pile up), then kill -9 it with them."""
    process = stack.service(service, copy)
    assert process.pid is not None and process.is_running
    os.kill(process.pid, signal.SIGSTOP)
    await asyncio.sleep(hang_s)
    os.kill(process.pid, signal.SIGKILL)
    process.stop(timeout=5)  # reaps it
    assert process.returncode == -signal.SIGKILL


async def test_reliable_frames_survive_kill_9_of_preprocess_and_postprocess(
    camera_stack: LocalStack, camera_nc: NATS, registry: StreamRegistry
) -> None:
    camera = f"faults-{uuid.uuid4().hex[:6]}"
    source = StreamSource(
        camera=camera, url=str(sample_clip("Megamind.avi")), mode=StreamMode.RELIABLE, change_gate=False, fps=12
    )
    subscription = await camera_nc.jetstream().subscribe(
        detections_subject(camera), stream=CAMERA_RESULTS_STREAM, ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )  # fmt: skip
    results: list[FrameResult] = []
    await registry.put_source(source)
    try:
        async with asyncio.timeout(180):
            while len(results) < 130:  # the clip at 12 fps: 135 frames
                results.append(RESULTS.decode((await subscription.next_msg(timeout=60)).data))
                if len(results) == 25:
                    await hang_then_kill(camera_stack, "preprocess", 0)
                if len(results) == 60:
                    await hang_then_kill(camera_stack, "postprocess", 1)
        consumer = await camera_nc.jetstream().consumer_info(STREAM_NAMES[StreamMode.RELIABLE], "preprocess_reliable")
    finally:
        await subscription.unsubscribe()
        await registry.remove_source(camera)
        for service, copy in (("preprocess", 0), ("postprocess", 1)):
            process = camera_stack.service(service, copy)
            if not process.is_running:
                process.start()
                process.wait_ready(60)
    numbers = [r.frame_number for r in results]
    assert numbers == list(range(len(numbers)))  # every frame exactly once, in order
    failed = [(r.frame_number, r.error, r.error_message) for r in results if r.error is not None]
    assert not failed, failed  # redelivered, not lost: no frame answered with an error
    assert sum(1 for r in results if r.objects) >= 0.9 * len(results)
    # frames the dead copies held were delivered again: the consumer made more deliveries than the stream has frames
    assert consumer.delivered.consumer_seq - consumer.delivered.stream_seq >= 2, consumer.delivered


async def test_a_live_stream_that_stops_and_returns_recovers_by_itself(
    camera_stack: LocalStack, camera_nc: NATS, registry: StreamRegistry, tmp_path: Path
) -> None:
    server = StreamServer(sample_clip("Megamind.avi"), tmp_path / "stream")
    server.start()
    camera = f"live-{uuid.uuid4().hex[:6]}"
    subscription = await camera_nc.jetstream().subscribe(
        detections_subject(camera), stream=CAMERA_RESULTS_STREAM, ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )  # fmt: skip
    await registry.put_source(StreamSource(camera=camera, url=server.url, fps=5, mode=StreamMode.REALTIME))

    async def next_result() -> FrameResult:
        return RESULTS.decode((await subscription.next_msg(timeout=30)).data)

    async def state_becomes(state: SourceState, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while True:  # the owner writes its status to KV every few seconds
                status = await registry.get_status(camera)
                if status is not None and status.state is state:
                    return
                await asyncio.sleep(0.2)

    try:
        before = [await next_result() for _ in range(5)]
        await state_becomes(SourceState.LIVE, 15)
        server.stop()
        await state_becomes(SourceState.LOST, 20)
        while True:  # results of frames read before the loss may still arrive
            try:
                await subscription.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                break
        server.start()  # the same port
        after = [await next_result() for _ in range(5)]
        await state_becomes(SourceState.LIVE, 15)
        status = await registry.get_status(camera)
    finally:
        await subscription.unsubscribe()
        await registry.remove_source(camera)
        server.stop()
    assert status is not None and status.reconnects >= 1
    assert after[0].frame_number > before[-1].frame_number  # the same camera, numbering continues
    assert all(r.error is None for r in before + after)
    assert any(r.objects for r in after)  # faces again, through the mesh
