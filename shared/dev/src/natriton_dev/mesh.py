"""The four mesh services as separate local processes (``python -m natriton_<service>``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path

import msgspec

from natriton.settings import PREFIX
from natriton_dev.process import ManagedProcess, free_port, wait_until

SERVICES = ("router", "preprocess", "postprocess", "ingest")
"""Start order: the router publishes the model catalog the others read."""


def service_environment(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the ``NATRITON_*`` variables that are no setting of ``service``: a local stack shares one
    environment between its services, and each service reports variables it does not know (typos fail it)."""
    settings: type[msgspec.Struct] = importlib.import_module(f"natriton_{service}.settings").Settings
    known = {PREFIX + field.name.upper() for field in msgspec.structs.fields(settings)}
    return {name: value for name, value in env.items() if not name.startswith(PREFIX) or name in known}


METRICS_PORT = PREFIX + "METRICS_PORT"
METRICS_HOST = PREFIX + "METRICS_HOST"
PUBLIC_URL = PREFIX + "PUBLIC_URL"
RECORDINGS_DIR = PREFIX + "RECORDINGS_DIR"


class ServiceProcess(ManagedProcess):
    """One service process; ready once it logs ``<service> ready``.

    Each copy serves ``/metrics``, ``/healthz`` and ``/readyz`` on 127.0.0.1 and a port of its own (a free one
    unless ``metrics_port`` is given; ``NATRITON_METRICS_PORT=0`` in ``env`` turns it off): :attr:`metrics_url`.
    Ingest copies serve their live page there too (``NATRITON_PUBLIC_URL`` is set to :attr:`metrics_url`) and
    keep recordings in ``<workdir>/recordings`` unless ``NATRITON_RECORDINGS_DIR`` says otherwise.
    """

    def __init__(
        self, service: str, workdir: Path, env: Mapping[str, str], *, copy: int = 0, metrics_port: int | None = None
    ) -> None:
        name = service if copy == 0 else f"{service}-{copy}"
        env = dict(env)
        if env.get(METRICS_PORT) == "0":
            metrics_port = 0
        self.metrics_port = free_port() if metrics_port is None else metrics_port
        """Where this copy serves metrics and health on 127.0.0.1 (0: not at all)."""
        env[METRICS_PORT] = str(self.metrics_port)
        env[METRICS_HOST] = "127.0.0.1"
        if service == "ingest" and self.metrics_port:
            env[PUBLIC_URL] = f"http://127.0.0.1:{self.metrics_port}"
        if service == "ingest":
            env.setdefault(RECORDINGS_DIR, str(Path(workdir) / "recordings"))
        super().__init__([sys.executable, "-m", f"natriton_{service}"], workdir, name=name, env=env)
        self.service = service
        self.ready_timeout = 60.0 if service == "router" else 30.0
        """How long :meth:`wait_ready` waits by default (the router loads the model catalog from Triton first)."""
        self._log_offset = 0

    @property
    def metrics_url(self) -> str:
        """Base URL of this copy's metrics and health endpoints (``<url>/metrics``, ``/healthz``, ``/readyz``);
        '' when turned off."""
        return f"http://127.0.0.1:{self.metrics_port}" if self.metrics_port else ""

    def start(self) -> None:
        """Start (again); readiness is judged only from log lines written after this call."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        if self.env is not None:
            self.env = service_environment(self.service, self.env)
        super().start()

    def log_since_start(self) -> str:
        """What this run of the process has logged so far."""
        with self.log_path.open("rb") as log_file:
            log_file.seek(self._log_offset)
            return log_file.read().decode("utf-8", errors="replace")

    def restart_after_crash(self) -> None:
        """Start again on the same metrics port and wait until ready (it reconnects to NATS by itself)."""
        super().restart_after_crash()
        self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the service says it is ready (default timeout: :attr:`ready_timeout`); raise with its log
        when it dies or times out."""
        timeout = self.ready_timeout if timeout is None else timeout

        def ready() -> bool:
            if not self.is_running:
                raise RuntimeError(f"{self.name} exited with {self.returncode}:\n{self.log_tail()}")
            return f"{self.service} ready" in self.log_since_start()

        try:
            wait_until(ready, timeout, interval=0.1, what=f"{self.name} ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log:\n{self.log_tail()}") from exc
