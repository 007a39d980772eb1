"""The ``natriton`` command line against the real stack, run as a user runs it: the installed script, a subprocess.

Every command gets ``--nats-url`` (the session stack listens on free ports) and a state directory of its own, so a
developer's running ``natriton up`` never interferes. The last test starts a second stack with ``natriton up
--detach`` in a fresh work directory and stops it with ``natriton down``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from natriton_dev.otlp import OtlpSink, ReceivedSpan
from natriton_dev.stack import LocalStack

NATRITON = Path(sys.executable).parent / "natriton"
SERVICES = ("ingest", "preprocess", "router", "postprocess")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("natriton-state")


def natriton(
    *args: str, state_dir: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``natriton`` script with no NATRITON_* variables from the shell but ``env``."""
    assert NATRITON.exists(), f"{NATRITON} missing: install shared/dev into the venv (make venv)"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NATRITON_", "OTEL_"))}
    base.update({"NATRITON_STATE_DIR": str(state_dir), **(env or {})})
    return subprocess.run(
        [str(NATRITON), *args], env=base, capture_output=True, text=True, timeout=timeout, check=False
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"not JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_status_lists_the_four_services_and_the_models(stack: LocalStack, state_dir: Path) -> None:
    done = natriton(
        "status", "--json", "--nats-url", stack.nats_url, "--redis-url", stack.redis_url,
        "--triton-url", stack.triton.http_url, "--triton-grpc-url", stack.triton.grpc_url,
        state_dir=state_dir,
    )  # fmt: skip
    report = as_json(done)
    assert done.returncode == 0 and report["ok"], report["problems"]
    services = {s["service"]: s for s in report["services"]}
    for name in SERVICES:
        assert services[name]["copies"] >= 1, name
        assert services[name]["endpoints"], name
    ingest_subjects = {e["name"]: e["subject"] for e in services["ingest"]["endpoints"]}
    assert ingest_subjects == {"infer": "natriton.v1.infer", "control_streams": "natriton.v1.control.streams"}
    models = {m["name"]: m for m in report["models"]}
    assert {"mobilenet_v2", "face_detector", "minilm_l6_v2"} <= set(models)
    assert models["mobilenet_v2"]["kind"] == "classifier"
    assert models["mobilenet_v2"]["triton_state"].get("1") == "READY"
    assert report["nats"]["jetstream"] and report["nats"]["source"] == "option"
    assert report["redis"]["ok"] and report["triton"]["ready"] and report["triton"]["grpc_reachable"]

    human = natriton("status", "--nats-url", stack.nats_url, "--redis-url", stack.redis_url, state_dir=state_dir)
    assert human.returncode == 0, human.stderr
    assert "mesh is up" in human.stdout and "postprocess" in human.stdout and "mobilenet_v2" in human.stdout


def test_infer_classifies_the_coffee_photo_as_espresso(
    stack: LocalStack, state_dir: Path, photos: dict[str, bytes], tmp_path: Path
) -> None:
    coffee = tmp_path / "coffee.jpg"
    coffee.write_bytes(photos["coffee.jpg"])
    done = natriton("infer", str(coffee), "--model", "mobilenet_v2", "--json", "--nats-url", stack.nats_url,
                    state_dir=state_dir)  # fmt: skip
    answer = as_json(done)
    assert done.returncode == 0 and answer["ok"], answer
    assert answer["model"] == "mobilenet_v2" and answer["result"]["type"] == "classification"
    assert answer["result"]["classes"][0]["label"] == "espresso"

    shown = natriton("infer", str(coffee), "-m", "mobilenet_v2", "--top-k", "3", "--no-cache",
                     "--nats-url", stack.nats_url, state_dir=state_dir)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "espresso" in shown.stdout and "[inference]" in shown.stdout


def test_infer_text_and_typed_errors(stack: LocalStack, state_dir: Path) -> None:
    done = natriton("infer", "A man is eating food.", "-m", "minilm_l6_v2", "--json", "--nats-url", stack.nats_url,
                    state_dir=state_dir)  # fmt: skip
    answer = as_json(done)
    assert answer["result"]["type"] == "embedding" and answer["result"]["vector"]["shape"] == [384]
    unknown = natriton("infer", "hello", "-m", "no_such_model", "--nats-url", stack.nats_url, state_dir=state_dir)
    assert unknown.returncode == 11, unknown.stdout + unknown.stderr  # not_found
    assert "error not_found: unknown model 'no_such_model'" in unknown.stdout


def test_models_json_is_the_catalog(stack: LocalStack, state_dir: Path) -> None:
    done = natriton("models", "--json", "--nats-url", stack.nats_url, state_dir=state_dir)
    document = as_json(done)
    assert done.returncode == 0
    models = {m["name"]: m for m in document["models"]}
    mobilenet = models["mobilenet_v2"]
    assert mobilenet["kind"] == "classifier" and mobilenet["versions"] == ["1"] and mobilenet["max_batch_size"] > 0
    assert mobilenet["inputs"][0] == {"name": "IMAGE", "datatype": "UINT8", "shape": [224, 224, 3]}
    assert mobilenet["profile"]["type"] == "classifier" and len(mobilenet["profile"]["labels"]) == 1000
    assert models["minilm_l6_v2"]["kind"] == "embedder" and models["face_detector"]["kind"] == "detector"
    assert models["versioned"]["versions"] == ["1", "2"]
    one = natriton("models", "mobilenet_v2", "--nats-url", stack.nats_url, state_dir=state_dir)
    assert one.returncode == 0 and "IMAGE UINT8 [224,224,3]" in one.stdout


def test_routes_set_ls_clear_round_trip(stack: LocalStack, state_dir: Path) -> None:
    url = ["--nats-url", stack.nats_url]
    try:
        done = natriton("routes", "set", "versioned", "--weights", "1=90,2=10", *url, state_dir=state_dir)
        assert done.returncode == 0, done.stderr
        assert '"weights":{"1":90.0,"2":10.0}' in done.stdout
        listed = as_json(natriton("routes", "ls", "--json", *url, state_dir=state_dir))
        (policy,) = [r for r in listed["routes"] if r["model"] == "versioned"]
        assert policy["weights"] == {"1": 90.0, "2": 10.0} and policy["shadow_version"] == "" and policy["revision"] > 0
        shadow = as_json(natriton("routes", "set", "versioned", "--weights", "1=100", "--shadow", "2",
                                  "--shadow-fraction", "0.5", "--json", *url, state_dir=state_dir))  # fmt: skip
        assert shadow["policy"] == {"model": "versioned", "weights": {"1": 100.0}, "shadow_version": "2",
                                    "shadow_fraction": 0.5}  # fmt: skip
        refused = natriton("routes", "set", "versioned", "--weights", "3=1", *url, state_dir=state_dir)
        assert refused.returncode == 2 and "no ready version 3" in refused.stderr
        cleared = as_json(natriton("routes", "clear", "versioned", "--json", *url, state_dir=state_dir))
        assert cleared == {"ok": True, "model": "versioned", "removed": True}
        after = as_json(natriton("routes", "ls", "versioned", "--json", *url, state_dir=state_dir))
        assert after["routes"] == []
    finally:
        natriton("routes", "clear", "versioned", *url, state_dir=state_dir)


def test_bench_reports_throughput_and_latency(stack: LocalStack, state_dir: Path) -> None:
    done = natriton("bench", "--nats-url", stack.nats_url, "--requests", "50", "--concurrency", "4", "--json",
                    state_dir=state_dir, timeout=110)  # fmt: skip
    report = as_json(done)
    assert done.returncode == 0, done.stderr
    assert report["requests"] == 50 and report["succeeded"] == 50 and report["failed"] == 0
    assert report["model"] == "mobilenet_v2" and report["errors_by_code"] == {}
    assert report["throughput_rps"] > 0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


def test_a_dead_nats_fails_fast_with_one_line(state_dir: Path) -> None:
    url = f"nats://127.0.0.1:{unused_port()}"
    for args in (["status"], ["models"], ["infer", "hello", "-m", "minilm_l6_v2"], ["routes", "ls"], ["bench"]):
        started = time.monotonic()
        done = natriton(*args, "--nats-url", url, state_dir=state_dir, timeout=30)
        assert time.monotonic() - started < 10, args
        assert done.returncode == 3, (args, done.stderr)
        assert done.stderr.strip() == f"error: cannot reach NATS at {url} (connection refused)", args
        assert done.stdout == ""


_STRING_VALUE = re.compile(r'^\s*string_value:\s*"(.*)"\s*$', re.DOTALL)


def _span_line(span: ReceivedSpan) -> str:
    """The OTLP test receiver's span as a line of the trace file (it keeps no times; values as protobuf text)."""
    attributes = {}
    for key, value in span.attributes.items():
        match = _STRING_VALUE.match(value)
        attributes[key] = match.group(1) if match else value.strip()
    return json.dumps(
        {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "service": span.service,
            "attributes": attributes,
            "links": [{"trace_id": t, "span_id": s} for t, s in span.links],
        }
    )


def test_trace_shows_the_hops_of_a_request(
    stack: LocalStack, state_dir: Path, otlp_sink: OtlpSink, photos: dict[str, bytes], tmp_path: Path
) -> None:
    coffee = tmp_path / "coffee.jpg"
    coffee.write_bytes(photos["coffee.jpg"])
    request_id = f"cli-trace-{uuid.uuid4().hex[:8]}"
    done = natriton("infer", str(coffee), "-m", "mobilenet_v2", "--no-cache", "--request-id", request_id,
                    "--nats-url", stack.nats_url, state_dir=state_dir)  # fmt: skip
    assert done.returncode == 0 and request_id in done.stdout, done.stderr
    # a classifier's answer is made by the router (decision 0012): no postprocess hop
    wanted = {f"natriton-{s}" for s in SERVICES if s != "postprocess"}
    trace_id = ""
    for _ in range(100):
        spans = otlp_sink.spans()
        trace_id = next((s.trace_id for s in spans if request_id in s.attributes.get("natriton.request_id", "")), "")
        if trace_id and wanted <= {s.service for s in otlp_sink.spans(trace_id)}:
            break
        time.sleep(0.1)
    assert trace_id, "the ingest span carries natriton.request_id"
    trace_file = tmp_path / "traces.jsonl"
    trace_file.write_text("".join(_span_line(s) + "\n" for s in otlp_sink.spans()))

    done = natriton("trace", request_id, "--trace-file", str(trace_file), "--json", "--wait", "0", state_dir=state_dir)
    document = as_json(done)
    assert done.returncode == 0, done.stderr
    (trace,) = document["traces"]
    assert trace["trace_id"] == trace_id
    (root,) = trace["spans"]
    assert root["name"] == "ingest infer" and root["service"] == "natriton-ingest"

    def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node["children"] for n in walk(child))]

    nodes = walk(root)
    assert {n["service"] for n in nodes} == wanted
    names = [n["name"] for n in nodes]
    assert names.index("ingest infer") < names.index("preprocess preprocess") < names.index("router route")
    assert any(n["linked"] and n["name"].startswith("batch mobilenet_v2") for n in nodes), "the Triton batch"

    tree = natriton("trace", request_id, "--trace-file", str(trace_file), "--wait", "0", state_dir=state_dir)
    assert tree.returncode == 0 and "router route" in tree.stdout and "linked" in tree.stdout


