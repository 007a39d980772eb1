"""Claim-check store benchmark: which store carries video frames and large requests by reference.

Starts its own ``nats-server`` (JetStream, ``max_payload: 8MB``) and ``redis-server`` on free ports, a producer and
a consumer process (``peer.py``), then measures every variant of ``stores.VARIANTS`` for each payload and in-flight
level in interleaved slices (the variants' order rotates, so the ratios of one cell come from the same minute of a
shared host). Then, from this process: explicit delete vs TTL expiry per store, and the JPEG codec (Pillow, q90).

Payloads: ``raw`` a decoded RGB frame of Megamind.avi (720x528x3 = 1,140,480 B), ``jpeg`` that frame at quality 90,
``tensor`` 150 KB of float32.

    python -m loadtests.claim_check                      # the full run (~2-3 minutes)
    python -m loadtests.claim_check --payloads tensor --variants inline,redis --inflight 1 --slices 1 \
        --duration 0.2 --frame 0 --delete-n 5 --out-dir /tmp/cc
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import io
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import numpy as np
import uvloop
from nats.aio.client import Client

from loadtests import standalone
from loadtests.runtime_choice.bench import machine_info
from natriton_dev.process import ManagedProcess
from natriton_dev.servers import NatsServer, RedisServer

from .stores import (
    BUCKETS,
    CTL_RUN,
    DELETABLE,
    EXPIRING,
    SERVER_OF,
    STREAMS,
    VARIANTS,
    Clients,
    RunResult,
    RunSpec,
    count,
    create_resources,
    delete,
    purge,
    put,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
VIDEO = Path("/tmp/media/x/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
FRAME_W, FRAME_H = 720, 528
PAYLOADS = ("raw", "jpeg", "tensor")
TENSOR_BYTES = 153_600
JPEG_QUALITY = 90
PROCESSES = ("producer", "consumer", "nats-server", "redis-server")
SETTINGS = (
    "slices",
    "duration",
    "warmup",
    "rewarm",
    "loop_ttl_s",
    "expiry_ttl_s",
    "expiry_settle_s",
    "delete_n",
    "jpeg_reps",
    "ring_slots",
)
PACKAGES = ("nats-py", "redis", "hiredis", "msgspec", "uvloop", "numpy", "pillow", "av")


# ---------------------------------------------------------------------------------------------------- media
@dataclass
class Media:
    """The payloads and where they came from."""

    frame: np.ndarray
    source: str
    frame_index: int | None
    payloads: dict[str, bytes]
    jpeg_sizes_all_frames: dict[str, int] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """For the JSON and the report."""
        return {
            "source": self.source,
            "frame_index": self.frame_index,
            "shape": list(self.frame.shape),
            "bytes": {k: len(v) for k, v in self.payloads.items()},
            "jpeg_quality": JPEG_QUALITY,
            "jpeg_sizes_all_frames": self.jpeg_sizes_all_frames,
        }


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Pillow JPEG of an RGB array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def load_media(video: Path, frame: str) -> Media:
    """A real frame: ``frame`` = ``auto`` (the frame with the largest JPEG, every frame's JPEG size recorded) or an
    index. Without the video, skimage's astronaut photo resized to 720x528 stands in (recorded as the source)."""
    rng = np.random.default_rng(7)
    tensor = rng.standard_normal(TENSOR_BYTES // 4).astype(np.float32).tobytes()
    sizes: dict[str, int] = {}
    if video.exists():
        import av

        wanted = None if frame == "auto" else int(frame)
        best: tuple[int, int, np.ndarray] | None = None
        all_sizes: list[int] = []
        with av.open(str(video)) as container:
            for i, f in enumerate(container.decode(video=0)):
                if wanted is not None and i < wanted:
                    continue
                arr = f.to_ndarray(format="rgb24")
                if wanted is not None:
                    best = (i, 0, arr)
                    break
                n = len(encode_jpeg(arr))
                all_sizes.append(n)
                if best is None or n > best[1]:
                    best = (i, n, arr)
        if best is None:
            raise RuntimeError(f"{video}: no frame {frame}")
        index, _, arr = best
        if all_sizes:
            sizes = {
                "frames": len(all_sizes),
                "min": min(all_sizes),
                "median": int(statistics.median(all_sizes)),
                "max": max(all_sizes),
            }
        source = f"{video.name} frame {index} (PyAV {importlib.metadata.version('av')}, rgb24)"
    else:
        index = None
        try:
            from PIL import Image
            from skimage import data

            arr = np.asarray(Image.fromarray(data.astronaut()).resize((FRAME_W, FRAME_H)))
            source = "skimage.data.astronaut() resized to 720x528 (the video was not found)"
        except ImportError:  # neither: a synthetic gradient with noise (sizes right, JPEG size not realistic)
            yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
            base = np.stack([xx * 255 // FRAME_W, yy * 255 // FRAME_H, (xx + yy) % 256], axis=-1)
            arr = (base + rng.integers(0, 32, base.shape)).clip(0, 255).astype(np.uint8)
            source = "a synthetic 720x528 gradient with noise (neither the video nor scikit-image was found)"
    arr = np.ascontiguousarray(arr)
    payloads = {"raw": arr.tobytes(), "jpeg": encode_jpeg(arr), "tensor": tensor}
    return Media(arr, source, index, payloads, sizes)


def jpeg_codec(frame: np.ndarray, reps: int) -> dict[str, Any]:
    """Pillow encode (q90), full decode to an array, and decode at 1/2 scale (``draft``: DCT scaling), interleaved;
    medians of wall and thread-CPU µs."""
    from PIL import Image

    jpeg = encode_jpeg(frame)
    h, w = frame.shape[:2]

    def enc() -> None:
        encode_jpeg(frame)

    def dec() -> None:
        with Image.open(io.BytesIO(jpeg)) as im:
            np.asarray(im.convert("RGB"))

    def dec_half() -> None:
        with Image.open(io.BytesIO(jpeg)) as im:
            im.draft("RGB", (w // 2, h // 2))
            np.asarray(im.convert("RGB"))

    ops = {"encode_q90": enc, "decode": dec, "decode_half_draft": dec_half}
    wall: dict[str, list[int]] = {k: [] for k in ops}
    cpu: dict[str, list[int]] = {k: [] for k in ops}
    for fn in ops.values():
        fn()  # warm
    for _ in range(reps):
        for name, fn in ops.items():
            t, c = time.perf_counter_ns(), time.thread_time_ns()
            fn()
            cpu[name].append(time.thread_time_ns() - c)
            wall[name].append(time.perf_counter_ns() - t)
    return {
        "reps": reps,
        "jpeg_bytes": len(jpeg),
        **{
            name: {
                "wall_us_p50": round(statistics.median(wall[name]) / 1e3, 1),
                "cpu_us_p50": round(statistics.median(cpu[name]) / 1e3, 1),
            }
            for name in ops
        },
    }


# ---------------------------------------------------------------------------------------------------- CPU
def cpu_ns_precise(pid: int) -> int:
    """On-CPU nanoseconds of every live thread of ``pid`` (``/proc/<pid>/task/*/schedstat``): the tick-based
    ``utime+stime`` (10 ms) is too coarse for a few hundred deletes."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total


# ---------------------------------------------------------------------------------------------------- loop
@dataclass
class Row:
    """One cell: a variant at one payload and in-flight level, slices combined."""

    payload: str
    payload_bytes: int
    inflight: int
    variant: str
    fps: float  # median over slices of completions / window
    fps_slices: list[float]
    p50_ms: float  # pooled over slices
    p99_ms: float
    samples: int
    cpu_us_per_frame: dict[str, float]  # pooled CPU over pooled completions, per process, and "total"
    errors: int
    lost: int
    error_sample: str
    window_s: float
    slices: int


def percentile_ms(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in ms."""
    if not sorted_ns:
        return float("nan")
    return round(sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6, 4)


def to_row(payload: str, size: int, inflight: int, variant: str, slices: list[RunResult]) -> Row:
    """Median throughput over the slices; latency percentiles and CPU per frame pooled over them."""
    lat = sorted(x for s in slices for x in s.latencies_ns)
    n = len(lat)
    cpu = {p: sum(s.cpu_s[i] for s in slices) for i, p in enumerate(PROCESSES)}
    per_frame = {p: round(v / n * 1e6, 1) if n else float("nan") for p, v in cpu.items()}
    per_frame["total"] = round(sum(cpu.values()) / n * 1e6, 1) if n else float("nan")
    fps = [round(s.completions / s.window_s, 1) if s.window_s else 0.0 for s in slices]
    return Row(
        payload=payload,
        payload_bytes=size,
        inflight=inflight,
        variant=variant,
        fps=round(statistics.median(fps), 1),
        fps_slices=fps,
        p50_ms=percentile_ms(lat, 0.50),
        p99_ms=percentile_ms(lat, 0.99),
        samples=n,
        cpu_us_per_frame=per_frame,
        errors=sum(s.errors for s in slices),
        lost=sum(s.lost for s in slices),
        error_sample=next((s.error_sample for s in slices if s.error_sample), ""),
        window_s=round(sum(s.window_s for s in slices), 3),
        slices=len(slices),
    )


async def run_loop(
    nc: Client, args: argparse.Namespace, media: Media, pids: list[int], peers: list[ManagedProcess]
) -> list[Row]:
    """Every (payload, in flight) cell, every variant, ``--slices`` times with the variants' order rotating."""
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(RunResult)
    rows: list[Row] = []
    variants = args.variant_list
    cells = [(p, n) for p in args.payload_list for n in args.inflight_list]
    for ci, (payload, inflight) in enumerate(cells):
        got: dict[str, list[RunResult]] = {v: [] for v in variants}
        for r in range(args.slices):
            shift = (ci + r) % len(variants)
            for v in variants[shift:] + variants[:shift]:
                for peer in peers:
                    if not peer.is_running:
                        raise RuntimeError(f"{peer.name} exited:\n{peer.log_tail()}")
                warmup = args.warmup if r == 0 else args.rewarm
                spec = RunSpec(v, payload, inflight, warmup, args.duration, args.loop_ttl_s, pids)
                reply = await nc.request(CTL_RUN, enc.encode(spec), timeout=warmup + args.duration + 60)
                got[v].append(dec.decode(reply.data))
        for v in variants:
            row = to_row(payload, len(media.payloads[payload]), inflight, v, got[v])
            rows.append(row)
            if not args.quiet:
                cpu = row.cpu_us_per_frame
                print(
                    f"  {payload:6} x{inflight:<3} {v:13} {row.fps:>8,.0f} fps  p50 {row.p50_ms:8.3f} ms"
                    f"  p99 {row.p99_ms:8.3f} ms  cpu/frame us: prod {cpu['producer']:6.0f} cons "
                    f"{cpu['consumer']:6.0f} nats {cpu['nats-server']:6.0f} redis {cpu['redis-server']:6.0f}"
                    f"  err {row.errors} lost {row.lost}",
                    flush=True,
                )
    return rows


# ---------------------------------------------------------------------------------------------------- delete
async def delete_and_expiry(
    c: Clients, args: argparse.Namespace, data: bytes, server_pids: dict[str, int]
) -> list[dict[str, Any]]:
    """Per store: ``--delete-n`` payloads deleted one by one from this process, and the same number left to a TTL
    of ``--expiry-ttl-s`` (server CPU from store-finished to all-gone, minus the idle rate with the same polling)."""
    out: list[dict[str, Any]] = []
    n, ttl = args.delete_n, args.expiry_ttl_s
    ids = itertools.count(10**9)
    for variant in [v for v in args.variant_list if v in DELETABLE]:
        spid = server_pids.get(SERVER_OF.get(variant, ""), 0)
        row: dict[str, Any] = {"variant": variant, "n": n, "payload_bytes": len(data), "server": SERVER_OF.get(variant)}
        row["delete"] = await _explicit_delete(c, variant, data, n, spid, ids, args.loop_ttl_s, erase=False)
        if variant in STREAMS:  # what nats-py's delete_msg does: the server overwrites the message first
            row["delete_erase"] = await _explicit_delete(c, variant, data, n, spid, ids, args.loop_ttl_s, erase=True)
        await purge(c, variant)
        if variant in EXPIRING:
            row["expiry"] = await _expiry(c, variant, data, n, spid, ids, ttl, args.expiry_settle_s)
        out.append(row)
        if not args.quiet:
            print(f"  delete/expiry {variant:13} {json.dumps({k: v for k, v in row.items() if isinstance(v, dict)})}")
    return out


async def _poll_cpu(c: Clients, variant: str, spid: int, seconds: float, *, ttl_bucket: bool) -> int:
    """Server CPU ns over ``seconds`` while polling the store's count every 20 ms (the baseline of ``_expiry``)."""
    s0, t0 = cpu_ns_precise(spid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        await count(c, variant, ttl_bucket=ttl_bucket)
        await asyncio.sleep(0.02)
    return cpu_ns_precise(spid) - s0


async def _expiry(
    c: Clients, variant: str, data: bytes, n: int, spid: int, ids: Iterator[int], ttl: int, settle: float
) -> dict[str, Any]:
    """Settle, baseline: server CPU over ``settle`` s of polling; store ``n`` with ``ttl``; poll until all are gone
    and ``settle`` s more (a Go or jemalloc free that follows the removal belongs to it); expiry CPU = that window's
    server CPU minus the baseline rate over the same length."""
    ttl_bucket = variant in BUCKETS
    await purge(c, variant)
    await asyncio.sleep(settle)
    idle_ns_per_s = await _poll_cpu(c, variant, spid, settle, ttl_bucket=ttl_bucket) / settle
    t_first = time.monotonic()
    for _ in range(n):
        await put(c, variant, next(ids), data, ttl, ttl_bucket=ttl_bucket)
    t_last, s1 = time.monotonic(), cpu_ns_precise(spid)
    left = n
    while left and time.monotonic() - t_last < ttl + 20:
        await asyncio.sleep(0.02)
        left = await count(c, variant, ttl_bucket=ttl_bucket)
    t_gone = time.monotonic()
    await _poll_cpu(c, variant, spid, settle, ttl_bucket=ttl_bucket)
    t_end, s2 = time.monotonic(), cpu_ns_precise(spid)
    await purge(c, variant)
    return {
        "ttl_s": ttl,
        "store_s": round(t_last - t_first, 3),
        "all_gone_after_last_store_s": round(t_gone - t_last, 3),
        "all_gone_after_first_expiry_due_s": round(t_gone - (t_first + ttl), 3),
        "server_cpu_us": round(((s2 - s1) - idle_ns_per_s * (t_end - t_last)) / n / 1e3, 1),
        "idle_server_cpu_ms_per_s": round(idle_ns_per_s / 1e6, 2),
        "left_after": left,
        "expired_while_storing": t_last - t_first >= ttl,  # then the CPU above misses some expiries
    }


async def _explicit_delete(
    c: Clients, variant: str, data: bytes, n: int, spid: int, ids: Iterator[int], ttl_s: int, *, erase: bool
) -> dict[str, Any]:
    """Store ``n`` payloads, then delete them one by one: client wait, client CPU, server CPU per delete."""
    await purge(c, variant)
    refs = [await put(c, variant, next(ids), data, ttl_s) for _ in range(n)]
    await asyncio.sleep(0.1)
    s0, p0, lat = cpu_ns_precise(spid) if spid else 0, time.process_time_ns(), []
    for ref in refs:
        t = time.perf_counter_ns()
        await delete(c, ref, erase=erase)
        lat.append(time.perf_counter_ns() - t)
    s1, p1 = cpu_ns_precise(spid) if spid else 0, time.process_time_ns()
    result = {
        "client_wall_us_p50": round(statistics.median(lat) / 1e3, 1),
        "client_cpu_us": round((p1 - p0) / n / 1e3, 1),
        "server_cpu_us": round((s1 - s0) / n / 1e3, 1) if spid else None,
        "left_after": await count(c, variant),
    }
    await purge(c, variant)
    return result


# ---------------------------------------------------------------------------------------------------- run
def versions(nats_binary: str, redis_binary: str) -> dict[str, str]:
    """Package and server versions."""
    out = {}
    for pkg in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    for name, argv in (("nats-server", [nats_binary, "--version"]), ("redis-server", [redis_binary, "--version"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
            out[name] = text.removeprefix("nats-server: ").split(" sha=")[0].removeprefix("Redis server v=")
    return out


async def wait_ready(files: list[Path], peers: list[ManagedProcess], limit_s: float = 60.0) -> None:
    """Until every peer wrote its ready file (raise with its log if one exits)."""
    deadline = time.monotonic() + limit_s
    while not all(f.exists() for f in files):
        for p in peers:
            if not p.is_running:
                raise RuntimeError(f"{p.name} exited:\n{p.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"peers not ready after {limit_s:.0f} s")
        await asyncio.sleep(0.05)


async def orchestrate(args: argparse.Namespace, media: Media, tmp: Path, shm_dir: Path) -> dict[str, Any]:
    """Servers, peers, the loop, delete/expiry; returns the measured parts of the result."""
    nats_srv, redis_srv = NatsServer(tmp / "nats"), RedisServer(tmp / "redis")
    redis_srv.command += ["--maxmemory", "4gb"]  # frames must not be evicted mid-slice (the cache's 256mb would)
    peers: list[ManagedProcess] = []
    c: Clients | None = None
    ctl: Client | None = None
    try:
        nats_srv.start()
        redis_srv.start()
        ctl = await nats.connect(nats_srv.url, name="claim-check-bench")
        await create_resources(ctl.jetstream(), args.loop_ttl_s, args.expiry_ttl_s)
        (tmp / "payloads").mkdir()
        for name, data in media.payloads.items():
            (tmp / "payloads" / f"{name}.bin").write_bytes(data)
        slot = max(len(v) for v in media.payloads.values())
        for role in ("producer", "consumer"):
            argv = [sys.executable, "-m", "loadtests.claim_check.peer", "--role", role, "--nats", nats_srv.url]
            argv += ["--redis", redis_srv.url, "--workdir", str(tmp), "--shm-dir", str(shm_dir)]
            argv += ["--ring-slots", str(args.ring_slots), "--ring-slot-size", str(slot)]
            peers.append(ManagedProcess(argv, tmp, name=role, cwd=REPO_ROOT))
            peers[-1].start()
        await wait_ready([tmp / "producer.ready", tmp / "consumer.ready"], peers)
        pids = [p.pid or 0 for p in peers] + [nats_srv.pid or 0, redis_srv.pid or 0]
        rows = await run_loop(ctl, args, media, pids, peers)
        for p in peers:
            p.stop()
        c = await Clients.connect(nats_srv.url, redis_srv.url, shm_dir / "files", shm_dir / "ring", 1, 1)
        server_pids = {"nats-server": nats_srv.pid or 0, "redis-server": redis_srv.pid or 0}
        deletes = await delete_and_expiry(c, args, media.payloads["raw"], server_pids) if args.delete_n else []
        info = await c.redis.info("stats")
        redis_stats = {k: info.get(k) for k in ("evicted_keys", "expired_keys")}
        return {"rows": rows, "delete_expiry": deletes, "redis_stats": redis_stats}
    finally:
        if c is not None:
            with contextlib.suppress(Exception):
                await c.close()
        if ctl is not None:
            with contextlib.suppress(Exception):
                await ctl.drain()
        for p in [*peers, redis_srv, nats_srv]:
            p.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--payloads", default=",".join(PAYLOADS), help="comma list of raw, jpeg, tensor")
    p.add_argument("--inflight", default="1,16", help="payloads kept in flight, comma list")
    p.add_argument("--slices", type=int, default=3, help="interleaved repeats per cell and variant")
    p.add_argument("--duration", type=float, default=0.5, help="seconds measured per slice")
    p.add_argument("--warmup", type=float, default=0.3, help="warm-up before a cell's first slice, s")
    p.add_argument("--rewarm", type=float, default=0.1, help="warm-up before each later slice, s")
    p.add_argument("--loop-ttl-s", type=int, default=60, help="TTL in the loop (a safety net: purged after a slice)")
    p.add_argument("--expiry-ttl-s", type=int, default=2, help="TTL in the expiry measurement (whole seconds)")
    p.add_argument("--expiry-settle-s", type=float, default=1.0, help="settle, idle baseline and tail of expiry, s")
    p.add_argument("--delete-n", type=int, default=50, help="raw frames per store for delete/expiry (0: skip)")
    p.add_argument("--jpeg-reps", type=int, default=30, help="repetitions of the JPEG codec timing (0: skip)")
    p.add_argument("--ring-slots", type=int, default=64, help="slots of the shm ring (> 2x the highest in flight)")
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--frame", default="auto", help="frame index, or auto: the frame with the largest JPEG")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "loadtests" / "results")
    p.add_argument("--name", default="claim_check", help="base name of the result files")
    p.add_argument("--report-only", action="store_true", help="rebuild .md and .png from <out-dir>/<name>.json")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.variant_list = [v for v in args.variants.split(",") if v]
    args.payload_list = [x for x in args.payloads.split(",") if x]
    args.inflight_list = [int(x) for x in args.inflight.split(",") if x]
    if bad := [v for v in args.variant_list if v not in VARIANTS]:
        p.error(f"unknown variants {bad}")
    if bad := [x for x in args.payload_list if x not in PAYLOADS]:
        p.error(f"unknown payloads {bad}")
    if args.inflight_list and args.ring_slots <= 2 * max(args.inflight_list):
        p.error("--ring-slots must exceed twice the highest --inflight")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write ``<out-dir>/<name>.{json,md,png}``; returns the result."""
    args = parse_args(argv)
    if args.report_only:
        return write_reports(json.loads((args.out_dir / f"{args.name}.json").read_text()), args, json_too=False)
    shown = sys.argv[1:] if argv is None else argv
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m loadtests.claim_check" + (" " + shlex.join(shown) if shown else ""),
        "machine": machine_info(),
        "versions": versions(
            str(Path(sys.executable).parent / "nats-server")
            if (Path(sys.executable).parent / "nats-server").exists()
            else shutil.which("nats-server") or "nats-server",
            shutil.which("redis-server") or "redis-server",
        ),
        "settings": {k: getattr(args, k) for k in SETTINGS},
    }
    media = load_media(args.video, args.frame)
    result["media"] = media.info()
    if not args.quiet:
        print(f"media: {media.source}, bytes {result['media']['bytes']}", flush=True)
    result["jpeg_codec"] = jpeg_codec(media.frame, args.jpeg_reps) if args.jpeg_reps else None
    shm_dir = Path(tempfile.mkdtemp(prefix="natriton_claim_check_", dir="/dev/shm"))
    (shm_dir / "files").mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix="claim_check_") as tmp:
            measured = uvloop.run(orchestrate(args, media, Path(tmp), shm_dir))
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["delete_expiry"] = measured["delete_expiry"]
    result["redis_stats"] = measured["redis_stats"]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["rows"] = [asdict(r) for r in measured["rows"]]
    return write_reports(result, args, json_too=True)


def write_reports(result: dict[str, Any], args: argparse.Namespace, *, json_too: bool) -> dict[str, Any]:
    """``<out-dir>/<name>.json`` (unless rebuilding from it), ``.md`` and ``.png``."""
    from .report import markdown, plot

    return standalone.write_reports(result, args, markdown, plot, json_too=json_too)


def run_cli() -> None:
    """Entry point of ``python -m loadtests.claim_check``."""
    standalone.run_cli(main)
