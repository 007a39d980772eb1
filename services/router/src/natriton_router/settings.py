"""Router settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

from natriton.settings import CommonSettings


class Settings(CommonSettings, frozen=True, kw_only=True):
    """Where Triton is and how batches form."""

    triton_grpc_url: str = "127.0.0.1:8001"
    """Triton's gRPC endpoint (host:port)."""
    model_repository: str = ""
    """The model repository Triton serves, as a directory (read-only): the router reads the files beside each model
    (labels, tokenizer) from it. Empty: models that need such files are published as not servable."""
    triton_ready_timeout_s: float = 120.0
    """How long to wait for Triton at start before giving up (exit 1)."""
    triton_timeout_s: float = 30.0
    """Upper bound of one inference call (the request's own deadline is usually shorter)."""
    catalog_refresh_s: float = 30.0
    """How often to re-read Triton's repository and republish the model catalog."""
    batch_max_wait_ms: float = 0.0
    """How long a batch may wait to fill once it has a free slot. 0 = send what is queued at once."""
    batches_in_flight: int = 2
    """Batches of one model executing at once; while all are busy, requests queue and form the next batch."""
    max_queued_per_model: int = 512
    """Requests of one model version waiting for a batch; more are refused with ``overloaded`` at once."""
    max_in_flight_per_model: int = 1024
    """Requests of one model version waiting or executing; more are refused with ``overloaded`` at once."""
    triton_retries: int = 2
    """Retries of a batch after a transient Triton error (``unavailable``), within the members' deadline."""
    retry_backoff_ms: float = 50.0
    """First retry delay; doubles each time, with jitter."""
    breaker_threshold: int = 5
    """Consecutive Triton failures of one model that open its circuit (refuse at once with ``unavailable``)."""
    breaker_reset_s: float = 5.0
    """How long an open circuit refuses before one probe request is let through."""
    shadow_max_in_flight: int = 64
    """Mirrored (shadow) requests in flight at once; beyond this, mirroring is skipped and counted."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batches_in_flight < 1:
            raise ValueError("batches_in_flight must be >= 1")
        if self.batch_max_wait_ms < 0:
            raise ValueError("batch_max_wait_ms must be >= 0")
        if min(self.max_queued_per_model, self.max_in_flight_per_model, self.breaker_threshold) < 1:
            raise ValueError("queue/in-flight limits and breaker_threshold must be >= 1")
        if self.triton_retries < 0:
            raise ValueError("triton_retries must be >= 0")
