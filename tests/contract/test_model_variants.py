"""Every model's configuration variants (``<model>/configs/<variant>.pbtxt``) against their source, ``config.pbtxt``.

``config.pbtxt`` is what Triton loads by default (local development, CI: the python backend on CPU); production starts
Triton with ``--model-config-name=gpu`` and then loads ``configs/gpu.pbtxt`` (``gpu_tensorrt`` and ``gpu_python`` are
options). ``model_repository/variants.py`` generates the variants and they are committed, so operators can read
them; this file checks that each one parses as a Triton model config, means the same to the mesh as its source (the
same catalog entry and profile, read the way the router reads it), differs from it only in how the model runs, and is
up to date, like a lockfile.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from copy import deepcopy
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from tests.contract.test_model_repository_contract import (
    CONFIGS,
    REPOSITORY,
    built_profile,
    catalog_entry,
    triton_json_config,
)


def _load(name: str) -> ModuleType:
    """A top-level module of model_repository/, imported by path without writing ``__pycache__`` there (Triton would
    take a stray top-level directory for a model)."""
    spec = importlib.util.spec_from_file_location(f"_natriton_{name}", REPOSITORY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


variants = _load("variants")
export_common = _load("export_common")

MODELS = [p.parent for p in CONFIGS]
CASES = [(m, v) for m in MODELS for v in variants.VARIANTS]
NATIVE = ("gpu", "gpu_tensorrt", "cpu")
"""Variants that serve ONNX models with Triton's onnxruntime backend."""
TENSORRT = [{"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}]


def variant_path(model_dir: Path, variant: str) -> Path:
    return model_dir / "configs" / f"{variant}.pbtxt"


def has_onnx(model_dir: Path) -> bool:
    """A model whose ``1/model.onnx`` its export.py builds."""
    return (model_dir / "export.py").is_file()


def expected_variant(source: dict[str, Any], variant: str, onnx: bool) -> dict[str, Any]:
    """The source config (Triton's JSON) with exactly the differences a variant is allowed to have."""
    config = deepcopy(source)
    if not onnx:  # noop: the python backend on CPU in every variant
        return config
    config["instance_group"] = [{"count": 1, "kind": "KIND_CPU" if variant == "cpu" else "KIND_GPU"}]
    if variant in NATIVE:
        config["backend"] = "onnxruntime"
        config["default_model_filename"] = "model.onnx"
        config["parameters"] = {k: v for k, v in config["parameters"].items() if k != "onnx.intra_op_threads"}
        for tensor in config["input"]:
            tensor.pop("allow_ragged_batch", None)  # the onnxruntime backend would flatten ragged inputs
    if variant == "gpu_tensorrt":
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": TENSORRT}}
    return config


def tensors(config: dict[str, Any], field: str) -> list[tuple[str, str, list[str], str]]:
    return [(t["name"], t["data_type"], t.get("dims", []), t.get("label_filename", "")) for t in config[field]]


def natriton_parameters(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.get("parameters", {}).items() if k.startswith("natriton.")}


# ------------------------------------------------------------------------------------------------
# every variant of every model
# ------------------------------------------------------------------------------------------------
def test_every_model_has_every_variant_and_nothing_else() -> None:
    assert variants.VARIANTS == ("gpu", "gpu_tensorrt", "gpu_python", "cpu")
    for model_dir in MODELS:
        assert sorted(p.name for p in (model_dir / "configs").iterdir()) == sorted(
            f"{v}.pbtxt" for v in variants.VARIANTS
        ), model_dir.name


@pytest.mark.parametrize(("model_dir", "variant"), CASES, ids=[f"{m.name}-{v}" for m, v in CASES])
def test_variant_means_the_same_to_the_mesh(model_dir: Path, variant: str) -> None:
    source_path, path = model_dir / "config.pbtxt", variant_path(model_dir, variant)
    source, config = triton_json_config(source_path), triton_json_config(path)  # parses as Triton's ModelConfig
    assert config["name"] == source["name"] == model_dir.name
    assert config["max_batch_size"] == source["max_batch_size"]
    assert tensors(config, "input") == tensors(source, "input")
    assert tensors(config, "output") == tensors(source, "output")  # label_filename kept
    assert config["dynamic_batching"] == source["dynamic_batching"]
    assert natriton_parameters(config) == natriton_parameters(source), "the mesh's profile comes from these"
    # the same typed profile and catalog entry, read the way the router reads them (files from the model's directory)
    assert built_profile(path, model_dir) == built_profile(source_path)
    (info, files), (source_info, source_files) = catalog_entry(path, model_dir), catalog_entry(source_path)
    assert info.problem == source_info.problem == ""
    assert files == source_files
    only_natriton = {k: v for k, v in source_info.parameters.items() if k.startswith("natriton.")}
    assert msgspec.structs.replace(info, parameters=only_natriton) == msgspec.structs.replace(
        source_info, parameters=only_natriton
    )


@pytest.mark.parametrize(("model_dir", "variant"), CASES, ids=[f"{m.name}-{v}" for m, v in CASES])
def test_variant_differs_from_its_source_only_in_how_the_model_runs(model_dir: Path, variant: str) -> None:
    source = triton_json_config(model_dir / "config.pbtxt")
    config = triton_json_config(variant_path(model_dir, variant))
    assert config == expected_variant(source, variant, has_onnx(model_dir))


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda m: m.name)
def test_gpu_variant_serves_onnx_natively_on_the_gpu(model_dir: Path) -> None:
    config = triton_json_config(variant_path(model_dir, "gpu"))
    if has_onnx(model_dir):
        assert config["backend"] == "onnxruntime"
        assert config["default_model_filename"] == "model.onnx"
        assert config["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
        assert not any(k.startswith("onnx.") for k in config["parameters"]), "python-backend-only parameter"
        assert "optimization" not in config
        # the file the backend loads is the one the model's build step produces
        assert export_common.onnx_path(model_dir / "export.py") == model_dir / "1" / "model.onnx"
    else:  # no ONNX file (noop: numpy in model.py): the python backend on CPU, as config.pbtxt
        assert config["backend"] == "python"
        assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
        assert (model_dir / "1" / "model.py").is_file()


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda m: m.name)
def test_cpu_variant_is_gpu_on_cpu_instances(model_dir: Path) -> None:
    """The NGC image on a host without a GPU (compose `cpu` profile): the same native backend, CPU instances."""
    gpu = triton_json_config(variant_path(model_dir, "gpu"))
    cpu = triton_json_config(variant_path(model_dir, "cpu"))
    assert cpu.pop("instance_group") == [{"count": 1, "kind": "KIND_CPU"}]
    gpu.pop("instance_group")
    assert cpu == gpu


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda m: m.name)
def test_tensorrt_variant_is_gpu_plus_tensorrt_fp16(model_dir: Path) -> None:
    gpu = triton_json_config(variant_path(model_dir, "gpu"))
    trt = triton_json_config(variant_path(model_dir, "gpu_tensorrt"))
    if has_onnx(model_dir):
        optimization = trt.pop("optimization")
        assert optimization == {"execution_accelerators": {"gpu_execution_accelerator": TENSORRT}}
    assert trt == gpu


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda m: m.name)
def test_python_variants_run_onnx_model_py(model_dir: Path) -> None:
    """config.pbtxt and gpu_python serve ONNX models with the generic onnx_model.py (CUDA provider on KIND_GPU)."""
    for path in (model_dir / "config.pbtxt", variant_path(model_dir, "gpu_python")):
        assert triton_json_config(path)["backend"] == "python"
    model_py = model_dir / "1" / "model.py"
    assert (model_py.resolve() == REPOSITORY / "onnx_model.py") == has_onnx(model_dir)


