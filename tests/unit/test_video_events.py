"""Track events for a synthetic scene: appear, leave (by frames or seconds), counts; the wire form."""

from __future__ import annotations

import msgspec
import pytest

from natriton.video.events import FrameCounts, TrackAppeared, TrackCount, TrackEvents, TrackLeft, VideoEvent
from natriton.video.tracking import TrackedDetection

FPS = 10.0


def seen(track_id: int, label: str = "face", x: float = 0.0) -> TrackedDetection:
    return TrackedDetection(track_id=track_id, label=label, score=0.9, box=(x, 0.0, x + 10.0, 10.0))


def summary(event: VideoEvent) -> tuple[object, ...]:
    match event:
        case TrackAppeared():
            return ("appeared", event.track_id, event.frame_number)
        case TrackLeft():
            return ("left", event.track_id, event.first_frame, event.last_frame, event.frame_number)
        case TrackCount():
            return ("count", event.frame_number, event.active, event.by_label)


def test_a_synthetic_scene_gives_the_expected_events() -> None:
    """Face 1 is seen in frames 0-19 except 8-9; face 2 in frames 5-12; a person in 10-30; the stream ends at 40."""
    scene: dict[int, list[TrackedDetection]] = {n: [] for n in range(40)}
    for n in [*range(0, 8), *range(10, 20)]:
        scene[n].append(seen(1, x=n))
    for n in range(5, 13):
        scene[n].append(seen(2))
    for n in range(10, 31):
        scene[n].append(seen(3, label="person"))
    events = TrackEvents("cam-1", leave_after_frames=5, leave_after_s=None)
    got = [summary(e) for n in range(40) for e in events.update(scene[n], n, n / FPS)]
    got += [summary(e) for e in events.finish(40, 4.0)]
    assert got == [
        ("appeared", 1, 0),
        ("count", 0, 1, {"face": 1}),
        ("appeared", 2, 5),
        ("count", 5, 2, {"face": 2}),
        # face 1 missed frames 8-9: fewer than 5, no event
        ("appeared", 3, 10),
        ("count", 10, 3, {"face": 2, "person": 1}),
        ("left", 2, 5, 12, 17),  # last seen at 12, gone 5 frames later
        ("count", 17, 2, {"face": 1, "person": 1}),
        ("left", 1, 0, 19, 24),
        ("count", 24, 1, {"person": 1}),
        ("left", 3, 10, 30, 35),
        ("count", 35, 0, {}),
    ]
    assert (events.appeared, events.left, events.active_tracks) == (3, 3, 0)


def test_order_within_a_frame_is_left_then_appeared_then_count() -> None:
    events = TrackEvents("cam", leave_after_frames=1, leave_after_s=None)
    events.update([seen(1)], 0, 0.0)
    out = events.update([seen(2)], 1, 0.1)
    assert [summary(e) for e in out] == [("left", 1, 0, 0, 1), ("appeared", 2, 1)]  # the count did not change


def test_leaving_by_seconds_with_gaps_in_the_frame_numbers() -> None:
    """Real-time mode drops frames: a track leaves after ``leave_after_s`` of the camera's clock, however few
    frames were observed in between."""
    events = TrackEvents("cam", leave_after_frames=None, leave_after_s=1.0)
    assert [type(e) for e in events.update([seen(7)], 0, 0.0)] == [TrackAppeared, TrackCount]
    assert events.update([], 5, 0.5) == []
    out = events.update([], 11, 1.1)
    assert [summary(e) for e in out] == [("left", 7, 0, 0, 11), ("count", 11, 0, {})]
    left = out[0]
    assert isinstance(left, TrackLeft) and (left.first_timestamp, left.last_timestamp, left.frames_seen) == (0, 0, 1)


def test_frame_counts_and_the_details_of_an_appearance() -> None:
    events = TrackEvents("cam", leave_after_frames=3)
    detection = TrackedDetection(track_id=4, label="face", score=0.75, box=(1.0, 2.0, 3.0, 4.0))
    (appeared, _) = events.update([detection, detection], 10, 2.5)  # a repeated box is one object
    assert appeared == TrackAppeared(
        camera="cam", track_id=4, label="face", score=0.75, box=(1.0, 2.0, 3.0, 4.0), frame_number=10, timestamp=2.5
    )
    events.update([], 11, 2.6)
    assert events.counts == FrameCounts(frame_number=11, timestamp=2.6, active=1, visible=0, by_label={"face": 1})


def test_events_are_tagged_wire_messages() -> None:
    events = TrackEvents("cam", leave_after_frames=1)
    sent = events.update([seen(1)], 0, 0.0) + events.update([], 1, 0.1)
    for event in sent:
        as_json = msgspec.json.encode(event)
        assert msgspec.json.decode(as_json)["type"] in {"track_appeared", "track_left", "track_count"}
        assert msgspec.json.decode(as_json, type=VideoEvent) == event
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=VideoEvent) == event


def test_frames_must_come_in_order_and_a_leave_rule_is_required() -> None:
    events = TrackEvents("cam")
    events.update([], 5, 0.5)
    with pytest.raises(ValueError, match="in order"):
        events.update([], 5, 0.5)
    with pytest.raises(ValueError, match="leave_after"):
        TrackEvents("cam", leave_after_frames=None, leave_after_s=None)
