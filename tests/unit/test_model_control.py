"""Model hot reload, the pure parts: the control request, Triton's answers as typed errors, version states, and
the ``natriton models`` command group (the listing stays the default)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ModelControl, VersionState
from natriton_dev.cli import app
from natriton_dev.cli.common import EXIT_UNREACHABLE
from natriton_router.control import control_error, decode_control, outcome_message, settled, version_states

runner = CliRunner()


def test_requests_decode_from_msgpack_and_json() -> None:
    request = ModelControl(action="unload", model="noop")
    codec: Codec[ModelControl] = Codec(ModelControl)
    assert decode_control(codec.encode(request)) == (request, False)
    raw = b'{"type": "model_control", "action": "load", "model": "mobilenet_v2"}'
    assert decode_control(raw) == (ModelControl(action="load", model="mobilenet_v2"), True)


@pytest.mark.parametrize(
    "data",
    [
        b'{"type": "model_control", "action": "delete", "model": "noop"}',
        b'{"type": "model_control", "action": "load"}',
        b'{"type": "infer_request", "model": "noop"}',
        b'{"type": "model_control", "action": "load", "model": "../etc"}',
        b'{"type": "model_control", "action": "load", "model": ""}',
        b'{"type": "model_control", "action": "load", "model": ".."}',
        b"\xc1",
        b'{"type": "model_control", "action": "load", "model": "noop", "junk": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ],
    ids=lambda data: data[:40].decode("latin-1"),
)
def test_bad_requests_are_invalid_argument(data: bytes) -> None:
    with pytest.raises(MeshError) as caught:
        decode_control(data)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT


def test_triton_not_in_explicit_mode_says_how_to_fix_it() -> None:
    message = "explicit model load / unload is not allowed if polling is enabled"
    error = control_error("load", "noop", "StatusCode.UNAVAILABLE", message)
    assert error.code == ErrorCode.UNAVAILABLE and error.retry_after_ms is None
    assert "--model-control-mode=explicit" in error.message and "'noop'" in error.message


def test_triton_errors_become_typed_errors() -> None:
    missing = control_error(
        "load", "x", "StatusCode.INVALID_ARGUMENT", "failed to load 'x': model not found in any model repository."
    )
    assert missing.code == ErrorCode.NOT_FOUND
    busy = control_error(
        "unload",
        "x",
        "StatusCode.INTERNAL",
        "a related model 'x' to a load/unload request is currently loading or unloading",
    )
    assert busy.code == ErrorCode.UNAVAILABLE and busy.retry_after_ms
    broken = control_error("load", "x", "StatusCode.INVALID_ARGUMENT", "failed to load 'x', no version is available")
    assert broken.code == ErrorCode.INVALID_ARGUMENT and broken.message.startswith("Triton could not load 'x'")
    unknown = control_error("load", "x", "", "boom")
    assert unknown.code == ErrorCode.INTERNAL and "boom" in unknown.message


def test_version_states_of_one_model_in_version_order() -> None:
    index = [
        {"name": "m", "version": "10", "state": "READY"},
        {"name": "other", "version": "1", "state": "READY"},
        {"name": "m", "version": "2", "state": "UNAVAILABLE", "reason": "unloaded"},
        {"name": "m", "version": "1", "state": "READY"},
    ]
    states = version_states(index, "m")
    assert [s.version for s in states] == ["1", "2", "10"]
    assert states[1] == VersionState(version="2", state="UNAVAILABLE", reason="unloaded")
    assert version_states(index, "nope") == ()


def test_settled_waits_for_an_unload_to_finish() -> None:
    ready = VersionState(version="1", state="READY")
    gone = VersionState(version="1", state="UNAVAILABLE", reason="unloaded")
    unloading = VersionState(version="1", state="UNLOADING")
    assert settled([ready], "load") and not settled([ready], "unload")
    assert settled([gone], "unload") and not settled([unloading], "unload")
    assert not settled([VersionState(version="1", state="LOADING")], "load")


def test_outcome_messages() -> None:
    assert outcome_message("load", "m", ("1", "2")) == "m loaded: versions 1, 2 ready"
    assert outcome_message("load", "m", ()) == "m loaded but no version is ready"
    assert outcome_message("unload", "m", ()) == "m unloaded"


@pytest.mark.parametrize(
    "args",
    [
        ["models"],
        ["models", "--json"],
        ["models", "mobilenet_v2"],
        ["models", "--json", "mobilenet_v2"],
        ["models", "show", "load"],
        ["models", "load", "noop"],
        ["models", "unload", "noop", "--json"],
    ],
)
def test_listing_stays_the_default_and_load_unload_are_subcommands(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--nats-url", "nats://127.0.0.1:1", "--connect-timeout", "0.5"])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "cannot reach NATS" in result.stderr
    if "--json" in args:
        assert json.loads(result.stdout)["ok"] is False


def test_models_help_lists_load_and_unload() -> None:
    result = runner.invoke(app, ["models", "--help"])
    assert result.exit_code == 0
    assert "load" in result.stdout and "unload" in result.stdout and "show" in result.stdout
    assert runner.invoke(app, ["models", "load"]).exit_code == 2, "NAME is required"
