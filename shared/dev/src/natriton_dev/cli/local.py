"""``natriton up`` / ``natriton down``: the whole mesh on this machine (nats-server, redis-server, tritonserver and
the four services on free ports; :class:`natriton_dev.stack.LocalStack`).

``up`` runs it in the foreground until Ctrl-C; ``up --detach`` starts the same supervisor in the background and
returns once everything is ready; ``down`` stops it (SIGTERM to the supervisor, which stops the services, then
Triton, Redis and NATS). Both write the state file (see :mod:`natriton_dev.cli.state`) every other command reads
to find the stack. The supervisor also records every span the services export to ``traces.jsonl`` in the work
directory, which ``natriton trace`` reads, and (unless ``--no-restart``) restarts a server or service that dies
(:mod:`natriton_dev.supervisor`), reporting it as it happens and keeping the state file's pids current.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Final

import msgspec
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from natriton_dev.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    JsonOption,
    Output,
    PlainTable,
    VerboseOption,
    reported,
    shown_url,
)
from natriton_dev.cli.state import (
    STATE_DIR_VARIABLE,
    StackState,
    is_supervisor,
    pid_alive,
    read_state,
    remove_state,
    state_path,
    write_state,
)
from natriton_dev.stack import DEFAULT_MODEL_REPOSITORY
from natriton_dev.supervisor import EventKind, SupervisorEvent

log = logging.getLogger("natriton_dev.cli.up")
TRACE_FILE: Final = "traces.jsonl"
SUPERVISOR_LOG: Final = "supervisor.log"


def now_iso() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _blocking_state(path: Path) -> StackState | None:
    """A stack that is running or starting under a live supervisor (another ``up`` must not start)."""
    state = read_state(path)
    if state is not None and state.supervisor_pid != os.getpid() and is_supervisor(state.supervisor_pid):
        return state
    return None


def _already_running(state: StackState) -> CliError:
    where = f" at {shown_url(state.nats_url)}" if state.nats_url else ""
    return CliError(
        f"a local stack is already {state.status}{where} (supervisor pid {state.supervisor_pid}); "
        "natriton down stops it",
        EXIT_FAILED,
    )


def service_environment(endpoint: str, sample_ratio: float) -> dict[str, str]:
    """OTEL_* variables that make every service export its spans to ``endpoint`` quickly."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    if sample_ratio < 1.0:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = f"{sample_ratio:g}"
    return env


class _ProgressHandler(logging.Handler):
    """Shows the stack's own log lines (``started nats-server``, ``tritonserver ready``) on a spinner."""

    def __init__(self, progress: Progress, task: Any, prefix: str) -> None:
        super().__init__(logging.INFO)
        self._progress, self._task, self._prefix = progress, task, prefix

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        self._progress.update(self._task, description=f"{self._prefix}: {message[:90]}")


@contextlib.contextmanager
def spinner(out: Output, text: str, *, follow_logs: bool = True) -> Iterator[Progress]:
    """A spinner with elapsed time on stderr (nothing when stderr is not a terminal) fed by the stack's logs."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out.err,
        transient=True,
        disable=not out.err.is_terminal,
    )
    task = progress.add_task(text, total=None)
    handler = _ProgressHandler(progress, task, text)
    logger = logging.getLogger("natriton_dev")
    if follow_logs:
        logger.addHandler(handler)
    try:
        with progress:
            yield progress
    finally:
        logger.removeHandler(handler)


def _configure_logging(supervised: bool, verbose: bool) -> None:
    level = logging.INFO if supervised or verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("natriton_dev").setLevel(logging.INFO)  # the spinner shows these lines
    if not (supervised or verbose):
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
            handler.addFilter(_not_from_the_supervisor)  # report_event() shows those, one line each


def _not_from_the_supervisor(record: logging.LogRecord) -> bool:
    return not record.name.startswith("natriton_dev.supervisor")


def report_event(event: SupervisorEvent, out: Output, log_path: Path | None) -> None:
    """One line on stderr per supervisor event in the foreground, e.g. ``restarted router (exit -9, SIGKILL)
    after 0.5 s (pid 4242)``; a crash names the process's log."""
    if event.kind is EventKind.RESTARTED:
        out.err.print(Text(event.message, style="green"), soft_wrap=True)
        return
    where = f" (log {log_path})" if log_path is not None and event.kind is not EventKind.RESTART_FAILED else ""
    out.warn(event.message + where)


