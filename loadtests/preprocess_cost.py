"""Preprocess CPU per image: the bare decode+resize function against the real service under load.

    python -m loadtests.preprocess_cost                          # coffee.jpg, 32 in flight, 8 s
    python -m loadtests.preprocess_cost --image all --duration 6 # every sample photo
    python -m loadtests.preprocess_cost --py-spy                 # also sample the service (py-spy raw stacks)

Two figures for the same image (issue 10's target: their ratio at most 1.2):

- ``preprocess_bare_cpu_us``: CPU µs of one call of the exact function the service runs for an image request
  (``natriton_preprocess.logic.prepare_image``, with the layout the service reads from the model catalog and the
  service's default decode limits), in this process on one thread (``time.thread_time``), after a warm-up; the
  median of several rounds.
- ``preprocess_service_cpu_us``: CPU µs (user + system, all threads) the preprocess process spends per completed
  request while a closed loop of that image (``use_cache=False``) runs through the whole mesh.

The rest (``preprocess_service_cpu_us - preprocess_bare_cpu_us``) is what the service adds: NATS, msgspec, the
envelope and tracing, the thread hand-off. :func:`preprocess_cost` takes an already running :class:`MeshStack` and
requester (``loadtests.bench`` can call it); :func:`measure_preprocess_cost` starts a stack when given none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nats
import uvloop

from loadtests.harness.loadgen import MeshRequester, closed_loop
from loadtests.harness.payloads import body_factory
from loadtests.harness.scenario import Payload
from loadtests.harness.stack import MeshStack

MODEL = "mobilenet_v2"
TARGET_RATIO = 1.2
"""Issue 10: the service may spend at most this much more CPU per image than the bare function."""


def bare_cpu_us(call: Callable[[], object], *, warmup: int = 20, min_seconds: float = 0.5, rounds: int = 5) -> float:
    """CPU µs of one ``call()`` on this thread: the median of ``rounds`` rounds of at least ``min_seconds`` each."""
    for _ in range(warmup):
        call()
    start = time.thread_time()
    call()
    once = max(time.thread_time() - start, 1e-6)
    iterations = max(10, int(min_seconds / once))
    results = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(iterations):
            call()
        results.append((time.thread_time() - start) / iterations * 1e6)
    return round(statistics.median(results), 1)


async def image_layout(nc: Any, model: str = MODEL) -> Any:
    """The model's :class:`~natriton.profiles.ImageSpec` as the preprocess service reads it (the model catalog)."""
    from natriton.catalog import ModelCatalog
    from natriton_preprocess.logic import image_spec_of

    catalog = ModelCatalog()
    await catalog.start(nc)
    try:
        async with asyncio.timeout(30):
            info = await catalog.wait_for(model)
        return image_spec_of(info)
    finally:
        await catalog.stop()


def bare_image_cost_us(data: bytes, layout: Any) -> float:
    """CPU µs of the service's image function (``prepare_image``) on ``data`` with the service's default limits."""
    from natriton_preprocess.logic import DecodeLimits, prepare_image
    from natriton_preprocess.settings import Settings

    settings = Settings()
    limits = DecodeLimits(max_pixels=settings.max_image_pixels, min_side=settings.min_image_side)
    prepare_image(data, layout, limits)  # fails loudly here rather than being timed
    return bare_cpu_us(lambda: prepare_image(data, layout, limits))


