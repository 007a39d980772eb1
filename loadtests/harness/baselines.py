"""Baselines measured in the same run as the mesh.

- direct Triton: a closed loop of ``tritonclient.grpc.aio`` calls with the same tensors and concurrency;
- Triton's own ``perf_analyzer`` 2.41 (from the ``tritonclient==2.41.0`` wheel, installed with ``--no-deps
  --target`` into ``.natriton/perf_analyzer/``, never into the venv; newer perf-analyzer wheels need glibc 2.38);
- the raw nats-py 4-relay chain of ``loadtests/runtime_choice`` (its relays and its closed-loop driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .progress import Progress
from .recorder import FAR_FUTURE_NS, OK, Recorder
from .stats import parse_perf_analyzer_csv

REPO_ROOT = Path(__file__).resolve().parents[2]
PERF_ANALYZER_DIR = REPO_ROOT / ".natriton" / "perf_analyzer"
PERF_ANALYZER_WHEEL = "tritonclient==2.41.0"


# ------------------------------------------------------------------------------------------------ direct Triton
async def triton_closed_loop(
    client: Any,
    model: str,
    inputs: dict[str, np.ndarray],
    output_names: Sequence[str],
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    timeout_s: float = 30.0,
    progress: Progress | None = None,
    label: str = "direct triton",
    at_window: Callable[[str], None] | None = None,
) -> Recorder:
    """``concurrency`` coroutines calling ``client.infer`` back to back (a ``tritonclient.grpc.aio`` client)."""
    from tritonclient.grpc import InferInput, InferRequestedOutput

    from natriton.tensors import NUMPY_TO_TRITON

    request_inputs = []
    for name, array in inputs.items():
        tensor = InferInput(name, list(array.shape), NUMPY_TO_TRITON[array.dtype])
        tensor.set_data_from_numpy(array)
        request_inputs.append(tensor)
    outputs = [InferRequestedOutput(n) for n in output_names]
    return await infer_closed_loop(
        client,
        model,
        request_inputs,
        outputs,
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        timeout_s=timeout_s,
        progress=progress,
        label=label,
        at_window=at_window,
    )


async def infer_closed_loop(
    client: Any,
    model: str,
    request_inputs: Sequence[Any],
    outputs: Sequence[Any],
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    timeout_s: float = 30.0,
    progress: Progress | None = None,
    label: str = "direct triton",
    at_window: Callable[[str], None] | None = None,
) -> Recorder:
    """``concurrency`` coroutines each sending the same ready-made request (``tritonclient`` inputs and requested
    outputs) to ``model`` and, on its answer, the next one. Latency is from the send; throughput is completions
    inside the window (after ``warmup_s``), as the mesh's closed loop measures them; ``at_window`` is called with
    ``"start"`` and ``"end"``."""
    from tritonclient.utils import InferenceServerException

    recorder = Recorder(window_start_ns=FAR_FUTURE_NS, window_on="done")
    stopping = False

    async def worker() -> None:
        while not stopping:
            start = time.perf_counter_ns()
            recorder.on_sent(start, start)
            try:
                await client.infer(model, list(request_inputs), outputs=list(outputs), client_timeout=timeout_s)
                outcome = OK
            except InferenceServerException as exc:
                outcome = f"triton:{exc.status() or 'error'}"
            recorder.on_done(outcome, start, start, time.perf_counter_ns())

    async with (progress or Progress(enabled=False)).track(f"{label} x{concurrency}", recorder):
        workers = [asyncio.get_running_loop().create_task(worker()) for _ in range(concurrency)]
        try:
            await asyncio.sleep(warmup_s)
            if at_window is not None:
                at_window("start")
            recorder.window_start_ns = time.perf_counter_ns()
            await asyncio.sleep(duration_s)
            recorder.window_end_ns = time.perf_counter_ns()
            if at_window is not None:
                at_window("end")
            stopping = True
            await asyncio.wait_for(asyncio.gather(*workers), timeout=timeout_s + 5)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return recorder


# ------------------------------------------------------------------------------------------------ perf_analyzer
def _pytriton_libs() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "nvidia_pytriton.libs"
    return libs if libs.is_dir() else None


def ensure_perf_analyzer(root: Path = PERF_ANALYZER_DIR, install: bool = True) -> tuple[Path | None, Path | None, str]:
    """(binary, library folder, '') when perf_analyzer runs here, else (None, None, why not).

    Installs the ``tritonclient==2.41.0`` wheel into ``root`` when missing (``pip --no-deps --target``), then
    links ``libb64.so.0d`` and ``libcudart.so.12`` from ``nvidia_pytriton.libs`` into ``root/lib``.
    """
    binary = root / "bin" / "perf_analyzer"
    if not binary.exists():
        if not install:
            return None, None, f"{binary} is missing (install disabled)"
        argv = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(root), PERF_ANALYZER_WHEEL]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, None, f"pip install {PERF_ANALYZER_WHEEL} failed: {exc}"
        if done.returncode != 0 or not binary.exists():
            return None, None, f"pip install {PERF_ANALYZER_WHEEL} failed: {(done.stderr or done.stdout)[-500:]}"
    libs = _pytriton_libs()
    if libs is None:
        return None, None, "nvidia_pytriton.libs not found (is nvidia-pytriton installed?)"
    libdir = root / "lib"
    libdir.mkdir(exist_ok=True)
    for link, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        found = sorted(libs.glob(pattern))
        if not found:
            return None, None, f"{pattern} not found in {libs}"
        target = libdir / link
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        target.symlink_to(found[0])
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, env=perf_analyzer_env(libdir)
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, None, f"perf_analyzer does not start: {exc}"
    if "Perf Analyzer Version" not in done.stdout + done.stderr:
        return None, None, f"perf_analyzer does not start: {(done.stderr or done.stdout)[-500:]}"
    return binary, libdir, ""


def perf_analyzer_env(libdir: Path) -> dict[str, str]:
    """Environment with the linked libraries first on ``LD_LIBRARY_PATH``."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libdir), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


