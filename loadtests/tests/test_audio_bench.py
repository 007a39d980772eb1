"""The live audio benchmark's arithmetic and report (pure: no servers)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from loadtests.audio import analysis, report


def test_percentiles_are_nearest_rank() -> None:
    values = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    assert analysis.percentile(values, 0.5) == 0.5
    assert analysis.percentile(values, 0.95) == 0.95
    assert analysis.percentile(values, 1.0) == 1.0
    assert math.isnan(analysis.percentile([], 0.5))


def test_a_step_keeps_up_only_with_its_pieces_answered_in_time() -> None:
    fast = analysis.step_summary(10, [0.02] * 99 + [0.05], sent=100)
    assert (fast["answered_share"], fast["p95_ms"], fast["chunks_per_s"]) == (1.0, 20.0, 312.5)
    assert analysis.sustains(fast, 100.0)
    late = analysis.step_summary(20, [0.02] * 90 + [0.3] * 10, sent=100)
    assert not analysis.sustains(late, 100.0)
    lossy = analysis.step_summary(40, [0.02] * 95, sent=100)
    assert lossy["answered_share"] == 0.95 and not analysis.sustains(lossy, 100.0)
    assert analysis.sustained_streams([fast, late, lossy], 100.0) == 10
    assert analysis.sustained_streams([late], 100.0) == 0


def test_capacity_in_real_time_streams() -> None:
    assert analysis.realtime_capacity(31.25) == pytest.approx(1.0)
    assert analysis.realtime_capacity(3125) == pytest.approx(100.0)


def _result() -> dict[str, object]:
    step = analysis.step_summary(10, [0.02] * 100, sent=100) | {
        "send_lag_p99_ms": 1.5,
        "cores": {"ingest": 0.2, "router": 0.3},
        "cpu_us_per_chunk": {"ingest": 640.0, "router": 960.0},
    }
    return {
        "date": "2026-12-01T07:00:00+00:00",
        "elapsed_s": 60.0,
        "command": "python -m loadtests.audio",
        "machine": {"cpu_model": "cpu", "cpu_count": 2, "platform": "linux", "python": "3.11", "loadavg_start": [1]},
        "settings": {"piece_s": 0.1, "p95_ms": 100.0},
        "baseline": [{"batch": 1, "chunks_per_s": 7000.0, "realtime_streams": 218.8}],
        "steps": [step],
        "summary": {
            "sustained_streams": 10,
            "in_process_realtime_streams": 218.8,
            "mesh_vs_in_process_ratio": 0.046,
            "p95_ms_at_sustained": 20.0,
        },
    }


def test_the_report_shows_the_target_and_every_step(tmp_path: Path) -> None:
    text = report.markdown(_result(), png="audio_streams.png")
    assert "| real-time streams kept up with, p95 piece latency < 100 ms | >= 1 | 10 (p95 20.0 ms) | **pass** |" in text
    assert "| 10 | 312 | 100.0% | 20.0 | 20.0 | 20.0 | 1.5 |" in text
    assert "![piece latency by streams](audio_streams.png)" in text
    report.plot(_result(), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_state_comparison_takes_medians_per_model_and_streams() -> None:
    from loadtests.audio.sequence_batcher import markdown, summarise

    rounds = [
        {"model": model, "streams": 16, "chunks_per_s": rate, "p50_ms": 1.0, "p99_ms": p99}
        for model, rate, p99 in (
            ("vad_carried", 900.0, 9.0),
            ("vad_carried", 1000.0, 8.0),
            ("vad_carried", 1100.0, 7.0),
            ("vad_sequence", 1900.0, 5.0),
            ("vad_sequence", 2000.0, 4.0),
            ("vad_sequence", 2100.0, 3.0),
        )
    ]
    [row] = summarise(rounds)
    assert (row["vad_carried"], row["vad_sequence"], row["carried_vs_sequence"]) == (1000.0, 2000.0, 0.5)
    assert (row["vad_carried_p99_ms"], row["vad_sequence_p99_ms"]) == (8.0, 4.0)
    result = {
        "date": "d",
        "elapsed_s": 1.0,
        "command": "c",
        "machine": {"cpu_model": "cpu", "cpu_count": 2, "python": "3.11"},
        "settings": {"chunks": 200, "rounds": 3},
        "max_probability_difference": 0.0,
        "summary": [row],
    }
    assert "| 16 | 1,000 | 2,000 | 0.5x | 8.0 | 4.0 |" in markdown(result)
