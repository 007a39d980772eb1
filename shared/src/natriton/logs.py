"""Logging set-up shared by the services: one line per event, ``key=value`` style, to stderr."""

from __future__ import annotations

import logging
import sys


def configure_logging(service: str, level: str = "INFO") -> logging.Logger:
    """Configure the root logger once and return the service's logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("nats", "opentelemetry", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(f"natriton.{service}")
