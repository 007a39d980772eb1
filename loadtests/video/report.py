"""The video scenario in the report: ``summary.json`` keys, targets, the section of ``docs/benchmarks.md``, the plot.

Called by :mod:`loadtests.harness.report` (which owns the summary, the Targets table and the doc) with the
``video`` scenario's result; everything here is pure apart from writing the PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtests.harness.stats import Target, fmt, get_path

VIDEO = "video"
P95_LIMIT_MS = 500.0
KEYS = (
    "video_mesh_vs_inprocess_ratio",
    "video_mesh_vs_inprocess_ratio_batch1",
    "video_mesh_frames_per_s",
    "video_mesh_saturated",
    "video_inprocess_frames_per_s",
    "video_inprocess_best_batch",
    "video_inprocess_frames_per_s_batch1",
    "video_mesh_cpu_us_per_frame",
    "video_inprocess_cpu_us_per_frame",
    "video_router_mean_batch_at_saturation",
    "video_realtime_latency_growth",
    "video_realtime_overload_factor",
    "video_realtime_overload_cameras",
    "video_realtime_overload_dropped",
    "video_realtime_overload_drop_share",
    "video_realtime_overload_p95_ms",
    "video_reliable_lag_growth_frames_per_s",
    "video_change_gate_inference_ratio",
    "video_change_gate_missed_face_frames",
    "video_change_gate_face_detected",
    "video_max_cameras_p95_under_500ms_reliable",
    "video_max_cameras_p95_under_500ms_realtime",
    "video_elapsed_s",
)


def _steps(result: Mapping[str, Any], mode: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = list(get_path(result, f"ramps.{mode}") or [])
    return steps


def max_cameras(steps: Sequence[Mapping[str, Any]], limit_ms: float = P95_LIMIT_MS) -> int | None:
    """The most cameras of a step whose p95 stayed within ``limit_ms`` (0: none did; None: no step)."""
    if not steps:
        return None
    ok = [s["cameras"] for s in steps if (get_path(s, "latency.p95_ms") or math.inf) <= limit_ms]
    return max(ok, default=0)


def summary_keys(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The video scenario's headline numbers (None where not measured)."""
    r = result or {}
    cmp = r.get("comparison") or {}
    capacity = r.get("capacity") or {}
    over = r.get("overload") or {}
    gate = r.get("static_scene") or {}
    reliable, realtime = _steps(r, "reliable"), _steps(r, "realtime")
    saturated_step = _step_of(r, capacity)
    out: dict[str, Any] = dict.fromkeys(KEYS)
    out.update(
        video_mesh_vs_inprocess_ratio=cmp.get("ratio"),
        video_mesh_vs_inprocess_ratio_batch1=cmp.get("ratio_batch1"),
        video_mesh_frames_per_s=capacity.get("frames_per_s"),
        video_mesh_saturated=capacity.get("saturated"),
        video_inprocess_frames_per_s=get_path(cmp, "baseline_best.frames_per_s"),
        video_inprocess_best_batch=get_path(cmp, "baseline_best.batch"),
        video_inprocess_frames_per_s_batch1=cmp.get("baseline_batch1_frames_per_s"),
        video_mesh_cpu_us_per_frame=cmp.get("mesh_cpu_us_per_frame"),
        video_inprocess_cpu_us_per_frame=cmp.get("baseline_cpu_us_per_frame"),
        video_router_mean_batch_at_saturation=get_path(saturated_step, "batch.mean"),
        video_realtime_latency_growth=get_path(over, "thirds.growth"),
        video_realtime_overload_factor=over.get("overload_factor"),
        video_realtime_overload_cameras=over.get("cameras"),
        video_realtime_overload_dropped=over.get("dropped"),
        video_realtime_overload_drop_share=over.get("drop_share"),
        video_realtime_overload_p95_ms=get_path(over, "latency.p95_ms"),
        video_reliable_lag_growth_frames_per_s=get_path(reliable[-1], "lag.growth_frames_per_s") if reliable else None,
        video_change_gate_inference_ratio=gate.get("inference_ratio"),
        video_change_gate_missed_face_frames=gate.get("missed_face_frames"),
        video_change_gate_face_detected=gate.get("face_detected_on_appearance"),
        video_max_cameras_p95_under_500ms_reliable=max_cameras(reliable),
        video_max_cameras_p95_under_500ms_realtime=max_cameras([*realtime, *([over] if over else [])]),
        video_elapsed_s=r.get("elapsed_s"),
    )
    return out


