"""Text → token tensors with the real MiniLM tokenizer, padded to length buckets."""

from __future__ import annotations

import numpy as np
import pytest

from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, TensorSpec
from natriton.tensors import to_array
from natriton_preprocess.text import MAX_TEXT_CHARS, TextLayout, bucket_length, load_tokenizer, text_to_tensors

FOX = "The quick brown fox jumps over the lazy dog."
FOX_IDS = [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102]  # [CLS] ... [SEP]


def _text_model(
    parameters: dict[str, str] | None = None, inputs: tuple[str, ...] = ("INPUT_IDS", "ATTENTION_MASK")
) -> ModelInfo:
    return ModelInfo(
        name="minilm",
        versions=("1",),
        task="text_embedding",
        max_batch_size=32,
        inputs=tuple(TensorSpec(name=n, datatype="INT64", shape=(-1,)) for n in inputs),
        outputs=(TensorSpec(name="EMBEDDING", datatype="FP32", shape=(384,)),),
        parameters={"natriton.tokenizer": "all-minilm-l6-v2", "natriton.max_tokens": "128"}
        if parameters is None
        else parameters,
    )


LAYOUT = TextLayout.from_model(_text_model())


def _arrays(text: str, layout: TextLayout = LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = text_to_tensors(text, layout)
    assert (ids.name, mask.name) == ("INPUT_IDS", "ATTENTION_MASK")
    assert ids.datatype == mask.datatype == "INT64"
    return to_array(ids), to_array(mask)


def _code(text: str, layout: TextLayout = LAYOUT) -> ErrorCode:
    with pytest.raises(MeshError) as info:
        text_to_tensors(text, layout)
    return info.value.code


# ------------------------------------------------------------------------------------------------
# bucket_length
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("length", "max_tokens", "expected"),
    [
        (0, 128, 16),
        (1, 128, 16),
        (16, 128, 16),
        (17, 128, 32),
        (32, 128, 32),
        (33, 128, 64),
        (65, 128, 128),
        (128, 128, 128),
        (500, 128, 128),
        (20, 24, 24),  # capped at a max that is not a power of two
        (5, 8, 8),  # max below the smallest bucket
    ],
)
def test_bucket_length(length: int, max_tokens: int, expected: int) -> None:
    assert bucket_length(length, max_tokens) == expected


def test_bucket_length_with_another_smallest_bucket() -> None:
    assert bucket_length(3, 512, smallest=4) == 4
    assert bucket_length(5, 512, smallest=4) == 8
    assert bucket_length(300, 512, smallest=4) == 512


# ------------------------------------------------------------------------------------------------
# TextLayout
# ------------------------------------------------------------------------------------------------
def test_layout_from_model() -> None:
    assert TextLayout("all-minilm-l6-v2", 128, "INPUT_IDS", "ATTENTION_MASK") == LAYOUT
    assert TextLayout.from_model(_text_model({"natriton.tokenizer": "all-minilm-l6-v2"})).max_tokens == 128


def test_model_without_tokenizer_does_not_take_text() -> None:
    with pytest.raises(MeshError) as info:
        TextLayout.from_model(_text_model({"natriton.task": "text_embedding"}))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "minilm" in info.value.message


def test_text_model_without_its_inputs_is_internal() -> None:
    with pytest.raises(MeshError) as info:
        TextLayout.from_model(_text_model(inputs=("INPUT_IDS", "TOKEN_TYPE_IDS")))
    assert info.value.code is ErrorCode.INTERNAL


def test_unknown_tokenizer_is_internal() -> None:
    layout = TextLayout.from_model(_text_model({"natriton.tokenizer": "gpt-17"}))
    assert _code(FOX, layout) is ErrorCode.INTERNAL


# ------------------------------------------------------------------------------------------------
# text_to_tensors
# ------------------------------------------------------------------------------------------------
def test_short_sentence_pads_to_the_smallest_bucket() -> None:
    ids, mask = _arrays(FOX)
    assert ids.shape == mask.shape == (1, 16)
    assert ids.dtype == mask.dtype == np.int64
    assert ids[0, :12].tolist() == FOX_IDS
    assert ids[0, 12:].tolist() == [0] * 4  # [PAD]
    assert mask[0].tolist() == [1] * 12 + [0] * 4
    assert int(mask.sum()) == len(FOX_IDS)


def test_mask_counts_the_tokens_and_picks_the_bucket() -> None:
    text = " ".join(["hello"] * 30)  # 30 words + [CLS] + [SEP]
    ids, mask = _arrays(text)
    assert ids.shape == (1, 32)
    assert int(mask.sum()) == 32
    longer = " ".join(["hello"] * 31)
    ids, mask = _arrays(longer)
    assert ids.shape == (1, 64)
    assert int(mask.sum()) == 33
    assert mask[0, :33].all() and not mask[0, 33:].any()


def test_long_text_is_truncated_to_max_tokens() -> None:
    ids, mask = _arrays("word " * 1000)
    assert ids.shape == mask.shape == (1, 128)
    assert int(mask.sum()) == 128
    assert ids[0, 0] == 101 and ids[0, -1] == 102  # still [CLS] ... [SEP]


def test_max_tokens_comes_from_the_model() -> None:
    layout = TextLayout.from_model(_text_model({"natriton.tokenizer": "all-minilm-l6-v2", "natriton.max_tokens": "24"}))
    ids, mask = _arrays("word " * 100, layout)
    assert ids.shape == (1, 24)
    assert int(mask.sum()) == 24
    assert load_tokenizer("all-minilm-l6-v2", 24) is load_tokenizer("all-minilm-l6-v2", 24)  # cached


def test_same_text_same_tensors_and_different_text_differs() -> None:
    a_ids, _ = _arrays(FOX)
    b_ids, _ = _arrays(FOX)
    c_ids, _ = _arrays("The quick brown cat jumps over the lazy dog.")
    np.testing.assert_array_equal(a_ids, b_ids)
    assert not np.array_equal(a_ids, c_ids)


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n"])
def test_empty_text_is_invalid_argument(text: str) -> None:
    assert _code(text) is ErrorCode.INVALID_ARGUMENT


def test_text_over_the_character_limit_is_invalid_argument() -> None:
    assert MAX_TEXT_CHARS == 20_000
    assert _code("a" * (MAX_TEXT_CHARS + 1)) is ErrorCode.INVALID_ARGUMENT
    ids, _ = _arrays("a " * (MAX_TEXT_CHARS // 2))  # exactly at the limit: accepted, truncated
    assert ids.shape == (1, 128)
