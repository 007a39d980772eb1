"""Arrival schedules of the open loop and the hit/fresh pattern of the cache scenarios."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from loadtests.harness import schedule
from loadtests.harness.loadgen import _Releaser
from loadtests.harness.schedule import Phase


def test_one_phase_is_evenly_spaced_at_its_rate() -> None:
    offsets = [a.offset_ns for a in schedule.arrivals([Phase(rate=4, duration_s=1.0)])]
    assert offsets == [0, 250_000_000, 500_000_000, 750_000_000]


def test_phases_follow_one_another_and_keep_their_own_rate() -> None:
    phases = [Phase(10, 1.0), Phase(100, 0.5), Phase(2, 2.0)]
    arrivals = list(schedule.arrivals(phases))
    assert schedule.total_count(phases) == len(arrivals) == 10 + 50 + 4
    assert [a.index for a in arrivals] == list(range(len(arrivals)))
    second = [a for a in arrivals if a.phase == 1]
    assert second[0].offset_ns == 1_000_000_000
    assert second[1].offset_ns - second[0].offset_ns == 10_000_000
    third = [a.offset_ns for a in arrivals if a.phase == 2]
    assert third == [1_500_000_000, 2_000_000_000, 2_500_000_000, 3_000_000_000]
    assert all(b.offset_ns >= a.offset_ns for a, b in itertools.pairwise(arrivals))
    assert schedule.phase_bounds_ns(phases) == [(0, 10**9), (10**9, 15 * 10**8), (15 * 10**8, 35 * 10**8)]
    assert schedule.total_duration_s(phases) == pytest.approx(3.5)


def test_fractional_counts_round_up_to_slots_inside_the_phase() -> None:
    assert Phase(rate=3, duration_s=0.5).count == 2  # slots at 0 and 0.333 s
    assert Phase(rate=1000, duration_s=0.0015).count == 2
    assert Phase(rate=0.5, duration_s=10).count == 5
    offsets = [a.offset_ns for a in schedule.arrivals([Phase(3, 0.5)])]
    assert offsets[-1] < 500_000_000


@pytest.mark.parametrize(("rate", "duration"), [(0, 1), (-1, 1), (10, 0), (float("inf"), 1), (10, float("nan"))])
def test_bad_phases_are_refused(rate: float, duration: float) -> None:
    with pytest.raises(ValueError):
        Phase(rate, duration)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.8, 1 / 3, 0.999, 1.0])
def test_hit_pattern_has_the_exact_ratio_over_every_prefix(ratio: float) -> None:
    hits = 0
    for i in range(1, 2001):
        hits += schedule.is_hit(i - 1, ratio)
        assert hits == int(i * ratio + 1e-9)


def test_hits_are_spread_not_bunched() -> None:
    pattern = [schedule.is_hit(i, 0.8) for i in range(20)]
    assert pattern.count(False) == 4
    misses = [i for i, hit in enumerate(pattern) if not hit]
    assert [b - a for a, b in itertools.pairwise(misses)] == [5, 5, 5]


def test_hit_ratio_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        schedule.is_hit(0, 1.5)


def test_due_finds_every_offset_reached() -> None:
    offsets = [0, 10, 10, 20, 30]
    assert schedule.due(offsets, 0, 9) == 1
    assert schedule.due(offsets, 1, 10) == 3
    assert schedule.due(offsets, 3, 100) == 5
    assert schedule.due(offsets, 5, 100) == 5


class _FakeLoop:
    """Collects what the timer thread hands over, with the moment it did."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.lock = threading.Lock()

    def call_soon_threadsafe(self, fn, *args):  # type: ignore[no-untyped-def]
        with self.lock:
            self.calls.append((*args, time.perf_counter_ns()))


def test_timer_thread_releases_every_request_once_in_order_and_never_early() -> None:
    offsets = [0, 2_000_000, 2_000_000, 4_000_000, 9_000_000]
    loop = _FakeLoop()
    t0 = time.perf_counter_ns() + 1_000_000
    releaser = _Releaser(loop, offsets, t0, lambda i, j: None)  # type: ignore[arg-type]
    releaser.thread.start()
    releaser.thread.join(timeout=2)
    released = [k for i, j, _ in loop.calls for k in range(i, j)]
    assert released == list(range(len(offsets)))
    for i, _j, at in loop.calls:
        assert at >= t0 + offsets[i]  # coordinated-omission safe: never before the scheduled instant
