"""The bare half of loadtests.preprocess_cost (the service half needs a running mesh: see the module)."""

from __future__ import annotations

import io
import itertools

import numpy as np
from PIL import Image

from loadtests.preprocess_cost import bare_cpu_us, bare_image_cost_us, bare_in_subprocess, image_size
from natriton.profiles import ImageSpec

LAYOUT = ImageSpec(input="IMAGE", datatype="UINT8", height=32, width=32, channels_last=True, resize_shorter=40)


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 90, dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def test_bare_cpu_us_runs_the_call_after_a_warm_up() -> None:
    calls = itertools.count()
    # a call with some work in it: a bare next() takes ~0.05 µs, which the 0.1 µs rounding can make 0.0
    cost = bare_cpu_us(lambda: (next(calls), sum(range(500))), warmup=3, min_seconds=0.01, rounds=2)
    assert cost > 0
    assert next(calls) >= 3 + 1 + 2 * 10  # warm-up, the probe, then two rounds of at least ten


def test_bare_image_cost_in_this_process_and_in_another() -> None:
    data = _jpeg()
    assert image_size(data) == (64, 48)
    assert bare_image_cost_us(data, LAYOUT) > 0
    assert bare_in_subprocess(data, LAYOUT, 0.2) > 0
