"""The ``video`` scenario: cameras through the running mesh, then the same detector in one process.

Phases, in order (each camera is a :class:`~natriton.messages.StreamSource` put in the stream registry, the way
``natriton stream add`` adds one; every ``FrameResult`` is read from ``natriton.v1.detections.<camera>``):

1. per mode (reliable, realtime): a ramp of looping cameras (``Megamind.avi`` at ``fps``, change gate off), camera
   counts from ``cameras``, kept from step to step; each step is measured for ``step_s`` once its new cameras
   publish; a mode's ramp stops after the first step whose p95 passes ``max_p95_ms``;
2. real-time overload: real-time cameras offering ``overload_factor`` x the fastest ramp step's frames/s;
3. the static scene with the change gate on (reliable, one pass, a folder of images);
4. right after the reliable ramp, with the mesh idle: the in-process baseline at batch 1, at the router's most
   used batch sizes, and at batch 1 with the claim check's JPEG round trip.

Ramp cameras read the file ``Megamind.avi``: the camera's reader samples it to ``fps`` by timestamps and plays it
at its own rate, as a live camera would deliver it.

Ingest is restarted for the scenario with ``NATRITON_CAMERA_LEASE_TTL_S = lease_ttl_s`` (it takes one new camera
per third of the TTL: with the default 10 s, eight cameras would take ~25 s to start) and restarted as it was at
the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from loadtests.harness.runners import Context, cores_used
from loadtests.harness.scenario import Scenario, VideoSpec
from loadtests.harness.stack import CLK_TCK, MeshStack, batch_size, cpu_per_request_us
from natriton.catalog import ModelCatalog
from natriton.headers import now_ms
from natriton.messages import ModelInfo, StreamMode, StreamSource
from natriton.streams import StreamRegistry, open_registry
from natriton_client.protocol import FrameResult, detections_subject

from . import analysis, baseline, media
from .analysis import Sample

RESULTS = msgspec.msgpack.Decoder(FrameResult)
FACE_HEIGHT = 200
"""Pixels: the pasted face's height in the 768x576 static scene (~100 px once stretched to the model's 300x300)."""
FACE_AT = (430, 110)
"""Top-left corner of the pasted face in the static scene (an empty part of the square)."""
START_TIMEOUT_S = 40.0


def host_cpu_s() -> tuple[float, float]:
    """Busy and stolen CPU seconds of the whole host so far (``/proc/stat``), whoever used them."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK, steal / CLK_TCK


class CpuProbe:
    """CPU over a stretch of time: each process of the mesh, this process, and what the rest of the host used
    (the host is shared: another process's load slows the measured one)."""

    def __init__(self, stack: MeshStack) -> None:
        self.stack = stack
        self.cpu0, self.host0, self.wall0 = stack.cpu_snapshot(), host_cpu_s(), time.monotonic()

    def stop(self) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """(cores per process with their total, the host's busy/stolen/other cores, CPU seconds per process)."""
        cpu1, host1, wall = self.stack.cpu_snapshot(), host_cpu_s(), max(1e-6, time.monotonic() - self.wall0)
        cores = cores_used(self.cpu0, cpu1, wall)
        busy = (host1[0] - self.host0[0]) / wall
        host = {
            "busy": round(busy, 2),
            "steal": round((host1[1] - self.host0[1]) / wall, 2),
            "other": round(max(0.0, busy - cores.get("total", 0.0)), 2),
        }
        seconds = {k: cpu1.get(k, 0.0) - self.cpu0.get(k, 0.0) for k in cpu1}
        return cores, host, seconds


