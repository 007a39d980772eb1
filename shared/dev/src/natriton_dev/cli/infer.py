"""``natriton infer``: one request through the mesh, the answer (or the typed error) shown nicely."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import typer
from rich.text import Text

from natriton_client.protocol import (
    AudioInput,
    Batch,
    Classification,
    Detections,
    Embedding,
    ErrorReply,
    ItemResult,
    Reply,
    SpeechSegments,
    Tensor,
)
from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    ERROR_EXIT_CODES,
    EXIT_NO_ANSWER,
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
    plain,
    reported,
    resolve_nats_url,
    run,
    shown_url,
)

AUDIO_SUFFIXES: Final = (".wav", ".flac", ".ogg", ".oga", ".opus")
"""A file ending like this is sent as audio (for speech models), any other file as an image."""
FILE_SUFFIXES: Final = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".npy", *AUDIO_SUFFIXES)
"""An argument ending like this is meant as a file, so a missing one is an error rather than text."""


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly one kind of input for :meth:`MeshClient.infer`."""

    image: bytes | None = None
    text: str | None = None
    tensors: tuple[Tensor, ...] | None = None
    audio: bytes | None = None
    """An audio file (WAV, FLAC or OGG)."""

    def audio_input(self) -> AudioInput | None:
        """The audio as the protocol's input (None when the payload is something else)."""
        return AudioInput(data=self.audio) if self.audio is not None else None

    def describe(self) -> str:
        """``image (37 KB)``, ``text (21 characters)``, ``tensors IMAGE UINT8 [1,224,224,3]``, ``audio (90 KB)``."""
        if self.image is not None:
            return f"image ({len(self.image) / 1024:.0f} KB)"
        if self.audio is not None:
            return f"audio ({len(self.audio) / 1024:.0f} KB)"
        if self.text is not None:
            return f"text ({len(self.text)} characters)"
        return "tensors " + ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in self.tensors or ())


def load_tensor(path: Path, input_name: str) -> Tensor:
    """A ``.npy`` array as a wire tensor named ``input_name`` (batch dimension first, as the model expects)."""
    import numpy as np

    from natriton.tensors import to_tensor

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path} as a .npy array: {exc}", EXIT_USAGE) from None
    try:
        return to_tensor(input_name, np.ascontiguousarray(array))
    except (KeyError, ValueError, TypeError) as exc:
        raise CliError(f"{path}: dtype {array.dtype} cannot be sent as a tensor ({exc})", EXIT_USAGE) from None


def choose_payload(source: str | None, text: str | None, tensor_files: list[Path], input_names: list[str]) -> Payload:
    """What to send: ``--tensor-file``s, ``--text``, an image file, or the argument as text."""
    given = sum(bool(x) for x in (source is not None, text is not None, tensor_files))
    if given != 1:
        raise CliError("give exactly one input: an image or audio FILE, TEXT (or --text), or --tensor-file", EXIT_USAGE)
    if tensor_files:
        if len(input_names) != len(tensor_files):
            raise CliError("give one --input-name per --tensor-file (in the same order)", EXIT_USAGE)
        for path in tensor_files:
            if not path.is_file():
                raise CliError(f"no such file: {path}", EXIT_USAGE)
        return Payload(tensors=tuple(load_tensor(p, n) for p, n in zip(tensor_files, input_names, strict=True)))
    if text is not None:
        return Payload(text=text)
    assert source is not None
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".npy":
            raise CliError(f"{path} is a tensor: pass it as --tensor-file {path} --input-name NAME", EXIT_USAGE)
        if path.suffix.lower() in AUDIO_SUFFIXES:
            return Payload(audio=path.read_bytes())
        return Payload(image=path.read_bytes())
    if path.is_dir():
        raise CliError(f"{path} is a directory, not an image or audio file", EXIT_USAGE)
    if not any(c.isspace() for c in source) and source.lower().endswith(FILE_SUFFIXES):
        raise CliError(f"no such file: {source} (use --text to send it as text)", EXIT_USAGE)
    return Payload(text=source)


