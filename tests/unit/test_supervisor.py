"""The supervisor's restart policy (pure logic) and how its events read."""

from __future__ import annotations

import pytest

from natriton_dev.supervisor import BackoffPolicy, EventKind, RestartBackoff, SupervisorEvent, exit_status

POLICY = BackoffPolicy(first_delay_s=0.5, factor=2.0, max_delay_s=10.0, stable_after_s=30.0, give_up_after=8)


def test_the_delay_doubles_from_half_a_second_up_to_ten() -> None:
    assert [POLICY.delay_s(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_rapid_failures_back_off_then_give_up() -> None:
    backoff = RestartBackoff(POLICY)
    delays = [backoff.on_failure(uptime_s=1.0) for _ in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.on_failure(uptime_s=1.0) is None  # the 8th rapid failure in a row
    assert backoff.rapid_failures == 8


def test_a_process_that_stayed_up_starts_from_the_first_delay_again() -> None:
    backoff = RestartBackoff(POLICY)
    for _ in range(5):
        backoff.on_failure(uptime_s=2.0)
    assert backoff.on_failure(uptime_s=30.0) == 0.5
    assert backoff.rapid_failures == 1
    assert backoff.on_failure(uptime_s=29.9) == 1.0  # up for less than stable_after_s: rapid again


def test_a_failed_restart_counts_as_a_rapid_failure() -> None:
    backoff = RestartBackoff(POLICY)
    assert backoff.on_failure(uptime_s=600.0) == 0.5  # the crash of a long-running process
    assert backoff.on_failure(uptime_s=0.0) == 1.0  # its restart failed


def test_give_up_after_one_means_never_restart() -> None:
    assert RestartBackoff(BackoffPolicy(give_up_after=1)).on_failure(uptime_s=100.0) is None


@pytest.mark.parametrize(
    ("returncode", "shown"), [(-9, "exit -9, SIGKILL"), (-15, "exit -15, SIGTERM"), (1, "exit 1"), (None, "exit ?")]
)
def test_exit_status_names_the_signal(returncode: int | None, shown: str) -> None:
    assert exit_status(returncode) == shown


def test_event_messages() -> None:
    restarted = SupervisorEvent(EventKind.RESTARTED, "tritonserver", -9, delay_s=0.5, restarts=1, pid=42)
    assert restarted.message == "restarted tritonserver (exit -9, SIGKILL) after 0.5 s (pid 42)"
    crashed = SupervisorEvent(EventKind.CRASHED, "preprocess-1", 1, delay_s=2.0)
    assert crashed.message == "preprocess-1 died (exit 1); restarting it in 2.0 s"
    failed = SupervisorEvent(EventKind.RESTART_FAILED, "router", -9, delay_s=1.0, error="not ready\nlog: ...")
    assert failed.message == "restarting router failed: not ready; next attempt in 1.0 s"
    gave_up = SupervisorEvent(EventKind.GAVE_UP, "nats-server", 1)
    assert gave_up.message == "gave up restarting nats-server (exit 1): it failed too often in a row"