class ResultCollector:
    """Every camera result published while it runs (a core NATS subscription on all cameras)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.samples: list[Sample] = []
        self.first: dict[str, Sample] = {}
        self.last_ms = 0
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(detections_subject("*"), cb=self._on_result)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_result(self, msg: Msg) -> None:
        r = RESULTS.decode(msg.data)
        s = Sample(
            camera=r.camera,
            frame_number=r.frame_number,
            captured_ms=r.captured_ms,
            published_ms=r.published_ms,
            reused=r.reused,
            objects=len(r.objects),
            error=r.error.value if r.error is not None else "",
        )
        self.samples.append(s)
        self.first.setdefault(r.camera, s)
        self.last_ms = now_ms()

    def of(self, cameras: Iterable[str]) -> list[Sample]:
        wanted = set(cameras)
        return [s for s in self.samples if s.camera in wanted]


async def model_info(nc: NATS, model: str, timeout_s: float = 30.0) -> ModelInfo:
    """The model as the router published it in the catalog (what preprocess and postprocess read)."""
    catalog = ModelCatalog()
    await catalog.start(nc)
    try:
        async with asyncio.timeout(timeout_s):
            return await catalog.wait_for(model)
    finally:
        await catalog.stop()


async def router_app_stats(nc: NATS) -> dict[str, Any]:
    """The router's ``$SRV.STATS`` app numbers (batchers by ``model:version``)."""
    msg = await nc.request("$SRV.STATS.natriton-router", b"", timeout=3)
    stats = json.loads(msg.data)
    app: dict[str, Any] = stats["endpoints"][0]["data"]["app"]
    return app


async def router_batches(nc: NATS, model: str) -> dict[str, int]:
    """The router's batch-size counters for ``model`` (all versions): ``{"1": batches, "2": ...}``."""
    out: dict[str, int] = {}
    with contextlib.suppress(Exception):
        for key, batcher in (await router_app_stats(nc)).get("batchers", {}).items():
            if key.rsplit(":", 1)[0] == model:
                for size, n in batcher.get("batch_sizes", {}).items():
                    out[size] = out.get(size, 0) + int(n)
    return out


