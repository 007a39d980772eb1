"""Log lines: JSON by default, with trace and request ids while a request is handled, and none outside."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from natriton.logs import (
    JsonFormatter,
    RequestContextFilter,
    TextFormatter,
    bind_request,
    configure_logging,
    make_formatter,
    unbind_request,
)
from natriton.settings import CommonSettings, SettingsError, describe, load_settings


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("demo", "copy-1"))
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger("natriton.test_logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers[:] = []


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_outside_a_request_is_valid_json_without_ids(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info('started with %d workers, "quoted" and ünïcode', 4)
    (line,) = lines(stream)
    assert line["level"] == "INFO" and line["service"] == "demo" and line["instance"] == "copy-1"
    assert line["message"] == 'started with 4 workers, "quoted" and ünïcode'
    assert line["logger"] == "natriton.test_logs"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]
    assert not {"trace_id", "span_id", "request_id", "mesh_id"} & set(line)


def test_a_line_inside_a_span_and_a_request_carries_the_ids(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("hop") as span:
        token = bind_request("order-42", "m-1")
        try:
            logger.warning("slow")
        finally:
            unbind_request(token)
        logger.info("after the handler")
    logger.info("outside")
    inside, after, outside = lines(stream)
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}" and inside["span_id"] == f"{context.span_id:016x}"
    assert (inside["request_id"], inside["mesh_id"]) == ("order-42", "m-1")
    assert after["trace_id"] == inside["trace_id"] and "request_id" not in after
    assert not {"trace_id", "span_id", "request_id", "mesh_id"} & set(outside)


def test_an_exception_stays_on_one_json_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("handler failed")
    assert len(stream.getvalue().splitlines()) == 1
    (line,) = lines(stream)
    assert line["level"] == "ERROR" and "RuntimeError: boom" in line["exception"]


def test_text_format_appends_the_ids() -> None:
    record = logging.LogRecord("natriton.x", logging.INFO, __file__, 1, "hello", None, None)
    RequestContextFilter().filter(record)
    assert TextFormatter("demo").format(record).endswith("demo natriton.x: hello")
    token = bind_request("r-1", "")
    try:
        RequestContextFilter().filter(record)
    finally:
        unbind_request(token)
    assert TextFormatter("demo").format(record).endswith("hello request_id=r-1")


def test_the_format_is_a_setting_json_by_default() -> None:
    assert CommonSettings().log_format == "json"
    assert load_settings(CommonSettings, {"NATRITON_LOG_FORMAT": "text"}).log_format == "text"
    with pytest.raises(SettingsError):
        load_settings(CommonSettings, {"NATRITON_LOG_FORMAT": "xml"})
    assert isinstance(make_formatter("demo", "c", "json"), JsonFormatter)
    assert isinstance(make_formatter("demo", "c", "text"), TextFormatter)
    with pytest.raises(ValueError):
        make_formatter("demo", "c", "xml")


def test_configure_logging_writes_json_and_the_settings_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        log = configure_logging("demo", "INFO", "json", "copy-1")
        settings = CommonSettings(nats_url="nats://user:s3cret@127.0.0.1:4222", instance_id="copy-1")
        log.info("starting with settings %s", describe(settings))
        (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert line["service"] == "demo" and line["instance"] == "copy-1"
    assert "s3cret" not in line["message"] and "***@" in line["message"]
