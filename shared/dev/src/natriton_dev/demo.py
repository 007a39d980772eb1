"""``make demo``: the whole mesh on this machine, real photos in, ImageNet labels out, then cache hits.

Starts nats-server, redis-server, tritonserver (CPU) and the four services as separate processes,
classifies real photographs through the public protocol, sends them again to show cache hits,
shows one typed error, then stops everything and checks nothing is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from natriton.messages import Classification, Detections, Embedding, ErrorReply, InferResponse, Reply
from natriton.tensors import to_array
from natriton_client.aio import MeshClient
from natriton_dev.images import sample_photos
from natriton_dev.stack import LocalStack
from natriton_dev.triton import SHM_DIR

MODEL = "mobilenet_v2"


def describe(reply: Reply) -> str:
    """One line for a reply: top-5 labels with scores, or the typed error."""
    if isinstance(reply, ErrorReply):
        return f"error {reply.code.value}: {reply.message}"
    assert isinstance(reply, InferResponse) and isinstance(reply.result, Classification)
    return " | ".join(f"{c.label} {c.score:.3f}" for c in reply.result.classes)


async def classify_all(nats_url: str, photos: dict[str, bytes]) -> bool:
    """Two rounds over the photos (pipeline, then cache) and a bad request; True when all went right."""
    client = await MeshClient.connect(nats_url)
    ok = True
    try:
        for round_name in ("through the mesh", "again: answered from the Redis cache"):
            print(f"\n== {round_name}")
            for name, data in photos.items():
                started = time.perf_counter()
                reply = await client.infer(MODEL, image=data, top_k=5)
                ms = (time.perf_counter() - started) * 1000
                source = "cache hit" if isinstance(reply, InferResponse) and reply.cached else "inference"
                print(f"  {name:<17} {len(data) / 1024:6.0f} KB {ms:8.1f} ms  [{source:9}]  {describe(reply)}")
                ok &= isinstance(reply, InferResponse)
        print("\n== a second classifier, added as files only (model_repository/efficientnet_lite0)")
        reply = await client.infer("efficientnet_lite0", image=photos["coffee.jpg"], top_k=3)
        ok &= isinstance(reply, InferResponse)
        print(f"  coffee.jpg         -> {describe(reply)}")
        print("\n== the other models: faces in the astronaut photo, sentence similarity")
        reply = await client.infer("face_detector", image=photos["astronaut.jpg"])
        if isinstance(reply, InferResponse) and isinstance(reply.result, Detections):
            faces = [f"{d.label} {d.score:.2f} at {[round(v) for v in d.box]}" for d in reply.result.detections]
            print(f"  astronaut.jpg      -> {len(faces)} face(s): {'; '.join(faces)}")
        else:
            ok = False
            print(f"  astronaut.jpg      -> {reply}")
        sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
        vectors = []
        for sentence in sentences:
            reply = await client.infer("minilm_l6_v2", text=sentence)
            ok &= isinstance(reply, InferResponse) and isinstance(reply.result, Embedding)
            if isinstance(reply, InferResponse) and isinstance(reply.result, Embedding):
                vectors.append(np.asarray(to_array(reply.result.vector), dtype=np.float32))
        if len(vectors) == 3:
            for other, vector in zip(sentences[1:], vectors[1:], strict=True):
                print(f"  cosine({sentences[0]!r}, {other!r}) = {float(vectors[0] @ vector):.3f}")
        print("\n== a bad request gets a typed error, and the mesh keeps serving")
        reply = await client.send(b"\x00not msgpack at all")
        print(f"  garbage bytes      -> {describe(reply)}")
        reply = await client.infer("no_such_model", image=photos["coffee.jpg"])
        print(f"  unknown model      -> {describe(reply)}")
    finally:
        await client.close()
    return ok


def main() -> int:
    """Run the demo; exit status 0 when every photo was classified."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="natriton-demo-"))
    print("Natriton demo: starting nats-server, redis-server, tritonserver and ingest/preprocess/router/postprocess")
    photos = sample_photos()
    started = time.perf_counter()
    stack = LocalStack(workdir)
    with stack:
        print(f"stack ready in {time.perf_counter() - started:.1f} s (logs: {workdir})")
        ok = asyncio.run(classify_all(stack.nats_url, photos))
        print("\nstopping everything...")
    processes = [stack.nats, stack.redis, stack.triton]
    alive = [p.name for p in processes if p.is_running]
    leftover = sorted(p.name for p in SHM_DIR.glob(f"{stack.triton.shm_prefix}*")) if SHM_DIR.exists() else []
    print(f"stopped: {alive or 'no'} processes left, {len(leftover)} /dev/shm regions left")
    return 0 if ok and not alive and not leftover else 1


if __name__ == "__main__":
    sys.exit(main())