def _step_of(result: Mapping[str, Any], capacity: Mapping[str, Any]) -> dict[str, Any]:
    """The ramp step the capacity was taken from."""
    for step in _steps(result, capacity.get("mode") or ""):
        if step["cameras"] == capacity.get("cameras"):
            return step
    return {}


def targets(s: Mapping[str, Any]) -> list[Target]:
    """Issue 8's video targets against this run's numbers."""
    return [
        Target(
            "video_mesh_vs_inprocess_ratio",
            "Video: frames/s through the mesh vs the same detector in one process (face detector; reliable, change "
            "gate off, saturated; best batch size of each)",
            ">=",
            0.8,
            s.get("video_mesh_vs_inprocess_ratio"),
            "x",
        ),
        Target(
            "video_realtime_latency_growth",
            "Video, real time under 2x overload: p95 frame latency of the last third vs the first third",
            "<=",
            1.5,
            s.get("video_realtime_latency_growth"),
            "x",
        ),
        Target(
            "video_realtime_overload_dropped",
            "Video, real time under 2x overload: stale frames dropped instead of queued",
            ">=",
            1,
            s.get("video_realtime_overload_dropped"),
            "frames",
        ),
        Target(
            "video_change_gate_inference_ratio",
            "Video, change gate on a static scene: frames inferred / frames",
            "<=",
            0.1,
            s.get("video_change_gate_inference_ratio"),
            "x",
        ),
        Target(
            "video_change_gate_missed_face_frames",
            "Video, change gate: frames from a new face's appearance to its first inferred detection",
            "<=",
            0,
            s.get("video_change_gate_missed_face_frames"),
            "frames",
        ),
    ]


# ---------------------------------------------------------------------------------------------- why missed
REMEDIES: dict[str, str] = {
    "video_mesh_vs_inprocess_ratio": (
        "Video, mesh vs one process: on 2 cores every µs the services spend per frame (the owner's JPEG encode, "
        "preprocess's decode and resize, the NATS hops, the Redis claim check) is taken from inference. With the "
        "cameras and Triton on one host, the shared-memory ring of decision 0006 avoids the JPEG round trip; "
        "otherwise run ingest and preprocess on other cores or hosts than Triton (more copies: they are "
        "stateless, cameras spread over ingest copies by lease)."
    ),
}
"""What would fix a missed video target (known remedies, not measurements), by target key."""
OTHER_LOAD_CORES = 0.25
"""A window in which processes outside the benchmark used this many cores or more is flagged in the doc."""


def _cores_text(cores: Mapping[str, float] | None) -> str:
    if not cores:
        return "-"
    keep = ("triton", "ingest", "preprocess", "router", "postprocess", "nats-server", "redis-server", "loadgen")
    return ", ".join(f"{k} {cores[k]:.2f}" for k in keep if cores.get(k))


def _cpu_text(cpu: Mapping[str, float] | None) -> str:
    if not cpu:
        return "-"
    keep = ("triton", "ingest", "preprocess", "router", "postprocess", "nats-server", "redis-server")
    return ", ".join(f"{k} {cpu[k]:,.0f}" for k in keep if cpu.get(k))


