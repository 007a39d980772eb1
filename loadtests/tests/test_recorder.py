"""Coordinated-omission accounting, windows, outcomes and percentile math of the recorder."""

from __future__ import annotations

import pytest

from loadtests.harness.recorder import (
    CLIENT_TIMEOUT,
    HIGHEST_US,
    OK,
    Recorder,
    completions_per_s,
    mean_us,
    new_histogram,
    percentile_key,
    percentiles_us,
    pooled,
    record_us,
    summarize,
    timeline_summary,
)

MS = 1_000_000


def test_latency_counts_from_the_scheduled_instant_when_the_generator_stalls() -> None:
    # ten requests due every 10 ms; the generator stalls and sends them all at 100 ms; each reply takes 1 ms
    rec = Recorder()
    for i in range(10):
        scheduled, sent = i * 10 * MS, 100 * MS
        rec.on_sent(scheduled, sent)
        rec.on_done(OK, scheduled, sent, sent + 1 * MS)
    s = rec.summary()
    assert s["latency"][OK]["max_ms"] == pytest.approx(101, rel=1e-3)
    assert s["latency"][OK]["min_ms"] == pytest.approx(11, rel=1e-3)
    assert s["service_time_ok"]["max_ms"] == pytest.approx(1, rel=1e-3)  # the system itself was fast
    assert s["send_lag"]["max_ms"] == pytest.approx(100, rel=1e-3)  # ... the stall is visible as send lag
    assert s["latency"][OK]["p50_ms"] > 50  # a closed-loop view (from the send) would claim 1 ms


def test_outcomes_have_their_own_histograms_and_all_pools_them() -> None:
    rec = Recorder()
    rec.on_done(OK, 0, 0, 2 * MS)
    rec.on_done("overloaded", 0, 0, 1 * MS)
    rec.on_done(CLIENT_TIMEOUT, 0, 0, 3000 * MS)
    s = rec.summary()
    assert s["counts"] == {CLIENT_TIMEOUT: 1, OK: 1, "overloaded": 1}
    assert s["latency"]["overloaded"]["p99_ms"] == pytest.approx(1, rel=1e-3)
    assert s["latency_all"]["count"] == 3
    assert s["latency_all"]["max_ms"] == pytest.approx(3000, rel=1e-3)
    assert s["error_fraction"] == pytest.approx(2 / 3, rel=1e-4)
    assert s["service_time_ok"]["count"] == 1


def test_window_on_scheduled_keeps_requests_scheduled_inside_it() -> None:
    rec = Recorder(window_start_ns=100 * MS, window_end_ns=200 * MS, window_on="scheduled")
    rec.on_done(OK, 50 * MS, 50 * MS, 150 * MS)  # scheduled before: out
    rec.on_done(OK, 150 * MS, 150 * MS, 900 * MS)  # scheduled inside, answered long after: in
    rec.on_done(OK, 200 * MS, 200 * MS, 201 * MS)  # end is exclusive
    assert rec.completed == 1
    assert sum(rec.live_counts.values()) == 3  # the progress line sees everything
    s = rec.summary()
    assert s["window_s"] == pytest.approx(0.1)
    assert s["ok_per_s"] == pytest.approx(10.0)


def test_window_on_done_keeps_completions_inside_it() -> None:
    rec = Recorder(window_start_ns=100 * MS, window_end_ns=200 * MS, window_on="done")
    rec.on_done(OK, 50 * MS, 50 * MS, 150 * MS)
    rec.on_done(OK, 150 * MS, 150 * MS, 250 * MS)
    assert rec.completed == 1


def test_tags_are_kept_only_when_asked() -> None:
    plain, tagged = Recorder(), Recorder(track_tags=True)
    for rec in (plain, tagged):
        rec.on_done(OK, 0, 0, 1 * MS, "hit")
        rec.on_done(OK, 0, 0, 30 * MS, "miss")
        rec.on_done("internal", 0, 0, 1 * MS, "miss")
    assert "latency_ok_by_tag" not in plain.summary()
    by_tag = tagged.summary()["latency_ok_by_tag"]
    assert by_tag["hit"]["count"] == 1
    assert by_tag["miss"]["count"] == 1  # errors are not tagged


