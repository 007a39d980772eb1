"""The fault table's counting (pure)."""

from __future__ import annotations

from loadtests.reliability.report import fault_table, replace_section
from loadtests.reliability.tally import LOST, OK, Outcome, tally


def test_each_request_counts_once_by_how_it_ended() -> None:
    outcomes = [
        Outcome("a", 0.1, OK, 0.02),
        Outcome("b", 0.5, "unavailable", 0.001),
        Outcome("c", 1.2, LOST, 7.0),
        Outcome("d", 1.3, OK, 0.04),
    ]
    row = tally("kill -9 router", outcomes, {"_INBOX.x.1": 1, "_INBOX.x.2": 2, "_INBOX.x.3": 1})
    assert (row.sent, row.ok, row.lost, row.duplicated) == (4, 2, 1, 1)
    assert row.typed_errors == {"unavailable": 1}
    assert row.timeline == [{"second": 0, "ok": 1, "failed": 1}, {"second": 1, "ok": 1, "failed": 1}]
    assert row.latency_p99_ms == 40.0


def test_the_table_shows_lost_and_duplicated_per_row() -> None:
    row = tally("restart nats-server", [Outcome("a", 0.0, OK, 0.01)], {}).as_dict()
    table = fault_table([row])
    assert "| restart nats-server | 1 | 1 (100.0%) | 0 | **0** | **0** | 10 ms |" in table


def test_generated_sections_replace_only_their_markers() -> None:
    text = "intro\n<!-- faults:begin -->\nold\n<!-- faults:end -->\nrest\n"
    assert replace_section(text, "faults", "new") == "intro\n<!-- faults:begin -->\nnew\n<!-- faults:end -->\nrest\n"
