"""Stateful models (``natriton.kind: vad``): a request is a run of consecutive chunks of one audio stream.

The model is stateless to Triton: each call takes a chunk and the stream's recurrent state and returns a speech
probability and the next state (decision 0010). The router steps through the chunks of a request in order, carrying
the state from one call to the next, and submits every step to the model's batcher like any one-item request, so
the steps of all the sequences in flight (many clips, many live streams) share Triton batches. A request carries
its starting state (zeros for a clip; the state the stream's owner kept for a live stream) and gets the final state
back, so no router copy keeps anything between requests: any copy can take the next chunk of a stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
from opentelemetry.trace import SpanContext

from natriton.errors import invalid_argument
from natriton.messages import Tensor
from natriton.profiles import VadProfile
from natriton.tensors import to_array, to_tensor
from natriton_router.batching import BatchResult

Submit = Callable[[tuple[Tensor, ...], float | None, SpanContext | None], Awaitable[BatchResult]]
"""A model batcher's ``submit``: one item (batch dimension 1) in, its outputs back."""

MAX_STEPS = 1_000_000
"""More chunks than any audio the preprocess limits let through (a guard for requests sent as tensors)."""


def check_sequence(model: str, profile: VadProfile, inputs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """The chunks ``[n, context + chunk]`` and the starting state ``[1, *state_shape]`` of a request, both FP32;
    ``invalid_argument`` for anything else."""
    by_name = {t.name: t for t in inputs}
    wanted = {profile.audio_input, profile.state_input}
    if set(by_name) != wanted or len(inputs) != 2:
        raise invalid_argument(f"model {model!r} takes inputs {sorted(wanted)}, got {sorted(by_name)[:4]}")
    audio, state = by_name[profile.audio_input], by_name[profile.state_input]
    width = profile.context_samples + profile.chunk_samples
    if audio.datatype != "FP32" or len(audio.shape) != 2 or audio.shape[1] != width or audio.shape[0] < 1:
        raise invalid_argument(f"model {model!r}: {profile.audio_input} must be FP32 [chunks, {width}]")
    if audio.shape[0] > MAX_STEPS:
        raise invalid_argument(f"model {model!r}: at most {MAX_STEPS:,} chunks per request")
    if state.datatype != "FP32" or tuple(state.shape) != (1, *profile.state_shape):
        shape = ", ".join(map(str, profile.state_shape))
        raise invalid_argument(f"model {model!r}: {profile.state_input} must be FP32 [1, {shape}]")
    to_array(audio)  # byte counts must match the shapes
    to_array(state)
    return audio, state


async def run_sequence(
    submit: Submit,
    model: str,
    profile: VadProfile,
    inputs: tuple[Tensor, ...],
    deadline_ms: float | None,
    span: SpanContext | None = None,
) -> tuple[tuple[Tensor, ...], list[BatchResult]]:
    """Run the chunks of ``inputs`` in order through ``submit``, the state carried from each step to the next.

    Returns the outputs ``(probabilities [n, 1], final state [1, *state_shape])`` named as the model names them,
    and each step's batch result (for spans and counts).
    """
    audio_tensor, state_tensor = check_sequence(model, profile, inputs)
    chunks = to_array(audio_tensor)
    state = to_array(state_tensor)
    probabilities = np.empty((chunks.shape[0], 1), dtype=np.float32)
    steps: list[BatchResult] = []
    for step in range(chunks.shape[0]):
        result = await submit(
            (to_tensor(profile.audio_input, chunks[step : step + 1]), to_tensor(profile.state_input, state)),
            deadline_ms,
            span,
        )
        outputs = {t.name: t for t in result.outputs}
        probabilities[step] = to_array(outputs[profile.probability_output]).reshape(-1)[0]
        state = to_array(outputs[profile.state_output])
        steps.append(result)
    return (
        to_tensor(profile.probability_output, probabilities),
        to_tensor(profile.state_output, np.asarray(state, dtype=np.float32)),
    ), steps
