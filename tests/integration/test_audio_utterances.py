"""Each real recording, alone, through the real stack: where its speech is, and that noise is none.

alsa-utils' nine voice recordings each say two words ("Front Center", ...) in about 1.4 s. With silero's defaults
(``min_silence_duration_ms`` 100) a pause between the words longer than 100 ms ends a segment, so a recording gives
one or two segments; an operator who wants one segment per utterance raises ``natriton.min_silence_duration_ms`` in
the model's ``config.pbtxt`` (docs/operations.md). The stack here serves both: ``silero_vad`` as shipped, and
``silero_vad_utterances``, the same model with 500 ms.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from natriton.audio import decode_audio
from natriton.messages import AudioInput, InferResponse, SpeechSegments
from natriton_client.aio import MeshClient
from natriton_dev.media import NOISE, VOICES
from natriton_dev.stack import LocalStack
from tests.integration.conftest import REPO_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="session")
TUNED = "silero_vad_utterances"


def tuned_copy(repository: Path, name: str, min_silence_ms: int) -> None:
    """``silero_vad`` under another name with another ``natriton.min_silence_duration_ms``, as an operator edits it."""
    shutil.copytree(REPO_MODELS / "silero_vad", repository / name, ignore=shutil.ignore_patterns("__pycache__"))
    config = (repository / name / "config.pbtxt").read_text()
    config = config.replace('name: "silero_vad"', f'name: "{name}"', 1)
    config, found = re.subn(
        r'(key: "natriton.min_silence_duration_ms"\s*value: \{ string_value: ")\d+(")',
        rf"\g<1>{min_silence_ms}\2",
        config,
    )
    assert found == 1
    (repository / name / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def voices_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir: Path = tmp_path_factory.mktemp("utterances")
    repository = workdir / "models"
    repository.mkdir()
    (repository / "silero_vad").symlink_to(REPO_MODELS / "silero_vad", target_is_directory=True)
    tuned_copy(repository, TUNED, 500)
    with LocalStack(workdir, model_repository=repository) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def voices_client(voices_stack: LocalStack) -> AsyncIterator[MeshClient]:
    client = await MeshClient.connect(voices_stack.nats_url)
    yield client
    await client.close()


async def segments_of(client: MeshClient, model: str, wav: bytes) -> SpeechSegments:
    deadline = time.monotonic() + 30
    while True:  # the tuned model may still be loading when the first test starts
        reply = await client.infer(model, audio=AudioInput(data=wav), use_cache=False)
        if isinstance(reply, InferResponse) or time.monotonic() > deadline:
            break
    assert isinstance(reply, InferResponse) and isinstance(reply.result, SpeechSegments), reply
    return reply.result


@pytest.mark.parametrize("voice", VOICES)
async def test_each_voice_recording_gives_one_utterance_inside_it(
    voices_client: MeshClient, alsa_sounds: dict[str, bytes], voice: str
) -> None:
    wav = alsa_sounds[voice]
    length_s = decode_audio(wav, max_bytes=64 << 20, max_duration_s=60).duration_s
    tuned = await segments_of(voices_client, TUNED, wav)
    assert len(tuned.segments) == 1, tuned
    (utterance,) = tuned.segments
    assert 0 < utterance.start_s < utterance.end_s <= length_s + 1e-3 and utterance.confidence > 0.9, (
        utterance,
        length_s,
    )
    assert utterance.end_s - utterance.start_s > 0.5  # two words, not a click
    # with silero's defaults: the same speech, in one or two segments (one per word), inside the utterance
    default = await segments_of(voices_client, "silero_vad", wav)
    assert 1 <= len(default.segments) <= 2, default
    assert abs(default.segments[0].start_s - utterance.start_s) < 1e-3, (default, utterance)
    assert default.segments[-1].end_s <= utterance.end_s + 1e-3, (default, utterance)


@pytest.mark.parametrize("model", ["silero_vad", TUNED])
async def test_the_noise_recording_gives_no_speech(
    voices_client: MeshClient, alsa_sounds: dict[str, bytes], model: str
) -> None:
    result = await segments_of(voices_client, model, alsa_sounds[NOISE])
    assert result.segments == () and result.duration_s > 1.0, result
