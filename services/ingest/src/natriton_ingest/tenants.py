"""Tenants: who sent a request (from the NATS identity), their limits, and the audit record of every answer.

A tenant is a NATS account that imports the mesh's public service ``natriton.v1.infer`` (docs/operations.md,
Security). For a request that crossed such an import the NATS server stamps ``Nats-Request-Info`` with the requester's
account (and, when the import shares it, the user); a producer cannot forge it (nats-server >= 2.12.6 replaces what a
client sends). A request from the mesh's own account carries no such header: its tenant is ``""``.

The tenant scopes the result cache and the coalescing of identical requests (so no tenant is ever answered from
another's work), and each tenant has a rate (token bucket) and a number of requests in the pipeline at once, per
ingest copy.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from natriton.errors import ErrorCode, MeshError

REQUEST_INFO: str = "Nats-Request-Info"
"""The header the NATS server adds to a request that crossed a service import (who sent it)."""
_TENANT_LIMIT = re.compile(r"^(?P<tenant>\*|[A-Za-z0-9_-]{1,64}):(?P<rate>\d+(\.\d+)?)/s:(?P<pending>\d+)$")


@dataclass(frozen=True, slots=True)
class Tenant:
    """The sender of a request: its NATS account ('' for the mesh's own) and user (when the import shares it)."""

    account: str = ""
    user: str = ""


def tenant_of(headers: dict[str, str]) -> Tenant:
    """The tenant of a request from its NATS headers (``Nats-Request-Info``, set by the server)."""
    info = headers.get(REQUEST_INFO, "")
    if not info:
        return Tenant()
    try:
        parsed = json.loads(info)
    except (ValueError, RecursionError):
        return Tenant()
    if not isinstance(parsed, dict):
        return Tenant()
    account, user = parsed.get("acc", ""), parsed.get("user", "")
    return Tenant(account if isinstance(account, str) else "", user if isinstance(user, str) else "")


@dataclass(frozen=True, slots=True)
class TenantLimit:
    """Requests per second (0: no limit; bursts of up to one second's worth) and requests in the pipeline at once
    (0: no limit), per ingest copy."""

    rate_per_s: float = 0.0
    max_pending: int = 0


def parse_limits(spec: str) -> dict[str, TenantLimit]:
    """``<tenant>:<rate>/s:<pending>`` entries, comma-separated; ``*`` is every tenant not named (and the mesh's own
    account, ``""``, is never limited). Raises ``ValueError`` on a malformed entry."""
    limits: dict[str, TenantLimit] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        match = _TENANT_LIMIT.match(entry)
        if match is None:
            raise ValueError(f"tenant limit {entry!r} is not <tenant>:<rate>/s:<max pending> (e.g. TENANT_A:50/s:100)")
        limits[match["tenant"]] = TenantLimit(float(match["rate"]), int(match["pending"]))
    return limits


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


@dataclass(slots=True)
class TenantGate:
    """Admits a tenant's request or refuses it as ``overloaded`` (over its rate or its pending quota)."""

    limits: dict[str, TenantLimit]
    pending: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def limit_of(self, tenant: str) -> TenantLimit:
        """The limit that applies to ``tenant``."""
        if not tenant:
            return TenantLimit()
        return self.limits.get(tenant) or self.limits.get("*") or TenantLimit()

    def admit(self, tenant: str, now_s: float) -> None:
        """Take one request of ``tenant`` (call :meth:`release` when it is answered) or raise ``overloaded``."""
        limit = self.limit_of(tenant)
        if limit.max_pending and self.pending[tenant] >= limit.max_pending:
            self.refused[tenant] += 1
            raise MeshError(
                ErrorCode.OVERLOADED,
                f"tenant {tenant}: {self.pending[tenant]} requests in the pipeline (quota {limit.max_pending})",
                retry_after_ms=100,
            )
        if limit.rate_per_s:
            bucket = self._buckets.setdefault(tenant, _Bucket(limit.rate_per_s, now_s))
            bucket.tokens = min(limit.rate_per_s, bucket.tokens + (now_s - bucket.updated_s) * limit.rate_per_s)
            bucket.updated_s = now_s
            if bucket.tokens < 1.0:
                self.refused[tenant] += 1
                wait_ms = int((1.0 - bucket.tokens) / limit.rate_per_s * 1000) + 1
                raise MeshError(
                    ErrorCode.OVERLOADED,
                    f"tenant {tenant}: over its rate of {limit.rate_per_s:g} requests/s",
                    retry_after_ms=wait_ms,
                )
            bucket.tokens -= 1.0
        self.pending[tenant] += 1

    def release(self, tenant: str) -> None:
        """One of ``tenant``'s admitted requests was answered."""
        self.pending[tenant] -= 1
        if self.pending[tenant] <= 0:
            del self.pending[tenant]


def scoped_cache_key(tenant: str, key: str) -> str:
    """The result cache key of ``tenant`` (the mesh's own account keeps the plain key)."""
    return f"natriton:tenant:{tenant}:{key}" if tenant and key else key


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True, tag="audit_record", tag_field="type"):
    """Who asked what, and how it ended: one per answered request, on ``natriton.v1.audit.<tenant or _mesh>``."""

    time_ms: int
    tenant: str
    user: str
    request_id: str
    mesh_id: str
    model: str
    version: str
    outcome: str
    """``ok`` or the error code."""
    latency_ms: float
    cached: bool
    ingest: str
    """The ingest copy that answered."""
