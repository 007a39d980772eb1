"""Summary math of the benchmark (pure): best cells, ratios, targets with pass/miss and by how much."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded to 4 digits, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or not denominator or math.isnan(numerator):
        return None
    return round(numerator / denominator, 4)


def best(items: Iterable[T], key: Callable[[T], float | None]) -> T | None:
    """The item with the highest ``key`` (None keys ignored); None when there is none."""
    scored = [(k, i) for i in items if (k := key(i)) is not None and not math.isnan(k)]
    if not scored:
        return None
    return max(scored, key=lambda pair: pair[0])[1]


def get_path(data: Any, path: str, default: Any = None) -> Any:
    """``get_path(d, "a.0.c")`` = ``d["a"][0]["c"]``, or ``default`` where a key or index is missing."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return default
    return data


@dataclass(frozen=True)
class Target:
    """A target from the issue and what this run measured for it."""

    key: str
    title: str
    op: Literal[">=", "<="]
    threshold: float
    measured: float | None
    unit: str = ""
    note: str = ""

    @property
    def status(self) -> str:
        """``pass``, ``miss`` or ``not measured``."""
        if self.measured is None or math.isnan(self.measured):
            return "not measured"
        ok = self.measured >= self.threshold if self.op == ">=" else self.measured <= self.threshold
        return "pass" if ok else "miss"

    def shortfall(self) -> str:
        """By how much a missed target was missed ('' when it passed or was not measured)."""
        if self.status != "miss":
            return ""
        assert self.measured is not None
        gap = abs(self.measured - self.threshold)
        direction = "below" if self.op == ">=" else "above"
        if not self.threshold:  # e.g. "<= 0 frames": no relative figure
            return f"{fmt(gap, self.unit)} {direction} the target"
        relative = gap / self.threshold * 100
        return f"{fmt(gap, self.unit)} {direction} the target ({relative:.0f} %)"

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "key": self.key,
            "title": self.title,
            "target": f"{self.op} {fmt(self.threshold, self.unit)}",
            "threshold": self.threshold,
            "measured": self.measured,
            "unit": self.unit,
            "status": self.status,
            "shortfall": self.shortfall(),
            "note": self.note,
        }


def fmt(value: float | None, unit: str = "") -> str:
    """A number with its unit for tables: ``0.93x``, ``1.25 ms``, ``-`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.2f} ms" if abs(value) < 100 else f"{value:,.0f} ms"
    if unit == "µs":
        return f"{value:,.0f} µs"
    if unit == "frames":
        return f"{value:,.0f} frames"
    if unit:
        return f"{value:,.1f} {unit}"
    return f"{value:,.3g}"


def parse_perf_analyzer_csv(text: str) -> list[dict[str, float]]:
    """Rows of a ``perf_analyzer -f out.csv`` report with latencies converted from µs to ms.

    Keys: ``concurrency``, ``infer_per_s`` and ``p50_ms``/``p90_ms``/``p95_ms``/``p99_ms``/``avg_ms`` where the
    columns exist.
    """
    rows = []
    columns = {
        "Concurrency": "concurrency",
        "Inferences/Second": "infer_per_s",
        "p50 latency": "p50_ms",
        "p90 latency": "p90_ms",
        "p95 latency": "p95_ms",
        "p99 latency": "p99_ms",
        "Avg latency": "avg_ms",
    }
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, float] = {}
        for column, key in columns.items():
            value = (raw.get(column) or "").strip()
            if not value:
                continue
            number = float(value)
            row[key] = number / 1000 if key.endswith("_ms") else number
        if "concurrency" in row and "infer_per_s" in row:
            rows.append(row)
    return rows


def recovery_s(timeline: Sequence[dict[str, Any]], after_s: float, threshold_ms: float) -> float | None:
    """Seconds from ``after_s`` until the first time-line second (scheduled at or after it) whose successful
    replies have a p99 at or under ``threshold_ms``; None if that never happens within the time line."""
    for bucket in timeline:
        if bucket["t_s"] + 1e-9 < after_s:
            continue
        p99 = (bucket.get("ok") or {}).get("p99_ms")
        if p99 is not None and p99 <= threshold_ms:
            return round(bucket["t_s"] - after_s, 3)
    return None


def interleaved_order(systems: Sequence[str], slice_index: int) -> list[str]:
    """Order of the systems in slice ``slice_index``: rotate each slice so none always goes first."""
    if not systems:
        return []
    shift = slice_index % len(systems)
    return [*systems[shift:], *systems[:shift]]
