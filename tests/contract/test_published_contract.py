"""The published contract: ``docs/schemas/*.json`` and ``docs/asyncapi.yaml``.

They are generated from the msgspec types (``make contract``); these tests fail when the committed files drift
from the code, when a file is not a valid JSON Schema (Draft 2020-12) or AsyncAPI 3.0.0 document, and when the
schemas and the code disagree about real messages (JSON encoding, as producers and operators see it).

The AsyncAPI 3.0.0 JSON Schema is the official one from the npm package ``@asyncapi/specs``, which
``make asyncapi-specs`` (a prerequisite of ``make test``) fetches into ``.venv/asyncapi-specs/``; its remote
``$ref``s are resolved locally, never over the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing import Registry
from referencing.jsonschema import DRAFT7

from natriton.messages import (
    Batch,
    Classification,
    ClassScore,
    Detection,
    Detections,
    Embedding,
    ErrorReply,
    ImageInput,
    InferRequest,
    InferResponse,
    ModelInfo,
    RawOutputs,
    RoutePolicy,
    Tensor,
    TensorInput,
    TensorSpec,
    TextInput,
)
from natriton.profiles import ClassifierProfile, DetectorProfile, EmbedderProfile, ImageSpec, ResizeMode, TextSpec
from natriton_client.protocol import INFER_SUBJECT, JSON, MSGPACK, ErrorCode, Header
from natriton_dev import contract

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI_SPECS = ROOT / ".venv" / "asyncapi-specs" / "package" / "schemas" / "3.0.0.json"
GOLDEN = Path(__file__).parent / "golden"
DOC_URI = "urn:natriton:test:asyncapi"
TYPES = {published.name: published.type for published in contract.SCHEMAS}

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
LOGITS = Tensor(name="LOGITS", datatype="FP32", shape=(1, 2), data=b"\x00\x00\x80\x3f\x00\x00\x00\x40")
ESPRESSO = Classification(classes=(ClassScore(index=967, label="espresso", score=0.9896),))
MAU = Classification(classes=(ClassScore(index=285, label="Egyptian Mau", score=0.71),))
IMAGE_224 = ImageSpec(input="IMAGE", datatype="UINT8", height=224, width=224, channels_last=True, resize_shorter=256)

# real messages, by published schema
EXAMPLES: dict[str, dict[str, Any]] = {
    "infer_request": {
        "image": InferRequest(model="mobilenet_v2", input=ImageInput(data=JPEG), top_k=3),
        "tensors": InferRequest(
            model="mobilenet_v2",
            input=TensorInput(
                tensors=(Tensor(name="IMAGE", datatype="UINT8", shape=(2, 224, 224, 3), data=bytes(2 * 224 * 224 * 3)),)
            ),
            version="1",
            use_cache=False,
        ),
        "text": InferRequest(model="minilm_l6_v2", input=TextInput(text="A man is eating food.")),
    },
    "reply": {
        "classification": InferResponse(request_id="order-42", model="mobilenet_v2", version="1", result=ESPRESSO),
        "detections": InferResponse(
            request_id="f-1",
            model="face_detector",
            version="1",
            cached=True,
            result=Detections(
                detections=(Detection(label="face", score=0.99, box=(179.0, 57.0, 271.0, 177.0)),),
                image_width=512,
                image_height=512,
            ),
        ),
        "batch": InferResponse(
            request_id="b-1", model="mobilenet_v2", version="1", result=Batch(items=(ESPRESSO, MAU))
        ),
        "embedding": InferResponse(
            request_id="s-1",
            model="minilm_l6_v2",
            version="1",
            result=Embedding(vector=Tensor(name="EMBEDDING", datatype="FP32", shape=(2,), data=bytes(8))),
        ),
        "raw_outputs": InferResponse(request_id="n-1", model="noop", version="1", result=RawOutputs(tensors=(LOGITS,))),
        "error": ErrorReply(request_id="order-42", code=ErrorCode.NOT_FOUND, message="unknown model 'resnet9000'"),
        "overloaded": ErrorReply(request_id="o-1", code=ErrorCode.OVERLOADED, message="busy", retry_after_ms=100),
    },
    "model_info": {
        "classifier": ModelInfo(
            name="mobilenet_v2",
            versions=("1", "2"),
            task="classifier",
            max_batch_size=32,
            inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
            outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
            parameters={"natriton.kind": "classifier"},
            preferred_batch_sizes=(8, 16),
            profile=ClassifierProfile(output="LOGITS", labels=("tench", "goldfish"), image=IMAGE_224),
            cache_ttl_s=60,
        ),
        "detector": ModelInfo(
            name="face_detector",
            versions=("1",),
            task="detector",
            max_batch_size=8,
            inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(300, 300, 3)),),
            outputs=(
                TensorSpec(name="BOXES", datatype="FP32", shape=(-1, 4)),
                TensorSpec(name="SCORES", datatype="FP32", shape=(-1,)),
            ),
            profile=DetectorProfile(
                boxes_output="BOXES",
                scores_output="SCORES",
                class_names=("face",),
                image=ImageSpec(
                    input="IMAGE",
                    datatype="UINT8",
                    height=300,
                    width=300,
                    channels_last=True,
                    resize=ResizeMode.STRETCH,
                ),
            ),
        ),
        "embedder": ModelInfo(
            name="minilm_l6_v2",
            versions=("1",),
            task="embedder",
            max_batch_size=16,
            inputs=(TensorSpec(name="INPUT_IDS", datatype="INT64", shape=(-1,)),),
            outputs=(TensorSpec(name="EMBEDDING", datatype="FP32", shape=(384,)),),
            profile=EmbedderProfile(
                output="EMBEDDING",
                text=TextSpec(tokenizer_file="tokenizer.json", tokenizer_sha256="ab" * 32, max_tokens=128),
            ),
        ),
        "raw_with_problem": ModelInfo(
            name="broken",
            versions=(),
            task="raw",
            max_batch_size=0,
            inputs=(),
            outputs=(),
            problem="natriton.kind: 'classifer' is not one of classifier, detector, embedder, raw",
        ),
    },
    "route_policy": {
        "canary": RoutePolicy(model="mobilenet_v2", weights={"1": 90.0, "2": 10.0}),
        "shadow": RoutePolicy(model="mobilenet_v2", shadow_version="2", shadow_fraction=0.25),
        "latest": RoutePolicy(model="face_detector"),
    },
}
VALID = [(name, case, message) for name, cases in EXAMPLES.items() for case, message in cases.items()]


def _plain(message: Any) -> Any:
    """The documented JSON form of a message, as a producer's JSON parser sees it."""
    return json.loads(msgspec.json.encode(message))


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _invalid() -> list[tuple[str, str, Any, bool]]:
    """(schema, case, JSON value, whether msgspec's decoder rejects it too)."""
    image = _plain(EXAMPLES["infer_request"]["image"])
    reply = _plain(EXAMPLES["reply"]["detections"])
    error = _plain(EXAMPLES["reply"]["error"])
    info = _plain(EXAMPLES["model_info"]["classifier"])
    policy = _plain(EXAMPLES["route_policy"]["canary"])
    return [
        ("infer_request", "missing type", _without(image, "type"), True),
        ("infer_request", "wrong tag", {**image, "type": "infer_response"}, True),
        ("infer_request", "private tag", {**image, "type": "_no_other_request"}, False),
        ("infer_request", "missing model", _without(image, "model"), True),
        ("infer_request", "missing input", _without(image, "input"), True),
        ("infer_request", "unknown input", {**image, "input": {"type": "video", "data": "AA=="}}, True),
        ("infer_request", "input without tag", {**image, "input": {"data": "AA=="}}, True),
        ("infer_request", "top_k as string", {**image, "top_k": "3"}, True),
        ("reply", "missing type", _without(reply, "type"), True),
        ("reply", "wrong tag", {**reply, "type": "infer_request"}, True),
        ("reply", "missing model", _without(reply, "model"), True),
        (
            "reply",
            "box of 3",
            {**reply, "result": {**reply["result"], "detections": [{"label": "face", "score": 1.0, "box": [1, 2, 3]}]}},
            True,
        ),
        ("reply", "unknown result", {**reply, "result": {"type": "poem", "text": "roses"}}, True),
        ("reply", "unknown error code", {**error, "code": "teapot"}, True),
        ("reply", "error without message", _without(error, "message"), True),
        ("model_info", "missing type", _without(info, "type"), False),
        ("model_info", "wrong tag", {**info, "type": "route_policy"}, True),
        ("model_info", "missing name", _without(info, "name"), True),
        ("model_info", "unknown profile", {**info, "profile": {"type": "oracle"}}, True),
        (
            "model_info",
            "bad resize",
            {**info, "profile": {**info["profile"], "image": {**info["profile"]["image"], "resize": "squash"}}},
            True,
        ),
        ("route_policy", "missing model", _without(policy, "model"), True),
        ("route_policy", "weight as string", {**policy, "weights": {"1": "ninety"}}, True),
    ]


