"""Frames for the video benchmark from real footage (``natriton_dev.media`` sample clips).

- :func:`clip_frames` decodes a clip with PyAV and keeps the frames a camera at ``fps`` keeps (the camera path's
  own :class:`~natriton.video.source.TimestampGuess` and :class:`~natriton.video.source.FpsSampler`).
- :func:`write_folder` writes frames as a folder of images, a camera source (``natriton.video.source`` reads a
  folder at the source's fps, paced in its reader thread). BMP keeps every pixel and loads in ~1 ms.
- :func:`median_background` is the per-pixel median of frames spread over a clip: ``vtest.avi`` without its
  pedestrians, a real static scene.
- :func:`static_scene` writes that background once per frame with a little sensor noise, and from a given frame
  on with a real face crop pasted in (it stays to the end).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from natriton.video.source import FpsSampler, TimestampGuess

Frame = npt.NDArray[np.uint8]
FORMAT = "bmp"
NOISE_SIGMA = 2.0
"""Grey levels of Gaussian noise per pixel in each frame of the static scene (a camera's sensor noise)."""


def clip_frames(path: Path, fps: float = 0.0, limit: int = 0) -> Iterator[Frame]:
    """RGB frames of ``path`` that a camera sampling at ``fps`` keeps (0: every frame), in order, one pass."""
    import av

    sampler = FpsSampler(fps)
    kept = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        step_s = float(1 / rate) if rate else None
        guess = TimestampGuess()
        for frame in container.decode(stream):
            timestamp = guess.guess(frame.pts, frame.dts)
            time_base = frame.time_base or stream.time_base or Fraction(1)
            pts = float(timestamp * time_base) if timestamp is not None else None
            if sampler.keep(pts, step_s):
                yield np.ascontiguousarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
                kept += 1
                if limit and kept >= limit:
                    return


def write_folder(frames: Iterator[Frame] | list[Frame], folder: Path) -> int:
    """Write ``frames`` as ``frame_00000.bmp`` … into an emptied ``folder``; returns how many."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    count = 0
    for count, frame in enumerate(frames, 1):
        Image.fromarray(frame, "RGB").save(folder / f"frame_{count - 1:05d}.{FORMAT}")
    return count


def median_background(path: Path, samples: int = 24) -> Frame:
    """The per-pixel median of ``samples`` frames spread evenly over the clip (moving things vanish)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 0
        step = max(1, total // samples) if total else 1
        picked = [
            frame.to_ndarray(format="rgb24")
            for i, frame in enumerate(container.decode(stream))
            if i % step == 0 and i // step < samples
        ]
    stack: npt.NDArray[np.uint8] = np.stack(picked)
    median: Frame = np.median(stack, axis=0).astype(np.uint8)
    return median


def face_crop(frame: Frame, box: tuple[float, float, float, float], margin: float = 0.25, height: int = 0) -> Frame:
    """The box (x1, y1, x2, y2 in pixels) of ``frame`` grown by ``margin`` on each side, resized to ``height``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    left, top = max(0, int(x1 - margin * w)), max(0, int(y1 - margin * h))
    right, bottom = min(frame.shape[1], int(x2 + margin * w)), min(frame.shape[0], int(y2 + margin * h))
    crop = frame[top:bottom, left:right]
    if height and crop.shape[0] != height:
        width = max(1, round(crop.shape[1] * height / crop.shape[0]))
        crop = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(crop)


def paste(background: Frame, crop: Frame, at: tuple[int, int]) -> Frame:
    """``background`` with ``crop`` pasted with its top-left corner at ``at`` = (x, y)."""
    out = background.copy()
    x, y = at
    h, w = min(crop.shape[0], out.shape[0] - y), min(crop.shape[1], out.shape[1] - x)
    out[y : y + h, x : x + w] = crop[:h, :w]
    return out


def static_scene(
    background: Frame,
    crop: Frame,
    folder: Path,
    *,
    frames: int,
    face_frame: int,
    at: tuple[int, int],
    noise_sigma: float = NOISE_SIGMA,
    seed: int = 8,
) -> int:
    """Write the static scene: ``background`` plus noise in every frame, the face from ``face_frame`` on."""
    rng = np.random.default_rng(seed)
    with_face = paste(background, crop, at)

    def scene() -> Iterator[Frame]:
        for n in range(frames):
            base = with_face if n >= face_frame else background
            noise = rng.normal(0.0, noise_sigma, base.shape) if noise_sigma else 0.0
            yield np.clip(base + noise, 0, 255).astype(np.uint8)

    return write_folder(scene(), folder)
