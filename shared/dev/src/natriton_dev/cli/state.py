"""The state file of a local stack started by ``natriton up``: where its servers listen, its processes, its files.

``natriton up`` writes ``stack.json`` into the state directory (``$NATRITON_STATE_DIR``, else ``.natriton/`` in
the repository) when it starts and again once everything is ready, and removes it when it stops. Every other
command reads it to find the stack (NATS, Redis and Triton URLs, the trace file) while its supervisor runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from natriton_dev.stack import REPO_ROOT

STATE_FILE: Final = "stack.json"
STATE_DIR_VARIABLE: Final = "NATRITON_STATE_DIR"


class StackState(msgspec.Struct, kw_only=True):
    """What ``stack.json`` holds (JSON; fields are only ever added)."""

    status: str
    """``starting`` while servers come up, ``ready`` once every service answers."""
    supervisor_pid: int
    """The ``natriton up`` process that owns the stack (SIGTERM stops everything)."""
    workdir: str
    """Logs, server data and the trace file."""
    started_at: str
    """When ``natriton up`` began (ISO 8601, UTC)."""
    ready_at: str = ""
    nats_url: str = ""
    redis_url: str = ""
    triton_grpc_url: str = ""
    triton_http_url: str = ""
    triton_metrics_url: str = ""
    model_repository: str = ""
    pids: dict[str, int] = {}
    """Process id of every server and service copy (each leads its own process group)."""
    trace_file: str = ""
    """JSONL file with every span the services exported ('' when tracing was off)."""
    otlp_endpoint: str = ""
    """The OTLP/gRPC receiver that writes ``trace_file``."""
    log_file: str = ""
    """The supervisor's own log (detached stacks)."""
    version: int = 1
    path: str = ""
    """Where this state was read from (not stored)."""


def default_state_dir() -> Path:
    """``.natriton/`` in the repository when running from a checkout, else ``~/.natriton``."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "model_repository").is_dir():
        return REPO_ROOT / ".natriton"
    return Path.home() / ".natriton"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$NATRITON_STATE_DIR`` or :func:`default_state_dir`."""
    env = os.environ if environ is None else environ
    configured = env.get(STATE_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else default_state_dir()


def state_path(environ: Mapping[str, str] | None = None) -> Path:
    """The state file's path."""
    return state_dir(environ) / STATE_FILE


def read_state(path: Path) -> StackState | None:
    """The state in ``path``, or None when it is missing or unreadable."""
    try:
        state = msgspec.json.decode(path.read_bytes(), type=StackState)
    except (OSError, msgspec.MsgspecError):
        return None
    state.path = str(path)
    return state


def write_state(path: Path, state: StackState) -> None:
    """Write atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = msgspec.to_builtins(state)
    document.pop("path", None)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n")
    temporary.replace(path)
    state.path = str(path)


def remove_state(path: Path, *, owner_pid: int | None = None) -> bool:
    """Delete the state file (only if it still belongs to ``owner_pid`` when given); True when removed."""
    if owner_pid is not None:
        current = read_state(path)
        if current is not None and current.supervisor_pid != owner_pid:
            return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def is_supervisor(pid: int) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) a ``natriton`` process, not a reused pid."""
    if not pid_alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"natriton" in command


def running_stack(environ: Mapping[str, str] | None = None) -> StackState | None:
    """The state of a local stack that is ready and whose supervisor still runs, else None."""
    state = read_state(state_path(environ))
    if state is None or state.status != "ready" or not is_supervisor(state.supervisor_pid):
        return None
    return state
