"""silero_vad in a real tritonserver of its own (only that model: a few seconds): the first stateful model.

Triton sees the model as stateless; each stream's recurrent state travels with its requests (``STATE`` in,
``STATE_OUT`` back) and the 64 context samples are the end of the stream's previous chunk. Checks that the config
loads in the PyPI Triton (python backend, ``onnx_model.py``), that streams batched on dimension 0 (in one request,
and as concurrent requests the dynamic batcher may merge) give exactly what each stream gives alone with its state
carried over 20 chunks, and that Triton's answers are onnxruntime's on the silero-vad wheel's own model.

The signals are ``export.py``'s (no recording of speech is at hand): synthetic voiced syllables, which silero scores
as speech, and noise plus a sine sweep, which it does not.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc.aio as grpcclient

from natriton_dev.triton import TritonServer
from tests.integration.conftest import REPO_MODELS, model_repository_of

MODEL = "silero_vad"
CHUNKS = 20
TOLERANCE = 1e-5

Step = Any
"""``(audio [N, 576], state [N, 2, 128]) -> (probability [N, 1], state_out [N, 2, 128])``."""


def load_export() -> ModuleType:
    """``model_repository/silero_vad/export.py``, imported by path without writing ``__pycache__`` there (Triton
    would take a stray folder for a model) and without leaving its changes to ``sys``."""
    path = REPO_MODELS / MODEL / "export.py"
    spec = importlib.util.spec_from_file_location("_natriton_export_silero_vad", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before, saved_path = sys.dont_write_bytecode, list(sys.path)
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode, sys.path[:] = before, saved_path
    return module


EXPORT = load_export()


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    if not (REPO_MODELS / MODEL / "1" / "model.onnx").is_file():
        pytest.fail(f"{MODEL}/1/model.onnx is missing: run `python model_repository/build.py {MODEL}`")
    root: Path = tmp_path_factory.mktemp("silero_vad")
    server = TritonServer(model_repository_of(root, MODEL), root / "triton")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def signals() -> list[npt.NDArray[np.float32]]:
    seconds = CHUNKS * EXPORT.CHUNK / EXPORT.SAMPLE_RATE
    return [
        EXPORT.synthetic_speech(0, seconds, f0=110.0),
        EXPORT.synthetic_speech(1, seconds, f0=200.0),
        EXPORT.noise_and_sweep(2, seconds),
    ]


def inputs(audio: npt.NDArray[np.float32], state: npt.NDArray[np.float32]) -> list[grpcclient.InferInput]:
    tensors = []
    for name, array in (("AUDIO", audio), ("STATE", state)):
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        tensors.append(tensor)
    return tensors


async def infer(
    client: grpcclient.InferenceServerClient, audio: npt.NDArray[np.float32], state: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    outputs = [grpcclient.InferRequestedOutput("SPEECH_PROBABILITY"), grpcclient.InferRequestedOutput("STATE_OUT")]
    result = await client.infer(MODEL, inputs(audio, state), outputs=outputs)
    return result.as_numpy("SPEECH_PROBABILITY"), result.as_numpy("STATE_OUT")


async def run_streams(
    client: grpcclient.InferenceServerClient, streams: list[npt.NDArray[np.float32]], *, one_request_each: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Probabilities ``[streams, chunks]`` and last states through Triton, chunk by chunk with each stream's state
    carried: all streams in one request of batch N, or (``one_request_each``) one concurrent request per stream."""
    rows = [EXPORT.stream_chunks(s) for s in streams]
    state = np.zeros((len(streams), *EXPORT.STATE_SHAPE), dtype=np.float32)
    probabilities = np.zeros((len(streams), CHUNKS), dtype=np.float32)
    for i in range(CHUNKS):
        audio = np.stack([r[i] for r in rows])
        if one_request_each:
            answers = await asyncio.gather(
                *(infer(client, audio[k : k + 1], state[k : k + 1]) for k in range(len(rows)))
            )
            probability = np.concatenate([p for p, _ in answers])
            state = np.concatenate([s for _, s in answers])
        else:
            probability, state = await infer(client, audio, state)
        assert probability.shape == (len(streams), 1) and state.shape == (len(streams), *EXPORT.STATE_SHAPE)
        probabilities[:, i] = probability[:, 0]
    return probabilities, state


def wheel_model_step() -> Step:
    """The silero-vad wheel's own 16 kHz model on onnxruntime, fed as silero's ``OnnxWrapper`` feeds it."""
    session = EXPORT.common.ort_session(EXPORT.wheel_model())

    def step(audio: npt.NDArray[np.float32], state: npt.NDArray[np.float32]) -> tuple[Any, Any]:
        feed = {"input": audio, "state": state.transpose(1, 0, 2).copy(), "sr": np.array(16_000, dtype=np.int64)}
        probability, state_n = session.run(["output", "stateN"], feed)
        return probability, state_n.transpose(1, 0, 2)

    return step


async def test_streams_batched_give_what_each_gives_alone_with_the_state_carried(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        config = (await client.get_model_config(MODEL, as_json=True))["config"]
        assert config["max_batch_size"] == 64 and config["parameters"]["natriton.kind"]["string_value"] == "vad"
        streams = signals()
        batched, batched_state = await run_streams(client, streams, one_request_each=False)
        concurrent, concurrent_state = await run_streams(client, streams, one_request_each=True)
        for k, stream in enumerate(streams):
            alone, alone_state = await run_streams(client, [stream], one_request_each=False)
            reference, reference_state = EXPORT.run_streams(wheel_model_step(), [stream])
            for probabilities, state in ((batched, batched_state), (concurrent, concurrent_state)):
                assert np.abs(probabilities[k] - alone[0]).max() <= TOLERANCE, k
                assert np.abs(state[k] - alone_state[0]).max() <= TOLERANCE, k
            assert np.abs(alone - reference[:, :CHUNKS]).max() <= TOLERANCE, k
            assert np.abs(alone_state - reference_state).max() <= TOLERANCE, k
    finally:
        await client.close()

    speech, high_speech, noise = batched
    assert speech[2:].mean() > 0.8 and high_speech[2:].mean() > 0.8, batched
    assert noise.max() < 0.5, noise
    # the state matters: a stream restarted from a zero state on every chunk is scored differently
    fresh = np.concatenate(
        [
            wheel_model_step()(row[None], np.zeros((1, 2, 128), np.float32))[0][0]
            for row in EXPORT.stream_chunks(streams[0])[:CHUNKS]
        ]
    )
    assert np.abs(fresh - speech).max() > 0.5


async def test_silence_is_not_speech(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        silence, _ = await run_streams(
            client, [np.zeros(CHUNKS * EXPORT.CHUNK, dtype=np.float32)] * 2, one_request_each=False
        )
    finally:
        await client.close()
    assert silence.max() < 0.1, silence
