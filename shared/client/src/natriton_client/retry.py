"""When the clients send a failed request again: :class:`RetryPolicy` and its (pure) schedule.

Rules, in order (the first that says no wins):

1. only errors whose code is retryable (``overloaded``, ``unavailable`` incl. no responders,
   ``deadline_exceeded``) are retried, never a closed connection;
2. at most ``max_retries`` retries (``max_retries + 1`` attempts);
3. the wait is the mesh's ``retry_after_ms`` hint when there is one (never less), else an exponential backoff
   (``backoff_s``, doubling, at most ``max_backoff_s``); either way plus up to ``jitter`` (a fraction) at random,
   so many clients refused at the same moment do not come back at the same moment;
4. no retry starts more than ``max_total_s`` after the first attempt;
5. never past the deadline: a retry must still have ``min_budget_s`` of the request's deadline left after the wait
   (all attempts share the one deadline of the call).

Only ``msgspec`` is needed to use this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from natriton_client.errors import NatritonError

__all__ = ["NO_RETRY", "RetryPolicy", "retry_delay_s"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry retryable errors (see the module docstring for the rules)."""

    max_retries: int = 3
    """Retries after the first attempt (0 disables retrying)."""
    max_total_s: float = 30.0
    """No retry starts later than this after the first attempt."""
    backoff_s: float = 0.05
    """First wait when the mesh gave no ``retry_after_ms`` (then 2x, 4x, ... up to ``max_backoff_s``)."""
    max_backoff_s: float = 2.0
    """Longest backoff without a hint (a ``retry_after_ms`` hint is honoured even when longer)."""
    jitter: float = 0.2
    """Up to this fraction of the wait is added at random."""
    min_budget_s: float = 0.05
    """A retry needs at least this much of the deadline left once the wait is over."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if min(self.max_total_s, self.backoff_s, self.max_backoff_s, self.jitter, self.min_budget_s) < 0:
            raise ValueError("durations and jitter must be >= 0")

    def delay_s(self, retry: int, retry_after_ms: int | None, rand: float) -> float:
        """The wait before retry number ``retry`` (0-based), ``rand`` a uniform random number in [0, 1)."""
        if retry_after_ms is not None and retry_after_ms >= 0:
            base = retry_after_ms / 1000.0
        else:
            base = min(self.max_backoff_s, self.backoff_s * (2.0**retry))
        return base * (1.0 + self.jitter * rand)


NO_RETRY = RetryPolicy(max_retries=0)
"""Never retry: the first error is raised."""


def retry_delay_s(
    policy: RetryPolicy,
    error: NatritonError,
    *,
    retries_done: int,
    elapsed_s: float,
    remaining_s: float,
    rand: float,
) -> float | None:
    """How long to wait before sending the request again after ``error``, or ``None`` to raise it now.

    ``retries_done``: retries already made; ``elapsed_s``: time since the first attempt; ``remaining_s``: time left
    until the call's deadline; ``rand``: uniform in [0, 1) (the jitter).
    """
    if not error.retryable or retries_done >= policy.max_retries:
        return None
    delay = policy.delay_s(retries_done, error.retry_after_ms, rand)
    if elapsed_s + delay > policy.max_total_s:
        return None
    if remaining_s - delay < policy.min_budget_s:
        return None
    return delay
