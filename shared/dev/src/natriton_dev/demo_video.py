"""``make demo-video``: the whole mesh on this machine reading two real cameras, with a live page to watch.

Starts nats-server, redis-server, tritonserver (CPU) and the four services, adds two cameras that play sample
footage at its own pace, over and over (``Megamind.avi``: faces, real-time mode, and its sound through the speech
model; ``vtest.avi``: a street, reliable mode), and prints the address of ingest's live page, where each camera's
newest frame shows with its face boxes and track ids, its fps, end-to-end latency, drops and change-gate savings,
and the sound's speech activity. Runs until Ctrl-C; ``--seconds N`` stops after N seconds. Either way it ends with
a summary per camera (frames, faces seen, fps, speech heard) and stops everything.

    python -m natriton_dev.demo_video [--seconds N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.msg import Msg

from natriton.messages import AudioEvent, SpeechEnded, SpeechStarted, StreamMode, StreamSource
from natriton.streams import open_registry
from natriton_client.protocol import FrameResult, audio_events_subject, detections_subject
from natriton_dev.media import sample_clip
from natriton_dev.stack import LocalStack

CAMERAS: tuple[tuple[str, str, StreamMode, str], ...] = (
    ("megamind", "Megamind.avi", StreamMode.REALTIME, "silero_vad"),
    ("street", "vtest.avi", StreamMode.RELIABLE, ""),
)
"""Camera id, sample clip, delivery mode and the speech model for its sound ('' : none; vtest.avi has no sound);
both clips play at their own pace, over and over."""
RESULTS = msgspec.msgpack.Decoder(FrameResult)
SPEECH = msgspec.msgpack.Decoder(AudioEvent)
PROGRESS_EVERY_S = 5.0


@dataclass
class Tally:
    """What one camera's results showed."""

    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    """Boxes over all frames."""
    tracks: set[int] = field(default_factory=set)
    errors: int = 0
    speech_segments: int = 0
    """Speech segments heard in the camera's sound (``speech_end`` events)."""
    speech_s: float = 0.0
    speech_started_s: float | None = None
    first_s: float = 0.0
    last_s: float = 0.0

    def add(self, result: FrameResult) -> None:
        now = time.monotonic()
        if not self.frames:
            self.first_s = now
        self.last_s = now
        self.frames += 1
        if result.error is not None:
            self.errors += 1
        faces = [o for o in result.objects if o.label == "face"]
        self.faces += len(faces)
        self.frames_with_faces += bool(faces)
        self.tracks.update(o.track_id for o in faces)

    def hear(self, event: AudioEvent) -> None:
        if isinstance(event, SpeechStarted):
            self.speech_started_s = event.time_s
        elif isinstance(event, SpeechEnded) and self.speech_started_s is not None:
            self.speech_segments += 1
            self.speech_s += max(0.0, event.time_s - self.speech_started_s)
            self.speech_started_s = None

    def fps(self) -> float:
        return (self.frames - 1) / (self.last_s - self.first_s) if self.frames > 1 and self.last_s > self.first_s else 0


def banner(page: str) -> str:
    if os.environ.get("NATRITON_LIVE_TOKEN_FILE"):  # the stack's ingest has it too: its page wants the token
        page += "  (add ?token=... from NATRITON_LIVE_TOKEN_FILE)"
    line = "=" * max(60, len(page) + 20)
    return f"\n{line}\n  Live page:  {page}\n  Open it in a browser. Ctrl-C stops the demo.\n{line}\n"


def page_numbers(page: str) -> dict[str, dict[str, Any]]:
    """Each camera's numbers from the page's ``/streams.json`` ({} when it cannot be read)."""
    try:
        with urllib.request.urlopen(f"{page}.json", timeout=5) as response:
            return {c["camera"]: c for c in json.load(response)["cameras"]}
    except (OSError, ValueError, KeyError):
        return {}


