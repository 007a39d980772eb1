"""Summary keys, targets and the Markdown report from synthetic results (no measurement)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.harness import report
from loadtests.harness.progress import format_line

META = {"date": "2026-11-24T00:00:00+00:00", "command": "python -m loadtests.bench", "machine": {"cpu_count": 2}}


def cell(system: str, concurrency: int, rps: float, p50: float, **extra: Any) -> dict[str, Any]:
    base = {"system": system, "concurrency": concurrency, "ok_per_s": rps, "p50_ms": p50, "p99_ms": p50 * 2}
    return {**base, "errors": {}, **extra}


CPU = {"ingest": 300.0, "preprocess": 200.0, "router": 400.0, "postprocess": 100.0, "triton": 50.0, "nats-server": 90}

RESULTS: dict[str, dict[str, Any]] = {
    "mesh_vs_triton": {
        "cells": [
            cell("mesh", 1, 50, 17.0, cpu_us_per_request=CPU),
            cell("triton", 1, 70, 12.5),
            cell("mesh", 4, 80, 45, cpu_us_per_request=CPU),
            cell("triton", 4, 90, 44),
        ],
        "mesh_best": {"concurrency": 4, "ok_per_s": 80.0},
        "triton_best": {"concurrency": 4, "ok_per_s": 90.0},
        "throughput_ratio": 0.8889,
        "added_latency_c1": {"mesh_p50_ms": 17.0, "triton_p50_ms": 12.5, "added_p50_ms": 4.5},
        "perf_analyzer": {"runs": [{"concurrency": 1, "infer_per_s": 81.0, "p50_ms": 12.0}]},
    },
    "noop_vs_raw_nats": {
        "cells": [
            cell("mesh", 64, 1500, 40, payload_bytes=4096, cpu_us_per_request=CPU),
            cell("raw_nats", 64, 4500, 13, payload_bytes=4096, cpu_us_per_request={"relays": 250.0}),
        ],
        "by_payload": {
            "4096": {
                "ratio": 0.3333,
                "mesh_best": {"concurrency": 64, "ok_per_s": 1500},
                "raw_nats_best": {"concurrency": 64, "ok_per_s": 4500},
            },
            "153600": {"ratio": 0.8, "mesh_best": None, "raw_nats_best": None},
        },
    },
    "cache_hit": {
        "phases": [
            {
                "label": "hits",
                "offered_rps": 1000.0,
                "ok_per_s": 1000.0,
                "p50_ms": 1.4,
                "p90_ms": 3,
                "p99_ms": 8.0,
                "errors": {},
                "rate_factor": None,
                "duration_s": 10,
            }
        ],
        "overall": {"latency_ok_by_tag": {"hit": {"count": 10000, "p50_ms": 1.4, "p99_ms": 8.0}}},
    },
    "overload": {
        "deadline_ms": 2000,
        "ingest_max_concurrency": 80,
        "capacity_rps": 80.0,
        "phases": [
            {
                "label": "2x",
                "offered_rps": 160.0,
                "ok_per_s": 85,
                "p50_ms": 900,
                "p90_ms": 1000,
                "p99_ms": 1100,
                "errors": {"overloaded": 1200},
                "rate_factor": 2.0,
                "duration_s": 15,
            }
        ],
        "accepted": {"count": 1300, "p99_ms": 1100.0},
        "rejected": {"count": 1200, "p99_ms": 3.2},
        "overall": {"counts": {"ok": 1300, "overloaded": 1200}, "latency": {"ok": {"p99_ms": 1100.0}}},
        "timeline": [{"t_s": 0.0, "counts": {"ok": 80, "overloaded": 70}, "ok": {"p50_ms": 900, "p99_ms": 1100}}],
    },
}

REQUIRED = (
    "mesh_vs_triton_throughput_ratio",
    "noop_vs_raw_nats_ratio_4kb",
    "noop_vs_raw_nats_ratio_150kb",
    "added_latency_p50_ms",
    "cache_hit_p50_ms",
    "cache_hit_p99_ms",
    "overload_reject_p99_ms",
    "mesh_cpu_us_per_request_150kb",
    "mesh_cpu_us_per_request_4kb",
)


def test_summary_has_every_required_key_as_a_number() -> None:
    summary = report.build_summary(RESULTS, META)
    for key in REQUIRED:
        assert isinstance(summary[key], int | float), key
    assert summary["added_latency_p50_ms"] == 4.5
    assert summary["overload_accepted_p99_ms"] == 1100.0
    assert summary["cache_hit_offered_rps"] == 1000.0
    assert summary["perf_analyzer_best_infer_per_s"] == 81.0
    # ingest + preprocess + router + postprocess + nats-server of the saturated mesh cell (not Triton, not the client)
    assert summary["mesh_cpu_us_per_request_150kb"] == 1090.0 and summary["mesh_cpu_us_per_request_4kb"] == 1090.0
    assert summary["mesh_cpu_us_per_request_150kb_concurrency"] == 4
    for key in ("machine", "date", "command"):
        assert summary[key] == META[key]
    status = {t["key"]: t["status"] for t in summary["targets"]}
    assert status == {
        "mesh_vs_triton_throughput_ratio": "miss",
        "noop_vs_raw_nats_ratio_4kb": "miss",
        "noop_vs_raw_nats_ratio_150kb": "pass",
        "mesh_cpu_us_per_request_150kb": "miss",
        "mesh_cpu_us_per_request_4kb": "miss",
        "added_latency_p50_ms": "miss",
        "cache_hit_p50_ms": "miss",
        "cache_hit_p99_ms": "miss",
        "overload_accepted_p99_ms": "pass",
        "overload_reject_p99_ms": "pass",
    }


def test_missing_scenarios_give_none_not_errors() -> None:
    summary = report.build_summary({}, META)
    assert all(summary[key] is None for key in REQUIRED)
    assert {t["status"] for t in summary["targets"]} == {"not measured"}


def test_markdown_states_targets_misses_and_by_how_much(tmp_path: Path) -> None:
    summary = report.build_summary(RESULTS, META)
    doc = tmp_path / "docs" / "benchmarks.md"
    configs = {"overload": {"kind": "open_loop", "model": "mobilenet_v2", "payload": {}, "deadline_ms": 2000}}
    text = report.markdown(summary, RESULTS, configs, {}, doc, {"spike": "RuntimeError: boom"})
    assert "| Mesh throughput vs direct Triton (classifier, best concurrency each) | >= 0.90x | 0.89x |" in text
    assert "0.01x below the target (1 %)" in text
    assert "3.50 ms above the target (350 %)" in text
    assert "python -m loadtests.bench" in text and "2026-11-24" in text
    assert "`spike`: RuntimeError: boom" in text
    assert "## Open loop: overload" in text
    assert "rejected `overloaded`: 1200 replies" in text


def test_plot_links_are_relative_to_the_doc(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "benchmarks.md"
    plot = tmp_path / "loadtests" / "results" / "mesh_vs_triton.png"
    text = report.markdown(report.build_summary(RESULTS, META), RESULTS, {}, {"throughput": plot}, doc, {})
    assert "](../loadtests/results/mesh_vs_triton.png)" in text


def test_size_keys() -> None:
    assert report.size_key(4096) == "4kb"
    assert report.size_key(153600) == "150kb"
    assert report.size_key(200) == "200b"


def test_progress_line() -> None:
    line = format_line("ramp", 12.34, 1490, {"ok": 1480, "overloaded": 3}, 118.9, 42.1, 130.0, offered=120)
    assert line == (
        "ramp |  12.3 s | offered 120/s | sent 1,490 done 1,483 | 118.9/s | p50 42.10 ms p99 130.00 ms"
        " | errors overloaded=3"
    )
    assert format_line("x", 1, 0, {}, 0, None, None).endswith("| errors 0")


def test_missed_targets_are_explained_with_this_runs_cpu_numbers(tmp_path: Path) -> None:
    summary = report.build_summary(RESULTS, META)
    text = report.markdown(summary, RESULTS, {}, {}, tmp_path / "docs" / "b.md", {})
    assert "### Where the misses come from" in text
    assert "the services used 1,000 µs of CPU per request" in text
    assert "used 1,050 µs of CPU (ingest 300, preprocess 200, router 400, postprocess 100, triton 50)" in text
    assert "four relays used 250 µs" in text and "4.2x the CPU for a throughput ratio of 0.33x" in text
    assert "Mesh vs Triton: at the mesh's best concurrency (4) the services used 1,000 µs" in text
