"""Text → token tensors with the tokenizer beside the model (``natriton.tokenizer``, ``natriton.max_tokens``).

Sequences are padded up to a length bucket (16, 32, 64, … up to ``max_tokens``), not to ``max_tokens``: requests
of similar length still batch together (the router batches equal shapes), and a short sentence does not pay for
128 tokens (8x the compute of 16 for MiniLM on this CPU).
"""

from __future__ import annotations

import functools

import numpy as np
from tokenizers import Tokenizer

from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import ModelInfo, Tensor
from natriton.profiles import EmbedderProfile, TextSpec, VadProfile, audio_only
from natriton.tensors import to_tensor

MAX_TEXT_CHARS = 20_000


def text_spec_of(info: ModelInfo) -> TextSpec:
    """How ``info``'s model takes text; ``invalid_argument`` when it does not."""
    if isinstance(info.profile, VadProfile):
        raise invalid_argument(audio_only(info.name))
    spec = info.profile.text if isinstance(info.profile, EmbedderProfile) else None
    if spec is None:
        raise invalid_argument(f"model {info.name!r} ({info.task}) does not take text")
    return spec


@functools.lru_cache(maxsize=16)
def load_tokenizer(data: bytes, max_tokens: int) -> Tokenizer:
    """A tokenizer from its ``tokenizer.json`` bytes that truncates to ``max_tokens`` (padding is per bucket)."""
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # the tokenizers library raises plain Exceptions
        raise MeshError(ErrorCode.INTERNAL, f"the model's tokenizer does not load: {exc}") from exc
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()
    return tokenizer


def bucket_length(length: int, max_tokens: int, smallest: int = 16) -> int:
    """The padded length for a sequence: the next power of two from ``smallest``, capped at ``max_tokens``."""
    bucket = smallest
    while bucket < length:
        bucket *= 2
    return min(bucket, max_tokens)


def text_to_tensors(text: str, layout: TextSpec, tokenizer_json: bytes) -> tuple[Tensor, Tensor]:
    """One text → (token ids, attention mask), INT64 [1, bucket length]."""
    if not text.strip():
        raise invalid_argument("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise invalid_argument(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    tokenizer = load_tokenizer(tokenizer_json, layout.max_tokens)
    encoding = tokenizer.encode(text)
    length = bucket_length(len(encoding.ids), layout.max_tokens)
    ids = np.full((1, length), tokenizer.token_to_id("[PAD]") or 0, dtype=np.int64)
    mask = np.zeros((1, length), dtype=np.int64)
    ids[0, : len(encoding.ids)] = encoding.ids
    mask[0, : len(encoding.ids)] = encoding.attention_mask
    return to_tensor(layout.ids_input, ids), to_tensor(layout.mask_input, mask)
