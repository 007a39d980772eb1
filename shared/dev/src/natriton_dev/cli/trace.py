"""``natriton trace REQUEST_ID``: the hops of one request, as a tree of spans with durations.

Spans come from the JSONL file the local stack records (``natriton up`` runs an OTLP receiver and points the
services at it), from ``--trace-file``, or from a Jaeger query API (``--jaeger-url``). Ingest puts the request id
on its span (``natriton.request_id``); the other hops are in the same trace. The Triton batch a request was part
of is a span of its own trace, linked to the request's route span: it is shown under that span, marked linked.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.text import Text
from rich.tree import Tree

from natriton_dev.cli.common import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    JsonOption,
    Output,
    VerboseOption,
    connect_error_reason,
    reported,
)
from natriton_dev.cli.state import running_stack
from natriton_dev.cli.traces import SpanRecord, read_spans

SHOWN_ATTRIBUTES: Final = (
    "natriton.model",
    "natriton.model.version",
    "natriton.cache",
    "natriton.batch.size",
    "natriton.coalesced",
    "natriton.error.code",
)
"""Attributes printed beside a span's name (all of them are in the JSON output)."""


@dataclass(slots=True)
class SpanNode:
    """A span with its children (and the spans of other traces linked to it)."""

    span: SpanRecord
    children: list[SpanNode] = field(default_factory=list)
    linked: bool = False


def matches(span: SpanRecord, wanted: str) -> bool:
    """Whether ``span`` names the request: its request id, the mesh's id for it, or its trace id."""
    attributes = span.attributes
    return wanted in (str(attributes.get("natriton.request_id", "")), str(attributes.get("natriton.mesh_id", ""))) or (
        span.trace_id == wanted.lower()
    )


def find_trace_ids(spans: list[SpanRecord], wanted: str) -> list[str]:
    """Traces with a span naming the request, oldest first."""
    starts: dict[str, int] = {}
    for span in spans:
        if matches(span, wanted):
            starts[span.trace_id] = min(starts.get(span.trace_id, span.start_ns), span.start_ns)
    return sorted(starts, key=lambda t: starts[t])


def _nodes_of_trace(spans: list[SpanRecord], trace_id: str) -> tuple[list[SpanNode], dict[str, SpanNode]]:
    nodes: dict[str, SpanNode] = {}
    for span in sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: (s.start_ns, s.name)):
        nodes.setdefault(span.span_id, SpanNode(span))
    roots = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_span_id) if node.span.parent_span_id else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            roots.append(node)
    return roots, nodes


def build_tree(spans: list[SpanRecord], trace_id: str, *, with_links: bool = True) -> list[SpanNode]:
    """The trace's spans as trees (normally one root: ingest's span, or the producer's), with each span of another
    trace that links to one of them (a Triton batch) attached below the span it links to."""
    roots, nodes = _nodes_of_trace(spans, trace_id)
    if not with_links:
        return roots
    other_traces: dict[str, dict[str, SpanNode]] = {}
    for span in spans:
        if span.trace_id == trace_id:
            continue
        targets = [
            nodes[link["span_id"]]
            for link in span.links
            if link.get("trace_id") == trace_id and link.get("span_id") in nodes
        ]
        if not targets:
            continue
        if span.trace_id not in other_traces:
            other_traces[span.trace_id] = _nodes_of_trace(spans, span.trace_id)[1]
        linked = other_traces[span.trace_id][span.span_id]
        targets[0].children.append(SpanNode(linked.span, linked.children, linked=True))
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.span.start_ns, n.span.name))
    return roots


def _walk(nodes: list[SpanNode]) -> list[SpanNode]:
    found = []
    for node in nodes:
        found.append(node)
        found.extend(_walk(node.children))
    return found


def trace_start_ns(roots: list[SpanNode]) -> int:
    """The earliest start among the trace's spans (linked spans included)."""
    starts = [n.span.start_ns for n in _walk(roots) if n.span.start_ns]
    return min(starts) if starts else 0


def node_document(node: SpanNode, origin_ns: int) -> dict[str, Any]:
    """A span and its subtree as JSON-ready data."""
    span = node.span
    return {
        **span.as_dict(),
        "duration_ms": round(span.duration_ms, 3),
        "offset_ms": round((span.start_ns - origin_ns) / 1e6, 3) if span.start_ns and origin_ns else 0.0,
        "linked": node.linked,
        "children": [node_document(child, origin_ns) for child in node.children],
    }


