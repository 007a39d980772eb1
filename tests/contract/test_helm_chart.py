"""The Helm chart (services/deploy/helm/natriton), linted and rendered offline with Helm v4's own Go SDK.

helm-python-sdk binds the real Helm library (no helm binary, no cluster): `helm lint --strict` and `helm template`
run in process. Every rendered core resource is validated against Kubernetes' OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail), every KEDA ScaledObject against the KEDA 2.16 CRD models (cloudcoil) with an exact
round trip, since those models accept unknown fields. The environment the chart gives each service is checked
against that service's settings class, so the chart cannot drift from the code.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject

from natriton.settings import CommonSettings, load_settings, settings_help, unknown_variables
from natriton_ingest.settings import Settings as IngestSettings
from natriton_postprocess.settings import Settings as PostprocessSettings
from natriton_preprocess.settings import Settings as PreprocessSettings
from natriton_router.settings import Settings as RouterSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "services" / "deploy" / "helm" / "natriton"
SETTINGS: dict[str, type[CommonSettings]] = {
    "ingest": IngestSettings,
    "preprocess": PreprocessSettings,
    "router": RouterSettings,
    "postprocess": PostprocessSettings,
}
KUBE_VERSIONS = ("1.30.0", "1.33.0")
RELEASE, NAMESPACE = "natriton", "inference"
CUSTOM_RESOURCES = {"keda.sh/v1alpha1", "monitoring.coreos.com/v1"}  # no OpenAPI schema in kubernetes-validate

# Every optional feature on at once: KEDA on two services (one with the JetStream trigger), HPA on another, fixed
# replicas on the last, credentials and the Redis URL from Secrets, a ServiceMonitor, the model repository from a
# PVC, extra settings, scheduling constraints, and non-default ports and drain timeout.
EVERYTHING: dict[str, Any] = {
    "image": {"digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "natsUrl": "nats://nats-0.nats:4222,nats://nats-1.nats:4222,nats://nats-2.nats:4222",
    "natsCreds": {"secretName": "natriton-nats", "secretKey": "user.creds"},
    "redisUrlSecret": {"secretName": "natriton-redis", "secretKey": "url"},
    "tritonGrpcUrl": "dns:///triton-headless.triton.svc:8001",
    "modelRepository": {"existingClaim": "triton-model-repository", "subPath": "model_repository"},
    "logFormat": "text",
    "drainTimeoutSeconds": 40,
    "metricsPort": 9500,
    "otel": {
        "endpoint": "http://otel-collector.observability:4317",
        "resourceAttributes": "deployment.environment=prod",
    },
    "serviceAccount": {"annotations": {"example.com/owner": "ml-platform"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "keda": {
        "prometheusServerAddress": "http://prometheus-operated.monitoring.svc:9090",
        "natsServerMonitoringEndpoint": "nats.nats.svc:8222",
    },
    "ingest": {
        "env": {"NATRITON_DEFAULT_TIMEOUT_MS": "5000", "NATRITON_MAX_PAYLOAD_BYTES": "4194304"},
        "podAnnotations": {"example.com/team": "ml"},
        "autoscaling": {"minReplicas": 3, "maxReplicas": 12, "keda": {"enabled": True}},
    },
    "preprocess": {
        "env": {"NATRITON_DECODE_THREADS": "4", "OTEL_BSP_SCHEDULE_DELAY": "1000"},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}],
        "autoscaling": {
            "keda": {
                "enabled": True,
                "requestsPerSecondPerReplica": 80,
                "jetstream": [  # the video feature's frame streams (docs/decisions/0005-streaming-video.md)
                    {"stream": "NATRITON_FRAMES_REALTIME", "consumer": "preprocess", "lagThreshold": 10},
                    {"stream": "NATRITON_FRAMES_RELIABLE", "consumer": "preprocess", "lagThreshold": 100},
                ],
            }
        },
    },
    "router": {
        "env": {"NATRITON_BATCH_MAX_WAIT_MS": "2", "NATRITON_TRITON_RETRIES": "3"},
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "router"}},
                    }
                ]
            }
        },
        "autoscaling": {"hpa": {"enabled": True, "targetCPUUtilizationPercentage": 60}},
    },
    "postprocess": {"replicas": 3, "env": {"NATRITON_CACHE_TTL_S": "600"}},
}
VALUE_SETS = {"default": {}, "everything": EVERYTHING}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` for an install: every manifest document, parsed."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc is not None
    ]


@pytest.fixture(scope="module")
def rendered(chart: helm_python.Chart) -> dict[str, list[dict[str, Any]]]:
    return {name: render(chart, values) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def effective(chart: helm_python.Chart) -> dict[str, dict[str, Any]]:
    """Each value set coalesced with the chart's defaults, as an install would use it."""
    return {name: chart.merge_values(values) for name, values in VALUE_SETS.items()}


