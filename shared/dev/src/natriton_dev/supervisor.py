"""Supervision of a local stack's processes: a dead server or service is reaped, reported and restarted.

One background thread polls every watched :class:`~natriton_dev.process.ManagedProcess` (``Popen.poll()``, which
also reaps it: no zombie) every ``interval_s``. A process that exits without ``stop()`` having been called is a
crash: the supervisor reports it (name, exit status, the last lines of its log), kills what it left behind
(:meth:`~natriton_dev.process.ManagedProcess.clean_up_leftovers`: its process group; for tritonserver also its
python-backend stubs and shared-memory regions) and restarts it on the same ports after a backoff
(:class:`BackoffPolicy`). A deliberate ``stop()`` is never undone: a restart that is due finds the process
stopped on purpose and is cancelled.

Restarts run on the supervisor's thread, one at a time (a tritonserver that loads its models delays the next
check by that long).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from natriton_dev.process import ManagedProcess, RestartCancelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackoffPolicy:
    """When to restart a process that keeps dying, and when to give up."""

    first_delay_s: float = 0.5
    """Wait before the first restart after a crash."""
    factor: float = 2.0
    """Each further rapid failure multiplies the wait by this."""
    max_delay_s: float = 10.0
    """The wait never grows beyond this."""
    stable_after_s: float = 30.0
    """A process that stayed up this long starts again from ``first_delay_s`` when it dies."""
    give_up_after: int = 8
    """This many rapid failures in a row (crashes or failed restarts, each within ``stable_after_s`` of its
    start) and the process is left down (reported)."""

    def delay_s(self, failures: int) -> float:
        """The wait before restarting after the ``failures``-th rapid failure in a row (1, 2, ...)."""
        return float(min(self.max_delay_s, self.first_delay_s * self.factor ** max(failures - 1, 0)))


class RestartBackoff:
    """Counts the rapid failures of one process and says how long to wait before its next restart (pure logic)."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self.rapid_failures = 0
        """Failures in a row, each within ``stable_after_s`` of the start before it."""

    def on_failure(self, uptime_s: float) -> float | None:
        """Record a crash after ``uptime_s`` of running (0 for a restart that failed); the delay before the next
        restart, or None to give up."""
        if uptime_s >= self.policy.stable_after_s:
            self.rapid_failures = 0
        self.rapid_failures += 1
        if self.rapid_failures >= self.policy.give_up_after:
            return None
        return self.policy.delay_s(self.rapid_failures)


def exit_status(returncode: int | None) -> str:
    """``exit 1``, ``exit -9, SIGKILL`` (killed by a signal), or ``exit ?``."""
    if returncode is None:
        return "exit ?"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"exit {returncode}, {signal.Signals(-returncode).name}"
    return f"exit {returncode}"


class EventKind(enum.StrEnum):
    """What happened to a supervised process."""

    CRASHED = "crashed"
    """It exited without ``stop()``: reaped, its leftovers killed; a restart follows after ``delay_s``."""
    RESTARTED = "restarted"
    """It runs again (and is ready) after ``delay_s`` of backoff."""
    RESTART_FAILED = "restart_failed"
    """Starting it again failed (``error``); another attempt follows after ``delay_s``."""
    GAVE_UP = "gave_up"
    """It failed too often in a row: it stays down."""


@dataclass(frozen=True)
class SupervisorEvent:
    """One report from the supervisor, as its subscribers get it."""

    kind: EventKind
    name: str
    """The process (``tritonserver``, ``preprocess-1``, ...)."""
    returncode: int | None
    """The exit status of the crash this is about (negative: killed by that signal)."""
    delay_s: float = 0.0
    """The backoff: waited before this restart, or to wait before the next attempt."""
    restarts: int = 0
    """Successful restarts of this process so far (this one included)."""
    pid: int | None = None
    """The new process id (``RESTARTED``)."""
    log_tail: str = ""
    """The last lines of its log (``CRASHED``)."""
    error: str = ""
    """Why the restart failed (``RESTART_FAILED``)."""
    at: float = field(default_factory=time.time)
    """When (Unix time)."""

    @property
    def message(self) -> str:
        """One line for people, e.g. ``restarted preprocess (exit -9, SIGKILL) after 0.5 s``."""
        status = exit_status(self.returncode)
        if self.kind is EventKind.CRASHED:
            return f"{self.name} died ({status}); restarting it in {self.delay_s:.1f} s"
        if self.kind is EventKind.RESTARTED:
            return f"restarted {self.name} ({status}) after {self.delay_s:.1f} s (pid {self.pid})"
        if self.kind is EventKind.RESTART_FAILED:
            first_line = self.error.strip().splitlines()[0] if self.error.strip() else "?"
            return f"restarting {self.name} failed: {first_line}; next attempt in {self.delay_s:.1f} s"
        return f"gave up restarting {self.name} ({status}): it failed too often in a row"


Subscriber = Callable[[SupervisorEvent], None]


@dataclass
class _Watched:
    process: ManagedProcess
    backoff: RestartBackoff
    restart_due: float | None = None
    """When a restart is due (monotonic); None while none is pending."""
    delay_s: float = 0.0
    crash_returncode: int | None = None
    restarts: int = 0
    given_up: bool = False


