"""Scenario files: the shipped ones parse, and mistakes are refused with the file and field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtests.harness.runners import ADMISSION_HEADROOM, admission_limit
from loadtests.harness.scenario import ScenarioError, load_scenarios, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
TENSOR = {"tensor": {"name": "IMAGE", "datatype": "uint8", "shape": [1, 224, 224, 3]}}


def open_loop(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "kind": "open_loop",
        "model": "mobilenet_v2",
        "payload": dict(TENSOR),
        "phases": [{"rate": 10, "duration_s": 2}],
    }
    raw.update(extra)
    return raw


def test_shipped_scenarios_parse_in_run_order() -> None:
    scenarios = load_scenarios(SCENARIOS)
    names = [s.name for s in scenarios]
    assert names[:2] == ["mesh_vs_triton", "noop_vs_raw_nats"]
    for required in ("ramp", "steady", "spike", "cache_hit", "cache_hit_ratio", "overload"):
        assert required in names
    by_name = {s.name: s for s in scenarios}
    assert by_name["cache_hit"].phases[0].rate == 1000
    assert by_name["cache_hit"].hit_ratio == 1.0
    assert by_name["overload"].phases[0].rate_factor == 2.0
    assert by_name["overload"].ingest_max_concurrency == "auto"
    ramp = [p.rate_factor for p in by_name["ramp"].phases]
    assert ramp == sorted(ramp) and len(ramp) >= 4
    assert by_name["noop_vs_raw_nats"].payload_bytes == (4096, 153600)
    assert all(s.description for s in scenarios)


def test_shipped_suite_fits_the_ten_minute_budget() -> None:
    from loadtests.bench import plan

    assert plan(load_scenarios(SCENARIOS)) < 540


def test_only_selects_and_unknown_names_fail() -> None:
    assert [s.name for s in load_scenarios(SCENARIOS, only=["ramp", "cache_hit"])] == ["ramp", "cache_hit"]
    with pytest.raises(ScenarioError, match="no scenario named"):
        load_scenarios(SCENARIOS, only=["nope"])


def test_open_loop_fields() -> None:
    sc = parse_scenario(open_loop(deadline_ms=2000, warmup_s=1), "x.toml", "x")
    assert sc.name == "x"
    assert sc.payload.tensor is not None and sc.payload.tensor.datatype == "UINT8"
    assert sc.payload.tensor.shape == (1, 224, 224, 3)
    assert sc.phases[0].resolve(None) == 10
    assert sc.planned_seconds() == 3
    assert not sc.uses_capacity


def test_rate_factor_needs_the_capacity() -> None:
    sc = parse_scenario(open_loop(phases=[{"rate_factor": 1.5, "duration_s": 2}]), "x.toml", "x")
    assert sc.uses_capacity
    assert sc.phases[0].resolve(80.0) == 120.0
    with pytest.raises(ScenarioError):
        sc.phases[0].resolve(None)


def test_scaled_multiplies_durations_only() -> None:
    sc = parse_scenario(open_loop(warmup_s=2), "x.toml", "x").scaled(0.5)
    assert sc.phases[0].duration_s == 1
    assert sc.phases[0].rate == 10
    assert sc.warmup_s == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "soak"}, "kind must be one of"),
        ({"colour": "red"}, "unknown keys"),
        ({"model": ""}, "model is required"),
        ({"phases": []}, "at least one"),
        ({"phases": [{"rate": 1, "rate_factor": 1, "duration_s": 1}]}, "exactly one of rate"),
        ({"phases": [{"rate": 1}]}, "duration_s is required"),
        ({"phases": [{"rate": -3, "duration_s": 1}]}, "rate must be > 0"),
        ({"deadline_ms": 0}, "deadline_ms"),
        ({"hit_ratio": 0.5}, "hit_ratio needs an image"),
        ({"payload": {"image": "a.jpg", "use_cache": True}, "hit_ratio": 1.5}, "within"),
        ({"payload": {"image": "a.jpg", "tensor": TENSOR["tensor"]}}, "not both"),
        ({"payload": {"tensor": {"name": "X", "datatype": "UINT8", "shape": [0]}}}, "positive integers"),
        ({"payload": {}}, "needs payload.image or payload.tensor"),
        ({"ingest_max_concurrency": 0}, "ingest_max_concurrency"),
        ({"ingest_max_concurrency": "lots"}, "ingest_max_concurrency"),
        ({"name": "has space"}, "name must be"),
    ],
)
def test_mistakes_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as info:
        parse_scenario(open_loop(**change), "bad.toml", "bad")
    assert "bad.toml" in str(info.value)


def test_closed_loop_kinds() -> None:
    mvt = parse_scenario(
        {"kind": "mesh_vs_triton", "model": "m", "payload": TENSOR, "concurrencies": [1, 8], "duration_s": 4},
        "m.toml",
        "m",
    )
    assert mvt.concurrencies == (1, 8)
    assert mvt.slices == 1
    with pytest.raises(ScenarioError, match=r"needs payload\.tensor"):
        parse_scenario({"kind": "mesh_vs_triton", "model": "m", "concurrencies": [1], "duration_s": 4}, "m", "m")
    noop = parse_scenario(
        {"kind": "noop_vs_raw_nats", "model": "noop", "payload_bytes": [4096], "concurrencies": [16], "duration_s": 2},
        "n.toml",
        "n",
    )
    assert noop.payload_bytes == (4096,)
    with pytest.raises(ScenarioError, match="payload_bytes"):
        parse_scenario({"kind": "noop_vs_raw_nats", "model": "noop", "concurrencies": [1], "duration_s": 2}, "n", "n")
    with pytest.raises(ScenarioError, match="integers >= 1"):
        parse_scenario({"kind": "noop_vs_raw_nats", "model": "n", "concurrencies": [0], "duration_s": 2}, "n", "n")


def test_admission_limit() -> None:
    assert admission_limit(None, 80.0, 2000) is None
    assert admission_limit(32, None, 2000) == 32
    assert admission_limit("auto", 80.0, 2000) == int(80 * 2 * ADMISSION_HEADROOM)
    assert admission_limit("auto", 0.3, 100) == 1
    with pytest.raises(ScenarioError):
        admission_limit("auto", None, 2000)


def test_triton_cpus_is_a_list_of_cpu_numbers() -> None:
    sc = parse_scenario(open_loop(triton_cpus=[1]), "x.toml", "x")
    assert sc.triton_cpus == (1,)
    assert parse_scenario(open_loop(), "x.toml", "x").triton_cpus == ()
    for bad in ([-1], ["1"], [True], 1):
        with pytest.raises(ScenarioError, match="triton_cpus"):
            parse_scenario(open_loop(triton_cpus=bad), "x.toml", "x")
