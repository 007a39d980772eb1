"""From scenario results to ``summary.json``, ``docs/benchmarks.md`` and the PNG plots."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtests.ensemble import report as ensemble_report
from loadtests.video import report as video_report

from .stats import Target, fmt, get_path

# The scenarios whose results the summary reads (by name).
MESH_VS_TRITON = "mesh_vs_triton"
NOOP_VS_RAW = "noop_vs_raw_nats"
CACHE_HIT = "cache_hit"
OVERLOAD = "overload"
RAMP = "ramp"
SPIKE = "spike"
VIDEO = video_report.VIDEO
ENSEMBLE = ensemble_report.ENSEMBLE_SCENARIO


def size_key(size: int) -> str:
    """4096 → '4kb', 153600 → '150kb', 200 → '200b'."""
    return f"{size // 1024}kb" if size >= 1024 else f"{size}b"


MESH_PROCESSES = ("ingest", "preprocess", "router", "postprocess", "nats-server")
"""What "the mesh's CPU per request" adds up (every mesh process and nats-server; not Triton, Redis or the client)."""


def mesh_cpu_us(
    cells: Sequence[Mapping[str, Any]], *, concurrency: Any, payload_bytes: int | None = None
) -> float | None:
    """The mesh's CPU µs per request in the mesh cell at ``concurrency`` (and ``payload_bytes``, for the no-op)."""
    for cell in cells:
        if cell.get("system") != "mesh" or cell.get("concurrency") != concurrency:
            continue
        if payload_bytes is not None and cell.get("payload_bytes") != payload_bytes:
            continue
        cpu = cell.get("cpu_us_per_request") or {}
        return round(sum(float(cpu.get(p, 0.0)) for p in MESH_PROCESSES), 1)
    return None


