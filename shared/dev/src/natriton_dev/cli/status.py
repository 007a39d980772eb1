"""``natriton status``: is the mesh up? Services (NATS micro), models (catalog + Triton), NATS, Redis.

Services are found with the NATS micro protocol: ``$SRV.INFO`` and ``$SRV.STATS`` are published once and every
reply that arrives within ``--wait`` seconds is counted (one reply per service copy), exactly as ``nats micro ls``
does. Nothing here relies on how the services implement it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Annotated, Any, Final

import typer
from nats.aio.client import Client as NATS
from rich.text import Text

from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    EXIT_FAILED,
    EXIT_OK,
    ConnectTimeoutOption,
    JsonOption,
    NatsUrlOption,
    Output,
    PlainTable,
    RedisUrlOption,
    Resolved,
    VerboseOption,
    close_quietly,
    connect_error_reason,
    connect_nats,
    reported,
    resolve_nats_url,
    resolve_redis_url,
    run,
    server_version,
    shown_url,
)
from natriton_dev.cli.kv import model_kind, read_catalog
from natriton_dev.cli.state import StackState, running_stack

MESH_SERVICES: Final = ("ingest", "preprocess", "router", "postprocess")
SERVICE_PREFIX: Final = "natriton-"


# ------------------------------------------------------------------------------------------------ NATS micro
async def micro_gather(nc: NATS, verb: str, *, wait_s: float, quiet_s: float = 0.3) -> list[dict[str, Any]]:
    """Publish ``$SRV.<verb>`` once; the JSON replies that arrive within ``wait_s`` (stopping ``quiet_s`` after the
    last one)."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    replies: list[dict[str, Any]] = []
    try:
        await nc.publish(f"$SRV.{verb}", b"", reply=inbox)
        deadline = time.monotonic() + wait_s
        while (remaining := deadline - time.monotonic()) > 0:
            timeout = min(remaining, quiet_s) if replies else remaining
            try:
                msg = await subscription.next_msg(timeout=timeout)
            except TimeoutError:
                break
            except Exception as exc:  # nats.errors.TimeoutError is not a TimeoutError subclass everywhere
                if "Timeout" in type(exc).__name__:
                    break
                raise
            try:
                document = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(document, dict):
                replies.append(document)
    finally:
        await subscription.unsubscribe()
    return replies


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def summarize_services(infos: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per service name: copies, versions, and per endpoint the sum over copies of requests and errors
    and the request-weighted average processing time."""
    services: dict[str, dict[str, Any]] = {}
    for document in [*infos, *stats]:
        name = str(document.get("name", ""))
        if not name:
            continue
        service = services.setdefault(name, {"instances": {}, "endpoints": {}, "description": ""})
        instance = service["instances"].setdefault(str(document.get("id", "")), {"id": str(document.get("id", ""))})
        instance["version"] = str(document.get("version", ""))
        if document.get("started"):
            instance["started"] = str(document["started"])
        if document.get("description"):
            service["description"] = str(document["description"])
        for endpoint in document.get("endpoints") or ():
            if isinstance(endpoint, dict):
                service["endpoints"].setdefault(str(endpoint.get("name", "")), {"subject": "", "queue_group": ""})
                entry = service["endpoints"][str(endpoint.get("name", ""))]
                entry["subject"] = endpoint.get("subject", entry["subject"])
                entry["queue_group"] = endpoint.get("queue_group", entry["queue_group"])

    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for document in stats:
        for endpoint in document.get("endpoints") or ():
            if not isinstance(endpoint, dict):
                continue
            key = (str(document.get("name", "")), str(endpoint.get("name", "")))
            total = totals.setdefault(key, {"requests": 0, "errors": 0, "weighted_ns": 0.0, "errors_by_code": {}})
            requests = int(_number(endpoint.get("num_requests")))
            total["requests"] += requests
            total["errors"] += int(_number(endpoint.get("num_errors")))
            total["weighted_ns"] += _number(endpoint.get("average_processing_time")) * requests
            data = endpoint.get("data")
            by_code = data.get("errors_by_code") if isinstance(data, dict) else None
            if isinstance(by_code, dict):
                for code, count in by_code.items():
                    total["errors_by_code"][str(code)] = total["errors_by_code"].get(str(code), 0) + int(_number(count))

    result = []
    for name in sorted(services):
        service = services[name]
        endpoints = []
        for endpoint_name in sorted(service["endpoints"]):
            total = totals.get((name, endpoint_name), {"requests": 0, "errors": 0, "weighted_ns": 0.0})
            requests = total["requests"]
            endpoints.append(
                {
                    "name": endpoint_name,
                    "subject": service["endpoints"][endpoint_name]["subject"],
                    "queue_group": service["endpoints"][endpoint_name]["queue_group"],
                    "requests": requests,
                    "errors": total["errors"],
                    "average_ms": round(total["weighted_ns"] / requests / 1e6, 3) if requests else 0.0,
                    "errors_by_code": dict(sorted(total.get("errors_by_code", {}).items())),
                }
            )
        instances = sorted(service["instances"].values(), key=lambda i: str(i["id"]))
        result.append(
            {
                "name": name,
                "service": name.removeprefix(SERVICE_PREFIX),
                "copies": len(instances),
                "versions": sorted({str(i.get("version", "")) for i in instances}),
                "instances": instances,
                "endpoints": endpoints,
            }
        )
    return result


# ------------------------------------------------------------------------------------------------ Triton, Redis
def http_get_json(url: str, timeout_s: float, *, post: bool = False) -> tuple[int, Any]:
    """Status and decoded JSON (None when the body is empty or not JSON) of one HTTP request."""
    request = urllib.request.Request(url, data=b"{}" if post else None, method="POST" if post else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, body = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def tcp_reachable(address: str, timeout_s: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def check_triton(http_url: str, grpc_url: str, timeout_s: float) -> dict[str, Any]:
    """Liveness, readiness and the model repository's index (name, version, state) over Triton's HTTP API."""
    report: dict[str, Any] = {"http_url": http_url, "grpc_url": grpc_url, "live": False, "ready": False}
    report["models"] = []
    if http_url:
        base = http_url.rstrip("/")
        try:
            report["live"] = http_get_json(f"{base}/v2/health/live", timeout_s)[0] == 200
            report["ready"] = http_get_json(f"{base}/v2/health/ready", timeout_s)[0] == 200
            status, index = http_get_json(f"{base}/v2/repository/index", timeout_s, post=True)
            if status == 200 and isinstance(index, list):
                report["models"] = [
                    {
                        "name": str(m.get("name", "")),
                        "version": str(m.get("version", "")),
                        "state": str(m.get("state", "")),
                        "reason": str(m.get("reason", "")),
                    }
                    for m in index
                    if isinstance(m, dict)
                ]
        except OSError as exc:
            report["error"] = f"cannot reach Triton at {http_url} ({connect_error_reason(getattr(exc, 'reason', exc))})"
    if grpc_url:
        report["grpc_reachable"] = tcp_reachable(grpc_url, timeout_s)
        if not http_url:
            report["ready"] = report["grpc_reachable"]
    return report


async def check_redis(url: str, timeout_s: float) -> dict[str, Any]:
    """PING (and the server's version) within ``timeout_s``."""
    import redis.asyncio as redis

    report: dict[str, Any] = {"url": url, "ok": False}
    client = redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s + 0.5):
            report["ok"] = bool(await client.ping())
            info = await client.info("server")
            report["version"] = str(info.get("redis_version", ""))
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        reason = connect_error_reason(cause) if isinstance(cause, OSError) else str(exc) or type(exc).__name__
        report["error"] = f"cannot reach Redis at {shown_url(url)} ({reason})"
    finally:
        await client.aclose()
    return report


# ------------------------------------------------------------------------------------------------ the report
async def gather_status(
    nats: Resolved,
    redis: Resolved,
    triton_http: str,
    triton_grpc: str,
    *,
    connect_timeout: float,
    wait_s: float,
) -> dict[str, Any]:
    """Everything ``natriton status`` shows, as plain data (see :func:`judge` for what counts as down)."""
    nc = await connect_nats(nats.url, connect_timeout, name="natriton-status")
    try:
        redis_task = asyncio.create_task(check_redis(redis.url, connect_timeout))
        triton_task = (
            asyncio.create_task(asyncio.to_thread(check_triton, triton_http, triton_grpc, connect_timeout))
            if triton_http or triton_grpc
            else None
        )
        infos, stats = await asyncio.gather(
            micro_gather(nc, "INFO", wait_s=wait_s), micro_gather(nc, "STATS", wait_s=wait_s)
        )
        jetstream = True
        try:
            async with asyncio.timeout(connect_timeout):
                await nc.jetstream(timeout=connect_timeout).account_info()
        except Exception:
            jetstream = False
        catalog = await read_catalog(nc, timeout_s=connect_timeout) if jetstream else None
        report: dict[str, Any] = {
            "nats": {
                "url": nats.url,
                "source": nats.source,
                "connected": nc.is_connected,
                "server_version": server_version(nc),
                "jetstream": jetstream,
                "max_payload": nc.max_payload,
            },
            "services": summarize_services(infos, stats),
            "catalog": catalog,
            "redis": {**await redis_task, "source": redis.source},
            "triton": await triton_task if triton_task is not None else None,
        }
    finally:
        await close_quietly(nc)
    return report


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """Add ``ok``, ``problems`` (essential parts down: exit 1), ``warnings``, ``missing_services`` and ``models``."""
    problems: list[str] = []
    warnings: list[str] = []
    found = {s["service"] for s in report["services"]}
    missing = [s for s in MESH_SERVICES if s not in found]
    if missing:
        problems.append(f"service(s) not running: {', '.join(missing)}")
    if not report["nats"]["jetstream"]:
        problems.append("JetStream is not enabled on NATS (the catalog and routing policies need it)")
    catalog = report.get("catalog")
    triton = report.get("triton")
    triton_states: dict[str, dict[str, str]] = {}
    for entry in (triton or {}).get("models", []):
        triton_states.setdefault(entry["name"], {})[entry["version"] or "-"] = entry["state"]
    models = []
    for info in catalog or []:
        models.append(
            {
                "name": info.get("name"),
                "versions": list(info.get("versions", ())),
                "kind": model_kind(info),
                "max_batch_size": info.get("max_batch_size"),
                "problem": info.get("problem", ""),
                "triton_state": triton_states.get(str(info.get("name")), {}),
            }
        )
    if catalog is None and report["nats"]["jetstream"]:
        problems.append("no model catalog (KV bucket natriton_models missing: the router has not published it)")
    elif catalog is not None and not any(m["versions"] and not m["problem"] for m in models):
        problems.append("no servable model in the catalog")
    for model in models:
        if model["problem"]:
            warnings.append(f"model {model['name']} cannot be served: {model['problem']}")
        for version, state in sorted(model["triton_state"].items()):
            if state != "READY" and version in model["versions"]:
                warnings.append(f"model {model['name']} version {version} is {state} in Triton")
    if triton is not None:
        if triton.get("error"):
            problems.append(triton["error"])
        elif not triton.get("ready"):
            problems.append("Triton is not ready")
        if triton.get("grpc_url") and triton.get("grpc_reachable") is False:
            problems.append(f"Triton's gRPC port {triton['grpc_url']} does not accept connections")
    if not report["redis"]["ok"]:
        warnings.append(f"{report['redis'].get('error', 'Redis is down')}: answers are not cached")
    report.pop("catalog", None)
    return {
        "ok": not problems,
        "problems": problems,
        "warnings": warnings,
        **report,
        "missing_services": missing,
        "models": models,
    }


def _mark(ok: bool | None) -> Text:
    if ok is None:
        return Text("?", style="dim")
    return Text("✓", style="green") if ok else Text("✗", style="bold red")


def render(report: dict[str, Any], out: Output) -> None:
    """The report for humans."""
    nats = report["nats"]
    lines = PlainTable(show_header=False, box=None, pad_edge=False)
    lines.add_column(width=1)
    lines.add_column(style="bold")
    lines.add_column()
    lines.add_row(
        _mark(nats["connected"]),
        "NATS",
        f"{shown_url(nats['url'])}  server {nats['server_version']}, JetStream {'on' if nats['jetstream'] else 'OFF'}",
    )
    redis = report["redis"]
    lines.add_row(
        _mark(redis["ok"]),
        "Redis",
        f"{shown_url(redis['url'])}  " + (f"PONG (redis {redis.get('version', '?')})" if redis["ok"] else "down"),
    )
    triton = report.get("triton")
    if triton is None:
        lines.add_row(_mark(None), "Triton", "URL unknown (--triton-url, or a stack started with natriton up)")
    else:
        detail = triton.get("error") or ("ready" if triton.get("ready") else "NOT ready")
        if triton.get("grpc_url"):
            grpc_ok = triton.get("grpc_reachable")
            detail += f"; gRPC {triton['grpc_url']} {'reachable' if grpc_ok else 'unreachable'}"
        lines.add_row(
            _mark(bool(triton.get("ready")) and not triton.get("error")), "Triton", f"{triton['http_url']}  {detail}"
        )
    out.print(lines)

    services = PlainTable(
        "service", "copies", "version", "endpoint", "requests", "errors", "avg ms", box=None, header_style="bold"
    )
    listed = {s["service"]: s for s in report["services"]}
    for name in [*MESH_SERVICES, *sorted(set(listed) - set(MESH_SERVICES))]:
        service = listed.get(name)
        if service is None:
            services.add_row(Text(name, style="bold red"), Text("0", style="red"), "-", "-", "", "", "")
            continue
        endpoints = service["endpoints"] or [{"name": "-", "requests": "", "errors": "", "average_ms": ""}]
        for index, endpoint in enumerate(endpoints):
            errors = endpoint["errors"]
            services.add_row(
                Text(name, style="bold green") if index == 0 else "",
                str(service["copies"]) if index == 0 else "",
                ", ".join(service["versions"]) if index == 0 else "",
                str(endpoint["name"]),
                str(endpoint["requests"]),
                Text(str(errors), style="red" if errors else ""),
                f"{endpoint['average_ms']:.2f}" if isinstance(endpoint["average_ms"], float) else "",
            )
    out.print()
    out.print(services)

    if report["models"]:
        models = PlainTable("model", "versions", "kind", "triton", box=None, header_style="bold")
        for model in report["models"]:
            states = model["triton_state"]
            triton_text = ", ".join(f"v{v} {s}" for v, s in sorted(states.items())) if states else "-"
            name = Text(str(model["name"]), style="red" if model["problem"] else "")
            models.add_row(name, ", ".join(model["versions"]) or "-", model["kind"], triton_text)
            if model["problem"]:
                models.add_row("", Text(f"cannot be served: {model['problem']}", style="red"), "", "")
        out.print()
        out.print(models)
    out.print()
    for warning in report["warnings"]:
        out.print(Text(f"warning: {warning}", style="yellow"))
    if report["ok"]:
        out.print(Text("mesh is up", style="bold green"))
    else:
        for problem in report["problems"]:
            out.print(Text(f"DOWN: {problem}", style="bold red"))


def _triton_urls(
    http_option: str | None, grpc_option: str | None, environ: Mapping[str, str], stack: StackState | None
) -> tuple[str, str, str]:
    """Triton's HTTP and gRPC URLs and where they came from ('' when unknown)."""
    if http_option or grpc_option:
        return http_option or "", grpc_option or "", "option"
    if environ.get("NATRITON_TRITON_GRPC_URL"):
        return "", environ["NATRITON_TRITON_GRPC_URL"], "env"
    if stack is not None:
        return stack.triton_http_url, stack.triton_grpc_url, "local stack"
    return "", "", ""


def status_command(
    nats_url: NatsUrlOption = None,
    redis_url: RedisUrlOption = None,
    triton_url: Annotated[
        str | None,
        typer.Option("--triton-url", help="Triton's HTTP URL (default: the local stack's).", show_default=False),
    ] = None,
    triton_grpc_url: Annotated[
        str | None,
        typer.Option(
            "--triton-grpc-url",
            help="Triton's gRPC host:port (default: NATRITON_TRITON_GRPC_URL, the local stack's).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", min=0.1, help="Seconds to collect $SRV replies from service copies.")
    ] = 1.0,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Is the mesh up? Services, models, NATS, Redis and Triton health.

    Services (copies, versions, requests, errors, average latency per endpoint), models (catalog and Triton),
    NATS (server version, JetStream) and Redis.

    Exit status 1 when something essential is down: NATS JetStream, any of ingest/preprocess/router/postprocess,
    the catalog, Triton (when its URL is known). Redis down is a warning: the mesh serves without its cache.
    """
    import os

    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        stack = running_stack()
        nats = resolve_nats_url(nats_url, stack=stack)
        if stack is not None and nats.url != stack.nats_url:
            stack = None  # another mesh: the local stack's Redis and Triton say nothing about it
        redis = resolve_redis_url(redis_url, stack=stack)
        http, grpc, triton_source = _triton_urls(triton_url, triton_grpc_url, os.environ, stack)
        out.note(f"NATS {nats.describe()}")
        out.note(f"Redis {redis.describe()}")
        out.note(f"Triton {http or '-'} / {grpc or '-'} (from {triton_source or 'nowhere: not checked'})")
        report = judge(run(gather_status(nats, redis, http, grpc, connect_timeout=connect_timeout, wait_s=wait)))
        if report["triton"] is not None:
            report["triton"]["source"] = triton_source
        out.emit(report)
        if not out.json_mode:
            render(report, out)
        raise typer.Exit(EXIT_OK if report["ok"] else EXIT_FAILED)