def announce(state: StackState, out: Output, *, seconds: float, detached: bool) -> None:
    """What the user needs once the stack is ready (the state as JSON in JSON mode)."""
    document = msgspec.to_builtins(state)
    out.emit({"ok": True, **document, "startup_s": round(seconds, 1), "detached": detached})
    if out.json_mode:
        return
    out.print(Text.assemble(("local stack ready", "bold green"), f" in {seconds:.1f} s"))
    table = PlainTable(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("NATS", Text(state.nats_url, style="bold cyan"))
    table.add_row("Redis", state.redis_url)
    table.add_row("Triton", f"gRPC {state.triton_grpc_url}  HTTP {state.triton_http_url}")
    table.add_row("traces", state.trace_file or "off")
    table.add_row("logs", state.workdir)
    table.add_row("state", state.path)
    out.print(table)
    out.print(
        f"natriton commands find this stack by themselves; other tools: export NATRITON_NATS_URL={state.nats_url}",
        soft_wrap=True,
    )
    out.print("natriton down stops it" if detached else "Ctrl-C stops it")


def supervise(
    workdir: Path,
    model_repository: Path,
    *,
    traces: bool,
    sample_ratio: float,
    supervised: bool,
    out: Output,
    restart: bool = True,
) -> None:
    """Start the stack, write the state file, wait for SIGINT/SIGTERM/SIGHUP, stop everything, remove the file.

    Meanwhile report every process that dies (and, with ``restart``, its restart), keeping the state file's pids
    current."""
    from natriton_dev.stack import LocalStack

    path = state_path()
    blocking = _blocking_state(path)
    if blocking is not None:
        raise _already_running(blocking)
    workdir.mkdir(parents=True, exist_ok=True)
    _configure_logging(supervised, out.verbose)

    stop = threading.Event()
    ready = False
    startup_interrupted = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal startup_interrupted
        if signum == signal.SIGHUP:
            _detach_from_terminal()  # the terminal is gone: writing to it would fail the shutdown
        log.info("received %s: stopping the local stack", signal.Signals(signum).name)
        if stop.is_set():
            return
        stop.set()
        if not ready:
            startup_interrupted = True
            raise KeyboardInterrupt  # LocalStack.start stops what it started and re-raises

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    recorder = None
    service_env: dict[str, str] = {}
    began = time.monotonic()
    state = StackState(
        status="starting",
        supervisor_pid=os.getpid(),
        workdir=str(workdir),
        started_at=now_iso(),
        model_repository=str(model_repository),
        log_file=str(workdir / SUPERVISOR_LOG) if supervised else "",
    )
    stack: LocalStack | None = None
    try:
        if traces:
            from natriton_dev.cli.traces import SpanFileRecorder

            recorder = SpanFileRecorder(workdir / TRACE_FILE)
            recorder.start()
            service_env = service_environment(recorder.endpoint, sample_ratio)
            state.trace_file, state.otlp_endpoint = str(recorder.path), recorder.endpoint
        write_state(path, state)
        stack = LocalStack(workdir, model_repository=model_repository, service_env=service_env, supervise=restart)
        events: queue.SimpleQueue[SupervisorEvent] = queue.SimpleQueue()
        stack.on_supervisor_event(events.put)
        try:
            with spinner(out, "starting the local stack"):
                stack.start()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise CliError(
                f"the local stack did not start: {lines[0]} (logs in {workdir})",
                EXIT_FAILED,
                detail="\n".join(lines[1:][-30:]),
            ) from None
        ready = True
        state = msgspec.structs.replace(state, status="ready", ready_at=now_iso(), **_described(stack))
        write_state(path, state)
        log.info("local stack ready: NATS %s", state.nats_url)
        announce(state, out, seconds=time.monotonic() - began, detached=supervised)
        reported_dead: set[str] = set()
        while not stop.wait(0.25):
            if stack.supervisor is not None:
                restarted = False
                while not events.empty():
                    event = events.get()
                    restarted |= event.kind is EventKind.RESTARTED
                    if not supervised:  # a detached supervisor's log has the supervisor's own lines
                        logs = {p.name: p.log_path for p in stack.processes}
                        report_event(event, out, logs.get(event.name))
                if restarted:
                    state = msgspec.structs.replace(state, **_described(stack))
                    write_state(path, state)
                continue
            for process in stack.processes:
                if process.name not in reported_dead and not process.is_running:
                    reported_dead.add(process.name)
                    message = f"{process.name} exited with status {process.returncode}; log {process.log_path}"
                    log.warning("%s", message)
                    if not supervised:
                        out.warn(message)
    except KeyboardInterrupt:
        if not startup_interrupted:
            raise
        raise CliError("interrupted while starting; everything started was stopped", EXIT_INTERRUPTED) from None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: None)  # a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGHUP, lambda *_: _detach_from_terminal())
        _shut_down(stack, recorder, path, out, announce_stop=ready)


