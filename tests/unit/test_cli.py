"""The ``natriton`` command line without a mesh: where URLs come from, output, parsing, traces, errors.

Commands run in-process with typer's CliRunner. Nothing here needs a server; commands that connect are pointed at
a port nobody listens on and must fail fast with one line.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from natriton_client.protocol import (
    AudioInput,
    Classification,
    ClassScore,
    Detection,
    Detections,
    Embedding,
    ErrorCode,
    ErrorReply,
    InferResponse,
    Tensor,
)
from natriton_dev.cli import app
from natriton_dev.cli.bench import BenchResult, default_payload, latency_summary, result_document
from natriton_dev.cli.common import (
    DEFAULT_NATS_URL,
    DEFAULT_REDIS_URL,
    ERROR_EXIT_CODES,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    Output,
    connect_error_reason,
    resolve_nats_url,
    resolve_redis_url,
    shown_url,
)
from natriton_dev.cli.infer import choose_payload, render_reply, reply_document
from natriton_dev.cli.local import service_environment
from natriton_dev.cli.models import model_details, models_table, shorten
from natriton_dev.cli.routes import parse_weights, validate_policy
from natriton_dev.cli.state import StackState, read_state, remove_state, running_stack, state_path, write_state
from natriton_dev.cli.status import judge, render, summarize_services
from natriton_dev.cli.trace import build_tree, find_trace_ids, node_document, render_tree, spans_from_jaeger
from natriton_dev.cli.traces import SpanFileRecorder, SpanRecord, read_spans, records_from_request

runner = CliRunner()
COMMANDS = [[], ["up"], ["down"], ["status"], ["models"], ["infer"], ["routes"], ["routes", "ls"], ["routes", "set"]]
COMMANDS += [["routes", "clear"], ["trace"], ["bench"]]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No NATRITON_* variables from the developer's shell, and a state directory of our own."""
    for name in list(os.environ):
        if name.startswith("NATRITON_"):
            monkeypatch.delenv(name)
    state_dir = tmp_path / "state"
    monkeypatch.setenv("NATRITON_STATE_DIR", str(state_dir))
    return state_dir


@pytest.fixture
def supervisor() -> Iterator[int]:
    """A live process whose command line says natriton (what a stack's supervisor looks like)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "natriton"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def ready_state(pid: int, **fields: Any) -> StackState:
    values: dict[str, Any] = {
        "status": "ready",
        "supervisor_pid": pid,
        "workdir": "/tmp/stack",
        "started_at": "2026-01-01T00:00:00+00:00",
        "nats_url": "nats://127.0.0.1:41000",
        "redis_url": "redis://127.0.0.1:41001/0",
    }
    return StackState(**(values | fields))


# ------------------------------------------------------------------------------------------------ URL resolution
def env(**variables: str) -> dict[str, str]:
    """The test's environment (its own state directory, no NATRITON_* from the shell) plus ``variables``."""
    return {**os.environ, **variables}


def test_nats_url_comes_from_the_option_first(supervisor: int) -> None:
    write_state(state_path(), ready_state(supervisor))
    resolved = resolve_nats_url("nats://option:1", environ=env(NATRITON_NATS_URL="nats://env:2"))
    assert (resolved.url, resolved.source, resolved.detail) == ("nats://option:1", "option", "--nats-url")


def test_then_from_the_environment(supervisor: int) -> None:
    write_state(state_path(), ready_state(supervisor))
    resolved = resolve_nats_url(None, environ=env(NATRITON_NATS_URL="nats://env:2"))
    assert (resolved.url, resolved.source, resolved.detail) == ("nats://env:2", "env", "NATRITON_NATS_URL")


def test_then_from_a_running_local_stack(supervisor: int) -> None:
    write_state(state_path(), ready_state(supervisor))
    resolved = resolve_nats_url(None, environ=env())
    assert (resolved.url, resolved.source) == ("nats://127.0.0.1:41000", "local stack")
    assert str(state_path()) in resolved.describe()
    assert resolve_redis_url(None, environ=env()).url == "redis://127.0.0.1:41001/0"


