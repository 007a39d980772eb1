"""Environment parsing and safe logging of settings (natriton.settings + the services' Settings)."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import pytest

from natriton.settings import (
    TYPO_MAX_EDITS,
    CommonSettings,
    SettingsError,
    UnknownVariable,
    classify_variable,
    describe,
    edit_distance,
    field_docs,
    load_settings,
    redact,
    settings_help,
    unknown_variables,
)
from natriton_ingest.settings import Settings as IngestSettings
from natriton_postprocess.settings import Settings as PostprocessSettings
from natriton_preprocess.settings import Settings as PreprocessSettings
from natriton_router.settings import GrpcTls
from natriton_router.settings import Settings as RouterSettings

SERVICE_SETTINGS: dict[str, type[CommonSettings]] = {
    "ingest": IngestSettings,
    "preprocess": PreprocessSettings,
    "router": RouterSettings,
    "postprocess": PostprocessSettings,
}


class SecretSettings(CommonSettings, frozen=True, kw_only=True):
    """A service with secret-looking fields, to check describe()."""

    redis_password: str = ""
    api_token: str = ""
    signing_key: str = ""
    client_secret: str = ""
    tls_key_file: str = ""
    batch_size: int = 8


# ------------------------------------------------------------------------------------------------
# CommonSettings
# ------------------------------------------------------------------------------------------------
def test_common_defaults_from_empty_environment() -> None:
    s = load_settings(CommonSettings, environ={})
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.nats_creds_file == ""
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.log_level == "INFO"
    assert s.max_concurrency == 256
    assert s.drain_timeout_s == 15.0
    assert s.nats_servers == ["nats://127.0.0.1:4222"]


def test_common_values_are_converted_from_strings() -> None:
    s = load_settings(
        CommonSettings,
        environ={
            "NATRITON_NATS_URL": "nats://a:4222, nats://b:4222 ,",
            "NATRITON_LOG_LEVEL": "DEBUG",
            "NATRITON_MAX_CONCURRENCY": "12",
            "NATRITON_DRAIN_TIMEOUT_S": "2.5",
            "NATRITON_INSTANCE_ID": "ingest-7",
        },
    )
    assert s.max_concurrency == 12
    assert type(s.max_concurrency) is int
    assert s.drain_timeout_s == 2.5
    assert type(s.drain_timeout_s) is float
    assert s.log_level == "DEBUG"
    assert s.instance_id == "ingest-7"
    assert s.nats_servers == ["nats://a:4222", "nats://b:4222"]


def test_unrelated_and_unprefixed_variables_are_ignored() -> None:
    s = load_settings(
        CommonSettings, environ={"MAX_CONCURRENCY": "3", "NATRITON_UNKNOWN": "x", "natriton_log_level": "x"}
    )
    assert s.max_concurrency == 256
    assert s.log_level == "INFO"


@pytest.mark.parametrize("given", [None, ""])
def test_instance_id_generated_when_missing_or_empty(given: str | None) -> None:
    env = {} if given is None else {"NATRITON_INSTANCE_ID": given}
    a = load_settings(CommonSettings, environ=env)
    b = load_settings(CommonSettings, environ=env)
    assert re.fullmatch(r"[0-9a-f]{12}", a.instance_id)
    assert a.instance_id != b.instance_id


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("NATRITON_MAX_CONCURRENCY", "many", "max_concurrency"),
        ("NATRITON_MAX_CONCURRENCY", "0", "max_concurrency"),
        ("NATRITON_MAX_CONCURRENCY", "", "max_concurrency"),
        ("NATRITON_DRAIN_TIMEOUT_S", "soon", "drain_timeout_s"),
        ("NATRITON_DRAIN_TIMEOUT_S", "-1", "drain_timeout_s"),
    ],
)
def test_common_bad_values_raise_settings_error_naming_the_setting(variable: str, value: str, field: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(CommonSettings, environ={variable: value})
    assert isinstance(info.value, ValueError)  # callers may catch ValueError
    assert field in str(info.value)
    assert "CommonSettings" in str(info.value)


def test_bad_value_error_names_the_environment_variable() -> None:
    with pytest.raises(SettingsError, match="NATRITON_MAX_CONCURRENCY"):
        load_settings(CommonSettings, environ={"NATRITON_MAX_CONCURRENCY": "many"})


def test_settings_are_frozen() -> None:
    s = load_settings(CommonSettings, environ={})
    with pytest.raises(AttributeError):
        s.max_concurrency = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# Ingest
# ------------------------------------------------------------------------------------------------
def test_ingest_defaults() -> None:
    s = load_settings(IngestSettings, environ={})
    assert s.max_payload_bytes == 4 * 1024 * 1024
    assert s.default_timeout_ms == 10_000
    assert s.max_timeout_ms == 120_000
    assert s.max_top_k == 100
    assert s.max_concurrency == 256  # inherited


def test_ingest_values_from_environment() -> None:
    s = load_settings(
        IngestSettings,
        environ={
            "NATRITON_MAX_PAYLOAD_BYTES": "1024",
            "NATRITON_DEFAULT_TIMEOUT_MS": "500",
            "NATRITON_MAX_TIMEOUT_MS": "500",
            "NATRITON_MAX_TOP_K": "10",
            "NATRITON_MAX_CONCURRENCY": "4",
        },
    )
    assert (s.max_payload_bytes, s.default_timeout_ms, s.max_timeout_ms, s.max_top_k) == (1024, 500, 500, 10)
    assert s.max_concurrency == 4


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"NATRITON_DEFAULT_TIMEOUT_MS": "200000"}, "default_timeout_ms"),  # above max_timeout_ms
        ({"NATRITON_DEFAULT_TIMEOUT_MS": "0"}, "default_timeout_ms"),
        ({"NATRITON_MAX_TIMEOUT_MS": "5", "NATRITON_DEFAULT_TIMEOUT_MS": "6"}, "max_timeout_ms"),
        ({"NATRITON_MAX_PAYLOAD_BYTES": "0"}, "max_payload_bytes"),
        ({"NATRITON_MAX_PAYLOAD_BYTES": "4MB"}, "max_payload_bytes"),
        ({"NATRITON_MAX_TOP_K": "ten"}, "max_top_k"),
        ({"NATRITON_MAX_CONCURRENCY": "-3"}, "max_concurrency"),  # base-class check still runs
    ],
)
def test_ingest_bad_values(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(SettingsError, match=mentions):
        load_settings(IngestSettings, environ=env)


# ------------------------------------------------------------------------------------------------
# Router
# ------------------------------------------------------------------------------------------------
def test_router_defaults() -> None:
    s = load_settings(RouterSettings, environ={})
    assert s.triton_grpc_url == "127.0.0.1:8001"
    assert s.triton_ready_timeout_s == 120.0
    assert s.triton_timeout_s == 30.0
    assert s.catalog_refresh_s == 30.0
    assert s.batch_max_wait_ms == 0.0
    assert s.batches_in_flight == 2


def test_router_values_from_environment() -> None:
    s = load_settings(
        RouterSettings,
        environ={
            "NATRITON_TRITON_GRPC_URL": "triton:8001",
            "NATRITON_TRITON_TIMEOUT_S": "7",
            "NATRITON_BATCH_MAX_WAIT_MS": "0.5",
            "NATRITON_BATCHES_IN_FLIGHT": "3",
            "NATRITON_CATALOG_REFRESH_S": "1e1",
        },
    )
    assert s.triton_grpc_url == "triton:8001"
    assert s.triton_timeout_s == 7.0
    assert type(s.triton_timeout_s) is float
    assert s.batch_max_wait_ms == 0.5
    assert s.batches_in_flight == 3
    assert s.catalog_refresh_s == 10.0


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"NATRITON_BATCHES_IN_FLIGHT": "0"}, "batches_in_flight"),
        ({"NATRITON_BATCHES_IN_FLIGHT": "two"}, "batches_in_flight"),
        ({"NATRITON_BATCH_MAX_WAIT_MS": "-0.1"}, "batch_max_wait_ms"),
        ({"NATRITON_TRITON_TIMEOUT_S": "forever"}, "triton_timeout_s"),
    ],
)
def test_router_bad_values(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(SettingsError, match=mentions):
        load_settings(RouterSettings, environ=env)


def test_ingest_only_variables_do_not_leak_into_router() -> None:
    # A variable valid for one service is ignored by another (no unknown-field failure).
    s = load_settings(RouterSettings, environ={"NATRITON_MAX_TOP_K": "not-an-int"})
    assert not hasattr(s, "max_top_k")


# ------------------------------------------------------------------------------------------------
# describe() / redact()
# ------------------------------------------------------------------------------------------------
def test_describe_masks_credentials_in_urls() -> None:
    s = load_settings(
        CommonSettings,
        environ={
            "NATRITON_NATS_URL": "nats://user:pass@host:4222",
            "NATRITON_REDIS_URL": "redis://:s3cret@cache:6379/0",
            "NATRITON_INSTANCE_ID": "x",
        },
    )
    d = describe(s)
    assert d["nats_url"] == "nats://***@host:4222"
    assert d["redis_url"] == "redis://***@cache:6379/0"
    assert ":pass@" not in repr(d)  # (field names such as redis_password_file do say "pass")
    assert "s3cret" not in repr(d)
    # the settings themselves are untouched
    assert s.nats_url == "nats://user:pass@host:4222"


def test_describe_masks_every_url_of_a_cluster() -> None:
    s = load_settings(
        CommonSettings,
        environ={"NATRITON_NATS_URL": "nats://a:pw1@h1:4222,nats://h2:4222,tls://b:pw2@h3:4222"},
    )
    assert describe(s)["nats_url"] == "nats://***@h1:4222,nats://h2:4222,tls://***@h3:4222"


def test_describe_lists_every_field_and_keeps_non_secrets() -> None:
    s = load_settings(
        SecretSettings,
        environ={
            "NATRITON_REDIS_PASSWORD": "hunter2",
            "NATRITON_API_TOKEN": "tok",
            "NATRITON_SIGNING_KEY": "k",
            "NATRITON_CLIENT_SECRET": "sss",
            "NATRITON_TLS_KEY_FILE": "/etc/tls/key.pem",
            "NATRITON_NATS_CREDS_FILE": "/etc/nats/user.creds",
            "NATRITON_INSTANCE_ID": "svc-1",
            "NATRITON_BATCH_SIZE": "16",
        },
    )
    d = describe(s)
    assert set(d) == set(msgspec.structs.asdict(s))
    assert d["redis_password"] == "***"
    assert d["api_token"] == "***"
    assert d["signing_key"] == "***"
    assert d["client_secret"] == "***"
    # paths to secret files are not secrets themselves
    assert d["tls_key_file"] == "/etc/tls/key.pem"
    assert d["nats_creds_file"] == "/etc/nats/user.creds"
    assert d["instance_id"] == "svc-1"
    assert d["batch_size"] == 16
    assert d["log_level"] == "INFO"


def test_empty_secret_is_not_masked() -> None:
    # an unset secret shows as empty so the operator can see it is missing
    d = describe(load_settings(SecretSettings, environ={}))
    assert d["redis_password"] == ""


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("nats_url", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("redis_url", "rediss://admin:p4ss@redis.example:6380/2", "rediss://***@redis.example:6380/2"),
        ("endpoint", "http://u@host/path", "http://***@host/path"),
        ("DB_PASSWORD", "x", "***"),
        ("Token", "x", "***"),
        ("max_concurrency", 5, 5),
    ],
)
def test_redact(name: str, value: object, expected: object) -> None:
    assert redact(name, value) == expected


# ------------------------------------------------------------------------------------------------
# --help material: field_docs() / settings_help()
# ------------------------------------------------------------------------------------------------
class DocumentedSettings(CommonSettings, frozen=True, kw_only=True):
    """A service whose fields document themselves (and one that does not)."""

    batch_size: int = 8
    """How many at once.

    Spread over two paragraphs."""
    api_token: str = "tok-default"
    """A secret with a default (the default must not show in --help)."""
    enabled: bool = True
    undocumented: float = 1.5
    log_level: str = "WARNING"
    """Overridden here: the subclass's docstring wins."""


