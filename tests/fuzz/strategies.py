"""What the fuzz tests share: byte mutations, JSON-like values, headers, and the property every decoder keeps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec
from hypothesis import strategies as st

from natriton.errors import ErrorCode, MeshError

T = TypeVar("T")

MAX_MESSAGE_CHARS = 1024
"""An error message travels in the ``Nats-Service-Error`` header too: one printable line, bounded."""

MUTATIONS = ("flip", "set", "insert", "delete", "truncate", "duplicate", "zero")


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes], *, head: int = 2048, most: int = 6) -> bytes:
    """A valid input (from ``seeds``) with up to ``most`` mutations: flipped bits, overwritten, inserted, deleted,
    zeroed or repeated bytes, truncation. Half of them land in the first ``head`` bytes, where headers are."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(1, most))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        limit = len(data) - 1
        near_head = draw(st.booleans())
        pos = draw(st.integers(0, min(limit, head) if near_head else limit))
        match draw(st.sampled_from(MUTATIONS)):
            case "flip":
                data[pos] ^= 1 << draw(st.integers(0, 7))
            case "set":
                data[pos] = draw(
                    st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xD8, 0xDA, 0xD9, 0xC2, draw(st.integers(0, 255))])
                )
            case "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
            case "delete":
                del data[pos : pos + draw(st.integers(1, 64))]
            case "truncate":
                del data[pos:]
            case "duplicate":
                length = draw(st.integers(1, 256))
                data[pos:pos] = data[pos : pos + length] * draw(st.integers(1, 8))
            case "zero":
                length = draw(st.integers(1, 256))
                data[pos : pos + length] = bytes(len(data[pos : pos + length]))
    return bytes(data)


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
"""Values JSON and msgpack can both carry."""


def encoded(value: Any, *, json: bool) -> bytes:
    """``value`` as JSON or msgpack."""
    return msgspec.json.encode(value) if json else msgspec.msgpack.encode(value)


def encodable(message: Any, encode: Callable[[Any], bytes]) -> bytes | None:
    """``message`` encoded, or None when it holds something the wire cannot carry (an int over 64 bits)."""
    try:
        return encode(message)
    except (OverflowError, msgspec.EncodeError):
        return None


HEADER_TEXT = st.text(max_size=40) | st.sampled_from(["", " ", "0", "-1", "1_000", "١٢٣", "9" * 5000, "1e3", "\t5"])
"""Header values, from plain junk to the tricky ones (Python's ``int`` takes ``1_000`` and ``١٢٣``)."""


def assert_typed(error: MeshError, *allowed: ErrorCode) -> None:
    """The property of every decoder: a typed error, never ``internal``, with a message that can travel in a
    header (one printable line, bounded)."""
    assert error.code is not ErrorCode.INTERNAL, error
    if allowed:
        assert error.code in allowed, error
    assert error.message and error.message.isprintable(), repr(error.message)
    assert len(error.message) <= MAX_MESSAGE_CHARS, len(error.message)


@contextlib.contextmanager
def typed_errors_only(*allowed: ErrorCode) -> Iterator[None]:
    """Let a :class:`MeshError` that keeps :func:`assert_typed` pass; anything else raised fails the test."""
    try:
        yield
    except MeshError as exc:
        assert_typed(exc, *allowed)
