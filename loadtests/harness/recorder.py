"""Outcome accounting in HDR histograms, coordinated-omission safe.

Every request carries three instants (``time.perf_counter_ns`` values):

- ``scheduled``: when it *should* have been sent (open loop: its slot in the arrival schedule; closed loop: the
  moment it was sent, which is the only schedule a closed loop has);
- ``sent``: when the generator actually published it;
- ``done``: when its reply (or the client timeout) was seen.

Latency is always ``done - scheduled``. A generator that falls behind (a busy host, a slow event loop) sends
late, but its requests are still charged from their scheduled slot, so a stall shows up in the percentiles
instead of being hidden (the "coordinated omission" of load generators that wait for replies). ``sent -
scheduled`` is kept as its own histogram (``send_lag``) and ``done - sent`` as ``service`` so a report can tell
the generator's lateness from the system's.

Outcomes are ``ok``, an error code of the public protocol (``overloaded``, ``deadline_exceeded``, ...) or
``client_timeout`` (no reply at all within the client's timeout). Each has its own histogram; ``all`` pools
every outcome (a timeout counts with the time waited). Requests may also carry a tag (``hit``/``miss``) with a
histogram per tag of successful replies.

Only requests inside the measurement window count in the window statistics (``window_on="scheduled"`` for
open loops: requests scheduled inside it; ``"done"`` for closed loops: completions inside it). ``live``
counters see everything and feed the progress line.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 minutes
DIGITS = 3
OK = "ok"
CLIENT_TIMEOUT = "client_timeout"
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
FAR_FUTURE_NS = 1 << 62
"""A window start that nothing reaches: set the real start once the warm-up is over."""


def new_histogram() -> HdrHistogram:
    """A histogram of microseconds from 1 µs to 10 min with 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record_us(hist: HdrHistogram, value_ns: int) -> None:
    """Record a duration given in ns as µs, clamped into the trackable range (never silently dropped)."""
    us = max(LOWEST_US, min(HIGHEST_US, (value_ns + 500) // 1000))
    hist.record_value(us)


def percentiles_us(hist: HdrHistogram, quantiles: Sequence[float]) -> list[int]:
    """``hist.get_value_at_percentile(q)`` for every ``q`` in one vectorised pass.

    hdrhistogram's own method walks every bucket in Python (~1 ms each for this range); this looks only at the
    buckets that hold counts, so the progress line can ask for p50/p99 without stalling the event loop.
    """
    total = hist.get_total_count()
    if total == 0:
        return [0 for _ in quantiles]
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    filled = np.flatnonzero(counts)
    cumulative = np.cumsum(counts[filled])
    out = []
    for q in quantiles:
        target = max(int(min(q, 100.0) * total / 100 + 0.5), 1)
        index = int(filled[min(int(np.searchsorted(cumulative, target)), len(filled) - 1)])
        value = hist.get_value_from_index(index)
        out.append(hist.get_highest_equivalent_value(value) if q else hist.get_lowest_equivalent_value(value))
    return out


def mean_us(hist: HdrHistogram) -> float:
    """Mean of the recorded values (each bucket counted at its middle), vectorised like :func:`percentiles_us`."""
    total = hist.get_total_count()
    if total == 0:
        return 0.0
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    filled = np.flatnonzero(counts)
    middles = []
    for index in filled:
        value = hist.get_value_from_index(int(index))
        low, high = hist.get_lowest_equivalent_value(value), hist.get_highest_equivalent_value(value)
        middles.append((low + high + 1) // 2)
    return float(np.dot(counts[filled].astype(np.float64), np.asarray(middles, dtype=np.float64)) / total)


def summarize(hist: HdrHistogram) -> dict[str, Any]:
    """Count, mean, min, max and the standard percentiles of a µs histogram, in milliseconds."""
    n = hist.get_total_count()
    if n == 0:
        return {"count": 0}
    out: dict[str, Any] = {
        "count": n,
        "mean_ms": round(mean_us(hist) / 1000, 4),
        "min_ms": round(hist.get_min_value() / 1000, 4),
        "max_ms": round(hist.get_max_value() / 1000, 4),
    }
    for q, value in zip(PERCENTILES, percentiles_us(hist, PERCENTILES), strict=True):
        out[percentile_key(q)] = round(value / 1000, 4)
    return out


def percentile_key(q: float) -> str:
    """50 → 'p50_ms', 99.9 → 'p99_9_ms'."""
    text = f"{q:g}".replace(".", "_")
    return f"p{text}_ms"


@dataclass
class Bucket:
    """One second of the run (by scheduled time): completions by outcome and latency of successes."""

    outcomes: Counter[str] = field(default_factory=Counter)
    ok: HdrHistogram = field(default_factory=new_histogram)


@dataclass
class Recorder:
    """Histograms and counters of one measurement (one cell, one phase, ...)."""

    window_start_ns: int | None = None
    window_end_ns: int | None = None
    window_on: Literal["scheduled", "done"] = "scheduled"
    origin_ns: int | None = None
    """Start of the time line (``timeline`` buckets count seconds from here); None: no time line."""
    bucket_s: float = 1.0
    track_tags: bool = False
    """Keep a histogram per reply tag (``hit``/``miss`` of the result cache) for successful replies."""
    keep_done_times: bool = False
    """Keep the completion instant of every successful reply (``ok_done_ns``), in or out of the window."""
    outcomes: dict[str, HdrHistogram] = field(default_factory=dict)
    tags: dict[str, HdrHistogram] = field(default_factory=dict)
    all: HdrHistogram = field(default_factory=new_histogram)
    service: HdrHistogram = field(default_factory=new_histogram)
    send_lag: HdrHistogram = field(default_factory=new_histogram)
    counts: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    timeline: dict[int, Bucket] = field(default_factory=dict)
    live_counts: Counter[str] = field(default_factory=Counter)
    live_ok: HdrHistogram = field(default_factory=new_histogram)
    live_sent: int = 0
    ok_done_ns: list[int] = field(default_factory=list)
    first_done_ns: int | None = None
    last_done_ns: int | None = None

    def in_window(self, scheduled_ns: int, done_ns: int) -> bool:
        """Whether a request with these instants belongs to the measurement window."""
        at = scheduled_ns if self.window_on == "scheduled" else done_ns
        if self.window_start_ns is not None and at < self.window_start_ns:
            return False
        return not (self.window_end_ns is not None and at >= self.window_end_ns)

    def on_sent(self, scheduled_ns: int, sent_ns: int) -> None:
        """A request left the generator (``sent_ns >= scheduled_ns`` unless the clock is odd)."""
        self.live_sent += 1
        if self.in_window(scheduled_ns, sent_ns):
            self.sent += 1
            record_us(self.send_lag, max(0, sent_ns - scheduled_ns))

    def on_done(self, outcome: str, scheduled_ns: int, sent_ns: int, done_ns: int, tag: str = "") -> None:
        """A reply (``ok`` or an error code) or a client timeout (``client_timeout``) for one request."""
        latency_ns = done_ns - scheduled_ns
        self.live_counts[outcome] += 1
        if outcome == OK:
            record_us(self.live_ok, latency_ns)
            if self.keep_done_times:
                self.ok_done_ns.append(done_ns)
        if not self.in_window(scheduled_ns, done_ns):
            return
        self.counts[outcome] += 1
        hist = self.outcomes.get(outcome)
        if hist is None:
            hist = self.outcomes[outcome] = new_histogram()
        record_us(hist, latency_ns)
        record_us(self.all, latency_ns)
        if outcome == OK:
            record_us(self.service, done_ns - sent_ns)
            if tag and self.track_tags:
                tagged = self.tags.get(tag)
                if tagged is None:
                    tagged = self.tags[tag] = new_histogram()
                record_us(tagged, latency_ns)
        if self.first_done_ns is None or done_ns < self.first_done_ns:
            self.first_done_ns = done_ns
        if self.last_done_ns is None or done_ns > self.last_done_ns:
            self.last_done_ns = done_ns
        if self.origin_ns is not None:
            index = math.floor((scheduled_ns - self.origin_ns) / 1e9 / self.bucket_s)
            bucket = self.timeline.get(index)
            if bucket is None:
                bucket = self.timeline[index] = Bucket()
            bucket.outcomes[outcome] += 1
            if outcome == OK:
                record_us(bucket.ok, latency_ns)

    @property
    def completed(self) -> int:
        """Requests in the window that got any outcome."""
        return sum(self.counts.values())

    def window_s(self) -> float:
        """Length of the window in seconds (from the first to the last completion when it is open-ended)."""
        start = self.window_start_ns if self.window_start_ns is not None else self.first_done_ns
        end = self.window_end_ns if self.window_end_ns is not None else self.last_done_ns
        if start is None or end is None or end <= start:
            return 0.0
        return (end - start) / 1e9

    def summary(self) -> dict[str, Any]:
        """JSON-friendly result: counts, rates, and percentiles per outcome, per tag and overall."""
        window = self.window_s()
        ok = self.counts.get(OK, 0)
        out: dict[str, Any] = {
            "window_s": round(window, 3),
            "sent": self.sent,
            "completed": self.completed,
            "counts": dict(sorted(self.counts.items())),
            "ok_per_s": round(ok / window, 2) if window else 0.0,
            "completed_per_s": round(self.completed / window, 2) if window else 0.0,
            "error_fraction": round(1 - ok / self.completed, 5) if self.completed else 0.0,
            "latency": {name: summarize(h) for name, h in sorted(self.outcomes.items())},
            "latency_all": summarize(self.all),
            "service_time_ok": summarize(self.service),
            "send_lag": summarize(self.send_lag),
        }
        if self.tags:
            out["latency_ok_by_tag"] = {name: summarize(h) for name, h in sorted(self.tags.items())}
        if self.timeline:
            out["timeline"] = timeline_summary([self])
        return out


def timeline_summary(recorders: list[Recorder]) -> list[dict[str, Any]]:
    """Per-bucket counts and latency of several recorders sharing one origin (buckets of the same second merge)."""
    merged: dict[int, Bucket] = {}
    bucket_s = recorders[0].bucket_s if recorders else 1.0
    for r in recorders:
        for i, b in r.timeline.items():
            into = merged.get(i)
            if into is None:
                into = merged[i] = Bucket()
            into.outcomes.update(b.outcomes)
            into.ok.add(b.ok)
    return [
        {"t_s": round(i * bucket_s, 3), "counts": dict(sorted(b.outcomes.items())), "ok": summarize(b.ok)}
        for i, b in sorted(merged.items())
    ]


def completions_per_s(recorders: list[Recorder], start_ns: int, end_ns: int) -> float:
    """Successful replies that *arrived* within ``[start, end)`` per second, whichever recorder they belong to.

    In an open loop the replies to one phase's requests may arrive during the next phase: this is the throughput
    the mesh actually delivered in a time span, where ``ok_per_s`` is the goodput of the requests scheduled in it.
    """
    if end_ns <= start_ns:
        return 0.0
    n = sum(1 for r in recorders for t in r.ok_done_ns if start_ns <= t < end_ns)
    return round(n / ((end_ns - start_ns) / 1e9), 2)


def pooled(recorders: list[Recorder]) -> Recorder:
    """One recorder holding the sum of several (e.g. the slices of one cell); windows add up."""
    out = Recorder(window_on=recorders[0].window_on if recorders else "done")
    total_window = 0.0
    for r in recorders:
        total_window += r.window_s()
        for name, hist in r.outcomes.items():
            out.outcomes.setdefault(name, new_histogram()).add(hist)
        for name, hist in r.tags.items():
            out.tags.setdefault(name, new_histogram()).add(hist)
        out.all.add(r.all)
        out.service.add(r.service)
        out.send_lag.add(r.send_lag)
        out.counts.update(r.counts)
        out.sent += r.sent
    # a pooled window is the sum of the parts: express it as [0, total)
    out.window_start_ns, out.window_end_ns = 0, int(total_window * 1e9)
    return out