def test_field_docs_reads_attribute_docstrings_of_the_class_and_its_bases() -> None:
    docs = field_docs(DocumentedSettings)
    assert docs["batch_size"] == "How many at once. Spread over two paragraphs."
    assert docs["nats_url"].startswith("Comma-separated NATS server URLs")  # from CommonSettings
    assert docs["log_level"] == "Overridden here: the subclass's docstring wins."
    assert "undocumented" not in docs
    assert "enabled" not in docs


def test_every_common_setting_is_documented() -> None:
    docs = field_docs(CommonSettings)
    assert set(docs) == set(CommonSettings.__struct_fields__)
    assert all(docs.values())


def test_settings_help_lists_every_variable_with_type_default_and_meaning() -> None:
    helps = {h.variable: h for h in settings_help(DocumentedSettings)}
    assert list(helps) == [f"NATRITON_{f.upper()}" for f in DocumentedSettings.__struct_fields__]
    assert helps["NATRITON_BATCH_SIZE"].type == "int"
    assert helps["NATRITON_BATCH_SIZE"].default == "8"
    assert helps["NATRITON_ENABLED"].default == "true"
    assert helps["NATRITON_UNDOCUMENTED"].default == "1.5"
    assert helps["NATRITON_UNDOCUMENTED"].doc == ""
    assert helps["NATRITON_NATS_CREDS_FILE"].default == '""'
    assert helps["NATRITON_NATS_URL"].default == "nats://127.0.0.1:4222"
    assert helps["NATRITON_API_TOKEN"].default == "***"
    assert helps["NATRITON_LOG_LEVEL"].default == "WARNING"


