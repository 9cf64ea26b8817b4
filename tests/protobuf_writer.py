"""Writes TensorFlow GraphDef bytes by hand (protocol-buffer wire format) for the reader's tests."""

from __future__ import annotations

import numpy as np

DT = {np.dtype("float32"): 1, np.dtype("int32"): 3, np.dtype("int64"): 9, np.dtype("float16"): 19}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values: two's complement, 10 bytes
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, value: int | bytes | str, wire: int | None = None) -> bytes:
    """One record: ints as varints (wire 0), bytes/str length-delimited (wire 2), or raw fixed32 (wire 5)."""
    if isinstance(value, str):
        value = value.encode()
    if wire == 5:
        return varint(number << 3 | 5) + value
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def shape(dims) -> bytes:
    return b"".join(field(2, field(1, d)) for d in dims)


def tensor(array: np.ndarray, as_content: bool = True, values=None) -> bytes:
    """A TensorProto: raw ``tensor_content``, or ``values`` in the typed field (float_val / int_val)."""
    array = np.asarray(array)
    out = field(1, DT[array.dtype]) + field(2, shape(array.shape))
    if as_content:
        return out + field(4, array.astype(array.dtype.newbyteorder("<")).tobytes())
    values = array.ravel() if values is None else np.asarray(values)
    if array.dtype == np.float32:
        return out + field(5, values.astype("<f4").tobytes())  # packed float_val
    return out + field(7, b"".join(varint(int(v)) for v in values))  # packed int_val


def attr(key: str, value) -> bytes:
    """A map entry of ``NodeDef.attr``: str -> s, bool -> b, int -> i, tuple of ints -> list.i, ndarray -> tensor,
    np.dtype -> type."""
    if isinstance(value, str):
        encoded = field(2, value)
    elif isinstance(value, bool):
        encoded = field(5, int(value))
    elif isinstance(value, int):
        encoded = field(3, value)
    elif isinstance(value, tuple):
        encoded = field(1, field(3, b"".join(varint(v) for v in value)))
    elif isinstance(value, np.dtype):
        encoded = field(6, DT[value])
    else:
        encoded = field(8, tensor(value))
    return field(5, field(1, key) + field(2, encoded))


def node(name: str, op: str, inputs=(), **attrs) -> bytes:
    body = field(1, name) + field(2, op) + b"".join(field(3, i) for i in inputs)
    return body + b"".join(attr(k, v) for k, v in attrs.items())


def graph(*nodes: bytes) -> bytes:
    return b"".join(field(1, n) for n in nodes)