class VideoRun:
    """One run of the scenario against ``ctx.stack``."""

    def __init__(self, ctx: Context, sc: Scenario, registry: StreamRegistry, collector: ResultCollector) -> None:
        assert sc.video is not None
        self.ctx = ctx
        self.sc = sc
        self.spec: VideoSpec = sc.video
        self.registry = registry
        self.collector = collector
        self.prefix = f"bench{uuid.uuid4().hex[:4]}"
        self.active: dict[str, StreamSource] = {}

    # ------------------------------------------------------------------ cameras
    async def add(self, sources: list[StreamSource]) -> float:
        """Add cameras and wait until each has published a result; returns the seconds that took."""
        started = time.monotonic()
        for source in sources:
            await self.registry.put_source(source)
            self.active[source.camera] = source
        pending = {s.camera for s in sources}
        deadline = started + START_TIMEOUT_S
        while pending - set(self.collector.first):
            if time.monotonic() > deadline:
                missing = sorted(pending - set(self.collector.first))
                statuses = [await self.registry.get_status(c) for c in missing[:3]]
                raise RuntimeError(f"cameras {missing} published nothing within {START_TIMEOUT_S:.0f} s: {statuses}")
            self.ctx.stack.check_alive()
            await asyncio.sleep(0.05)
        return round(time.monotonic() - started, 2)

    async def remove(self, cameras: Iterable[str]) -> None:
        for camera in list(cameras):
            if self.active.pop(camera, None) is not None:
                with contextlib.suppress(Exception):
                    await self.registry.remove_source(camera)

    async def drain(self, quiet_s: float = 0.6, timeout_s: float = 20.0) -> float:
        """Wait until no result came for ``quiet_s`` and the router holds no frame; returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            await asyncio.sleep(0.2)
            if now_ms() - self.collector.last_ms < quiet_s * 1000:
                continue
            busy = 0
            with contextlib.suppress(Exception):
                for b in (await router_app_stats(self.ctx.nc)).get("batchers", {}).values():
                    busy += int(b.get("queued", 0)) + int(b.get("in_flight", 0))
            if not busy:
                break
        return round(time.monotonic() - started, 2)

    def source(
        self, name: str, url: Path, mode: str, *, fps: float, gate: bool = False, loop: bool = True
    ) -> StreamSource:
        return StreamSource(
            camera=f"{self.prefix}-{name}",
            url=str(url),
            model=self.sc.model,
            fps=fps,
            mode=StreamMode(mode),
            change_gate=gate,
            loop=loop,
        )

    # ------------------------------------------------------------------ one measured window
    async def window(self, label: str, mode: str, cameras: list[str], seconds: float) -> dict[str, Any]:
        """Measure the cameras for ``seconds`` after ``settle_s``: rates, latency, drops, lag, batches, CPU."""
        ctx, stack = self.ctx, self.ctx.stack
        await asyncio.sleep(self.spec.settle_s)
        stack.check_alive()
        start, probe = now_ms(), CpuProbe(stack)
        batches0, triton0 = await router_batches(ctx.nc, self.sc.model), stack.triton_stats(self.sc.model)
        offered = len(cameras) * self.spec.fps
        ctx.progress.note(f"  video: {label}: {len(cameras)} x {self.spec.fps:g} fps {mode} ({offered:g} frames/s)")
        await asyncio.sleep(seconds)
        end, (cores, host, cpu_s) = now_ms(), probe.stop()
        batches1, triton1 = await router_batches(ctx.nc, self.sc.model), stack.triton_stats(self.sc.model)
        samples = self.collector.of(cameras)
        first = {c: self.collector.first[c].captured_ms for c in cameras if c in self.collector.first}
        stats = analysis.window_stats(
            samples,
            start,
            end,
            cameras=len(cameras),
            fps=self.spec.fps,
            first_captured=first if mode == "reliable" else None,
        )
        good = stats["frames"] - sum(stats["errors"].values())
        stats.update(
            label=label,
            mode=mode,
            batch=analysis.batch_summary(analysis.batch_diff(batches0, batches1)),
            batch_counts=analysis.batch_diff(batches0, batches1),
            triton_batch_size=batch_size(triton0, triton1),
            cpu_cores_used=cores,
            host_cores=host,
            cpu_us_per_frame=cpu_per_request_us({}, cpu_s, good),
        )
        latency = stats["latency"]
        ctx.progress.note(
            f"  video: {label}: {stats['frames_per_s']:.1f} frames/s, p50 {latency['p50_ms']} ms, p95 "
            f"{latency['p95_ms']} ms, dropped {stats['dropped']}, batch {stats['batch']['mean']}, cores "
            f"{cores.get('total')} (other processes {host['other']})"
            + (f", lag {stats['lag']}" if "lag" in stats else "")
        )
        return stats

    # ------------------------------------------------------------------ phases
    async def ramp(self, mode: str, clip: Path) -> tuple[list[dict[str, Any]], list[str]]:
        """Add cameras step by step until p95 passes the limit; the cameras stay (returned with the steps)."""
        steps: list[dict[str, Any]] = []
        cameras: list[str] = []
        for count in self.spec.cameras:
            new = [self.source(f"{mode[:2]}{i}", clip, mode, fps=self.spec.fps) for i in range(len(cameras), count)]
            start_s = await self.add(new)
            cameras += [s.camera for s in new]
            step = await self.window(f"{mode} x{count}", mode, cameras, self.spec.step_s)
            step["start_s"] = start_s
            steps.append(step)
            p95 = step["latency"]["p95_ms"]
            if p95 is None or p95 > self.spec.max_p95_ms:
                break
        return steps, cameras

    async def overload(self, clip: Path, cameras: list[str], capacity: float) -> dict[str, Any]:
        """Real-time cameras offering ``overload_factor`` x ``capacity`` frames/s."""
        count = max(2, math.ceil(self.spec.overload_factor * capacity / self.spec.fps))
        if len(cameras) > count:
            await self.remove(cameras[count:])
            cameras = cameras[:count]
            await asyncio.sleep(0.5)
        new = [self.source(f"ov{i}", clip, "realtime", fps=self.spec.fps) for i in range(len(cameras), count)]
        start_s = await self.add(new)
        cameras = cameras + [s.camera for s in new]
        phase = await self.window(
            f"realtime overload x{count}", "realtime", cameras, max(self.spec.overload_s, self.spec.step_s)
        )
        phase.update(start_s=start_s, capacity_fps=capacity, overload_factor=round(count * self.spec.fps / capacity, 2))
        await self.remove(cameras)
        phase["drain_s"] = await self.drain()
        return phase

    async def static_scene(self, folder: Path, prepared: dict[str, Any]) -> dict[str, Any]:
        """The static scene once through, reliable, change gate on: inferred share and the face's appearance."""
        spec = self.spec
        source = self.source("static", folder, "reliable", fps=spec.static_fps, gate=True, loop=False)
        self.ctx.progress.note(
            f"  video: static scene, change gate on: {spec.static_frames} frames at {spec.static_fps:g} fps, "
            f"face from frame {spec.static_face_frame}"
        )
        started, probe = time.monotonic(), CpuProbe(self.ctx.stack)
        await self.add([source])
        deadline = started + spec.static_frames / spec.static_fps + 30.0
        while time.monotonic() < deadline:
            numbers = {s.frame_number for s in self.collector.of([source.camera])}
            if len(numbers) >= spec.static_frames:
                break
            await asyncio.sleep(0.1)
        wall = time.monotonic() - started
        cores, host, _ = probe.stop()
        await self.remove([source.camera])
        out = analysis.gate_summary(self.collector.of([source.camera]), spec.static_frames, spec.static_face_frame)
        out.update(prepared, wall_s=round(wall, 1), cpu_cores_used=cores, host_cores=host)
        self.ctx.progress.note(
            f"  video: static scene: inferred {out['inferred']}/{out['results']} ({out['inference_ratio']}), face "
            f"frame {spec.static_face_frame}: {out['face_frame_result']}, first detection "
            f"{out['first_detection_frame']}"
        )
        out["drain_s"] = await self.drain()
        return out


