"""The closed-loop client of the ensemble: ``tritonclient.grpc.aio`` as the direct-Triton baseline, JPEG in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadtests.harness.baselines import infer_closed_loop
from loadtests.harness.progress import Progress
from loadtests.harness.recorder import Recorder

from .repository import ENSEMBLE, request_inputs, requested_outputs


async def ensemble_closed_loop(
    client: Any,
    jpeg: bytes,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    timeout_s: float = 30.0,
    model: str = ENSEMBLE,
    progress: Progress | None = None,
    label: str = "ensemble",
    at_window: Callable[[str], None] | None = None,
) -> Recorder:
    """``concurrency`` coroutines each sending the JPEG to the ensemble and, on its answer, the next request (the
    same loop as the direct-Triton baseline; the request is built once, as the mesh's body is)."""
    return await infer_closed_loop(
        client,
        model,
        request_inputs(jpeg),
        requested_outputs(),
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        timeout_s=timeout_s,
        progress=progress,
        label=label,
        at_window=at_window,
    )