def why_missed(summary: Mapping[str, Any], result: Mapping[str, Any] | None) -> list[str]:
    """One line per missed video target with this run's numbers that explain it."""
    if not result:
        return []
    missed = {t["key"] for t in summary.get("targets", []) if t["status"] == "miss"}
    lines: list[str] = []
    capacity = result.get("capacity") or {}
    cmp = result.get("comparison") or {}
    if "video_mesh_vs_inprocess_ratio" in missed and cmp:
        step = _step_of(result, capacity)
        cores, host = step.get("cpu_cores_used") or {}, step.get("host_cores") or {}
        rows: list[dict[str, Any]] = result.get("baseline") or []
        best = next((b for b in rows if b["batch"] == get_path(cmp, "baseline_best.batch")), {})
        line = (
            f"- Video, mesh vs one process: at the saturated step ({capacity.get('cameras')} {capacity.get('mode')} "
            f"cameras, {fmt(capacity.get('frames_per_s'))} frames/s, router batches of {get_path(step, 'batch.mean')} "
            f"on average) the mesh's processes used {cores.get('total', 0):.2f} of the 2 cores "
            f"({_cores_text(cores)}) and other processes on the host {host.get('other', 0):.2f}; CPU per frame "
            f"{cmp.get('mesh_cpu_us_per_frame', 0):,.0f} µs in the mesh ({_cpu_text(step.get('cpu_us_per_frame'))}) "
            f"vs {cmp.get('baseline_cpu_us_per_frame', 0):,.0f} µs in one process at batch "
            f"{get_path(cmp, 'baseline_best.batch')} ({fmt(get_path(cmp, 'baseline_best.frames_per_s'))} frames/s, "
            f"infer {get_path(best, 'stage_ms_per_frame.infer')} ms/frame; other processes "
            f"{get_path(best, 'host_cores.other')} cores)."
        )
        if cores.get("total", 0) + host.get("other", 0) < 1.7:
            line += (
                " The host was not busy: frames waited for the pipeline (the cameras' frames in flight) rather than "
                "for a CPU."
            )
        if not capacity.get("saturated"):
            line += " The ramp never saturated the mesh, so this ratio is a lower bound."
        lines.append(line)
    over = result.get("overload") or {}
    if {"video_realtime_latency_growth", "video_realtime_overload_dropped"} & missed and over:
        thirds = over.get("thirds") or {}
        lines.append(
            f"- Video, real-time overload: {over.get('cameras')} cameras offered {fmt(over.get('offered_fps'))} "
            f"frames/s ({over.get('overload_factor')}x the {fmt(over.get('capacity_fps'))} frames/s measured), "
            f"{fmt(over.get('frames_per_s'))} were published; p95 {fmt(thirds.get('p95_first_third_ms'), 'ms')} in "
            f"the first third, {fmt(thirds.get('p95_last_third_ms'), 'ms')} in the last; {over.get('dropped')} "
            f"frames dropped ({(over.get('drop_share') or 0) * 100:.0f} % of the frames captured); other processes "
            f"on the host {get_path(over, 'host_cores.other')} cores."
        )
    gate = result.get("static_scene") or {}
    if {"video_change_gate_inference_ratio", "video_change_gate_missed_face_frames"} & missed and gate:
        lines.append(
            f"- Video, change gate: {gate.get('inferred')} of {gate.get('results')} frames inferred (frames "
            f"{gate.get('inferred_frames')}); the face appeared at frame {gate.get('face_frame')}, whose result was "
            f"{gate.get('face_frame_result')}; first inferred detection at frame {gate.get('first_detection_frame')}."
        )
    return lines


# ---------------------------------------------------------------------------------------------- markdown
def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path.resolve(), base.resolve()).replace(os.sep, "/")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _lag(step: Mapping[str, Any]) -> str:
    lag = step.get("lag")
    if not lag:
        return "-"
    return f"{lag['start_frames']} → {lag['end_frames']} ({lag['growth_frames_per_s']:+.1f}/s)"


