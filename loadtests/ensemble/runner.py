"""The ``mesh_vs_ensemble`` scenario: the mesh vs a Triton ensemble doing the same JPEG → top-5 job, and the floor.

1. The ensemble (``loadtests/ensemble/models``) is loaded into the bench's tritonserver, next to the mesh's
   ``mobilenet_v2`` (which its middle step calls); one JPEG goes through each system as a check of the answer.
2. At each concurrency, closed loop, in interleaved slices (the order alternating as in ``mesh_vs_triton``): the JPEG
   through the mesh (ingest → preprocess → router → Triton → postprocess, a top-k answer) and as one request to the
   ensemble (``tritonclient.grpc.aio``). Per cell: requests/s, latency, Triton's mean batch of ``mobilenet_v2`` and CPU
   µs per request of every process, Triton's split into the server and each model's stub processes.
3. The ensemble is unloaded; with the mesh idle, the in-process floor (:mod:`.floor`) with each of ``floor_threads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtests.harness.loadgen import closed_loop
from loadtests.harness.payloads import body_factory
from loadtests.harness.recorder import Recorder, pooled
from loadtests.harness.runners import REWARM_S, Context, WindowProbe, cell_summary
from loadtests.harness.scenario import Payload, Scenario, ScenarioError
from loadtests.harness.stack import CLK_TCK, MeshStack, cpu_seconds
from loadtests.harness.stats import best, interleaved_order, ratio
from loadtests.preprocess_cost import bare_image_cost_us

from . import floor as floor_mod
from . import logic
from .client import ensemble_closed_loop
from .repository import ENSEMBLE, STEPS, load_ensemble, request_inputs, requested_outputs, top_classes, unload_ensemble

SYSTEMS = ("mesh", "ensemble")
FLOOR_WARMUP_S = 1.0


# ---------------------------------------------------------------------------------------------- CPU per process
def stub_model(cmdline: Sequence[bytes]) -> str | None:
    """The model a python-backend stub serves, from its command line (its first argument is the model file,
    ``<repository>/<model>/<version>/<file>``); None for another process."""
    if len(cmdline) < 2 or not cmdline[0].endswith(b"triton_python_backend_stub"):
        return None
    parts = Path(cmdline[1].decode(errors="replace")).parts
    return parts[-3] if len(parts) >= 3 else None


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def cpu_by_process(stack: MeshStack) -> dict[str, float]:
    """CPU seconds so far per component, like ``MeshStack.cpu_snapshot``, with Triton's split: ``tritonserver``
    (the server) and ``stub <model>`` (the python-backend stub processes of each model, summed); ``triton`` is
    their total."""
    snap: dict[str, float] = {}
    for name, pids in stack.pids().items():
        if name != "triton":
            snap[name] = sum(cpu_seconds(p) for p in pids)
            continue
        server, *stubs = pids
        snap["tritonserver"] = cpu_seconds(server)
        for pid in stubs:
            key = f"stub {stub_model(_cmdline(pid)) or 'other'}"
            snap[key] = snap.get(key, 0.0) + cpu_seconds(pid)
    snap["triton"] = sum(v for k, v in snap.items() if k == "tritonserver" or k.startswith("stub "))
    snap["loadgen"] = cpu_seconds(os.getpid())
    return snap


def host_busy_s() -> float:
    """Busy (and stolen) CPU seconds of the whole host so far (``/proc/stat``), whoever used them."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def used_cpu_s(before: Mapping[str, float], after: Mapping[str, float], *, without: tuple[str, ...] = ()) -> float:
    """CPU seconds the benchmark's processes used between two :func:`cpu_by_process` snapshots (Triton's split
    counted once; a process gone by ``after`` counts 0, not minus its past), leaving out the keys ``without``."""
    return sum(
        max(0.0, v - before.get(k, 0.0))
        for k, v in after.items()
        if k != "tritonserver" and not k.startswith("stub ") and k not in without
    )


