"""Every model in model_repository/ must be something the mesh can serve, read the way the router reads it.

The router gets each config from Triton as JSON (``get_model_config(as_json=True)["config"]``); here the
same JSON is produced offline from ``config.pbtxt`` with protobuf, so a config change that breaks the mesh
fails in CI rather than at deploy time.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from PIL import Image
from skimage import data as skdata
from tritonclient.grpc import model_config_pb2

from natriton.messages import Codec, Job, ModelInfo
from natriton.tensors import check_against_specs, to_array, to_tensor
from natriton_postprocess.logic import load_labels, to_result
from natriton_preprocess.logic import DecodeLimits, ImageLayout, image_to_tensor
from natriton_preprocess.text import TextLayout
from natriton_router.logic import model_info_from_triton

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
CONFIGS = sorted(REPOSITORY.glob("*/config.pbtxt"))
KNOWN_TASKS = {"image_classification", "object_detection", "text_embedding", "raw"}
KNOWN_PARAMETERS = {
    "natriton.task",
    "natriton.resize_shorter",
    "natriton.resize_mode",
    "natriton.color",
    "natriton.labels",
    "natriton.class_names",
    "natriton.score_threshold",
    "natriton.nms_iou",
    "natriton.tokenizer",
    "natriton.max_tokens",
    "natriton.cache_ttl_s",
}


def triton_json_config(path: Path) -> dict[str, Any]:
    """What Triton's model-config API returns as JSON for this config.pbtxt."""
    config = text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def model_info(path: Path) -> ModelInfo:
    versions = sorted(p.name for p in path.parent.iterdir() if p.is_dir() and p.name.isdigit())
    return model_info_from_triton(triton_json_config(path), versions)


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skdata.coffee()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_repository_has_models() -> None:
    assert [p.parent.name for p in CONFIGS] == sorted(p.parent.name for p in CONFIGS)
    assert "mobilenet_v2" in [p.parent.name for p in CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_every_config_is_servable(path: Path) -> None:
    config = triton_json_config(path)
    assert config["name"] == path.parent.name, "Triton requires the config name to match the directory"
    info = model_info(path)
    assert info.versions, "no numeric version directory"
    assert info.inputs and info.outputs
    assert info.task in KNOWN_TASKS
    mesh_keys = {key for key in info.parameters if key.startswith("natriton.")}
    assert mesh_keys <= KNOWN_PARAMETERS, f"unknown (misspelt?) mesh parameters {mesh_keys - KNOWN_PARAMETERS}"
    if "natriton.labels" in info.parameters:
        load_labels(info.parameters["natriton.labels"])
    if "natriton.resize_shorter" in info.parameters:
        assert int(info.parameters["natriton.resize_shorter"]) > 0
    if "natriton.color" in info.parameters:
        assert info.parameters["natriton.color"].upper() in {"RGB", "BGR"}
    if info.task in ("image_classification", "object_detection"):
        ImageLayout.from_model(info)
    if info.task == "text_embedding":
        TextLayout.from_model(info)
    # the catalog entry the router publishes survives the wire
    codec: Codec[ModelInfo] = Codec(ModelInfo)
    assert codec.decode(codec.encode(info)) == info


def test_mobilenet_catalog_entry() -> None:
    info = model_info(REPOSITORY / "mobilenet_v2" / "config.pbtxt")
    assert info.name == "mobilenet_v2"
    assert info.versions == ("1",)
    assert info.task == "image_classification"
    assert info.parameters["natriton.labels"] == "imagenet1k"
    assert len(load_labels(info.parameters["natriton.labels"])) == info.outputs[0].shape[-1] == 1000
    assert [(s.name, s.datatype, s.shape) for s in info.inputs] == [("IMAGE", "UINT8", (224, 224, 3))]
    assert [(s.name, s.datatype, s.shape) for s in info.outputs] == [("LOGITS", "FP32", (1000,))]


def test_mobilenet_batches() -> None:
    config = triton_json_config(REPOSITORY / "mobilenet_v2" / "config.pbtxt")
    assert config["max_batch_size"] > 1
    assert "dynamic_batching" in config
    assert int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0)) == 0
    assert model_info(REPOSITORY / "mobilenet_v2" / "config.pbtxt").max_batch_size == config["max_batch_size"]


def test_mobilenet_takes_preprocessed_photos(photo_jpeg: bytes) -> None:
    info = model_info(REPOSITORY / "mobilenet_v2" / "config.pbtxt")
    layout = ImageLayout.from_model(info)
    assert (layout.height, layout.width, layout.channels_last, layout.color) == (224, 224, True, "RGB")
    assert layout.resize_shorter == int(info.parameters["natriton.resize_shorter"]) == 256
    tensor = image_to_tensor(photo_jpeg, layout, DecodeLimits(max_pixels=24_000_000, min_side=8))
    check_against_specs([tensor], info.inputs, info.name)
    assert to_array(tensor).dtype == np.uint8


def test_mobilenet_output_becomes_a_classification() -> None:
    info = model_info(REPOSITORY / "mobilenet_v2" / "config.pbtxt")
    spec = info.outputs[0]
    logits = np.zeros((1, *spec.shape), dtype=np.float32)
    logits[0, 967] = 12.0
    result = to_result(info, (to_tensor(spec.name, logits),), _job(5))
    assert result.classes[0].label == "espresso"  # type: ignore[union-attr]


def _job(top_k: int) -> Job:
    return Job(model="m", version="1", task="image_classification", top_k=top_k)
