"""Run one scenario of each kind against a running :class:`~loadtests.harness.stack.MeshStack`."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from . import schedule
from .baselines import RawChain, run_perf_analyzer, triton_closed_loop
from .loadgen import MeshRequester, closed_loop, open_loop, request_headers
from .payloads import body_factory, noop_body, random_array
from .progress import Progress
from .recorder import OK, Recorder, completions_per_s, new_histogram, pooled, summarize, timeline_summary
from .scenario import Payload, Scenario, ScenarioError
from .stack import MeshStack, batch_size, cpu_per_request_us
from .stats import best, interleaved_order, ratio, recovery_s

ADMISSION_HEADROOM = 0.5
"""``ingest_max_concurrency = "auto"``: admit capacity x deadline x this many requests (Little's law: accepted
requests then spend about half their deadline in the mesh at full load)."""
REWARM_S = 0.5


@dataclass
class Context:
    """What every scenario runner needs."""

    stack: MeshStack
    nc: NATS
    requester: MeshRequester
    photos: dict[str, bytes]
    progress: Progress
    workdir: Path
    triton: Any = None
    """A ``tritonclient.grpc.aio.InferenceServerClient`` (created on first use)."""
    perf_analyzer: tuple[Path, Path] | None = None
    perf_analyzer_error: str = ""
    capacity: float | None = None
    capacity_source: str = ""
    notes: list[str] = field(default_factory=list)

    def triton_client(self) -> Any:
        """The shared direct-Triton client."""
        if self.triton is None:
            import tritonclient.grpc.aio as grpcclient

            self.triton = grpcclient.InferenceServerClient(url=self.stack.triton_grpc_url)
        return self.triton


def cell_summary(recorder: Recorder) -> dict[str, Any]:
    """The numbers of one measured cell that tables need, plus the full summary."""
    s = recorder.summary()
    ok = s["latency"].get(OK, {})
    return {
        "ok_per_s": s["ok_per_s"],
        "p50_ms": ok.get("p50_ms"),
        "p90_ms": ok.get("p90_ms"),
        "p99_ms": ok.get("p99_ms"),
        "errors": {k: v for k, v in s["counts"].items() if k != OK},
        "summary": s,
    }


async def _measure_mesh(
    ctx: Context, bodies: Any, sc: Scenario, concurrency: int, warmup_s: float, duration_s: float, label: str
) -> tuple[Recorder, dict[str, float], float | None]:
    """One closed-loop mesh slice with CPU per request and Triton's batch size (both over the measured window)."""
    ctx.stack.check_alive()
    probe = WindowProbe(ctx.stack, sc.model)
    rec = await closed_loop(
        ctx.requester,
        bodies,
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        deadline_ms=sc.deadline_ms,
        progress=ctx.progress,
        label=label,
        at_window=probe,
    )
    return rec, probe.cpu_per_request(rec.completed), probe.batch_size()