INVALID = _invalid()


def load_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((ROOT / contract.SCHEMAS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return schema


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / contract.ASYNCAPI_FILE).read_text(encoding="utf-8"))
    return document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for key, value in node.items() if key not in ("examples", "default") for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _pointer(document: Any, ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} is not a reference inside the document"
    node = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# ------------------------------------------------------------------------------------------------
# the files are what the code generates
# ------------------------------------------------------------------------------------------------
def test_committed_files_are_what_the_code_generates() -> None:
    problems = contract.drift(ROOT)
    assert not problems, (
        "docs/schemas/ or docs/asyncapi.yaml drifted from the msgspec types: run `make contract` and commit them\n\n"
        + "\n\n".join(problems)
    )


def test_check_mode_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert contract.main(["--root", str(tmp_path)]) == 0
    assert contract.main(["--check", "--root", str(tmp_path)]) == 0
    reply = tmp_path / contract.SCHEMAS_DIR / "reply.json"
    reply.write_text(reply.read_text().replace('"infer_response"', '"infer_answer"'))
    (tmp_path / contract.SCHEMAS_DIR / "old.json").write_text("{}\n")
    (tmp_path / contract.ASYNCAPI_FILE).unlink()
    capsys.readouterr()
    assert contract.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "docs/schemas/reply.json: differs from the generated file" in err
    changed = [line.replace(" ", "") for line in err.splitlines() if line.startswith(("-", "+"))]
    assert '-"infer_answer"' in changed and '+"infer_response"' in changed
    assert "docs/asyncapi.yaml: missing" in err
    assert "docs/schemas/old.json: not generated any more" in err
    assert "make contract" in err
    assert contract.main(["--root", str(tmp_path)]) == 0
    assert contract.drift(tmp_path) == []