def other_cores(wall_s: float, host_busy: float, used: float) -> float:
    """Cores the rest of the host used over ``wall_s``, given the host's busy CPU seconds and the benchmark's own:
    the host is shared, and another process's load slows the measured one."""
    return round(max(0.0, host_busy - used) / wall_s, 2) if wall_s > 0 else 0.0


class Probe(WindowProbe):
    """The window's CPU per process (Triton split into the server and each model's stub), Triton's counters of one
    model, and the load of processes outside the benchmark."""

    def __init__(self, stack: MeshStack, model: str) -> None:
        super().__init__(stack, model)
        self.host: dict[str, tuple[float, float]] = {}

    def __call__(self, edge: str) -> None:
        self.host[edge] = (time.monotonic(), host_busy_s())
        super().__call__(edge)

    def cpu(self) -> dict[str, float]:
        return cpu_by_process(self.stack)

    def other_cores(self) -> float | None:
        """Cores used by processes outside the benchmark in the window."""
        if "start" not in self.host or "end" not in self.host:
            return None
        (t0, busy0), (t1, busy1) = self.host["start"], self.host["end"]
        return other_cores(t1 - t0, busy1 - busy0, used_cpu_s(self.marks["start"][0], self.marks["end"][0]))


def mean_cpu(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the mean over slices (a key missing from a slice counts 0 there)."""
    keys = sorted({k for p in parts for k in p})
    return {k: round(sum(p.get(k, 0.0) for p in parts) / len(parts), 1) for k in keys} if parts else {}


# ---------------------------------------------------------------------------------------------- comparison (pure)
def comparison(cells: Sequence[Mapping[str, Any]], floor_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per concurrency: mesh and ensemble req/s, p99, and their ratios (mesh / ensemble); the mesh at the highest
    concurrency against each floor (mesh req/s / floor req/s, by worker threads)."""
    by = {(c["system"], c["concurrency"]): c for c in cells}
    per_concurrency: dict[str, dict[str, Any]] = {}
    for concurrency in sorted({c["concurrency"] for c in cells}):
        mesh, ens = by.get(("mesh", concurrency)), by.get(("ensemble", concurrency))
        if not mesh or not ens:
            continue
        per_concurrency[str(concurrency)] = {
            "mesh_ok_per_s": mesh["ok_per_s"],
            "ensemble_ok_per_s": ens["ok_per_s"],
            "ratio": ratio(mesh["ok_per_s"], ens["ok_per_s"]),
            "mesh_p50_ms": mesh.get("p50_ms"),
            "ensemble_p50_ms": ens.get("p50_ms"),
            "mesh_p99_ms": mesh.get("p99_ms"),
            "ensemble_p99_ms": ens.get("p99_ms"),
            "p99_ratio": ratio(mesh.get("p99_ms"), ens.get("p99_ms")),
        }
    out: dict[str, Any] = {"by_concurrency": per_concurrency}
    mesh_cells = [c for c in cells if c["system"] == "mesh"]
    top = max(mesh_cells, key=lambda c: c["concurrency"]) if mesh_cells else None
    if top is not None:
        out["mesh_top"] = {"concurrency": top["concurrency"], "ok_per_s": top["ok_per_s"]}
        out["vs_floor"] = {
            str(f["workers"]): ratio(top["ok_per_s"], f.get("ok_per_s")) for f in floor_rows if f.get("ok_per_s")
        }
    best_ens = best([c for c in cells if c["system"] == "ensemble"], lambda c: c["ok_per_s"])
    if best_ens is not None:
        out["ensemble_best"] = {"concurrency": best_ens["concurrency"], "ok_per_s": best_ens["ok_per_s"]}
    return out


# ---------------------------------------------------------------------------------------------- the scenario
async def _mesh_answer(ctx: Context, model: str, jpeg: bytes, top_k: int) -> list[tuple[str, float]] | str:
    from natriton.messages import InferResponse
    from natriton_client.aio import MeshClient

    reply = await MeshClient(ctx.nc).infer(model, image=jpeg, top_k=top_k, use_cache=False, timeout_s=30.0)
    if isinstance(reply, InferResponse) and hasattr(reply.result, "classes"):
        return [(c.label, round(c.score, 4)) for c in reply.result.classes]
    return str(reply)


async def _ensemble_answer(client: Any, jpeg: bytes) -> list[tuple[str, float]]:
    result = await client.infer(ENSEMBLE, request_inputs(jpeg), outputs=requested_outputs(), client_timeout=30.0)
    return [(label, round(score, 4)) for label, score in top_classes(result)]


async def _cells(ctx: Context, sc: Scenario, client: Any, jpeg: bytes) -> list[dict[str, Any]]:
    assert sc.payload.image is not None
    payload = Payload(image=sc.payload.image, use_cache=False, top_k=sc.payload.top_k)
    bodies = body_factory(sc.model, payload, ctx.photos)
    slice_s = sc.duration_s / sc.slices
    cells: list[dict[str, Any]] = []
    for n, concurrency in enumerate(sc.concurrencies):
        recs: dict[str, list[Recorder]] = {s: [] for s in SYSTEMS}
        cpus: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}
        batches: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        others: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        for s in range(sc.slices):
            warmup = sc.warmup_s if s == 0 else min(sc.warmup_s, REWARM_S)
            for system in interleaved_order(list(SYSTEMS), n + s):
                ctx.stack.check_alive()
                probe = Probe(ctx.stack, sc.model)
                if system == "mesh":
                    rec = await closed_loop(
                        ctx.requester,
                        bodies,
                        concurrency=concurrency,
                        warmup_s=warmup,
                        duration_s=slice_s,
                        deadline_ms=sc.deadline_ms,
                        progress=ctx.progress,
                        label=f"mesh {sc.payload.image}",
                        at_window=probe,
                    )
                else:
                    rec = await ensemble_closed_loop(
                        client,
                        jpeg,
                        concurrency=concurrency,
                        warmup_s=warmup,
                        duration_s=slice_s,
                        timeout_s=sc.deadline_ms / 1000,
                        progress=ctx.progress,
                        label=f"ensemble {sc.payload.image}",
                        at_window=probe,
                    )
                recs[system].append(rec)
                cpus[system].append(probe.cpu_per_request(rec.completed))
                batch, other = probe.batch_size(), probe.other_cores()
                if batch is not None:
                    batches[system].append(batch)
                if other is not None:
                    others[system].append(other)
        for system in SYSTEMS:
            cell = cell_summary(pooled(recs[system]))
            cell.update(
                system=system,
                concurrency=concurrency,
                cpu_us_per_request=mean_cpu(cpus[system]),
                triton_batch_size=round(sum(batches[system]) / len(batches[system]), 2) if batches[system] else None,
                other_cores=max(others[system]) if others[system] else None,
            )
            cells.append(cell)
            ctx.progress.note(
                f"  {sc.name}: {system:8} x{concurrency:<3} {cell['ok_per_s']:8.1f} req/s  p50 {cell['p50_ms']} ms  "
                f"p99 {cell['p99_ms']} ms  mobilenet_v2 batch {cell['triton_batch_size']}  "
                f"other load {cell['other_cores']} cores"
            )
    return cells


