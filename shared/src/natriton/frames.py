"""The JetStream streams that carry camera frames (as claim checks) from their owner to preprocess.

Two streams, one per delivery mode, with a subject per camera (``natriton.v1.frames.<mode>.<camera>``):

- ``NATRITON_FRAMES_REALTIME``: memory storage, ``max_msgs_per_subject=1`` with the old message discarded, so under
  backpressure only a camera's newest frame waits and latency stays bounded (a superseded frame is a drop).
- ``NATRITON_FRAMES_RELIABLE``: file storage, kept until acknowledged or an hour old. For acknowledged frames to
  survive a power failure the server must run with ``sync_interval: always`` (``services/deploy/nats/nats.conf``);
  on a cluster give the streams replicas (preprocess's ``NATRITON_STREAM_REPLICAS``, decision 0007).

Preprocess copies share one durable consumer per stream; frames are acknowledged only once answered
(:data:`natriton.headers.ACK_TO`), so a frame a dying copy held is delivered again; one that cannot be processed
ends in dead letters (:mod:`natriton.deadletters`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from natriton.messages import StreamMode
from natriton.subjects import PREFIX
from natriton_client.protocol import CAMERA_RESULTS_STREAM, DETECTIONS_PREFIX, EVENTS_PREFIX

log = logging.getLogger(__name__)

FRAMES_PREFIX: Final = f"{PREFIX}.frames"
STREAM_NAMES: Final = {
    StreamMode.REALTIME: "NATRITON_FRAMES_REALTIME",
    StreamMode.RELIABLE: "NATRITON_FRAMES_RELIABLE",
}
CONSUMER_NAMES: Final = {mode: f"preprocess_{mode.value}" for mode in StreamMode}
"""The durable consumer preprocess copies share, per stream."""
RELIABLE_MAX_AGE_S: Final = 3600.0
REALTIME_MAX_AGE_S: Final = 60.0
RESULTS_MAX_AGE_S: Final = 24 * 3600.0
RESULTS_MAX_BYTES: Final = 1 << 30


def frames_subject(mode: StreamMode, camera: str) -> str:
    """The subject a camera's frames are published on."""
    return f"{FRAMES_PREFIX}.{mode.value}.{camera}"


def stream_config(mode: StreamMode, replicas: int = 1) -> StreamConfig:
    """The stream of one delivery mode."""
    subjects = [f"{FRAMES_PREFIX}.{mode.value}.*"]
    if mode is StreamMode.REALTIME:
        return StreamConfig(
            name=STREAM_NAMES[mode],
            subjects=subjects,
            storage=StorageType.MEMORY,
            retention=RetentionPolicy.LIMITS,
            max_msgs_per_subject=1,
            discard=DiscardPolicy.OLD,
            max_age=REALTIME_MAX_AGE_S,
            num_replicas=replicas,
        )
    return StreamConfig(
        name=STREAM_NAMES[mode],
        subjects=subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.OLD,
        max_age=RELIABLE_MAX_AGE_S,
        num_replicas=replicas,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig, replicas: int | None = None) -> None:
    """Create a stream, or bring an existing one's configuration up to date, with ``replicas`` copies (None: the
    existing stream's own count, 1 for a new one; so a caller without the setting never changes it)."""
    name = config.name or ""
    try:
        current: int | None = (await js.stream_info(name)).config.num_replicas or 1
    except NotFoundError:
        current = None
    wanted = replicas or current or 1
    if current is not None and wanted < current:
        log.warning("%s: lowering replicas from %d to %d (NATRITON_STREAM_REPLICAS)", name, current, wanted)
    config = dataclasses.replace(config, num_replicas=wanted)
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, replicas: int | None = None) -> None:
    """Create both frame streams, or bring an existing one's configuration up to date (see :func:`ensure_stream`)."""
    for mode in StreamMode:
        await ensure_stream(js, stream_config(mode), replicas)


def results_stream_config(replicas: int = 1) -> StreamConfig:
    """The stream that keeps every camera's frame results and events for a day (at most 1 GiB), for replay."""
    return StreamConfig(
        name=CAMERA_RESULTS_STREAM,
        subjects=[f"{DETECTIONS_PREFIX}.*", f"{EVENTS_PREFIX}.*"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=RESULTS_MAX_AGE_S,
        max_bytes=RESULTS_MAX_BYTES,
        num_replicas=replicas,
    )


async def ensure_results_stream(js: JetStreamContext, replicas: int | None = None) -> None:
    """Create the camera results stream, or bring its configuration up to date (see :func:`ensure_stream`)."""
    await ensure_stream(js, results_stream_config(), replicas)
