"""numpy <-> wire Tensor conversion and validation against a model's declared inputs."""

from __future__ import annotations

import numpy as np
import pytest

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, Tensor, TensorSpec
from natriton.tensors import NUMPY_TO_TRITON, TRITON_TO_NUMPY, check_against_specs, to_array, to_tensor

RNG = np.random.default_rng(1234)

DTYPES = [
    ("BOOL", np.bool_),
    ("UINT8", np.uint8),
    ("UINT16", np.uint16),
    ("UINT32", np.uint32),
    ("UINT64", np.uint64),
    ("INT8", np.int8),
    ("INT16", np.int16),
    ("INT32", np.int32),
    ("INT64", np.int64),
    ("FP16", np.float16),
    ("FP32", np.float32),
    ("FP64", np.float64),
]


def _sample(dtype: type[np.generic], shape: tuple[int, ...]) -> np.ndarray:
    if dtype is np.bool_:
        return RNG.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return RNG.standard_normal(size=shape).astype(dtype)


def test_datatype_tables_are_inverse() -> None:
    assert len(TRITON_TO_NUMPY) == len(NUMPY_TO_TRITON) == 12
    for name, dtype in TRITON_TO_NUMPY.items():
        assert NUMPY_TO_TRITON[dtype] == name


@pytest.mark.parametrize(("datatype", "dtype"), DTYPES)
def test_round_trip_every_datatype(datatype: str, dtype: type[np.generic]) -> None:
    array = _sample(dtype, (2, 3, 4))
    tensor = to_tensor("x", array)
    assert tensor.name == "x"
    assert tensor.datatype == datatype
    assert tensor.shape == (2, 3, 4)
    assert len(tensor.data) == array.nbytes
    back = to_array(tensor)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_bytes_are_little_endian_c_order() -> None:
    tensor = to_tensor("x", np.array([[1, 2], [3, 256]], dtype=np.uint16))
    assert tensor.data == b"\x01\x00\x02\x00\x03\x00\x00\x01"


def test_big_endian_and_non_contiguous_arrays_are_normalised() -> None:
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    tensor = to_tensor("b", big)
    assert tensor.datatype == "INT32"
    assert tensor.data[:4] == b"\x00\x00\x00\x00" and tensor.data[4:8] == b"\x01\x00\x00\x00"
    np.testing.assert_array_equal(to_array(tensor), big)

    transposed = np.arange(12, dtype=np.float32).reshape(3, 4).T  # Fortran order view
    tensor = to_tensor("t", transposed)
    assert tensor.shape == (4, 3)
    np.testing.assert_array_equal(to_array(tensor), transposed)

    strided = np.arange(20, dtype=np.int64)[::3]
    np.testing.assert_array_equal(to_array(to_tensor("s", strided)), strided)


def test_scalar_and_empty_shapes() -> None:
    scalar = Tensor(name="s", datatype="FP32", shape=(), data=np.float32(3.5).tobytes())
    assert to_array(scalar).shape == ()
    assert to_array(scalar).item() == 3.5
    empty = to_tensor("e", np.zeros((0, 5), dtype=np.int8))
    assert empty.shape == (0, 5) and empty.data == b""
    assert to_array(empty).shape == (0, 5)


def test_to_array_is_a_read_only_view_of_the_wire_bytes() -> None:
    data = np.arange(24, dtype=np.float32).tobytes()
    tensor = Tensor(name="x", datatype="FP32", shape=(2, 3, 4), data=data)
    array = to_array(tensor)
    assert np.shares_memory(array, np.frombuffer(tensor.data, dtype=np.uint8))
    assert not array.flags.writeable
    assert not array.flags.owndata


def test_to_array_after_msgpack_decode_shares_the_decoded_buffer() -> None:
    codec: Codec[Tensor] = Codec(Tensor)
    decoded = codec.decode(codec.encode(to_tensor("x", np.ones((4, 4), dtype=np.uint8))))
    array = to_array(decoded)
    assert np.shares_memory(array, np.frombuffer(decoded.data, dtype=np.uint8))
    assert array.sum() == 16


def test_to_tensor_keeps_zero_dimensional_shape() -> None:
    assert to_tensor("s", np.array(3.5, dtype=np.float32)).shape == ()


def test_to_tensor_refuses_dtypes_without_a_triton_name() -> None:
    with pytest.raises(ValueError, match="complex64"):
        to_tensor("c", np.zeros(3, dtype=np.complex64))


def _assert_invalid(tensor: Tensor, match: str) -> None:
    with pytest.raises(MeshError) as info:
        to_array(tensor)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert match in info.value.message
    assert repr(tensor.name) in info.value.message