async def run_perf_analyzer(
    binary: Path,
    libdir: Path,
    grpc_url: str,
    model: str,
    concurrency: int,
    workdir: Path,
    *,
    interval_ms: int = 3000,
    max_trials: int = 4,
    timeout_s: float = 90.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One ``perf_analyzer`` run at one concurrency (gRPC, random input data); its CSV row plus the command."""
    csv_path = workdir / f"perf_analyzer_{model}_c{concurrency}.csv"
    argv = [
        str(binary),
        "-m",
        model,
        "-u",
        grpc_url,
        "-i",
        "grpc",
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-interval",
        str(interval_ms),
        "--stability-percentage",
        "30",
        "--max-trials",
        str(max_trials),
        "--input-data",
        "random",
        "-f",
        str(csv_path),
    ]
    out: dict[str, Any] = {"concurrency": concurrency, "command": " ".join(argv[1:])}
    async with (progress or Progress(enabled=False)).track(f"perf_analyzer {model} x{concurrency}"):
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=perf_analyzer_env(libdir),
        )
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            out["error"] = f"timed out after {timeout_s:.0f} s"
            return out
    text = stdout.decode(errors="replace")
    out["returncode"] = proc.returncode
    rows = parse_perf_analyzer_csv(csv_path.read_text()) if csv_path.exists() else []
    if rows:
        out.update(rows[0])
    else:
        out["error"] = f"no CSV row (exit {proc.returncode}): {text[-800:]}"
    out["stable"] = "Failed to obtain stable measurement" not in text
    return out


# ------------------------------------------------------------------------------------------------ raw nats chain
def from_latencies(latencies_ns: Sequence[int], window_s: float) -> Recorder:
    """A recorder of successful round trips measured elsewhere (the raw chain's driver)."""
    from .recorder import new_histogram, record_us

    recorder = Recorder(window_start_ns=0, window_end_ns=round(window_s * 1e9), window_on="done")
    hist = recorder.outcomes[OK] = new_histogram()
    for latency in latencies_ns:
        record_us(hist, latency)
        record_us(recorder.all, latency)
        record_us(recorder.service, latency)
    recorder.counts[OK] = len(latencies_ns)
    recorder.sent = len(latencies_ns)
    return recorder


class RawChain:
    """The raw nats-py 4-relay chain (``loadtests.runtime_choice.relay --variant raw``) on the mesh's nats-server."""

    def __init__(self, nats_url: str, workdir: Path) -> None:
        self.nats_url = nats_url
        self.workdir = workdir
        self._children: Any = None
        self._chain: Any = None

    def start(self) -> None:
        """Start the four relays and wait until they are subscribed."""
        from loadtests.runtime_choice.bench import Children, Config, start_chains

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._children = Children()
        (self._chain,) = start_chains(self._children, [Config("raw")], self.nats_url, self.workdir)

    def pids(self) -> list[int]:
        """Process ids of the relays."""
        return [p.pid for p in self._chain.procs] if self._chain is not None else []

    async def measure(
        self, nc: Any, payload_bytes: int, inflight: int, warmup_s: float, duration_s: float, progress: Progress | None
    ) -> tuple[Recorder, int, float]:
        """Closed loop with ``inflight`` messages in the chain (runtime_choice's driver).

        Returns (recorder, messages still in flight at the stop, CPU seconds of the four relays in the window).
        """
        from loadtests.runtime_choice.bench import check_alive, measure

        check_alive([self._chain], self.workdir)
        async with (progress or Progress(enabled=False)).track(f"raw nats chain {payload_bytes} B x{inflight}"):
            result = await measure(nc, self._chain, payload_bytes, inflight, warmup_s, duration_s)
        return from_latencies(result.latencies_ns, result.window_s), result.lost, result.relay_cpu_s

    def stop(self) -> None:
        """Stop the relays."""
        if self._children is not None:
            self._children.stop_all()
            self._children = None
