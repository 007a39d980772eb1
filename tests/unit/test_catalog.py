"""The model catalog and route table as fixed, in-memory views (no NATS)."""

from __future__ import annotations

import pytest

from natriton.catalog import ModelCatalog, RouteTable
from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, RoutePolicy, TensorSpec


def _info(name: str, versions: tuple[str, ...]) -> ModelInfo:
    return ModelInfo(
        name=name,
        versions=versions,
        task="raw",
        max_batch_size=0,
        inputs=(TensorSpec(name="X", datatype="FP32", shape=(-1,)),),
        outputs=(TensorSpec(name="Y", datatype="FP32", shape=(-1,)),),
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
