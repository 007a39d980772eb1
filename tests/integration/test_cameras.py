"""Cameras through the whole mesh: a real clip (Megamind.avi, faces in almost every frame) is added as a camera, an
ingest copy takes its lease and reads it, frames go by reference through preprocess, router, Triton (the face
detector) and postprocess, and the results come back in order, tracked, on ``natriton.v1.detections.<camera>``."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy

from natriton.messages import SourceState, StreamMode, StreamSource
from natriton.streams import open_registry
from natriton_client.protocol import (
    CAMERA_RESULTS_STREAM,
    CameraEvent,
    FrameResult,
    TrackAppeared,
    TrackCount,
    detections_subject,
    events_subject,
)
from natriton_dev.media import sample_clip
from natriton_dev.stack import LocalStack

pytestmark = pytest.mark.asyncio(loop_scope="session")
RESULTS = msgspec.msgpack.Decoder(FrameResult)
EVENTS = msgspec.msgpack.Decoder(CameraEvent)


async def collect(nc: NATS, subject: str, count: int, timeout_s: float) -> AsyncIterator[bytes]:
    """The first ``count`` messages of ``subject`` in the camera results stream (replayed from its start)."""
    subscription = await nc.jetstream().subscribe(
        subject, stream=CAMERA_RESULTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(count):
                msg = await subscription.next_msg(timeout=timeout_s)
                yield msg.data
    finally:
        await subscription.unsubscribe()


async def test_a_reliable_camera_gets_tracked_faces_in_every_frame_in_order(stack: LocalStack, nc: NATS) -> None:
    registry = await open_registry(nc)
    camera = f"megamind-{uuid.uuid4().hex[:6]}"
    clip = sample_clip("Megamind.avi")
    await registry.put_source(StreamSource(camera=camera, url=str(clip), mode=StreamMode.RELIABLE, change_gate=False))
    try:
        results = [RESULTS.decode(data) async for data in collect(nc, detections_subject(camera), 120, 120)]
        status = await registry.get_status(camera)
    finally:
        await registry.remove_source(camera)
    assert [r.frame_number for r in results] == list(range(120))  # every frame, once, in order
    assert all(r.error is None and not r.reused for r in results), [r for r in results if r.error][:3]
    with_faces = [r for r in results if r.objects]
    assert len(with_faces) >= 0.95 * 120, len(with_faces)
    assert all((r.width, r.height) == (720, 528) for r in results)
    pts = [r.pts_s for r in results if r.pts_s is not None]
    assert pts == sorted(pts) and len(pts) >= 118
    # the main face keeps its track id from frame to frame (the clip cuts to another shot at about frame 98)
    main = [max(r.objects, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])).track_id for r in with_faces]
    changes = sum(1 for a, b in itertools.pairwise(main) if a != b)
    assert changes <= 3, main
    assert status is not None and status.owner and status.state in (SourceState.LIVE, SourceState.ENDED)
    events = [EVENTS.decode(data) async for data in collect(nc, events_subject(camera), 3, 10)]
    appeared = [e for e in events if isinstance(e, TrackAppeared)]
    assert appeared and appeared[0].track_id in main and appeared[0].label == "face"
    counts = [e for e in events if isinstance(e, TrackCount)]
    assert counts and max(c.by_label.get("face", 0) for c in counts) >= 1


async def test_the_change_gate_reuses_a_static_scene_and_never_misses_a_face_that_appears(
    stack: LocalStack, nc: NATS, tmp_path: Path
) -> None:
    """A folder of images is a camera: 20 frames of a still street (vtest.avi's first frame), then the astronaut's
    face pasted in. The still frames reuse the first frame's (empty) detections; the face is detected on the very
    frame it appears."""
    import av
    from PIL import Image
    from skimage import data as skdata

    with av.open(str(sample_clip("vtest.avi"))) as container:
        street = next(container.decode(video=0)).to_ndarray(format="rgb24")
    face = skdata.astronaut()[40:200, 160:290]  # type: ignore[no-untyped-call]
    folder = tmp_path / "frames"
    folder.mkdir()
    for number in range(30):
        frame = street.copy()
        if number >= 20:
            frame[100 : 100 + face.shape[0], 300 : 300 + face.shape[1]] = face
        Image.fromarray(frame).save(folder / f"{number:03d}.png")
    registry = await open_registry(nc)
    camera = f"still-{uuid.uuid4().hex[:6]}"
    await registry.put_source(StreamSource(camera=camera, url=str(folder), fps=10, mode=StreamMode.RELIABLE))
    try:
        results = [RESULTS.decode(data) async for data in collect(nc, detections_subject(camera), 30, 60)]
    finally:
        await registry.remove_source(camera)
    assert [r.frame_number for r in results] == list(range(30))
    still, with_face = results[:20], results[20:]
    assert not still[0].reused and sum(r.reused for r in still) >= 18  # one inference for a still scene
    assert all(r.objects == () for r in still)
    assert not with_face[0].reused and with_face[0].objects, with_face[0]  # inferred the frame the face appeared
    (person,) = with_face[0].objects
    assert person.box[0] >= 300 and person.box[2] <= 300 + face.shape[1] + 10
    assert all(r.objects and r.objects[0].track_id == person.track_id for r in with_face)
