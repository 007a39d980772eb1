"""From camera results to the numbers of a phase (pure: no sockets, no clocks).

A phase is a time window ``[start_ms, end_ms)`` of publication times. Its frames are the results published in it;
their latency is ``published_ms - captured_ms`` of each :class:`~natriton_client.protocol.FrameResult`. Frames
that a camera captured but never published (a real-time camera drops stale frames, its source queue drops the
oldest) are gaps in its frame numbers; a gap counts in the window of the result that ends it. Lag (reliable
cameras) is the frames a camera would have captured by a moment at its fps, minus the frames published by then.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Sample:
    """One published frame result, as the benchmark keeps it."""

    camera: str
    frame_number: int
    captured_ms: int
    published_ms: int
    reused: bool = False
    objects: int = 0
    error: str = ""

    @property
    def latency_ms(self) -> int:
        """Capture to publication."""
        return self.published_ms - self.captured_ms


def percentiles(values: Sequence[float], quantiles: Iterable[int] = (50, 95, 99)) -> dict[str, float | None]:
    """``{"p50_ms": ..., "p95_ms": ..., "p99_ms": ..., "max_ms": ...}`` (None when there are no values)."""
    keys = [f"p{q}_ms" for q in quantiles] + ["max_ms"]
    if not values:
        return dict.fromkeys(keys)
    array = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {f"p{q}_ms": round(float(np.percentile(array, q)), 1) for q in quantiles}
    out["max_ms"] = round(float(array.max()), 1)
    return out


def gaps_by_result(samples: Iterable[Sample]) -> dict[tuple[str, int], int]:
    """Frames missing just before each result of a camera: ``(camera, frame_number) -> count`` (0 omitted).

    The first result of a camera counts the frames before it too (frame numbers start at 0).
    """
    by_camera: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        by_camera[s.camera].append(s.frame_number)
    gaps: dict[tuple[str, int], int] = {}
    for camera, numbers in by_camera.items():
        previous = -1
        for n in sorted(set(numbers)):
            if n - previous > 1:
                gaps[(camera, n)] = n - previous - 1
            previous = n
    return gaps


def in_window(samples: Iterable[Sample], start_ms: int, end_ms: int) -> list[Sample]:
    """The results published within ``[start_ms, end_ms)``."""
    return [s for s in samples if start_ms <= s.published_ms < end_ms]


def third_p95_growth(window: Sequence[Sample], start_ms: int, end_ms: int) -> dict[str, Any]:
    """p95 latency of the first and the last third of a window (by publication time) and their ratio."""
    third = (end_ms - start_ms) / 3
    first = [s.latency_ms for s in window if s.published_ms < start_ms + third and not s.error]
    last = [s.latency_ms for s in window if s.published_ms >= end_ms - third and not s.error]
    p95_first = percentiles(first, (95,))["p95_ms"]
    p95_last = percentiles(last, (95,))["p95_ms"]
    growth = round(p95_last / p95_first, 3) if p95_first and p95_last is not None else None
    return {"p95_first_third_ms": p95_first, "p95_last_third_ms": p95_last, "growth": growth}


def expected_frames(first_captured_ms: int, at_ms: int, fps: float) -> int:
    """Frames a camera paced at ``fps`` whose frame 0 was captured at ``first_captured_ms`` has captured by
    ``at_ms``."""
    if at_ms < first_captured_ms:
        return 0
    return math.floor((at_ms - first_captured_ms) * fps / 1000 + 1e-9) + 1


def lag_frames(samples: Sequence[Sample], first_captured: Mapping[str, int], at_ms: int, fps: float) -> int:
    """Frames the cameras had captured (at ``fps`` since their frame 0) but not yet published by ``at_ms``."""
    published: dict[str, int] = defaultdict(int)
    for s in samples:
        if s.published_ms <= at_ms:
            published[s.camera] += 1
    return sum(max(0, expected_frames(t0, at_ms, fps) - published[c]) for c, t0 in first_captured.items())


def batch_diff(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Batches per batch size between two readings of the router's ``batch_sizes`` counters."""
    sizes = sorted({*before, *after}, key=int)
    diff = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in sizes}
    return {k: v for k, v in diff.items() if v > 0}


