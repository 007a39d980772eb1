"""``natriton routes``: change routing policies at run time, no restarts.

    natriton routes ls
    natriton routes set mobilenet_v2 --weights 1=90,2=10              # canary: 10 % to version 2
    natriton routes set mobilenet_v2 --weights 1=100 --shadow 2       # mirror all traffic to version 2
    natriton routes set mobilenet_v2 --shadow 2 --shadow-fraction 0.1 # mirror 10 %
    natriton routes clear mobilenet_v2                                # back to "latest"

Policies live in the NATS KV bucket ``natriton_routes``; every router copy follows changes within milliseconds.
Requests that name a version always get that version.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
import typer
from nats.aio.client import Client as NATS

from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    EXIT_USAGE,
    CliError,
    ConnectTimeoutOption,
    JsonOption,
    NatsUrlOption,
    Output,
    PlainTable,
    VerboseOption,
    close_quietly,
    connect_nats,
    reported,
    resolve_nats_url,
    run,
)
from natriton_dev.cli.kv import open_kv, read_bucket, read_entries

app = typer.Typer(
    name="routes",
    help="Routing policies per model: weighted splits (A/B, canary) and shadow traffic (NATS KV natriton_routes).",
    no_args_is_help=True,
)


def parse_weights(text: str) -> dict[str, float]:
    """``"1=90,2=10"`` → ``{"1": 90.0, "2": 10.0}``; ``ValueError`` naming the bad part otherwise."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        version, _, weight = (p.strip() for p in part.partition("="))
        if not version or not weight:
            raise ValueError(f"expected VERSION=WEIGHT, got {part!r}")
        try:
            weights[version] = float(weight)
        except ValueError as exc:
            raise ValueError(f"weight of version {version} is not a number: {weight!r}") from exc
        if not 0 <= weights[version] < math.inf:
            raise ValueError(f"weight of version {version} must be a finite number >= 0")
    return weights


