"""Arrival schedules of the open-loop generator (pure: no clock, no sockets).

An open loop sends at a fixed rate whatever the replies do: request ``i`` of a phase at ``rate`` req/s is due
``i / rate`` seconds after the phase starts. Phases follow one another (ramp steps, a spike); the schedule is
a list of :class:`Arrival` with offsets in nanoseconds from the start of the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Phase:
    """``duration_s`` seconds at ``rate`` requests per second."""

    rate: float
    duration_s: float
    label: str = ""

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"phase rate must be a positive number, got {self.rate!r}")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"phase duration must be a positive number of seconds, got {self.duration_s!r}")

    @property
    def count(self) -> int:
        """Requests this phase sends: every slot ``i / rate`` strictly inside ``[0, duration)``."""
        return math.ceil(self.rate * self.duration_s - 1e-9)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One scheduled request: its offset from the start of the run, its phase, its index in the run."""

    offset_ns: int
    phase: int
    index: int


def phase_bounds_ns(phases: Sequence[Phase]) -> list[tuple[int, int]]:
    """``[start, end)`` of every phase in ns from the start of the run."""
    bounds, start = [], 0
    for p in phases:
        end = start + round(p.duration_s * 1e9)
        bounds.append((start, end))
        start = end
    return bounds


def arrivals(phases: Sequence[Phase]) -> Iterator[Arrival]:
    """Every request of the run in time order: evenly spaced at each phase's rate."""
    index = 0
    for number, (phase, (start, _end)) in enumerate(zip(phases, phase_bounds_ns(phases), strict=True)):
        interval_ns = 1e9 / phase.rate
        for i in range(phase.count):
            yield Arrival(offset_ns=start + round(i * interval_ns), phase=number, index=index)
            index += 1


def total_count(phases: Sequence[Phase]) -> int:
    """Number of requests the run sends."""
    return sum(p.count for p in phases)


def total_duration_s(phases: Sequence[Phase]) -> float:
    """Seconds from the first slot to the end of the last phase."""
    return sum(p.duration_s for p in phases)


def is_hit(index: int, hit_ratio: float) -> bool:
    """Whether request ``index`` repeats a cached input, spreading hits evenly (exact ratio over any prefix).

    Request ``i`` is a hit when ``floor((i + 1) * r)`` exceeds ``floor(i * r)``: over the first ``n`` requests
    there are exactly ``floor(n * r)`` hits, never bunched.
    """
    if not 0.0 <= hit_ratio <= 1.0:
        raise ValueError(f"hit_ratio must be within [0, 1], got {hit_ratio!r}")
    return math.floor((index + 1) * hit_ratio + 1e-9) > math.floor(index * hit_ratio + 1e-9)


def due(schedule: Sequence[int], start: int, now_offset_ns: int) -> int:
    """Index one past the last offset in ``schedule[start:]`` that is due at ``now_offset_ns`` (sorted input)."""
    end = start
    while end < len(schedule) and schedule[end] <= now_offset_ns:
        end += 1
    return end
