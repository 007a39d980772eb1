"""The mesh_vs_ensemble scenario (loadtests/ensemble): its scenario file, the ensemble's model configs, what its
python models compute (against the mesh's own preprocess and postprocess), its comparison, summary keys, targets,
section and plot. No sockets, no Triton: the python-backend models run against a stand-in of
``triton_python_backend_utils``."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtests.ensemble import logic
from loadtests.ensemble import report as ensemble_report
from loadtests.ensemble.backend import PostprocessModel, PreprocessModel
from loadtests.ensemble.repository import ENSEMBLE, MODELS, STEPS, combined_repository, model_dirs, read_config
from loadtests.ensemble.runner import comparison, mean_cpu, stub_model
from loadtests.harness import report
from loadtests.harness.scenario import ScenarioError, load_scenarios, parse_scenario
from natriton.profiles import ColorOrder, ImageSpec, ResizeMode

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
REPO_MODELS = Path(__file__).resolve().parents[2] / "model_repository"
META = {"date": "2026-12-01T00:00:00+00:00", "command": "python -m loadtests.bench", "machine": {"cpu_count": 2}}
MESH_SPEC = ImageSpec(
    input="IMAGE",
    datatype="UINT8",
    height=224,
    width=224,
    channels_last=True,
    color=ColorOrder.RGB,
    resize=ResizeMode.SHORTER_SIDE_CROP,
    resize_shorter=256,
)


# ---------------------------------------------------------------------------------------------- scenario file
def test_the_scenario_file_parses_and_scales() -> None:
    (sc,) = load_scenarios(SCENARIOS, only=["mesh_vs_ensemble"])
    assert sc.kind == "mesh_vs_ensemble" and sc.model == "mobilenet_v2"
    assert sc.concurrencies == (1, 4, 16) and sc.floor_threads == (1, 2)
    assert sc.payload.image == "coffee.jpg" and not sc.payload.use_cache and sc.payload.top_k == 5
    assert 50 < sc.planned_seconds() < 100  # the issue's ~90 s
    quick = sc.scaled(0.3)
    assert quick.duration_s == pytest.approx(sc.duration_s * 0.3) and quick.floor_s == pytest.approx(sc.floor_s * 0.3)
    assert quick.warmup_s == pytest.approx(sc.warmup_s * 0.3)


def test_the_scenario_needs_an_image_and_refuses_other_keys() -> None:
    raw: dict[str, Any] = {"kind": "mesh_vs_ensemble", "model": "m", "concurrencies": [1], "duration_s": 2}
    with pytest.raises(ScenarioError, match=r"needs payload\.image"):
        parse_scenario(raw, "x.toml", "x")
    raw["payload"] = {"image": "coffee.jpg"}
    assert parse_scenario(raw, "x.toml", "x").floor_threads == ()
    with pytest.raises(ScenarioError, match="unknown keys"):
        parse_scenario({**raw, "payload_bytes": [1]}, "x.toml", "x")
    with pytest.raises(ScenarioError, match="floor_threads"):
        parse_scenario({**raw, "floor_threads": [0]}, "x.toml", "x")


# ---------------------------------------------------------------------------------------------- the model configs
def test_the_ensemble_chains_its_steps_through_the_mesh_model() -> None:
    configs = {d.name: read_config(d) for d in model_dirs(MODELS)}
    assert set(configs) == {ENSEMBLE, *STEPS}
    ens = configs[ENSEMBLE]
    assert ens["platform"] == "ensemble"
    steps = ens["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["ensemble_preprocess", "mobilenet_v2", "ensemble_postprocess"]
    mobilenet = read_config(REPO_MODELS / "mobilenet_v2")
    configs["mobilenet_v2"] = mobilenet
    available = {i["name"] for i in ens["input"]}
    for step in steps:  # every input is an ensemble input or an earlier step's output; names exist in the step
        model = configs[step["model_name"]]
        assert set(step["input_map"]) == {i["name"] for i in model["input"]}
        assert set(step["input_map"].values()) <= available
        assert set(step["output_map"]) <= {o["name"] for o in model["output"]}
        available |= set(step["output_map"].values())
    assert {o["name"] for o in ens["output"]} <= available
    pre, post = configs["ensemble_preprocess"], configs["ensemble_postprocess"]
    assert pre["output"][0]["dims"] == mobilenet["input"][0]["dims"]  # IMAGE as mobilenet_v2 takes it
    assert pre["output"][0]["data_type"] == mobilenet["input"][0]["data_type"]
    assert post["input"][0]["dims"] == mobilenet["output"][0]["dims"]
    assert sum(g["count"] for g in pre["instance_group"]) == 2
    for name in STEPS:  # the python file the config names is there
        assert (MODELS / name / "1" / configs[name]["default_model_filename"]).is_file()
    assert int(ens["max_batch_size"]) <= min(int(c["max_batch_size"]) for c in configs.values())


def test_the_postprocess_labels_are_the_mesh_model_labels() -> None:
    labels = MODELS / "ensemble_postprocess" / "labels.txt"
    assert labels.read_bytes() == (REPO_MODELS / "mobilenet_v2" / "labels.txt").read_bytes()
    assert logic.read_labels(labels)[967] == "espresso"


def test_preprocess_makes_the_layout_the_mesh_makes_for_mobilenet_v2() -> None:
    assert logic.image_spec_of_config(read_config(MODELS / "ensemble_preprocess")) == MESH_SPEC
    mobilenet = read_config(REPO_MODELS / "mobilenet_v2")  # what the floor derives from the served config
    (image,) = mobilenet["input"]
    spec = logic.image_spec("IMAGE", "UINT8", image["dims"], logic.config_parameters(mobilenet), "mobilenet_v2")
    assert spec == MESH_SPEC


# ---------------------------------------------------------------------------------------------- what they compute
@pytest.fixture(scope="module")
def jpeg() -> bytes:
    from natriton_dev.images import sample_photos

    photo: bytes = sample_photos()["coffee.jpg"]
    return photo


def test_preprocess_batch_is_prepare_image_per_item(jpeg: bytes) -> None:
    from natriton.tensors import to_array
    from natriton_preprocess.logic import prepare_image

    limits = logic.default_limits()
    batch = logic.preprocess_batch(np.array([[jpeg], [jpeg]], dtype=np.object_), MESH_SPEC, limits)
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.uint8
    expected = to_array(prepare_image(jpeg, MESH_SPEC, limits)[0])
    assert np.array_equal(batch[0:1], expected) and np.array_equal(batch[1:2], expected)
    assert logic.as_bytes("abc") == b"abc" and logic.as_bytes(b"x") == b"x"
    with pytest.raises(TypeError):
        logic.as_bytes(3)


def test_top_k_arrays_are_the_mesh_postprocess_top_k_per_row() -> None:
    from natriton.answers import top_k

    labels = tuple(f"class {i}" for i in range(10))
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 10)).astype(np.float32)
    names, scores = logic.top_k_arrays(logits, 5, labels)
    assert names.shape == (3, 5) and scores.shape == (3, 5) and scores.dtype == np.float32
    for row, row_names, row_scores in zip(logits, names, scores, strict=True):
        expected = top_k(row, 5, labels).classes
        assert [n.decode() for n in row_names] == [c.label for c in expected]
        assert row_scores == pytest.approx([c.score for c in expected], rel=1e-6)
        assert list(row_scores) == sorted(row_scores, reverse=True)
    few_names, few_scores = logic.top_k_arrays(logits[:1, :3], 5, labels[:3])  # fewer classes than k: padded
    assert list(few_names[0][3:]) == [b"", b""] and list(few_scores[0][3:]) == [0.0, 0.0]
    assert few_scores[0][:3].sum() == pytest.approx(1.0, abs=1e-5)


class _Tensor:
    def __init__(self, name: str, array: np.ndarray[Any, Any]) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray[Any, Any]:
        return self.array


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: Any = None) -> None:
        self.tensors = {t.name: t.array for t in output_tensors}
        self.error = error


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in for the stub's ``triton_python_backend_utils`` (requests are dicts of name → array)."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor  # type: ignore[attr-defined]
    module.InferenceResponse = _Response  # type: ignore[attr-defined]
    module.TritonError = str  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: _Tensor(name, request[name])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def _args(model: str) -> dict[str, str]:
    return {"model_config": json.dumps(read_config(MODELS / model)), "model_repository": str(MODELS / model)}


def test_the_python_models_answer_each_request_and_fail_only_the_bad_one(pb_utils: Any, jpeg: bytes) -> None:
    pre = PreprocessModel()
    pre.initialize(_args("ensemble_preprocess"))
    good = {"JPEG": np.array([[jpeg]], dtype=np.object_)}
    bad = {"JPEG": np.array([[b"not an image"]], dtype=np.object_)}
    first, broken, second = pre.execute([good, bad, good])
    assert first.error is None and first.tensors["IMAGE"].shape == (1, 224, 224, 3)
    assert broken.error and "not a decodable image" in broken.error and not broken.tensors
    assert np.array_equal(first.tensors["IMAGE"], second.tensors["IMAGE"])

    post = PostprocessModel()
    post.initialize(_args("ensemble_postprocess"))
    assert post.k == 5 and len(post.labels) == 1000
    logits = np.zeros((2, 1000), dtype=np.float32)
    logits[0, 967], logits[1, 504] = 10.0, 10.0  # espresso, coffee mug
    (answer,) = post.execute([{"LOGITS": logits}])
    assert answer.tensors["LABELS"].shape == (2, 5) and answer.tensors["SCORES"].shape == (2, 5)
    assert answer.tensors["LABELS"][0, 0] == b"espresso" and answer.tensors["LABELS"][1, 0] == b"coffee mug"
    (failed,) = post.execute([{"LOGITS": np.zeros((1, 3, 0), dtype=np.float32)}])
    assert failed.error


# ---------------------------------------------------------------------------------------------- runner helpers
def test_stub_model_reads_the_model_from_the_stub_command_line() -> None:
    stub = b"/tmp/x/backends/python/triton_python_backend_stub"
    assert stub_model([stub, b"/r/ensemble_preprocess/1/ensemble_preprocess.py", b"shm"]) == "ensemble_preprocess"
    assert stub_model([stub, b"/work/main/model_repository/mobilenet_v2/1/model.py"]) == "mobilenet_v2"
    assert stub_model([b"/usr/bin/python3", b"/r/a/1/model.py"]) is None and stub_model([]) is None
    assert mean_cpu([{"a": 10.0, "b": 2.0}, {"a": 20.0}]) == {"a": 15.0, "b": 1.0} and mean_cpu([]) == {}


def test_combined_repository_links_every_model_once(tmp_path: Path) -> None:
    repository = combined_repository(tmp_path, [REPO_MODELS, MODELS])
    names = {p.name for p in repository.iterdir()}
    assert {"mobilenet_v2", ENSEMBLE, *STEPS} <= names
    assert (repository / "mobilenet_v2").resolve() == (REPO_MODELS / "mobilenet_v2").resolve()
    assert combined_repository(tmp_path, [MODELS]) == repository  # the same links again: fine
    other = tmp_path / "other"
    (other / "mobilenet_v2").mkdir(parents=True)
    (other / "mobilenet_v2" / "config.pbtxt").write_text("")
    with pytest.raises(ValueError, match="more than one repository"):
        combined_repository(tmp_path, [other])


def cell(system: str, concurrency: int, rps: float, p99: float, **extra: Any) -> dict[str, Any]:
    return {"system": system, "concurrency": concurrency, "ok_per_s": rps, "p50_ms": p99 / 2, "p99_ms": p99,
            "errors": {}, **extra}  # fmt: skip


MESH_CPU = {"ingest": 900.0, "preprocess": 4000.0, "router": 800.0, "postprocess": 200.0, "tritonserver": 300.0,
            "stub mobilenet_v2": 9000.0, "triton": 9300.0, "nats-server": 900.0, "loadgen": 200.0}  # fmt: skip
ENS_CPU = {"tritonserver": 900.0, "stub ensemble_preprocess": 4200.0, "stub mobilenet_v2": 9000.0,
           "stub ensemble_postprocess": 400.0, "triton": 14500.0, "loadgen": 600.0, "ingest": 10.0}  # fmt: skip
CELLS = [
    cell("mesh", 1, 50.0, 30.0, cpu_us_per_request=MESH_CPU),
    cell("ensemble", 1, 45.0, 28.0, cpu_us_per_request=ENS_CPU),
    cell("mesh", 4, 100.0, 60.0, cpu_us_per_request=MESH_CPU),
    cell("ensemble", 4, 100.0, 70.0, cpu_us_per_request=ENS_CPU),
    cell("mesh", 16, 99.0, 200.0, cpu_us_per_request=MESH_CPU, triton_batch_size=5.3),
    cell("ensemble", 16, 110.0, 250.0, cpu_us_per_request=ENS_CPU),
]
FLOOR = [
    {"workers": 1, "ok_per_s": 80.0, "p50_ms": 12.0, "p99_ms": 15.0, "cpu_us_per_request": 12000.0, "cpu_cores": 1},
    {"workers": 2, "ok_per_s": 120.0, "p50_ms": 16.0, "p99_ms": 22.0, "cpu_us_per_request": 16000.0, "cpu_cores": 2},
]


def test_comparison_ratios_per_concurrency_and_against_the_floor() -> None:
    cmp = comparison(CELLS, FLOOR)
    assert cmp["by_concurrency"]["1"]["ratio"] == pytest.approx(50 / 45, abs=1e-4)
    assert cmp["by_concurrency"]["4"]["ratio"] == 1.0
    assert cmp["by_concurrency"]["16"]["p99_ratio"] == pytest.approx(0.8)
    assert cmp["mesh_top"] == {"concurrency": 16, "ok_per_s": 99.0}
    assert cmp["vs_floor"] == {"1": pytest.approx(99 / 80, abs=1e-4), "2": pytest.approx(0.825)}
    assert cmp["ensemble_best"]["concurrency"] == 16
    assert comparison([CELLS[0]], [])["by_concurrency"] == {}  # no ensemble cell: no ratio


RESULT: dict[str, Any] = {
    "image": "coffee.jpg",
    "image_bytes": 80_000,
    "ensemble": ENSEMBLE,
    "ensemble_steps": ["ensemble_preprocess", "mobilenet_v2", "ensemble_postprocess"],
    "ensemble_preprocess_instances": 2,
    "ensemble_load_s": 2.1,
    "answers": {"mesh": [["espresso", 0.99]], "ensemble": [["espresso", 0.9896]], "floor": [["espresso", 0.9896]]},
    "cells": CELLS,
    "floor": FLOOR,
    "floor_model": {"onnx": "mobilenet_v2/1/model.onnx", "intra_op_threads": 1},
    "comparison": comparison(CELLS, FLOOR),
    "elapsed_s": 80.0,
}


def test_summary_keys_and_targets() -> None:
    keys = ensemble_report.summary_keys(RESULT)
    assert keys["mesh_vs_ensemble_ratio_c1"] == pytest.approx(1.1111)
    assert keys["mesh_vs_ensemble_ratio_c16"] == pytest.approx(0.9)
    assert keys["mesh_vs_ensemble_p99_ratio_c16"] == pytest.approx(0.8)
    assert keys["mesh_vs_floor2_ratio_c16"] == pytest.approx(0.825)
    assert keys["ensemble_rps_c4"] == 100.0 and keys["mesh_jpeg_p99_ms_c16"] == 200.0
    assert keys["floor1_rps"] == 80.0 and keys["floor2_cpu_us_per_request"] == 16000.0
    assert keys["mesh_jpeg_cpu_us_per_request_c16"] == pytest.approx(9300 + 900 + 200 + 900 + 4000 + 800 + 200)
    empty = ensemble_report.summary_keys(None)
    assert empty["mesh_vs_ensemble_ratio_c4"] is None and empty["mesh_vs_floor2_ratio_c16"] is None

    summary = report.build_summary({"mesh_vs_ensemble": RESULT}, META)
    by_key = {t["key"]: t for t in summary["targets"]}
    assert by_key["mesh_vs_ensemble_ratio_c1"]["status"] == "pass"
    assert by_key["mesh_vs_ensemble_ratio_c4"]["status"] == "pass"  # 1.0 is not below 1.0
    assert by_key["mesh_vs_ensemble_ratio_c16"]["status"] == "miss"
    assert by_key["mesh_vs_ensemble_p99_ratio_c16"]["status"] == "pass"
    assert by_key["mesh_vs_floor2_ratio_c16"]["status"] == "miss"
    assert "mesh_vs_ensemble_ratio_c16" not in report.build_summary({}, META)  # absent when it did not run


def test_the_section_and_the_plot(tmp_path: Path) -> None:
    summary = report.build_summary({"mesh_vs_ensemble": RESULT}, META)
    doc = tmp_path / "docs" / "benchmarks.md"
    plot = tmp_path / "loadtests" / "results" / "mesh_vs_ensemble.png"
    plot.parent.mkdir(parents=True)
    assert ensemble_report.plot(RESULT, plot) and plot.stat().st_size > 10_000
    scenarios = {"mesh_vs_ensemble": {"duration_s": 8.0, "slices": 2, "floor_s": 5.0}}
    text = report.markdown(summary, {"mesh_vs_ensemble": RESULT}, scenarios, {"mesh_vs_ensemble": plot}, doc, {})
    assert "## Mesh vs a Triton ensemble (JPEG → top-5, closed loop), and the in-process floor" in text
    assert "| ensemble | 16 | 110.0 |" in text and "| floor, 2 threads | 2 | 120.0 |" in text
    assert "ensemble_preprocess 4,200" in text and "Top answer: mesh espresso 0.990" in text
    assert "](../loadtests/results/mesh_vs_ensemble.png)" in text
    assert "Mesh vs ensemble (JPEG → top-5) at concurrency 16: CPU per request" in text  # why the misses
    assert ensemble_report.cpu_text({"ingest": 10.0}) == "-" and ensemble_report.cpu_text(None) == "-"
    assert not ensemble_report.plot({"cells": []}, plot)