@pytest.mark.parametrize(
    ("shape", "nbytes"),
    [((2, 3), 23), ((2, 3), 25), ((2, 3), 0), ((1,), 8), ((), 0)],
)
def test_mismatched_byte_count_is_invalid_argument(shape: tuple[int, ...], nbytes: int) -> None:
    _assert_invalid(Tensor(name="in", datatype="FP32", shape=shape, data=b"\0" * nbytes), "bytes")


def test_negative_dimension_is_invalid_argument() -> None:
    # -1 * -4 * 4 bytes would "match" 16 bytes if only the product were checked
    _assert_invalid(Tensor(name="in", datatype="FP32", shape=(-1, -4), data=b"\0" * 16), "negative dimension")


@pytest.mark.parametrize("datatype", ["BYTES", "fp32", "FLOAT", "BF16", ""])
def test_unknown_datatype_is_invalid_argument(datatype: str) -> None:
    _assert_invalid(Tensor(name="in", datatype=datatype, shape=(1,), data=b"\0\0\0\0"), "unknown datatype")


# ------------------------------------------------------------------------------------------------
# check_against_specs
# ------------------------------------------------------------------------------------------------
IMAGE_SPEC = (TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),)
VAR_SPECS = (
    TensorSpec(name="ids", datatype="INT64", shape=(-1,)),
    TensorSpec(name="mask", datatype="INT64", shape=(-1,)),
)


def _image(batch: int = 1, dtype: type[np.generic] = np.uint8, name: str = "IMAGE") -> Tensor:
    return to_tensor(name, np.zeros((batch, 224, 224, 3), dtype=dtype))


def _expect_invalid(tensors: list[Tensor], specs: tuple[TensorSpec, ...], match: str) -> None:
    with pytest.raises(MeshError) as info:
        check_against_specs(tensors, specs, "m")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert match in info.value.message


@pytest.mark.parametrize("batch", [1, 4])
def test_check_accepts_matching_input(batch: int) -> None:
    check_against_specs([_image(batch)], IMAGE_SPEC, "m")


def test_check_accepts_variable_dims_and_several_inputs() -> None:
    ids = to_tensor("ids", np.zeros((2, 7), dtype=np.int64))
    mask = to_tensor("mask", np.ones((2, 7), dtype=np.int64))
    check_against_specs([mask, ids], VAR_SPECS, "m")  # order does not matter


def test_check_rejects_wrong_name() -> None:
    _expect_invalid([_image(name="INPUT__0")], IMAGE_SPEC, "takes inputs ['IMAGE']")


def test_check_rejects_missing_and_extra_inputs() -> None:
    ids = to_tensor("ids", np.zeros((1, 3), dtype=np.int64))
    _expect_invalid([ids], VAR_SPECS, "takes inputs")
    _expect_invalid([_image(), to_tensor("extra", np.zeros((1, 1), dtype=np.uint8))], IMAGE_SPEC, "takes inputs")
    _expect_invalid([], IMAGE_SPEC, "takes inputs")


def test_check_rejects_wrong_datatype() -> None:
    _expect_invalid([_image(dtype=np.float32)], IMAGE_SPEC, "is UINT8, got FP32")


@pytest.mark.parametrize(
    "shape",
    [(1, 224, 224, 1), (1, 3, 224, 224), (1, 224, 224), (1, 224, 224, 3, 1), (1, 223, 224, 3)],
)
def test_check_rejects_wrong_shape(shape: tuple[int, ...]) -> None:
    _expect_invalid([to_tensor("IMAGE", np.zeros(shape, dtype=np.uint8))], IMAGE_SPEC, "has shape [batch, 224, 224, 3]")


def test_check_rejects_missing_batch_dimension() -> None:
    no_batch = to_tensor("IMAGE", np.zeros((224, 224, 3), dtype=np.uint8))
    _expect_invalid([no_batch], IMAGE_SPEC, "has shape")


def test_check_rejects_zero_batch_and_scalars() -> None:
    _expect_invalid([_image(batch=0)], IMAGE_SPEC, "batch dimension >= 1")
    scalar = Tensor(name="IMAGE", datatype="UINT8", shape=(), data=b"\0")
    _expect_invalid([scalar], IMAGE_SPEC, "batch dimension >= 1")


def test_check_rejects_inputs_with_different_batch_sizes() -> None:
    ids = to_tensor("ids", np.zeros((2, 3), dtype=np.int64))
    mask = to_tensor("mask", np.zeros((1, 3), dtype=np.int64))
    _expect_invalid([ids, mask], VAR_SPECS, "same batch dimension")


def test_check_rejects_shape_that_does_not_match_the_bytes() -> None:
    lying = Tensor(name="IMAGE", datatype="UINT8", shape=(2, 224, 224, 3), data=b"\0" * (224 * 224 * 3))
    _expect_invalid([lying], IMAGE_SPEC, "needs")


def test_check_rejects_duplicate_input_names() -> None:
    _expect_invalid([_image(), _image()], IMAGE_SPEC, "IMAGE")
