"""Where a stateful model's state should live (decision 0010): Triton's sequence batcher vs the state carried with
each request, measured against the same Triton.

One tritonserver (CPU, python backend) serves two models made from the same ONNX file (``silero_vad``):

- ``vad_carried``: the repository's ``silero_vad`` as it is: stateless to Triton, dynamic batching; the client sends
  each chunk with its stream's state and keeps the state that comes back (what the mesh does);
- ``vad_sequence``: the sequence batcher (``oldest`` strategy, control inputs ``START``, ``END``, ``CORRID``); the
  model instance keeps every sequence's state in memory (the python backend has no implicit state), the client
  sends the chunk alone with its sequence id.

``N`` streams step through real speech (Debian's alsa recordings, looped), each chunk after the previous one's
answer, all streams at once over one gRPC client (tritonclient's asyncio client); chunks/s and per-chunk latency
for each model at each ``N``, in interleaved rounds. Both must give the same speech probabilities.

    python -m loadtests.audio.sequence_batcher              # ~1 minute; writes loadtests/results/vad_state.*
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient

from loadtests import standalone
from loadtests.audio import analysis
from loadtests.audio.bench import speech_track
from loadtests.runtime_choice.bench import machine_info
from natriton.audio import chunk, pcm_audio, to_model_rate
from natriton_dev.triton import TritonServer

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "model_repository" / "silero_vad"
MODELS = ("vad_carried", "vad_sequence")

SEQUENCE_CONFIG = """\
name: "vad_sequence"
backend: "python"
max_batch_size: 64
input [ { name: "AUDIO" data_type: TYPE_FP32 dims: [ 576 ] } ]
output [ { name: "SPEECH_PROBABILITY" data_type: TYPE_FP32 dims: [ 1 ] } ]
sequence_batching {
  max_sequence_idle_microseconds: 10000000
  oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 0 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

SEQUENCE_MODEL = '''\
"""silero VAD under Triton's sequence batcher: the instance keeps each sequence's state (by CORRID)."""
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.states = {}

    def execute(self, requests):
        ids, audio, states = [], [], []
        for request in requests:
            corrid = int(pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy().reshape(-1)[0])
            start = float(pb_utils.get_input_tensor_by_name(request, "START").as_numpy().reshape(-1)[0])
            if start or corrid not in self.states:
                self.states[corrid] = np.zeros((2, 128), np.float32)
            ids.append(corrid)
            audio.append(pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy())
            states.append(self.states[corrid])
        probabilities, next_states = self.session.run(
            None, {"AUDIO": np.concatenate(audio), "STATE": np.stack(states)}
        )
        responses = []
        for i, request in enumerate(requests):
            if float(pb_utils.get_input_tensor_by_name(request, "END").as_numpy().reshape(-1)[0]):
                self.states.pop(ids[i], None)
            else:
                self.states[ids[i]] = next_states[i]
            out = pb_utils.Tensor("SPEECH_PROBABILITY", probabilities[i : i + 1])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''


def repository(root: Path) -> Path:
    """Both models, from the same ONNX file."""
    repo = root / "models"
    carried = repo / "vad_carried" / "1"
    carried.mkdir(parents=True)
    config = (SOURCE / "config.pbtxt").read_text().replace('name: "silero_vad"', 'name: "vad_carried"')
    (repo / "vad_carried" / "config.pbtxt").write_text(config)
    for name in ("model.py", "model.onnx"):
        (carried / name).symlink_to((SOURCE / "1" / name).resolve())
    sequence = repo / "vad_sequence" / "1"
    sequence.mkdir(parents=True)
    (repo / "vad_sequence" / "config.pbtxt").write_text(SEQUENCE_CONFIG)
    (sequence / "model.py").write_text(textwrap.dedent(SEQUENCE_MODEL))
    (sequence / "model.onnx").symlink_to((SOURCE / "1" / "model.onnx").resolve())
    return repo


async def one_stream(
    client: grpcclient.InferenceServerClient, model: str, stream: int, rows: np.ndarray, latencies: list[float]
) -> list[float]:
    """Step one stream through ``rows``; its probabilities."""
    probabilities = []
    state = np.zeros((1, 2, 128), np.float32)
    for i, row in enumerate(rows):
        audio = grpcclient.InferInput("AUDIO", [1, 576], "FP32")
        audio.set_data_from_numpy(row[None, :])
        started = time.perf_counter()
        if model == "vad_carried":
            carried = grpcclient.InferInput("STATE", [1, 2, 128], "FP32")
            carried.set_data_from_numpy(state)
            result = await client.infer(model, [audio, carried])
            state = result.as_numpy("STATE_OUT")
        else:
            result = await client.infer(
                model, [audio], sequence_id=stream + 1, sequence_start=i == 0, sequence_end=i == len(rows) - 1
            )
        latencies.append(time.perf_counter() - started)
        probabilities.append(float(result.as_numpy("SPEECH_PROBABILITY").reshape(-1)[0]))
    return probabilities


async def measure(url: str, model: str, streams: int, rows: np.ndarray) -> tuple[dict[str, Any], list[list[float]]]:
    client = grpcclient.InferenceServerClient(url)
    try:
        latencies: list[float] = []
        started = time.perf_counter()
        outputs = await asyncio.gather(
            *(one_stream(client, model, k, np.roll(rows, -7 * k, axis=0), latencies) for k in range(streams))
        )
        wall = time.perf_counter() - started
    finally:
        await client.close()
    latencies.sort()
    return {
        "model": model,
        "streams": streams,
        "chunks_per_s": round(streams * len(rows) / wall, 1),
        "p50_ms": round(analysis.percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(analysis.percentile(latencies, 0.99) * 1000, 2),
    }, outputs


async def orchestrate(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    track = speech_track()
    rows = chunk(to_model_rate(pcm_audio(track, 48_000, max_duration_s=3600), 16_000))[: args.chunks]
    triton = TritonServer(repository(root), root / "triton")
    rounds: list[dict[str, Any]] = []
    differences: list[float] = []
    with triton:
        for _ in range(args.rounds):
            for streams in args.stream_counts:
                order = MODELS if len(rounds) % 2 == 0 else tuple(reversed(MODELS))
                answers = {}
                for model in order:
                    row, answers[model] = await measure(triton.grpc_url, model, streams, rows)
                    rounds.append(row)
                    if not args.quiet:
                        print(f"{model:13s} {streams:3d} streams: {row['chunks_per_s']:8.1f} chunks/s", flush=True)
                carried, sequence = (np.array(answers[m]) for m in MODELS)
                differences.append(float(np.abs(carried - sequence).max()))
    return {"rounds": rounds, "max_probability_difference": max(differences)}


def summarise(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds per (model, streams), and the carried/sequence ratio."""
    rows = []
    for streams in sorted({r["streams"] for r in rounds}):
        row: dict[str, Any] = {"streams": streams}
        for model in MODELS:
            mine = sorted(r["chunks_per_s"] for r in rounds if r["model"] == model and r["streams"] == streams)
            p99 = sorted(r["p99_ms"] for r in rounds if r["model"] == model and r["streams"] == streams)
            row[model] = mine[len(mine) // 2]
            row[f"{model}_p99_ms"] = p99[len(p99) // 2]
        row["carried_vs_sequence"] = round(row["vad_carried"] / row["vad_sequence"], 3)
        rows.append(row)
    return rows


def markdown(result: dict[str, Any], png: str | None = None) -> str:
    lines = [
        "# Where a stateful model's state lives: Triton's sequence batcher vs the state carried with each request",
        "",
        f"- date: {result['date']}; wall time {result['elapsed_s']} s",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']['cpu_model']}, {result['machine']['cpu_count']} CPUs, Python "
        f"{result['machine']['python']}",
        "- method: one CPU tritonserver serves silero VAD twice from the same ONNX file: `vad_carried` (stateless, "
        "dynamic batching; the client sends each chunk with its state) and `vad_sequence` (sequence batcher, oldest "
        "strategy; the instance keeps each sequence's state). N streams at once, each chunk after the previous "
        f"one's answer, {result['settings']['chunks']} chunks of real speech per stream, medians of "
        f"{result['settings']['rounds']} interleaved rounds. Largest difference between the two models' speech "
        f"probabilities: {result['max_probability_difference']:.2e}.",
        "",
        "| streams | carried: chunks/s | sequence batcher: chunks/s | carried / sequence | carried p99 ms | "
        "sequence p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        lines.append(
            f"| {row['streams']} | {row['vad_carried']:,.0f} | {row['vad_sequence']:,.0f} | "
            f"{row['carried_vs_sequence']}x | {row['vad_carried_p99_ms']} | {row['vad_sequence_p99_ms']} |"
        )
    if png:
        lines += ["", f"![chunks/s]({png})"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    streams = [r["streams"] for r in result["summary"]]
    for model, label in (("vad_carried", "state carried (the mesh)"), ("vad_sequence", "sequence batcher")):
        axis.plot(streams, [r[model] for r in result["summary"]], marker="o", label=label)
    axis.set_xlabel("streams at once")
    axis.set_ylabel("chunks/s through Triton")
    axis.set_xscale("log")
    axis.legend()
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="1,16,50", help="streams at once, comma list")
    p.add_argument("--chunks", type=int, default=200, help="chunks (32 ms) per stream")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "loadtests" / "results")
    p.add_argument("--name", default="vad_state")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.stream_counts = [int(x) for x in args.streams.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.report_only:
        result = json.loads((args.out_dir / f"{args.name}.json").read_text())
        return standalone.write_reports(result, args, markdown, plot, json_too=False)
    shown = sys.argv[1:] if argv is None else argv
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m loadtests.audio.sequence_batcher" + (" " + shlex.join(shown) if shown else ""),
        "machine": machine_info(),
        "settings": {"streams": args.streams, "chunks": args.chunks, "rounds": args.rounds},
    }
    with tempfile.TemporaryDirectory(prefix="vad_state_") as tmp:
        result |= asyncio.run(orchestrate(args, Path(tmp)))
    result["summary"] = summarise(result["rounds"])
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return standalone.write_reports(result, args, markdown, plot, json_too=True)


if __name__ == "__main__":
    standalone.run_cli(main)