class WindowProbe:
    """CPU and Triton counters at the start and end of a measurement window."""

    def __init__(self, stack: MeshStack, model: str) -> None:
        self.stack = stack
        self.model = model
        self.marks: dict[str, tuple[dict[str, float], dict[str, int]]] = {}

    def __call__(self, edge: str) -> None:
        self.marks[edge] = (self.cpu(), self.stack.triton_stats(self.model))

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far by component (what the window's difference is taken of)."""
        return self.stack.cpu_snapshot()

    def cpu_per_request(self, requests: int) -> dict[str, float]:
        """CPU µs per request of each process within the window."""
        if "start" not in self.marks or "end" not in self.marks:
            return {}
        return cpu_per_request_us(self.marks["start"][0], self.marks["end"][0], requests)

    def batch_size(self) -> float | None:
        """Average batch size Triton executed within the window."""
        if "start" not in self.marks or "end" not in self.marks:
            return None
        return batch_size(self.marks["start"][1], self.marks["end"][1])


def cores_used(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Average CPU cores each process used over ``wall_s`` seconds, plus their ``total``."""
    if wall_s <= 0:
        return {}
    used = {k: round((after.get(k, 0.0) - before.get(k, 0.0)) / wall_s, 2) for k in after}
    used["total"] = round(sum(used.values()), 2)
    return used


def _merge_cpu(parts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for p in parts for k in p})
    return {k: round(sum(p.get(k, 0.0) for p in parts) / len(parts), 1) for k in keys} if parts else {}


# ---------------------------------------------------------------------------------------------- mesh vs Triton
async def run_mesh_vs_triton(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """Closed loop at each concurrency: the mesh and direct Triton in interleaved slices; then perf_analyzer."""
    assert sc.payload.tensor is not None
    bodies = body_factory(sc.model, sc.payload, ctx.photos)
    arrays = {sc.payload.tensor.name: random_array(sc.payload.tensor)}
    client = ctx.triton_client()
    meta = await client.get_model_metadata(sc.model, as_json=True)
    outputs = [o["name"] for o in meta["outputs"]]
    slice_s = sc.duration_s / sc.slices
    cells: list[dict[str, Any]] = []
    for n, concurrency in enumerate(sc.concurrencies):
        recs: dict[str, list[Recorder]] = {"mesh": [], "triton": []}
        cpus: dict[str, list[dict[str, float]]] = {"mesh": [], "triton": []}
        batches: dict[str, list[float]] = {"mesh": [], "triton": []}
        for s in range(sc.slices):
            warmup = sc.warmup_s if s == 0 else min(sc.warmup_s, REWARM_S)
            for system in interleaved_order(["mesh", "triton"], n + s):
                if system == "mesh":
                    rec, cpu, batch = await _measure_mesh(ctx, bodies, sc, concurrency, warmup, slice_s, "mesh")
                else:
                    probe = WindowProbe(ctx.stack, sc.model)
                    rec = await triton_closed_loop(
                        client,
                        sc.model,
                        arrays,
                        outputs,
                        concurrency=concurrency,
                        warmup_s=warmup,
                        duration_s=slice_s,
                        timeout_s=sc.deadline_ms / 1000,
                        progress=ctx.progress,
                        at_window=probe,
                    )
                    cpu, batch = probe.cpu_per_request(rec.completed), probe.batch_size()
                recs[system].append(rec)
                cpus[system].append(cpu)
                if batch is not None:
                    batches[system].append(batch)
        for system in ("mesh", "triton"):
            cell = cell_summary(pooled(recs[system]))
            cell.update(
                system=system,
                concurrency=concurrency,
                cpu_us_per_request=_merge_cpu(cpus[system]),
                triton_batch_size=round(sum(batches[system]) / len(batches[system]), 2) if batches[system] else None,
            )
            cells.append(cell)
            ctx.progress.note(
                f"  {sc.name}: {system:6} x{concurrency:<3} {cell['ok_per_s']:8.1f} req/s  "
                f"p50 {cell['p50_ms']} ms  p99 {cell['p99_ms']} ms  batch {cell['triton_batch_size']}"
            )
    mesh_best = best([c for c in cells if c["system"] == "mesh"], lambda c: c["ok_per_s"])
    triton_best = best([c for c in cells if c["system"] == "triton"], lambda c: c["ok_per_s"])
    result: dict[str, Any] = {"cells": cells}
    if mesh_best and triton_best:
        result.update(
            mesh_best={"concurrency": mesh_best["concurrency"], "ok_per_s": mesh_best["ok_per_s"]},
            triton_best={"concurrency": triton_best["concurrency"], "ok_per_s": triton_best["ok_per_s"]},
            throughput_ratio=ratio(mesh_best["ok_per_s"], triton_best["ok_per_s"]),
        )
        ctx.capacity = mesh_best["ok_per_s"]
        ctx.capacity_source = f"{sc.name}: best mesh throughput ({sc.payload.describe()})"
    c1 = {c["system"]: c for c in cells if c["concurrency"] == 1}
    if "mesh" in c1 and "triton" in c1 and c1["mesh"]["p50_ms"] is not None and c1["triton"]["p50_ms"] is not None:
        result["added_latency_c1"] = {
            "mesh_p50_ms": c1["mesh"]["p50_ms"],
            "triton_p50_ms": c1["triton"]["p50_ms"],
            "added_p50_ms": round(c1["mesh"]["p50_ms"] - c1["triton"]["p50_ms"], 3),
            "mesh_p99_ms": c1["mesh"]["p99_ms"],
            "triton_p99_ms": c1["triton"]["p99_ms"],
        }
    if sc.image and mesh_best:
        image_payload = Payload(image=sc.image, use_cache=False, top_k=sc.payload.top_k)
        image_bodies = body_factory(sc.model, image_payload, ctx.photos)
        concurrency = mesh_best["concurrency"]
        rec, cpu, batch = await _measure_mesh(
            ctx, image_bodies, sc, concurrency, sc.warmup_s, sc.duration_s / max(1, sc.slices), f"mesh {sc.image}"
        )
        row = cell_summary(rec)
        row.update(
            system=f"mesh, image {sc.image}", concurrency=concurrency, cpu_us_per_request=cpu, triton_batch_size=batch
        )
        result["image_input"] = row
        ctx.progress.note(f"  {sc.name}: mesh with image {sc.image} x{concurrency}: {row['ok_per_s']:.1f} req/s")
    if sc.perf_analyzer:
        result["perf_analyzer"] = await _perf_analyzer(ctx, sc, triton_best["concurrency"] if triton_best else None)
    return result


async def _perf_analyzer(ctx: Context, sc: Scenario, best_concurrency: int | None) -> dict[str, Any]:
    if ctx.perf_analyzer is None:
        return {"error": ctx.perf_analyzer_error or "perf_analyzer not available"}
    binary, libdir = ctx.perf_analyzer
    runs = []
    for concurrency in sorted({1, best_concurrency or 1}):
        ctx.stack.check_alive()
        run = await run_perf_analyzer(
            binary,
            libdir,
            ctx.stack.triton_grpc_url,
            sc.model,
            concurrency,
            ctx.workdir,
            interval_ms=sc.perf_analyzer_interval_ms,
            progress=ctx.progress,
        )
        runs.append(run)
        ctx.progress.note(
            f"  {sc.name}: perf_analyzer x{concurrency}: {run.get('infer_per_s', '-')} infer/s "
            f"p50 {run.get('p50_ms', '-')} ms {run.get('error', '')}"
        )
    return {"version": "2.41.0 (tritonclient==2.41.0 wheel)", "runs": runs}


# ---------------------------------------------------------------------------------------------- noop vs raw nats
async def run_noop_vs_raw_nats(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """Closed loop: ``noop`` through the mesh vs the raw nats-py 4-relay chain, per payload and concurrency."""
    raw = RawChain(ctx.stack.nats_url, ctx.workdir / f"{sc.name}_relays")
    raw.start()
    cells: list[dict[str, Any]] = []
    slice_s = sc.duration_s / sc.slices
    try:
        for size in sc.payload_bytes:
            body = noop_body(sc.model, size)

            def bodies(_i: int, body: bytes = body) -> tuple[bytes, str]:
                return body, ""

            for n, concurrency in enumerate(sc.concurrencies):
                recs: dict[str, list[Recorder]] = {"mesh": [], "raw_nats": []}
                cpus: list[dict[str, float]] = []
                lost, relay_cpu_s = 0, 0.0
                for s in range(sc.slices):
                    warmup = sc.warmup_s if s == 0 else min(sc.warmup_s, REWARM_S)
                    for system in interleaved_order(["mesh", "raw_nats"], n + s):
                        if system == "mesh":
                            label = f"noop {size} B"
                            rec, cpu, _ = await _measure_mesh(ctx, bodies, sc, concurrency, warmup, slice_s, label)
                            cpus.append(cpu)
                        else:
                            rec, slice_lost, slice_cpu = await raw.measure(
                                ctx.nc, size, concurrency, warmup, slice_s, ctx.progress
                            )
                            lost += slice_lost
                            relay_cpu_s += slice_cpu
                        recs[system].append(rec)
                for system in ("mesh", "raw_nats"):
                    cell = cell_summary(pooled(recs[system]))
                    cell.update(system=system, payload_bytes=size, concurrency=concurrency)
                    if system == "mesh":
                        cell["cpu_us_per_request"] = _merge_cpu(cpus)
                    else:
                        cell["in_flight_at_stop"] = lost
                        done = pooled(recs[system]).completed
                        cell["cpu_us_per_request"] = {"relays": round(relay_cpu_s / done * 1e6, 1) if done else 0.0}
                    cells.append(cell)
                    ctx.progress.note(
                        f"  {sc.name}: {system:8} {size:>7} B x{concurrency:<3} {cell['ok_per_s']:8.1f} msg/s  "
                        f"p50 {cell['p50_ms']} ms  p99 {cell['p99_ms']} ms"
                    )
    finally:
        raw.stop()
    by_payload: dict[str, Any] = {}
    for size in sc.payload_bytes:
        mesh_best = best([c for c in cells if c["system"] == "mesh" and c["payload_bytes"] == size], _rate)
        raw_best = best([c for c in cells if c["system"] == "raw_nats" and c["payload_bytes"] == size], _rate)
        by_payload[str(size)] = {
            "mesh_best": _best_of(mesh_best),
            "raw_nats_best": _best_of(raw_best),
            "ratio": ratio(mesh_best["ok_per_s"] if mesh_best else None, raw_best["ok_per_s"] if raw_best else None),
        }
    return {"cells": cells, "by_payload": by_payload}


def _rate(cell: dict[str, Any]) -> float:
    return float(cell["ok_per_s"])


def _best_of(cell: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"concurrency": cell["concurrency"], "ok_per_s": cell["ok_per_s"]} if cell else None


# ---------------------------------------------------------------------------------------------- open loop
def admission_limit(setting: int | str | None, capacity: float | None, deadline_ms: int) -> int | None:
    """Ingest's ``max_concurrency`` for a scenario: as given, or ``auto`` = capacity x deadline x headroom."""
    if setting is None or isinstance(setting, int):
        return setting
    if setting != "auto":
        raise ScenarioError(f"ingest_max_concurrency must be an integer or 'auto', got {setting!r}")
    if not capacity:
        raise ScenarioError("ingest_max_concurrency = 'auto' needs the measured capacity")
    return max(1, math.floor(capacity * deadline_ms / 1000 * ADMISSION_HEADROOM))


async def _prime_cache(ctx: Context, sc: Scenario, bodies: Any) -> bool:
    """Send the repeated image until the mesh answers it from the result cache; True once it does."""
    ratio_ = sc.hit_ratio or 0.0
    first_hit = next((i for i in range(10_000) if schedule.is_hit(i, ratio_)), None)
    if first_hit is None:
        return False
    body, _ = bodies(first_hit)
    for _ in range(5):
        rec = Recorder(track_tags=True)
        await ctx.requester.send(body, request_headers(sc.deadline_ms), time.perf_counter_ns(), int(30e9), rec)
        await ctx.requester.wait_idle(35)
        if "hit" in rec.tags:
            return True
    return False


async def run_open_loop(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """Fixed arrival rates per phase, each request charged from its scheduled instant.

    When the scenario keeps Triton on some CPUs, the capacity that sizes its rates and ingest's admission limit is
    measured again with Triton kept there: the run-wide capacity used every core, so it overstates what the pinned
    mesh can serve (by half with two model instances on a 2-core host), and an admission limit sized from it
    would accept requests that cannot finish within their deadline."""
    with ctx.stack.pinned("triton", set(sc.triton_cpus)) as pinned:
        if pinned:
            ctx.progress.note(f"  {sc.name}: Triton (server and model stubs) kept on CPUs {sorted(pinned)}")
        capacity, source = ctx.capacity, ctx.capacity_source
        if pinned and _needs_capacity(sc):
            capacity = await closed_loop_capacity(ctx, sc, label=f"{sc.name} capacity")
            source = f"{sc.name}: closed loop at 16 in flight with Triton on CPUs {sorted(pinned)}"
        rates = [p.resolve(capacity) for p in sc.phases]
        limit = admission_limit(sc.ingest_max_concurrency, capacity, sc.deadline_ms)
        result: dict[str, Any] = {"capacity_rps": capacity, "capacity_source": source}
        result["triton_cpus"] = sorted(pinned)
        if limit is not None:
            result["ingest_max_concurrency"] = limit
            ctx.progress.note(f"  {sc.name}: restarting ingest with NATRITON_MAX_CONCURRENCY={limit}")
            ctx.stack.restart_service("ingest", {"NATRITON_MAX_CONCURRENCY": str(limit)})
        try:
            return await _open_loop(ctx, sc, rates, result)
        finally:
            if limit is not None:
                ctx.stack.restart_service("ingest")


def _needs_capacity(sc: Scenario) -> bool:
    return sc.ingest_max_concurrency == "auto" or any(p.rate_factor is not None for p in sc.phases)


async def closed_loop_capacity(ctx: Context, sc: Scenario, *, label: str = "capacity") -> float:
    """The mesh's throughput for ``sc``'s model and payload (no cache): 6 s closed loop at 16 in flight."""
    payload = Payload(image=sc.payload.image, tensor=sc.payload.tensor, use_cache=False, top_k=sc.payload.top_k)
    rec = await closed_loop(
        ctx.requester,
        body_factory(sc.model, payload, ctx.photos),
        concurrency=16,
        warmup_s=2.0,
        duration_s=6.0,
        deadline_ms=sc.deadline_ms,
        progress=ctx.progress,
        label=label,
    )
    capacity: float = rec.summary()["ok_per_s"]
    return capacity


async def _open_loop(ctx: Context, sc: Scenario, rates: list[float], result: dict[str, Any]) -> dict[str, Any]:
    bodies = body_factory(sc.model, sc.payload, ctx.photos, sc.hit_ratio)
    if sc.hit_ratio is not None:
        result["primed_cache"] = await _prime_cache(ctx, sc, bodies)
    phases = [schedule.Phase(rate, spec.duration_s, spec.label) for rate, spec in zip(rates, sc.phases, strict=True)]
    if sc.warmup_s > 0:
        phases.insert(0, schedule.Phase(rates[0], sc.warmup_s, "warm-up"))
    arrivals = list(schedule.arrivals(phases))
    offsets = [a.offset_ns for a in arrivals]
    first_measured = 1 if sc.warmup_s > 0 else 0
    t0 = time.perf_counter_ns() + 50_000_000
    bounds = schedule.phase_bounds_ns(phases)
    origin = t0 + bounds[first_measured][0]
    track = sc.hit_ratio is not None or sc.payload.use_cache
    recorders = [
        Recorder(
            window_start_ns=t0 + start,
            window_end_ns=t0 + end,
            origin_ns=origin,
            track_tags=track,
            keep_done_times=True,
        )
        for start, end in bounds
    ]
    recorder_of = [a.phase for a in arrivals]
    cpu0, wall0 = ctx.stack.cpu_snapshot(), time.monotonic()
    ctx.stack.check_alive()
    offered = max(rates)
    await open_loop(
        ctx.requester,
        bodies,
        offsets,
        recorders,
        recorder_of,
        deadline_ms=sc.deadline_ms,
        t0_ns=t0,
        progress=ctx.progress,
        label=f"{sc.name}",
        offered=offered,
    )
    measured = recorders[first_measured:]
    total = pooled(measured)
    handled = sum(sum(r.live_counts.values()) for r in recorders)  # CPU covers the warm-up and the drain too
    cpu1, wall1 = ctx.stack.cpu_snapshot(), time.monotonic()
    result["cpu_us_per_request"] = cpu_per_request_us(cpu0, cpu1, handled)
    result["cpu_cores_used"] = cores_used(cpu0, cpu1, wall1 - wall0)
    result["rss_mb"] = ctx.stack.rss()
    result["late_replies"] = ctx.requester.late_replies
    result["phases"] = []
    for spec, phase, rec, (start, end) in zip(
        sc.phases, phases[first_measured:], measured, bounds[first_measured:], strict=True
    ):
        row = cell_summary(rec)
        row.update(label=spec.label, offered_rps=round(phase.rate, 2), duration_s=phase.duration_s)
        row["rate_factor"] = spec.rate_factor
        row["throughput_ok_per_s"] = completions_per_s(recorders, t0 + start, t0 + end)
        result["phases"].append(row)
        ctx.progress.note(
            f"  {sc.name}: {spec.label:12} offered {phase.rate:8.1f}/s  delivered {row['throughput_ok_per_s']:8.1f}"
            f" ok/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  errors {row['errors'] or 0}"
        )
    result["overall"] = total.summary()
    result["accepted"], result["rejected"] = _accepted_and_rejected(measured)
    result["deadline_ms"] = sc.deadline_ms
    result["timeline"] = timeline_summary(measured)
    result["recovery"] = _recovery(result["phases"], result["timeline"])
    return result


def _recovery(phases: list[dict[str, Any]], timeline: list[dict[str, Any]]) -> dict[str, Any] | None:
    """After the busiest phase (when a calmer one follows): seconds until p99 is back under 2x the first phase's."""
    if len(phases) < 3:
        return None
    peak = max(range(len(phases)), key=lambda i: phases[i]["offered_rps"])
    base_p99 = phases[0].get("p99_ms")
    if peak == len(phases) - 1 or not base_p99:
        return None
    after = sum(p["duration_s"] for p in phases[: peak + 1])
    threshold = 2 * base_p99
    return {"after_s": after, "threshold_ms": threshold, "seconds": recovery_s(timeline, after, threshold)}


def _accepted_and_rejected(recorders: list[Recorder]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Latency of requests the mesh accepted (every outcome but ``overloaded``) and of ``overloaded`` replies."""
    accepted, rejected = new_histogram(), new_histogram()
    for r in recorders:
        for outcome, hist in r.outcomes.items():
            (rejected if outcome == "overloaded" else accepted).add(hist)
    return summarize(accepted), summarize(rejected)


# ---------------------------------------------------------------------------------------------- video
async def run_video(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """Cameras through the mesh vs the same detector in one process (``loadtests/video``)."""
    from loadtests.video.runner import run_video as run  # imported here: it imports this module

    return await run(ctx, sc)


# ---------------------------------------------------------------------------------------------- mesh vs ensemble
async def run_mesh_vs_ensemble(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """The mesh vs a Triton ensemble doing the same JPEG → top-5 job, and the in-process floor
    (``loadtests/ensemble``)."""
    from loadtests.ensemble.runner import run_mesh_vs_ensemble as run  # imported here: it imports this module

    return await run(ctx, sc)


RUNNERS = {
    "mesh_vs_triton": run_mesh_vs_triton,
    "noop_vs_raw_nats": run_noop_vs_raw_nats,
    "open_loop": run_open_loop,
    "mesh_vs_ensemble": run_mesh_vs_ensemble,
    "video": run_video,
}


def scenario_config(sc: Scenario) -> dict[str, Any]:
    """The scenario as it ran (JSON-friendly)."""
    return dataclasses.asdict(sc)