@pytest.mark.parametrize("settings_type", SERVICE_SETTINGS.values(), ids=list(SERVICE_SETTINGS))
def test_settings_help_covers_every_service_field(settings_type: type[CommonSettings]) -> None:
    variables = [h.variable for h in settings_help(settings_type)]
    assert variables == [f"NATRITON_{f.upper()}" for f in settings_type.__struct_fields__]


# ------------------------------------------------------------------------------------------------
# misspelled and foreign NATRITON_* variables
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("", "", 0), ("abc", "abc", 0), ("abc", "", 3), ("abc", "abd", 1), ("abc", "acb", 1), ("abc", "abcd", 1)],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


@pytest.mark.parametrize(
    "misspelled",
    [
        "NATRITON_MAX_CONCURENCY",  # letter missing
        "NATRITON_MAX_CONCURRENCYY",  # letter doubled
        "NATRITON_MAX_CONCURRNECY",  # letters swapped
        "NATRITON_MAXCONCURRENCY",  # underscore missing
        "NATRITON_MAX_CONCURRENCY_",
        "natriton_max_concurrency",  # wrong case: the variable is never read
    ],
)
def test_a_near_miss_is_a_typo_with_a_suggestion(misspelled: str) -> None:
    (unknown,) = unknown_variables(CommonSettings, {misspelled: "8"})
    assert unknown == UnknownVariable(misspelled, "NATRITON_MAX_CONCURRENCY", typo=True)
    assert unknown.message("natriton-x") == (
        f"{misspelled} is not a setting of natriton-x; did you mean NATRITON_MAX_CONCURRENCY?"
    )