# ------------------------------------------------------------------------------------------------ rendering
def _tensor_values(tensor: Tensor) -> Any:
    import numpy as np

    from natriton.tensors import to_array

    return np.asarray(to_array(tensor))


def item_renderables(result: ItemResult) -> list[Any]:
    """Rich renderables for one item's result."""
    if isinstance(result, Classification):
        table = PlainTable("#", "label", "index", "score", "", box=None, header_style="bold")
        for rank, entry in enumerate(result.classes, 1):
            bar = "█" * max(1, round(entry.score * 30)) if entry.score > 0 else ""
            table.add_row(str(rank), entry.label, str(entry.index), f"{entry.score:.4f}", Text(bar, style="cyan"))
        return [table]
    if isinstance(result, Detections):
        heading = Text(
            f"{len(result.detections)} detection(s) in a {result.image_width}x{result.image_height} image", style="bold"
        )
        table = PlainTable("#", "label", "score", "x1", "y1", "x2", "y2", box=None, header_style="bold")
        for rank, detection in enumerate(result.detections, 1):
            table.add_row(str(rank), detection.label, f"{detection.score:.3f}", *(f"{v:.0f}" for v in detection.box))
        return [heading, table] if result.detections else [heading]
    if isinstance(result, Embedding):
        vector = _tensor_values(result.vector).reshape(-1).astype("float64")
        head = ", ".join(f"{v:+.4f}" for v in vector[:8])
        more = ", …" if vector.size > 8 else ""
        norm = float((vector**2).sum() ** 0.5)
        return [
            Text(f"embedding: {vector.size} dimensions ({result.vector.datatype}), L2 norm {norm:.4f}", style="bold"),
            Text(f"[{head}{more}]"),
        ]
    if isinstance(result, SpeechSegments):
        heading = Text(f"{len(result.segments)} speech segment(s) in {result.duration_s:.2f} s of audio", style="bold")
        table = PlainTable("#", "start", "end", "confidence", box=None, header_style="bold")
        for rank, segment in enumerate(result.segments, 1):
            table.add_row(str(rank), f"{segment.start_s:.2f} s", f"{segment.end_s:.2f} s", f"{segment.confidence:.3f}")
        return [heading, table] if result.segments else [heading]
    table = PlainTable("output", "datatype", "shape", "min", "max", "mean", box=None, header_style="bold")
    for tensor in result.tensors:
        values = _tensor_values(tensor)
        numeric = values.dtype.kind in "biuf" and values.size > 0
        stats = (
            (f"{values.min():.4g}", f"{values.max():.4g}", f"{values.astype('float64').mean():.4g}")
            if numeric
            else ("", "", "")
        )
        table.add_row(tensor.name, tensor.datatype, str(list(tensor.shape)), *stats)
    return [table]


def render_reply(reply: Reply, latency_ms: float, out: Output) -> None:
    """The answer for humans."""
    if isinstance(reply, ErrorReply):
        retry = f" (retry after {reply.retry_after_ms} ms)" if reply.retry_after_ms is not None else ""
        out.print(Text(f"error {reply.code.value}: {reply.message}{retry}", style="bold red"))
        out.print(Text(f"request id {reply.request_id}", style="dim"))
        return
    source = "cache hit" if reply.cached else "inference"
    out.print(
        Text.assemble(
            (f"{reply.model}", "bold"),
            f" version {reply.version}  ",
            (f"{latency_ms:.1f} ms", "cyan"),
            f"  [{source}]  ",
            (f"request id {reply.request_id}", "dim"),
        )
    )
    items = reply.result.items if isinstance(reply.result, Batch) else (reply.result,)
    for index, item in enumerate(items):
        if len(items) > 1:
            out.print(Text(f"item {index}", style="bold underline"))
        for renderable in item_renderables(item):
            out.print(renderable)


def reply_document(reply: Reply, latency_ms: float, nats_url: str) -> dict[str, Any]:
    """The JSON output: the reply as the protocol's JSON encoding has it (bytes as base64), plus timing."""
    body = plain(reply)
    if isinstance(reply, ErrorReply):
        return {
            "ok": False,
            "request_id": reply.request_id,
            "error": {"code": reply.code.value, "message": reply.message, "retry_after_ms": reply.retry_after_ms},
            "latency_ms": round(latency_ms, 3),
            "nats_url": shown_url(nats_url),
        }
    return {
        "ok": True,
        "request_id": reply.request_id,
        "model": reply.model,
        "version": reply.version,
        "cached": reply.cached,
        "latency_ms": round(latency_ms, 3),
        "result": body["result"],
        "nats_url": shown_url(nats_url),
    }