def _weights_option(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_weights(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def validate_policy(
    model: str,
    weights: dict[str, float],
    shadow: str,
    shadow_fraction: float,
    ready_versions: tuple[str, ...] | None,
) -> list[str]:
    """What is wrong with a policy (empty when nothing is); ``ready_versions`` None: the model is not in the
    catalog (only checked when known)."""
    problems = []
    if weights and not any(w > 0 for w in weights.values()):
        problems.append("at least one weight must be > 0 (leave --weights out for 'latest')")
    if not 0 <= shadow_fraction <= 1:
        problems.append("--shadow-fraction must be between 0 and 1")
    if shadow and weights and set(weights) == {shadow}:
        problems.append(f"version {shadow} cannot shadow itself (it already gets all the traffic)")
    if ready_versions is None:
        problems.append(f"model {model!r} is not in the catalog")
    else:
        named = sorted({v for v, w in weights.items() if w > 0} | ({shadow} if shadow else set()))
        unknown = [v for v in named if v not in ready_versions]
        if unknown:
            problems.append(
                f"model {model!r} has no ready version {', '.join(unknown)} (ready: {', '.join(ready_versions) or '-'})"
            )
    return problems


def policy_line(model: str, policy: Any, revision: int) -> str:
    """``mobilenet_v2: {"type":"route_policy",...} (revision 7)``."""
    return f"{model}: {msgspec.json.encode(policy).decode()} (revision {revision})"


def describe_weights(weights: dict[str, float]) -> str:
    """``1=90 2=10`` (as shares when they do not add up to 100)."""
    if not weights:
        return "latest"
    return " ".join(f"{v}={w:g}" for v, w in sorted(weights.items(), key=lambda item: (len(item[0]), item[0])))


async def _connect(nats_url: str | None, connect_timeout: float, out: Output) -> tuple[NATS, str]:
    resolved = resolve_nats_url(nats_url)
    out.note(f"NATS {resolved.describe()}")
    return await connect_nats(resolved.url, connect_timeout, name="natriton-routes"), resolved.url


@app.command("ls")
def list_routes(
    model: Annotated[str | None, typer.Argument(help="Only this model's policy.", show_default=False)] = None,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """List routing policies (models without one answer with their latest version)."""
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        rows = run(_list(model, nats_url, connect_timeout, out))
        out.emit({"ok": True, "routes": rows})
        if not out.json_mode:
            if not rows:
                out.print("no routing policies: every model answers with its latest version")
                return
            table = PlainTable("model", "weights", "shadow", "revision", box=None, header_style="bold")
            for row in rows:
                shadow = f"{row['shadow_version']} ({row['shadow_fraction']:.0%})" if row["shadow_version"] else "-"
                table.add_row(row["model"], describe_weights(row["weights"]), shadow, str(row["revision"]))
            out.print(table)


app.command("show", hidden=True, help="Alias of ls.")(list_routes)


async def _list(model: str | None, nats_url: str | None, connect_timeout: float, out: Output) -> list[dict[str, Any]]:
    from natriton.catalog import decode_value
    from natriton.messages import Codec, RoutePolicy
    from natriton.subjects import ROUTES_BUCKET

    codec: Codec[RoutePolicy] = Codec(RoutePolicy)
    nc, _ = await _connect(nats_url, connect_timeout, out)
    try:
        entries = await read_bucket(nc, ROUTES_BUCKET, timeout_s=connect_timeout) or []
    finally:
        await close_quietly(nc)
    rows = []
    for entry in entries:
        if model and entry.key != model:
            continue
        try:
            policy = decode_value(codec, entry.value)
        except msgspec.MsgspecError as exc:
            out.warn(f"policy of {entry.key!r} does not decode ({exc}); the router ignores it")
            continue
        row = msgspec.to_builtins(policy)
        row.pop("type", None)
        rows.append({**row, "revision": entry.revision})
    return rows


@app.command("set")
def set_route(
    model: Annotated[str, typer.Argument(help="The model's name.")],
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="VERSION=WEIGHT,... e.g. 1=90,2=10 (relative weights; empty: the latest version answers).",
            callback=_weights_option,
            show_default=False,
        ),
    ] = None,
    shadow: Annotated[
        str, typer.Option("--shadow", help="A version to mirror traffic to (answers compared, never returned).")
    ] = "",
    shadow_fraction: Annotated[
        float, typer.Option("--shadow-fraction", help="Share of requests mirrored to --shadow (0-1).")
    ] = 1.0,
    force: Annotated[
        bool, typer.Option("--force", help="Write it even if the catalog does not list the model or versions.")
    ] = False,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Set a model's routing policy (replaces the previous one)."""
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        parsed = parse_weights(weights or "")
        policy, revision = run(_set(model, parsed, shadow, shadow_fraction, force, nats_url, connect_timeout, out))
        body = msgspec.to_builtins(policy)
        body.pop("type", None)
        out.emit({"ok": True, "model": model, "policy": body, "revision": revision})
        out.print(policy_line(model, policy, revision), markup=False, soft_wrap=True)


async def _set(
    model: str,
    weights: dict[str, float],
    shadow: str,
    shadow_fraction: float,
    force: bool,
    nats_url: str | None,
    connect_timeout: float,
    out: Output,
) -> tuple[Any, int]:
    from natriton.catalog import put_route
    from natriton.messages import RoutePolicy
    from natriton.subjects import ROUTES_BUCKET
    from natriton_dev.cli.kv import read_catalog

    if not 0 <= shadow_fraction <= 1:
        raise CliError("--shadow-fraction must be between 0 and 1", EXIT_USAGE)
    nc, _ = await _connect(nats_url, connect_timeout, out)
    try:
        catalog = await read_catalog(nc, timeout_s=connect_timeout) or []
        known = {str(m.get("name")): tuple(str(v) for v in m.get("versions", ())) for m in catalog}
        problems = validate_policy(model, weights, shadow, shadow_fraction, known.get(model))
        hard = [p for p in problems if "catalog" not in p and "no ready version" not in p]
        soft = [p for p in problems if p not in hard]
        if hard:
            raise CliError("; ".join(hard), EXIT_USAGE)
        if soft and not force:
            raise CliError("; ".join(soft) + " (--force writes it anyway)", EXIT_USAGE)
        for problem in soft:
            out.warn(problem)
        policy = RoutePolicy(model=model, weights=weights, shadow_version=shadow, shadow_fraction=shadow_fraction)
        kv = await open_kv(nc, ROUTES_BUCKET, timeout_s=connect_timeout, create=True)
        assert kv is not None
        revision = await put_route(kv, policy)
    finally:
        await close_quietly(nc)
    return policy, revision


@app.command("clear")
def clear_route(
    model: Annotated[str, typer.Argument(help="The model's name.")],
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Remove a model's policy: its latest ready version answers again."""
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        existed = run(_clear(model, nats_url, connect_timeout, out))
        out.emit({"ok": True, "model": model, "removed": existed})
        if existed:
            out.print(f"{model}: policy removed; the latest version answers")
        else:
            out.print(f"{model}: had no policy; the latest version answers")


async def _clear(model: str, nats_url: str | None, connect_timeout: float, out: Output) -> bool:
    from natriton.subjects import ROUTES_BUCKET

    nc, _ = await _connect(nats_url, connect_timeout, out)
    try:
        kv = await open_kv(nc, ROUTES_BUCKET, timeout_s=connect_timeout, create=True)
        assert kv is not None
        existed = any(e.key == model for e in await read_entries(kv, timeout_s=connect_timeout))
        await kv.delete(model)
    finally:
        await close_quietly(nc)
    return existed