def test_a_variable_of_another_service_is_only_a_warning() -> None:
    # ingest's setting seen by the router: close to one of its own, but far more than a typo
    (unknown,) = unknown_variables(RouterSettings, {"NATRITON_MAX_PENDING_PER_MODEL": "1"})
    assert unknown == UnknownVariable("NATRITON_MAX_PENDING_PER_MODEL", "NATRITON_MAX_QUEUED_PER_MODEL", typo=False)
    (far,) = unknown_variables(RouterSettings, {"NATRITON_COALESCE": "1"})
    assert far == UnknownVariable("NATRITON_COALESCE", "", typo=False)
    assert far.message("natriton-router") == "NATRITON_COALESCE is not a setting of natriton-router"


def test_only_unknown_natriton_variables_are_reported_sorted() -> None:
    env = {
        "PATH": "/bin",
        "MAX_CONCURRENCY": "3",
        "XNATRITON_LOG_LEVEL": "x",
        "NATRITON_LOG_LEVEL": "DEBUG",
        "NATRITON_ZZZ": "1",
        "NATRITON_": "1",
        "NATRITON_AAA": "1",
    }
    found = unknown_variables(CommonSettings, env)
    assert [u.name for u in found] == ["NATRITON_", "NATRITON_AAA", "NATRITON_ZZZ"]
    assert not any(u.typo for u in found)
    assert found[0].suggestion == ""
    assert unknown_variables(CommonSettings, {}) == []


