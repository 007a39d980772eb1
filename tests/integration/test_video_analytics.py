"""The per-camera analytics on real footage: the real face detector (in-process, onnxruntime) on Megamind.avi, the
tracker and events on its answers, and the change gate on Megamind.avi and on pedestrians walking in (vtest.avi).

No servers: the detector's outputs are read by the services' own code (preprocess's resize, postprocess's decoding
and NMS, the router's reading of ``config.pbtxt``). Needs the model files (``make models``) and the sample clips
(``natriton_dev.media.sample_clip``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from google.protobuf import json_format, text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from natriton.answers import to_result
from natriton.messages import Detection, Detections, Job, ModelInfo
from natriton.profiles import ColorOrder
from natriton.tensors import to_tensor
from natriton.video.change_gate import ChangeGate
from natriton.video.events import TrackAppeared, TrackEvents, TrackLeft
from natriton.video.tracking import CameraTracker, TrackedDetection
from natriton_preprocess.logic import image_spec_of, resize_and_crop
from natriton_router.logic import model_info_from_triton

Frame = npt.NDArray[np.uint8]
FACE_DETECTOR = Path(__file__).resolve().parents[2] / "model_repository" / "face_detector"
FPS = 24.0


def sample_clip(name: str) -> Path:
    from natriton_dev.media import sample_clip as fetch  # the clips come from Debian's opencv-doc package

    return Path(fetch(name))


def decode(path: Path, every: int = 1) -> Iterator[Frame]:
    """The clip's frames as RGB arrays (every ``every``-th one)."""
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n % every == 0:
                yield frame.to_ndarray(format="rgb24")


class FaceDetector:
    """model_repository/face_detector run in-process, its outputs read exactly as the mesh reads them."""

    def __init__(self) -> None:
        model = FACE_DETECTOR / "1" / "model.onnx"
        if not model.exists():
            pytest.fail(f"{model} is missing: run `make models`")
        config = text_format.Parse((FACE_DETECTOR / "config.pbtxt").read_text("utf-8"), model_config_pb2.ModelConfig())
        self.info: ModelInfo = model_info_from_triton(
            json_format.MessageToDict(config, preserving_proto_field_name=True), ["1"]
        )[0]
        self.spec = image_spec_of(self.info)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def __call__(self, rgb: Frame) -> list[Detection]:
        pixels = resize_and_crop(Image.fromarray(rgb), self.spec)  # preprocess's resize ("stretch" to 300x300)
        if self.spec.color is ColorOrder.BGR:
            pixels = pixels[:, :, ::-1]
        boxes, scores = self.session.run(["BOXES", "SCORES"], {self.spec.input: np.ascontiguousarray(pixels)[None]})
        job = Job(
            model="face_detector", version="1", task="detector", source_height=rgb.shape[0], source_width=rgb.shape[1]
        )
        result = to_result(self.info, (to_tensor("BOXES", boxes), to_tensor("SCORES", scores)), job)
        assert isinstance(result, Detections)
        return list(result.detections)


@dataclass
class Clip:
    """What one pass over Megamind.avi gave: every frame's faces, the gate's decision and its cost."""

    faces: list[list[Detection]] = field(default_factory=list)
    inferred: list[bool] = field(default_factory=list)
    gate_ms: list[float] = field(default_factory=list)


@pytest.fixture(scope="module")
def megamind() -> Clip:
    detector, gate, clip = FaceDetector(), ChangeGate(), Clip()
    for rgb in decode(sample_clip("Megamind.avi")):
        start = time.perf_counter()
        clip.inferred.append(gate.decide(rgb))
        clip.gate_ms.append((time.perf_counter() - start) * 1e3)
        clip.faces.append(detector(rgb))  # every frame, to check the gate's reuse against the truth
    assert len(clip.faces) == 270 and rgb.shape == (528, 720, 3)
    return clip


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def test_the_face_detector_finds_a_face_in_at_least_95_percent_of_the_first_120_frames(megamind: Clip) -> None:
    found = sum(1 for faces in megamind.faces[:120] if faces)
    assert found >= 114, f"faces in {found} of 120 frames"


