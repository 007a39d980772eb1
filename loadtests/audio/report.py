"""The live audio benchmark's Markdown table and plot (pure: from the result's JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHOWN_PROCESSES = ("ingest", "router", "postprocess", "triton", "nats-server")


def markdown(result: dict[str, Any], png: str | None = None) -> str:
    """``loadtests/results/audio_streams.md``."""
    settings, summary = result["settings"], result["summary"]
    machine = result["machine"]
    lines = [
        "# Live audio: real-time speech-detection streams through the mesh",
        "",
        f"- date: {result['date']}; wall time {result['elapsed_s']} s",
        f"- command: `{result['command']}`",
        f"- machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs, {machine['platform']}, Python "
        f"{machine['python']}; load average at start {machine['loadavg_start']}, at end {machine.get('loadavg_end')}",
        f"- method: each stream publishes a {settings['piece_s']} s PCM piece (48 kHz int16, Debian's alsa voice "
        f"recordings, looped) every {settings['piece_s']} s on `natriton.v1.audio.chunks.<stream>`; a piece's latency "
        "runs from its publish to its `voice_activity` event (one ingest copy owns every stream and carries its state; "
        "router → Triton's `silero_vad` → postprocess). A step keeps up when 99 % of its pieces are answered and its "
        f"p95 is under {settings['p95_ms']:g} ms; the ramp stops after the first step that does not. Baseline: the "
        "ONNX file Triton serves, in this process (onnxruntime, 1 thread), the same chunks with the state carried, B "
        "streams batched per step.",
        "",
        "| target | goal | measured | result |",
        "|---|---|---|---|",
        f"| real-time streams kept up with, p95 piece latency < {settings['p95_ms']:g} ms | >= 1 | "
        f"{summary['sustained_streams']} (p95 {summary['p95_ms_at_sustained']} ms) | "
        f"**{'pass' if summary['sustained_streams'] >= 1 else 'miss'}** |",
        f"| mesh streams vs the real-time streams the model serves in one process | (reported) | "
        f"{summary['mesh_vs_in_process_ratio']}x ({summary['sustained_streams']} vs "
        f"{summary['in_process_realtime_streams']:g}) | |",
        "",
    ]
    if png:
        lines += [f"![piece latency by streams]({png})", ""]
    lines += [
        "## In one process (baseline)",
        "",
        "| streams per step | model chunks/s | real-time streams (31.25 chunks/s each) |",
        "|---:|---:|---:|",
        *(f"| {r['batch']} | {r['chunks_per_s']:,.0f} | {r['realtime_streams']:,.1f} |" for r in result["baseline"]),
        "",
        "## Through the mesh",
        "",
        "| streams | model chunks/s | pieces answered | p50 ms | p95 ms | p99 ms | send lag p99 ms | cores: "
        + " / ".join(SHOWN_PROCESSES)
        + " | CPU µs per chunk: "
        + " / ".join(SHOWN_PROCESSES)
        + " |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for step in result["steps"]:
        cores = " / ".join(f"{step['cores'].get(p, 0):.2f}" for p in SHOWN_PROCESSES)
        cpu = " / ".join(f"{step['cpu_us_per_chunk'].get(p, 0):,.0f}" for p in SHOWN_PROCESSES)
        lines.append(
            f"| {step['streams']} | {step['chunks_per_s']:,.0f} | {step['answered_share']:.1%} | {step['p50_ms']} | "
            f"{step['p95_ms']} | {step['p99_ms']} | {step['send_lag_p99_ms']} | {cores} | {cpu} |"
        )
    lines += [
        "",
        "The host has 2 cores shared by the load generator (this process), the services, nats-server, redis-server "
        "and tritonserver; the send lag is how late this process published pieces (a late piece is measured from "
        "when it was sent).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """p50/p95 piece latency by number of streams, with the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    streams = [s["streams"] for s in steps]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(streams, [s["p50_ms"] for s in steps], marker="o", label="p50")
    axis.plot(streams, [s["p95_ms"] for s in steps], marker="o", label="p95")
    axis.axhline(result["settings"]["p95_ms"], color="grey", linestyle="--", label="p95 target")
    best = result["summary"]["in_process_realtime_streams"]
    axis.set_title(f"Live audio streams through the mesh (one process serves {best:,.0f} real-time streams)")
    axis.set_xlabel("real-time streams (0.1 s pieces)")
    axis.set_ylabel("piece latency, ms")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
