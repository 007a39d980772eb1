"""The four mesh services as separate local processes (``python -m natriton_<service>``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from natriton.devstack.process import ManagedProcess, wait_until

SERVICES = ("router", "preprocess", "postprocess", "ingest")
"""Start order: the router publishes the model catalog the others read."""


class ServiceProcess(ManagedProcess):
    """One service process; ready once it logs ``<service> ready``."""

    def __init__(self, service: str, workdir: Path, env: Mapping[str, str], *, copy: int = 0) -> None:
        name = service if copy == 0 else f"{service}-{copy}"
        super().__init__([sys.executable, "-m", f"natriton_{service}"], workdir, name=name, env=env)
        self.service = service

    def wait_ready(self, timeout: float) -> None:
        """Block until the service says it is ready; raise with its log when it dies or times out."""

        def ready() -> bool:
            if not self.is_running:
                raise RuntimeError(f"{self.name} exited with {self.returncode}:\n{self.log_tail()}")
            return f"{self.service} ready" in self.log_tail(200)

        try:
            wait_until(ready, timeout, interval=0.1, what=f"{self.name} ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log:\n{self.log_tail()}") from exc
