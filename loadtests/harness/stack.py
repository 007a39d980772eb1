"""The mesh under test: ``natriton_dev`` servers plus the four services, with per-service settings.

``LocalStack`` starts nats-server, redis-server and tritonserver; the services are started here (not by
``LocalStack``) so one service can get its own environment (e.g. ingest's admission limit for the overload
scenario) and be restarted between scenarios. Triton loads only the models the benchmark needs
(``--model-control-mode=explicit``): the others in ``model_repository/`` cost memory and start-up time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from natriton_dev.mesh import SERVICES, ServiceProcess
from natriton_dev.stack import DEFAULT_MODEL_REPOSITORY, LocalStack

log = logging.getLogger(__name__)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def check_models(repository: Path, models: Iterable[str]) -> None:
    """Raise when ``repository`` lacks one of ``models`` (a folder with a ``config.pbtxt``)."""
    missing = [m for m in models if not (repository / m / "config.pbtxt").is_file()]
    if missing:
        raise FileNotFoundError(f"models {missing} are not in {repository}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def syscalls(pid: int) -> tuple[int, int]:
    """Read-like and write-like system calls made so far by one process (``/proc/<pid>/io``; 0 when it is gone).

    Counts ``read``/``readv`` and ``write``/``writev`` (what uvloop and Go's runtime use on sockets), not
    ``recvfrom``/``sendto``."""
    try:
        fields = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, ValueError):
        return 0, 0
    return int(fields.get("syscr", 0)), int(fields.get("syscw", 0))


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Triton's python-backend stubs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _threads(pid: int) -> list[int]:
    """The thread ids of a live process (none when it is gone)."""
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


class MeshStack:
    """Servers + four services for the benchmark; a context manager that stops everything on exit."""

    def __init__(
        self,
        workdir: Path,
        *,
        models: Iterable[str],
        model_repository: Path = DEFAULT_MODEL_REPOSITORY,
        service_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.models = list(dict.fromkeys(models))
        self.source_repository = Path(model_repository)
        self.service_env = dict(service_env or {})
        self.local: LocalStack | None = None
        self.processes: dict[str, ServiceProcess] = {}
        self.overrides: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the servers (Triton with only ``models``), then every service; stop all on failure."""
        check_models(self.source_repository, self.models)
        self.local = LocalStack(
            self.workdir / "stack",
            model_repository=self.source_repository,
            service_env=self.service_env,
            with_services=False,
        )
        self.local.triton.extra_args += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)]
        try:
            self.local.start()
            for service in SERVICES:
                self.start_service(service)
        except BaseException:
            self.stop()
            raise

    def start_service(self, service: str, extra_env: Mapping[str, str] | None = None) -> None:
        """Start one service (or start it again) with the stack's environment plus ``extra_env``."""
        local = self._local()
        self.overrides[service] = dict(extra_env or {})
        env = local.env() | self.overrides[service]
        process = self.processes.get(service)
        if process is None:
            process = ServiceProcess(service, self.workdir / "services", env)
            self.processes[service] = process
        else:
            process.env = env
        process.start()
        process.wait_ready(timeout=60.0 if service == "router" else 30.0)

    def restart_service(self, service: str, extra_env: Mapping[str, str] | None = None) -> None:
        """Stop one service (it drains) and start it again with ``extra_env``."""
        self.processes[service].stop(timeout=20.0)
        self.start_service(service, extra_env)

    def stop(self) -> None:
        """Services first (they drain), then Triton, Redis and NATS."""
        for process in reversed(list(self.processes.values())):
            with contextlib.suppress(Exception):
                process.stop(timeout=20.0)
        if self.local is not None:
            self.local.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ facts
    def _local(self) -> LocalStack:
        if self.local is None:
            raise RuntimeError("MeshStack.start() has not been called")
        return self.local

    @property
    def nats_url(self) -> str:
        """NATS URL of the stack."""
        return self._local().nats_url

    @property
    def triton_grpc_url(self) -> str:
        """``host:port`` of Triton's gRPC endpoint."""
        return self._local().triton.grpc_url

    @property
    def triton_http_url(self) -> str:
        """Base URL of Triton's HTTP endpoint."""
        return self._local().triton.http_url

    def check_alive(self) -> None:
        """Raise with the log tail of any service or server that has exited."""
        for name, process in self.processes.items():
            if not process.is_running:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{process.log_tail()}")
        triton = self._local().triton
        if not triton.is_running:
            raise RuntimeError(f"tritonserver exited with {triton.returncode}:\n{triton.log_tail()}")

    def pids(self) -> dict[str, list[int]]:
        """Process ids by component: the services, tritonserver (with its stubs), nats-server, redis-server."""
        local = self._local()
        out = {name: [p.pid] for name, p in self.processes.items() if p.pid}
        if local.triton.pid:
            out["triton"] = [local.triton.pid, *descendants(local.triton.pid)]
        for name, server in (("nats-server", local.nats), ("redis-server", local.redis)):
            pid = getattr(server, "pid", None)
            if pid:
                out[name] = [pid]
        return out

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far per component (and by this process: the load generator)."""
        snap = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids().items()}
        snap["loadgen"] = cpu_seconds(os.getpid())
        return snap

    def syscall_snapshot(self) -> dict[str, tuple[int, int]]:
        """(reads, writes) system calls so far per component, as :func:`syscalls` counts them."""
        snap: dict[str, tuple[int, int]] = {}
        for name, pids in self.pids().items():
            counts = [syscalls(p) for p in pids]
            snap[name] = (sum(c[0] for c in counts), sum(c[1] for c in counts))
        return snap

    def rss(self) -> dict[str, float]:
        """Resident memory per component in MB."""
        return {name: round(sum(rss_mb(p) for p in pids), 1) for name, pids in self.pids().items()}

    @contextlib.contextmanager
    def pinned(self, component: str, cpus: set[int]) -> Iterator[set[int]]:
        """Keep every thread of ``component`` (``triton``: the server and its python-backend stubs) on ``cpus``
        while the block runs, so the rest of the host's CPUs are never taken by it; yields the CPUs actually used
        (nothing is pinned, and an empty set is yielded, on a host with fewer CPUs than asked for or a single CPU)."""
        available = os.sched_getaffinity(0)
        usable = cpus & available
        if not usable or usable == available:
            yield set()
            return
        threads = [tid for pid in self.pids().get(component, []) for tid in _threads(pid)]
        for tid in threads:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, usable)
        try:
            yield usable
        finally:
            for tid in threads:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, available)

    def triton_stats(self, model: str) -> dict[str, int]:
        """Triton's own counters for ``model``: inferences and executions (their ratio is the batch size)."""
        try:
            with urllib.request.urlopen(f"{self.triton_http_url}/v2/models/{model}/stats", timeout=5) as resp:
                stats: dict[str, Any] = json.load(resp)
        except OSError:
            return {}
        out = {"inference_count": 0, "execution_count": 0}
        for entry in stats.get("model_stats", []):
            out["inference_count"] += int(entry.get("inference_count", 0))
            out["execution_count"] += int(entry.get("execution_count", 0))
        return out


def cpu_per_request_us(before: Mapping[str, float], after: Mapping[str, float], requests: int) -> dict[str, float]:
    """CPU µs per request of each component between two snapshots (empty when no request completed)."""
    if requests <= 0:
        return {}
    return {k: round((after.get(k, 0.0) - before.get(k, 0.0)) / requests * 1e6, 1) for k in after}


def syscalls_per_request(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]], requests: int
) -> dict[str, tuple[float, float]]:
    """(reads, writes) system calls per request of each component between two snapshots (empty when none
    completed)."""
    if requests <= 0:
        return {}
    out = {}
    for k, (reads, writes) in after.items():
        r0, w0 = before.get(k, (0, 0))
        out[k] = (round((reads - r0) / requests, 2), round((writes - w0) / requests, 2))
    return out


def batch_size(before: Mapping[str, int], after: Mapping[str, int]) -> float | None:
    """Average batch size Triton executed between two ``triton_stats`` readings."""
    executions = after.get("execution_count", 0) - before.get("execution_count", 0)
    inferences = after.get("inference_count", 0) - before.get("inference_count", 0)
    return round(inferences / executions, 2) if executions > 0 else None