def span_label(node: SpanNode, origin_ns: int) -> Text:
    """``ingest infer  natriton-ingest  12.3 ms  +0.0 ms  model=mobilenet_v2``."""
    span = node.span
    label = Text()
    if node.linked:
        label.append("↪ ", style="magenta")
    label.append(span.name, style="bold red" if span.status == "error" else "bold")
    if span.service:
        label.append(f"  {span.service}", style="dim")
    if span.start_ns and span.end_ns:
        label.append(f"  {span.duration_ms:.2f} ms", style="cyan")
        label.append(f"  +{(span.start_ns - origin_ns) / 1e6:.2f} ms", style="dim")
    shown = [f"{k.removeprefix('natriton.')}={span.attributes[k]}" for k in SHOWN_ATTRIBUTES if k in span.attributes]
    if shown:
        label.append("  " + " ".join(shown), style="green")
    if span.status == "error":
        label.append(f"  error: {span.status_message}" if span.status_message else "  error", style="red")
    if node.linked:
        label.append(f"  (linked, trace {span.trace_id[:12]}…)", style="magenta")
    return label


def render_tree(trace_id: str, roots: list[SpanNode]) -> Tree:
    """A rich Tree of one trace."""
    origin = trace_start_ns(roots)
    spans = _walk(roots)
    ends = [n.span.end_ns for n in spans if n.span.end_ns and not n.linked]
    total = f"{(max(ends) - origin) / 1e6:.2f} ms" if ends and origin else "?"
    tree = Tree(Text.assemble(("trace ", "bold"), (trace_id, "bold cyan"), f"  {len(spans)} spans, {total}"))

    def add(branch: Tree, node: SpanNode) -> None:
        child = branch.add(span_label(node, origin))
        for grandchild in node.children:
            add(child, grandchild)

    for root in roots:
        add(tree, root)
    return tree


# ------------------------------------------------------------------------------------------------ Jaeger
def spans_from_jaeger(document: dict[str, Any]) -> list[SpanRecord]:
    """Spans of a Jaeger ``/api/traces`` answer."""
    spans = []
    for trace in document.get("data") or ():
        processes = trace.get("processes") or {}
        for span in trace.get("spans") or ():
            tags = {t.get("key"): t.get("value") for t in span.get("tags") or ()}
            parent = ""
            links = []
            for reference in span.get("references") or ():
                if reference.get("refType") == "CHILD_OF" and reference.get("traceID") == span.get("traceID"):
                    parent = parent or str(reference.get("spanID", ""))
                else:
                    links.append(
                        {"trace_id": str(reference.get("traceID", "")), "span_id": str(reference.get("spanID", ""))}
                    )
            start_ns = int(span.get("startTime", 0)) * 1000
            error = str(tags.get("otel.status_code", "")).upper() == "ERROR" or tags.get("error") is True
            spans.append(
                SpanRecord(
                    trace_id=str(span.get("traceID", "")).rjust(32, "0"),
                    span_id=str(span.get("spanID", "")),
                    parent_span_id=parent,
                    name=str(span.get("operationName", "")),
                    service=str((processes.get(span.get("processID")) or {}).get("serviceName", "")),
                    kind=str(tags.get("span.kind", "")),
                    start_ns=start_ns,
                    end_ns=start_ns + int(span.get("duration", 0)) * 1000,
                    status="error" if error else "unset",
                    status_message=str(tags.get("otel.status_description", "")),
                    attributes={str(k): v for k, v in tags.items() if k},
                    links=[{**link, "trace_id": link["trace_id"].rjust(32, "0")} for link in links],
                )
            )
    return spans


def query_jaeger(base_url: str, request_id: str, *, service: str, timeout_s: float) -> list[SpanRecord]:
    """The traces Jaeger has with ``natriton.request_id = request_id`` (last 24 hours)."""
    now_us = int(time.time() * 1e6)
    query = urllib.parse.urlencode(
        {
            "service": service,
            "tags": json.dumps({"natriton.request_id": request_id}),
            "start": now_us - 24 * 3600 * 1_000_000,
            "end": now_us,
            "limit": 20,
        }
    )
    url = f"{base_url.rstrip('/')}/api/traces?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        raise CliError(f"Jaeger at {base_url} answered HTTP {exc.code} to {url}", EXIT_FAILED) from None
    except OSError as exc:
        reason = connect_error_reason(getattr(exc, "reason", exc))
        raise CliError(f"cannot reach Jaeger at {base_url} ({reason})", EXIT_UNREACHABLE) from None
    except ValueError:
        raise CliError(f"Jaeger at {base_url} did not answer JSON", EXIT_FAILED) from None
    return spans_from_jaeger(document if isinstance(document, dict) else {})


