"""Router settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

from dataclasses import dataclass

from natriton.settings import CommonSettings, check_tls_files


@dataclass(frozen=True, slots=True)
class GrpcTls:
    """TLS of the router's gRPC channel to Triton: PEM file paths ('' for none)."""

    ca_file: str = ""
    """Root certificates that verify Triton; '' = gRPC's default roots."""
    cert_file: str = ""
    """Client certificate chain (mutual TLS)."""
    key_file: str = ""
    """The client certificate's private key."""


class Settings(CommonSettings, frozen=True, kw_only=True):
    """Where Triton is and how batches form."""

    triton_grpc_url: str = "127.0.0.1:8001"
    """Triton's gRPC endpoint (host:port). ``dns:///name:port`` balances calls over every address the name resolves
    to (gRPC round robin, re-resolved as replicas come and go: a headless Kubernetes Service of Triton replicas);
    ``ipv4:a:port,b:port`` over a fixed list."""
    triton_tls: bool = False
    """Speak TLS to Triton's gRPC endpoint (Triton started with ``--grpc-use-ssl=true``); implied by the files
    below."""
    triton_tls_ca_file: str = ""
    """Root certificate(s) (PEM) that signed Triton's gRPC certificate; empty: gRPC's default roots."""
    triton_tls_cert_file: str = ""
    """Client certificate chain (PEM) for Triton's ``--grpc-use-ssl-mutual=true`` (with ``triton_tls_key_file``)."""
    triton_tls_key_file: str = ""
    """Private key (PEM) of ``triton_tls_cert_file``."""
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
    triton_shared_memory: str = "auto"
    """``auto``: send batches to Triton through system shared memory when Triton can map this router's regions
    (same host and IPC namespace: one pod, or compose services sharing ``ipc``), else over gRPC; ``off``: always
    over gRPC."""

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
        if self.triton_shared_memory not in ("auto", "off"):
            raise ValueError("triton_shared_memory must be auto or off")
        check_tls_files("triton", self.triton_tls_cert_file, self.triton_tls_key_file)

    def triton_grpc_tls(self) -> GrpcTls | None:
        """How to reach Triton over TLS, or None for plaintext gRPC."""
        if not (self.triton_tls or self.triton_tls_ca_file or self.triton_tls_cert_file):
            return None
        return GrpcTls(self.triton_tls_ca_file, self.triton_tls_cert_file, self.triton_tls_key_file)
