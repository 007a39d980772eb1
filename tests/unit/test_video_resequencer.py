"""Resequencing per camera: in order, exactly once, from shuffled and repeated arrivals; gaps never block forever."""

from __future__ import annotations

import random

import pytest

from natriton.video.resequencer import Released, Resequencer


def numbers(released: list[Released[str]]) -> list[int]:
    return [r.frame_number for r in released]


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_and_duplicated_arrivals_are_released_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    n = 500
    arrivals = list(range(n)) + rng.sample(range(n), 150)  # at-least-once: 150 redeliveries
    rng.shuffle(arrivals)
    reseq: Resequencer[str] = Resequencer()
    out: list[Released[str]] = []
    for number in arrivals:
        out += reseq.push(number, f"result {number}")
    assert numbers(out) == list(range(n))
    assert [r.item for r in out] == [f"result {i}" for i in range(n)]
    assert (reseq.released, reseq.duplicates, reseq.buffered, reseq.lag) == (n, 150, 0, 0)
    assert reseq.skipped == reseq.overflowed == reseq.late == 0


def test_reliable_mode_waits_for_the_missing_frame_and_reports_the_lag() -> None:
    reseq: Resequencer[str] = Resequencer()
    assert numbers(reseq.push(0, "a") + reseq.push(1, "b")) == [0, 1]
    for number in [3, 5, 4, 7]:
        assert reseq.push(number, "x") == []
    assert (reseq.next_expected, reseq.lag, reseq.buffered, reseq.missing()) == (2, 6, 4, [2, 6])
    assert numbers(reseq.push(2, "c")) == [2, 3, 4, 5]
    assert (reseq.lag, reseq.missing()) == (2, [6])
    assert numbers(reseq.push(6, "d")) == [6, 7]
    assert reseq.lag == 0


def test_realtime_mode_skips_frames_that_will_never_come() -> None:
    reseq: Resequencer[str] = Resequencer()
    reseq.push(0, "a")
    assert reseq.push(2, "c") == [] and reseq.push(3, "d") == []
    assert numbers(reseq.skip(1)) == [2, 3]
    assert reseq.push(1, "late") == [] and reseq.late == 1  # given up: not released after its successors
    assert reseq.push(3, "again") == [] and reseq.duplicates == 1
    assert reseq.skip(6) == []  # announced before its predecessors arrive
    assert numbers(reseq.push(4, "e") + reseq.push(5, "f")) == [4, 5]
    assert numbers(reseq.push(7, "h")) == [7]
    assert (reseq.skipped, reseq.released) == (2, 6)


def test_a_result_that_comes_after_all_wins_over_its_skip_mark() -> None:
    reseq: Resequencer[str] = Resequencer()
    reseq.skip(2)
    reseq.push(2, "real")
    assert reseq.skip(2) == []  # its result is here: the mark is ignored
    assert [(r.frame_number, r.item) for r in reseq.push(0, "a") + reseq.push(1, "b")] == [
        (0, "a"),
        (1, "b"),
        (2, "real"),
    ]
    assert reseq.skipped == 0


def test_a_watermark_gives_up_every_missing_frame_below_it() -> None:
    reseq: Resequencer[str] = Resequencer(start=100)
    for number in [101, 104, 105, 109]:
        reseq.push(number, "x")
    reseq.skip(107)
    assert numbers(reseq.expect_at_least(108)) == [101, 104, 105]
    assert (reseq.next_expected, reseq.skipped, reseq.missing()) == (108, 5, [108])  # 100, 102, 103, 106, 107
    assert numbers(reseq.push(108, "y")) == [108, 109]
    assert reseq.push(103, "late") == [] and reseq.late == 1
    assert reseq.expect_at_least(50) == []


def test_memory_is_bounded_the_oldest_gap_is_given_up_and_counted() -> None:
    reseq: Resequencer[str] = Resequencer(max_buffered=4)
    out = reseq.push(0, "a")
    for number in range(2, 7):  # frame 1 is lost
        out += reseq.push(number, "x")
    assert numbers(out) == [0, 2, 3, 4, 5, 6]  # the 5th waiting result gave up frame 1
    assert (reseq.overflowed, reseq.buffered) == (1, 0)
    assert reseq.push(1, "late") == [] and reseq.late == 1


def test_a_lossy_shuffled_stream_never_exceeds_the_bound_and_accounts_for_every_frame() -> None:
    rng = random.Random(7)
    n, bound = 2000, 16
    kept = [i for i in range(n) if rng.random() > 0.05]  # 5 % lost upstream, nobody says which
    arrivals = kept + rng.sample(kept, 200)
    # local disorder only: each arrival is at most ~8 places from its turn
    arrivals = [a for _, a in sorted((i + rng.uniform(0, 8), a) for i, a in enumerate(arrivals))]
    reseq: Resequencer[str] = Resequencer(max_buffered=bound)
    out: list[Released[str]] = []
    for number in arrivals:
        out += reseq.push(number, "x")
        assert reseq.buffered <= bound
    out += reseq.expect_at_least(n)
    released = numbers(out)
    assert released == sorted(set(released))  # in order, each once
    assert set(released) <= set(kept) and len(released) >= 0.99 * len(kept)
    assert reseq.released + reseq.overflowed + reseq.skipped == n
