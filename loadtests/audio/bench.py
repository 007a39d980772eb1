"""How many live audio streams the mesh keeps up with in real time, against the same model in one process.

Starts its own local stack (nats-server, redis-server, the CPU tritonserver serving only ``silero_vad``, one copy of
each service) and measures:

1. **the baseline**: the ONNX file Triton serves, run in this process with onnxruntime (1 thread, as Triton's
   instance), stepping through the 32 ms chunks of real speech with the state carried, ``B`` streams batched per
   step: model chunks per second, and the real-time streams that rate would serve (31.25 chunks/s each);
2. **the mesh**: a ramp of real-time streams, each publishing a 0.1 s PCM piece (48 kHz, int16, Debian's alsa voice
   recordings, looped) every 0.1 s on ``natriton.v1.audio.chunks.<stream>``; a piece's latency runs from its publish
   to its ``voice_activity`` event. A step keeps up when 99 % of its pieces are answered within the step and its p95
   stays under ``--p95-ms``; the ramp stops after the first step that does not.

Target (issue 11): real-time streams with p95 piece latency under 100 ms; reported as the most streams sustained and
as a ratio to the baseline's capacity (``sustained / in-process real-time streams`` at the best batch size).

    python -m loadtests.audio                                  # ~2 minutes; writes loadtests/results/audio_streams.*
    python -m loadtests.audio --streams 5,10 --step-s 3 --out-dir /tmp/audio
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import numpy as np
import onnxruntime as ort
import soundfile
import uvloop
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from loadtests import standalone
from loadtests.audio import analysis
from loadtests.runtime_choice.bench import machine_info
from natriton.audio import chunk, decode_audio, to_model_rate
from natriton.messages import AudioChunk, AudioEvent, AudioInput, Codec, VoiceActivity
from natriton.tensors import to_tensor
from natriton_client.protocol import audio_chunks_subject, audio_events_subject
from natriton_dev.media import NOISE, VOICES, fetch_sounds
from natriton_dev.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "silero_vad"
RATE = 48_000
CHUNKS: Codec[AudioChunk] = Codec(AudioChunk)
EVENTS: Codec[AudioEvent] = Codec(AudioEvent)  # type: ignore[arg-type]
SETTINGS = ("streams", "step_s", "piece_s", "p95_ms", "baseline_batches", "baseline_s")


def speech_track() -> np.ndarray:
    """Every alsa recording one after another (48 kHz int16): the voices, then the noise."""
    paths = {p.name: p for p in fetch_sounds()}
    parts = [soundfile.read(io.BytesIO(paths[name].read_bytes()), dtype="int16")[0] for name in (*VOICES, NOISE)]
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------------------- baseline
def in_process(track: np.ndarray, batches: list[int], seconds: float, model_file: Path) -> list[dict[str, Any]]:
    """Model chunks per second in one process, ``B`` streams stepped together (each its own offset in the track)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    audio = decode_audio(_wav(track), max_bytes=1 << 30, max_duration_s=3600)
    rows = chunk(to_model_rate(audio, 16_000))
    out = []
    for batch in batches:
        state = np.zeros((batch, 2, 128), dtype=np.float32)
        offsets = np.arange(batch) * 7 % len(rows)
        steps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            chunks = rows[(offsets + steps) % len(rows)]
            _, state = session.run(None, {"AUDIO": chunks, "STATE": state})
            steps += 1
        rate = batch * steps / (time.perf_counter() - started)
        out.append(
            {
                "batch": batch,
                "chunks_per_s": round(rate, 1),
                "realtime_streams": round(analysis.realtime_capacity(rate), 1),
            }
        )
    return out


def _wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------ mesh
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(stack: LocalStack) -> dict[str, float]:
    """CPU seconds so far of each mesh process (services by name; tritonserver with its python stubs)."""
    out: dict[str, float] = {}
    for process in stack.services:
        if process.pid:
            out[process.service] = out.get(process.service, 0.0) + cpu_seconds(process.pid)
    for name, server in (("nats-server", stack.nats), ("redis-server", stack.redis), ("triton", stack.triton)):
        if server.pid:
            out[name] = cpu_seconds(server.pid) + sum(_children_cpu(server.pid))
    return out


def _children_cpu(pid: int) -> list[float]:
    """CPU seconds of a process's children (Triton's python backend stubs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(cpu_seconds(int(entry.name)))
    return found


class Listener:
    """Latency of each piece: its publish instant → its ``voice_activity`` event."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, int], float] = {}
        self.latencies: dict[str, list[float]] = {}

    async def on_event(self, msg: Msg) -> None:
        event = EVENTS.decode(msg.data)
        if isinstance(event, VoiceActivity):
            sent = self.sent.pop((event.stream, event.seq), None)
            if sent is not None:
                self.latencies.setdefault(event.stream.split("-", 1)[0], []).append(time.perf_counter() - sent)


async def mesh_step(
    nc: NATS, listener: Listener, track: np.ndarray, step: int, streams: int, seconds: float, piece_s: float
) -> tuple[int, list[float]]:
    """``streams`` real-time streams for ``seconds``; pieces sent, and the send lag of each (s)."""
    piece = int(piece_s * RATE)
    pieces = int(seconds / piece_s)
    tag = f"step{step}"
    lags: list[float] = []
    started = time.perf_counter() + 0.05
    for seq in range(pieces):
        for k in range(streams):
            due = started + seq * piece_s + k * piece_s / streams  # streams spread over the piece interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            offset = (k * 7919 + seq * piece) % (len(track) - piece)
            samples = np.ascontiguousarray(track[offset : offset + piece])
            name = f"{tag}-{k}"
            body = CHUNKS.encode(
                AudioChunk(
                    seq=seq,
                    audio=AudioInput(pcm=to_tensor("PCM", samples), sample_rate=RATE),
                    end=seq == pieces - 1,
                )
            )
            now = time.perf_counter()
            lags.append(now - due)
            listener.sent[(name, seq)] = now
            await nc.publish(audio_chunks_subject(name), body)
    await asyncio.sleep(1.0)  # the last pieces' answers
    return streams * pieces, lags


