"""The public contract as files, generated from the msgspec types: JSON Schemas and an AsyncAPI 3.0 document.

``python -m natriton_dev.contract`` (``make contract``) writes ``docs/schemas/<name>.json`` (JSON Schema Draft
2020-12, one per entry of :data:`SCHEMAS`) and ``docs/asyncapi.yaml`` (AsyncAPI 3.0.0: subjects, messages, headers,
error codes, with the same schemas embedded under ``components/schemas``). ``--check`` writes nothing and exits 1
with a diff summary when a committed file differs from what the code generates; ``make test`` runs the same
comparison (``tests/contract/test_published_contract.py``), so the files cannot drift from the code.

Only *what* is published is listed here (:data:`SCHEMAS`, the header tables, the channels and operations);
every field, tag, default and description is read from the types and their docstrings (attribute docstrings
included), so re-running the generator picks up any change to them. Types whose names start with ``_`` are
private (``_NoOtherRequest`` only makes the request a tagged union) and are left out of the published forms.
Never edit the generated files by hand.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import enum
import functools
import inspect
import itertools
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import msgspec.inspect as mi
import yaml

from natriton.messages import ModelInfo, RoutePolicy, StreamControl, StreamControlAnswer, StreamSource, StreamStatus
from natriton.subjects import (
    CONTROL_STREAMS,
    MODELS_BUCKET,
    ROUTES_BUCKET,
    STREAM_STATUS_BUCKET,
    STREAMS_BUCKET,
    queue_group,
)
from natriton_client.protocol import (
    AUDIO_CHUNKS_PREFIX,
    AUDIO_EVENTS_PREFIX,
    AUDIO_STATE_PREFIX,
    CAMERA_RESULTS_STREAM,
    DETECTIONS_PREFIX,
    EVENTS_PREFIX,
    INFER_SUBJECT,
    INGEST_HEARTBEAT_SUBJECT,
    JSON,
    MAX_REQUEST_ID_LENGTH,
    MSGPACK,
    RESERVED_SUBJECT_PREFIXES,
    RESERVED_SUBJECTS,
    RESULTS_PREFIX,
    SHARED_RESULTS,
    SUBJECT_PREFIX,
    AudioChunk,
    AudioChunkAnswer,
    AudioEvent,
    AudioStreamStateAnswer,
    AudioStreamStateRequest,
    CameraEvent,
    ErrorCode,
    ErrorReply,
    FrameResult,
    Header,
    Heartbeat,
    PublicRequest,
    Reply,
)

REPO_ROOT: Final = Path(__file__).resolve().parents[4]
SCHEMAS_DIR: Final = "docs/schemas"
ASYNCAPI_FILE: Final = "docs/asyncapi.yaml"
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX: Final = "urn:natriton:v1:schema:"
API_VERSION: Final = SUBJECT_PREFIX.rsplit(".v", 1)[1] + ".0.0"
GENERATED: Final = (
    "Generated from the msgspec types by `python -m natriton_dev.contract` (`make contract`); do not edit."
)

ENCODING_NOTE: Final = (
    f"This schema describes the JSON encoding (`Content-Type: {JSON}`), where byte fields are base64 strings "
    f"(`contentEncoding: base64`). In MessagePack (`{MSGPACK}`, the default) the same fields are raw `bin` values; "
    "everything else is identical. Readers ignore unknown fields."
)
KV_NOTE: Final = "KV values are always JSON; byte fields (if any) are base64 strings. Readers ignore unknown fields."


@dataclass(frozen=True)
class Published:
    """One published message type: its file name (``docs/schemas/<name>.json``), title and summary."""

    name: str
    type: Any
    title: str
    summary: str
    note: str = ENCODING_NOTE


SCHEMAS: Final[tuple[Published, ...]] = (
    Published(
        "infer_request",
        PublicRequest,
        "Natriton v1 inference request",
        f"What a producer sends to `{INFER_SUBJECT}`. The `type` tag is required.",
    ),
    Published(
        "reply",
        Reply,
        "Natriton v1 reply",
        "The one answer to a request, a result or a typed error: on the request's reply subject "
        f"(request/reply), or where its `{Header.RESULTS_TO}` header says (fire-and-forget).",
    ),
    Published(
        "model_info",
        ModelInfo,
        "Natriton model catalog entry",
        f"A value of the NATS KV bucket `{MODELS_BUCKET}` (key: the model name), written by the router; "
        f"read it with `nats kv get {MODELS_BUCKET} <model>`.",
        KV_NOTE,
    ),
    Published(
        "route_policy",
        RoutePolicy,
        "Natriton routing policy",
        f"A value of the NATS KV bucket `{ROUTES_BUCKET}` (key: the model name), written by operators; "
        f"read it with `nats kv get {ROUTES_BUCKET} <model>`.",
        KV_NOTE,
    ),
    Published(
        "frame_result",
        FrameResult,
        "Natriton camera frame result",
        f"One per frame of a camera, in frame order, on `{DETECTIONS_PREFIX}.<camera>` (kept by the JetStream stream "
        f"`{CAMERA_RESULTS_STREAM}`: replay a camera with any JetStream consumer).",
    ),
    Published(
        "camera_event",
        CameraEvent,
        "Natriton camera event",
        f"A track appears or leaves, or the counts change, on `{EVENTS_PREFIX}.<camera>` (also kept by "
        f"`{CAMERA_RESULTS_STREAM}`).",
    ),
    Published(
        "stream_source",
        StreamSource,
        "Natriton camera source",
        f"A value of the NATS KV bucket `{STREAMS_BUCKET}` (key: the camera id): a camera to read, written by the "
        f"control endpoint `{CONTROL_STREAMS}` (`natriton stream add`).",
        KV_NOTE,
    ),
    Published(
        "stream_status",
        StreamStatus,
        "Natriton camera status",
        f"A value of the NATS KV bucket `{STREAM_STATUS_BUCKET}` (key: the camera id), written by the ingest copy "
        "that reads the camera.",
        KV_NOTE,
    ),
    Published(
        "stream_control",
        StreamControl,
        "Natriton camera control request",
        f"What an operator sends to `{CONTROL_STREAMS}` (request/reply): add, remove or list cameras.",
    ),
    Published(
        "heartbeat",
        Heartbeat,
        "Natriton service heartbeat",
        f"Every ingest copy says it is alive on `{INGEST_HEARTBEAT_SUBJECT}` every `interval_ms` (JSON). A copy "
        "silent for `dead_after_ms`, or seen with a new `boot`, died with the requests it held: send those again "
        "(the client library does).",
    ),
    Published(
        "stream_control_answer",
        StreamControlAnswer,
        "Natriton camera control answer",
        f"The answer on `{CONTROL_STREAMS}`: the outcome and the cameras concerned, or a typed error.",
    ),
    Published(
        "audio_chunk",
        AudioChunk,
        "Natriton live audio piece",
        f"The next piece of a live audio stream, published on `{AUDIO_CHUNKS_PREFIX}.<stream>` in `seq` order "
        "(fire-and-forget, or request/reply for an acknowledgement).",
    ),
    Published(
        "audio_chunk_answer",
        AudioChunkAnswer,
        "Natriton live audio piece answer",
        "The answer to a piece published with a reply subject: taken, or a typed error (in the piece's encoding).",
    ),
    Published(
        "audio_event",
        AudioEvent,
        "Natriton live audio event",
        f"Speech probabilities, speech starting and ending, and the stream's end, on `{AUDIO_EVENTS_PREFIX}.<stream>`.",
    ),
    Published(
        "audio_stream_state_request",
        AudioStreamStateRequest,
        "Natriton live audio stream state request",
        f"A request on `{AUDIO_STATE_PREFIX}.<stream>` (request/reply; an empty body asks the same).",
    ),
    Published(
        "audio_stream_state_answer",
        AudioStreamStateAnswer,
        "Natriton live audio stream state",
        f"The answer to a request on `{AUDIO_STATE_PREFIX}.<stream>`: where the stream stands, or `not_found`.",
    ),
)

MAX_SUBJECT_LENGTH: Final = 256  # protocol.is_publish_subject

# Which public headers travel on which messages (every name in protocol.Header must appear somewhere).
REQUEST_HEADERS: Final = (
    Header.REQUEST_ID,
    Header.TIMEOUT_MS,
    Header.DEADLINE,
    Header.RESULTS_TO,
    Header.CONTENT_TYPE,
    Header.TRACEPARENT,
)
RESULT_HEADERS: Final = (Header.REQUEST_ID, Header.CONTENT_TYPE, Header.CACHE)
ERROR_HEADERS: Final = (Header.REQUEST_ID, Header.CONTENT_TYPE, Header.SERVICE_ERROR, Header.SERVICE_ERROR_CODE)
REPLY_REQUIRED_HEADERS: Final = (
    Header.REQUEST_ID,
    Header.CONTENT_TYPE,
    Header.SERVICE_ERROR,
    Header.SERVICE_ERROR_CODE,
)
HEADER_VALUES: Final[dict[str, dict[str, Any]]] = {
    Header.REQUEST_ID: {"minLength": 1, "maxLength": MAX_REQUEST_ID_LENGTH},
    Header.TIMEOUT_MS: {"pattern": "^-?[0-9]+$"},
    Header.DEADLINE: {"pattern": "^-?[0-9]+$"},
    Header.RESULTS_TO: {"minLength": 1, "maxLength": MAX_SUBJECT_LENGTH},
    Header.CACHE: {"enum": ["hit", "miss"]},
    Header.SERVICE_ERROR_CODE: {"enum": sorted({str(code.status) for code in ErrorCode})},
}
ENCODINGS: Final = {"msgpack": MSGPACK, "json": JSON}


# --------------------------------------------------------------------------------------------
# Docstrings
# --------------------------------------------------------------------------------------------
def clean(doc: str, namespace: Mapping[str, object] | None = None) -> str:
    """A docstring as Markdown: indentation and hard line wraps removed (paragraphs and ``- `` lists kept),
    ``literals`` and reST roles as `code`; a ``:data:`NAME``` of a number or string in ``namespace`` as its value."""

    def role(match: re.Match[str]) -> str:
        value = (namespace or {}).get(match[2])
        return str(value) if match[1] == "data" and isinstance(value, int | str) else f"`{match[2]}`"

    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith(("- ", "* ", "|")):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    text = "\n\n".join(paragraphs)
    text = re.sub(r":([a-z]+):`~(?:[^`]*\.)?([^`.]+)`", role, text)
    text = re.sub(r":([a-z]+):`([^`]+)`", role, text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _namespace(cls: type) -> dict[str, object]:
    module = sys.modules.get(cls.__module__)
    return vars(module) if module is not None else {}


def _own_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    return clean(doc, _namespace(cls)) if isinstance(doc, str) else ""


@functools.cache
def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under the attributes of ``cls`` and its project base classes (name → text)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        module = klass.__module__.split(".")[0]
        if module in sys.stdlib_module_names or module in ("builtins", "msgspec"):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
        for stmt, after in itertools.pairwise(body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                name = stmt.target.id
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
            else:
                continue
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[name] = clean(after.value.value, _namespace(klass))
    return docs


def _member_note(member: enum.Enum) -> str:
    if isinstance(member, ErrorCode):
        retry = "retryable" if member.retryable else "not retryable"
        return f"`{Header.SERVICE_ERROR_CODE}: {member.status}`, {retry}"
    return ""


# --------------------------------------------------------------------------------------------
# JSON Schema from msgspec, with descriptions and without private types
# --------------------------------------------------------------------------------------------
def named_types(types: Iterable[Any]) -> dict[str, type]:
    """Every Struct and Enum class reachable from ``types``, by the name msgspec gives its schema."""
    found: dict[str, type] = {}
    seen: set[int] = set()

    def visit(node: object) -> None:
        if isinstance(node, tuple | list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, mi.Type | mi.Field) or id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, mi.StructType | mi.EnumType):
            known = found.setdefault(node.cls.__name__, node.cls)
            if known is not node.cls:
                raise ValueError(f"two published types are named {node.cls.__name__}: {known} and {node.cls}")
        for field in msgspec.structs.fields(node):
            visit(getattr(node, field.name))

    visit(mi.multi_type_info(tuple(types)))
    return found


def _describe(components: dict[str, Any], classes: dict[str, type]) -> None:
    """Descriptions from the docstrings: classes, fields (attribute docstrings) and enum members."""
    for name, schema in components.items():
        cls = classes.get(name)
        if cls is None:
            continue
        description = _own_doc(cls)
        if isinstance(cls, enum.EnumMeta):
            docs = attribute_docs(cls)
            lines = []
            member: enum.Enum
            for member in cls:
                note = "; ".join(part for part in (docs.get(member.name, ""), _member_note(member)) if part)
                if note:
                    lines.append(f"- `{member.value}`: {note}")
            description = "\n\n".join(part for part in (description, "\n".join(lines)) if part)
        elif issubclass(cls, msgspec.Struct):
            docs = attribute_docs(cls)
            for field in msgspec.structs.fields(cls):
                if field.name in docs and field.encode_name in schema.get("properties", {}):
                    schema["properties"][field.encode_name]["description"] = docs[field.name]
        if description:
            schema["description"] = description
        elif "description" in schema:
            del schema["description"]


def _without_private(schema: Any, private: set[str], ref_prefix: str) -> Any:
    """``schema`` without references to the ``private`` definitions (a one-member union becomes that member)."""
    if isinstance(schema, list):
        return [_without_private(item, private, ref_prefix) for item in schema]
    if not isinstance(schema, dict):
        return schema
    refs = {f"{ref_prefix}{name}" for name in private}
    if schema.get("$ref") in refs:
        raise ValueError(f"a published schema needs the private type {schema['$ref']}")
    out = dict(schema)
    if "anyOf" in out:
        members = [member for member in out["anyOf"] if not (isinstance(member, dict) and member.get("$ref") in refs)]
        if isinstance(out.get("discriminator"), dict):
            mapping = {tag: ref for tag, ref in out["discriminator"]["mapping"].items() if ref not in refs}
            out["discriminator"] = {**out["discriminator"], "mapping": mapping}
        if len(members) == 1:
            rest = {key: value for key, value in out.items() if key not in ("anyOf", "discriminator")}
            out = {**members[0], **rest}
        else:
            out["anyOf"] = members
    return {key: _without_private(value, private, ref_prefix) for key, value in out.items()}


def components_of(types: Sequence[Any], ref_prefix: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """msgspec's schemas of ``types`` and their components, described and without private types."""
    schemas, components = msgspec.json.schema_components(types, ref_template=ref_prefix + "{name}")
    _describe(components, named_types(types))
    private = {name for name in components if name.startswith("_")}
    roots = [_without_private(root, private, ref_prefix) for root in schemas]
    components = {
        name: _without_private(schema, private, ref_prefix)
        for name, schema in components.items()
        if name not in private
    }
    return roots, components