async def prepare_media(workdir: Path, spec: VideoSpec, detector: baseline.InProcessDetector) -> dict[str, Any]:
    """The static scene (vtest.avi's median background, a real face crop from Megamind.avi pasted in at
    ``static_face_frame``), checked with the in-process detector."""
    from natriton_dev.media import sample_clip

    megamind, vtest = sample_clip("Megamind.avi"), sample_clip("vtest.avi")

    def build() -> dict[str, Any]:
        # the face: the most confident detection among the first frames a camera at fps keeps
        candidates = list(media.clip_frames(megamind, spec.fps, limit=12))
        best: tuple[float, int, tuple[float, float, float, float]] | None = None
        for i, found in enumerate(detector.detect(candidates)):
            for d in found.detections:
                if best is None or d.score > best[0]:
                    best = (d.score, i, d.box)
        if best is None:
            raise RuntimeError("the detector found no face in Megamind.avi's first frames")
        crop = media.face_crop(candidates[best[1]], best[2], height=FACE_HEIGHT)
        background = media.median_background(vtest)
        static_folder = workdir / "static_scene"
        media.static_scene(
            background, crop, static_folder, frames=spec.static_frames, face_frame=spec.static_face_frame, at=FACE_AT
        )
        before = detector.detect([background])[0].detections
        after = detector.detect([media.paste(background, crop, FACE_AT)])[0].detections
        return {
            "camera_clip": megamind.name,
            "frame_size": [int(candidates[0].shape[1]), int(candidates[0].shape[0])],
            "static_folder": str(static_folder),
            "static_size": [int(background.shape[1]), int(background.shape[0])],
            "face_source": {"clip": "Megamind.avi", "kept_frame": best[1], "score": round(best[0], 3)},
            "face_crop_size": [int(crop.shape[1]), int(crop.shape[0])],
            "face_at": list(FACE_AT),
            "noise_sigma": media.NOISE_SIGMA,
            "in_process_check": {
                "background_detections": len(before),
                "with_face_detections": len(after),
                "with_face_best_score": round(max((d.score for d in after), default=0.0), 3),
            },
        }

    return await asyncio.to_thread(build)


