"""Typed settings from environment variables; the only place the environment is read.

Every service declares a frozen Struct of settings (subclassing :class:`CommonSettings`), loads it
once at start with :func:`load_settings` and fails fast with a clear message on a bad value.
Secrets (credentials in URLs, passwords, tokens) are masked by :func:`describe`, the only way
settings are ever logged.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import os
import re
import textwrap
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    """Redis holding the result cache (ingest reads it, postprocess writes it); may carry a password."""
    log_level: str = "INFO"
    """Python logging level: DEBUG, INFO, WARNING or ERROR."""
    log_format: str = "json"
    """Log lines as ``json`` (one object a line, with trace and request ids; for log collectors) or ``text``."""
    instance_id: str = ""
    """Unique name of this copy of the service; generated when empty."""
    max_concurrency: int = 256
    """Messages handled at once by one copy of the service."""
    drain_timeout_s: float = 15.0
    """On SIGTERM: how long to finish accepted work before closing."""
    metrics_port: int = 9464
    """TCP port of the HTTP server for ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``; 0 turns it off."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics/health HTTP server binds to."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.drain_timeout_s < 0:
            raise ValueError("drain_timeout_s must be >= 0")
        if self.log_format not in ("json", "text"):
            raise ValueError("log_format must be json or text")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be between 0 (off) and 65535")

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


@dataclass(frozen=True, slots=True)
class SettingHelp:
    """One setting as ``--help`` lists it."""

    variable: str
    """The environment variable, e.g. ``NATRITON_NATS_URL``."""
    type: str
    """The value's type (``str``, ``int``, ``float``, ``bool``)."""
    default: str
    """The default as text (secrets masked)."""
    doc: str
    """What it means: the field's attribute docstring, on one line ('' when the field has none)."""


def field_docs(settings_type: type[msgspec.Struct]) -> dict[str, str]:
    """Attribute docstrings of a settings Struct's fields (the string right below each field), base classes too.

    A subclass's docstring of a field overrides its base's. A class whose source cannot be read (no ``.py`` file)
    contributes nothing.
    """
    docs: dict[str, str] = {}
    for cls in reversed(settings_type.__mro__):
        if cls is msgspec.Struct or not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        if not tree.body or not isinstance(tree.body[0], ast.ClassDef):
            continue
        body = tree.body[0].body
        for statement, following in itertools.pairwise(body):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _default_text(name: str, field: msgspec.structs.FieldInfo) -> str:
    if field.default is not msgspec.NODEFAULT:
        value = field.default
    elif field.default_factory is not msgspec.NODEFAULT:
        value = field.default_factory()
    else:
        return "(required)"
    value = redact(name, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)


def settings_help(settings_type: type[CommonSettings]) -> list[SettingHelp]:
    """Every environment variable ``settings_type`` reads, with its type, default and meaning."""
    docs = field_docs(settings_type)
    return [
        SettingHelp(
            variable=PREFIX + field.name.upper(),
            type=_type_name(field.type),
            default=_default_text(field.name, field),
            doc=docs.get(field.name, ""),
        )
        for field in msgspec.structs.fields(settings_type)
    ]


TYPO_MAX_EDITS = 2
"""An unknown variable this close (in edits after ``NATRITON_``) to a setting is taken for a misspelling of it.

The settings of different services are further apart than this (a unit test keeps them so), so a variable meant
for another service (a shared environment) is never mistaken for a typo."""
SUGGEST_CUTOFF = 0.75
"""``difflib`` similarity above which an unknown variable gets a "did you mean" hint."""


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    """A ``NATRITON_*`` environment variable that is no setting of the service."""

    name: str
    """The variable as found in the environment."""
    suggestion: str
    """The closest setting of the service ('' when none is close)."""
    typo: bool
    """Whether it is almost certainly a misspelling of ``suggestion`` (the service must not start with defaults)."""

    def message(self, service: str) -> str:
        """One line for stderr."""
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{self.name} is not a setting of {service}{hint}"


def edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of adjacent characters that turn ``a`` into ``b``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def classify_variable(name: str, known: Iterable[str]) -> UnknownVariable:
    """How an unknown ``NATRITON_*`` name relates to the known variables (``NATRITON_`` + field, upper case)."""
    wanted = name.upper()[len(PREFIX) :]
    suffixes = {variable[len(PREFIX) :]: variable for variable in known}
    if not wanted or not suffixes:
        return UnknownVariable(name, "", typo=False)
    nearest = min(suffixes, key=lambda suffix: (edit_distance(wanted, suffix), suffix))
    if edit_distance(wanted, nearest) <= TYPO_MAX_EDITS:
        return UnknownVariable(name, suffixes[nearest], typo=True)
    close = difflib.get_close_matches(wanted, list(suffixes), n=1, cutoff=SUGGEST_CUTOFF)
    return UnknownVariable(name, suffixes[close[0]] if close else "", typo=False)


def unknown_variables(
    settings_type: type[CommonSettings], environ: Mapping[str, str] | None = None
) -> list[UnknownVariable]:
    """``NATRITON_*`` variables (any case) in the environment that ``settings_type`` does not read, sorted by name."""
    env = os.environ if environ is None else environ
    known = [PREFIX + field.name.upper() for field in msgspec.structs.fields(settings_type)]
    return [
        classify_variable(name, known) for name in sorted(env) if name.upper().startswith(PREFIX) and name not in known
    ]


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