def test_classify_with_nothing_known() -> None:
    assert classify_variable("NATRITON_X", []) == UnknownVariable("NATRITON_X", "", typo=False)


@pytest.mark.parametrize("reader", list(SERVICE_SETTINGS))
def test_no_setting_of_one_service_is_taken_for_a_typo_by_another(reader: str) -> None:
    """Every service may see the others' variables (one shared environment): that must never stop it."""
    reader_type = SERVICE_SETTINGS[reader]
    foreign = {
        f"NATRITON_{f.upper()}": "1"
        for name, settings_type in SERVICE_SETTINGS.items()
        if name != reader
        for f in settings_type.__struct_fields__
        if f not in reader_type.__struct_fields__
    }
    typos = [u for u in unknown_variables(reader_type, foreign) if u.typo]
    assert typos == [], f"rename one of these settings; they are {TYPO_MAX_EDITS} edits or fewer apart: {typos}"


# ------------------------------------------------------------------------------------------------
# Security settings: NATS NKey/TLS/inbox, Redis ACL password file and TLS, Triton TLS; secrets never shown
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("redis://natriton:pw@h:6379/0", "redis://***@h:6379/0"),
        ("rediss://h:6380/0?password=pw&ssl_ca_certs=/ca.pem", "rediss://h:6380/0?password=***&ssl_ca_certs=/ca.pem"),
        ("nats://h:4222?token=abc", "nats://h:4222?token=***"),
        ("rtsp://cam/live?user=x&auth=zzz#frag", "rtsp://cam/live?user=x&auth=***#frag"),
        ("http://h/path?passwords_ok=1", "http://h/path?passwords_ok=1"),  # only exact parameter names
    ],
)
def test_redact_masks_secrets_in_query_strings(value: str, expected: str) -> None:
    assert redact("url", value) == expected


def test_the_redis_password_comes_from_its_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("p@ss/w:rd\n")  # characters that must be escaped in a URL
    s = load_settings(
        CommonSettings,
        environ={
            "NATRITON_REDIS_URL": "rediss://natriton@cache:6380/0",
            "NATRITON_REDIS_PASSWORD_FILE": str(secret),
            "NATRITON_REDIS_TLS_CA_FILE": "/tls/ca.pem",
            "NATRITON_REDIS_TLS_CERT_FILE": "/tls/svc.pem",
            "NATRITON_REDIS_TLS_KEY_FILE": "/tls/svc-key.pem",
        },
    )
    parsed = urlsplit(s.redis_url)
    assert parsed.scheme == "rediss" and parsed.hostname == "cache" and parsed.port == 6380
    assert parsed.username == "natriton" and unquote(parsed.password or "") == "p@ss/w:rd"
    assert parse_qs(parsed.query) == {
        "ssl_ca_certs": ["/tls/ca.pem"],
        "ssl_certfile": ["/tls/svc.pem"],
        "ssl_keyfile": ["/tls/svc-key.pem"],
    }
    shown = describe(s)
    assert shown["redis_url"].startswith("rediss://***@cache:6380/0?ssl_ca_certs=")
    assert "p%40ss" not in repr(shown) and "rd" not in shown["redis_url"].split("?")[0]
    assert shown["redis_password_file"] == str(secret)  # the path is no secret


def test_a_password_file_replaces_the_password_in_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("new")
    s = load_settings(
        CommonSettings,
        environ={"NATRITON_REDIS_URL": "redis://:old@cache:6379/0", "NATRITON_REDIS_PASSWORD_FILE": str(secret)},
    )
    assert s.redis_url == "redis://:new@cache:6379/0"