async def _stubs_gone(stack: MeshStack, models: Sequence[str], timeout_s: float = 15.0) -> bool:
    """Wait until no python-backend stub of ``models`` is left (an unloaded model's stubs exit within seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = stack.pids().get("triton", [])[1:]
        if not any(stub_model(_cmdline(pid)) in models for pid in pids):
            return True
        await asyncio.sleep(0.2)
    return False


async def _floor(ctx: Context, sc: Scenario, client: Any, jpeg: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The floor with each thread count, the model's own settings read from Triton (the config it serves)."""
    config = (await client.get_model_config(sc.model, as_json=True))["config"]
    params = logic.config_parameters(config)
    intra = int(params.get("onnx.intra_op_threads", "1") or 1)
    index = await client.get_model_repository_index(as_json=True)
    ready = [
        int(m.get("version", 0)) for m in index.get("models", []) if m["name"] == sc.model and m.get("state") == "READY"
    ]
    version = str(max(ready)) if ready else "1"
    repository = ctx.stack.source_repository / sc.model
    (output,) = config["output"]
    (model_input,) = config["input"]
    spec = logic.image_spec(
        model_input["name"],
        str(model_input["data_type"]).removeprefix("TYPE_"),
        model_input["dims"],
        params,
        sc.model,
    )
    labels = logic.read_labels(repository / output.get("label_filename", "labels.txt"))
    onnx_path = repository / version / "model.onnx"
    floor = await asyncio.to_thread(
        floor_mod.Floor, onnx_path, spec, labels, intra_op_threads=intra, k=sc.payload.top_k
    )
    info = {
        "onnx": f"{sc.model}/{version}/model.onnx",
        "intra_op_threads": intra,
        "answer": [(label, round(score, 4)) for label, score in await asyncio.to_thread(floor.classify, jpeg)],
        # the preprocess service's own function on the same JPEG, with the mesh idle: what its CPU is compared with
        "preprocess_bare_cpu_us": await asyncio.to_thread(bare_image_cost_us, jpeg, spec),
    }
    rows = []
    for workers in sc.floor_threads:
        ctx.stack.check_alive()
        async with ctx.progress.track(f"in-process floor x{workers}"):
            before, t0, busy0 = cpu_by_process(ctx.stack), time.monotonic(), host_busy_s()
            row = await asyncio.to_thread(floor_mod.measure, floor, jpeg, workers, sc.floor_s, FLOOR_WARMUP_S)
            after, wall, busy = cpu_by_process(ctx.stack), time.monotonic() - t0, host_busy_s() - busy0
            row["other_cores"] = other_cores(wall, busy, used_cpu_s(before, after))
            row["idle_mesh_cores"] = round(used_cpu_s(before, after, without=("loadgen",)) / wall, 2)
        rows.append(row)
        ctx.progress.note(
            f"  {sc.name}: floor    x{workers:<3} {row['ok_per_s']:8.1f} req/s  p50 {row['p50_ms']} ms  "
            f"p99 {row['p99_ms']} ms  CPU {row['cpu_us_per_request']} µs/request ({row['cpu_cores']} cores)  "
            f"idle mesh {row['idle_mesh_cores']} cores, other load {row['other_cores']} cores"
        )
    return info, rows