def test_every_public_header_is_published(asyncapi: dict[str, Any]) -> None:
    published = {
        name
        for message in asyncapi["components"]["messages"].values()
        for name in message.get("headers", {}).get("properties", {})
    }
    public = {value for name, value in vars(Header).items() if name.isupper()}
    assert public == published


# ------------------------------------------------------------------------------------------------
# JSON Schemas
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TYPES)
def test_json_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:natriton:v1:schema:{name}"
    assert schema["title"] and schema["description"]
    assert all(definition.get("description") for definition in schema["$defs"].values()), "a type has no docstring"
    assert "_NoOtherRequest" not in json.dumps(schema), "private types are not published"


def test_bytes_are_base64_in_json() -> None:
    tensor = load_schema("infer_request")["$defs"]["Tensor"]["properties"]["data"]
    assert tensor["type"] == "string" and tensor["contentEncoding"] == "base64"
    assert _plain(EXAMPLES["infer_request"]["image"])["input"]["data"] == "/9j/4AAQSkZJRgABAQAAAQABAAD/2Q=="


@pytest.mark.parametrize(("name", "case", "message"), VALID, ids=[f"{n}-{c}" for n, c, _ in VALID])
def test_real_messages_validate(name: str, case: str, message: Any) -> None:
    data = _plain(message)
    errors = [e.message for e in jsonschema.Draft202012Validator(load_schema(name)).iter_errors(data)]
    assert not errors, errors
    assert msgspec.json.decode(json.dumps(data), type=TYPES[name]) == message


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("v1_*.json")), ids=lambda p: p.name)
def test_golden_messages_validate(path: Path) -> None:
    data = json.loads(path.read_text())
    name = "infer_request" if data["type"] == "infer_request" else "reply"
    jsonschema.Draft202012Validator(load_schema(name)).validate(data)


@pytest.mark.parametrize(("name", "case", "data", "code_rejects"), INVALID, ids=[f"{n}-{c}" for n, c, _, _ in INVALID])
def test_invalid_messages_are_rejected(name: str, case: str, data: Any, code_rejects: bool) -> None:
    assert not jsonschema.Draft202012Validator(load_schema(name)).is_valid(data)
    if code_rejects:  # the schema agrees with what the mesh's decoder refuses
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(json.dumps(data), type=TYPES[name])


# ------------------------------------------------------------------------------------------------
# AsyncAPI
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.protocols.Validator:
    if not ASYNCAPI_SPECS.is_file():
        pytest.fail(f"{ASYNCAPI_SPECS} is missing: run `make asyncapi-specs` (npm pack @asyncapi/specs)")
    specification = json.loads(ASYNCAPI_SPECS.read_text(encoding="utf-8"))
    registry = METASCHEMAS.combine(
        Registry().with_resource(specification["$id"], DRAFT7.create_resource(specification)).crawl()
    )
    resolver = registry.resolver()
    remote = sorted({ref for ref in _refs(specification) if ref.startswith("http")})
    assert remote, "the AsyncAPI schema bundles its definitions under remote $ids"
    for ref in remote:  # every remote $ref is bundled (or a metaschema): nothing is fetched
        resolver.lookup(ref)
    validator_class = jsonschema.validators.validator_for(specification)
    validator_class.check_schema(specification)
    return validator_class(specification, registry=registry)


def test_asyncapi_is_valid_asyncapi_3_0_0(
    asyncapi: dict[str, Any], asyncapi_validator: jsonschema.protocols.Validator
) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    errors = [f"{e.json_path}: {e.message[:300]}" for e in asyncapi_validator.iter_errors(asyncapi)]
    assert not errors, "\n".join(errors)


