"""Writes services/deploy/nats/accounts.conf: the accounts, users and permissions of the locked-down mesh.

``python services/deploy/nats/accounts.py`` rewrites the file; ``--check`` exits 1 when the checked-in file differs
from what this script makes (the contract tests run it), so a subject renamed in ``natriton.subjects`` cannot
silently leave a permission behind.

Design (docs/operations.md, Security):

- account ``MESH``: the four services and the operator, one NKey user per role, each allowed to publish and
  subscribe only where its role needs (derived from the code's subjects, KV buckets, object store and JetStream
  streams); replies to requests a role received (``$SRV`` pings, control requests, producers' inboxes) go through
  ``allow_responses`` instead of a blanket ``_INBOX.>`` publish right; each role's own inboxes are
  ``_INBOX.<role>.>`` (set ``NATRITON_NATS_INBOX_PREFIX=_INBOX.<role>``).
- ``MESH`` exports the public service ``natriton.v1.infer``; tenant accounts (``TENANT_A``, ``TENANT_B``) import
  it. A tenant's producer may publish only ``natriton.v1.infer`` and subscribe only to its own inboxes
  (``_INBOX.<tenant>.>``, the client's ``inbox_prefix``); the answer comes back through the import, and the server
  stamps ``Nats-Request-Info`` with the importing account. Nothing else of the mesh (internal subjects, KV, object
  store, streams, other tenants) exists in a tenant's account.
- every user is an NKey whose public key comes from an environment variable of the nats-server process
  (``NATRITON_NKEY_<USER>``), so the file holds no secret and no deployment-specific key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from natriton import deadletters, subjects
from natriton.frames import FRAMES_PREFIX, STREAM_NAMES
from natriton_client.protocol import (
    AUDIO_CHUNKS_PREFIX,
    AUDIO_EVENTS_PREFIX,
    AUDIO_STATE_PREFIX,
    CAMERA_RESULTS_STREAM,
    DETECTIONS_PREFIX,
    EVENTS_PREFIX,
    INGEST_HEARTBEAT_SUBJECT,
)

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "accounts.conf"
MESH = "MESH"
TENANTS = ("TENANT_A", "TENANT_B")
PUBLIC_SERVICES = (subjects.INFER,)
"""What ``MESH`` exports as services and every tenant imports."""
RESPONSES = '{ max: 1, expires: "10m" }'
"""``allow_responses``: one answer per request received, within 10 minutes (the longest a request may wait)."""
FRAME_STREAMS = tuple(sorted(STREAM_NAMES.values()))


def kv(bucket: str) -> str:
    """The JetStream stream behind a KV bucket."""
    return f"KV_{bucket}"


def obj(bucket: str) -> str:
    """The JetStream stream behind an object store."""
    return f"OBJ_{bucket}"


def stream_read(stream: str) -> list[str]:
    """JetStream API subjects to look up a stream and read it with consumers (KV get/watch/keys, object get)."""
    api = "$JS.API"
    return [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.>",
        f"{api}.CONSUMER.DELETE.{stream}.>",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def stream_write(stream: str) -> list[str]:
    """:func:`stream_read` plus creating and updating the stream (whoever may be first to need it)."""
    return [*stream_read(stream), f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}"]


@dataclass
class Role:
    """One NKey user: what it may publish and subscribe to."""

    user: str
    """Also the name of its NKey variable (``NATRITON_NKEY_<USER>``) and its inbox token."""
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    responses: bool = True
    """Whether it may answer the requests it receives (their reply subjects), once each."""

    @property
    def variable(self) -> str:
        """The environment variable with the user's public NKey."""
        return f"NATRITON_NKEY_{self.user.upper()}"

    @property
    def inbox(self) -> str:
        """The inbox prefix the user connects with (``NATRITON_NATS_INBOX_PREFIX`` / ``inbox_prefix``)."""
        return f"_INBOX.{self.user.lower()}"


def _micro() -> list[str]:
    """NATS micro discovery: every service copy answers ``$SRV.PING|INFO|STATS`` (answers via allow_responses)."""
    return ["$SRV.>"]


