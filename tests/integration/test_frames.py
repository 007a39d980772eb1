"""Camera frames through the mesh by reference, on the real stack: the test plays a camera's owner. It stores a
frame in the frame store (Redis), publishes a ~200 B claim check to the JetStream frames stream, and gets the
detections on its own reply subject; the frame is acknowledged only once answered."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from skimage import data as skdata

from natriton.claimcheck import FrameStore, frame_key
from natriton.envelope import Envelope
from natriton.frames import STREAM_NAMES, frames_subject
from natriton.headers import now_ms
from natriton.messages import Codec, Detections, ErrorReply, FrameRef, FrameTask, InferResponse, Job, StreamMode
from natriton.pipeline import REPLY_CODEC
from natriton_dev.stack import LocalStack

pytestmark = pytest.mark.asyncio(loop_scope="session")
FRAMES: Codec[FrameTask] = Codec(FrameTask)


async def send_frames(
    nc: NATS, store: FrameStore, pixels: list[np.ndarray], mode: StreamMode, camera: str, *, missing: int = -1
) -> dict[int, object]:
    """Publish one frame task per array (frame ``missing`` without stored pixels) and collect the answers by
    frame number."""
    inbox = nc.new_inbox()
    answers: dict[int, object] = {}
    done = asyncio.Event()
    numbers: dict[str, int] = {}

    async def on_answer(msg: Msg) -> None:
        answers.setdefault(numbers[msg.headers["Natriton-Mesh-Id"]], REPLY_CODEC.decode(msg.data))
        if len(answers) == len(pixels):
            done.set()

    subscription = await nc.subscribe(inbox, cb=on_answer)
    js = nc.jetstream()
    for number, frame in enumerate(pixels):
        mesh_id = f"{camera}-{number}-{uuid.uuid4().hex[:6]}"
        numbers[mesh_id] = number
        height, width = frame.shape[:2]
        if number != missing:
            await store.put(frame_key(mesh_id), frame.tobytes(), ttl_s=60)
        task = FrameTask(
            job=Job(model="face_detector", version="", task="detector"),
            frame=FrameRef(key=frame_key(mesh_id), width=width, height=height, size=frame.nbytes),
            camera=camera,
            frame_number=number,
        )
        envelope = Envelope(mesh_id=mesh_id, request_id=f"{camera}:{number}", deadline_ms=now_ms() + 30_000,
                            reply_to=inbox)  # fmt: skip
        ack = await js.publish(frames_subject(mode, camera), FRAMES.encode(task), headers=envelope.to_headers())
        assert ack.stream == STREAM_NAMES[mode]
    try:
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        await subscription.unsubscribe()
    return answers


async def test_a_reliable_camera_gets_every_frame_answered_and_acknowledged(stack: LocalStack, nc: NATS) -> None:
    store = FrameStore(stack.redis_url)
    astronaut = np.ascontiguousarray(skdata.astronaut())  # type: ignore[no-untyped-call]
    coffee = np.ascontiguousarray(skdata.coffee())  # type: ignore[no-untyped-call]
    try:
        answers = await send_frames(nc, store, [astronaut, coffee, astronaut], StreamMode.RELIABLE, "test-reliable")
    finally:
        await store.close()
    assert sorted(answers) == [0, 1, 2]
    faces = []
    for number in (0, 1, 2):
        reply = answers[number]
        assert isinstance(reply, InferResponse) and isinstance(reply.result, Detections), reply
        assert (reply.result.image_width, reply.result.image_height) == ((512, 512) if number != 1 else (600, 400))
        faces.append(reply.result.detections)
    assert len(faces[0]) == 1 and np.allclose(faces[0][0].box, (179, 57, 271, 177), atol=8), faces[0]
    assert faces[1] == () and faces[2] == faces[0]
    info = await nc.jetstream().stream_info(STREAM_NAMES[StreamMode.RELIABLE])
    assert info.state.messages == 0  # a work queue: every answered frame was acknowledged and removed


async def test_a_frame_whose_pixels_are_gone_is_answered_with_a_typed_error(stack: LocalStack, nc: NATS) -> None:
    store = FrameStore(stack.redis_url)
    astronaut = np.ascontiguousarray(skdata.astronaut())  # type: ignore[no-untyped-call]
    realtime = StreamMode.REALTIME
    try:  # one camera each: a real-time camera keeps one waiting frame, so a second could replace the first
        (missing,) = (await send_frames(nc, store, [astronaut], realtime, "test-missing", missing=0)).values()
        (present,) = (await send_frames(nc, store, [astronaut], realtime, "test-present")).values()
    finally:
        await store.close()
    assert isinstance(missing, ErrorReply) and missing.code == "not_found" and "expired" in missing.message
    assert isinstance(present, InferResponse)
    info = await nc.jetstream().consumer_info(STREAM_NAMES[StreamMode.REALTIME], "preprocess_realtime")
    assert info.num_ack_pending == 0  # the error answer acknowledged the frame too


async def test_a_large_request_image_goes_to_preprocess_by_reference(stack: LocalStack, nc: NATS) -> None:
    """An image over NATRITON_CLAIM_CHECK_BYTES (1 MiB) is stored once in the frame store; preprocess reads it from
    there. The answer is the same as for the image inline, and the stored copy is deleted once answered."""
    import json

    from natriton_client.aio import MeshClient
    from natriton_dev.images import encode_jpeg

    big = np.kron(skdata.astronaut(), np.ones((3, 3, 1), dtype=np.uint8))  # type: ignore[no-untyped-call]
    grain = np.random.default_rng(7).integers(-6, 7, big.shape)  # sensor noise: a photo-sized JPEG
    large = encode_jpeg(np.clip(big.astype(np.int16) + grain, 0, 255).astype(np.uint8), quality=98)
    assert 1024 * 1024 < len(large) < 4 * 1024 * 1024
    small = encode_jpeg(skdata.astronaut())  # type: ignore[no-untyped-call]

    async def claim_checked() -> int:
        reply = await nc.request("$SRV.STATS.natriton-ingest", b"", timeout=5)
        return int(json.loads(reply.data)["endpoints"][0]["data"]["app"].get("claim_checked", 0))

    store = FrameStore(stack.redis_url)

    async def stored_frames() -> set[bytes]:
        return {key async for key in store._redis.scan_iter(match="natriton:v1:frame:*")}

    frames_before = await stored_frames()
    client = await MeshClient.connect(stack.nats_url)
    try:
        before = await claim_checked()
        by_reference = await client.infer("face_detector", image=large, use_cache=False, timeout_s=30)
        inline = await client.infer("face_detector", image=small, use_cache=False)
        after = await claim_checked()
    finally:
        await client.close()
    assert isinstance(by_reference, InferResponse) and isinstance(by_reference.result, Detections), by_reference
    assert isinstance(inline, InferResponse) and isinstance(inline.result, Detections)
    assert (by_reference.result.image_width, by_reference.result.image_height) == (1536, 1536)
    (face,) = by_reference.result.detections
    assert np.allclose(np.asarray(face.box) / 3, inline.result.detections[0].box, atol=8), face.box
    assert after - before == 1  # only the large one went by reference
    try:
        left = await stored_frames() - frames_before
    finally:
        await store.close()
    assert left == set()  # deleted once answered
