"""The bench's Triton-ensemble baseline (loadtests/ensemble, scenario mesh_vs_ensemble) in a real tritonserver.

A tritonserver of its own (about 10 s in all): the bench's model repository (the real ``mobilenet_v2`` beside the
ensemble's models, as symlinks), ``mobilenet_v2`` loaded at start, then the ensemble loaded and unloaded at run time
as the scenario does. Checks that Triton's ensemble scheduler works in this PyPI build, that the python steps import
the mesh's own preprocess and postprocess inside the stub, and the answer for a real photo.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from loadtests.ensemble.repository import (
    ENSEMBLE,
    MODELS,
    STEPS,
    combined_repository,
    load_ensemble,
    request_inputs,
    requested_outputs,
    top_classes,
    unload_ensemble,
)
from natriton_dev.images import sample_photos
from natriton_dev.stack import DEFAULT_MODEL_REPOSITORY
from natriton_dev.triton import TritonServer


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root: Path = tmp_path_factory.mktemp("ensemble")
    repository = combined_repository(root, [DEFAULT_MODEL_REPOSITORY, MODELS])
    server = TritonServer(repository, root / "triton", model_control_mode="explicit", load_models=("mobilenet_v2",))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def ready_models(client: grpcclient.InferenceServerClient) -> set[str]:
    index = await client.get_model_repository_index(as_json=True)
    return {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}


async def test_the_ensemble_classifies_a_real_photo_and_unloads_alone(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        assert await ready_models(client) == {"mobilenet_v2"}
        await load_ensemble(client)
        assert await ready_models(client) == {"mobilenet_v2", ENSEMBLE, *STEPS}

        photos = sample_photos()
        result = await client.infer(ENSEMBLE, request_inputs(photos["coffee.jpg"]), outputs=requested_outputs())
        top = top_classes(result)
        assert len(top) == 5 and top[0][0] == "espresso" and top[0][1] > 0.9
        assert [score for _, score in top] == sorted((score for _, score in top), reverse=True)
        png = await client.infer(ENSEMBLE, request_inputs(photos["chelsea.png"]), outputs=requested_outputs())
        assert top_classes(png)[0][0] == "Egyptian Mau"  # as the mesh answers it (README's demo)

        with pytest.raises(InferenceServerException, match="not a decodable image"):
            await client.infer(ENSEMBLE, request_inputs(b"not an image"), outputs=requested_outputs())

        await unload_ensemble(client)
        assert await ready_models(client) == {"mobilenet_v2"}  # the shared model stays
    finally:
        await client.close()