def bare_in_subprocess(data: bytes, layout: Any, seconds: float) -> float:
    """:func:`bare_image_cost_us` in a fresh Python process, timed for about ``seconds`` (beside a running load)."""
    import msgspec

    with tempfile.NamedTemporaryFile(prefix="natriton-preprocess-cost-", suffix=".img") as image:
        image.write(data)
        image.flush()
        argv = [sys.executable, "-m", "loadtests.preprocess_cost", "--bare-worker", image.name]
        argv += [msgspec.json.encode(layout).decode(), str(seconds)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds * 4 + 60, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _bare_worker(path: str, layout_json: str, seconds: str) -> int:
    """``--bare-worker IMAGE LAYOUT_JSON SECONDS``: print the bare CPU µs per call (for :func:`bare_in_subprocess`)."""
    import msgspec

    from natriton.profiles import ImageSpec
    from natriton_preprocess.logic import DecodeLimits, prepare_image
    from natriton_preprocess.settings import Settings

    data = Path(path).read_bytes()
    layout = msgspec.json.decode(layout_json, type=ImageSpec)
    settings = Settings()
    limits = DecodeLimits(max_pixels=settings.max_image_pixels, min_side=settings.min_image_side)
    rounds = 5
    print(bare_cpu_us(lambda: prepare_image(data, layout, limits), min_seconds=float(seconds) / rounds, rounds=rounds))
    return 0


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image's header."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def preprocess_cost(
    stack: MeshStack,
    requester: MeshRequester,
    photos: Mapping[str, bytes],
    *,
    image: str = "coffee.jpg",
    model: str = MODEL,
    concurrency: int = 32,
    warmup_s: float = 2.0,
    duration_s: float = 8.0,
    deadline_ms: int = 30_000,
    py_spy_out: Path | None = None,
    loaded_bare_s: float = 4.0,
) -> dict[str, Any]:
    """Bare vs service CPU per image for ``photos[image]`` on a running ``stack`` (``requester`` started on it).

    ``py_spy_out``: also record the preprocess process with py-spy (raw stacks) during the measurement window (it
    costs the host CPU: take CPU figures from a run without it). ``loaded_bare_s`` (0: skip): after the service's
    window, run the load that long again and time the bare function in a separate process meanwhile
    (``preprocess_bare_loaded_cpu_us``): on a small host the decoder's own CPU per image grows when other processes
    share the caches and cores, and that part of the service's figure is the host's, not the service's.
    """
    data = photos[image]
    layout = await image_layout(requester.nc, model)
    bare_before = await asyncio.to_thread(bare_image_cost_us, data, layout)
    pid = stack.processes["preprocess"].pid
    assert pid is not None
    snaps: dict[str, dict[str, float]] = {}
    spy: subprocess.Popen[bytes] | None = None

    def at_window(edge: str) -> None:
        nonlocal spy
        snaps[edge] = stack.cpu_snapshot()
        if edge == "start" and py_spy_out is not None:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            argv = [py_spy, "record", "--nonblocking", "-r", "100", "-d", str(int(duration_s)), "-f", "raw"]
            spy = subprocess.Popen(
                [*argv, "-o", str(py_spy_out), "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

    bodies = body_factory(model, Payload(image=image, use_cache=False, top_k=1), photos)
    recorder = await closed_loop(
        requester,
        bodies,
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        deadline_ms=deadline_ms,
        label=f"preprocess cost {image}",
        at_window=at_window,
    )
    if spy is not None:
        await asyncio.to_thread(spy.wait, 60)
    bare_loaded: float | None = None
    if loaded_bare_s > 0:  # the same load again, with the bare function timed beside it in another process
        loaded = asyncio.create_task(
            closed_loop(
                requester,
                bodies,
                concurrency=concurrency,
                warmup_s=0.0,
                duration_s=loaded_bare_s + 1.0,
                deadline_ms=deadline_ms,
                label=f"preprocess cost {image} (bare beside it)",
            )
        )
        try:
            await asyncio.sleep(0.5)
            bare_loaded = await asyncio.to_thread(bare_in_subprocess, data, layout, loaded_bare_s)
        finally:
            await loaded
    bare_after = await asyncio.to_thread(bare_image_cost_us, data, layout)
    summary = recorder.summary()
    completed = recorder.completed  # within the window, like the CPU snapshots
    if completed <= 0 or "start" not in snaps or "end" not in snaps:
        raise RuntimeError(f"no request completed through the mesh ({summary})")
    per_request = {k: round((snaps["end"][k] - snaps["start"].get(k, 0.0)) / completed * 1e6, 1) for k in snaps["end"]}
    bare = min(bare_before, bare_after)  # the host is shared: the quieter of the two
    service = per_request["preprocess"]
    width, height = image_size(data)
    return {
        "image": image,
        "image_bytes": len(data),
        "image_size": f"{width}x{height}",
        "model": model,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "completed": completed,
        "ok_per_s": summary.get("ok_per_s"),
        "error_fraction": summary.get("error_fraction"),
        "preprocess_bare_cpu_us": bare,
        "preprocess_bare_cpu_us_rounds": [bare_before, bare_after],
        "preprocess_service_cpu_us": service,
        "preprocess_overhead_cpu_us": round(service - bare, 1),
        "preprocess_cpu_ratio": round(service / bare, 2) if bare > 0 else None,
        "preprocess_bare_loaded_cpu_us": bare_loaded,
        "preprocess_cpu_ratio_loaded": round(service / bare_loaded, 2) if bare_loaded else None,
        "target_ratio": TARGET_RATIO,
        "cpu_us_per_request": per_request,
    }


async def _measure(
    stack: MeshStack, images: list[str], photos: Mapping[str, bytes], py_spy_dir: Path | None, **kwargs: Any
) -> list[dict[str, Any]]:
    nc = await nats.connect(stack.nats_url, name="natriton-preprocess-cost", pending_size=16 * 1024 * 1024)
    requester = MeshRequester(nc)
    await requester.start()
    try:
        out = []
        for image in images:
            spy_out = py_spy_dir / f"preprocess_{image}.txt" if py_spy_dir is not None else None
            out.append(await preprocess_cost(stack, requester, photos, image=image, py_spy_out=spy_out, **kwargs))
        return out
    finally:
        await requester.close()
        await nc.drain()


def measure_preprocess_cost(
    stack: MeshStack | None = None,
    *,
    images: list[str] | None = None,
    photos: Mapping[str, bytes] | None = None,
    py_spy_dir: Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Bare vs service CPU per image (see the module docstring), on ``stack`` or on a stack started for the purpose.

    Returns the first image's result (``coffee.jpg`` by default) with every image's under ``"images"``. Call it
    outside an event loop; from async code use :func:`preprocess_cost`. ``kwargs`` go to :func:`preprocess_cost`
    (``concurrency``, ``duration_s``, ``warmup_s``, ...).
    """
    if photos is None:
        from natriton_dev.images import sample_photos

        photos = sample_photos()
    names = images or ["coffee.jpg"]
    if stack is None:
        with (
            tempfile.TemporaryDirectory(prefix="natriton-preprocess-cost-") as tmp,
            MeshStack(Path(tmp), models=[kwargs.get("model", MODEL)]) as own,
        ):
            results = uvloop.run(_measure(own, names, photos, py_spy_dir, **kwargs))
    else:
        results = uvloop.run(_measure(stack, names, photos, py_spy_dir, **kwargs))
    return {**results[0], "images": {r["image"]: r for r in results}}


def main(argv: list[str] | None = None) -> int:
    """Measure and print bare vs service CPU per image; write the JSON when ``--out`` is given."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", action="append", help="a sample photo name, repeatable, or 'all' (default coffee.jpg)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured per image")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--py-spy", action="store_true", help="also record the preprocess process (raw stacks)")
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    p.add_argument("--loaded-bare", type=float, default=4.0, help="seconds of bare timing beside the load (0: none)")
    p.add_argument("--bare-worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bare_worker:
        return _bare_worker(*args.bare_worker)
    from natriton_dev.images import sample_photos

    photos = sample_photos()
    images = args.image or ["coffee.jpg"]
    if "all" in images:
        images = list(photos)
    unknown = [i for i in images if i not in photos]
    if unknown:
        p.error(f"unknown image(s) {unknown} (have {sorted(photos)})")
    spy_dir = Path(tempfile.mkdtemp(prefix="natriton-preprocess-spy-")) if args.py_spy else None
    result = measure_preprocess_cost(
        images=images,
        photos=photos,
        py_spy_dir=spy_dir,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        loaded_bare_s=args.loaded_bare,
    )
    print(
        f"{'image':18} {'size':>9} {'bare µs':>8} {'service µs':>10} {'ratio':>6} "
        f"{'bare µs under load':>18} {'ratio':>6}  req/s (concurrency)"
    )
    for r in result["images"].values():
        loaded = r["preprocess_bare_loaded_cpu_us"]
        print(
            f"{r['image']:18} {r['image_size']:>9} {r['preprocess_bare_cpu_us']:>8.0f} "
            f"{r['preprocess_service_cpu_us']:>10.0f} {r['preprocess_cpu_ratio']:>6.2f} "
            f"{loaded or 0:>18.0f} {r['preprocess_cpu_ratio_loaded'] or 0:>6.2f}  {r['ok_per_s']} (x{r['concurrency']})"
        )
    if spy_dir is not None:
        from loadtests.profile_mesh import top_frames

        for raw in sorted(spy_dir.glob("*.txt")):
            share = top_frames(raw, 15)
            print(f"-- {raw.name}: {share.get('samples', 0)} samples; self time:")
            for frame, pct in share.get("self", {}).items():
                print(f"   {pct:5.1f} %  {frame}")
        print(f"raw stacks in {spy_dir}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