async def run_cameras(nats_url: str, page: str, seconds: float) -> tuple[dict[str, Tally], dict[str, dict[str, Any]]]:
    """Add the cameras, count their results until ``seconds`` pass (0: until Ctrl-C/SIGTERM), read the page's
    numbers, remove the cameras."""
    nc = await nats.connect(nats_url, name="natriton-demo-video")
    registry = await open_registry(nc)
    tallies = {camera: Tally() for camera, *_ in CAMERAS}
    numbers: dict[str, dict[str, Any]] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def counter(camera: str) -> Any:
        async def on_result(msg: Msg) -> None:
            tally = tallies[camera]
            if not tally.frames:
                print(f"  {camera}: first result", flush=True)
            tally.add(RESULTS.decode(msg.data))

        return on_result

    def listener(camera: str) -> Any:
        async def on_event(msg: Msg) -> None:
            tallies[camera].hear(SPEECH.decode(msg.data))

        return on_event

    try:
        for camera, *_ in CAMERAS:
            await nc.subscribe(detections_subject(camera), cb=counter(camera))
            await nc.subscribe(audio_events_subject(camera), cb=listener(camera))
        for camera, clip, mode, audio_model in CAMERAS:
            source = StreamSource(
                camera=camera, url=str(sample_clip(clip)), mode=mode, loop=True, audio_model=audio_model
            )
            await registry.put_source(source)
            sound = f", its sound through {audio_model}" if audio_model else ""
            print(f"  camera {camera}: {clip}, {mode.value}, looping{sound}")
        print(banner(page), flush=True)
        started = time.monotonic()
        while not stop.is_set():
            left = seconds - (time.monotonic() - started) if seconds else PROGRESS_EVERY_S
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(PROGRESS_EVERY_S, left))
            if not stop.is_set():
                print("  " + "   ".join(f"{c}: {t.frames} frames, {t.fps():.1f} fps" for c, t in tallies.items()))
        numbers = await asyncio.to_thread(page_numbers, page)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for camera, *_ in CAMERAS:
            with contextlib.suppress(Exception):
                await registry.remove_source(camera)
        await nc.close()
    return tallies, numbers


def summary(tallies: dict[str, Tally], numbers: dict[str, dict[str, Any]]) -> str:
    lines = ["\n== summary"]
    for camera, tally in tallies.items():
        seen = numbers.get(camera, {})
        extra = ""
        if seen:
            extra = (
                f", latency p50 {seen['latency_p50_ms']:.0f} ms p95 {seen['latency_p95_ms']:.0f} ms,"
                f" {seen['dropped']} dropped, change gate saved {100 * seen['gate_savings']:.0f} %"
            )
        if tally.speech_segments:
            extra += f"; its sound: {tally.speech_segments} speech segments, {tally.speech_s:.1f} s of speech"
        lines.append(
            f"  {camera:<9} {tally.frames} frames at {tally.fps():.1f} fps, {tally.frames_with_faces} with faces,"
            f" {tally.faces} faces seen ({len(tally.tracks)} tracks), {tally.errors} errors{extra}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit status 0 when every camera had results and the faces clip had faces."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: at Ctrl-C)")
    parser.add_argument("--workdir", type=Path, default=None, help="logs and data (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for _, clip, *_ in CAMERAS:
        sample_clip(clip)  # fetched once, before anything starts
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="natriton-demo-video-"))
    print("Natriton video demo: starting nats-server, redis-server, tritonserver and the four services")
    started = time.perf_counter()
    with LocalStack(workdir) as stack:
        page = f"{stack.service('ingest').metrics_url}/streams"
        print(f"stack ready in {time.perf_counter() - started:.1f} s (logs: {workdir})")
        tallies, numbers = asyncio.run(run_cameras(stack.nats_url, page, args.seconds))
        print(summary(tallies, numbers))
        print("\nstopping everything...")
    ok = all(t.frames > 0 for t in tallies.values()) and tallies["megamind"].frames_with_faces > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
