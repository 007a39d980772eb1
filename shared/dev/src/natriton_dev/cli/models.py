"""``natriton models``: the model catalog the router publishes to the NATS KV bucket ``natriton_models``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    EXIT_FAILED,
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
from natriton_dev.cli.kv import model_kind, no_catalog_message, read_catalog, tensor_text

GENERIC_FIELDS = ("name", "versions", "task", "max_batch_size", "inputs", "outputs", "problem")
"""Shown as columns; every other field of a catalog entry is shown by ``natriton models NAME``."""


def models_command(
    name: Annotated[str | None, typer.Argument(help="Show one model in full.", show_default=False)] = None,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """The model catalog: name, versions, kind, inputs, outputs, max batch size.

    A model that cannot be served is shown with the reason.

    JSON: {"ok", "nats_url", "models": [every field of the catalog entry + "kind" + "revision"]}.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        resolved = resolve_nats_url(nats_url)
        out.note(f"NATS {resolved.describe()}")
        models = run(_read(resolved.url, connect_timeout))
        if models is None:
            raise CliError(no_catalog_message(resolved.url), EXIT_FAILED)
        for model in models:
            model["kind"] = model_kind(model)
        if name is not None:
            models = [m for m in models if m.get("name") == name]
            if not models:
                raise CliError(f"no model {name!r} in the catalog", EXIT_FAILED)
        out.emit({"ok": True, "nats_url": resolved.url, "models": models})
        if out.json_mode:
            return
        if not models:
            out.print("the catalog is empty (Triton serves no models?)")
        elif name is not None:
            out.print(model_details(models[0]))
        else:
            out.print(models_table(models))


async def _read(url: str, connect_timeout: float) -> list[dict[str, Any]] | None:
    nc = await connect_nats(url, connect_timeout, name="natriton-models")
    try:
        return await read_catalog(nc, timeout_s=connect_timeout)
    finally:
        await close_quietly(nc)


def models_table(models: list[dict[str, Any]]) -> PlainTable:
    """One row per model."""
    table = PlainTable("model", "versions", "kind", "inputs", "outputs", "max batch", box=None, header_style="bold")
    for model in models:
        name = Text(str(model.get("name", "?")), style="red" if model.get("problem") else "bold")
        table.add_row(
            name,
            ", ".join(str(v) for v in model.get("versions", ())) or "-",
            model_kind(model),
            "\n".join(tensor_text(s) for s in model.get("inputs", ())),
            "\n".join(tensor_text(s) for s in model.get("outputs", ())),
            str(model.get("max_batch_size", "")),
        )
        if model.get("problem"):
            table.add_row("", Text(f"cannot be served: {model['problem']}", style="red"), end_section=True)
    return table


def shorten(value: Any, limit: int = 6) -> str:
    """A value for humans: long lists as their first items and a count."""
    if isinstance(value, list | tuple):
        if len(value) > limit:
            head = ", ".join(shorten(v) for v in value[:limit])
            return f"[{head}, … {len(value)} in all]"
        return "[" + ", ".join(shorten(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shorten(v)}" for k, v in value.items()) + "}"
    return str(value)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as ``a.b: value`` rows."""
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            rows.extend(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, shorten(value))]


def model_details(model: dict[str, Any]) -> PlainTable:
    """Every field of one catalog entry (profiles included, long label lists shortened)."""
    table = PlainTable(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("name", str(model.get("name")))
    table.add_row("kind", model_kind(model))
    table.add_row("versions", ", ".join(str(v) for v in model.get("versions", ())) or "-")
    table.add_row("max batch", str(model.get("max_batch_size", "")))
    for key in ("inputs", "outputs"):
        table.add_row(key, "\n".join(tensor_text(s) for s in model.get(key, ())) or "-")
    if model.get("problem"):
        table.add_row("problem", Text(str(model["problem"]), style="red"))
    skip = {*GENERIC_FIELDS, "type", "kind"}
    for key, value in model.items():
        if key not in skip:
            for field, text in flatten(value, key):
                table.add_row(field, text)
    return table
