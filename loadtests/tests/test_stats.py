"""Summary math: ratios, best cells, targets and their shortfall, perf_analyzer CSV."""

from __future__ import annotations

import math

import pytest

from loadtests.harness.stats import (
    Target,
    best,
    fmt,
    get_path,
    interleaved_order,
    parse_perf_analyzer_csv,
    ratio,
    recovery_s,
)


def test_ratio() -> None:
    assert ratio(90, 100) == 0.9
    assert ratio(1, 3) == 0.3333
    assert ratio(None, 1) is None
    assert ratio(1, 0) is None
    assert ratio(math.nan, 1) is None


def test_best_ignores_missing_values() -> None:
    cells = [{"c": 1, "v": 10.0}, {"c": 4, "v": None}, {"c": 16, "v": 30.0}, {"c": 32, "v": math.nan}]
    assert best(cells, lambda c: c["v"]) == {"c": 16, "v": 30.0}
    assert best([], lambda c: 1.0) is None


def test_target_at_least() -> None:
    passed = Target("k", "ratio", ">=", 0.9, 0.93, "x")
    assert passed.status == "pass"
    assert passed.shortfall() == ""
    missed = Target("k", "ratio", ">=", 0.5, 0.3, "x")
    assert missed.status == "miss"
    assert missed.shortfall() == "0.20x below the target (40 %)"


def test_target_at_most() -> None:
    missed = Target("k", "latency", "<=", 5.0, 8.0, "ms")
    assert missed.status == "miss"
    assert missed.shortfall() == "3.00 ms above the target (60 %)"
    assert Target("k", "latency", "<=", 5.0, 5.0, "ms").status == "pass"
    assert Target("k", "latency", "<=", 5.0, None, "ms").status == "not measured"
    d = missed.as_dict()
    assert d["target"] == "<= 5.00 ms"
    assert d["status"] == "miss"


def test_fmt() -> None:
    assert fmt(0.934, "x") == "0.93x"
    assert fmt(1.234, "ms") == "1.23 ms"
    assert fmt(1234.5, "ms") == "1,234 ms"
    assert fmt(None) == "-"
    assert fmt(math.nan, "ms") == "-"


def test_get_path_walks_dicts_and_lists() -> None:
    data = {"a": {"b": [{"c": 3}]}}
    assert get_path(data, "a.b.0.c") == 3
    assert get_path(data, "a.b.1.c") is None
    assert get_path(data, "a.x", 7) == 7


def test_interleaved_order_rotates() -> None:
    assert interleaved_order(["mesh", "triton"], 0) == ["mesh", "triton"]
    assert interleaved_order(["mesh", "triton"], 1) == ["triton", "mesh"]
    assert interleaved_order(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert interleaved_order([], 3) == []


PERF_ANALYZER_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait\n"
    """\
1,81.6217,62,1180,84,263,10271,82,19,12073,13452,14001,15620,12246,0,0
16,86.2395,70,9000,160000,300,10000,90,20,181292,200000,205000,230000,185000,0,0
"""
)


def test_perf_analyzer_csv_rows_in_milliseconds() -> None:
    rows = parse_perf_analyzer_csv(PERF_ANALYZER_CSV)
    assert len(rows) == 2
    assert rows[0]["concurrency"] == 1
    assert rows[0]["infer_per_s"] == pytest.approx(81.6217)
    assert rows[0]["p50_ms"] == pytest.approx(12.073)
    assert rows[1]["p99_ms"] == pytest.approx(230.0)
    assert parse_perf_analyzer_csv("") == []


def test_recovery_time_after_a_spike() -> None:
    line = [
        {"t_s": 0.0, "ok": {"p99_ms": 20}},
        {"t_s": 1.0, "ok": {"p99_ms": 900}},
        {"t_s": 2.0, "ok": {"p99_ms": 1500}},
        {"t_s": 3.0, "ok": {"p99_ms": 700}},
        {"t_s": 4.0, "ok": {}},
        {"t_s": 5.0, "ok": {"p99_ms": 30}},
    ]
    assert recovery_s(line, 2.0, 40) == 3.0
    assert recovery_s(line, 0.0, 40) == 0.0
    assert recovery_s(line, 2.0, 10) is None