def frame_settlement() -> list[str]:
    """What whoever answers a camera frame needs to settle it (:func:`natriton.deadletters.settle_failure`): ack,
    nak or term it, read its consumer's ``max_deliver`` and the original message, store a dead letter."""
    api = "$JS.API"
    return [
        *(
            subject
            for s in FRAME_STREAMS
            for subject in (f"$JS.ACK.{s}.>", f"{api}.CONSUMER.INFO.{s}.>", f"{api}.STREAM.MSG.GET.{s}")
        ),
        *(subject for s in FRAME_STREAMS for subject in (f"{api}.DIRECT.GET.{s}", f"{api}.DIRECT.GET.{s}.>")),
        f"{deadletters.SUBJECT_PREFIX}.>",
    ]


def mesh_roles() -> list[Role]:
    """The roles of account MESH, from the subjects each service's code publishes and subscribes to."""
    results = f"{subjects.RESULTS_PREFIX}.>"
    replies = f"{subjects.REPLIES_PREFIX}.>"
    frames = f"{FRAMES_PREFIX}.>"
    ingest = Role(
        "ingest",
        publish=[
            subjects.PREPROCESS,
            subjects.PREPROCESS_STORED,
            subjects.ROUTE,
            results,
            f"{DETECTIONS_PREFIX}.>",
            f"{EVENTS_PREFIX}.>",
            f"{AUDIO_EVENTS_PREFIX}.>",  # live audio streams' events (their owner)
            frames,
            INGEST_HEARTBEAT_SUBJECT,
            *stream_read(kv(subjects.MODELS_BUCKET)),
            *stream_write(kv(subjects.ROUTES_BUCKET)),  # RouteTable creates the bucket when missing
            *_kv_owner(subjects.STREAMS_BUCKET),
            *_kv_owner(subjects.STREAM_STATUS_BUCKET),
            *_kv_owner(subjects.STREAM_LEASES_BUCKET),
            *stream_write(CAMERA_RESULTS_STREAM),
            *(api for s in FRAME_STREAMS for api in stream_write(s)),
            f"{subjects.AUDIT_PREFIX}.>",  # one audit record per answered request
            *stream_write(subjects.AUDIT_STREAM),
        ],
        subscribe=[
            f"{subjects.INFER} {subjects.queue_group('ingest')}",
            f"{subjects.CONTROL_STREAMS} {subjects.queue_group('ingest')}",
            replies,
            subjects.STAGE_HEARTBEATS,
            INGEST_HEARTBEAT_SUBJECT,  # the other ingest copies: who owns which live audio stream
            f"{AUDIO_CHUNKS_PREFIX}.*",  # every copy hears every piece (no queue group); the owner takes it
            f"{AUDIO_STATE_PREFIX}.*",
            *_micro(),
        ],
    )
    preprocess = Role(
        "preprocess",
        publish=[
            subjects.ROUTE,
            replies,
            subjects.heartbeat_subject("preprocess"),
            *frame_settlement(),
            *stream_read(kv(subjects.MODELS_BUCKET)),
            *stream_read(obj(subjects.MODEL_FILES_BUCKET)),
            *(api for s in FRAME_STREAMS for api in stream_write(s)),
            *stream_write(CAMERA_RESULTS_STREAM),  # ensured at start, like the frame streams
            *stream_write(deadletters.STREAM),
            *(f"$JS.API.STREAM.MSG.DELETE.{s}" for s in FRAME_STREAMS),  # a dead-lettered frame leaves its stream
        ],
        subscribe=[
            f"{subjects.PREPROCESS} {subjects.queue_group('preprocess')}",
            f"{subjects.PREPROCESS_STORED} {subjects.queue_group('preprocess')}",
            *(
                f"{deadletters.MAX_DELIVERIES_ADVISORY}.{s}.> {subjects.queue_group('preprocess')}"
                for s in FRAME_STREAMS
            ),
            subjects.heartbeat_subject("router"),  # which /dev/shm the router copies see (hand-off, decision 0011)
            *_micro(),
        ],
    )
    router = Role(
        "router",
        publish=[
            subjects.POSTPROCESS,
            replies,
            subjects.heartbeat_subject("router"),
            *frame_settlement(),
            *_kv_owner(subjects.MODELS_BUCKET),
            *stream_write(kv(subjects.ROUTES_BUCKET)),  # RouteTable creates the bucket when missing
            *_object_owner(subjects.MODEL_FILES_BUCKET),
        ],
        subscribe=[
            f"{subjects.ROUTE} {subjects.queue_group('router')}",
            f"{subjects.CONTROL_MODELS} {subjects.queue_group('router')}",
            *_micro(),
        ],
    )
    postprocess = Role(
        "postprocess",
        publish=[
            replies,
            subjects.heartbeat_subject("postprocess"),
            *frame_settlement(),
            *stream_read(kv(subjects.MODELS_BUCKET)),
            *stream_read(obj(subjects.MODEL_FILES_BUCKET)),
        ],
        subscribe=[f"{subjects.POSTPROCESS} {subjects.queue_group('postprocess')}", *_micro()],
    )
    operator = Role(
        "operator",
        publish=[
            subjects.INFER,
            f"{subjects.PREFIX}.control.>",
            "$SRV.>",
            "$JS.API.>",
            f"$KV.{subjects.ROUTES_BUCKET}.>",
            f"$KV.{subjects.STREAMS_BUCKET}.>",
            frames,  # natriton deadletters replay
            f"{AUDIO_CHUNKS_PREFIX}.>",
            f"{AUDIO_STATE_PREFIX}.>",
        ],
        subscribe=[
            results,
            f"{DETECTIONS_PREFIX}.>",
            f"{EVENTS_PREFIX}.>",
            f"{AUDIO_EVENTS_PREFIX}.>",
            INGEST_HEARTBEAT_SUBJECT,
        ],
        responses=False,
    )
    roles = [ingest, preprocess, router, postprocess, operator]
    for role in roles:
        role.subscribe.append(f"{role.inbox}.>")
    return roles


