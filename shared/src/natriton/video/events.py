"""Events from one camera's tracked detections: a track appears, a track leaves, the counts change.

Pure logic: :class:`TrackEvents` is fed each frame's tracked detections in frame order (a frame answered from an
earlier one by the change gate is fed that frame's detections again) and returns the frame's events. A track
*leaves* once it has not been seen for ``leave_after_frames`` frame numbers or ``leave_after_s`` seconds, whichever
comes first, so a detector that misses an object for a frame or two neither ends its track nor changes the counts.
The events are the public wire messages of ``natriton.v1.events.<camera>``, defined in
:mod:`natriton_client.protocol`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import msgspec

from natriton.video.tracking import TrackedDetection
from natriton_client.protocol import CameraEvent, TrackAppeared, TrackCount, TrackLeft

__all__ = [
    "FrameCounts",
    "TrackAppeared",
    "TrackCount",
    "TrackEvents",
    "TrackLeft",
    "VideoEvent",
]

Box: TypeAlias = tuple[float, float, float, float]


VideoEvent: TypeAlias = CameraEvent
"""What ``natriton.v1.events.<camera>`` carries (decode with ``msgspec.msgpack.Decoder(VideoEvent)``)."""


class FrameCounts(msgspec.Struct, frozen=True, kw_only=True):
    """One frame's counts: tracks present (seen now or recently enough not to have left) and tracks seen now."""

    frame_number: int
    timestamp: float
    active: int
    visible: int
    by_label: dict[str, int]
    """Tracks present, per label."""


@dataclass(slots=True)
class _Track:
    label: str
    first_frame: int
    first_timestamp: float
    last_frame: int
    last_timestamp: float
    last_box: Box
    frames_seen: int = 1


class TrackEvents:
    """Per-camera event state; ``update`` once per frame, in frame order; ``finish`` when the stream ends."""

    def __init__(self, camera: str, *, leave_after_frames: int | None = 24, leave_after_s: float | None = 2.0) -> None:
        if leave_after_frames is None and leave_after_s is None:
            raise ValueError("set leave_after_frames, leave_after_s or both")
        if (leave_after_frames is not None and leave_after_frames < 1) or (
            leave_after_s is not None and leave_after_s <= 0
        ):
            raise ValueError("leave_after_frames and leave_after_s must be positive")
        self.camera = camera
        self.leave_after_frames = leave_after_frames
        self.leave_after_s = leave_after_s
        self._tracks: dict[int, _Track] = {}
        self._last_counts: dict[str, int] | None = None
        self._last_frame: int | None = None
        self.appeared = 0
        self.left = 0
        self.counts: FrameCounts | None = None
        """The latest frame's counts."""

    def update(self, detections: Sequence[TrackedDetection], frame_number: int, timestamp: float) -> list[VideoEvent]:
        """One frame's tracked detections → its events: tracks that left, tracks that appeared, then the count."""
        if self._last_frame is not None and frame_number <= self._last_frame:
            raise ValueError(f"frame {frame_number} after frame {self._last_frame}: frames must be in order")
        self._last_frame = frame_number
        events: list[VideoEvent] = []
        seen: set[int] = set()
        for d in detections:
            if d.track_id in seen:
                continue  # one box per track and frame; a second one is not a second object
            seen.add(d.track_id)
            track = self._tracks.get(d.track_id)
            if track is None:
                self._tracks[d.track_id] = _Track(d.label, frame_number, timestamp, frame_number, timestamp, d.box)
                events.append(
                    TrackAppeared(
                        camera=self.camera,
                        track_id=d.track_id,
                        label=d.label,
                        score=d.score,
                        box=d.box,
                        frame_number=frame_number,
                        timestamp=timestamp,
                    )
                )
            else:
                track.last_frame, track.last_timestamp, track.last_box = frame_number, timestamp, d.box
                track.frames_seen += 1
        gone = [i for i, t in self._tracks.items() if i not in seen and self._has_left(t, frame_number, timestamp)]
        left = [self._leave(i, frame_number, timestamp) for i in gone]
        self.appeared += len(events)
        return left + events + self._count(frame_number, timestamp, visible=len(seen))

    def finish(self, frame_number: int, timestamp: float) -> list[VideoEvent]:
        """The stream ended: every track still present leaves (then the count, now zero)."""
        left: list[VideoEvent] = [self._leave(i, frame_number, timestamp) for i in list(self._tracks)]
        return left + self._count(frame_number, timestamp, visible=0)

    @property
    def active_tracks(self) -> int:
        """Tracks present now."""
        return len(self._tracks)

    def _has_left(self, track: _Track, frame_number: int, timestamp: float) -> bool:
        frames, seconds = self.leave_after_frames, self.leave_after_s
        return (frames is not None and frame_number - track.last_frame >= frames) or (
            seconds is not None and timestamp - track.last_timestamp >= seconds
        )

    def _leave(self, track_id: int, frame_number: int, timestamp: float) -> TrackLeft:
        track = self._tracks.pop(track_id)
        self.left += 1
        return TrackLeft(
            camera=self.camera,
            track_id=track_id,
            label=track.label,
            first_frame=track.first_frame,
            last_frame=track.last_frame,
            first_timestamp=track.first_timestamp,
            last_timestamp=track.last_timestamp,
            frames_seen=track.frames_seen,
            last_box=track.last_box,
            frame_number=frame_number,
            timestamp=timestamp,
        )

    def _count(self, frame_number: int, timestamp: float, *, visible: int) -> list[VideoEvent]:
        by_label = dict(sorted(Counter(t.label for t in self._tracks.values()).items()))
        self.counts = FrameCounts(
            frame_number=frame_number,
            timestamp=timestamp,
            active=len(self._tracks),
            visible=visible,
            by_label=by_label,
        )
        if by_label == self._last_counts:
            return []
        self._last_counts = by_label
        return [
            TrackCount(
                camera=self.camera,
                frame_number=frame_number,
                timestamp=timestamp,
                active=len(self._tracks),
                by_label=by_label,
            )
        ]
