"""Typed model profiles: ``natriton.*`` parameters, declared tensors and files beside the model → a ModelProfile."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import msgspec
import pytest

from natriton.profiles import (
    BuiltProfile,
    ClassifierProfile,
    ColorOrder,
    DetectorProfile,
    EmbedderProfile,
    ImageSpec,
    ModelFile,
    ModelKind,
    ModelProfile,
    ProfileError,
    RawProfile,
    ResizeMode,
    TensorSpec,
    TextSpec,
    VadProfile,
    audio_only,
    build_profile,
    decode_parameters,
    model_parameters,
)

IMAGE_HWC = TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3))
LOGITS = TensorSpec(name="LOGITS", datatype="FP32", shape=(4,))
BOXES = TensorSpec(name="BOXES", datatype="FP32", shape=(-1, 4))
SCORES = TensorSpec(name="SCORES", datatype="FP32", shape=(-1,))
TOKEN_INPUTS = (
    TensorSpec(name="INPUT_IDS", datatype="INT64", shape=(-1,)),
    TensorSpec(name="ATTENTION_MASK", datatype="INT64", shape=(-1,)),
)
EMBEDDING = TensorSpec(name="EMBEDDING", datatype="FP32", shape=(384,))
VAD_INPUTS = (
    TensorSpec(name="AUDIO", datatype="FP32", shape=(576,)),
    TensorSpec(name="STATE", datatype="FP32", shape=(2, 128)),
)
VAD_OUTPUTS = (
    TensorSpec(name="SPEECH_PROBABILITY", datatype="FP32", shape=(1,)),
    TensorSpec(name="STATE_OUT", datatype="FP32", shape=(2, 128)),
)
VAD_PARAMETERS = {
    "natriton.kind": "vad",
    "natriton.sample_rate": "16000",
    "natriton.chunk_samples": "512",
    "natriton.context_samples": "64",
}
LABELS_TXT = b"tench\ngoldfish\ngreat white shark\ntiger shark\n"
TOKENIZER_JSON = b'{"version": "1.0", "model": {"type": "WordPiece"}}'


def _files(files: Mapping[str, bytes]) -> Callable[[str], bytes]:
    """A ``read_file`` over an in-memory model directory (missing names raise like a missing file)."""

    def read(name: str) -> bytes:
        if name not in files:
            raise FileNotFoundError(2, "No such file or directory", name)
        return files[name]

    return read


def _classifier(
    parameters: Mapping[str, str] | None = None,
    inputs: tuple[TensorSpec, ...] = (IMAGE_HWC,),
    outputs: tuple[TensorSpec, ...] = (LOGITS,),
    **kwargs: object,
) -> BuiltProfile:
    return build_profile("clf", {"natriton.kind": "classifier", **(parameters or {})}, inputs, outputs, **kwargs)  # type: ignore[arg-type]


def _error(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(ProfileError) as info:
        call(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------------------
# each kind decodes
# ------------------------------------------------------------------------------------------------
def test_classifier_profile_from_parameters_inputs_and_label_file() -> None:
    built = _classifier(
        {
            "natriton.resize_shorter": "256",
            "natriton.color": "RGB",
            "natriton.softmax": "false",
            "natriton.cache_ttl_s": "60",
            "onnx.intra_op_threads": "1",  # the backend's own: not the mesh's business
        },
        label_files={"LOGITS": "labels.txt"},
        read_file=_files({"labels.txt": LABELS_TXT}),
    )
    assert built == BuiltProfile(
        profile=ClassifierProfile(
            output="LOGITS",
            labels=("tench", "goldfish", "great white shark", "tiger shark"),
            softmax=False,
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
        cache_ttl_s=60,
        files=(),
    )


def test_classifier_defaults() -> None:
    built = _classifier()
    assert built.cache_ttl_s is None
    assert built.files == ()
    profile = built.profile
    assert isinstance(profile, ClassifierProfile)
    assert profile.labels == ()  # no label file: the index is the label
    assert profile.softmax is True
    assert profile.image is not None
    assert profile.image.resize is ResizeMode.SHORTER_SIDE_CROP
    assert profile.image.resize_shorter == 224  # no resize_shorter: the crop size itself
    assert profile.image.color is ColorOrder.RGB


def test_detector_profile_from_parameters() -> None:
    built = build_profile(
        "ssd",
        {
            "natriton.kind": "detector",
            "natriton.color": "BGR",
            "natriton.class_names": " person, car ,dog,",
            "natriton.score_threshold": "0.25",
            "natriton.nms_iou": "0.6",
        },
        (TensorSpec(name="FRAME", datatype="UINT8", shape=(300, 400, 3)),),
        (BOXES, SCORES),
    )
    assert built.profile == DetectorProfile(
        boxes_output="BOXES",
        scores_output="SCORES",
        class_names=("person", "car", "dog"),
        score_threshold=0.25,
        nms_iou=0.6,
        image=ImageSpec(
            input="FRAME",
            datatype="UINT8",
            height=300,
            width=400,
            channels_last=True,
            color=ColorOrder.BGR,
            resize=ResizeMode.STRETCH,  # a detector's default
            resize_shorter=0,
        ),
    )


def test_detector_defaults_and_crop_resize() -> None:
    built = build_profile("ssd", {"natriton.kind": "detector"}, (IMAGE_HWC,), (SCORES, BOXES))
    assert isinstance(built.profile, DetectorProfile)
    assert built.profile.class_names == ("object",)
    assert (built.profile.score_threshold, built.profile.nms_iou) == (0.5, 0.45)
    assert built.profile.image is not None and built.profile.image.resize is ResizeMode.STRETCH
    cropped = build_profile(
        "ssd", {"natriton.kind": "detector", "natriton.resize": "shorter_side_crop"}, (IMAGE_HWC,), (BOXES, SCORES)
    )
    assert isinstance(cropped.profile, DetectorProfile) and cropped.profile.image is not None
    assert (cropped.profile.image.resize, cropped.profile.image.resize_shorter) == (ResizeMode.SHORTER_SIDE_CROP, 224)


def test_detector_needs_boxes_and_scores_and_a_class_name() -> None:
    message = _error(build_profile, "ssd", {"natriton.kind": "detector"}, (IMAGE_HWC,), (BOXES,))
    assert "'ssd'" in message and "SCORES" in message
    message = _error(
        build_profile,
        "ssd",
        {"natriton.kind": "detector", "natriton.class_names": " , "},
        (IMAGE_HWC,),
        (BOXES, SCORES),
    )
    assert "'ssd'" in message and "natriton.class_names" in message


def test_embedder_with_a_tokenizer_beside_the_model() -> None:
    built = build_profile(
        "minilm",
        {"natriton.kind": "embedder", "natriton.tokenizer": "tokenizer.json", "natriton.max_tokens": "64"},
        TOKEN_INPUTS,
        (EMBEDDING,),
        read_file=_files({"tokenizer.json": TOKENIZER_JSON}),
    )
    digest = hashlib.sha256(TOKENIZER_JSON).hexdigest()
    assert built.profile == EmbedderProfile(
        output="EMBEDDING",
        text=TextSpec(tokenizer_file="minilm/tokenizer.json", tokenizer_sha256=digest, max_tokens=64),
    )
    assert built.files == (ModelFile(name="minilm/tokenizer.json", data=TOKENIZER_JSON, sha256=digest),)
    assert isinstance(built.profile, EmbedderProfile) and built.profile.text is not None
    assert (built.profile.text.ids_input, built.profile.text.mask_input) == ("INPUT_IDS", "ATTENTION_MASK")


def test_embedder_defaults_and_tensor_only_embedder() -> None:
    with_tokenizer = build_profile(
        "minilm",
        {"natriton.kind": "embedder", "natriton.tokenizer": "tokenizer.json"},
        TOKEN_INPUTS,
        (EMBEDDING,),
        read_file=_files({"tokenizer.json": TOKENIZER_JSON}),
    )
    assert isinstance(with_tokenizer.profile, EmbedderProfile) and with_tokenizer.profile.text is not None
    assert with_tokenizer.profile.text.max_tokens == 128
    tensors_only = build_profile("vec", {"natriton.kind": "embedder"}, (IMAGE_HWC,), (EMBEDDING,))
    assert tensors_only == BuiltProfile(profile=EmbedderProfile(output="EMBEDDING", text=None))


@pytest.mark.parametrize(
    ("inputs", "outputs", "files", "match"),
    [
        (TOKEN_INPUTS, (EMBEDDING, LOGITS), {"tokenizer.json": TOKENIZER_JSON}, "one output"),
        (TOKEN_INPUTS[:1], (EMBEDDING,), {"tokenizer.json": TOKENIZER_JSON}, "INPUT_IDS and ATTENTION_MASK"),
        (TOKEN_INPUTS, (EMBEDDING,), {"tokenizer.json": b"not json {"}, "not a tokenizer.json"),
        (TOKEN_INPUTS, (EMBEDDING,), {}, "'tokenizer.json'"),
    ],
    ids=["two-outputs", "no-mask-input", "not-json", "missing-file"],
)
def test_embedder_problems(
    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], files: dict[str, bytes], match: str
) -> None:
    parameters = {"natriton.kind": "embedder", "natriton.tokenizer": "tokenizer.json"}
    message = _error(build_profile, "minilm", parameters, inputs, outputs, read_file=_files(files))
    assert "'minilm'" in message
    assert match in message


@pytest.mark.parametrize("parameters", [{}, {"natriton.kind": "raw"}, {"natriton.kind": "raw", "other.key": "x"}])
def test_raw_profile(parameters: dict[str, str]) -> None:
    built = build_profile("noop", parameters, (TensorSpec(name="DATA", datatype="UINT8", shape=(-1,)),), (LOGITS,))
    assert built == BuiltProfile(profile=RawProfile())


def _vad(
    parameters: Mapping[str, str] | None = None,
    inputs: tuple[TensorSpec, ...] = VAD_INPUTS,
    outputs: tuple[TensorSpec, ...] = VAD_OUTPUTS,
) -> VadProfile:
    profile = build_profile("vad", {**VAD_PARAMETERS, **(parameters or {})}, inputs, outputs).profile
    assert isinstance(profile, VadProfile)
    return profile


def test_vad_profile_from_parameters_and_tensors() -> None:
    built = build_profile(
        "silero",
        {
            **VAD_PARAMETERS,
            "natriton.threshold": "0.6",
            "natriton.neg_threshold": "0.4",
            "natriton.min_speech_duration_ms": "200",
            "natriton.min_silence_duration_ms": "300",
            "natriton.speech_pad_ms": "0",
            "natriton.cache_ttl_s": "0",
            "onnx.intra_op_threads": "1",
        },
        VAD_INPUTS,
        VAD_OUTPUTS,
    )
    assert built == BuiltProfile(
        profile=VadProfile(
            state_shape=(2, 128),
            sample_rate=16000,
            chunk_samples=512,
            context_samples=64,
            threshold=0.6,
            neg_threshold=0.4,
            min_speech_duration_ms=200,
            min_silence_duration_ms=300,
            speech_pad_ms=0,
        ),
        cache_ttl_s=0,
    )
    profile = built.profile
    assert isinstance(profile, VadProfile)
    assert (profile.audio_input, profile.state_input) == ("AUDIO", "STATE")
    assert (profile.probability_output, profile.state_output) == ("SPEECH_PROBABILITY", "STATE_OUT")
    assert profile.input_samples == 576


def test_vad_defaults_are_silero_get_speech_timestamps() -> None:
    profile = _vad()
    assert (profile.threshold, profile.neg_threshold) == (0.5, 0.35)
    assert (profile.min_speech_duration_ms, profile.min_silence_duration_ms, profile.speech_pad_ms) == (250, 100, 30)
    assert _vad({"natriton.threshold": "0.7"}).neg_threshold == 0.55  # threshold - 0.15
    assert _vad({"natriton.threshold": "0.1"}).neg_threshold == 0.01  # never below 0.01
    assert _vad({"natriton.threshold": "0.1", "natriton.neg_threshold": "0.1"}).neg_threshold == 0.1
    parameters = {k: v for k, v in VAD_PARAMETERS.items() if k != "natriton.context_samples"}
    audio = TensorSpec(name="AUDIO", datatype="FP32", shape=(512,))
    built = build_profile("vad", parameters, (audio, VAD_INPUTS[1]), VAD_OUTPUTS).profile
    assert isinstance(built, VadProfile) and built.context_samples == 0 and built.input_samples == 512


def test_decode_vad_parameters_is_typed() -> None:
    params = decode_parameters("m", VAD_PARAMETERS)
    assert params.kind is ModelKind.VAD
    assert (params.sample_rate, params.chunk_samples, params.context_samples) == (16000, 512, 64)  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ["sample_rate", "chunk_samples"])
def test_vad_needs_its_sample_rate_and_chunk_size(key: str) -> None:
    parameters = {k: v for k, v in VAD_PARAMETERS.items() if k != f"natriton.{key}"}
    message = _error(build_profile, "silero", parameters, VAD_INPUTS, VAD_OUTPUTS)
    assert "'silero' (vad)" in message and f"missing required field `natriton.{key}`" in message, message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sample_rate", "0"),
        ("sample_rate", "16k"),
        ("chunk_samples", "-512"),
        ("context_samples", "-1"),
        ("threshold", "1.5"),
        ("threshold", "loud"),
        ("neg_threshold", "-0.1"),
        ("min_speech_duration_ms", "-250"),
        ("min_silence_duration_ms", "0.5"),
        ("speech_pad_ms", "x"),
        ("window_size_samples", "512"),  # silero's name, not the mesh's: unknown
        ("tokenizer", "tokenizer.json"),  # another kind's key
    ],
)
def test_bad_vad_parameter_names_model_and_parameter(key: str, value: str) -> None:
    message = _error(build_profile, "silero", {**VAD_PARAMETERS, f"natriton.{key}": value}, VAD_INPUTS, VAD_OUTPUTS)
    assert "'silero'" in message and f"`natriton.{key}`" in message, message


def test_vad_neg_threshold_above_threshold_is_refused() -> None:
    parameters = {"natriton.threshold": "0.5", "natriton.neg_threshold": "0.6"}
    message = _error(_vad, parameters)
    assert "'vad'" in message and "natriton.neg_threshold 0.6 is above natriton.threshold 0.5" in message


def _renamed(spec: TensorSpec, name: str = "", datatype: str = "", shape: tuple[int, ...] | None = None) -> TensorSpec:
    return TensorSpec(
        name=name or spec.name, datatype=datatype or spec.datatype, shape=spec.shape if shape is None else shape
    )


AUDIO, STATE = VAD_INPUTS
PROBABILITY, STATE_OUT = VAD_OUTPUTS


@pytest.mark.parametrize(
    ("inputs", "outputs", "match"),
    [
        ((_renamed(AUDIO, "SAMPLES"), STATE), VAD_OUTPUTS, "has the inputs AUDIO and STATE, it declares ['SAMPLES'"),
        ((AUDIO,), VAD_OUTPUTS, "has the inputs AUDIO and STATE, it declares ['AUDIO']"),
        ((*VAD_INPUTS, _renamed(AUDIO, "SR")), VAD_OUTPUTS, "has the inputs AUDIO and STATE"),
        (VAD_INPUTS, (PROBABILITY, _renamed(STATE_OUT, "STATE_N")), "outputs SPEECH_PROBABILITY and STATE_OUT"),
        (VAD_INPUTS, (PROBABILITY,), "outputs SPEECH_PROBABILITY and STATE_OUT, it declares ['SPEECH_PROBABILITY']"),
        ((_renamed(AUDIO, datatype="FP16"), STATE), VAD_OUTPUTS, "AUDIO must be FP32, it is FP16"),
        ((_renamed(AUDIO, datatype="INT16"), STATE), VAD_OUTPUTS, "AUDIO must be FP32, it is INT16"),
        (VAD_INPUTS, (PROBABILITY, _renamed(STATE_OUT, datatype="FP64")), "STATE_OUT must be FP32, it is FP64"),
        ((_renamed(AUDIO, shape=(512,)), STATE), VAD_OUTPUTS, "AUDIO must have shape [576]"),
        ((_renamed(AUDIO, shape=(-1,)), STATE), VAD_OUTPUTS, "AUDIO must have shape [576]"),
        ((_renamed(AUDIO, shape=(1, 576)), STATE), VAD_OUTPUTS, "AUDIO must have shape [576]"),
        ((AUDIO, _renamed(STATE, shape=(2, -1))), VAD_OUTPUTS, "STATE must have a fixed shape, it has [2, -1]"),
        ((AUDIO, _renamed(STATE, shape=())), VAD_OUTPUTS, "STATE must have a fixed shape, it has []"),
        (VAD_INPUTS, (PROBABILITY, _renamed(STATE_OUT, shape=(128, 2))), "STATE_OUT must have STATE's shape [2, 128]"),
        (VAD_INPUTS, (_renamed(PROBABILITY, shape=(2,)), STATE_OUT), "SPEECH_PROBABILITY must have shape [1]"),
    ],
    ids=[
        "audio-renamed",
        "no-state",
        "extra-input",
        "state-out-renamed",
        "no-state-out",
        "fp16-audio",
        "int16-audio",
        "fp64-state-out",
        "audio-without-context",
        "variable-audio",
        "audio-2d",
        "variable-state",
        "scalar-state",
        "state-out-transposed",
        "two-probabilities",
    ],
)
def test_vad_tensor_problems(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], match: str) -> None:
    message = _error(build_profile, "silero", VAD_PARAMETERS, inputs, outputs)
    assert "'silero'" in message and match in message, message


def test_audio_only_message_names_the_model_and_the_kind() -> None:
    assert audio_only("silero_vad") == "model 'silero_vad' takes audio (natriton.kind vad); send an audio input"


def test_raw_profile_takes_a_cache_ttl() -> None:
    assert build_profile("noop", {"natriton.cache_ttl_s": "0"}, (), ()).cache_ttl_s == 0


def test_model_parameters_keeps_only_the_mesh_keys_without_prefix() -> None:
    assert model_parameters({"natriton.kind": "raw", "onnx.threads": "1", "natriton": "x", "kind": "y"}) == {
        "kind": "raw"
    }


def test_decode_parameters_is_typed() -> None:
    params = decode_parameters("m", {"natriton.kind": "detector", "natriton.score_threshold": "0.3"})
    assert params.kind is ModelKind.DETECTOR
    assert params.score_threshold == pytest.approx(0.3)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# bad parameters: a ProfileError naming the model and the parameter
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("classifier", "colour", "RGB"),  # misspelt
        ("classifier", "labels", "imagenet1k"),  # a key that no longer exists (labels come from label_filename)
        ("classifier", "tokenizer", "tokenizer.json"),  # another kind's key
        ("raw", "color", "RGB"),
        ("detector", "score_threshold", "1.5"),
        ("detector", "score_threshold", "-0.1"),
        ("detector", "nms_iou", "nan"),
        ("detector", "score_threshold", "high"),
        ("detector", "resize", "squash"),
        ("classifier", "resize", "squash"),
        ("classifier", "color", "bgr"),  # the enum is exact: RGB or BGR
        ("classifier", "color", "GRAY"),
        ("classifier", "softmax", "maybe"),
        ("classifier", "resize_shorter", "0"),
        ("classifier", "resize_shorter", "big"),
        ("embedder", "max_tokens", "0"),
        ("raw", "cache_ttl_s", "-1"),
        ("raw", "cache_ttl_s", ""),
    ],
)
def test_bad_parameter_is_a_profile_error_naming_model_and_parameter(kind: str, key: str, value: str) -> None:
    parameters = {"natriton.kind": kind, f"natriton.{key}": value}
    outputs = (BOXES, SCORES) if kind == "detector" else (LOGITS,)
    message = _error(build_profile, "my_model", parameters, (IMAGE_HWC,), outputs)
    assert "'my_model'" in message
    assert f"`{key}`" in message or f"natriton.{key}" in message, message


@pytest.mark.parametrize("kind", ["segmenter", "Classifier", "", "image_classification"])
def test_unknown_kind_is_a_profile_error(kind: str) -> None:
    message = _error(build_profile, "my_model", {"natriton.kind": kind}, (IMAGE_HWC,), (LOGITS,))
    assert "'my_model'" in message and "natriton.kind" in message and repr(kind) in message
    assert "classifier, detector, embedder, vad, raw" in message


def test_value_errors_name_the_full_parameter_key() -> None:
    message = _error(
        build_profile, "ssd", {"natriton.kind": "detector", "natriton.score_threshold": "1.5"}, (IMAGE_HWC,), ()
    )
    assert "`natriton.score_threshold`" in message
    message = _error(_classifier, {"natriton.resize": "squash"})
    assert "`natriton.resize`" in message and "squash" in message


def test_old_task_parameter_is_refused() -> None:
    message = _error(build_profile, "m", {"natriton.task": "image_classification"}, (IMAGE_HWC,), (LOGITS,))
    assert "'m'" in message and "task" in message


def test_profile_error_is_a_value_error() -> None:
    assert issubclass(ProfileError, ValueError)


def test_resize_shorter_below_the_input_size_is_refused() -> None:
    message = _error(_classifier, {"natriton.resize_shorter": "200"})
    assert "'clf'" in message and "natriton.resize_shorter" in message and "224x224" in message


# ------------------------------------------------------------------------------------------------
# labels (Triton's label_filename)
# ------------------------------------------------------------------------------------------------
def _labels(data: bytes, output: TensorSpec = LOGITS) -> tuple[str, ...]:
    built = _classifier(
        outputs=(output,), label_files={output.name: "labels.txt"}, read_file=_files({"labels.txt": data})
    )
    assert isinstance(built.profile, ClassifierProfile)
    return built.profile.labels


def test_labels_one_per_line_trailing_blank_lines_ignored() -> None:
    assert _labels(b"a\r\n b \nc\nd\n\n\n") == ("a", "b", "c", "d")


def test_label_count_must_match_the_output() -> None:
    message = _error(_labels, b"a\nb\nc\n")
    assert "'clf'" in message and "'labels.txt'" in message
    assert "3 labels" in message and "has 4" in message
    assert "5 labels" in _error(_labels, b"a\nb\nc\nd\ne\n")


def test_variable_size_output_takes_any_number_of_labels() -> None:
    assert _labels(b"x\ny\n", TensorSpec(name="LOGITS", datatype="FP32", shape=(-1,))) == ("x", "y")


def test_missing_label_file_is_a_profile_error() -> None:
    message = _error(_classifier, label_files={"LOGITS": "labels.txt"}, read_file=_files({}))
    assert "'clf'" in message and "'labels.txt'" in message and "cannot read" in message


def test_label_file_without_a_model_repository_is_a_profile_error() -> None:
    message = _error(_classifier, label_files={"LOGITS": "labels.txt"}, read_file=None)
    assert "'clf'" in message and "'labels.txt'" in message and "no model repository" in message


@pytest.mark.parametrize("name", ["../labels.txt", "sub/labels.txt", ".hidden", "a\\b.txt"])
def test_label_file_must_be_beside_the_model(name: str) -> None:
    read = _files({name: LABELS_TXT})
    message = _error(_classifier, label_files={"LOGITS": name}, read_file=read)
    assert "'clf'" in message and "plain name" in message


def test_label_file_must_be_utf8() -> None:
    assert "not UTF-8" in _error(_labels, b"a\nb\n\xff\xfe\nd\n")


def test_label_file_of_another_output_is_not_used() -> None:
    built = _classifier(label_files={"OTHER": "labels.txt"}, read_file=_files({}))
    assert isinstance(built.profile, ClassifierProfile) and built.profile.labels == ()


def test_classifier_has_one_output() -> None:
    message = _error(_classifier, outputs=(LOGITS, EMBEDDING))
    assert "'clf'" in message and "one output" in message


# ------------------------------------------------------------------------------------------------
# image spec from the declared input
# ------------------------------------------------------------------------------------------------
def _image(inputs: tuple[TensorSpec, ...], parameters: Mapping[str, str] | None = None) -> ImageSpec | None:
    profile = _classifier(parameters, inputs=inputs).profile
    assert isinstance(profile, ClassifierProfile)
    return profile.image


def test_image_spec_from_hwc_input() -> None:
    spec = _image((TensorSpec(name="IN", datatype="UINT8", shape=(240, 320, 3)),))
    assert spec is not None
    assert (spec.input, spec.datatype, spec.height, spec.width, spec.channels_last) == ("IN", "UINT8", 240, 320, True)
    assert spec.resize_shorter == 320  # never smaller than the crop


def test_image_spec_from_chw_input() -> None:
    spec = _image(
        (TensorSpec(name="PIXELS", datatype="FP32", shape=(3, 240, 320)),),
        {"natriton.color": "BGR", "natriton.resize_shorter": "400"},
    )
    assert spec == ImageSpec(
        input="PIXELS",
        datatype="FP32",
        height=240,
        width=320,
        channels_last=False,
        color=ColorOrder.BGR,
        resize=ResizeMode.SHORTER_SIDE_CROP,
        resize_shorter=400,
    )


@pytest.mark.parametrize(
    "inputs",
    [
        (TensorSpec(name="FEATURES", datatype="FP32", shape=(1000,)),),
        (TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 4)),),
        (TensorSpec(name="IMAGE", datatype="UINT8", shape=(-1, -1, 3)),),
        (TensorSpec(name="IMAGE", datatype="INT32", shape=(224, 224, 3)),),
        (IMAGE_HWC, TensorSpec(name="EXTRA", datatype="FP32", shape=(1,))),
        (),
    ],
    ids=["vector", "four-channels", "variable-size", "int32", "two-inputs", "no-input"],
)
def test_classifier_with_a_non_image_input_takes_tensors_only(inputs: tuple[TensorSpec, ...]) -> None:
    assert _image(inputs) is None
    detector = build_profile("ssd", {"natriton.kind": "detector"}, inputs, (BOXES, SCORES)).profile
    assert isinstance(detector, DetectorProfile) and detector.image is None


# ------------------------------------------------------------------------------------------------
# the profile on the wire (a value of the model catalog)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "profile",
    [
        _classifier({"natriton.color": "BGR"}).profile,
        build_profile("ssd", {"natriton.kind": "detector"}, (IMAGE_HWC,), (BOXES, SCORES)).profile,
        EmbedderProfile(output="E", text=TextSpec(tokenizer_file="m/t.json", tokenizer_sha256="ab", max_tokens=8)),
        build_profile("vad", VAD_PARAMETERS, VAD_INPUTS, VAD_OUTPUTS).profile,
        RawProfile(),
    ],
    ids=["classifier", "detector", "embedder", "vad", "raw"],
)
def test_profile_round_trips_as_json_with_its_kind_as_tag(profile: ModelProfile) -> None:
    encoded = msgspec.json.encode(profile)
    assert msgspec.json.decode(encoded)["type"] == profile.__struct_config__.tag
    assert msgspec.json.decode(encoded, type=ModelProfile) == profile  # type: ignore[arg-type]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(profile), type=ModelProfile) == profile  # type: ignore[arg-type]
