"""Router settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

from natriton.settings import CommonSettings


class Settings(CommonSettings, frozen=True, kw_only=True):
    """Where Triton is and how batches form."""

    triton_grpc_url: str = "127.0.0.1:8001"
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batches_in_flight < 1:
            raise ValueError("batches_in_flight must be >= 1")
        if self.batch_max_wait_ms < 0:
            raise ValueError("batch_max_wait_ms must be >= 0")
