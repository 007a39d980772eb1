"""From what a producer saw to one row of the fault table (pure: no sockets, no clocks).

Every request the producer sent ends in exactly one of: ``ok`` (a result), a typed error (the mesh answered with an
error code), or ``lost`` (no answer at all before the producer gave up). Independently, ``duplicated`` counts request
messages that more than one answer reached at the producer's connection (the client library would hide the second
one: counting them at the connection shows whether the mesh answered a request twice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LOST: str = "lost"
OK: str = "ok"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the producer saw it: when it was sent (s since the run began) and how it ended."""

    request_id: str
    sent_s: float
    outcome: str
    """``ok``, ``lost``, or the error code of a typed error (``unavailable``, ``deadline_exceeded``, ...)."""
    latency_s: float


@dataclass(slots=True)
class Row:
    """One fault's numbers."""

    fault: str
    sent: int
    ok: int
    typed_errors: dict[str, int]
    lost: int
    duplicated: int
    timeline: list[dict[str, Any]] = field(default_factory=list)
    """Per second of sending: ok and failed counts (for the plot)."""
    latency_p99_ms: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.typed_errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "sent": self.sent,
            "ok": self.ok,
            "typed_errors": dict(self.typed_errors),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "latency_p99_ms": self.latency_p99_ms,
            "timeline": self.timeline,
            "notes": self.notes,
        }


def tally(fault: str, outcomes: Iterable[Outcome], answers_seen: Mapping[str, int]) -> Row:
    """The row of ``fault``; ``answers_seen`` counts the answers that reached the producer per request message (its
    reply subject)."""
    done = list(outcomes)
    by_outcome = Counter(o.outcome for o in done)
    ok = by_outcome.pop(OK, 0)
    lost = by_outcome.pop(LOST, 0)
    duplicated = sum(1 for n in answers_seen.values() if n > 1)
    seconds: dict[int, Counter[str]] = {}
    for o in done:
        seconds.setdefault(int(o.sent_s), Counter())["ok" if o.outcome == OK else "failed"] += 1
    timeline = [{"second": s, "ok": c["ok"], "failed": c["failed"]} for s, c in sorted(seconds.items())]
    latencies = sorted(o.latency_s for o in done if o.outcome == OK)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000 if latencies else 0.0
    return Row(
        fault=fault,
        sent=len(done),
        ok=ok,
        typed_errors=dict(sorted(by_outcome.items())),
        lost=lost,
        duplicated=duplicated,
        timeline=timeline,
        latency_p99_ms=round(p99, 1),
    )