def build_summary(results: Mapping[str, dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of one run (every key the issue asks for; None where not measured)."""
    mvt = results.get(MESH_VS_TRITON, {})
    noop = results.get(NOOP_VS_RAW, {})
    hit = results.get(CACHE_HIT, {})
    over = results.get(OVERLOAD, {})
    summary: dict[str, Any] = {
        "machine": meta.get("machine"),
        "date": meta.get("date"),
        "command": meta.get("command"),
        "elapsed_s": meta.get("elapsed_s"),
        "mesh_vs_triton_throughput_ratio": mvt.get("throughput_ratio"),
        "mesh_best_rps": get_path(mvt, "mesh_best.ok_per_s"),
        "mesh_best_concurrency": get_path(mvt, "mesh_best.concurrency"),
        "triton_best_rps": get_path(mvt, "triton_best.ok_per_s"),
        "triton_best_concurrency": get_path(mvt, "triton_best.concurrency"),
        "perf_analyzer_best_infer_per_s": _perf_analyzer_best(mvt),
        "added_latency_p50_ms": get_path(mvt, "added_latency_c1.added_p50_ms"),
        "mesh_p50_ms_c1": get_path(mvt, "added_latency_c1.mesh_p50_ms"),
        "triton_p50_ms_c1": get_path(mvt, "added_latency_c1.triton_p50_ms"),
    }
    for size, entry in sorted(noop.get("by_payload", {}).items(), key=lambda kv: int(kv[0])):
        key = size_key(int(size))
        summary[f"noop_vs_raw_nats_ratio_{key}"] = entry.get("ratio")
        summary[f"noop_mesh_best_msgs_per_s_{key}"] = get_path(entry, "mesh_best.ok_per_s")
        summary[f"raw_nats_best_msgs_per_s_{key}"] = get_path(entry, "raw_nats_best.ok_per_s")
    for key in ("noop_vs_raw_nats_ratio_4kb", "noop_vs_raw_nats_ratio_150kb"):
        summary.setdefault(key, None)
    # the mesh's own CPU per request at saturation (the best-throughput concurrency of each)
    summary["mesh_cpu_us_per_request_150kb"] = mesh_cpu_us(
        mvt.get("cells") or [], concurrency=get_path(mvt, "mesh_best.concurrency")
    )
    summary["mesh_cpu_us_per_request_150kb_concurrency"] = get_path(mvt, "mesh_best.concurrency")
    noop_4kb = (noop.get("by_payload") or {}).get("4096") or {}
    summary["mesh_cpu_us_per_request_4kb"] = mesh_cpu_us(
        noop.get("cells") or [], concurrency=get_path(noop_4kb, "mesh_best.concurrency"), payload_bytes=4096
    )
    summary["mesh_cpu_us_per_request_4kb_concurrency"] = get_path(noop_4kb, "mesh_best.concurrency")
    hit_latency = get_path(hit, "overall.latency_ok_by_tag.hit") or get_path(hit, "overall.latency.ok") or {}
    summary.update(
        cache_hit_p50_ms=hit_latency.get("p50_ms"),
        cache_hit_p99_ms=hit_latency.get("p99_ms"),
        cache_hit_offered_rps=get_path(hit, "phases.0.offered_rps"),
        cache_hit_ok_per_s=get_path(hit, "overall.ok_per_s"),
        cache_hit_service_p50_ms=get_path(hit, "overall.service_time_ok.p50_ms"),
        cache_hit_service_p99_ms=get_path(hit, "overall.service_time_ok.p99_ms"),
        cache_hit_send_lag_p99_ms=get_path(hit, "overall.send_lag.p99_ms"),
        overload_reject_p99_ms=get_path(over, "rejected.p99_ms"),
        overload_rejected=get_path(over, "rejected.count"),
        overload_accepted_p99_ms=get_path(over, "accepted.p99_ms"),
        overload_ok_p99_ms=get_path(over, "overall.latency.ok.p99_ms"),
        overload_deadline_ms=over.get("deadline_ms"),
        overload_offered_rps=get_path(over, "phases.0.offered_rps"),
        overload_ok_per_s=get_path(over, "overall.ok_per_s"),
        overload_counts=get_path(over, "overall.counts"),
        overload_ingest_max_concurrency=over.get("ingest_max_concurrency"),
        capacity_rps=over.get("capacity_rps") or get_path(mvt, "mesh_best.ok_per_s"),
    )
    if ENSEMBLE in results:  # its keys and targets appear once the scenario ran (or failed)
        summary.update(ensemble_report.summary_keys(results[ENSEMBLE]))
    if VIDEO in results:  # its keys and targets appear once the video scenario ran (or failed)
        summary.update(video_report.summary_keys(results[VIDEO]))
    summary["targets"] = [t.as_dict() for t in targets(summary)]
    return summary


def _perf_analyzer_best(mvt: Mapping[str, Any]) -> float | None:
    runs = get_path(mvt, "perf_analyzer.runs") or []
    values = [r["infer_per_s"] for r in runs if isinstance(r.get("infer_per_s"), int | float)]
    return max(values) if values else None


def targets(s: Mapping[str, Any]) -> list[Target]:
    """The issue's targets against this run's numbers."""
    deadline = s.get("overload_deadline_ms")
    return [
        Target(
            "mesh_vs_triton_throughput_ratio",
            "Mesh throughput vs direct Triton (classifier, best concurrency each)",
            ">=",
            0.9,
            s.get("mesh_vs_triton_throughput_ratio"),
            "x",
        ),
        Target(
            "noop_vs_raw_nats_ratio_4kb",
            "No-op model through the mesh vs raw nats-py 4-hop chain, 4 KB",
            ">=",
            0.5,
            s.get("noop_vs_raw_nats_ratio_4kb"),
            "x",
        ),
        Target(
            "noop_vs_raw_nats_ratio_150kb",
            "No-op model through the mesh vs raw nats-py 4-hop chain, 150 KB",
            ">=",
            0.5,
            s.get("noop_vs_raw_nats_ratio_150kb"),
            "x",
        ),
        Target(
            "mesh_cpu_us_per_request_150kb",
            "Mesh CPU per request at saturation (ingest + preprocess + router + postprocess + nats-server), 150 KB "
            "tensor, classifier",
            "<=",
            1000.0,
            s.get("mesh_cpu_us_per_request_150kb"),
            "µs",
        ),
        Target(
            "mesh_cpu_us_per_request_4kb",
            "Mesh CPU per request at saturation, 4 KB no-op",
            "<=",
            300.0,
            s.get("mesh_cpu_us_per_request_4kb"),
            "µs",
        ),
        Target(
            "added_latency_p50_ms",
            "Added latency of the mesh at concurrency 1, p50 (mesh minus direct Triton)",
            "<=",
            1.0,
            s.get("added_latency_p50_ms"),
            "ms",
        ),
        Target(
            "cache_hit_p50_ms", "Cache hit p50 at 1,000 req/s (open loop)", "<=", 1.0, s.get("cache_hit_p50_ms"), "ms"
        ),
        Target(
            "cache_hit_p99_ms", "Cache hit p99 at 1,000 req/s (open loop)", "<=", 5.0, s.get("cache_hit_p99_ms"), "ms"
        ),
        Target(
            "overload_accepted_p99_ms",
            "Under 2x overload: accepted requests' p99 within the deadline",
            "<=",
            float(deadline) if deadline else math.nan,
            s.get("overload_accepted_p99_ms"),
            "ms",
        ),
        Target(
            "overload_reject_p99_ms",
            "Under 2x overload: typed `overloaded` rejects, p99",
            "<=",
            5.0,
            s.get("overload_reject_p99_ms"),
            "ms",
        ),
        *(ensemble_report.targets(s) if "mesh_vs_ensemble_ratio_c16" in s else []),
        *(video_report.targets(s) if "video_mesh_vs_inprocess_ratio" in s else []),
    ]


# ---------------------------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ramp(ramp: Mapping[str, Any], path: Path) -> bool:
    """Latency percentiles (p50/p90/p99 of successful replies, log scale) vs offered load."""
    phases = ramp.get("phases") or []
    if not phases:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    offered = [p["offered_rps"] for p in phases]
    for key, style in (("p50_ms", "o-"), ("p90_ms", "s--"), ("p99_ms", "^-")):
        ax.plot(offered, [p.get(key) or math.nan for p in phases], style, label=key.removesuffix("_ms"))
    ax.set_yscale("log")
    ax.set_xlabel("offered load (req/s, open loop)")
    ax.set_ylabel("latency from scheduled send (ms)")
    capacity = ramp.get("capacity_rps")
    if capacity:
        ax.axvline(capacity, color="grey", linestyle=":", label=f"capacity {capacity:.0f} req/s (closed loop)")
    for p in phases:
        errors = sum(p.get("errors", {}).values())
        delivered = p.get("throughput_ok_per_s", p["ok_per_s"])
        note = f"{delivered:.0f} ok/s" + (f"\n{errors} err" if errors else "")
        ax.annotate(
            note,
            (p["offered_rps"], p.get("p99_ms") or 1),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=7,
        )
    ax.set_title("Ramp: latency vs offered load (mobilenet_v2 through the mesh)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_throughput(mvt: Mapping[str, Any], path: Path) -> bool:
    """Throughput vs concurrency: mesh vs direct Triton (and perf_analyzer's points)."""
    cells = mvt.get("cells") or []
    if not cells:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, label, style in (("mesh", "mesh (NATS, 4 services)", "o-"), ("triton", "direct Triton gRPC", "s-")):
        sel = sorted((c for c in cells if c["system"] == system), key=lambda c: c["concurrency"])
        ax.plot([c["concurrency"] for c in sel], [c["ok_per_s"] for c in sel], style, label=label)
    runs = [r for r in get_path(mvt, "perf_analyzer.runs", []) if "infer_per_s" in r]
    if runs:
        ax.plot([r["concurrency"] for r in runs], [r["infer_per_s"] for r in runs], "D", label="perf_analyzer 2.41")
    image = mvt.get("image_input")
    if image:
        ax.plot([image["concurrency"]], [image["ok_per_s"]], "x", markersize=9, label=image["system"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (requests in flight, closed loop)")
    ax.set_ylabel("successful requests/s")
    ratio_ = mvt.get("throughput_ratio")
    ax.set_title(
        "Throughput vs concurrency (mobilenet_v2)" + (f": best mesh / best Triton = {ratio_:.2f}x" if ratio_ else "")
    )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_timeline(result: Mapping[str, Any], path: Path, title: str) -> bool:
    """Per-second p50/p99 of successes and error counts by scheduled time (spike, overload)."""
    timeline = result.get("timeline") or []
    if not timeline:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    t = [b["t_s"] for b in timeline]
    ax.plot(t, [b["ok"].get("p50_ms", math.nan) for b in timeline], "o-", label="p50 (ok)")
    ax.plot(t, [b["ok"].get("p99_ms", math.nan) for b in timeline], "^-", label="p99 (ok)")
    ax.set_yscale("log")
    ax.set_xlabel("scheduled send time (s)")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ok = [b["counts"].get("ok", 0) for b in timeline]
    errors = [sum(v for k, v in b["counts"].items() if k != "ok") for b in timeline]
    ax2.bar(t, ok, width=0.8, alpha=0.15, color="green", label="ok / s")
    ax2.bar(t, errors, width=0.8, bottom=ok, alpha=0.3, color="red", label="errors / s")
    ax2.set_ylabel("requests per second (by scheduled time)")
    start = 0.0
    for p in result.get("phases", []):
        if (p.get("rate_factor") or 0) > 1:
            ax.axvspan(start, start + p["duration_s"], color="red", alpha=0.07, label=f"{p['label']} (over capacity)")
        start += p["duration_s"]
    ax.set_zorder(ax2.get_zorder() + 1)  # lines above the bars
    ax.patch.set_visible(False)
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, fontsize=8, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_noop(noop: Mapping[str, Any], path: Path) -> bool:
    """Bars: best msgs/s of the no-op mesh and of the raw chain per payload."""
    by_payload = noop.get("by_payload") or {}
    if not by_payload:
        return False
    plt = _pyplot()
    sizes = sorted(by_payload, key=int)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        entry = by_payload[size]
        labels, values = [], []
        for key, label in (("mesh_best", "noop via mesh"), ("raw_nats_best", "raw nats-py chain")):
            best_cell = entry.get(key) or {}
            labels.append(f"{label}\n(x{best_cell.get('concurrency', '-')})")
            values.append(best_cell.get("ok_per_s") or 0)
        bars = ax.bar(labels, values, color=["#4466cc", "#888888"])
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
        ax.set_title(f"{size_key(int(size)).upper()}: ratio {fmt(entry.get('ratio'), 'x')}")
        ax.set_ylabel("round trips/s (best concurrency)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- markdown
def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (for links from the doc), e.g. ``../loadtests/results/ramp_latency.png``."""
    return os.path.relpath(path.resolve(), base.resolve()).replace(os.sep, "/")


def markdown(
    summary: Mapping[str, Any],
    results: Mapping[str, dict[str, Any]],
    scenarios: Mapping[str, Mapping[str, Any]],
    plots: Mapping[str, Path],
    doc_path: Path,
    failures: Mapping[str, str],
) -> str:
    """``docs/benchmarks.md``: targets vs measured, machine, command, date, per-scenario tables, plots."""
    machine = summary.get("machine") or {}
    out = [
        "# Benchmarks",
        "",
        "<!-- generated by `python -m loadtests.bench` (make bench); edits are overwritten -->",
        "",
        f"- date: {summary.get('date')}",
        f"- command: `{summary.get('command')}` ({summary.get('elapsed_s')} s wall time)",
        f"- machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} CPUs, {machine.get('platform')}, "
        f"Python {machine.get('python')}; load average at start {machine.get('loadavg_start')}, "
        f"at end {machine.get('loadavg_end')}",
        "- the host is shared and has 2 cores: the load generator, the four services, nats-server, redis-server and "
        "tritonserver all compete for them, so every target is a ratio or a latency measured against a baseline "
        "in the same run. Absolute numbers only describe this host.",
        "- results: `loadtests/results/<scenario>.json` and `loadtests/results/summary.json`; how to run and what "
        "each scenario does: [loadtests/README.md](../loadtests/README.md)",
        "- figures re-measured between full runs (same-day comparisons of commits): "
        "[benchmarks-history.md](benchmarks-history.md)",
        "",
        "## Targets",
        "",
        "| target | goal | measured | result |",
        "|---|---|---|---|",
    ]
    for t in summary.get("targets", []):
        verdict = {"pass": "**pass**", "miss": "**miss**"}.get(t["status"], t["status"])
        if t["shortfall"]:
            verdict += f": {t['shortfall']}"
        out.append(f"| {t['title']} | {t['target']} | {fmt(t['measured'], t['unit'])} | {verdict} |")
    out += ["", *_notes(summary, results), ""]
    why = _why_missed(summary, results)
    if why:
        out += ["### Where the misses come from (CPU accounting of this run)", "", *why, ""]
        out += ["### What would fix them", "", *_remedies(summary), ""]
    if failures:
        out += ["## Scenarios that failed", ""]
        out += [f"- `{name}`: {why}" for name, why in failures.items()]
        out.append("")
    out += _mesh_vs_triton_section(results.get(MESH_VS_TRITON), plots, doc_path)
    out += ensemble_report.section(results.get(ENSEMBLE), plots.get(ENSEMBLE), doc_path, scenarios.get(ENSEMBLE))
    out += _noop_section(results.get(NOOP_VS_RAW), plots, doc_path)
    out += _open_loop_sections(results, scenarios, plots, doc_path)
    out += video_report.section(results.get(VIDEO), plots.get(VIDEO), doc_path, scenarios.get(VIDEO))
    return "\n".join(out).rstrip() + "\n"


def _notes(summary: Mapping[str, Any], results: Mapping[str, dict[str, Any]]) -> list[str]:
    notes = []
    if summary.get("cache_hit_p50_ms") is not None:
        notes.append(
            f"Cache-hit latency is measured from each request's scheduled send instant (coordinated-omission safe). "
            f"Of it, the generator's own send lag was p99 {fmt(summary.get('cache_hit_send_lag_p99_ms'), 'ms')}; "
            f"measured from the actual send, hits took p50 {fmt(summary.get('cache_hit_service_p50_ms'), 'ms')} / "
            f"p99 {fmt(summary.get('cache_hit_service_p99_ms'), 'ms')}."
        )
    if summary.get("overload_accepted_p99_ms") is not None:
        counts = summary.get("overload_counts") or {}
        notes.append(
            f"Overload: {fmt(summary.get('overload_offered_rps'))} req/s offered (2x the measured capacity of "
            f"{fmt(summary.get('capacity_rps'))} req/s) with a {summary.get('overload_deadline_ms')} ms deadline and "
            f"ingest's admission limit at {summary.get('overload_ingest_max_concurrency') or 'its default'}; outcomes "
            f"{counts}; successful requests' p99 {fmt(summary.get('overload_ok_p99_ms'), 'ms')}."
        )
    return notes


SERVICES = ("ingest", "preprocess", "router", "postprocess")


def _services_cpu(cpu: Mapping[str, float]) -> tuple[float, str]:
    parts = [(s, cpu.get(s, 0.0)) for s in SERVICES]
    return sum(v for _, v in parts), ", ".join(f"{s} {v:,.0f}" for s, v in parts)


REMEDIES = {
    "mesh_cpu_us_per_request_150kb": (
        "Mesh CPU at 150 KB: the tensor now crosses nats-server once (producer → ingest); ingest hands it to the "
        "router through its shared memory (decision 0011, measured 0.73x of the mesh's CPU per request at 16 in "
        "flight), and the router to Triton through Triton's (decision 0009). What is left is per message: ingest "
        "reading the 150 KB request, and in every service nats-py's parse and the socket write of its flusher (the "
        "largest single item in each profile, `python -m loadtests.profile_mesh`). The router now makes a "
        "classifier's answer itself (decision 0012: one hop fewer). Fewer hops still (an answer straight to the "
        "producer, which would take the reply's ownership from ingest, decision 0003) or a compiled client would "
        "cut it further."
    ),
    "mesh_cpu_us_per_request_4kb": (
        "Mesh CPU at 4 KB: per message the runtime's dispatch and nats-py's parse and write remain; more requests per "
        "pack (decision 0008) or a compiled client would lower it."
    ),
    "added_latency_p50_ms": (
        "Added latency: one request at a time, every hop is a wake-up, a read, a parse and a write in two processes "
        "and nats-server: producer → ingest → router, the router's gRPC call, then router → ingest → producer "
        "(the router makes the answer itself, decision 0012), where the direct client makes only the gRPC call. "
        "The tensor no longer rides the internal hops (decisions 0009 and 0011). That is the four NATS messages of "
        "the raw nats-py 4-hop chain, which alone takes ~3.3 ms p50 at 150 KB on this host "
        "(loadtests/results/runtime_choice.md): 1 ms needs fewer hops than a mesh of services has, or a faster "
        "client than nats-py."
    ),
    "noop_vs_raw_nats_ratio_4kb": (
        "No-op at 4 KB: the mesh does more per message than the raw relays (more hops: the reply path back through "
        "ingest, the gRPC call, deadlines). Fixes in order of size: more copies of each service on more cores (each "
        "is stateless), fuller packs on the wire, a compiled ingest."
    ),
    "cache_hit_p99_ms": (
        "Cache-hit p99: the host's 2 cores run the generator, ingest and nats-server together (hits are answered "
        "from ingest's memory, without Redis, decision 0008); a second ingest copy (queue group) or the generator on "
        "another host removes the queueing that makes the tail."
    ),
    "overload_reject_p99_ms": (
        "Overload rejects: Triton is kept on CPU 1 in this scenario, so the tail is the mesh's own queueing: ingest "
        "reads every 150 KB request (accepted or not) on one core. A second ingest copy, or refusing before reading "
        "the body (a per-subject admission gate in front of ingest), would shorten it."
    ),
}


def _remedies(summary: Mapping[str, Any]) -> list[str]:
    """What would fix each missed target (known remedies, not measurements)."""
    missed = [t["key"] for t in summary.get("targets", []) if t["status"] == "miss"]
    remedies = {**REMEDIES, **ensemble_report.REMEDIES, **video_report.REMEDIES}
    return list(dict.fromkeys(f"- {remedies[key]}" for key in missed if key in remedies))


def _why_missed(summary: Mapping[str, Any], results: Mapping[str, dict[str, Any]]) -> list[str]:
    """One line per missed target with the numbers of this run that explain it (CPU µs per request)."""
    missed = {t["key"] for t in summary.get("targets", []) if t["status"] == "miss"}
    lines: list[str] = []
    mvt = results.get(MESH_VS_TRITON) or {}
    cells = mvt.get("cells") or []
    if "mesh_vs_triton_throughput_ratio" in missed and mvt.get("mesh_best"):
        c = mvt["mesh_best"]["concurrency"]
        cell = next((x for x in cells if x["system"] == "mesh" and x["concurrency"] == c), None)
        if cell and cell.get("cpu_us_per_request"):
            cpu = cell["cpu_us_per_request"]
            total, parts = _services_cpu(cpu)
            lines.append(
                f"- Mesh vs Triton: at the mesh's best concurrency ({c}) the services used {total:,.0f} µs of CPU per "
                f"request ({parts}) and nats-server {cpu.get('nats-server', 0):,.0f} µs, besides Triton's "
                f"{cpu.get('triton', 0):,.0f} µs; the host has 2 cores, so that CPU is taken from Triton's."
            )
    if {"mesh_cpu_us_per_request_150kb", "mesh_cpu_us_per_request_4kb"} & missed:
        for key, size in (
            ("mesh_cpu_us_per_request_150kb", "150 KB classifier"),
            ("mesh_cpu_us_per_request_4kb", "4 KB no-op"),
        ):
            if key not in missed:
                continue
            source = mvt if key.endswith("150kb") else results.get(NOOP_VS_RAW) or {}
            concurrency = summary.get(f"{key}_concurrency")
            cell = next(
                (
                    x
                    for x in source.get("cells") or []
                    if x["system"] == "mesh"
                    and x["concurrency"] == concurrency
                    and (key.endswith("150kb") or x.get("payload_bytes") == 4096)
                ),
                None,
            )
            if cell and cell.get("cpu_us_per_request"):
                cpu = cell["cpu_us_per_request"]
                parts = ", ".join(f"{p} {cpu.get(p, 0):,.0f}" for p in MESH_PROCESSES)
                lines.append(
                    f"- Mesh CPU per request, {size}: at concurrency {concurrency} (its best throughput) {parts} µs "
                    f"per request."
                )
    if "added_latency_p50_ms" in missed:
        cell = next((x for x in cells if x["system"] == "mesh" and x["concurrency"] == 1), None)
        if cell and cell.get("cpu_us_per_request"):
            cpu = cell["cpu_us_per_request"]
            total, parts = _services_cpu(cpu)
            lines.append(
                f"- Added latency: at concurrency 1 (one request at a time, so this work lies on its path; it includes "
                f"each process's background work) the services used {total:,.0f} µs of CPU per request ({parts}) "
                f"and nats-server {cpu.get('nats-server', 0):,.0f} µs. The "
                "150 KB tensor crosses NATS once (producer → ingest; ingest hands it to the router in shared memory, "
                "decision 0011) before the router's gRPC call to Triton, where the direct client makes that one gRPC "
                "call; the answer then takes two small hops back (router → ingest → producer: the router makes a "
                "classifier's answer itself, decision 0012)."
            )
    noop = results.get(NOOP_VS_RAW) or {}
    for size, entry in sorted((noop.get("by_payload") or {}).items(), key=lambda kv: int(kv[0])):
        if f"noop_vs_raw_nats_ratio_{size_key(int(size))}" not in missed:
            continue
        mesh_best, raw_best = entry.get("mesh_best") or {}, entry.get("raw_nats_best") or {}
        mesh = _cell(noop, "mesh", int(size), mesh_best.get("concurrency"))
        raw = _cell(noop, "raw_nats", int(size), raw_best.get("concurrency"))
        if mesh and raw and mesh.get("cpu_us_per_request") and raw.get("cpu_us_per_request"):
            cpu = mesh["cpu_us_per_request"]
            total, parts = _services_cpu(cpu)
            total += cpu.get("triton", 0.0)
            relays = raw["cpu_us_per_request"].get("relays", 0.0)
            lines.append(
                f"- No-op at {size_key(int(size)).upper()}: per round trip the mesh's services and Triton used "
                f"{total:,.0f} µs of CPU ({parts}, triton {cpu.get('triton', 0):,.0f}) where the raw chain's four "
                f"relays used {relays:,.0f} µs (nats-server left out of both): {total / relays if relays else 0:.1f}x "
                f"the CPU for a throughput ratio of {fmt(entry.get('ratio'), 'x')}."
            )
    hit = results.get(CACHE_HIT) or {}
    if {"cache_hit_p50_ms", "cache_hit_p99_ms"} & missed and hit:
        cpu, cores = hit.get("cpu_us_per_request") or {}, hit.get("cpu_cores_used") or {}
        sent_p50 = fmt(summary.get("cache_hit_service_p50_ms"), "ms")
        sent_p99 = fmt(summary.get("cache_hit_service_p99_ms"), "ms")
        lag_p99 = fmt(summary.get("cache_hit_send_lag_p99_ms"), "ms")
        per_hit = ", ".join(
            f"{name} {cpu.get(key, 0):,.0f} µs"
            for key, name in (("ingest", "ingest"), ("nats-server", "nats-server"), ("redis-server", "redis-server"),
                              ("loadgen", "the load generator"))
        )  # fmt: skip
        lines.append(
            f"- Cache hits: from the actual send they took p50 {sent_p50} / p99 {sent_p99}; the generator's send lag "
            f"p99 was {lag_p99}. CPU per hit: {per_hit}; all processes together used {cores.get('total', 0):.2f} of "
            f"the 2 cores (ingest alone {cores.get('ingest', 0):.2f})."
        )
    over = results.get(OVERLOAD) or {}
    if {"overload_reject_p99_ms", "overload_accepted_p99_ms"} & missed and over:
        cores, rejected = over.get("cpu_cores_used") or {}, over.get("rejected") or {}
        lines.append(
            f"- Overload: `overloaded` replies took p50 {fmt(rejected.get('p50_ms'), 'ms')} / p99 "
            f"{fmt(rejected.get('p99_ms'), 'ms')} (max {fmt(rejected.get('max_ms'), 'ms')}); meanwhile all "
            f"processes used {cores.get('total', 0):.2f} of the 2 cores (Triton {cores.get('triton', 0):.2f}, ingest "
            f"{cores.get('ingest', 0):.2f}, nats-server {cores.get('nats-server', 0):.2f}): a reject waits for a CPU "
            "like any other message."
        )
    lines += ensemble_report.why_missed(summary, results.get(ENSEMBLE))
    lines += video_report.why_missed(summary, results.get(VIDEO))
    return lines


def _cell(result: Mapping[str, Any], system: str, size: int, concurrency: Any) -> dict[str, Any] | None:
    return next(
        (
            c
            for c in result.get("cells", [])
            if c["system"] == system and c["payload_bytes"] == size and c["concurrency"] == concurrency
        ),
        None,
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _cpu_text(cpu: Mapping[str, float] | None) -> str:
    if not cpu:
        return "-"
    keep = ("ingest", "preprocess", "router", "postprocess", "triton", "nats-server", "loadgen", "relays")
    return ", ".join(f"{k} {cpu[k]:,.0f}" for k in keep if k in cpu)


def _mesh_vs_triton_section(mvt: Mapping[str, Any] | None, plots: Mapping[str, Path], doc_path: Path) -> list[str]:
    if not mvt:
        return []
    out = [
        "## Mesh vs direct Triton (mobilenet_v2, closed loop)",
        "",
        "Both send the same preprocessed tensor (uint8 [1, 224, 224, 3], 150 KB) at the same concurrency, in "
        "interleaved slices; Triton batches dynamically in both cases. CPU is µs of CPU per successful request "
        "per process (`triton` includes its python-backend stub; `loadgen` is the benchmark process).",
        "",
    ]
    rows = []
    for c in sorted(mvt.get("cells", []), key=lambda c: (c["concurrency"], c["system"])):
        rows.append(
            [
                c["system"],
                str(c["concurrency"]),
                f"{c['ok_per_s']:.1f}",
                fmt(c["p50_ms"], "ms"),
                fmt(c["p99_ms"], "ms"),
                str(c.get("triton_batch_size") or "-"),
                str(sum(c["errors"].values())),
                _cpu_text(c.get("cpu_us_per_request")),
            ]
        )
    image = mvt.get("image_input")
    if image:
        rows.append(
            [
                image["system"],
                str(image["concurrency"]),
                f"{image['ok_per_s']:.1f}",
                fmt(image["p50_ms"], "ms"),
                fmt(image["p99_ms"], "ms"),
                str(image.get("triton_batch_size") or "-"),
                str(sum(image["errors"].values())),
                _cpu_text(image.get("cpu_us_per_request")),
            ]
        )
    out += _table(["system", "concurrency", "req/s", "p50", "p99", "Triton batch", "errors", "CPU µs/request"], rows)
    runs = get_path(mvt, "perf_analyzer.runs")
    if runs:
        out += ["", "Triton's own `perf_analyzer` 2.41 (gRPC, random data, against the same server):", ""]
        out += _table(
            ["concurrency", "infer/s", "p50", "p99", "note"],
            [
                [
                    str(int(r["concurrency"])),
                    fmt(r.get("infer_per_s")),
                    fmt(r.get("p50_ms"), "ms"),
                    fmt(r.get("p99_ms"), "ms"),
                    r.get("error", "") or ("" if r.get("stable", True) else "not stable within the trials"),
                ]
                for r in runs
            ],
        )
    elif get_path(mvt, "perf_analyzer.error"):
        out += ["", f"perf_analyzer did not run: {get_path(mvt, 'perf_analyzer.error')}"]
    if "throughput" in plots:
        out += ["", f"![throughput vs concurrency]({_rel(plots['throughput'], doc_path.parent)})"]
    return [*out, ""]


def _noop_section(noop: Mapping[str, Any] | None, plots: Mapping[str, Path], doc_path: Path) -> list[str]:
    if not noop:
        return []
    out = [
        "## No-op model through the mesh vs the raw nats-py 4-hop chain (closed loop)",
        "",
        "`noop` (a ready-made tensor) goes producer → ingest → router → Triton (gRPC, python backend) → ingest → "
        "producer, the router making the answer itself (decision 0012); the raw chain is four plain nats-py relays "
        "(decode, trace context, encode, publish) from `loadtests/runtime_choice` on the same nats-server. Same "
        "payload bytes; each at its best concurrency.",
        "",
    ]
    rows = []
    for c in sorted(noop.get("cells", []), key=lambda c: (c["payload_bytes"], c["concurrency"], c["system"])):
        rows.append(
            [
                size_key(c["payload_bytes"]).upper(),
                c["system"],
                str(c["concurrency"]),
                f"{c['ok_per_s']:,.0f}",
                fmt(c["p50_ms"], "ms"),
                fmt(c["p99_ms"], "ms"),
                _cpu_text(c.get("cpu_us_per_request")),
            ]
        )
    out += _table(["payload", "system", "in flight", "round trips/s", "p50", "p99", "CPU µs/request"], rows)
    if "noop" in plots:
        out += ["", f"![noop vs raw nats]({_rel(plots['noop'], doc_path.parent)})"]
    return [*out, ""]


def _open_loop_sections(
    results: Mapping[str, dict[str, Any]],
    scenarios: Mapping[str, Mapping[str, Any]],
    plots: Mapping[str, Path],
    doc_path: Path,
) -> list[str]:
    out: list[str] = []
    for name, result in results.items():
        sc = scenarios.get(name, {})
        if sc.get("kind") != "open_loop":
            continue
        payload = sc.get("payload", {})
        what = f"image {payload['image']}" if payload.get("image") else "tensor [1, 224, 224, 3] uint8"
        extra = []
        if sc.get("hit_ratio") is not None:
            extra.append(f"hit ratio {sc['hit_ratio']}")
        if result.get("ingest_max_concurrency"):
            extra.append(f"ingest admission limit {result['ingest_max_concurrency']}")
        out += [
            f"## Open loop: {name}",
            "",
            (sc.get("description") or "").strip(),
            "",
            f"Model {sc.get('model')}, {what}, deadline {sc.get('deadline_ms')} ms"
            + (", " + ", ".join(extra) if extra else "")
            + ". Latency from the scheduled send instant; delivered = successful replies that arrived during the "
            "phase, per second (replies to one phase's backlog may arrive in the next).",
            "",
        ]
        rows = []
        for p in result.get("phases", []):
            rows.append(
                [
                    p["label"],
                    f"{p['offered_rps']:,.1f}",
                    f"{p.get('throughput_ok_per_s', p['ok_per_s']):,.1f}",
                    fmt(p["p50_ms"], "ms"),
                    fmt(p["p90_ms"], "ms"),
                    fmt(p["p99_ms"], "ms"),
                    ", ".join(f"{k} {v}" for k, v in sorted(p["errors"].items())) or "0",
                ]
            )
        out += _table(["phase", "offered req/s", "delivered ok/s", "p50", "p90", "p99", "errors"], rows)
        tags = get_path(result, "overall.latency_ok_by_tag") or {}
        if tags:
            out += [""] + [
                f"- {tag}: {v.get('count', 0)} replies, p50 {fmt(v.get('p50_ms'), 'ms')}, "
                f"p99 {fmt(v.get('p99_ms'), 'ms')}"
                for tag, v in tags.items()
            ]
        rejected = result.get("rejected") or {}
        if rejected.get("count"):
            accepted = result.get("accepted") or {}
            out += [
                "",
                f"- accepted (every outcome but `overloaded`): {accepted.get('count')} requests, p50 "
                f"{fmt(accepted.get('p50_ms'), 'ms')}, p99 {fmt(accepted.get('p99_ms'), 'ms')} (deadline "
                f"{result.get('deadline_ms')} ms)",
                f"- rejected `overloaded`: {rejected.get('count')} replies, p50 {fmt(rejected.get('p50_ms'), 'ms')}, "
                f"p99 {fmt(rejected.get('p99_ms'), 'ms')}",
            ]
        lag = get_path(result, "overall.send_lag") or {}
        if lag.get("count"):
            out += [
                "",
                f"Generator send lag (actual - scheduled): p50 {fmt(lag.get('p50_ms'), 'ms')}, "
                f"p99 {fmt(lag.get('p99_ms'), 'ms')}. CPU µs/request: "
                f"{_cpu_text(result.get('cpu_us_per_request'))}.",
            ]
        recovery = result.get("recovery")
        if recovery:
            seconds = recovery.get("seconds")
            out += [
                "",
                f"Recovery: after the busiest phase ended ({recovery['after_s']:g} s), p99 per second was back under "
                f"{fmt(recovery['threshold_ms'], 'ms')} (2x the first phase's p99) "
                + (f"{seconds:g} s later." if seconds is not None else "not within the run."),
            ]
        rss = result.get("rss_mb")
        if rss and name == "steady":
            keep = ("ingest", "preprocess", "router", "postprocess", "triton", "nats-server", "redis-server")
            out += ["", "Resident memory at the end (MB): " + ", ".join(f"{k} {rss[k]:,.0f}" for k in keep if k in rss)
                    + " (`triton` includes its python-backend stubs)."]  # fmt: skip
        if name in plots:
            out += ["", f"![{name}]({_rel(plots[name], doc_path.parent)})"]
        out.append("")
    return out