async def send(
    url: str,
    connect_timeout: float,
    model: str,
    payload: Payload,
    *,
    version: str,
    top_k: int,
    use_cache: bool,
    timeout_s: float,
    request_id: str,
) -> tuple[Reply, float]:
    """One request/reply through ``natriton.v1.infer``; the reply and its latency in ms."""
    import nats.errors

    from natriton_client.aio import MeshClient

    nc = await connect_nats(url, connect_timeout, name="natriton-infer")
    client = MeshClient(nc)
    try:
        started = time.perf_counter()
        try:
            reply = await client.infer(
                model,
                image=payload.image,
                text=payload.text,
                tensors=payload.tensors,
                audio=payload.audio_input(),
                version=version,
                top_k=top_k,
                use_cache=use_cache,
                timeout_s=timeout_s,
                request_id=request_id,
            )
        except nats.errors.NoRespondersError:
            raise CliError(
                f"nothing answers on natriton.v1.infer at {shown_url(url)} (is ingest running?)", EXIT_NO_ANSWER
            ) from None
        except nats.errors.TimeoutError:
            raise CliError(f"no answer within {timeout_s + 1:g} s", EXIT_NO_ANSWER) from None
        except msgspec.MsgspecError as exc:
            raise CliError(f"the answer does not decode as a reply: {exc}", EXIT_NO_ANSWER) from None
        return reply, (time.perf_counter() - started) * 1000
    finally:
        await close_quietly(nc)


def infer_command(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="FILE|TEXT",
            help="An image file (JPEG/PNG), or an audio file (.wav, .flac, .ogg) for speech models; anything else is "
            "sent as text.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The model's name (natriton models lists them).")] = "",
    text: Annotated[
        str | None, typer.Option("--text", "-t", help="Send this text (for text models).", show_default=False)
    ] = None,
    tensor_file: Annotated[
        list[Path] | None,
        typer.Option("--tensor-file", help="A .npy array sent as a raw tensor (batch dimension first); repeatable."),
    ] = None,
    input_name: Annotated[
        list[str] | None, typer.Option("--input-name", help="The model input each --tensor-file feeds.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to return (classifiers).")] = 5,
    version: Annotated[str, typer.Option("--version", help="A model version (default: the routing policy's).")] = "",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the result cache.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.01, help="The request's deadline in seconds.")] = 10.0,
    request_id: Annotated[
        str, typer.Option("--request-id", help="Natriton-Request-Id to send (default: a new one).")
    ] = "",
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Send one inference request and show the answer (or the typed error).

    Classes, detections, an embedding summary, speech segments or raw output tensors.

    The request id is printed: `natriton trace ID` shows the request's hops. Exit status per typed error:
    invalid_argument 10, not_found 11, payload_too_large 12, deadline_exceeded 13, overloaded 14,
    unavailable 15, internal 16.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        if not model:
            raise CliError("--model is required (natriton models lists them)", EXIT_USAGE)
        payload = choose_payload(source, text, list(tensor_file or []), list(input_name or []))
        resolved = resolve_nats_url(nats_url)
        out.note(f"NATS {resolved.describe()}")
        out.note(f"sending {payload.describe()} to {model}")
        reply, latency_ms = run(
            send(
                resolved.url,
                connect_timeout,
                model,
                payload,
                version=version,
                top_k=top_k,
                use_cache=not no_cache,
                timeout_s=timeout,
                request_id=request_id or uuid.uuid4().hex,
            )
        )
        out.emit(reply_document(reply, latency_ms, resolved.url))
        if not out.json_mode:
            render_reply(reply, latency_ms, out)
        if isinstance(reply, ErrorReply):
            raise typer.Exit(ERROR_EXIT_CODES.get(reply.code, 1))