class Supervisor:
    """Watches processes on a background thread; see the module docstring.

    ``subscribe()`` registers a callback for every :class:`SupervisorEvent` (called on the supervisor's thread;
    keep it short); :attr:`events` keeps them all. Lifecycle: ``start()``; ``hold()`` before stopping the processes
    (no more restarts); ``close()`` once they are stopped (ends the thread).
    """

    def __init__(self, policy: BackoffPolicy | None = None, *, interval_s: float = 0.2, log_lines: int = 20) -> None:
        self.policy = policy or BackoffPolicy()
        self.interval_s = interval_s
        self.log_lines = log_lines
        self.events: list[SupervisorEvent] = []
        """Every event so far, oldest first."""
        self._watched: list[_Watched] = []
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._held = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, process: ManagedProcess) -> None:
        """Supervise ``process`` (started or not: only an exit while it runs counts)."""
        with self._lock:
            if all(w.process is not process for w in self._watched):
                self._watched.append(_Watched(process, RestartBackoff(self.policy)))

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback`` with every future event."""
        with self._lock:
            self._subscribers.append(callback)

    def restarts(self) -> dict[str, int]:
        """Successful restarts per process name."""
        with self._lock:
            return {w.process.name: w.restarts for w in self._watched}

    def given_up(self) -> list[str]:
        """Processes left down after too many rapid failures."""
        with self._lock:
            return [w.process.name for w in self._watched if w.given_up]

    def start(self) -> None:
        """Begin watching on a daemon thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="natriton-supervisor", daemon=True)
        self._thread.start()

    def hold(self) -> None:
        """Stop acting: no more restarts (a restart in progress ends when its process is stopped)."""
        self._held.set()

    def close(self, timeout: float = 30.0) -> None:
        """End the thread (call once the processes are stopped)."""
        self._held.set()
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------------- the loop
    def _run(self) -> None:
        while not self._closed.wait(self.interval_s):
            if self._held.is_set():
                continue
            with self._lock:
                watched = list(self._watched)
            for item in watched:
                if self._held.is_set():
                    break
                try:
                    self._check(item)
                except Exception:
                    log.exception("supervising %s failed", item.process.name)

    def _check(self, item: _Watched) -> None:
        process = item.process
        if item.restart_due is None:
            returncode = process.returncode  # poll(): reaps it
            if returncode is None and item.given_up:  # its owner started it again: supervise it afresh
                item.given_up, item.backoff = False, RestartBackoff(self.policy)
            if returncode is None or process.stop_requested or item.given_up:
                return
            self._on_crash(item, returncode)
        elif process.stop_requested or process.is_running:
            item.restart_due = None  # its owner stopped or started it meanwhile
            log.info("%s: restart cancelled (stopped or started by its owner)", process.name)
        elif time.monotonic() >= item.restart_due:
            self._restart(item)

    def _on_crash(self, item: _Watched, returncode: int) -> None:
        process = item.process
        uptime = time.monotonic() - process.started_at if process.started_at is not None else 0.0
        tail = process.log_tail(self.log_lines)
        process.clean_up_leftovers()
        item.crash_returncode = returncode
        delay = item.backoff.on_failure(uptime)
        if delay is None:
            item.given_up = True
            self._emit(
                SupervisorEvent(EventKind.GAVE_UP, process.name, returncode, restarts=item.restarts, log_tail=tail)
            )
            return
        item.delay_s, item.restart_due = delay, time.monotonic() + delay
        self._emit(
            SupervisorEvent(
                EventKind.CRASHED, process.name, returncode, delay_s=delay, restarts=item.restarts, log_tail=tail
            )
        )

    def _restart(self, item: _Watched) -> None:
        process = item.process
        item.restart_due = None
        try:
            process.restart_after_crash()
        except RestartCancelled:
            log.info("%s: restart cancelled (stopped or started by its owner)", process.name)
            return
        except Exception as exc:
            if process.stop_requested or self._held.is_set():
                log.info("%s: restart interrupted by a stop", process.name)
                return
            with contextlib.suppress(Exception):
                process.terminate(timeout=5.0)
            delay = item.backoff.on_failure(0.0)
            if delay is None:
                item.given_up = True
                self._emit(
                    SupervisorEvent(
                        EventKind.GAVE_UP, process.name, item.crash_returncode, restarts=item.restarts, error=str(exc)
                    )
                )
                return
            item.delay_s, item.restart_due = delay, time.monotonic() + delay
            self._emit(
                SupervisorEvent(
                    EventKind.RESTART_FAILED,
                    process.name,
                    item.crash_returncode,
                    delay_s=delay,
                    restarts=item.restarts,
                    error=str(exc),
                )
            )
            return
        item.restarts += 1
        self._emit(
            SupervisorEvent(
                EventKind.RESTARTED,
                process.name,
                item.crash_returncode,
                delay_s=item.delay_s,
                restarts=item.restarts,
                pid=process.pid,
            )
        )

    def _emit(self, event: SupervisorEvent) -> None:
        if event.kind is EventKind.CRASHED:
            log.warning("%s; last lines of %s:\n%s", event.message, event.name, event.log_tail.rstrip())
        elif event.kind is EventKind.RESTARTED:
            log.warning("%s", event.message)
        else:
            log.error("%s", event.message)
        with self._lock:
            self.events.append(event)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("a supervisor subscriber failed on %s", event.message)
