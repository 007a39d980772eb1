"""The change gate on a still scene made of real photographs: it reuses what is still, never what is new.

Real-footage checks (Megamind.avi with the face detector, vtest.avi pedestrians) are in
tests/integration/test_video_analytics.py.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from skimage import data as skdata

from natriton.video.change_gate import ChangeGate, ChangeGateConfig, thumbnail

Frame = npt.NDArray[np.uint8]
WIDTH, HEIGHT = 720, 528
FACE = np.ascontiguousarray(skdata.astronaut()[57:177, 179:271])
"""A real face (the astronaut's, 92x120 px) to paste into the scene."""


@pytest.fixture(scope="module")
def scene() -> Frame:
    """A real outdoor photograph at the size of the Megamind clip (720x528)."""
    return np.asarray(Image.fromarray(skdata.rocket()).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR))


@functools.cache
def sensor_noise() -> npt.NDArray[np.int8]:
    """16 fields of sensor noise (sigma 3 grey levels, independent per pixel), used in turn."""
    return np.random.default_rng(0).normal(0.0, 3.0, (16, HEIGHT, WIDTH, 3)).round().astype(np.int8)


def noisy(frame: Frame, n: int) -> Frame:
    """The frame as a camera would deliver it again, as frame number ``n``: fresh noise on every pixel."""
    noise = sensor_noise()
    return np.clip(frame + noise[n % len(noise)].astype(np.int16), 0, 255).astype(np.uint8)


def paste(frame: Frame, patch: Frame, x: int, y: int) -> Frame:
    """``patch`` with its top-left corner at (x, y), clipped at the frame's edges."""
    out = frame.copy()
    h, w = patch.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


def resized(patch: Frame, width: int) -> Frame:
    height = round(patch.shape[0] * width / patch.shape[1])
    return np.asarray(Image.fromarray(patch).resize((width, height), Image.Resampling.BILINEAR))


def test_a_still_scene_is_reused_up_to_the_max_reuse_bound(scene: Frame) -> None:
    gate = ChangeGate(ChangeGateConfig(max_reuse=24))
    decisions = [gate.decide(noisy(scene, n)) for n in range(100)]
    assert [n for n, infer in enumerate(decisions) if infer] == [0, 25, 50, 75]
    assert (gate.inferred, gate.reused, gate.forced) == (4, 96, 3)
    assert gate.savings == pytest.approx(0.96)
    assert gate.last_max_change < 2.0  # noise of sigma 3 per pixel moves a block mean by a fraction of a level


@pytest.mark.parametrize(
    ("width", "x", "y"),
    [
        (92, 300, 200),  # the face as photographed
        (40, 11 * 30 + 5, 11 * 20 + 5),  # a distant face straddling four blocks
        (24, 0, 0),  # a small face in the corner
        (24, WIDTH - 24, HEIGHT - 31),  # ... in the other corner (the right and bottom remainders)
        (16, 500, 100),  # smaller than the face detector can see
    ],
)
def test_an_object_pasted_into_the_still_scene_is_inferred_at_once(scene: Frame, width: int, x: int, y: int) -> None:
    face = resized(FACE, width)
    gate = ChangeGate(ChangeGateConfig(max_reuse=1000))
    decisions = [gate.decide(noisy(scene if n < 10 else paste(scene, face, x, y), n)) for n in range(20)]
    assert decisions[10], f"the frame the face appeared in was not inferred (max block change {gate.last_max_change})"
    assert decisions == [True] + [False] * 9 + [True] + [False] * 9  # and the face that stays is still again


def test_an_object_walking_in_is_inferred_before_it_moved_far(scene: Frame) -> None:
    """A face entering from the left edge at 3 px per frame: every reused frame shows it within 6 px of where the
    inferred frame (whose results are reused) had it, and the first frame showing 10 columns of it is inferred."""
    face = resized(FACE, 60)
    gate = ChangeGate(ChangeGateConfig(max_reuse=1000))
    reference_x = None
    for n in range(60):
        x = -60 + 3 * n
        infer = gate.decide(noisy(paste(scene, face, x, 200), n))
        if x + 60 >= 10 and reference_x is None:
            assert infer, f"frame {n} shows {x + 60} columns of the face but was not inferred"
        if infer:
            reference_x = x if x + 60 > 0 else None
        elif reference_x is not None:
            assert abs(x - reference_x) <= 6, f"frame {n}: the face moved {x - reference_x} px since its inference"


def test_slow_drift_adds_up_against_the_last_inferred_frame(scene: Frame) -> None:
    """Brightness rising one level every 4 frames (never more than 1 level between neighbours) is caught each time
    it totals more than ``block_threshold`` (8) since the last inference."""
    base = (scene * 0.7).astype(np.uint8)
    gate = ChangeGate(ChangeGateConfig(max_reuse=1000, block_threshold=8.0))
    decisions = [gate.decide(base + np.uint8(n // 4)) for n in range(150)]
    assert [n for n, infer in enumerate(decisions) if infer] == [0, 36, 72, 108, 144]
    assert gate.forced == 0


def test_invalidate_max_reuse_zero_and_a_new_resolution_force_inference(scene: Frame) -> None:
    gate = ChangeGate()
    assert [gate.decide(scene), gate.decide(scene)] == [True, False]
    gate.invalidate()
    assert [gate.decide(scene), gate.decide(scene)] == [True, False]
    assert gate.decide(scene[:, :640]) is True  # the stream came back at another size
    always = ChangeGate(ChangeGateConfig(max_reuse=0))
    assert all(always.decide(scene) for _ in range(5)) and always.stats()["reused"] == 0


def test_thumbnail_is_the_block_mean_per_channel(scene: Frame) -> None:
    thumb = thumbnail(scene, 64)
    block = WIDTH // 64
    rows, cols = HEIGHT // block, WIDTH // block
    expected = scene[: rows * block, : cols * block].reshape(rows, block, cols, block, 3).mean(axis=(1, 3))
    assert thumb.shape == (3, rows, cols) == (3, 48, 65)
    np.testing.assert_allclose(thumb, expected.transpose(2, 0, 1), rtol=1e-6)
    grey = scene[:, :, 1]
    np.testing.assert_allclose(thumbnail(grey, 64)[0], expected[:, :, 1], rtol=1e-6)
    assert thumbnail(scene[:10, :30], 64).shape == (3, 10, 30)  # narrower than the thumbnail: 1-pixel blocks
    with pytest.raises(ValueError, match="uint8"):
        thumbnail(scene.astype(np.float32), 64)


def test_the_gate_costs_well_under_a_millisecond_per_720x528_frame(scene: Frame) -> None:
    frames = [noisy(scene, n) for n in range(16)]  # distinct arrays: no frame is hot in the cache
    gate = ChangeGate()
    gate.decide(frames[0])
    start = time.perf_counter()
    for n in range(200):
        gate.decide(frames[n % len(frames)])
    per_frame_ms = (time.perf_counter() - start) / 200 * 1e3
    print(f"change gate: {per_frame_ms:.3f} ms per 720x528 RGB frame")
    assert per_frame_ms < 3.0  # ~0.5-0.8 ms on the 2-core dev machine; loose for a busy CI host
