"""The model catalog, route table and model files as fixed, in-memory views (no NATS)."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from natriton.catalog import ModelCatalog, ModelFiles, RouteTable, decode_value
from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ModelInfo, RoutePolicy, TensorSpec
from natriton.profiles import ClassifierProfile


def _info(name: str, versions: tuple[str, ...], problem: str = "") -> ModelInfo:
    return ModelInfo(
        name=name,
        versions=versions,
        task="invalid" if problem else "raw",
        max_batch_size=0,
        inputs=(TensorSpec(name="X", datatype="FP32", shape=(-1,)),),
        outputs=(TensorSpec(name="Y", datatype="FP32", shape=(-1,)),),
        problem=problem,
    )


MOBILENET = _info("mobilenet_v2", ("1", "2", "10"))
RESNET = _info("resnet50", ("3",))
CATALOG = ModelCatalog.from_models([RESNET, MOBILENET])


def _not_found(name: str, version: str = "", catalog: ModelCatalog = CATALOG) -> MeshError:
    with pytest.raises(MeshError) as info:
        catalog.require(name, version)
    assert info.value.code is ErrorCode.NOT_FOUND
    return info.value


def test_require_without_version_is_the_latest() -> None:
    assert CATALOG.require("mobilenet_v2") == (MOBILENET, "10")  # numeric order: 10 > 2
    assert CATALOG.require("resnet50", "") == (RESNET, "3")


def test_require_a_named_version() -> None:
    assert CATALOG.require("mobilenet_v2", "2") == (MOBILENET, "2")
    assert CATALOG.require("mobilenet_v2", "1") == (MOBILENET, "1")


def test_unknown_model_lists_the_known_ones() -> None:
    error = _not_found("vgg16")
    assert "'vgg16'" in error.message
    assert "known: mobilenet_v2, resnet50" in error.message  # sorted


def test_unknown_model_in_an_empty_catalog() -> None:
    assert "known: none" in _not_found("vgg16", catalog=ModelCatalog.from_models([])).message


@pytest.mark.parametrize("version", ["3", "01", "latest", "10 "])
def test_unknown_version_is_not_found(version: str) -> None:
    error = _not_found("mobilenet_v2", version)
    assert repr(version) in error.message
    assert "'1', '2', '10'" in error.message  # the ready versions


def test_model_without_ready_versions_is_not_found() -> None:
    catalog = ModelCatalog.from_models([_info("warming_up", ())])
    _not_found("warming_up", catalog=catalog)
    _not_found("warming_up", "1", catalog=catalog)


def test_names_get_and_revision() -> None:
    assert CATALOG.names() == ["mobilenet_v2", "resnet50"]
    assert CATALOG.get("resnet50") == RESNET
    assert CATALOG.get("vgg16") is None
    assert CATALOG.revision("mobilenet_v2") == 0  # loaded by hand, never written to KV
    assert CATALOG.revision("never-heard-of-it") == 0


def test_load_replaces_the_contents() -> None:
    catalog = ModelCatalog.from_models([MOBILENET])
    catalog.load({"resnet50": RESNET})
    assert catalog.names() == ["resnet50"]
    _not_found("mobilenet_v2", catalog=catalog)


def test_route_table_view() -> None:
    table = RouteTable()
    policy = RoutePolicy(model="mobilenet_v2", weights={"1": 90.0, "2": 10.0})
    table.load({"mobilenet_v2": policy})
    assert table.get("mobilenet_v2") == policy
    assert table.get("resnet50") is None
    assert table.revision("resnet50") == 0


# ------------------------------------------------------------------------------------------------
# models whose configuration the mesh cannot serve
# ------------------------------------------------------------------------------------------------
PROBLEM = "model 'broken': natriton.kind 'segmenter' is not one of classifier, detector, embedder, raw"
BROKEN = _info("broken", ("1",), problem=PROBLEM)
WITH_BROKEN = ModelCatalog.from_models([RESNET, MOBILENET, BROKEN])


@pytest.mark.parametrize("version", ["", "1", "2"])
def test_model_with_a_problem_is_not_found_with_the_reason(version: str) -> None:
    error = _not_found("broken", version, catalog=WITH_BROKEN)
    assert "'broken' cannot be served" in error.message
    assert PROBLEM in error.message


def test_models_with_a_problem_are_not_listed_as_known() -> None:
    error = _not_found("vgg16", catalog=WITH_BROKEN)
    assert "known: mobilenet_v2, resnet50)" in error.message
    assert "broken" not in error.message
    only_broken = ModelCatalog.from_models([BROKEN])
    assert "known: none" in _not_found("vgg16", catalog=only_broken).message


def test_model_with_a_problem_is_still_in_the_catalog() -> None:
    assert WITH_BROKEN.names() == ["broken", "mobilenet_v2", "resnet50"]
    assert WITH_BROKEN.get("broken") == BROKEN
    assert WITH_BROKEN.require("mobilenet_v2") == (MOBILENET, "10")  # the others are unaffected


def test_long_unknown_names_are_shortened_in_the_message() -> None:
    error = _not_found("x" * 500)
    assert "x" * 64 + "…" in error.message
    assert "x" * 65 not in error.message


# ------------------------------------------------------------------------------------------------
# catalog values: JSON (what the router writes), msgpack (what versions before 0.2 wrote)
# ------------------------------------------------------------------------------------------------
def test_decode_value_reads_json_and_msgpack() -> None:
    codec: Codec[ModelInfo] = Codec(ModelInfo)
    info = ModelInfo(
        name="mobilenet_v2",
        versions=("1",),
        task="classifier",
        max_batch_size=32,
        inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
        outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
        profile=ClassifierProfile(output="LOGITS", labels=("a", "b")),
        cache_ttl_s=30,
    )
    assert decode_value(codec, codec.encode(info, json=True)) == info
    assert decode_value(codec, codec.encode(info)) == info


def test_old_catalog_values_without_a_profile_decode_as_raw() -> None:
    old = {
        "type": "model_info",
        "name": "m",
        "versions": ["1"],
        "task": "image_classification",
        "max_batch_size": 8,
        "inputs": [],
        "outputs": [],
    }
    codec: Codec[ModelInfo] = Codec(ModelInfo)
    info = decode_value(codec, msgspec.json.encode(old))
    assert info.profile.__struct_config__.tag == "raw"
    assert (info.cache_ttl_s, info.problem) == (None, "")


# ------------------------------------------------------------------------------------------------
# model files (tokenizers), by content digest
# ------------------------------------------------------------------------------------------------
async def test_model_files_added_by_hand_are_served_by_digest() -> None:
    files = ModelFiles()
    data = b'{"version": "1.0"}'
    digest = hashlib.sha256(data).hexdigest()
    files.add(digest, data)
    assert await files.get("minilm/tokenizer.json", digest) == data


async def test_unknown_model_file_without_nats_is_unavailable() -> None:
    with pytest.raises(MeshError) as info:
        await ModelFiles().get("minilm/tokenizer.json", "0" * 64)
    assert info.value.code is ErrorCode.UNAVAILABLE
    assert "minilm/tokenizer.json" in info.value.message