def json_schema(published: Published) -> dict[str, Any]:
    """The standalone JSON Schema (Draft 2020-12) of one published type."""
    (root,), defs = components_of([published.type], "#/$defs/")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{ID_PREFIX}{published.name}",
        "$comment": GENERATED,
        "title": published.title,
        "description": f"{published.summary}\n\n{published.note}",
        **root,
        "$defs": defs,
    }


def to_asyncapi_schema(schema: Any) -> Any:
    """A Draft 2020-12 schema in the AsyncAPI Schema Object dialect (a superset of JSON Schema Draft 07).

    Fixed-length arrays use ``items: [...]`` + ``additionalItems`` instead of ``prefixItems``; OpenAPI-style
    ``discriminator`` objects are dropped (AsyncAPI's ``discriminator`` is a property name on a base schema,
    and every member already pins its ``type`` tag)."""
    if isinstance(schema, list):
        return [to_asyncapi_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "discriminator" and isinstance(value, dict):
            continue
        if key == "prefixItems":
            out["items"] = to_asyncapi_schema(value)
            if schema.get("items") is False:
                out["additionalItems"] = False
        elif key == "items" and "prefixItems" in schema:
            continue
        else:
            out[key] = to_asyncapi_schema(value)
    return out


# --------------------------------------------------------------------------------------------
# AsyncAPI
# --------------------------------------------------------------------------------------------
def _header_docs() -> dict[str, str]:
    """Public header name → its docstring in :class:`natriton_client.protocol.Header`."""
    docs = attribute_docs(Header)
    names = {attr: value for attr, value in vars(Header).items() if attr.isupper() and isinstance(value, str)}
    used = set(REQUEST_HEADERS) | set(RESULT_HEADERS) | set(ERROR_HEADERS)
    missing = sorted(set(names.values()) - used)
    if missing:
        raise ValueError(
            f"public headers {missing} are in no header table: add them to REQUEST_HEADERS, RESULT_HEADERS or "
            "ERROR_HEADERS in natriton_dev/contract.py"
        )
    return {value: docs.get(attr, "") for attr, value in names.items()}


def headers_schema(names: Sequence[str], content_type: str, *, required: Sequence[str]) -> dict[str, Any]:
    """The headers of one message: every value is a string; ``Content-Type`` is the message's own."""
    docs = _header_docs()
    properties: dict[str, Any] = {}
    for name in names:
        value: dict[str, Any] = {"type": "string", "description": docs[name]}
        value.update({"const": content_type} if name == Header.CONTENT_TYPE else HEADER_VALUES.get(name, {}))
        properties[name] = value
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    needed = [name for name in names if name in required]
    if needed:
        schema["required"] = needed
    return schema


def _error_table() -> str:
    rows = [f"| `code` | `{Header.SERVICE_ERROR_CODE}` | retry? |", "|---|---|---|"]
    rows += [f"| `{c.value}` | {c.status} | {'yes' if c.retryable else 'no'} |" for c in ErrorCode]
    return "\n".join(rows)


@dataclass(frozen=True)
class _Message:
    key: str
    body: dict[str, Any]


def _members(root: dict[str, Any], ref_prefix: str) -> list[str]:
    refs = [root["$ref"]] if "$ref" in root else [member["$ref"] for member in root["anyOf"]]
    return [ref.removeprefix(ref_prefix) for ref in refs]


def _messages(
    root: dict[str, Any],
    classes: dict[str, type],
    encodings: Sequence[str],
    headers: Callable[[type, str], dict[str, Any] | None],
    key_prefix: str = "",
) -> list[_Message]:
    """One message per member of a published (union) type and per encoding (keyed ``<prefix><tag>.<encoding>``)."""
    out = []
    for name in _members(root, "#/components/schemas/"):
        cls = classes[name]
        info = mi.type_info(cls)
        if not isinstance(info, mi.StructType) or not isinstance(info.tag, str):
            raise ValueError(f"{name} is published as a message but is not a tagged Struct")
        for encoding in encodings:
            content_type = ENCODINGS[encoding]
            description = _own_doc(cls)
            if issubclass(cls, ErrorReply):
                description += "\n\n" + _error_table()
            if content_type == MSGPACK:
                description += "\n\nThe payload schema is written for JSON: in MessagePack, byte fields are raw `bin`."
            body: dict[str, Any] = {
                "name": info.tag,
                "title": f"{name} ({encoding})",
                "contentType": content_type,
            }
            message_headers = headers(cls, content_type)
            if message_headers is not None:
                body["headers"] = message_headers
                if Header.REQUEST_ID in message_headers["properties"]:
                    body["correlationId"] = {
                        "description": "The producer's request id, echoed back on the answer (need not be unique).",
                        "location": f"$message.header#/{Header.REQUEST_ID}",
                    }
            body["description"] = description
            body["payload"] = {"$ref": f"#/components/schemas/{name}"}
            out.append(_Message(f"{key_prefix}{info.tag}.{encoding}", body))
    return out


def _request_headers(cls: type, content_type: str) -> dict[str, Any]:
    return headers_schema(REQUEST_HEADERS, content_type, required=[Header.CONTENT_TYPE] if content_type == JSON else [])


def _reply_headers(cls: type, content_type: str) -> dict[str, Any]:
    names = ERROR_HEADERS if issubclass(cls, ErrorReply) else RESULT_HEADERS
    return headers_schema(names, content_type, required=REPLY_REQUIRED_HEADERS)


def _control_headers(cls: type, content_type: str) -> dict[str, Any]:
    """A control endpoint's answer: its encoding, and the NATS micro error headers on a typed error."""
    names: tuple[str, ...] = (Header.CONTENT_TYPE,)
    if issubclass(cls, ErrorReply):
        names = (Header.CONTENT_TYPE, Header.SERVICE_ERROR, Header.SERVICE_ERROR_CODE)
    return headers_schema(names, content_type, required=names)


def _content_type_only(cls: type, content_type: str) -> dict[str, Any]:
    """An answer in the encoding of what it answers."""
    return headers_schema((Header.CONTENT_TYPE,), content_type, required=(Header.CONTENT_TYPE,))


def _no_headers(cls: type, content_type: str) -> None:
    return None


def _refs(messages: Sequence[_Message], channel: str | None = None) -> dict[str, Any] | list[dict[str, str]]:
    if channel is None:
        return {m.key: {"$ref": f"#/components/messages/{m.key}"} for m in messages}
    return [{"$ref": f"#/channels/{channel}/messages/{m.key}"} for m in messages]


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the mesh's public subjects, seen from the mesh."""
    types = [published.type for published in SCHEMAS]
    roots, components = components_of(types, "#/components/schemas/")
    by_name = dict(zip((published.name for published in SCHEMAS), roots, strict=True))
    schemas = dict(components)
    for published, root in zip(SCHEMAS, roots, strict=True):
        if "$ref" not in root:
            alias = "".join(part.title() for part in published.name.split("_"))
            if alias in schemas:
                raise ValueError(f"the schema name {alias} of {published.name} is taken")
            schemas[alias] = {"title": alias, "description": published.summary, **root}
    schemas = {name: to_asyncapi_schema(schema) for name, schema in schemas.items()}
    classes = named_types(types)
    both = list(ENCODINGS)
    requests = _messages(by_name["infer_request"], classes, both, _request_headers)
    replies = _messages(by_name["reply"], classes, both, _reply_headers)
    models = _messages(by_name["model_info"], classes, ["json"], _no_headers)
    routes = _messages(by_name["route_policy"], classes, ["json"], _no_headers)
    frame_results = _messages(by_name["frame_result"], classes, ["msgpack"], _no_headers)
    camera_events = _messages(by_name["camera_event"], classes, ["msgpack"], _no_headers)
    heartbeats = _messages(by_name["heartbeat"], classes, ["json"], _no_headers)
    sources = _messages(by_name["stream_source"], classes, ["json"], _no_headers)
    statuses = _messages(by_name["stream_status"], classes, ["json"], _no_headers)
    stream_requests = _messages(by_name["stream_control"], classes, both, _no_headers)
    stream_answers = _messages(by_name["stream_control_answer"], classes, both, _control_headers, "stream_control.")
    audio_chunks = _messages(by_name["audio_chunk"], classes, both, _no_headers)
    audio_answers = _messages(by_name["audio_chunk_answer"], classes, both, _content_type_only, "audio_chunk.")
    audio_events = _messages(by_name["audio_event"], classes, ["msgpack"], _no_headers)
    audio_states = _messages(by_name["audio_stream_state_answer"], classes, ["msgpack"], _no_headers, "audio_state.")
    audio_state_requests = _messages(by_name["audio_stream_state_request"], classes, ["msgpack"], _no_headers)
    stream_parameter = {"description": "The audio stream id: 1 to 64 of `A-Z a-z 0-9 _ -`."}
    camera_parameter = {"description": "The camera id: 1 to 64 of `A-Z a-z 0-9 _ -`."}
    model_parameter = {"description": "The model name, e.g. `mobilenet_v2`."}
    ingest_queue = {"nats": {"queue": queue_group("ingest"), "bindingVersion": "0.1.0"}}
    channels: dict[str, Any] = {
        "infer": {
            "address": INFER_SUBJECT,
            "title": "Inference requests",
            "description": "Ingest's public endpoint. Request/reply when the request has a NATS reply subject; "
            f"fire-and-forget without one (the answer goes where `{Header.RESULTS_TO}` says).",
            "messages": _refs(requests),
        },
        "inbox": {
            "address": None,
            "title": "The request's reply subject",
            "description": "The reply subject (inbox) the producer's NATS client put on the request. If no ingest "
            "copy runs, NATS itself answers with a no-responders status (empty body, header `Status: 503`).",
            "messages": _refs(replies),
        },
        "sharedResults": {
            "address": f"{RESULTS_PREFIX}.{{model}}",
            "title": "Shared results of a model",
            "description": "Answers (results and errors) of fire-and-forget requests sent with "
            f"`{Header.RESULTS_TO}: {SHARED_RESULTS}`, shared by every subscriber.",
            "parameters": {
                "model": {
                    "description": "The request's model name; `_invalid` when the request could not be read far "
                    "enough to know a model name that is a valid subject token.",
                },
            },
            "messages": _refs(replies),
        },
        "producerResults": {
            "address": "{resultsTo}",
            "title": "The producer's results subject",
            "description": "Answers (results and errors) of fire-and-forget requests sent with "
            f"`{Header.RESULTS_TO}: <subject>`. Requests with a subject that is not a plain subject, or one of the "
            "mesh's own, are dropped (there is nowhere to send the error).",
            "parameters": {
                "resultsTo": {
                    "description": f"The request's `{Header.RESULTS_TO}` header: a subject without wildcards or "
                    f"empty tokens, at most {MAX_SUBJECT_LENGTH} characters, not starting with "
                    + ", ".join(f"`{prefix}`" for prefix in RESERVED_SUBJECT_PREFIXES)
                    + ", and not "
                    + ", ".join(f"`{subject}`" for subject in RESERVED_SUBJECTS)
                    + ".",
                    "examples": ["camera.7.answers"],
                },
            },
            "messages": _refs(replies),
        },
        "modelCatalog": {
            "address": f"$KV.{MODELS_BUCKET}.{{model}}",
            "title": f"The model catalog (NATS KV bucket {MODELS_BUCKET})",
            "description": f"One entry per model (`nats kv get {MODELS_BUCKET} <model>`).",
            "parameters": {"model": model_parameter},
            "messages": _refs(models),
        },
        "routePolicies": {
            "address": f"$KV.{ROUTES_BUCKET}.{{model}}",
            "title": f"Routing policies (NATS KV bucket {ROUTES_BUCKET})",
            "description": f"One policy per model, changed by operators (`nats kv get {ROUTES_BUCKET} <model>`).",
            "parameters": {"model": model_parameter},
            "messages": _refs(routes),
        },
        "cameraDetections": {
            "address": f"{DETECTIONS_PREFIX}.{{camera}}",
            "title": "A camera's frame results",
            "description": f"One result per frame, in frame order; kept by the JetStream stream "
            f"`{CAMERA_RESULTS_STREAM}` for replay.",
            "parameters": {"camera": camera_parameter},
            "messages": _refs(frame_results),
        },
        "cameraEvents": {
            "address": f"{EVENTS_PREFIX}.{{camera}}",
            "title": "A camera's events",
            "description": f"Tracks appearing and leaving, and counts; kept by `{CAMERA_RESULTS_STREAM}`.",
            "parameters": {"camera": camera_parameter},
            "messages": _refs(camera_events),
        },
        "ingestHeartbeats": {
            "address": INGEST_HEARTBEAT_SUBJECT,
            "title": "Ingest heartbeats",
            "description": "Which ingest copies are alive: watch it to send again the requests a dead copy held.",
            "messages": _refs(heartbeats),
        },
        "streamControl": {
            "address": CONTROL_STREAMS,
            "title": "Camera control",
            "description": "Ingest's control endpoint: add (or replace), remove or list cameras. The answer uses "
            "the request's encoding; URL credentials never come back.",
            "messages": _refs(stream_requests),
        },
        "streamControlInbox": {
            "address": None,
            "title": "The control request's reply subject",
            "messages": _refs(stream_answers),
        },
        "streamSources": {
            "address": f"$KV.{STREAMS_BUCKET}.{{camera}}",
            "title": f"Camera sources (NATS KV bucket {STREAMS_BUCKET})",
            "description": f"One source per camera (`nats kv get {STREAMS_BUCKET} <camera>`).",
            "parameters": {"camera": camera_parameter},
            "messages": _refs(sources),
        },
        "audioChunks": {
            "address": f"{AUDIO_CHUNKS_PREFIX}.{{stream}}",
            "title": "A live audio stream's pieces",
            "description": "Every ingest copy hears every piece; the stream's owner (one copy) takes it. Pieces are "
            "put back in `seq` order; `end` closes the stream.",
            "parameters": {"stream": stream_parameter},
            "messages": _refs(audio_chunks),
        },
        "audioChunkInbox": {
            "address": None,
            "title": "The piece's reply subject",
            "messages": _refs(audio_answers),
        },
        "audioEvents": {
            "address": f"{AUDIO_EVENTS_PREFIX}.{{stream}}",
            "title": "A live audio stream's events",
            "description": "In order: speech probabilities per piece, speech starting and ending, the stream's end.",
            "parameters": {"stream": stream_parameter},
            "messages": _refs(audio_events),
        },
        "audioState": {
            "address": f"{AUDIO_STATE_PREFIX}.{{stream}}",
            "title": "Ask where a live audio stream stands",
            "description": "A request with any body; the stream's owner answers.",
            "parameters": {"stream": stream_parameter},
            "messages": _refs(audio_state_requests),
        },
        "audioStateInbox": {
            "address": None,
            "title": "The state request's reply subject",
            "messages": _refs(audio_states),
        },
        "streamStatus": {
            "address": f"$KV.{STREAM_STATUS_BUCKET}.{{camera}}",
            "title": f"Camera status (NATS KV bucket {STREAM_STATUS_BUCKET})",
            "description": "What the ingest copy reading a camera last reported.",
            "parameters": {"camera": camera_parameter},
            "messages": _refs(statuses),
        },
    }
    operations: dict[str, Any] = {
        "inferRequestReply": {
            "action": "receive",
            "channel": {"$ref": "#/channels/infer"},
            "title": "Infer (request/reply)",
            "description": "Exactly one reply per accepted request, before its deadline, in the request's encoding.",
            "bindings": ingest_queue,
            "messages": _refs(requests, "infer"),
            "reply": {"channel": {"$ref": "#/channels/inbox"}, "messages": _refs(replies, "inbox")},
        },
        "inferFireAndForget": {
            "action": "receive",
            "channel": {"$ref": "#/channels/infer"},
            "title": "Infer (fire-and-forget)",
            "description": f"A request without a reply subject. Its answer is published on `{RESULTS_PREFIX}.<model>` "
            f"(`{Header.RESULTS_TO}: {SHARED_RESULTS}`), on the producer's subject "
            f"(`{Header.RESULTS_TO}: <subject>`), or nowhere without the header (the request still warms the "
            "cache). Core NATS is at-most-once: subscribe before publishing.",
            "bindings": ingest_queue,
            "messages": _refs(requests, "infer"),
        },
        "publishSharedResult": {
            "action": "send",
            "channel": {"$ref": "#/channels/sharedResults"},
            "title": "Answer on the shared results subject",
            "messages": _refs(replies, "sharedResults"),
        },
        "publishProducerResult": {
            "action": "send",
            "channel": {"$ref": "#/channels/producerResults"},
            "title": "Answer on the producer's results subject",
            "messages": _refs(replies, "producerResults"),
        },
        "publishModelInfo": {
            "action": "send",
            "channel": {"$ref": "#/channels/modelCatalog"},
            "title": "The router publishes the model catalog",
            "messages": _refs(models, "modelCatalog"),
        },
        "watchRoutePolicies": {
            "action": "receive",
            "channel": {"$ref": "#/channels/routePolicies"},
            "title": "Every router copy follows the routing policies",
            "messages": _refs(routes, "routePolicies"),
        },
        "publishFrameResult": {
            "action": "send",
            "channel": {"$ref": "#/channels/cameraDetections"},
            "title": "The camera's owner publishes each frame's result",
            "messages": _refs(frame_results, "cameraDetections"),
        },
        "publishCameraEvent": {
            "action": "send",
            "channel": {"$ref": "#/channels/cameraEvents"},
            "title": "The camera's owner publishes its events",
            "messages": _refs(camera_events, "cameraEvents"),
        },
        "publishHeartbeat": {
            "action": "send",
            "channel": {"$ref": "#/channels/ingestHeartbeats"},
            "title": "Every ingest copy says it is alive",
            "messages": _refs(heartbeats, "ingestHeartbeats"),
        },
        "controlStreams": {
            "action": "receive",
            "channel": {"$ref": "#/channels/streamControl"},
            "title": "Add, remove or list cameras (request/reply)",
            "bindings": ingest_queue,
            "messages": _refs(stream_requests, "streamControl"),
            "reply": {
                "channel": {"$ref": "#/channels/streamControlInbox"},
                "messages": _refs(stream_answers, "streamControlInbox"),
            },
        },
        "receiveAudioChunk": {
            "action": "receive",
            "channel": {"$ref": "#/channels/audioChunks"},
            "title": "The stream's owner takes its pieces",
            "messages": _refs(audio_chunks, "audioChunks"),
            "reply": {
                "channel": {"$ref": "#/channels/audioChunkInbox"},
                "messages": _refs(audio_answers, "audioChunkInbox"),
            },
        },
        "publishAudioEvent": {
            "action": "send",
            "channel": {"$ref": "#/channels/audioEvents"},
            "title": "The stream's owner publishes its events",
            "messages": _refs(audio_events, "audioEvents"),
        },
        "answerAudioState": {
            "action": "receive",
            "channel": {"$ref": "#/channels/audioState"},
            "title": "The stream's owner says where it stands (request/reply)",
            "messages": _refs(audio_state_requests, "audioState"),
            "reply": {
                "channel": {"$ref": "#/channels/audioStateInbox"},
                "messages": _refs(audio_states, "audioStateInbox"),
            },
        },
        "watchStreamSources": {
            "action": "receive",
            "channel": {"$ref": "#/channels/streamSources"},
            "title": "Every ingest copy follows the camera sources",
            "messages": _refs(sources, "streamSources"),
        },
        "publishStreamStatus": {
            "action": "send",
            "channel": {"$ref": "#/channels/streamStatus"},
            "title": "The camera's owner writes its status",
            "messages": _refs(statuses, "streamStatus"),
        },
    }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:natriton:v1",
        "info": {
            "title": "Natriton inference mesh",
            "version": API_VERSION,
            "description": clean(
                f"""
                The public wire protocol of the Natriton inference mesh: producers send msgspec messages over NATS
                to `{INFER_SUBJECT}` and get one answer per request. Bodies are MessagePack (`{MSGPACK}`, the
                default) or JSON (`{JSON}`); the answer uses the request's encoding. Every message is a map with a
                `type` tag. Request id, deadline, results destination and trace context travel in NATS headers
                (all values are strings). Fields are only ever added within v1; readers ignore unknown fields.

                `components/schemas` holds the definitions of `docs/schemas/*.json` (JSON Schema Draft 2020-12)
                in the AsyncAPI Schema Object dialect. See `docs/protocol.md` for the prose.
                """
            ),
        },
        "defaultContentType": MSGPACK,
        "servers": {
            "mesh": {
                "host": "{hostport}",
                "protocol": "nats",
                "description": "The NATS server (or cluster) of the mesh; `natriton up` prints a local one's URL.",
                "variables": {"hostport": {"default": "127.0.0.1:4222", "description": "host:port of the NATS URL"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": {
                m.key: m.body
                for m in [
                    *requests,
                    *replies,
                    *models,
                    *routes,
                    *frame_results,
                    *camera_events,
                    *heartbeats,
                    *sources,
                    *statuses,
                    *stream_requests,
                    *stream_answers,
                    *audio_chunks,
                    *audio_answers,
                    *audio_events,
                    *audio_states,
                    *audio_state_requests,
                ]
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def _yaml(document: dict[str, Any]) -> str:
    def text(dumper: Any, value: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    dumper: Any = type("ContractDumper", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})
    dumper.add_representer(str, text)
    body = yaml.dump(document, Dumper=dumper, sort_keys=False, allow_unicode=True, width=120)
    return f"# {GENERATED}\n{body}"


def generate() -> dict[str, str]:
    """Every generated file: path relative to the repository root → its content."""
    files = {
        f"{SCHEMAS_DIR}/{published.name}.json": json.dumps(json_schema(published), indent=2, ensure_ascii=False) + "\n"
        for published in SCHEMAS
    }
    files[ASYNCAPI_FILE] = _yaml(asyncapi_document())
    return files


def _stale(root: Path, files: dict[str, str]) -> list[str]:
    directory = root / SCHEMAS_DIR
    found = (path.relative_to(root).as_posix() for path in directory.glob("*.json")) if directory.is_dir() else ()
    return sorted(path for path in found if path not in files)


def drift(root: Path, max_lines: int = 40) -> list[str]:
    """How the committed files differ from what the code generates (empty when they do not)."""
    files = generate()
    problems = []
    for path, expected in files.items():
        target = root / path
        if not target.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = target.read_text(encoding="utf-8")
        if actual != expected:
            diff = list(
                difflib.unified_diff(
                    actual.splitlines(),
                    expected.splitlines(),
                    f"{path} (committed)",
                    f"{path} (generated)",
                    lineterm="",
                )
            )
            shown = "\n".join(diff[:max_lines]) + (
                f"\n... ({len(diff) - max_lines} more diff lines)" * (len(diff) > max_lines)
            )
            problems.append(f"{path}: differs from the generated file\n{shown}")
    problems += [f"{path}: not generated any more (delete it)" for path in _stale(root, files)]
    return problems


def write(root: Path) -> list[str]:
    """Write every generated file under ``root`` (and delete schemas no longer generated); the changed paths."""
    files = generate()
    changed = []
    for path in _stale(root, files):
        (root / path).unlink()
        changed.append(path)
    for path, content in files.items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m natriton_dev.contract",
        description="Generate (or --check) docs/schemas/*.json and docs/asyncapi.yaml from the msgspec types.",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a committed file drifted")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(args.root)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("the published contract is out of date: run `make contract` and commit the result", file=sys.stderr)
            return 1
        print(f"contract up to date: {', '.join(generate())}")
        return 0
    changed = write(args.root)
    print("\n".join(f"wrote {path}" for path in changed) if changed else "contract already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
