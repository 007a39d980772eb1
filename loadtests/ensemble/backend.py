"""The ensemble's two python-backend models (``models/ensemble_{pre,post}process/1/model.py`` import them).

They run inside Triton's python-backend stub, whose interpreter is this venv's (the bench puts the venv first on
``PATH``), so ``loadtests``, ``natriton_preprocess`` and ``natriton_postprocess`` import as they do here. Each
``execute`` handles its requests one by one; a bad request gets its own error response and never fails the others.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import logic


def _utils() -> Any:
    import triton_python_backend_utils as pb_utils  # only inside the stub

    return pb_utils


class PreprocessModel:
    """JPEG bytes [N, 1] → IMAGE uint8 [N, 224, 224, 3] (the mesh preprocess's ``prepare_image``)."""

    def initialize(self, args: dict[str, str]) -> None:
        """The layout from this model's config, the decode limits from the preprocess service's defaults."""
        config = json.loads(args["model_config"])
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]
        self.spec = logic.image_spec_of_config(config)
        self.limits = logic.default_limits()

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order."""
        pb = _utils()
        responses = []
        for request in requests:
            try:
                values = pb.get_input_tensor_by_name(request, self.input).as_numpy()
                images = logic.preprocess_batch(values, self.spec, self.limits)
                responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(self.output, images)]))
            except Exception as exc:  # a bad image fails its own request only
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc))))
        return responses


class PostprocessModel:
    """LOGITS FP32 [N, 1000] → LABELS BYTES [N, k] and SCORES FP32 [N, k] (the mesh postprocess's ``top_k``)."""

    def initialize(self, args: dict[str, str]) -> None:
        """Labels from the file the config names (beside config.pbtxt), k from the outputs' dims."""
        config = json.loads(args["model_config"])
        params = logic.config_parameters(config)
        path = Path(args["model_repository"]) / params.get("labels_file", "labels.txt")
        self.labels = logic.read_labels(path)
        self.input = config["input"][0]["name"]
        outputs = {o["name"]: o for o in config["output"]}
        self.k = int(outputs["SCORES"]["dims"][0])

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order."""
        pb = _utils()
        responses = []
        for request in requests:
            try:
                logits = pb.get_input_tensor_by_name(request, self.input).as_numpy()
                names, scores = logic.top_k_arrays(np.asarray(logits, dtype=np.float32), self.k, self.labels)
                tensors = [pb.Tensor("LABELS", names), pb.Tensor("SCORES", scores)]
                responses.append(pb.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # fails its own request only
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc))))
        return responses