def test_then_the_default() -> None:
    assert resolve_nats_url(None, environ=env()) == resolve_nats_url(None, environ=env(), stack=None)
    resolved = resolve_nats_url(None, environ=env())
    assert (resolved.url, resolved.source) == (DEFAULT_NATS_URL, "default")
    assert resolve_redis_url(None, environ=env()).url == DEFAULT_REDIS_URL


def test_a_stack_whose_supervisor_is_gone_is_ignored() -> None:
    write_state(state_path(), ready_state(dead_pid()))
    assert running_stack() is None
    assert resolve_nats_url(None, environ=env()).source == "default"


def test_a_stack_still_starting_is_not_used(supervisor: int) -> None:
    write_state(state_path(), ready_state(supervisor, status="starting", nats_url=""))
    assert running_stack() is None
    assert resolve_nats_url(None, environ=env()).url == DEFAULT_NATS_URL


def test_an_empty_option_or_variable_falls_through() -> None:
    assert resolve_nats_url("", environ=env(NATRITON_NATS_URL="")).source == "default"


def test_credentials_are_masked_in_messages() -> None:
    assert shown_url("nats://alice:secret@host:4222") == "nats://***@host:4222"
    assert "secret" not in resolve_nats_url("nats://alice:secret@h:1").describe()


def test_verbose_says_which_url_is_used_and_the_error_is_one_line() -> None:
    url = f"nats://127.0.0.1:{unused_port()}"
    started = time.monotonic()
    result = runner.invoke(app, ["models", "--nats-url", url, "-v"])
    assert time.monotonic() - started < 5
    assert result.exit_code == EXIT_UNREACHABLE
    assert f"NATS {url} (from --nats-url)" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot reach NATS at {url} (connection refused)"]
    assert "Traceback" not in result.output


def test_the_environment_variable_is_named_in_verbose_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"nats://127.0.0.1:{unused_port()}"
    monkeypatch.setenv("NATRITON_NATS_URL", url)
    result = runner.invoke(app, ["routes", "ls", "-v"])
    assert result.exit_code == EXIT_UNREACHABLE
    assert "(from NATRITON_NATS_URL)" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["models"],
        ["routes", "ls"],
        ["routes", "set", "m", "--weights", "1=1"],
        ["routes", "clear", "m"],
        ["infer", "hello", "-m", "m"],
        ["bench", "-n", "1", "--text", "x"],
    ],
)
def test_every_command_fails_fast_on_a_dead_nats(args: list[str]) -> None:
    url = f"nats://127.0.0.1:{unused_port()}"
    result = runner.invoke(app, [*args, "--nats-url", url, "--json"])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert json.loads(result.stdout)["ok"] is False
    assert result.stderr.count("\n") == 1 and "cannot reach NATS" in result.stderr


def test_status_of_another_mesh_does_not_borrow_the_local_stacks_redis_or_triton(supervisor: int) -> None:
    write_state(state_path(), ready_state(supervisor, triton_http_url="http://127.0.0.1:41002"))
    url = f"nats://127.0.0.1:{unused_port()}"
    result = runner.invoke(app, ["status", "--nats-url", url, "-v"])
    assert result.exit_code == EXIT_UNREACHABLE
    assert f"Redis {DEFAULT_REDIS_URL} (from the default)" in result.stderr
    assert "41002" not in result.stderr
    local = runner.invoke(app, ["status", "-v", "--connect-timeout", "0.5"])
    assert "Redis redis://127.0.0.1:41001/0 (from the local stack's state file" in local.stderr
    assert "http://127.0.0.1:41002" in local.stderr


def test_connect_error_reasons() -> None:
    assert connect_error_reason(ConnectionRefusedError(111, "refused")) == "connection refused"
    assert connect_error_reason(socket.gaierror(-2, "Name or service not known")) == "unknown host"
    assert connect_error_reason(TimeoutError()) == "timed out"


