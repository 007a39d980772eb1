"""The in-process floor: the mesh's JPEG → top-5 job with no server, no hop, no copy, in one process.

Per request: ``natriton_preprocess.logic.prepare_image`` (decode, resize, crop, with the service's default limits),
onnxruntime on the ONNX file Triton serves (``model_repository/<model>/<version>/model.onnx``) with the session
options of ``model_repository/onnx_model.py`` (``onnx.intra_op_threads`` from the model's config, one inter-op
thread, sequential, CPU), then ``natriton.answers.top_k``: the same functions the ensemble's stubs call.

``workers`` threads share one session (``run`` is thread-safe; with one intra-op thread each call runs on its
caller's thread), each classifying one JPEG at a time back to back: a closed loop with ``workers`` in flight and batch
1. Decoding and onnxruntime release the GIL, so two workers use two cores.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.harness.recorder import new_histogram, record_us, summarize
from natriton.profiles import ImageSpec

from . import logic


class Floor:
    """One session and what each request does."""

    def __init__(
        self, onnx_path: Path, spec: ImageSpec, labels: tuple[str, ...], *, intra_op_threads: int, k: int = 5
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.onnx_path = onnx_path
        self.intra_op_threads = intra_op_threads
        self.spec = spec
        self.labels = labels
        self.k = k
        self.limits = logic.default_limits()
        self.output = self.session.get_outputs()[0].name

    def classify(self, jpeg: bytes) -> list[tuple[str, float]]:
        """JPEG → top-k (label, score), best first."""
        batch = logic.preprocess(jpeg, self.spec, self.limits)
        (logits,) = self.session.run([self.output], {self.spec.input: batch})
        names, scores = logic.top_k_arrays(np.asarray(logits, dtype=np.float32), self.k, self.labels)
        return [(bytes(n).decode(), float(s)) for n, s in zip(names[0], scores[0], strict=True)]


def measure(floor: Floor, jpeg: bytes, workers: int, seconds: float, warmup_s: float = 1.0) -> dict[str, Any]:
    """``workers`` threads classifying ``jpeg`` back to back for ``warmup_s`` + ``seconds``; the window's requests/s,
    latency percentiles and CPU µs per request of this process (every thread of it, the idle event loop included)."""
    stop = threading.Event()
    window: dict[str, int] = {}
    latencies: list[list[int]] = [[] for _ in range(workers)]

    def work(mine: list[int]) -> None:
        while not stop.is_set():
            t0 = time.perf_counter_ns()
            floor.classify(jpeg)
            t1 = time.perf_counter_ns()
            start = window.get("start")
            if start is not None and t1 >= start and ("end" not in window or t1 <= window["end"]):
                mine.append(t1 - t0)

    threads = [threading.Thread(target=work, args=(mine,), name=f"floor-{i}", daemon=True) for i, mine in
               enumerate(latencies)]  # fmt: skip
    for t in threads:
        t.start()
    try:
        time.sleep(warmup_s)
        cpu0 = time.process_time()
        window["start"] = time.perf_counter_ns()
        time.sleep(seconds)
        window["end"] = time.perf_counter_ns()
        cpu1 = time.process_time()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    done = sum(len(m) for m in latencies)
    wall = (window["end"] - window["start"]) / 1e9
    hist = new_histogram()
    for mine in latencies:
        for value in mine:
            record_us(hist, value)
    latency = summarize(hist)
    return {
        "workers": workers,
        "intra_op_threads": floor.intra_op_threads,
        "requests": done,
        "window_s": round(wall, 3),
        "ok_per_s": round(done / wall, 2) if wall > 0 else 0.0,
        "p50_ms": latency.get("p50_ms"),
        "p99_ms": latency.get("p99_ms"),
        "cpu_us_per_request": round((cpu1 - cpu0) / done * 1e6, 1) if done else None,
        "cpu_cores": round((cpu1 - cpu0) / wall, 2) if wall > 0 else None,
        "latency": latency,
    }
