"""What the ensemble's python models and the in-process floor compute, as pure functions over the mesh's own code.

Preprocess is ``natriton_preprocess.logic.prepare_image`` with the service's default decode limits and the
``ImageSpec`` the mesh's catalog derives from ``mobilenet_v2``'s config (:func:`natriton.profiles.build_profile`);
postprocess is ``natriton.answers.top_k`` (softmax, then the k best) with the model's labels. Both the
Triton stubs (``models/*/1/model.py`` via :mod:`.backend`) and :mod:`.floor` call these, so the three systems of
the scenario do identical work per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from natriton.profiles import ClassifierProfile, ImageSpec, TensorSpec, build_profile
from natriton.tensors import to_array

IMAGE_PARAMETERS = {"image.resize_shorter": "natriton.resize_shorter", "image.color": "natriton.color"}
"""The preprocess model's parameters → the ``natriton.*`` parameters of the classifier they copy."""


def image_spec(
    output_name: str, datatype: str, dims: Sequence[int], parameters: Mapping[str, str], model: str = "ensemble"
) -> ImageSpec:
    """The layout preprocess makes for a classifier with this input (``dims`` without the batch dimension) and these
    ``natriton.*`` (or ``image.*``) parameters, through the same :func:`build_profile` the mesh's router uses."""
    params = {"natriton.kind": "classifier"}
    for key, value in parameters.items():
        params[IMAGE_PARAMETERS.get(key, key)] = value
    built = build_profile(
        model,
        params,
        [TensorSpec(name=output_name, datatype=datatype, shape=tuple(int(d) for d in dims))],
        [TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,))],
    )
    assert isinstance(built.profile, ClassifierProfile)
    if built.profile.image is None:
        raise ValueError(f"{output_name} {datatype} {list(dims)} is not an image input")
    return built.profile.image


def config_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """A Triton model config's (JSON form) ``parameters`` as plain strings."""
    return {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}


def image_spec_of_config(config: Mapping[str, Any]) -> ImageSpec:
    """The preprocess model's layout from its own config (JSON form): its single output and its parameters."""
    (output,) = config["output"]
    datatype = str(output["data_type"]).removeprefix("TYPE_")
    return image_spec(output["name"], datatype, output["dims"], config_parameters(config), config.get("name", ""))


def default_limits() -> Any:
    """The decode limits of the preprocess service with its default settings (a ``DecodeLimits``)."""
    from natriton_preprocess.logic import DecodeLimits
    from natriton_preprocess.settings import Settings

    defaults = Settings()
    return DecodeLimits(max_pixels=defaults.max_image_pixels, min_side=defaults.min_image_side)


def preprocess(data: bytes, spec: ImageSpec, limits: Any) -> npt.NDArray[np.uint8]:
    """One encoded image → the model's input with a batch dimension of 1, as the preprocess service makes it."""
    from natriton_preprocess.logic import prepare_image

    tensor, _size = prepare_image(data, spec, limits)
    array: npt.NDArray[np.uint8] = np.asarray(to_array(tensor), dtype=np.uint8)
    return array


def as_bytes(value: Any) -> bytes:
    """One element of a Triton BYTES tensor (numpy object array: ``bytes``, or ``str`` from some clients)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, np.ndarray):
        return value.tobytes()
    raise TypeError(f"expected bytes, got {type(value).__name__}")


def preprocess_batch(values: npt.NDArray[Any], spec: ImageSpec, limits: Any) -> npt.NDArray[np.uint8]:
    """A BYTES tensor [N] or [N, 1] of encoded images → uint8 [N, H, W, C] (``prepare_image`` per image)."""
    flat = values.reshape(-1)
    return np.concatenate([preprocess(as_bytes(v), spec, limits) for v in flat])


def read_labels(path: Path) -> tuple[str, ...]:
    """Class names by index, one per line (Triton's ``label_filename`` format)."""
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())


def top_k_arrays(
    logits: npt.NDArray[np.floating[Any]], k: int, labels: tuple[str, ...], *, apply_softmax: bool = True
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
    """Logits [N, C] → (labels as a BYTES array [N, k], scores FP32 [N, k]), best first, by the mesh postprocess's
    ``top_k`` per row."""
    from natriton.answers import top_k

    rows = logits.reshape(logits.shape[0], -1)
    names = np.empty((rows.shape[0], k), dtype=np.object_)
    scores = np.zeros((rows.shape[0], k), dtype=np.float32)
    for i, row in enumerate(rows):
        classes = top_k(row, k, labels, apply_softmax=apply_softmax).classes
        for j, cls in enumerate(classes):
            names[i, j] = cls.label.encode()
            scores[i, j] = cls.score
        for j in range(len(classes), k):  # fewer classes than k: empty names, score 0
            names[i, j] = b""
    return names, scores