@pytest.mark.timeout(600)
def test_up_detach_then_every_command_finds_the_stack_then_down(tmp_path: Path, photos: dict[str, bytes]) -> None:
    """A second, fresh stack: `up --detach` returns once ready, commands find it through the state file, the
    services' spans land in its trace file, `down` stops every process."""
    state = tmp_path / "state"
    workdir = tmp_path / "work"
    coffee = tmp_path / "coffee.jpg"
    coffee.write_bytes(photos["coffee.jpg"])
    started: dict[str, Any] = {"pids": {}}
    up = natriton("up", "--detach", "--workdir", str(workdir), "--json", state_dir=state, timeout=420)
    try:
        started = as_json(up)
        assert up.returncode == 0 and started["status"] == "ready", up.stderr
        assert started["nats_url"].startswith("nats://127.0.0.1:") and started["detached"]
        assert (state / "stack.json").exists() and Path(started["trace_file"]).parent == workdir.resolve()

        status = as_json(natriton("status", "--json", "-v", state_dir=state))
        assert status["ok"], status["problems"]
        assert status["nats"]["url"] == started["nats_url"] and status["nats"]["source"] == "local stack"
        assert status["triton"]["http_url"] == started["triton_http_url"] and status["triton"]["ready"]

        request_id = f"cli-up-{uuid.uuid4().hex[:8]}"
        answer = as_json(natriton("infer", str(coffee), "-m", "mobilenet_v2", "--request-id", request_id, "--json",
                                  state_dir=state))  # fmt: skip
        assert answer["result"]["classes"][0]["label"] == "espresso"

        traced = natriton("trace", request_id, "--json", "--wait", "20", state_dir=state, timeout=60)
        (trace,) = as_json(traced)["traces"]
        root = trace["spans"][0]
        assert root["name"] == "ingest infer" and root["duration_ms"] > 0 and trace["span_count"] >= 6
        assert trace["duration_ms"] >= root["children"][0]["duration_ms"] > 0
    finally:
        down = natriton("down", "--json", "--force", state_dir=state, timeout=200)
    stopped = as_json(down)
    assert down.returncode == 0 and stopped["stopped"], down.stderr
    assert not (state / "stack.json").exists()
    for name, pid in started["pids"].items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        assert ") Z" in stat, f"{name} (pid {pid}) still runs after natriton down"


