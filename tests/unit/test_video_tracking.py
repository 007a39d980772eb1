"""The per-camera tracker (norfair behind ``CameraTracker``): stable ids, crossings, leaving, gaps, labels."""

from __future__ import annotations

import subprocess
import sys

import pytest

from natriton.messages import Detection
from natriton.video.tracking import CameraTracker, TrackedDetection, TrackerConfig

FPS = 24.0


def box(x: float, y: float, w: float = 60, h: float = 60, label: str = "face", score: float = 0.9) -> Detection:
    return Detection(label=label, score=score, box=(x, y, x + w, y + h))


def run(tracker: CameraTracker, frames: dict[int, list[Detection]]) -> dict[int, list[TrackedDetection]]:
    """Feed frames (frame number → detections) in order; frame numbers missing from ``frames`` are not shown."""
    return {n: tracker.update(dets, n, n / FPS) for n, dets in sorted(frames.items())}


def test_a_box_moving_smoothly_keeps_one_id_and_its_detection_values() -> None:
    tracker = CameraTracker()
    frames = {n: [box(100 + 7 * n, 80 + 2 * n, score=0.5 + n / 100)] for n in range(30)}
    out = run(tracker, frames)
    assert {t.track_id for ts in out.values() for t in ts} == {1}
    for n, ts in out.items():
        (tracked,) = ts
        assert (tracked.box, tracked.score, tracked.label) == (frames[n][0].box, frames[n][0].score, "face")


def test_every_detection_comes_back_in_order_with_distinct_ids() -> None:
    tracker = CameraTracker()
    dets = [box(10, 10), box(200, 10), box(400, 10, label="person"), box(10, 300)]
    for n in range(3):
        out = tracker.update(dets, n, n / FPS)
        assert [(t.box, t.label) for t in out] == [(d.box, d.label) for d in dets]
        assert [t.track_id for t in out] == [1, 2, 3, 4]
    assert tracker.active_tracks == 4


@pytest.mark.parametrize("every", [1, 2, 3])
def test_two_crossing_boxes_keep_their_ids(every: int) -> None:
    """Two boxes of one label move towards each other, overlap almost completely, and move apart (also when only
    every 2nd or 3rd frame is observed, as in real-time mode)."""
    tracker = CameraTracker()
    frames = {n: [box(50 + 10 * n, 100), box(450 - 10 * n, 110)] for n in range(0, 40, every)}
    out = run(tracker, frames)
    left_to_right = {ts[0].track_id for ts in out.values()}
    right_to_left = {ts[1].track_id for ts in out.values()}
    assert len(left_to_right) == 1 and len(right_to_left) == 1 and left_to_right != right_to_left


def test_frames_without_detections_and_a_track_that_leaves() -> None:
    """A track survives a few empty frames; after more than ``max_misses`` it is gone: the same place, a new id."""
    tracker = CameraTracker(TrackerConfig(max_misses=5))
    first = run(tracker, {n: [box(100, 100)] for n in range(20)})
    assert {t.track_id for ts in first.values() for t in ts} == {1}
    assert tracker.update([], 20, 20 / FPS) == []
    assert tracker.update([], 21, 21 / FPS) == []
    assert [t.track_id for t in tracker.update([box(101, 100)], 22, 22 / FPS)] == [1]  # back after 2 misses
    for n in range(23, 23 + 6):  # 6 misses > max_misses = 5
        assert tracker.update([], n, n / FPS) == []
    assert tracker.active_tracks == 0
    assert [t.track_id for t in tracker.update([box(100, 100)], 29, 29 / FPS)] == [2]


def test_frames_not_shown_do_not_age_tracks() -> None:
    """Frames dropped upstream or reused by the change gate are not misses: a track shown again 50 frames later
    (max_misses 3) keeps its id, and so does a moving box observed only every 4th frame."""
    tracker = CameraTracker(TrackerConfig(max_misses=3))
    run(tracker, {n: [box(100, 100)] for n in range(10)})
    assert [t.track_id for t in tracker.update([box(100, 100)], 60, 60 / FPS)] == [1]
    moving = CameraTracker(TrackerConfig(max_misses=3))
    out = run(moving, {n: [box(100 + 5 * n, 100)] for n in range(0, 80, 4)})
    assert {t.track_id for ts in out.values() for t in ts} == {1}


def test_a_track_started_after_a_long_gap_does_not_outlive_max_misses() -> None:
    tracker = CameraTracker(TrackerConfig(max_misses=3))
    tracker.update([box(100, 100)], 0, 0.0)
    assert [t.track_id for t in tracker.update([box(400, 100)], 100, 100 / FPS)] == [2]
    for n in range(101, 105):  # 4 misses > max_misses = 3
        tracker.update([], n, n / FPS)
    assert tracker.active_tracks == 0


def test_labels_are_tracked_separately() -> None:
    tracker = CameraTracker()
    out = run(tracker, {n: [box(100 + n, 100, label="face"), box(100 + n, 100, label="person")] for n in range(10)})
    assert all([t.track_id for t in ts] == [1, 2] for ts in out.values())
    assert [t.track_id for t in tracker.update([box(110, 100, label="dog")], 10, 10 / FPS)] == [3]


def test_a_long_pause_in_time_starts_afresh_with_larger_ids() -> None:
    tracker = CameraTracker(TrackerConfig(reset_after_s=5.0))
    run(tracker, {n: [box(100, 100), box(300, 100)] for n in range(5)})
    later = tracker.update([box(100, 100)], 5, 60.0)  # the stream was away for a minute
    assert [t.track_id for t in later] == [3] and tracker.resets == 1
    assert [t.track_id for t in tracker.update([box(100, 100)], 6, 60.1)] == [3]


def test_frames_must_come_in_order_and_degenerate_boxes_are_tolerated() -> None:
    tracker = CameraTracker()
    tracker.update([Detection(label="face", score=0.9, box=(50, 50, 50, 50))], 3, 0.1)
    with pytest.raises(ValueError, match="in order"):
        tracker.update([], 3, 0.2)
    with pytest.raises(ValueError, match="min_iou"):
        TrackerConfig(min_iou=0.0)


def test_importing_the_module_does_not_import_norfair() -> None:
    code = "import sys, natriton.video.tracking; assert 'norfair' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
