"""Pure transforms from raw model outputs to answers (what postprocess does, and the router for the models it
answers itself: decision 0012)."""

from __future__ import annotations

from typing import Any, assert_never

import numpy as np
import numpy.typing as npt

from natriton.audio import speech_rules, speech_segments
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import (
    Batch,
    Classification,
    ClassScore,
    Detection,
    Detections,
    Embedding,
    ItemResult,
    Job,
    ModelInfo,
    RawOutputs,
    Result,
    SpeechSegment,
    SpeechSegments,
    Tensor,
)
from natriton.profiles import ClassifierProfile, DetectorProfile, EmbedderProfile, RawProfile, VadProfile, audio_only
from natriton.tensors import to_array, to_tensor


def softmax(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Numerically stable softmax over the last axis."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def top_k(
    logits: npt.NDArray[np.floating[Any]], k: int, labels: tuple[str, ...], *, apply_softmax: bool = True
) -> Classification:
    """The ``k`` most probable classes of one score vector (logits, or probabilities), best first."""
    probs = softmax(logits.reshape(-1)) if apply_softmax else logits.reshape(-1).astype(np.float64)
    k = max(1, min(k, probs.size))
    best = np.argpartition(-probs, k - 1)[:k]
    best = best[np.argsort(-probs[best], kind="stable")]
    return Classification(
        classes=tuple(
            ClassScore(index=int(i), label=labels[i] if i < len(labels) else str(i), score=float(probs[i]))
            for i in best
        )
    )


def nms(boxes: npt.NDArray[np.floating[Any]], scores: npt.NDArray[np.floating[Any]], iou: float) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        overlap = w * h / np.maximum(areas[best] + areas[rest] - w * h, 1e-12)
        order = rest[overlap <= iou]
    return keep


def detect(
    info: ModelInfo, profile: DetectorProfile, outputs: dict[str, npt.NDArray[Any]], item: int, job: Job
) -> Detections:
    """Boxes (relative x1,y1,x2,y2) + scores of one item → thresholded, NMS'd detections in original image pixels."""
    boxes = np.asarray(outputs[profile.boxes_output][item], dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(outputs[profile.scores_output][item], dtype=np.float32)
    labels = np.zeros(len(boxes), dtype=np.int64)
    if scores.ndim == 2:  # [priors, classes]
        labels, scores = scores.argmax(axis=1), scores.max(axis=1)
    names = profile.class_names
    width, height = job.source_width, job.source_height
    if not width or not height:  # raw tensors: report in the model's input pixels
        shape = info.inputs[0].shape
        height, width = (shape[0], shape[1]) if shape[-1] == 3 else (shape[1], shape[2])
    candidates = np.flatnonzero(scores >= profile.score_threshold)
    kept = candidates[nms(boxes[candidates], scores[candidates], profile.nms_iou)] if candidates.size else candidates
    scale = np.array([width, height, width, height], dtype=np.float32)
    return Detections(
        detections=tuple(
            Detection(
                label=names[int(labels[i])] if int(labels[i]) < len(names) else str(int(labels[i])),
                score=float(scores[i]),
                box=tuple(round(float(v), 1) for v in boxes[i] * scale),  # type: ignore[arg-type]
            )
            for i in kept
        ),
        image_width=width,
        image_height=height,
    )


def to_result(info: ModelInfo, outputs: tuple[Tensor, ...], job: Job) -> Result:
    """The answer to one request: one result per item of its batch dimension (a :class:`Batch` when N > 1).

    A model without batching (``max_batch_size`` 0) has no batch dimension: its outputs are one item.
    """
    if not outputs:
        raise MeshError(ErrorCode.INTERNAL, f"model {info.name!r} returned no outputs")
    if isinstance(info.profile, VadProfile):  # one sequence of chunks: one answer, not one per chunk
        if job.sequence:  # a live stream's owner keeps its state and tracks its speech itself
            return RawOutputs(tensors=outputs)
        return speech_result(info, info.profile, outputs, job)
    if isinstance(info.profile, RawProfile) and all(t.shape[:1] == (1,) for t in outputs):
        return RawOutputs(tensors=outputs)  # one item: the outputs as Triton returned them, no copy
    arrays = {t.name: to_array(t) for t in outputs}
    if not info.max_batch_size:
        if isinstance(info.profile, RawProfile):
            return RawOutputs(tensors=outputs)
        return item_result(info, outputs, {n: a[np.newaxis] for n, a in arrays.items()}, 0, job)
    if any(a.ndim == 0 for a in arrays.values()):
        raise MeshError(ErrorCode.INTERNAL, f"model {info.name!r} returned an output without its batch dimension")
    sizes = {a.shape[0] for a in arrays.values()}
    if len(sizes) != 1 and isinstance(info.profile, RawProfile):
        return RawOutputs(tensors=outputs)  # no common batch dimension to split on
    if len(sizes) != 1:
        raise MeshError(ErrorCode.INTERNAL, f"model {info.name!r} outputs disagree on the batch size: {sorted(sizes)}")
    count = sizes.pop()
    items = tuple(item_result(info, outputs, arrays, i, job) for i in range(count))
    return items[0] if count == 1 else Batch(items=items)


def speech_result(info: ModelInfo, profile: VadProfile, outputs: tuple[Tensor, ...], job: Job) -> SpeechSegments:
    """A clip's speech segments from the speech probability of each of its chunks (silero's rules, with the
    model's thresholds); the last segment ends within the clip (``job.audio_samples``)."""
    arrays = {t.name: to_array(t) for t in outputs}
    probabilities = np.asarray(_output(info, arrays, profile.probability_output), dtype=np.float32).reshape(-1)
    rate = profile.sample_rate
    length = job.audio_samples or len(probabilities) * profile.chunk_samples
    segments = speech_segments(probabilities, **speech_rules(profile), length=length)
    return SpeechSegments(
        segments=tuple(
            SpeechSegment(start_s=round(s.start_s, 4), end_s=round(s.end_s, 4), confidence=round(s.confidence, 4))
            for s in segments
        ),
        duration_s=round(length / rate, 4),
    )


def item_result(
    info: ModelInfo, outputs: tuple[Tensor, ...], arrays: dict[str, npt.NDArray[Any]], item: int, job: Job
) -> ItemResult:
    """The answer for item ``item`` of a batch, as the model's profile says to read it."""
    profile = info.profile
    match profile:
        case ClassifierProfile():
            scores = np.asarray(_output(info, arrays, profile.output)[item], dtype=np.float32)
            return top_k(scores, job.top_k, profile.labels, apply_softmax=profile.softmax)
        case DetectorProfile():
            _output(info, arrays, profile.boxes_output)
            _output(info, arrays, profile.scores_output)
            return detect(info, profile, arrays, item, job)
        case EmbedderProfile():
            vector = np.asarray(_output(info, arrays, profile.output)[item], dtype=np.float32)
            return Embedding(vector=to_tensor(profile.output, vector))
        case VadProfile():  # answered whole by speech_result (a request is one sequence, not a batch of items)
            raise invalid_argument(audio_only(info.name))
        case RawProfile():
            return RawOutputs(tensors=tuple(to_tensor(t.name, arrays[t.name][item : item + 1]) for t in outputs))
        case _ as unreachable:
            assert_never(unreachable)


def _output(info: ModelInfo, arrays: dict[str, npt.NDArray[Any]], name: str) -> npt.NDArray[Any]:
    if name not in arrays:
        raise MeshError(ErrorCode.INTERNAL, f"model {info.name!r} did not return its output {name!r}")
    return arrays[name]
