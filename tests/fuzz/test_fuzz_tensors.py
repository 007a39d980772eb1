"""The tensor codec (``to_array``, ``check_against_specs``) under arbitrary names, datatypes, shapes and bytes: an
array that matches the tensor, or a typed ``invalid_argument``; and numpy arrays survive ``to_tensor``."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Tensor, TensorSpec
from natriton.tensors import TRITON_TO_NUMPY, check_against_specs, to_array, to_tensor
from tests.fuzz.strategies import assert_typed

DATATYPES = st.sampled_from(sorted(TRITON_TO_NUMPY)) | st.text(max_size=8)
DIMENSIONS = st.integers(0, 4) | st.integers(-3, 2**63 - 1) | st.sampled_from([2**62, 2**32, 2**31 - 1])
SHAPES = st.lists(DIMENSIONS, max_size=6) | st.lists(st.integers(0, 1), min_size=30, max_size=80)


@st.composite
def tensors(draw: st.DrawFn) -> Tensor:
    """A tensor whose bytes often match its shape (so the checks past the byte count run too)."""
    datatype = draw(DATATYPES)
    shape = tuple(draw(SHAPES))
    dtype = TRITON_TO_NUMPY.get(datatype)
    wanted = math.prod(shape) * dtype.itemsize if dtype is not None and all(d >= 0 for d in shape) else -1
    exact = 0 <= wanted <= 4096 and draw(st.booleans())
    data = draw(st.binary(min_size=wanted, max_size=wanted) if exact else st.binary(max_size=64))
    return Tensor(name=draw(st.text(max_size=10)), datatype=datatype, shape=shape, data=data)


def check_to_array(tensor: Tensor) -> None:
    try:
        array = to_array(tensor)
    except MeshError as exc:
        assert_typed(exc, ErrorCode.INVALID_ARGUMENT)
        return
    assert array.shape == tensor.shape
    assert array.dtype == TRITON_TO_NUMPY[tensor.datatype]
    assert array.nbytes == len(tensor.data)


@given(tensor=tensors())
def test_to_array(tensor: Tensor) -> None:
    check_to_array(tensor)


SPECS = st.lists(
    st.builds(
        TensorSpec,
        name=st.sampled_from(["IMAGE", "INPUT_IDS", "x", ""]),
        datatype=st.sampled_from(["UINT8", "FP32", "INT64"]),
        shape=st.lists(st.sampled_from([-1, 0, 1, 3, 224]), max_size=3).map(tuple),
    ),
    max_size=3,
    unique_by=lambda s: s.name,
)


@given(inputs=st.lists(tensors(), max_size=4), specs=SPECS)
def test_check_against_specs(inputs: list[Tensor], specs: list[TensorSpec]) -> None:
    try:
        check_against_specs(inputs, specs, "m")
    except MeshError as exc:
        assert_typed(exc, ErrorCode.INVALID_ARGUMENT)
        return
    assert sorted(t.name for t in inputs) == sorted(s.name for s in specs)
    for tensor in inputs:
        assert tensor.shape and tensor.shape[0] >= 1
        check_to_array(tensor)


@given(
    array=hnp.arrays(
        dtype=st.sampled_from(sorted(set(TRITON_TO_NUMPY.values()), key=str)),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_numpy_arrays_round_trip(array: npt.NDArray[np.generic]) -> None:
    back = to_array(to_tensor("x", array))
    assert back.shape == array.shape and back.dtype == array.dtype
    assert back.tobytes() == array.tobytes()
