"""The whole mesh on one machine: nats-server, redis-server, tritonserver and the four services.

Used by ``make demo``, the integration tests and the load tests::

    with LocalStack(workdir) as stack:
        ...  # stack.nats_url, stack.triton.grpc_url, stack.redis_url

``python -m natriton_dev.stack`` runs it in the foreground until Ctrl-C/SIGTERM, supervised.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from natriton_dev.mesh import SERVICES, ServiceProcess
from natriton_dev.process import ManagedProcess
from natriton_dev.servers import NatsServer, RedisServer
from natriton_dev.supervisor import BackoffPolicy, Subscriber, Supervisor
from natriton_dev.triton import TritonServer

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[4]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "model_repository"


class LocalStack:
    """Starts everything in dependency order, stops it in reverse; nothing is left behind.

    ``model_control_mode="explicit"`` lets ``natriton models load|unload`` change the models Triton serves at run
    time; ``load_models`` are loaded at start (``*``: all of them).

    ``supervise=True`` (``natriton up``) restarts a server or service that dies on the same ports, with
    ``backoff`` (:mod:`natriton_dev.supervisor`; :attr:`supervisor` has the events and restart counts).
    Off by default: in the tests a process that dies must fail the test, and tests stop and kill processes
    themselves. Either way every process gets SIGTERM from the kernel if this process dies (``die_with_parent``),
    ``stop()`` also runs at interpreter exit, and ``stop()`` leaves no process, zombie or Triton shared-memory
    region behind.
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
        supervise: bool = False,
        backoff: BackoffPolicy | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(self.workdir / "nats")
        self.redis = RedisServer(self.workdir / "redis")
        self.triton = TritonServer(
            model_repository, self.workdir / "triton", model_control_mode=model_control_mode, load_models=load_models
        )
        for server in self.servers:
            server.die_with_parent = True
        self.service_env = dict(service_env or {})
        self.copies = {s: 1 for s in SERVICES} | dict(copies or {})
        self.with_services = with_services
        self.services: list[ServiceProcess] = []
        self.supervisor: Supervisor | None = Supervisor(backoff) if supervise else None
        """Restarts what dies (``supervise=True``); subscribe to its events before ``start()`` or after."""

    @property
    def servers(self) -> list[ManagedProcess]:
        """NATS, Redis and Triton."""
        return [self.nats, self.redis, self.triton]

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every server and service copy."""
        return [*self.servers, *self.services]

    def on_supervisor_event(self, callback: Subscriber) -> None:
        """Call ``callback`` with every supervisor event (a crash, a restart...); nothing when not supervised."""
        if self.supervisor is not None:
            self.supervisor.subscribe(callback)

    def restarts(self) -> dict[str, int]:
        """Restarts per process name by the supervisor (empty when not supervised)."""
        return self.supervisor.restarts() if self.supervisor is not None else {}

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
        """Start servers, then services, then the supervisor; on any failure stop what was started and re-raise."""
        atexit.register(self._stop_at_exit)
        try:
            self.triton.launch()  # Triton loads its models while NATS and Redis come up
            self.nats.start()
            self.redis.start()
            self.triton.wait_ready()
            if self.with_services:
                self.start_services()
            if self.supervisor is not None:
                for process in self.processes:
                    self.supervisor.watch(process)
                self.supervisor.start()
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
                process.die_with_parent = True
                process.start()
                self.services.append(process)
                started.append(process)
                if self.supervisor is not None:
                    self.supervisor.watch(process)
            for process in started:
                process.wait_ready()

    def pids(self) -> dict[str, int]:
        """Process id of every running server and service copy (each leads its own process group)."""
        return {p.name: p.pid for p in self.processes if p.pid is not None and p.is_running}

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
        """Stop the supervisor's restarts, then services (they drain), then Triton, Redis and NATS.

        Each process group gets SIGTERM, then SIGKILL for what is left; every process is reaped; Triton's stubs
        and shared-memory regions are removed. Safe to call more than once.
        """
        atexit.unregister(self._stop_at_exit)
        if self.supervisor is not None:
            self.supervisor.hold()
        for process in reversed(self.services):
            try:
                process.stop(timeout=20.0)
            except Exception:
                log.exception("stopping %s failed", process.name)
        self.services.clear()
        for server in (self.triton, self.redis, self.nats):
            try:
                server.stop()
            except Exception:
                log.exception("stopping %s failed", server.name)
        if self.supervisor is not None:
            self.supervisor.close()

    def _stop_at_exit(self) -> None:
        log.warning("the interpreter exits with the local stack still running: stopping it")
        self.stop()

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
    with LocalStack(workdir, supervise=True) as stack:
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
