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
import ssl
import textwrap
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import msgspec

PREFIX = "NATRITON_"
_SECRET_NAME = re.compile(r"password|secret|token|creds|key", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^@/]+)@", re.IGNORECASE)
_URL_SECRET_QUERY = re.compile(r"(?<=[?&])(?P<name>password|pass|token|secret|auth)=[^&#\s]*", re.IGNORECASE)


class SettingsError(ValueError):
    """The environment holds a value the service cannot run with."""


class CommonSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings every service has. Env var = ``NATRITON_`` + field name in upper case."""

    nats_url: str = "nats://127.0.0.1:4222"
    """Comma-separated NATS server URLs (a cluster); may carry ``user:password@``."""
    nats_creds_file: str = ""
    """Path to a NATS ``.creds`` file (JWT auth); empty for none."""
    nats_nkey_seed_file: str = ""
    """Path to a file holding this service's NKey user seed (``SU...``; see docs/operations.md, Security); empty
    for none."""
    nats_tls_ca_file: str = ""
    """CA certificate(s) (PEM) that verify the NATS server's certificate (else the system's CAs). nats-py speaks TLS
    when the server demands it (a server with a ``tls {}`` block always does)."""
    nats_tls_cert_file: str = ""
    """Client certificate (PEM) for mutual TLS with NATS (with ``nats_tls_key_file``); empty for none."""
    nats_tls_key_file: str = ""
    """Private key (PEM) of ``nats_tls_cert_file``."""
    nats_inbox_prefix: str = "_INBOX"
    """Prefix of this service's reply inboxes; the locked-down config allows each role only ``_INBOX.<role>.>``."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the result cache (ingest reads it; postprocess, or the router for the models it answers
    itself, writes it); may carry a password; ``rediss://`` for TLS. ``user@`` names the ACL user."""
    cache_ttl_s: int = 3600
    """Lifetime of cached answers in seconds (a model's ``natriton.cache_ttl_s`` overrides it); read by the
    services that write answers: postprocess and the router."""
    redis_password_file: str = ""
    """File holding the Redis password (of the URL's ACL user, else of ``default``); it replaces a password in the
    URL. Empty for none."""
    redis_tls_ca_file: str = ""
    """CA certificate(s) (PEM) that signed Redis's certificate (needs a ``rediss://`` URL); empty: the system's."""
    redis_tls_cert_file: str = ""
    """Client certificate (PEM) for Redis's ``tls-auth-clients`` (with ``redis_tls_key_file``); empty for none."""
    redis_tls_key_file: str = ""
    """Private key (PEM) of ``redis_tls_cert_file``."""
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
    nats_read_buffer_bytes: int = 512 * 1024
    """Bytes read from the NATS socket at once (nats-py's own default is 32 KiB: a 150 KB tensor took five reads and
    five parser passes; one read costs a third less CPU per message, decision 0008)."""
    heartbeat_interval_s: float = 0.25
    """How often this copy says it is alive (``natriton.v1.internal.heartbeat.<service>``; ingest's are public)."""
    heartbeat_dead_after_s: float = 2.0
    """Silence after which the watchers count this copy dead and re-send what it held."""
    handoff: str = "auto"
    """``auto``: hand large tensors between copies that share ``/dev/shm`` through shared memory instead of NATS
    (ingest and preprocess → router, decision 0011); ``off``: always over NATS (a copy with it off tells the others
    so)."""
    handoff_min_bytes: int = 64 * 1024
    """Senders (ingest, preprocess): tensors of at least this many bytes go to the router through shared memory when
    every router copy shares this copy's ``/dev/shm``; smaller ones travel inline."""
    handoff_max_bytes: int = 64 * 1024**2
    """Senders: the most shared memory this copy's hand-off slots take; a tensor that finds no room goes inline."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.drain_timeout_s < 0:
            raise ValueError("drain_timeout_s must be >= 0")
        if self.nats_read_buffer_bytes < 4096:
            raise ValueError("nats_read_buffer_bytes must be >= 4096")
        if self.log_format not in ("json", "text"):
            raise ValueError("log_format must be json or text")
        if self.cache_ttl_s < 1:
            raise ValueError("cache_ttl_s must be >= 1")
        if self.handoff not in ("auto", "off"):
            raise ValueError("handoff must be auto or off")
        if self.handoff_min_bytes < 0 or self.handoff_max_bytes < 0:
            raise ValueError("handoff_min_bytes and handoff_max_bytes must be >= 0")
        check_tls_files("nats", self.nats_tls_cert_file, self.nats_tls_key_file)
        check_tls_files("redis", self.redis_tls_cert_file, self.redis_tls_key_file)
        redis_tls = self.redis_tls_ca_file or self.redis_tls_cert_file
        if redis_tls and not self.redis_url.startswith("rediss://"):
            raise ValueError("redis_tls_* files need a rediss:// redis_url (TLS)")
        if not self.nats_inbox_prefix or not all(self.nats_inbox_prefix.split(".")) or " " in self.nats_inbox_prefix:
            raise ValueError("nats_inbox_prefix must be a subject without empty tokens or spaces")
        if not 0 < self.heartbeat_interval_s < self.heartbeat_dead_after_s:
            raise ValueError("heartbeat_interval_s must be > 0 and below heartbeat_dead_after_s")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be between 0 (off) and 65535")

    @property
    def nats_servers(self) -> list[str]:
        """The NATS URLs as a list."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def nats_options(self) -> dict[str, Any]:
        """Authentication, TLS and inbox options for ``nats.connect`` (the seed and creds files are read by nats-py
        at connect time, so nothing secret is held here)."""
        options: dict[str, Any] = {}
        if self.nats_creds_file:
            options["user_credentials"] = self.nats_creds_file
        if self.nats_nkey_seed_file:
            options["nkeys_seed"] = self.nats_nkey_seed_file
        context = tls_context(self.nats_tls_ca_file, self.nats_tls_cert_file, self.nats_tls_key_file)
        if context is not None:
            options["tls"] = context
        if self.nats_inbox_prefix != "_INBOX":
            options["inbox_prefix"] = self.nats_inbox_prefix
        return options


