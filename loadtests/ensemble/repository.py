"""The ensemble's models on disk (``loadtests/ensemble/models``) and getting them into the bench's tritonserver.

The bench starts tritonserver with ``--model-control-mode=explicit`` on one model repository; when a scenario needs
the ensemble, :func:`combined_repository` makes that repository a folder of symlinks to every model of
``model_repository/`` and of ``loadtests/ensemble/models`` (the models themselves are unchanged: same ONNX file,
config and labels), and the runner loads the ensemble for its measurement only (:func:`load_ensemble`; Triton loads
the two python steps with it) and unloads it afterwards, so its three stub processes cost nothing elsewhere.

Triton's repository API cannot load this ensemble from override files instead ("failed to poll from model
repository": an ensemble's steps must be in a repository), hence the folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MODELS = Path(__file__).resolve().parent / "models"
ENSEMBLE = "ensemble_mobilenet_v2"
STEPS = ("ensemble_preprocess", "ensemble_postprocess")
"""The ensemble's own python models (its middle step is the mesh's ``mobilenet_v2``, which stays loaded)."""
OUTPUTS = ("LABELS", "SCORES")
INPUT = "JPEG"


def model_dirs(repository: Path) -> list[Path]:
    """The model folders of a repository (those with a ``config.pbtxt``), by name."""
    return sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file())


def read_config(model_dir: Path) -> dict[str, Any]:
    """A model's ``config.pbtxt`` in the JSON form Triton's model-config API returns (protobuf field names)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    config: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return config


def combined_repository(root: Path, sources: Iterable[Path], name: str = "model_repository") -> Path:
    """``root/<name>``: a symlink per model folder of each of ``sources`` (a name already taken is an error). The
    default name keeps paths shown relative to the repository's parent as they are for ``model_repository/``."""
    repository = root / name
    repository.mkdir(parents=True, exist_ok=True)
    for source in sources:
        for model in model_dirs(Path(source)):
            link = repository / model.name
            if link.exists() or link.is_symlink():
                if link.resolve() == model.resolve():
                    continue
                raise ValueError(f"model {model.name!r} is in more than one repository ({link.resolve()}, {model})")
            link.symlink_to(model.resolve(), target_is_directory=True)
    return repository


async def load_ensemble(client: Any, timeout_s: float = 120.0) -> float:
    """Load the ensemble (and with it its python steps) into a running tritonserver; seconds it took."""
    started = time.monotonic()
    await client.load_model(ENSEMBLE, client_timeout=timeout_s)
    return round(time.monotonic() - started, 2)


async def unload_ensemble(client: Any) -> None:
    """Unload the ensemble and its python steps, never ``mobilenet_v2`` (no ``unload_dependents``)."""
    await client.unload_model(ENSEMBLE)
    for step in STEPS:
        await client.unload_model(step)


def request_inputs(jpeg: bytes) -> list[Any]:
    """The ensemble's request: one JPEG as a BYTES tensor [1, 1]."""
    import numpy as np
    from tritonclient.grpc import InferInput

    tensor = InferInput(INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[jpeg]], dtype=np.object_))
    return [tensor]


def requested_outputs() -> list[Any]:
    """LABELS and SCORES."""
    from tritonclient.grpc import InferRequestedOutput

    return [InferRequestedOutput(name) for name in OUTPUTS]


def top_classes(result: Any) -> list[tuple[str, float]]:
    """(label, score) pairs of the first item of an ensemble answer, best first."""
    labels = result.as_numpy("LABELS")[0]
    scores = result.as_numpy("SCORES")[0]
    return [(bytes(label).decode(), float(score)) for label, score in zip(labels, scores, strict=True)]
