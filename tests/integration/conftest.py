"""Session fixtures: the real stack (nats-server, redis-server, tritonserver, four service processes).

Everything runs on free ports in a temporary folder and is stopped at the end of the session.
Spans exported by the services land in an in-process OTLP receiver so tests can follow traces.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from natriton_client.aio import MeshClient
from natriton_dev.images import sample_photos
from natriton_dev.media import MediaUnavailableError, fetch_sounds
from natriton_dev.otlp import OtlpSink
from natriton_dev.stack import LocalStack


@pytest.fixture(scope="session")
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink()
    sink.start()
    yield sink
    sink.stop()


REPO_MODELS = Path(__file__).resolve().parents[2] / "model_repository"
TEST_MODELS = Path(__file__).resolve().parent / "models"


def combined_model_repository(root: Path) -> Path:
    """The real models plus the test-only ones, as symlinks in one folder."""
    repository = root / "models"
    repository.mkdir()
    for source in (REPO_MODELS, TEST_MODELS):
        for model in sorted(p for p in source.iterdir() if (p / "config.pbtxt").exists()):
            (repository / model.name).symlink_to(model, target_is_directory=True)
    return repository


def model_repository_of(root: Path, *models: str) -> Path:
    """A repository of only the named real models (symlinks), for a stack of its own that starts quickly."""
    repository = root / "models"
    repository.mkdir()
    for model in models:
        (repository / model).symlink_to(REPO_MODELS / model, target_is_directory=True)
    return repository


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp_sink: OtlpSink) -> Iterator[LocalStack]:
    workdir: Path = tmp_path_factory.mktemp("stack")
    repository = combined_model_repository(workdir)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "NATRITON_MAX_PAYLOAD_BYTES": str(4 * 1024 * 1024),
        "NATRITON_MAX_QUEUED_PER_MODEL": "48",  # small enough for the overload test to reach quickly
        "NATRITON_BREAKER_RESET_S": "10",  # recovery must come from the readiness probe, not this timer
        "NATRITON_CATALOG_REFRESH_S": "2",
    }
    with LocalStack(workdir, model_repository=repository, service_env=env) as running:
        yield running


@pytest.fixture(scope="session")
def alsa_sounds() -> dict[str, bytes]:
    """The alsa-utils recordings (WAV, 48 kHz) by file name; the test fails with the fetch's message when they cannot
    be had."""
    try:
        return {path.name: path.read_bytes() for path in fetch_sounds()}
    except MediaUnavailableError as exc:
        pytest.fail(f"the alsa sounds are needed (make media): {exc}")


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    return sample_photos()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def client(stack: LocalStack) -> AsyncIterator[MeshClient]:
    mesh = await MeshClient.connect(stack.nats_url)
    yield mesh
    await mesh.close()


@pytest.fixture
def nc(client: MeshClient) -> NATS:
    """The raw nats-py connection (for tests that must not use our client)."""
    return client.nc


def triton_inference_count(stack: LocalStack, model: str, *, settle_s: float = 0.3, within_s: float = 10.0) -> int:
    """Successful inferences Triton itself counted for ``model`` (its statistics extension), once settled.

    Triton updates its statistics after it has sent a response, so a count read right after an answer may not
    include it yet: the count is read until it has not changed for ``settle_s``.
    """

    def read() -> int:
        with urllib.request.urlopen(f"{stack.triton.http_url}/v2/models/{model}/stats", timeout=5) as resp:
            stats = json.load(resp)
        return sum(int(s.get("inference_count", 0)) for s in stats["model_stats"])

    give_up = time.monotonic() + within_s
    count, unchanged_since = read(), time.monotonic()
    while time.monotonic() - unchanged_since < settle_s and time.monotonic() < give_up:
        time.sleep(0.05)
        now = read()
        if now != count:
            count, unchanged_since = now, time.monotonic()
    return count


@pytest.fixture(autouse=True)
def services_stay_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every integration test, every service process must still be running."""
    yield
    if "stack" in request.fixturenames:
        stack: LocalStack = request.getfixturevalue("stack")
        dead = [p.name for p in stack.services if not p.is_running]
        assert not dead, f"services died: {dead}"