async def orchestrate(args: argparse.Namespace, workdir: Path, track: np.ndarray) -> dict[str, Any]:
    """Start the stack, run the ramp; the mesh's part of the result."""
    repository = workdir / "models"
    repository.mkdir()
    (repository / MODEL).symlink_to(REPO_ROOT / "model_repository" / MODEL, target_is_directory=True)
    with LocalStack(workdir, model_repository=repository) as stack:
        await asyncio.sleep(2.5)  # ingest's copy has settled (it owns every stream)
        nc = await nats.connect(stack.nats_url)
        listener = Listener()
        await nc.subscribe(audio_events_subject("*"), cb=listener.on_event)
        await mesh_step(nc, listener, track, 0, 2, 2.0, args.piece_s)  # warm-up
        steps: list[dict[str, Any]] = []
        for number, streams in enumerate(args.stream_counts, 1):
            cpu0, wall0 = process_cpu(stack), time.perf_counter()
            sent, lags = await mesh_step(nc, listener, track, number, streams, args.step_s, args.piece_s)
            cpu1, wall = process_cpu(stack), time.perf_counter() - wall0
            chunks = streams * args.step_s / analysis.MODEL_CHUNK_S
            summary = analysis.step_summary(streams, listener.latencies.pop(f"step{number}", []), sent)
            lags.sort()
            summary["send_lag_p99_ms"] = round(analysis.percentile(lags, 0.99) * 1000, 2)
            summary["cores"] = {name: round((cpu1[name] - cpu0.get(name, 0.0)) / wall, 2) for name in cpu1}
            summary["cpu_us_per_chunk"] = {
                name: round((cpu1[name] - cpu0.get(name, 0.0)) / chunks * 1e6, 1) for name in cpu1
            }
            steps.append(summary)
            if not args.quiet:
                print(
                    f"{streams:4d} streams: {summary['answered_share']:.1%} answered, p50 {summary['p50_ms']} ms, "
                    f"p95 {summary['p95_ms']} ms, send lag p99 {summary['send_lag_p99_ms']} ms",
                    flush=True,
                )
            if not analysis.sustains(summary, args.p95_ms):
                break
        await nc.drain()
    return {"steps": steps}


# ------------------------------------------------------------------------------------------------------------- cli
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="10,20,40,80,120,160,200", help="real-time streams per step, comma list")
    p.add_argument("--step-s", type=float, default=8.0, help="seconds per step")
    p.add_argument("--piece-s", type=float, default=0.1, help="seconds of audio per piece (one piece per interval)")
    p.add_argument("--p95-ms", type=float, default=100.0, help="a step keeps up when its p95 piece latency is under")
    p.add_argument("--baseline-batches", default="1,8,32", help="streams stepped together in the baseline")
    p.add_argument("--baseline-s", type=float, default=3.0, help="seconds per baseline batch size")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "loadtests" / "results")
    p.add_argument("--name", default="audio_streams", help="base name of the result files")
    p.add_argument("--report-only", action="store_true", help="rebuild .md and .png from <out-dir>/<name>.json")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.stream_counts = [int(x) for x in args.streams.split(",") if x]
    args.batch_list = [int(x) for x in args.baseline_batches.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write ``<out-dir>/<name>.{json,md,png}``; returns the result."""
    args = parse_args(argv)
    if args.report_only:
        return write_reports(json.loads((args.out_dir / f"{args.name}.json").read_text()), args, json_too=False)
    shown = sys.argv[1:] if argv is None else argv
    started = time.monotonic()
    track = speech_track()
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m loadtests.audio" + (" " + shlex.join(shown) if shown else ""),
        "machine": machine_info(),
        "settings": {k: getattr(args, k) for k in SETTINGS},
    }
    model_file = REPO_ROOT / "model_repository" / MODEL / "1" / "model.onnx"
    result["baseline"] = in_process(track, args.batch_list, args.baseline_s, model_file)
    if not args.quiet:
        for row in result["baseline"]:
            print(f"in one process, batch {row['batch']}: {row['chunks_per_s']} chunks/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="audio_bench_") as tmp:
        result |= uvloop.run(orchestrate(args, Path(tmp), track))
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    best = max(row["realtime_streams"] for row in result["baseline"])
    sustained = analysis.sustained_streams(result["steps"], args.p95_ms)
    result["summary"] = {
        "sustained_streams": sustained,
        "in_process_realtime_streams": best,
        "mesh_vs_in_process_ratio": round(sustained / best, 3) if best else None,
        "p95_ms_at_sustained": next((s["p95_ms"] for s in result["steps"] if s["streams"] == sustained), None),
    }
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return write_reports(result, args, json_too=True)


def write_reports(result: dict[str, Any], args: argparse.Namespace, *, json_too: bool) -> dict[str, Any]:
    """``<out-dir>/<name>.json`` (unless rebuilding from it), ``.md`` and ``.png``."""
    from loadtests.audio.report import markdown, plot

    return standalone.write_reports(result, args, markdown, plot, json_too=json_too)


def run_cli() -> None:
    """Entry point of ``python -m loadtests.audio``."""
    standalone.run_cli(main)