def check_tls_files(what: str, cert_file: str, key_file: str) -> None:
    """A client certificate needs its key and a key its certificate."""
    if bool(cert_file) != bool(key_file):
        raise ValueError(f"{what}_tls_cert_file and {what}_tls_key_file go together")


def tls_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext | None:
    """A client TLS context that verifies the server against ``ca_file`` (else the system's CAs) and presents
    ``cert_file``/``key_file`` when given; None when all three are empty (no TLS asked for)."""
    if not (ca_file or cert_file):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def read_secret(path: str) -> str:
    """A secret from a file (one line; surrounding whitespace and the newline dropped). Raises ``SettingsError``
    naming the file, never showing what it holds."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read secret file {path}: {type(exc).__name__}") from exc


def redis_connection_url(settings: CommonSettings) -> str:
    """``settings.redis_url`` with the password from ``redis_password_file`` and the TLS files as the query
    parameters redis-py reads (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``): the one URL every Redis
    client of the service is made from."""
    url = settings.redis_url
    if settings.redis_password_file:
        password = quote(read_secret(settings.redis_password_file), safe="")
        parts = urlsplit(url)
        user = quote(unquote(parts.username), safe="") if parts.username else ""
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
    query = [
        (name, value)
        for name, value in (
            ("ssl_ca_certs", settings.redis_tls_ca_file),
            ("ssl_certfile", settings.redis_tls_cert_file),
            ("ssl_keyfile", settings.redis_tls_key_file),
        )
        if value
    ]
    if query:
        url += ("&" if "?" in url else "?") + urlencode(query)
    return url


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
    redis_url = redis_connection_url(settings)
    if redis_url != settings.redis_url:
        settings = msgspec.structs.replace(settings, redis_url=redis_url)
    return settings


def redact(name: str, value: Any) -> Any:
    """Mask a value if its name says it is secret, and credentials embedded in URLs (``user:password@`` or a token
    before ``@``, and ``password=`` / ``token=`` query parameters)."""
    if isinstance(value, str):
        if value and _SECRET_NAME.search(name) and not name.endswith("_file"):
            return "***"
        return _URL_SECRET_QUERY.sub(r"\g<name>=***", _URL_USERINFO.sub(r"\g<scheme>***@", value))
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
