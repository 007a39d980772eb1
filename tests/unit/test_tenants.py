"""Tenants (pure logic): identity from the NATS header, limits, the gate, cache scoping."""

from __future__ import annotations

import pytest

from natriton.errors import ErrorCode, MeshError
from natriton_ingest.tenants import (
    REQUEST_INFO,
    Tenant,
    TenantGate,
    TenantLimit,
    parse_limits,
    scoped_cache_key,
    tenant_of,
)


def test_the_tenant_is_the_account_the_server_stamped() -> None:
    stamped = {REQUEST_INFO: '{"acc":"TENANT_A","rtt":1234,"user":"UABC"}'}
    assert tenant_of(stamped) == Tenant("TENANT_A", "UABC")
    assert tenant_of({}) == Tenant(), "no header: the mesh's own account"


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '{"acc": 7}', "[" * 100_000])
def test_a_malformed_request_info_is_no_tenant(value: str) -> None:
    assert tenant_of({REQUEST_INFO: value}).account == ""


def test_limits_parse_and_the_default_applies_to_unnamed_tenants() -> None:
    limits = parse_limits(" *:50/s:100, TENANT_A:200.5/s:0 ")
    assert limits == {"*": TenantLimit(50.0, 100), "TENANT_A": TenantLimit(200.5, 0)}
    gate = TenantGate(limits)
    assert gate.limit_of("TENANT_A") == TenantLimit(200.5, 0)
    assert gate.limit_of("TENANT_Z") == TenantLimit(50.0, 100)
    assert gate.limit_of("") == TenantLimit(), "the mesh's own account is never limited"


@pytest.mark.parametrize("spec", ["TENANT_A", "TENANT_A:5:1", "TENANT A:5/s:1", "A:x/s:1"])
def test_malformed_limits_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="is not <tenant>"):
        parse_limits(spec)


def test_the_rate_is_a_token_bucket_per_tenant() -> None:
    gate = TenantGate(parse_limits("TENANT_B:2/s:0"))
    gate.admit("TENANT_B", 0.0)
    gate.admit("TENANT_B", 0.0)
    with pytest.raises(MeshError) as refused:
        gate.admit("TENANT_B", 0.1)
    assert refused.value.code is ErrorCode.OVERLOADED and "rate of 2 requests/s" in refused.value.message
    assert refused.value.retry_after_ms is not None and 0 < refused.value.retry_after_ms <= 500
    gate.admit("TENANT_A", 0.1)  # another tenant is not held back
    gate.admit("TENANT_B", 0.6)  # refilled: 2 per second
    assert gate.refused == {"TENANT_B": 1}


def test_pending_quota_counts_until_release() -> None:
    gate = TenantGate(parse_limits("*:0/s:2"))
    gate.admit("T", 0.0)
    gate.admit("T", 0.0)
    with pytest.raises(MeshError, match="quota 2"):
        gate.admit("T", 0.0)
    gate.release("T")
    gate.admit("T", 0.0)
    assert gate.pending["T"] == 2


def test_cache_keys_never_cross_tenants() -> None:
    key = "mobilenet_v2:1:abc"
    assert scoped_cache_key("", key) == key
    assert scoped_cache_key("TENANT_A", key) != scoped_cache_key("TENANT_B", key)
    assert scoped_cache_key("TENANT_A", "") == "", "no caching stays no caching"
