"""Zero-copy conversion between numpy arrays and wire :class:`~natriton.messages.Tensor`s.

Datatype names are Triton's (``FP32``, ``UINT8``, ...). Bytes are little-endian, C order.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from natriton.errors import invalid_argument
from natriton.messages import Tensor, TensorSpec
from natriton_client.protocol import one_line

TRITON_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
NUMPY_TO_TRITON: Final[dict[np.dtype[np.generic], str]] = {v: k for k, v in TRITON_TO_NUMPY.items()}


def to_tensor(name: str, array: npt.NDArray[np.generic]) -> Tensor:
    """Wrap a numpy array as a wire tensor (its bytes copied once into the message, C order, little-endian)."""
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    datatype = NUMPY_TO_TRITON.get(dtype)
    if datatype is None:
        raise ValueError(f"dtype {array.dtype} has no Triton datatype")
    contiguous = np.ascontiguousarray(array, dtype=dtype).reshape(array.shape)
    shape = tuple(int(d) for d in contiguous.shape)
    return Tensor(name=name, datatype=datatype, shape=shape, data=contiguous.tobytes())


MAX_DIMS: Final = 32
"""The most dimensions a tensor may have (numpy's limit)."""


def to_array(tensor: Tensor) -> npt.NDArray[np.generic]:
    """View a wire tensor as a read-only numpy array sharing its bytes; raises invalid_argument when inconsistent."""
    dtype = TRITON_TO_NUMPY.get(tensor.datatype)
    if dtype is None:
        raise invalid_argument(f"tensor {_shown(tensor.name)}: unknown datatype {_shown(tensor.datatype)}")
    if len(tensor.shape) > MAX_DIMS:
        raise invalid_argument(f"tensor {_shown(tensor.name)}: {len(tensor.shape)} dimensions, at most {MAX_DIMS}")
    if any(d < 0 for d in tensor.shape):
        raise invalid_argument(f"tensor {_shown(tensor.name)}: negative dimension in shape {_shape(tensor.shape)}")
    expected = math.prod(tensor.shape) * dtype.itemsize
    if expected != len(tensor.data):
        raise invalid_argument(
            f"tensor {_shown(tensor.name)}: shape {_shape(tensor.shape)} {tensor.datatype} needs {expected} bytes, "
            f"got {len(tensor.data)}"
        )
    try:
        return np.frombuffer(tensor.data, dtype=dtype).reshape(tensor.shape)
    except ValueError as exc:  # no data, but dimensions whose product numpy cannot index (2**62 x 2**62 x 0)
        raise invalid_argument(f"tensor {_shown(tensor.name)}: shape {_shape(tensor.shape)} is too large") from exc


def check_against_specs(tensors: Sequence[Tensor], specs: Sequence[TensorSpec], model: str) -> None:
    """Check names, datatypes and shapes (batch dimension first) against a model's declared inputs."""
    by_name = {t.name: t for t in tensors}
    if len(by_name) != len(tensors):
        counts = collections.Counter(t.name for t in tensors)
        repeated = sorted(name for name, n in counts.items() if n > 1)
        raise invalid_argument(f"model {model!r}: inputs {_names(repeated)} sent more than once")
    wanted = {s.name for s in specs}
    if set(by_name) != wanted:
        raise invalid_argument(f"model {model!r} takes inputs {sorted(wanted)}, got {_names(sorted(by_name))}")
    batch_sizes = {t.shape[0] if t.shape else -1 for t in tensors}
    if len(batch_sizes) != 1 or min(batch_sizes) < 1:
        raise invalid_argument(f"model {model!r}: every input needs the same batch dimension >= 1")
    for spec in specs:
        tensor = by_name[spec.name]
        if tensor.datatype != spec.datatype:
            raise invalid_argument(
                f"model {model!r} input {spec.name!r} is {spec.datatype}, got {one_line(tensor.datatype, 64)}"
            )
        dims = tensor.shape[1:]
        if len(dims) != len(spec.shape) or any(s not in (-1, d) for s, d in zip(spec.shape, dims, strict=True)):
            raise invalid_argument(
                f"model {model!r} input {spec.name!r} has shape [batch, {', '.join(map(str, spec.shape))}], "
                f"got {_shape(tensor.shape)}"
            )
        to_array(tensor)  # byte count must match the shape


def _shown(value: str, limit: int = 64) -> str:
    """A producer's string, quoted and shortened for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _names(names: Sequence[str], limit: int = 8) -> str:
    """Producer's names for an error message: the first ``limit``, each shortened."""
    shown = ", ".join(_shown(n) for n in names[:limit])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > limit else ''}]"


def _shape(shape: Sequence[int], limit: int = 8) -> str:
    """A producer's shape for an error message: the first ``limit`` dimensions."""
    shown = ", ".join(map(str, shape[:limit]))
    return f"[{shown}{f', ... ({len(shape)} dimensions)' if len(shape) > limit else ''}]"