def _detach_from_terminal() -> None:
    """Point stdin, stdout and stderr at /dev/null (after SIGHUP, writes to the closed terminal raise EIO)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)


def _shut_down(stack: Any, recorder: Any, path: Path, out: Output, *, announce_stop: bool) -> None:
    """Stop everything that was started and remove the state file; each step runs even if another fails."""
    if stack is not None:
        try:
            with spinner(out, "stopping the local stack"):
                stack.stop()
        except Exception:
            log.exception("stopping the stack failed; stopping what is left")
            with contextlib.suppress(Exception):
                stack.stop()
    if recorder is not None:
        with contextlib.suppress(Exception):
            recorder.stop()
    remove_state(path, owner_pid=os.getpid())
    if announce_stop:
        log.info("local stack stopped")
        with contextlib.suppress(OSError):
            out.print("local stack stopped")


def _described(stack: Any) -> dict[str, Any]:
    described = dict(stack.describe())
    described.pop("workdir", None)
    return described


def start_detached(
    workdir: Path,
    model_repository: Path,
    *,
    traces: bool,
    sample_ratio: float,
    timeout_s: float,
    out: Output,
    restart: bool = True,
) -> tuple[StackState, float]:
    """Start ``natriton up`` as a background supervisor (own session, log in the work dir); wait until ready."""
    path = state_path()
    blocking = _blocking_state(path)
    if blocking is not None:
        raise _already_running(blocking)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / SUPERVISOR_LOG
    command = [
        sys.executable, "-m", "natriton_dev.cli", "up", "--supervised",
        "--workdir", str(workdir), "--model-repository", str(model_repository),
        "--trace-sample-ratio", str(sample_ratio), *([] if traces else ["--no-traces"]),
        *([] if restart else ["--no-restart"]),
    ]  # fmt: skip
    env = {**os.environ, STATE_DIR_VARIABLE: str(path.parent), "PYTHONUNBUFFERED": "1"}
    began = time.monotonic()
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    out.note(f"supervisor pid {process.pid}, log {log_path}")
    try:
        with spinner(out, "starting the local stack", follow_logs=False) as progress:
            while True:
                state = read_state(path)
                if state is not None and state.supervisor_pid == process.pid and state.status == "ready":
                    return state, time.monotonic() - began
                if process.poll() is not None:
                    raise CliError(
                        f"the local stack did not start (supervisor exited with status {process.returncode}; "
                        f"log {log_path})",
                        EXIT_FAILED,
                        detail=_tail(log_path, 25),
                    )
                if time.monotonic() - began > timeout_s:
                    _terminate(process, 30.0)
                    raise CliError(
                        f"the local stack was not ready within {timeout_s:.0f} s (stopped it; log {log_path})",
                        EXIT_FAILED,
                        detail=_tail(log_path, 25),
                    )
                last = _tail(log_path, 1).strip()
                if last:
                    progress.update(progress.task_ids[0], description=f"starting the local stack: {last[-90:]}")
                time.sleep(0.25)
    except KeyboardInterrupt:
        _terminate(process, 60.0)
        raise


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def up_command(
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; return once the stack is ready.")
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Logs, server data, traces (default: a new temp folder).", show_default=False),
    ] = None,
    model_repository: Annotated[
        Path, typer.Option("--model-repository", help="The folder Triton serves.")
    ] = DEFAULT_MODEL_REPOSITORY,
    traces: Annotated[
        bool,
        typer.Option("--traces/--no-traces", help="Record the services' spans to traces.jsonl (natriton trace)."),
    ] = True,
    trace_sample_ratio: Annotated[
        float, typer.Option("--trace-sample-ratio", min=0.0, max=1.0, help="Share of requests traced.")
    ] = 1.0,
    start_timeout: Annotated[
        float, typer.Option("--start-timeout", min=1.0, help="--detach: seconds to wait until ready.")
    ] = 300.0,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart/--no-restart",
            help="Restart a server or service that dies, on the same ports (backoff 0.5 s doubling to 10 s; "
            "gives up after 8 quick failures in a row).",
        ),
    ] = True,
    supervised: Annotated[bool, typer.Option("--supervised", hidden=True)] = False,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run the local stack (NATS, Redis, Triton and the four services) until Ctrl-C, or detached.

    nats-server (JetStream), redis-server, tritonserver (CPU) and the four services start on free ports, in the
    foreground until Ctrl-C, or with --detach in the background until natriton down.

    Writes the state file (.natriton/stack.json, or in $NATRITON_STATE_DIR) that every other natriton command reads
    to find the stack; prints the NATS URL. JSON: the state file's fields plus "ok", "startup_s", "detached".
    A process that dies is reported on stderr and restarted (unless --no-restart); nothing outlives the stack.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        if not model_repository.is_dir():
            raise CliError(f"no model repository at {model_repository}", EXIT_USAGE)
        folder = (workdir or Path(tempfile.mkdtemp(prefix="natriton-stack-"))).expanduser().resolve()
        repository = model_repository.resolve()
        if detach:
            state, seconds = start_detached(
                folder,
                repository,
                traces=traces,
                sample_ratio=trace_sample_ratio,
                timeout_s=start_timeout,
                out=out,
                restart=restart,
            )
            announce(state, out, seconds=seconds, detached=True)
            return
        supervise(
            folder,
            repository,
            traces=traces,
            sample_ratio=trace_sample_ratio,
            supervised=supervised,
            out=out,
            restart=restart,
        )


# ------------------------------------------------------------------------------------------------ down
_EXPECTED_COMMAND: Final = {
    "nats-server": "nats-server",
    "redis-server": "redis-server",
    "tritonserver": "tritonserver",
}


def _looks_like(name: str, pid: int) -> bool:
    """Whether ``pid`` still runs the process the state file named (not a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)
    base = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
    expected = _EXPECTED_COMMAND.get(base, f"natriton_{base}")
    return expected.encode() in command