@pytest.mark.parametrize("args", COMMANDS)
def test_help_everywhere(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


# ------------------------------------------------------------------------------------------------ state file
def test_state_round_trip_without_storing_its_path(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    write_state(path, ready_state(123, pids={"nats-server": 7}))
    assert "path" not in json.loads(path.read_text())
    state = read_state(path)
    assert state is not None and state.pids == {"nats-server": 7} and state.path == str(path)
    assert not remove_state(path, owner_pid=999), "another supervisor's file stays"
    assert remove_state(path, owner_pid=123) and read_state(path) is None


def test_a_broken_state_file_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text("{not json")
    assert read_state(tmp_path / "stack.json") is None


def test_down_without_a_stack_says_so() -> None:
    result = runner.invoke(app, ["down"])
    assert result.exit_code == 0
    assert "no local stack is running" in result.stdout


def test_down_with_a_stale_state_file_removes_it() -> None:
    write_state(state_path(), ready_state(dead_pid()))
    result = runner.invoke(app, ["down", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reason"] == "stale"
    assert not state_path().exists()


def test_up_refuses_a_missing_model_repository(tmp_path: Path) -> None:
    result = runner.invoke(app, ["up", "--model-repository", str(tmp_path / "none"), "--workdir", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE
    assert "no model repository" in result.stderr


def test_up_refuses_to_start_a_second_stack(supervisor: int, tmp_path: Path) -> None:
    write_state(state_path(), ready_state(supervisor))
    result = runner.invoke(app, ["up", "--detach", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert "already ready at nats://127.0.0.1:41000" in result.stderr


def test_services_export_spans_to_the_recorder() -> None:
    env = service_environment("http://127.0.0.1:5", 1.0)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:5" and "OTEL_TRACES_SAMPLER" not in env
    env = service_environment("http://127.0.0.1:5", 0.25)
    assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "0.25")


# ------------------------------------------------------------------------------------------------ routes
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1=90,2=10", {"1": 90.0, "2": 10.0}),
        ("1=90", {"1": 90.0}),
        ("1=0.5,10=1.5", {"1": 0.5, "10": 1.5}),
        ("1=90,2=10,", {"1": 90.0, "2": 10.0}),
        (" 1=90 , 2=10 ", {"1": 90.0, "2": 10.0}),
        ("1 = 90, 2 = 10", {"1": 90.0, "2": 10.0}),
        ("1=0", {"1": 0.0}),
        ("", {}),
    ],
)
def test_parse_weights(text: str, expected: dict[str, float]) -> None:
    weights = parse_weights(text)
    assert weights == expected
    assert all(type(w) is float for w in weights.values())


@pytest.mark.parametrize("text", ["1", "=5", "1=", "1=abc", "1=-5", "1=90,2", "1:90", "1=inf", "1=nan", "2=Infinity"])
def test_parse_weights_refuses_bad_forms(text: str) -> None:
    with pytest.raises(ValueError):
        parse_weights(text)


def test_set_parses_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from natriton.messages import RoutePolicy
    from natriton_dev.cli import routes

    calls: list[tuple[Any, ...]] = []

    async def fake_set(*args: Any) -> tuple[RoutePolicy, int]:
        calls.append(args)
        model, weights, shadow, fraction = args[:4]
        return RoutePolicy(model=model, weights=weights, shadow_version=shadow, shadow_fraction=fraction), 7

    monkeypatch.setattr(routes, "_set", fake_set)
    result = runner.invoke(app, ["routes", "set", "mobilenet_v2", "--weights", "1=90,2=10", "--shadow", "2"])
    assert result.exit_code == 0, result.output
    assert calls[0][:5] == ("mobilenet_v2", {"1": 90.0, "2": 10.0}, "2", 1.0, False)
    assert '"shadow_version":"2"' in result.stdout and "(revision 7)" in result.stdout
    result = runner.invoke(app, ["routes", "set", "mobilenet_v2", "--json"])
    assert calls[1][1] == {} and json.loads(result.stdout)["policy"]["weights"] == {}


def test_set_refuses_bad_weights_before_connecting() -> None:
    result = runner.invoke(app, ["routes", "set", "mobilenet_v2", "--weights", "1=lots"])
    assert result.exit_code == EXIT_USAGE
    assert "not a number" in result.stderr


def test_set_refuses_a_shadow_fraction_out_of_range_before_connecting() -> None:
    result = runner.invoke(app, ["routes", "set", "m", "--shadow", "2", "--shadow-fraction", "1.5"])
    assert result.exit_code == EXIT_USAGE
    assert "--shadow-fraction must be between 0 and 1" in result.stderr


def test_validate_policy() -> None:
    ready = ("1", "2")
    assert validate_policy("m", {"1": 90, "2": 10}, "", 1.0, ready) == []
    assert validate_policy("m", {"1": 100}, "2", 0.5, ready) == []
    assert validate_policy("m", {}, "", 1.0, ready) == []
    assert "no ready version 3" in validate_policy("m", {"1": 50, "3": 50}, "", 1.0, ready)[0]
    assert "no ready version 9" in validate_policy("m", {}, "9", 1.0, ready)[0]
    assert "at least one weight" in validate_policy("m", {"1": 0}, "", 1.0, ready)[0]
    assert "cannot shadow itself" in validate_policy("m", {"2": 1}, "2", 1.0, ready)[0]
    assert "not in the catalog" in validate_policy("m", {"1": 1}, "", 1.0, None)[0]


# ------------------------------------------------------------------------------------------------ status
def _stats(copy_id: str, requests: int, errors: int, average_ns: int) -> dict[str, Any]:
    return {
        "type": "io.nats.micro.v1.stats_response",
        "name": "natriton-ingest",
        "id": copy_id,
        "version": "0.1.0",
        "started": "2026-01-01T00:00:00Z",
        "endpoints": [
            {
                "name": "infer",
                "subject": "natriton.v1.infer",
                "queue_group": "natriton.ingest",
                "num_requests": requests,
                "num_errors": errors,
                "processing_time": average_ns * requests,
                "average_processing_time": average_ns,
                "data": {"errors_by_code": {"not_found": errors}},
            }
        ],
    }


def test_service_copies_are_summed_per_endpoint() -> None:
    infos = [{"name": "natriton-ingest", "id": "a", "version": "0.1.0", "endpoints": [{"name": "infer"}]}]
    services = summarize_services(infos, [_stats("a", 30, 1, 2_000_000), _stats("b", 10, 3, 6_000_000)])
    assert len(services) == 1
    ingest = services[0]
    assert (ingest["name"], ingest["service"], ingest["copies"], ingest["versions"]) == (
        "natriton-ingest",
        "ingest",
        2,
        ["0.1.0"],
    )
    endpoint = ingest["endpoints"][0]
    assert (endpoint["requests"], endpoint["errors"]) == (40, 4)
    assert endpoint["average_ms"] == pytest.approx(3.0)  # (30 * 2 ms + 10 * 6 ms) / 40
    assert endpoint["errors_by_code"] == {"not_found": 4}


def _report(**changes: Any) -> dict[str, Any]:
    services = [
        {"name": f"natriton-{s}", "service": s, "copies": 1, "versions": ["0.1.0"], "instances": [], "endpoints": []}
        for s in ("ingest", "preprocess", "router", "postprocess")
    ]
    report: dict[str, Any] = {
        "nats": {
            "url": "nats://h:1",
            "source": "option",
            "connected": True,
            "server_version": "2.15.1",
            "jetstream": True,
        },
        "services": services,
        "catalog": [
            {"name": "mobilenet_v2", "versions": ["1"], "task": "classifier", "profile": {"type": "classifier"}}
        ],
        "redis": {"url": "redis://h:2/0", "ok": True, "source": "option"},
        "triton": {"http_url": "http://h:3", "grpc_url": "h:4", "ready": True, "grpc_reachable": True, "models": []},
    }
    report.update(changes)
    return report


def test_a_healthy_mesh_is_ok() -> None:
    report = judge(_report())
    assert report["ok"] and report["problems"] == [] and report["missing_services"] == []
    assert report["models"][0]["kind"] == "classifier"
    console = Console(file=io.StringIO(), width=200)
    out = Output()
    out.console = console
    render(report, out)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "mesh is up" in text and "mobilenet_v2" in text and "postprocess" in text


def test_a_missing_service_or_triton_down_is_a_problem_and_redis_down_a_warning() -> None:
    services = [s for s in _report()["services"] if s["service"] != "router"]
    report = judge(_report(services=services, redis={"url": "r", "ok": False, "error": "cannot reach Redis at r"}))
    assert not report["ok"] and report["missing_services"] == ["router"]
    assert any("router" in p for p in report["problems"])
    assert any("Redis" in w for w in report["warnings"])
    triton_down = judge(_report(triton={"http_url": "http://h:3", "grpc_url": "", "ready": False, "models": []}))
    assert triton_down["problems"] == ["Triton is not ready"]
    no_catalog = judge(_report(catalog=None))
    assert "no model catalog" in no_catalog["problems"][0]


def test_status_json_keys_are_stable() -> None:
    report = judge(_report())
    assert list(report) == [
        "ok",
        "problems",
        "warnings",
        "nats",
        "services",
        "redis",
        "triton",
        "missing_services",
        "models",
    ]


# ------------------------------------------------------------------------------------------------ models
MODEL = {
    "name": "mobilenet_v2",
    "versions": ["1"],
    "task": "classifier",
    "max_batch_size": 32,
    "inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [224, 224, 3]}],
    "outputs": [{"name": "LOGITS", "datatype": "FP32", "shape": [1000]}],
    "profile": {"type": "classifier", "output": "LOGITS", "labels": [f"label{i}" for i in range(1000)]},
    "problem": "",
    "some_new_field": 7,
}


def _rendered(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(renderable)
    return str(console.file.getvalue())  # type: ignore[attr-defined]


def test_models_table_and_details_show_generic_and_extra_fields() -> None:
    table = _rendered(models_table([MODEL, {**MODEL, "name": "broken", "problem": "bad label file"}]))
    assert "IMAGE UINT8 [224,224,3]" in table and "LOGITS FP32 [1000]" in table and "classifier" in table
    assert "cannot be served: bad label file" in table
    details = _rendered(model_details(MODEL))
    assert "some_new_field" in details and "profile.output" in details
    assert "1000 in all" in details, "long label lists are shortened for humans"
    assert shorten([1, 2, 3]) == "[1, 2, 3]"


# ------------------------------------------------------------------------------------------------ infer
def test_the_argument_is_an_image_file_or_text(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8jpeg")
    assert choose_payload(str(image), None, [], []).image == b"\xff\xd8jpeg"
    assert choose_payload("a sentence.", None, [], []).text == "a sentence."
    assert choose_payload(None, "explicit", [], []).text == "explicit"


def test_an_audio_file_is_sent_as_audio(tmp_path: Path) -> None:
    for name in ("talk.wav", "talk.FLAC", "talk.ogg"):
        (tmp_path / name).write_bytes(b"RIFF....WAVE")
        payload = choose_payload(str(tmp_path / name), None, [], [])
        assert payload.image is None and payload.audio_input() == AudioInput(data=b"RIFF....WAVE")
        assert payload.describe() == "audio (0 KB)"
    with pytest.raises(CliError, match="no such file"):
        choose_payload("missing.wav", None, [], [])


@pytest.mark.parametrize(
    ("source", "text", "message"),
    [
        ("missing.jpg", None, "no such file: missing.jpg"),
        (None, None, "exactly one input"),
        ("x", "y", "exactly one input"),
    ],
)
def test_bad_inputs_are_usage_errors(source: str | None, text: str | None, message: str) -> None:
    args = ["infer", "-m", "m", *([source] if source else []), *(["--text", text] if text else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr


def test_tensor_files_become_tensors(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1, 4), dtype=np.float32))
    payload = choose_payload(None, None, [path], ["DATA"])
    assert payload.tensors is not None
    (tensor,) = payload.tensors
    assert (tensor.name, tensor.datatype, tensor.shape, len(tensor.data)) == ("DATA", "FP32", (1, 4), 16)
    result = runner.invoke(app, ["infer", "-m", "m", "--tensor-file", str(path)])
    assert result.exit_code == EXIT_USAGE and "--input-name" in result.stderr


def test_every_error_code_has_its_exit_status() -> None:
    assert set(ERROR_EXIT_CODES) == set(ErrorCode)
    assert len(set(ERROR_EXIT_CODES.values())) == len(ErrorCode)
    assert all(code >= 10 for code in ERROR_EXIT_CODES.values())


def _captured(render_call: Any) -> str:
    out = Output()
    out.console = Console(file=io.StringIO(), width=200)
    render_call(out)
    return str(out.console.file.getvalue())


def test_replies_are_shown_nicely() -> None:
    classes = Classification(classes=(ClassScore(index=967, label="espresso", score=0.99),))
    reply = InferResponse(request_id="r1", model="mobilenet_v2", version="1", result=classes)
    text = _captured(lambda out: render_reply(reply, 12.5, out))
    assert "espresso" in text and "967" in text and "12.5 ms" in text and "r1" in text
    boxes = Detections(
        detections=(Detection(label="face", score=1.0, box=(1, 2, 3, 4)),), image_width=8, image_height=9
    )
    text = _captured(lambda out: render_reply(msgspec.structs.replace(reply, result=boxes), 1.0, out))
    assert "1 detection(s) in a 8x9 image" in text and "face" in text
    vector = Tensor(name="EMBEDDING", datatype="FP32", shape=(1, 3), data=np.array([0.6, 0.8, 0], np.float32).tobytes())
    text = _captured(lambda out: render_reply(msgspec.structs.replace(reply, result=Embedding(vector=vector)), 1, out))
    assert "3 dimensions" in text and "L2 norm 1.0000" in text
    error = ErrorReply(request_id="r2", code=ErrorCode.NOT_FOUND, message="unknown model 'x'")
    assert "error not_found: unknown model 'x'" in _captured(lambda out: render_reply(error, 1.0, out))


def test_reply_json_documents() -> None:
    classes = Classification(classes=(ClassScore(index=1, label="a", score=0.5),))
    reply = InferResponse(request_id="r1", model="m", version="1", result=classes, cached=True)
    document = reply_document(reply, 3.14159, "nats://h:1")
    assert document["ok"] and document["cached"] and document["latency_ms"] == 3.142
    assert document["result"] == {"type": "classification", "classes": [{"index": 1, "label": "a", "score": 0.5}]}
    error = reply_document(
        ErrorReply(request_id="r", code=ErrorCode.OVERLOADED, message="busy", retry_after_ms=50), 1, ""
    )
    assert error["error"] == {"code": "overloaded", "message": "busy", "retry_after_ms": 50} and not error["ok"]


# ------------------------------------------------------------------------------------------------ bench
def test_latency_summary_and_document() -> None:
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["p50"] == pytest.approx(50.5) and summary["p99"] == pytest.approx(99.01) and summary["max"] == 100
    assert latency_summary([]) == {"min": 0.0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    result = BenchResult(latencies_ms=[1.0, 2.0], succeeded=2, sent=3, duration_s=0.5)
    result.errors["timeout"] += 1
    document = result_document(result, nats_url="nats://h:1", model="m", input_text="text 'x'", concurrency=2)
    assert (
        document["throughput_rps"] == 4.0 and document["failed"] == 1 and document["errors_by_code"] == {"timeout": 1}
    )
    assert list(document) == [
        "ok",
        "nats_url",
        "model",
        "input",
        "concurrency",
        "requests",
        "succeeded",
        "failed",
        "cached",
        "errors_by_code",
        "duration_s",
        "throughput_rps",
        "latency_ms",
    ]


def test_bench_payloads(tmp_path: Path) -> None:
    assert default_payload("embedder", None, None, None)[0].text
    assert default_payload("", None, None, "hi")[0].text == "hi"
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    assert default_payload("classifier", image, None, None)[0].image == b"png"
    result = runner.invoke(app, ["bench", "--requests", "5", "--duration", "1"])
    assert result.exit_code == EXIT_USAGE and "not both" in result.stderr


# ------------------------------------------------------------------------------------------------ trace
def _span(name: str, span_id: str, parent: str = "", trace: str = "a" * 32, start: int = 0, **kw: Any) -> SpanRecord:
    base = 1_700_000_000_000_000_000
    return SpanRecord(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        service=kw.pop("service", "natriton-router"),
        start_ns=base + start * 1_000_000,
        end_ns=base + (start + kw.pop("ms", 1)) * 1_000_000,
        **kw,
    )


SPANS = [
    _span("ingest infer", "01", start=0, ms=50, service="natriton-ingest", attributes={"natriton.request_id": "req-1"}),
    _span("preprocess preprocess", "02", "01", start=2, ms=10, service="natriton-preprocess"),
    _span("router route", "03", "02", start=13, ms=30, attributes={"natriton.model.version": "1"}),
    _span("inference", "04", "03", start=14, ms=25),
    _span("postprocess postprocess", "05", "03", start=44, ms=3, service="natriton-postprocess"),
    _span("batch m:1", "b1", trace="b" * 32, start=15, ms=23, links=[{"trace_id": "a" * 32, "span_id": "03"}]),
    _span("other", "99", trace="c" * 32, attributes={"natriton.request_id": "req-2"}),
]


def test_a_request_id_finds_its_trace_and_the_tree_has_every_hop() -> None:
    assert find_trace_ids(SPANS, "req-1") == ["a" * 32]
    assert find_trace_ids(SPANS, "a" * 32) == ["a" * 32], "a trace id works too"
    assert find_trace_ids(SPANS, "nope") == []
    (root,) = build_tree(SPANS, "a" * 32)
    assert root.span.name == "ingest infer"
    (preprocess,) = root.children
    (route,) = preprocess.children
    assert [(c.span.name, c.linked) for c in route.children] == [
        ("inference", False),
        ("batch m:1", True),
        ("postprocess postprocess", False),
    ]
    assert [c.span.name for c in build_tree(SPANS, "a" * 32, with_links=False)[0].children[0].children[0].children] == [
        "inference",
        "postprocess postprocess",
    ]
    document = node_document(root, root.span.start_ns)
    assert document["duration_ms"] == 50.0 and document["children"][0]["offset_ms"] == 2.0
    text = _rendered(render_tree("a" * 32, [root]))
    assert "router route" in text and "30.00 ms" in text and "linked" in text and "model.version=1" in text


def test_trace_command_reads_a_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(json.dumps(s.as_dict()) for s in SPANS) + "\n{half a line")
    assert len(read_spans(path)) == len(SPANS)
    result = runner.invoke(app, ["trace", "req-1", "--trace-file", str(path), "--json", "--wait", "0"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (trace,) = document["traces"]
    assert trace["trace_id"] == "a" * 32 and trace["span_count"] == 5 and trace["duration_ms"] == 50.0
    assert trace["spans"][0]["name"] == "ingest infer"
    missing = runner.invoke(app, ["trace", "nope", "--trace-file", str(path), "--wait", "0"])
    assert missing.exit_code == 1 and "no span with natriton.request_id 'nope'" in missing.stderr


def test_trace_without_a_file_or_stack_is_a_usage_error() -> None:
    result = runner.invoke(app, ["trace", "req-1"])
    assert result.exit_code == EXIT_USAGE and "--trace-file" in result.stderr


JAEGER = {
    "data": [
        {
            "traceID": "a" * 32,
            "processes": {"p1": {"serviceName": "natriton-ingest"}, "p2": {"serviceName": "natriton-router"}},
            "spans": [
                {
                    "traceID": "a" * 32,
                    "spanID": "01",
                    "operationName": "ingest infer",
                    "references": [],
                    "startTime": 1_700_000_000_000_000,
                    "duration": 5000,
                    "tags": [{"key": "natriton.request_id", "type": "string", "value": "req-1"}],
                    "processID": "p1",
                },
                {
                    "traceID": "a" * 32,
                    "spanID": "02",
                    "operationName": "router route",
                    "references": [{"refType": "CHILD_OF", "traceID": "a" * 32, "spanID": "01"}],
                    "startTime": 1_700_000_000_001_000,
                    "duration": 3000,
                    "tags": [{"key": "otel.status_code", "type": "string", "value": "ERROR"}],
                    "processID": "p2",
                },
            ],
        }
    ]
}


def test_jaeger_answers_become_spans() -> None:
    spans = spans_from_jaeger(JAEGER)
    assert [(s.name, s.service, s.parent_span_id, s.duration_ms) for s in spans] == [
        ("ingest infer", "natriton-ingest", "", 5.0),
        ("router route", "natriton-router", "01", 3.0),
    ]
    assert spans[1].status == "error"


def test_trace_command_queries_jaeger() -> None:
    queries: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            queries.append(self.path)
            body = json.dumps(JAEGER).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = runner.invoke(app, ["trace", "req-1", "--jaeger-url", url, "--json"])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert "service=natriton-ingest" in queries[0] and "natriton.request_id" in queries[0]
    assert json.loads(result.stdout)["traces"][0]["spans"][0]["children"][0]["name"] == "router route"
    dead = runner.invoke(app, ["trace", "req-1", "--jaeger-url", f"http://127.0.0.1:{unused_port()}"])
    assert dead.exit_code == EXIT_UNREACHABLE and "cannot reach Jaeger" in dead.stderr


def test_the_recorder_writes_what_an_otel_exporter_sends(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    recorder = SpanFileRecorder(tmp_path / "traces.jsonl")
    recorder.start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "natriton-test"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=recorder.endpoint, insecure=True)))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("outer") as outer:
            outer.set_attribute("natriton.request_id", "req-9")
            outer.set_attribute("count", 3)
            with tracer.start_as_current_span("inner"):
                pass
        provider.shutdown()
    finally:
        recorder.stop()
    spans = {s.name: s for s in read_spans(recorder.path)}
    assert set(spans) == {"outer", "inner"}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert spans["outer"].attributes == {"natriton.request_id": "req-9", "count": 3}
    assert spans["outer"].service == "natriton-test" and spans["outer"].duration_ms > 0
    assert find_trace_ids(list(spans.values()), "req-9") == [spans["outer"].trace_id]


def test_records_from_an_otlp_request() -> None:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    span = trace_pb2.Span(
        trace_id=bytes.fromhex("ab" * 16),
        span_id=bytes.fromhex("cd" * 8),
        name="batch m:1",
        kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=1,
        end_time_unix_nano=2_000_001,
        attributes=[common_pb2.KeyValue(key="natriton.batch.size", value=common_pb2.AnyValue(int_value=4))],
        links=[trace_pb2.Span.Link(trace_id=bytes.fromhex("01" * 16), span_id=bytes.fromhex("02" * 8))],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
    )
    resource = resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="natriton-router"))]
    )
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )
    (record,) = records_from_request(request)
    assert (record.service, record.kind, record.status, record.status_message) == (
        "natriton-router",
        "internal",
        "error",
        "boom",
    )
    assert record.attributes == {"natriton.batch.size": 4} and record.duration_ms == 2.0
    assert record.links == [{"trace_id": "01" * 16, "span_id": "02" * 8}]