# ------------------------------------------------------------------------------------------------
# generated files are up to date (a lockfile check), and the check catches a stale one
# ------------------------------------------------------------------------------------------------
def test_generated_variants_are_up_to_date(tmp_path: Path) -> None:
    assert variants.stale(REPOSITORY) == [], "run `python model_repository/variants.py` (or build.py)"
    written = variants.write(REPOSITORY, out=tmp_path)
    assert len(written) == len(MODELS) * len(variants.VARIANTS)
    for path in written:
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (REPOSITORY / rel).read_bytes(), f"{rel} differs from a fresh generation"


def _copy_repository(tmp_path: Path) -> Path:
    """The files the generator reads and writes (config.pbtxt, export.py, configs/) in a scratch repository."""
    repo = tmp_path / "model_repository"
    for model_dir in MODELS:
        target = repo / model_dir.name
        shutil.copytree(model_dir / "configs", target / "configs")
        shutil.copy2(model_dir / "config.pbtxt", target / "config.pbtxt")
        if has_onnx(model_dir):
            shutil.copy2(model_dir / "export.py", target / "export.py")
    return repo


def test_a_parameter_changed_without_regenerating_is_detected(tmp_path: Path) -> None:
    repo = _copy_repository(tmp_path)
    assert variants.stale(repo) == []
    config = repo / "mobilenet_v2" / "config.pbtxt"
    text = config.read_text(encoding="utf-8")
    assert text.count('string_value: "256"') == 1
    config.write_text(text.replace('string_value: "256"', 'string_value: "288"'), encoding="utf-8")
    problems = variants.stale(repo)
    assert sorted(problems) == sorted(
        f"{os.path.join('mobilenet_v2', 'configs', v)}.pbtxt: stale (differs from what config.pbtxt generates)"
        for v in variants.VARIANTS
    )
    # regenerating fixes it, and the variants then carry the new value
    variants.write(repo)
    assert variants.stale(repo) == []
    params = triton_json_config(variant_path(repo / "mobilenet_v2", "gpu"))["parameters"]
    assert params["natriton.resize_shorter"] == {"string_value": "288"}


def test_a_hand_edited_or_unknown_variant_is_detected(tmp_path: Path) -> None:
    repo = _copy_repository(tmp_path)
    gpu = variant_path(repo / "face_detector", "gpu")
    gpu.write_text(gpu.read_text(encoding="utf-8").replace("KIND_GPU", "KIND_CPU"), encoding="utf-8")
    (repo / "noop" / "configs" / "h100.pbtxt").write_text('name: "noop"\n', encoding="utf-8")
    (repo / "minilm_l6_v2" / "configs" / "gpu_python.pbtxt").unlink()
    assert sorted(variants.stale(repo)) == [
        "face_detector/configs/gpu.pbtxt: stale (differs from what config.pbtxt generates)",
        "minilm_l6_v2/configs/gpu_python.pbtxt: missing",
        "noop/configs/h100.pbtxt: not generated by variants.py (remove it)",
    ]


def test_a_config_the_generator_cannot_transform_fails_loudly(tmp_path: Path) -> None:
    repo = _copy_repository(tmp_path)
    config = repo / "mobilenet_v2" / "config.pbtxt"
    config.write_text(config.read_text(encoding="utf-8").replace('backend: "python"', 'platform: "onnxruntime_onnx"'))
    with pytest.raises(variants.VariantError, match="backend"):
        variants.generated(repo)
