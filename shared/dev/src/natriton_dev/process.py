"""Child processes for local stacks: free ports, polling, and a managed process with its own log file."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

log = logging.getLogger(__name__)
PROC = Path("/proc")
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Call ``predicate`` every ``interval`` seconds until it is true; raise ``TimeoutError`` after ``timeout``.

    Exceptions from ``predicate`` propagate (let it catch what it expects, e.g. ``ConnectionError``).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what} not reached within {timeout:.1f} s")
        time.sleep(min(interval, remaining))


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of ``pid`` from ``/proc/<pid>/stat``; None once it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": the name may hold spaces and parentheses
    return fields[0], int(fields[2])


def process_state(pid: int) -> str | None:
    """The kernel's state letter of ``pid`` (``R``, ``S``, ``Z`` for a zombie...), None once it is gone entirely."""
    stat = _proc_stat(pid)
    return stat[0] if stat is not None else None


def _all_pids() -> list[int]:
    try:
        return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return []


def living_group_members(pgid: int) -> list[int]:
    """Processes in process group ``pgid`` that are not zombies (read from ``/proc``)."""
    members = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            members.append(pid)
    return members


def pids_with_command_line(*parts: str) -> list[int]:
    """Processes other than zombies whose command line contains every one of ``parts`` (e.g. a unique prefix)."""
    wanted = [part.encode() for part in parts]
    found = []
    for pid in _all_pids():
        try:
            command = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if all(part in command for part in wanted) and process_state(pid) not in (None, "Z"):
            found.append(pid)
    return found


