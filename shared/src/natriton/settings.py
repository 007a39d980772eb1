"""Typed settings from environment variables; the only place the environment is read.

Every service declares a frozen Struct of settings (subclassing :class:`CommonSettings`), loads it
once at start with :func:`load_settings` and fails fast with a clear message on a bad value.
Secrets (credentials in URLs, passwords, tokens) are masked by :func:`describe`, the only way
settings are ever logged.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

PREFIX = "NATRITON_"
_SECRET_NAME = re.compile(r"password|secret|token|creds|key", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^@/]+)@", re.IGNORECASE)


class SettingsError(ValueError):
    """The environment holds a value the service cannot run with."""


class CommonSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings every service has. Env var = ``NATRITON_`` + field name in upper case."""

    nats_url: str = "nats://127.0.0.1:4222"
    """Comma-separated NATS server URLs (a cluster); may carry ``user:password@``."""
    nats_creds_file: str = ""
    """Path to a NATS ``.creds`` file (JWT auth); empty for none."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "INFO"
    instance_id: str = ""
    """Unique name of this copy of the service; generated when empty."""
    max_concurrency: int = 256
    """Messages handled at once by one copy of the service."""
    drain_timeout_s: float = 15.0
    """On SIGTERM: how long to finish accepted work before closing."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.drain_timeout_s < 0:
            raise ValueError("drain_timeout_s must be >= 0")

    @property
    def nats_servers(self) -> list[str]:
        """The NATS URLs as a list."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]


S = TypeVar("S", bound=CommonSettings)


def load_settings(settings_type: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build ``settings_type`` from ``NATRITON_*`` variables; raise :class:`SettingsError` on bad values."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(settings_type):
        value = env.get(PREFIX + field.name.upper())
        if value is not None:
            raw[field.name] = value
    try:
        settings = msgspec.convert(raw, settings_type, strict=False)
    except msgspec.ValidationError as exc:
        message = re.sub(r"`\$\.(\w+)`", lambda m: f"{PREFIX}{m.group(1).upper()} ({m.group(1)})", str(exc))
        raise SettingsError(f"invalid {settings_type.__name__} from environment: {message}") from exc
    if not settings.instance_id:
        settings = msgspec.structs.replace(settings, instance_id=uuid.uuid4().hex[:12])
    return settings


def redact(name: str, value: Any) -> Any:
    """Mask a value if its name says it is secret, and credentials embedded in URLs."""
    if isinstance(value, str):
        if value and _SECRET_NAME.search(name) and not name.endswith("_file"):
            return "***"
        return _URL_USERINFO.sub(r"\g<scheme>***@", value)
    return value


def describe(settings: msgspec.Struct) -> dict[str, Any]:
    """Settings as a dict safe to log."""
    return {f: redact(f, getattr(settings, f)) for f in settings.__struct_fields__}


def env_flag(name: str, default: bool = False) -> bool:
    """Read a boolean environment flag (``1``, ``true``, ``yes``) outside any settings Struct."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def otel_sampler_configured() -> bool:
    """Whether the operator chose a sampler with the standard ``OTEL_TRACES_SAMPLER`` variable."""
    return bool(os.environ.get("OTEL_TRACES_SAMPLER"))


def otlp_traces_endpoint() -> str:
    """The OTLP endpoint from the standard ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` variables, or ''."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