def batch_summary(batches: Mapping[str, int]) -> dict[str, Any]:
    """Mean batch size, and the share of batches and of frames per size."""
    total_batches = sum(batches.values())
    total_frames = sum(int(k) * v for k, v in batches.items())
    if not total_batches:
        return {"batches": 0, "frames": 0, "mean": None, "by_size": {}}
    return {
        "batches": total_batches,
        "frames": total_frames,
        "mean": round(total_frames / total_batches, 2),
        "by_size": {
            k: {
                "batches": v,
                "batch_share": round(v / total_batches, 3),
                "frame_share": round(int(k) * v / total_frames, 3),
            }
            for k, v in sorted(batches.items(), key=lambda kv: int(kv[0]))
        },
    }


def common_sizes(batches: Mapping[str, int], limit: int, min_share: float = 0.1) -> list[int]:
    """The batch sizes that carried at least ``min_share`` of the frames, most frames first, at most ``limit``."""
    total = sum(int(k) * v for k, v in batches.items())
    if not total or limit <= 0:
        return []
    ranked = sorted(batches.items(), key=lambda kv: -int(kv[0]) * kv[1])
    return [int(k) for k, v in ranked if int(k) * v / total >= min_share][:limit]


def window_stats(
    samples: Sequence[Sample],
    start_ms: int,
    end_ms: int,
    *,
    cameras: int,
    fps: float,
    first_captured: Mapping[str, int] | None = None,
    gaps: Mapping[tuple[str, int], int] | None = None,
) -> dict[str, Any]:
    """The numbers of one phase: rate, latency, drops, latency growth by thirds, and (given ``first_captured``)
    the reliable cameras' lag at both ends."""
    window = in_window(samples, start_ms, end_ms)
    seconds = max(1e-9, (end_ms - start_ms) / 1000)
    good = [s for s in window if not s.error]
    gaps = gaps_by_result(samples) if gaps is None else gaps
    dropped = sum(gaps.get((s.camera, s.frame_number), 0) for s in window)
    errors: dict[str, int] = defaultdict(int)
    for s in window:
        if s.error:
            errors[s.error] += 1
    out: dict[str, Any] = {
        "cameras": cameras,
        "offered_fps": round(cameras * fps, 2),
        "window_s": round(seconds, 2),
        "frames": len(window),
        "frames_per_s": round(len(good) / seconds, 2),
        "reused": sum(1 for s in window if s.reused),
        "errors": dict(errors),
        "dropped": dropped,
        "drop_share": round(dropped / (dropped + len(window)), 4) if window or dropped else 0.0,
        "latency": percentiles([s.latency_ms for s in good]),
        "thirds": third_p95_growth(window, start_ms, end_ms),
    }
    if first_captured is not None:
        lag_start = lag_frames(samples, first_captured, start_ms, fps)
        lag_end = lag_frames(samples, first_captured, end_ms, fps)
        out["lag"] = {
            "start_frames": lag_start,
            "end_frames": lag_end,
            "growth_frames_per_s": round((lag_end - lag_start) / seconds, 2),
        }
    return out


def gate_summary(samples: Sequence[Sample], frames: int, face_frame: int) -> dict[str, Any]:
    """The static scene with the change gate: share of frames inferred, and whether the face pasted in at
    ``face_frame`` was detected on that very frame by an inference (not a reused result)."""
    by_number = {s.frame_number: s for s in samples}
    present = [by_number[n] for n in sorted(by_number) if n < frames]
    inferred = [s for s in present if not s.reused and not s.error]
    first_detection = next(
        (s.frame_number for s in present if s.frame_number >= face_frame and s.objects and not s.reused), None
    )
    at_face = by_number.get(face_frame)
    missed = (first_detection - face_frame) if first_detection is not None else frames - face_frame
    return {
        "frames": frames,
        "results": len(present),
        "complete": [s.frame_number for s in present] == list(range(frames)),
        "inferred": len(inferred),
        "reused": sum(1 for s in present if s.reused),
        "errors": sum(1 for s in present if s.error),
        "inference_ratio": round(len(inferred) / len(present), 4) if present else None,
        "face_frame": face_frame,
        "face_frame_result": None
        if at_face is None
        else {"reused": at_face.reused, "objects": at_face.objects, "latency_ms": at_face.latency_ms},
        "first_detection_frame": first_detection,
        "missed_face_frames": missed,
        "face_detected_on_appearance": missed == 0,
        "detections_before_face": sum(1 for s in present if s.frame_number < face_frame and s.objects),
        "frames_with_face_after": sum(1 for s in present if s.frame_number >= face_frame and s.objects),
        "inferred_frames": [s.frame_number for s in inferred],
    }