def test_asyncapi_validator_rejects_a_broken_document(
    asyncapi: dict[str, Any], asyncapi_validator: jsonschema.protocols.Validator
) -> None:
    broken = {**asyncapi, "servers": {"mesh": {"host": "127.0.0.1:4222"}}}  # a server without its protocol
    assert not asyncapi_validator.is_valid(broken)


def test_asyncapi_references_resolve(asyncapi: dict[str, Any]) -> None:
    for ref in _refs(asyncapi):
        _pointer(asyncapi, ref)
    for name, operation in asyncapi["operations"].items():
        channel = _pointer(asyncapi, operation["channel"]["$ref"])
        for ref in [m["$ref"] for m in operation["messages"]]:  # a subset of its channel's messages
            assert ref.startswith(operation["channel"]["$ref"] + "/messages/"), name
        reply = operation.get("reply")
        if reply:
            for ref in [m["$ref"] for m in reply["messages"]]:
                assert ref.startswith(reply["channel"]["$ref"] + "/messages/"), name
        assert channel["messages"], name


def test_asyncapi_subjects_headers_and_error_codes(asyncapi: dict[str, Any]) -> None:
    channels = asyncapi["channels"]
    assert channels["infer"]["address"] == INFER_SUBJECT
    assert channels["sharedResults"]["address"] == "natriton.v1.results.{model}"
    assert asyncapi["servers"]["mesh"]["protocol"] == "nats"
    assert asyncapi["operations"]["inferRequestReply"]["bindings"]["nats"]["queue"] == "natriton.ingest"
    messages = asyncapi["components"]["messages"]
    assert {m["contentType"] for m in messages.values()} == {MSGPACK, JSON}
    request = messages["infer_request.json"]["headers"]
    assert request["properties"][Header.CONTENT_TYPE]["const"] == JSON
    assert set(request["properties"]) == {
        Header.REQUEST_ID,
        Header.TIMEOUT_MS,
        Header.DEADLINE,
        Header.RESULTS_TO,
        Header.CONTENT_TYPE,
        Header.TRACEPARENT,
    }
    error = messages["error.msgpack"]
    codes = error["headers"]["properties"][Header.SERVICE_ERROR_CODE]["enum"]
    assert sorted(codes) == sorted(str(code.status) for code in ErrorCode)
    for code in ErrorCode:
        assert f"| `{code.value}` | {code.status} |" in error["description"]
    assert set(asyncapi["components"]["schemas"]["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}


@pytest.fixture(scope="module")
def payload_registry(asyncapi: dict[str, Any]) -> Registry[Any]:
    registry: Registry[Any] = METASCHEMAS.combine(Registry().with_resource(DOC_URI, DRAFT7.create_resource(asyncapi)))
    return registry


def _payload_validator(asyncapi: dict[str, Any], registry: Registry[Any], tag: str) -> jsonschema.Draft7Validator:
    message = asyncapi["components"]["messages"][f"{tag}.json"]
    return jsonschema.Draft7Validator({"$ref": DOC_URI + message["payload"]["$ref"]}, registry=registry)


@pytest.mark.parametrize(("name", "case", "message"), VALID, ids=[f"{n}-{c}" for n, c, _ in VALID])
def test_asyncapi_payloads_accept_real_messages(
    asyncapi: dict[str, Any], payload_registry: Registry[Any], name: str, case: str, message: Any
) -> None:
    data = _plain(message)
    errors = [e.message for e in _payload_validator(asyncapi, payload_registry, data["type"]).iter_errors(data)]
    assert not errors, errors


@pytest.mark.parametrize(("name", "case", "data", "code_rejects"), INVALID, ids=[f"{n}-{c}" for n, c, _, _ in INVALID])
def test_asyncapi_payloads_reject_invalid_messages(
    asyncapi: dict[str, Any], payload_registry: Registry[Any], name: str, case: str, data: Any, code_rejects: bool
) -> None:
    tags = _message_tags(asyncapi, name)
    assert tags
    assert not any(_payload_validator(asyncapi, payload_registry, tag).is_valid(data) for tag in tags)


def _message_tags(asyncapi: dict[str, Any], name: str) -> set[str]:
    """The tags of the AsyncAPI messages that carry the published type ``name`` (its union members)."""
    root = load_schema(name)
    members = [root["$ref"]] if "$ref" in root else [member["$ref"] for member in root["anyOf"]]
    schemas = {ref.removeprefix("#/$defs/") for ref in members}
    return {
        message["name"]
        for message in asyncapi["components"]["messages"].values()
        if message["payload"]["$ref"].removeprefix("#/components/schemas/") in schemas
    }
