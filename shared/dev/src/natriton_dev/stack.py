"""The whole mesh on one machine: nats-server, redis-server, tritonserver and the four services.

Used by ``make demo``, the integration tests and the load tests::

    with LocalStack(workdir) as stack:
        ...  # stack.nats_url, stack.triton.grpc_url, stack.redis_url

``python -m natriton_dev.stack`` runs it in the foreground until Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from natriton_dev.mesh import SERVICES, ServiceProcess
from natriton_dev.servers import NatsServer, RedisServer
from natriton_dev.triton import TritonServer

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[4]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "model_repository"


class LocalStack:
    """Starts everything in dependency order, stops it in reverse; nothing is left behind.

    ``model_control_mode="explicit"`` lets ``natriton models load|unload`` change the models Triton serves at run
    time; ``load_models`` are loaded at start (``*``: all of them).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        model_repository: Path = DEFAULT_MODEL_REPOSITORY,
        service_env: dict[str, str] | None = None,
        copies: dict[str, int] | None = None,
        with_services: bool = True,
        model_control_mode: str = "",
        load_models: tuple[str, ...] = ("*",),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(self.workdir / "nats")
        self.redis = RedisServer(self.workdir / "redis")
        self.triton = TritonServer(
            model_repository, self.workdir / "triton", model_control_mode=model_control_mode, load_models=load_models
        )
        self.service_env = dict(service_env or {})
        self.copies = {s: 1 for s in SERVICES} | dict(copies or {})
        self.with_services = with_services
        self.services: list[ServiceProcess] = []

    @property
    def nats_url(self) -> str:
        """NATS client URL."""
        return self.nats.url

    @property
    def redis_url(self) -> str:
        """Redis URL."""
        return self.redis.url

    def env(self) -> dict[str, str]:
        """Environment for a service process of this stack."""
        env = dict(os.environ)
        env.update(
            {
                "NATRITON_NATS_URL": self.nats.url,
                "NATRITON_REDIS_URL": self.redis.url,
                "NATRITON_TRITON_GRPC_URL": self.triton.grpc_url,
                "NATRITON_MODEL_REPOSITORY": str(self.triton.model_repository),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.service_env)
        return env

    def start(self) -> None:
        """Start servers, then services; on any failure stop what was started and re-raise."""
        try:
            triton_thread_error: list[BaseException] = []

            def start_triton() -> None:
                try:
                    self.triton.start()
                except BaseException as exc:
                    triton_thread_error.append(exc)

            loader = threading.Thread(target=start_triton, name="triton-start")
            loader.start()  # Triton loads models while NATS and Redis come up
            self.nats.start()
            self.redis.start()
            loader.join()
            if triton_thread_error:
                raise triton_thread_error[0]
            if self.with_services:
                self.start_services()
        except BaseException:
            self.stop()
            raise

    def start_services(self) -> None:
        """Start every copy of every service and wait until each is ready."""
        env = self.env()
        for service in SERVICES:
            started = []
            for copy in range(self.copies.get(service, 1)):
                process = ServiceProcess(service, self.workdir / "services", env, copy=copy)
                process.start()
                self.services.append(process)
                started.append(process)
            for process in started:
                process.wait_ready(timeout=60.0 if service == "router" else 30.0)

    def pids(self) -> dict[str, int]:
        """Process id of every running server and service copy (each leads its own process group)."""
        processes = [self.nats, self.redis, self.triton, *self.services]
        return {p.name: p.pid for p in processes if p.pid is not None and p.is_running}

    def describe(self) -> dict[str, Any]:
        """Where everything listens and runs (what ``natriton up`` writes to its state file)."""
        return {
            "nats_url": self.nats.url,
            "redis_url": self.redis.url,
            "triton_grpc_url": self.triton.grpc_url,
            "triton_http_url": self.triton.http_url,
            "triton_metrics_url": self.triton.metrics_url,
            "model_repository": str(self.triton.model_repository),
            "workdir": str(self.workdir),
            "pids": self.pids(),
        }

    def metrics_urls(self) -> dict[str, str]:
        """Base URL of every service copy's ``/metrics``, ``/healthz`` and ``/readyz`` (each its own port)."""
        return {p.name: p.metrics_url for p in self.services if p.metrics_url}

    def service(self, name: str, copy: int = 0) -> ServiceProcess:
        """One running service process."""
        wanted = name if copy == 0 else f"{name}-{copy}"
        for process in self.services:
            if process.name == wanted:
                return process
        raise KeyError(wanted)

    def stop(self) -> None:
        """Stop services (they drain), then Triton, Redis and NATS."""
        for process in reversed(self.services):
            process.stop(timeout=20.0)
        self.services.clear()
        for server in (self.triton, self.redis, self.nats):
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    """Run the local stack until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="logs and data (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="natriton-stack-"))
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with LocalStack(workdir) as stack:
        log.info(
            "stack up: NATS %s, Redis %s, Triton gRPC %s; logs in %s",
            stack.nats_url,
            stack.redis_url,
            stack.triton.grpc_url,
            workdir,
        )
        stop.wait()


if __name__ == "__main__":
    main()