def _kv_owner(bucket: str) -> list[str]:
    """A KV bucket the role creates and writes."""
    return [*stream_write(kv(bucket)), f"$KV.{bucket}.>"]


def _object_owner(bucket: str) -> list[str]:
    """An object store the role creates and writes (a replaced object's old chunks are purged)."""
    return [*stream_write(obj(bucket)), f"$JS.API.STREAM.PURGE.{obj(bucket)}", f"$O.{bucket}.>"]


def tenant_producer(tenant: str) -> Role:
    """The producer user of a tenant account: requests on the imported public services, answers in its inboxes."""
    role = Role(tenant.lower(), publish=list(PUBLIC_SERVICES), responses=False)
    role.subscribe.append(f"{role.inbox}.>")
    return role


def _strings(values: Iterable[str], indent: str) -> str:
    return "\n".join(f'{indent}"{v}"' for v in dict.fromkeys(values))


def _user(role: Role, indent: str) -> str:
    inner = indent + "  "
    lines = [
        f"{indent}{{",
        f"{inner}# {role.user}: inbox prefix {role.inbox}",
        f"{inner}nkey: ${role.variable}",
        f"{inner}permissions: {{",
        f"{inner}  publish: {{ allow: [",
        _strings(role.publish, inner + "    "),
        f"{inner}  ] }}",
        f"{inner}  subscribe: {{ allow: [",
        _strings(role.subscribe, inner + "    "),
        f"{inner}  ] }}",
    ]
    if role.responses:
        lines.append(f"{inner}  allow_responses: {RESPONSES}")
    lines += [f"{inner}}}", f"{indent}}}"]
    return "\n".join(lines)


def render() -> str:
    """The whole accounts.conf."""
    roles = mesh_roles()
    users = "\n".join(_user(r, "      ") for r in roles)
    exports = "\n".join(f'      {{ service: "{s}", accounts: [{", ".join(TENANTS)}] }}' for s in PUBLIC_SERVICES)
    parts = [
        "# GENERATED by services/deploy/nats/accounts.py from the mesh's subjects: edit that script, not this file.",
        "# Included by nats-secure.conf. Every user is an NKey whose public key nats-server reads from its",
        "# environment (NATRITON_NKEY_<USER>); see docs/operations.md, Security.",
        "accounts {",
        f"  {MESH} {{",
        "    jetstream: enabled",
        "    users: [",
        users,
        "    ]",
        "    exports: [",
        exports,
        "    ]",
        "  }",
    ]
    for tenant in TENANTS:
        imports = "\n".join(f'      {{ service: {{ account: {MESH}, subject: "{s}" }} }}' for s in PUBLIC_SERVICES)
        parts += [
            f"  {tenant} {{",
            "    users: [",
            _user(tenant_producer(tenant), "      "),
            "    ]",
            "    imports: [",
            imports,
            "    ]",
            "  }",
        ]
    parts.append("}")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write accounts.conf, or with ``--check`` compare it (exit 1 when it is stale)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when accounts.conf is not what this makes")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).relative_to(HERE.parents[2])}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
