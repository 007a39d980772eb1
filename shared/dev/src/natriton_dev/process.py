"""Child processes for local stacks: free ports, polling, and a managed process with its own log file."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)


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


class ManagedProcess:
    """A command run in its own process group with stdout and stderr going to ``<workdir>/<name>.log``.

    ``start()`` launches it, ``stop()`` sends SIGTERM to the whole group, waits, then SIGKILLs. Usable as a context
    manager (``with ManagedProcess(...) as p:``); synchronous, so it fits pytest session fixtures.
    """

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

    def start(self) -> None:
        """Launch the command in a new session (its own process group); output is appended to ``log_path``."""
        if self.is_running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log_file = self.log_path.open("ab")
        log.debug("starting %s: %s (log %s)", self.name, " ".join(self.command), self.log_path)
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError:
            self._close_log()
            raise
        log.info("started %s (pid %d)", self.name, self._proc.pid)

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

        Safe to call more than once and on a process that already exited (the group is still signalled, so
        children it left behind are cleaned up too).
        """
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
        # SIGKILL whatever is left in the group (the leader if it hung, or children that outlived it).
        self._signal_group(signal.SIGKILL)
        rc = proc.wait()
        self._close_log()
        return rc

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
