"""Ingest settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from natriton.settings import CommonSettings
from natriton_ingest.tenants import parse_limits


class Settings(CommonSettings, frozen=True, kw_only=True):
    """Front-door limits and defaults."""

    audio_idle_s: float = 10.0
    """A live audio stream without a chunk for this long is ended (its last speech closed, its state freed)."""
    audio_piece_max_s: float = 60.0
    """Longest piece of a live audio stream (``payload_too_large`` above)."""
    audio_max_streams: int = 1000
    """Live audio streams one copy owns at most; a new one beyond is refused (``overloaded``)."""
    audio_run_timeout_s: float = 10.0
    """Deadline of one run of a live stream's chunks through the pipeline (the piece is lost after it, counted)."""
    max_payload_bytes: int = 4 * 1024 * 1024
    """Requests bigger than this are refused with ``payload_too_large`` (keep below NATS max_payload)."""
    default_timeout_ms: int = 10_000
    """Deadline given to requests that carry none."""
    max_timeout_ms: int = 120_000
    """Longest deadline a producer may ask for."""
    max_top_k: int = 100
    """Largest ``top_k`` a request may ask for; more is ``invalid_argument``."""
    max_pending_per_model: int = 512
    """Requests of one model this copy has in the pipeline at once; more are refused with ``overloaded``."""
    near_cache_ttl_s: float = 2.0
    """Cache hits are also kept in this copy's memory for this long and answered from there without asking Redis
    (an entry never changes under its key, so a copy can only outlive Redis's expiry by this much); 0: off."""
    near_cache_entries: int = 10_000
    """Most answers kept in memory for the near cache (the least recently used go first)."""
    coalesce: bool = True
    """Identical requests (same cache key) in flight at once share one inference."""
    router_answers: bool = True
    """The router makes the answer itself, one hop (router → postprocess) fewer, for every model whose answer is
    cheap to make: all kinds but detectors (decision 0012). False: every answer is made by postprocess."""
    tenant_limits: str = ""
    """Per-tenant limits of this copy, ``<tenant>:<rate>/s:<max pending>`` comma-separated (``*``: every tenant not
    named; 0: no limit), e.g. ``*:50/s:100,TENANT_A:200/s:400``. A tenant is the NATS account a request came from
    (docs/operations.md, Security); the mesh's own account is never limited. Over a limit: ``overloaded``."""
    audit: bool = True
    """Publish an audit record of every answered request (who, model, version, outcome, latency) to the JetStream
    stream ``NATRITON_AUDIT`` (``natriton.v1.audit.<tenant>``)."""
    audit_max_age_days: float = 30.0
    """How long the audit stream keeps records."""
    audit_max_bytes: int = 1024**3
    """The audit stream's size limit (the oldest records go first)."""
    audit_replicas: int = 0
    """Copies of the audit stream in a NATS cluster (0: keep the stream's own count; 1 for a new one)."""
    max_resends: int = 2
    """How often a request is sent into the pipeline again when a copy that may hold it died (no heartbeat), or
    after NATS reconnected; the first answer wins, later ones are dropped."""
    claim_check_bytes: int = 1024 * 1024
    """Images at least this big go to preprocess by reference (stored once in Redis, the frame store) instead of
    inside the message; 0: never (decision 0006: below ~1 MB the message itself is as fast)."""
    max_cameras: int = 16
    """Cameras this copy reads at most (the others are left to other copies)."""
    camera_lease_ttl_s: float = 10.0
    """A camera whose reader stopped renewing its lease (a dead copy) is taken over after about this long."""
    realtime_frames_in_flight: int = 2
    """Real-time cameras: frames out at once; newer frames replace the one waiting (dropped frames are counted)."""
    reliable_frames_in_flight: int = 16
    """Reliable cameras: frames out at once; the source waits when all are out."""
    realtime_frame_deadline_s: float = 5.0
    """Real-time cameras: a frame not answered in this time gets a ``deadline_exceeded`` result."""
    reliable_frame_deadline_s: float = 120.0
    """Reliable cameras: a frame not answered in this time gets a ``deadline_exceeded`` result (frames a dead copy
    held are delivered again well before: NATRITON_FRAME_ACK_WAIT_S of preprocess)."""
    public_url: str = ""
    """The base URL at which this copy's HTTP server (NATRITON_METRICS_PORT) is reachable from outside, e.g.
    ``http://ingest-0.ingest:9464``; the live page of its cameras is ``<public_url>/streams``. Empty: this host's name
    and the metrics port."""
    recordings_dir: str = ""
    """Where recordings of annotated camera output (``POST /streams/<camera>/record``) are written. Empty: the folder
    ``natriton-recordings`` in the system's temporary directory."""
    live_token_file: str = ""
    """A file holding the access token of the live page and recordings (read once at start, whitespace stripped):
    every ``/streams`` and ``/recordings`` request must then carry ``?token=<token>`` (else 401; ``/metrics``,
    ``/healthz`` and ``/readyz`` stay open). Empty: no token, anyone who reaches NATRITON_METRICS_PORT sees the page."""
    recordings_max_age_days: float = 7.0
    """Finished recordings older than this are deleted (swept at start, after each recording, and hourly)."""
    recordings_max_bytes: int = 10 * 1024**3
    """After that, the oldest finished recordings are deleted until the recordings folder holds at most this much."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.default_timeout_ms <= self.max_timeout_ms:
            raise ValueError("need 0 < default_timeout_ms <= max_timeout_ms")
        parse_limits(self.tenant_limits)  # a malformed entry stops the service at start
        if self.audit_max_age_days <= 0 or self.audit_max_bytes < 1 or self.audit_replicas < 0:
            raise ValueError("audit_max_age_days and audit_max_bytes must be positive, audit_replicas >= 0")
        if self.max_resends < 0:
            raise ValueError("max_resends must be >= 0")
        if min(self.audio_idle_s, self.audio_piece_max_s, self.audio_run_timeout_s) <= 0 or self.audio_max_streams < 0:
            raise ValueError("the audio_*_s settings must be > 0 and audio_max_streams >= 0")
        if self.max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be >= 1")
        if min(self.realtime_frames_in_flight, self.reliable_frames_in_flight) < 1 or self.max_cameras < 0:
            raise ValueError("frames in flight must be >= 1 and max_cameras >= 0")
        if min(self.camera_lease_ttl_s, self.realtime_frame_deadline_s, self.reliable_frame_deadline_s) <= 0:
            raise ValueError("camera lease TTL and frame deadlines must be positive")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        if self.recordings_max_age_days <= 0 or self.recordings_max_bytes < 1:
            raise ValueError("recordings_max_age_days and recordings_max_bytes must be positive")

    def public_base_url(self) -> str:
        """Where this copy's HTTP server is reachable (no trailing slash); '' when it serves no HTTP."""
        if self.public_url:
            return self.public_url.rstrip("/")
        if not self.metrics_port:
            return ""
        return f"http://{socket.gethostname() or '127.0.0.1'}:{self.metrics_port}"

    def recordings_path(self) -> Path:
        """The recordings folder (see ``recordings_dir``)."""
        return Path(self.recordings_dir) if self.recordings_dir else Path(tempfile.gettempdir()) / "natriton-recordings"