async def run_baseline(
    ctx: Context, detector: baseline.InProcessDetector, clip: Path, spec: VideoSpec, sizes: list[int]
) -> list[dict[str, Any]]:
    """The in-process baseline at each batch size, then batch 1 with the JPEG round trip (the mesh idle)."""
    rows = []
    for size, jpeg in [*((s, False) for s in sizes), (1, True)]:
        probe = CpuProbe(ctx.stack)
        row = await asyncio.to_thread(baseline.measure, detector, clip, spec.fps, size, spec.baseline_s, jpeg=jpeg)
        cores, row["host_cores"], _ = probe.stop()
        row["mesh_cores"] = round(cores.get("total", 0.0) - cores.get("loadgen", 0.0), 2)
        rows.append(row)
        ctx.progress.note(
            f"  video: in-process batch {size}{' + JPEG round trip' if jpeg else ''}: {row['frames_per_s']:.1f} "
            f"frames/s, {row['cpu_us_per_frame']:,.0f} µs CPU/frame, stages {row['stage_ms_per_frame']} (other "
            f"processes {row['host_cores']['other']} cores, the idle mesh {row['mesh_cores']})"
        )
    return rows


async def run_video(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """The whole scenario (see the module's docstring); the result dict is what ``video.json`` holds."""
    from natriton_dev.media import sample_clip

    spec = sc.video
    if spec is None:
        raise ValueError(f"{sc.name}: a video scenario needs a [video] table")
    clip = sample_clip("Megamind.avi")
    workdir = ctx.workdir / "video"
    workdir.mkdir(parents=True, exist_ok=True)
    info = await model_info(ctx.nc, sc.model)
    onnx_path = ctx.stack.source_repository / sc.model / info.latest_version / "model.onnx"
    detector = await asyncio.to_thread(baseline.InProcessDetector, info, onnx_path)
    result: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": sc.model,
        "onnx": str(onnx_path.relative_to(ctx.stack.source_repository.parent))
        if onnx_path.is_relative_to(ctx.stack.source_repository.parent)
        else str(onnx_path),
        "intra_op_threads": detector.threads,
        "max_batch_size": info.max_batch_size,
        "fps": spec.fps,
        "max_p95_ms": spec.max_p95_ms,
    }
    started = time.monotonic()
    result["media"] = await prepare_media(workdir, spec, detector)
    static_folder = Path(result["media"]["static_folder"])
    result["media_s"] = round(time.monotonic() - started, 1)

    env = {"NATRITON_CAMERA_LEASE_TTL_S": f"{spec.lease_ttl_s:g}"}
    ctx.progress.note(f"  video: restarting ingest with {env}")
    restart0 = time.monotonic()
    ctx.stack.restart_service("ingest", env)
    result["ingest_restart_s"] = round(time.monotonic() - restart0, 1)
    collector = ResultCollector(ctx.nc)
    await collector.start()
    run = VideoRun(ctx, sc, await open_registry(ctx.nc), collector)
    try:
        ramps: dict[str, list[dict[str, Any]]] = {}
        kept: dict[str, list[str]] = {}
        for mode in spec.modes:
            ramps[mode], kept[mode] = await run.ramp(mode, clip)
            if mode != "realtime" or not spec.overload_factor:
                await run.remove(kept.pop(mode))
                ramps[mode][-1]["drain_s"] = await run.drain()
            if mode == "reliable":  # the baseline right after the saturated step, the mesh idle
                result["baseline"] = await baseline_after(ctx, detector, clip, spec, ramps, info.max_batch_size)
        result["ramps"] = ramps
        capacity = _capacity(ramps)
        result["capacity"] = capacity
        if "baseline" not in result:
            result["baseline"] = await baseline_after(ctx, detector, clip, spec, ramps, info.max_batch_size)
        fastest = max((s["frames_per_s"] for steps in ramps.values() for s in steps), default=0.0)
        if "realtime" in spec.modes and spec.overload_factor and fastest:
            result["overload"] = await run.overload(clip, kept.pop("realtime"), fastest)
        for cameras in kept.values():
            await run.remove(cameras)
        if kept:
            await run.drain()
        result["static_scene"] = await run.static_scene(static_folder, {"fps": spec.static_fps})
    finally:
        await run.remove(list(run.active))
        await collector.stop()
        restart1 = time.monotonic()
        ctx.stack.restart_service("ingest")
        result["ingest_restore_s"] = round(time.monotonic() - restart1, 1)
    result["comparison"] = compare(result)
    return result