@pytest.mark.parametrize("every", [1, 3])
def test_the_main_face_keeps_its_track_id(megamind: Clip, every: int) -> None:
    """The most confident face keeps its id from frame to frame (every frame observed, or every 3rd as in
    real-time mode); it may change only at a shot cut, where the face's box jumps (IoU < 0.1 with the last one),
    or after the detector missed it for several observed frames."""
    tracker = CameraTracker()
    main: list[tuple[int, TrackedDetection | None]] = []
    for n in range(0, 120, every):
        tracked = tracker.update(megamind.faces[n], n, n / FPS)
        main.append((n, max(tracked, key=lambda t: t.score, default=None)))
    changes, misses, previous = [], 0, None
    for n, face in main:
        if face is None:
            misses += 1
            continue
        if previous is not None and face.track_id != previous.track_id:
            changes.append(n)
            assert misses >= 3 or iou(face.box, previous.box) < 0.1, f"the main face changed id at frame {n}"
        previous, misses = face, 0
    assert len(changes) <= 2, f"id changes at {changes}"  # Megamind's first 120 frames have one cut (frame 98)


def test_the_change_gate_reuses_only_frames_whose_faces_did_not_change(megamind: Clip) -> None:
    """Each frame the gate reused has the faces of the frame whose results it reused (same number, boxes within
    IoU 0.8), as the detector run on every frame shows."""
    reference: list[Detection] = []
    reused = 0
    for n, (infer, faces) in enumerate(zip(megamind.inferred, megamind.faces, strict=True)):
        if infer:
            reference = faces
            continue
        reused += 1
        assert len(faces) == len(reference), f"frame {n}: {len(faces)} faces, the reused frame had {len(reference)}"
        for face in faces:
            assert max(iou(face.box, r.box) for r in reference) >= 0.8, f"frame {n}: a face moved or is new"
    per_frame = float(np.mean(megamind.gate_ms[1:]))
    print(f"Megamind.avi: gate reused {reused} of 270 frames (camera and actors move); {per_frame:.3f} ms per frame")
    assert per_frame < 3.0


def test_tracked_faces_become_events(megamind: Clip) -> None:
    tracker, events = CameraTracker(), TrackEvents("megamind", leave_after_frames=12, leave_after_s=None)
    sent = []
    ids: set[int] = set()
    for n, faces in enumerate(megamind.faces):
        tracked = tracker.update(faces, n, n / FPS)
        ids |= {t.track_id for t in tracked}
        sent += events.update(tracked, n, n / FPS)
        assert events.counts is not None and events.counts.by_label.keys() <= {"face"}
    sent += events.finish(270, 270 / FPS)
    appeared = [e.track_id for e in sent if isinstance(e, TrackAppeared)]
    left = [e.track_id for e in sent if isinstance(e, TrackLeft)]
    assert sorted(appeared) == sorted(left) == sorted(ids)
    assert 3 <= len(ids) <= 8, f"{len(ids)} face tracks"  # three shots with one face, a second face briefly


def test_the_change_gate_never_reuses_a_frame_a_pedestrian_walked_into() -> None:
    """vtest.avi's pedestrians seen through a window onto the otherwise still street (the per-pixel median of the
    clip: the street without people): the gate reuses the still frames, and no frame it reused shows more than
    100 foreground pixels (a pedestrian is ~2,000) that its reference frame did not."""
    path = sample_clip("vtest.avi")
    street = np.median(np.stack(list(decode(path, every=8))), axis=0).astype(np.uint8)
    window = (slice(200, 400), slice(0, 160))
    gate = ChangeGate()
    reference = np.zeros((200, 160), dtype=bool)
    areas, worst = [], 0
    for rgb in decode(path):
        frame = street.copy()
        frame[window] = rgb[window]
        foreground = np.abs(rgb[window].astype(np.int16) - street[window]).max(axis=2) > 40  # none outside
        areas.append(int(foreground.sum()))
        if gate.decide(frame):
            reference = foreground
        else:
            worst = max(worst, int((foreground & ~reference).sum()))
    entries = sum(1 for a, b in itertools.pairwise(areas) if a < 300 <= b)
    print(f"vtest.avi window: {entries} entries, gate {gate.stats()}, worst reused frame: {worst} new pixels")
    assert entries >= 3  # people do walk into the window
    assert gate.savings > 0.3
    assert worst < 100
