"""Raw model outputs → answers: softmax, top-k, labels, task dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Classification, Job, ModelInfo, RawOutputs, TensorSpec
from natriton.tensors import to_tensor
from natriton_postprocess.logic import load_labels, softmax, to_result, top_k


def _info(task: str = "image_classification", parameters: dict[str, str] | None = None) -> ModelInfo:
    return ModelInfo(
        name="clf",
        versions=("1",),
        task=task,
        max_batch_size=8,
        inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
        outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
        parameters={"natriton.labels": "imagenet1k"} if parameters is None else parameters,
    )


# ------------------------------------------------------------------------------------------------
# softmax
# ------------------------------------------------------------------------------------------------
def test_softmax_sums_to_one_and_keeps_order() -> None:
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 5
    probs = softmax(logits)
    assert probs.dtype == np.float64
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert (probs > 0).all()
    np.testing.assert_array_equal(np.argsort(probs), np.argsort(logits))


def test_softmax_known_values() -> None:
    probs = softmax(np.array([0.0, np.log(3.0)]))
    np.testing.assert_allclose(probs, [0.25, 0.75])


def test_softmax_is_stable_for_huge_logits() -> None:
    probs = softmax(np.array([1e30, 1e30 - 1e24, -1e30, 3e38], dtype=np.float32))
    assert np.isfinite(probs).all()
    assert probs.sum() == pytest.approx(1.0)
    assert probs[3] == pytest.approx(1.0)
    same = softmax(np.array([1000.0, 1001.0, 1002.0]))
    np.testing.assert_allclose(same, softmax(np.array([0.0, 1.0, 2.0])))


def test_softmax_is_per_row() -> None:
    probs = softmax(np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]]))
    np.testing.assert_allclose(probs.sum(axis=-1), [1.0, 1.0])
    np.testing.assert_allclose(probs[1], [1 / 3] * 3)


# ------------------------------------------------------------------------------------------------
# top_k
# ------------------------------------------------------------------------------------------------
LABELS = tuple(f"class{i}" for i in range(10))


def test_top_k_best_first_with_labels_and_scores() -> None:
    logits = np.array([0.1, 5.0, -2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
    result = top_k(logits, 3, LABELS)
    assert isinstance(result, Classification)
    assert [c.index for c in result.classes] == [1, 4, 3]
    assert [c.label for c in result.classes] == ["class1", "class4", "class3"]
    expected = softmax(logits)
    assert [c.score for c in result.classes] == pytest.approx([expected[1], expected[4], expected[3]])
    scores = [c.score for c in result.classes]
    assert scores == sorted(scores, reverse=True)
    assert all(type(c.index) is int and type(c.score) is float for c in result.classes)


@pytest.mark.parametrize(("k", "expected"), [(0, 1), (-3, 1), (1, 1), (10, 10), (50, 10)])
def test_top_k_clamps_k(k: int, expected: int) -> None:
    result = top_k(np.arange(10, dtype=np.float32), k, LABELS)
    assert len(result.classes) == expected
    assert result.classes[0].index == 9
    assert [c.index for c in result.classes] == list(range(9, 9 - expected, -1))


def test_top_k_full_ranking_is_sorted() -> None:
    logits = np.random.default_rng(7).standard_normal(1000).astype(np.float32)
    result = top_k(logits, 1000, load_labels("imagenet1k"))
    assert [c.index for c in result.classes] == list(np.argsort(-logits, kind="stable"))
    assert sum(c.score for c in result.classes) == pytest.approx(1.0)


def test_top_k_flattens_a_batch_of_one() -> None:
    result = top_k(np.array([[0.0, 9.0, 1.0]], dtype=np.float32), 1, LABELS)
    assert result.classes[0].index == 1


def test_top_k_index_without_label_uses_the_number() -> None:
    result = top_k(np.array([0.0, 0.0, 9.0], dtype=np.float32), 1, ("a", "b"))
    assert result.classes[0].label == "2"


# ------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------
def test_imagenet_labels() -> None:
    labels = load_labels("imagenet1k")
    assert len(labels) == 1000
    assert labels[967] == "espresso"
    assert labels[0] == "tench"
    assert all(isinstance(n, str) and n for n in labels)
    assert load_labels("imagenet1k") is labels  # cached


def test_unknown_label_set_is_internal() -> None:
    with pytest.raises(MeshError) as info:
        load_labels("coco")
    assert info.value.code is ErrorCode.INTERNAL


# ------------------------------------------------------------------------------------------------
# to_result
# ------------------------------------------------------------------------------------------------
def _logits(hot: int, batch: int = 1, dtype: type[np.generic] = np.float32) -> np.ndarray:
    logits = np.zeros((batch, 1000), dtype=dtype)
    logits[:, hot] = 20
    logits[:, 3] = 10
    return logits


def test_classification_result_with_imagenet_labels() -> None:
    result = to_result(_info(), (to_tensor("LOGITS", _logits(967)),), _job(2))
    assert isinstance(result, Classification)
    assert [(c.index, c.label) for c in result.classes] == [(967, "espresso"), (3, "tiger shark")]
    assert result.classes[0].score > 0.99


def test_classification_defaults_to_imagenet_labels_and_accepts_fp16() -> None:
    result = to_result(_info(parameters={}), (to_tensor("LOGITS", _logits(967, dtype=np.float16)),), _job(1))
    assert isinstance(result, Classification)
    assert result.classes[0].label == "espresso"


def test_classifier_with_two_outputs_is_internal() -> None:
    out = to_tensor("LOGITS", _logits(1))
    with pytest.raises(MeshError) as info:
        to_result(_info(), (out, out), _job(5))
    assert info.value.code is ErrorCode.INTERNAL


def test_classifier_output_with_batch_of_two_is_internal() -> None:
    with pytest.raises(MeshError) as info:
        to_result(_info(), (to_tensor("LOGITS", _logits(1, batch=2)),), _job(5))
    assert info.value.code is ErrorCode.INTERNAL


@pytest.mark.parametrize("task", ["raw", "detection", ""])
def test_other_tasks_return_raw_outputs_unchanged(task: str) -> None:
    outputs = (
        to_tensor("A", np.arange(6, dtype=np.float32).reshape(1, 6)),
        to_tensor("B", np.array([[1, 2]], dtype=np.int64)),
    )
    result = to_result(_info(task=task), outputs, _job(5))
    assert result == RawOutputs(tensors=outputs)


def _job(top_k: int) -> Job:
    return Job(model="m", version="1", task="image_classification", top_k=top_k)
