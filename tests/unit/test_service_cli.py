"""The services' command line (natriton.service.run_service): --help, --version, --check-config, typos.

The console scripts run as real subprocesses pointed at a NATS port nobody listens on: a service that wrongly
starts instead of answering its command line hangs (reconnecting) or fails differently, and the timeout or the
exit status shows it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from natriton import service
from natriton.settings import CommonSettings
from natriton_ingest import VERSION as INGEST_VERSION
from natriton_ingest.settings import Settings as IngestSettings
from natriton_postprocess import VERSION as POSTPROCESS_VERSION
from natriton_postprocess.settings import Settings as PostprocessSettings
from natriton_preprocess import VERSION as PREPROCESS_VERSION
from natriton_preprocess.settings import Settings as PreprocessSettings
from natriton_router import VERSION as ROUTER_VERSION
from natriton_router.settings import Settings as RouterSettings

SERVICES: dict[str, tuple[type[CommonSettings], str]] = {
    "ingest": (IngestSettings, INGEST_VERSION),
    "preprocess": (PreprocessSettings, PREPROCESS_VERSION),
    "router": (RouterSettings, ROUTER_VERSION),
    "postprocess": (PostprocessSettings, POSTPROCESS_VERSION),
}
BIN = Path(sys.executable).parent
TIMEOUT_S = 30


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(svc: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``natriton-<svc>`` with a clean NATRITON_* environment plus ``env``."""
    script = BIN / f"natriton-{svc}"
    assert script.exists(), f"{script} missing: install the services into the venv (make venv)"
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("NATRITON_")}
    base["NATRITON_NATS_URL"] = f"nats://127.0.0.1:{unused_port()}"
    base["NATRITON_REDIS_URL"] = f"redis://127.0.0.1:{unused_port()}/0"
    return subprocess.run(
        [str(script), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


# ------------------------------------------------------------------------------------------------
# the four console scripts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("svc", list(SERVICES))
def test_help_lists_every_variable_and_exits_0(svc: str) -> None:
    settings_type, _ = SERVICES[svc]
    result = run(svc, "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"usage: natriton-{svc}")
    for option in ("--help", "--version", "--check-config"):
        assert option in out
    for field in msgspec.structs.fields(settings_type):
        assert f"NATRITON_{field.name.upper()}  (" in out, field.name
    assert "NATRITON_MAX_CONCURRENCY  (int, default: 256)" in out
    assert "Messages handled at once by one copy of the service." in out
    assert "ready" not in result.stderr and "starting" not in result.stderr


@pytest.mark.parametrize("svc", list(SERVICES))
def test_version_exits_0(svc: str) -> None:
    _, version = SERVICES[svc]
    result = run(svc, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"natriton-{svc} {version}"


@pytest.mark.parametrize("svc", list(SERVICES))
def test_unknown_argument_is_a_one_line_error_with_exit_2(svc: str) -> None:
    result = run(svc, "--bogus")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"natriton-{svc}: error: unrecognized arguments: --bogus (see natriton-{svc} --help)"
    ]


@pytest.mark.parametrize("svc", list(SERVICES))
def test_misspelled_variable_stops_the_service_with_exit_2(svc: str) -> None:
    # no arguments: without the check the service would start (and hang reconnecting to the unused port)
    result = run(svc, env={"NATRITON_MAX_CONCURENCY": "8"})
    assert result.returncode == 2, result.stderr
    assert "NATRITON_MAX_CONCURENCY" in result.stderr
    assert "did you mean NATRITON_MAX_CONCURRENCY?" in result.stderr
    assert "starting with settings" not in result.stderr + result.stdout


@pytest.mark.parametrize("svc", list(SERVICES))
def test_check_config_prints_masked_settings_and_warns_about_foreign_variables(svc: str) -> None:
    result = run(
        svc,
        "--check-config",
        env={
            "NATRITON_NATS_URL": "nats://operator:hunter2@127.0.0.1:1",
            "NATRITON_MAX_CONCURRENCY": "7",
            "NATRITON_SOMETHING_ELSE": "1",
        },
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "NATRITON_NATS_URL=nats://***@127.0.0.1:1" in lines
    assert "NATRITON_MAX_CONCURRENCY=7" in lines
    assert "hunter2" not in result.stdout + result.stderr
    settings_type, _ = SERVICES[svc]
    assert len([line for line in lines if line.startswith("NATRITON_")]) == len(settings_type.__struct_fields__)
    assert f"natriton-{svc}: warning: NATRITON_SOMETHING_ELSE is not a setting of natriton-{svc}" in result.stderr


def test_check_config_with_an_invalid_value_exits_2() -> None:
    result = run("router", "--check-config", env={"NATRITON_BATCHES_IN_FLIGHT": "0"})
    assert result.returncode == 2
    assert "batches_in_flight" in result.stderr
    assert result.stdout == ""


# ------------------------------------------------------------------------------------------------
# the same pieces in process (fast, no subprocess)
# ------------------------------------------------------------------------------------------------
async def _never_built(*_: object) -> service.App:
    raise AssertionError("the app must not be built")


def test_run_service_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        service.run_service("demo", "1.2.3", CommonSettings, _never_built, description="Demo.", argv=["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Demo." in out
    assert "NATRITON_DRAIN_TIMEOUT_S  (float, default: 15.0)" in out


def test_run_service_check_config_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("NATRITON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NATRITON_INSTANCE_ID", "copy-1")
    service.run_service("demo", "1.2.3", CommonSettings, _never_built, argv=["--check-config"])
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "# natriton-demo 1.2.3: settings are valid"
    assert "NATRITON_INSTANCE_ID=copy-1" in captured.out.splitlines()
    assert captured.err == ""


def test_typo_is_an_error_and_foreign_variable_a_warning_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATRITON_DRAIN_TIMEOUT", "3")
    monkeypatch.setenv("NATRITON_TRITON_GRPC_URL", "triton:8001")
    with pytest.raises(SystemExit) as exit_info:
        service.load_checked_settings("natriton-demo", CommonSettings)
    assert exit_info.value.code == service.EXIT_BAD_CONFIG
    err = capsys.readouterr().err.splitlines()
    assert (
        "natriton-demo: error: NATRITON_DRAIN_TIMEOUT is not a setting of natriton-demo; "
        "did you mean NATRITON_DRAIN_TIMEOUT_S? (refusing to run with the default)"
    ) in err
    assert any(line.startswith("natriton-demo: warning: NATRITON_TRITON_GRPC_URL") for line in err)


def test_environment_help_marks_undocumented_settings() -> None:
    class Bare(CommonSettings, frozen=True, kw_only=True):
        plain: int = 3

    text = service.environment_help(Bare)
    assert "  NATRITON_PLAIN  (int, default: 3)\n      (no description)" in text
