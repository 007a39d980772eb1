"""Logging set-up shared by the services: one line per event to stderr, JSON by default.

A JSON line carries ``timestamp`` (UTC, ISO 8601), ``level``, ``service``, ``instance``, ``logger`` and
``message``; while a request is being handled also ``trace_id`` and ``span_id`` (the current span) and
``request_id`` / ``mesh_id`` (bound by the runtime around each handler, see :func:`bind_request`); ``exception``
with the traceback when there is one. ``NATRITON_LOG_FORMAT=text`` gives the older one-line ``key=value`` style,
with the same ids appended. Nothing here logs settings: callers log them through ``settings.describe`` (redacted).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar, Token
from typing import Final, Literal

from natriton.telemetry import current_ids

LogFormat = Literal["json", "text"]
LOG_FORMATS: Final = ("json", "text")

_REQUEST: ContextVar[tuple[str, str]] = ContextVar("natriton_request", default=("", ""))
"""(request id, mesh id) of the request the current task handles."""


def bind_request(request_id: str, mesh_id: str) -> Token[tuple[str, str]]:
    """Name the request being handled in this task's log lines until :func:`unbind_request`."""
    return _REQUEST.set((request_id, mesh_id))


def unbind_request(token: Token[tuple[str, str]]) -> None:
    """Undo :func:`bind_request`."""
    _REQUEST.reset(token)


class RequestContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``request_id`` and ``mesh_id`` to every record ('' when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id, record.span_id = current_ids()
        record.request_id, record.mesh_id = _REQUEST.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the request's ids only when they are known."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, object] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id", "request_id", "mesh_id"):
            value = getattr(record, key, "")
            if value:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level service logger: message`` with the request's ids appended as ``key=value``."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(
            f"{key}={value}"
            for key in ("trace_id", "span_id", "request_id", "mesh_id")
            if (value := getattr(record, key, ""))
        )
        return f"{text} {ids}" if ids else text


def make_formatter(service: str, instance: str, log_format: str) -> logging.Formatter:
    """The formatter for ``log_format`` (``json`` or ``text``)."""
    if log_format == "text":
        return TextFormatter(service)
    if log_format == "json":
        return JsonFormatter(service, instance)
    raise ValueError(f"log format {log_format!r} must be one of {', '.join(LOG_FORMATS)}")


def configure_logging(
    service: str, level: str = "INFO", log_format: str = "json", instance: str = ""
) -> logging.Logger:
    """Configure the root logger once and return the service's logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(service, instance, log_format))
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("nats", "opentelemetry", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(f"natriton.{service}")
