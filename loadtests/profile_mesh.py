"""Where the mesh spends its time: py-spy samples of every service while one load runs.

    python -m loadtests.profile_mesh                       # every load, 8 s each
    python -m loadtests.profile_mesh --load noop_4kb_c64 --duration 15

Loads: ``classifier_c1`` / ``classifier_c16`` (mobilenet_v2 tensor, 1 or 16 in flight), ``noop_4kb_c64`` /
``noop_150kb_c64`` (noop, 64 in flight), ``cache_hit_1000`` (open loop, 1,000 req/s of cache hits). With
``--cpu-only`` nothing is sampled (py-spy takes CPU from the services on a small host): only CPU µs per request per
process, the before/after figure of a change. For each service it prints the share of samples per
function (self time and inclusive time) and CPU µs per request, and writes ``<out-dir>/profile_<load>.json``. Needs
``py-spy`` (``pip install py-spy==0.4.3``); samples with ``--nonblocking`` so the services are not paused.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import uvloop

from loadtests.harness import schedule
from loadtests.harness.loadgen import MeshRequester, closed_loop, open_loop
from loadtests.harness.payloads import body_factory, noop_body
from loadtests.harness.progress import Progress
from loadtests.harness.recorder import Recorder
from loadtests.harness.scenario import Payload, TensorPayload
from loadtests.harness.stack import MeshStack, cpu_per_request_us, syscalls_per_request

LOADS = ("classifier_c1", "classifier_c16", "noop_4kb_c64", "noop_150kb_c64", "cache_hit_1000")
SERVICES = ("ingest", "preprocess", "router", "postprocess")
RESULTS = Path(__file__).resolve().parent / "results"


def top_frames(raw_path: Path, n: int = 12) -> dict[str, Any]:
    """Self and inclusive shares of the functions in a py-spy ``raw`` (collapsed stacks) file."""
    self_count: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        self_count[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    share = {"samples": total}
    if total:
        share["self"] = {f: round(c / total * 100, 1) for f, c in self_count.most_common(n)}
        share["inclusive"] = {f: round(c / total * 100, 1) for f, c in inclusive.most_common(n * 3)}
    return share


async def drive(stack: MeshStack, load: str, duration_s: float, progress: Progress) -> int:
    """Run one load for ``duration_s``; returns the completed requests."""
    from natriton_dev.images import sample_photos

    nc = await nats.connect(stack.nats_url, pending_size=16 * 1024 * 1024)
    requester = MeshRequester(nc)
    await requester.start()
    try:
        if load == "cache_hit_1000":
            bodies = body_factory("mobilenet_v2", Payload(image="coffee.jpg", use_cache=True), sample_photos(), 1.0)
            await closed_loop(requester, bodies, concurrency=1, warmup_s=0, duration_s=0.5, deadline_ms=10_000)
            offsets = [a.offset_ns for a in schedule.arrivals([schedule.Phase(1000, duration_s)])]
            recorder = Recorder()
            await open_loop(
                requester, bodies, offsets, [recorder], [0] * len(offsets), deadline_ms=5000, progress=progress
            )
            return recorder.completed
        if load.startswith("classifier_c"):
            tensor = TensorPayload("IMAGE", "UINT8", (1, 224, 224, 3))
            bodies = body_factory("mobilenet_v2", Payload(tensor=tensor), {})
            concurrency = int(load.removeprefix("classifier_c"))
        else:
            body = noop_body("noop", 4096 if load.startswith("noop_4kb") else 150 * 1024)

            def bodies(_i: int) -> tuple[bytes, str]:
                return body, ""

            concurrency = 64
        recorder = await closed_loop(
            requester,
            bodies,
            concurrency=concurrency,
            warmup_s=0.0,
            duration_s=duration_s,
            deadline_ms=30_000,
            progress=progress,
            label=load,
        )
        return recorder.completed
    finally:
        await requester.close()
        await nc.drain()


def profile(stack: MeshStack, load: str, duration_s: float, workdir: Path, py_spy: str) -> dict[str, Any]:
    """Warm up, then sample every service with py-spy (unless ``py_spy`` is '') while the load runs."""
    progress = Progress()
    uvloop.run(drive(stack, load, 2.0, progress))  # warm-up
    cpu0, calls0 = stack.cpu_snapshot(), stack.syscall_snapshot()
    spies = {}
    for service in SERVICES if py_spy else ():
        out = workdir / f"{load}_{service}.txt"
        pid = str(stack.processes[service].pid)
        argv = [py_spy, "record", "--nonblocking", "-r", "100", "-d", str(int(duration_s)), "-f", "raw"]
        proc = subprocess.Popen(
            [*argv, "-o", str(out), "-p", pid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        spies[service] = (proc, out)
    time.sleep(0.5)
    completed = uvloop.run(drive(stack, load, duration_s, progress))
    for proc, _ in spies.values():
        proc.wait(timeout=30)
    result: dict[str, Any] = {
        "load": load,
        "completed": completed,
        "cpu_us_per_request": cpu_per_request_us(cpu0, stack.cpu_snapshot(), completed),
        "syscalls_per_request": syscalls_per_request(calls0, stack.syscall_snapshot(), completed),
        "services": {s: top_frames(out) if out.exists() else {} for s, (_, out) in spies.items()},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    """Profile the chosen loads and print where each service spends its samples."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", action="append", choices=LOADS, help="repeatable (default: all)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds sampled per load")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--cpu-only", action="store_true", help="no py-spy: CPU µs per request per process only")
    args = p.parse_args(argv)
    py_spy = "" if args.cpu_only else shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if py_spy and not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install 'py-spy==0.4.3'", file=sys.stderr)
        return 2
    loads = args.load or list(LOADS)
    models = ["mobilenet_v2", "noop"] if any(load.startswith("noop") for load in loads) else ["mobilenet_v2"]
    with tempfile.TemporaryDirectory(prefix="natriton-profile-") as tmp, MeshStack(Path(tmp), models=models) as stack:
        for load in loads:
            result = profile(stack, load, args.duration, Path(tmp), py_spy)
            args.out_dir.mkdir(parents=True, exist_ok=True)
            (args.out_dir / f"profile_{load}.json").write_text(json.dumps(result, indent=2) + "\n")
            print(f"\n== {load}: {result['completed']} requests; CPU µs/request {result['cpu_us_per_request']}")
            print(f"   system calls per request (reads, writes): {result['syscalls_per_request']}")
            for service, share in result["services"].items():
                print(f"  -- {service} ({share.get('samples', 0)} samples), self time:")
                for frame, pct in list(share.get("self", {}).items())[:8]:
                    print(f"     {pct:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