def test_stream_add_ls_rm_round_trip(stack: LocalStack, state_dir: Path) -> None:
    url = ["--nats-url", stack.nats_url]
    camera = f"cli-{uuid.uuid4().hex[:8]}"
    try:
        secret_url = "rtsp://admin:s3cret@10.0.0.7/live"
        added = as_json(natriton("stream", "add", camera, secret_url, "--fps", "5", "--mode", "reliable",
                                 "--no-change-gate", "--audio-model", "silero_vad", "--json", *url,
                                 state_dir=state_dir))  # fmt: skip
        assert added["ok"] and added["action"] == "add" and added["message"] == f"camera {camera} added"
        (info,) = added["streams"]
        assert info["source"]["url"] == "rtsp://***@10.0.0.7/live"  # credentials never come back
        listed = as_json(natriton("stream", "ls", "--json", *url, state_dir=state_dir))
        (mine,) = [s for s in listed["streams"] if s["source"]["camera"] == camera]
        assert mine["source"] | {"url": ""} == {
            "type": "stream_source", "camera": camera, "url": "", "model": "face_detector", "fps": 5.0,
            "mode": "reliable", "change_gate": False, "loop": False, "audio_model": "silero_vad",
        }  # fmt: skip
        table = natriton("stream", "ls", *url, state_dir=state_dir)
        assert table.returncode == 0 and camera in table.stdout and "s3cret" not in table.stdout
        replaced = natriton("stream", "add", camera, "/videos/gate.mp4", "--loop", *url, state_dir=state_dir)
        assert replaced.returncode == 0 and f"camera {camera} replaced" in replaced.stdout
        removed = natriton("stream", "rm", camera, *url, state_dir=state_dir)
        assert removed.returncode == 0 and f"camera {camera} removed" in removed.stdout
        again = natriton("stream", "rm", camera, *url, state_dir=state_dir)
        assert again.returncode == 11 and f"no camera '{camera}'" in again.stderr
        bad = natriton("stream", "add", "no.dots", "/x.mp4", *url, state_dir=state_dir)
        assert bad.returncode == 10 and "camera id 'no.dots'" in bad.stderr
        wrong_mode = natriton("stream", "add", camera, "/x.mp4", "--mode", "fast", *url, state_dir=state_dir)
        assert wrong_mode.returncode == 2 and "realtime or reliable" in wrong_mode.stderr
    finally:
        natriton("stream", "rm", camera, *url, state_dir=state_dir)