def _row(step: Mapping[str, Any], label: str) -> list[str]:
    cores = step.get("cpu_cores_used") or {}
    latency = step.get("latency") or {}
    errors = sum((step.get("errors") or {}).values())
    return [
        label,
        str(step["cameras"]),
        fmt(step["offered_fps"]),
        f"{step['frames_per_s']:.1f}",
        fmt(latency.get("p50_ms"), "ms"),
        fmt(latency.get("p95_ms"), "ms"),
        f"{step['dropped']:,}" + (f" ({step['drop_share'] * 100:.0f} %)" if step["dropped"] else ""),
        _lag(step),
        str(get_path(step, "batch.mean") or "-"),
        f"{cores.get('total', 0):.2f} / {cores.get('triton', 0):.2f} / {cores.get('ingest', 0):.2f} / "
        f"{cores.get('preprocess', 0):.2f}",
        fmt(get_path(step, "host_cores.other"), ""),
        str(errors),
    ]


def section(
    result: Mapping[str, Any] | None, plot: Path | None, doc_path: Path, config: Mapping[str, Any] | None = None
) -> list[str]:
    """``## Video`` of docs/benchmarks.md (empty when the scenario did not run or failed)."""
    if not result or "error" in result:
        return []
    media = result.get("media") or {}
    fps = result.get("fps")
    out = [
        f"## Video: cameras through the mesh ({result.get('model')})",
        "",
        ((config or {}).get("description") or "").strip(),
        "",
        f"Measured {result.get('started_at', '-')} (the command and machine are in `loadtests/results/video.json`).",
        "",
        f"Cameras are `StreamSource`s put in the stream registry, each reading `{media.get('camera_clip')}` "
        f"({media.get('frame_size')}, 23.976 fps) at {fps:g} fps by timestamps, looping; the reader plays the file "
        "at its own rate, as a live camera delivers frames. Ingest ran with a camera lease TTL of "
        f"{get_path(config or {}, 'video.lease_ttl_s') or '-'} s (it takes one new camera per third of it). "
        "Latency = `published_ms - captured_ms` of each `FrameResult`; dropped = frame numbers that never got a "
        "result; lag (reliable) = frames the cameras had captured at their fps but not yet published, at the start "
        "and end of the window; router batch = the router's `natriton_router_batch_size` counters over the window "
        "($SRV.STATS); cores = CPU of all / triton / ingest / preprocess; other = cores used meanwhile by processes "
        "outside the benchmark (the host is shared).",
        "",
    ]
    rows = [_row(s, mode) for mode in ("reliable", "realtime") for s in _steps(result, mode)]
    over = result.get("overload")
    if over:
        rows.append(_row(over, f"realtime, overload {over.get('overload_factor')}x"))
    out += _table(
        [
            "mode",
            "cameras",
            "offered frames/s",
            "frames/s",
            "p50",
            "p95",
            "dropped",
            "lag (frames)",
            "router batch",
            "cores",
            "other",
            "errors",
        ],
        rows,
    )
    out += [""]
    reliable, realtime = _steps(result, "reliable"), _steps(result, "realtime")
    loaded = [
        f"{label} ({get_path(s, 'host_cores.other'):.2f})"
        for label, s in [
            *((f"{m} x{s['cameras']}", s) for m in ("reliable", "realtime") for s in _steps(result, m)),
            *((f"overload x{over['cameras']}", over) for _ in [0] if over),
            *((f"baseline batch {b['batch']}" + (" + JPEG" if b["jpeg_round_trip"] else ""), b)
              for b in result.get("baseline") or []),
        ]
        if (get_path(s, "host_cores.other") or 0) >= OTHER_LOAD_CORES
    ]  # fmt: skip
    if loaded:
        out.append(
            f"Other processes on the host used {OTHER_LOAD_CORES:g} cores or more during: {', '.join(loaded)}; "
            "those numbers are slower than this host can do alone."
        )
        out.append("")
    out.append(
        f"Most cameras with p95 ≤ {result.get('max_p95_ms', P95_LIMIT_MS):g} ms: reliable "
        f"{max_cameras(reliable, result.get('max_p95_ms', P95_LIMIT_MS))}, real time "
        f"{max_cameras([*realtime, *([over] if over else [])], result.get('max_p95_ms', P95_LIMIT_MS))}."
    )
    if over:
        thirds = over.get("thirds") or {}
        out += [
            "",
            f"Real-time overload: {over['cameras']} cameras offering {fmt(over['offered_fps'])} frames/s, "
            f"{over.get('overload_factor')}x the fastest ramp step ({fmt(over.get('capacity_fps'))} frames/s), for "
            f"{over['window_s']:g} s: p95 {fmt(thirds.get('p95_first_third_ms'), 'ms')} in the first third, "
            f"{fmt(thirds.get('p95_last_third_ms'), 'ms')} in the last (x{thirds.get('growth')}); "
            f"{over['dropped']:,} frames dropped ({over['drop_share'] * 100:.0f} %).",
        ]
    capacity = result.get("capacity") or {}
    step = _step_of(result, capacity)
    batch = step.get("batch") or {}
    if batch.get("by_size"):
        out += [
            "",
            f"Router batch sizes at the saturated step ({capacity.get('cameras')} {capacity.get('mode')} cameras; "
            f"Triton's own counters: {step.get('triton_batch_size')} per execution):",
            "",
        ]
        out += _table(
            ["batch size", "batches", "share of frames"],
            [
                [k, str(v["batches"]), f"{v['frame_share'] * 100:.0f} %"]
                for k, v in sorted(batch["by_size"].items(), key=lambda kv: int(kv[0]))
            ],
        )
    out += _baseline_section(result)
    out += _gate_section(result)
    if plot is not None:
        out += ["", f"![video: cameras vs frames/s and p95]({_rel(plot, doc_path.parent)})"]
    return [*out, ""]


