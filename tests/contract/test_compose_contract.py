"""Static checks of docker-compose.yml (no Docker engine here): it parses, and its settings exist."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_all_parts_are_in_the_stack(compose: dict[str, Any]) -> None:
    assert {"nats", "redis", "triton", *SETTINGS} <= set(compose["services"])
    assert "-js" in compose["services"]["nats"]["command"]
    gpu = compose["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_service_environment_names_real_settings(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert spec["command"] == [f"natriton_{service}"]
    fields = {f.name for f in msgspec.structs.fields(SETTINGS[service])}
    for name in spec["environment"]:
        if name.startswith(PREFIX):
            assert name.removeprefix(PREFIX).lower() in fields, f"{service}: {name} is not a setting"


def test_dockerfiles_exist() -> None:
    assert (ROOT / "services" / "Dockerfile").is_file()
    assert (ROOT / "model_repository" / "Dockerfile").is_file()
