"""A camera worker's flow control, without servers: frames from a scripted reader, a pipeline whose answers the test
releases one by one (in any order), results collected as the worker publishes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pytest

from natriton.messages import Detection, Detections, InferResponse, Reply, SourceState, StreamMode, StreamSource
from natriton.video.source import FrameSample, SourceKind, SourceStats
from natriton_client.protocol import FrameResult
from natriton_ingest.cameras import CameraContext, CameraLimits, CameraWorker

pytestmark = pytest.mark.asyncio
RESULTS = msgspec.msgpack.Decoder(FrameResult)
PIXELS = np.zeros((48, 64, 3), dtype=np.uint8)


class ScriptedReader:
    """Hands the worker the frames the test pushes."""

    kind = SourceKind.NETWORK

    def __init__(self) -> None:
        self.queue: asyncio.Queue[FrameSample | None] = asyncio.Queue()

    def push(self, number: int) -> None:
        self.queue.put_nowait(
            FrameSample(
                frame_number=number,
                source_index=number,
                pts=number / 10,
                captured_at=1000.0 + number,
                width=64,
                height=48,
                pixels=PIXELS,
            )
        )

    def start(self) -> None:
        pass

    async def frames(self) -> AsyncIterator[FrameSample]:
        while (sample := await self.queue.get()) is not None:
            yield sample

    async def aclose(self) -> bool:
        return True

    def stats(self) -> SourceStats:
        return SourceStats(state=SourceState.LIVE)


class FakeMesh:
    """The parts of NATS, the frame store and the reply path a worker uses; frames wait until ``answer``."""

    def __init__(self) -> None:
        self.sent: list[int] = []  # frame numbers published to the frames stream, in order
        self.results: list[FrameResult] = []
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self._by_mesh_id: dict[str, asyncio.Future[bytes]] = {}
        self._ids = 0
        self.nc = self
        self.micro = SimpleNamespace(id="boot-1")  # the runtime's per-process id
        self.msg_ids: list[str] = []

    # NATS (core publish of results and events; JetStream publish of frames)
    def jetstream(self) -> FakeMesh:
        return self

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        if subject.startswith("natriton.v1.frames."):
            number = int(headers["Natriton-Request-Id"].split(":")[1]) if headers else -1
            self.sent.append(number)
            self.msg_ids.append(headers.get("Nats-Msg-Id", "") if headers else "")
            self.waiting[number] = self._by_mesh_id[headers["Natriton-Mesh-Id"]] if headers else asyncio.Future()
        elif subject.startswith("natriton.v1.detections."):
            self.results.append(RESULTS.decode(payload))

    # frame store
    async def put(self, key: str, data: bytes, ttl_s: float) -> None:
        pass

    async def delete(self, key: str) -> None:
        pass

    # reply path
    def new_mesh_id(self) -> str:
        self._ids += 1
        return f"m-{self._ids}"

    def expect_reply(self, mesh_id: str) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._by_mesh_id[mesh_id] = future
        return future

    def answer(self, number: int, faces: int = 1) -> None:
        detections = tuple(Detection(label="face", score=0.9, box=(10.0, 10.0, 30.0, 30.0)) for _ in range(faces))
        reply = InferResponse(request_id=f"c:{number}", model="face_detector", version="1",
                              result=Detections(detections=detections, image_width=64, image_height=48))  # fmt: skip
        self.waiting.pop(number).set_result(msgspec.msgpack.encode(reply))


async def settle(until: Callable[[], bool] = lambda: True, within_s: float = 5.0) -> None:
    """Let the worker run until ``until()`` holds (frames are encoded in threads: a busy host is slow), then a
    little longer, so that a step too many would show."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not until() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (polls a fake)
        await asyncio.sleep(0.005)
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)


def worker_for(mode: StreamMode, mesh: FakeMesh, reader: ScriptedReader, **limits: Any) -> CameraWorker:
    decode = msgspec.msgpack.Decoder(Reply).decode
    ctx = CameraContext(mesh, mesh, "natriton.v1.internal.replies.i-1", mesh.new_mesh_id, mesh.expect_reply,  # type: ignore[arg-type]
                        lambda _: None, decode, CameraLimits(**limits))  # fmt: skip
    source = StreamSource(camera="c", url="rtsp://camera/live", mode=mode, change_gate=False)
    return CameraWorker(source, ctx, reader=reader)  # type: ignore[arg-type]


async def test_reliable_results_come_out_once_in_frame_order_whatever_order_the_answers_take() -> None:
    mesh, reader = FakeMesh(), ScriptedReader()
    worker = worker_for(StreamMode.RELIABLE, mesh, reader, reliable_in_flight=3)
    worker.start()
    for number in range(5):
        reader.push(number)
    await settle(lambda: len(mesh.sent) >= 3)
    assert sorted(mesh.sent) == [0, 1, 2]  # at most 3 out (encoded in parallel: any order); the source waits
    for number in (2, 0):
        mesh.answer(number)
    await settle(lambda: len(mesh.sent) >= 5 and len(mesh.results) >= 1)
    assert [r.frame_number for r in mesh.results] == [0]  # 2 waits for 1
    assert sorted(mesh.sent) == [0, 1, 2, 3, 4]
    for number in (4, 1, 3):
        mesh.answer(number)
    await settle(lambda: len(mesh.results) >= 5)
    assert [r.frame_number for r in mesh.results] == [0, 1, 2, 3, 4]
    assert all(r.objects and r.objects[0].track_id == mesh.results[0].objects[0].track_id for r in mesh.results[2:])
    assert worker.counters.dropped == 0
    assert len(set(mesh.msg_ids)) == 5 and all(m.endswith(".boot-1") for m in mesh.msg_ids), "JetStream dedupe ids"
    await worker.stop()


async def test_realtime_keeps_the_newest_frame_and_gives_up_stale_ones() -> None:
    mesh, reader = FakeMesh(), ScriptedReader()
    worker = worker_for(StreamMode.REALTIME, mesh, reader, realtime_in_flight=2)
    worker.start()
    for number in range(6):
        reader.push(number)
    await settle(lambda: len(mesh.sent) >= 2 and worker.counters.dropped >= 3)
    # encoded in parallel (any order); 2, 3, 4 were replaced in the one-frame slot by newer ones; 5 waits there
    assert sorted(mesh.sent) == [0, 1]
    assert worker.counters.dropped == 3
    mesh.answer(1)  # frame 1 answers before frame 0: frame 0 is stale now and given up
    await settle(lambda: len(mesh.sent) >= 3 and len(mesh.results) >= 1)
    assert [r.frame_number for r in mesh.results] == [1]
    assert sorted(mesh.sent[:2]) == [0, 1] and mesh.sent[2:] == [5]  # the newest went as soon as a slot was free
    assert worker.counters.dropped == 4
    mesh.answer(5)
    await settle(lambda: len(mesh.results) >= 2)
    assert [r.frame_number for r in mesh.results] == [1, 5]
    await worker.stop()