def _baseline_section(result: Mapping[str, Any]) -> list[str]:
    rows = result.get("baseline") or []
    if not rows:
        return []
    cmp = result.get("comparison") or {}
    out = [
        "",
        f"### In-process baseline ({result.get('onnx')}, {result.get('intra_op_threads')} intra-op thread(s) as "
        "Triton's model uses)",
        "",
        "One process, the mesh idle: PyAV decodes `Megamind.avi` (the frames a camera at this fps keeps), the mesh's "
        "preprocess code prepares them (`natriton_preprocess.logic.image_to_model_input` with the catalog's image "
        "spec), onnxruntime runs the ONNX file Triton serves with the same session options, the mesh's postprocess "
        "(`natriton.answers.to_result`) decodes each frame. The last row adds the claim check's JPEG round "
        "trip (the camera owner's `encode_jpeg`, preprocess's `prepare_frame`).",
        "",
    ]
    out += _table(
        ["batch", "frames/s", "CPU µs/frame", "decode", "preprocess", "infer", "postprocess", "other"],
        [
            [
                f"{r['batch']}" + (" + JPEG" if r["jpeg_round_trip"] else ""),
                f"{r['frames_per_s']:.1f}",
                f"{r['cpu_us_per_frame']:,.0f}",
                *(fmt(r["stage_ms_per_frame"][k], "ms") for k in ("decode", "preprocess", "infer", "postprocess")),
                fmt(get_path(r, "host_cores.other"), ""),
            ]
            for r in rows
        ],
    )
    if cmp:
        out += [
            "",
            f"Mesh {fmt(cmp['mesh_frames_per_s'])} frames/s (saturated) = {fmt(cmp['ratio'], 'x')} the in-process "
            f"best ({fmt(get_path(cmp, 'baseline_best.frames_per_s'))} frames/s at batch "
            f"{get_path(cmp, 'baseline_best.batch')}), {fmt(cmp['ratio_batch1'], 'x')} batch 1's. CPU per frame: "
            f"{cmp['mesh_cpu_us_per_frame']:,.0f} µs in the mesh (every process but the benchmark's) vs "
            f"{cmp['baseline_cpu_us_per_frame']:,.0f} µs in one process ({cmp.get('cpu_ratio')}x).",
        ]
    return out


