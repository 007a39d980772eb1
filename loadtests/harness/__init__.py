"""Load-test harness: open- and closed-loop generators over NATS, HDR accounting, scenarios, baselines."""
