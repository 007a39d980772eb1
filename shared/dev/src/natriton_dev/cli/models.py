"""``natriton models``: the model catalog the router publishes to the NATS KV bucket ``natriton_models``, and
model hot reload.

    natriton models [NAME]            the catalog (``natriton models show [NAME]``)
    natriton models load NAME         load (or reload: new versions appear) a model in Triton, no restarts
    natriton models unload NAME       unload it: it leaves the catalog

Load and unload go to the router's control endpoint ``natriton.v1.control.models``; Triton must run with
``--model-control-mode=explicit``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    ERROR_EXIT_CODES,
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
    control_request,
    plain,
    reported,
    resolve_nats_url,
    run,
    shown_url,
)
from natriton_dev.cli.kv import model_kind, no_catalog_message, read_catalog, tensor_text

GENERIC_FIELDS = ("name", "versions", "task", "max_batch_size", "inputs", "outputs", "problem")
"""Shown as columns; every other field of a catalog entry is shown by ``natriton models NAME``."""
DEFAULT_CONTROL_TIMEOUT_S = 120.0
"""How long ``load``/``unload`` wait for the router (loading a big model takes a while)."""


class ModelsGroup(TyperGroup):
    """``natriton models [NAME] [options]`` is ``natriton models show [NAME] [options]``: the listing stays the
    default, ``load`` and ``unload`` are subcommands (a model named like one: ``natriton models show load``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: typer vendors its own click
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["show", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="models",
    cls=ModelsGroup,
    help="The model catalog (natriton models [NAME]) and model hot reload (natriton models load|unload NAME).",
    no_args_is_help=False,
)
ModelArgument = Annotated[str, typer.Argument(help="The model (a directory of Triton's model repository).")]
ControlTimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the router to finish.")
]


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
        out.emit({"ok": True, "nats_url": shown_url(resolved.url), "models": models})
        if out.json_mode:
            return
        if not models:
            out.print("the catalog is empty (Triton serves no models?)")
        elif name is not None:
            out.print(model_details(models[0]))
        else:
            out.print(models_table(models))


app.command("show")(models_command)


@app.command("load")
def load_command(
    name: ModelArgument,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: ControlTimeoutOption = DEFAULT_CONTROL_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Load a model in Triton (or reload it: versions added to its directory appear) and publish it to the catalog.

    Needs Triton with --model-control-mode=explicit. No service restarts.

    JSON: {"ok", "nats_url", "action", "model", "message", "ready_versions", "states": [{version, state, reason}]}.
    """
    control("load", name, nats_url, connect_timeout, timeout_s, json_output, verbose)


@app.command("unload")
def unload_command(
    name: ModelArgument,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: ControlTimeoutOption = DEFAULT_CONTROL_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Unload every version of a model from Triton; its catalog entry is deleted (requests get not_found).

    JSON: as for load.
    """
    control("unload", name, nats_url, connect_timeout, timeout_s, json_output, verbose)


def control(
    action: str, name: str, nats_url: str | None, connect_timeout: float, timeout_s: float, json: bool, verbose: bool
) -> None:
    """Ask a router to load or unload ``name`` and report the outcome (typed errors exit 10-16)."""
    from natriton.messages import ErrorReply

    out = Output(json_mode=json, verbose=verbose)
    with reported(out):
        resolved = resolve_nats_url(nats_url)
        out.note(f"NATS {resolved.describe()}")
        answer = run(_control(resolved.url, connect_timeout, timeout_s, action, name))
        if isinstance(answer, ErrorReply):
            raise CliError(f"{answer.code.value}: {answer.message}", ERROR_EXIT_CODES.get(answer.code, EXIT_FAILED))
        document = plain(answer)
        document.pop("type", None)
        out.emit({"ok": True, "nats_url": shown_url(resolved.url), **document})
        out.print(answer.message)
        for state in answer.states:
            out.print(f"  version {state.version}: {state.state}" + (f" ({state.reason})" if state.reason else ""))


async def _control(url: str, connect_timeout: float, timeout_s: float, action: str, name: str) -> Any:
    from natriton.messages import Codec, ModelControl, ModelControlAnswer
    from natriton.subjects import CONTROL_MODELS

    request = Codec(ModelControl).encode(ModelControl(action=action, model=name))  # type: ignore[arg-type]
    answers: Codec[ModelControlAnswer] = Codec(ModelControlAnswer)
    return await control_request(url, connect_timeout, timeout_s, CONTROL_MODELS, request, answers, "router")


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
