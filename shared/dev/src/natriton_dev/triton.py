"""Run the real Triton Inference Server from the ``nvidia-pytriton`` wheel on a CPU-only host.

Handles what a bare ``tritonserver`` launch gets wrong here (see docs on Triton on CPU): a backend directory holding
the python backend plus the stub for the running Python, ``LD_LIBRARY_PATH`` with the wheel's libraries and this
interpreter's libpython, the venv first on ``PATH`` (the stub finds its interpreter through ``python3``), a ready
timeout (a stub that cannot start makes Triton hang) and removal of what a killed server leaves: its python-backend
stub processes (found by the server's own shared-memory prefix, which is on their command lines) and their
shared-memory regions.

CLI: ``python -m natriton_dev.triton --model-repository model_repository --workdir /tmp/triton``.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from natriton_dev.process import ManagedProcess, free_port, kill_and_wait, pids_with_command_line

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
STUB_NAME = "triton_python_backend_stub"


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready in time; the message carries the log tail."""


@dataclass(frozen=True)
class TritonInstall:
    """Paths inside the installed ``nvidia-pytriton`` wheel."""

    root: Path  # site-packages/pytriton/tritonserver
    libs: Path  # site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        """The ``tritonserver`` executable."""
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        """Folder with ``libtriton_python.so`` and ``triton_python_backend_utils.py``."""
        return self.root / "backends" / "python"

    @property
    def caches(self) -> Path:
        """Folder for ``--cache-directory`` (holds the local response cache)."""
        return self.root / "caches"

    def stub(self, version: str | None = None) -> Path:
        """The python-backend stub built for Python ``X.Y`` (default: the running interpreter)."""
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / STUB_NAME

    @classmethod
    def locate(cls) -> TritonInstall:
        """Find the wheel's files without importing ``pytriton``; raise ``TritonStartError`` if incomplete."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonStartError("nvidia-pytriton is not installed (pip install nvidia-pytriton==0.7.0)")
        package = Path(next(iter(spec.submodule_search_locations)))
        install = cls(root=package / "tritonserver", libs=package.parent / "nvidia_pytriton.libs")
        for path in (install.binary, install.python_backend / "libtriton_python.so", install.stub(), install.libs):
            if not path.exists():
                raise TritonStartError(f"incomplete nvidia-pytriton install: {path} is missing")
        return install


def _shm_regions() -> set[str]:
    try:
        return {p.name for p in SHM_DIR.glob(f"{SHM_PREFIX}*")}
    except OSError:
        return set()


def _distinct_free_port(taken: set[int]) -> int:
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


def _copy_if_changed(src: Path, dst: Path) -> None:
    if dst.exists():
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime):
            return
    shutil.copy2(src, dst)


class TritonServer(ManagedProcess):
    """A local ``tritonserver`` (python backend, CPU) on 127.0.0.1, for tests, the demo and benchmarks.

    Ports left at 0 are picked free at construction and kept across restarts. ``start()`` (= ``launch()`` then
    ``wait_ready()``) returns once ``/v2/health/ready`` answers 200 and raises :class:`TritonStartError` (with the
    log tail) if the server exits or is not ready within ``ready_timeout``. ``stop()`` shuts it down (SIGTERM, then
    SIGKILL after ``timeout``); it and :meth:`clean_up_leftovers` (after a crash) kill the python-backend stubs and
    remove the shared-memory regions of this server (all named with :attr:`shm_prefix`).
    """

    def __init__(
        self,
        model_repository: Path,
        workdir: Path,
        *,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        ready_timeout: float = 120.0,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        model_control_mode: str = "",
        load_models: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        taken = {p for p in (http_port, grpc_port, metrics_port) if p}
        self.http_port = http_port or _distinct_free_port(taken)
        self.grpc_port = grpc_port or _distinct_free_port(taken)
        self.metrics_port = metrics_port or _distinct_free_port(taken)
        self.ready_timeout = ready_timeout
        self.extra_args = list(extra_args)
        self.model_control_mode = model_control_mode
        """``explicit`` lets the repository API load and unload models; empty: Triton's default (``none``)."""
        self.load_models = list(load_models)
        """In explicit mode, the models loaded at start (``*``: all of them)."""
        self._base_env = dict(env) if env is not None else dict(os.environ)
        # A prefix unique to this server (it still starts with SHM_PREFIX) keeps its regions apart from others'.
        self.shm_prefix = f"{SHM_PREFIX}natriton_{os.getpid()}_{secrets.token_hex(4)}_"
        super().__init__(["tritonserver"], Path(workdir).resolve(), name="tritonserver")

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP/REST (KServe v2) endpoint."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` expects it."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _prepare(self) -> None:
        install = TritonInstall.locate()
        backends = self.workdir / "backends"
        python_dir = backends / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for src in (
            install.python_backend / "libtriton_python.so",
            install.python_backend / "triton_python_backend_utils.py",
            install.stub(),
        ):
            _copy_if_changed(src, python_dir / src.name)

        libdir = sysconfig.get_config_var("LIBDIR")
        env = dict(self._base_env)
        ld_paths = [str(install.libs)] + ([str(libdir)] if libdir else [])
        if env.get("LD_LIBRARY_PATH"):
            ld_paths.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(ld_paths)
        # The stub embeds an isolated interpreter that finds its prefix via `python3` on PATH: this venv first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
        self.env = env
        self.cwd = self.workdir
        self.command = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={install.caches}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--log-verbose=0",
            *self.control_args(),
            *self.extra_args,
        ]

    def control_args(self) -> list[str]:
        """``--model-control-mode`` and ``--load-model`` arguments from the settings above."""
        if not self.model_control_mode:
            return []
        args = [f"--model-control-mode={self.model_control_mode}"]
        if self.model_control_mode == "explicit":
            args += [f"--load-model={m}" for m in self.load_models]
        return args

    def is_ready(self) -> bool:
        """Whether ``GET /v2/health/ready`` answers 200 right now."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2.0) as resp:
                return int(resp.status) == 200
        except (OSError, http.client.HTTPException):  # refused, reset, timeout, HTTP 400 (not ready)
            return False

    def start(self) -> None:
        """Start tritonserver and block until it is ready; raise ``TritonStartError`` otherwise."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start tritonserver without waiting (it loads its models meanwhile); :meth:`wait_ready` waits."""
        if not self.model_repository.is_dir():
            raise TritonStartError(f"model repository {self.model_repository} is not a directory")
        self._prepare()
        try:
            super().start()
        except OSError as exc:
            raise TritonStartError(f"cannot execute {self.command[0]}: {exc}") from exc

    def wait_ready(self) -> None:
        """Block until the launched server is ready; kill it and raise ``TritonStartError`` if it exits or is not
        ready within ``ready_timeout`` of its launch."""
        began = self.started_at if self.started_at is not None else time.monotonic()
        deadline = began + self.ready_timeout
        while True:
            if not self.is_running:
                rc = self.returncode
                self.terminate(timeout=5.0)
                raise TritonStartError(
                    f"tritonserver exited with status {rc} during startup; log {self.log_path}:\n{self.log_tail(60)}"
                )
            if self.is_ready():
                break
            if time.monotonic() >= deadline:
                self.terminate(timeout=5.0)
                raise TritonStartError(
                    f"tritonserver not ready within {self.ready_timeout:.0f} s (killed); log {self.log_path}:\n"
                    f"{self.log_tail(60)}"
                )
            time.sleep(0.1)
        log.info(
            "tritonserver ready in %.1f s: grpc %s, http %s, metrics %s",
            time.monotonic() - began,
            self.grpc_url,
            self.http_url,
            self.metrics_url,
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, SIGKILL; then kill its stubs and remove its shared-memory regions."""
        return super().stop(timeout=timeout)

    def stub_pids(self) -> list[int]:
        """The python-backend stub processes of this server that run (their command line holds its prefix)."""
        return pids_with_command_line(STUB_NAME, self.shm_prefix)

    def clean_up_leftovers(self, timeout: float = 5.0) -> None:
        """Kill the process group (the stubs are in it), any stub of this server outside it, and remove this
        server's shared-memory regions: a killed tritonserver leaves stubs of ~300-600 MB and regions behind."""
        super().clean_up_leftovers(timeout)
        stray = self.stub_pids()
        if stray:
            log.warning("killing %d python-backend stub(s) tritonserver left behind: %s", len(stray), stray)
            kill_and_wait(stray, timeout)
        self.cleanup_shm()

    def cleanup_shm(self) -> list[str]:
        """Remove the ``/dev/shm`` regions of this server (named with :attr:`shm_prefix`); return their names."""
        removed = []
        for name in sorted(_shm_regions()):
            if not name.startswith(self.shm_prefix):
                continue  # another server's region
            try:
                (SHM_DIR / name).unlink()
                removed.append(name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove /dev/shm/%s: %s", name, exc)
        if removed:
            log.info("removed %d leftover shared-memory region(s): %s", len(removed), ", ".join(removed))
        return removed


def main(argv: Sequence[str] | None = None) -> int:
    """Start a server, log its URLs, and stop it cleanly on SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m natriton_dev.triton", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--workdir", type=Path, required=True, help="backend dir and tritonserver.log go here")
    parser.add_argument("--http-port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--grpc-port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--metrics-port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("extra_args", nargs="*", help="passed to tritonserver (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = TritonServer(
        args.model_repository,
        args.workdir,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        ready_timeout=args.ready_timeout,
        extra_args=args.extra_args,
    )
    try:
        server.start()
    except TritonStartError as exc:
        log.error("%s", exc)
        return 1
    log.info(
        "grpc_url=%s http_url=%s metrics_url=%s log=%s",
        server.grpc_url,
        server.http_url,
        server.metrics_url,
        server.log_path,
    )
    exit_code = 0
    try:
        while not stop_requested.wait(1.0):
            if not server.is_running:
                log.error("tritonserver exited unexpectedly (status %s):\n%s", server.returncode, server.log_tail(40))
                exit_code = 1
                break
    finally:
        server.stop()
    log.info("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