# ------------------------------------------------------------------------------------------------ the command
def wait_for_spans(path: Path, wanted: str, wait_s: float, settle_s: float = 1.0) -> list[SpanRecord]:
    """Read ``path`` until spans naming the request are there and no more of their traces arrive for ``settle_s``
    (services export in batches), or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    last_count, stable_since = -1, time.monotonic()
    while True:
        spans = read_spans(path)
        trace_ids = set(find_trace_ids(spans, wanted))
        count = sum(1 for s in spans if s.trace_id in trace_ids)
        now = time.monotonic()
        if count != last_count:
            last_count, stable_since = count, now
        if trace_ids and now - stable_since >= settle_s:
            return spans
        if now >= deadline:
            return spans
        time.sleep(0.2)


def trace_command(
    request_id: Annotated[
        str, typer.Argument(help="The request's id (Natriton-Request-Id, as natriton infer prints it) or trace id.")
    ],
    trace_file: Annotated[
        Path | None,
        typer.Option(
            "--trace-file",
            help="JSONL spans (default: the file of the local stack started with natriton up).",
            show_default=False,
        ),
    ] = None,
    jaeger_url: Annotated[
        str | None,
        typer.Option("--jaeger-url", help="Query a Jaeger instead, e.g. http://localhost:16686.", show_default=False),
    ] = None,
    jaeger_service: Annotated[
        str, typer.Option("--jaeger-service", help="The service Jaeger searches in.")
    ] = "natriton-ingest",
    wait: Annotated[
        float, typer.Option("--wait", min=0.0, help="Seconds to wait for spans still being exported.")
    ] = 5.0,
    links: Annotated[
        bool, typer.Option("--links/--no-links", help="Show the Triton batch spans linked to the request.")
    ] = True,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", min=0.1, help="Seconds to wait for Jaeger.")
    ] = 5.0,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Show a request's hops as a tree of spans with durations.

    ingest → preprocess → router (queue wait, inference) → postprocess, and the Triton batch linked to it.

    JSON: {"ok", "request_id", "source", "traces": [{"trace_id", "duration_ms", "span_count", "spans": [a tree:
    every span field + duration_ms, offset_ms, linked, children]}]}.
    """
    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        if jaeger_url:
            out.note(f"querying Jaeger at {jaeger_url} (service {jaeger_service})")
            spans = query_jaeger(jaeger_url, request_id, service=jaeger_service, timeout_s=connect_timeout)
            source = f"jaeger {jaeger_url}"
        else:
            path = trace_file
            if path is None:
                stack = running_stack()
                if stack is None or not stack.trace_file:
                    raise CliError(
                        "no trace file: no local stack with tracing runs (natriton up); "
                        "pass --trace-file FILE or --jaeger-url URL",
                        EXIT_USAGE,
                    )
                path = Path(stack.trace_file)
                out.note(f"spans from {path} (the local stack's state file {stack.path})")
            if not path.is_file():
                raise CliError(f"no such trace file: {path}", EXIT_USAGE)
            spans = wait_for_spans(path, request_id, wait)
            source = f"file {path}"
        trace_ids = find_trace_ids(spans, request_id)
        if not trace_ids:
            raise CliError(
                f"no span with natriton.request_id {request_id!r} in {source} "
                "(a wrong id, a request that was sampled out, or spans not exported yet)",
                EXIT_FAILED,
            )
        documents = []
        for trace_id in trace_ids:
            roots = build_tree(spans, trace_id, with_links=links)
            origin = trace_start_ns(roots)
            in_trace = [n for n in _walk(roots) if not n.linked]
            ends = [n.span.end_ns for n in in_trace if n.span.end_ns]
            documents.append(
                {
                    "trace_id": trace_id,
                    "start_ns": origin,
                    "duration_ms": round((max(ends) - origin) / 1e6, 3) if ends and origin else 0.0,
                    "span_count": len(in_trace),
                    "spans": [node_document(root, origin) for root in roots],
                }
            )
            out.print(render_tree(trace_id, roots))
        out.emit({"ok": True, "request_id": request_id, "source": source, "traces": documents})
