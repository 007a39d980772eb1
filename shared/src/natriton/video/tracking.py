"""Multi-object tracking for one camera: a stable integer track id for each detection, frame after frame.

The tracker is norfair (Tryolabs; the maintained ``norfair-enough`` release of it): a constant-velocity Kalman filter
per track, detections associated to tracks greedily by IoU (1 - IoU as the distance), only within the same label.
norfair is imported when the first :class:`CameraTracker` is built, so importing this module stays light.

Frames the tracker is not shown (dropped in real-time mode, or answered by the change gate from an earlier frame)
are not misses: give the next observed frame its own number and the gap is one step of the motion model with the
hit credit of the whole gap (norfair's ``period``). A well-established track survives up to ``max_misses`` observed
frames in a row without a match; a new one fewer (norfair's hit counter grows with every match: a track seen once
survives one miss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from natriton.messages import Detection

if TYPE_CHECKING:
    import norfair

__all__ = ["CameraTracker", "TrackedDetection", "TrackerConfig"]


class TrackedDetection(msgspec.Struct, frozen=True, kw_only=True):
    """A detection and the track it belongs to (the id is unique within one camera's tracker)."""

    track_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]
    """x1, y1, x2, y2 in pixels of the frame (the detector's box, not the filter's estimate)."""


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """How eagerly detections join tracks and how long unmatched tracks live."""

    min_iou: float = 0.2
    """The smallest overlap between a track's predicted box and a detection that still continues the track."""
    max_misses: int = 12
    """Observed frames in a row without a match that a well-established track survives (it ends at the next)."""
    reset_after_s: float | None = 10.0
    """Start afresh (all tracks end, ids keep counting up) when this many seconds pass between two frames."""

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou < 1.0:
            raise ValueError(f"min_iou must be in (0, 1), got {self.min_iou}")
        if self.max_misses < 1:
            raise ValueError(f"max_misses must be at least 1, got {self.max_misses}")
        if self.reset_after_s is not None and self.reset_after_s <= 0:
            raise ValueError(f"reset_after_s must be positive, got {self.reset_after_s}")


class CameraTracker:
    """Tracks one camera's detections; feed it the frames in increasing frame-number order."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracker = self._new_tracker()
        self._id_offset = 0
        """Ids handed out by earlier norfair trackers of this camera (after a reset), so ids never repeat."""
        self._serial = 0
        self.last_frame: int | None = None
        self.last_timestamp: float | None = None
        self.resets = 0

    def update(self, detections: Sequence[Detection], frame_number: int, timestamp: float) -> list[TrackedDetection]:
        """One observed frame's detections (possibly none) → the same detections, in order, with their track ids.

        ``timestamp`` is the frame's time in seconds (PTS or wall clock, the same clock for every frame).
        """
        steps = 1
        if self.last_frame is not None:
            if frame_number <= self.last_frame:
                raise ValueError(f"frame {frame_number} after frame {self.last_frame}: frames must be in order")
            steps = frame_number - self.last_frame
            limit = self.config.reset_after_s
            if limit is not None and self.last_timestamp is not None and timestamp - self.last_timestamp > limit:
                self.reset()
                steps = 1
        self.last_frame, self.last_timestamp = frame_number, timestamp
        self._serial += 1
        candidates = [self._candidate(d, i) for i, d in enumerate(detections)]
        # the hit credit of a gap; capped, or a track started after a long gap would outlive max_misses
        active = self._tracker.update(candidates, period=min(steps, self.config.max_misses))
        track_of: dict[int, int] = {}
        for obj in active:
            serial, index = obj.last_detection.data
            if serial == self._serial and obj.id is not None:
                track_of[index] = self._id_offset + obj.id
        # initialization_delay=0: every detection continues a track or starts one, so every index has an id
        return [
            TrackedDetection(track_id=track_of[i], label=d.label, score=d.score, box=d.box)
            for i, d in enumerate(detections)
            if i in track_of
        ]

    @property
    def active_tracks(self) -> int:
        """Tracks alive now (matched recently enough not to be dropped)."""
        return int(self._tracker.current_object_count)

    def reset(self) -> None:
        """End every track; ids given later are larger than all ids given so far."""
        self._id_offset += int(self._tracker.total_object_count)
        self._tracker = self._new_tracker()
        self.resets += 1

    def _candidate(self, detection: Detection, index: int) -> norfair.Detection:
        from norfair import Detection as NorfairDetection

        x1, y1, x2, y2 = detection.box
        points = np.array([[x1, y1], [max(x2, x1 + 1e-3), max(y2, y1 + 1e-3)]], dtype=np.float64)
        return NorfairDetection(points, label=detection.label, data=(self._serial, index))

    def _new_tracker(self) -> norfair.Tracker:
        from norfair import Tracker

        return Tracker(
            distance_function="iou",
            distance_threshold=1.0 - self.config.min_iou,
            hit_counter_max=self.config.max_misses,
            initialization_delay=0,
            past_detections_length=0,
        )