async def run_mesh_vs_ensemble(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """Load the ensemble, measure both systems interleaved, unload it, measure the floor; the comparison."""
    if sc.payload.image is None or sc.payload.image not in ctx.photos:
        raise ScenarioError(f"{sc.name}: unknown image {sc.payload.image!r}")
    jpeg = ctx.photos[sc.payload.image]
    client = ctx.triton_client()
    result: dict[str, Any] = {
        "image": sc.payload.image,
        "image_bytes": len(jpeg),
        "ensemble": ENSEMBLE,
        "ensemble_steps": [STEPS[0], sc.model, STEPS[1]],
    }
    ctx.progress.note(f"  {sc.name}: loading {ENSEMBLE} into the bench's tritonserver")
    result["ensemble_load_s"] = await load_ensemble(client)
    try:
        pre = (await client.get_model_config(STEPS[0], as_json=True))["config"]
        result["ensemble_preprocess_instances"] = sum(int(g.get("count", 1)) for g in pre.get("instance_group", []))
        result["answers"] = {
            "ensemble": await _ensemble_answer(client, jpeg),
            "mesh": await _mesh_answer(ctx, sc.model, jpeg, sc.payload.top_k),
        }
        ctx.progress.note(f"  {sc.name}: answers {result['answers']}")
        result["cells"] = await _cells(ctx, sc, client, jpeg)
    finally:
        with contextlib.suppress(Exception):
            await unload_ensemble(client)
            await _stubs_gone(ctx.stack, STEPS)
    if sc.floor_threads:
        with contextlib.suppress(Exception):
            await ctx.requester.wait_idle(5)
        result["floor_model"], result["floor"] = await _floor(ctx, sc, client, jpeg)
        result["answers"]["floor"] = result["floor_model"].pop("answer")
    result["comparison"] = comparison(result["cells"], result.get("floor", []))
    return result
