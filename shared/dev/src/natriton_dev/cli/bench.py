"""``natriton bench``: a closed-loop load test of any running mesh (it starts nothing).

``--concurrency C`` workers each send a request, wait for its answer and send the next, until ``--requests N`` have
been sent or ``--duration S`` has passed. Reports throughput, latency percentiles of the answered requests and
errors by code. The result cache is bypassed unless ``--cache`` is given (otherwise it measures Redis).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from nats.aio.client import Client as NATS
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from natriton_client.protocol import ErrorReply, InferResponse
from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    EXIT_FAILED,
    EXIT_NO_ANSWER,
    EXIT_OK,
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
    shown_url,
)
from natriton_dev.cli.infer import Payload

DEFAULT_TEXT: Final = "A man is eating a piece of bread."
PERCENTILES: Final = (50, 90, 99)


@dataclass(slots=True)
class BenchResult:
    """What a run measured."""

    latencies_ms: list[float] = field(default_factory=list)
    """Of the requests that got an answer (success or typed error)."""
    succeeded: int = 0
    cached: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    duration_s: float = 0.0

    @property
    def failed(self) -> int:
        """Requests that did not succeed (typed errors, timeouts, no responders)."""
        return sum(self.errors.values())


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    """min, mean, p50, p90, p99, max in ms (all 0 without samples)."""
    if not latencies_ms:
        return {"min": 0.0, "mean": 0.0, **{f"p{p}": 0.0 for p in PERCENTILES}, "max": 0.0}
    import numpy as np

    values = np.asarray(latencies_ms, dtype=np.float64)
    summary = {"min": float(values.min()), "mean": float(values.mean())}
    summary.update({f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES})
    summary["max"] = float(values.max())
    return {k: round(v, 3) for k, v in summary.items()}


def result_document(
    result: BenchResult, *, nats_url: str, model: str, input_text: str, concurrency: int
) -> dict[str, Any]:
    """The JSON report (stable keys)."""
    duration = result.duration_s
    return {
        "ok": result.succeeded > 0,
        "nats_url": shown_url(nats_url),
        "model": model,
        "input": input_text,
        "concurrency": concurrency,
        "requests": result.sent,
        "succeeded": result.succeeded,
        "failed": result.failed,
        "cached": result.cached,
        "errors_by_code": dict(sorted(result.errors.items())),
        "duration_s": round(duration, 3),
        "throughput_rps": round(result.succeeded / duration, 2) if duration > 0 else 0.0,
        "latency_ms": latency_summary(result.latencies_ms),
    }


async def closed_loop(
    nc: NATS,
    model: str,
    payload: Payload,
    *,
    concurrency: int,
    requests: int | None,
    duration_s: float | None,
    timeout_s: float,
    use_cache: bool,
    top_k: int,
    on_done: Any = None,
) -> BenchResult:
    """Run the load: ``concurrency`` workers, each one request in flight, until ``requests`` or ``duration_s``."""
    import nats.errors

    from natriton_client.aio import MeshClient

    client = MeshClient(nc)
    result = BenchResult()
    started = time.perf_counter()
    end = started + duration_s if duration_s else None

    def more() -> bool:
        if end is not None:
            return time.perf_counter() < end
        return result.sent < (requests or 0)

    async def worker() -> None:
        while more():
            if nc.is_closed:
                raise CliError("the NATS connection closed during the run", EXIT_NO_ANSWER)
            result.sent += 1
            sent_at = time.perf_counter()
            try:
                reply = await client.infer(
                    model,
                    image=payload.image,
                    text=payload.text,
                    tensors=payload.tensors,
                    audio=payload.audio_input(),
                    top_k=top_k,
                    use_cache=use_cache,
                    timeout_s=timeout_s,
                )
            except nats.errors.NoRespondersError:
                result.errors["no_responders"] += 1
                await asyncio.sleep(0.05)  # nothing listens: do not spin
            except nats.errors.TimeoutError:
                result.errors["timeout"] += 1
            except nats.errors.ConnectionClosedError:
                raise CliError("the NATS connection closed during the run", EXIT_NO_ANSWER) from None
            else:
                result.latencies_ms.append((time.perf_counter() - sent_at) * 1000)
                if isinstance(reply, ErrorReply):
                    result.errors[reply.code.value] += 1
                elif isinstance(reply, InferResponse):
                    result.succeeded += 1
                    result.cached += reply.cached
            if on_done is not None:
                on_done(result)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        result.duration_s = time.perf_counter() - started
    return result


def default_payload(kind: str, image: Path | None, sample: str | None, text: str | None) -> tuple[Payload, str]:
    """The request body: --image, --sample, --text, else a sample photo (or a sentence for text models)."""
    if sum(x is not None for x in (image, sample, text)) > 1:
        raise CliError("give at most one of --image, --sample and --text", EXIT_USAGE)
    if image is not None:
        if not image.is_file():
            raise CliError(f"no such file: {image}", EXIT_USAGE)
        return Payload(image=image.read_bytes()), f"image {image}"
    if text is not None or (sample is None and kind == "embedder"):
        chosen = text if text is not None else DEFAULT_TEXT
        return Payload(text=chosen), f"text {chosen!r}"
    wanted = sample or "coffee.jpg"
    try:
        from natriton_dev.images import sample_photos

        photos = sample_photos()
    except ImportError as exc:
        raise CliError(f"sample photos need scikit-image ({exc}); pass --image FILE", EXIT_USAGE) from None
    names = {name: name for name in photos} | {name.rsplit(".", 1)[0]: name for name in photos}
    if wanted not in names:
        raise CliError(f"no sample photo {wanted!r} (samples: {', '.join(sorted(photos))})", EXIT_USAGE)
    return Payload(image=photos[names[wanted]]), f"sample {names[wanted]}"


async def _model_kind(nc: NATS, model: str, timeout_s: float) -> str:
    from natriton_dev.cli.kv import model_kind, read_catalog

    try:
        catalog = await read_catalog(nc, timeout_s=timeout_s) or []
    except CliError:
        return ""
    return next((model_kind(m) for m in catalog if m.get("name") == model), "")


def render_result(document: dict[str, Any], out: Output) -> None:
    """The report for humans."""
    latency = document["latency_ms"]
    table = PlainTable(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("mesh", f"{shown_url(document['nats_url'])}  model {document['model']}  {document['input']}")
    table.add_row(
        "requests",
        f"{document['requests']} sent, {document['succeeded']} succeeded ({document['cached']} from cache), "
        f"{document['failed']} failed, concurrency {document['concurrency']}",
    )
    table.add_row("duration", f"{document['duration_s']:.2f} s")
    table.add_row("throughput", Text(f"{document['throughput_rps']:.1f} req/s", style="bold cyan"))
    table.add_row(
        "latency",
        "  ".join(f"{k} {latency[k]:.1f} ms" for k in ("p50", "p90", "p99")) + f"  (max {latency['max']:.1f} ms)",
    )
    if document["errors_by_code"]:
        table.add_row(
            "errors", Text(", ".join(f"{code} {n}" for code, n in document["errors_by_code"].items()), style="red")
        )
    out.print(table)


def bench_command(
    nats_url: NatsUrlOption = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The model to load.")] = "mobilenet_v2",
    image: Annotated[Path | None, typer.Option("--image", help="Send this image file.", show_default=False)] = None,
    sample: Annotated[
        str | None,
        typer.Option("--sample", help="A bundled photo: coffee, chelsea, astronaut, grace_hopper.", show_default=False),
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Send this text.", show_default=False)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight.")] = 8,
    requests: Annotated[
        int | None, typer.Option("--requests", "-n", min=1, help="Requests to send (default 200).", show_default=False)
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", "-d", min=0.1, help="Seconds to run instead.", show_default=False)
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Requests sent first and not counted.")] = 2,
    timeout: Annotated[float, typer.Option("--timeout", min=0.01, help="Each request's deadline in seconds.")] = 10.0,
    cache: Annotated[bool, typer.Option("--cache", help="Let answers come from the result cache.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes per answer (classifiers).")] = 5,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Load-test a running mesh (closed loop): throughput, p50/p90/p99 latency, errors by code.

    Starts nothing: point it at any mesh with --nats-url.

    JSON: {"ok", "nats_url", "model", "input", "concurrency", "requests", "succeeded", "failed", "cached",
    "errors_by_code", "duration_s", "throughput_rps", "latency_ms": {"min", "mean", "p50", "p90", "p99", "max"}}.
    Exit status 1 when no request succeeded.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        if requests is not None and duration is not None:
            raise CliError("give --requests or --duration, not both", EXIT_USAGE)
        if requests is None and duration is None:
            requests = 200
        resolved = resolve_nats_url(nats_url)
        out.note(f"NATS {resolved.describe()}")
        document = run(
            _bench(
                resolved.url,
                connect_timeout,
                model,
                image,
                sample,
                text,
                concurrency=concurrency,
                requests=requests,
                duration_s=duration,
                warmup=warmup,
                timeout_s=timeout,
                use_cache=cache,
                top_k=top_k,
                out=out,
            )
        )
        out.emit(document)
        if not out.json_mode:
            render_result(document, out)
        raise typer.Exit(EXIT_OK if document["ok"] else EXIT_FAILED)


async def _bench(
    url: str,
    connect_timeout: float,
    model: str,
    image: Path | None,
    sample: str | None,
    text: str | None,
    *,
    concurrency: int,
    requests: int | None,
    duration_s: float | None,
    warmup: int,
    timeout_s: float,
    use_cache: bool,
    top_k: int,
    out: Output,
) -> dict[str, Any]:
    nc = await connect_nats(url, connect_timeout, name="natriton-bench")
    try:
        kind = "" if (image or sample or text) else await _model_kind(nc, model, connect_timeout)
        payload, input_text = default_payload(kind, image, sample, text)
        common: dict[str, Any] = {"timeout_s": timeout_s, "use_cache": use_cache, "top_k": top_k}
        if warmup:
            out.note(f"warming up with {warmup} request(s)")
            await closed_loop(nc, model, payload, concurrency=1, requests=warmup, duration_s=None, **common)
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if requests else TextColumn("{task.completed:.0f} s"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=out.err,
            transient=True,
            disable=not out.err.is_terminal,
        ) as progress:
            task = progress.add_task(f"{model} x{concurrency}", total=requests or duration_s, status="")
            started = time.perf_counter()

            def on_done(result: BenchResult) -> None:
                elapsed = time.perf_counter() - started
                done = result.succeeded + result.failed
                rate = result.succeeded / elapsed if elapsed > 0 else 0.0
                progress.update(
                    task,
                    completed=done if requests else min(elapsed, duration_s or 0.0),
                    status=f"{rate:.0f} req/s, {result.failed} failed",
                )

            result = await closed_loop(
                nc,
                model,
                payload,
                concurrency=concurrency,
                requests=requests,
                duration_s=duration_s,
                on_done=on_done,
                **common,
            )
    finally:
        await close_quietly(nc)
    return result_document(result, nats_url=url, model=model, input_text=input_text, concurrency=concurrency)
