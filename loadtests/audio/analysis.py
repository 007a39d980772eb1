"""Pure arithmetic of the live audio benchmark: latency percentiles, what a step sustained, the baseline's
capacity in real-time streams."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MODEL_CHUNK_S = 512 / 16_000
"""One silero chunk: 32 ms of audio."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank (nan when empty)."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def step_summary(streams: int, latencies_s: Sequence[float], sent: int) -> dict[str, Any]:
    """One step of the ramp: how many pieces came back, and their latency (publish → ``voice_activity``)."""
    ordered = sorted(latencies_s)
    return {
        "streams": streams,
        "pieces_sent": sent,
        "pieces_answered": len(ordered),
        "answered_share": round(len(ordered) / sent, 4) if sent else 0.0,
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 2),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else math.nan,
        "chunks_per_s": round(streams / MODEL_CHUNK_S, 1),
    }


def sustains(step: dict[str, Any], p95_limit_ms: float, min_answered: float = 0.99) -> bool:
    """Whether a step kept up: (nearly) every piece answered, p95 within the limit."""
    return step["answered_share"] >= min_answered and step["p95_ms"] <= p95_limit_ms


def sustained_streams(steps: Sequence[dict[str, Any]], p95_limit_ms: float) -> int:
    """The most streams of a step that kept up (0: none did)."""
    return max((s["streams"] for s in steps if sustains(s, p95_limit_ms)), default=0)


def realtime_capacity(chunks_per_s: float) -> float:
    """How many real-time streams a rate of model chunks per second serves (31.25 chunks/s each)."""
    return chunks_per_s * MODEL_CHUNK_S
