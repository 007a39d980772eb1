"""Static checks of docker-compose.yml (no Docker engine here): its structure, and that its settings exist.

The files it mounts are checked with the real servers in test_compose_runtime_config.py, the file itself against
the compose spec and the Dockerfiles with hadolint in test_deploy_lint.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from natriton.settings import PREFIX
from natriton_ingest.settings import Settings as IngestSettings
from natriton_postprocess.settings import Settings as PostprocessSettings
from natriton_preprocess.settings import Settings as PreprocessSettings
from natriton_router.settings import Settings as RouterSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "ingest": IngestSettings,
    "preprocess": PreprocessSettings,
    "router": RouterSettings,
    "postprocess": PostprocessSettings,
}
OBSERVABILITY = {"otel-collector", "jaeger", "prometheus", "grafana"}
READYZ = "urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=2)"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _services(compose: dict[str, Any], *, profile: str | None = None) -> set[str]:
    """The services `docker compose [--profile PROFILE] up` enables."""
    return {
        name for name, spec in compose["services"].items() if not spec.get("profiles") or profile in spec["profiles"]
    }


def test_default_is_the_gpu_stack(compose: dict[str, Any]) -> None:
    assert _services(compose) == {"nats", "redis", "triton", *SETTINGS}
    gpu = compose["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_cpu_profile_is_the_same_triton_without_the_gpu(compose: dict[str, Any]) -> None:
    assert _services(compose, profile="cpu") == {"nats", "redis", "triton", "triton-cpu", *SETTINGS}
    gpu, cpu = compose["services"]["triton"], compose["services"]["triton-cpu"]
    assert "deploy" not in cpu
    assert {k: v for k, v in cpu.items() if k not in ("profiles", "command", "networks")} == {
        k: v for k, v in gpu.items() if k != "deploy"
    }
    assert "--model-config-name=cpu" in cpu["command"]
    assert cpu["networks"]["default"]["aliases"] == ["triton"]  # the router's NATRITON_TRITON_GRPC_URL host
    # `--profile cpu up --scale triton=0`: the router does not wait for the GPU service scaled to 0
    assert compose["services"]["router"]["depends_on"]["triton-cpu"] == {
        "condition": "service_healthy",
        "required": False,
    }


def test_observability_profile(compose: dict[str, Any]) -> None:
    assert _services(compose, profile="observability") == _services(compose) | OBSERVABILITY


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        if name in OBSERVABILITY:
            continue  # their images have no shell or client to probe with (distroless)
        assert spec["healthcheck"]["test"][0] == "CMD", name
    assert compose["services"]["triton"]["healthcheck"]["test"][-1] == "http://localhost:8000/v2/health/ready"
    assert compose["services"]["nats"]["healthcheck"]["test"][-1] == "http://localhost:8222/healthz"
    for service in SETTINGS:
        test = compose["services"][service]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"] and READYZ in test[3], service


def test_start_order(compose: dict[str, Any]) -> None:
    def healthy(service: str) -> set[str]:
        deps = compose["services"][service]["depends_on"]
        return {name for name, dep in deps.items() if dep["condition"] == "service_healthy"}

    assert healthy("router") == {"nats", "redis", "triton", "triton-cpu"}
    for service in ("ingest", "preprocess", "postprocess"):
        assert healthy(service) == {"nats", "redis", "router"}, service  # the catalog exists once the router is ready


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_services_scale(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert "container_name" not in spec and "ports" not in spec  # `--scale preprocess=4` works


def test_images_are_pinned_and_local_ones_never_pulled(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        image = spec["image"]
        if image.startswith("natriton/"):
            assert spec["pull_policy"] == "build" and "build" in spec, name
        else:
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(-[a-z0-9.]+)?", image), f"{name}: {image} is not exact"


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
                assert volume.endswith(":ro"), f"{name}: {volume} should be read-only"


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_service_environment_names_real_settings(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert spec["command"] == [f"natriton_{service}"]
    fields = {f.name for f in msgspec.structs.fields(SETTINGS[service])}
    for name in spec["environment"]:
        if name.startswith(PREFIX):
            assert name.removeprefix(PREFIX).lower() in fields, f"{service}: {name} is not a setting"


def test_dockerfiles_exist_and_the_context_keeps_what_they_need() -> None:
    assert (ROOT / "services" / "Dockerfile").is_file()
    assert (ROOT / "model_repository" / "Dockerfile").is_file()
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert {".git", ".venv", "tests"} <= set(ignored)
    for needed in ("shared", "services", "model_repository", "services/deploy"):
        assert needed not in ignored and f"{needed}/" not in ignored