def find(docs: list[dict[str, Any]], kind: str, service: str | None = None) -> list[dict[str, Any]]:
    name = f"{RELEASE}-{service}" if service else None
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def deployment(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    (found,) = find(docs, "Deployment", service)
    return found


def container(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    (found,) = deployment(docs, service)["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = found
    return result


def volume_of(docs: list[dict[str, Any]], service: str, mount: dict[str, Any]) -> dict[str, Any]:
    """The pod volume a container's volume mount names."""
    volumes = deployment(docs, service)["spec"]["template"]["spec"]["volumes"]
    (found,) = [volume for volume in volumes if volume["name"] == mount["name"]]
    result: dict[str, Any] = found
    return result


def resolved_env(entries: list[dict[str, Any]]) -> dict[str, str]:
    """A container's env as a service would see it, references resolved to stand-in strings."""
    env: dict[str, str] = {}
    for entry in entries:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            (source, ref), *_ = entry["valueFrom"].items()
            env[entry["name"]] = f"<{source} {ref.get('name', '')}/{ref.get('key', ref.get('fieldPath'))}>"
    return env


def dockerfile_user() -> tuple[int, int]:
    match = re.search(r"^USER (\d+):(\d+)$", (ROOT / "services" / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "services/Dockerfile has no numeric USER uid:gid"
    return int(match[1]), int(match[2])


# -- the chart itself ----------------------------------------------------------------------------------------------


def test_chart_metadata_follows_the_services(chart: helm_python.Chart) -> None:
    meta = chart.metadata
    assert (meta["apiVersion"], meta["name"], meta["version"]) == ("v2", "natriton", "0.1.0")
    versions = {importlib.metadata.version(f"natriton-{service}") for service in SETTINGS}
    assert versions == {meta["appVersion"]}
    assert chart.values["image"]["repository"] == "natriton/services"


def test_image_is_the_app_version_or_a_digest(
    chart: helm_python.Chart, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for service in SETTINGS:
        assert container(rendered["default"], service)["image"] == f"natriton/services:{chart.metadata['appVersion']}"
        assert (
            container(rendered["everything"], service)["image"] == "natriton/services@" + EVERYTHING["image"]["digest"]
        )
    pod = deployment(rendered["everything"], "router")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint_strict_is_clean(values: str) -> None:
    report = helm_python.lint(CHART, VALUE_SETS[values], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 2 warning, 3 error (1 info: no icon)


def test_helm_lint_reports_bad_values() -> None:
    report = helm_python.lint(CHART, {"natsURL": "nats://x:4222"}, strict=True, kube_version="v1.30.0")
    assert any(m["severity"] == 3 and "natsURL" in m["error"] for m in report["messages"])


# -- the rendered manifests against Kubernetes and KEDA ------------------------------------------------------------


def test_renders_the_expected_resources(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def kinds(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for doc in docs:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
            out.setdefault(doc["kind"], []).append(doc["metadata"]["name"].removeprefix(f"{RELEASE}-"))
        return {kind: sorted(names) for kind, names in out.items()}

    per_service = sorted(SETTINGS)
    assert kinds(rendered["default"]) == {
        "Deployment": per_service,
        "Service": per_service,
        "PodDisruptionBudget": per_service,
        "ServiceAccount": [RELEASE],
    }
    assert kinds(rendered["everything"]) == kinds(rendered["default"]) | {
        "HorizontalPodAutoscaler": ["router"],
        "ScaledObject": ["ingest", "preprocess"],
        "ServiceMonitor": [RELEASE],
    }


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_core_resources_match_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], values: str, kube_version: str
) -> None:
    checked = 0
    for doc in rendered[values]:
        if doc["apiVersion"] in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")
        checked += 1
    assert checked >= 13


def test_kubernetes_schema_check_catches_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    bad = copy.deepcopy(deployment(rendered["default"], "router"))
    bad["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 30
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriodSecond"):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[0], strict=True)


def test_scaled_objects_match_the_keda_crds_exactly(rendered: dict[str, list[dict[str, Any]]]) -> None:
    scaled = find(rendered["everything"], "ScaledObject")
    assert scaled
    for doc in scaled:
        model = ScaledObject.model_validate(doc)
        # the models accept unknown fields silently: a misspelt one is lost on the way back
        assert model.model_dump(by_alias=True, exclude_none=True) == doc
        assert model.model_dump(by_alias=True, exclude_unset=True) == doc


def test_keda_round_trip_catches_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (doc,) = find(rendered["everything"], "ScaledObject", "ingest")
    ScaledObject.model_validate(doc)
    bad = copy.deepcopy(doc)
    bad["spec"]["minReplicaCnt"] = 1
    bad["spec"]["triggers"][0]["metricTyp"] = "Value"
    model = ScaledObject.model_validate(bad)  # accepted ...
    assert model.model_dump(by_alias=True, exclude_unset=True) != bad  # ... but not round-tripped
    wrong_type = copy.deepcopy(doc)
    wrong_type["spec"]["minReplicaCount"] = "three"
    with pytest.raises(ValueError, match="minReplicaCount"):  # pydantic.ValidationError
        ScaledObject.model_validate(wrong_type)


def test_keda_triggers(rendered: dict[str, list[dict[str, Any]]]) -> None:
    keda = EVERYTHING["keda"]
    (ingest,) = find(rendered["everything"], "ScaledObject", "ingest")
    (preprocess,) = find(rendered["everything"], "ScaledObject", "preprocess")
    assert ingest["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "natriton-ingest",
    }
    assert (ingest["spec"]["minReplicaCount"], ingest["spec"]["maxReplicaCount"]) == (3, 12)
    for service, doc, per_copy in (("ingest", ingest, "1200"), ("preprocess", preprocess, "80")):
        prometheus = doc["spec"]["triggers"][0]
        assert prometheus["type"] == "prometheus"
        assert prometheus["metadata"] == {
            "serverAddress": keda["prometheusServerAddress"],
            "query": f'sum(rate(natriton_requests_received_total{{service="{service}",namespace="{NAMESPACE}"}}[1m]))',
            "threshold": per_copy,
        }
    assert len(ingest["spec"]["triggers"]) == 1
    assert preprocess["spec"]["triggers"][1:] == [
        {
            "type": "nats-jetstream",
            "metricType": "AverageValue",
            "metadata": {
                "natsServerMonitoringEndpoint": keda["natsServerMonitoringEndpoint"],
                "account": "$G",
                "stream": f"NATRITON_FRAMES_{mode}",
                "consumer": "preprocess",
                "lagThreshold": lag,
            },
        }
        for mode, lag in (("REALTIME", "10"), ("RELIABLE", "100"))
    ]


def test_service_monitor_scrapes_every_service_keeping_their_labels(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["everything"]
    (monitor,) = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["honorLabels"]) == ("metrics", "/metrics", True)
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in find(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == len(SETTINGS)


# -- each service's pods -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_environment_is_settings_of_that_service(
    rendered: dict[str, list[dict[str, Any]]], effective: dict[str, dict[str, Any]], values: str, service: str
) -> None:
    settings_type = SETTINGS[service]
    known = {setting.variable for setting in settings_help(settings_type)}
    entries = container(rendered[values], service)["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "a variable is set twice"
    for name in names:
        if name.startswith("NATRITON_"):
            assert name in known, f"{service}: {name} is not a setting of natriton-{service}"
        else:
            assert name.startswith(("OTEL_", "K8S_")), name  # K8S_*: the pod's name for OTEL_RESOURCE_ATTRIBUTES
    for index, entry in enumerate(entries):  # $(NAME) expands only variables defined above it
        for reference in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
            assert reference in names[:index], f"{entry['name']} refers to $({reference}) before it is set"
    env = resolved_env(entries)
    assert unknown_variables(settings_type, env) == []  # what the service reports (or refuses) at start
    settings = load_settings(settings_type, env)  # the service's own validation (exits 2 on a bad value)
    chart_values = effective[values]
    assert settings.nats_url == chart_values["natsUrl"]
    assert settings.metrics_port == chart_values["metricsPort"]
    assert settings.drain_timeout_s == chart_values["drainTimeoutSeconds"]
    for name, value in chart_values[service]["env"].items():
        assert env[name] == value


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_probes_grace_period_and_command(rendered: dict[str, list[dict[str, Any]]], values: str, service: str) -> None:
    pod = deployment(rendered[values], service)["spec"]["template"]["spec"]
    main = container(rendered[values], service)
    env = resolved_env(main["env"])
    settings = load_settings(SETTINGS[service], env)
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert ports == {"metrics": int(env["NATRITON_METRICS_PORT"])}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = main[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == settings.metrics_port
    assert pod["terminationGracePeriodSeconds"] > settings.drain_timeout_s
    scripts = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    (command,) = main["command"]
    assert command in scripts, f"{command} is no console script"
    assert scripts[command].value == f"natriton_{service}.__main__:main"
    assert "args" not in main


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_pods_are_locked_down(rendered: dict[str, list[dict[str, Any]]], values: str, service: str) -> None:
    uid, gid = dockerfile_user()
    pod = deployment(rendered[values], service)["spec"]["template"]["spec"]
    main = container(rendered[values], service)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    security = main["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"]) == (True, uid)
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # a Service named <release>-<service> would otherwise inject NATRITON_<SERVICE>_PORT and the like
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    for constraint in pod.get("topologySpreadConstraints", []):
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    assert len(pod["topologySpreadConstraints"]) == 2


def test_secrets_and_credentials(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    for service in SETTINGS:
        main = container(docs, service)
        env = {entry["name"]: entry for entry in main["env"]}
        if service in ("ingest", "preprocess", "router", "postprocess"):  # Redis clients: result cache, frame store
            assert env["NATRITON_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "natriton-redis", "key": "url"}}
        else:
            assert "NATRITON_REDIS_URL" not in env
        creds = Path(env["NATRITON_NATS_CREDS_FILE"]["value"])
        (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == str(creds.parent)]
        assert mount["readOnly"] is True
        volume = volume_of(docs, service, mount)
        assert volume["secret"]["secretName"] == "natriton-nats"
        assert volume["secret"]["items"] == [{"key": "user.creds", "path": creds.name}]
    for service in SETTINGS:
        names = {entry["name"] for entry in container(rendered["default"], service)["env"]}
        assert "NATRITON_NATS_CREDS_FILE" not in names


@pytest.mark.parametrize(
    ("repository", "source"),
    [
        (
            {"existingClaim": "triton-models"},
            {"persistentVolumeClaim": {"claimName": "triton-models", "readOnly": True}},
        ),
        ({"volume": {"nfs": {"server": "nfs.example.internal", "path": "/exports/models"}}}, None),
    ],
    ids=["existing-claim", "volume"],
)
def test_router_mounts_the_model_repository_read_only(
    chart: helm_python.Chart, repository: dict[str, Any], source: dict[str, Any] | None
) -> None:
    docs = render(chart, {"modelRepository": repository})
    for doc in docs:
        if doc["apiVersion"] not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(doc, KUBE_VERSIONS[0], strict=True)
    router = container(docs, "router")
    path = resolved_env(router["env"])["NATRITON_MODEL_REPOSITORY"]
    (mount,) = [m for m in router["volumeMounts"] if m["mountPath"] == path]
    assert mount["readOnly"] is True
    volume = volume_of(docs, "router", mount)
    assert {k: v for k, v in volume.items() if k != "name"} == (source or repository["volume"])
    for service in ("ingest", "preprocess", "postprocess"):
        assert "NATRITON_MODEL_REPOSITORY" not in resolved_env(container(docs, service)["env"])


def test_router_without_a_model_repository(rendered: dict[str, list[dict[str, Any]]]) -> None:
    router = container(rendered["default"], "router")
    assert "NATRITON_MODEL_REPOSITORY" not in resolved_env(router["env"])
    assert [m["mountPath"] for m in router["volumeMounts"]] == ["/tmp"]


# -- Services, disruption budgets, autoscaling ---------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_service_and_budget_select_the_deployment_pods(rendered: dict[str, list[dict[str, Any]]], service: str) -> None:
    docs = rendered["everything"]
    pod_labels = deployment(docs, service)["spec"]["template"]["metadata"]["labels"]
    (svc,) = find(docs, "Service", service)
    assert svc["spec"]["clusterIP"] == "None"  # headless: one address per copy for Prometheus
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": EVERYTHING["metricsPort"], "targetPort": "metrics", "protocol": "TCP"}
    ]
    (budget,) = find(docs, "PodDisruptionBudget", service)
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for other in set(SETTINGS) - {service}:  # never another service's pods
        other_labels = deployment(docs, other)["spec"]["template"]["metadata"]["labels"]
        assert not svc["spec"]["selector"].items() <= other_labels.items()


def test_replicas_belong_to_the_autoscaler_when_one_is_on(
    rendered: dict[str, list[dict[str, Any]]], effective: dict[str, dict[str, Any]]
) -> None:
    for service in SETTINGS:
        assert deployment(rendered["default"], service)["spec"]["replicas"] == effective["default"][service]["replicas"]
    docs = rendered["everything"]
    for service in ("ingest", "preprocess", "router"):  # KEDA, KEDA, HPA
        assert "replicas" not in deployment(docs, service)["spec"], service
    assert deployment(docs, "postprocess")["spec"]["replicas"] == 3
    (hpa,) = find(docs, "HorizontalPodAutoscaler", "router")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "natriton-router"
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
    ]


# -- values the chart refuses --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"natsURL": "nats://nats:4222"}, "natsURL"),
        ({"router": {"replica": 3}}, "replica"),
        ({"ingest": {"autoscaling": {"hpa": {"enabld": True}}}}, "enabld"),
        ({"preprocess": {"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}}}, "keda/enabled"),
        ({"postprocess": {"env": {"CACHE_TTL_S": "60"}}}, "CACHE_TTL_S"),
        ({"postprocess": {"env": {"NATRITON_CACHE_TTL_S": 60}}}, "NATRITON_CACHE_TTL_S"),  # values are strings
        ({"router": {"autoscaling": {"minReplicas": 0}}}, "minReplicas"),
        ({"metricsPort": 0}, "metricsPort"),
        (
            {"preprocess": {"autoscaling": {"keda": {"jetstream": [{"stream": "NATRITON_FRAMES_RELIABLE"}]}}}},
            "consumer",
        ),
    ],
    ids=[
        "misspelt-top-level-key",
        "misspelt-service-key",
        "misspelt-nested-key",
        "hpa-and-keda",
        "env-name-not-natriton-or-otel",
        "env-value-not-a-string",
        "scale-to-zero",
        "metrics-off",
        "jetstream-trigger-without-consumer",
    ],
)
def test_schema_refuses(chart: helm_python.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=complaint):
        chart.validate_schema(values)
    with pytest.raises(helm_python.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_schema_accepts_the_value_sets(chart: helm_python.Chart) -> None:
    for values in VALUE_SETS.values():
        chart.validate_schema(chart.merge_values(values))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"router": {"env": {"NATRITON_TRITON_GRPC_URL": "x:1"}}}, "router.env.NATRITON_TRITON_GRPC_URL"),
        ({"ingest": {"autoscaling": {"keda": {"enabled": True}}}}, "keda.prometheusServerAddress"),
        ({"router": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
        ({"modelRepository": {"existingClaim": "a", "volume": {"emptyDir": {}}}}, "not both"),
        (
            {
                "keda": {"prometheusServerAddress": "http://prometheus:9090"},
                "preprocess": {
                    "autoscaling": {
                        "keda": {"enabled": True, "jetstream": [{"stream": "S", "consumer": "C", "lagThreshold": 5}]}
                    }
                },
            },
            "keda.natsServerMonitoringEndpoint",
        ),
    ],
    ids=[
        "env-the-chart-sets",
        "keda-without-prometheus",
        "min-above-max",
        "two-model-repositories",
        "jetstream-without-nats-monitoring",
    ],
)
def test_templates_refuse(chart: helm_python.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(complaint)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_templates_refuse_hpa_and_keda_without_the_schema(tmp_path: Path) -> None:
    """`helm install --skip-schema-validation` still cannot enable both (`helm lint` only logs a template's fail)."""
    unchecked = shutil.copytree(CHART, tmp_path / "natriton")
    (unchecked / "values.schema.json").unlink()
    both = {
        "keda": EVERYTHING["keda"],
        "router": {"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}},
    }
    with helm_python.Chart.load(unchecked) as loaded:
        assert loaded.schema is None
        with pytest.raises(helm_python.HelmRenderError, match="enable hpa or keda, not both"):
            loaded.render(both, name=RELEASE, namespace=NAMESPACE, is_install=True)