def kill_and_wait(pids: Sequence[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait until none of them runs (zombies count as gone); return those still running."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive:
        alive = [pid for pid in alive if process_state(pid) not in (None, "Z")]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def _dying_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when the thread that started it dies
    (``prctl(PR_SET_PDEATHSIG)``, Linux only; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nothing would send the signal any more
            os.kill(os.getpid(), sig)

    return set_parent_death_signal


def _kill_abandoned(started: Future[subprocess.Popen[bytes]]) -> None:
    if started.cancelled() or started.exception() is not None:
        return
    child = started.result()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


class _Spawner:
    """One daemon thread that starts every child that must die with this process.

    The kernel sends ``PR_SET_PDEATHSIG`` when the *thread* that started a child ends, not the process: children
    started from a short-lived thread (``asyncio.to_thread``, a supervisor) would be killed with it. This thread
    ends only with the process.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[dict[str, Any], Future[subprocess.Popen[bytes]]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, **popen_args: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(**popen_args)`` on the spawner thread, the child set to get SIGTERM when it ends."""
        popen_args["preexec_fn"] = _dying_with_parent(signal.SIGTERM)
        started: Future[subprocess.Popen[bytes]] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="natriton-spawner", daemon=True)
                self._thread.start()
        self._requests.put((popen_args, started))
        try:
            return started.result()
        except BaseException:
            started.add_done_callback(_kill_abandoned)  # interrupted (Ctrl-C): the child must not be left behind
            raise

    def _run(self) -> None:
        while True:
            popen_args, started = self._requests.get()
            if not started.set_running_or_notify_cancel():
                continue
            try:
                started.set_result(subprocess.Popen(**popen_args))
            except BaseException as exc:
                started.set_exception(exc)


_SPAWNER = _Spawner()


class RestartCancelled(RuntimeError):
    """A restart after a crash did not happen: the process was stopped on purpose (or started) meanwhile."""


class ManagedProcess:
    """A command run in its own process group with stdout and stderr going to ``<workdir>/<name>.log``.

    ``start()`` launches it, ``stop()`` sends SIGTERM to the whole group, waits, then SIGKILLs. Usable as a context
    manager (``with ManagedProcess(...) as p:``); synchronous, so it fits pytest session fixtures.

    ``stop()`` is a deliberate stop (:attr:`stop_requested`): a :class:`~natriton_dev.supervisor.Supervisor` never
    restarts such a process; :meth:`restart_after_crash` is what it calls instead of ``start()``. With
    :attr:`die_with_parent` set, the kernel sends the child SIGTERM when this process ends, even by SIGKILL
    (``PR_SET_PDEATHSIG``, Linux), so a launcher that is killed leaves nothing behind.
    """

    die_with_parent = False
    """Whether the child gets SIGTERM from the kernel once this process is gone (Linux)."""

    def __init__(
        self,
        command: Sequence[str],
        workdir: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.workdir = Path(workdir)
        self.name = name or Path(self.command[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.RLock()  # start() and stop() from different threads (a test and a supervisor)
        self._stop_requested = False
        self._restarting = threading.local()
        self.started_at: float | None = None
        """``time.monotonic()`` of the latest launch (None before the first)."""

    @property
    def pid(self) -> int | None:
        """The process id (also its process-group id), or None before ``start()``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal), else None."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """Whether it was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def stop_requested(self) -> bool:
        """Whether ``stop()`` was called since the latest start: its exit is no crash."""
        return self._stop_requested

    def start(self) -> None:
        """Launch the command in a new session (its own process group); output is appended to ``log_path``."""
        with self._lock:
            if getattr(self._restarting, "active", False) and (self._stop_requested or self.is_running):
                raise RestartCancelled(f"{self.name} was stopped or started by its owner meanwhile")
            if self.is_running:
                raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._close_log()
            self._log_file = self.log_path.open("ab")
            log.debug("starting %s: %s (log %s)", self.name, " ".join(self.command), self.log_path)
            popen_args: dict[str, Any] = {
                "args": self.command,
                "stdin": subprocess.DEVNULL,
                "stdout": self._log_file,
                "stderr": subprocess.STDOUT,
                "env": self.env,
                "cwd": self.cwd,
                "start_new_session": True,
            }
            try:
                self._proc = _SPAWNER.popen(**popen_args) if self.die_with_parent else subprocess.Popen(**popen_args)
            except BaseException:
                self._close_log()
                raise
            self._stop_requested = False
            self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self._proc.pid)

    def restart_after_crash(self) -> None:
        """``start()`` again (and wait until ready) after an unexpected exit; raise :class:`RestartCancelled`
        instead when ``stop()`` or ``start()`` was called since, so a supervisor never undoes a deliberate stop."""
        self._restarting.active = True
        try:
            self.start()
        finally:
            self._restarting.active = False

    def log_tail(self, n_lines: int = 40) -> str:
        """The last ``n_lines`` lines of the log file ('' if there is none yet)."""
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as fh:
                return "".join(deque(fh, maxlen=n_lines))
        except FileNotFoundError:
            return ""

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL it; return the exit status.

        A deliberate stop (:attr:`stop_requested`). Safe to call more than once and on a process that already
        exited (the group is still signalled, so children it left behind are cleaned up too).
        """
        with self._lock:
            self._stop_requested = True
            return self.terminate(timeout)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """What ``stop()`` does, without marking the stop deliberate (a failed start cleans up with this)."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                log.info("stopping %s (pid %d)", self.name, proc.pid)
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit %.0f s after SIGTERM: killing it", self.name, timeout)
            self.clean_up_leftovers()  # the leader if it hung, or children that outlived it
            rc = proc.wait()
            self._close_log()
            return rc

    def clean_up_leftovers(self, timeout: float = 5.0) -> None:
        """SIGKILL what is left of the process group and wait until none of it runs (up to ``timeout`` s).

        Called by ``stop()`` and by a supervisor once the process died on its own (its children may live on).
        """
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        left = kill_and_wait(living_group_members(self._proc.pid), timeout)
        if left:
            log.warning("%s: processes %s of its group survived SIGKILL", self.name, left)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else f"rc={self.returncode}"
        return f"<{type(self).__name__} {self.name} pid={self.pid} {state}>"
