"""Build step: silero VAD (voice activity detection, 16 kHz) -> ``1/model.onnx`` that Triton can batch on dim 0.

The model is the ``silero-vad`` wheel's own ONNX file ``silero_vad/data/silero_vad_16k_op15.onnx`` (16 kHz only,
opset 15; install the wheel with ``--no-deps``: it declares torch/torchaudio, which are not needed here). Of the
wheel's ONNX files, three take the streaming interface ``input`` FP32 ``[batch, 64 + 512]``, ``state`` FP32
``[2, batch, 128]``, ``sr`` INT64 scalar -> ``output`` ``[batch, 1]``, ``stateN`` ``[2, batch, 128]``:
``silero_vad.onnx`` (8 and 16 kHz, opset 16, the package's default), ``silero_vad_16k_op15.onnx`` and
``silero_vad_op18_ifless.onnx`` (8 and 16 kHz, opset 18). ``silero_vad_half.onnx`` and
``silero_vad_openvino_16k.onnx`` take no ``sr`` (the latter batch 1 only) and ``silero_vad_16k_sequence.onnx`` takes
a whole sequence with ``h``/``c``. The 16 kHz one gives the same probabilities as ``silero_vad.onnx`` at 16 kHz
(checked below) and its opset suits older onnxruntime builds (Triton's onnxruntime backend).

No torch: the wrapper is built with the ``onnx`` package around the wheel's graph, unchanged:

- ``AUDIO`` FP32 ``[N, 576]``: per stream, the last 64 samples of its previous chunk (zeros at the start) and the
  512 new samples (32 ms at 16 kHz, floats in [-1, 1]) -> the model's ``input``;
- ``STATE`` FP32 ``[N, 2, 128]``: the stream's recurrent state (zeros at the start), transposed to the model's
  ``[2, N, 128]`` so that the batch is dimension 0 of every tensor (Triton's dynamic batcher concatenates and splits
  requests on dimension 0);
- ``sr`` is a constant 16000 inside the graph;
- outputs ``SPEECH_PROBABILITY`` FP32 ``[N, 1]`` and ``STATE_OUT`` FP32 ``[N, 2, 128]`` (``stateN`` transposed back),
  the state to send with the stream's next chunk.

So the model is stateless to Triton: the mesh carries each stream's state. Verified against the wheel's model run
directly (as silero's own ``OnnxWrapper`` does) over 100 consecutive chunks with the state and context carried, for
batches of 1 and 3 (three different signals in one batch give what each gives alone), and on what the signals are:
no audio recording is at hand here (neither the wheel nor the other dependencies carry speech), so "speech" is
synthesised: voiced syllables (a glottal pulse train with a pitch contour through the formants of five vowels),
which silero scores as speech (p > 0.9), while silence (p < 0.1), white noise and a sine sweep are not speech.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # no model_repository/__pycache__ from the next import: Triton would take it for a model
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_common as common  # noqa: E402

PACKAGE = "silero_vad"
PIP_ARGS = "--no-deps silero-vad==6.2.3"
WHEEL_MODEL = "data/silero_vad_16k_op15.onnx"
"""The wrapped model, in the package folder."""
WHEEL_DEFAULT_MODEL = "data/silero_vad.onnx"
"""The package's default ONNX model (8 and 16 kHz), compared at 16 kHz."""
SAMPLE_RATE = 16_000
CHUNK = 512
CONTEXT = 64
STATE_SHAPE = (2, 128)
"""One stream's state in ``STATE``/``STATE_OUT`` (the model's own is ``[2, N, 128]``)."""
AUDIO_NAME = "AUDIO"
STATE_NAME = "STATE"
PROBABILITY_NAME = "SPEECH_PROBABILITY"
STATE_OUT_NAME = "STATE_OUT"
CHUNKS = 100
"""Consecutive chunks per verified stream (3.2 s)."""
MATCH_TOLERANCE = 1e-5
"""Wrapper vs the wheel's model, and a stream in a batch vs the same stream alone (both measure 0 or ~1e-7)."""


