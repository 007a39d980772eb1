"""Typed model profiles: what a model *means* to the mesh, decoded once from its ``config.pbtxt``.

A model's kind (classifier, detector, embedder, vad, raw) and everything the services need to feed it and to read
its outputs live in one tagged union, :data:`ModelProfile`. The router builds it when it publishes the model
catalog, from three sources of Triton's model configuration:

- the ``natriton.*`` parameters (strings), checked against a Struct per kind that forbids unknown keys, so a
  misspelled or out-of-range parameter fails at load time with the model's name, never per request;
- the declared inputs and outputs (an image input's size, channel order and datatype are read from its dims);
- files beside the model (Triton's ``label_filename`` on an output; ``natriton.tokenizer`` for text models).

A ``vad`` model (voice activity detection) is the first stateful one: Triton sees it as stateless, the mesh carries
each audio stream's recurrent state from one chunk to the next (the model's ``STATE`` input, ``STATE_OUT`` output).

Services dispatch on the profile's type (``match``; mypy checks the matches are exhaustive), so adding a model
of an existing kind takes only files in ``model_repository/``.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final, TypeAlias

import msgspec

PARAMETER_PREFIX: Final = "natriton."
_STRUCT_OPTIONS: Final[dict[str, Any]] = {"frozen": True, "kw_only": True, "tag_field": "type"}


class ProfileError(ValueError):
    """A model's configuration does not describe a model the mesh can serve (the message names the model)."""


class ModelKind(enum.StrEnum):
    """What a model does, as ``natriton.kind`` in its config.pbtxt says."""

    CLASSIFIER = "classifier"
    DETECTOR = "detector"
    EMBEDDER = "embedder"
    VAD = "vad"
    RAW = "raw"


class ResizeMode(enum.StrEnum):
    """How an image is brought to the model's input size."""

    SHORTER_SIDE_CROP = "shorter_side_crop"
    """Resize the shorter side to ``resize_shorter`` (aspect kept), then centre-crop (classifiers)."""
    STRETCH = "stretch"
    """Resize straight to the input size, ignoring the aspect ratio (detectors that report relative boxes)."""


class ColorOrder(enum.StrEnum):
    """Channel order of the model's image input."""

    RGB = "RGB"
    BGR = "BGR"


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a model declares for one input or output; ``shape`` excludes the batch dimension, -1 is variable."""

    name: str
    datatype: str
    shape: tuple[int, ...]


# --------------------------------------------------------------------------------------------
# The profile (a value of the model catalog; JSON in the NATS KV bucket)
# --------------------------------------------------------------------------------------------
class ImageSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How preprocess turns an encoded image into the model's one input tensor (batch dimension 1)."""

    input: str
    datatype: str
    """``UINT8`` or ``FP32`` (pixel values 0-255 either way; normalisation is the model's job)."""
    height: int
    width: int
    channels_last: bool
    """HWC when true, CHW otherwise."""
    color: ColorOrder = ColorOrder.RGB
    resize: ResizeMode = ResizeMode.SHORTER_SIDE_CROP
    resize_shorter: int = 0
    """For ``shorter_side_crop``: the shorter side before the centre crop (at least the input size)."""


class TextSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How preprocess turns text into token tensors: the tokenizer file beside the model and the input names."""

    tokenizer_file: str
    """Name of the tokenizer file (Hugging Face ``tokenizer.json``) in the model files object store."""
    tokenizer_sha256: str
    max_tokens: int
    ids_input: str = "INPUT_IDS"
    mask_input: str = "ATTENTION_MASK"


class ClassifierProfile(msgspec.Struct, tag="classifier", **_STRUCT_OPTIONS):
    """One score per class: the answer is the top-k classes with their labels."""

    output: str
    labels: tuple[str, ...] = ()
    """Class names by index (Triton's ``label_filename``); empty = the index is the label."""
    softmax: bool = True
    """Turn the output (logits) into probabilities; false when the model outputs probabilities already."""
    image: ImageSpec | None = None
    """Set when the model takes an image; without it the model takes only ready-made tensors."""


class DetectorProfile(msgspec.Struct, tag="detector", **_STRUCT_OPTIONS):
    """Boxes (relative x1, y1, x2, y2) and scores per prior: the answer is the boxes after NMS."""

    boxes_output: str
    scores_output: str
    class_names: tuple[str, ...] = ("object",)
    score_threshold: float = 0.5
    nms_iou: float = 0.45
    image: ImageSpec | None = None


class EmbedderProfile(msgspec.Struct, tag="embedder", **_STRUCT_OPTIONS):
    """One vector per item (already L2-normalised by the model when cosine similarity is meant)."""

    output: str
    text: TextSpec | None = None
    """Set when the model takes text; without it the model takes only ready-made tensors."""


class VadProfile(msgspec.Struct, tag="vad", **_STRUCT_OPTIONS):
    """Voice activity detection: the speech probability of each chunk of an audio stream (silero VAD).

    Stateful per stream, stateless to Triton: every request carries, per stream, the chunk with the last
    ``context_samples`` samples of the previous chunk before it (zeros at the start) as ``AUDIO`` FP32
    ``[context_samples + chunk_samples]``, and the recurrent state the previous chunk returned as ``STATE`` FP32
    ``state_shape`` (zeros at the start); the model answers ``SPEECH_PROBABILITY`` FP32 ``[1]`` and the next state
    ``STATE_OUT``. Streams of one batch are independent. The thresholds and durations are those of silero's
    ``get_speech_timestamps``, for turning the probabilities into speech segments.
    """

    state_shape: tuple[int, ...]
    """One stream's state, without the batch dimension (``(2, 128)`` for silero)."""
    sample_rate: int
    """Samples per second of the audio the model takes (mono, float samples in [-1, 1])."""
    chunk_samples: int
    """New samples per request and stream (512 at 16 kHz: 32 ms)."""
    audio_input: str = "AUDIO"
    state_input: str = "STATE"
    probability_output: str = "SPEECH_PROBABILITY"
    state_output: str = "STATE_OUT"
    context_samples: int = 0
    """Samples of the previous chunk repeated before the new ones (zeros for the first chunk)."""
    threshold: float = 0.5
    """A chunk whose probability is at least this is speech."""
    neg_threshold: float = 0.35
    """Speech ends when the probability falls below this (hysteresis; silero: ``threshold - 0.15``)."""
    min_speech_duration_ms: int = 250
    """Speech segments shorter than this are dropped."""
    min_silence_duration_ms: int = 100
    """Silence shorter than this does not end a speech segment."""
    speech_pad_ms: int = 30
    """Each speech segment is widened by this much on both sides."""

    @property
    def input_samples(self) -> int:
        """Samples of the ``AUDIO`` input per stream: the context and the new chunk."""
        return self.context_samples + self.chunk_samples


class RawProfile(msgspec.Struct, tag="raw", **_STRUCT_OPTIONS):
    """No known meaning: the answer is the output tensors as Triton returned them."""


ModelProfile: TypeAlias = ClassifierProfile | DetectorProfile | EmbedderProfile | VadProfile | RawProfile


def audio_only(model: str) -> str:
    """Why a request that is not audio is refused by a ``vad`` model (the services' ``invalid_argument``)."""
    return f"model {model!r} takes audio (natriton.kind vad); send an audio input"


# --------------------------------------------------------------------------------------------
# What config.pbtxt may say (``natriton.<field>``), per kind; unknown keys are errors
# --------------------------------------------------------------------------------------------
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class _Parameters(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: ModelKind = ModelKind.RAW
    cache_ttl_s: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Result-cache lifetime of this model's answers (overrides the postprocess default)."""


class _ImageParameters(_Parameters, frozen=True, kw_only=True):
    resize: ResizeMode = ResizeMode.SHORTER_SIDE_CROP
    resize_shorter: PositiveInt | None = None
    color: ColorOrder = ColorOrder.RGB


class ClassifierParameters(_ImageParameters, frozen=True, kw_only=True):
    """``natriton.kind: classifier``."""

    softmax: bool = True


class DetectorParameters(_ImageParameters, frozen=True, kw_only=True):
    """``natriton.kind: detector`` (boxes from the ``BOXES`` output, scores from ``SCORES``)."""

    resize: ResizeMode = ResizeMode.STRETCH
    class_names: str = "object"
    """Comma-separated class names by index."""
    score_threshold: Fraction = 0.5
    nms_iou: Fraction = 0.45


class EmbedderParameters(_Parameters, frozen=True, kw_only=True):
    """``natriton.kind: embedder``."""

    tokenizer: str = ""
    """A ``tokenizer.json`` file beside the model (text models)."""
    max_tokens: PositiveInt = 128


class VadParameters(_Parameters, frozen=True, kw_only=True):
    """``natriton.kind: vad`` (inputs ``AUDIO`` and ``STATE``, outputs ``SPEECH_PROBABILITY`` and ``STATE_OUT``).

    ``sample_rate`` and ``chunk_samples`` are required (they are the model's, no default fits every VAD model); the
    others default to silero's ``get_speech_timestamps`` (``neg_threshold``: ``max(threshold - 0.15, 0.01)``).
    """

    sample_rate: PositiveInt
    chunk_samples: PositiveInt
    context_samples: NonNegativeInt = 0
    threshold: Fraction = 0.5
    neg_threshold: Fraction | None = None
    min_speech_duration_ms: NonNegativeInt = 250
    min_silence_duration_ms: NonNegativeInt = 100
    speech_pad_ms: NonNegativeInt = 30


class RawParameters(_Parameters, frozen=True, kw_only=True):
    """``natriton.kind: raw`` (or no ``natriton.kind``)."""


PARAMETERS_BY_KIND: Final[dict[ModelKind, type[_Parameters]]] = {
    ModelKind.CLASSIFIER: ClassifierParameters,
    ModelKind.DETECTOR: DetectorParameters,
    ModelKind.EMBEDDER: EmbedderParameters,
    ModelKind.VAD: VadParameters,
    ModelKind.RAW: RawParameters,
}

ReadFile = Callable[[str], bytes]
"""Reads a file beside the model by its name (raises OSError when missing)."""


class ModelFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file beside a model that the services need (a tokenizer), to be published with the catalog."""

    name: str
    data: bytes
    sha256: str


class BuiltProfile(msgspec.Struct, frozen=True, kw_only=True):
    """The result of :func:`build_profile`: the profile, the cache TTL and the files to publish."""

    profile: ModelProfile
    cache_ttl_s: int | None = None
    files: tuple[ModelFile, ...] = ()


def model_parameters(parameters: Mapping[str, str]) -> dict[str, str]:
    """The ``natriton.*`` parameters without their prefix (Triton's own and the backends' are left out)."""
    return {k.removeprefix(PARAMETER_PREFIX): v for k, v in parameters.items() if k.startswith(PARAMETER_PREFIX)}


def decode_parameters(model: str, parameters: Mapping[str, str]) -> _Parameters:
    """The typed ``natriton.*`` parameters of ``model``; :class:`ProfileError` on unknown keys or bad values."""
    raw = model_parameters(parameters)
    try:
        kind = ModelKind(raw.get("kind", ModelKind.RAW))
    except ValueError:
        known = ", ".join(k.value for k in ModelKind)
        raise ProfileError(f"model {model!r}: natriton.kind {raw['kind']!r} is not one of {known}") from None
    try:
        return msgspec.convert(raw, PARAMETERS_BY_KIND[kind], strict=False)
    except msgspec.ValidationError as exc:
        message = re.sub(r"(unknown|required) field `(\w+)`", r"\1 field `natriton.\2`", str(exc)).replace(
            "`$.", "`natriton."
        )
        raise ProfileError(f"model {model!r} ({kind.value}): invalid parameters: {message}") from exc


def build_profile(
    model: str,
    parameters: Mapping[str, str],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    label_files: Mapping[str, str] | None = None,
    read_file: ReadFile | None = None,
) -> BuiltProfile:
    """Decode a model's profile from its config; :class:`ProfileError` (naming the model) if it is unusable.

    ``label_files`` maps output names to their ``label_filename``; ``read_file`` reads files beside the model
    (labels, tokenizer) and is required when the config names any.
    """
    params = decode_parameters(model, parameters)
    output_names = [o.name for o in outputs]
    profile: ModelProfile
    files: tuple[ModelFile, ...] = ()
    match params:
        case ClassifierParameters():
            if len(outputs) != 1:
                raise ProfileError(f"model {model!r}: a classifier has one output, it declares {output_names}")
            output = outputs[0]
            labels = _labels(model, output, (label_files or {}).get(output.name, ""), read_file)
            profile = ClassifierProfile(
                output=output.name, labels=labels, softmax=params.softmax, image=_image_spec(model, params, inputs)
            )
        case DetectorParameters():
            missing = {"BOXES", "SCORES"} - set(output_names)
            if missing:
                raise ProfileError(f"model {model!r}: a detector returns BOXES and SCORES; missing {sorted(missing)}")
            names = tuple(n.strip() for n in params.class_names.split(",") if n.strip())
            if not names:
                raise ProfileError(f"model {model!r}: natriton.class_names is empty")
            profile = DetectorProfile(
                boxes_output="BOXES",
                scores_output="SCORES",
                class_names=names,
                score_threshold=params.score_threshold,
                nms_iou=params.nms_iou,
                image=_image_spec(model, params, inputs),
            )
        case EmbedderParameters():
            if len(outputs) != 1:
                raise ProfileError(f"model {model!r}: an embedder has one output, it declares {output_names}")
            text = None
            if params.tokenizer:
                tokenizer = _tokenizer_file(model, params.tokenizer, read_file)
                text = _text_spec(model, params, inputs, tokenizer)
                files = (tokenizer,)
            profile = EmbedderProfile(output=outputs[0].name, text=text)
        case VadParameters():
            profile = _vad_profile(model, params, inputs, outputs)
        case _:
            profile = RawProfile()
    return BuiltProfile(profile=profile, cache_ttl_s=params.cache_ttl_s, files=files)


def _image_spec(model: str, params: _ImageParameters, inputs: Sequence[TensorSpec]) -> ImageSpec | None:
    """The image layout when the model's single input is a fixed-size 3-channel image, else None (tensors only)."""
    if len(inputs) != 1:
        return None
    spec = inputs[0]
    if len(spec.shape) != 3 or not (spec.shape[-1] == 3 or spec.shape[0] == 3):
        return None
    channels_last = spec.shape[-1] == 3
    height, width = (spec.shape[0], spec.shape[1]) if channels_last else (spec.shape[1], spec.shape[2])
    if height < 1 or width < 1 or spec.datatype not in ("UINT8", "FP32"):
        return None
    shorter = params.resize_shorter or min(height, width)
    if shorter < min(height, width):
        raise ProfileError(
            f"model {model!r}: natriton.resize_shorter {shorter} is smaller than the input {height}x{width}"
        )
    return ImageSpec(
        input=spec.name,
        datatype=spec.datatype,
        height=height,
        width=width,
        channels_last=channels_last,
        color=params.color,
        resize=params.resize,
        resize_shorter=max(shorter, height, width) if params.resize is ResizeMode.SHORTER_SIDE_CROP else 0,
    )


VAD_INPUTS: Final = ("AUDIO", "STATE")
VAD_OUTPUTS: Final = ("SPEECH_PROBABILITY", "STATE_OUT")


def _vad_profile(
    model: str, params: VadParameters, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> VadProfile:
    """The VAD profile: exactly the inputs ``AUDIO``, ``STATE`` and the outputs ``SPEECH_PROBABILITY``,
    ``STATE_OUT``, all FP32, fixed shapes, the audio as long as ``natriton.context_samples + chunk_samples``."""
    declared = {spec.name: spec for spec in (*inputs, *outputs)}
    for role, specs, names in (("inputs", inputs, VAD_INPUTS), ("outputs", outputs, VAD_OUTPUTS)):
        if sorted(spec.name for spec in specs) != sorted(names):
            raise ProfileError(
                f"model {model!r}: a vad model has the {role} {' and '.join(names)}, "
                f"it declares {[spec.name for spec in specs]}"
            )
    for spec in declared.values():
        if spec.datatype != "FP32":
            raise ProfileError(f"model {model!r}: vad tensor {spec.name} must be FP32, it is {spec.datatype}")
    audio, state, probability, state_out = (declared[n] for n in (*VAD_INPUTS, *VAD_OUTPUTS))
    samples = params.context_samples + params.chunk_samples
    if audio.shape != (samples,):
        raise ProfileError(
            f"model {model!r}: vad input AUDIO must have shape [{samples}] (natriton.context_samples "
            f"{params.context_samples} + natriton.chunk_samples {params.chunk_samples}), it has {list(audio.shape)}"
        )
    if not state.shape or any(d < 1 for d in state.shape):
        raise ProfileError(f"model {model!r}: vad input STATE must have a fixed shape, it has {list(state.shape)}")
    if state_out.shape != state.shape:
        raise ProfileError(
            f"model {model!r}: vad output STATE_OUT must have STATE's shape {list(state.shape)}, "
            f"it has {list(state_out.shape)}"
        )
    if probability.shape != (1,):
        raise ProfileError(
            f"model {model!r}: vad output SPEECH_PROBABILITY must have shape [1], it has {list(probability.shape)}"
        )
    neg_threshold = params.neg_threshold
    if neg_threshold is None:  # silero's default
        neg_threshold = round(max(params.threshold - 0.15, 0.01), 6)
    if neg_threshold > params.threshold:
        raise ProfileError(
            f"model {model!r}: natriton.neg_threshold {neg_threshold} is above natriton.threshold {params.threshold}"
        )
    return VadProfile(
        state_shape=state.shape,
        sample_rate=params.sample_rate,
        chunk_samples=params.chunk_samples,
        context_samples=params.context_samples,
        threshold=params.threshold,
        neg_threshold=neg_threshold,
        min_speech_duration_ms=params.min_speech_duration_ms,
        min_silence_duration_ms=params.min_silence_duration_ms,
        speech_pad_ms=params.speech_pad_ms,
    )


def _labels(model: str, output: TensorSpec, filename: str, read_file: ReadFile | None) -> tuple[str, ...]:
    """Class names from Triton's ``label_filename`` (one per line, by index), checked against the output size."""
    if not filename:
        return ()
    data = _read(model, filename, read_file)
    try:
        labels = tuple(line.strip() for line in data.decode("utf-8-sig").splitlines())
    except UnicodeDecodeError as exc:
        raise ProfileError(f"model {model!r}: label file {filename!r} is not UTF-8") from exc
    while labels and not labels[-1]:
        labels = labels[:-1]
    classes = output.shape[-1] if output.shape else -1
    if classes > 0 and len(labels) != classes:
        raise ProfileError(
            f"model {model!r}: label file {filename!r} has {len(labels)} labels, output {output.name!r} has {classes}"
        )
    return labels


def _tokenizer_file(model: str, filename: str, read_file: ReadFile | None) -> ModelFile:
    data = _read(model, filename, read_file)
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ProfileError(f"model {model!r}: tokenizer {filename!r} is not a tokenizer.json file") from exc
    return ModelFile(name=f"{model}/{filename}", data=data, sha256=hashlib.sha256(data).hexdigest())


def _text_spec(model: str, params: EmbedderParameters, inputs: Sequence[TensorSpec], tokenizer: ModelFile) -> TextSpec:
    names = {spec.name for spec in inputs}
    if not {"INPUT_IDS", "ATTENTION_MASK"} <= names:
        raise ProfileError(f"model {model!r}: a text model declares INPUT_IDS and ATTENTION_MASK, not {sorted(names)}")
    return TextSpec(tokenizer_file=tokenizer.name, tokenizer_sha256=tokenizer.sha256, max_tokens=params.max_tokens)


def _read(model: str, filename: str, read_file: ReadFile | None) -> bytes:
    if read_file is None:
        raise ProfileError(f"model {model!r}: needs the file {filename!r}, but no model repository is available")
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise ProfileError(f"model {model!r}: file name {filename!r} must be a plain name beside the model")
    try:
        return read_file(filename)
    except OSError as exc:
        raise ProfileError(f"model {model!r}: cannot read {filename!r}: {exc.strerror or exc}") from exc