def test_percentiles_of_a_uniform_distribution() -> None:
    hist = new_histogram()
    for ms in range(1, 1001):
        record_us(hist, ms * MS)
    s = summarize(hist)
    assert s["count"] == 1000
    assert s["p50_ms"] == pytest.approx(500, rel=2e-3)
    assert s["p90_ms"] == pytest.approx(900, rel=2e-3)
    assert s["p99_ms"] == pytest.approx(990, rel=2e-3)
    assert s["p99_9_ms"] == pytest.approx(999, rel=2e-3)
    assert s["mean_ms"] == pytest.approx(500.5, rel=2e-3)
    assert summarize(new_histogram()) == {"count": 0}


def test_values_outside_the_range_are_clamped_not_lost() -> None:
    hist = new_histogram()
    record_us(hist, -5)
    record_us(hist, 10**16)
    assert hist.get_total_count() == 2
    assert hist.get_max_value() >= HIGHEST_US * 0.999


def test_percentile_keys() -> None:
    assert percentile_key(50) == "p50_ms"
    assert percentile_key(99.9) == "p99_9_ms"


def test_pooled_slices_add_counts_and_windows() -> None:
    a = Recorder(window_start_ns=0, window_end_ns=2_000 * MS, window_on="done")
    b = Recorder(window_start_ns=5_000 * MS, window_end_ns=6_000 * MS, window_on="done")
    for _ in range(20):
        a.on_done(OK, 0, 0, 10 * MS)
    for _ in range(10):
        b.on_done(OK, 5_000 * MS, 5_000 * MS, 5_100 * MS)
    b.on_done("overloaded", 5_000 * MS, 5_000 * MS, 5_001 * MS)
    s = pooled([a, b]).summary()
    assert s["window_s"] == pytest.approx(3.0)
    assert s["counts"] == {OK: 30, "overloaded": 1}
    assert s["ok_per_s"] == pytest.approx(10.0)
    assert s["latency"][OK]["max_ms"] == pytest.approx(100, rel=1e-3)


def test_timeline_buckets_by_scheduled_second_and_merges_recorders() -> None:
    first = Recorder(origin_ns=0)
    second = Recorder(origin_ns=0)
    first.on_done(OK, 100 * MS, 100 * MS, 120 * MS)
    first.on_done(OK, 900 * MS, 900 * MS, 2_500 * MS)  # counted in the second it was scheduled in
    second.on_done("overloaded", 950 * MS, 950 * MS, 951 * MS)
    second.on_done(OK, 1_200 * MS, 1_200 * MS, 1_210 * MS)
    line = timeline_summary([first, second])
    assert [b["t_s"] for b in line] == [0.0, 1.0]
    assert line[0]["counts"] == {OK: 2, "overloaded": 1}
    assert line[0]["ok"]["max_ms"] == pytest.approx(1600, rel=1e-3)
    assert line[1]["counts"] == {OK: 1}


def test_delivered_throughput_counts_replies_by_arrival_across_phases() -> None:
    before = Recorder(keep_done_times=True)
    during = Recorder(keep_done_times=True)
    before.on_done(OK, 0, 0, 1_500 * MS)  # scheduled in the first phase, answered in the second
    during.on_done(OK, 1_100 * MS, 1_100 * MS, 1_200 * MS)
    during.on_done(OK, 1_900 * MS, 1_900 * MS, 2_100 * MS)  # answered after the second phase
    during.on_done("overloaded", 1_200 * MS, 1_200 * MS, 1_300 * MS)
    assert completions_per_s([before, during], 1_000 * MS, 2_000 * MS) == 2.0
    assert completions_per_s([before, during], 2_000 * MS, 2_000 * MS) == 0.0
    assert Recorder().ok_done_ns == []


def test_fast_percentiles_and_mean_match_hdrhistogram() -> None:
    import random

    rng = random.Random(3)
    hist = new_histogram()
    for _ in range(3000):
        record_us(hist, int(rng.lognormvariate(8, 2)) * 1000)
    quantiles = (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0)
    assert percentiles_us(hist, quantiles) == [hist.get_value_at_percentile(q) for q in quantiles]
    assert mean_us(hist) == pytest.approx(hist.get_mean_value(), rel=1e-6)
    assert percentiles_us(new_histogram(), (50.0,)) == [0]
