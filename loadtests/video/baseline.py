"""The in-process baseline: the same detector over the same frames in one process, no mesh.

Per frame: decode with PyAV (the frames a camera at the scenario's fps keeps), preprocess with the mesh's own
preprocess code (``natriton_preprocess.logic.image_to_model_input`` with the model's ``ImageSpec`` from the
catalog), onnxruntime on the ONNX file Triton's python backend runs (``model_repository/<model>/<version>/
model.onnx``) with the session options of ``model_repository/onnx_model.py`` (``onnx.intra_op_threads`` from the
model's config, one inter-op thread, sequential), and the mesh's postprocess (``natriton.answers.
to_result``, per frame as postprocess gets it). Frames go through onnxruntime in batches of a given size.

``jpeg=True`` adds what the mesh's claim check adds per frame: the camera owner's JPEG encode
(``natriton_ingest.cameras.encode_jpeg``) and preprocess's decode of it (``prepare_frame``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from PIL import Image

from natriton.messages import Detections, FrameRef, Job, ModelInfo
from natriton.tensors import to_array, to_tensor

from .media import Frame, clip_frames

STAGES = ("decode", "preprocess", "infer", "postprocess")


class InProcessDetector:
    """One model's preprocess → onnxruntime → postprocess, as the mesh does each step."""

    def __init__(self, info: ModelInfo, onnx_path: Path) -> None:
        import onnxruntime as ort

        from natriton_preprocess.logic import DecodeLimits, image_spec_of
        from natriton_preprocess.settings import Settings as PreprocessSettings

        self.info = info
        self.version = info.latest_version
        self.spec = image_spec_of(info)
        defaults = PreprocessSettings()
        self.limits = DecodeLimits(max_pixels=defaults.max_image_pixels, min_side=defaults.min_image_side)
        self.threads = int(info.parameters.get("onnx.intra_op_threads", "1") or 1)  # as onnx_model.py reads it
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.onnx_path = onnx_path
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in info.outputs]
        self.job = Job(model=info.name, version=self.version, task=info.task)

    def preprocess(self, frame: Frame) -> np.ndarray[Any, Any]:
        """A decoded RGB frame → the model's input (batch dimension 1), as preprocess makes it."""
        from natriton_preprocess.logic import image_to_model_input

        return to_array(image_to_model_input(Image.fromarray(frame, "RGB"), self.spec))

    def preprocess_jpeg(self, frame: Frame) -> np.ndarray[Any, Any]:
        """The mesh's path for a camera frame: the owner's JPEG, then preprocess's ``prepare_frame`` of it."""
        from natriton_ingest.cameras import encode_jpeg
        from natriton_preprocess.logic import prepare_frame

        jpeg = encode_jpeg(frame)
        ref = FrameRef(key="", width=frame.shape[1], height=frame.shape[0], encoding="jpeg", size=len(jpeg))
        tensor, _ = prepare_frame(jpeg, ref, self.spec, self.limits)
        return to_array(tensor)

    def infer(self, batch: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """One onnxruntime run over a batch."""
        outputs = self.session.run(self.output_names, {self.spec.input: batch})
        return dict(zip(self.output_names, outputs, strict=True))

    def postprocess(self, outputs: dict[str, np.ndarray[Any, Any]], item: int, width: int, height: int) -> Any:
        """Item ``item`` of a batch's outputs → the answer, as postprocess makes it from that request's tensors."""
        from natriton.answers import to_result

        tensors = tuple(to_tensor(name, outputs[name][item : item + 1]) for name in self.output_names)
        job = msgspec.structs.replace(self.job, source_width=width, source_height=height)
        return to_result(self.info, tensors, job)

    def detect(self, frames: list[Frame]) -> list[Detections]:
        """Detections of each frame (one batch)."""
        batch = np.concatenate([self.preprocess(f) for f in frames])
        outputs = self.infer(batch)
        return [self.postprocess(outputs, i, f.shape[1], f.shape[0]) for i, f in enumerate(frames)]


def looping_frames(clip: Path, fps: float) -> Iterator[Frame]:
    """The clip's kept frames, decoded as they are needed, again from the start at the end."""
    while True:
        empty = True
        for frame in clip_frames(clip, fps):
            empty = False
            yield frame
        if empty:
            raise ValueError(f"no frames in {clip}")


def measure(
    detector: InProcessDetector, clip: Path, fps: float, batch: int, seconds: float, *, jpeg: bool = False
) -> dict[str, Any]:
    """Decode → preprocess → infer (batches of ``batch``) → postprocess for about ``seconds`` (at least two
    batches after one warm-up batch): frames/s, CPU per frame of this process, time per stage."""
    frames = looping_frames(clip, fps)
    prepare = detector.preprocess_jpeg if jpeg else detector.preprocess

    def one_batch(stages: dict[str, float]) -> int:
        t0 = time.perf_counter()
        decoded = [next(frames) for _ in range(batch)]
        t1 = time.perf_counter()
        array = np.concatenate([prepare(f) for f in decoded])
        t2 = time.perf_counter()
        outputs = detector.infer(array)
        t3 = time.perf_counter()
        results = [detector.postprocess(outputs, i, f.shape[1], f.shape[0]) for i, f in enumerate(decoded)]
        t4 = time.perf_counter()
        for key, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[key] += dt
        return sum(1 for r in results if isinstance(r, Detections) and r.detections)

    one_batch(dict.fromkeys(STAGES, 0.0))  # warm-up
    stages = dict.fromkeys(STAGES, 0.0)
    done = with_faces = batches = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while batches < 2 or time.perf_counter() - wall0 < seconds:
        with_faces += one_batch(stages)
        done += batch
        batches += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "batch": batch,
        "jpeg_round_trip": jpeg,
        "frames": done,
        "wall_s": round(wall, 3),
        "frames_per_s": round(done / wall, 2),
        "cpu_us_per_frame": round(cpu / done * 1e6, 1),
        "cpu_cores": round(cpu / wall, 2),
        "stage_ms_per_frame": {k: round(v / done * 1000, 2) for k, v in stages.items()},
        "frames_with_faces": with_faces,
    }