def _gate_section(result: Mapping[str, Any]) -> list[str]:
    gate = result.get("static_scene") or {}
    if not gate:
        return []
    media = result.get("media") or {}
    check = media.get("in_process_check") or {}
    face = gate.get("face_frame_result") or {}
    return [
        "",
        "### Change gate on a static scene",
        "",
        f"`vtest.avi`'s median background ({media.get('static_size')}, the per-pixel median of frames spread over "
        f"the clip) with Gaussian noise (sigma {media.get('noise_sigma')} grey levels) per frame, {gate['frames']} "
        f"frames at {gate.get('fps'):g} fps as a folder of images, one pass, reliable mode, change gate on; from "
        f"frame {gate['face_frame']} on, a real face (a {media.get('face_crop_size')} crop of "
        f"`{get_path(media, 'face_source.clip')}`, detector score {get_path(media, 'face_source.score')}) is pasted "
        f"at {media.get('face_at')}. In one process the detector finds {check.get('background_detections')} faces "
        f"in the background and {check.get('with_face_detections')} with the face (score "
        f"{check.get('with_face_best_score')}).",
        "",
        f"- inferred {gate['inferred']} of {gate['results']} frames ({fmt(gate['inference_ratio'], 'x')}; frames "
        f"{gate['inferred_frames']}), reused {gate['reused']}, errors {gate['errors']}, every frame answered in "
        f"order: {gate['complete']}",
        f"- the face's first frame ({gate['face_frame']}): reused {face.get('reused')}, {face.get('objects')} "
        f"detection(s), latency {fmt(face.get('latency_ms'), 'ms')}; first inferred detection at frame "
        f"{gate['first_detection_frame']}; frames with a detection before the face: "
        f"{gate['detections_before_face']}, from it on: {gate['frames_with_face_after']} of "
        f"{gate['frames'] - gate['face_frame']}",
    ]


# ---------------------------------------------------------------------------------------------- plot
def plot(result: Mapping[str, Any], path: Path) -> bool:
    """Cameras vs frames/s (left) and vs p95 frame latency (right), both modes, with the in-process baseline."""
    reliable, realtime = _steps(result, "reliable"), _steps(result, "realtime")
    if not reliable and not realtime:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    over = result.get("overload")
    counts = sorted({s["cameras"] for s in [*reliable, *realtime, *([over] if over else [])]})
    fps = result.get("fps") or 0
    left.plot(counts, [c * fps for c in counts], ":", color="grey", label="offered (cameras x fps)")
    for steps, marker, color, label in ((reliable, "o", "C0", "reliable"), (realtime, "s", "C1", "real time")):
        if steps:
            x = [s["cameras"] for s in steps]
            left.plot(x, [s["frames_per_s"] for s in steps], f"{marker}-", color=color, label=label)
            p95 = [get_path(s, "latency.p95_ms") or math.nan for s in steps]
            p50 = [get_path(s, "latency.p50_ms") or math.nan for s in steps]
            right.plot(x, p95, f"{marker}-", color=color, label=f"{label} p95")
            right.plot(x, p50, f"{marker}:", color=color, alpha=0.5, label=f"{label} p50")
    if over:
        label = f"real time, {over.get('overload_factor')}x overload"
        left.plot([over["cameras"]], [over["frames_per_s"]], "*", color="C3", markersize=12, label=label)
        p95 = get_path(over, "latency.p95_ms") or math.nan
        right.plot([over["cameras"]], [p95], "*", color="C3", markersize=12, label=f"{label}, p95")
    best = get_path(result, "comparison.baseline_best")
    if best:
        left.axhline(best["frames_per_s"], color="green", linestyle="--", label=f"one process, batch {best['batch']}")
        left.axhline(0.8 * best["frames_per_s"], color="green", linestyle=":", alpha=0.6, label="0.8x that (target)")
    limit = result.get("max_p95_ms", P95_LIMIT_MS)
    right.axhline(limit, color="red", linestyle="--", label=f"{limit:g} ms")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel(f"cameras ({fps:g} fps each)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylabel("frames/s published")
    left.set_ylim(bottom=0)
    right.set_ylabel("frame latency, published - captured (ms)")
    right.set_yscale("log")
    left.set_title(f"Cameras vs frames/s ({result.get('model')})")
    right.set_title("Cameras vs frame latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