def wheel_model(name: str = WHEEL_MODEL) -> Path:
    """An ONNX file of the installed silero-vad wheel, located without importing the package (which imports torch)."""
    path = common.package_dir(PACKAGE, PIP_ARGS) / name
    if not path.is_file():
        raise RuntimeError(f"model file missing: {path}")
    return path


def wrap(original: Any, source: str = "") -> Any:
    """The batch-first wrapper (``AUDIO``, ``STATE`` -> ``SPEECH_PROBABILITY``, ``STATE_OUT``) around the wheel's
    graph, whose nodes, initializers and opset stay as they are; ``source`` goes into the model's description."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = original.graph
    inputs = {v.name: v for v in graph.input}
    outputs = [v.name for v in graph.output]
    if sorted(inputs) != ["input", "sr", "state"] or outputs != ["output", "stateN"]:
        raise RuntimeError(f"unexpected interface: inputs {sorted(inputs)}, outputs {outputs}")
    used = {name for node in graph.node for name in (*node.input, *node.output)}
    clash = used & {AUDIO_NAME, STATE_NAME, PROBABILITY_NAME, STATE_OUT_NAME}
    if clash:
        raise RuntimeError(f"the wheel's graph already uses the names {sorted(clash)}")

    sample_rate = numpy_helper.from_array(np.array(SAMPLE_RATE, dtype=np.int64), name="natriton_sample_rate")
    nodes = [
        helper.make_node("Identity", [AUDIO_NAME], ["input"], name="natriton_audio"),
        helper.make_node("Transpose", [STATE_NAME], ["state"], name="natriton_state_in", perm=[1, 0, 2]),
        helper.make_node("Constant", [], ["sr"], name="natriton_sample_rate", value=sample_rate),
        *graph.node,
        helper.make_node("Identity", ["output"], [PROBABILITY_NAME], name="natriton_probability"),
        helper.make_node("Transpose", ["stateN"], [STATE_OUT_NAME], name="natriton_state_out", perm=[1, 0, 2]),
    ]
    wrapper = helper.make_graph(
        nodes,
        "silero_vad_batch_first",
        inputs=[
            helper.make_tensor_value_info(AUDIO_NAME, TensorProto.FLOAT, ["batch", CONTEXT + CHUNK]),
            helper.make_tensor_value_info(STATE_NAME, TensorProto.FLOAT, ["batch", *STATE_SHAPE]),
        ],
        outputs=[
            helper.make_tensor_value_info(PROBABILITY_NAME, TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info(STATE_OUT_NAME, TensorProto.FLOAT, ["batch", *STATE_SHAPE]),
        ],
        initializer=list(graph.initializer),
        sparse_initializer=list(graph.sparse_initializer),
    )
    model = helper.make_model(
        wrapper,
        opset_imports=list(original.opset_import),
        ir_version=original.ir_version,
        producer_name="natriton model_repository/silero_vad/export.py",
        doc_string=(
            f"silero VAD at {SAMPLE_RATE} Hz, batch first: {AUDIO_NAME} [N, {CONTEXT}+{CHUNK}], {STATE_NAME} "
            f"[N, 2, 128] -> {PROBABILITY_NAME} [N, 1], {STATE_OUT_NAME} [N, 2, 128]. {source}"
        ).strip(),
    )
    model.functions.extend(original.functions)
    onnx.checker.check_model(model, full_check=True)
    return model


def build(force: bool = False) -> bool:
    """Wrap and verify ``1/model.onnx``; return False when it was up to date."""
    if not force and common.up_to_date(__file__):
        return False
    import onnx

    source = wheel_model()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    model = wrap(onnx.load(str(source)), f"Wrapped from the silero-vad==6.2.3 wheel's {WHEEL_MODEL} ({digest[:8]}...).")
    with common.publishing(__file__) as tmp:
        onnx.save(model, str(tmp))
        _verify(tmp, source)
    return True


# ------------------------------------------------------------------------------------------------
# signals and streaming, for the checks (the integration test uses them too)
# ------------------------------------------------------------------------------------------------
_VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
"""F1-F3 (Hz) of a, i, u, e, o (Peterson & Barney's averages for adult male speakers)."""


def synthetic_speech(seed: int, seconds: float = CHUNKS * CHUNK / SAMPLE_RATE, f0: float = 120.0) -> Any:
    """Speech-like audio at 16 kHz, float32 in [-0.5, 0.5]: syllables of about 0.25 s, each a short noise burst (a
    consonant) and a vowel (a glottal pulse train, pitch ``f0`` +-15 %, through the vowel's three formants)."""
    import numpy as np
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)

    def resonator(x: Any, freq: float, bandwidth: float) -> Any:
        r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        return lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r], x)

    parts: list[Any] = []
    total = int(seconds * SAMPLE_RATE)
    while sum(len(p) for p in parts) < total:
        length = int(SAMPLE_RATE * rng.uniform(0.18, 0.3))
        t = np.arange(length) / SAMPLE_RATE
        pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 2 * np.pi)))
        pulses = np.diff(np.floor(np.cumsum(pitch / SAMPLE_RATE)), prepend=0.0)
        source = lfilter([1.0], [1.0, -0.97], pulses)  # spectral tilt of the glottal source
        formants = _VOWEL_FORMANTS[int(rng.integers(len(_VOWEL_FORMANTS)))]
        vowel = sum(
            gain * resonator(source, f, 80 + 40 * i)
            for i, (f, gain) in enumerate(zip(formants, (1, 0.6, 0.3), strict=True))
        )
        consonant = lfilter([1.0, -0.9], [1.0], 0.05 * rng.standard_normal(int(SAMPLE_RATE * 0.04)))
        pause = np.zeros(int(SAMPLE_RATE * rng.uniform(0.01, 0.05)))
        parts += [consonant, vowel * np.sin(np.pi * np.arange(length) / length) ** 0.5, pause]
    audio = np.concatenate(parts)[:total]
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def noise_and_sweep(seed: int, seconds: float = CHUNKS * CHUNK / SAMPLE_RATE) -> Any:
    """Not speech: white noise plus a sine sweeping up from 100 Hz, float32 at 16 kHz."""
    import numpy as np

    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    sweep = 0.3 * np.sin(2 * np.pi * (100 + 1000 * t) * t)
    return (sweep + 0.05 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def stream_chunks(signal: Any) -> Any:
    """A signal as consecutive ``AUDIO`` rows ``[chunks, 64 + 512]``: each chunk after the last 64 samples of the
    previous one (zeros before the first); a last partial chunk is dropped."""
    import numpy as np

    chunks = len(signal) // CHUNK
    padded = np.concatenate([np.zeros(CONTEXT, dtype=np.float32), np.asarray(signal, dtype=np.float32)])
    return np.stack([padded[i * CHUNK : i * CHUNK + CONTEXT + CHUNK] for i in range(chunks)])


def run_streams(step: Any, signals: list[Any]) -> tuple[Any, Any]:
    """Run streams chunk by chunk in one batch, each carrying its state: ``step(audio [N, 576], state [N, 2, 128])
    -> (probability [N, 1], state_out [N, 2, 128])``. Returns the probabilities ``[N, chunks]`` and the last states."""
    import numpy as np

    rows = [stream_chunks(s) for s in signals]
    chunks = min(len(r) for r in rows)
    state = np.zeros((len(signals), *STATE_SHAPE), dtype=np.float32)
    probabilities = np.zeros((len(signals), chunks), dtype=np.float32)
    for i in range(chunks):
        audio = np.stack([r[i] for r in rows])
        probability, state = step(audio, state)
        probabilities[:, i] = probability[:, 0]
    return probabilities, state


def _verify(path: Path, source: Path) -> None:
    """Check the wrapper against the wheel's model and what it says about speech, noise and silence."""
    import numpy as np

    wrapper = common.ort_session(path)
    names = [i.name for i in wrapper.get_inputs()], [o.name for o in wrapper.get_outputs()]
    if names != ([AUDIO_NAME, STATE_NAME], [PROBABILITY_NAME, STATE_OUT_NAME]):
        raise RuntimeError(f"unexpected wrapper interface {names}")

    def wrapped(audio: Any, state: Any) -> tuple[Any, Any]:
        probability, state_out = wrapper.run(None, {AUDIO_NAME: audio, STATE_NAME: state})
        if probability.shape != (len(audio), 1) or state_out.shape != state.shape or probability.dtype != np.float32:
            raise RuntimeError(f"unexpected outputs {probability.shape} {probability.dtype}, {state_out.shape}")
        return probability, state_out

    def direct(session: Any) -> Any:  # what silero's OnnxWrapper feeds the model
        def step(audio: Any, state: Any) -> tuple[Any, Any]:
            feed = {"input": audio, "state": state.transpose(1, 0, 2).copy(), "sr": np.array(SAMPLE_RATE, np.int64)}
            probability, state_n = session.run(["output", "stateN"], feed)
            return probability, state_n.transpose(1, 0, 2)

        return step

    half = CHUNKS * CHUNK // 2
    signals = [
        synthetic_speech(0, f0=110.0),
        np.concatenate([synthetic_speech(1, f0=200.0)[:half], np.zeros(half, dtype=np.float32)]),  # speech, silence
        noise_and_sweep(2),
    ]
    references = {"wheel": direct(common.ort_session(source))}
    references["default"] = direct(common.ort_session(wheel_model(WHEEL_DEFAULT_MODEL)))
    diffs = dict.fromkeys(references, 0.0)
    alone = []
    for signal in signals:
        probability, state = run_streams(wrapped, [signal])
        for name, step in references.items():
            reference, reference_state = run_streams(step, [signal])
            diff = max(float(np.abs(probability - reference).max()), float(np.abs(state - reference_state).max()))
            diffs[name] = max(diffs[name], diff)
        alone.append((probability[0], state[0]))
    diff_wheel, diff_default, diff_batch = diffs["wheel"], diffs["default"], 0.0
    batched, batched_state = run_streams(wrapped, signals)
    for i, (probability, state) in enumerate(alone):
        diff_batch = max(diff_batch, float(np.abs(batched[i] - probability).max()))
        diff_batch = max(diff_batch, float(np.abs(batched_state[i] - state).max()))
    if max(diff_wheel, diff_default, diff_batch) > MATCH_TOLERANCE:
        raise RuntimeError(
            f"wrapper vs wheel {diff_wheel:.2e}, vs silero_vad.onnx {diff_default:.2e}, batch vs alone {diff_batch:.2e}"
        )

    silence, _ = run_streams(wrapped, [np.zeros(CHUNKS * CHUNK, dtype=np.float32)])
    fresh = np.concatenate(
        [wrapped(row[None], np.zeros((1, *STATE_SHAPE), np.float32))[0][0] for row in stream_chunks(signals[0])]
    )
    state_effect = float(np.abs(fresh - batched[0]).max())  # the state must matter, or nothing is carried
    speech, speech_then_silence, noise = batched
    quarter = CHUNKS // 4
    checks = {
        "speech mean p > 0.8": float(speech.mean()) > 0.8,
        "speech-then-silence: speech part mean p > 0.8": float(speech_then_silence[: quarter * 2].mean()) > 0.8,
        "speech-then-silence: p < 0.1 over its last 0.8 s (silence)": float(speech_then_silence[-quarter:].max()) < 0.1,
        "noise + sweep max p < 0.5": float(noise.max()) < 0.5,
        "silence max p < 0.1": float(silence.max()) < 0.1,
        "a zero state on every chunk changes p by > 0.5": state_effect > 0.5,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise RuntimeError(f"failed: {failed}")
    print(
        f"  verified over {CHUNKS} chunks: max |wrapper - wheel's model| = {diff_wheel:.2e} (silero_vad.onnx "
        f"{diff_default:.2e}), batch of 3 vs alone = {diff_batch:.2e}; mean p: synthetic speech {speech.mean():.3f}, "
        f"noise + sweep {noise.mean():.3f}; silence max p {silence.max():.3f}; a zero state on every chunk "
        f"changes p by up to {state_effect:.2f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(common.main(__file__, __doc__, build))