async def baseline_after(
    ctx: Context,
    detector: baseline.InProcessDetector,
    clip: Path,
    spec: VideoSpec,
    ramps: dict[str, list[dict[str, Any]]],
    max_batch_size: int,
) -> list[dict[str, Any]]:
    """The baseline at batch 1 and at the batch sizes the router used most at the mesh's saturated step."""
    sizes = [1]
    for size in analysis.common_sizes(_capacity(ramps).get("batch_counts") or {}, spec.baseline_max_sizes):
        if size not in sizes and size <= max(1, max_batch_size):
            sizes.append(size)
    ctx.progress.note(f"  video: in-process baseline (mesh idle) at batch sizes {sizes} and batch 1 with JPEG")
    return await run_baseline(ctx, detector, clip, spec, sizes)


def _capacity(ramps: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The mesh's saturated frames/s: the best step of the reliable ramp (else of any ramp), and whether the ramp
    reached saturation (a step that delivered under 90 % of what its cameras offered)."""
    steps = ramps.get("reliable") or [s for r in ramps.values() for s in r]
    if not steps:
        return {"frames_per_s": None}
    best = max(steps, key=lambda s: s["frames_per_s"])
    saturated = any(s["frames_per_s"] < 0.9 * s["offered_fps"] for s in steps)
    return {
        "frames_per_s": best["frames_per_s"],
        "mode": best["mode"],
        "cameras": best["cameras"],
        "saturated": saturated,
        "batch_counts": best.get("batch_counts", {}),
        "cpu_us_per_frame": best.get("cpu_us_per_frame", {}),
        "cpu_cores_used": best.get("cpu_cores_used", {}),
    }


def compare(result: dict[str, Any]) -> dict[str, Any]:
    """The mesh's saturated frames/s (and CPU per frame) against the in-process baseline's."""
    capacity = result.get("capacity") or {}
    rows = [r for r in result.get("baseline") or [] if not r["jpeg_round_trip"]]
    mesh = capacity.get("frames_per_s")
    if not rows or not mesh:
        return {}
    best = max(rows, key=lambda r: r["frames_per_s"])
    batch1 = next((r for r in rows if r["batch"] == 1), best)
    mesh_cpu = capacity.get("cpu_us_per_frame") or {}
    mesh_cpu_total = sum(v for k, v in mesh_cpu.items() if k != "loadgen")
    return {
        "mesh_frames_per_s": mesh,
        "baseline_best": {"batch": best["batch"], "frames_per_s": best["frames_per_s"]},
        "baseline_batch1_frames_per_s": batch1["frames_per_s"],
        "ratio": round(mesh / best["frames_per_s"], 4),
        "ratio_batch1": round(mesh / batch1["frames_per_s"], 4),
        "mesh_cpu_us_per_frame": round(mesh_cpu_total, 1),
        "baseline_cpu_us_per_frame": best["cpu_us_per_frame"],
        "cpu_ratio": round(mesh_cpu_total / best["cpu_us_per_frame"], 2) if best["cpu_us_per_frame"] else None,
    }