def stop_leftovers(pids: dict[str, int], timeout_s: float = 10.0) -> list[str]:
    """SIGTERM (then SIGKILL) the process groups of recorded processes that still run; their names."""
    alive = {name: pid for name, pid in pids.items() if pid_alive(pid) and _looks_like(name, pid)}
    for pid in alive.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in alive.values()):
        time.sleep(0.2)
    for pid in alive.values():
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    return sorted(alive)


def down_command(
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds to wait for a clean stop.")] = 120.0,
    force: Annotated[
        bool, typer.Option("--force", help="Kill whatever is left after --timeout instead of failing.")
    ] = False,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Stop the local stack started with natriton up --detach.

    Also stops a foreground one from another terminal.

    Sends SIGTERM to its supervisor, which drains the services and stops Triton, Redis and NATS, and waits.
    JSON: {"ok", "stopped", "supervisor_pid", "nats_url", "seconds", "leftovers"}.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        path = state_path()
        state = read_state(path)
        out.note(f"state file {path}")
        if state is None:
            out.emit({"ok": True, "stopped": False, "reason": "no local stack is running"})
            out.print(f"no local stack is running (no state file at {path})")
            return
        pid = state.supervisor_pid
        began = time.monotonic()
        if not is_supervisor(pid):
            stale_leftovers = stop_leftovers(state.pids)
            remove_state(path)
            out.emit(
                {"ok": True, "stopped": False, "supervisor_pid": pid, "leftovers": stale_leftovers, "reason": "stale"}
            )
            extra = f"; stopped leftover processes: {', '.join(stale_leftovers)}" if stale_leftovers else ""
            out.print(f"the stack's supervisor (pid {pid}) is gone: removed its state file{extra}")
            return
        os.kill(pid, signal.SIGTERM)
        with spinner(out, f"stopping the local stack (supervisor pid {pid})", follow_logs=False):
            while pid_alive(pid) and time.monotonic() - began < timeout:
                time.sleep(0.2)
        if pid_alive(pid):
            if not force:
                raise CliError(
                    f"the local stack is still stopping after {timeout:.0f} s (supervisor pid {pid}); "
                    "wait, or natriton down --force",
                    EXIT_FAILED,
                )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leftovers = stop_leftovers(state.pids)
        remove_state(path, owner_pid=pid)
        seconds = time.monotonic() - began
        out.emit(
            {
                "ok": True,
                "stopped": True,
                "supervisor_pid": pid,
                "nats_url": shown_url(state.nats_url),
                "seconds": round(seconds, 1),
                "leftovers": leftovers,
            }
        )
        extra = f" (killed leftovers: {', '.join(leftovers)})" if leftovers else ""
        out.print(f"stopped the local stack at {shown_url(state.nats_url) or '?'} in {seconds:.1f} s{extra}")
