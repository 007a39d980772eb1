"""The video scenario (loadtests/video): its math, its scenario file, its report, and a tiny run of the whole thing.

The unit tests need no sockets; ``test_tiny_video_scenario_runs_end_to_end`` starts a real mesh (nats-server,
redis-server, tritonserver with the face detector, the four services) and runs every phase of the scenario for a
fraction of a second, so that it cannot rot; it checks the shape of what it writes, not the numbers (apart from
the change gate seeing the pasted face, which does not depend on the host's speed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtests.harness import report
from loadtests.harness.scenario import ScenarioError, load_scenarios, parse_scenario
from loadtests.harness.stats import Target, fmt
from loadtests.video import analysis
from loadtests.video import report as video_report
from loadtests.video.analysis import Sample

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
META = {"date": "2026-11-30T00:00:00+00:00", "command": "python -m loadtests.bench", "machine": {"cpu_count": 2}}


def sample(camera: str, n: int, captured: int, published: int, **extra: Any) -> Sample:
    return Sample(camera=camera, frame_number=n, captured_ms=captured, published_ms=published, **extra)


# ---------------------------------------------------------------------------------------------- analysis
def test_gaps_count_frames_that_never_got_a_result() -> None:
    samples = [sample("a", n, 0, 0) for n in (0, 1, 4, 5, 9)] + [sample("b", n, 0, 0) for n in (2, 3)]
    assert analysis.gaps_by_result(samples) == {("a", 4): 2, ("a", 9): 3, ("b", 2): 2}


def test_window_stats_rate_latency_drops_and_thirds() -> None:
    # one camera, a result every 100 ms for 3 s; every third frame dropped; latency grows from 100 to 390 ms
    samples = []
    for i in range(30):
        if i % 3 == 2:
            continue
        samples.append(sample("a", i, 1000 + i * 100 - (100 + 10 * i), 1000 + i * 100))
    stats = analysis.window_stats(samples, 1000, 4000, cameras=1, fps=10)
    assert stats["frames"] == 20 and stats["frames_per_s"] == pytest.approx(20 / 3, abs=0.01)
    assert stats["dropped"] == 9  # frames 2, 5, ..., 26 (29 would need a later result to count)
    assert stats["drop_share"] == pytest.approx(9 / 29, abs=1e-3)
    assert stats["latency"]["p50_ms"] == pytest.approx(245, abs=20)
    thirds = stats["thirds"]
    assert thirds["p95_first_third_ms"] < thirds["p95_last_third_ms"] and thirds["growth"] > 2
    assert "lag" not in stats


def test_lag_is_frames_captured_at_the_cameras_fps_but_not_yet_published() -> None:
    # a 10 fps camera whose frame 0 was captured at t=0, published at 5 frames/s (every 200 ms, from 100 ms)
    samples = [sample("a", n, n * 100, 100 + n * 200) for n in range(20)]
    assert analysis.expected_frames(0, 0, 10) == 1 and analysis.expected_frames(0, 999, 10) == 10
    assert analysis.lag_frames(samples, {"a": 0}, 1000, 10) == 11 - 5
    stats = analysis.window_stats(samples, 1000, 3000, cameras=1, fps=10, first_captured={"a": 0})
    assert stats["lag"]["start_frames"] == 6 and stats["lag"]["end_frames"] == 31 - 15
    assert stats["lag"]["growth_frames_per_s"] == pytest.approx(5.0)


def test_batch_counters_mean_and_the_sizes_worth_a_baseline() -> None:
    diff = analysis.batch_diff({"1": 5, "16": 2}, {"1": 9, "2": 3, "16": 12, "4": 0})
    assert diff == {"1": 4, "2": 3, "16": 10}
    summary = analysis.batch_summary(diff)
    assert summary["batches"] == 17 and summary["frames"] == 4 + 6 + 160
    assert summary["mean"] == pytest.approx(10.0, abs=0.01)
    assert summary["by_size"]["16"]["frame_share"] == pytest.approx(160 / 170, abs=1e-3)
    assert analysis.common_sizes(diff, 3) == [16]
    assert analysis.common_sizes({"2": 10, "3": 10, "8": 1}, 2) == [3, 2]
    assert analysis.batch_summary({})["mean"] is None


def test_gate_summary_finds_the_face_on_its_appearance_frame() -> None:
    reused = {n: n not in (0, 5, 10) for n in range(12)}
    samples = [sample("s", n, 0, 10, reused=reused[n], objects=1 if n >= 5 else 0) for n in range(12)]
    gate = analysis.gate_summary(samples, 12, 5)
    assert gate["complete"] and gate["inferred"] == 3 and gate["inference_ratio"] == pytest.approx(0.25)
    assert gate["face_detected_on_appearance"] and gate["missed_face_frames"] == 0
    assert gate["face_frame_result"] == {"reused": False, "objects": 1, "latency_ms": 10}
    assert gate["detections_before_face"] == 0 and gate["frames_with_face_after"] == 7
    late = [s if s.frame_number != 5 else sample("s", 5, 0, 10, reused=True, objects=0) for s in samples]
    missed = analysis.gate_summary(late, 12, 5)
    assert not missed["face_detected_on_appearance"] and missed["missed_face_frames"] == 5  # found at frame 10


# ---------------------------------------------------------------------------------------------- scenario
def test_the_shipped_video_scenario_parses() -> None:
    (sc,) = load_scenarios(SCENARIOS, only=["video"])
    assert sc.kind == "video" and sc.model == "face_detector" and sc.video is not None
    assert sc.video.cameras[:3] == (1, 2, 4) and sc.video.modes == ("reliable", "realtime")
    assert sc.video.max_p95_ms == 500 and sc.video.overload_factor == 2.0
    assert 0 < sc.video.static_face_frame < sc.video.static_frames
    assert 100 < sc.planned_seconds() < 200  # about 2-3 minutes of the suite's 10
    scaled = sc.scaled(0.5)
    assert scaled.video is not None and scaled.video.step_s == sc.video.step_s / 2
    assert scaled.video.static_frames == sc.video.static_frames  # frames are not durations


@pytest.mark.parametrize(
    ("video", "message"),
    [
        ({"cameras": [4, 2]}, "increasing camera counts"),
        ({"modes": ["live"]}, "must list some of"),
        ({"fps": 0}, "fps must be > 0"),
        ({"static_frames": 10, "static_face_frame": 10}, "static_face_frame must lie within"),
        ({"nope": 1}, "unknown video keys"),
    ],
)
def test_video_mistakes_are_refused(video: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario({"kind": "video", "model": "face_detector", "video": video}, "v.toml", "v")


# ---------------------------------------------------------------------------------------------- report
def step(mode: str, cameras: int, fps: float, p95: float, **extra: Any) -> dict[str, Any]:
    return {
        "label": f"{mode} x{cameras}",
        "mode": mode,
        "cameras": cameras,
        "offered_fps": cameras * 10.0,
        "window_s": 10.0,
        "frames": int(fps * 10),
        "frames_per_s": fps,
        "errors": {},
        "dropped": 0,
        "drop_share": 0.0,
        "latency": {"p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95, "max_ms": p95},
        "batch": {"mean": 2.0, "by_size": {"1": {"batches": 4, "frame_share": 0.2}}},
        "batch_counts": {"1": 4, "4": 4},
        "cpu_cores_used": {"triton": 0.9, "ingest": 0.3, "preprocess": 0.2, "total": 1.5},
        "host_cores": {"busy": 1.6, "steal": 0.0, "other": 0.1},
        "cpu_us_per_frame": {"triton": 30000.0, "ingest": 9000.0},
        **extra,
    }


VIDEO_RESULT: dict[str, Any] = {
    "model": "face_detector",
    "fps": 10.0,
    "max_p95_ms": 500.0,
    "onnx": "model_repository/face_detector/1/model.onnx",
    "intra_op_threads": 1,
    "ramps": {
        "reliable": [
            step("reliable", 1, 10, 60, lag={"start_frames": 0, "end_frames": 0, "growth_frames_per_s": 0.0}),
            step("reliable", 2, 20, 200, lag={"start_frames": 1, "end_frames": 2, "growth_frames_per_s": 0.1}),
            step("reliable", 4, 24, 3000, lag={"start_frames": 90, "end_frames": 250, "growth_frames_per_s": 16}),
        ],
        "realtime": [step("realtime", 1, 10, 120), step("realtime", 4, 30, 380), step("realtime", 8, 33, 610)],
    },
    "capacity": {"frames_per_s": 24.0, "mode": "reliable", "cameras": 4, "saturated": True},
    "overload": step(
        "realtime",
        7,
        33,
        420,
        dropped=300,
        drop_share=0.3,
        overload_factor=2.12,
        capacity_fps=33.0,
        thirds={"p95_first_third_ms": 380.0, "p95_last_third_ms": 430.0, "growth": 1.13},
    ),
    "baseline": [
        {
            "batch": b,
            "jpeg_round_trip": j,
            "frames_per_s": f,
            "cpu_us_per_frame": c,
            "host_cores": {"other": 0.1},
            "stage_ms_per_frame": {"decode": 2.0, "preprocess": 4.0, "infer": 22.0, "postprocess": 0.4},
        }
        for b, j, f, c in ((1, False, 34.0, 29000.0), (4, False, 36.0, 27000.0), (1, True, 33.0, 30000.0))
    ],
    "comparison": {
        "mesh_frames_per_s": 24.0,
        "baseline_best": {"batch": 4, "frames_per_s": 36.0},
        "baseline_batch1_frames_per_s": 34.0,
        "ratio": 0.6667,
        "ratio_batch1": 0.7059,
        "mesh_cpu_us_per_frame": 52000.0,
        "baseline_cpu_us_per_frame": 27000.0,
        "cpu_ratio": 1.93,
    },
    "static_scene": {
        "frames": 100,
        "results": 100,
        "complete": True,
        "inferred": 5,
        "reused": 95,
        "errors": 0,
        "inference_ratio": 0.05,
        "face_frame": 70,
        "first_detection_frame": 70,
        "missed_face_frames": 0,
        "face_detected_on_appearance": True,
        "detections_before_face": 0,
        "frames_with_face_after": 30,
        "face_frame_result": {"reused": False, "objects": 1, "latency_ms": 41},
        "inferred_frames": [0, 25, 50, 70, 95],
        "fps": 20.0,
    },
    "media": {"camera_clip": "Megamind.avi", "frame_size": [720, 528], "static_size": [768, 576], "noise_sigma": 2.0},
}


def test_summary_keys_and_targets_of_the_video_scenario() -> None:
    summary = report.build_summary({"video": VIDEO_RESULT}, META)
    assert summary["video_mesh_vs_inprocess_ratio"] == 0.6667
    assert summary["video_realtime_latency_growth"] == 1.13
    assert summary["video_change_gate_inference_ratio"] == 0.05
    assert summary["video_max_cameras_p95_under_500ms_reliable"] == 2
    assert summary["video_max_cameras_p95_under_500ms_realtime"] == 7  # the overload phase counts
    assert summary["video_reliable_lag_growth_frames_per_s"] == 16
    assert summary["video_router_mean_batch_at_saturation"] == 2.0
    status = {t["key"]: t["status"] for t in summary["targets"] if t["key"].startswith("video_")}
    assert status == {
        "video_mesh_vs_inprocess_ratio": "miss",
        "video_realtime_latency_growth": "pass",
        "video_realtime_overload_dropped": "pass",
        "video_change_gate_inference_ratio": "pass",
        "video_change_gate_missed_face_frames": "pass",
    }
    without = report.build_summary({}, META)
    assert not any(t["key"].startswith("video_") for t in without["targets"])  # only once the scenario ran
    failed = report.build_summary({"video": {"error": "RuntimeError: boom"}}, META)
    assert {t["status"] for t in failed["targets"] if t["key"].startswith("video_")} == {"not measured"}


def test_the_video_section_and_its_explained_miss(tmp_path: Path) -> None:
    summary = report.build_summary({"video": VIDEO_RESULT}, META)
    doc = tmp_path / "docs" / "benchmarks.md"
    plot = tmp_path / "results" / "video.png"
    plot.parent.mkdir()
    assert video_report.plot(VIDEO_RESULT, plot) and plot.stat().st_size > 0
    configs = {"video": {"kind": "video", "description": "Cameras.", "video": {"lease_ttl_s": 1.5}}}
    text = report.markdown(summary, {"video": VIDEO_RESULT}, configs, {"video": plot}, doc, {})
    assert "| Video: frames/s through the mesh vs the same detector in one process" in text
    assert "| >= 0.80x | 0.67x | **miss**: 0.13x below the target (17 %) |" in text
    assert "## Video: cameras through the mesh (face_detector)" in text
    assert "| reliable | 4 | 40 | 24.0 | 1,500 ms | 3,000 ms | 0 | 90 → 250 (+16.0/s) |" in text
    assert "| realtime, overload 2.12x | 7 |" in text
    assert "Most cameras with p95 ≤ 500 ms: reliable 2, real time 7." in text
    assert "- Video, mesh vs one process: at the saturated step (4 reliable cameras, 24 frames/s" in text
    assert "inferred 5 of 100 frames (0.05x; frames [0, 25, 50, 70, 95])" in text
    assert "![video: cameras vs frames/s and p95](../results/video.png)" in text


def test_a_zero_threshold_miss_says_by_how_much_without_a_percentage() -> None:
    missed = Target("k", "t", "<=", 0, 3, "frames")
    assert missed.status == "miss" and missed.shortfall() == "3 frames above the target"
    assert fmt(1234, "frames") == "1,234 frames"


# ---------------------------------------------------------------------------------------------- tiny run
TINY = """
kind = "video"
model = "face_detector"
description = "Tiny."
[video]
fps = 10.0
cameras = [1]
modes = ["reliable", "realtime"]
step_s = 0.6
settle_s = 0.2
overload_factor = 1.0
overload_s = 0.6
static_frames = 10
static_face_frame = 5
static_fps = 20.0
baseline_s = 0.1
baseline_max_sizes = 1
lease_ttl_s = 1.5
"""


@pytest.mark.integration
def test_tiny_video_scenario_runs_end_to_end(tmp_path: Path) -> None:
    from loadtests import bench
    from natriton_dev.media import MediaUnavailableError, sample_clip
    from natriton_dev.servers import ServerNotFoundError, find_binary

    try:
        find_binary("nats-server", "")
        find_binary("redis-server", "")
        sample_clip("Megamind.avi"), sample_clip("vtest.avi")
    except (ServerNotFoundError, MediaUnavailableError) as exc:
        pytest.skip(str(exc))
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "video.toml").write_text(TINY)
    out, doc = tmp_path / "results", tmp_path / "docs" / "benchmarks.md"
    argv = ["--scenarios", str(scenarios), "--out-dir", str(out), "--doc", str(doc), "--quiet"]
    assert bench.main(argv) == 0

    data = json.loads((out / "video.json").read_text())
    result = data["result"]
    assert "error" not in result, result.get("traceback")
    for mode in ("reliable", "realtime"):
        (only,) = result["ramps"][mode]
        assert only["cameras"] == 1 and only["frames"] > 0 and only["latency"]["p50_ms"] is not None
    assert result["overload"]["cameras"] >= 2
    gate = result["static_scene"]
    assert gate["complete"] and gate["results"] == 10
    assert gate["face_detected_on_appearance"], gate  # the pasted face is inferred on its first frame
    assert gate["detections_before_face"] == 0 and gate["inferred"] < 10
    batches = [r["batch"] for r in result["baseline"]]
    assert batches[0] == 1 and result["baseline"][-1]["jpeg_round_trip"]
    assert all(r["frames_per_s"] > 0 and r["frames_with_faces"] > 0 for r in result["baseline"])
    assert result["comparison"]["ratio"] > 0
    summary = json.loads((out / "summary.json").read_text())
    for key in video_report.KEYS:
        assert key in summary, key
    assert isinstance(summary["video_change_gate_inference_ratio"], float)
    assert (out / "video.png").stat().st_size > 0
    text = doc.read_text()
    assert "## Video: cameras through the mesh (face_detector)" in text and "### In-process baseline" in text