def test_an_unreadable_secret_file_is_a_settings_error_that_shows_no_secret(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read secret file .*missing"):
        load_settings(CommonSettings, environ={"NATRITON_REDIS_PASSWORD_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"NATRITON_REDIS_TLS_CA_FILE": "/ca.pem"}, "rediss://"),  # TLS files with a plaintext URL
        ({"NATRITON_NATS_TLS_CERT_FILE": "/c.pem"}, "nats_tls_key_file"),  # a certificate without its key
        (
            {"NATRITON_REDIS_URL": "rediss://h", "NATRITON_REDIS_TLS_KEY_FILE": "/k.pem"},
            "redis_tls_cert_file",
        ),
        ({"NATRITON_NATS_INBOX_PREFIX": "_INBOX..x"}, "nats_inbox_prefix"),
        ({"NATRITON_NATS_INBOX_PREFIX": "_INBOX x"}, "nats_inbox_prefix"),
    ],
)
def test_inconsistent_security_settings_fail_fast(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(mentions)):
        load_settings(CommonSettings, environ=env)


def test_nats_options_carry_credentials_tls_and_the_inbox_prefix(tmp_path: Path) -> None:
    from natriton_dev.certs import TestCA

    ca = TestCA.create(tmp_path)
    client = ca.issue("ingest")
    s = load_settings(
        CommonSettings,
        environ={
            "NATRITON_NATS_URL": "tls://nats:4222",
            "NATRITON_NATS_NKEY_SEED_FILE": "/run/secrets/ingest.nk",
            "NATRITON_NATS_CREDS_FILE": "/run/secrets/ingest.creds",
            "NATRITON_NATS_TLS_CA_FILE": str(ca.cert_file),
            "NATRITON_NATS_TLS_CERT_FILE": str(client.cert_file),
            "NATRITON_NATS_TLS_KEY_FILE": str(client.key_file),
            "NATRITON_NATS_INBOX_PREFIX": "_INBOX.ingest",
        },
    )
    options = s.nats_options()
    assert options["nkeys_seed"] == "/run/secrets/ingest.nk"  # nats-py reads the file: no seed in memory here
    assert options["user_credentials"] == "/run/secrets/ingest.creds"
    assert options["inbox_prefix"] == "_INBOX.ingest"
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the given CA only, not the system's
    described = describe(s)
    assert described["nats_nkey_seed_file"] == "/run/secrets/ingest.nk"  # paths are shown, as --check-config prints


def test_by_default_nats_gets_no_security_options() -> None:
    assert load_settings(CommonSettings, environ={}).nats_options() == {}


def test_a_bad_client_certificate_fails_when_the_context_is_made(tmp_path: Path) -> None:
    s = load_settings(
        CommonSettings,
        environ={
            "NATRITON_NATS_TLS_CERT_FILE": str(tmp_path / "nope.pem"),
            "NATRITON_NATS_TLS_KEY_FILE": str(tmp_path / "nope-key.pem"),
        },
    )
    with pytest.raises(OSError):
        s.nats_options()


def test_router_triton_tls_from_its_settings() -> None:
    assert load_settings(RouterSettings, environ={}).triton_grpc_tls() is None
    plain_tls = load_settings(RouterSettings, environ={"NATRITON_TRITON_TLS": "true"}).triton_grpc_tls()
    assert plain_tls == GrpcTls()  # TLS with gRPC's default roots
    mutual = load_settings(
        RouterSettings,
        environ={
            "NATRITON_TRITON_TLS_CA_FILE": "/ca.pem",
            "NATRITON_TRITON_TLS_CERT_FILE": "/router.pem",
            "NATRITON_TRITON_TLS_KEY_FILE": "/router-key.pem",
        },
    ).triton_grpc_tls()
    assert mutual == GrpcTls("/ca.pem", "/router.pem", "/router-key.pem")
    with pytest.raises(SettingsError, match="triton_tls_cert_file"):
        load_settings(RouterSettings, environ={"NATRITON_TRITON_TLS_KEY_FILE": "/k.pem"})


def test_check_config_prints_no_secret(tmp_path: Path) -> None:
    """What ``--check-config`` prints (the same describe() as the startup log line)."""
    secret = tmp_path / "redis-password"
    secret.write_text("hunter2-redis")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NATRITON_NATS_URL": "tls://svc:hunter2-nats@nats:4222",
        "NATRITON_REDIS_URL": "rediss://natriton@redis:6380/0",
        "NATRITON_REDIS_PASSWORD_FILE": str(secret),
    }
    done = subprocess.run(
        [sys.executable, "-m", "natriton_postprocess", "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "NATRITON_REDIS_URL=rediss://***@redis:6380/0" in done.stdout
    assert "NATRITON_NATS_URL=tls://***@nats:4222" in done.stdout
